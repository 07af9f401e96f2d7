//! Requests that name a model: the pool finds it (loading it if it must),
//! then the route's own handler runs on that model. Ollama's way of
//! loading and unloading (a generate or chat request with no prompt, and
//! `keep_alive`) is here too.

use crate::config::Role;
use crate::error::ApiError;
use crate::layers::require_manager;
use crate::models::{KeepAlive, Models};
use crate::ollama::rfc3339;
use crate::{anthropic, embeddings, ollama, openai, tokens, AppState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

/// The fields that choose the model and how long it stays.
#[derive(Deserialize)]
struct Target {
    model: Option<Value>,
    keep_alive: Option<Value>,
    prompt: Option<Value>,
    messages: Option<Value>,
}

struct Wanted {
    model: Option<String>,
    keep_alive: Option<KeepAlive>,
    /// No prompt nor messages: Ollama's load (or, with keep-alive 0,
    /// unload) request.
    empty: bool,
}

/// The model and keep-alive a body asks for. A body that is not JSON
/// names none: its handler says what is wrong with it.
fn wanted(body: &[u8]) -> Result<Wanted, ApiError> {
    let Ok(t) = serde_json::from_slice::<Target>(body) else {
        return Ok(Wanted {
            model: None,
            keep_alive: None,
            empty: false,
        });
    };
    let keep_alive = match t.keep_alive {
        None | Some(Value::Null) => None,
        Some(v) => Some(KeepAlive::parse(&v).map_err(|m| ApiError::bad("keep_alive", m))?),
    };
    let blank = |v: &Option<Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    };
    Ok(Wanted {
        model: match t.model {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            _ => None,
        },
        keep_alive,
        empty: blank(&t.prompt) && blank(&t.messages),
    })
}

/// In a pool, `keep_alive` changes how long a model stays for every client:
/// only a role that manages models may set it (403 otherwise). A
/// single-model server keeps its model whatever a request says, so there it
/// changes nothing.
fn check_keep_alive(models: &Models, role: Role, w: &Wanted) -> Result<(), ApiError> {
    if w.keep_alive.is_some() && !models.is_single() {
        require_manager(role, "`keep_alive`")?;
    }
    Ok(())
}

/// The model a request names, loaded if it must be (its `keep_alive`
/// checked by [`check_keep_alive`]).
async fn acquire(
    models: &Arc<Models>,
    role: Role,
    body: &Bytes,
) -> Result<Arc<AppState>, ApiError> {
    let w = wanted(body)?;
    check_keep_alive(models, role, &w)?;
    models.acquire(w.model.as_deref(), w.keep_alive).await
}

/// Runs `run` on the model the body names.
async fn on_model<F, Fut>(models: &Arc<Models>, role: Role, body: &Bytes, run: F) -> Response
where
    F: FnOnce(Arc<AppState>) -> Fut,
    Fut: Future<Output = Response>,
{
    let state = acquire(models, role, body).await;
    match state {
        Ok(state) => run(state).await,
        Err(e) => e.into_response(),
    }
}

/// Ollama's answer to a load or unload request.
#[derive(Serialize)]
struct LoadDone {
    model: String,
    created_at: String,
    response: &'static str,
    done: bool,
    done_reason: &'static str,
}

/// For a server of several models: a generate or chat request with no
/// prompt loads the model (or, with `keep_alive` 0, unloads it), as
/// Ollama's `ollama run` and `ollama stop` do.
async fn ollama_load_or_unload(models: &Arc<Models>, role: Role, body: &Bytes) -> Option<Response> {
    if models.is_single() {
        return None;
    }
    let w = match wanted(body) {
        Ok(w) if w.empty => w,
        Ok(_) => return None,
        Err(e) => return Some(e.into_response()),
    };
    if let Err(e) = check_keep_alive(models, role, &w) {
        return Some(e.into_response());
    }
    let Some(name) = w.model else {
        return Some(ApiError::bad("model", "`model` is required").into_response());
    };
    let done = |reason| LoadDone {
        model: name.clone(),
        created_at: rfc3339(SystemTime::now()),
        response: "",
        done: true,
        done_reason: reason,
    };
    Some(match w.keep_alive {
        Some(KeepAlive::For(d)) if d.is_zero() => match models.unload(&name) {
            Ok(_) => Json(done("unload")).into_response(),
            Err(e) => e.into_response(),
        },
        keep => match models.acquire(Some(&name), keep).await {
            Ok(_) => Json(done("load")).into_response(),
            Err(e) => e.into_response(),
        },
    })
}

/// `POST /api/generate`.
pub async fn generate(
    State(m): State<Arc<Models>>,
    role: Role,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = ollama_load_or_unload(&m, role, &body).await {
        return r;
    }
    on_model(&m, role, &body.clone(), |s| {
        ollama::generate(State(s), headers, body)
    })
    .await
}

/// `POST /api/chat`.
pub async fn chat(State(m): State<Arc<Models>>, role: Role, body: Bytes) -> Response {
    if let Some(r) = ollama_load_or_unload(&m, role, &body).await {
        return r;
    }
    on_model(&m, role, &body.clone(), |s| ollama::chat(State(s), body)).await
}

/// `POST /api/embed`.
pub async fn embed(State(m): State<Arc<Models>>, role: Role, body: Bytes) -> Response {
    on_model(&m, role, &body.clone(), |s| {
        embeddings::ollama(State(s), body)
    })
    .await
}

/// `POST /v1/completions`.
pub async fn completions(State(m): State<Arc<Models>>, role: Role, body: Bytes) -> Response {
    on_model(&m, role, &body.clone(), |s| {
        openai::completions(State(s), body)
    })
    .await
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(m): State<Arc<Models>>, role: Role, body: Bytes) -> Response {
    on_model(&m, role, &body.clone(), |s| openai::chat(State(s), body)).await
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(m): State<Arc<Models>>, role: Role, body: Bytes) -> Response {
    on_model(&m, role, &body.clone(), |s| {
        embeddings::openai(State(s), body)
    })
    .await
}

/// `POST /v1/messages`, its errors in Anthropic's shape.
pub async fn messages(State(m): State<Arc<Models>>, role: Role, body: Bytes) -> Response {
    let state = acquire(&m, role, &body).await;
    match state {
        Ok(state) => anthropic::messages(State(state), body).await,
        Err(e) => anthropic::error_response(e),
    }
}

/// `POST /tokenize`.
pub async fn tokenize(State(m): State<Arc<Models>>, role: Role, body: Bytes) -> Response {
    on_model(&m, role, &body.clone(), |s| {
        tokens::tokenize(State(s), body)
    })
    .await
}

/// `POST /detokenize`.
pub async fn detokenize(State(m): State<Arc<Models>>, role: Role, body: Bytes) -> Response {
    on_model(&m, role, &body.clone(), |s| {
        tokens::detokenize(State(s), body)
    })
    .await
}
