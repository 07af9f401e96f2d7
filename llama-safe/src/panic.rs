//! Panics in callbacks that llama.cpp calls: caught before they would
//! unwind into C (undefined behaviour), kept, and resumed once the C call
//! has returned, as git2 does (`git2::panic`). The payload is kept with
//! the callback's own state rather than in a thread-local, because ggml
//! may call a callback from one of its own threads.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// Where a callback's panic waits for the C call to return.
#[derive(Default)]
pub(crate) struct Caught(Mutex<Option<Box<dyn Any + Send>>>);

impl Caught {
    /// Runs `f`; on a panic keeps its payload (the first one) and returns
    /// `None`. A callback that panicked once is not run again.
    pub(crate) fn wrap<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        if self.is_set() {
            return None;
        }
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(value) => Some(value),
            Err(payload) => {
                let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(payload);
                None
            }
        }
    }

    fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// After the C call: resumes the kept panic, if any, on this thread.
    pub(crate) fn resume(&self) {
        let payload = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(payload) = payload {
            resume_unwind(payload);
        }
    }
}
