//! GBNF for the decimal integers in a range, digit by digit (no leading
//! zeros, at most 16 digits, as llama.cpp's `integral-part`).

/// Most digits of an integer the grammar allows.
const MAX_DIGITS: u32 = 16;
const MAX_VALUE: u64 = 10u64.pow(MAX_DIGITS) - 1;

/// The integers from `lo` to `hi` (either unbounded when `None`), or
/// `None` when there are none.
pub(crate) fn gbnf(lo: Option<i64>, hi: Option<i64>) -> Option<String> {
    let max = MAX_VALUE as i64;
    let lo = lo.unwrap_or(-max).max(-max);
    let hi = hi.unwrap_or(max).min(max);
    if lo > hi {
        return None;
    }
    let mut alts = Vec::new();
    if lo < 0 {
        // Negative numbers: "-" and a magnitude in [max(1, -hi), -lo].
        let from = if hi < 0 { hi.unsigned_abs() } else { 1 };
        alts.push(format!("\"-\" ({})", unsigned(from, lo.unsigned_abs())));
    }
    if hi >= 0 {
        alts.push(unsigned(lo.max(0) as u64, hi as u64));
    }
    Some(alts.join(" | "))
}

/// The non-negative integers from `lo` to `hi` (`lo <= hi`).
fn unsigned(lo: u64, hi: u64) -> String {
    let mut alts = Vec::new();
    let (dl, dh) = (digits(lo), digits(hi));
    for d in dl..=dh {
        let first = if d == 1 { 0 } else { 10u64.pow(d - 1) };
        let last = 10u64.pow(d) - 1;
        let (a, b) = (lo.max(first), hi.min(last));
        same_length(&a.to_string(), &b.to_string(), &mut alts, String::new());
    }
    alts.join(" | ")
}

fn digits(n: u64) -> u32 {
    n.checked_ilog10().unwrap_or(0) + 1
}

/// The numbers from `a` to `b`, both of the same length, each alternative
/// prefixed by `prefix`.
fn same_length(a: &str, b: &str, out: &mut Vec<String>, prefix: String) {
    let join = |p: &str, rest: &str| {
        if p.is_empty() {
            rest.to_string()
        } else if rest.is_empty() {
            p.to_string()
        } else {
            format!("{p} {rest}")
        }
    };
    let (x, y) = (a.as_bytes()[0], b.as_bytes()[0]);
    let n = a.len() - 1;
    if n == 0 {
        out.push(join(&prefix, &class(x, y)));
        return;
    }
    let (ra, rb) = (&a[1..], &b[1..]);
    if x == y {
        let p = join(&prefix, &format!("\"{}\"", x as char));
        same_length(ra, rb, out, p);
        return;
    }
    let zeros = "0".repeat(n);
    let nines = "9".repeat(n);
    let any = |count: usize| {
        if count == 1 {
            "[0-9]".to_string()
        } else {
            format!("[0-9]{{{count}}}")
        }
    };
    if ra == zeros && rb == nines {
        out.push(join(&prefix, &format!("{} {}", class(x, y), any(n))));
        return;
    }
    // a's first digit with the rest from ra up, the digits strictly between
    // with anything after, and b's first digit with the rest up to rb.
    let mut lo_first = x;
    if ra != zeros {
        same_length(
            ra,
            &nines,
            out,
            join(&prefix, &format!("\"{}\"", x as char)),
        );
        lo_first = x + 1;
    }
    let mut hi_last = y;
    if rb != nines {
        hi_last = y - 1;
    }
    if lo_first <= hi_last {
        out.push(join(
            &prefix,
            &format!("{} {}", class(lo_first, hi_last), any(n)),
        ));
    }
    if rb != nines {
        same_length(
            &zeros,
            rb,
            out,
            join(&prefix, &format!("\"{}\"", y as char)),
        );
    }
}

fn class(x: u8, y: u8) -> String {
    if x == y {
        format!("[{}]", x as char)
    } else {
        format!("[{}-{}]", x as char, y as char)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny matcher for the GBNF emitted here: an optional negative
    /// branch `"-" ( ... )`, then alternatives of sequences of `"d"`,
    /// `[a-b]` and `[0-9]{n}`.
    fn matches(expr: &str, s: &str) -> bool {
        let (negative, positive) = match expr.strip_prefix("\"-\" (") {
            Some(rest) => {
                let end = rest.find(')').unwrap();
                (Some(&rest[..end]), rest[end + 1..].strip_prefix(" | "))
            }
            None => (None, Some(expr)),
        };
        let any = |alts: Option<&str>, s: &str| {
            alts.is_some_and(|a| a.split(" | ").any(|alt| seq(alt, s)))
        };
        match s.strip_prefix('-') {
            Some(m) => any(negative, m),
            None => any(positive, s),
        }
    }

    fn seq(alt: &str, s: &str) -> bool {
        let mut chars = s.chars();
        for atom in alt.split(' ') {
            let (class, count) = match atom.split_once('{') {
                Some((c, n)) => (c, n.trim_end_matches('}').parse::<usize>().unwrap()),
                None => (atom, 1),
            };
            for _ in 0..count {
                let Some(c) = chars.next() else { return false };
                let ok = if let Some(lit) = class.strip_prefix('"') {
                    lit.starts_with(c)
                } else {
                    let b = class.as_bytes();
                    let (lo, hi) = if b.len() == 3 {
                        (b[1], b[1])
                    } else {
                        (b[1], b[3])
                    };
                    (lo..=hi).contains(&(c as u8))
                };
                if !ok {
                    return false;
                }
            }
        }
        chars.next().is_none()
    }

    #[test]
    fn ranges_hold_exactly_their_numbers() {
        for (lo, hi) in [
            (0, 0),
            (0, 9),
            (1, 14),
            (7, 123),
            (10, 99),
            (15, 1234),
            (-20, -3),
            (-15, 27),
            (-1, 0),
            (100, 100),
            (99, 1000),
        ] {
            let g = gbnf(Some(lo), Some(hi)).unwrap();
            for n in (lo - 30)..=(hi + 30) {
                assert_eq!(
                    matches(&g, &n.to_string()),
                    (lo..=hi).contains(&n),
                    "{n} in [{lo}, {hi}]: {g}"
                );
            }
            // No leading zeros, no "-0".
            assert!(!matches(&g, "00") && !matches(&g, "-0") && !matches(&g, "01"));
        }
        assert_eq!(gbnf(Some(5), Some(4)), None);
    }

    #[test]
    fn half_open_ranges_reach_sixteen_digits() {
        let g = gbnf(Some(3), None).unwrap();
        assert!(matches(&g, "3") && matches(&g, "9999999999999999") && !matches(&g, "2"));
        let g = gbnf(None, Some(-2)).unwrap();
        assert!(matches(&g, "-2") && matches(&g, "-9999999999999999") && !matches(&g, "0"));
    }
}
