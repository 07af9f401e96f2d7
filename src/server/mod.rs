//! The HTTP server behind `examples/server.rs`: one model, a bounded pool of
//! contexts, generation on blocking threads, streaming as server-sent events.
//!
//! Endpoints: `POST /api/generate`, `POST /v1/completions`,
//! `POST /v1/chat/completions` (OpenAI's format), `GET /health`,
//! `GET /metrics` (Prometheus).

pub mod api;
mod generation;
mod handlers;
pub mod metrics;
pub mod pool;

use axum::routing::{get, post};
use axum::Router;
use llama_safe::{ContextParams, LlamaModel};
use std::future::Future;
use std::sync::Arc;

/// Everything the handlers share.
pub struct AppState {
    /// The model, loaded once, for the life of the process.
    pub model: &'static LlamaModel,
    /// The name clients use for it (`model` in requests).
    pub model_name: String,
    /// Contexts for concurrent requests.
    pub pool: Arc<pool::ContextPool>,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
}

impl AppState {
    /// `contexts` contexts made with `params`, and a queue of `queue` more
    /// requests before 429.
    pub fn new(
        model: &'static LlamaModel,
        model_name: impl Into<String>,
        params: &ContextParams,
        contexts: usize,
        queue: usize,
    ) -> llama_safe::Result<Arc<AppState>> {
        let pool = pool::ContextPool::new(model, params, contexts, queue)?;
        Ok(Arc::new(AppState {
            model,
            model_name: model_name.into(),
            pool,
            metrics: metrics::Metrics::default(),
        }))
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
