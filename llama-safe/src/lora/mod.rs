//! LoRA adapters: loaded for a model, applied to a context with a scale,
//! removed again.

mod check;

use crate::context::LlamaContext;
use crate::error::{Error, Result};
use crate::ffi::c_path;
use crate::model::LlamaModel;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

/// The llama.cpp adapter; freed when the last handle, and the last context
/// it is applied to, let go of it.
struct Raw(
    NonNull<llama_safe_sys::llama_adapter_lora>,
    crate::device_lock::SerialDevices,
);

// SAFETY: the adapter's weights are not modified after loading; llama.cpp
// reads them from the contexts it is applied to, each behind `&mut`.
unsafe impl Send for Raw {}
// SAFETY: as above: shared access only reads.
unsafe impl Sync for Raw {}

impl Drop for Raw {
    fn drop(&mut self) {
        let _device = self.1.lock();
        // SAFETY: the pointer came from llama_adapter_lora_init and is freed
        // once; no context refers to it any more (each keeps an Arc of it
        // while it is applied), and the model is still alive (every handle
        // borrows it, every context borrows it), so llama_adapter_lora_free
        // can take it out of the model's list.
        unsafe { llama_safe_sys::llama_adapter_lora_free(self.0.as_ptr()) };
    }
}

/// A LoRA adapter for one model.
///
/// ```
/// use llama_safe::{demo::{DemoLora, DemoModel, DEMO_PROMPT}, *};
/// let backend = LlamaBackend::init();
/// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
/// let adapter = model.load_lora(DemoLora::cached()?)?;
/// let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(128))?;
/// ctx.set_loras(&[(&adapter, 1.0)])?;
/// let options = GenerateOptions::default().with_sampling(SamplingOptions::greedy());
/// let text: String = ctx.generate(DEMO_PROMPT, &options)?
///     .filter_map(|e| match e { Ok(Event::Piece(p)) => Some(p.text), _ => None })
///     .collect();
/// assert_eq!(text, DemoLora::CONTINUATION);
/// # Ok::<(), llama_safe::Error>(())
/// ```
pub struct LoraAdapter {
    raw: Arc<Raw>,
    model: LlamaModel,
}

impl std::fmt::Debug for LoraAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter").finish_non_exhaustive()
    }
}

impl LlamaModel {
    /// Loads a LoRA adapter (a GGUF with `general.type = adapter`) for this
    /// model. A missing file, another architecture, tensors of the wrong
    /// shape, rank or type, or a pair on an expert tensor are
    /// [`Error::Lora`] with the reason.
    pub fn load_lora(&self, path: impl AsRef<Path>) -> Result<LoraAdapter> {
        let path = path.as_ref();
        // llama.cpp reads these keys with getters that assert their type
        // (gguf_get_val_str, gguf_get_val_f32): check them first.
        let file = crate::gguf::GgufFile::open(path)?;
        for (key, want, name) in [
            ("general.type", llama_safe_sys::GGUF_TYPE_STRING, "a string"),
            (
                "general.architecture",
                llama_safe_sys::GGUF_TYPE_STRING,
                "a string",
            ),
            ("adapter.type", llama_safe_sys::GGUF_TYPE_STRING, "a string"),
            (
                "adapter.lora.alpha",
                llama_safe_sys::GGUF_TYPE_FLOAT32,
                "a 32-bit float",
            ),
        ] {
            if file.value_type(key).is_some_and(|t| t != want) {
                return Err(Error::Lora {
                    path: path.to_path_buf(),
                    reason: format!("metadata {key} must be {name}").into(),
                });
            }
        }
        check::check_adapter(self.as_ptr(), path)?;
        let c = c_path(path)?;
        let _device = self.device_guard();
        // SAFETY: the model is live and `c` a C string; llama.cpp catches
        // its own exceptions here and returns NULL with the reason logged.
        let raw = crate::ffi::non_null(
            || unsafe { llama_safe_sys::llama_adapter_lora_init(self.as_ptr(), c.as_ptr()) },
            |reason| Error::Lora {
                path: path.to_path_buf(),
                reason,
            },
        )?;
        Ok(LoraAdapter {
            raw: Arc::new(Raw(raw, self.serial_devices())),
            model: self.clone(),
        })
    }
}

impl LlamaContext {
    /// Applies these adapters, each with its scale, replacing any applied
    /// before (an empty list removes them all). An adapter of another model
    /// is [`Error::ModelMismatch`]; a scale that is not finite is
    /// [`Error::InvalidParameter`]. The context keeps each adapter alive
    /// while it is applied.
    pub fn set_loras(&mut self, adapters: &[(&LoraAdapter, f32)]) -> Result<()> {
        if adapters
            .iter()
            .any(|(a, _)| !a.model.same_model(self.model()))
        {
            return Err(Error::ModelMismatch {
                what: "a LoRA adapter",
            });
        }
        if let Some((_, s)) = adapters.iter().find(|(_, s)| !s.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "scale",
                reason: format!("LoRA scale {s} is not finite").into(),
            });
        }
        let mut raws: Vec<*mut llama_safe_sys::llama_adapter_lora> =
            adapters.iter().map(|(a, _)| a.raw.0.as_ptr()).collect();
        let mut scales: Vec<f32> = adapters.iter().map(|(_, s)| *s).collect();
        let _device = self.device_guard();
        // SAFETY: the context is live; both arrays hold `len` entries (the
        // NULL-pointer assert applies only to an empty call, which passes
        // dangling-but-non-NULL Vec pointers with n = 0); the adapters
        // belong to this context's model (checked) and are kept alive below
        // for as long as they are applied.
        unsafe {
            llama_safe_sys::llama_set_adapters_lora(
                self.as_ptr(),
                raws.as_mut_ptr(),
                raws.len(),
                scales.as_mut_ptr(),
            );
        }
        self.loras = adapters
            .iter()
            .map(|(a, _)| a.raw.clone() as std::sync::Arc<dyn Send + Sync>)
            .collect();
        Ok(())
    }

    /// Removes every adapter.
    pub fn clear_loras(&mut self) {
        let _ = self.set_loras(&[]);
    }
}
