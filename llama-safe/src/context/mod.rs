//! [`LlamaContext`]: the state of inference over a model (the KV cache, the
//! compute buffers), and decoding tokens and batches.
//!
//! - `params`: [`ContextParams`] and its types (at the crate root);
//! - `batch`: the multi-sequence [`Batch`] (at the crate root);
//! - `memory`: KV cache operations on sequences;
//! - `state`: saving and restoring the context state.

pub(crate) mod batch;
pub(crate) mod breakdown;
mod memory;
pub(crate) mod params;
mod state;

pub use breakdown::{device_bytes, device_totals, host_bytes, MemoryTotals, MemoryUse};

use crate::error::{DecodeError, Error, Result};
use crate::model::LlamaModel;
use crate::token::Token;
use batch::Batch;
use params::{AbortCallback, ContextParams, Pooling};
use std::ffi::c_void;
use std::ptr::NonNull;

/// One inference stream over a model (or several, with sequence ids and
/// [`Batch`]). It holds a handle of its model, so it can live beside it or
/// without it, in a struct or in a server's state:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use llama_safe::{demo::DemoModel, ContextParams, LlamaBackend, LlamaContext, LlamaModel};
///
/// struct Service {
///     model: LlamaModel,
///     ctx: LlamaContext,
/// }
///
/// let backend = LlamaBackend::init();
/// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
/// let ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(256))?;
/// let service = Service { model, ctx };
/// // Shared state for a web server's handlers (axum's `State` needs Send + Sync + 'static):
/// let state: Arc<Mutex<Service>> = Arc::new(Mutex::new(service));
/// fn handler_state<T: Send + Sync + 'static>(_: &T) {}
/// handler_state(&state);
/// // A context outlives the handle it was made from:
/// let ctx = {
///     let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
///     LlamaContext::new(&model, &ContextParams::default().with_n_ctx(256))?
/// };
/// assert_eq!(ctx.n_past(), 0);
/// # Ok::<(), llama_safe::Error>(())
/// ```
///
/// Logits borrow the context until the next decode overwrites them:
///
/// ```compile_fail,E0502
/// use llama_safe::{demo::DemoModel, ContextParams, LlamaBackend, LlamaContext, LlamaModel, Tokenize};
/// let backend = LlamaBackend::init();
/// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
/// let mut ctx = LlamaContext::new(&model, &ContextParams::default())?;
/// ctx.decode(&model.tokenize("Once", Tokenize::PROMPT)?)?;
/// let logits = ctx.logits();
/// ctx.decode(&model.tokenize(" upon", Tokenize::TEXT)?)?; // error: `ctx` is borrowed
/// println!("{}", logits[0]);
/// # Ok::<(), llama_safe::Error>(())
/// ```
///
/// A context is not `Sync`:
///
/// ```compile_fail,E0277
/// fn shared<T: Sync>() {}
/// shared::<llama_safe::LlamaContext>();
/// ```
///
/// `Send` (move it to a worker thread) but not `Sync`: llama.cpp contexts
/// are not safe to use from two threads at once, and every call that runs
/// the model takes `&mut self`. Many contexts over one shared
/// [`LlamaModel`] (which is `Send + Sync`) may run in parallel.
pub struct LlamaContext {
    raw: NonNull<llama_safe_sys::llama_context>,
    /// Dropped after the context is freed (fields drop after `Drop::drop`).
    model: LlamaModel,
    /// Batch indices whose outputs the last decode kept.
    outputs: Vec<usize>,
    pub(crate) embeddings: bool,
    kv_unified: bool,
    /// The output limit asked for (0: `n_batch`).
    pub(crate) outputs_max: u32,
    /// Kept alive (at a stable address) as long as llama.cpp may call it.
    abort: Option<Box<AbortState>>,
    /// The LoRA adapters applied, kept alive while llama.cpp refers to them
    /// (dropped after `llama_free`).
    pub(crate) loras: Vec<std::sync::Arc<dyn Send + Sync>>,
}

// SAFETY: a llama_context may move between threads; it refers only to its
// model, which is Sync, and the abort callback, which is Send + Sync;
// `&mut self` on every call that computes keeps it to one thread at a time.
unsafe impl Send for LlamaContext {}

impl Drop for LlamaContext {
    fn drop(&mut self) {
        let _device = self.model.device_guard();
        // SAFETY: raw came from llama_init_from_model and is freed once; the
        // abort callback box and the model handle are dropped after this
        // (fields drop after `drop`), when nothing refers to them.
        unsafe { llama_safe_sys::llama_free(self.raw.as_ptr()) };
    }
}

impl std::fmt::Debug for LlamaContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaContext")
            .field("n_ctx", &self.n_ctx())
            .field("n_past", &self.n_past())
            .finish_non_exhaustive()
    }
}

/// The abort callback and its panic, if it panicked.
struct AbortState {
    callback: AbortCallback,
    panic: crate::panic::Caught,
}

/// Calls the user's abort callback; a panic aborts the computation and is
/// resumed when the decode has returned.
unsafe extern "C" fn abort_trampoline(data: *mut c_void) -> bool {
    // SAFETY: data is the Box<AbortState> the context keeps alive for as
    // long as llama.cpp holds the pointer; the callback is Sync, so calls
    // from several compute threads at once are fine.
    let state = unsafe { &*(data as *const AbortState) };
    state.panic.wrap(|| (state.callback)()).unwrap_or(true)
}

impl LlamaContext {
    /// Creates a context over `model`. llama.cpp's refusal (an impossible
    /// size, a quantized V cache without flash attention, too many
    /// sequences) is [`Error::Context`] with its logged reason; a
    /// vocabulary-only model is [`Error::Unsupported`].
    ///
    /// ```
    /// use llama_safe::{demo::DemoModel, ContextParams, LlamaBackend, LlamaContext, LlamaModel};
    /// let backend = LlamaBackend::init();
    /// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
    /// let ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(256))?;
    /// assert_eq!(ctx.n_past(), 0);
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn new(model: &LlamaModel, params: &ContextParams) -> Result<LlamaContext> {
        if model.is_vocab_only() {
            // llama.cpp creates the context, then aborts in the first decode
            // (the model has no tensors to build a graph from).
            return Err(Error::Unsupported {
                reason: "a context needs weights; this model was loaded vocabulary-only".into(),
            });
        }
        params.check()?;
        let abort = params.abort.clone().map(|callback| {
            Box::new(AbortState {
                callback,
                panic: Default::default(),
            })
        });
        let mut raw_params = params.raw;
        if let Some(callback) = &abort {
            raw_params.abort_callback = Some(abort_trampoline);
            raw_params.abort_callback_data = (&**callback as *const AbortState).cast_mut().cast();
        }
        let raw = {
            // One thread at a time on a Vulkan device (see `device_lock`).
            let _device = model.device_guard();
            // SAFETY: the context keeps a handle of the model, so the model
            // is freed after the context (see Drop); the abort data pointer
            // stays valid while the context lives (the box moves into it and
            // is dropped after llama_free).
            crate::ffi::non_null(
                || unsafe { llama_safe_sys::llama_init_from_model(model.as_ptr(), raw_params) },
                |reason| Error::Context { reason },
            )?
        };
        Ok(LlamaContext {
            raw,
            model: model.clone(),
            outputs: Vec::new(),
            embeddings: params.raw.embeddings,
            kv_unified: params.raw.kv_unified,
            outputs_max: params.raw.n_outputs_max,
            abort,
            loras: Vec::new(),
        })
    }

    /// Locks the devices of this context's model whose work is serialised
    /// (Vulkan's: see `device_lock`) until the guard drops.
    pub(crate) fn device_guard(&self) -> crate::device_lock::DeviceGuard {
        self.model.device_guard()
    }

    /// The model this context runs.
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// Context size in tokens (llama.cpp may round the size asked for up).
    pub fn n_ctx(&self) -> u32 {
        // SAFETY: the context is live.
        unsafe { llama_safe_sys::llama_n_ctx(self.raw.as_ptr()) }
    }

    /// Largest batch one `decode` call takes.
    pub fn n_batch(&self) -> u32 {
        // SAFETY: the context is live.
        unsafe { llama_safe_sys::llama_n_batch(self.raw.as_ptr()) }
    }

    /// Physical micro-batch size.
    pub fn n_ubatch(&self) -> u32 {
        // SAFETY: the context is live.
        unsafe { llama_safe_sys::llama_n_ubatch(self.raw.as_ptr()) }
    }

    /// Whether the context computes embeddings.
    pub fn embeddings_enabled(&self) -> bool {
        self.embeddings
    }

    /// Whether all sequences share one KV buffer
    /// ([`ContextParams::with_kv_unified`]).
    pub fn kv_unified(&self) -> bool {
        self.kv_unified
    }

    /// Number of sequences a batch may address (ids `0..n_seq_max`).
    pub fn n_seq_max(&self) -> u32 {
        // SAFETY: the context is live.
        unsafe { llama_safe_sys::llama_n_seq_max(self.raw.as_ptr()) }
    }

    /// The pooling in effect (the model's, unless chosen in the params).
    pub fn pooling(&self) -> Pooling {
        // SAFETY: the context is live.
        Pooling::from_raw(unsafe { llama_safe_sys::llama_pooling_type(self.raw.as_ptr()) })
    }

    /// Tokens in the KV cache of sequence 0, i.e. the next position of
    /// [`decode`](Self::decode).
    pub fn n_past(&self) -> u32 {
        self.seq_pos_max(0).map_or(0, |p| p + 1)
    }

    /// Most tokens one llama.cpp decode call may carry: `n_batch`, or
    /// `n_ubatch` where attention is not causal (llama.cpp aborts beyond).
    pub(crate) fn decode_limit(&self) -> u32 {
        // SAFETY: the context and model are live.
        let whole_ubatch = unsafe {
            !llama_safe_sys::llama_get_causal_attn(self.raw.as_ptr())
                || llama_safe_sys::llama_model_has_encoder(self.model.as_ptr())
        };
        if whole_ubatch {
            self.n_ubatch()
        } else {
            self.n_batch()
        }
    }

    /// Appends `tokens` to sequence 0, splitting them into batches that one
    /// decode takes, and keeps the output of the last one (of all of them in
    /// embeddings mode). A prompt that does not fit the context is
    /// [`Error::PromptTooLong`] before anything runs; no tokens is
    /// [`Error::EmptyPrompt`].
    pub fn decode(&mut self, tokens: &[Token]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let start = self.n_past();
        let needed = start as usize + tokens.len();
        if needed > self.n_ctx() as usize {
            return Err(Error::PromptTooLong {
                tokens: needed,
                n_ctx: self.n_ctx(),
            });
        }
        let limit = self.decode_limit().max(1) as usize;
        let mut batch = Batch::new();
        let mut pos = start;
        for chunk in tokens.chunks(limit) {
            batch.clear();
            batch.add_sequence(chunk, pos, 0, true)?;
            if self.embeddings {
                batch.keep_all_outputs();
            }
            self.decode_batch(&batch)?;
            pos += chunk.len() as u32;
        }
        Ok(())
    }

    /// Decodes a [`Batch`] as it is: tokens of any sequences, at the
    /// positions given. The batch is checked first (not empty, within one
    /// decode's limit, sequence ids below `n_seq_max`); llama.cpp's own
    /// checks come back as [`DecodeError`].
    pub fn decode_batch(&mut self, batch: &Batch) -> Result<()> {
        #[cfg(feature = "tracing")]
        let _span = tracing::debug_span!("llama_decode", tokens = batch.len()).entered();
        if batch.is_empty() {
            return Err(DecodeError::InvalidBatch.into());
        }
        let limit = self.decode_limit();
        if batch.len() > limit as usize {
            return Err(DecodeError::BatchTooLarge {
                tokens: batch.len(),
                limit,
            }
            .into());
        }
        // llama.cpp asserts (aborts) on a batch with more outputs than the
        // context's output limit (`output_reserve`); embeddings contexts
        // output every token.
        let outputs = if self.embeddings {
            batch.len()
        } else {
            batch.n_outputs()
        };
        if self.outputs_max != 0 && outputs > self.outputs_max as usize {
            return Err(DecodeError::TooManyOutputs {
                outputs,
                limit: self.outputs_max,
            }
            .into());
        }
        let n_seq_max = self.n_seq_max();
        if let Some(seq) = batch.max_seq().filter(|&s| s >= n_seq_max as i32) {
            return Err(Error::InvalidSequence {
                seq: seq.into(),
                n_seq_max,
            });
        }
        self.outputs.clear();
        let mut status = 0;
        let device = self.model.device_guard();
        // SAFETY: the raw view borrows `batch`, which outlives the call;
        // llama.cpp copies what it needs and keeps no pointer into it. The
        // checks above rule out its asserts on batch size and sequence ids;
        // a throw (say, std::bad_alloc) is caught by the firewall.
        let thrown = batch.with_raw(|raw| unsafe {
            llama_safe_sys::llama_sys_decode(self.raw.as_ptr(), raw, &mut status)
        });
        drop(device);
        if let Some(abort) = &self.abort {
            // The abort callback panicked (and so aborted the decode).
            abort.panic.resume();
        }
        crate::ffi::check("llama_decode", thrown)?;
        if let Some(e) = DecodeError::from_status(status) {
            return Err(e.into());
        }
        self.outputs = if self.embeddings {
            (0..batch.len()).collect()
        } else {
            batch.output_indices().collect()
        };
        Ok(())
    }

    /// The logits of the last output of the last decode (one per
    /// vocabulary entry); empty if it kept no output.
    pub fn logits(&self) -> &[f32] {
        match self.last_output() {
            Some(i) => self.logits_ith(i).unwrap_or(&[]),
            None => &[],
        }
    }

    /// The batch index of the last output of the last decode.
    pub(crate) fn last_output(&self) -> Option<usize> {
        self.outputs.last().copied()
    }

    /// The logits of batch entry `i` of the last decode, if its output was
    /// kept.
    pub fn logits_ith(&self, i: usize) -> Option<&[f32]> {
        if !self.outputs.contains(&i) {
            return None;
        }
        let n = self.model.n_vocab() as usize;
        // SAFETY: `i` is an output of the last decode, so llama.cpp has
        // n_vocab floats for it, valid until the next decode, which needs
        // `&mut self` and so cannot overlap this borrow.
        unsafe {
            let ptr = llama_safe_sys::llama_get_logits_ith(self.raw.as_ptr(), i as i32);
            (!ptr.is_null()).then(|| std::slice::from_raw_parts(ptr, n))
        }
    }

    /// The embedding of batch entry `i` of the last decode (embeddings mode,
    /// no pooling), [`n_embd_out`](LlamaModel::n_embd_out) floats.
    pub fn embeddings_ith(&self, i: usize) -> Option<&[f32]> {
        if !self.embeddings || !self.outputs.contains(&i) {
            return None;
        }
        let n = self.model.n_embd_out() as usize;
        // SAFETY: as for logits_ith: an output of the last decode, for which
        // llama.cpp keeps n_embd_out floats (llama_context::get_embeddings_ith
        // and the output buffer are sized by hparams.n_embd_out()), valid
        // until the next `&mut self` call.
        unsafe {
            let ptr = llama_safe_sys::llama_get_embeddings_ith(self.raw.as_ptr(), i as i32);
            (!ptr.is_null()).then(|| std::slice::from_raw_parts(ptr, n))
        }
    }

    /// The pooled embedding of sequence `seq` from the last decode
    /// (embeddings mode with a pooling other than `None`): `n_embd_out` floats,
    /// or one score per class with [`Pooling::Rank`].
    pub fn embeddings_seq(&self, seq: u32) -> Option<&[f32]> {
        if !self.embeddings || seq >= self.n_seq_max() {
            return None;
        }
        let n = match self.pooling() {
            Pooling::None | Pooling::Model => return None,
            // SAFETY: the model is live.
            Pooling::Rank => unsafe { llama_safe_sys::llama_model_n_cls_out(self.model.as_ptr()) }
                .max(1) as usize,
            _ => self.model.n_embd_out() as usize,
        };
        // SAFETY: llama.cpp returns NULL for a sequence the last decode did
        // not pool, else n floats valid until the next `&mut self` call.
        unsafe {
            let ptr = llama_safe_sys::llama_get_embeddings_seq(self.raw.as_ptr(), seq as i32);
            (!ptr.is_null()).then(|| std::slice::from_raw_parts(ptr, n))
        }
    }

    /// After a decode llama.cpp ran by itself (media embeddings): no
    /// output of it is kept.
    #[cfg(feature = "mtmd")]
    pub(crate) fn forget_outputs(&mut self) {
        self.outputs.clear();
    }

    pub(crate) fn as_ptr(&mut self) -> *mut llama_safe_sys::llama_context {
        self.raw.as_ptr()
    }

    fn memory(&self) -> llama_safe_sys::llama_memory_t {
        // SAFETY: the context is live; its memory handle lives with it.
        unsafe { llama_safe_sys::llama_get_memory(self.raw.as_ptr()) }
    }
}
