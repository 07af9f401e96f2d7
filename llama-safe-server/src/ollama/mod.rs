//! Ollama's API, as Ollama documents it: `POST /api/generate` and
//! `POST /api/chat` streaming newline-delimited JSON (or one object with
//! `"stream": false`), sampling in `options` (`num_predict`, `temperature`,
//! `top_p`, `top_k`, `seed`, `stop`, `repeat_penalty`), `tools` and `think`
//! on `/api/chat`, `GET /api/tags`, `POST /api/show`. `/api/generate` with
//! `Accept: text/event-stream` keeps the server-sent-events form that
//! shimmy-style clients read.

use crate::error::ApiError;
use crate::generation::{self, finish_reason, json_event, sse, GenEvent};
use crate::openai::error_event;
use crate::reply::{Reply, ReplyStream};
use crate::request::Api;
use crate::types::ollama::{Chunk, Details, Done, Function, Message, Show, ToolCall};
use crate::types::tokens::Stats;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use llama_safe::GenerationStats;
use serde::Serialize;
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

/// One piece of the SSE form of `/api/generate`.
#[derive(Serialize)]
struct SsePiece<'a> {
    model: &'a str,
    response: String,
    token: i32,
    at_ms: f64,
    done: bool,
}

/// The last event of the SSE form.
#[derive(Serialize)]
struct SseDone<'a> {
    model: &'a str,
    response: &'a str,
    done: bool,
    done_reason: &'a str,
    stats: Stats,
}

/// `POST /api/generate` with `Accept: text/event-stream`: one `data:` line
/// per piece and a last one with `"done": true` and the stats.
async fn generate_sse(state: Arc<AppState>, body: Bytes) -> Response {
    let (req, started) =
        match generation::begin(&state, "/api/generate", Api::Generate, &body).await {
            Ok(ok) => ok,
            Err(response) => return response,
        };
    let model = state.model_name.clone();
    if req.stream {
        return sse(
            started.rx,
            move |e| match e {
                GenEvent::Piece(p) => vec![json_event(&SsePiece {
                    model: &model,
                    response: p.text,
                    token: p.token.0,
                    at_ms: p.at.as_secs_f64() * 1e3,
                    done: false,
                })],
                GenEvent::Done(s) => vec![json_event(&SseDone {
                    model: &model,
                    response: "",
                    done: true,
                    done_reason: finish_reason(s.stop_reason),
                    stats: Stats::from(&s),
                })],
                GenEvent::Error(_, m) => vec![error_event(m)],
            },
            false,
        );
    }
    match generation::collect(started.rx).await {
        Ok(c) => Json(SseDone {
            model: &model,
            response: &c.text,
            done: true,
            done_reason: finish_reason(c.stats.stop_reason),
            stats: Stats::from(&c.stats),
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// One generation in Ollama's shape, streamed as NDJSON or whole.
async fn run(state: Arc<AppState>, endpoint: &'static str, api: Api, body: Bytes) -> Response {
    let (req, started) = match generation::begin(&state, endpoint, api, &body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let shape = Shape {
        model: state.model_name.clone(),
        chat: api == Api::OllamaChat,
    };
    let reply = ReplyStream::new(&req, state.thinks(), started.opens_thinking);
    if req.stream {
        return ndjson(started.rx, shape, reply);
    }
    match generation::collect(started.rx).await {
        Ok(c) => Json(shape.done(reply.whole(&c.text), &c.stats)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// How a chunk looks: generate's `response` or chat's `message`.
struct Shape {
    model: String,
    chat: bool,
}

impl Shape {
    fn chunk(&self, reply: Reply, end: Option<Done>) -> Chunk {
        let thinking = (!reply.reasoning.is_empty()).then_some(reply.reasoning);
        let (response, message, thinking) = if self.chat {
            let message = Message {
                role: "assistant".into(),
                content: reply.content,
                thinking,
                tool_calls: reply
                    .tool_calls
                    .into_iter()
                    .map(|c| ToolCall {
                        function: Function {
                            name: c.name,
                            arguments: c.arguments,
                        },
                    })
                    .collect(),
            };
            (None, Some(message), None)
        } else {
            (Some(reply.content), None, thinking)
        };
        Chunk {
            model: self.model.clone(),
            created_at: rfc3339(SystemTime::now()),
            response,
            thinking,
            message,
            done: end.is_some(),
            end,
        }
    }

    fn done(&self, reply: Reply, s: &GenerationStats) -> Chunk {
        let ns = |d: Duration| d.as_nanos() as u64;
        self.chunk(
            reply,
            Some(Done {
                done_reason: finish_reason(s.stop_reason).into(),
                total_duration: ns(s.prompt_time + s.generation_time),
                load_duration: 0,
                prompt_eval_count: s.prompt_tokens,
                prompt_eval_duration: ns(s.prompt_time),
                eval_count: s.generated_tokens,
                eval_duration: ns(s.generation_time),
                stats: Stats::from(s),
            }),
        )
    }
}

/// `{"error": message}`, Ollama's error line in a stream.
#[derive(Serialize)]
struct ErrorLine {
    error: String,
}

fn line(value: &impl Serialize) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn ndjson(rx: mpsc::Receiver<GenEvent>, shape: Shape, reply: ReplyStream) -> Response {
    let mut reply = Some(reply);
    let lines = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
        .flat_map(move |event| {
            let lines = match event {
                GenEvent::Piece(p) => {
                    let split = reply.as_mut().map(|r| r.push(&p.text)).unwrap_or_default();
                    if split.is_empty() {
                        Vec::new()
                    } else {
                        let reply = Reply {
                            reasoning: split.reasoning,
                            content: split.content,
                            tool_calls: Vec::new(),
                        };
                        vec![line(&shape.chunk(reply, None))]
                    }
                }
                GenEvent::Done(stats) => {
                    let end = reply.take().map(ReplyStream::finish).unwrap_or_default();
                    let mut lines = Vec::new();
                    // The calls in a chunk of their own, as Ollama streams
                    // them, before the last one.
                    let rest = if end.tool_calls.is_empty() {
                        end
                    } else {
                        lines.push(line(&shape.chunk(end, None)));
                        Reply::default()
                    };
                    lines.push(line(&shape.done(rest, &stats)));
                    lines
                }
                GenEvent::Error(_, message) => vec![line(&ErrorLine { error: message })],
            };
            stream::iter(lines.into_iter().map(Ok::<_, Infallible>))
        });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// The model's details as Ollama lists them.
pub(crate) fn details(state: &AppState) -> Details {
    let m = &state.model;
    let quant = m
        .description()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    Details {
        parent_model: String::new(),
        format: "gguf".into(),
        family: m.architecture(),
        families: vec![m.architecture()],
        parameter_size: format!("{:.2}B", m.n_params() as f64 / 1e9),
        quantization_level: quant,
    }
}

/// `/api/show` of a loaded model: template, details, metadata, what it
/// can do.
pub(crate) fn show_loaded(state: &AppState) -> Json<Show> {
    let m = &state.model;
    let arch = m.architecture();
    let mut info = serde_json::Map::new();
    info.insert("general.architecture".into(), arch.clone().into());
    info.insert("general.parameter_count".into(), m.n_params().into());
    info.insert("general.file_type".into(), m.description().into());
    info.insert(format!("{arch}.context_length"), m.n_ctx_train().into());
    info.insert(format!("{arch}.embedding_length"), m.n_embd().into());
    info.insert(format!("{arch}.block_count"), m.n_layer().into());
    info.insert(format!("{arch}.expert_count"), m.n_expert().into());
    let template = m.chat_template().unwrap_or_default();
    let capabilities = capabilities(&template);
    let mtime = std::fs::metadata(m.path())
        .and_then(|meta| meta.modified())
        .unwrap_or(UNIX_EPOCH);
    Json(Show {
        modelfile: String::new(),
        parameters: String::new(),
        template,
        details: details(state),
        model_info: info,
        capabilities,
        modified_at: rfc3339(mtime),
    })
}

/// What a model with chat `template` can do, as `/api/show` lists it:
/// `completion` and `embedding` always, `tools` and `thinking` where the
/// template renders them.
pub(crate) fn capabilities(template: &str) -> Vec<String> {
    let mut out = vec!["completion".to_string(), "embedding".to_string()];
    if template.contains("tools") {
        out.push("tools".into());
    }
    if template.contains(llama_safe::chat::THINK_OPEN) {
        out.push("thinking".into());
    }
    out
}

/// The request's `model` must be the one served (or `default`).
pub(crate) fn check_model(state: &AppState, name: Option<&str>) -> Result<(), ApiError> {
    match name {
        Some(n) if state.answers_to(n) => Ok(()),
        Some(n) => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "model {n:?} not found; this server serves {:?}",
                state.model_name
            ),
            param: Some("model"),
        }),
        None => Err(ApiError::bad("model", "`model` is required")),
    }
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
