//! Speculative decoding without a second model: tokens drafted from the
//! text so far (prompt lookup: the continuation of the last n-gram's most
//! recent earlier occurrence), checked by the model in one batch.
//!
//! Each drafted position is checked by sampling the model's own token there
//! with the request's sampler, in order, and keeping the draft while they
//! agree: every token emitted is the one the model samples given the tokens
//! before it, so greedy output is the same as without speculation, and with
//! temperature the distribution is the model's (for a drafted token, the
//! acceptance probability is the model's probability of it: the standard
//! accept/reject rule for a draft that is one token for sure). The KV cells
//! of rejected drafts are removed before the next step.

use crate::token::Token;

/// Speculative decoding for [`LlamaContext::generate`](crate::LlamaContext::generate):
/// where drafts come from and how long they are.
///
/// ```
/// use llama_safe::{demo::*, *};
/// let model = LlamaModel::load(&LlamaBackend::init(), DemoModel::Moe.cached()?, &Default::default())?;
/// let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(512))?;
/// let options = GenerateOptions::default()
///     .with_sampling(SamplingOptions::greedy())
///     .with_speculation(Speculation::prompt_lookup().with_draft_max(8));
/// let mut text = String::new();
/// let mut stats = None;
/// for event in ctx.generate(DEMO_PROMPT, &options)? {
///     match event? {
///         Event::Piece(p) => text.push_str(&p.text),
///         Event::Done(s) => stats = s.speculation,
///     }
/// }
/// assert_eq!(text, DEMO_CONTINUATION); // the same text as without speculation
/// assert!(stats.is_some());
/// # Ok::<(), llama_safe::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "builders return a new value: use it"]
pub struct Speculation {
    ngram_min: u32,
    ngram_max: u32,
    draft_min: u32,
    draft_max: u32,
}

/// Most tokens one draft may have.
pub const MAX_DRAFT: u32 = 64;

impl Speculation {
    /// Prompt lookup: n-grams of 1 to 3 tokens, drafts of 1 to 16 tokens
    /// (llama-server's `--spec-draft-n-max` default).
    pub fn prompt_lookup() -> Speculation {
        Speculation {
            ngram_min: 1,
            ngram_max: 3,
            draft_min: 1,
            draft_max: 16,
        }
    }

    /// The n-gram sizes looked up, longest first.
    pub fn with_ngram(mut self, min: u32, max: u32) -> Self {
        self.ngram_min = min;
        self.ngram_max = max;
        self
    }

    /// Most tokens drafted per step (`--spec-draft-n-max`), at most
    /// [`MAX_DRAFT`].
    pub fn with_draft_max(mut self, n: u32) -> Self {
        self.draft_max = n;
        self
    }

    /// Fewest tokens a draft must have to be checked (`--spec-draft-n-min`).
    pub fn with_draft_min(mut self, n: u32) -> Self {
        self.draft_min = n;
        self
    }

    /// Most tokens drafted per step.
    pub fn draft_max(&self) -> u32 {
        self.draft_max
    }

    /// What cannot work, as [`Error::InvalidParameter`](crate::Error::InvalidParameter).
    pub(crate) fn check(&self) -> crate::Result<()> {
        let bad = |reason: String| crate::Error::InvalidParameter {
            name: "speculation",
            reason: reason.into(),
        };
        if self.ngram_min == 0 || self.ngram_min > self.ngram_max || self.ngram_max > 16 {
            return Err(bad(format!(
                "n-gram sizes {}..={} (from 1 to 16, the smaller first)",
                self.ngram_min, self.ngram_max
            )));
        }
        if self.draft_max == 0 || self.draft_max > MAX_DRAFT || self.draft_min > self.draft_max {
            return Err(bad(format!(
                "draft sizes {}..={} (at most {MAX_DRAFT}, the smaller first)",
                self.draft_min, self.draft_max
            )));
        }
        Ok(())
    }

    /// The draft after `history`: the tokens that followed the most recent
    /// earlier occurrence of its last n-gram (the longest n that has one),
    /// at most `limit` of them; empty when it is shorter than the minimum.
    pub(crate) fn draft(&self, history: &[Token], limit: usize) -> Vec<Token> {
        let limit = limit.min(self.draft_max as usize);
        if limit == 0 {
            return Vec::new();
        }
        for n in (self.ngram_min as usize..=self.ngram_max as usize).rev() {
            if history.len() <= n {
                continue;
            }
            let key = &history[history.len() - n..];
            // Most recent first; the occurrence must have a token after it.
            let found = (0..history.len() - n)
                .rev()
                .find(|&j| &history[j..j + n] == key);
            if let Some(j) = found {
                let from = j + n;
                let draft: Vec<Token> = history[from..].iter().take(limit).copied().collect();
                if draft.len() >= self.draft_min as usize {
                    return draft;
                }
            }
        }
        Vec::new()
    }
}

/// What speculation did in one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpeculationStats {
    /// Tokens drafted.
    pub drafted: usize,
    /// Drafted tokens the model agreed with.
    pub accepted: usize,
    /// Decodes of the model after the prompt (each checks one draft).
    pub target_decodes: usize,
    /// Tokens generated.
    pub generated: usize,
}

impl SpeculationStats {
    /// `accepted / drafted` (0 with nothing drafted).
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }

    /// Tokens generated per decode of the model (1 without speculation).
    pub fn tokens_per_decode(&self) -> f64 {
        if self.target_decodes == 0 {
            0.0
        } else {
            self.generated as f64 / self.target_decodes as f64
        }
    }
}

/// Puts `stats` (when speculation ran) into the `Done` among `events`, its
/// `generated` the generation's own count.
pub(crate) fn with_stats(
    stats: Option<SpeculationStats>,
    mut events: Vec<super::Event>,
) -> Vec<super::Event> {
    if let Some(stats) = stats {
        for e in &mut events {
            if let super::Event::Done(done) = e {
                done.speculation = Some(SpeculationStats {
                    generated: done.generated_tokens,
                    ..stats
                });
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ids: &[i32]) -> Vec<Token> {
        ids.iter().map(|&i| Token(i)).collect()
    }

    #[test]
    fn drafts_follow_the_latest_longest_match() {
        let s = Speculation::prompt_lookup().with_draft_max(3);
        // ... 1 2 3 9 9 ... 1 2 3 | the 3-gram "1 2 3" was followed by 9 9.
        let h = t(&[1, 2, 3, 9, 9, 4, 1, 2, 3]);
        assert_eq!(s.draft(&h, 10), t(&[9, 9, 4]));
        assert_eq!(s.draft(&h, 1), t(&[9]));
        // The most recent occurrence wins.
        let h = t(&[5, 7, 5, 8, 5]);
        assert_eq!(s.draft(&h, 10), t(&[8, 5]));
        // No match: nothing.
        assert!(s.draft(&t(&[1, 2, 3]), 10).is_empty());
        // Too short for the minimum.
        let strict = Speculation::prompt_lookup().with_draft_min(3);
        assert!(strict.draft(&t(&[4, 6, 4]), 10).is_empty());
    }

    #[test]
    fn impossible_settings_are_refused() {
        assert!(Speculation::prompt_lookup().check().is_ok());
        assert!(Speculation::prompt_lookup()
            .with_ngram(0, 2)
            .check()
            .is_err());
        assert!(Speculation::prompt_lookup()
            .with_ngram(3, 2)
            .check()
            .is_err());
        assert!(Speculation::prompt_lookup()
            .with_draft_max(0)
            .check()
            .is_err());
        assert!(Speculation::prompt_lookup()
            .with_draft_max(65)
            .check()
            .is_err());
        assert!(Speculation::prompt_lookup()
            .with_draft_min(20)
            .check()
            .is_err());
    }
}
