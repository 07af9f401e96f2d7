//! Starts one generation on the engine and hands its events to the async
//! side through a bounded channel. When the client goes away the channel
//! closes, the request is cancelled and the engine frees its KV cells.

use crate::error::ApiError;
use crate::request::{self, Api, GenRequest};
use crate::AppState;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use llama_safe::chat::{ReasoningSplitter, TemplateOptions};
use llama_safe::engine::Request;
use llama_safe::{Error, Event, GenerateOptions, GenerationStats, Piece, StopReason, Tokenize};
use std::convert::Infallible;
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

/// A generation under way.
pub struct Started {
    /// Its events.
    pub rx: mpsc::Receiver<GenEvent>,
    /// The prompt opened a thinking block: the answer starts in it.
    pub opens_thinking: bool,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
}

/// Applies the chat template and tokenizes on a blocking thread (a long
/// prompt takes seconds to tokenize; the async workers must stay free),
/// checks the prompt against the context, and submits it to the engine
/// (429 when its queue is full). Events are forwarded to the returned
/// receiver; when the client goes away the receiver is dropped, the handle
/// with it, and the engine frees the sequence at its next step.
pub async fn start(state: &Arc<AppState>, req: &GenRequest) -> Result<Started, ApiError> {
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
    if req.think == Some(true) && !state.thinks() {
        return Err(ApiError::bad(
            "think",
            format!(
                "the model {:?} does not think (its chat template has no thinking block)",
                state.model_name
            ),
        ));
    }
    let (prompt, opens_thinking) = {
        let state = state.clone();
        let req = req.clone();
        tokio::task::spawn_blocking(move || {
            let model = &state.model;
            let prompt = match &req.messages {
                Some(messages) => {
                    let mut options = TemplateOptions::default()
                        .with_tools(req.tools.map(|t| t.tools).unwrap_or_default());
                    if let Some(on) = req.think {
                        options = options.with_thinking(on);
                    }
                    model.render_chat(messages, &options).map(|p| {
                        if let Some(why) = &p.fallback {
                            state.template_fell_back(why);
                        }
                        p.text
                    })
                }
                None => Ok(req.prompt.clone()),
            }
            .map_err(|e| ApiError::bad("messages", e.to_string()))?;
            let opens_thinking = ReasoningSplitter::for_prompt(&prompt).thinking();
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
            #[cfg(feature = "mtmd")]
            if !req.media.is_empty() {
                let chunks = crate::media::tokenize(&state, &prompt, &req.media, param)?;
                return Ok((Prompt::Media(chunks), opens_thinking));
            }
            let tokens = model
                .tokenize(&prompt, Tokenize::CHAT)
                .map_err(|e| ApiError::bad(param, e.to_string()))?;
            Ok::<_, ApiError>((Prompt::Tokens(tokens), opens_thinking))
        })
        .await
        .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??
    };
    let prompt_tokens = prompt.n_tokens();
    if prompt_tokens >= n_ctx {
        return Err(ApiError::bad(
            param,
            format!(
                "the prompt is {prompt_tokens} tokens; the context holds {n_ctx} (prompt and \
                 answer together)"
            ),
        ));
    }
    // The answer gets what the context has left, at most max_tokens.
    let mut options = GenerateOptions::default()
        .with_max_tokens(req.max_tokens.min((n_ctx - prompt_tokens) as u32))
        .with_sampling(req.sampling.clone())
        .with_stop(req.stop.clone());
    if let Some(top) = req.logprobs {
        options = options.with_logprobs(top);
    }
    // Speculation where the engine has room for drafts (--spec-type): the
    // engine's source, prompt lookup where it has none, as the request
    // bounds it (`speculative.n_max`, 0: off).
    let config = state.engine.config();
    let room = config.max_draft();
    let (n_max, n_min) = req.draft.unwrap_or((room, 1));
    if room > 0 && n_max > 0 {
        let n_max = n_max.min(room);
        let spec = config
            .speculation()
            .cloned()
            // A draft model would not see the media: text lookup instead.
            .filter(|s| !(prompt.has_media() && s.draft().is_some()))
            .unwrap_or_else(llama_safe::Speculation::prompt_lookup);
        options =
            options.with_speculation(spec.with_draft_max(n_max).with_draft_min(n_min.min(n_max)));
    }
    // Submitting checks the sampling options by building a sampler (a
    // grammar takes up to its budget to build): off the async workers.
    let engine = state.clone();
    let handle =
        tokio::task::spawn_blocking(move || engine.engine.submit(prompt.request(options)?))
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
                Ok(Event::Piece(p)) if p.text.is_empty() && p.logprob.is_none() => continue,
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
                    if let Some(s) = &stats.speculation {
                        m.drafted.fetch_add(s.drafted as u64, Ordering::Relaxed);
                        m.accepted.fetch_add(s.accepted as u64, Ordering::Relaxed);
                    }
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
    Ok(Started {
        rx,
        opens_thinking,
        prompt_tokens,
    })
}

/// A prompt ready for the engine: tokens, or chunks with media.
enum Prompt {
    Tokens(Vec<llama_safe::Token>),
    #[cfg(feature = "mtmd")]
    Media(llama_safe::media::MediaChunks),
}

impl Prompt {
    /// KV cells it takes.
    fn n_tokens(&self) -> usize {
        match self {
            Prompt::Tokens(t) => t.len(),
            #[cfg(feature = "mtmd")]
            Prompt::Media(c) => c.n_tokens(),
        }
    }

    fn has_media(&self) -> bool {
        !matches!(self, Prompt::Tokens(_))
    }

    /// The engine's request.
    fn request(self, options: GenerateOptions) -> llama_safe::Result<Request> {
        match self {
            Prompt::Tokens(t) => Ok(Request::new(t, options)),
            #[cfg(feature = "mtmd")]
            Prompt::Media(c) => Request::with_media(c, options),
        }
    }
}

fn describe(e: &Error) -> String {
    format!("generation failed: {e}")
}

/// Longest a request body may take to check (its schemas converted).
pub(crate) const PARSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Parses the body off the async workers (schemas become grammars:
/// bounded work, but not for them), within [`PARSE_DEADLINE`]. The
/// deadline stops the conversion itself too, so no thread goes on
/// converting for a request that was answered.
pub(crate) async fn parse_body(
    state: &Arc<AppState>,
    api: Api,
    body: &Bytes,
) -> Result<GenRequest, ApiError> {
    let state = state.clone();
    let body = body.clone();
    let deadline = std::time::Instant::now() + PARSE_DEADLINE;
    let parsing = tokio::task::spawn_blocking(move || {
        let limits = request::Limits {
            state: &state,
            n_ctx: state.n_ctx(),
            n_vocab: state.model.n_vocab(),
            tool_format: state.model.tool_call_format(),
        };
        llama_safe::grammar::with_deadline(deadline, || request::parse(&body, api, limits))
    });
    tokio::time::timeout(PARSE_DEADLINE, parsing)
        .await
        .map_err(|_| {
            ApiError::status(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the request took over {PARSE_DEADLINE:?} to check"),
            )
        })?
        .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// Starts `req` (made by `make`); counts the request under `endpoint`.
pub(crate) async fn begin_with<F>(
    state: &Arc<AppState>,
    endpoint: &'static str,
    make: F,
) -> Result<(GenRequest, Started), ApiError>
where
    F: std::future::Future<Output = Result<GenRequest, ApiError>>,
{
    let started = async {
        let req = make.await?;
        let started = start(state, &req).await?;
        Ok::<_, ApiError>((req, started))
    }
    .await;
    state.metrics.request(
        endpoint,
        started.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200),
    );
    started
}

/// Parses the body of `api` and starts the generation; counts the request.
pub(crate) async fn begin(
    state: &Arc<AppState>,
    endpoint: &'static str,
    api: Api,
    body: &Bytes,
) -> Result<(GenRequest, Started), Response> {
    begin_with(state, endpoint, parse_body(state, api, body))
        .await
        .map_err(IntoResponse::into_response)
}

/// A whole answer, for a non-streaming response.
pub(crate) struct Collected {
    /// The text.
    pub text: String,
    /// The pieces that carry log-probabilities (when asked for).
    pub logprobs: Vec<Piece>,
    /// The figures.
    pub stats: GenerationStats,
}

/// Collects a whole answer.
pub(crate) async fn collect(mut rx: mpsc::Receiver<GenEvent>) -> Result<Collected, ApiError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            GenEvent::Piece(p) => {
                text.push_str(&p.text);
                if p.logprob.is_some() {
                    logprobs.push(p);
                }
            }
            GenEvent::Done(stats) => {
                return Ok(Collected {
                    text,
                    logprobs,
                    stats,
                })
            }
            GenEvent::Error(status, message) => return Err(ApiError::status(status, message)),
        }
    }
    Err(ApiError::status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "generation ended without stats",
    ))
}

/// Turns generation events into server-sent events with `render` (which
/// may skip one, or give several), then `[DONE]` if asked.
pub(crate) fn sse<F>(rx: mpsc::Receiver<GenEvent>, mut render: F, done_marker: bool) -> Response
where
    F: FnMut(GenEvent) -> Vec<SseEvent> + Send + 'static,
{
    let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
        .flat_map(move |e| stream::iter(render(e).into_iter().map(Ok::<_, Infallible>)));
    let tail = stream::iter(done_marker.then(|| Ok(SseEvent::default().data("[DONE]"))));
    let body: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        Box::pin(events.chain(tail));
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// An SSE event whose data is `value` as JSON.
pub(crate) fn json_event(value: &impl serde::Serialize) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(value).unwrap_or_default())
}
