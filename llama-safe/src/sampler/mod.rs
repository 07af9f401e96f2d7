//! Sampling: a chain of llama.cpp samplers built from [`SamplingOptions`].

use crate::context::LlamaContext;
use crate::error::{Error, Result};
use crate::model::LlamaModel;
use crate::token::Token;
use std::ptr::NonNull;

mod stage;
pub use stage::SamplerStage;

/// How the next token is chosen. `temperature <= 0` means greedy.
///
/// ```
/// let greedy = llama_safe::SamplingOptions::greedy();
/// assert_eq!(greedy.temperature(), 0.0);
/// let creative = llama_safe::SamplingOptions::default().with_temperature(1.1).with_top_k(64);
/// assert_eq!(creative.top_k(), 64);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use = "builders return a new value: use it"]
pub struct SamplingOptions {
    /// 0 or below: always the most likely token.
    temperature: f32,
    /// Keep the k most likely tokens (0: off).
    top_k: i32,
    /// Nucleus sampling (1.0: off).
    top_p: f32,
    /// Drop tokens below `min_p` times the best one's probability (0: off).
    min_p: f32,
    /// Locally typical sampling (1.0: off).
    typical_p: f32,
    /// Repetition penalty (1.0: off).
    repeat_penalty: f32,
    /// Frequency penalty (0: off).
    frequency_penalty: f32,
    /// Presence penalty (0: off).
    presence_penalty: f32,
    /// How many recent tokens the penalties look at.
    penalty_last_n: i32,
    /// Seed of the random sampler.
    seed: u32,
    /// Additive biases per token.
    logit_bias: Vec<(Token, f32)>,
    /// A GBNF grammar the output must follow (root rule `root`).
    grammar: Option<String>,
    /// When not empty, the grammar is lazy: it applies from the first of
    /// these words on (see [`SamplerStage::LazyGrammar`]).
    grammar_triggers: Vec<String>,
    /// A chain of your own, in the order given: when not empty it replaces
    /// every field above (see [`SamplerStage`]).
    chain: Vec<SamplerStage>,
    /// Whether a preset builder was called: with a chain too, that is a
    /// mistake [`Sampler::new`] reports rather than ignoring the preset.
    preset_set: bool,
}

impl Default for SamplingOptions {
    /// llama.cpp's CLI defaults: temperature 0.8, top-k 40, top-p 0.95,
    /// min-p 0.05, no penalties.
    fn default() -> Self {
        SamplingOptions {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0xFFFF_FFFF,
            logit_bias: Vec::new(),
            grammar: None,
            grammar_triggers: Vec::new(),
            chain: Vec::new(),
            preset_set: false,
        }
    }
}

impl SamplingOptions {
    /// A chain of your own, in this order (the last stage picks the token).
    pub fn chain(stages: Vec<SamplerStage>) -> Self {
        SamplingOptions {
            chain: stages,
            ..Self::default()
        }
    }

    /// The stages these options make: [`chain`](Self::chain) if set, else
    /// the preset: grammar, penalties, logit biases, then greedy, or top-k,
    /// typical, top-p, min-p, temperature and a seeded draw.
    pub fn stages(&self) -> Vec<SamplerStage> {
        if !self.chain.is_empty() {
            return self.chain.clone();
        }
        let mut stages = Vec::new();
        match &self.grammar {
            Some(grammar) if !self.grammar_triggers.is_empty() => {
                stages.push(SamplerStage::LazyGrammar {
                    grammar: grammar.clone(),
                    trigger_words: self.grammar_triggers.clone(),
                    trigger_tokens: Vec::new(),
                })
            }
            Some(grammar) => stages.push(SamplerStage::Grammar(grammar.clone())),
            None => {}
        }
        if self.repeat_penalty != 1.0
            || self.frequency_penalty != 0.0
            || self.presence_penalty != 0.0
        {
            stages.push(SamplerStage::Penalties {
                last_n: self.penalty_last_n,
                repeat: self.repeat_penalty,
                frequency: self.frequency_penalty,
                presence: self.presence_penalty,
            });
        }
        if !self.logit_bias.is_empty() {
            stages.push(SamplerStage::LogitBias(self.logit_bias.clone()));
        }
        if self.temperature <= 0.0 {
            stages.push(SamplerStage::Greedy);
            return stages;
        }
        if self.top_k > 0 {
            stages.push(SamplerStage::TopK(self.top_k));
        }
        if self.typical_p < 1.0 {
            stages.push(SamplerStage::Typical {
                p: self.typical_p,
                min_keep: 1,
            });
        }
        if self.top_p < 1.0 {
            stages.push(SamplerStage::TopP {
                p: self.top_p,
                min_keep: 1,
            });
        }
        if self.min_p > 0.0 {
            stages.push(SamplerStage::MinP {
                p: self.min_p,
                min_keep: 1,
            });
        }
        stages.push(SamplerStage::Temperature(self.temperature));
        stages.push(SamplerStage::Dist { seed: self.seed });
        stages
    }

    /// Greedy decoding: deterministic, the most likely token each step.
    pub fn greedy() -> Self {
        SamplingOptions {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// 0 or below: always the most likely token.
    pub fn with_temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self.preset_set = true;
        self
    }
    /// Keep the k most likely tokens (0: off).
    pub fn with_top_k(mut self, k: i32) -> Self {
        self.top_k = k;
        self.preset_set = true;
        self
    }
    /// Nucleus sampling (1.0: off).
    pub fn with_top_p(mut self, p: f32) -> Self {
        self.top_p = p;
        self.preset_set = true;
        self
    }
    /// Drop tokens below `p` times the best one's probability (0: off).
    pub fn with_min_p(mut self, p: f32) -> Self {
        self.min_p = p;
        self.preset_set = true;
        self
    }
    /// Locally typical sampling (1.0: off).
    pub fn with_typical_p(mut self, p: f32) -> Self {
        self.typical_p = p;
        self.preset_set = true;
        self
    }
    /// Repetition penalty (1.0: off).
    pub fn with_repeat_penalty(mut self, penalty: f32) -> Self {
        self.repeat_penalty = penalty;
        self.preset_set = true;
        self
    }
    /// Frequency penalty (0: off).
    pub fn with_frequency_penalty(mut self, penalty: f32) -> Self {
        self.frequency_penalty = penalty;
        self.preset_set = true;
        self
    }
    /// Presence penalty (0: off).
    pub fn with_presence_penalty(mut self, penalty: f32) -> Self {
        self.presence_penalty = penalty;
        self.preset_set = true;
        self
    }
    /// How many recent tokens the penalties look at.
    pub fn with_penalty_last_n(mut self, n: i32) -> Self {
        self.penalty_last_n = n;
        self.preset_set = true;
        self
    }
    /// Seed of the random draw.
    pub fn with_seed(mut self, seed: u32) -> Self {
        self.seed = seed;
        self.preset_set = true;
        self
    }
    /// Additive biases per token (`f32::NEG_INFINITY` bans one).
    pub fn with_logit_bias(mut self, bias: Vec<(Token, f32)>) -> Self {
        self.logit_bias = bias;
        self.preset_set = true;
        self
    }
    /// A GBNF grammar the output must follow (root rule `root`), from the
    /// first token on.
    pub fn with_grammar(mut self, grammar: impl Into<String>) -> Self {
        self.grammar = Some(grammar.into());
        self.grammar_triggers.clear();
        self.preset_set = true;
        self
    }
    /// A grammar that applies from the first of `triggers` on (see
    /// [`SamplerStage::LazyGrammar`]).
    pub fn with_lazy_grammar(mut self, grammar: impl Into<String>, triggers: Vec<String>) -> Self {
        self.grammar = Some(grammar.into());
        self.grammar_triggers = triggers;
        self.preset_set = true;
        self
    }

    /// The temperature.
    pub fn temperature(&self) -> f32 {
        self.temperature
    }
    /// The top-k.
    pub fn top_k(&self) -> i32 {
        self.top_k
    }
    /// The top-p.
    pub fn top_p(&self) -> f32 {
        self.top_p
    }
    /// The min-p.
    pub fn min_p(&self) -> f32 {
        self.min_p
    }
    /// The seed.
    pub fn seed(&self) -> u32 {
        self.seed
    }
    /// The logit biases.
    pub fn logit_bias(&self) -> &[(Token, f32)] {
        &self.logit_bias
    }
    /// The grammar, if any.
    pub fn grammar(&self) -> Option<&str> {
        self.grammar.as_deref()
    }
    /// The lazy grammar's trigger words (empty: not lazy).
    pub fn grammar_triggers(&self) -> &[String] {
        &self.grammar_triggers
    }
    /// The chain of your own, if any.
    pub fn custom_chain(&self) -> &[SamplerStage] {
        &self.chain
    }

    /// A chain and preset builders together would silently drop the preset:
    /// refused when the options are used.
    pub(crate) fn check(&self) -> Result<()> {
        if !self.chain.is_empty() && self.preset_set {
            return Err(Error::InvalidParameter {
                name: "sampling",
                reason: "both a chain of stages and preset settings (temperature, top-k, \
                         grammar, ...) were given: the chain replaces the preset, so put \
                         those stages in the chain"
                    .into(),
            });
        }
        Ok(())
    }

    /// The sampling defaults a GGUF file carries (`general.sampling.*`),
    /// falling back to [`SamplingOptions::default`] for each one missing.
    pub fn from_model_defaults(model: &LlamaModel) -> Self {
        let mut o = Self::default();
        let get = |key: &str| model.meta(&format!("general.sampling.{key}"));
        if let Some(v) = get("temp").and_then(|v| v.parse().ok()) {
            o.temperature = v;
        }
        if let Some(v) = get("top_k").and_then(|v| v.parse().ok()) {
            o.top_k = v;
        }
        if let Some(v) = get("top_p").and_then(|v| v.parse().ok()) {
            o.top_p = v;
        }
        if let Some(v) = get("min_p").and_then(|v| v.parse().ok()) {
            o.min_p = v;
        }
        if let Some(v) = get("penalty_repeat").and_then(|v| v.parse().ok()) {
            o.repeat_penalty = v;
        }
        if let Some(v) = get("penalty_last_n").and_then(|v| v.parse().ok()) {
            o.penalty_last_n = v;
        }
        o
    }
}

/// A llama.cpp sampler chain over one model's vocabulary. `Send`, not `Sync`.
///
/// It holds a handle of its model: a grammar sampler keeps a pointer to the
/// model's vocabulary, so the model lives as long as the sampler does.
///
/// ```
/// use llama_safe::{demo::DemoModel, LlamaBackend, LlamaModel, Sampler, SamplingOptions};
/// let backend = LlamaBackend::init();
/// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
/// let sampler = Sampler::new(&model, &SamplingOptions::greedy())?;
/// drop(model); // the sampler's handle keeps the weights and vocabulary alive
/// drop(sampler);
/// # Ok::<(), llama_safe::Error>(())
/// ```
pub struct Sampler {
    chain: Chain,
    model: LlamaModel,
    /// Positions in the chain of the grammar stages.
    grammars: Vec<i32>,
    /// A grammar reached a dead end: llama.cpp left it with no parse
    /// stacks, and any further use would hit its
    /// `GGML_ASSERT(!stacks.empty())`, so the sampler refuses until
    /// [`reset`](Self::reset).
    dead_end: bool,
}

/// The owned llama.cpp chain, freed before the sampler's model handle
/// (fields drop in order: `chain` first).
struct Chain(NonNull<llama_safe_sys::llama_sampler>);

// SAFETY: the chain is owned and only used through `&mut Sampler`; the
// model it refers to is Sync.
unsafe impl Send for Chain {}

impl Drop for Chain {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_sampler_chain_init and is freed
        // once; the chain frees the samplers added to it. Freeing reads no
        // vocabulary (llama_sampler_grammar_free only deletes its own
        // grammar), so it is sound after the model is gone.
        unsafe { llama_safe_sys::llama_sampler_free(self.0.as_ptr()) };
    }
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").finish_non_exhaustive()
    }
}

impl Sampler {
    /// Builds the chain for `options` over `model`'s vocabulary: the
    /// preset made of its fields, or its own [`chain`](SamplingOptions::chain).
    /// A grammar that does not parse is [`Error::Grammar`] with
    /// llama.cpp's reason; a logit bias on a token outside the vocabulary is
    /// [`Error::InvalidToken`]; a chain that does not end with exactly one
    /// selecting stage, or a stage parameter out of range, is
    /// [`Error::InvalidParameter`].
    ///
    /// ```
    /// use llama_safe::{demo::DemoModel, LlamaBackend, LlamaModel, Sampler, SamplerStage, SamplingOptions};
    /// let backend = LlamaBackend::init();
    /// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
    /// let options = SamplingOptions::chain(vec![
    ///     SamplerStage::Dry { multiplier: 0.8, base: 1.75, allowed_length: 2, last_n: 256, breakers: vec!["\n".into()] },
    ///     SamplerStage::TopNSigma(1.0),
    ///     SamplerStage::Xtc { probability: 0.5, threshold: 0.1, min_keep: 1, seed: 7 },
    ///     SamplerStage::Temperature(0.8),
    ///     SamplerStage::MirostatV2 { tau: 5.0, eta: 0.1, seed: 7 },
    /// ]);
    /// let sampler = Sampler::new(&model, &options)?;
    /// // A chain must end with a stage that picks the token:
    /// assert!(Sampler::new(&model, &SamplingOptions::chain(vec![SamplerStage::TopK(5)])).is_err());
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn new(model: &LlamaModel, options: &SamplingOptions) -> Result<Sampler> {
        options.check()?;
        let stages = options.stages();
        stage::check(model, &stages)?;
        // SAFETY: returns a plain struct; the chain is owned by the Sampler
        // from here on, so an early return frees it in Drop.
        let chain = unsafe {
            llama_safe_sys::llama_sampler_chain_init(
                llama_safe_sys::llama_sampler_chain_default_params(),
            )
        };
        let mut sampler = Sampler {
            chain: Chain(NonNull::new(chain).ok_or_else(|| Error::InvalidParameter {
                name: "sampler",
                reason: "llama.cpp could not create a sampler chain".into(),
            })?),
            model: model.clone(),
            grammars: Vec::new(),
            dead_end: false,
        };
        for (i, stage) in stages.iter().enumerate() {
            if matches!(
                stage,
                SamplerStage::Grammar(_) | SamplerStage::LazyGrammar { .. }
            ) {
                sampler.grammars.push(i as i32);
            }
            let raw = stage::init(model, stage)?;
            sampler.add(raw);
        }
        Ok(sampler)
    }

    fn add(&mut self, s: *mut llama_safe_sys::llama_sampler) {
        if !s.is_null() {
            // SAFETY: the chain takes ownership of s.
            unsafe { llama_safe_sys::llama_sampler_chain_add(self.chain.0.as_ptr(), s) };
        }
    }

    /// Samples the next token from the last logits of `ctx` and records it
    /// (for penalties and grammars). A context whose last decode kept no
    /// logits (a fresh, cleared or restored one) is [`Error::NoLogits`].
    /// A context over another model is [`Error::ModelMismatch`]; a grammar
    /// with no way forward is [`Error::GrammarDeadEnd`].
    pub fn sample(&mut self, ctx: &mut LlamaContext) -> Result<Token> {
        match ctx.last_output() {
            Some(i) => self.sample_ith(ctx, i),
            None => Err(Error::NoLogits { index: None }),
        }
    }

    /// Samples from the logits of batch entry `i` of the last
    /// [`decode_batch`](LlamaContext::decode_batch) (one sampler per
    /// sequence keeps their penalties apart).
    pub fn sample_ith(&mut self, ctx: &mut LlamaContext, i: usize) -> Result<Token> {
        if !ctx.model().same_model(&self.model) {
            return Err(Error::ModelMismatch {
                what: "the sampler",
            });
        }
        if ctx.logits_ith(i).is_none() {
            return Err(Error::NoLogits { index: Some(i) });
        }
        self.check_alive()?;
        let mut token = 0;
        // SAFETY: both are live and over the same model (checked above, so
        // the vocabulary sizes agree), and entry i has logits, so
        // llama.cpp's asserts on them hold; a throw (a grammar dead end) is
        // caught by the firewall.
        let status = unsafe {
            llama_safe_sys::llama_sys_sampler_sample(
                self.chain.0.as_ptr(),
                ctx.as_ptr(),
                i as i32,
                &mut token,
            )
        };
        self.note_dead_end(crate::ffi::check("llama_sampler_sample", status))?;
        Ok(Token(token))
    }

    /// A sampler whose grammar reached a dead end is not used again before
    /// a reset.
    fn check_alive(&self) -> Result<()> {
        if self.dead_end {
            return Err(Error::GrammarDeadEnd {
                reason: "the grammar reached a dead end earlier; reset() the sampler".into(),
            });
        }
        Ok(())
    }

    /// Passes `result` on, remembering a grammar dead end.
    fn note_dead_end(&mut self, result: Result<()>) -> Result<()> {
        if matches!(
            result,
            Err(Error::GrammarDeadEnd { .. } | Error::GrammarBudget { .. })
        ) {
            self.dead_end = true;
        }
        result
    }

    /// Records `token` as chosen without sampling it (for penalties and
    /// grammars), e.g. for a prompt's tokens. A token outside the
    /// vocabulary is [`Error::InvalidToken`]; a token the grammar does not
    /// allow is [`Error::GrammarDeadEnd`].
    pub fn accept(&mut self, token: Token) -> Result<()> {
        self.model.check_token(token)?;
        self.check_alive()?;
        if self.model.is_eog(token) && !self.grammars_allow(token)? {
            // llama.cpp aborts the process on an end-of-generation token
            // its grammar is not finished for (GGML_ABORT in
            // llama_grammar_accept_impl), rather than throwing.
            return Err(Error::GrammarDeadEnd {
                reason: "the grammar does not allow the end of generation here".into(),
            });
        }
        // SAFETY: the chain is live and the token in the vocabulary; a throw
        // (a grammar rejecting the token) is caught by the firewall.
        let status =
            unsafe { llama_safe_sys::llama_sys_sampler_accept(self.chain.0.as_ptr(), token.0) };
        self.note_dead_end(crate::ffi::check("llama_sampler_accept", status))
    }

    /// Whether every grammar stage would let `token` be sampled now (its
    /// `apply` leaves the token's logit finite; a lazy grammar still
    /// waiting for its trigger allows everything).
    fn grammars_allow(&mut self, token: Token) -> Result<bool> {
        for &i in &self.grammars {
            let mut data = [llama_safe_sys::llama_token_data {
                id: token.0,
                logit: 0.0,
                p: 0.0,
            }];
            let mut candidates = llama_safe_sys::llama_token_data_array {
                data: data.as_mut_ptr(),
                size: data.len(),
                selected: -1,
                sorted: false,
            };
            // SAFETY: the chain is live and `i` one of its stages (recorded
            // as it was built); the array points at `data`, alive for the
            // call, with a token in the vocabulary (checked by the caller);
            // a grammar's apply only lowers logits, and a throw is caught
            // by the firewall.
            let status = unsafe {
                let stage = llama_safe_sys::llama_sampler_chain_get(self.chain.0.as_ptr(), i);
                llama_safe_sys::llama_sys_sampler_apply(stage, &mut candidates)
            };
            crate::ffi::check("llama_sampler_apply", status)?;
            if data[0].logit == f32::NEG_INFINITY {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Forgets the tokens seen (penalties, grammar state).
    pub fn reset(&mut self) {
        // SAFETY: the chain is live; a grammar's reset restores its parse
        // stacks.
        unsafe { llama_safe_sys::llama_sampler_reset(self.chain.0.as_ptr()) };
        self.dead_end = false;
    }
}
