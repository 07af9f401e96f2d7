//! [`ContextParams`]: sizes, threads, attention, KV cache types, embeddings
//! and the abort callback of a [`LlamaContext`](crate::LlamaContext).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The most threads a context uses: ggml's `GGML_MAX_N_THREADS`.
pub const MAX_THREADS: u32 = 512;

/// A callback llama.cpp polls during a decode; returning `true` stops it with
/// [`DecodeError::Aborted`](crate::DecodeError::Aborted).
///
/// It may be called from llama.cpp's compute threads, hence `Send + Sync`. A
/// panic inside it never unwinds into C: it stops the decode, and once
/// llama.cpp has returned it goes on unwinding from the `decode` call.
pub type AbortCallback = Arc<dyn Fn() -> bool + Send + Sync>;

/// Options for a [`LlamaContext`](crate::LlamaContext).
///
/// ```
/// use llama_safe::{ContextParams, KvCacheType};
/// let params = ContextParams::default()
///     .with_n_ctx(2048)
///     .with_threads(4)
///     .with_kv_cache_type(KvCacheType::Q8_0, KvCacheType::F16);
/// assert_eq!(params.n_ctx(), 2048);
/// ```
#[derive(Clone)]
#[must_use = "builders return a new value: use it"]
pub struct ContextParams {
    pub(crate) raw: llama_safe_sys::llama_context_params,
    pub(crate) abort: Option<AbortCallback>,
}

// SAFETY: the raw struct is plain data here: its callback pointers stay NULL
// (the abort callback is kept as a Send + Sync Arc and wired up only by the
// context that owns a clone of it), so nothing in it refers to another
// thread's data.
unsafe impl Send for ContextParams {}
// SAFETY: as above; it is only read through `&self`.
unsafe impl Sync for ContextParams {}

impl Default for ContextParams {
    /// llama.cpp's defaults (`llama_context_default_params`).
    fn default() -> Self {
        // SAFETY: returns a plain struct by value.
        let raw = unsafe { llama_safe_sys::llama_context_default_params() };
        ContextParams { raw, abort: None }
    }
}

impl std::fmt::Debug for ContextParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextParams")
            .field("n_ctx", &self.raw.n_ctx)
            .field("n_batch", &self.raw.n_batch)
            .field("n_ubatch", &self.raw.n_ubatch)
            .field("n_seq_max", &self.raw.n_seq_max)
            .field("n_threads", &self.raw.n_threads)
            .field("n_threads_batch", &self.raw.n_threads_batch)
            .field("embeddings", &self.raw.embeddings)
            .field("pooling", &Pooling::from_raw(self.raw.pooling_type))
            .field("type_k", &KvCacheType::from_raw(self.raw.type_k))
            .field("type_v", &KvCacheType::from_raw(self.raw.type_v))
            .field("abort_callback", &self.abort.is_some())
            .finish_non_exhaustive()
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
    /// Most sequences (independent streams in one KV cache) a
    /// [`Batch`](crate::Batch) may address; default 1. llama.cpp refuses
    /// more than 256 when the context is created.
    pub fn with_n_seq_max(mut self, n: u32) -> Self {
        self.raw.n_seq_max = n.max(1);
        self
    }
    /// One KV buffer shared by all sequences (`true`) or one per sequence
    /// (`false`, llama.cpp's default). Shared is better when sequences share
    /// a long prefix. [`LlamaContext::embed`](crate::LlamaContext::embed) packs
    /// several texts into one decode only with a shared buffer: with one
    /// buffer per sequence, llama.cpp at this revision pools sequences of
    /// different lengths in one batch wrongly (checked in the tests).
    pub fn with_kv_unified(mut self, unified: bool) -> Self {
        self.raw.kv_unified = unified;
        self
    }
    /// Threads for generation and for prompt processing, from 1 to
    /// [`MAX_THREADS`] (ggml's `GGML_MAX_N_THREADS`); values outside are
    /// clamped (a huge count crashed inside the OpenMP runtime).
    pub fn with_threads(mut self, n: u32) -> Self {
        let n = n.clamp(1, MAX_THREADS) as i32;
        self.raw.n_threads = n;
        self.raw.n_threads_batch = n;
        self
    }
    /// Threads for prompt (batch) processing only, clamped to
    /// `1..=`[`MAX_THREADS`].
    pub fn with_threads_batch(mut self, n: u32) -> Self {
        self.raw.n_threads_batch = n.clamp(1, MAX_THREADS) as i32;
        self
    }
    /// Generation threads asked for.
    pub fn threads(&self) -> u32 {
        self.raw.n_threads.max(1) as u32
    }
    /// Flash attention (default [`FlashAttention::Auto`]: llama.cpp decides
    /// per device).
    pub fn with_flash_attention(mut self, mode: FlashAttention) -> Self {
        self.raw.flash_attn_type = match mode {
            FlashAttention::Auto => llama_safe_sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttention::Disabled => llama_safe_sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
            FlashAttention::Enabled => llama_safe_sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        };
        self
    }
    /// Data types of the K and V caches (default F16 for both). A quantized
    /// V cache needs flash attention; llama.cpp refuses the context otherwise
    /// ([`Error::Context`](crate::Error::Context)).
    pub fn with_kv_cache_type(mut self, k: KvCacheType, v: KvCacheType) -> Self {
        self.raw.type_k = k.to_raw();
        self.raw.type_v = v.to_raw();
        self
    }
    /// Compute embeddings (every token of a batch becomes an output).
    pub fn with_embeddings(mut self, enabled: bool) -> Self {
        self.raw.embeddings = enabled;
        self
    }
    /// Whether embeddings mode is on.
    pub fn embeddings(&self) -> bool {
        self.raw.embeddings
    }
    /// How embeddings are pooled per sequence ([`Pooling::Model`]: what the
    /// GGUF file says).
    pub fn with_pooling(mut self, pooling: Pooling) -> Self {
        self.raw.pooling_type = pooling.to_raw();
        self
    }
    /// Offload the KV cache and attention to the GPU (default on).
    pub fn with_offload_kqv(mut self, enabled: bool) -> Self {
        self.raw.offload_kqv = enabled;
        self
    }
    /// Let large batches run their operations on the GPU even for weights
    /// kept in host memory (default on; llama.cpp's `--no-op-offload` is
    /// `false`): with experts on the host, a long prompt's expert matrix
    /// products then copy the weights to the device instead of running on
    /// the CPU.
    pub fn with_op_offload(mut self, enabled: bool) -> Self {
        self.raw.op_offload = enabled;
        self
    }
    /// The most outputs (tokens whose logits are kept) one decode may ask
    /// for; 0 (the default) means `n_batch`. Generation needs one per
    /// sequence, and llama.cpp sizes its compute buffers for this many
    /// rows of `n_vocab` logits, so a small limit saves memory on a large
    /// vocabulary (llama-server sets it too). It must be at least
    /// `n_seq_max`, and 0 for embeddings (which output every token); a
    /// batch asking for more is
    /// [`DecodeError::TooManyOutputs`](crate::DecodeError::TooManyOutputs).
    ///
    /// ```
    /// let params = llama_safe::ContextParams::default().with_n_outputs_max(1);
    /// assert_eq!(params.n_outputs_max(), 1);
    /// ```
    pub fn with_n_outputs_max(mut self, n: u32) -> Self {
        self.raw.n_outputs_max = n;
        self
    }
    /// The output limit asked for (0: `n_batch`).
    pub fn n_outputs_max(&self) -> u32 {
        self.raw.n_outputs_max
    }
    /// Checks what llama.cpp asserts rather than reports: an output limit
    /// below `n_seq_max` aborts in `llama_init_from_model`
    /// (`output_reserve`), and embeddings output every token.
    pub(crate) fn check(&self) -> crate::Result<()> {
        let limit = self.raw.n_outputs_max;
        if limit == 0 {
            return Ok(());
        }
        if self.raw.embeddings {
            return Err(crate::Error::InvalidParameter {
                name: "n_outputs_max",
                reason: "an embeddings context outputs every token: leave n_outputs_max at 0"
                    .into(),
            });
        }
        if limit < self.raw.n_seq_max {
            return Err(crate::Error::InvalidParameter {
                name: "n_outputs_max",
                reason: format!(
                    "{limit} is below n_seq_max ({}): each sequence needs an output",
                    self.raw.n_seq_max
                )
                .into(),
            });
        }
        Ok(())
    }
    /// A callback polled during each decode; `true` aborts it.
    ///
    /// ```
    /// let params = llama_safe::ContextParams::default()
    ///     .with_abort_callback(std::sync::Arc::new(|| false));
    /// # let _ = params;
    /// ```
    pub fn with_abort_callback(mut self, callback: AbortCallback) -> Self {
        self.abort = Some(callback);
        self
    }
    /// Aborts decoding while `flag` is set (a convenience over
    /// [`with_abort_callback`](Self::with_abort_callback)).
    pub fn with_abort_flag(self, flag: Arc<AtomicBool>) -> Self {
        self.with_abort_callback(Arc::new(move || flag.load(Ordering::Relaxed)))
    }
}

/// Whether attention uses llama.cpp's fused flash-attention kernels
/// (llama.cpp's `-fa on|off|auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlashAttention {
    /// llama.cpp decides, per device (its default).
    #[default]
    Auto,
    /// Always: less memory for attention, and needed for a quantized V cache.
    Enabled,
    /// Never.
    Disabled,
}

/// Element type of the K or V cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvCacheType {
    /// 32-bit float.
    F32,
    /// 16-bit float (llama.cpp's default).
    F16,
    /// bfloat16.
    BF16,
    /// 8-bit blocks, about half the memory of F16.
    Q8_0,
    /// 4-bit blocks.
    Q4_0,
    /// 4-bit blocks with a minimum.
    Q4_1,
    /// 5-bit blocks.
    Q5_0,
    /// 5-bit blocks with a minimum.
    Q5_1,
    /// 4-bit non-linear blocks.
    Iq4Nl,
}

impl KvCacheType {
    const ALL: [(KvCacheType, llama_safe_sys::ggml_type); 9] = [
        (KvCacheType::F32, llama_safe_sys::GGML_TYPE_F32),
        (KvCacheType::F16, llama_safe_sys::GGML_TYPE_F16),
        (KvCacheType::BF16, llama_safe_sys::GGML_TYPE_BF16),
        (KvCacheType::Q8_0, llama_safe_sys::GGML_TYPE_Q8_0),
        (KvCacheType::Q4_0, llama_safe_sys::GGML_TYPE_Q4_0),
        (KvCacheType::Q4_1, llama_safe_sys::GGML_TYPE_Q4_1),
        (KvCacheType::Q5_0, llama_safe_sys::GGML_TYPE_Q5_0),
        (KvCacheType::Q5_1, llama_safe_sys::GGML_TYPE_Q5_1),
        (KvCacheType::Iq4Nl, llama_safe_sys::GGML_TYPE_IQ4_NL),
    ];

    fn to_raw(self) -> llama_safe_sys::ggml_type {
        Self::ALL
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, raw)| *raw)
            .unwrap_or(llama_safe_sys::GGML_TYPE_F16)
    }

    fn from_raw(raw: llama_safe_sys::ggml_type) -> Option<KvCacheType> {
        Self::ALL.iter().find(|(_, r)| *r == raw).map(|(t, _)| *t)
    }

    /// llama.cpp's name for the type, as its `--cache-type-k` takes it.
    pub fn name(self) -> &'static str {
        match self {
            KvCacheType::F32 => "f32",
            KvCacheType::F16 => "f16",
            KvCacheType::BF16 => "bf16",
            KvCacheType::Q8_0 => "q8_0",
            KvCacheType::Q4_0 => "q4_0",
            KvCacheType::Q4_1 => "q4_1",
            KvCacheType::Q5_0 => "q5_0",
            KvCacheType::Q5_1 => "q5_1",
            KvCacheType::Iq4Nl => "iq4_nl",
        }
    }
}

impl std::str::FromStr for KvCacheType {
    type Err = crate::Error;

    /// Parses llama.cpp's names (`f16`, `q8_0`, `iq4_nl`, ...), in any case.
    ///
    /// ```
    /// use llama_safe::KvCacheType;
    /// assert_eq!("Q8_0".parse::<KvCacheType>()?, KvCacheType::Q8_0);
    /// assert!("q3_k".parse::<KvCacheType>().is_err());
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    fn from_str(text: &str) -> crate::Result<KvCacheType> {
        Self::ALL
            .iter()
            .map(|(t, _)| *t)
            .find(|t| t.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| crate::Error::InvalidParameter {
                name: "KV cache type",
                reason: format!(
                    "{text:?} is not one of {}",
                    Self::ALL
                        .iter()
                        .map(|(t, _)| t.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into(),
            })
    }
}

/// How a sequence's token embeddings are pooled into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pooling {
    /// What the model's GGUF file says (none for most generative models).
    Model,
    /// No pooling: one embedding per token.
    None,
    /// The mean over the sequence's tokens.
    Mean,
    /// The first (CLS) token.
    Cls,
    /// The last token.
    Last,
    /// A reranker's score (models with a classification head).
    Rank,
}

impl Pooling {
    fn to_raw(self) -> llama_safe_sys::llama_pooling_type {
        match self {
            Pooling::Model => llama_safe_sys::LLAMA_POOLING_TYPE_UNSPECIFIED,
            Pooling::None => llama_safe_sys::LLAMA_POOLING_TYPE_NONE,
            Pooling::Mean => llama_safe_sys::LLAMA_POOLING_TYPE_MEAN,
            Pooling::Cls => llama_safe_sys::LLAMA_POOLING_TYPE_CLS,
            Pooling::Last => llama_safe_sys::LLAMA_POOLING_TYPE_LAST,
            Pooling::Rank => llama_safe_sys::LLAMA_POOLING_TYPE_RANK,
        }
    }

    pub(crate) fn from_raw(raw: llama_safe_sys::llama_pooling_type) -> Pooling {
        match raw {
            llama_safe_sys::LLAMA_POOLING_TYPE_NONE => Pooling::None,
            llama_safe_sys::LLAMA_POOLING_TYPE_MEAN => Pooling::Mean,
            llama_safe_sys::LLAMA_POOLING_TYPE_CLS => Pooling::Cls,
            llama_safe_sys::LLAMA_POOLING_TYPE_LAST => Pooling::Last,
            llama_safe_sys::LLAMA_POOLING_TYPE_RANK => Pooling::Rank,
            _ => Pooling::Model,
        }
    }
}
