//! Ollama's API, as Ollama documents it: `POST /api/generate` and
//! `POST /api/chat` streaming newline-delimited JSON (or one object with
//! `"stream": false`), sampling in `options` (`num_predict`, `temperature`,
//! `top_p`, `top_k`, `seed`, `stop`, `repeat_penalty`), `GET /api/tags`,
//! `POST /api/show`. `/api/generate` with `Accept: text/event-stream` keeps
//! the server-sent-events form that shimmy-style clients read.

use super::api::{Api, ApiError};
use super::generation::{finish_reason, GenEvent};
use super::handlers::{begin, collect, generate_sse, stats_json};
use super::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use llama_safe::GenerationStats;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// `POST /api/generate`.
pub async fn generate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if wants_sse(&headers) {
        return generate_sse(state, body).await;
    }
    run(state, "/api/generate", Api::Generate, body).await
}

/// `POST /api/chat`.
pub async fn chat(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    run(state, "/api/chat", Api::OllamaChat, body).await
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// One generation in Ollama's shape, streamed as NDJSON or whole.
async fn run(state: Arc<AppState>, endpoint: &'static str, api: Api, body: Bytes) -> Response {
    let (req, rx) = match begin(&state, endpoint, api, &body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let shape = Shape {
        model: state.model_name.clone(),
        chat: api == Api::OllamaChat,
    };
    if req.stream {
        return ndjson(rx, shape);
    }
    match collect(rx).await {
        Ok((text, stats)) => Json(shape.done(text, &stats)).into_response(),
        Err(response) => response,
    }
}

/// How a chunk looks: generate's `response` or chat's `message`.
struct Shape {
    model: String,
    chat: bool,
}

impl Shape {
    fn base(&self, text: String, done: bool) -> Value {
        let mut v =
            json!({"model": self.model, "created_at": rfc3339(SystemTime::now()), "done": done});
        if self.chat {
            v["message"] = json!({"role": "assistant", "content": text});
        } else {
            v["response"] = json!(text);
        }
        v
    }

    fn done(&self, text: String, s: &GenerationStats) -> Value {
        let ns = |d: Duration| d.as_nanos() as u64;
        let mut v = self.base(text, true);
        let fields = json!({
            "done_reason": finish_reason(s.stop_reason),
            "total_duration": ns(s.prompt_time + s.generation_time),
            "load_duration": 0,
            "prompt_eval_count": s.prompt_tokens,
            "prompt_eval_duration": ns(s.prompt_time),
            "eval_count": s.generated_tokens,
            "eval_duration": ns(s.generation_time),
            // This server's exact figures, as the SSE form also gives them.
            "stats": stats_json(s),
        });
        if let (Some(v), Some(fields)) = (v.as_object_mut(), fields.as_object()) {
            v.extend(fields.clone());
        }
        v
    }
}

fn ndjson(rx: mpsc::Receiver<GenEvent>, shape: Shape) -> Response {
    let lines = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).map(
        move |event| {
            let value = match event {
                GenEvent::Piece(p) => shape.base(p.text, false),
                GenEvent::Done(stats) => shape.done(String::new(), &stats),
                GenEvent::Error(_, message) => json!({"error": message}),
            };
            let mut line = value.to_string();
            line.push('\n');
            Ok::<_, Infallible>(Bytes::from(line))
        },
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// The model's details as Ollama lists them.
fn details(state: &AppState) -> Value {
    let m = &state.model;
    let quant = m
        .description()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": m.architecture(),
        "families": [m.architecture()],
        "parameter_size": format!("{:.2}B", m.n_params() as f64 / 1e9),
        "quantization_level": quant,
    })
}

fn modified_at(state: &AppState) -> String {
    let mtime = std::fs::metadata(state.model.path())
        .and_then(|m| m.modified())
        .unwrap_or(UNIX_EPOCH);
    rfc3339(mtime)
}

/// `GET /api/tags`: the one model served.
pub async fn tags(State(state): State<Arc<AppState>>) -> Response {
    let size = std::fs::metadata(state.model.path()).map_or(0, |m| m.len());
    Json(json!({"models": [{
        "name": state.model_name,
        "model": state.model_name,
        "modified_at": modified_at(&state),
        "size": size,
        // Not the file's SHA-256 (hashing a large model at start would take
        // minutes): a digest of its path, size and modification time.
        "digest": state.model_digest,
        "details": details(&state),
    }]}))
    .into_response()
}

/// `POST /api/show` `{"model": name}`: template, details, metadata.
pub async fn show(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let name = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("model")
            .or(v.get("name"))
            .and_then(Value::as_str)
            .map(String::from)
    });
    match name {
        Some(n) if n == state.model_name || n == "default" => {}
        Some(n) => {
            return ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!(
                    "model {n:?} not found; this server serves {:?}",
                    state.model_name
                ),
                param: Some("model"),
            }
            .into_response()
        }
        None => return ApiError::bad("model", "`model` is required").into_response(),
    }
    let m = &state.model;
    Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": m.chat_template().unwrap_or_default(),
        "details": details(&state),
        "model_info": {
            "general.architecture": m.architecture(),
            "general.parameter_count": m.n_params(),
            "general.file_type": m.description(),
            format!("{}.context_length", m.architecture()): m.n_ctx_train(),
            format!("{}.embedding_length", m.architecture()): m.n_embd(),
            format!("{}.block_count", m.architecture()): m.n_layer(),
            format!("{}.expert_count", m.architecture()): m.n_expert(),
        },
        "modified_at": modified_at(&state),
    }))
    .into_response()
}

/// `2026-11-22T23:05:01.123Z` (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from(t)
        .format(FORMAT)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(super::rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_388_701_123);
        assert_eq!(super::rfc3339(t), "2026-11-22T23:05:01.123Z");
    }
}
