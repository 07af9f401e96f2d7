//! What went where when a model loaded, from llama.cpp's own report of the
//! load (its log lines, captured for that load whatever the application's
//! log level) and the exact tensor sizes from the GGUF file.
//!
//! Two kinds of line are relied on, and a test fails loudly if upstream
//! changes them:
//! - `tensor NAME (N MiB TYPE) buffer type overridden to BUFT` (debug level,
//!   one per tensor an override matched);
//! - `load_tensors: BUFFER model buffer size = X MiB` (one per buffer).

use crate::gguf::TensorInfo;
use crate::logging::LogLine;
use std::collections::BTreeMap;

/// A tensor that a buffer override moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedTensor {
    /// Tensor name, e.g. `blk.3.ffn_down_exps.weight`.
    pub name: String,
    /// Exact size in bytes (from the GGUF tensor table).
    pub bytes: u64,
    /// ggml type, e.g. `q8_0`.
    pub ggml_type: String,
    /// The buffer type it landed in, e.g. `CPU`, `CPU_REPACK`, `CUDA0`.
    pub buffer_type: String,
}

/// A model buffer llama.cpp allocated for the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferUsage {
    /// Buffer name, e.g. `CPU_Mapped`, `CPU_REPACK`, `CUDA0`, `CUDA_Host`.
    pub name: String,
    /// Size as llama.cpp logs it (to 0.01 MiB, so within ~5 KiB).
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
    /// Model weight buffers in the order llama.cpp reported them.
    pub buffers: Vec<BufferUsage>,
    /// Tensors an override moved, in load order.
    pub moved: Vec<MovedTensor>,
}

impl Placement {
    /// Builds the report from a load's captured lines and the file's tensors.
    pub(crate) fn from_log(lines: &[LogLine], tensors: &[TensorInfo]) -> Placement {
        let sizes: BTreeMap<&str, &TensorInfo> =
            tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut placement = Placement::default();
        for line in lines {
            if let Some((name, buffer_type)) = parse_override(&line.text) {
                let info = sizes.get(name);
                placement.moved.push(MovedTensor {
                    name: name.to_string(),
                    bytes: info.map_or(0, |t| t.bytes),
                    ggml_type: info.map(|t| t.ggml_type.clone()).unwrap_or_default(),
                    buffer_type: buffer_type.to_string(),
                });
            } else if let Some(buffer) = parse_buffer(&line.text) {
                placement.buffers.push(buffer);
            }
        }
        placement
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

/// `tensor NAME (N MiB TYPE) buffer type overridden to BUFT`
fn parse_override(text: &str) -> Option<(&str, &str)> {
    let rest = text.trim().strip_prefix("tensor ")?;
    let (name, rest) = rest.split_once(" (")?;
    let (_, buft) = rest.split_once(") buffer type overridden to ")?;
    Some((name, buft.trim()))
}

/// `load_tensors: BUFFER model buffer size = X MiB`
fn parse_buffer(text: &str) -> Option<BufferUsage> {
    let rest = text.trim().strip_prefix("load_tensors:")?;
    let (name, rest) = rest.split_once(" model buffer size = ")?;
    let mib: f64 = rest.trim().strip_suffix("MiB")?.trim().parse().ok()?;
    Some(BufferUsage {
        name: name.trim().to_string(),
        bytes: (mib * 1024.0 * 1024.0).round() as u64,
    })
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
    fn parses_upstream_lines() {
        assert_eq!(
            parse_override(
                "tensor blk.0.ffn_up_exps.weight (0 MiB q8_0) buffer type overridden to CPU_REPACK"
            ),
            Some(("blk.0.ffn_up_exps.weight", "CPU_REPACK"))
        );
        let b =
            parse_buffer("load_tensors:   CPU_Mapped model buffer size =     1.50 MiB").unwrap();
        assert_eq!(b.name, "CPU_Mapped");
        assert_eq!(b.bytes, 1572864);
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }
}
