//! Tensor buffer overrides: a checked pattern and where matching tensors go.

use crate::error::{Error, Result};
use std::ffi::{c_char, CString};

/// Where tensors matching an override pattern are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideTarget {
    /// Host memory through llama.cpp's CPU buffer type, so its repacked CPU
    /// layouts (`CPU_REPACK`) still apply, as with `--cpu-moe`.
    Cpu,
    /// A device by name (`CUDA0`, `Vulkan0`, `RPC0`, ...): its default buffer
    /// type. An unknown name is an [`Error::UnknownDevice`] at load.
    Device(String),
}

impl std::fmt::Display for OverrideTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverrideTarget::Cpu => f.write_str("CPU"),
            OverrideTarget::Device(name) => f.write_str(name),
        }
    }
}

impl OverrideTarget {
    /// The ggml buffer type for this target.
    pub(crate) fn buffer_type(&self) -> Result<llama_safe_sys::ggml_backend_buffer_type_t> {
        match self {
            // SAFETY: returns ggml's static CPU buffer type.
            OverrideTarget::Cpu => Ok(unsafe { llama_safe_sys::ggml_backend_cpu_buffer_type() }),
            OverrideTarget::Device(name) => {
                let dev = crate::backend::device_by_name(name)?;
                // SAFETY: dev is a registry device.
                Ok(unsafe { llama_safe_sys::ggml_backend_dev_buffer_type(dev) })
            }
        }
    }
}

/// A tensor-name pattern as llama.cpp matches it: a C++ `std::regex`
/// (ECMAScript) found anywhere in the name (`std::regex_search`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorPattern {
    source: String,
    c: CString,
}

impl TensorPattern {
    /// Checks `pattern` with the same regex engine llama.cpp uses, so an
    /// invalid one fails here, naming the pattern, not deep inside a load.
    ///
    /// Patterns are bounded so that engine can neither overflow its stack
    /// nor run away (see [`pattern_limits`](crate::pattern_limits)): at most
    /// 256 bytes, groups nested at most 8 deep, no repeated group holding a
    /// repetition or an alternation (`(a*)*`, `(a|aa)*`), at most 3
    /// repetitions with counts up to 63, no back-references.
    ///
    /// ```
    /// use llama_safe::TensorPattern;
    /// assert!(TensorPattern::new(r"blk\.\d+\.ffn_up_exps").is_ok());
    /// assert!(TensorPattern::new("ffn_(up").is_err());
    /// ```
    pub fn new(pattern: &str) -> Result<TensorPattern> {
        let invalid = |reason: String| Error::InvalidPattern {
            pattern: pattern.to_string(),
            reason,
        };
        if pattern.is_empty() {
            return Err(invalid(
                "empty pattern (it would match every tensor)".into(),
            ));
        }
        let c = CString::new(pattern).map_err(|_| invalid("contains a NUL byte".into()))?;
        crate::pattern_limits::check(pattern).map_err(invalid)?;
        let mut err = [0 as c_char; 256];
        // SAFETY: c is a C string; err is writable for its length.
        let ok = unsafe {
            llama_safe_sys::llama_sys_regex_check(c.as_ptr(), err.as_mut_ptr(), err.len())
        };
        if ok != 1 {
            // SAFETY: the shim NUL-terminates err.
            let reason = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            return Err(invalid(if reason.is_empty() {
                "does not compile".into()
            } else {
                reason
            }));
        }
        Ok(TensorPattern {
            source: pattern.to_string(),
            c,
        })
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub(crate) fn as_c(&self) -> &std::ffi::CStr {
        &self.c
    }

    /// Whether llama.cpp would apply this pattern to `tensor_name`.
    ///
    /// ```
    /// use llama_safe::TensorPattern;
    /// let p = TensorPattern::new(&llama_safe::moe::layer_pattern(1)).unwrap();
    /// assert!(p.is_match("blk.1.ffn_up_exps.weight"));
    /// assert!(!p.is_match("blk.11.ffn_up_exps.weight"));
    /// ```
    ///
    /// A text longer than a tensor name can be (63 bytes) never matches.
    pub fn is_match(&self, tensor_name: &str) -> bool {
        if tensor_name.len() > crate::pattern_limits::MAX_NAME_LEN {
            return false; // no tensor has this name; std::regex recurses per byte
        }
        let Ok(name) = CString::new(tensor_name) else {
            return false;
        };
        // SAFETY: both are C strings; the pattern compiled in `new`, within
        // bounds that keep std::regex's recursion and backtracking small
        // for a text of at most 63 bytes.
        unsafe { llama_safe_sys::llama_sys_regex_search(self.c.as_ptr(), name.as_ptr()) == 1 }
    }
}

impl std::fmt::Display for TensorPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}
