//! Starts one generation on the engine and hands its events to the async
//! side through a bounded channel. When the client goes away the channel
//! closes, the request is cancelled and the engine frees its KV cells.

use super::api::{ApiError, GenRequest};
use super::tools;
use super::AppState;
use axum::http::StatusCode;
use llama_safe::chat::ToolCallFormat;
use llama_safe::engine::Request;
use llama_safe::{Error, Event, GenerateOptions, GenerationStats, Piece, StopReason, Tokenize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the blocking side sends.
#[derive(Debug)]
pub enum GenEvent {
    /// A piece of text.
    Piece(Piece),
    /// The end.
    Done(GenerationStats),
    /// Generation failed after it started (or, queued, never started:
    /// 503 when the server is shutting down).
    Error(StatusCode, String),
}

/// OpenAI's `finish_reason` for a stop reason.
pub fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::MaxTokens => "length",
        _ => "stop",
    }
}

/// Applies the chat template and tokenizes on a blocking thread (a long
/// prompt takes seconds to tokenize; the async workers must stay free),
/// checks the prompt against the context, and submits it to the engine
/// (429 when its queue is full). Events are forwarded to the returned
/// receiver; when the client goes away the receiver is dropped, the handle
/// with it, and the engine frees the sequence at its next step.
pub async fn start(
    state: &Arc<AppState>,
    req: &GenRequest,
) -> Result<mpsc::Receiver<GenEvent>, ApiError> {
    let n_ctx = state.n_ctx() as usize;
    let param = if req.messages.is_some() {
        "messages"
    } else {
        "prompt"
    };
    // Cheap first: no text longer than this can fit, whatever its tokens.
    let bytes = match &req.messages {
        Some(messages) => messages.iter().map(|m| m.content.len()).sum(),
        None => req.prompt.len(),
    };
    if bytes > n_ctx * state.model.max_token_bytes() {
        return Err(ApiError::bad(
            param,
            format!("the prompt is {bytes} bytes; the context holds {n_ctx} tokens"),
        ));
    }
    let tokens = {
        let state = state.clone();
        let req = req.clone();
        tokio::task::spawn_blocking(move || {
            let model = &state.model;
            let prompt = match (&req.messages, &req.tools) {
                (Some(messages), Some(t)) if t.format == ToolCallFormat::Generic => model
                    .apply_chat_template(
                        &tools::with_generic_instructions(messages, &t.tools),
                        true,
                    ),
                (Some(messages), Some(t)) => {
                    model.apply_chat_template_with_tools(messages, &t.tools, true)
                }
                (Some(messages), None) => model.apply_chat_template(messages, true),
                (None, _) => Ok(req.prompt.clone()),
            }
            .map_err(|e| ApiError::bad("messages", e.to_string()))?;
            // The template can make the prompt far longer than the
            // messages: check it again before tokenizing it.
            if prompt.len() > n_ctx * state.model.max_token_bytes() {
                return Err(ApiError::bad(
                    param,
                    format!(
                        "the rendered prompt is {} bytes; the context holds {n_ctx} tokens",
                        prompt.len()
                    ),
                ));
            }
            model
                .tokenize(&prompt, Tokenize::CHAT)
                .map_err(|e| ApiError::bad(param, e.to_string()))
        })
        .await
        .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??
    };
    if tokens.len() >= n_ctx {
        return Err(ApiError::bad(
            param,
            format!(
                "the prompt is {} tokens; the context holds {n_ctx} (prompt and answer together)",
                tokens.len()
            ),
        ));
    }
    // The answer gets what the context has left, at most max_tokens.
    let options = GenerateOptions::default()
        .with_max_tokens(req.max_tokens.min((n_ctx - tokens.len()) as u32))
        .with_sampling(req.sampling.clone())
        .with_stop(req.stop.clone());
    // Submitting checks the sampling options by building a sampler (a
    // grammar takes up to its budget to build): off the async workers.
    let engine = state.clone();
    let handle =
        tokio::task::spawn_blocking(move || engine.engine.submit(Request::new(tokens, options)))
            .await
            .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError::from_error(param, &e))?;
    let (tx, rx) = mpsc::channel(32);
    let state = state.clone();
    tokio::spawn(async move {
        while let Some(event) = handle.recv_async().await {
            let event = match event {
                // A token that ends inside a UTF-8 character has no text
                // yet: nothing to send.
                Ok(Event::Piece(p)) if p.text.is_empty() => continue,
                Ok(Event::Piece(p)) => GenEvent::Piece(p),
                Ok(Event::Done(stats)) => {
                    let m = &state.metrics;
                    m.tokens_generated
                        .fetch_add(stats.generated_tokens as u64, Ordering::Relaxed);
                    m.prompt_tokens
                        .fetch_add(stats.prompt_tokens as u64, Ordering::Relaxed);
                    m.ttft.observe(stats.time_to_first_token.as_secs_f64());
                    m.tokens_per_second
                        .observe(stats.generation_tokens_per_second);
                    GenEvent::Done(stats)
                }
                // By kind: a stopping server is 503; the request's own
                // grammar too ambiguous to follow (response_format, tools,
                // format) is its fault, 400; the rest ours, 500.
                Err(e) => {
                    let status = ApiError::from_error(param, &e).status;
                    let message = match e.kind() {
                        llama_safe::ErrorKind::Cancelled => "the server is shutting down".into(),
                        _ => describe(&e),
                    };
                    GenEvent::Error(status, message)
                }
            };
            if tx.send(event).await.is_err() {
                // The client is gone: dropping the handle cancels the request.
                break;
            }
        }
    });
    Ok(rx)
}

fn describe(e: &Error) -> String {
    format!("generation failed: {e}")
}
