//! Generation request bodies of the OpenAI and Ollama APIs, checked field by
//! field; a field at fault is named in the [`ApiError`].

use crate::error::ApiError;
use crate::tools::{self, ToolUse};
use axum::http::StatusCode;
use llama_safe::chat::ToolCallFormat;
use llama_safe::{ChatMessage, SamplingOptions};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

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
    /// Tool calling, for the chat APIs with `tools`.
    pub tools: Option<ToolUse>,
    /// Thinking on or off for templates that think (Ollama's `think`,
    /// `chat_template_kwargs.enable_thinking`, Anthropic's `thinking`);
    /// unset, the template's default, with the thinking apart from the
    /// answer.
    pub think: Option<bool>,
    /// Log-probabilities of each token, with this many alternatives
    /// (OpenAI's `logprobs` and `top_logprobs`).
    pub logprobs: Option<u32>,
    /// llama-server's `speculative.n_max` (0: no speculation for this
    /// request) and `speculative.n_min`, when given.
    pub draft: Option<(u32, u32)>,
    /// Images and audio, in the order of their markers in the prompt (or
    /// the messages).
    pub media: Vec<crate::media::MediaPart>,
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

/// Most stop strings a request may give.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 1024;

/// What a body is checked against: the model served and the context size.
#[derive(Clone, Copy)]
pub struct Limits<'a> {
    /// The model serving the request: `model` must be a name it answers
    /// to.
    pub state: &'a crate::AppState,
    /// The context size: `max_tokens` may not exceed it.
    pub n_ctx: u32,
    /// Vocabulary size, for `logit_bias` token ids.
    pub n_vocab: u32,
    /// How the model writes tool calls.
    pub tool_format: ToolCallFormat,
}

/// A request body as the APIs send it, every field optional; `parse`
/// checks what is there. Unknown fields are ignored, as OpenAI's and
/// Ollama's clients send some this server has no use for.
#[derive(Debug, Default, Deserialize)]
struct Body {
    model: Option<String>,
    prompt: Option<String>,
    messages: Option<Vec<Value>>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    n: Option<u64>,
    logit_bias: Option<BTreeMap<String, f64>>,
    stream: Option<bool>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<Value>,
    response_format: Option<Value>,
    format: Option<Value>,
    functions: Option<Value>,
    suffix: Option<Value>,
    options: Option<Sampling>,
    // Ollama's /api/generate fields this server does not implement.
    images: Option<Value>,
    system: Option<Value>,
    template: Option<Value>,
    context: Option<Value>,
    raw: Option<Value>,
    think: Option<Value>,
    chat_template_kwargs: Option<Value>,
    logprobs: Option<Value>,
    top_logprobs: Option<Value>,
    #[serde(rename = "speculative.n_max")]
    spec_n_max: Option<u32>,
    #[serde(rename = "speculative.n_min")]
    spec_n_min: Option<u32>,
}

/// The sampling fields: OpenAI's at the top level, Ollama's in `options`
/// (or, for shimmy-style clients of /api/generate, at the top level).
#[derive(Debug, Default, Clone, Deserialize)]
struct Sampling {
    temperature: Option<f64>,
    top_k: Option<f64>,
    top_p: Option<f64>,
    repeat_penalty: Option<f64>,
    seed: Option<u32>,
    stop: Option<Stop>,
    num_predict: Option<i64>,
}

impl Sampling {
    /// `self`'s fields, else `other`'s.
    fn or(self, other: Sampling) -> Sampling {
        Sampling {
            temperature: self.temperature.or(other.temperature),
            top_k: self.top_k.or(other.top_k),
            top_p: self.top_p.or(other.top_p),
            repeat_penalty: self.repeat_penalty.or(other.repeat_penalty),
            seed: self.seed.or(other.seed),
            stop: self.stop.or(other.stop),
            num_predict: self.num_predict.or(other.num_predict),
        }
    }
}

/// `stop`: one string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Every field a body may have, for naming the one at fault.
const FIELDS: &[&str] = &[
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "logit_bias",
    "stream",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "format",
    "functions",
    "suffix",
    "options",
    "temperature",
    "top_k",
    "top_p",
    "repeat_penalty",
    "seed",
    "stop",
    "num_predict",
    "think",
    "chat_template_kwargs",
    "logprobs",
    "top_logprobs",
    "speculative.n_max",
    "speculative.n_min",
];

/// Reads the body into `T` (a [`Body`], or the top-level [`Sampling`]
/// fields: reading those apart keeps the name of a field at fault, which
/// `#[serde(flatten)]` would lose); a wrong type names its field (a field
/// in Ollama's `options` by its own name).
fn deserialize<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    if let Ok(b) = parsed {
        // Trailing characters after the object.
        return de.end().map(|()| b).map_err(|e| {
            ApiError::status(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid JSON: {e}"),
            )
        });
    }
    parsed.map_err(|e| {
        let keys: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::status(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid JSON: {inner}"),
            );
        }
        let name = match keys.as_slice() {
            [options, field, ..] if options == "options" => Some(field),
            [field, ..] => Some(field),
            [] => None,
        };
        match name.and_then(|n| FIELDS.iter().find(|f| *f == n)) {
            Some(&field) => ApiError::bad(field, format!("`{field}`: {inner}")),
            None if keys.is_empty() => {
                ApiError::status(StatusCode::BAD_REQUEST, "the body must be a JSON object")
            }
            None => ApiError::status(StatusCode::BAD_REQUEST, inner.to_string()),
        }
    })
}

/// Parses and checks a body.
pub fn parse(bytes: &[u8], api: Api, limits: Limits<'_>) -> Result<GenRequest, ApiError> {
    let (body, top_level): (Body, Sampling) = (deserialize(bytes)?, deserialize(bytes)?);
    if let Some(model) = &body.model {
        if !limits.state.answers_to(model) {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!(
                    "model {model:?} not found; this server serves {:?}",
                    limits.state.model_name
                ),
                param: Some("model"),
            });
        }
    }
    refuse_unsupported(&body, api)?;
    // Ollama puts the sampling fields in `options`; shimmy-style clients of
    // /api/generate put them at the top level: `options` wins.
    let opts = if api.is_ollama() {
        body.options.clone().unwrap_or_default().or(top_level)
    } else {
        top_level
    };
    let mut media = crate::media::Collector::for_state(limits.state);
    let (prompt, messages) = prompt_or_messages(&body, api, &mut media)?;
    let max_tokens = max_tokens(&body, &opts, api, limits.n_ctx)?;
    let mut sampling = sampling(&body, &opts, limits.n_vocab)?;
    let stop = stop_strings(opts.stop)?;
    let tools = match api {
        Api::Chat | Api::OllamaChat => tools::parse_tools(
            body.tools.as_ref(),
            body.tool_choice.as_ref(),
            body.parallel_tool_calls.as_ref(),
            limits.tool_format,
            &mut sampling,
        )?,
        _ => None,
    };
    if api.is_ollama() {
        tools::parse_response_format(body.format.as_ref(), "format", &mut sampling)?;
    } else {
        tools::parse_response_format(
            body.response_format.as_ref(),
            "response_format",
            &mut sampling,
        )?;
    }
    Ok(GenRequest {
        prompt,
        messages,
        max_tokens,
        sampling,
        stop,
        stream: body.stream.unwrap_or(api.is_ollama()),
        tools,
        think: think(&body, api)?,
        logprobs: logprobs(&body, api)?,
        draft: match (body.spec_n_max, body.spec_n_min) {
            (None, None) => None,
            (max, min) => {
                let max = max.unwrap_or(u32::MAX);
                let min = min.unwrap_or(0);
                if min > max {
                    return Err(ApiError::bad(
                        "speculative.n_min",
                        "`speculative.n_min` must not be above `speculative.n_max`",
                    ));
                }
                Some((max, min))
            }
        },
        media: media.parts,
    })
}

/// Ollama's `think` (true, false, or an effort: `high`, `medium`, `low`,
/// which mean on), or `chat_template_kwargs.enable_thinking` (llama-server's
/// and vLLM's way) on the OpenAI routes.
fn think(body: &Body, api: Api) -> Result<Option<bool>, ApiError> {
    if api.is_ollama() {
        return match &body.think {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if ["high", "medium", "low"].contains(&s.as_str()) => {
                Ok(Some(true))
            }
            Some(_) => Err(ApiError::bad(
                "think",
                "`think` must be true, false, \"high\", \"medium\" or \"low\"",
            )),
        };
    }
    match &body.chat_template_kwargs {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(kwargs)) => match kwargs.get("enable_thinking") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::bad(
                "chat_template_kwargs",
                "`chat_template_kwargs.enable_thinking` must be true or false",
            )),
        },
        Some(_) => Err(ApiError::bad(
            "chat_template_kwargs",
            "`chat_template_kwargs` must be an object",
        )),
    }
}

/// OpenAI's `logprobs`: on chat, `true` with `top_logprobs` alternatives
/// (0 to 20); on completions, the number of alternatives (0 to 5, as
/// OpenAI's legacy API). Not on Ollama's routes.
fn logprobs(body: &Body, api: Api) -> Result<Option<u32>, ApiError> {
    let top = |v: &Option<Value>, field: &'static str, max: u64| match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= max) => {
            Ok(n.as_u64().map(|n| n as u32))
        }
        Some(_) => Err(ApiError::bad(
            field,
            format!("`{field}` must be an integer from 0 to {max}"),
        )),
    };
    match api {
        Api::Chat => {
            let on = match &body.logprobs {
                None | Some(Value::Null) | Some(Value::Bool(false)) => false,
                Some(Value::Bool(true)) => true,
                Some(_) => {
                    return Err(ApiError::bad(
                        "logprobs",
                        "`logprobs` must be true or false",
                    ))
                }
            };
            let n = top(
                &body.top_logprobs,
                "top_logprobs",
                u64::from(llama_safe::MAX_TOP_LOGPROBS),
            )?;
            match (on, n) {
                (false, Some(_)) => Err(ApiError::bad(
                    "top_logprobs",
                    "`top_logprobs` needs `logprobs: true`",
                )),
                (false, None) => Ok(None),
                (true, n) => Ok(Some(n.unwrap_or(0))),
            }
        }
        Api::Completions => top(&body.logprobs, "logprobs", 5),
        Api::Generate | Api::OllamaChat => Ok(None),
    }
}

/// Fields this server does not implement are refused, never ignored.
fn refuse_unsupported(body: &Body, api: Api) -> Result<(), ApiError> {
    let present = |v: &Option<Value>| match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    if !matches!(api, Api::Chat | Api::OllamaChat) && present(&body.tools) {
        return Err(ApiError::bad(
            "tools",
            "`tools` (tool calling) is for /v1/chat/completions and /api/chat",
        ));
    }
    if api == Api::Generate && present(&body.think) {
        return Err(ApiError::bad(
            "think",
            "/api/generate sends the prompt as it is, with no chat template to think in: \
             use /api/chat",
        ));
    }
    if !api.is_ollama() && present(&body.think) {
        return Err(ApiError::bad(
            "think",
            "`think` is Ollama's; on this route use `chat_template_kwargs.enable_thinking`",
        ));
    }
    for (field, value, what) in [
        (
            "functions",
            &body.functions,
            "the deprecated function calling: use `tools`",
        ),
        ("suffix", &body.suffix, "fill-in-the-middle"),
        (
            "system",
            &body.system,
            "a system prompt for /api/generate: use /api/chat with a system message",
        ),
        (
            "template",
            &body.template,
            "a prompt template of the request's own",
        ),
        (
            "context",
            &body.context,
            "Ollama's token context of an earlier answer",
        ),
    ] {
        if present(value) {
            return Err(ApiError::bad(
                field,
                format!("`{field}` ({what}) is not supported by this server"),
            ));
        }
    }
    // /api/generate sends the prompt as it is: Ollama's raw mode.
    if matches!(&body.raw, Some(v) if v != &Value::Bool(true) && !v.is_null()) {
        return Err(ApiError::bad(
            "raw",
            "this server sends /api/generate prompts as they are (Ollama's `raw: true`); \
             use /api/chat for the model's chat template",
        ));
    }
    if api == Api::Completions && present(&body.images) {
        return Err(ApiError::bad(
            "images",
            "`images` is Ollama's; on OpenAI's routes send `image_url` parts to /v1/chat/completions",
        ));
    }
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad(
            "n",
            "only `n: 1` is supported: send several requests for several answers",
        ));
    }
    Ok(())
}

/// The prompt (completions) or the messages (chat).
fn prompt_or_messages(
    body: &Body,
    api: Api,
    media: &mut crate::media::Collector,
) -> Result<(String, Option<Vec<ChatMessage>>), ApiError> {
    Ok(match api {
        Api::Chat | Api::OllamaChat => {
            let list = non_empty(body.messages.as_deref(), "messages", "array")?;
            let messages = list
                .iter()
                .map(|m| tools::message_with(m, media))
                .collect::<Result<Vec<ChatMessage>, _>>()?;
            (String::new(), Some(messages))
        }
        Api::Generate | Api::Completions => {
            let prompt = non_empty(body.prompt.as_deref(), "prompt", "string")?;
            let markers = match (&body.images, api) {
                (Some(images), Api::Generate) => media.ollama_images("images", images)?,
                _ => String::new(),
            };
            (markers + prompt, None)
        }
    })
}

/// A required field that must not be empty.
fn non_empty<'a, T: ?Sized + IsEmpty>(
    value: Option<&'a T>,
    field: &'static str,
    kind: &str,
) -> Result<&'a T, ApiError> {
    match value {
        None => Err(ApiError::bad(field, format!("`{field}` is required"))),
        Some(v) if v.is_empty() => Err(ApiError::bad(
            field,
            format!("`{field}` must be a non-empty {kind}"),
        )),
        Some(v) => Ok(v),
    }
}

/// What [`non_empty`] checks.
trait IsEmpty {
    fn is_empty(&self) -> bool;
}

impl IsEmpty for str {
    fn is_empty(&self) -> bool {
        str::is_empty(self)
    }
}

impl<T> IsEmpty for [T] {
    fn is_empty(&self) -> bool {
        <[T]>::is_empty(self)
    }
}

/// `max_tokens`, `max_completion_tokens` or Ollama's `num_predict`, at most
/// the context size.
fn max_tokens(
    body: &Body,
    opts: &Sampling,
    api: Api,
    max_tokens_limit: u32,
) -> Result<u32, ApiError> {
    let default_max = 256.min(max_tokens_limit);
    // OpenAI's newer name wins over the old one; Ollama's is num_predict.
    let (field, value) = match (
        api.is_ollama(),
        opts.num_predict,
        body.max_completion_tokens,
    ) {
        (true, Some(n), _) => ("num_predict", Some(n)),
        (_, _, Some(n)) => ("max_completion_tokens", Some(n)),
        _ => ("max_tokens", body.max_tokens),
    };
    Ok(match value {
        None => default_max,
        // Ollama: -1 means "until the context is full".
        Some(-1) if api.is_ollama() => max_tokens_limit,
        Some(n) if n < 1 || n > i64::from(max_tokens_limit) => {
            return Err(ApiError::bad(
                field,
                format!(
                "`{field}` must be between 1 and {max_tokens_limit} (the context size), got {n}"
            ),
            ))
        }
        Some(n) => n as u32,
    })
}

/// `temperature` (0 to `max_temperature`), `top_k` (0 to a million) and
/// `top_p` (above 0, at most 1), each checked when given.
pub(crate) fn basic_sampling(
    temperature: Option<f64>,
    max_temperature: f64,
    top_k: Option<f64>,
    top_p: Option<f64>,
) -> Result<SamplingOptions, ApiError> {
    let mut sampling = SamplingOptions::default();
    if let Some(t) = within(temperature, "temperature", 0.0, max_temperature)? {
        sampling = sampling.with_temperature(t as f32);
    }
    if let Some(k) = within(top_k, "top_k", 0.0, 1e6)? {
        sampling = sampling.with_top_k(k as i32);
    }
    if let Some(p) = within(top_p, "top_p", 0.0, 1.0)? {
        if p == 0.0 {
            return Err(ApiError::bad("top_p", "`top_p` must be above 0"));
        }
        sampling = sampling.with_top_p(p as f32);
    }
    Ok(sampling)
}

/// The sampler options: temperature, top-k/p, penalty, seed, logit biases.
fn sampling(body: &Body, opts: &Sampling, n_vocab: u32) -> Result<SamplingOptions, ApiError> {
    let mut sampling = basic_sampling(opts.temperature, 5.0, opts.top_k, opts.top_p)?;
    if let Some(p) = within(opts.repeat_penalty, "repeat_penalty", 0.0, 10.0)? {
        sampling = sampling.with_repeat_penalty(p as f32);
    }
    if let Some(seed) = opts.seed {
        sampling = sampling.with_seed(seed);
    }
    if let Some(bias) = &body.logit_bias {
        let mut biases = Vec::with_capacity(bias.len());
        for (token, b) in bias {
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
            if !(-100.0..=100.0).contains(b) {
                return Err(ApiError::bad(
                    "logit_bias",
                    "biases must be numbers from -100 to 100",
                ));
            }
            // As in OpenAI's API, -100 bans the token.
            let b = if *b <= -100.0 {
                f32::NEG_INFINITY
            } else {
                *b as f32
            };
            biases.push((llama_safe::Token(id), b));
        }
        let banned = biases
            .iter()
            .filter(|(_, b)| *b == f32::NEG_INFINITY)
            .count();
        if banned as u32 >= n_vocab {
            return Err(ApiError::bad(
                "logit_bias",
                "every token is banned (-100): there is nothing to generate",
            ));
        }
        sampling = sampling.with_logit_bias(biases);
    }
    Ok(sampling)
}

/// Stop strings given as a list (Anthropic's `stop_sequences`), checked
/// as `stop` is.
pub(crate) fn stop_list(stop: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    stop_strings(stop.map(Stop::Many))
}

/// `stop`: at most [`MAX_STOP_STRINGS`] non-empty strings of at most
/// [`MAX_STOP_BYTES`].
fn stop_strings(stop: Option<Stop>) -> Result<Vec<String>, ApiError> {
    let stop = match stop {
        None => Vec::new(),
        Some(Stop::One(s)) if !s.is_empty() => vec![s],
        Some(Stop::Many(items))
            if items.len() <= MAX_STOP_STRINGS && items.iter().all(|s| !s.is_empty()) =>
        {
            items
        }
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
    Ok(stop)
}

/// `value`, if given, when it lies in `min..=max`.
fn within(
    value: Option<f64>,
    name: &'static str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, ApiError> {
    match value {
        Some(x) if !(min..=max).contains(&x) => Err(ApiError::bad(
            name,
            format!("`{name}` must be a number from {min} to {max}"),
        )),
        other => Ok(other),
    }
}
