//! The budget a chat template renders within.
//!
//! A template comes from a model file, and a user's message decides which
//! branch of it runs, so a hostile template must not be able to take the
//! process down from a request. minijinja charges every instruction, and
//! every byte and slot its operators, filters and methods create, to the
//! render's fuel; what it does not bound is closed here:
//!
//! - **Values that reach themselves.** `{% set ns.me = ns %}` makes a
//!   namespace contain itself, and printing, comparing or serialising it
//!   then recurses until the stack overflows (an abort, not an error). Every
//!   assignment into a namespace attribute goes through
//!   [`checked_namespace_value`], which refuses a value that is or holds a
//!   namespace, or is nested deeper than [`MAX_VALUE_DEPTH`]. Namespaces are
//!   the only mutable values, so no value can then reach itself, and no
//!   value grows deeper than the template's recursion limit allows.
//! - **Sizes given as numbers.** `'{:>100000000000}'.format(x)` and
//!   `tojson(indent=100000000000)` ask for an allocation their input's size
//!   does not show: widths above [`MAX_FORMAT_WIDTH`] and indents above
//!   [`MAX_JSON_INDENT`] are errors, and `tojson`'s output is charged.
//! - **The output.** At most [`MAX_OUTPUT_BYTES`] bytes; the prompt is then
//!   checked against the context before it is tokenized.

use minijinja::value::{Kwargs, ObjectRepr, Value, ValueKind};
use minijinja::{Error, ErrorKind, State};

/// Most template instructions one rendering may run (bytes and list slots
/// created are charged to the same fuel, one unit per 64 bytes): real
/// templates use a few thousand, a 10,000-message chat a few hundred
/// thousand.
pub const FUEL: u64 = 2_000_000;
/// Longest rendered prompt, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// Deepest value a template may store into a namespace (and `tojson` may
/// serialise).
pub const MAX_VALUE_DEPTH: usize = 128;
/// Widest field of a `str.format` specification.
pub const MAX_FORMAT_WIDTH: u64 = 10_000;
/// Largest `tojson` indent.
pub const MAX_JSON_INDENT: usize = 32;

/// The function every namespace assignment's value is passed through.
pub(super) const GUARD: &str = "__llama_safe_namespace_value";

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message).with_source(Marker::OverBudget)
}

/// The source attached to an error that is not the renderer's own: a
/// budget of the sandbox (a width, an indent, a depth, a cycle), or the
/// template's `raise_exception(message)` refusing its input. It tells them
/// apart from a template the renderer cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Marker {
    OverBudget,
    Raised,
}

impl std::fmt::Display for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Marker::OverBudget => "over the template sandbox's budget",
            Marker::Raised => "raised by the template",
        })
    }
}

impl std::error::Error for Marker {}

/// How a render failed: the template refused its input, ran out of a
/// budget, or could not be run by this renderer at all.
pub(super) fn classify(e: &Error, render_error: impl FnOnce() -> String) -> crate::Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut raised = false;
    let mut budget = matches!(e.kind(), ErrorKind::OutOfFuel | ErrorKind::WriteFailure);
    while let Some(s) = source {
        let marker = s.downcast_ref::<Marker>();
        raised |= marker == Some(&Marker::Raised);
        budget |= marker == Some(&Marker::OverBudget);
        source = s.source();
    }
    // minijinja's own recursion limit.
    budget |= e.to_string().contains("recursion limit");
    if raised {
        crate::Error::ChatTemplateRaised {
            message: e.detail().unwrap_or_default().to_string().into(),
        }
    } else if budget {
        crate::Error::ChatTemplateBudget {
            reason: render_error().into(),
        }
    } else {
        crate::Error::ChatTemplate {
            reason: render_error().into(),
        }
    }
}

/// Whether `value` is one of minijinja's namespaces (the only values a
/// template can change after creating them).
fn is_namespace(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.type_name().ends_with("::Namespace"))
}

/// Walks `value` down to [`MAX_VALUE_DEPTH`]; `refuse_namespaces` makes a
/// namespace anywhere in it an error. One-shot iterables are walked as the
/// list they yield, which is returned in their place.
fn walk(value: &Value, depth: usize, refuse_namespaces: bool) -> Result<Option<Value>, Error> {
    if depth > MAX_VALUE_DEPTH {
        return Err(invalid(format!(
            "value nested deeper than {MAX_VALUE_DEPTH} levels"
        )));
    }
    if refuse_namespaces && is_namespace(value) {
        return Err(invalid(
            "a namespace cannot be stored in a namespace (it could come to contain itself)".into(),
        ));
    }
    let Some(object) = value.as_object() else {
        return Ok(None);
    };
    match object.repr() {
        ObjectRepr::Map => {
            if let Some(pairs) = object.try_iter_pairs() {
                for (k, v) in pairs {
                    walk(&k, depth + 1, refuse_namespaces)?;
                    walk(&v, depth + 1, refuse_namespaces)?;
                }
            }
            Ok(None)
        }
        ObjectRepr::Seq => {
            if let Some(items) = object.try_iter() {
                for v in items {
                    walk(&v, depth + 1, refuse_namespaces)?;
                }
            }
            Ok(None)
        }
        ObjectRepr::Iterable => {
            let items: Vec<Value> = match object.try_iter() {
                Some(items) => items.collect(),
                None => return Ok(None),
            };
            for v in &items {
                walk(v, depth + 1, refuse_namespaces)?;
            }
            Ok(Some(Value::from(items)))
        }
        _ => Ok(None),
    }
}

/// The value of `{% set ns.attr = value %}`: refused if it is or holds a
/// namespace or is nested too deeply (see the module docs).
pub(super) fn checked_namespace_value(value: Value) -> Result<Value, Error> {
    Ok(walk(&value, 0, true)?.unwrap_or(value))
}

/// `tojson` with its indent bounded, its input's depth checked and its
/// output charged to the fuel.
pub(super) fn tojson(
    state: &State,
    value: &Value,
    indent: Option<Value>,
    args: Kwargs,
) -> Result<Value, Error> {
    let width = indent.clone().or(args.peek::<Option<Value>>("indent")?);
    if let Some(width) = width.filter(|w| w.kind() == ValueKind::Number) {
        match usize::try_from(width) {
            Ok(w) if w <= MAX_JSON_INDENT => {}
            _ => return Err(invalid(format!("tojson indent above {MAX_JSON_INDENT}"))),
        }
    }
    walk(value, 0, false)?;
    let json = minijinja::filters::tojson(value, indent, args)?;
    let len = json.as_str().map_or(0, str::len) as u64;
    // Serialising walks the value: 16 units a byte, 64 units a fuel.
    state.consume_fuel(len / 4)?;
    Ok(json)
}

/// Python's string and dict methods (minijinja-contrib's), with the field
/// widths of `str.format` bounded first.
pub(super) fn unknown_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if method == "format" {
        if let Some(spec) = value.as_str() {
            check_format_widths(spec)?;
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Refuses a number above [`MAX_FORMAT_WIDTH`] inside the `{…}` fields of
/// a `str.format` string (widths and precisions allocate that much).
fn check_format_widths(spec: &str) -> Result<(), Error> {
    let mut depth = 0usize;
    let mut number: u64 = 0;
    for c in spec.chars().chain(std::iter::once(' ')) {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > 0 && c.is_ascii_digit() {
            number = number
                .saturating_mul(10)
                .saturating_add(u64::from(c as u8 - b'0'));
            if number > MAX_FORMAT_WIDTH {
                return Err(invalid(format!(
                    "format field width above {MAX_FORMAT_WIDTH}"
                )));
            }
        } else {
            number = 0;
        }
    }
    Ok(())
}

/// Rewrites `template` so that the value of every `{% set a.b = value %}`
/// (and of tuple assignments with such a target) passes through [`GUARD`].
/// A template the tokenizer rejects is returned as is: compiling it fails
/// with minijinja's own message.
pub(super) fn guard_namespace_sets(template: &str) -> String {
    use minijinja::machinery::{tokenize, Token};
    let syntax = Default::default();
    let tokens: Vec<(Token<'_>, minijinja::machinery::Span)> =
        match tokenize(template, false, syntax).collect::<Result<_, _>>() {
            Ok(tokens) => tokens,
            Err(_) => return template.to_string(),
        };
    // (start, end) byte ranges of the values to wrap.
    let mut wraps = Vec::new();
    let mut i = 0;
    while i + 1 < tokens.len() {
        let is_set = matches!(tokens[i].0, Token::BlockStart)
            && matches!(tokens[i + 1].0, Token::Ident("set"));
        if !is_set {
            i += 1;
            continue;
        }
        // The target runs to the first `=` (attribute and tuple targets
        // hold no brackets); the value from there to the block's end.
        let mut j = i + 2;
        let mut attribute = false;
        while j < tokens.len() && !matches!(tokens[j].0, Token::Assign | Token::BlockEnd) {
            attribute |= matches!(tokens[j].0, Token::Dot | Token::BracketOpen);
            j += 1;
        }
        if j < tokens.len() && matches!(tokens[j].0, Token::Assign) {
            let first = j + 1;
            let mut end = first;
            while end < tokens.len() && !matches!(tokens[end].0, Token::BlockEnd) {
                end += 1;
            }
            if attribute && end > first {
                wraps.push((
                    tokens[first].1.start_offset as usize,
                    tokens[end - 1].1.end_offset as usize,
                ));
            }
            i = end;
        } else {
            i = j;
        }
    }
    if wraps.is_empty() {
        return template.to_string();
    }
    let mut out = String::with_capacity(template.len() + wraps.len() * (GUARD.len() + 4));
    let mut at = 0;
    for (start, end) in wraps {
        out.push_str(&template[at..start]);
        // Doubled parentheses keep `a, b` one tuple argument.
        out.push_str(GUARD);
        out.push_str("((");
        out.push_str(&template[start..end]);
        out.push_str("))");
        at = end;
    }
    out.push_str(&template[at..]);
    out
}

/// An output that fails past [`MAX_OUTPUT_BYTES`].
pub(super) struct CappedOutput(pub(super) Vec<u8>);

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT_BYTES {
            return Err(std::io::Error::other(format!(
                "the rendered prompt exceeds {MAX_OUTPUT_BYTES} bytes"
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_assignments_are_wrapped() {
        let t =
            "{% set ns = namespace() %}{%- set ns.a = x -%}{% set ns.b, c = 1, 2 %}{% set d = 3 %}";
        assert_eq!(
            guard_namespace_sets(t),
            format!("{{% set ns = namespace() %}}{{%- set ns.a = {GUARD}((x)) -%}}{{% set ns.b, c = {GUARD}((1, 2)) %}}{{% set d = 3 %}}")
        );
    }

    #[test]
    fn format_widths_are_bounded() {
        assert!(check_format_widths("{:>10000}").is_ok());
        assert!(check_format_widths("{:>10001}").is_err());
        assert!(check_format_widths("{0:.99999999999}").is_err());
        assert!(check_format_widths("100000000 {}").is_ok());
    }
}
