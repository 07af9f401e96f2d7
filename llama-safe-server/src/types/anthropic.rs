//! Anthropic's Messages API bodies (`POST /v1/messages`) and its stream
//! events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A `/v1/messages` request. Unknown fields are ignored, as the official
/// clients send some (`metadata`, `service_tier`) with no meaning here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// The model's name.
    pub model: String,
    /// Most tokens to generate (required, as in Anthropic's API).
    pub max_tokens: i64,
    /// The conversation.
    pub messages: Vec<InputMessage>,
    /// The system prompt: a string, or text blocks.
    #[serde(default)]
    pub system: Option<Content>,
    /// Stop strings.
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// 0 to 1.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Option<Vec<ToolDefinition>>,
    /// `auto`, `any`, `tool` (with `name`) or `none`.
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    /// Extended thinking: `{"type": "enabled", "budget_tokens": N}`,
    /// `{"type": "disabled"}`, or `adaptive` (the template's default).
    #[serde(default)]
    pub thinking: Option<Thinking>,
    /// `format`: structured output following a JSON schema; `effort` is
    /// accepted and has no meaning here.
    #[serde(default)]
    pub output_config: Option<OutputConfig>,
    /// The same structured output, as the streaming helper sends it.
    #[serde(default)]
    pub output_format: Option<OutputFormat>,
}

/// How the answer is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputConfig {
    /// Anthropic's effort level: accepted, no meaning for a local model.
    #[serde(default)]
    pub effort: Option<String>,
    /// A JSON schema the answer follows.
    #[serde(default)]
    pub format: Option<OutputFormat>,
}

/// `{"type": "json_schema", "schema": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputFormat {
    /// `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The schema.
    pub schema: Value,
}

/// A message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// A string, or content blocks.
    pub content: Content,
}

/// A string, or content blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Text.
    Text(String),
    /// Blocks.
    Blocks(Vec<Block>),
}

/// A content block, in requests and answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// The model's thinking (with `thinking` enabled).
    Thinking {
        /// The text.
        thinking: String,
        /// Anthropic signs its thinking; this server writes an empty one.
        #[serde(default)]
        signature: String,
    },
    /// A call of a tool.
    ToolUse {
        /// `toolu_...`, answered by a `tool_result` with this id.
        id: String,
        /// The tool's name.
        name: String,
        /// Its arguments, a JSON object.
        input: Value,
    },
    /// A tool's result (in a user message).
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// A string, or text blocks.
        #[serde(default)]
        content: Option<Content>,
        /// Whether the tool failed.
        #[serde(default)]
        is_error: Option<bool>,
    },
    /// An image: not supported by this server (refused).
    Image {
        /// Where it is.
        source: Value,
    },
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// Its parameters, a JSON schema.
    pub input_schema: Value,
}

/// Whether and which tools the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolChoice {
    /// `auto`, `any`, `tool` or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `tool`: which.
    #[serde(default)]
    pub name: Option<String>,
    /// At most one call.
    #[serde(default)]
    pub disable_parallel_tool_use: Option<bool>,
}

/// Extended thinking on or off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thinking {
    /// `enabled` or `disabled`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Anthropic's thinking budget: accepted; the model's template decides.
    #[serde(default)]
    pub budget_tokens: Option<u64>,
}

/// A `/v1/messages` answer (and, empty, the start of a stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageResponse {
    /// `msg_...`.
    pub id: String,
    /// `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `assistant`.
    pub role: String,
    /// Thinking, text and tool calls, in order.
    pub content: Vec<Block>,
    /// The model's name.
    pub model: String,
    /// `end_turn`, `max_tokens`, `stop_sequence` or `tool_use`.
    pub stop_reason: Option<String>,
    /// The stop string met, with `stop_sequence`.
    pub stop_sequence: Option<String>,
    /// Token counts.
    pub usage: MessageUsage,
}

/// Token counts of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageUsage {
    /// Prompt tokens.
    pub input_tokens: usize,
    /// Tokens generated.
    pub output_tokens: usize,
}

/// A stream event; its `type` is also the SSE event's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The message, with no content yet.
    MessageStart {
        /// The message.
        message: MessageResponse,
    },
    /// A block begins.
    ContentBlockStart {
        /// Its place.
        index: usize,
        /// Its start (empty text, or a tool call with empty input).
        content_block: Block,
    },
    /// More of a block.
    ContentBlockDelta {
        /// Its place.
        index: usize,
        /// What it adds.
        delta: Delta,
    },
    /// A block ends.
    ContentBlockStop {
        /// Its place.
        index: usize,
    },
    /// The end: why, and the tokens generated.
    MessageDelta {
        /// The stop reason and sequence.
        delta: MessageDeltaBody,
        /// The tokens generated.
        usage: DeltaUsage,
    },
    /// The last event.
    MessageStop,
    /// Keeps the connection alive.
    Ping,
    /// A failure after the stream began.
    Error {
        /// What failed.
        error: ErrorBody,
    },
}

/// What a `content_block_delta` adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    /// Text.
    TextDelta {
        /// The text.
        text: String,
    },
    /// Thinking.
    ThinkingDelta {
        /// The text.
        thinking: String,
    },
    /// A tool call's arguments, as a piece of JSON.
    InputJsonDelta {
        /// The piece.
        partial_json: String,
    },
}

/// The stop reason, at the end of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    /// Why generation stopped.
    pub stop_reason: Option<String>,
    /// The stop string met.
    pub stop_sequence: Option<String>,
}

/// Tokens generated, at the end of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaUsage {
    /// Tokens generated.
    pub output_tokens: usize,
}

/// Anthropic's error body: `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What failed.
    pub error: ErrorBody,
}

/// What failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `invalid_request_error`, `authentication_error`, `not_found_error`,
    /// `rate_limit_error`, `api_error` or `overloaded_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What is wrong.
    pub message: String,
}
