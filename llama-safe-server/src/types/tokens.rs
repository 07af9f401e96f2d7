//! llama-server's `/tokenize` and `/detokenize`, this server's `/health`,
//! and the stats every generation ends with.

use serde::{Deserialize, Serialize};

/// A `/tokenize` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizeRequest {
    /// The text.
    pub content: String,
    /// Add the model's start token and parse special tokens' text (false
    /// by default, as in llama-server).
    #[serde(default)]
    pub add_special: bool,
    /// Each token with its text instead of ids alone.
    #[serde(default)]
    pub with_pieces: bool,
}

/// A `/tokenize` answer: ids, or ids with their pieces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizeResponse {
    /// The tokens.
    pub tokens: Vec<TokenOut>,
}

/// A token id, or with `with_pieces` the id and its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenOut {
    /// The id.
    Id(i32),
    /// The id and its text (a string when it is UTF-8, else its bytes).
    WithPiece {
        /// The id.
        id: i32,
        /// Its text.
        piece: Piece,
    },
}

/// A token's text, or its bytes when it is not whole UTF-8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Piece {
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// A `/detokenize` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetokenizeRequest {
    /// Token ids.
    pub tokens: Vec<i64>,
}

/// A `/detokenize` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetokenizeResponse {
    /// The text (invalid UTF-8 replaced).
    pub content: String,
}

/// This server's exact figures for one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Milliseconds from the request to the first token.
    pub time_to_first_token_ms: f64,
    /// Prompt tokens per second.
    pub prompt_tokens_per_second: f64,
    /// Generated tokens per second.
    pub generation_tokens_per_second: f64,
    /// Why generation stopped (llama-safe's `StopReason`).
    pub stop_reason: String,
    /// Tokens drafted by speculative decoding, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drafted_tokens: Option<usize>,
    /// Drafted tokens the model agreed with, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_tokens: Option<usize>,
}

impl From<&llama_safe::GenerationStats> for Stats {
    fn from(s: &llama_safe::GenerationStats) -> Stats {
        Stats {
            prompt_tokens: s.prompt_tokens,
            generated_tokens: s.generated_tokens,
            time_to_first_token_ms: s.time_to_first_token.as_secs_f64() * 1e3,
            prompt_tokens_per_second: s.prompt_tokens_per_second,
            generation_tokens_per_second: s.generation_tokens_per_second,
            stop_reason: format!("{:?}", s.stop_reason),
            drafted_tokens: s.speculation.map(|x| x.drafted),
            accepted_tokens: s.speculation.map(|x| x.accepted),
        }
    }
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The model's name.
    pub model: String,
    /// Sequences decoded together.
    pub parallel: u32,
    /// Requests running.
    pub active: usize,
    /// Requests waiting.
    pub queued: usize,
    /// KV cells of the engine's context.
    pub kv_cells: u64,
    /// KV cells in use.
    pub kv_cells_used: u64,
    /// The models loaded, when the server serves several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}
