//! What went where when a model loaded: the tensors the overrides moved,
//! by the plan's own matching (the same patterns, regex engine and
//! first-match rule as llama.cpp's loader, [`LlamaModelParams::plan`](crate::LlamaModelParams::plan)),
//! with the buffer llama.cpp actually put each in and the exact size of
//! every weight buffer, read from the loaded model itself (nothing is
//! parsed from llama.cpp's log).

use crate::error::Result;
use crate::plan::PlannedTensor;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr};

/// A tensor that a buffer override moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedTensor {
    /// Tensor name, e.g. `blk.3.ffn_down_exps.weight`.
    pub name: String,
    /// Exact size in bytes (from the GGUF tensor table).
    pub bytes: u64,
    /// ggml type, e.g. `q8_0`.
    pub ggml_type: String,
    /// The buffer type it landed in, e.g. `CPU`, `CPU_REPACK`, `CUDA0`
    /// (read from the loaded model).
    pub buffer_type: String,
}

/// A model buffer llama.cpp allocated for the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferUsage {
    /// Buffer name, e.g. `CPU_Mapped`, `CPU_REPACK`, `CUDA0`, `CUDA_Host`.
    pub name: String,
    /// Its exact size, alignment padding included.
    pub bytes: u64,
}

/// Where a load put the weights: totals per buffer and every tensor moved by
/// an override.
///
/// `Display` prints a short table:
///
/// ```text
/// weights by buffer:
///   CPU_Mapped        1.23 MiB
/// moved by overrides: 12 tensors, 0.61 MiB
///   blk.0.ffn_gate_exps.weight   52.0 KiB  q8_0  -> CPU
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Model weight buffers, in the order of the first tensor each holds.
    pub buffers: Vec<BufferUsage>,
    /// Tensors an override moved, in file order.
    pub moved: Vec<MovedTensor>,
}

impl Placement {
    /// Reads where `model`'s tensors landed; `planned` are the tensors the
    /// overrides matched (a tensor llama.cpp did not create is left out).
    pub(crate) fn of_model(
        model: *const llama_safe_sys::llama_model,
        planned: &[PlannedTensor],
    ) -> Result<Placement> {
        #[derive(Default)]
        struct Seen {
            /// Tensor name → buffer type name.
            tensors: BTreeMap<String, String>,
            /// Buffers in first-seen order: identity, name, size.
            buffers: Vec<(usize, String, u64)>,
        }
        unsafe extern "C" fn visit(
            user: *mut c_void,
            name: *const c_char,
            buffer_name: *const c_char,
            buffer_type: *const c_char,
            buffer: *const c_void,
            size: usize,
        ) {
            // SAFETY: `user` is the `Seen` passed below, borrowed mutably for
            // the call; the strings are NUL-terminated and valid during it.
            let seen = unsafe { &mut *(user as *mut Seen) };
            let text =
                |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
            seen.tensors.insert(text(name), text(buffer_type));
            if !buffer.is_null() && !seen.buffers.iter().any(|(id, _, _)| *id == buffer as usize) {
                seen.buffers
                    .push((buffer as usize, text(buffer_name), size as u64));
            }
        }
        let mut seen = Seen::default();
        // SAFETY: the model is loaded and live for the call; `visit` only
        // copies what it is given into `seen`, which outlives the call (and
        // does not unwind: it formats strings and pushes into vectors); a
        // throw is caught by the firewall.
        let status = unsafe {
            llama_safe_sys::llama_sys_model_tensors(
                model,
                Some(visit),
                (&mut seen as *mut Seen).cast(),
            )
        };
        crate::ffi::check("llama_internal_get_tensor_map", status)?;
        let moved = planned
            .iter()
            .filter_map(|t| {
                Some(MovedTensor {
                    name: t.name.clone(),
                    bytes: t.bytes,
                    ggml_type: t.ggml_type.clone(),
                    buffer_type: seen.tensors.get(&t.name)?.clone(),
                })
            })
            .collect();
        let buffers = seen
            .buffers
            .into_iter()
            .map(|(_, name, bytes)| BufferUsage { name, bytes })
            .collect();
        Ok(Placement { buffers, moved })
    }

    /// Bytes of weights per buffer name (summed if a name repeats).
    pub fn bytes_by_buffer(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for b in &self.buffers {
            *out.entry(b.name.clone()).or_insert(0) += b.bytes;
        }
        out
    }

    /// Total bytes the overrides moved.
    pub fn moved_bytes(&self) -> u64 {
        self.moved.iter().map(|t| t.bytes).sum()
    }

    /// Total bytes of all weight buffers.
    pub fn total_bytes(&self) -> u64 {
        self.buffers.iter().map(|b| b.bytes).sum()
    }
}

/// `1536` -> `1.50 KiB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "weights by buffer:")?;
        for (name, bytes) in self.bytes_by_buffer() {
            writeln!(f, "  {name:<16} {:>12}", human_bytes(bytes))?;
        }
        if self.moved.is_empty() {
            return writeln!(f, "moved by overrides: none");
        }
        writeln!(
            f,
            "moved by overrides: {} tensors, {}",
            self.moved.len(),
            human_bytes(self.moved_bytes())
        )?;
        let width = self.moved.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in &self.moved {
            writeln!(
                f,
                "  {:<width$} {:>12}  {:<6} -> {}",
                t.name,
                human_bytes(t.bytes),
                t.ggml_type,
                t.buffer_type
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
