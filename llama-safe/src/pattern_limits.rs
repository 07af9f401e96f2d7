//! Bounds on tensor-override patterns, so that the C++ `std::regex` that
//! llama.cpp compiles and runs them with can neither overflow its stack nor
//! run away.
//!
//! libstdc++'s ECMAScript engine compiles by recursive descent (deep nesting
//! overflows the stack) and matches by backtracking (a repetition of a
//! repetition, like `(a*)*b`, takes exponential time; many repetitions side
//! by side take polynomial time of a high degree). Tensor names are short
//! (at most [`MAX_NAME_LEN`] bytes), so patterns that need none of that lose
//! nothing by these rules:
//!
//! - at most [`MAX_PATTERN_LEN`] bytes and [`MAX_NESTING`] nested groups;
//! - no repetition (`*`, `+`, `?`, `{n,m}`) of a group that itself holds a
//!   repetition or an alternation (`|`);
//! - at most [`MAX_REPETITIONS`] repetitions in all, with counts of at most
//!   [`MAX_NAME_LEN`] (the worst pattern left, `.*.*.*x`, takes about 18 ms
//!   on a 63-byte name here; each further repetition multiplies that by
//!   about 13);
//! - no back-references (`\1`).

/// The longest tensor name ggml stores: `GGML_MAX_NAME` (64) less its NUL.
pub const MAX_NAME_LEN: usize = 63;
/// The longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 256;
/// The deepest nesting of groups accepted.
pub const MAX_NESTING: usize = 8;
/// The most repetition operators in one pattern.
pub const MAX_REPETITIONS: usize = 3;

/// What one open group has seen so far.
#[derive(Default)]
struct Group {
    has_repetition: bool,
    has_alternation: bool,
}

/// Checks `pattern` against the bounds above; the error says which.
pub(crate) fn check(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "{} bytes, more than the {MAX_PATTERN_LEN} accepted",
            pattern.len()
        ));
    }
    let b = pattern.as_bytes();
    // The outermost level is a group too.
    let mut stack = vec![Group::default()];
    let mut repetitions = 0;
    // What the next quantifier would repeat: a closed group's contents
    // (repetition or alternation inside), or a plain atom.
    let mut last_group: Option<Group> = None;
    let mut can_repeat = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let mut quantifier = false;
        match c {
            b'\\' => {
                match b.get(i + 1) {
                    Some(d) if d.is_ascii_digit() && *d != b'0' => {
                        return Err("back-references (\\1 ...) are not accepted".into());
                    }
                    Some(_) => i += 1,
                    None => {} // std::regex rejects a trailing backslash
                }
                last_group = None;
                can_repeat = true;
            }
            b'[' => {
                // A bracket expression: skip to its closing `]`.
                i += 1;
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    i += 1;
                }
                while i < b.len() && b[i] != b']' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                last_group = None;
                can_repeat = true;
            }
            b'(' => {
                stack.push(Group::default());
                if stack.len() - 1 > MAX_NESTING {
                    return Err(format!("groups nested more than {MAX_NESTING} deep"));
                }
                if b.get(i + 1) == Some(&b'?') {
                    i += 2; // (?: (?= (?!
                }
                can_repeat = false;
            }
            b')' => {
                if stack.len() > 1 {
                    let closed = stack.pop().unwrap_or_default();
                    if let Some(parent) = stack.last_mut() {
                        parent.has_repetition |= closed.has_repetition;
                        parent.has_alternation |= closed.has_alternation;
                    }
                    last_group = Some(closed);
                }
                can_repeat = true;
            }
            b'|' => {
                if let Some(g) = stack.last_mut() {
                    g.has_alternation = true;
                }
                last_group = None;
                can_repeat = false;
            }
            b'*' | b'+' | b'?' => quantifier = can_repeat,
            b'{' => {
                let end = b[i..].iter().position(|&x| x == b'}').map(|p| i + p);
                if let (true, Some(end)) = (can_repeat, end) {
                    let inner = &pattern[i + 1..end];
                    let counts = inner.split(',').filter(|s| !s.is_empty());
                    for n in counts {
                        if n.parse::<usize>().map_or(true, |n| n > MAX_NAME_LEN) {
                            return Err(format!(
                                "repetition count {n:?} above {MAX_NAME_LEN}, the longest tensor name"
                            ));
                        }
                    }
                    i = end;
                    quantifier = true;
                }
            }
            _ => {
                last_group = None;
                can_repeat = true;
            }
        }
        if quantifier {
            repetitions += 1;
            if repetitions > MAX_REPETITIONS {
                return Err(format!("more than {MAX_REPETITIONS} repetitions"));
            }
            if let Some(g) = &last_group {
                if g.has_repetition || g.has_alternation {
                    return Err(
                        "a repeated group holds a repetition or an alternation, which can make matching take exponential time".into(),
                    );
                }
            }
            if let Some(g) = stack.last_mut() {
                g.has_repetition = true;
            }
            // A lazy quantifier's `?` belongs to it.
            if b.get(i + 1) == Some(&b'?') {
                i += 1;
            }
            last_group = None;
            can_repeat = false;
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn real_patterns_pass() {
        for p in [
            r"\.ffn_(up|down|gate_up|gate)_(ch|)exps",
            r"blk\.12\.ffn_(up|down|gate_up|gate)_(ch|)exps",
            r"blk\.([0-9]|1[0-9])\.ffn_.*_exps\.weight",
            r"blk\.\d+\.ffn_.*_exps.*",
            r"^blk\.\d+\.attn_.*",
            "exps",
            r"blk\.\d{1,2}\.ffn_up_exps",
            r"[a-z]+_(?:up|down)",
            r"ffn_(up|down)_exps\.weight$",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn runaway_and_deep_patterns_fail() {
        for p in [
            "(a*)*b",
            "(a+)+b",
            "(a|aa)*b",
            "(a|a)+$",
            "((a*))*",
            "(.*a){20}",
            ".*.*.*.*x",
            r"(\w+\s?)*$",
            "a{1000}",
            "a{2,100000}",
            r"(a)\1",
            ".*.*.*.*.*.*.*x",
        ] {
            assert!(check(p).is_err(), "{p}");
        }
        let deep = format!("{}a{}", "(".repeat(9), ")".repeat(9));
        assert!(check(&deep).is_err());
        let ok_depth = format!("{}a{}", "(".repeat(8), ")".repeat(8));
        assert_eq!(check(&ok_depth), Ok(()));
        assert!(check(&"a".repeat(257)).is_err());
    }
}
