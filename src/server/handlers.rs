//! The endpoints.

use super::api::{self, Api, ApiError, GenRequest};
use super::generation::{self, finish_reason, GenEvent};
use super::tools::{self, ToolStream};
use super::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use llama_safe::chat::ParsedReply;
use llama_safe::GenerationStats;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn next_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Longest a request body may take to check (its schemas converted).
const PARSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Parses the body and starts the generation; counts the request.
pub(crate) async fn begin(
    state: &Arc<AppState>,
    endpoint: &'static str,
    api: Api,
    body: &Bytes,
) -> Result<(GenRequest, mpsc::Receiver<GenEvent>), Response> {
    let started = async {
        // Parsing converts JSON schemas (response_format, tools, format)
        // into grammars: bounded work, but not for the async workers.
        let parsing = {
            let state = state.clone();
            let body = body.clone();
            tokio::task::spawn_blocking(move || {
                let limits = api::Limits {
                    model_name: &state.model_name,
                    n_ctx: state.n_ctx(),
                    n_vocab: state.model.n_vocab(),
                    tool_format: state.model.tool_call_format(),
                };
                api::parse(&body, api, limits)
            })
        };
        let req = tokio::time::timeout(PARSE_DEADLINE, parsing)
            .await
            .map_err(|_| {
                ApiError::status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the request took over {PARSE_DEADLINE:?} to check"),
                )
            })?
            .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
        let rx = generation::start(state, &req).await?;
        Ok::<_, ApiError>((req, rx))
    }
    .await;
    match started {
        Ok(ok) => {
            state.metrics.request(endpoint, 200);
            Ok(ok)
        }
        Err(e) => {
            state.metrics.request(endpoint, e.status.as_u16());
            Err(e.into_response())
        }
    }
}

/// Collects a whole answer for a non-streaming response.
pub(crate) async fn collect(
    mut rx: mpsc::Receiver<GenEvent>,
) -> Result<(String, GenerationStats), Response> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            GenEvent::Piece(p) => text.push_str(&p.text),
            GenEvent::Done(stats) => return Ok((text, stats)),
            GenEvent::Error(status, message) => {
                return Err(ApiError::status(status, message).into_response())
            }
        }
    }
    Err(ApiError::status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "generation ended without stats",
    )
    .into_response())
}

/// Turns generation events into SSE events with `render`, then `[DONE]` if asked.
fn sse<F>(rx: mpsc::Receiver<GenEvent>, mut render: F, done_marker: bool) -> Response
where
    F: FnMut(GenEvent) -> Value + Send + 'static,
{
    let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
        .map(move |e| Ok::<_, Infallible>(SseEvent::default().data(render(e).to_string())));
    let tail = stream::iter(done_marker.then(|| Ok(SseEvent::default().data("[DONE]"))));
    let body: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        Box::pin(events.chain(tail));
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub(crate) fn stats_json(s: &GenerationStats) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "generated_tokens": s.generated_tokens,
        "time_to_first_token_ms": s.time_to_first_token.as_secs_f64() * 1e3,
        "prompt_tokens_per_second": s.prompt_tokens_per_second,
        "generation_tokens_per_second": s.generation_tokens_per_second,
        "stop_reason": format!("{:?}", s.stop_reason),
    })
}

fn usage(s: &GenerationStats) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.generated_tokens,
        "total_tokens": s.prompt_tokens + s.generated_tokens,
    })
}

/// The fields every OpenAI response and chunk of one request share.
#[derive(Clone)]
struct OpenAi {
    id: String,
    created: u64,
    model: String,
}

impl OpenAi {
    fn new(prefix: &str, state: &AppState) -> OpenAi {
        OpenAi {
            id: next_id(prefix),
            created: now(),
            model: state.model_name.clone(),
        }
    }

    /// `{"id", "object", "created", "model", "choices": [choice], "usage"?}`.
    fn body(&self, object: &str, choice: Value, usage: Option<Value>) -> Value {
        let mut body = json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice],
        });
        if let Some(usage) = usage {
            body["usage"] = usage;
        }
        body
    }
}

fn error_json(message: String) -> Value {
    json!({"error": {"message": message, "type": "server_error", "param": null}})
}

/// `POST /api/generate` with `Accept: text/event-stream` (the shape
/// shimmy-style clients read): `{"prompt", "stream", "max_tokens", ...}`;
/// streams one `data:` line per piece and a last one with `"done": true` and
/// the stats.
pub(crate) async fn generate_sse(state: Arc<AppState>, body: Bytes) -> Response {
    let (req, rx) = match begin(&state, "/api/generate", Api::Generate, &body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let model = state.model_name.clone();
    if req.stream {
        return sse(
            rx,
            move |e| match e {
                GenEvent::Piece(p) => json!({
                    "model": model, "response": p.text, "token": p.token.0,
                    "at_ms": p.at.as_secs_f64() * 1e3, "done": false,
                }),
                GenEvent::Done(s) => json!({
                    "model": model, "response": "", "done": true,
                    "done_reason": finish_reason(s.stop_reason), "stats": stats_json(&s),
                }),
                GenEvent::Error(_, m) => error_json(m),
            },
            false,
        );
    }
    match collect(rx).await {
        Ok((text, s)) => Json(json!({
            "model": model, "response": text, "done": true,
            "done_reason": finish_reason(s.stop_reason), "stats": stats_json(&s),
        }))
        .into_response(),
        Err(response) => response,
    }
}

/// `POST /v1/completions` in OpenAI's format.
pub async fn completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let (req, rx) = match begin(&state, "/v1/completions", Api::Completions, &body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let ids = OpenAi::new("cmpl", &state);
    if req.stream {
        return sse(
            rx,
            move |e| match e {
                GenEvent::Piece(p) => ids.body(
                    "text_completion",
                    json!({"index": 0, "text": p.text, "finish_reason": null}),
                    None,
                ),
                GenEvent::Done(s) => ids.body(
                    "text_completion",
                    json!({"index": 0, "text": "", "finish_reason": finish_reason(s.stop_reason)}),
                    Some(usage(&s)),
                ),
                GenEvent::Error(_, m) => error_json(m),
            },
            true,
        );
    }
    match collect(rx).await {
        Ok((text, s)) => Json(ids.body(
            "text_completion",
            json!({"index": 0, "text": text, "finish_reason": finish_reason(s.stop_reason)}),
            Some(usage(&s)),
        ))
        .into_response(),
        Err(response) => response,
    }
}

/// `POST /v1/chat/completions` in OpenAI's format, with the model's own
/// chat template; tool calls in `message.tool_calls` (streamed: in the
/// last delta before `finish_reason: "tool_calls"`).
pub async fn chat(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let (req, rx) = match begin(&state, "/v1/chat/completions", Api::Chat, &body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let ids = OpenAi::new("chatcmpl", &state);
    let format = req.tools.as_ref().map(|t| t.format);
    if req.stream {
        let mut first = true;
        let mut calls = format.map(ToolStream::new);
        let chunk = move |delta: Value, finish: Option<&str>, usage: Option<Value>| {
            ids.body(
                "chat.completion.chunk",
                json!({"index": 0, "delta": delta, "finish_reason": finish}),
                usage,
            )
        };
        return sse(
            rx,
            move |e| match e {
                GenEvent::Piece(p) => {
                    let text = match calls.as_mut() {
                        Some(c) => c.push(&p.text).unwrap_or_default(),
                        None => p.text,
                    };
                    // The first chunk also names the role, as OpenAI's do.
                    let delta = if std::mem::take(&mut first) {
                        json!({"role": "assistant", "content": text})
                    } else {
                        json!({"content": text})
                    };
                    chunk(delta, None, None)
                }
                GenEvent::Done(s) => {
                    let reply = calls.take().map(ToolStream::finish).unwrap_or_default();
                    let mut delta = json!({});
                    if !reply.content.is_empty() {
                        delta["content"] = json!(reply.content);
                    }
                    if !reply.tool_calls.is_empty() {
                        delta["tool_calls"] = tools::calls_json(&reply.tool_calls, true);
                    }
                    let finish = chat_finish_reason(&s, &reply);
                    // The calls and the end in one chunk (clients join
                    // deltas, so one or two chunks read the same).
                    chunk(delta, Some(finish), Some(usage(&s)))
                }
                GenEvent::Error(_, m) => error_json(m),
            },
            true,
        );
    }
    match collect(rx).await {
        Ok((text, s)) => {
            let reply = match format {
                Some(f) => f.parse(&text),
                None => ParsedReply {
                    content: text,
                    tool_calls: Vec::new(),
                },
            };
            let mut message = json!({"role": "assistant", "content": reply.content});
            if !reply.tool_calls.is_empty() {
                if reply.content.is_empty() {
                    message["content"] = Value::Null;
                }
                message["tool_calls"] = tools::calls_json(&reply.tool_calls, false);
            }
            Json(ids.body(
                "chat.completion",
                json!({
                    "index": 0,
                    "message": message,
                    "finish_reason": chat_finish_reason(&s, &reply),
                }),
                Some(usage(&s)),
            ))
            .into_response()
        }
        Err(response) => response,
    }
}

/// `tool_calls` when the answer called tools (and was not cut short).
fn chat_finish_reason(s: &GenerationStats, reply: &ParsedReply) -> &'static str {
    match finish_reason(s.stop_reason) {
        "stop" if !reply.tool_calls.is_empty() => "tool_calls",
        other => other,
    }
}

/// `GET /v1/models`: the one model served, in OpenAI's format.
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    let created = std::fs::metadata(state.model.path())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Json(json!({
        "object": "list",
        "data": [{"id": state.model_name, "object": "model", "created": created, "owned_by": "llama-safe"}],
    }))
    .into_response()
}

/// `GET /health`.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let s = state.engine.stats();
    Json(json!({
        "status": "ok",
        "model": state.model_name,
        "parallel": state.engine.config().n_parallel(),
        "active": s.active,
        "queued": s.queued,
        "kv_cells": s.kv_cells,
        "kv_cells_used": s.kv_cells_used,
    }))
    .into_response()
}

/// `GET /metrics` in Prometheus's text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state
        .metrics
        .render(state.engine.config().n_parallel(), &state.engine.stats());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
