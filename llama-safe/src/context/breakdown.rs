//! Where a context's memory is: per buffer type (`CPU`, `CUDA0`,
//! `RPC0[host:port]`, ...), the bytes of weights, context memory (KV cache,
//! recurrent state) and compute buffers, from llama.cpp's own breakdown
//! (`llama_get_memory_breakdown`, what its `--fit` and memory report count).

use super::LlamaContext;
use crate::error::{Error, Result};
use std::ffi::CStr;

/// One buffer type's share of a context's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryUse {
    /// ggml's buffer type name, e.g. `CPU`, `CUDA0`, `RPC0[127.0.0.1:50052]`.
    pub buffer_type: String,
    /// The device of the buffer type (`CUDA0`, `RPC0`), if it has one.
    pub device: Option<String>,
    /// Whether the memory is host memory (RAM).
    pub host: bool,
    /// Bytes of model weights.
    pub model_bytes: u64,
    /// Bytes of context memory: the KV cache or recurrent state.
    pub context_bytes: u64,
    /// Bytes of compute buffers.
    pub compute_bytes: u64,
}

impl MemoryUse {
    /// Weights, context memory and compute buffers together.
    pub fn total(&self) -> u64 {
        self.model_bytes + self.context_bytes + self.compute_bytes
    }
}

/// Weights, context memory and compute buffers, summed over buffer types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryTotals {
    /// Bytes of model weights.
    pub model_bytes: u64,
    /// Bytes of context memory: the KV cache or recurrent state.
    pub context_bytes: u64,
    /// Bytes of compute buffers.
    pub compute_bytes: u64,
}

impl MemoryTotals {
    /// The three together.
    pub fn total(&self) -> u64 {
        self.model_bytes + self.context_bytes + self.compute_bytes
    }
}

/// The device (non-host) buffers of a breakdown, summed: the accelerator
/// memory, of one device or (`None`) of all of them.
pub fn device_totals(uses: &[MemoryUse], device: Option<&str>) -> MemoryTotals {
    uses.iter()
        .filter(|u| !u.host)
        .filter(|u| device.is_none() || u.device.as_deref() == device)
        .fold(MemoryTotals::default(), |sum, u| MemoryTotals {
            model_bytes: sum.model_bytes + u.model_bytes,
            context_bytes: sum.context_bytes + u.context_bytes,
            compute_bytes: sum.compute_bytes + u.compute_bytes,
        })
}

/// Bytes in device (non-host) buffers, of one device or of all of them.
pub fn device_bytes(uses: &[MemoryUse], device: Option<&str>) -> u64 {
    device_totals(uses, device).total()
}

/// Bytes in host buffers.
pub fn host_bytes(uses: &[MemoryUse]) -> u64 {
    uses.iter().filter(|u| u.host).map(MemoryUse::total).sum()
}

/// The breakdown of the live context `ctx`.
pub(crate) fn of_raw(ctx: *const llama_safe_sys::llama_context) -> Result<Vec<MemoryUse>> {
    const CAP: usize = 64;
    let empty = llama_safe_sys::llama_sys_memory_use {
        buffer_type: std::ptr::null(),
        device: std::ptr::null_mut(),
        is_host: 0,
        model: 0,
        context: 0,
        compute: 0,
    };
    let mut out = [empty; CAP];
    let mut n = 0usize;
    // SAFETY: `ctx` is a live context (the caller's guarantee); `out` has
    // room for CAP entries and the shim writes at most `cap` of them; it
    // catches any exception from llama.cpp.
    let status =
        unsafe { llama_safe_sys::llama_sys_memory_breakdown(ctx, out.as_mut_ptr(), CAP, &mut n) };
    if status == 2 {
        return Err(Error::Unsupported {
            reason: "this llama.cpp has no memory breakdown API (src/llama-ext.h)".into(),
        });
    }
    crate::ffi::check("llama_get_memory_breakdown", status)?;
    Ok(out[..n.min(CAP)]
        .iter()
        .map(|u| MemoryUse {
            // SAFETY: buffer type and device names are NUL-terminated
            // strings owned by ggml's backend registry, which outlives this
            // call; both are copied at once.
            buffer_type: unsafe { name(u.buffer_type) },
            device: (!u.device.is_null())
                .then(|| unsafe { name(llama_safe_sys::ggml_backend_dev_name(u.device)) }),
            host: u.is_host != 0,
            model_bytes: u.model,
            context_bytes: u.context,
            compute_bytes: u.compute,
        })
        .collect())
}

/// Copies a C string, empty for NULL.
///
/// # Safety
/// `ptr` is NULL or a valid NUL-terminated string.
unsafe fn name(ptr: *const std::ffi::c_char) -> String {
    if ptr.is_null() {
        String::new()
    } else {
        // SAFETY: the caller's guarantee.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }
}

impl LlamaContext {
    /// Where this context's memory is, per buffer type: the model's weights,
    /// the KV cache and the compute buffers, as llama.cpp counts them.
    ///
    /// ```
    /// use llama_safe::{demo::DemoModel, ContextParams, LlamaBackend, LlamaContext, LlamaModel};
    /// let backend = LlamaBackend::init();
    /// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
    /// let ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(256))?;
    /// let uses = ctx.memory_breakdown()?;
    /// let kv: u64 = uses.iter().map(|u| u.context_bytes).sum();
    /// assert!(kv > 0);
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn memory_breakdown(&self) -> Result<Vec<MemoryUse>> {
        of_raw(self.raw.as_ptr())
    }
}
