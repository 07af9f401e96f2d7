//! OpenAI's chat, completions, embeddings and models bodies.

use serde::{Deserialize, Serialize};

/// Token counts of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens (the rendered chat prompt for chat).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Both.
    pub total_tokens: usize,
}

/// A `/v1/completions` answer, or one chunk of its stream
/// (`object: "text_completion"` for both, as OpenAI writes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// `cmpl-N`, the same in every chunk of one answer.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model's name.
    pub model: String,
    /// The one answer.
    pub choices: Vec<CompletionChoice>,
    /// In the answer, and in the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The text of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// Always 0 (`n` is 1).
    pub index: u32,
    /// The text (of this chunk, when streamed).
    pub text: String,
    /// `stop` or `length`; `null` before the end of a stream.
    pub finish_reason: Option<String>,
    /// With `logprobs: N`.
    pub logprobs: Option<CompletionLogprobs>,
}

/// The legacy completions' log-probabilities: one entry per token.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    /// Each token's text.
    pub tokens: Vec<String>,
    /// Each token's log-probability.
    pub token_logprobs: Vec<f32>,
    /// The most likely tokens at each position, text to log-probability.
    pub top_logprobs: Vec<std::collections::BTreeMap<String, f32>>,
    /// Byte offset of each token in the text.
    pub text_offset: Vec<usize>,
}

/// A `/v1/chat/completions` answer (`chat.completion`) or stream chunk
/// (`chat.completion.chunk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-N`, the same in every chunk of one answer.
    pub id: String,
    /// `chat.completion` or `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model's name.
    pub model: String,
    /// The one answer.
    pub choices: Vec<ChatChoice>,
    /// In the answer, and in the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The answer (`message`) or a chunk of it (`delta`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Always 0.
    pub index: u32,
    /// The whole message, in an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<ChatReply>,
    /// What this chunk adds, in a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<ChatReply>,
    /// `stop`, `length` or `tool_calls`; `null` before the end of a stream.
    pub finish_reason: Option<String>,
    /// With `logprobs: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<ChatLogprobs>,
}

/// The assistant's message, or what a chunk adds to it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatReply {
    /// `assistant` (in the first chunk of a stream, and in an answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The text; `null` in an answer that only calls tools.
    pub content: Option<String>,
    /// The model's thinking, apart from the answer (templates that think).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// The calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut>,
}

/// One tool call as OpenAI writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallOut {
    /// Its place among the calls, in streamed deltas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// `call_...`, answered by a `tool` message with this id.
    pub id: String,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
}

/// A function's name and its arguments as a string of JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The tool's name.
    pub name: String,
    /// A JSON object, as a string.
    pub arguments: String,
}

/// Chat log-probabilities: one entry per token.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatLogprobs {
    /// The tokens of the content.
    pub content: Vec<TokenLogprob>,
}

/// One token's log-probability, and the most likely tokens in its place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text (lossy where a character spans tokens).
    pub token: String,
    /// Its log-probability under the model.
    pub logprob: f32,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The `top_logprobs` most likely tokens (empty in the alternatives).
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative token and its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A `/v1/embeddings` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    /// One text or a list of them (token arrays are not taken).
    pub input: EmbeddingInput,
    /// The model's name.
    #[serde(default)]
    pub model: Option<String>,
    /// `float` (the default) or `base64` (little-endian `f32`s).
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Not supported (the model's size is the only one): refused if given.
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// Ignored, as OpenAI's API allows.
    #[serde(default)]
    pub user: Option<String>,
}

/// One text or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A `/v1/embeddings` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    /// `list`.
    pub object: String,
    /// One per input, in order.
    pub data: Vec<Embedding>,
    /// The model's name.
    pub model: String,
    /// Tokens read.
    pub usage: EmbeddingsUsage,
}

/// One input's vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// `embedding`.
    pub object: String,
    /// Unit length (Euclidean): a list of floats, or a base64 string.
    pub embedding: EmbeddingVector,
    /// The input's index.
    pub index: usize,
}

/// Floats, or base64 of little-endian `f32`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: "float"`.
    Float(Vec<f32>),
    /// `encoding_format: "base64"`.
    Base64(String),
}

/// Tokens read by an embeddings request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsUsage {
    /// Tokens of all inputs.
    pub prompt_tokens: usize,
    /// The same.
    pub total_tokens: usize,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The models served.
    pub data: Vec<Model>,
}

/// A model served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// The name requests use.
    pub id: String,
    /// `model`.
    pub object: String,
    /// The file's modification time, Unix seconds.
    pub created: u64,
    /// `llama-safe`.
    pub owned_by: String,
    /// File size, bytes (this server's addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The architecture (this server's addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The quantization, like `Q4_K_M` (this server's addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// Whether it is in memory now (this server's addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<bool>,
}
