//! [`LlamaModel`]: loaded weights, their facts, and where they were placed.

use crate::backend::LlamaBackend;
use crate::error::{Error, Result};
use crate::ffi::c_path;
use crate::gguf::GgufFile;
use crate::logging;
use crate::model_params::LlamaModelParams;
use crate::placement::Placement;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// A loaded model: a cheap handle to shared weights. Clone it to share it
/// between threads and owners; the weights are freed when the last handle,
/// and the last [`LlamaContext`](crate::LlamaContext) or
/// [`Sampler`](crate::Sampler) made from it, is gone. Each thread makes its
/// own context.
///
/// ```no_run
/// use llama_safe::{LlamaBackend, LlamaModel, LlamaModelParams};
/// let backend = LlamaBackend::init();
/// let params = LlamaModelParams::default().with_n_gpu_layers(999).with_cpu_moe_all();
/// let model = LlamaModel::load(&backend, "qwen3-30b-a3b-q4_k_m.gguf", &params)?;
/// println!("{}", model.placement());
/// let shared = model.clone(); // the same weights, not a copy
/// # Ok::<(), llama_safe::Error>(())
/// ```
#[must_use = "a handle: keep it for as long as it is needed"]
#[derive(Clone)]
pub struct LlamaModel {
    inner: std::sync::Arc<ModelInner>,
}

/// What every handle of one model shares.
struct ModelInner {
    raw: NonNull<llama_safe_sys::llama_model>,
    path: PathBuf,
    placement: Placement,
    vocab_only: bool,
    /// The longest token's text, in bytes (computed on first use).
    max_token_bytes: std::sync::OnceLock<usize>,
    /// [`LlamaModelParams::with_chat_template`]: used instead of the file's.
    chat_template: Option<String>,
    /// The devices whose work is serialised (see `device_lock`).
    serial: crate::device_lock::SerialDevices,
    _backend: LlamaBackend,
}

// SAFETY: a llama_model is not modified after loading; llama.cpp reads it
// from any thread, and everything that changes during inference lives in a
// llama_context. Freeing happens in Drop, when no handle is left.
unsafe impl Send for ModelInner {}
// SAFETY: all methods take `&self` and only read the loaded model; several
// contexts on several threads can use one model at once (llama.cpp's server
// does the same with its slots).
unsafe impl Sync for ModelInner {}

impl Drop for ModelInner {
    fn drop(&mut self) {
        let _device = self.serial.lock();
        // SAFETY: raw came from llama_model_load_from_file and is freed once;
        // contexts, samplers and adapters hold a handle, so none is alive now.
        unsafe { llama_safe_sys::llama_model_free(self.raw.as_ptr()) };
    }
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl LlamaModel {
    /// Loads a GGUF model.
    ///
    /// A missing path, a directory, an unreadable file, a non-GGUF file and
    /// a truncated or corrupt GGUF each give their own [`Error`] with the
    /// path and, where llama.cpp failed, its own reason.
    pub fn load(
        backend: &LlamaBackend,
        path: impl AsRef<Path>,
        params: &LlamaModelParams,
    ) -> Result<LlamaModel> {
        let path = path.as_ref();
        #[cfg(feature = "tracing")]
        let _span = tracing::info_span!("llama_load", path = %path.display()).entered();
        let file = GgufFile::open(path)?;
        let serial = crate::device_lock::SerialDevices::for_model(params.devices());
        let raw = load_checked(&file, params, false, serial)?;
        let mut inner = ModelInner {
            raw,
            serial,
            path: path.to_path_buf(),
            placement: Placement::default(),
            vocab_only: params.vocab_only(),
            max_token_bytes: std::sync::OnceLock::new(),
            chat_template: params.chat_template().map(String::from),
            _backend: backend.clone(),
        };
        // (On an error here, dropping `inner` frees what llama.cpp loaded.)
        let planned = params.planned_moves(&file.tensors(), file.layer_count());
        inner.placement = Placement::of_model(inner.raw.as_ptr(), &planned)?;
        Ok(LlamaModel {
            inner: std::sync::Arc::new(inner),
        })
    }

    /// Runs llama.cpp's loader on `file` without allocating or reading any
    /// weights (`no_alloc`), the way a dry run checks that a load would
    /// succeed: the same checks, hparams, vocabulary and tensor table.
    pub(crate) fn dry_load(file: &GgufFile, params: &LlamaModelParams) -> Result<()> {
        let _device = crate::device_lock::SerialDevices::for_model(params.devices()).lock();
        let raw = load_checked(file, params, true, Default::default())?;
        // SAFETY: raw came from llama_model_load_from_file and is freed once,
        // here; nothing else refers to it.
        unsafe { llama_safe_sys::llama_model_free(raw.as_ptr()) };
        Ok(())
    }

    /// A dry run of a load with `params` and a context with `ctx_params`
    /// (`no_alloc`, as llama.cpp's `--fit` does it): what they would
    /// allocate, per buffer type, without reading or allocating weights.
    pub(crate) fn dry_memory(
        file: &GgufFile,
        params: &LlamaModelParams,
        ctx_params: &crate::ContextParams,
    ) -> Result<Vec<crate::context::MemoryUse>> {
        struct Freed<T>(NonNull<T>, unsafe extern "C" fn(*mut T));
        impl<T> Drop for Freed<T> {
            fn drop(&mut self) {
                // SAFETY: the pointer came from its constructor and is freed
                // once, here (the context before the model: declared after).
                unsafe { (self.1)(self.0.as_ptr()) }
            }
        }
        if params.vocab_only() {
            return Err(Error::Unsupported {
                reason: "a context needs weights; these params load vocabulary only".into(),
            });
        }
        ctx_params.check()?;
        // Held over the load, the context and their frees (the guard is
        // declared first, so it drops last).
        let _device = crate::device_lock::SerialDevices::for_model(params.devices()).lock();
        let raw = load_checked(file, params, true, Default::default())?;
        let model = Freed(raw, llama_safe_sys::llama_model_free);
        // SAFETY: the model is live until `model` drops, after the context;
        // the params are plain values (no callbacks: a dry run computes
        // nothing, so the abort callback is not passed).
        let ctx = crate::ffi::non_null(
            || unsafe {
                let mut raw_params = ctx_params.raw;
                raw_params.abort_callback = None;
                raw_params.abort_callback_data = std::ptr::null_mut();
                llama_safe_sys::llama_init_from_model(model.0.as_ptr(), raw_params)
            },
            |reason| Error::Context { reason },
        )?;
        let ctx = Freed(ctx, llama_safe_sys::llama_free);
        crate::context::breakdown::of_raw(ctx.0.as_ptr())
    }

    /// Locks the devices whose work is serialised (see `device_lock`) until
    /// the guard drops.
    pub(crate) fn device_guard(&self) -> crate::device_lock::DeviceGuard {
        self.inner.serial.lock()
    }

    /// The devices whose work is serialised (see `device_lock`).
    pub(crate) fn serial_devices(&self) -> crate::device_lock::SerialDevices {
        self.inner.serial
    }

    pub(crate) fn max_token_bytes_cell(&self) -> &std::sync::OnceLock<usize> {
        &self.inner.max_token_bytes
    }

    /// Whether `self` and `other` are handles of the same loaded model.
    pub fn same_model(&self, other: &LlamaModel) -> bool {
        std::sync::Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn as_ptr(&self) -> *mut llama_safe_sys::llama_model {
        self.inner.raw.as_ptr()
    }

    pub(crate) fn vocab(&self) -> *const llama_safe_sys::llama_vocab {
        // SAFETY: the model is live; the vocab lives as long as it.
        unsafe { llama_safe_sys::llama_model_get_vocab(self.as_ptr()) }
    }

    /// Whether only the vocabulary was loaded
    /// ([`with_vocab_only`](LlamaModelParams::with_vocab_only)): such a
    /// model tokenizes, but has no weights to run.
    pub fn is_vocab_only(&self) -> bool {
        self.inner.vocab_only
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Where this load put the weights: bytes per buffer, and every tensor
    /// a buffer override moved.
    pub fn placement(&self) -> &Placement {
        &self.inner.placement
    }

    /// Architecture name, e.g. `llama`, `qwen3moe`.
    pub fn architecture(&self) -> String {
        self.meta("general.architecture").unwrap_or_default()
    }

    /// Number of repeating layers (blocks).
    pub fn n_layer(&self) -> u32 {
        // SAFETY: model is live.
        unsafe { llama_safe_sys::llama_model_n_layer(self.as_ptr()) }.max(0) as u32
    }

    /// Experts per MoE layer; 0 for a dense model.
    pub fn n_expert(&self) -> u32 {
        self.arch_meta_u32("expert_count")
    }

    /// Experts used per token; 0 for a dense model.
    pub fn n_expert_used(&self) -> u32 {
        self.arch_meta_u32("expert_used_count")
    }

    /// Whether the model has experts.
    pub fn is_moe(&self) -> bool {
        self.n_expert() > 0
    }

    fn arch_meta_u32(&self, key: &str) -> u32 {
        self.meta(&format!("{}.{key}", self.architecture()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Number of parameters.
    pub fn n_params(&self) -> u64 {
        // SAFETY: model is live.
        unsafe { llama_safe_sys::llama_model_n_params(self.as_ptr()) }
    }

    /// Total bytes of the weights.
    pub fn size_bytes(&self) -> u64 {
        // SAFETY: model is live.
        unsafe { llama_safe_sys::llama_model_size(self.as_ptr()) }
    }

    /// Embedding width.
    pub fn n_embd(&self) -> u32 {
        // SAFETY: model is live.
        unsafe { llama_safe_sys::llama_model_n_embd(self.as_ptr()) }.max(0) as u32
    }

    /// Width of the embeddings the model outputs (`n_embd` unless the
    /// architecture projects them, e.g. models with `embedding_length_out`).
    pub fn n_embd_out(&self) -> u32 {
        // SAFETY: model is live.
        unsafe { llama_safe_sys::llama_model_n_embd_out(self.as_ptr()) }.max(0) as u32
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> u32 {
        // SAFETY: the vocab lives as long as the model.
        unsafe { llama_safe_sys::llama_vocab_n_tokens(self.vocab()) }.max(0) as u32
    }

    /// Context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        // SAFETY: model is live.
        unsafe { llama_safe_sys::llama_model_n_ctx_train(self.as_ptr()) }.max(0) as u32
    }

    /// llama.cpp's one-line description, e.g. `llama ?B Q8_0`.
    pub fn description(&self) -> String {
        // SAFETY: buf is writable for len bytes; llama.cpp NUL-terminates
        // and returns the full length.
        read_c_string(|buf, len| unsafe {
            llama_safe_sys::llama_model_desc(self.as_ptr(), buf, len)
        })
        .unwrap_or_default()
    }

    /// The default chat template, if the file has one.
    pub fn chat_template(&self) -> Option<String> {
        if let Some(template) = &self.inner.chat_template {
            return Some(template.clone());
        }
        // SAFETY: model is live; NULL name asks for the default template; the
        // result is NULL or a string owned by the model.
        let ptr =
            unsafe { llama_safe_sys::llama_model_chat_template(self.as_ptr(), std::ptr::null()) };
        // SAFETY: non-NULL results are NUL-terminated and live with the model.
        (!ptr.is_null()).then(|| {
            unsafe { CStr::from_ptr(ptr) }
                .to_string_lossy()
                .into_owned()
        })
    }

    /// A metadata value as a string, by key.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        // SAFETY: key is a C string; buf is writable for len bytes.
        read_c_string(|buf, len| unsafe {
            llama_safe_sys::llama_model_meta_val_str(self.as_ptr(), key.as_ptr(), buf, len)
        })
    }

    /// Every metadata key with its value as a string, in file order
    /// (arrays, such as the vocabulary, are left out, as llama.cpp keeps
    /// only scalars).
    ///
    /// ```
    /// use llama_safe::{demo::DemoModel, LlamaBackend, LlamaModel};
    /// let backend = LlamaBackend::init();
    /// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
    /// let meta = model.metadata();
    /// assert!(meta.iter().any(|(k, v)| k == "general.architecture" && v == "llama"));
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn metadata(&self) -> Vec<(String, String)> {
        let raw = self.as_ptr();
        // SAFETY: the model is live.
        let n = unsafe { llama_safe_sys::llama_model_meta_count(raw) }.max(0);
        (0..n)
            .filter_map(|i| {
                // SAFETY: i is below the count; buf is writable for len bytes.
                let key = read_c_string(|buf, len| unsafe {
                    llama_safe_sys::llama_model_meta_key_by_index(raw, i, buf, len)
                })?;
                // SAFETY: as above.
                let value = read_c_string(|buf, len| unsafe {
                    llama_safe_sys::llama_model_meta_val_str_by_index(raw, i, buf, len)
                })?;
                Some((key, value))
            })
            .collect()
    }
}

/// Checks `file` against what llama.cpp would abort on ([`crate::check`]),
/// then loads it (`no_alloc`: metadata only); a failure carries what
/// llama.cpp logged.
fn load_checked(
    file: &GgufFile,
    params: &LlamaModelParams,
    no_alloc: bool,
    serial: crate::device_lock::SerialDevices,
) -> Result<NonNull<llama_safe_sys::llama_model>> {
    let path = file.path();
    params.check()?;
    crate::check::model(file, params)?;
    let block_count = file.layer_count();
    let mut raw_params = params.materialize(block_count)?;
    let c = c_path(path)?;
    let mut raw = raw_params.raw();
    if no_alloc {
        // llama.cpp's memory-fit pass loads this way: no_alloc asserts
        // against mmap (GGML_ASSERT(!ml.no_alloc) in load_tensors).
        raw.no_alloc = true;
        raw.load_mode = llama_safe_sys::LLAMA_LOAD_MODE_NONE;
        raw.progress_callback = None;
        raw.progress_callback_user_data = std::ptr::null_mut();
    }
    let (model, lines) = {
        let _device = serial.lock();
        // SAFETY: `c` is a valid C string, and every pointer in `raw` points
        // into `raw_params`, which outlives this call; the values llama.cpp
        // asserts on were checked above.
        logging::capture(|| unsafe { llama_safe_sys::llama_model_load_from_file(c.as_ptr(), raw) })
    };
    // A panic in the progress callback cancelled the load (llama.cpp freed
    // what it had): it goes on unwinding here, in Rust.
    raw_params.progress.panic.resume();
    match NonNull::new(model) {
        Some(model) => Ok(model),
        None if raw_params.progress.cancelled => Err(Error::LoadCancelled {
            path: path.to_path_buf(),
        }),
        None => Err(Error::Load {
            path: path.to_path_buf(),
            reason: logging::reason(&lines),
        }),
    }
}

/// Reads a string through a llama.cpp call that writes at most `len` bytes
/// (NUL included) and returns the full length, or a negative number when
/// there is nothing; grows the buffer until the string fits.
fn read_c_string(mut call: impl FnMut(*mut std::ffi::c_char, usize) -> i32) -> Option<String> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = usize::try_from(call(buf.as_mut_ptr().cast(), buf.len())).ok()?;
        if n < buf.len() {
            buf.truncate(n);
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        buf.resize(n + 1, 0);
    }
}
