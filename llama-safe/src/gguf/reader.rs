//! Reading a GGUF file's metadata and tensor table with llama.cpp's parser.

use crate::error::{Error, Result};
use crate::logging;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// One tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.ffn_up_exps.weight`.
    pub name: String,
    /// ggml type name, e.g. `q8_0`.
    pub ggml_type: String,
    /// Bytes of data in the file (`ggml_nbytes`).
    pub bytes: u64,
}

/// A GGUF file opened for its metadata and tensor table (no weights read).
///
/// ```no_run
/// let file = llama_safe::gguf::GgufFile::open("model.gguf")?;
/// println!("{} has {} tensors", file.architecture()?, file.tensors().len());
/// # Ok::<(), llama_safe::Error>(())
/// ```
pub struct GgufFile {
    path: PathBuf,
    ctx: NonNull<llama_safe_sys::gguf_context>,
}

// SAFETY: the gguf context is only read after it is created, and
// llama.cpp's gguf getters do not touch global state.
unsafe impl Send for GgufFile {}
// SAFETY: as above, every method takes `&self` and only reads.
unsafe impl Sync for GgufFile {}

impl Drop for GgufFile {
    fn drop(&mut self) {
        // SAFETY: ctx came from gguf_init_from_file and is freed once.
        unsafe { llama_safe_sys::gguf_free(self.ctx.as_ptr()) };
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .finish()
    }
}

/// Checks that `path` is a readable file starting with the GGUF magic, so
/// each common mistake gets its own error before llama.cpp sees it.
pub(crate) fn check_gguf_path(path: &Path) -> Result<()> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
        },
        _ => Error::Unreadable {
            path: path.to_path_buf(),
            source: source.into(),
        },
    })?;
    if meta.is_dir() {
        return Err(Error::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    if !meta.is_file() {
        // A FIFO would block the open below, a device stream forever.
        return Err(Error::Unreadable {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a FIFO or a device is not read)",
            )
            .into(),
        });
    }
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|source| Error::Unreadable {
        path: path.to_path_buf(),
        source: source.into(),
    })?;
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == b"GGUF" => Ok(()),
        Ok(()) => Err(Error::NotGguf {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::NotGguf {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(Error::Unreadable {
            path: path.to_path_buf(),
            source: source.into(),
        }),
    }
}

impl GgufFile {
    /// Opens `path` and parses its header, metadata and tensor table.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        check_gguf_path(path)?;
        let c = crate::ffi::c_path(path)?;
        // ggml logs why a file is rejected: route it through us first.
        logging::install();
        let params = llama_safe_sys::gguf_init_params {
            no_alloc: true,
            ctx: std::ptr::null_mut(),
        };
        // SAFETY: `c` is a valid C string; with ctx NULL no tensor data is read.
        let ctx = crate::ffi::non_null(
            || unsafe { llama_safe_sys::gguf_init_from_file(c.as_ptr(), params) },
            |reason| Error::InvalidGguf {
                path: path.to_path_buf(),
                reason,
            },
        )?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            ctx,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        let ctx = self.ctx.as_ptr();
        // SAFETY: ctx is live; indices are below gguf_get_n_tensors; names
        // and type names are NUL-terminated strings owned by gguf/ggml.
        unsafe {
            (0..llama_safe_sys::gguf_get_n_tensors(ctx))
                .map(|i| TensorInfo {
                    name: CStr::from_ptr(llama_safe_sys::gguf_get_tensor_name(ctx, i))
                        .to_string_lossy()
                        .into_owned(),
                    ggml_type: CStr::from_ptr(llama_safe_sys::ggml_type_name(
                        llama_safe_sys::gguf_get_tensor_type(ctx, i),
                    ))
                    .to_string_lossy()
                    .into_owned(),
                    bytes: llama_safe_sys::gguf_get_tensor_size(ctx, i) as u64,
                })
                .collect()
        }
    }

    fn key_id(&self, key: &str) -> Result<i64> {
        let c = CString::new(key).map_err(|_| Error::NulByte {
            what: "a metadata key",
        })?;
        // SAFETY: ctx is live and c a valid C string.
        let id = unsafe { llama_safe_sys::gguf_find_key(self.ctx.as_ptr(), c.as_ptr()) };
        if id < 0 {
            return Err(Error::Metadata {
                key: key.into(),
                reason: "not present".into(),
            });
        }
        Ok(id)
    }

    /// The GGUF type id of `key`'s value (`GGUF_TYPE_*`), if present.
    pub(crate) fn value_type(&self, key: &str) -> Option<llama_safe_sys::gguf_type> {
        let id = self.key_id(key).ok()?;
        // SAFETY: id is a valid key index.
        Some(unsafe { llama_safe_sys::gguf_get_kv_type(self.ctx.as_ptr(), id) })
    }

    /// Every metadata key, in file order.
    pub fn keys(&self) -> Vec<String> {
        let ctx = self.ctx.as_ptr();
        // SAFETY: ctx is live; every index below gguf_get_n_kv is a valid
        // key, whose name is a NUL-terminated string owned by ctx.
        unsafe {
            (0..llama_safe_sys::gguf_get_n_kv(ctx))
                .map(|i| {
                    CStr::from_ptr(llama_safe_sys::gguf_get_key(ctx, i))
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        }
    }

    /// A boolean value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let id = self.key_id(key)?;
        let ctx = self.ctx.as_ptr();
        // SAFETY: id is a valid key index; the type is checked before reading.
        unsafe {
            if llama_safe_sys::gguf_get_kv_type(ctx, id) != llama_safe_sys::GGUF_TYPE_BOOL {
                return Err(Error::Metadata {
                    key: key.into(),
                    reason: "not a bool".into(),
                });
            }
            Ok(llama_safe_sys::gguf_get_val_bool(ctx, id))
        }
    }

    /// Whether the metadata has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.key_id(key).is_ok()
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<String> {
        let id = self.key_id(key)?;
        let ctx = self.ctx.as_ptr();
        // SAFETY: id is a valid key index; the type is checked before reading.
        unsafe {
            if llama_safe_sys::gguf_get_kv_type(ctx, id) != llama_safe_sys::GGUF_TYPE_STRING {
                return Err(Error::Metadata {
                    key: key.into(),
                    reason: "not a string".into(),
                });
            }
            Ok(CStr::from_ptr(llama_safe_sys::gguf_get_val_str(ctx, id))
                .to_string_lossy()
                .into_owned())
        }
    }

    /// An unsigned integer value of any integer type.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let id = self.key_id(key)?;
        let ctx = self.ctx.as_ptr();
        let bad = |reason: &str| Error::Metadata {
            key: key.into(),
            reason: reason.into(),
        };
        // SAFETY: id is a valid key index; each getter matches the checked type.
        let value: i128 = unsafe {
            match llama_safe_sys::gguf_get_kv_type(ctx, id) {
                llama_safe_sys::GGUF_TYPE_UINT8 => llama_safe_sys::gguf_get_val_u8(ctx, id).into(),
                llama_safe_sys::GGUF_TYPE_INT8 => llama_safe_sys::gguf_get_val_i8(ctx, id).into(),
                llama_safe_sys::GGUF_TYPE_UINT16 => {
                    llama_safe_sys::gguf_get_val_u16(ctx, id).into()
                }
                llama_safe_sys::GGUF_TYPE_INT16 => llama_safe_sys::gguf_get_val_i16(ctx, id).into(),
                llama_safe_sys::GGUF_TYPE_UINT32 => {
                    llama_safe_sys::gguf_get_val_u32(ctx, id).into()
                }
                llama_safe_sys::GGUF_TYPE_INT32 => llama_safe_sys::gguf_get_val_i32(ctx, id).into(),
                llama_safe_sys::GGUF_TYPE_UINT64 => {
                    llama_safe_sys::gguf_get_val_u64(ctx, id).into()
                }
                llama_safe_sys::GGUF_TYPE_INT64 => llama_safe_sys::gguf_get_val_i64(ctx, id).into(),
                _ => return Err(bad("not an integer")),
            }
        };
        u64::try_from(value).map_err(|_| bad("negative"))
    }

    /// A float value (either float type), or an integer read as a float.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let id = self.key_id(key)?;
        let ctx = self.ctx.as_ptr();
        // SAFETY: id is a valid key index; each getter matches the checked type.
        unsafe {
            match llama_safe_sys::gguf_get_kv_type(ctx, id) {
                llama_safe_sys::GGUF_TYPE_FLOAT32 => {
                    Ok(llama_safe_sys::gguf_get_val_f32(ctx, id).into())
                }
                llama_safe_sys::GGUF_TYPE_FLOAT64 => Ok(llama_safe_sys::gguf_get_val_f64(ctx, id)),
                _ => self.get_u64(key).map(|v| v as f64),
            }
        }
    }

    /// The integers of an integer array, or of a single integer as a
    /// one-element list (llama.cpp's `get_key_or_arr`); negative values are
    /// an error.
    pub fn get_u64_list(&self, key: &str) -> Result<Vec<u64>> {
        let id = self.key_id(key)?;
        let ctx = self.ctx.as_ptr();
        let bad = |reason: &str| Error::Metadata {
            key: key.into(),
            reason: reason.into(),
        };
        // SAFETY: id is a valid key index and its type is checked before
        // the array's data is read; the data holds `n` elements of the
        // checked element type.
        unsafe {
            if llama_safe_sys::gguf_get_kv_type(ctx, id) != llama_safe_sys::GGUF_TYPE_ARRAY {
                return self.get_u64(key).map(|v| vec![v]);
            }
            let n = llama_safe_sys::gguf_get_arr_n(ctx, id);
            let data = llama_safe_sys::gguf_get_arr_data(ctx, id);
            let read = |i: usize| -> Option<i128> {
                Some(match llama_safe_sys::gguf_get_arr_type(ctx, id) {
                    llama_safe_sys::GGUF_TYPE_UINT8 => (*data.cast::<u8>().add(i)).into(),
                    llama_safe_sys::GGUF_TYPE_INT8 => (*data.cast::<i8>().add(i)).into(),
                    llama_safe_sys::GGUF_TYPE_UINT16 => {
                        data.cast::<u16>().add(i).read_unaligned().into()
                    }
                    llama_safe_sys::GGUF_TYPE_INT16 => {
                        data.cast::<i16>().add(i).read_unaligned().into()
                    }
                    llama_safe_sys::GGUF_TYPE_UINT32 => {
                        data.cast::<u32>().add(i).read_unaligned().into()
                    }
                    llama_safe_sys::GGUF_TYPE_INT32 => {
                        data.cast::<i32>().add(i).read_unaligned().into()
                    }
                    llama_safe_sys::GGUF_TYPE_UINT64 => {
                        data.cast::<u64>().add(i).read_unaligned().into()
                    }
                    llama_safe_sys::GGUF_TYPE_INT64 => {
                        data.cast::<i64>().add(i).read_unaligned().into()
                    }
                    _ => return None,
                })
            };
            (0..n)
                .map(|i| {
                    let v = read(i).ok_or_else(|| bad("not an integer array"))?;
                    u64::try_from(v).map_err(|_| bad("negative"))
                })
                .collect()
        }
    }

    /// The strings of a string array, as bytes.
    pub fn get_str_list(&self, key: &str) -> Result<Vec<&[u8]>> {
        let id = self.key_id(key)?;
        let ctx = self.ctx.as_ptr();
        // SAFETY: id is a valid key index; the array type is checked before
        // its strings (NUL-terminated, owned by the context, which `self`
        // keeps alive) are read.
        unsafe {
            if llama_safe_sys::gguf_get_kv_type(ctx, id) != llama_safe_sys::GGUF_TYPE_ARRAY
                || llama_safe_sys::gguf_get_arr_type(ctx, id) != llama_safe_sys::GGUF_TYPE_STRING
            {
                return Err(Error::Metadata {
                    key: key.into(),
                    reason: "not a string array".into(),
                });
            }
            Ok((0..llama_safe_sys::gguf_get_arr_n(ctx, id))
                .map(|i| CStr::from_ptr(llama_safe_sys::gguf_get_arr_str(ctx, id, i)).to_bytes())
                .collect())
        }
    }

    /// The file's alignment of tensor data (`general.alignment`, 32 by default).
    pub fn alignment(&self) -> u64 {
        // SAFETY: ctx is live.
        unsafe { llama_safe_sys::gguf_get_alignment(self.ctx.as_ptr()) as u64 }
    }

    /// Where each tensor's data lies in the file: `(name, start, bytes)`,
    /// absolute offsets, in file order.
    pub fn tensor_extents(&self) -> Vec<(String, u64, u64)> {
        let ctx = self.ctx.as_ptr();
        // SAFETY: ctx is live; indices are below gguf_get_n_tensors.
        unsafe {
            let base = llama_safe_sys::gguf_get_data_offset(ctx) as u64;
            (0..llama_safe_sys::gguf_get_n_tensors(ctx))
                .map(|i| {
                    (
                        CStr::from_ptr(llama_safe_sys::gguf_get_tensor_name(ctx, i))
                            .to_string_lossy()
                            .into_owned(),
                        base.saturating_add(llama_safe_sys::gguf_get_tensor_offset(ctx, i) as u64),
                        llama_safe_sys::gguf_get_tensor_size(ctx, i) as u64,
                    )
                })
                .collect()
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<String> {
        self.get_str("general.architecture")
    }

    /// `<arch>.block_count`: the number of repeating layers.
    pub fn block_count(&self) -> Result<u64> {
        self.get_u64(&format!("{}.block_count", self.architecture()?))
    }

    /// [`block_count`](Self::block_count) as the per-layer override patterns
    /// count layers: 0 when absent, saturated at `u32::MAX`.
    pub(crate) fn layer_count(&self) -> u32 {
        u32::try_from(self.block_count().unwrap_or(0)).unwrap_or(u32::MAX)
    }

    /// `<arch>.expert_count`, 0 for a dense model.
    pub fn expert_count(&self) -> u64 {
        self.architecture()
            .and_then(|a| self.get_u64(&format!("{a}.expert_count")))
            .unwrap_or(0)
    }
}
