//! High-level generation: a prompt in, a stream of text pieces out, exact
//! stats at the end.

use crate::context::LlamaContext;
use crate::error::{Error, Result};
use crate::sampler::{Sampler, SamplingOptions};
use crate::token::{Token, Tokenize};

pub(crate) mod speculate;
pub(crate) mod stop;
pub(crate) mod stream;
use speculate::{DraftState, ModelDrafter, Speculation, SpeculationStats, Want};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream::{Step, TokenStream};

/// Options for [`LlamaContext::generate`].
#[derive(Debug, Clone)]
#[must_use = "builders return a new value: use it"]
pub struct GenerateOptions {
    /// Most tokens to generate.
    max_tokens: u32,
    /// How tokens are chosen.
    sampling: SamplingOptions,
    /// Stop when the output contains one of these (not included in the text).
    stop: Vec<String>,
    /// Add the model's start token to the prompt where it asks for one.
    add_bos: bool,
    /// Parse special-token text in the prompt (needed for chat templates).
    parse_special: bool,
    /// Set it to stop the generation from another thread.
    cancel: Option<Arc<AtomicBool>>,
    /// Log-probabilities of each token and of this many alternatives.
    logprobs: Option<u32>,
    /// Drafted tokens checked in one batch.
    speculation: Option<Speculation>,
}

/// Most alternatives [`GenerateOptions::with_logprobs`] may ask for (as in
/// OpenAI's API).
pub const MAX_TOP_LOGPROBS: u32 = 20;

impl GenerateOptions {
    /// Most tokens to generate (default 128).
    pub fn with_max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = n;
        self
    }
    /// How tokens are chosen.
    pub fn with_sampling(mut self, sampling: SamplingOptions) -> Self {
        self.sampling = sampling;
        self
    }
    /// Stop when the output contains one of these (not included in the text).
    pub fn with_stop(mut self, stop: Vec<String>) -> Self {
        self.stop = stop;
        self
    }
    /// Add the model's start token to the prompt where it asks for one
    /// (default on).
    pub fn with_add_bos(mut self, add: bool) -> Self {
        self.add_bos = add;
        self
    }
    /// Parse special-token text in the prompt (default on: chat templates
    /// need it).
    pub fn with_parse_special(mut self, parse: bool) -> Self {
        self.parse_special = parse;
        self
    }
    /// A flag that stops the generation when set, from any thread.
    pub fn with_cancel(mut self, cancel: Arc<AtomicBool>) -> Self {
        self.cancel = Some(cancel);
        self
    }
    /// Give each [`Piece`] its token's log-probability under the model
    /// (before sampling's changes: temperature, penalties, grammar) and the
    /// `top` most likely tokens in its place, at most [`MAX_TOP_LOGPROBS`]
    /// (more is [`Error::InvalidParameter`] when generation starts). Costs
    /// one pass over the vocabulary's logits per token.
    pub fn with_logprobs(mut self, top: u32) -> Self {
        self.logprobs = Some(top);
        self
    }
    /// Speculative decoding: tokens drafted from the text so far or by a
    /// draft model, checked by the model in one batch (same output for
    /// greedy sampling, the model's distribution otherwise; see
    /// [`Speculation`]). The engine takes it where its configuration has
    /// room for drafts ([`EngineConfig::with_max_draft`](crate::engine::EngineConfig::with_max_draft),
    /// [`with_speculation`](crate::engine::EngineConfig::with_speculation)).
    pub fn with_speculation(mut self, speculation: Speculation) -> Self {
        self.speculation = Some(speculation);
        self
    }
    /// The speculation asked for.
    pub fn speculation(&self) -> Option<&Speculation> {
        self.speculation.as_ref()
    }
    /// How many alternatives each piece's log-probability comes with, if
    /// asked for.
    pub fn logprobs(&self) -> Option<u32> {
        self.logprobs
    }
    /// What can be checked before anything runs.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(s) = &self.speculation {
            s.check()?;
        }
        match self.logprobs {
            Some(top) if top > MAX_TOP_LOGPROBS => Err(Error::InvalidParameter {
                name: "logprobs",
                reason: format!("at most {MAX_TOP_LOGPROBS} alternatives, not {top}").into(),
            }),
            _ => Ok(()),
        }
    }
    /// Most tokens to generate.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }
    /// The sampling options.
    pub fn sampling(&self) -> &SamplingOptions {
        &self.sampling
    }
    /// The stop strings.
    pub fn stop(&self) -> &[String] {
        &self.stop
    }
    /// The cancel flag, if any.
    pub fn cancel(&self) -> Option<&Arc<AtomicBool>> {
        self.cancel.as_ref()
    }
    /// How a text prompt is tokenized for these options.
    pub(crate) fn tokenize_how(&self) -> Tokenize {
        Tokenize {
            add_special: self.add_bos,
            parse_special: self.parse_special,
        }
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            sampling: SamplingOptions::default(),
            stop: Vec::new(),
            add_bos: true,
            parse_special: true,
            cancel: None,
            logprobs: None,
            speculation: None,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` were generated.
    MaxTokens,
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// A stop string appeared.
    StopString,
    /// The cancel flag was set.
    Cancelled,
    /// The grammar allows no further token: it is complete, or every token
    /// it allows is banned (a logit bias of -inf, say).
    GrammarDeadEnd,
}

/// One piece of generated text.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The token sampled.
    pub token: Token,
    /// Its text, complete UTF-8 (may be empty while a character is split
    /// across tokens).
    pub text: String,
    /// Time since generation started.
    pub at: Duration,
    /// With [`GenerateOptions::with_logprobs`]: the token's log-probability
    /// and the most likely alternatives.
    pub logprob: Option<TokenLogprob>,
}

/// A sampled token's log-probability under the model (the softmax of its
/// logits, before sampling's changes) and the most likely tokens in its
/// place, most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The sampled token's natural-log probability.
    pub logprob: f32,
    /// The `top` most likely tokens and theirs.
    pub top: Vec<(Token, f32)>,
}

impl TokenLogprob {
    /// `token`'s log-probability in `logits`, and the `top` best.
    pub(crate) fn from_logits(logits: &[f32], token: Token, top: usize) -> Option<TokenLogprob> {
        let &at = logits.get(usize::try_from(token.0).ok()?)?;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        let log_z = max + sum.ln() as f32;
        let mut best: Vec<(Token, f32)> = Vec::with_capacity(top + 1);
        if top > 0 {
            for (i, &l) in logits.iter().enumerate() {
                if best.len() == top && best.last().is_some_and(|b| b.1 >= l) {
                    continue;
                }
                let place = best.partition_point(|b| b.1 >= l);
                best.insert(place, (Token(i as i32), l));
                best.truncate(top);
            }
        }
        Some(TokenLogprob {
            logprob: at - log_z,
            top: best.into_iter().map(|(t, l)| (t, l - log_z)).collect(),
        })
    }
}

/// Exact figures for one generation; token counts come from the tokenizer
/// and the sampler, never from estimates.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationStats {
    /// Tokens in the prompt (as tokenized, start token included).
    pub prompt_tokens: usize,
    /// Tokens sampled (the end-of-generation token not counted).
    pub generated_tokens: usize,
    /// From the start to the moment the first token was sampled.
    pub time_to_first_token: Duration,
    /// Time spent decoding the prompt.
    pub prompt_time: Duration,
    /// Time from the end of the prompt to the last token.
    pub generation_time: Duration,
    /// `prompt_tokens / prompt_time`.
    pub prompt_tokens_per_second: f64,
    /// `generated_tokens / generation_time`.
    pub generation_tokens_per_second: f64,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// What speculative decoding did, when it was asked for.
    pub speculation: Option<SpeculationStats>,
}

impl GenerationStats {
    /// Stats from counts and times, with the rates derived (0 for a zero
    /// time).
    pub(crate) fn measured(
        prompt_tokens: usize,
        generated_tokens: usize,
        time_to_first_token: Duration,
        prompt_time: Duration,
        generation_time: Duration,
        stop_reason: StopReason,
    ) -> GenerationStats {
        let rate = |n: usize, d: Duration| {
            if d.is_zero() {
                0.0
            } else {
                n as f64 / d.as_secs_f64()
            }
        };
        GenerationStats {
            prompt_tokens,
            generated_tokens,
            time_to_first_token,
            prompt_time,
            generation_time,
            prompt_tokens_per_second: rate(prompt_tokens, prompt_time),
            generation_tokens_per_second: rate(generated_tokens, generation_time),
            stop_reason,
            speculation: None,
        }
    }
}

/// What [`Generation`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A piece of text.
    Piece(Piece),
    /// The end, with the stats.
    Done(GenerationStats),
}

/// An iterator of [`Event`]s: pieces of text, then one `Done`.
pub struct Generation<'c> {
    ctx: &'c mut LlamaContext,
    sampler: Sampler,
    cancel: Option<Arc<AtomicBool>>,
    stream: TokenStream,
    spec: Option<SpecState>,
    finished: bool,
    queue: std::collections::VecDeque<Event>,
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl LlamaContext {
    /// Decodes `prompt` in this context (after what it already holds) and
    /// returns an iterator of generated pieces ending with [`Event::Done`].
    /// The context runs its own model only: the types rule out a context
    /// of another model.
    ///
    /// ```
    /// use llama_safe::{demo::{DemoModel, DEMO_CONTINUATION, DEMO_PROMPT}, *};
    /// let backend = LlamaBackend::init();
    /// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &LlamaModelParams::default())?;
    /// let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(128))?;
    /// let options = GenerateOptions::default().with_sampling(SamplingOptions::greedy());
    /// let mut text = String::new();
    /// for event in ctx.generate(DEMO_PROMPT, &options)? {
    ///     if let Event::Piece(p) = event? { text.push_str(&p.text) }
    /// }
    /// assert_eq!(text, DEMO_CONTINUATION);
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn generate<'c>(
        &'c mut self,
        prompt: &str,
        options: &GenerateOptions,
    ) -> Result<Generation<'c>> {
        // The clock and the span start before tokenizing: the stats count
        // it, as part of the prompt's time.
        let start = Instant::now();
        #[cfg(feature = "tracing")]
        let span = tracing::info_span!("llama_generate", max_tokens = options.max_tokens);
        #[cfg(feature = "tracing")]
        let _entered = span.clone().entered();
        // The start token only at the start of the context.
        let mut how = options.tokenize_how();
        how.add_special &= self.n_past() == 0;
        let tokens = self.model().tokenize_prompt(prompt, how, self.n_ctx())?;
        self.start_generation(
            &tokens,
            None,
            options,
            start,
            #[cfg(feature = "tracing")]
            span,
        )
    }

    /// As [`generate`](Self::generate), from a prompt already tokenized
    /// (as a server does to check its length first).
    pub fn generate_tokens<'c>(
        &'c mut self,
        tokens: &[Token],
        options: &GenerateOptions,
    ) -> Result<Generation<'c>> {
        let start = Instant::now();
        #[cfg(feature = "tracing")]
        let span = tracing::info_span!("llama_generate", max_tokens = options.max_tokens);
        #[cfg(feature = "tracing")]
        let _entered = span.clone().entered();
        self.start_generation(
            tokens,
            None,
            options,
            start,
            #[cfg(feature = "tracing")]
            span,
        )
    }

    /// As [`generate_tokens`](Self::generate_tokens), for a prompt whose
    /// last text `tokens` the caller has decoded already, its last output
    /// kept (a prompt with media, `prompt_tokens` cells in all).
    #[cfg(feature = "mtmd")]
    pub(crate) fn generate_decoded<'c>(
        &'c mut self,
        tokens: &[Token],
        prompt_tokens: usize,
        options: &GenerateOptions,
        start: Instant,
    ) -> Result<Generation<'c>> {
        #[cfg(feature = "tracing")]
        let span = tracing::info_span!("llama_generate", max_tokens = options.max_tokens);
        self.start_generation(
            tokens,
            Some(prompt_tokens),
            options,
            start,
            #[cfg(feature = "tracing")]
            span,
        )
    }

    /// Checks the prompt against the context, builds the sampler and
    /// decodes the prompt (unless `decoded` gives the cells of a prompt
    /// already decoded): the generation's first step.
    fn start_generation<'c>(
        &'c mut self,
        tokens: &[Token],
        decoded: Option<usize>,
        options: &GenerateOptions,
        start: Instant,
        #[cfg(feature = "tracing")] span: tracing::Span,
    ) -> Result<Generation<'c>> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let needed = self.n_past() as usize + if decoded.is_some() { 0 } else { tokens.len() };
        if needed > self.n_ctx() as usize {
            return Err(Error::PromptTooLong {
                tokens: needed,
                n_ctx: self.n_ctx(),
            });
        }
        options.check()?;
        let spec = match &options.speculation {
            None => None,
            Some(s) => {
                // A draft and the token before it are outputs of one decode.
                let outputs = match self.outputs_max {
                    0 => u32::MAX,
                    n => n,
                };
                if outputs < 2 || self.embeddings {
                    return Err(Error::InvalidParameter {
                        name: "speculation",
                        reason: "speculative decoding needs a generation context whose \
                                 n_outputs_max is 0 or at least 2"
                            .into(),
                    });
                }
                // The draft model's context holds this generation's text
                // and a draft past its end.
                let drafter = match s.draft() {
                    Some(d) => Some(ModelDrafter::new(
                        d,
                        self.model(),
                        self.n_ctx() + s.draft_max() + 1,
                        1,
                    )?),
                    None => None,
                };
                Some(SpecState {
                    speculation: s.clone(),
                    state: s.state(),
                    drafter,
                    history: tokens.to_vec(),
                    pending: None,
                    max_draft: (outputs - 1) as usize,
                    stats: SpeculationStats::default(),
                })
            }
        };
        let sampler = Sampler::new(self.model(), &options.sampling)?;
        let mut stream = TokenStream::new(options, decoded.unwrap_or(tokens.len()), start, start);
        if decoded.is_none() {
            self.decode(tokens)?;
        }
        stream.prompt_read();
        Ok(Generation {
            ctx: self,
            sampler,
            cancel: options.cancel.clone(),
            stream,
            spec,
            finished: false,
            queue: Default::default(),
            #[cfg(feature = "tracing")]
            span,
        })
    }
}

/// A speculative generation's state.
struct SpecState {
    speculation: Speculation,
    /// The text sources' state (the n-gram map).
    state: DraftState,
    /// The draft model's context, for a draft model.
    drafter: Option<ModelDrafter>,
    /// The prompt and the tokens generated: what drafts are looked up in.
    history: Vec<Token>,
    /// The last token sampled (and streamed), not decoded yet.
    pending: Option<Token>,
    /// Most tokens a draft may have (the context's output limit less one).
    max_draft: usize,
    stats: SpeculationStats,
}

impl Generation<'_> {
    fn step(&mut self) -> Result<Vec<Event>> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            let events = self.stream.finish(StopReason::Cancelled);
            return Ok(self.with_spec_stats(events));
        }
        if self.stream.limit_reached() {
            let events = self.stream.finish(StopReason::MaxTokens);
            return Ok(self.with_spec_stats(events));
        }
        if self.spec.is_some() {
            let events = self.speculative_step()?;
            return Ok(self.with_spec_stats(events));
        }
        let model = self.ctx.model().clone();
        let sampled = self.sampler.sample(self.ctx);
        let logits = self.ctx.last_output().and_then(|i| self.ctx.logits_ith(i));
        match self.stream.accept(&model, sampled, logits)? {
            Step::Continue { token, piece } => {
                self.ctx.decode(&[token])?;
                Ok(vec![Event::Piece(piece)])
            }
            Step::Finished(events) => Ok(events),
        }
    }
}

impl Generation<'_> {
    /// One speculative step: the pending token (sampling it first, at the
    /// start) and a draft after it decoded in one batch; the model's token
    /// sampled at each position in order, the draft kept while they agree;
    /// the KV cells of the rest removed. The cache ends holding what the
    /// plain path would: every token generated but the last.
    fn speculative_step(&mut self) -> Result<Vec<Event>> {
        let model = self.ctx.model().clone();
        let mut events = Vec::new();
        let spec = self.spec.as_mut().expect("checked by the caller");
        let pending = match spec.pending.take() {
            Some(t) => t,
            None => {
                let sampled = self.sampler.sample(self.ctx);
                let logits = self.ctx.last_output().and_then(|i| self.ctx.logits_ith(i));
                match self.stream.accept(&model, sampled, logits)? {
                    Step::Continue { token, piece } => {
                        spec.history.push(token);
                        events.push(Event::Piece(piece));
                        token
                    }
                    Step::Finished(end) => {
                        events.extend(end);
                        return Ok(events);
                    }
                }
            }
        };
        let pos = self.ctx.n_past();
        // Room in the context after the pending token.
        let room = (self.ctx.n_ctx() as usize).saturating_sub(pos as usize + 1);
        let limit = spec.max_draft.min(room).min(self.stream.remaining());
        let draft = match &mut spec.drafter {
            Some(drafter) => {
                let want = Want {
                    seq: 0,
                    history: &spec.history,
                    min: spec.speculation.draft_min() as usize,
                    limit: limit.min(spec.speculation.draft_max() as usize),
                };
                drafter.draft(&[want])?.pop().unwrap_or_default()
            }
            None => spec
                .speculation
                .draft_from_text(&mut spec.state, &spec.history, limit),
        };
        let mut batch = crate::context::batch::Batch::new();
        batch.add(pending, pos, &[0], true)?;
        for (i, &t) in draft.iter().enumerate() {
            batch.add(t, pos + 1 + i as u32, &[0], true)?;
        }
        self.ctx.decode_batch(&batch)?;
        spec.stats.target_decodes += 1;
        spec.stats.drafted += draft.len();
        for j in 0..=draft.len() {
            let sampled = self.sampler.sample_ith(self.ctx, j);
            let agrees = j < draft.len() && sampled.as_ref().is_ok_and(|t| *t == draft[j]);
            let logits = self.ctx.logits_ith(j);
            match self.stream.accept(&model, sampled, logits)? {
                Step::Continue { token, piece } => {
                    spec.history.push(token);
                    events.push(Event::Piece(piece));
                    if agrees {
                        spec.stats.accepted += 1;
                        continue;
                    }
                    // Cells after the last token kept go; `token` is next.
                    self.ctx.seq_remove(Some(0), pos + 1 + j as u32..)?;
                    spec.pending = Some(token);
                    return Ok(events);
                }
                Step::Finished(end) => {
                    // A drafted end of generation (or last token) was right.
                    spec.stats.accepted += usize::from(agrees);
                    self.ctx.seq_remove(Some(0), pos + 1 + j as u32..)?;
                    events.extend(end);
                    return Ok(events);
                }
            }
        }
        unreachable!("the loop returns at its last position")
    }

    /// Puts the speculation's figures into the `Done` among `events`.
    fn with_spec_stats(&self, events: Vec<Event>) -> Vec<Event> {
        speculate::with_stats(self.spec.as_ref().map(|s| s.stats), events)
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        #[cfg(feature = "tracing")]
        let _entered = self.span.clone().entered();
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            match self.step() {
                Ok(events) => {
                    self.finished = events.iter().any(|e| matches!(e, Event::Done(_)));
                    self.queue.extend(events);
                }
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
