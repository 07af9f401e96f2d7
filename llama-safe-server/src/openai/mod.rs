//! OpenAI's API: `POST /v1/chat/completions` (tools, thinking apart,
//! log-probabilities), `POST /v1/completions` (`GET /v1/models` is in
//! `listing`).

use crate::error::ApiError;
use crate::generation::{self, finish_reason, json_event, sse, GenEvent};
use crate::reply::ReplyStream;
use crate::request::Api;
use crate::tools;
use crate::types::openai::{
    ChatChoice, ChatCompletion, ChatLogprobs, ChatReply, Completion, CompletionChoice,
    CompletionLogprobs, TokenLogprob, TopLogprob, Usage,
};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llama_safe::{GenerationStats, LlamaModel, Piece, Token};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `prefixN`, N counting up from 1 over the process's life.
pub(crate) fn next_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn usage(s: &GenerationStats) -> Usage {
    Usage {
        prompt_tokens: s.prompt_tokens,
        completion_tokens: s.generated_tokens,
        total_tokens: s.prompt_tokens + s.generated_tokens,
    }
}

/// An error met after a stream began, as its last event.
pub(crate) fn error_event(message: String) -> SseEvent {
    json_event(&ApiError::status(axum::http::StatusCode::INTERNAL_SERVER_ERROR, message).body())
}

/// The fields every response and chunk of one request share.
#[derive(Clone)]
struct Ids {
    id: String,
    created: u64,
    model: String,
}

impl Ids {
    fn new(prefix: &str, state: &AppState) -> Ids {
        Ids {
            id: next_id(&format!("{prefix}-")),
            created: now(),
            model: state.model_name.clone(),
        }
    }

    fn completion(&self, choice: CompletionChoice, usage: Option<Usage>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![choice],
            usage,
        }
    }

    fn chat(&self, object: &str, choice: ChatChoice, usage: Option<Usage>) -> ChatCompletion {
        ChatCompletion {
            id: self.id.clone(),
            object: object.into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![choice],
            usage,
        }
    }
}

/// A token's text (lossy where a character spans tokens) and bytes.
fn token_text(model: &LlamaModel, token: Token) -> (String, Vec<u8>) {
    let bytes = model.token_bytes(token, false).unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// A piece's log-probabilities in the chat format.
fn chat_logprob(model: &LlamaModel, piece: &Piece) -> Option<TokenLogprob> {
    let lp = piece.logprob.as_ref()?;
    let (token, bytes) = token_text(model, piece.token);
    Some(TokenLogprob {
        token,
        logprob: lp.logprob,
        bytes,
        top_logprobs: lp
            .top
            .iter()
            .map(|&(t, logprob)| {
                let (token, bytes) = token_text(model, t);
                TopLogprob {
                    token,
                    logprob,
                    bytes,
                }
            })
            .collect(),
    })
}

/// Pieces' log-probabilities in the legacy completions format; offsets
/// count from `offset`.
fn completion_logprobs(model: &LlamaModel, pieces: &[Piece], offset: usize) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    let mut at = offset;
    for p in pieces {
        let Some(lp) = &p.logprob else { continue };
        let (token, _) = token_text(model, p.token);
        out.text_offset.push(at);
        at += token.len();
        out.tokens.push(token);
        out.token_logprobs.push(lp.logprob);
        out.top_logprobs.push(
            lp.top
                .iter()
                .map(|&(t, logprob)| (token_text(model, t).0, logprob))
                .collect(),
        );
    }
    out
}

/// `POST /v1/completions`.
pub async fn completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let (req, started) =
        match generation::begin(&state, "/v1/completions", Api::Completions, &body).await {
            Ok(ok) => ok,
            Err(response) => return response,
        };
    let ids = Ids::new("cmpl", &state);
    let model = state.model.clone();
    let with_logprobs = req.logprobs.is_some();
    if req.stream {
        let mut offset = 0;
        return sse(
            started.rx,
            move |e| match e {
                GenEvent::Piece(p) => {
                    let logprobs = with_logprobs
                        .then(|| completion_logprobs(&model, std::slice::from_ref(&p), offset));
                    offset += p.text.len();
                    let choice = CompletionChoice {
                        index: 0,
                        text: p.text,
                        finish_reason: None,
                        logprobs,
                    };
                    vec![json_event(&ids.completion(choice, None))]
                }
                GenEvent::Done(s) => {
                    let choice = CompletionChoice {
                        index: 0,
                        text: String::new(),
                        finish_reason: Some(finish_reason(s.stop_reason).into()),
                        logprobs: None,
                    };
                    vec![json_event(&ids.completion(choice, Some(usage(&s))))]
                }
                GenEvent::Error(_, m) => vec![error_event(m)],
            },
            true,
        );
    }
    match generation::collect(started.rx).await {
        Ok(c) => {
            let choice = CompletionChoice {
                index: 0,
                logprobs: with_logprobs.then(|| completion_logprobs(&model, &c.logprobs, 0)),
                text: c.text,
                finish_reason: Some(finish_reason(c.stats.stop_reason).into()),
            };
            Json(ids.completion(choice, Some(usage(&c.stats)))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/chat/completions`, with the model's own chat template; tool
/// calls in `message.tool_calls` (streamed: in the last delta before
/// `finish_reason: "tool_calls"`); thinking in `reasoning_content`.
pub async fn chat(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let (req, started) =
        match generation::begin(&state, "/v1/chat/completions", Api::Chat, &body).await {
            Ok(ok) => ok,
            Err(response) => return response,
        };
    let ids = Ids::new("chatcmpl", &state);
    let model = state.model.clone();
    let with_logprobs = req.logprobs.is_some();
    let reply = ReplyStream::new(&req, state.thinks(), started.opens_thinking);
    if req.stream {
        let mut first = true;
        let mut reply = Some(reply);
        let chunk = move |delta: ChatReply,
                          finish: Option<&str>,
                          logprobs: Option<ChatLogprobs>,
                          usage: Option<Usage>| {
            let choice = ChatChoice {
                index: 0,
                message: None,
                delta: Some(delta),
                finish_reason: finish.map(String::from),
                logprobs,
            };
            json_event(&ids.chat("chat.completion.chunk", choice, usage))
        };
        return sse(
            started.rx,
            move |e| match e {
                GenEvent::Piece(p) => {
                    let split = reply.as_mut().map(|r| r.push(&p.text)).unwrap_or_default();
                    let logprobs = with_logprobs.then(|| ChatLogprobs {
                        content: chat_logprob(&model, &p).into_iter().collect(),
                    });
                    if split.is_empty() && logprobs.is_none() {
                        return Vec::new();
                    }
                    // The first chunk also names the role, as OpenAI's do.
                    let delta = ChatReply {
                        role: std::mem::take(&mut first).then(|| "assistant".into()),
                        content: (!split.content.is_empty()).then_some(split.content),
                        reasoning_content: (!split.reasoning.is_empty()).then_some(split.reasoning),
                        tool_calls: Vec::new(),
                    };
                    vec![chunk(delta, None, logprobs, None)]
                }
                GenEvent::Done(s) => {
                    let end = reply.take().map(ReplyStream::finish).unwrap_or_default();
                    let finish = chat_finish_reason(&s, !end.tool_calls.is_empty());
                    let delta = ChatReply {
                        role: std::mem::take(&mut first).then(|| "assistant".into()),
                        content: (!end.content.is_empty()).then_some(end.content),
                        reasoning_content: (!end.reasoning.is_empty()).then_some(end.reasoning),
                        tool_calls: tools::calls_out(&end.tool_calls, true),
                    };
                    // The calls and the end in one chunk (clients join
                    // deltas, so one or two chunks read the same).
                    vec![chunk(delta, Some(finish), None, Some(usage(&s)))]
                }
                GenEvent::Error(_, m) => vec![error_event(m)],
            },
            true,
        );
    }
    match generation::collect(started.rx).await {
        Ok(c) => {
            let end = reply.whole(&c.text);
            let message = ChatReply {
                role: Some("assistant".into()),
                content: (end.tool_calls.is_empty() || !end.content.is_empty())
                    .then_some(end.content),
                reasoning_content: (!end.reasoning.is_empty()).then_some(end.reasoning),
                tool_calls: tools::calls_out(&end.tool_calls, false),
            };
            let choice = ChatChoice {
                index: 0,
                finish_reason: Some(
                    chat_finish_reason(&c.stats, !message.tool_calls.is_empty()).into(),
                ),
                message: Some(message),
                delta: None,
                logprobs: with_logprobs.then(|| ChatLogprobs {
                    content: c
                        .logprobs
                        .iter()
                        .filter_map(|p| chat_logprob(&model, p))
                        .collect(),
                }),
            };
            Json(ids.chat("chat.completion", choice, Some(usage(&c.stats)))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `tool_calls` when the answer called tools (and was not cut short).
fn chat_finish_reason(s: &GenerationStats, called: bool) -> &'static str {
    match finish_reason(s.stop_reason) {
        "stop" if called => "tool_calls",
        other => other,
    }
}
