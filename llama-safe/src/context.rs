//! [`LlamaContext`]: the state of one inference stream over a model (the KV
//! cache, the compute buffers), and decoding batches of tokens.

use crate::error::{Error, Result};
use crate::logging;
use crate::model::LlamaModel;
use crate::token::Token;
use std::ptr::NonNull;

/// Options for a [`LlamaContext`].
///
/// ```
/// let params = llama_safe::ContextParams::default().with_n_ctx(2048).with_threads(4);
/// assert_eq!(params.n_ctx(), 2048);
/// ```
#[derive(Debug, Clone)]
pub struct ContextParams {
    raw: llama_sys::llama_context_params,
}

// SAFETY: the raw struct is plain data here: its callback pointers stay NULL
// (this type never sets them), so nothing in it refers to another thread's data.
unsafe impl Send for ContextParams {}
// SAFETY: as above; it is only read through `&self`.
unsafe impl Sync for ContextParams {}

impl Default for ContextParams {
    /// llama.cpp's defaults (`llama_context_default_params`).
    fn default() -> Self {
        // SAFETY: returns a plain struct by value.
        ContextParams {
            raw: unsafe { llama_sys::llama_context_default_params() },
        }
    }
}

impl ContextParams {
    /// Context size in tokens (0: the model's training context).
    pub fn with_n_ctx(mut self, n: u32) -> Self {
        self.raw.n_ctx = n;
        self
    }
    /// The context size asked for.
    pub fn n_ctx(&self) -> u32 {
        self.raw.n_ctx
    }
    /// Largest batch handed to one `decode` (prompts are split to fit).
    pub fn with_n_batch(mut self, n: u32) -> Self {
        self.raw.n_batch = n.max(1);
        self
    }
    /// Physical micro-batch size.
    pub fn with_n_ubatch(mut self, n: u32) -> Self {
        self.raw.n_ubatch = n.max(1);
        self
    }
    /// Threads for generation and for prompt processing.
    pub fn with_threads(mut self, n: u32) -> Self {
        let n = i32::try_from(n.max(1)).unwrap_or(i32::MAX);
        self.raw.n_threads = n;
        self.raw.n_threads_batch = n;
        self
    }
    /// Threads for prompt (batch) processing only.
    pub fn with_threads_batch(mut self, n: u32) -> Self {
        self.raw.n_threads_batch = i32::try_from(n.max(1)).unwrap_or(i32::MAX);
        self
    }
    /// Generation threads asked for.
    pub fn threads(&self) -> u32 {
        self.raw.n_threads.max(1) as u32
    }
    /// Flash attention: `None` lets llama.cpp decide.
    pub fn with_flash_attention(mut self, enabled: Option<bool>) -> Self {
        self.raw.flash_attn_type = match enabled {
            None => llama_sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            Some(false) => llama_sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
            Some(true) => llama_sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        };
        self
    }
    /// Compute embeddings instead of (as well as) logits.
    pub fn with_embeddings(mut self, enabled: bool) -> Self {
        self.raw.embeddings = enabled;
        self
    }
    /// Offload the KV cache and attention to the GPU (default on).
    pub fn with_offload_kqv(mut self, enabled: bool) -> Self {
        self.raw.offload_kqv = enabled;
        self
    }
}

/// Why `llama_decode` failed, one variant per status it documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No KV cache slot for the batch: the context is full.
    #[error("no KV cache slot for the batch (the context is full)")]
    NoKvSlot,
    /// The abort callback stopped the computation.
    #[error("aborted")]
    Aborted,
    /// The batch was rejected (empty, bad positions or sequence ids).
    #[error("invalid batch")]
    InvalidBatch,
    /// Any other status.
    #[error("llama_decode returned {0}")]
    Other(i32),
}

impl DecodeError {
    fn from_status(status: i32) -> Option<DecodeError> {
        match status {
            0 => None,
            1 => Some(DecodeError::NoKvSlot),
            2 => Some(DecodeError::Aborted),
            -1 => Some(DecodeError::InvalidBatch),
            other => Some(DecodeError::Other(other)),
        }
    }
}

/// One inference stream over a model. It borrows the model, so the model
/// outlives it. `Send` (move it to a worker thread) but not `Sync`: llama.cpp
/// contexts are not safe to use from two threads at once.
pub struct LlamaContext<'model> {
    raw: NonNull<llama_sys::llama_context>,
    model: &'model LlamaModel,
    /// Next position in sequence 0.
    n_past: u32,
}

// SAFETY: a llama_context may move between threads; it refers only to its
// model, which is Sync, and `&mut self` on every mutating call keeps it to
// one thread at a time.
unsafe impl Send for LlamaContext<'_> {}

impl Drop for LlamaContext<'_> {
    fn drop(&mut self) {
        // SAFETY: raw came from llama_init_from_model and is freed once.
        unsafe { llama_sys::llama_free(self.raw.as_ptr()) };
    }
}

impl std::fmt::Debug for LlamaContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaContext")
            .field("n_ctx", &self.n_ctx())
            .field("n_past", &self.n_past)
            .finish()
    }
}

impl<'model> LlamaContext<'model> {
    /// Creates a context over `model`.
    pub fn new(model: &'model LlamaModel, params: &ContextParams) -> Result<LlamaContext<'model>> {
        // SAFETY: the model is live for 'model, longer than the context.
        let (raw, lines) = logging::capture(|| unsafe {
            llama_sys::llama_init_from_model(model.as_ptr(), params.raw)
        });
        let raw = NonNull::new(raw).ok_or_else(|| Error::Context {
            reason: logging::reason(&lines),
        })?;
        Ok(LlamaContext {
            raw,
            model,
            n_past: 0,
        })
    }

    /// The model this context runs.
    pub fn model(&self) -> &'model LlamaModel {
        self.model
    }

    /// Context size in tokens.
    pub fn n_ctx(&self) -> u32 {
        // SAFETY: the context is live.
        unsafe { llama_sys::llama_n_ctx(self.raw.as_ptr()) }
    }

    /// Largest batch one `decode` call takes.
    pub fn n_batch(&self) -> u32 {
        // SAFETY: the context is live.
        unsafe { llama_sys::llama_n_batch(self.raw.as_ptr()) }
    }

    /// Tokens in the KV cache of sequence 0 (the next position).
    pub fn n_past(&self) -> u32 {
        self.n_past
    }

    /// Clears the KV cache.
    pub fn clear(&mut self) {
        // SAFETY: the context is live; its memory handle lives with it.
        unsafe {
            llama_sys::llama_memory_clear(llama_sys::llama_get_memory(self.raw.as_ptr()), true)
        };
        self.n_past = 0;
    }

    /// Removes positions `from..` of sequence 0 from the KV cache, so
    /// generation can continue from `from`.
    pub fn truncate(&mut self, from: u32) -> bool {
        if from >= self.n_past {
            return true;
        }
        // SAFETY: the context is live; -1 means "to the end".
        let ok = unsafe {
            llama_sys::llama_memory_seq_rm(
                llama_sys::llama_get_memory(self.raw.as_ptr()),
                0,
                from as i32,
                -1,
            )
        };
        if ok {
            self.n_past = from;
        }
        ok
    }

    /// Appends `tokens` to sequence 0, splitting them into batches of at most
    /// `n_batch`, and keeps the logits of the last one. A prompt that does
    /// not fit the context is [`Error::PromptTooLong`] before anything runs.
    pub fn decode(&mut self, tokens: &[Token]) -> Result<()> {
        if tokens.is_empty() {
            return Err(DecodeError::InvalidBatch.into());
        }
        let needed = self.n_past as usize + tokens.len();
        if needed > self.n_ctx() as usize {
            return Err(Error::PromptTooLong {
                tokens: needed,
                n_ctx: self.n_ctx(),
            });
        }
        let n_batch = self.n_batch().max(1) as usize;
        for chunk in tokens.chunks(n_batch) {
            let mut ids: Vec<i32> = chunk.iter().map(|t| t.0).collect();
            // SAFETY: `ids` outlives the decode call; llama_batch_get_one
            // only points at it, and positions come from the KV cache.
            let status = unsafe {
                let batch = llama_sys::llama_batch_get_one(ids.as_mut_ptr(), ids.len() as i32);
                llama_sys::llama_decode(self.raw.as_ptr(), batch)
            };
            if let Some(e) = DecodeError::from_status(status) {
                return Err(e.into());
            }
            self.n_past += chunk.len() as u32;
        }
        Ok(())
    }

    /// The logits of the last decoded token (one per vocabulary entry).
    pub fn logits(&self) -> &[f32] {
        let n = self.model.n_vocab() as usize;
        // SAFETY: -1 asks for the last output; llama.cpp returns NULL if
        // there is none, else n_vocab floats valid until the next decode,
        // which needs `&mut self` and so cannot overlap this borrow.
        unsafe {
            let ptr = llama_sys::llama_get_logits_ith(self.raw.as_ptr(), -1);
            if ptr.is_null() {
                &[]
            } else {
                std::slice::from_raw_parts(ptr, n)
            }
        }
    }

    pub(crate) fn as_ptr(&mut self) -> *mut llama_sys::llama_context {
        self.raw.as_ptr()
    }
}
