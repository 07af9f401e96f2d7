//! The stages a sampler chain is made of, checked before llama.cpp sees
//! them and turned into llama.cpp samplers.

use crate::error::{Error, Result};
use crate::model::LlamaModel;
use crate::token::Token;
use std::ffi::{c_char, CString};

/// Longest history the penalty and DRY stages look back over: llama.cpp
/// allocates a buffer of that many entries up front.
pub const MAX_LAST_N: i32 = 1 << 20;
/// Most trigger words of a [`SamplerStage::LazyGrammar`].
pub const MAX_TRIGGERS: usize = 16;
/// Longest trigger word, in bytes.
pub const MAX_TRIGGER_LEN: usize = 256;
/// Most DRY sequence breakers: llama.cpp matches each against the whole
/// vocabulary when the sampler is built.
pub const MAX_DRY_BREAKERS: usize = 64;
/// Longest DRY sequence breaker, in bytes.
pub const MAX_DRY_BREAKER_LEN: usize = 64;

/// One stage of a sampler chain ([`SamplingOptions::chain`](crate::SamplingOptions::chain)).
/// Stages filter or reshape the candidates in order; the last stage, and
/// only it, picks the token: [`Greedy`](Self::Greedy), [`Dist`](Self::Dist),
/// [`Mirostat`](Self::Mirostat) or [`MirostatV2`](Self::MirostatV2)
/// (llama.cpp aborts on a chain that picks nothing).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SamplerStage {
    /// Keep the `k` most likely tokens.
    TopK(i32),
    /// Nucleus: the most likely tokens up to probability `p`.
    TopP {
        /// Cumulative probability kept.
        p: f32,
        /// Tokens kept at least.
        min_keep: usize,
    },
    /// Drop tokens below `p` times the best one's probability.
    MinP {
        /// Relative threshold.
        p: f32,
        /// Tokens kept at least.
        min_keep: usize,
    },
    /// Locally typical sampling.
    Typical {
        /// Mass kept.
        p: f32,
        /// Tokens kept at least.
        min_keep: usize,
    },
    /// Keep tokens within `n` standard deviations of the best logit.
    TopNSigma(f32),
    /// Exclude Top Choices: with `probability`, drop every token above
    /// `threshold` but the least likely of them.
    Xtc {
        /// Chance the stage acts at a step.
        probability: f32,
        /// Probability above which tokens are "top choices".
        threshold: f32,
        /// Tokens kept at least.
        min_keep: usize,
        /// Seed of its random choice.
        seed: u32,
    },
    /// Divide logits by a temperature.
    Temperature(f32),
    /// Entropy-based dynamic temperature in `temperature ± delta`.
    DynamicTemperature {
        /// Base temperature.
        temperature: f32,
        /// Range around it.
        delta: f32,
        /// Exponent of the entropy mapping.
        exponent: f32,
    },
    /// Repetition, frequency and presence penalties over the last tokens.
    Penalties {
        /// Tokens looked back over (0: none, at most 2^20).
        last_n: i32,
        /// Repetition penalty (1.0: off).
        repeat: f32,
        /// Frequency penalty (0: off).
        frequency: f32,
        /// Presence penalty (0: off).
        presence: f32,
    },
    /// DRY ("don't repeat yourself"): penalise tokens that would extend a
    /// sequence already seen.
    Dry {
        /// Strength (0: off).
        multiplier: f32,
        /// Growth of the penalty with the repeated length (at least 1).
        base: f32,
        /// Repeats shorter than this go unpenalised.
        allowed_length: i32,
        /// Tokens looked back over (0 turns the stage off; at most 2^20).
        last_n: i32,
        /// Texts that end a repeated sequence (e.g. `"\n"`).
        breakers: Vec<String>,
    },
    /// Additive biases per token (`f32::NEG_INFINITY` bans).
    LogitBias(Vec<(Token, f32)>),
    /// A GBNF grammar the output must follow (root rule `root`).
    Grammar(String),
    /// A GBNF grammar that applies only from the first trigger on: once a
    /// trigger word appears in the output (anywhere, across token
    /// boundaries) or a trigger token is sampled, the output from there on
    /// must follow the grammar, whose `root` must start with the trigger.
    /// This is how tool calls are constrained while free text stays free.
    /// At most 16 words, each of 1 to 256
    /// bytes, matched literally.
    LazyGrammar {
        /// The grammar (root rule `root`).
        grammar: String,
        /// Texts that switch the grammar on.
        trigger_words: Vec<String>,
        /// Tokens that switch the grammar on.
        trigger_tokens: Vec<Token>,
    },
    /// Pick the most likely token.
    Greedy,
    /// Draw from the distribution, seeded.
    Dist {
        /// The seed.
        seed: u32,
    },
    /// Mirostat 1: draw keeping the surprise near `tau`.
    Mirostat {
        /// Target surprise.
        tau: f32,
        /// Learning rate.
        eta: f32,
        /// Tokens used to estimate the distribution's shape.
        m: i32,
        /// The seed.
        seed: u32,
    },
    /// Mirostat 2.
    MirostatV2 {
        /// Target surprise.
        tau: f32,
        /// Learning rate.
        eta: f32,
        /// The seed.
        seed: u32,
    },
}

impl SamplerStage {
    /// Whether this stage picks the token.
    pub fn selects(&self) -> bool {
        matches!(
            self,
            SamplerStage::Greedy
                | SamplerStage::Dist { .. }
                | SamplerStage::Mirostat { .. }
                | SamplerStage::MirostatV2 { .. }
        )
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidParameter {
        name: "sampler chain",
        reason: reason.into().into(),
    }
}

/// Checks a whole chain: exactly one selecting stage, last; every
/// parameter in the range llama.cpp handles.
pub(super) fn check(model: &LlamaModel, stages: &[SamplerStage]) -> Result<()> {
    match stages.iter().position(SamplerStage::selects) {
        Some(i) if i + 1 == stages.len() => {}
        Some(i) => {
            return Err(invalid(format!(
                "stage {i} ({:?}) picks the token, so it must be the last",
                stages[i]
            )))
        }
        None => {
            return Err(invalid(
                "no stage picks the token: end with Greedy, Dist, Mirostat or MirostatV2",
            ))
        }
    }
    let n_vocab = model.n_vocab() as i32;
    for stage in stages {
        match stage {
            SamplerStage::LogitBias(biases) => {
                if let Some((t, _)) = biases.iter().find(|(t, _)| t.0 < 0 || t.0 >= n_vocab) {
                    return Err(Error::InvalidToken {
                        token: t.0,
                        n_vocab: n_vocab as u32,
                    });
                }
            }
            SamplerStage::Penalties { last_n, .. } if !(0..=MAX_LAST_N).contains(last_n) => {
                return Err(invalid(format!(
                    "penalty last_n {last_n} is outside 0..={MAX_LAST_N}"
                )));
            }
            SamplerStage::Dry {
                last_n, breakers, ..
            } => {
                if !(0..=MAX_LAST_N).contains(last_n) {
                    return Err(invalid(format!(
                        "DRY last_n {last_n} is outside 0..={MAX_LAST_N}"
                    )));
                }
                if breakers.len() > MAX_DRY_BREAKERS
                    || breakers.iter().any(|b| b.len() > MAX_DRY_BREAKER_LEN)
                {
                    return Err(invalid(format!(
                        "DRY takes at most {MAX_DRY_BREAKERS} sequence breakers of at most {MAX_DRY_BREAKER_LEN} bytes"
                    )));
                }
                if breakers.iter().any(|b| b.contains('\0')) {
                    return Err(Error::NulByte {
                        what: "a DRY sequence breaker",
                    });
                }
                // The breakers are tokenized with the model's vocabulary.
                model.check_vocab()?;
            }
            SamplerStage::Grammar(grammar) => {
                model.check_vocab()?;
                crate::grammar::check_gbnf(grammar)?;
            }
            SamplerStage::LazyGrammar {
                grammar,
                trigger_words,
                trigger_tokens,
                ..
            } => {
                model.check_vocab()?;
                crate::grammar::check_gbnf(grammar)?;
                if trigger_words.is_empty() && trigger_tokens.is_empty() {
                    return Err(invalid(
                        "a lazy grammar needs a trigger word or token, or it never applies",
                    ));
                }
                if trigger_words.len() > MAX_TRIGGERS
                    || trigger_words
                        .iter()
                        .any(|w| w.is_empty() || w.len() > MAX_TRIGGER_LEN)
                {
                    return Err(invalid(format!(
                        "a lazy grammar takes at most {MAX_TRIGGERS} trigger words of 1 to {MAX_TRIGGER_LEN} bytes"
                    )));
                }
                if trigger_words.iter().any(|w| w.contains('\0')) {
                    return Err(Error::NulByte {
                        what: "a trigger word",
                    });
                }
                for t in trigger_tokens {
                    model.check_token(*t)?;
                }
            }

            SamplerStage::Mirostat { m, .. } if *m < 1 => {
                return Err(invalid(format!("Mirostat m {m} must be at least 1")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The llama.cpp sampler for one checked stage.
pub(super) fn init(
    model: &LlamaModel,
    stage: &SamplerStage,
) -> Result<*mut llama_safe_sys::llama_sampler> {
    use llama_safe_sys as sys;
    let n_vocab = model.n_vocab() as i32;
    // SAFETY (every arm): plain constructors over values `check` bounded;
    // pointers passed are valid for the call and llama.cpp copies what it
    // keeps; the vocab lives as long as the model, which the sampler borrows.
    let raw = unsafe {
        match stage {
            SamplerStage::TopK(k) => sys::llama_sampler_init_top_k(*k),
            SamplerStage::TopP { p, min_keep } => sys::llama_sampler_init_top_p(*p, *min_keep),
            SamplerStage::MinP { p, min_keep } => sys::llama_sampler_init_min_p(*p, *min_keep),
            SamplerStage::Typical { p, min_keep } => sys::llama_sampler_init_typical(*p, *min_keep),
            SamplerStage::TopNSigma(n) => sys::llama_sampler_init_top_n_sigma(*n),
            SamplerStage::Xtc {
                probability,
                threshold,
                min_keep,
                seed,
            } => sys::llama_sampler_init_xtc(*probability, *threshold, *min_keep, *seed),
            SamplerStage::Temperature(t) => sys::llama_sampler_init_temp(*t),
            SamplerStage::DynamicTemperature {
                temperature,
                delta,
                exponent,
            } => sys::llama_sampler_init_temp_ext(*temperature, *delta, *exponent),
            SamplerStage::Penalties {
                last_n,
                repeat,
                frequency,
                presence,
            } => {
                sys::llama_sampler_init_penalties(n_vocab, *last_n, *repeat, *frequency, *presence)
            }
            SamplerStage::Dry {
                multiplier,
                base,
                allowed_length,
                last_n,
                breakers,
            } => {
                let owned: Vec<CString> = breakers
                    .iter()
                    .filter_map(|b| CString::new(b.as_str()).ok())
                    .collect();
                let mut ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
                sys::llama_sampler_init_dry(
                    model.vocab(),
                    *multiplier,
                    *base,
                    *allowed_length,
                    *last_n,
                    ptrs.as_mut_ptr(),
                    ptrs.len(),
                )
            }
            SamplerStage::LogitBias(biases) => {
                let raw: Vec<sys::llama_logit_bias> = biases
                    .iter()
                    .map(|(t, b)| sys::llama_logit_bias {
                        token: t.0,
                        bias: *b,
                    })
                    .collect();
                sys::llama_sampler_init_logit_bias(n_vocab, raw.len() as i32, raw.as_ptr())
            }
            SamplerStage::Grammar(grammar) => return grammar_sampler(model, grammar),
            SamplerStage::LazyGrammar {
                grammar,
                trigger_words,
                trigger_tokens,
            } => return lazy_grammar_sampler(model, grammar, trigger_words, trigger_tokens),
            SamplerStage::Greedy => sys::llama_sampler_init_greedy(),
            SamplerStage::Dist { seed } => sys::llama_sampler_init_dist(*seed),
            SamplerStage::Mirostat { tau, eta, m, seed } => {
                sys::llama_sampler_init_mirostat(n_vocab, *seed, *tau, *eta, *m)
            }
            SamplerStage::MirostatV2 { tau, eta, seed } => {
                sys::llama_sampler_init_mirostat_v2(*seed, *tau, *eta)
            }
        }
    };
    if raw.is_null() {
        return Err(invalid(format!("llama.cpp could not create {stage:?}")));
    }
    Ok(raw)
}

/// The grammar sampler: a parse error is NULL with llama.cpp's logged
/// reason, a throw is caught by the firewall.
fn grammar_sampler(
    model: &LlamaModel,
    grammar: &str,
) -> Result<*mut llama_safe_sys::llama_sampler> {
    let text = CString::new(grammar).map_err(|_| Error::NulByte {
        what: "the grammar",
    })?;
    // SAFETY: both strings are valid C strings and the vocab lives as long
    // as the model, which the sampler borrows; NULL means a parse error, a
    // throw is caught by the firewall.
    let g = crate::ffi::guarded_non_null(
        "llama_sampler_init_grammar",
        |out| unsafe {
            llama_safe_sys::llama_sys_sampler_init_grammar(
                model.vocab(),
                text.as_ptr(),
                c"root".as_ptr(),
                out,
            )
        },
        |reason| Error::Grammar { reason },
    )?;
    with_stack_budget(g.as_ptr())
}

/// The lazy grammar sampler: the trigger words become one regex of
/// escaped literals (no repetition, so libstdc++'s recursive matcher stays
/// shallow however long the output), matched where it starts.
fn lazy_grammar_sampler(
    model: &LlamaModel,
    grammar: &str,
    words: &[String],
    tokens: &[Token],
) -> Result<*mut llama_safe_sys::llama_sampler> {
    let text = CString::new(grammar).map_err(|_| Error::NulByte {
        what: "the grammar",
    })?;
    let escaped: Vec<String> = words
        .iter()
        .map(|w| {
            w.chars().fold(String::new(), |mut out, c| {
                if "\\^$.|?*+()[]{}/".contains(c) {
                    out.push('\\');
                }
                out.push(c);
                out
            })
        })
        .collect();
    let pattern =
        CString::new(format!("(?:{})", escaped.join("|"))).map_err(|_| Error::NulByte {
            what: "a trigger word",
        })?;
    let mut patterns: Vec<*const c_char> = if words.is_empty() {
        Vec::new()
    } else {
        vec![pattern.as_ptr()]
    };
    let raw_tokens: Vec<i32> = tokens.iter().map(|t| t.0).collect();
    // SAFETY: the strings and arrays are valid for the call (llama.cpp
    // copies the patterns and tokens), each count matches its array (so its
    // `GGML_ASSERT(trigger_* != nullptr)` holds), the tokens are in the
    // vocabulary (checked), and the vocab lives as long as the model, which
    // the sampler borrows; NULL is a parse error, a throw (std::regex_error)
    // is caught by the firewall.
    let g = crate::ffi::guarded_non_null(
        "llama_sampler_init_grammar_lazy_patterns",
        |out| unsafe {
            llama_safe_sys::llama_sys_sampler_init_grammar_lazy(
                model.vocab(),
                text.as_ptr(),
                c"root".as_ptr(),
                patterns.as_mut_ptr(),
                patterns.len(),
                raw_tokens.as_ptr(),
                raw_tokens.len(),
                out,
            )
        },
        |reason| Error::Grammar { reason },
    )?;
    with_stack_budget(g.as_ptr())
}

/// Bounds the parse stacks of the grammar sampler `g` (see
/// [`MAX_GRAMMAR_STACKS`](crate::grammar::MAX_GRAMMAR_STACKS)).
fn with_stack_budget(
    g: *mut llama_safe_sys::llama_sampler,
) -> Result<*mut llama_safe_sys::llama_sampler> {
    let mut out = std::ptr::null_mut();
    // SAFETY: g is a live grammar sampler from llama_sampler_init_grammar*
    // (the shim reads its context as llama-sampler.cpp's grammar context,
    // mirrored from the pinned source); on success the wrapper owns it,
    // and the shim catches everything.
    let status = unsafe {
        llama_safe_sys::llama_sys_grammar_budget(g, crate::grammar::MAX_GRAMMAR_STACKS, &mut out)
    };
    if status != 0 || out.is_null() {
        // SAFETY: on failure g is still ours, and freed once.
        unsafe { llama_safe_sys::llama_sampler_free(g) };
        return Err(invalid("out of memory wrapping the grammar sampler"));
    }
    Ok(out)
}
