//! The HTTP server behind `examples/server.rs`: one model, llama-safe's
//! batching [`Engine`] (one context, `--parallel` sequences decoded together),
//! prompts templated and tokenized on blocking threads, streaming as
//! server-sent events.
//!
//! Endpoints: `POST /api/generate`, `POST /v1/completions`,
//! `POST /v1/chat/completions` (OpenAI's format), `GET /health`,
//! `GET /metrics` (Prometheus).

pub mod api;
mod generation;
mod handlers;
pub mod metrics;

use axum::routing::{get, post};
use axum::Router;
use llama_safe::engine::{Engine, EngineConfig};
use llama_safe::{LlamaModel, Token};
use std::future::Future;
use std::sync::Arc;

/// Everything the handlers share.
pub struct AppState {
    /// The model, loaded once, for the life of the process.
    pub model: Arc<LlamaModel>,
    /// The name clients use for it (`model` in requests).
    pub model_name: String,
    /// The batching engine every request runs on.
    pub engine: Engine,
    /// Bytes of the longest token text: a prompt longer than the context
    /// times this cannot fit, whatever it tokenizes to.
    pub max_token_bytes: usize,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
}

impl AppState {
    /// An engine over `model` configured by `config` (`n_parallel`
    /// sequences, a queue of `queue` more requests before 429).
    pub fn new(
        model: Arc<LlamaModel>,
        model_name: impl Into<String>,
        config: EngineConfig,
    ) -> llama_safe::Result<Arc<AppState>> {
        let max_token_bytes = (0..model.n_vocab() as i32)
            .filter_map(|t| model.token_bytes(Token(t), true).ok())
            .map(|b| b.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let engine = Engine::new(model.clone(), config)?;
        Ok(Arc::new(AppState {
            model,
            model_name: model_name.into(),
            engine,
            max_token_bytes,
            metrics: metrics::Metrics::default(),
        }))
    }

    /// KV cells of the engine: the most a prompt and its answer can take.
    pub fn n_ctx(&self) -> u32 {
        self.engine.config().n_ctx
    }
}

/// The router with every endpoint.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/generate", post(handlers::generate))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops taking connections and lets
/// the requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm
    // holds each piece back until the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
