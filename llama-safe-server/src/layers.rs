//! The router's protective layers: the whole body within its time and size
//! limits, and the API key.

use crate::config::Role;
use crate::error::ApiError;
use crate::ServerConfig;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Reads the whole body within the body timeout and size limit, then hands
/// the request on (408 or 413 otherwise).
pub(crate) async fn body_in_time(
    State(config): State<Arc<ServerConfig>>,
    request: Request,
    next: Next,
) -> Response {
    let (limit, max) = (config.timeouts().body, config.max_body_bytes());
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(limit, axum::body::to_bytes(body, max)).await {
        Err(_) => ApiError::status(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {limit:?}"),
        )
        .into_response(),
        Ok(Err(_)) => ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {max} bytes or broken off"),
        )
        .into_response(),
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// 401 unless the request carries one of the keys, as
/// `Authorization: Bearer KEY` or `x-api-key: KEY`; the key's [`Role`]
/// goes on to the handler as an extension. The key is never logged nor
/// echoed.
pub(crate) async fn require_key(
    State(config): State<Arc<ServerConfig>>,
    mut request: Request,
    next: Next,
) -> Response {
    if config.is_locked() {
        return unauthorized(
            "the server was given an empty API key, so it accepts none (fail closed)",
        );
    }
    match presented_key(request.headers()).map(|key| config.role_of(key)) {
        Some(Some(role)) => {
            request.extensions_mut().insert(role);
            next.run(request).await
        }
        Some(None) => unauthorized("the API key is not valid"),
        None => unauthorized(
            "an API key is required: send `Authorization: Bearer YOUR_KEY` (or `x-api-key`)",
        ),
    }
}

/// A handler's `role: Role` argument: the role the key layer let the
/// request in with, [`Role::Open`] when no key is configured (the layer
/// then does not run).
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Role {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Role, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Role>()
            .copied()
            .unwrap_or(Role::Open))
    }
}

/// 403 unless `role` may manage the models.
pub(crate) fn require_manager(role: Role, what: &str) -> Result<(), ApiError> {
    if role.manages_models() {
        Ok(())
    } else {
        Err(ApiError::status(
            StatusCode::FORBIDDEN,
            format!("{what} changes the models every client uses: it needs the admin key (--admin-api-key), not an inference key"),
        ))
    }
}

/// The key of `Authorization: Bearer KEY`, else of `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| {
        let v = v.as_bytes();
        (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| v[7..].trim_ascii())
    });
    bearer.or_else(|| headers.get("x-api-key").map(|v| v.as_bytes().trim_ascii()))
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
        param: None,
    }
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
