//! The error answer every route gives: a status and OpenAI's error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A 4xx/5xx answer: `{"error": {"message", "type", "param"}}`, as OpenAI's
/// API answers (`param` names the field at fault, or is null).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What is wrong.
    pub message: String,
    /// The field at fault.
    pub param: Option<&'static str>,
}

impl ApiError {
    /// 400 for `param`.
    pub fn bad(param: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param),
        }
    }

    /// Any status, no field.
    pub fn status(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
        }
    }

    /// The answer to a llama-safe error met while serving a request, by its
    /// [`ErrorKind`](llama_safe::ErrorKind): the request's own mistakes and
    /// budgets are 400 (naming `param`), a full queue 429, a stopping
    /// server 503, the rest 500.
    pub fn from_error(param: &'static str, error: &llama_safe::Error) -> ApiError {
        use llama_safe::ErrorKind as K;
        let message = error.to_string();
        match error.kind() {
            K::InvalidInput | K::ResourceExhausted | K::Unsupported => {
                ApiError::bad(param, message)
            }
            K::Busy => ApiError::status(
                StatusCode::TOO_MANY_REQUESTS,
                "every sequence is busy and the queue is full; retry later",
            ),
            K::Cancelled => ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ),
            _ => ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        (status, axum::Json(self.body())).into_response()
    }
}

impl ApiError {
    /// The body: `{"error": {"message", "type", "param", "code"}}`.
    pub(crate) fn body(self) -> ErrorBody {
        let kind = match self.status {
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.message,
                kind,
                param: self.param,
                code: (self.status == StatusCode::UNAUTHORIZED).then_some("invalid_api_key"),
            },
        }
    }
}

/// `{"error": {...}}`.
#[derive(Serialize)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// OpenAI's error object.
#[derive(Serialize)]
struct ErrorDetail {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}
