//! Anthropic's Messages API: `POST /v1/messages`, whole or streamed as
//! Anthropic's named server-sent events, with tools (`tool_use` and
//! `tool_result` blocks) and thinking blocks; errors in Anthropic's shape.

mod convert;

use crate::error::ApiError;
use crate::generation::{self, sse, GenEvent};
use crate::reply::{Reply, ReplyStream};
use crate::types::anthropic::{
    Block, Delta, DeltaUsage, ErrorBody, ErrorResponse, MessageDeltaBody, MessageResponse,
    MessageUsage, StreamEvent,
};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llama_safe::{GenerationStats, StopReason};
use std::sync::Arc;

/// `POST /v1/messages`.
pub async fn messages(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let make = {
        let state = state.clone();
        async move {
            // Tool schemas become grammars: off the async workers, and
            // stopped at the parse deadline.
            let deadline = std::time::Instant::now() + generation::PARSE_DEADLINE;
            tokio::task::spawn_blocking(move || {
                llama_safe::grammar::with_deadline(deadline, || convert::request(&state, &body))
            })
            .await
            .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        }
    };
    let (req, started) = match generation::begin_with(&state, "/v1/messages", make).await {
        Ok(ok) => ok,
        Err(e) => return error_response(e),
    };
    let message = MessageResponse {
        id: crate::openai::next_id("msg_"),
        kind: "message".into(),
        role: "assistant".into(),
        content: Vec::new(),
        model: state.model_name.clone(),
        stop_reason: None,
        stop_sequence: None,
        usage: MessageUsage {
            input_tokens: started.prompt_tokens,
            output_tokens: 0,
        },
    };
    let reply = ReplyStream::new(&req, state.thinks(), started.opens_thinking);
    if req.stream {
        let mut stream = Stream {
            reply: Some(reply),
            open: None,
            next_index: 0,
        };
        let mut head = Some(message);
        return sse(
            started.rx,
            move |e| {
                let mut out = Vec::new();
                if let Some(message) = head.take() {
                    out.push(event(StreamEvent::MessageStart { message }));
                }
                match e {
                    GenEvent::Piece(p) => {
                        let split = stream
                            .reply
                            .as_mut()
                            .map(|r| r.push(&p.text))
                            .unwrap_or_default();
                        stream.text(&mut out, BlockKind::Thinking, split.reasoning);
                        stream.text(&mut out, BlockKind::Text, split.content);
                    }
                    GenEvent::Done(s) => stream.end(&mut out, &s),
                    GenEvent::Error(status, message) => out.push(event(StreamEvent::Error {
                        error: error_body(status, message),
                    })),
                }
                out
            },
            false,
        );
    }
    match generation::collect(started.rx).await {
        Ok(c) => {
            let reply = reply.whole(&c.text);
            let stop_reason = stop_reason(&c.stats, !reply.tool_calls.is_empty());
            let mut message = message;
            message.content = blocks(reply);
            message.stop_reason = Some(stop_reason.into());
            message.usage = MessageUsage {
                input_tokens: c.stats.prompt_tokens,
                output_tokens: c.stats.generated_tokens,
            };
            Json(message).into_response()
        }
        Err(e) => error_response(e),
    }
}

/// A whole reply as blocks: thinking, text, then the calls.
fn blocks(reply: Reply) -> Vec<Block> {
    let mut blocks = Vec::new();
    if !reply.reasoning.is_empty() {
        blocks.push(Block::Thinking {
            thinking: reply.reasoning,
            signature: String::new(),
        });
    }
    if !reply.content.is_empty() || reply.tool_calls.is_empty() {
        blocks.push(Block::Text {
            text: reply.content,
        });
    }
    blocks.extend(reply.tool_calls.into_iter().map(|c| Block::ToolUse {
        id: c.id,
        name: c.name,
        input: c.arguments,
    }));
    blocks
}

/// Anthropic's stop reason.
fn stop_reason(s: &GenerationStats, called: bool) -> &'static str {
    match s.stop_reason {
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopString => "stop_sequence",
        _ if called => "tool_use",
        _ => "end_turn",
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Thinking,
    Text,
}

/// Where a stream is: the block open, and the next block's index.
struct Stream {
    reply: Option<ReplyStream>,
    open: Option<(BlockKind, usize)>,
    next_index: usize,
}

impl Stream {
    /// Adds `text` to a block of `kind`, opening it (and closing another)
    /// first when needed.
    fn text(&mut self, out: &mut Vec<SseEvent>, kind: BlockKind, text: String) {
        if text.is_empty() {
            return;
        }
        let index = match self.open {
            Some((k, index)) if k == kind => index,
            _ => {
                self.close(out);
                let start = match kind {
                    BlockKind::Thinking => Block::Thinking {
                        thinking: String::new(),
                        signature: String::new(),
                    },
                    BlockKind::Text => Block::Text {
                        text: String::new(),
                    },
                };
                self.start(out, kind, start)
            }
        };
        let delta = match kind {
            BlockKind::Thinking => Delta::ThinkingDelta { thinking: text },
            BlockKind::Text => Delta::TextDelta { text },
        };
        out.push(event(StreamEvent::ContentBlockDelta { index, delta }));
    }

    fn start(&mut self, out: &mut Vec<SseEvent>, kind: BlockKind, block: Block) -> usize {
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        out.push(event(StreamEvent::ContentBlockStart {
            index,
            content_block: block,
        }));
        index
    }

    fn close(&mut self, out: &mut Vec<SseEvent>) {
        if let Some((_, index)) = self.open.take() {
            out.push(event(StreamEvent::ContentBlockStop { index }));
        }
    }

    /// The held-back text, the calls (each a `tool_use` block whose input
    /// comes as one JSON delta), the stop reason, the end.
    fn end(&mut self, out: &mut Vec<SseEvent>, s: &GenerationStats) {
        let end = self
            .reply
            .take()
            .map(ReplyStream::finish)
            .unwrap_or_default();
        self.text(out, BlockKind::Thinking, end.reasoning);
        self.text(out, BlockKind::Text, end.content);
        if self.next_index == 0 && end.tool_calls.is_empty() {
            // Anthropic's answers always hold a block, if only empty text.
            self.start(
                out,
                BlockKind::Text,
                Block::Text {
                    text: String::new(),
                },
            );
        }
        let called = !end.tool_calls.is_empty();
        for call in end.tool_calls {
            self.close(out);
            let index = self.start(
                out,
                BlockKind::Text,
                Block::ToolUse {
                    id: call.id,
                    name: call.name,
                    input: serde_json::Value::Object(Default::default()),
                },
            );
            out.push(event(StreamEvent::ContentBlockDelta {
                index,
                delta: Delta::InputJsonDelta {
                    partial_json: call.arguments.to_string(),
                },
            }));
        }
        self.close(out);
        out.push(event(StreamEvent::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason: Some(stop_reason(s, called).into()),
                stop_sequence: None,
            },
            usage: DeltaUsage {
                output_tokens: s.generated_tokens,
            },
        }));
        out.push(event(StreamEvent::MessageStop));
    }
}

/// A stream event, named by its type as Anthropic's are.
fn event(e: StreamEvent) -> SseEvent {
    let name = match &e {
        StreamEvent::MessageStart { .. } => "message_start",
        StreamEvent::ContentBlockStart { .. } => "content_block_start",
        StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
        StreamEvent::ContentBlockStop { .. } => "content_block_stop",
        StreamEvent::MessageDelta { .. } => "message_delta",
        StreamEvent::MessageStop => "message_stop",
        StreamEvent::Ping => "ping",
        StreamEvent::Error { .. } => "error",
    };
    SseEvent::default()
        .event(name)
        .data(serde_json::to_string(&e).unwrap_or_default())
}

/// Anthropic's error type for a status.
fn error_body(status: StatusCode, message: String) -> ErrorBody {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    ErrorBody {
        kind: kind.into(),
        message,
    }
}

/// An error in Anthropic's shape: `{"type": "error", "error": {...}}`.
pub(crate) fn error_response(e: ApiError) -> Response {
    let status = e.status;
    let message = match e.param {
        Some(param) if !e.message.contains(param) => format!("{param}: {}", e.message),
        _ => e.message,
    };
    let body = ErrorResponse {
        kind: "error".into(),
        error: error_body(status, message),
    };
    (status, Json(body)).into_response()
}
