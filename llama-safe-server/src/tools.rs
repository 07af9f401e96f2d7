//! Tool calling and structured output in requests: OpenAI's `tools`,
//! `tool_choice`, `parallel_tool_calls`, tool messages and
//! `response_format`, Ollama's `format`; and the tool calls in answers,
//! whole or streamed.

use crate::error::ApiError;
use crate::types::openai::{FunctionCall, ToolCallOut};
use llama_safe::chat::{ToolCallFormat, ToolChoice};
use llama_safe::grammar::{json_object_grammar, json_schema_to_grammar};
use llama_safe::{ChatMessage, Error, SamplerStage, SamplingOptions, Tool, ToolCall};
use serde_json::{json, Value};

/// Most tools one request may define.
pub const MAX_TOOLS: usize = 128;

/// Tool calling asked for by a chat request (with `tool_choice` other
/// than `none`).
#[derive(Debug, Clone)]
pub struct ToolUse {
    /// The tools, for the chat template.
    pub tools: Vec<Tool>,
    /// How the model writes calls.
    pub format: ToolCallFormat,
}

/// Reads `tools`, `tool_choice` and `parallel_tool_calls`, and puts the
/// grammar that keeps the model's calls well-formed into `sampling`.
pub fn parse_tools(
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
    parallel_tool_calls: Option<&Value>,
    format: ToolCallFormat,
    sampling: &mut SamplingOptions,
) -> Result<Option<ToolUse>, ApiError> {
    let list = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_TOOLS => list.clone(),
        Some(_) => {
            return Err(ApiError::bad(
                "tools",
                format!("`tools` must be an array of at most {MAX_TOOLS} functions"),
            ))
        }
    };
    let tools = list.iter().map(tool).collect::<Result<Vec<_>, _>>()?;
    let choice = match tool_choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(_) if tools.is_empty() => {
            return Err(ApiError::bad("tool_choice", "`tool_choice` needs `tools`"))
        }
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            "none" => ToolChoice::None,
            _ => return Err(bad_choice()),
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if v.get("type").and_then(Value::as_str) == Some("function") => {
                ToolChoice::Function(name.to_string())
            }
            _ => return Err(bad_choice()),
        },
    };
    let parallel = match parallel_tool_calls {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad(
                "parallel_tool_calls",
                "`parallel_tool_calls` must be true or false",
            ))
        }
    };
    tool_use(tools, choice, parallel, format, sampling)
}

/// Tool calling with `tools` as `choice` and `parallel` allow: the grammar
/// that keeps the model's calls well-formed goes into `sampling`. No tools,
/// or [`ToolChoice::None`], is no tool calling.
pub fn tool_use(
    tools: Vec<Tool>,
    choice: ToolChoice,
    parallel: bool,
    format: ToolCallFormat,
    sampling: &mut SamplingOptions,
) -> Result<Option<ToolUse>, ApiError> {
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::bad(
            "tools",
            format!("at most {MAX_TOOLS} tools, not {}", tools.len()),
        ));
    }
    if tools.is_empty() || choice == ToolChoice::None {
        return Ok(None);
    }
    let stage = format
        .grammar(&tools, &choice, parallel)
        .map_err(|e| match e {
            Error::InvalidParameter { reason, .. } => {
                ApiError::bad("tool_choice", reason.to_string())
            }
            other => ApiError::bad("tools", other.to_string()),
        })?;
    match stage {
        Some(SamplerStage::LazyGrammar {
            grammar,
            trigger_words,
            ..
        }) => {
            *sampling = std::mem::take(sampling).with_lazy_grammar(grammar, trigger_words);
        }
        Some(SamplerStage::Grammar(grammar)) => {
            *sampling = std::mem::take(sampling).with_grammar(grammar)
        }
        _ => {}
    }
    Ok(Some(ToolUse { tools, format }))
}

fn bad_choice() -> ApiError {
    ApiError::bad(
        "tool_choice",
        "`tool_choice` must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
    )
}

/// A tool from its parts, checked: a name of 1 to 64 letters, digits, `_`
/// or `-`, and parameters that are a JSON schema object (none: no
/// parameters).
pub fn checked_tool(
    name: Option<&str>,
    description: Option<&Value>,
    parameters: Option<&Value>,
) -> Result<Tool, ApiError> {
    let bad = |m: &str| ApiError::bad("tools", m.to_string());
    let name = name
        .filter(|n| {
            (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .ok_or_else(|| bad("a function `name` is 1 to 64 letters, digits, `_` or `-`"))?;
    let description = match description {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("a function `description` must be a string")),
    };
    let parameters = match parameters {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(bad(
                "a function's `parameters` must be a JSON schema object",
            ))
        }
    };
    Ok(Tool {
        name: name.to_string(),
        description,
        parameters,
    })
}

/// One entry of `tools`: `{"type": "function", "function": {"name",
/// "description"?, "parameters"?}}`.
fn tool(v: &Value) -> Result<Tool, ApiError> {
    let bad = |m: &str| ApiError::bad("tools", m.to_string());
    if v.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad("each tool needs `\"type\": \"function\"`"));
    }
    let f = v
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("each tool needs a `function` object"))?;
    checked_tool(
        f.get("name").and_then(Value::as_str),
        f.get("description"),
        f.get("parameters"),
    )
}

/// OpenAI's `response_format` (`text`, `json_object`, `json_schema`) or
/// Ollama's `format` (`"json"` or a schema) as a grammar in `sampling`.
pub fn parse_response_format(
    value: Option<&Value>,
    field: &'static str,
    sampling: &mut SamplingOptions,
) -> Result<(), ApiError> {
    let grammar =
        match (field, value) {
            (_, None | Some(Value::Null)) => return Ok(()),
            ("format", Some(Value::String(s))) if s.is_empty() => return Ok(()),
            ("format", Some(Value::String(s))) if s == "json" => json_object_grammar(),
            ("format", Some(schema @ Value::Object(_))) => schema_grammar(schema, field)?,
            ("response_format", Some(v)) => match v.get("type").and_then(Value::as_str) {
                Some("text") => return Ok(()),
                Some("json_object") => json_object_grammar(),
                Some("json_schema") => {
                    let schema = v
                        .pointer("/json_schema/schema")
                        .ok_or_else(|| ApiError::bad(field, "`json_schema.schema` is required"))?;
                    schema_grammar(schema, field)?
                }
                _ => return Err(ApiError::bad(
                    field,
                    "`response_format.type` must be \"text\", \"json_object\" or \"json_schema\"",
                )),
            },
            _ => {
                return Err(ApiError::bad(
                    field,
                    "`format` must be \"json\" or a JSON schema object",
                ))
            }
        };
    set_output_grammar(grammar, field, sampling)
}

/// Puts the grammar of a structured output (asked for in `field`) into
/// `sampling`; a request that also calls tools is a 400.
pub fn set_output_grammar(
    grammar: String,
    field: &'static str,
    sampling: &mut SamplingOptions,
) -> Result<(), ApiError> {
    if sampling.grammar().is_some() {
        return Err(ApiError::bad(
            field,
            format!("`{field}` cannot be combined with tool calling"),
        ));
    }
    *sampling = std::mem::take(sampling).with_grammar(grammar);
    Ok(())
}

/// The grammar of a JSON schema given in `field`.
pub fn schema_grammar(schema: &Value, field: &'static str) -> Result<String, ApiError> {
    json_schema_to_grammar(schema).map_err(|e| ApiError::bad(field, e.to_string()))
}

/// One chat message: `role`, `content` (a string, null, or text parts),
/// an assistant's `tool_calls`, a tool's `tool_call_id`.
pub fn message(m: &Value) -> Result<ChatMessage, ApiError> {
    message_with(m, &mut crate::media::Collector::none())
}

/// [`message`], with images and audio (OpenAI's `image_url` and
/// `input_audio` parts, Ollama's `images`) collected into `media` and
/// their markers put in the content where they were (Ollama's before the
/// text).
pub fn message_with(
    m: &Value,
    media: &mut crate::media::Collector,
) -> Result<ChatMessage, ApiError> {
    let bad = |s: &str| ApiError::bad("messages", s.to_string());
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("each message needs a string `role` and a string `content`"))?;
    let tool_calls = match m.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .iter()
            .map(|c| {
                let f = c.get("function").unwrap_or(c);
                let name = f.get("name").and_then(Value::as_str);
                let arguments = match f.get("arguments") {
                    Some(Value::String(s)) => serde_json::from_str(s).ok(),
                    Some(v @ Value::Object(_)) => Some(v.clone()),
                    None => Some(json!({})),
                    Some(_) => None,
                };
                match (name, arguments) {
                    (Some(name), Some(arguments)) => Ok(ToolCall {
                        id: c
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        name: name.to_string(),
                        arguments,
                    }),
                    _ => Err(bad(
                        "a tool call needs `function.name` and `function.arguments` (a JSON object, or a string of one)",
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("`tool_calls` must be an array")),
    };
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) if !tool_calls.is_empty() => String::new(),
        Some(Value::Array(parts)) => media.content_parts(parts)?,
        _ => {
            return Err(bad(
                "each message needs a string `role` and a string `content`",
            ))
        }
    };
    let content = match m.get("images") {
        Some(images) => media.ollama_images("messages", images)? + &content,
        None => content,
    };
    let tool_call_id = match m.get("tool_call_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("`tool_call_id` must be a string")),
    };
    Ok(ChatMessage {
        role: role.to_string(),
        content,
        tool_calls,
        tool_call_id,
    })
}

/// The calls as OpenAI writes them: `arguments` a string of JSON; with
/// `index` for streamed deltas.
pub fn calls_out(calls: &[ToolCall], streamed: bool) -> Vec<ToolCallOut> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| ToolCallOut {
            index: streamed.then_some(i),
            id: c.id.clone(),
            kind: "function".into(),
            function: FunctionCall {
                name: c.name.clone(),
                arguments: c.arguments.to_string(),
            },
        })
        .collect()
}
