//! Runs one generation on a pooled context, on a blocking thread, and hands
//! its events to the async side through a bounded channel. When the client
//! goes away the channel closes, the generation stops at its next token and
//! the context goes back to the pool.

use super::api::{ApiError, GenRequest};
use super::AppState;
use axum::http::StatusCode;
use llama_safe::{Error, Event, GenerateOptions, GenerationStats, Piece, StopReason};
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
    /// Generation failed after it started.
    Error(String),
}

/// OpenAI's `finish_reason` for a stop reason.
pub fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::MaxTokens => "length",
        _ => "stop",
    }
}

/// Checks the prompt against the context, waits for a context (or answers
/// 429), and starts generating.
pub async fn start(
    state: &Arc<AppState>,
    req: &GenRequest,
) -> Result<mpsc::Receiver<GenEvent>, ApiError> {
    let model = state.model;
    let (prompt, param) = match &req.messages {
        Some(messages) => (
            model
                .apply_chat_template(messages, true)
                .map_err(|e| ApiError::bad("messages", e.to_string()))?,
            "messages",
        ),
        None => (req.prompt.clone(), "prompt"),
    };
    let prompt_tokens = model
        .tokenize(&prompt, true, true)
        .map_err(|e| ApiError::bad(param, e.to_string()))?
        .len();
    if prompt_tokens >= state.pool.n_ctx() as usize {
        return Err(ApiError::bad(
            param,
            format!(
                "the prompt is {prompt_tokens} tokens; the context holds {} (prompt and answer together)",
                state.pool.n_ctx()
            ),
        ));
    }
    // The answer gets what the context has left, at most max_tokens.
    let room = state.pool.n_ctx() as usize - prompt_tokens;
    let options = GenerateOptions {
        max_tokens: req.max_tokens.min(room as u32),
        sampling: req.sampling.clone(),
        stop: req.stop.clone(),
        ..GenerateOptions::default()
    };

    let mut lease = state.pool.acquire().await.map_err(|_| {
        ApiError::status(
            StatusCode::TOO_MANY_REQUESTS,
            "every context is busy and the queue is full; retry later",
        )
    })?;
    let (tx, rx) = mpsc::channel(32);
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let ctx = lease.context();
        let generation = match model.generate(ctx, &prompt, &options) {
            Ok(g) => g,
            Err(e) => {
                let _ = tx.blocking_send(GenEvent::Error(describe(&e)));
                return;
            }
        };
        let mut done = None;
        for event in generation {
            let event = match event {
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
                    done = Some(stats);
                    break;
                }
                Err(e) => GenEvent::Error(describe(&e)),
            };
            if tx.blocking_send(event).is_err() {
                // The client is gone: stop here; dropping the lease frees the context.
                return;
            }
        }
        // Free the context before the client hears the end, so a client that
        // sends its next request at once finds it free.
        drop(lease);
        if let Some(stats) = done {
            let _ = tx.blocking_send(GenEvent::Done(stats));
        }
    });
    Ok(rx)
}

fn describe(e: &Error) -> String {
    format!("generation failed: {e}")
}
