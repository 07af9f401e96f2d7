//! Bounds a GBNF grammar is checked against before llama.cpp parses it.
//!
//! llama.cpp's grammar parser recurses once per nested group and its
//! left-recursion check once per rule in a chain, so 100,000 nested
//! parentheses or a chain of 100,000 rules overflow the stack (an abort);
//! and it expands `x{m,n}` by copying `x` up to 2,000 times, nested
//! repetitions multiplying, so a short grammar can ask for gigabytes. The
//! scan here is linear in the grammar's length and refuses, with
//! [`Error::Grammar`], what would exceed the limits below.

use crate::error::{Error, Result};

/// Longest grammar, in bytes.
pub const MAX_GRAMMAR_BYTES: usize = 1 << 20;
/// Deepest nesting of parenthesised groups.
pub const MAX_GRAMMAR_NESTING: usize = 64;
/// Most rules in a grammar (written or made by llama.cpp for `*`, `+`,
/// `?` and `{m,n}`).
pub const MAX_GRAMMAR_RULES: usize = 8192;
/// Most grammar elements once repetitions are expanded (8 bytes each in
/// llama.cpp).
pub const MAX_GRAMMAR_ELEMENTS: u64 = 1 << 21;

/// Largest count in `x{m}`, `x{m,}` or `x{m,n}`: llama.cpp refuses a
/// larger `m` and silently drops a larger `n` (the repetition becomes
/// unbounded), so both are refused here.
pub const MAX_REPETITION: u64 = 2000;
/// Most parse stacks a grammar may hold while sampling: an ambiguous
/// grammar can double them at every token, and each sample costs time in
/// proportion. Past this, sampling or accepting is
/// [`Error::GrammarBudget`] (where llama.cpp's source was at hand when
/// llama-safe-sys was built, as it is unless a prebuilt llama.cpp is used).
pub const MAX_GRAMMAR_STACKS: usize = 1024;

fn refuse(reason: String) -> Error {
    Error::Grammar {
        reason: reason.into(),
    }
}

/// Checks `gbnf` against the limits above (see the module docs). What the
/// scan cannot read is left for llama.cpp's parser to report.
///
/// ```
/// use llama_safe::grammar::check_gbnf;
/// assert!(check_gbnf(r#"root ::= "a"{3} [0-9]*"#).is_ok());
/// let deep = format!("root ::= {}\"a\"{}", "(".repeat(100), ")".repeat(100));
/// assert!(check_gbnf(&deep).is_err());
/// ```
pub fn check_gbnf(gbnf: &str) -> Result<()> {
    if gbnf.len() > MAX_GRAMMAR_BYTES {
        return Err(refuse(format!(
            "the grammar is {} bytes; at most {MAX_GRAMMAR_BYTES}",
            gbnf.len()
        )));
    }
    Scan {
        bytes: gbnf.as_bytes(),
        at: 0,
        rules: 0,
    }
    .grammar()
}

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Rules so far, written and generated.
    rules: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn add_rules(&mut self, n: usize) -> Result<()> {
        self.rules += n;
        if self.rules > MAX_GRAMMAR_RULES {
            return Err(refuse(format!(
                "the grammar has more than {MAX_GRAMMAR_RULES} rules (with those its repetitions make)"
            )));
        }
        Ok(())
    }

    fn grammar(&mut self) -> Result<()> {
        let mut total: u64 = 0;
        // Each rule: `name ::= alternatives`, ending where the next
        // `name ::=` starts; the scan reads the bodies as one stream.
        while self.at < self.bytes.len() {
            let (size, _) = self.alternatives(0)?;
            total = total.saturating_add(size);
            if total > MAX_GRAMMAR_ELEMENTS {
                return Err(refuse(format!(
                    "the grammar expands to more than {MAX_GRAMMAR_ELEMENTS} elements \
                     (literals times their repetitions)"
                )));
            }
            if self.peek() == Some(b')') {
                // An unbalanced `)`: llama.cpp's parser says where.
                self.at += 1;
            }
        }
        Ok(())
    }

    /// Reads alternatives up to a `)` at this depth or the end; returns
    /// their expanded size and whether they ended at a `)`.
    fn alternatives(&mut self, depth: usize) -> Result<(u64, bool)> {
        if depth > MAX_GRAMMAR_NESTING {
            return Err(refuse(format!(
                "groups nested deeper than {MAX_GRAMMAR_NESTING}"
            )));
        }
        let mut size: u64 = 0;
        // The expanded size of the last item, which a postfix repeats.
        let mut last: u64 = 0;
        while let Some(c) = self.peek() {
            match c {
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.at += 1;
                    }
                }
                b'"' => {
                    last = self.quoted(b'"')?;
                    size = size.saturating_add(last);
                }
                b'[' => {
                    last = self.quoted(b']')?;
                    size = size.saturating_add(last);
                }
                b'(' => {
                    self.at += 1;
                    let (inner, closed) = self.alternatives(depth + 1)?;
                    if closed {
                        self.at += 1;
                    }
                    last = inner.saturating_add(1);
                    size = size.saturating_add(last);
                }
                b')' if depth > 0 => return Ok((size, true)),
                b')' => return Ok((size, false)),
                b'*' | b'+' | b'?' => {
                    self.at += 1;
                    self.add_rules(1)?;
                    size = size.saturating_add(last.saturating_add(2));
                }
                b'{' => {
                    self.at += 1;
                    let times = self.repetition()?;
                    self.add_rules(times.min(MAX_GRAMMAR_RULES as u64 + 1) as usize)?;
                    // llama.cpp copies the item `times` times in all.
                    let grown = last.saturating_mul(times.max(1));
                    size = size.saturating_add(grown.saturating_sub(last));
                    last = grown;
                }
                b':' if self.bytes[self.at..].starts_with(b"::=") => {
                    self.at += 3;
                    self.add_rules(1)?;
                }
                c if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' => {
                    while self
                        .peek()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                    {
                        self.at += 1;
                    }
                    last = 1;
                    size = size.saturating_add(1);
                }
                _ => self.at += 1,
            }
            if size > MAX_GRAMMAR_ELEMENTS {
                return Err(refuse(format!(
                    "the grammar expands to more than {MAX_GRAMMAR_ELEMENTS} elements \
                     (literals times their repetitions)"
                )));
            }
        }
        Ok((size, false))
    }

    /// Skips a `"…"` literal or `[…]` class (escapes included); returns
    /// its size in elements.
    fn quoted(&mut self, close: u8) -> Result<u64> {
        self.at += 1;
        let mut n: u64 = 1;
        while let Some(c) = self.peek() {
            self.at += 1;
            if c == b'\\' {
                self.at += 1;
            } else if c == close {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Reads the inside of `{m}`, `{m,}` or `{m,n}` and its `}`; returns
    /// how many copies of the item llama.cpp makes (`m + 1` when open).
    fn repetition(&mut self) -> Result<u64> {
        let mut numbers = [None::<u64>, None];
        let mut which = 0;
        while let Some(c) = self.peek() {
            self.at += 1;
            match c {
                b'}' => break,
                b',' => which = 1,
                b'0'..=b'9' => {
                    let n = numbers[which].unwrap_or(0);
                    numbers[which] = Some(n.saturating_mul(10).saturating_add(u64::from(c - b'0')));
                }
                _ => {}
            }
        }
        if numbers.iter().flatten().any(|&n| n > MAX_REPETITION) {
            return Err(refuse(format!(
                "a repetition count above {MAX_REPETITION} (llama.cpp cannot enforce it)"
            )));
        }
        Ok(match (numbers[0], which, numbers[1]) {
            (m, 0, _) => m.unwrap_or(0),
            (m, _, None) => m.unwrap_or(0) + 1,
            (_, _, Some(n)) => n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_grammars_pass() {
        let json = crate::grammar::json_object_grammar();
        check_gbnf(&json).unwrap();
        check_gbnf("root ::= [a-z]{1,16} (\" \" [a-z]{1,16}){0,8}\n").unwrap();
    }

    #[test]
    fn each_limit_is_refused() {
        let deep = format!("root ::= {}\"a\"{}", "(".repeat(65), ")".repeat(65));
        assert!(check_gbnf(&deep).is_err());
        let chain: String = (0..9000)
            .map(|i| format!("r{i} ::= r{}\n", i + 1))
            .collect();
        assert!(check_gbnf(&format!("root ::= r0\n{chain}")).is_err());
        let literal = format!("root ::= \"{}\"{{2000}}", "a".repeat(300_000));
        assert!(check_gbnf(&literal).is_err());
        let nested = "root ::= ((\"ab\"{2000}){2000})";
        assert!(check_gbnf(nested).is_err());
        assert!(check_gbnf(&" ".repeat(MAX_GRAMMAR_BYTES + 1)).is_err());
        assert!(check_gbnf("root ::= \"a\"{0,2001}").is_err());
        assert!(check_gbnf("root ::= \"a\"{0,2000}").is_ok());
    }
}
