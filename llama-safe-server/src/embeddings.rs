//! `POST /v1/embeddings` (OpenAI's) and `POST /api/embed` (Ollama's):
//! pooled, unit-length vectors from a context of their own, made on first
//! use, one request at a time, with a bounded wait.

use crate::error::ApiError;
use crate::ollama::check_model;
use crate::types::ollama::{EmbedRequest, EmbedResponse};
use crate::types::openai::{
    Embedding, EmbeddingInput, EmbeddingVector, Embeddings, EmbeddingsRequest, EmbeddingsUsage,
};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use llama_safe::{ContextParams, LlamaContext, Normalize, Pooling, Token, Tokenize};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most texts in one request.
pub const MAX_INPUTS: usize = 256;
/// Most tokens of one text: the embedding context's size (at most this,
/// and at most the engine's).
pub const MAX_INPUT_TOKENS: u32 = 4096;
/// Requests that may wait for the embedding context before 429.
pub const MAX_WAITING: usize = 16;

/// The embedding context and its queue.
pub(crate) struct Embedder {
    /// One request at a time.
    turn: tokio::sync::Semaphore,
    /// Requests waiting for their turn.
    waiting: AtomicUsize,
    /// Made on first use.
    ctx: Mutex<Option<LlamaContext>>,
}

impl Default for Embedder {
    fn default() -> Self {
        Embedder {
            turn: tokio::sync::Semaphore::new(1),
            waiting: AtomicUsize::new(0),
            ctx: Mutex::new(None),
        }
    }
}

/// What one request asks for, from either API.
struct Job {
    texts: Vec<String>,
    /// Cut texts over the limit (Ollama's `truncate`) instead of refusing
    /// them.
    truncate: bool,
}

/// The vectors and the tokens read.
struct Done {
    vectors: Vec<Vec<f32>>,
    tokens: usize,
}

/// `POST /v1/embeddings`: `input` a string or a list of strings.
pub async fn openai(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let result = async {
        let req: EmbeddingsRequest = parse(&body)?;
        check_model(&state, Some(req.model.as_deref().unwrap_or("default")))?;
        if req.dimensions.is_some() {
            return Err(ApiError::bad(
                "dimensions",
                format!(
                    "`dimensions` is not supported: the model's vectors have {}",
                    state.model.n_embd_out()
                ),
            ));
        }
        let base64 = match req.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(_) => {
                return Err(ApiError::bad(
                    "encoding_format",
                    "`encoding_format` must be \"float\" or \"base64\"",
                ))
            }
        };
        let done = run(&state, job(req.input, false)?).await?;
        Ok(Embeddings {
            object: "list".into(),
            data: done
                .vectors
                .into_iter()
                .enumerate()
                .map(|(index, v)| Embedding {
                    object: "embedding".into(),
                    embedding: if base64 {
                        EmbeddingVector::Base64(base64_f32(&v))
                    } else {
                        EmbeddingVector::Float(v)
                    },
                    index,
                })
                .collect(),
            model: state.model_name.clone(),
            usage: EmbeddingsUsage {
                prompt_tokens: done.tokens,
                total_tokens: done.tokens,
            },
        })
    }
    .await;
    crate::tokens::respond(&state, "/v1/embeddings", result)
}

/// `POST /api/embed`: `input` a string or a list; `truncate` (default
/// true, as Ollama's) cuts texts longer than the context.
pub async fn ollama(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let result = async {
        let start = Instant::now();
        let req: EmbedRequest = parse(&body)?;
        check_model(&state, Some(&req.model))?;
        if req.options.as_ref().is_some_and(|o| !o.is_null()) {
            return Err(ApiError::bad(
                "options",
                "`options` do not apply to embeddings on this server",
            ));
        }
        let done = run(&state, job(req.input, req.truncate.unwrap_or(true))?).await?;
        Ok(EmbedResponse {
            model: state.model_name.clone(),
            embeddings: done.vectors,
            total_duration: start.elapsed().as_nanos() as u64,
            load_duration: 0,
            prompt_eval_count: done.tokens,
        })
    }
    .await;
    crate::tokens::respond(&state, "/api/embed", result)
}

/// A typed body, or 400 naming the field at fault.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match path.as_str() {
            "." | "" => ApiError::status(StatusCode::BAD_REQUEST, format!("the body: {inner}")),
            _ => ApiError::status(StatusCode::BAD_REQUEST, format!("`{path}`: {inner}")),
        }
    })?;
    de.end().map_err(|e| {
        ApiError::status(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}

/// The texts, checked: 1 to [`MAX_INPUTS`], none empty.
fn job(input: EmbeddingInput, truncate: bool) -> Result<Job, ApiError> {
    let texts = match input {
        EmbeddingInput::One(t) => vec![t],
        EmbeddingInput::Many(list) => list,
    };
    if texts.is_empty() {
        return Err(ApiError::bad("input", "`input` must not be an empty list"));
    }
    if texts.len() > MAX_INPUTS {
        return Err(ApiError::bad(
            "input",
            format!(
                "at most {MAX_INPUTS} texts per request, not {}",
                texts.len()
            ),
        ));
    }
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(ApiError::bad("input", format!("text {i} is empty")));
    }
    Ok(Job { texts, truncate })
}

/// Tokenizes, checks the limits, waits for the context (429 when too many
/// wait) and embeds, off the async workers.
async fn run(state: &Arc<AppState>, job: Job) -> Result<Done, ApiError> {
    let limit = MAX_INPUT_TOKENS.min(state.engine.config().n_ctx()) as usize;
    // Cheap first: no text this long can fit, whatever its tokens.
    let max_bytes = limit * state.model.max_token_bytes();
    if !job.truncate {
        if let Some(i) = job.texts.iter().position(|t| t.len() > max_bytes) {
            return Err(too_long(i, job.texts[i].len(), "bytes", limit));
        }
    }
    let embedder = &state.embedder;
    if embedder.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
        embedder.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::status(
            StatusCode::TOO_MANY_REQUESTS,
            "too many embedding requests are waiting; retry later",
        ));
    }
    let permit = embedder.turn.acquire().await;
    embedder.waiting.fetch_sub(1, Ordering::SeqCst);
    let _permit =
        permit.map_err(|_| ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "closed"))?;
    let state = state.clone();
    tokio::task::spawn_blocking(move || embed(&state, job, limit))
        .await
        .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn too_long(i: usize, n: usize, what: &str, limit: usize) -> ApiError {
    ApiError::bad(
        "input",
        format!("text {i} is {n} {what}; the most is {limit} tokens (set `truncate` to cut it, on /api/embed)"),
    )
}

/// On a blocking thread: the vectors.
fn embed(state: &AppState, job: Job, limit: usize) -> Result<Done, ApiError> {
    let model = &state.model;
    let mut tokens: Vec<Vec<Token>> = Vec::with_capacity(job.texts.len());
    for (i, text) in job.texts.iter().enumerate() {
        // A text far over the limit is cut before tokenizing all of it.
        let text = if job.truncate {
            let mut cut = (limit * model.max_token_bytes()).min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            &text[..cut]
        } else {
            text.as_str()
        };
        let mut t = model
            .tokenize(text, Tokenize::PROMPT)
            .map_err(|e| ApiError::from_error("input", &e))?;
        if t.len() > limit {
            if !job.truncate {
                return Err(too_long(i, t.len(), "tokens", limit));
            }
            t.truncate(limit);
        }
        tokens.push(t);
    }
    let mut guard = state.embedder.ctx.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        *guard =
            Some(new_context(state, limit as u32).map_err(|e| ApiError::from_error("model", &e))?);
    }
    let ctx = guard.as_mut().expect("made above");
    let refs: Vec<&[Token]> = tokens.iter().map(Vec::as_slice).collect();
    let vectors = ctx
        .embed_tokens(&refs, Normalize::UnitLength)
        .map_err(|e| ApiError::from_error("input", &e))?;
    Ok(Done {
        vectors,
        tokens: tokens.iter().map(Vec::len).sum(),
    })
}

/// An embeddings context of `n_ctx` cells: the model's own pooling, or the
/// mean where it has none.
fn new_context(state: &AppState, n_ctx: u32) -> llama_safe::Result<LlamaContext> {
    let params = |pooling| {
        ContextParams::default()
            .with_n_ctx(n_ctx)
            .with_n_batch(n_ctx)
            .with_n_ubatch(n_ctx)
            .with_n_seq_max(4)
            .with_kv_unified(true)
            .with_threads(state.engine.config().threads())
            .with_embeddings(true)
            .with_pooling(pooling)
    };
    let ctx = LlamaContext::new(&state.model, &params(Pooling::Model))?;
    match ctx.pooling() {
        Pooling::Mean | Pooling::Cls | Pooling::Last => Ok(ctx),
        _ => {
            drop(ctx);
            LlamaContext::new(&state.model, &params(Pooling::Mean))
        }
    }
}

/// Little-endian `f32`s in standard base64, as OpenAI's `base64` format.
fn base64_f32(v: &[f32]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_of_floats() {
        // 1.0f32 is 00 00 80 3f.
        assert_eq!(super::base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(super::base64_f32(&[]), "");
        assert_eq!(super::base64_f32(&[1.0, 1.0, 1.0]), "AACAPwAAgD8AAIA/");
    }
}
