//! Shared by the server tests: the demo model served on loopback, and
//! small HTTP helpers.
#![allow(dead_code)]

use llama_safe::demo::DemoModel;
use llama_safe::engine::EngineConfig;
use llama_safe::*;
use llama_safe_server::{serve, AppState, ServerConfig, Timeouts};
use serde_json::Value;
use std::sync::Arc;

/// A server on a loopback port, shut down when dropped.
pub struct Server {
    pub base: String,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The serve task: it ends when the server has shut down.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}
impl Server {
    /// Sends the shutdown signal.
    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The demo model behind `parallel` sequences and a queue of `queue`.
pub async fn start(parallel: u32, queue: usize) -> Server {
    start_with(
        EngineConfig::default()
            .with_n_ctx(4096)
            .with_n_parallel(parallel)
            .with_threads(2)
            .with_queue(queue),
        Timeouts::default(),
    )
    .await
}

/// The demo model behind an engine configured by `config`.
pub async fn start_with(config: EngineConfig, timeouts: Timeouts) -> Server {
    start_model(&DemoModel::Moe.cached().unwrap(), config, timeouts).await
}

/// The model at `path` behind an engine configured by `config`.
pub async fn start_model(
    path: &std::path::Path,
    config: EngineConfig,
    timeouts: Timeouts,
) -> Server {
    start_configured(
        path,
        config,
        ServerConfig::default().with_timeouts(timeouts),
    )
    .await
}

/// The model at `path` behind an engine configured by `config`, the
/// server by `server`.
pub async fn start_configured(
    path: &std::path::Path,
    config: EngineConfig,
    server: ServerConfig,
) -> Server {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, path, &LlamaModelParams::default()).unwrap();
    let state = AppState::new(model, "demo", config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = {
        let state = state.clone();
        tokio::spawn(async move {
            serve(listener, state, &server, async {
                let _ = rx.await;
            })
            .await
        })
    };
    Server {
        base,
        state,
        stop: Some(tx),
        task,
    }
}

/// POSTs JSON; the status and the JSON answer.
pub async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// `GET /health`.
pub async fn health(base: &str) -> Value {
    reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
