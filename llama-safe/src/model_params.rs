//! [`LlamaModelParams`]: how a model is loaded and where its tensors go.
//!
//! The params own everything a pointer in llama.cpp's `llama_model_params`
//! refers to (pattern strings, the NULL-terminated override array, the
//! key/value overrides, the device list, the tensor split). The raw struct is
//! produced only inside [`LlamaModel::load`](crate::LlamaModel::load), from
//! owned data that lives until llama.cpp returns, so moving, cloning or
//! dropping anything the caller built the params from can never leave
//! llama.cpp a dangling pointer.

use crate::error::{Error, Result};
use crate::moe::MoeMode;
use crate::tensor_override::{OverrideTarget, TensorPattern};
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

/// How layers are split across several GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SplitMode {
    /// Everything on `main_gpu`.
    None,
    /// Whole layers per GPU (llama.cpp's default).
    #[default]
    Layer,
    /// Rows of each tensor across GPUs.
    Row,
}

/// How the weights are read from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LoadMode {
    /// llama.cpp chooses (mmap where available).
    #[default]
    Auto,
    /// Read into memory, no mmap. Upstream suggests this with CPU overrides.
    Read,
    /// Memory-map the file.
    Mmap,
    /// Memory-map and lock the pages in RAM.
    MmapLocked,
}

/// A value for a metadata key/value override.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum KvValue {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// At most 127 bytes.
    Str(String),
}

/// The load progress callback: gets 0.0..=1.0, returns `false` to cancel.
type Progress = Arc<Mutex<dyn FnMut(f32) -> bool + Send>>;

/// Parameters for [`LlamaModel::load`](crate::LlamaModel::load).
///
/// ```
/// use llama_safe::{LlamaModelParams, OverrideTarget};
/// let params = LlamaModelParams::default()
///     .with_n_gpu_layers(999)
///     .with_tensor_override(r"blk\.0\.attn_.*", OverrideTarget::Cpu)
///     .with_n_cpu_moe(10);
/// assert_eq!(params.moe_mode(), llama_safe::MoeMode::FirstLayers(10));
/// # Ok::<(), llama_safe::Error>(())
/// ```
#[derive(Clone)]
#[must_use = "builders return a new value: use it"]
pub struct LlamaModelParams {
    n_gpu_layers: i32,
    main_gpu: i32,
    split_mode: SplitMode,
    tensor_split: Vec<f32>,
    load_mode: LoadMode,
    vocab_only: bool,
    check_tensors: bool,
    use_extra_bufts: bool,
    no_host: bool,
    devices: Vec<String>,
    kv_overrides: Vec<(String, KvValue)>,
    overrides: Vec<(TensorPattern, OverrideTarget)>,
    moe: MoeMode,
    cpu_ffn_blocks: u32,
    progress: Option<Progress>,
    chat_template: Option<std::sync::Arc<str>>,
    /// The first mistake a builder met (a bad pattern, key or split),
    /// reported when the params are used: builders stay chainable.
    invalid: Option<Error>,
}

/// The longest chat template [`LlamaModelParams::with_chat_template`]
/// takes: 1 MiB (real ones are under 20 KiB).
pub const MAX_CHAT_TEMPLATE_BYTES: usize = 1 << 20;

impl Default for LlamaModelParams {
    /// llama.cpp's defaults (`llama_model_default_params`), no overrides.
    fn default() -> Self {
        // SAFETY: returns a plain struct by value.
        let d = unsafe { llama_safe_sys::llama_model_default_params() };
        LlamaModelParams {
            n_gpu_layers: d.n_gpu_layers,
            main_gpu: d.main_gpu,
            split_mode: SplitMode::Layer,
            tensor_split: Vec::new(),
            load_mode: LoadMode::Auto,
            vocab_only: d.vocab_only,
            check_tensors: d.check_tensors,
            use_extra_bufts: d.use_extra_bufts,
            no_host: d.no_host,
            devices: Vec::new(),
            kv_overrides: Vec::new(),
            overrides: Vec::new(),
            moe: MoeMode::None,
            cpu_ffn_blocks: 0,
            progress: None,
            chat_template: None,
            invalid: None,
        }
    }
}

impl std::fmt::Debug for LlamaModelParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let overrides: Vec<String> = self
            .overrides
            .iter()
            .map(|(p, t)| format!("{p} => {t}"))
            .collect();
        f.debug_struct("LlamaModelParams")
            .field("n_gpu_layers", &self.n_gpu_layers)
            .field("main_gpu", &self.main_gpu)
            .field("split_mode", &self.split_mode)
            .field("tensor_split", &self.tensor_split)
            .field("load_mode", &self.load_mode)
            .field("vocab_only", &self.vocab_only)
            .field("devices", &self.devices)
            .field("kv_overrides", &self.kv_overrides)
            .field("tensor_overrides", &overrides)
            .field("moe", &self.moe)
            .field("cpu_ffn_blocks", &self.cpu_ffn_blocks)
            .field("progress_callback", &self.progress.is_some())
            .finish()
    }
}

impl LlamaModelParams {
    /// Layers to store in GPU memory (any number above the layer count means
    /// all of them; 0 keeps everything on the CPU).
    pub fn with_n_gpu_layers(mut self, n: u32) -> Self {
        self.n_gpu_layers = i32::try_from(n).unwrap_or(i32::MAX);
        self
    }

    /// The GPU used for the whole model with [`SplitMode::None`].
    pub fn with_main_gpu(mut self, index: u32) -> Self {
        self.main_gpu = i32::try_from(index).unwrap_or(i32::MAX);
        self
    }

    /// How to split across GPUs.
    pub fn with_split_mode(mut self, mode: SplitMode) -> Self {
        self.split_mode = mode;
        self
    }

    /// Proportions of the model per GPU (at most `llama_max_devices()`
    /// entries, each finite and non-negative).
    pub fn with_tensor_split(mut self, split: &[f32]) -> Self {
        // SAFETY: pure function.
        let max = unsafe { llama_safe_sys::llama_max_devices() };
        if split.len() > max {
            return self.invalid(Error::InvalidParameter {
                name: "tensor_split",
                reason: format!("{} entries, llama.cpp takes at most {max}", split.len()).into(),
            });
        }
        if split.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return self.invalid(Error::InvalidParameter {
                name: "tensor_split",
                reason: format!("{split:?} has a negative or non-finite entry").into(),
            });
        }
        self.tensor_split = split.to_vec();
        self
    }

    /// A Jinja chat template to use instead of the file's
    /// `tokenizer.chat_template` (llama.cpp's `--chat-template-file`): what
    /// [`LlamaModel::chat_template`](crate::LlamaModel::chat_template)
    /// returns and the chat functions render. Longer than
    /// [`MAX_CHAT_TEMPLATE_BYTES`] is [`Error::InvalidParameter`] at load.
    ///
    /// ```
    /// use llama_safe::{demo::DemoModel, LlamaBackend, LlamaModel, LlamaModelParams};
    /// let params = LlamaModelParams::default().with_chat_template("{{ messages[0].content }}");
    /// let model = LlamaModel::load(&LlamaBackend::init(), DemoModel::Moe.cached()?, &params)?;
    /// assert_eq!(model.chat_template().as_deref(), Some("{{ messages[0].content }}"));
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn with_chat_template(mut self, template: impl Into<String>) -> Self {
        let template: String = template.into();
        if template.len() > MAX_CHAT_TEMPLATE_BYTES {
            return self.invalid(Error::InvalidParameter {
                name: "chat_template",
                reason: format!(
                    "{} bytes; the most is {MAX_CHAT_TEMPLATE_BYTES}",
                    template.len()
                )
                .into(),
            });
        }
        self.chat_template = Some(template.into());
        self
    }

    /// The chat template given with [`with_chat_template`](Self::with_chat_template).
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Records the first mistake of a builder, for [`check`](Self::check).
    pub(crate) fn invalid(mut self, error: Error) -> Self {
        self.invalid.get_or_insert(error);
        self
    }

    /// The first mistake a builder met (an invalid pattern, key, value or
    /// split), if any. Loads, plans and fits return it; call this to find
    /// out sooner.
    ///
    /// ```
    /// use llama_safe::{LlamaModelParams, OverrideTarget};
    /// let params = LlamaModelParams::default().with_tensor_override("blk\\.(", OverrideTarget::Cpu);
    /// assert!(matches!(params.check(), Err(llama_safe::Error::InvalidPattern { .. })));
    /// ```
    pub fn check(&self) -> Result<()> {
        match &self.invalid {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// How the weights are read (mmap, mlock, plain reads).
    pub fn with_load_mode(mut self, mode: LoadMode) -> Self {
        self.load_mode = mode;
        self
    }

    /// Load only the vocabulary, no weights.
    pub fn with_vocab_only(mut self, vocab_only: bool) -> Self {
        self.vocab_only = vocab_only;
        self
    }

    /// Validate tensor data while loading.
    pub fn with_check_tensors(mut self, check: bool) -> Self {
        self.check_tensors = check;
        self
    }

    /// Allow llama.cpp's extra CPU buffer types (weight repacking); on by default.
    pub fn with_extra_buffer_types(mut self, enabled: bool) -> Self {
        self.use_extra_bufts = enabled;
        self
    }

    /// Bypass the device's host buffer type (pinned host memory) for the
    /// weights kept on the host, so llama.cpp's extra CPU buffer types
    /// (repacking) can hold them instead (llama.cpp's `--no-host`).
    pub fn with_no_host(mut self, no_host: bool) -> Self {
        self.no_host = no_host;
        self
    }

    /// Offload only to these devices, by name (`CUDA0`, `RPC0`, ...), in
    /// order. An unknown name is an error at load.
    pub fn with_devices<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.devices = names.iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    /// Overrides a metadata key/value of the model at load. A key or string
    /// llama.cpp cannot take (empty, over 127 bytes, a NUL) is
    /// [`Error::InvalidParameter`] from [`check`](Self::check) and the load.
    pub fn with_kv_override(mut self, key: &str, value: KvValue) -> Self {
        if key.is_empty() || key.len() > 127 || key.contains('\0') {
            return self.invalid(Error::InvalidParameter {
                name: "kv_override key",
                reason: format!("{key:?} must be 1..=127 bytes without NUL").into(),
            });
        }
        if let KvValue::Str(s) = &value {
            if s.len() > 127 || s.contains('\0') {
                return self.invalid(Error::InvalidParameter {
                    name: "kv_override value",
                    reason: format!("string for {key:?} must be at most 127 bytes without NUL")
                        .into(),
                });
            }
        }
        self.kv_overrides.retain(|(k, _)| k != key);
        self.kv_overrides.push((key.to_string(), value));
        self
    }

    /// Called with the load progress (0.0 to 1.0). Returning `false` cancels
    /// the load cleanly with [`Error::LoadCancelled`]. A panic cancels it
    /// too (it never unwinds into C) and then goes on unwinding from the
    /// load call, with its own payload. It is never re-entered: a load started from
    /// inside a progress callback (with a clone of these params, say) runs
    /// without reporting progress.
    pub fn with_progress_callback(
        mut self,
        callback: impl FnMut(f32) -> bool + Send + 'static,
    ) -> Self {
        self.progress = Some(Arc::new(Mutex::new(callback)));
        self
    }

    /// Places tensors whose name matches `pattern` on `target`.
    ///
    /// The pattern is a C++ `std::regex` (ECMAScript) searched anywhere in
    /// the tensor name, exactly as llama.cpp's `-ot pattern=target`; it is
    /// checked now, and an invalid one is [`Error::InvalidPattern`] from
    /// [`check`](Self::check) and from every load, plan or fit with these
    /// params (the builder stays chainable).
    /// llama.cpp applies the first pattern that matches, so overrides added
    /// here come before the MoE patterns of [`with_cpu_moe_all`](Self::with_cpu_moe_all)
    /// and [`with_n_cpu_moe`](Self::with_n_cpu_moe), in the order added.
    pub fn with_tensor_override(mut self, pattern: &str, target: OverrideTarget) -> Self {
        match TensorPattern::new(pattern) {
            Ok(pattern) => {
                self.overrides.push((pattern, target));
                self
            }
            Err(e) => self.invalid(e),
        }
    }

    /// Keeps every MoE expert tensor in host memory, like llama.cpp's
    /// `--cpu-moe`: the tensors matching
    /// `\.ffn_(up|down|gate_up|gate)_(ch|)exps` (up, down, gate and fused
    /// gate_up experts, plain or `chexps`, weights and biases) of every layer.
    ///
    /// Everything else (attention, norms, the router `ffn_gate_inp`, shared
    /// experts `*_shexp`, embeddings and output) follows `n_gpu_layers`, so
    /// the GPU holds only the small, always-used part of the model while the
    /// large, sparsely-used experts are read from RAM. On a dense model
    /// nothing matches and nothing moves.
    ///
    /// This sets the one MoE mode: it replaces an earlier
    /// [`with_n_cpu_moe`](Self::with_n_cpu_moe).
    pub fn with_cpu_moe_all(mut self) -> Self {
        self.moe = MoeMode::All;
        self
    }

    /// Keeps the MoE expert tensors of the first `n` blocks (`blk.0` to
    /// `blk.{n-1}`) in host memory, like llama.cpp's `--n-cpu-moe n`: one
    /// pattern `blk\.i\.ffn_(up|down|gate_up|gate)_(ch|)exps` per block.
    ///
    /// `n` counts block indices exactly as llama.cpp does, dense leading
    /// blocks included, so numbers from llama.cpp's docs mean the same here;
    /// [`plan`](Self::plan) tells how many expert layers a given `n` covers.
    /// `n` at or beyond the layer count means every layer (one pattern then);
    /// `n == 0` means no MoE override. Which tensors match and which never do
    /// is as for [`with_cpu_moe_all`](Self::with_cpu_moe_all), which this
    /// replaces (the last MoE call wins; patterns are never duplicated).
    pub fn with_n_cpu_moe(mut self, n: u32) -> Self {
        self.moe = if n == 0 {
            MoeMode::None
        } else {
            MoeMode::FirstLayers(n)
        };
        self
    }

    /// Keeps the dense feed-forward weights of the first `n` blocks
    /// (`blk.0` to `blk.{n-1}`: `ffn_up`, `ffn_down`, `ffn_gate`, weights and
    /// biases) in host memory, like llama.cpp's `--n-cpu-ffn n`: one pattern
    /// `blk\.i\.ffn_(up|down|gate)\.` per block (one for all blocks when
    /// `n` reaches the layer count; `n == 0` is none).
    ///
    /// For dense models, or the dense leading blocks of a MoE model; expert
    /// tensors (`*_exps`), shared experts (`*_shexp`) and the router never
    /// match. It combines with [`with_cpu_moe_all`](Self::with_cpu_moe_all)
    /// and [`with_n_cpu_moe`](Self::with_n_cpu_moe): the tensors each moves
    /// are disjoint.
    ///
    /// ```
    /// let params = llama_safe::LlamaModelParams::default().with_n_cpu_ffn(2);
    /// assert_eq!(params.materialize(8)?.override_count(), 2);
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn with_n_cpu_ffn(mut self, n: u32) -> Self {
        self.cpu_ffn_blocks = n;
        self
    }

    /// The blocks whose dense FFN [`with_n_cpu_ffn`](Self::with_n_cpu_ffn)
    /// keeps in host memory.
    pub fn n_cpu_ffn(&self) -> u32 {
        self.cpu_ffn_blocks
    }

    /// Layers to store in GPU memory, as llama.cpp reads it (negative: all).
    pub fn n_gpu_layers(&self) -> i32 {
        self.n_gpu_layers
    }

    /// The devices named with [`with_devices`](Self::with_devices) (empty:
    /// every GPU ggml finds).
    pub fn devices(&self) -> &[String] {
        &self.devices
    }

    /// How the weights will be read.
    pub fn load_mode(&self) -> LoadMode {
        self.load_mode
    }

    /// Whether only the vocabulary is loaded.
    pub fn vocab_only(&self) -> bool {
        self.vocab_only
    }

    /// The key/value overrides, in order.
    pub fn kv_overrides(&self) -> impl Iterator<Item = (&str, &KvValue)> {
        self.kv_overrides.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The MoE mode set by the last MoE builder.
    pub fn moe_mode(&self) -> MoeMode {
        self.moe
    }

    /// The explicit overrides, in order.
    pub fn tensor_overrides(&self) -> impl Iterator<Item = (&TensorPattern, &OverrideTarget)> {
        self.overrides.iter().map(|(p, t)| (p, t))
    }

    /// The full override list llama.cpp will get for a model of
    /// `block_count` layers: explicit overrides first, then the MoE patterns,
    /// then the dense-FFN ones.
    pub fn effective_overrides(&self, block_count: u32) -> Vec<(TensorPattern, OverrideTarget)> {
        let built_in = self
            .moe
            .patterns(block_count)
            .into_iter()
            .chain(crate::moe::dense_ffn_patterns(
                self.cpu_ffn_blocks,
                block_count,
            ))
            .map(|p| {
                let pattern = TensorPattern::new(&p).expect("the built-in patterns compile");
                (pattern, OverrideTarget::Cpu)
            });
        self.overrides.iter().cloned().chain(built_in).collect()
    }

    /// Builds the raw `llama_model_params` for one load of a model with
    /// `block_count` layers, with everything its pointers reach (pattern
    /// strings, the NULL-terminated override array, devices, key/value
    /// overrides) owned by the result. [`LlamaModel::load`](crate::LlamaModel::load)
    /// does this itself; it is public for callers of the C API and for the
    /// benches.
    ///
    /// ```
    /// let params = llama_safe::LlamaModelParams::default().with_n_cpu_moe(2);
    /// let mut raw = params.materialize(48)?;
    /// assert_eq!(raw.override_count(), 2); // one pattern per layer, as --n-cpu-moe
    /// let c = raw.raw();
    /// assert!(!c.tensor_buft_overrides.is_null());
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn materialize(&self, block_count: u32) -> Result<RawModelParams> {
        self.check()?;
        let overrides = self.effective_overrides(block_count);
        // SAFETY: pure function.
        let limit = unsafe { llama_safe_sys::llama_max_tensor_buft_overrides() };
        if overrides.len() > limit {
            return Err(Error::TooManyOverrides {
                count: overrides.len(),
                limit,
            });
        }
        let mut patterns = Vec::with_capacity(overrides.len());
        let mut buft_overrides = Vec::with_capacity(overrides.len() + 1);
        for (pattern, target) in &overrides {
            let c: CString = pattern.as_c().to_owned();
            buft_overrides.push(llama_safe_sys::llama_model_tensor_buft_override {
                // The CString's heap buffer does not move when `c` is moved
                // into `patterns`, so this pointer stays valid while `patterns` lives.
                pattern: c.as_ptr(),
                buft: target.buffer_type()?,
            });
            patterns.push(c);
        }
        buft_overrides.push(llama_safe_sys::llama_model_tensor_buft_override {
            pattern: std::ptr::null(),
            buft: std::ptr::null_mut(),
        });

        let mut devices = Vec::with_capacity(self.devices.len() + 1);
        for name in &self.devices {
            devices.push(crate::backend::device_by_name(name)?);
        }
        devices.push(std::ptr::null_mut());

        let mut kv = Vec::with_capacity(self.kv_overrides.len() + 1);
        for (key, value) in &self.kv_overrides {
            kv.push(kv_override(key, value));
        }
        kv.push(llama_safe_sys::llama_model_kv_override::default());

        // SAFETY: pure function.
        let max_devices = unsafe { llama_safe_sys::llama_max_devices() };
        let mut tensor_split = self.tensor_split.clone();
        tensor_split.resize(max_devices.max(1), 0.0);

        Ok(RawModelParams {
            params: self.clone(),
            _patterns: patterns,
            buft_overrides,
            devices,
            kv,
            tensor_split,
            progress: Box::new(ProgressState {
                callback: self.progress.clone(),
                cancelled: false,
                panic: Default::default(),
            }),
        })
    }
}

fn kv_override(key: &str, value: &KvValue) -> llama_safe_sys::llama_model_kv_override {
    let mut kv = llama_safe_sys::llama_model_kv_override::default();
    // Lengths were checked by with_kv_override (at most 127 bytes, no NUL),
    // so the zeroed arrays keep a terminating NUL.
    for (dst, src) in kv.key.iter_mut().zip(key.bytes()) {
        *dst = src as std::ffi::c_char;
    }
    match value {
        KvValue::Int(v) => {
            kv.tag = llama_safe_sys::LLAMA_KV_OVERRIDE_TYPE_INT;
            kv.__bindgen_anon_1.val_i64 = *v;
        }
        KvValue::Float(v) => {
            kv.tag = llama_safe_sys::LLAMA_KV_OVERRIDE_TYPE_FLOAT;
            kv.__bindgen_anon_1.val_f64 = *v;
        }
        KvValue::Bool(v) => {
            kv.tag = llama_safe_sys::LLAMA_KV_OVERRIDE_TYPE_BOOL;
            kv.__bindgen_anon_1.val_bool = *v;
        }
        KvValue::Str(s) => {
            kv.tag = llama_safe_sys::LLAMA_KV_OVERRIDE_TYPE_STR;
            let mut buf = [0 as std::ffi::c_char; 128];
            for (dst, src) in buf.iter_mut().zip(s.bytes()) {
                *dst = src as std::ffi::c_char;
            }
            kv.__bindgen_anon_1.val_str = buf;
        }
    }
    kv
}

/// State shared with the progress trampoline for one load.
pub(crate) struct ProgressState {
    callback: Option<Progress>,
    /// Set when the callback returned false or panicked.
    pub(crate) cancelled: bool,
    /// The callback's panic, resumed when the load has returned.
    pub(crate) panic: crate::panic::Caught,
}

unsafe extern "C" fn progress_trampoline(progress: f32, user_data: *mut c_void) -> bool {
    if user_data.is_null() {
        return true;
    }
    // SAFETY: user_data is the ProgressState boxed in RawModelParams, alive
    // and not otherwise borrowed for the duration of the load call.
    let state = unsafe { &mut *(user_data as *mut ProgressState) };
    let Some(callback) = state.callback.as_ref() else {
        return true;
    };
    thread_local! {
        /// Set while this thread runs a progress callback.
        static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if IN_CALLBACK.with(|c| c.get()) {
        // A load started from inside a progress callback: calling a
        // callback again would re-enter it (and deadlock on its lock when it
        // is the same one), so the nested load reports no progress.
        return true;
    }
    IN_CALLBACK.with(|c| c.set(true));
    // A panic stops the load and is resumed once llama.cpp has returned.
    let keep_going = state
        .panic
        .wrap(|| {
            let mut f = callback.lock().unwrap_or_else(|e| e.into_inner());
            f(progress)
        })
        .unwrap_or(false);
    IN_CALLBACK.with(|c| c.set(false));
    if !keep_going {
        state.cancelled = true;
    }
    keep_going
}

/// A raw `llama_model_params` together with everything its pointers point
/// to; see [`LlamaModelParams::materialize`].
pub struct RawModelParams {
    params: LlamaModelParams,
    _patterns: Vec<CString>,
    buft_overrides: Vec<llama_safe_sys::llama_model_tensor_buft_override>,
    devices: Vec<llama_safe_sys::ggml_backend_dev_t>,
    kv: Vec<llama_safe_sys::llama_model_kv_override>,
    tensor_split: Vec<f32>,
    pub(crate) progress: Box<ProgressState>,
}

impl RawModelParams {
    /// Number of tensor-buffer overrides (the array holds one more: the
    /// NULL terminator).
    pub fn override_count(&self) -> usize {
        self._patterns.len()
    }

    /// The C struct. Its pointers point into `self` (heap buffers that never
    /// move), so it is valid for as long as `self` lives.
    pub fn raw(&mut self) -> llama_safe_sys::llama_model_params {
        // SAFETY: returns a plain struct by value.
        let mut raw = unsafe { llama_safe_sys::llama_model_default_params() };
        let p = &self.params;
        raw.n_gpu_layers = p.n_gpu_layers;
        raw.main_gpu = p.main_gpu;
        raw.split_mode = match p.split_mode {
            SplitMode::None => llama_safe_sys::LLAMA_SPLIT_MODE_NONE,
            SplitMode::Layer => llama_safe_sys::LLAMA_SPLIT_MODE_LAYER,
            SplitMode::Row => llama_safe_sys::LLAMA_SPLIT_MODE_ROW,
        };
        raw.load_mode = match p.load_mode {
            LoadMode::Auto => llama_safe_sys::LLAMA_LOAD_MODE_AUTO,
            LoadMode::Read => llama_safe_sys::LLAMA_LOAD_MODE_NONE,
            LoadMode::Mmap => llama_safe_sys::LLAMA_LOAD_MODE_MMAP,
            LoadMode::MmapLocked => llama_safe_sys::LLAMA_LOAD_MODE_MMAP_MLOCK,
        };
        raw.vocab_only = p.vocab_only;
        raw.check_tensors = p.check_tensors;
        raw.use_extra_bufts = p.use_extra_bufts;
        raw.no_host = p.no_host;
        raw.tensor_split = self.tensor_split.as_ptr();
        raw.tensor_buft_overrides = if self.buft_overrides.len() > 1 {
            self.buft_overrides.as_ptr()
        } else {
            std::ptr::null()
        };
        raw.devices = if self.devices.len() > 1 {
            self.devices.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        };
        raw.kv_overrides = if self.kv.len() > 1 {
            self.kv.as_ptr()
        } else {
            std::ptr::null()
        };
        if p.progress.is_some() {
            raw.progress_callback = Some(progress_trampoline);
            raw.progress_callback_user_data = (&mut *self.progress as *mut ProgressState).cast();
        }
        raw
    }
}

impl std::fmt::Debug for RawModelParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawModelParams")
            .field("params", &self.params)
            .field("overrides", &self._patterns)
            .finish_non_exhaustive()
    }
}
