//! Safe, idiomatic [llama.cpp](https://github.com/ggml-org/llama.cpp) for
//! Rust, built for running big Mixture-of-Experts models on small GPUs.
//!
//! ```
//! use llama_safe::{demo::DemoModel, LlamaBackend, LlamaModel, LlamaModelParams};
//! let backend = LlamaBackend::init();
//! let params = LlamaModelParams::default().with_n_gpu_layers(999).with_cpu_moe_all();
//! let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &params)?;
//! assert_eq!(model.placement().moved.len(), 3 * 4); // gate, up, down experts of 4 layers
//! println!("{}", model.placement());
//! # Ok::<(), llama_safe::Error>(())
//! ```
//!
//! The crate is organised as:
//! - [`LlamaBackend`]: process-wide initialisation and devices;
//! - [`LlamaModelParams`] and [`moe`]: loading options, tensor overrides and
//!   the MoE offload builders; [`LlamaModelParams::plan`] and
//!   [`LlamaModelParams::fit_n_cpu_moe`] for dry runs;
//! - [`LlamaModel`] and [`Placement`]: the loaded model and where it went;
//! - [`LlamaContext`], [`Batch`], [`Sampler`] and [`LlamaContext::generate`]:
//!   decoding, KV cache and state, sampling and streaming generation with
//!   exact stats; [`LlamaContext::embed`] for pooled embeddings;
//! - [`chat`] and [`grammar`]: chat templates, tool calls, JSON-schema
//!   grammars for structured output;
//! - [`gguf`] and [`demo`]: reading and writing GGUF files, the demo model;
//! - `media` (the `mtmd` feature): images and audio through a projector
//!   file.

#![warn(missing_docs)]

mod backend;
pub mod chat;
mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod context;
pub mod demo;
mod device_lock;
mod embeddings;
pub mod engine;
mod error;
mod ffi;
pub mod files;
pub mod fit;
mod generate;
pub mod gguf;
pub mod grammar;
pub mod logging;
mod lora;
#[cfg(feature = "mtmd")]
pub mod media;
mod model;
mod model_params;
pub mod moe;
mod panic;
mod pattern_limits;
mod placement;
mod plan;
#[cfg(feature = "rpc")]
pub mod rpc;
mod sampler;
mod tensor_override;
mod token;

/// The raw bindings this crate is built on (`llama-safe-sys`), for what the
/// safe API does not cover; their types appear in [`RawModelParams`].
pub use llama_safe_sys as sys;

/// The limits this crate checks before llama.cpp sees an input: model
/// shapes it refuses to load, and the bounds of tensor-override patterns.
pub mod limits {
    pub use crate::check::{MAX_EXPERTS, MAX_LAYERS, MAX_TRAILING_BYTES};
    pub use crate::context::params::MAX_THREADS;
    pub use crate::pattern_limits::{MAX_NAME_LEN, MAX_NESTING, MAX_PATTERN_LEN, MAX_REPETITIONS};
}

pub use backend::{BackendOptions, Device, DeviceKind, LlamaBackend};
pub use chat::{ChatMessage, Tool, ToolCall};
pub use context::batch::Batch;
pub use context::params::{AbortCallback, ContextParams, FlashAttention, KvCacheType, Pooling};
pub use context::LlamaContext;
pub use embeddings::Normalize;
pub use error::{DecodeError, Error, ErrorKind, Reason, Result};
pub use fit::{FitOptions, Fitted};
pub use generate::speculate::{
    DraftModel, Speculation, SpeculationStats, MAX_DRAFT, MAX_NGRAM, MAX_VOCAB_DIFFERENCE,
};
pub use generate::{
    Event, GenerateOptions, Generation, GenerationStats, Piece, StopReason, TokenLogprob,
    MAX_TOP_LOGPROBS,
};
pub use lora::LoraAdapter;
pub use model::LlamaModel;
pub use model_params::{
    KvValue, LlamaModelParams, LoadMode, RawModelParams, SplitMode, MAX_CHAT_TEMPLATE_BYTES,
};
pub use moe::MoeMode;
pub use placement::{BufferUsage, MovedTensor, Placement};
pub use plan::{MoeFit, Plan, PlannedTensor};
pub use sampler::{Sampler, SamplerStage, SamplingOptions};
pub use tensor_override::{OverrideTarget, TensorPattern};
pub use token::{Token, TokenAttrs, Tokenize, Utf8Stream};

/// What is known of the llama.cpp revision this crate was built against.
pub const LLAMA_CPP_REVISION: &str = llama_safe_sys::LLAMA_CPP_REVISION;
