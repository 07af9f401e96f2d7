//! Ollama's generate, chat, embed, tags and show bodies, as Ollama
//! documents them (`docs/api.md`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A chunk of a `/api/generate` or `/api/chat` stream, or the whole answer
/// with `"stream": false`: `response` for generate, `message` for chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The model's name.
    pub model: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// `/api/generate`: the text (of this chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// `/api/generate` with `think`: the thinking (of this chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// `/api/chat`: the message (of this chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// Whether this is the last chunk.
    pub done: bool,
    /// The figures, in the last chunk.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Done>,
}

/// What the last chunk adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// `stop` or `length`.
    pub done_reason: String,
    /// Nanoseconds, prompt and generation.
    pub total_duration: u64,
    /// Nanoseconds loading the model (0: it was loaded).
    pub load_duration: u64,
    /// Prompt tokens.
    pub prompt_eval_count: usize,
    /// Nanoseconds reading the prompt.
    pub prompt_eval_duration: u64,
    /// Tokens generated.
    pub eval_count: usize,
    /// Nanoseconds generating.
    pub eval_duration: u64,
    /// This server's exact figures.
    pub stats: crate::types::tokens::Stats,
}

/// A chat message in an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
    /// The thinking, apart from the answer (with `think`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// The calls, with `tools`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// A tool call as Ollama writes it: arguments as an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The function and its arguments.
    pub function: Function,
}

/// A called function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    /// The tool's name.
    pub name: String,
    /// A JSON object.
    pub arguments: Value,
}

/// A `/api/embed` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    /// The model's name.
    pub model: String,
    /// One text or a list of them.
    pub input: super::openai::EmbeddingInput,
    /// Cut inputs longer than the context instead of refusing them (true by
    /// default, as Ollama does).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Ollama's `keep_alive`: accepted, nothing to do with one model.
    #[serde(default)]
    pub keep_alive: Option<Value>,
    /// Ollama's `options`: none apply to embeddings here; refused if given.
    #[serde(default)]
    pub options: Option<Value>,
}

/// A `/api/embed` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedResponse {
    /// The model's name.
    pub model: String,
    /// One unit-length vector per input.
    pub embeddings: Vec<Vec<f32>>,
    /// Nanoseconds.
    pub total_duration: u64,
    /// Nanoseconds (0: the model was loaded).
    pub load_duration: u64,
    /// Tokens read.
    pub prompt_eval_count: usize,
}

/// `GET /api/tags`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tags {
    /// The models served.
    pub models: Vec<ModelEntry>,
}

/// A model in `/api/tags`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// The name requests use.
    pub name: String,
    /// The same.
    pub model: String,
    /// RFC 3339.
    pub modified_at: String,
    /// File size, bytes.
    pub size: u64,
    /// A SHA-256 of the file's path, size and modification time (hashing a
    /// large model would take minutes).
    pub digest: String,
    /// Format, family, size, quantization.
    pub details: Details,
}

/// A model's details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// Empty.
    pub parent_model: String,
    /// `gguf`.
    pub format: String,
    /// The architecture.
    pub family: String,
    /// The same, as a list.
    pub families: Vec<String>,
    /// Parameters, like `30.53B`.
    pub parameter_size: String,
    /// Like `Q4_K_M`.
    pub quantization_level: String,
}

/// `POST /api/show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Show {
    /// Empty.
    pub modelfile: String,
    /// Empty.
    pub parameters: String,
    /// The chat template.
    pub template: String,
    /// Format, family, size, quantization.
    pub details: Details,
    /// GGUF metadata: architecture, sizes, experts.
    pub model_info: serde_json::Map<String, Value>,
    /// What the model can do: `completion`, `tools`, `thinking`,
    /// `embedding`.
    pub capabilities: Vec<String>,
    /// RFC 3339.
    pub modified_at: String,
}

/// `GET /api/ps`: the models in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ps {
    /// The models loaded.
    pub models: Vec<Running>,
}

/// A model in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Running {
    /// The name requests use.
    pub name: String,
    /// The same.
    pub model: String,
    /// Bytes its dry run planned (weights, KV cache, compute buffers).
    pub size: u64,
    /// As in `/api/tags`.
    pub digest: String,
    /// Format, family, size, quantization.
    pub details: Details,
    /// When it unloads if no request comes (RFC 3339); far in the future
    /// when it is kept or in use.
    pub expires_at: String,
    /// Bytes on accelerators (0 on a CPU-only build).
    pub size_vram: u64,
}
