//! A deadline for the grammar work of one thread: a caller that gives up
//! waiting (a server answering "took too long") stops the work too, instead
//! of leaving a thread converting a schema nobody will use.

use crate::error::{Error, Result};
use std::cell::Cell;
use std::time::Instant;

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with every schema conversion ([`json_schema_to_grammar`]) on
/// this thread stopping at `deadline` with [`Error::JsonSchema`] ("took
/// longer than its deadline"). Nested calls keep the earlier deadline; the
/// one before is restored when `f` returns or unwinds.
///
/// ```
/// use llama_safe::grammar::{json_schema_to_grammar, with_deadline};
/// use std::time::{Duration, Instant};
/// let schema = serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}}});
/// let late = with_deadline(Instant::now(), || json_schema_to_grammar(&schema));
/// assert!(late.unwrap_err().to_string().contains("deadline"));
/// let in_time = with_deadline(Instant::now() + Duration::from_secs(10), || json_schema_to_grammar(&schema));
/// assert!(in_time.is_ok());
/// ```
///
/// [`json_schema_to_grammar`]: super::json_schema_to_grammar
pub fn with_deadline<T>(deadline: Instant, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let before = DEADLINE.with(|d| d.get());
    let _restore = Restore(before);
    let deadline = before.map_or(deadline, |b| b.min(deadline));
    DEADLINE.with(|d| d.set(Some(deadline)));
    f()
}

/// An error if this thread's deadline has passed (`at`: where, as a JSON
/// pointer into the schema).
pub(super) fn check(at: &str) -> Result<()> {
    match DEADLINE.with(|d| d.get()) {
        Some(deadline) if Instant::now() >= deadline => Err(Error::JsonSchema {
            at: at.to_string(),
            reason: "the conversion took longer than its deadline and was stopped".into(),
        }),
        _ => Ok(()),
    }
}
