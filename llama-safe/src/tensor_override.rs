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
    /// nor run away (see [`limits`](crate::limits)): at most
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
            reason: reason.into(),
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
        self.matches(&[tensor_name])[0]
    }

    /// [`is_match`](Self::is_match) for many names, with the pattern
    /// compiled once (a plan matches every tensor of a model against each
    /// pattern).
    pub(crate) fn matches(&self, tensor_names: &[&str]) -> Vec<bool> {
        // A name longer than a tensor name can be never matches (no tensor
        // has it; std::regex recurses per byte), nor does one with a NUL.
        let names: Vec<Option<CString>> = tensor_names
            .iter()
            .map(|n| {
                (n.len() <= crate::pattern_limits::MAX_NAME_LEN)
                    .then(|| CString::new(*n).ok())
                    .flatten()
            })
            .collect();
        let searched: Vec<*const std::ffi::c_char> =
            names.iter().flatten().map(|c| c.as_ptr()).collect();
        let mut found = vec![0; searched.len()];
        // SAFETY: the pattern and every text are C strings that outlive the
        // call, `found` has one slot per text; the pattern compiled in
        // `new`, within bounds that keep std::regex's recursion and
        // backtracking small for texts of at most 63 bytes; a throw is
        // caught in the shim (-1, read as no match).
        let status = unsafe {
            llama_safe_sys::llama_sys_regex_search_many(
                self.c.as_ptr(),
                searched.as_ptr(),
                searched.len(),
                found.as_mut_ptr(),
            )
        };
        let mut found = found.into_iter().map(|f| status == 0 && f == 1);
        names
            .iter()
            .map(|n| n.is_some() && found.next().unwrap_or(false))
            .collect()
    }
}

impl std::fmt::Display for TensorPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}
