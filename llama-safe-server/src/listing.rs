//! The routes about the models rather than one model: `GET /v1/models`,
//! `/api/tags`, `/api/ps`, `POST /api/show` for any model found,
//! `POST /models/load` and `/models/unload` (llama-server's names),
//! `GET /health` and `GET /metrics` (every loaded model, labelled).

use crate::catalog::{ftype_name, Entry};
use crate::config::Role;
use crate::embeddings::parse;
use crate::error::ApiError;
use crate::layers::require_manager;
use crate::metrics::Families;
use crate::models::Models;
use crate::ollama::{capabilities, details, rfc3339};
use crate::types::ollama::{Details, ModelEntry, Ps, Running, Show, Tags};
use crate::types::openai::{Model, ModelList};
use crate::types::tokens::Health;
use crate::{file_digest, AppState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use llama_safe::gguf::GgufFile;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One model to list: found, loaded, or both.
struct Row {
    name: String,
    path: std::path::PathBuf,
    size: u64,
    details: Details,
    loaded: bool,
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(UNIX_EPOCH)
}

fn entry_details(e: &Entry) -> Details {
    Details {
        parent_model: String::new(),
        format: "gguf".into(),
        family: e.family.clone(),
        families: vec![e.family.clone()],
        parameter_size: String::new(),
        quantization_level: e.quantization.clone(),
    }
}

/// Every model: the loaded ones (with their exact details) and the found
/// ones, by name.
fn rows(models: &Models) -> Vec<Row> {
    let loaded = models.loaded();
    let mut rows: Vec<Row> = loaded
        .iter()
        .map(|l| Row {
            name: l.state.model_name.clone(),
            path: l.state.model.path().to_path_buf(),
            size: std::fs::metadata(l.state.model.path()).map_or(0, |m| m.len()),
            details: details(&l.state),
            loaded: true,
        })
        .collect();
    for e in models.available() {
        if let Some(row) = rows.iter_mut().find(|r| r.name == e.name) {
            row.size = e.size;
        } else {
            rows.push(Row {
                name: e.name.clone(),
                path: e.path.clone(),
                size: e.size,
                details: entry_details(&e),
                loaded: false,
            });
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// `GET /v1/models`.
pub async fn models(State(models): State<Arc<Models>>) -> Json<ModelList> {
    let single = models.is_single();
    Json(ModelList {
        object: "list".into(),
        data: rows(&models)
            .into_iter()
            .map(|r| Model {
                created: mtime(&r.path)
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                id: r.name,
                object: "model".into(),
                owned_by: "llama-safe".into(),
                size: (!single).then_some(r.size),
                family: (!single).then_some(r.details.family),
                quantization: (!single).then_some(r.details.quantization_level),
                loaded: (!single).then_some(r.loaded),
            })
            .collect(),
    })
}

/// `GET /api/tags`.
pub async fn tags(State(models): State<Arc<Models>>) -> Json<Tags> {
    Json(Tags {
        models: rows(&models)
            .into_iter()
            .map(|r| ModelEntry {
                model: r.name.clone(),
                name: r.name,
                modified_at: rfc3339(mtime(&r.path)),
                size: r.size,
                digest: file_digest(&r.path),
                details: r.details,
            })
            .collect(),
    })
}

/// `GET /api/ps`: the models in memory, their planned bytes and expiry.
pub async fn ps(State(models): State<Arc<Models>>) -> Json<Ps> {
    let far = SystemTime::now() + Duration::from_secs(100 * 365 * 86_400);
    Json(Ps {
        models: models
            .loaded()
            .into_iter()
            .map(|l| Running {
                name: l.state.model_name.clone(),
                model: l.state.model_name.clone(),
                size: if l.planned_bytes > 0 {
                    l.planned_bytes
                } else {
                    std::fs::metadata(l.state.model.path()).map_or(0, |m| m.len())
                },
                digest: l.state.model_digest.clone(),
                details: details(&l.state),
                expires_at: rfc3339(l.expires_at.unwrap_or(far)),
                size_vram: l
                    .state
                    .model
                    .placement()
                    .buffers
                    .iter()
                    .filter(|b| !(b.name.starts_with("CPU") || b.name.ends_with("_Host")))
                    .map(|b| b.bytes)
                    .sum(),
            })
            .collect(),
    })
}

#[derive(Deserialize)]
struct Named {
    model: Option<String>,
    name: Option<String>,
}

/// `POST /api/show` `{"model": name}`: a loaded model's own details, or a
/// found one's from its GGUF header (it is not loaded for this).
pub async fn show(State(models): State<Arc<Models>>, body: Bytes) -> Response {
    let named: Named = match parse(&body) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let Some(requested) = named.model.or(named.name) else {
        return ApiError::bad("model", "`model` is required").into_response();
    };
    let name = match models.resolve(Some(&requested)) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    if let Some(l) = models.loaded().into_iter().find(|l| {
        l.state.answers_to(&requested) || (!models.is_single() && l.state.model_name == name)
    }) {
        return crate::ollama::show_loaded(&l.state).into_response();
    }
    match models.available().into_iter().find(|e| e.name == name) {
        Some(e) => match show_file(&e) {
            Ok(show) => Json(show).into_response(),
            Err(e) => e.into_response(),
        },
        None => ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("model {requested:?} not found"),
            param: Some("model"),
        }
        .into_response(),
    }
}

/// `/api/show` from a GGUF header.
fn show_file(e: &Entry) -> Result<Show, ApiError> {
    let file = GgufFile::open(&e.path).map_err(|err| {
        ApiError::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {err}", e.name),
        )
    })?;
    let arch = e.family.clone();
    let mut info = serde_json::Map::new();
    info.insert("general.architecture".into(), arch.clone().into());
    let file_type = file.get_u64("general.file_type").ok();
    info.insert(
        "general.file_type".into(),
        file_type.and_then(ftype_name).unwrap_or_default().into(),
    );
    for key in [
        "context_length",
        "embedding_length",
        "block_count",
        "expert_count",
    ] {
        if let Ok(v) = file.get_u64(&format!("{arch}.{key}")) {
            info.insert(format!("{arch}.{key}"), v.into());
        }
    }
    let template = file.get_str("tokenizer.chat_template").unwrap_or_default();
    let capabilities = capabilities(&template);
    Ok(Show {
        modelfile: String::new(),
        parameters: String::new(),
        template,
        details: entry_details(e),
        model_info: info,
        capabilities,
        modified_at: rfc3339(mtime(&e.path)),
    })
}

/// The answer of `/models/load` and `/models/unload`.
#[derive(Serialize)]
struct Changed {
    success: bool,
    model: String,
    /// Loaded now (load), or was loaded (unload: it goes when its last
    /// request ends).
    loaded: bool,
}

/// `POST /models/load` `{"model"}`: loads it now (waiting for the load).
pub async fn load(State(models): State<Arc<Models>>, role: Role, body: Bytes) -> Response {
    if let Err(e) = require_manager(role, "`/models/load`") {
        return e.into_response();
    }
    let named: Named = match parse(&body) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    match models.acquire(named.model.as_deref(), None).await {
        Ok(state) => Json(Changed {
            success: true,
            model: state.model_name.clone(),
            loaded: true,
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /models/unload` `{"model"}`: unloads it, at once if no request
/// uses it, else when the last one ends.
pub async fn unload(State(models): State<Arc<Models>>, role: Role, body: Bytes) -> Response {
    if let Err(e) = require_manager(role, "`/models/unload`") {
        return e.into_response();
    }
    let named: Named = match parse(&body) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let Some(name) = named.model else {
        return ApiError::bad("model", "`model` is required").into_response();
    };
    match models.unload(&name) {
        Ok(was) => Json(Changed {
            success: true,
            model: name,
            loaded: was,
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /health`: the engines of the loaded models, summed.
pub async fn health(State(models): State<Arc<Models>>) -> Json<Health> {
    let loaded = models.loaded();
    let mut h = Health {
        status: "ok".into(),
        model: String::new(),
        parallel: 0,
        active: 0,
        queued: 0,
        kv_cells: 0,
        kv_cells_used: 0,
        models: Vec::new(),
    };
    for l in &loaded {
        let s = l.state.engine.stats();
        h.parallel += l.state.engine.config().n_parallel();
        h.active += s.active;
        h.queued += s.queued;
        h.kv_cells += s.kv_cells;
        h.kv_cells_used += s.kv_cells_used;
        h.models.push(l.state.model_name.clone());
    }
    if let [only] = loaded.as_slice() {
        h.model = only.state.model_name.clone();
    }
    if models.is_single() {
        h.models.clear();
    }
    Json(h)
}

/// `GET /metrics`: every loaded model's counters (labelled by model when
/// the server serves several).
pub async fn metrics(State(models): State<Arc<Models>>) -> Response {
    let mut families = Families::default();
    let single = models.is_single();
    for l in models.loaded() {
        let state: &AppState = &l.state;
        state.metrics.render_into(
            &mut families,
            (!single).then_some(state.model_name.as_str()),
            state.engine.config().n_parallel(),
            &state.engine.stats(),
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        families.finish(),
    )
        .into_response()
}
