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
    start_loaded(path, &LlamaModelParams::default(), config, server).await
}

/// The model at `path` loaded with `params`, behind an engine configured by
/// `config`, the server by `server`.
pub async fn start_loaded(
    path: &std::path::Path,
    params: &LlamaModelParams,
    config: EngineConfig,
    server: ServerConfig,
) -> Server {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, path, params).unwrap();
    let state = AppState::new(model, "demo", config).unwrap();
    start_state(state, server).await
}

/// `state` served on a loopback port, the server configured by `server`.
pub async fn start_state(state: Arc<AppState>, server: ServerConfig) -> Server {
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

/// A request with an optional API key; the status and the answer as JSON
/// (`Null` when it is not JSON).
pub async fn call(base: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = match &body {
        Some(b) => client.post(format!("{base}{path}")).json(b),
        None => client.get(format!("{base}{path}")),
    };
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A small engine: `parallel` sequences, 4096 cells, 2 threads, a queue of 8.
pub fn engine(parallel: u32) -> EngineConfig {
    EngineConfig::default()
        .with_n_ctx(4096)
        .with_n_parallel(parallel)
        .with_threads(2)
        .with_queue(8)
}

/// The `data:` payloads of a server-sent-events answer (200 and the content
/// type checked).
pub async fn sse(base: &str, path: &str, body: Value) -> Vec<String> {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(String::from)
        .collect()
}

/// SSE payloads as JSON, `[DONE]` left out.
pub fn parse(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

/// The lines of a newline-delimited JSON answer (200 and the content type
/// checked).
pub async fn ndjson(b: &str, path: &str, body: Value) -> Vec<Value> {
    let r = reqwest::Client::new()
        .post(format!("{b}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
