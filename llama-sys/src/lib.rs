//! Raw FFI bindings to [llama.cpp](https://github.com/ggml-org/llama.cpp),
//! built from a pinned source tree with CMake.
//!
//! Everything here is `unsafe` C API: use the `llama-safe` crate for a safe
//! interface. The bindings cover `llama.h`, `gguf.h` and the ggml backend
//! API (`ggml-backend.h`, `ggml-cpu.h`, `ggml-rpc.h`).
//!
//! ```
//! // SAFETY: llama_print_system_info returns a static NUL-terminated string.
//! let info = unsafe { std::ffi::CStr::from_ptr(llama_sys::llama_print_system_info()) };
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

/// What is known of the llama.cpp revision this crate was built from: a
/// `git describe` for a checkout, or the pin's description for the package.
pub const LLAMA_CPP_REVISION: &str = env!("LLAMA_SYS_REVISION");

/// Where the llama.cpp source came from: `LLAMA_CPP_DIR`,
/// `vendor/llama.cpp` or `pinned package`.
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

    /// Returns 1 when `std::regex_search(text, std::regex(pattern))` is true,
    /// 0 when false and -1 when the pattern does not compile.
    pub fn llama_sys_regex_search(
        pattern: *const core::ffi::c_char,
        text: *const core::ffi::c_char,
    ) -> core::ffi::c_int;
}
