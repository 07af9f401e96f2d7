//! Stop strings, matched as text streams in: each appended byte advances one
//! KMP automaton per stop string, so the cost stays linear in the output
//! whatever the stop strings' lengths.

/// Finds stop strings in streamed text and holds back the tail that may be
/// the start of one, so a stop string is never emitted.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopMatcher {
    stops: Vec<Kmp>,
    /// Text not emitted yet.
    held: String,
}

/// One stop string and how far the text matches it now.
#[derive(Debug, Clone)]
struct Kmp {
    pattern: Vec<u8>,
    /// KMP failure function: for each prefix length, the longest proper
    /// prefix that is also a suffix of it.
    fail: Vec<usize>,
    /// Bytes of `pattern` the end of the text matches.
    matched: usize,
}

impl Kmp {
    fn new(pattern: &str) -> Kmp {
        let p = pattern.as_bytes().to_vec();
        let mut fail = vec![0; p.len() + 1];
        let mut k = 0;
        for i in 1..p.len() {
            while k > 0 && p[i] != p[k] {
                k = fail[k];
            }
            if p[i] == p[k] {
                k += 1;
            }
            fail[i + 1] = k;
        }
        Kmp {
            pattern: p,
            fail,
            matched: 0,
        }
    }

    /// Feeds one byte; true when the whole pattern now ends here.
    fn push(&mut self, b: u8) -> bool {
        if self.matched == self.pattern.len() {
            self.matched = self.fail[self.matched];
        }
        while self.matched > 0 && self.pattern[self.matched] != b {
            self.matched = self.fail[self.matched];
        }
        if self.pattern[self.matched] == b {
            self.matched += 1;
        }
        self.matched == self.pattern.len()
    }
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub(crate) fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| Kmp::new(s))
                .collect(),
            held: String::new(),
        }
    }

    /// Appends `text`; returns what can be emitted now, and whether a stop
    /// string was found (the text from it on is dropped).
    pub(crate) fn push(&mut self, text: &str) -> (String, bool) {
        let start = self.held.len();
        self.held.push_str(text);
        for (i, &b) in self.held.as_bytes()[start..].iter().enumerate() {
            let end = start + i + 1;
            if let Some(stop) = self.stops.iter_mut().fold(None, |found, k| {
                let hit = k.push(b);
                found.or(hit.then_some(k.pattern.len()))
            }) {
                self.held.truncate(end - stop);
                return (std::mem::take(&mut self.held), true);
            }
        }
        // Hold back the longest tail that is a prefix of a stop string; it
        // starts at a char boundary (the prefix starts one) and ends at one.
        let keep = self.stops.iter().map(|k| k.matched).max().unwrap_or(0);
        let rest = self.held.split_off(self.held.len() - keep);
        (std::mem::replace(&mut self.held, rest), false)
    }

    /// Whatever is held back, at the end of the text.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The end of the text after a last `rest` (the UTF-8 stream's
    /// leftover): what `rest` releases, cut at a stop string if one
    /// completes in it, then whatever is still held back.
    pub(crate) fn finish_with(&mut self, rest: &str) -> String {
        let (mut tail, _) = self.push(rest);
        tail.push_str(&self.finish());
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (emit, stopped) = m.push(p);
            out.push_str(&emit);
            if stopped {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stops_across_pieces_and_holds_back_prefixes() {
        assert_eq!(
            run(&["END"], &["abc E", "N", "D tail"]),
            ("abc ".into(), true)
        );
        assert_eq!(
            run(&["END"], &["abc E", "N", "x"]),
            ("abc ENx".into(), false)
        );
        assert_eq!(run(&["aab"], &["aaaab"]), ("aa".into(), true));
        assert_eq!(run(&["xy", "abcd"], &["zab", "cxy"]), ("zabc".into(), true));
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn held_text_is_emitted_as_soon_as_it_cannot_start_a_stop() {
        let mut m = StopMatcher::new(&["STOP".to_string()]);
        assert_eq!(m.push("xST"), ("x".into(), false));
        assert_eq!(m.push("x"), ("STx".into(), false));
    }

    #[test]
    fn cost_is_linear_in_the_output() {
        let stops: Vec<String> = (0..16)
            .map(|i| format!("{}{i}", "a".repeat(120_000)))
            .collect();
        let mut m = StopMatcher::new(&stops);
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            let _ = m.push("aaaa");
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
}
