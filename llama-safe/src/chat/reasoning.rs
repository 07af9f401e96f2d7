//! The thinking of models that think (`<think>...</think>` before the
//! answer: Qwen3, QwQ, DeepSeek-R1 and their derivatives), split from the
//! answer as it streams.

/// Where a thinking block opens.
pub const THINK_OPEN: &str = "<think>";
/// Where it closes.
pub const THINK_CLOSE: &str = "</think>";

/// What a piece of an answer added: to the thinking, and to the answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// Thinking text.
    pub reasoning: String,
    /// Answer text.
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before any text: a thinking block may still open.
    Start,
    /// In the thinking block.
    Thinking,
    /// Right after it: whitespace here is dropped.
    Closed,
    /// In the answer.
    Answer,
}

/// Splits a streamed answer into thinking and answer. Only a block at the
/// start is thinking (`<think>` there, or already opened by the prompt);
/// a tag later in the answer is answer text. A tag split across pieces is
/// held back until it is whole, so no piece of a tag is ever emitted.
///
/// ```
/// use llama_safe::chat::ReasoningSplitter;
/// let mut s = ReasoningSplitter::new(false);
/// let mut out = s.push("<thi");
/// out.extend(s.push("nk>Two and two.</th"));
/// out.extend(s.push("ink>\n\nFour."));
/// out.extend(s.finish());
/// assert_eq!(out.reasoning, "Two and two.");
/// assert_eq!(out.content, "Four.");
/// ```
#[derive(Debug, Clone)]
pub struct ReasoningSplitter {
    state: State,
    /// Text held back: a tag's possible start.
    pending: String,
}

impl Split {
    /// Appends `other`.
    pub fn extend(&mut self, other: Split) {
        self.reasoning.push_str(&other.reasoning);
        self.content.push_str(&other.content);
    }

    /// Whether it adds nothing.
    pub fn is_empty(&self) -> bool {
        self.reasoning.is_empty() && self.content.is_empty()
    }
}

impl ReasoningSplitter {
    /// A splitter for an answer that starts inside the thinking block
    /// (`inside`: the prompt opened it) or before it.
    pub fn new(inside: bool) -> ReasoningSplitter {
        ReasoningSplitter {
            state: if inside {
                State::Thinking
            } else {
                State::Start
            },
            pending: String::new(),
        }
    }

    /// A splitter for the answer to `prompt`: inside the block when the
    /// prompt ends by opening one (as DeepSeek-R1's template and Qwen3's
    /// thinking variants do).
    pub fn for_prompt(prompt: &str) -> ReasoningSplitter {
        ReasoningSplitter::new(prompt.trim_end().ends_with(THINK_OPEN))
    }

    /// Adds a piece of the answer; returns what can go out now.
    pub fn push(&mut self, piece: &str) -> Split {
        self.pending.push_str(piece);
        let mut out = Split::default();
        loop {
            match self.state {
                State::Start => {
                    let text = self.pending.trim_start();
                    if text.is_empty() {
                        return out;
                    }
                    if let Some(rest) = text.strip_prefix(THINK_OPEN) {
                        self.pending = rest.to_string();
                        self.state = State::Thinking;
                    } else if THINK_OPEN.starts_with(text) {
                        return out; // maybe the tag, not whole yet
                    } else {
                        self.state = State::Answer;
                    }
                }
                State::Thinking => match self.pending.find(THINK_CLOSE) {
                    Some(at) => {
                        out.reasoning.push_str(&self.pending[..at]);
                        self.pending.drain(..at + THINK_CLOSE.len());
                        self.state = State::Closed;
                    }
                    None => {
                        let keep = tag_prefix_len(&self.pending, THINK_CLOSE);
                        let emit = self.pending.len() - keep;
                        out.reasoning.push_str(&self.pending[..emit]);
                        self.pending.drain(..emit);
                        return out;
                    }
                },
                State::Closed => {
                    let text = self.pending.trim_start();
                    if text.is_empty() {
                        self.pending.clear();
                        return out;
                    }
                    self.pending = text.to_string();
                    self.state = State::Answer;
                }
                State::Answer => {
                    out.content.push_str(&self.pending);
                    self.pending.clear();
                    return out;
                }
            }
        }
    }

    /// The end: what was held back. An unclosed thinking block stays
    /// thinking; a lone partial tag at the start is answer text.
    pub fn finish(mut self) -> Split {
        let rest = std::mem::take(&mut self.pending);
        match self.state {
            State::Thinking => Split {
                reasoning: rest,
                content: String::new(),
            },
            State::Start | State::Answer => Split {
                reasoning: String::new(),
                content: rest.trim_start().to_string(),
            },
            State::Closed => Split::default(),
        }
    }

    /// Whether the answer is still in its thinking block.
    pub fn thinking(&self) -> bool {
        self.state == State::Thinking
    }
}

/// Length of the longest tail of `text` that is a proper prefix of `tag`.
fn tag_prefix_len(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(inside: bool, pieces: &[&str]) -> Split {
        let mut s = ReasoningSplitter::new(inside);
        let mut out = Split::default();
        for p in pieces {
            out.extend(s.push(p));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn splits_at_every_cut() {
        let text = "<think>a b</think>\n\nThe answer.";
        for cut in 1..text.len() {
            // No piece of a tag ever goes out.
            let mut s = ReasoningSplitter::new(false);
            let first = s.push(&text[..cut]);
            assert!(
                !first.reasoning.contains('<') && !first.content.contains('<'),
                "{first:?}"
            );
            let out = run(false, &[&text[..cut], &text[cut..]]);
            assert_eq!(out.reasoning, "a b", "cut at {cut}");
            assert_eq!(out.content, "The answer.", "cut at {cut}");
        }
    }

    #[test]
    fn opened_by_the_prompt_or_never_closed() {
        let out = run(true, &["thinking", "</think>", "done"]);
        assert_eq!(
            (out.reasoning.as_str(), out.content.as_str()),
            ("thinking", "done")
        );
        let out = run(true, &["still thinking"]);
        assert_eq!(
            (out.reasoning.as_str(), out.content.as_str()),
            ("still thinking", "")
        );
        assert!(ReasoningSplitter::for_prompt("<|im_start|>assistant\n<think>\n").thinking());
        assert!(!ReasoningSplitter::for_prompt("<|im_start|>assistant\n").thinking());
    }

    #[test]
    fn a_tag_later_in_the_answer_is_answer_text() {
        let out = run(false, &["Plain answer about <think> tags."]);
        assert_eq!(out.reasoning, "");
        assert_eq!(out.content, "Plain answer about <think> tags.");
        let out = run(false, &["<thi"]);
        assert_eq!(out.content, "<thi");
    }
}
