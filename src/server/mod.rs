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
pub mod ollama;
pub mod tools;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use llama_safe::engine::{Engine, EngineConfig};
use llama_safe::LlamaModel;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Everything the handlers share.
pub struct AppState {
    /// The model, loaded once, for the life of the process.
    pub model: LlamaModel,
    /// The name clients use for it (`model` in requests).
    pub model_name: String,
    /// The batching engine every request runs on.
    pub engine: Engine,
    /// A digest naming the model file for `/api/tags` (of its path, size and
    /// modification time; hashing a large file would take minutes).
    pub model_digest: String,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
}

impl AppState {
    /// An engine over `model` configured by `config` (`n_parallel`
    /// sequences, a queue of `queue` more requests before 429).
    pub fn new(
        model: LlamaModel,
        model_name: impl Into<String>,
        config: EngineConfig,
    ) -> llama_safe::Result<Arc<AppState>> {
        // Read the longest token once now (it scans the vocabulary), not
        // on the first request's async worker.
        model.max_token_bytes();
        let engine = Engine::new(&model, config)?;
        let model_digest = {
            use sha2::{Digest, Sha256};
            let meta = std::fs::metadata(model.path()).ok();
            let stamp = format!(
                "{}|{}|{:?}",
                model.path().display(),
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok())
            );
            format!("{:x}", Sha256::digest(stamp.as_bytes()))
        };
        Ok(Arc::new(AppState {
            model,
            model_name: model_name.into(),
            engine,
            model_digest,
            metrics: metrics::Metrics::default(),
        }))
    }

    /// KV cells of the engine: the most a prompt and its answer can take.
    pub fn n_ctx(&self) -> u32 {
        self.engine.config().n_ctx()
    }
}

/// The router with every endpoint.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/generate", post(ollama::generate))
        .route("/api/chat", post(ollama::chat))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/v1/models", get(handlers::models))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .with_state(state)
}

/// Time limits of a connection and of shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request's headers must arrive within this, and so must the next
    /// request's on a kept-alive connection (the idle limit): slow or idle
    /// clients are closed.
    pub header: Duration,
    /// A request's whole body must arrive within this (408 otherwise).
    pub body: Duration,
    /// After the shutdown signal, streams in flight may finish within this;
    /// then the server stops anyway.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    /// Headers 10 s, body 30 s, shutdown 10 s.
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            shutdown: Duration::from_secs(10),
        }
    }
}

/// The largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Reads the whole body within the body timeout, then hands the request on.
async fn body_in_time(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Err(_) => api::ApiError::status(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {limit:?}"),
        )
        .into_response(),
        Ok(Err(_)) => api::ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {MAX_BODY_BYTES} bytes or broken off"),
        )
        .into_response(),
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// Serves until `shutdown` resolves, then stops taking connections, answers
/// requests still queued with 503, lets the streams in flight finish within
/// `timeouts.shutdown`, and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    timeouts: Timeouts,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let app =
        router(state.clone()).layer(middleware::from_fn_with_state(timeouts.body, body_in_time));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // Out of file descriptors and the like: wait, keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Streams are many small writes: without TCP_NODELAY, Nagle's
        // algorithm holds each piece back until the client's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    state.engine.close();
    if tokio::time::timeout(timeouts.shutdown, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "server: streams still running after {:?}; stopping anyway",
            timeouts.shutdown
        );
    }
    Ok(())
}
