//! An Anthropic Messages request as the generation request the other APIs
//! make: messages for the chat template, sampling, tools, thinking.

use crate::embeddings::parse;
use crate::error::ApiError;
use crate::ollama::check_model;
use crate::request::{basic_sampling, stop_list, GenRequest};
use crate::tools::{checked_tool, schema_grammar, set_output_grammar, tool_use};
use crate::types::anthropic::{Block, Content, InputMessage, MessagesRequest, OutputConfig};
use crate::AppState;
use llama_safe::chat::ToolChoice;
use llama_safe::{ChatMessage, ToolCall};

/// Checks `body` and makes the request.
pub(super) fn request(state: &AppState, body: &[u8]) -> Result<GenRequest, ApiError> {
    let req: MessagesRequest = parse(body)?;
    check_model(state, Some(&req.model))?;
    let n_ctx = i64::from(state.n_ctx());
    if !(1..=n_ctx).contains(&req.max_tokens) {
        return Err(ApiError::bad(
            "max_tokens",
            format!(
                "`max_tokens` must be from 1 to {n_ctx} (the context size), got {}",
                req.max_tokens
            ),
        ));
    }
    if req.messages.is_empty() {
        return Err(ApiError::bad("messages", "`messages` must not be empty"));
    }
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        messages.push(ChatMessage::new("system", text_of(system, "system")?));
    }
    let mut media = crate::media::Collector::for_state(state);
    for m in &req.messages {
        convert_message(m, &mut messages, &mut media)?;
    }
    // Anthropic's temperatures go from 0 to 1.
    let mut sampling =
        basic_sampling(req.temperature, 1.0, req.top_k.map(|k| k as f64), req.top_p)?;
    let tools = req
        .tools
        .unwrap_or_default()
        .iter()
        .map(|t| {
            checked_tool(
                Some(&t.name),
                t.description
                    .clone()
                    .map(serde_json::Value::String)
                    .as_ref(),
                Some(&t.input_schema),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (choice, parallel) = match &req.tool_choice {
        None => (ToolChoice::Auto, true),
        Some(c) => {
            let choice = match (c.kind.as_str(), &c.name) {
                ("auto", _) => ToolChoice::Auto,
                ("any", _) => ToolChoice::Required,
                ("none", _) => ToolChoice::None,
                ("tool", Some(name)) => ToolChoice::Function(name.clone()),
                _ => {
                    return Err(ApiError::bad(
                        "tool_choice",
                        "`tool_choice.type` must be \"auto\", \"any\", \"none\" or \"tool\" (with `name`)",
                    ))
                }
            };
            (choice, c.disable_parallel_tool_use != Some(true))
        }
    };
    if tools.is_empty() && req.tool_choice.is_some() {
        return Err(ApiError::bad("tool_choice", "`tool_choice` needs `tools`"));
    }
    let tools = tool_use(
        tools,
        choice,
        parallel,
        state.model.tool_call_format(),
        &mut sampling,
    )?;
    let think = match &req.thinking {
        None => None,
        Some(t) => match t.kind.as_str() {
            "enabled" => Some(true),
            "disabled" => Some(false),
            // The model decides: the template's default.
            "adaptive" | "between_tools" => None,
            _ => {
                return Err(ApiError::bad(
                    "thinking",
                    "`thinking.type` must be \"enabled\", \"disabled\" or \"adaptive\"",
                ))
            }
        },
    };
    let format = match (&req.output_config, &req.output_format) {
        (
            Some(OutputConfig {
                format: Some(f), ..
            }),
            _,
        ) => Some(("output_config", f)),
        (_, Some(f)) => Some(("output_format", f)),
        _ => None,
    };
    if let Some((field, format)) = format {
        if format.kind != "json_schema" {
            return Err(ApiError::bad(
                field,
                "the output format's `type` must be \"json_schema\"",
            ));
        }
        let grammar = schema_grammar(&format.schema, field)?;
        set_output_grammar(grammar, field, &mut sampling)?;
    }
    Ok(GenRequest {
        prompt: String::new(),
        messages: Some(messages),
        max_tokens: req.max_tokens as u32,
        sampling,
        stop: stop_list(req.stop_sequences)?,
        stream: req.stream.unwrap_or(false),
        tools,
        think,
        logprobs: None,
        draft: None,
        media: media.parts,
    })
}

/// The text of a string or of text blocks (the system prompt, a tool's
/// result).
fn text_of(content: &Content, field: &'static str) -> Result<String, ApiError> {
    match content {
        Content::Text(t) => Ok(t.clone()),
        Content::Blocks(blocks) => blocks
            .iter()
            .map(|b| match b {
                Block::Text { text } => Ok(text.as_str()),
                _ => Err(ApiError::bad(
                    field,
                    format!("`{field}` takes text blocks only"),
                )),
            })
            .collect(),
    }
}

/// One Anthropic message as chat messages: a user's text and tool results
/// (each a `tool` message), an assistant's text and calls.
fn convert_message(
    m: &InputMessage,
    out: &mut Vec<ChatMessage>,
    media: &mut crate::media::Collector,
) -> Result<(), ApiError> {
    let bad = |s: &str| ApiError::bad("messages", s.to_string());
    let blocks = match &m.content {
        Content::Text(t) => {
            out.push(ChatMessage::new(m.role.clone(), t.clone()));
            return check_role(&m.role);
        }
        Content::Blocks(blocks) => blocks,
    };
    check_role(&m.role)?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block {
            Block::Text { text: t } => text.push_str(t),
            // Earlier thinking is not shown to the template again.
            Block::Thinking { .. } => {}
            Block::ToolUse { id, name, input } if m.role == "assistant" => {
                if !input.is_object() {
                    return Err(bad("a `tool_use` block's `input` must be an object"));
                }
                calls.push(ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: input.clone(),
                });
            }
            Block::ToolResult {
                tool_use_id,
                content,
                is_error,
            } if m.role == "user" => {
                let mut result = match content {
                    Some(c) => text_of(c, "messages")?,
                    None => String::new(),
                };
                if *is_error == Some(true) {
                    result.insert_str(0, "Error: ");
                }
                out.push(ChatMessage::tool_result(tool_use_id.clone(), result));
            }
            // `{"type": "base64", "media_type": ..., "data": ...}`; a URL
            // source is never fetched.
            Block::Image { source } => match source.get("type").and_then(|t| t.as_str()) {
                Some("base64") => {
                    let data = source.get("data").and_then(|d| d.as_str()).unwrap_or_default();
                    text.push_str(&media.add_base64("messages", data, false)?);
                }
                _ => {
                    return Err(bad(
                        "an image block's `source` must be base64 (`{\"type\": \"base64\", \
                         \"data\": ...}`); this server does not fetch URLs",
                    ))
                }
            },
            _ => {
                return Err(bad(
                    "`tool_use` blocks belong in assistant messages, `tool_result` blocks in user messages",
                ))
            }
        }
    }
    if !calls.is_empty() {
        let mut message = ChatMessage::tool_calls(calls);
        message.content = text;
        out.push(message);
    } else if !text.is_empty() || blocks.is_empty() {
        out.push(ChatMessage::new(m.role.clone(), text));
    }
    Ok(())
}

fn check_role(role: &str) -> Result<(), ApiError> {
    match role {
        "user" | "assistant" => Ok(()),
        _ => Err(ApiError::bad(
            "messages",
            format!("a message's `role` is \"user\" or \"assistant\", not {role:?}"),
        )),
    }
}
