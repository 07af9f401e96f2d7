//! Raw FFI bindings to [llama.cpp](https://github.com/ggml-org/llama.cpp),
//! built from a pinned source tree with CMake.
//!
//! Everything here is `unsafe` C API: use the `llama-safe` crate for a safe
//! interface. On ELF targets the static libraries' symbols carry the prefix
//! `llama_safe_` (the bindings link to those names), so a binary can also
//! link another copy of ggml or llama.cpp. The bindings cover `llama.h`, `gguf.h` and the ggml backend
//! API (`ggml-backend.h`, `ggml-cpu.h`, `ggml-rpc.h`); with the `mtmd`
//! feature, [`mtmd`] covers libmtmd (`mtmd.h`, `mtmd-helper.h`).
//!
//! ```
//! // SAFETY: llama_print_system_info returns a static NUL-terminated string.
//! let info = unsafe { std::ffi::CStr::from_ptr(llama_safe_sys::llama_print_system_info()) };
//! assert!(!info.to_bytes().is_empty());
//! ```

#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    clippy::all,
    rustdoc::all
)]
mod bindings {
    #[cfg(llama_sys_generated_bindings)]
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
    #[cfg(not(llama_sys_generated_bindings))]
    include!("bindings.rs");
}

pub use bindings::*;

#[cfg(feature = "mtmd")]
pub mod mtmd;

/// What is known of the llama.cpp revision this crate was built from: a
/// `git describe` for a checkout, or the pin's description for the package.
pub const LLAMA_CPP_REVISION: &str = env!("LLAMA_SYS_REVISION");

/// Where the llama.cpp that was linked came from: `LLAMA_CPP_DIR`,
/// `package source`, `vendor/llama.cpp`, `pinned package`, or
/// `LLAMA_SYS_PREBUILT_DIR (<path>)` for an existing build.
pub const LLAMA_CPP_SOURCE: &str = env!("LLAMA_SYS_SOURCE_ORIGIN");

extern "C" {
    /// Returns 1 when `pattern` compiles as a C++ `std::regex` (ECMAScript),
    /// the way llama.cpp compiles tensor-override patterns; otherwise 0 with
    /// the reason written to `err` (NUL-terminated, at most `err_len` bytes).
    pub fn llama_sys_regex_check(
        pattern: *const core::ffi::c_char,
        err: *mut core::ffi::c_char,
        err_len: usize,
    ) -> core::ffi::c_int;

    /// Compiles `pattern` once and writes to `found[i]` 1 when
    /// `std::regex_search` finds it in `texts[i]`, else 0, for `n` texts.
    /// Returns 0, or -1 when the pattern does not compile.
    pub fn llama_sys_regex_search_many(
        pattern: *const core::ffi::c_char,
        texts: *const *const core::ffi::c_char,
        n: usize,
        found: *mut core::ffi::c_int,
    ) -> core::ffi::c_int;

    /// Returns 1 when `std::regex_search(text, std::regex(pattern))` is true,
    /// 0 when false and -1 when the pattern does not compile.
    pub fn llama_sys_regex_search(
        pattern: *const core::ffi::c_char,
        text: *const core::ffi::c_char,
    ) -> core::ffi::c_int;
}

/// One buffer type's share of a context's memory, as
/// [`llama_sys_memory_breakdown`] reports it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct llama_sys_memory_use {
    /// `ggml_backend_buft_name`, owned by ggml (valid while the backend is).
    pub buffer_type: *const core::ffi::c_char,
    /// The buffer type's device, or NULL.
    pub device: ggml_backend_dev_t,
    /// 1 for host memory.
    pub is_host: i32,
    /// Bytes of weights.
    pub model: u64,
    /// Bytes of context memory (KV cache, recurrent state).
    pub context: u64,
    /// Bytes of compute buffers.
    pub compute: u64,
}

extern "C" {
    /// llama.cpp's per-buffer-type memory breakdown of `ctx` (weights,
    /// context memory, compute buffers; what its `--fit` counts): writes up
    /// to `cap` entries into `out` and their number into `*n`. Returns 0, 1
    /// when llama.cpp threw (message in [`llama_sys_last_exception`]), 2
    /// when the llama.cpp built has no breakdown API (`src/llama-ext.h`).
    pub fn llama_sys_memory_breakdown(
        ctx: *const llama_context,
        out: *mut llama_sys_memory_use,
        cap: usize,
        n: *mut usize,
    ) -> core::ffi::c_int;
}

/// Called by [`llama_sys_model_tensors`] once per tensor: its name, the
/// names of its buffer and of the buffer's type (empty and NULL when it has
/// none), the buffer's identity and size. The strings are valid during the call only.
#[allow(non_camel_case_types)]
pub type llama_sys_tensor_visit = Option<
    unsafe extern "C" fn(
        user: *mut core::ffi::c_void,
        name: *const core::ffi::c_char,
        buffer_name: *const core::ffi::c_char,
        buffer_type: *const core::ffi::c_char,
        buffer: *const core::ffi::c_void,
        buffer_size: usize,
    ),
>;

extern "C" {
    /// Every tensor of a loaded `model`, in load order, with the buffer
    /// llama.cpp put it in (`llama_internal_get_tensor_map`). Returns 0, or 1
    /// when llama.cpp threw (message in [`llama_sys_last_exception`]).
    pub fn llama_sys_model_tensors(
        model: *const llama_model,
        visit: llama_sys_tensor_visit,
        user: *mut core::ffi::c_void,
    ) -> core::ffi::c_int;
}

/// Called by [`llama_sys_model_tensor_shapes`] and
/// [`llama_sys_gguf_tensor_shapes`] once per tensor: its name (valid during
/// the call only), its `ggml_type` and its four dimensions (`ne`).
#[allow(non_camel_case_types)]
pub type llama_sys_shape_visit = Option<
    unsafe extern "C" fn(
        user: *mut core::ffi::c_void,
        name: *const core::ffi::c_char,
        type_: i32,
        ne: *const i64,
    ),
>;

extern "C" {
    /// Every tensor of a loaded `model` with its type and dimensions.
    /// Returns 0, or 1 when llama.cpp threw.
    pub fn llama_sys_model_tensor_shapes(
        model: *const llama_model,
        visit: llama_sys_shape_visit,
        user: *mut core::ffi::c_void,
    ) -> core::ffi::c_int;

    /// Every tensor of the GGUF file at `path` (its tensor table only) with
    /// its type and dimensions. Returns 0, 1 when llama.cpp threw, 2 when
    /// the file is not a valid GGUF.
    pub fn llama_sys_gguf_tensor_shapes(
        path: *const core::ffi::c_char,
        visit: llama_sys_shape_visit,
        user: *mut core::ffi::c_void,
    ) -> core::ffi::c_int;
}

// The Vulkan loader's devices (`shim/vulkan_devices.cpp`).
extern "C" {
    /// Writes the `VkPhysicalDeviceType` of up to `cap` Vulkan physical
    /// devices, in the loader's order, to `types` and returns how many there
    /// are; -1 when the build has no `vulkan` feature, or there is no
    /// loader or driver.
    pub fn llama_sys_vk_physical_devices(
        types: *mut core::ffi::c_int,
        cap: usize,
    ) -> core::ffi::c_int;
}

// The exception firewall (`shim/firewall.cpp`): llama.cpp entry points that
// can let a C++ exception escape, wrapped so that none reaches Rust (which
// would abort the process). Each returns 0 when the wrapped call returned,
// with its result in `out`, or 1 when it threw, with the message in
// [`llama_sys_last_exception`].
#[allow(missing_docs)]
extern "C" {
    /// The message of the last exception a wrapper caught on this thread
    /// (empty if none); valid until the next wrapper call on this thread.
    pub fn llama_sys_last_exception() -> *const core::ffi::c_char;

    pub fn llama_sys_sampler_sample(
        smpl: *mut llama_sampler,
        ctx: *mut llama_context,
        idx: i32,
        out: *mut llama_token,
    ) -> core::ffi::c_int;

    pub fn llama_sys_sampler_accept(
        smpl: *mut llama_sampler,
        token: llama_token,
    ) -> core::ffi::c_int;

    pub fn llama_sys_sampler_apply(
        smpl: *mut llama_sampler,
        cur_p: *mut llama_token_data_array,
    ) -> core::ffi::c_int;

    pub fn llama_sys_sampler_init_grammar(
        vocab: *const llama_vocab,
        grammar: *const core::ffi::c_char,
        root: *const core::ffi::c_char,
        out: *mut *mut llama_sampler,
    ) -> core::ffi::c_int;

    /// Wraps the grammar sampler `inner` (owned by `*out` from then on)
    /// so that more than `max_stacks` parse stacks make its accept and
    /// apply throw (caught by the wrappers above). Without llama.cpp's
    /// `src/` at build time `*out` is `inner`, unbounded. 0 on success, 1
    /// when out of memory (`inner` then still the caller's).
    pub fn llama_sys_grammar_budget(
        inner: *mut llama_sampler,
        max_stacks: usize,
        out: *mut *mut llama_sampler,
    ) -> core::ffi::c_int;

    /// 1 when [`llama_sys_grammar_budget`] bounds the stacks in this build.
    pub fn llama_sys_grammar_budget_enforced() -> core::ffi::c_int;

    pub fn llama_sys_sampler_init_grammar_lazy(
        vocab: *const llama_vocab,
        grammar: *const core::ffi::c_char,
        root: *const core::ffi::c_char,
        patterns: *mut *const core::ffi::c_char,
        n_patterns: usize,
        tokens: *const llama_token,
        n_tokens: usize,
        out: *mut *mut llama_sampler,
    ) -> core::ffi::c_int;

    pub fn llama_sys_tokenize(
        vocab: *const llama_vocab,
        text: *const core::ffi::c_char,
        text_len: i32,
        tokens: *mut llama_token,
        n_tokens_max: i32,
        add_special: bool,
        parse_special: bool,
        out: *mut i32,
    ) -> core::ffi::c_int;

    pub fn llama_sys_token_to_piece(
        vocab: *const llama_vocab,
        token: llama_token,
        buf: *mut core::ffi::c_char,
        length: i32,
        lstrip: i32,
        special: bool,
        out: *mut i32,
    ) -> core::ffi::c_int;

    pub fn llama_sys_detokenize(
        vocab: *const llama_vocab,
        tokens: *const llama_token,
        n_tokens: i32,
        text: *mut core::ffi::c_char,
        text_len_max: i32,
        remove_special: bool,
        unparse_special: bool,
        out: *mut i32,
    ) -> core::ffi::c_int;

    pub fn llama_sys_chat_apply_template(
        tmpl: *const core::ffi::c_char,
        chat: *const llama_chat_message,
        n_msg: usize,
        add_ass: bool,
        buf: *mut core::ffi::c_char,
        length: i32,
        out: *mut i32,
    ) -> core::ffi::c_int;

    pub fn llama_sys_decode(
        ctx: *mut llama_context,
        batch: llama_batch,
        out: *mut i32,
    ) -> core::ffi::c_int;
}
