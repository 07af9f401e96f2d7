//! An HTTP server for llama.cpp models, MoE offload included: OpenAI's,
//! Ollama's and Anthropic's APIs over llama-safe's batching
//! [`Engine`] (one context, `n_parallel`
//! sequences decoded together), as the `llama-safe-server` binary
//! (`cargo install llama-safe-server`) and as an axum [`Router`] a service
//! mounts in its own.
//!
//! ```no_run
//! use llama_safe::engine::EngineConfig;
//! use llama_safe::{LlamaBackend, LlamaModel, LlamaModelParams};
//! use llama_safe_server::{router, AppState, ServerConfig};
//!
//! # async fn app() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = LlamaBackend::init();
//! let params = LlamaModelParams::default().with_n_gpu_layers(999).with_cpu_moe_all();
//! let model = LlamaModel::load(&backend, "qwen3-30b-a3b-q4_k_m.gguf", &params)?;
//! let state = AppState::new(model, "qwen3", EngineConfig::default().with_n_parallel(4))?;
//! let config = ServerConfig::default().with_api_key(std::env::var("MY_KEY")?);
//! // Every route, with the body limits and the key check, under /llm.
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "my service" }))
//!     .nest("/llm", router(state, &config));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! [`serve`] adds what belongs to the connection rather than to the router
//! (the header and idle timeouts, a graceful shutdown that lets streams
//! finish); a service that mounts the router keeps its own.
//!
//! Routes (every one but `/health` needs a key when keys are configured):
//! - OpenAI: `POST /v1/chat/completions`, `/v1/completions`,
//!   `/v1/embeddings`, `GET /v1/models`;
//! - Anthropic: `POST /v1/messages`;
//! - Ollama: `POST /api/chat`, `/api/generate`, `/api/embed`, `/api/show`,
//!   `GET /api/tags`;
//! - llama-server's `POST /tokenize` and `/detokenize`;
//! - `GET /health` and `GET /metrics` (Prometheus).

mod anthropic;
pub mod catalog;
mod config;
mod dispatch;
mod embeddings;
mod error;
mod generation;
mod layers;
mod listing;
pub mod media;
pub mod metrics;
pub mod models;
mod ollama;
mod openai;
pub mod presets;
mod reply;
pub mod request;
mod serve;
mod tokens;
pub mod tools;
pub mod types;

#[cfg(feature = "cli")]
pub mod cli;

/// The workspace README's Rust listings, compiled and run as doctests here,
/// where everything they use is a dependency (in the repository only).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// This crate's README's listings, likewise.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct CrateReadmeDoctests;

/// docs/SERVER.md's Rust listings, likewise.
#[cfg(doctest)]
#[doc = include_str!("../../docs/SERVER.md")]
pub struct ServerDocDoctests;

pub use config::{ServerConfig, Timeouts, DEFAULT_MAX_BODY_BYTES};
pub use error::ApiError;
pub use models::{KeepAlive, Models, ModelsConfig};
pub use serve::{serve, serve_models};

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use llama_safe::engine::{Engine, EngineConfig};
use llama_safe::LlamaModel;
use std::sync::Arc;

/// A SHA-256 naming a model file by its path, size and modification time
/// (hashing a large file would take minutes).
pub(crate) fn file_digest(path: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let meta = std::fs::metadata(path).ok();
    let stamp = format!(
        "{}|{}|{:?}",
        path.display(),
        meta.as_ref().map_or(0, |m| m.len()),
        meta.and_then(|m| m.modified().ok())
    );
    format!("{:x}", Sha256::digest(stamp.as_bytes()))
}

/// Everything the handlers of one model share.
pub struct AppState {
    /// The model, loaded once, for the life of the process.
    pub model: LlamaModel,
    /// The name clients use for it (`model` in requests).
    pub model_name: String,
    /// Other names it answers to (a preset's aliases).
    pub aliases: Vec<String>,
    /// The batching engine every request runs on.
    pub engine: Engine,
    /// A digest naming the model file for `/api/tags` (of its path, size and
    /// modification time; hashing a large file would take minutes).
    pub model_digest: String,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
    /// The context `/v1/embeddings` and `/api/embed` run in, made on first
    /// use.
    pub(crate) embedder: embeddings::Embedder,
    /// Whether the chat template thinks, read once.
    thinks: bool,
    /// Whether the fallback from the model's chat template was logged.
    template_fallback_logged: std::sync::atomic::AtomicBool,
    /// Turns for `/tokenize`: one per core.
    pub(crate) tokenizing: Arc<tokio::sync::Semaphore>,
    /// The projector images and audio go through, if the model has one.
    #[cfg(feature = "mtmd")]
    projector: Option<llama_safe::media::Projector>,
}

impl AppState {
    /// An engine over `model` configured by `config` (`n_parallel`
    /// sequences, a queue of `queue` more requests before 429).
    pub fn new(
        model: LlamaModel,
        model_name: impl Into<String>,
        config: EngineConfig,
    ) -> llama_safe::Result<Arc<AppState>> {
        AppState::new_with_aliases(model, model_name, Vec::new(), config)
    }

    /// As [`new`](Self::new), answering to `aliases` too.
    pub fn new_with_aliases(
        model: LlamaModel,
        model_name: impl Into<String>,
        aliases: Vec<String>,
        config: EngineConfig,
    ) -> llama_safe::Result<Arc<AppState>> {
        // Read the longest token once now (it scans the vocabulary), not
        // on the first request's async worker.
        model.max_token_bytes();
        let engine = Engine::new(&model, config)?;
        let model_digest = file_digest(model.path());
        let thinks = model
            .chat_template()
            .is_some_and(|t| t.contains(llama_safe::chat::THINK_OPEN));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Arc::new(AppState {
            thinks,
            tokenizing: Arc::new(tokio::sync::Semaphore::new(cores)),
            template_fallback_logged: Default::default(),
            model,
            model_name: model_name.into(),
            aliases,
            engine,
            model_digest,
            metrics: metrics::Metrics::default(),
            embedder: embeddings::Embedder::default(),
            #[cfg(feature = "mtmd")]
            projector: None,
        }))
    }

    /// As [`new_with_aliases`](Self::new_with_aliases), with `projector`
    /// (loaded for `model`) taking the images and audio of requests.
    #[cfg(feature = "mtmd")]
    pub fn new_with_projector(
        model: LlamaModel,
        model_name: impl Into<String>,
        aliases: Vec<String>,
        config: EngineConfig,
        projector: llama_safe::media::Projector,
    ) -> llama_safe::Result<Arc<AppState>> {
        if !projector.model().same_model(&model) {
            return Err(llama_safe::Error::ModelMismatch {
                what: "a projector loaded for another model",
            });
        }
        let state = AppState::new_with_aliases(model, model_name, aliases, config)?;
        let mut state = Arc::into_inner(state).expect("just made, not shared");
        state.projector = Some(projector);
        Ok(Arc::new(state))
    }

    /// The projector, when requests may carry images or audio.
    #[cfg(feature = "mtmd")]
    pub fn projector(&self) -> Option<&llama_safe::media::Projector> {
        self.projector.as_ref()
    }

    /// Whether a request's `model` means this one: its name, an alias, or
    /// `default`.
    pub fn answers_to(&self, name: &str) -> bool {
        name == self.model_name || name == "default" || self.aliases.iter().any(|a| a == name)
    }

    /// Says, once per model, in the server's log that llama.cpp's built-in
    /// template stands in for the model's own (which the renderer cannot
    /// run: `why`).
    pub(crate) fn template_fell_back(&self, why: &str) {
        use std::sync::atomic::Ordering;
        if !self.template_fallback_logged.swap(true, Ordering::Relaxed) {
            eprintln!(
                "server: model {:?}: its chat template cannot be rendered ({}); llama.cpp's built-in template stands in",
                self.model_name,
                why.escape_debug()
            );
        }
    }

    /// Whether the model's chat template thinks (writes a `<think>` block).
    pub fn thinks(&self) -> bool {
        self.thinks
    }

    /// The most KV cells a prompt and its answer can take (the engine's
    /// `n_ctx`, or each sequence's share without a unified cache).
    pub fn n_ctx(&self) -> u32 {
        self.engine.config().n_ctx_per_request()
    }
}

/// Every route over one model, with its protective layers: the body read
/// within `config`'s time and size limits (408, 413), and the API key
/// checked (401) on every route but `/health` (and `/metrics` when opened).
pub fn router(state: Arc<AppState>, config: &ServerConfig) -> Router {
    models_router(Models::single(state), config)
}

/// [`router`] over a [pool](Models) of models: a request's `model` names
/// one, which is loaded if it is not; `GET /api/ps`, `POST /models/load`
/// and `/models/unload` manage them.
pub fn models_router(models: Arc<Models>, config: &ServerConfig) -> Router {
    let config = Arc::new(config.clone());
    let mut protected = Router::new()
        .route("/api/generate", post(dispatch::generate))
        .route("/api/chat", post(dispatch::chat))
        .route("/api/embed", post(dispatch::embed))
        .route("/api/tags", get(listing::tags))
        .route("/api/ps", get(listing::ps))
        .route("/api/show", post(listing::show))
        .route("/v1/models", get(listing::models))
        .route("/v1/completions", post(dispatch::completions))
        .route("/v1/chat/completions", post(dispatch::chat_completions))
        .route("/v1/embeddings", post(dispatch::embeddings))
        .route("/v1/messages", post(dispatch::messages))
        .route("/tokenize", post(dispatch::tokenize))
        .route("/detokenize", post(dispatch::detokenize))
        .route("/models/load", post(listing::load))
        .route("/models/unload", post(listing::unload));
    let mut open = Router::new().route("/health", get(listing::health));
    if config.open_metrics() {
        open = open.route("/metrics", get(listing::metrics));
    } else {
        protected = protected.route("/metrics", get(listing::metrics));
    }
    // The last layer added runs first: the key is checked before the body
    // is read. The body is read whole by `body_in_time`, within the one
    // limit; the extractors' own (axum's hidden 2 MB default) is set to the
    // same, so a body under `max_body_bytes` is never refused by another.
    protected = protected
        .route_layer(DefaultBodyLimit::max(config.max_body_bytes()))
        .route_layer(middleware::from_fn_with_state(
            config.clone(),
            layers::body_in_time,
        ));
    if config.requires_key() {
        protected =
            protected.route_layer(middleware::from_fn_with_state(config, layers::require_key));
    }
    protected.merge(open).with_state(models)
}
