//! Grammars for constrained output: JSON schema → GBNF
//! ([`json_schema_to_grammar`]), the grammar of any JSON value or object,
//! and GBNF string literals.
//!
//! A grammar is used through [`SamplingOptions::grammar`](crate::SamplingOptions::grammar),
//! or lazily, from a trigger word on, through
//! [`SamplerStage::LazyGrammar`](crate::SamplerStage::LazyGrammar).

mod deadline;
mod int_range;
mod json_schema;
mod limits;

pub use deadline::with_deadline;
pub(crate) use json_schema::check_depth;
pub use json_schema::{
    json_schema_to_grammar, MAX_ALTERNATIVES, MAX_DEPTH, MAX_JSON_DEPTH, MAX_RULES,
};
pub use limits::{
    check_gbnf, MAX_GRAMMAR_BYTES, MAX_GRAMMAR_ELEMENTS, MAX_GRAMMAR_NESTING, MAX_GRAMMAR_RULES,
    MAX_GRAMMAR_STACKS, MAX_REPETITION,
};

/// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
///
/// ```
/// let gbnf = llama_safe::grammar::json_object_grammar();
/// assert!(gbnf.starts_with("root ::= object"));
/// ```
pub fn json_object_grammar() -> String {
    json_schema_to_grammar(&serde_json::json!({"type": "object"}))
        .expect("the object schema converts")
}

/// `text` as a GBNF string literal, quoted and escaped.
///
/// ```
/// assert_eq!(llama_safe::grammar::literal("a\"b\n"), r#""a\"b\n""#);
/// ```
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '[' => out.push_str("\\["),
            ']' => out.push_str("\\]"),
            c if (c as u32) < 0x20 || c as u32 == 0x7F => {
                out.push_str(&format!("\\x{:02X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
