//! Speculative decoding: tokens drafted cheaply (from the text so far, or
//! by a smaller draft model), checked by the model in one batch.
//!
//! Each drafted position is checked by sampling the model's own token there
//! with the request's sampler, in order, and keeping the draft while they
//! agree: every token emitted is the one the model samples given the tokens
//! before it, so greedy output is the same as without speculation, and with
//! temperature the distribution is the model's (for a drafted token, the
//! acceptance probability is the model's probability of it: the standard
//! accept/reject rule for a draft that is one token for sure). The KV cells
//! of rejected drafts are removed before the next step.

mod draft_model;
mod lookup;

pub use draft_model::{DraftModel, MAX_VOCAB_DIFFERENCE};
pub(crate) use draft_model::{ModelDrafter, Want};

use crate::token::Token;

/// Speculative decoding for [`LlamaContext::generate`](crate::LlamaContext::generate)
/// and the [engine](crate::engine): where drafts come from and how long
/// they are.
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
#[derive(Debug, Clone)]
#[must_use = "builders return a new value: use it"]
pub struct Speculation {
    source: Source,
    ngram_min: u32,
    ngram_max: u32,
    min_hits: u32,
    draft_min: u32,
    draft_max: u32,
}

/// Where drafts come from.
#[derive(Debug, Clone)]
enum Source {
    PromptLookup,
    NgramMap,
    Model(DraftModel),
}

/// Most tokens one draft may have.
pub const MAX_DRAFT: u32 = 64;

/// Longest n-gram the lookup sources take.
pub const MAX_NGRAM: u32 = 16;

impl Speculation {
    /// Prompt lookup (llama-server's `ngram-simple`): the tokens that
    /// followed the most recent earlier occurrence of the text's last
    /// n-gram, n from 3 down to 1; drafts of 1 to 16 tokens (llama-server's
    /// `--spec-draft-n-max` default). Good where the answer repeats the
    /// prompt (rewriting, editing code, quoting).
    pub fn prompt_lookup() -> Speculation {
        Speculation {
            source: Source::PromptLookup,
            ngram_min: 1,
            ngram_max: 3,
            min_hits: 1,
            draft_min: 1,
            draft_max: 16,
        }
    }

    /// An n-gram map (llama-server's `ngram-map-k` idea): every n-gram of
    /// the text so far with how often each token followed it; a draft
    /// chains the most frequent successor of the longest known n-gram
    /// (n from 3 down to 1), each seen at least [`with_min_hits`](Self::with_min_hits)
    /// times. Where prompt lookup copies the latest continuation, the map
    /// follows the usual one, and it is updated with each new token instead
    /// of searching the whole text every step.
    pub fn ngram_map() -> Speculation {
        Speculation {
            source: Source::NgramMap,
            ..Speculation::prompt_lookup()
        }
    }

    /// A draft model (llama-server's `draft-simple`, `--model-draft`): its
    /// most likely tokens while its probability of them is at least its
    /// `p_min`. Its vocabulary must be the target's
    /// ([`DraftModel::check_compatible`], checked when generation starts).
    /// [`LlamaContext::generate`](crate::LlamaContext::generate) makes a
    /// context of the draft model for each generation; the engine keeps one
    /// for all its sequences ([`EngineConfig::with_speculation`](crate::engine::EngineConfig::with_speculation)).
    pub fn draft_model(draft: DraftModel) -> Speculation {
        Speculation {
            source: Source::Model(draft),
            ..Speculation::prompt_lookup()
        }
    }

    /// The n-gram sizes the lookup sources try, longest first (1 to
    /// [`MAX_NGRAM`]).
    pub fn with_ngram(mut self, min: u32, max: u32) -> Self {
        self.ngram_min = min;
        self.ngram_max = max;
        self
    }

    /// How often the n-gram map must have seen a successor to draft it
    /// (default 1).
    pub fn with_min_hits(mut self, n: u32) -> Self {
        self.min_hits = n;
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

    /// Fewest tokens a draft must have to be checked.
    pub fn draft_min(&self) -> u32 {
        self.draft_min
    }

    /// The draft model, for [`draft_model`](Self::draft_model).
    pub fn draft(&self) -> Option<&DraftModel> {
        match &self.source {
            Source::Model(d) => Some(d),
            _ => None,
        }
    }

    /// The source's name in llama-server's terms: `ngram-simple`,
    /// `ngram-map` or `draft`.
    pub fn source_name(&self) -> &'static str {
        match self.source {
            Source::PromptLookup => "ngram-simple",
            Source::NgramMap => "ngram-map",
            Source::Model(_) => "draft",
        }
    }

    /// What cannot work, as [`Error::InvalidParameter`](crate::Error::InvalidParameter).
    pub(crate) fn check(&self) -> crate::Result<()> {
        let bad = |reason: String| crate::Error::InvalidParameter {
            name: "speculation",
            reason: reason.into(),
        };
        if self.ngram_min == 0 || self.ngram_min > self.ngram_max || self.ngram_max > MAX_NGRAM {
            return Err(bad(format!(
                "n-gram sizes {}..={} (from 1 to {MAX_NGRAM}, the smaller first)",
                self.ngram_min, self.ngram_max
            )));
        }
        if self.draft_max == 0 || self.draft_max > MAX_DRAFT || self.draft_min > self.draft_max {
            return Err(bad(format!(
                "draft sizes {}..={} (at most {MAX_DRAFT}, the smaller first)",
                self.draft_min, self.draft_max
            )));
        }
        if let Source::Model(d) = &self.source {
            if !(0.0..=1.0).contains(&d.p_min()) {
                return Err(bad(format!("p_min {} is not a probability", d.p_min())));
            }
        }
        Ok(())
    }

    /// A new generation's drafting state.
    pub(crate) fn state(&self) -> DraftState {
        match self.source {
            Source::NgramMap => DraftState::Map(Box::default()),
            _ => DraftState::Text,
        }
    }

    /// The draft after `history` from a source that needs no model, at most
    /// `limit` tokens (and [`draft_max`](Self::draft_max)); empty for a
    /// draft model, which its [`ModelDrafter`] drafts for.
    pub(crate) fn draft_from_text(
        &self,
        state: &mut DraftState,
        history: &[Token],
        limit: usize,
    ) -> Vec<Token> {
        let limit = limit.min(self.draft_max as usize);
        let ngram = (self.ngram_min as usize, self.ngram_max as usize);
        let min = self.draft_min as usize;
        match (&self.source, state) {
            (Source::PromptLookup, _) => lookup::prompt_lookup(history, ngram, min, limit),
            (Source::NgramMap, DraftState::Map(map)) => {
                map.draft(history, ngram, self.min_hits, min, limit)
            }
            _ => Vec::new(),
        }
    }
}

/// A generation's drafting state for the text sources.
#[derive(Debug)]
pub(crate) enum DraftState {
    /// Prompt lookup (no state) or a draft model (its own).
    Text,
    /// The n-gram map, grown with the text.
    Map(Box<lookup::NgramMap>),
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

    #[test]
    fn impossible_settings_are_refused() {
        assert!(Speculation::prompt_lookup().check().is_ok());
        assert!(Speculation::ngram_map().check().is_ok());
        for bad in [
            Speculation::prompt_lookup().with_ngram(0, 2),
            Speculation::prompt_lookup().with_ngram(3, 2),
            Speculation::ngram_map().with_ngram(1, 17),
            Speculation::prompt_lookup().with_draft_max(0),
            Speculation::prompt_lookup().with_draft_max(65),
            Speculation::prompt_lookup().with_draft_min(20),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
