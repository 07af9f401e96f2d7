//! Request bodies, checked field by field, and the JSON errors that name the
//! field at fault.

use super::tools::{self, ToolUse};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use llama_safe::chat::ToolCallFormat;
use llama_safe::{ChatMessage, SamplingOptions};
use serde_json::{json, Map, Value};

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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let body = json!({"error": {"message": self.message, "type": kind, "param": self.param}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// What a generation request asks for, from any of the three APIs.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// The prompt (chat: the messages formatted with the model's template).
    pub prompt: String,
    /// Chat messages, for `/v1/chat/completions`.
    pub messages: Option<Vec<ChatMessage>>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling.
    pub sampling: SamplingOptions,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Stream the answer as server-sent events.
    pub stream: bool,
    /// Tool calling, for `/v1/chat/completions` with `tools`.
    pub tools: Option<ToolUse>,
}

/// Which API a body is for (their fields and defaults differ a little).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /api/generate` (Ollama's): `prompt`, `options`; streams
    /// unless `"stream": false`.
    Generate,
    /// `POST /api/chat` (Ollama's): `messages`, `options`; streams unless
    /// `"stream": false`.
    OllamaChat,
    /// `POST /v1/completions`: OpenAI completions.
    Completions,
    /// `POST /v1/chat/completions`: OpenAI chat, `messages`.
    Chat,
}

impl Api {
    fn is_ollama(self) -> bool {
        matches!(self, Api::Generate | Api::OllamaChat)
    }
}

/// The sampling fields read from Ollama's `options` (or, failing that, the
/// top level of the body).
const OLLAMA_OPTIONS: [&str; 7] = [
    "temperature",
    "top_k",
    "repeat_penalty",
    "top_p",
    "seed",
    "stop",
    "num_predict",
];

/// Most stop strings a request may give.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 1024;

/// What a body is checked against: the model served and the context size.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// The one model name accepted in `model` (besides `default`).
    pub model_name: &'a str,
    /// The context size: `max_tokens` may not exceed it.
    pub n_ctx: u32,
    /// Vocabulary size, for `logit_bias` token ids.
    pub n_vocab: u32,
    /// How the model writes tool calls.
    pub tool_format: ToolCallFormat,
}

/// Parses and checks a body.
pub fn parse(body: &[u8], api: Api, limits: Limits<'_>) -> Result<GenRequest, ApiError> {
    let Limits {
        model_name,
        n_ctx: max_tokens_limit,
        n_vocab,
        tool_format,
    } = limits;
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::status(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let obj = value.as_object().ok_or_else(|| {
        ApiError::status(StatusCode::BAD_REQUEST, "the body must be a JSON object")
    })?;

    if let Some(model) = obj.get("model") {
        let model = model
            .as_str()
            .ok_or_else(|| ApiError::bad("model", "`model` must be a string"))?;
        if model != model_name && model != "default" {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!("model {model:?} not found; this server serves {model_name:?}"),
                param: Some("model"),
            });
        }
    }

    // Fields this server does not implement are refused, never ignored.
    let unsupported: &[(&str, &str)] = match api {
        Api::Chat => &[
            ("functions", "the deprecated function calling: use `tools`"),
            ("suffix", "fill-in-the-middle"),
        ],
        _ => &[
            ("tools", "tool calling, on /v1/chat/completions only"),
            ("functions", "function calling"),
            ("suffix", "fill-in-the-middle"),
        ],
    };
    for &(field, what) in unsupported {
        let present = match obj.get(field) {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        if present {
            return Err(ApiError::bad(
                field,
                format!("`{field}` ({what}) is not supported by this server"),
            ));
        }
    }
    match obj.get("n").filter(|v| !v.is_null()) {
        None => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(ApiError::bad(
                "n",
                "only `n: 1` is supported: send several requests for several answers",
            ))
        }
    }
    // Ollama puts the sampling fields in `options`; shimmy-style clients of
    // /api/generate put them at the top level: `options` wins. Only those
    // fields are copied, not the body (whose prompt may be megabytes).
    let merged;
    let opts = if api.is_ollama() {
        let empty = Map::new();
        let options = match obj.get("options") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(_) => return Err(ApiError::bad("options", "`options` must be an object")),
        };
        merged = OLLAMA_OPTIONS
            .iter()
            .filter_map(|&key| {
                let value = options.get(key).or_else(|| obj.get(key))?;
                Some((key.to_string(), value.clone()))
            })
            .collect::<Map<String, Value>>();
        &merged
    } else {
        obj
    };

    let (prompt, messages) = match api {
        Api::Chat | Api::OllamaChat => {
            let list = obj
                .get("messages")
                .ok_or_else(|| ApiError::bad("messages", "`messages` is required"))?
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| ApiError::bad("messages", "`messages` must be a non-empty array"))?;
            let messages = list
                .iter()
                .map(tools::message)
                .collect::<Result<Vec<ChatMessage>, _>>()?;
            (String::new(), Some(messages))
        }
        Api::Generate | Api::Completions => {
            let prompt = obj
                .get("prompt")
                .ok_or_else(|| ApiError::bad("prompt", "`prompt` is required"))?
                .as_str()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| ApiError::bad("prompt", "`prompt` must be a non-empty string"))?;
            (prompt.to_string(), None)
        }
    };

    let default_max = 256.min(max_tokens_limit);
    // OpenAI's newer name wins over the old one; Ollama's is num_predict.
    let (field, value) = if api.is_ollama() && opts.contains_key("num_predict") {
        ("num_predict", opts.get("num_predict"))
    } else {
        match obj.get("max_completion_tokens").filter(|v| !v.is_null()) {
            Some(v) => ("max_completion_tokens", Some(v)),
            None => ("max_tokens", obj.get("max_tokens")),
        }
    };
    let max_tokens = match value {
        None | Some(Value::Null) => default_max,
        // Ollama: -1 means "until the context is full".
        Some(v) if api.is_ollama() && v.as_i64() == Some(-1) => max_tokens_limit,
        Some(v) => {
            let n = v
                .as_i64()
                .ok_or_else(|| ApiError::bad(field, format!("`{field}` must be an integer")))?;
            if n < 1 || n > i64::from(max_tokens_limit) {
                return Err(ApiError::bad(
                    field,
                    format!("`{field}` must be between 1 and {max_tokens_limit} (the context size), got {n}"),
                ));
            }
            n as u32
        }
    };

    let mut sampling = SamplingOptions::default();
    if let Some(t) = number(opts, "temperature", 0.0, 5.0)? {
        sampling.temperature = t as f32;
    }
    if let Some(k) = number(opts, "top_k", 0.0, 1e6)? {
        sampling.top_k = k as i32;
    }
    if let Some(p) = number(opts, "repeat_penalty", 0.0, 10.0)? {
        sampling.repeat_penalty = p as f32;
    }
    if let Some(p) = number(opts, "top_p", 0.0, 1.0)? {
        if p == 0.0 {
            return Err(ApiError::bad("top_p", "`top_p` must be above 0"));
        }
        sampling.top_p = p as f32;
    }
    if let Some(seed) = opts.get("seed").filter(|v| !v.is_null()) {
        sampling.seed = seed
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .ok_or_else(|| {
                ApiError::bad("seed", "`seed` must be an integer from 0 to 4294967295")
            })?;
    }
    if let Some(bias) = obj.get("logit_bias").filter(|v| !v.is_null()) {
        let map = bias.as_object().ok_or_else(|| {
            ApiError::bad("logit_bias", "`logit_bias` must map token ids to numbers")
        })?;
        for (token, value) in map {
            let id: i32 = token
                .parse()
                .ok()
                .filter(|id| *id >= 0 && (*id as u32) < n_vocab)
                .ok_or_else(|| {
                    ApiError::bad(
                        "logit_bias",
                        format!("{token:?} is not a token id of this model"),
                    )
                })?;
            let b = value
                .as_f64()
                .filter(|b| (-100.0..=100.0).contains(b))
                .ok_or_else(|| {
                    ApiError::bad("logit_bias", "biases must be numbers from -100 to 100")
                })?;
            // As in OpenAI's API, -100 bans the token.
            let b = if b <= -100.0 {
                f32::NEG_INFINITY
            } else {
                b as f32
            };
            sampling.logit_bias.push((llama_safe::Token(id), b));
        }
        let banned = sampling
            .logit_bias
            .iter()
            .filter(|(_, b)| *b == f32::NEG_INFINITY)
            .count();
        if banned as u32 >= n_vocab {
            return Err(ApiError::bad(
                "logit_bias",
                "every token is banned (-100): there is nothing to generate",
            ));
        }
    }
    let stop = match opts.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Some(Value::Array(items)) if items.len() <= MAX_STOP_STRINGS => items
            .iter()
            .map(|s| s.as_str().filter(|s| !s.is_empty()).map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad("stop", "`stop` entries must be non-empty strings"))?,
        Some(_) => {
            return Err(ApiError::bad(
                "stop",
                format!("`stop` must be a non-empty string or an array of at most {MAX_STOP_STRINGS} of them"),
            ))
        }
    };
    if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::bad(
            "stop",
            format!(
                "a stop string of {} bytes; the most is {MAX_STOP_BYTES}",
                long.len()
            ),
        ));
    }
    let tools = match api {
        Api::Chat => tools::parse_tools(obj, tool_format, &mut sampling)?,
        _ => None,
    };
    let format_field = if api.is_ollama() {
        "format"
    } else {
        "response_format"
    };
    tools::parse_response_format(obj, format_field, &mut sampling)?;
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => api.is_ollama(),
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad("stream", "`stream` must be true or false")),
    };
    Ok(GenRequest {
        prompt,
        messages,
        max_tokens,
        sampling,
        stop,
        stream,
        tools,
    })
}

fn number(
    obj: &Map<String, Value>,
    name: &'static str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            _ => Err(ApiError::bad(
                name,
                format!("`{name}` must be a number from {min} to {max}"),
            )),
        },
    }
}
