//! Continuous batching: many generations over one context, one `decode`
//! per step with all threads, the way llama.cpp's own server runs its slots.
//!
//! An [`Engine`] owns a context with `n_parallel` sequences sharing one KV
//! cache of `n_ctx` cells, on a thread of its own. Each step builds one
//! batch: the next token of every sequence that is generating, then chunks
//! of the prompts still being read (chunked prefill, within `n_batch`), and
//! decodes it once. Each sequence has its own sampler chain (seed, grammar,
//! biases, penalties), stop strings, token limit, UTF-8-safe pieces and
//! exact stats, and streams [`Event`]s to its [`Handle`], which works from
//! sync code (an iterator) and async code ([`Handle::recv_async`]).
//!
//! - **Admission** is first come, first served, by KV space: a request
//!   reserves `prompt + max_tokens` cells when it starts, so a running
//!   sequence never finds the cache full; a request that could never fit
//!   (`prompt + max_tokens > n_ctx`) is refused at [`Engine::submit`] with
//!   [`Error::PromptTooLong`], one that does not fit now waits, and with
//!   `n_parallel + queue` requests in flight `submit` is
//!   [`Error::EngineBusy`].
//! - **Prompt cache**: a finished sequence's tokens stay in its slot's KV
//!   cells; a new request whose prompt starts with the same tokens takes
//!   that slot and decodes only the rest (like llama-server's
//!   `cache_prompt`). Cached cells are given back, least recently used
//!   first, whenever a request needs the room. On by default.
//! - **Cancellation**: dropping the [`Handle`] (or [`Handle::cancel`]) ends
//!   the sequence at the next step and frees its cells.
//!
//! ```
//! use llama_safe::{demo::{DemoModel, DEMO_CONTINUATION, DEMO_PROMPT}, *};
//! use llama_safe::engine::{Engine, EngineConfig, Request};
//! let backend = LlamaBackend::init();
//! let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
//! let engine = Engine::new(&model, EngineConfig::default().with_n_ctx(512))?;
//! let options = GenerateOptions::default().with_sampling(SamplingOptions::greedy());
//! let handles: Vec<_> = (0..3)
//!     .map(|_| engine.submit(Request::new(model.tokenize(DEMO_PROMPT, Tokenize::PROMPT)?, options.clone())))
//!     .collect::<Result<_>>()?;
//! for handle in handles {
//!     assert_eq!(handle.text()?, DEMO_CONTINUATION);
//! }
//! # Ok::<(), llama_safe::Error>(())
//! ```

#[cfg(feature = "mtmd")]
mod media;
mod slot;
mod worker;

use crate::context::params::ContextParams;
use crate::error::{Error, Result};
use crate::generate::{Event, GenerateOptions};
use crate::model::LlamaModel;
use crate::sampler::Sampler;
use crate::token::Token;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// How an [`Engine`] is set up: its context (a [`ContextParams`] the
/// engine sizes for its sequences) and its scheduling.
///
/// ```
/// use llama_safe::{engine::EngineConfig, ContextParams, FlashAttention, KvCacheType};
/// let config = EngineConfig::default()
///     .with_n_ctx(8192)
///     .with_n_parallel(8)
///     .with_context(
///         ContextParams::default()
///             .with_flash_attention(FlashAttention::Enabled)
///             .with_kv_cache_type(KvCacheType::Q8_0, KvCacheType::Q8_0),
///     );
/// assert_eq!(config.context_params().n_ctx(), 8192);
/// ```
#[derive(Debug, Clone)]
#[must_use = "builders return a new value: use it"]
pub struct EngineConfig {
    context: ContextParams,
    n_ctx: u32,
    n_parallel: u32,
    n_batch: u32,
    threads: u32,
    queue: usize,
    prompt_cache: bool,
    max_draft: u32,
    speculation: Option<crate::Speculation>,
    kv_unified: bool,
}

impl Default for EngineConfig {
    /// 4096 cells, 4 sequences, batches of 512, every core, 64 waiting,
    /// prompt cache on.
    fn default() -> Self {
        EngineConfig {
            context: ContextParams::default(),
            n_ctx: 4096,
            n_parallel: 4,
            n_batch: 512,
            threads: std::thread::available_parallelism().map_or(4, |n| n.get() as u32),
            queue: 64,
            prompt_cache: true,
            max_draft: 0,
            speculation: None,
            kv_unified: true,
        }
    }
}

impl EngineConfig {
    /// Room for speculative decoding: requests with
    /// [`GenerateOptions::with_speculation`](crate::GenerateOptions::with_speculation)
    /// draft at most `n` tokens per step, which ride in the batch beside the
    /// other sequences' tokens (the context keeps `n_parallel * (1 + n)`
    /// outputs per decode). 0, the default, refuses speculating requests
    /// ([`Error::Unsupported`]); requests without speculation are decoded
    /// as before either way.
    pub fn with_max_draft(mut self, n: u32) -> Self {
        self.max_draft = n.min(crate::MAX_DRAFT);
        self
    }

    /// The most tokens a request may draft per step.
    pub fn max_draft(&self) -> u32 {
        self.max_draft
    }

    /// The engine's speculation: room for its drafts
    /// ([`with_max_draft`](Self::with_max_draft) of its `draft_max`) and,
    /// for [`Speculation::draft_model`](crate::Speculation::draft_model),
    /// a context of the draft model with a sequence for each of the
    /// engine's, made with the engine (a vocabulary that is not the
    /// target's is [`Error::IncompatibleDraft`] then). Each decode step
    /// drafts for every sequence that asks, one draft-model decode per
    /// drafted position for all of them. Requests still choose: a request
    /// without speculation is decoded as before, one with a text source
    /// drafts from its text, and one with a draft model must name this one
    /// (another is [`Error::Unsupported`]). A server applies it to every
    /// request; see [`speculation`](Self::speculation).
    ///
    /// ```
    /// use llama_safe::{engine::EngineConfig, Speculation};
    /// let config = EngineConfig::default().with_speculation(Speculation::ngram_map().with_draft_max(8));
    /// assert_eq!(config.max_draft(), 8);
    /// ```
    pub fn with_speculation(mut self, speculation: crate::Speculation) -> Self {
        self.max_draft = speculation.draft_max().min(crate::MAX_DRAFT);
        self.speculation = Some(speculation);
        self
    }

    /// The speculation set by [`with_speculation`](Self::with_speculation).
    pub fn speculation(&self) -> Option<&crate::Speculation> {
        self.speculation.as_ref()
    }

    /// One KV cache shared by all sequences (the default: a request may use
    /// every cell another does not hold), or, with `false`, a cache of its
    /// own for each sequence, [`n_ctx_per_request`](Self::n_ctx_per_request)
    /// cells (llama-server's default with `--parallel`). In a shared cache
    /// every token attends over all the cells in use, other sequences'
    /// included (masked): with the prompt cache keeping finished requests'
    /// cells, a sequence pays for the others' history. Separate caches cost
    /// a request the room the others leave unused.
    ///
    /// ```
    /// use llama_safe::engine::EngineConfig;
    /// let config = EngineConfig::default().with_n_ctx(8192).with_n_parallel(4).with_kv_unified(false);
    /// assert_eq!(config.n_ctx_per_request(), 2048);
    /// ```
    pub fn with_kv_unified(mut self, unified: bool) -> Self {
        self.kv_unified = unified;
        self
    }

    /// Whether all sequences share one KV cache.
    pub fn kv_unified(&self) -> bool {
        self.kv_unified
    }

    /// Most cells one request may take (prompt and answer): `n_ctx` with a
    /// shared cache; without, each sequence's own, as llama.cpp sizes it
    /// (`n_ctx` and each share rounded up to a multiple of 256).
    pub fn n_ctx_per_request(&self) -> u32 {
        let pad = |n: u32| n.div_ceil(256).saturating_mul(256);
        if self.kv_unified {
            self.n_ctx
        } else {
            pad(pad(self.n_ctx) / self.n_parallel)
        }
    }

    /// KV cells shared by all sequences.
    pub fn with_n_ctx(mut self, n: u32) -> Self {
        self.n_ctx = n;
        self
    }
    /// Sequences generating at once (at least 1).
    pub fn with_n_parallel(mut self, n: u32) -> Self {
        self.n_parallel = n.max(1);
        self
    }
    /// Most tokens per decode.
    pub fn with_n_batch(mut self, n: u32) -> Self {
        self.n_batch = n.max(1);
        self
    }
    /// Threads for every decode.
    pub fn with_threads(mut self, n: u32) -> Self {
        self.threads = n.max(1);
        self
    }
    /// Requests that may wait.
    pub fn with_queue(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }
    /// Turns the prompt cache on or off.
    pub fn with_prompt_cache(mut self, enabled: bool) -> Self {
        self.prompt_cache = enabled;
        self
    }
    /// The context's other settings: flash attention, KV cache types and
    /// placement, operation offload, the abort callback. The engine sets
    /// the size, sequences, unified cache, batch sizes, threads and output
    /// limit itself (from this config).
    pub fn with_context(mut self, context: ContextParams) -> Self {
        self.context = context;
        self
    }

    /// KV cells shared by all sequences (prompt and answer tokens).
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }
    /// Sequences generating at once.
    pub fn n_parallel(&self) -> u32 {
        self.n_parallel
    }
    /// Most tokens one decode takes (prompt chunks are cut to fit).
    pub fn n_batch(&self) -> u32 {
        self.n_batch
    }
    /// Threads for every decode.
    pub fn threads(&self) -> u32 {
        self.threads
    }
    /// Requests that may wait, beyond the `n_parallel` running, before
    /// `submit` is refused.
    pub fn queue(&self) -> usize {
        self.queue
    }
    /// Whether the KV cells of a finished sequence are reused for a prompt
    /// that starts with the same tokens.
    pub fn prompt_cache(&self) -> bool {
        self.prompt_cache
    }

    /// The parameters of the one context the engine creates: `n_ctx` cells
    /// for `n_parallel` sequences in one KV cache (or one per sequence, see
    /// [`with_kv_unified`](Self::with_kv_unified)), batches of
    /// `n_batch`, room for one output per sequence per decode (all the
    /// engine asks for). For dry runs and fits of the engine's memory
    /// ([`LlamaModelParams::fit`](crate::LlamaModelParams::fit)).
    pub fn context_params(&self) -> ContextParams {
        self.context
            .clone()
            .with_n_ctx(self.n_ctx)
            .with_n_seq_max(self.n_parallel)
            .with_n_outputs_max(self.n_parallel * (1 + self.max_draft))
            .with_kv_unified(self.kv_unified)
            .with_n_batch(self.n_batch)
            .with_n_ubatch(self.n_batch)
            .with_threads(self.threads)
    }
}

/// One generation to run: prompt tokens (tokenize them on your own thread:
/// tokenizing a long text takes time the engine's decoding should not wait
/// for) and the options of [`LlamaContext::generate`](crate::LlamaContext::generate) (`cancel` included).
#[derive(Debug, Clone)]
pub struct Request {
    /// The prompt, with its BOS token if the model wants one (with media,
    /// `Request::with_media` (the `mtmd` feature), a placeholder per
    /// medium's cell).
    pub prompt: Vec<Token>,
    /// Token limit, sampling, stop strings, cancel flag.
    pub options: GenerateOptions,
    /// The media of a prompt made by `with_media`.
    #[cfg(feature = "mtmd")]
    media: Option<Arc<media::PromptMedia>>,
}

impl Request {
    /// A request for `prompt` with `options`.
    pub fn new(prompt: Vec<Token>, options: GenerateOptions) -> Request {
        Request {
            prompt,
            options,
            #[cfg(feature = "mtmd")]
            media: None,
        }
    }
}

/// A request's stream of events: pieces, then [`Event::Done`] with its
/// stats, or an error. Dropping it cancels the request.
#[derive(Debug)]
pub struct Handle {
    events: flume::Receiver<Result<Event>>,
    cancel: Arc<AtomicBool>,
}

impl Handle {
    /// The next event, waiting for it; `None` after the last.
    pub fn recv(&self) -> Option<Result<Event>> {
        self.events.recv().ok()
    }

    /// The next event, from async code.
    pub async fn recv_async(&self) -> Option<Result<Event>> {
        self.events.recv_async().await.ok()
    }

    /// Stops the request at the engine's next step (its cells are freed).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the whole answer and returns its text.
    pub fn text(self) -> Result<String> {
        let mut text = String::new();
        for event in self {
            if let Event::Piece(p) = event? {
                text.push_str(&p.text);
            }
        }
        Ok(text)
    }
}

impl Iterator for Handle {
    type Item = Result<Event>;
    fn next(&mut self) -> Option<Result<Event>> {
        self.recv()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A snapshot of what the engine is doing, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Sequences generating or reading their prompt.
    pub active: usize,
    /// Requests waiting for room.
    pub queued: usize,
    /// KV cells holding tokens (active sequences and the prompt cache).
    pub kv_cells_used: u64,
    /// KV cells in all.
    pub kv_cells: u64,
    /// Tokens in the last decode.
    pub last_batch_tokens: u64,
    /// Decodes run.
    pub decodes: u64,
    /// Tokens decoded in all (prompt and generated).
    pub tokens_decoded: u64,
    /// Requests that reused cached prompt tokens.
    pub prompt_cache_hits: u64,
    /// Prompt tokens not decoded again thanks to the cache.
    pub prompt_cache_tokens: u64,
}

/// Counters the worker updates and anyone reads.
#[derive(Debug, Default)]
struct Counters {
    active: AtomicUsize,
    queued: AtomicUsize,
    kv_cells_used: AtomicU64,
    last_batch_tokens: AtomicU64,
    decodes: AtomicU64,
    tokens_decoded: AtomicU64,
    prompt_cache_hits: AtomicU64,
    prompt_cache_tokens: AtomicU64,
    /// Set by [`Engine::close`].
    closed: AtomicBool,
}

/// A request on its way to the worker.
struct Job {
    request: Request,
    events: flume::Sender<Result<Event>>,
    cancel: Arc<AtomicBool>,
    submitted: Instant,
}

/// The batching engine; see the [module docs](self).
pub struct Engine {
    model: LlamaModel,
    config: EngineConfig,
    jobs: Option<flume::Sender<Job>>,
    counters: Arc<Counters>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Engine {
    /// Starts the engine's thread with a context over `model` sized by
    /// `config`; a context llama.cpp refuses is the error here.
    pub fn new(model: &LlamaModel, config: EngineConfig) -> Result<Engine> {
        if let Some(s) = &config.speculation {
            s.check()?;
        }
        let model = model.clone();
        let (jobs_tx, jobs_rx) = flume::unbounded();
        let (ready_tx, ready_rx) = flume::bounded(1);
        let counters = Arc::new(Counters::default());
        let worker = {
            let model = model.clone();
            let config = config.clone();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name("llama-engine".into())
                .spawn(move || worker::run(&model, &config, &counters, jobs_rx, ready_tx))
                .map_err(|source| Error::System {
                    what: "start the engine thread".into(),
                    source: source.into(),
                })?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = worker.join();
                return Err(e);
            }
            Err(_) => {
                let _ = worker.join();
                return Err(Error::EngineStopped);
            }
        }
        Ok(Engine {
            model,
            config,
            jobs: Some(jobs_tx),
            counters,
            worker: Some(worker),
        })
    }

    /// Tokenizes `prompt` on the caller's thread, as
    /// [`LlamaContext::generate`](crate::LlamaContext::generate) does (the
    /// start token and special tokens as `options` say), and queues it. A
    /// text too long for the cache whatever its tokens is
    /// [`Error::PromptTooLong`] before it is tokenized; otherwise the
    /// errors of [`submit`](Self::submit).
    ///
    /// ```
    /// use llama_safe::{demo::{DemoModel, DEMO_CONTINUATION, DEMO_PROMPT}, *};
    /// use llama_safe::engine::{Engine, EngineConfig};
    /// let model = LlamaModel::load(&LlamaBackend::init(), DemoModel::Moe.cached()?, &Default::default())?;
    /// let engine = Engine::new(&model, EngineConfig::default().with_n_ctx(256))?;
    /// let options = GenerateOptions::default().with_sampling(SamplingOptions::greedy());
    /// assert_eq!(engine.submit_text(DEMO_PROMPT, options)?.text()?, DEMO_CONTINUATION);
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn submit_text(&self, prompt: &str, options: GenerateOptions) -> Result<Handle> {
        let tokens = self.model.tokenize_prompt(
            prompt,
            options.tokenize_how(),
            self.config.n_ctx_per_request(),
        )?;
        self.submit(Request::new(tokens, options))
    }

    /// Queues `request`, a prompt already tokenized (on the caller's
    /// thread: tokenizing a long text takes time the engine's decoding
    /// should not wait for). An empty prompt is [`Error::EmptyPrompt`]; a
    /// prompt and `max_tokens` that can never fit the cache are
    /// [`Error::PromptTooLong`]; a token outside the vocabulary is
    /// [`Error::InvalidToken`]; sampling options the model cannot take (a
    /// grammar that does not parse) are the sampler's error; a full queue
    /// is [`Error::EngineBusy`].
    pub fn submit(&self, request: Request) -> Result<Handle> {
        if self.counters.closed.load(Ordering::SeqCst) {
            return Err(Error::EngineStopped);
        }
        if request.prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        request.options.check()?;
        if let Some(s) = request.options.speculation() {
            if self.config.max_draft == 0 {
                return Err(Error::Unsupported {
                    reason: "this engine has no room for drafts: EngineConfig::with_max_draft"
                        .into(),
                });
            }
            let engines = self.config.speculation.as_ref().and_then(|e| e.draft());
            if let Some(d) = s.draft() {
                if !engines.is_some_and(|e| e.model().same_model(d.model())) {
                    return Err(Error::Unsupported {
                        reason: "this engine drafts with no such model: a request's draft model \
                                 must be the one of EngineConfig::with_speculation"
                            .into(),
                    });
                }
            }
        }
        let needed = request.prompt.len() + request.options.max_tokens() as usize;
        let room = self.config.n_ctx_per_request();
        if needed > room as usize {
            return Err(Error::PromptTooLong {
                tokens: needed,
                n_ctx: room,
            });
        }
        #[cfg(feature = "mtmd")]
        if let Some(media) = &request.media {
            media::check(media, &self.model, &request)?;
        }
        for &t in &request.prompt {
            #[cfg(feature = "mtmd")]
            if request.media.is_some() && media::is_placeholder(t) {
                continue;
            }
            self.model.check_token(t)?;
        }
        // The worker builds its own; this one only checks the options now.
        drop(Sampler::new(&self.model, request.options.sampling())?);
        // In flight: running plus waiting, at most n_parallel + queue. The
        // worker counts a request as active before it stops counting it as
        // queued, so this never lets one too many in.
        let queued = self.counters.queued.fetch_add(1, Ordering::SeqCst);
        let active = self.counters.active.load(Ordering::SeqCst);
        if queued + active >= self.config.n_parallel as usize + self.config.queue {
            self.counters.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::EngineBusy { queued });
        }
        let (events_tx, events_rx) = flume::unbounded();
        let cancel = request
            .options
            .cancel()
            .cloned()
            .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
        let job = Job {
            request,
            events: events_tx,
            cancel: cancel.clone(),
            submitted: Instant::now(),
        };
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            self.counters.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::EngineStopped);
        }
        Ok(Handle {
            events: events_rx,
            cancel,
        })
    }

    /// The model it runs.
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// Its configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// What it is doing now.
    pub fn stats(&self) -> EngineStats {
        let c = &self.counters;
        EngineStats {
            active: c.active.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            kv_cells_used: c.kv_cells_used.load(Ordering::Relaxed),
            kv_cells: u64::from(self.config.n_ctx),
            last_batch_tokens: c.last_batch_tokens.load(Ordering::Relaxed),
            decodes: c.decodes.load(Ordering::Relaxed),
            tokens_decoded: c.tokens_decoded.load(Ordering::Relaxed),
            prompt_cache_hits: c.prompt_cache_hits.load(Ordering::Relaxed),
            prompt_cache_tokens: c.prompt_cache_tokens.load(Ordering::Relaxed),
        }
    }

    /// Stops taking requests: later `submit`s and the requests still
    /// waiting get [`Error::EngineStopped`]; the running ones go on. For a
    /// server's graceful shutdown.
    pub fn close(&self) {
        self.counters.closed.store(true, Ordering::SeqCst);
    }

    /// Stops taking requests, lets the running and queued ones finish, and
    /// waits for the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.jobs = None; // the worker ends once the channel is drained
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}
