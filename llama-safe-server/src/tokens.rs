//! llama-server's `POST /tokenize` and `POST /detokenize`.

use crate::embeddings::parse;
use crate::error::ApiError;
use crate::types::tokens::{
    DetokenizeRequest, DetokenizeResponse, Piece, TokenOut, TokenizeRequest, TokenizeResponse,
};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llama_safe::{Token, Tokenize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Most tokens `/detokenize` takes in one request.
pub const MAX_DETOKENIZE: usize = 1 << 20;

/// `POST /tokenize` `{"content", "add_special"?, "with_pieces"?}`: the
/// tokens, as llama-server gives them.
///
/// Tokenizing is not linear in the worst case (a long run of one character
/// took 11 s at 400 KB) and llama.cpp cannot stop it midway, so its budget
/// is checked first: a text longer in bytes than a request's context could
/// hold whatever its tokens (the refusal the generation routes make) is 400
/// before it is read. At most one text per core is tokenized at once, off
/// the async workers; a request whose client has gone while it waited is
/// never tokenized.
pub async fn tokenize(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let result = async {
        let req: TokenizeRequest = parse(&body)?;
        let n_ctx = state.n_ctx();
        let at_least = req.content.len().div_ceil(state.model.max_token_bytes());
        if at_least > n_ctx as usize {
            return Err(ApiError::bad(
                "content",
                format!(
                    "{} bytes is at least {at_least} tokens, over the {n_ctx} a request's context holds",
                    req.content.len()
                ),
            ));
        }
        // Waiting for a turn is where an abandoned request ends: dropping
        // this future drops `gone`, and the job, if it has not started,
        // returns at once.
        let permit = state
            .tokenizing
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::status(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let gone = Gone::default();
        let flag = gone.0.clone();
        let model = state.model.clone();
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if flag.load(Ordering::Acquire) {
                return Ok(TokenizeResponse { tokens: Vec::new() });
            }
            let how = Tokenize {
                add_special: req.add_special,
                parse_special: req.add_special,
            };
            let tokens = model
                .tokenize(&req.content, how)
                .map_err(|e| ApiError::from_error("content", &e))?;
            let tokens = tokens
                .into_iter()
                .map(|t| {
                    if !req.with_pieces {
                        return TokenOut::Id(t.0);
                    }
                    let bytes = model.token_bytes(t, true).unwrap_or_default();
                    let piece = match String::from_utf8(bytes) {
                        Ok(text) => Piece::Text(text),
                        Err(e) => Piece::Bytes(e.into_bytes()),
                    };
                    TokenOut::WithPiece { id: t.0, piece }
                })
                .collect();
            Ok(TokenizeResponse { tokens })
        });
        let done = job
            .await
            .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        drop(gone);
        done
    }
    .await;
    respond(&state, "/tokenize", result)
}

/// Set when dropped: the request it belongs to is gone.
#[derive(Default)]
struct Gone(Arc<AtomicBool>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// `POST /detokenize` `{"tokens": [...]}`: the text. An id outside the
/// vocabulary is a 400 naming it.
pub async fn detokenize(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let result = (|| {
        let req: DetokenizeRequest = parse(&body)?;
        if req.tokens.len() > MAX_DETOKENIZE {
            return Err(ApiError::bad(
                "tokens",
                format!("at most {MAX_DETOKENIZE} tokens"),
            ));
        }
        let n_vocab = i64::from(state.model.n_vocab());
        let mut bytes = Vec::new();
        for &id in &req.tokens {
            if !(0..n_vocab).contains(&id) {
                return Err(ApiError::bad(
                    "tokens",
                    format!(
                        "{id} is not a token id of this model (0 to {})",
                        n_vocab - 1
                    ),
                ));
            }
            let piece = state
                .model
                .token_bytes(Token(id as i32), false)
                .map_err(|e| ApiError::from_error("tokens", &e))?;
            bytes.extend_from_slice(&piece);
        }
        Ok(DetokenizeResponse {
            content: String::from_utf8_lossy(&bytes).into_owned(),
        })
    })();
    respond(&state, "/detokenize", result)
}

/// The JSON answer or the error, counted under `endpoint`.
pub(crate) fn respond<T: serde::Serialize>(
    state: &AppState,
    endpoint: &'static str,
    result: Result<T, ApiError>,
) -> Response {
    state.metrics.request(
        endpoint,
        result.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200),
    );
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}
