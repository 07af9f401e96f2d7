//! A GGUF v3 writer: metadata, then F32/F16/Q8_0 tensors, 32-byte aligned.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

const ALIGNMENT: usize = 32;

/// Tensor data types the writer can produce (ggml type ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// 8-bit blocks of 32 values with one f16 scale (34 bytes a block).
    Q8_0,
}

impl GgmlType {
    fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
        }
    }

    /// Bytes that `n` values take in this type (`n` a multiple of 32 for Q8_0).
    ///
    /// ```
    /// use llama_safe::gguf::GgmlType;
    /// assert_eq!(GgmlType::Q8_0.row_bytes(64), 68);
    /// assert_eq!(GgmlType::F16.row_bytes(64), 128);
    /// ```
    pub fn row_bytes(self, n: u64) -> u64 {
        match self {
            GgmlType::F32 => 4 * n,
            GgmlType::F16 => 2 * n,
            GgmlType::Q8_0 => n.div_ceil(32) * 34,
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MetaValue {
    /// An unsigned 32-bit integer.
    U32(u32),
    /// A signed 32-bit integer.
    I32(i32),
    /// A 32-bit float.
    F32(f32),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of strings.
    StrArray(Vec<String>),
    /// An array of f32.
    F32Array(Vec<f32>),
    /// An array of i32.
    I32Array(Vec<i32>),
}

struct Tensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF file in memory and writes it out.
///
/// ```
/// use llama_safe::gguf::{GgmlType, GgufWriter, MetaValue};
/// let mut w = GgufWriter::new();
/// w.meta("general.architecture", MetaValue::Str("llama".into()));
/// w.tensor("x.weight", &[32, 2], GgmlType::Q8_0, &[0.5; 64]).unwrap();
/// let bytes = w.to_bytes();
/// assert_eq!(&bytes[..4], b"GGUF");
/// ```
#[derive(Default)]
pub struct GgufWriter {
    meta: Vec<(String, MetaValue)>,
    tensors: Vec<Tensor>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata key.
    pub fn meta(&mut self, key: &str, value: MetaValue) -> &mut Self {
        self.meta.push((key.to_string(), value));
        self
    }

    /// Adds a tensor with ggml dimensions `dims` (innermost first) from f32
    /// values, converted to `ty`.
    pub fn tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        values: &[f32],
    ) -> Result<&mut Self> {
        let count: u64 = dims.iter().product();
        if count as usize != values.len() {
            return Err(Error::InvalidParameter {
                name: "values",
                reason: format!("tensor {name}: {} values for dims {dims:?}", values.len()).into(),
            });
        }
        if ty == GgmlType::Q8_0 && dims.first().is_none_or(|d| d % 32 != 0) {
            return Err(Error::InvalidParameter {
                name: "dims",
                reason: format!("tensor {name}: Q8_0 rows must be a multiple of 32").into(),
            });
        }
        let data = match ty {
            GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            GgmlType::Q8_0 => quantize_q8_0(values),
        };
        self.tensors.push(Tensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.meta.len() as u64).to_le_bytes());
        for (key, value) in &self.meta {
            put_str(&mut out, key);
            put_value(&mut out, value);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = align(offset + t.data.len());
        }
        out.resize(align(out.len()), 0);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            out.resize(align(out.len()), 0);
        }
        out
    }

    /// Writes the file to `path` (through a temporary file in the same
    /// folder and a rename, so a reader never sees half a file; the
    /// temporary file is removed if anything fails).
    pub fn write_to(&self, path: &Path) -> Result<()> {
        let io = |source: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source: source.into(),
        };
        // A temporary file of its own per call: two threads writing the same
        // file, as tests do on a fresh cache, never share one, and the rename
        // makes whichever finishes last win whole.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        file.write_all(&self.to_bytes()).map_err(io)?;
        file.as_file().sync_all().map_err(io)?;
        file.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &MetaValue) {
    const U32: u32 = 4;
    const I32: u32 = 5;
    const F32: u32 = 6;
    const BOOL: u32 = 7;
    const STRING: u32 = 8;
    const ARRAY: u32 = 9;
    let mut head = |ty: u32| out.extend_from_slice(&ty.to_le_bytes());
    match value {
        MetaValue::U32(v) => {
            head(U32);
            out.extend_from_slice(&v.to_le_bytes());
        }
        MetaValue::I32(v) => {
            head(I32);
            out.extend_from_slice(&v.to_le_bytes());
        }
        MetaValue::F32(v) => {
            head(F32);
            out.extend_from_slice(&v.to_le_bytes());
        }
        MetaValue::Bool(v) => {
            head(BOOL);
            out.push(u8::from(*v));
        }
        MetaValue::Str(s) => {
            head(STRING);
            put_str(out, s);
        }
        MetaValue::StrArray(items) => {
            head(ARRAY);
            out.extend_from_slice(&STRING.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for s in items {
                put_str(out, s);
            }
        }
        MetaValue::F32Array(items) => {
            head(ARRAY);
            out.extend_from_slice(&F32.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for v in items {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        MetaValue::I32Array(items) => {
            head(ARRAY);
            out.extend_from_slice(&I32.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for v in items {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// ggml's Q8_0: per block of 32 values, an f16 scale `amax / 127` and 32
/// rounded `i8`s.
fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|v| ((v * id).round() as i8) as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_block_is_34_bytes_and_round_trips() {
        let values: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        let q = quantize_q8_0(&values);
        assert_eq!(q.len(), 34);
        let d = half::f16::from_le_bytes([q[0], q[1]]).to_f32();
        for (i, v) in values.iter().enumerate() {
            let back = (q[2 + i] as i8) as f32 * d;
            assert!((back - v).abs() <= d, "{back} vs {v}");
        }
    }

    #[test]
    fn rejects_mismatched_values() {
        let mut w = GgufWriter::new();
        assert!(w.tensor("t", &[4, 4], GgmlType::F32, &[0.0; 15]).is_err());
        assert!(w.tensor("t", &[16], GgmlType::Q8_0, &[0.0; 16]).is_err());
    }
}
