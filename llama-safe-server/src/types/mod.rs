//! The request and response bodies of each API as typed serde structs:
//! what the server writes (`Serialize`), and what a Rust client can read
//! (`Deserialize`). Fields a response leaves out are `Option`s skipped when
//! `None`, or lists skipped when empty.

pub mod anthropic;
pub mod ollama;
pub mod openai;
pub mod tokens;
