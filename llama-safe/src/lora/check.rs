//! What an adapter's tensors must be for llama.cpp's graph to multiply
//! them, checked before llama.cpp loads it.
//!
//! llama.cpp checks only the first two dimensions of each pair against its
//! target; an adapter can pass that and still abort or crash the process at
//! the first decode: a 3-D `lora_a`/`lora_b` (a failed `ggml_mul_mat`
//! assert), a pair on an expert tensor (`ffn_*_exps`: multiplied per
//! expert, the assert again), a `lora_b` of an integer type (no kernel: a
//! call through a NULL function pointer), or a token-embedding pair whose
//! ranks differ.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::path::Path;

/// A tensor's type (a `ggml_type`) and its four dimensions.
#[derive(Clone, Copy)]
struct Shape {
    ggml_type: i32,
    ne: [i64; 4],
}

impl Shape {
    fn dims(&self) -> usize {
        4 - self.ne.iter().rev().take_while(|&&n| n == 1).count().min(3)
    }
}

/// The types ggml can multiply as a LoRA matrix on every backend: F32, F16,
/// BF16 and the classic block quantizations.
const MULTIPLIABLE: [(i32, &str); 8] = [
    (0, "f32"),
    (1, "f16"),
    (30, "bf16"),
    (2, "q4_0"),
    (3, "q4_1"),
    (6, "q5_0"),
    (7, "q5_1"),
    (8, "q8_0"),
];

type Shapes = HashMap<String, Shape>;

unsafe extern "C" fn collect(
    user: *mut c_void,
    name: *const c_char,
    ggml_type: i32,
    ne: *const i64,
) {
    // SAFETY: `user` is the `Shapes` the caller passed, alive and not
    // otherwise borrowed for the call; `name` is a NUL-terminated string and
    // `ne` four int64s, both valid during the call (the shim's contract).
    // Nothing here unwinds but an allocation failure, which aborts anyway.
    unsafe {
        let shapes = &mut *user.cast::<Shapes>();
        let ne = std::slice::from_raw_parts(ne, 4);
        shapes.insert(
            CStr::from_ptr(name).to_string_lossy().into_owned(),
            Shape {
                ggml_type,
                ne: [ne[0], ne[1], ne[2], ne[3]],
            },
        );
    }
}

/// The tensors of a loaded model.
fn model_shapes(model: *const llama_safe_sys::llama_model) -> Result<Shapes> {
    let mut shapes = Shapes::new();
    // SAFETY: the model is loaded and live for the call; `collect` writes
    // only into `shapes`, which outlives it; a throw is caught by the shim.
    let status = unsafe {
        llama_safe_sys::llama_sys_model_tensor_shapes(
            model,
            Some(collect),
            (&mut shapes as *mut Shapes).cast(),
        )
    };
    crate::ffi::check("llama_internal_get_tensor_map", status)?;
    Ok(shapes)
}

/// Checks every tensor of the adapter at `path` against the loaded model
/// (see the module docs).
pub(super) fn check_adapter(model: *const llama_safe_sys::llama_model, path: &Path) -> Result<()> {
    let fail = |reason: String| Error::Lora {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let c = crate::ffi::c_path(path)?;
    let mut adapter = Shapes::new();
    // SAFETY: `c` is a valid C string; `collect` writes only into
    // `adapter`, which outlives the call; the shim catches throws.
    let status = unsafe {
        llama_safe_sys::llama_sys_gguf_tensor_shapes(
            c.as_ptr(),
            Some(collect),
            (&mut adapter as *mut Shapes).cast(),
        )
    };
    if status != 0 {
        // llama.cpp's own load says what is wrong with the file.
        return Ok(());
    }
    let base = model_shapes(model)?;
    let mut names: Vec<&String> = adapter.keys().collect();
    names.sort();
    for name in names {
        let shape = adapter[name];
        let Some(target) = name
            .strip_suffix(".lora_a")
            .or_else(|| name.strip_suffix(".lora_b"))
        else {
            // Norm vectors are skipped by llama.cpp; other suffixes are
            // refused by its loader, with its message.
            continue;
        };
        if !MULTIPLIABLE.iter().any(|(t, _)| *t == shape.ggml_type) {
            let names: Vec<&str> = MULTIPLIABLE.iter().map(|(_, n)| *n).collect();
            return Err(fail(format!(
                "tensor {name:?} has ggml type {}; a LoRA matrix must be one of {}",
                shape.ggml_type,
                names.join(", ")
            )));
        }
        if shape.dims() > 2 {
            return Err(fail(format!(
                "tensor {name:?} has {} dimensions ({:?}); LoRA matrices have 2",
                shape.dims(),
                shape.ne
            )));
        }
        let (Some(a), Some(b)) = (
            adapter.get(&format!("{target}.lora_a")),
            adapter.get(&format!("{target}.lora_b")),
        ) else {
            continue; // llama.cpp refuses a half pair, with its message
        };
        let Some(w) = base.get(target) else {
            continue; // llama.cpp refuses an unknown target, with its message
        };
        if w.dims() > 2 {
            return Err(fail(format!(
                "{target:?} is a {}-dimensional tensor (an expert tensor): llama.cpp cannot apply a LoRA pair to it",
                w.dims()
            )));
        }
        let fits = if target.ends_with("token_embd.weight") {
            // get_rows(a) then b × that: a's rows are tokens, b's columns
            // the embedding, and both share the rank.
            w.ne[0] == b.ne[1] && w.ne[1] == a.ne[1] && a.ne[0] == b.ne[0]
        } else {
            // b × (a × x): a reads the input, b writes the output.
            w.ne[0] == a.ne[0] && w.ne[1] == b.ne[1] && a.ne[1] == b.ne[0]
        };
        if !fits {
            return Err(fail(format!(
                "pair for {target:?} has shapes lora_a {:?}, lora_b {:?}, which do not multiply with its shape {:?}",
                &a.ne[..2],
                &b.ne[..2],
                &w.ne[..2]
            )));
        }
    }
    Ok(())
}
