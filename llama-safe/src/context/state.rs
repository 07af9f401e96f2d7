//! Saving and restoring a context's state (its KV cache), to bytes or to a
//! session file, whole or one sequence at a time.
//!
//! The state holds the KV cache, not the logits of the last decode: to go on
//! generating after a restore, decode the next token (the one sampled but not
//! yet decoded when the state was saved), as the tests show.
//!
//! Bytes from [`save_state`](LlamaContext::save_state) and
//! [`save_seq_state`](LlamaContext::save_seq_state) carry a small header of
//! this crate's (what they hold, their length and a CRC-32), so a truncated
//! or corrupted blob is [`Error::State`] instead of a state llama.cpp would
//! half accept. Bytes without the header (from llama.cpp's C API) are handed
//! to llama.cpp as they are.

use super::LlamaContext;
use crate::error::{Error, Result};
use crate::ffi::{c_path, logged};
use crate::token::Token;
use std::path::Path;

impl LlamaContext<'_> {
    /// Size in bytes of the state as it is now.
    pub fn state_size(&mut self) -> usize {
        // SAFETY: the context is live.
        unsafe { llama_safe_sys::llama_state_get_size(self.as_ptr()) }
    }

    /// The whole state as bytes.
    ///
    /// ```no_run
    /// # fn f(ctx: &mut llama_safe::LlamaContext<'_>) -> llama_safe::Result<()> {
    /// let saved = ctx.save_state()?;
    /// // ... decode more, or clear ...
    /// ctx.load_state(&saved)?;
    /// # Ok(()) }
    /// ```
    pub fn save_state(&mut self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; HEADER_LEN + self.state_size()];
        let payload = &mut buf[HEADER_LEN..];
        // SAFETY: payload is writable for its length; llama.cpp writes at
        // most that many bytes and returns how many it wrote (0 on error).
        let n = unsafe {
            llama_safe_sys::llama_state_get_data(self.as_ptr(), payload.as_mut_ptr(), payload.len())
        };
        finish_save(buf, n, Kind::Context)
    }

    /// Restores a state from [`save_state`](Self::save_state). Bytes that do
    /// not come from a context over the same model are [`Error::State`].
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let bytes = payload(bytes, Kind::Context)?;
        self.outputs.clear();
        logged(
            // SAFETY: bytes is readable for its length; llama.cpp bounds
            // every read by it and returns 0 on malformed data.
            || unsafe {
                llama_safe_sys::llama_state_set_data(self.as_ptr(), bytes.as_ptr(), bytes.len())
            },
            |n| *n == 0,
            |reason| Error::State { reason },
        )?;
        Ok(())
    }

    /// The state of one sequence as bytes.
    pub fn save_seq_state(&mut self, seq: u32) -> Result<Vec<u8>> {
        let seq = self.check_seq(seq)?;
        // SAFETY: the context is live and the sequence id checked.
        let size = unsafe { llama_safe_sys::llama_state_seq_get_size(self.as_ptr(), seq) };
        let mut buf = vec![0u8; HEADER_LEN + size];
        let payload = &mut buf[HEADER_LEN..];
        // SAFETY: payload is writable for its length.
        let n = unsafe {
            llama_safe_sys::llama_state_seq_get_data(
                self.as_ptr(),
                payload.as_mut_ptr(),
                payload.len(),
                seq,
            )
        };
        finish_save(buf, n, Kind::Sequence)
    }

    /// Restores a sequence state from [`save_seq_state`](Self::save_seq_state)
    /// into sequence `seq` (which may differ from the one saved).
    pub fn load_seq_state(&mut self, bytes: &[u8], seq: u32) -> Result<()> {
        let seq = self.check_seq(seq)?;
        let bytes = payload(bytes, Kind::Sequence)?;
        self.outputs.clear();
        logged(
            // SAFETY: bytes is readable for its length; id checked.
            || unsafe {
                llama_safe_sys::llama_state_seq_set_data(
                    self.as_ptr(),
                    bytes.as_ptr(),
                    bytes.len(),
                    seq,
                )
            },
            |n| *n == 0,
            |reason| Error::State { reason },
        )?;
        Ok(())
    }

    /// Writes the state and `tokens` (usually the tokens in the cache) to a
    /// session file.
    pub fn save_state_file(&mut self, path: impl AsRef<Path>, tokens: &[Token]) -> Result<()> {
        let path = path.as_ref();
        let c = c_path(path)?;
        let ids: Vec<i32> = tokens.iter().map(|t| t.0).collect();
        logged(
            // SAFETY: c is a NUL-terminated path, ids readable for its length.
            || unsafe {
                llama_safe_sys::llama_state_save_file(
                    self.as_ptr(),
                    c.as_ptr(),
                    ids.as_ptr(),
                    ids.len(),
                )
            },
            |ok| !ok,
            |reason| Error::StateFile {
                path: path.to_path_buf(),
                reason,
            },
        )?;
        Ok(())
    }

    /// Restores a session file from [`save_state_file`](Self::save_state_file)
    /// and returns its tokens. A missing, foreign or corrupt file is
    /// [`Error::StateFile`] with llama.cpp's reason.
    pub fn load_state_file(&mut self, path: impl AsRef<Path>) -> Result<Vec<Token>> {
        let path = path.as_ref();
        let c = c_path(path)?;
        if !path.is_file() {
            return Err(Error::StateFile {
                path: path.to_path_buf(),
                reason: "no such file".into(),
            });
        }
        self.outputs.clear();
        let mut ids = vec![0i32; self.n_ctx() as usize];
        let mut count = 0usize;
        logged(
            // SAFETY: c is a NUL-terminated path; ids is writable for the
            // capacity passed, which llama.cpp checks before writing.
            || unsafe {
                llama_safe_sys::llama_state_load_file(
                    self.as_ptr(),
                    c.as_ptr(),
                    ids.as_mut_ptr(),
                    ids.len(),
                    &mut count,
                )
            },
            |ok| !ok,
            |reason| Error::StateFile {
                path: path.to_path_buf(),
                reason,
            },
        )?;
        ids.truncate(count);
        Ok(ids.into_iter().map(Token).collect())
    }
}

/// The header's magic bytes.
const MAGIC: [u8; 8] = *b"LLSAFEST";
/// Version 1: magic, version u32, kind u32, payload length u64, CRC-32 of
/// the payload u32, 4 reserved bytes (zero); little-endian.
const VERSION: u32 = 1;
const HEADER_LEN: usize = 32;

/// What a state blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Context = 0,
    Sequence = 1,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Context => "a context state",
            Kind::Sequence => "a sequence state",
        }
    }
}

/// Writes the header in front of the `written` payload bytes.
fn finish_save(mut buf: Vec<u8>, written: usize, kind: Kind) -> Result<Vec<u8>> {
    if written == 0 && buf.len() > HEADER_LEN {
        return Err(Error::State {
            reason: format!("llama.cpp could not write {}", kind.what()).into(),
        });
    }
    buf.truncate(HEADER_LEN + written);
    let crc = crc32fast::hash(&buf[HEADER_LEN..]);
    let header = &mut buf[..HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(kind as u32).to_le_bytes());
    header[16..24].copy_from_slice(&(written as u64).to_le_bytes());
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header[28..32].fill(0);
    Ok(buf)
}

/// The payload of `bytes` once its header checks out, or `bytes` as they
/// are when they have no header (raw llama.cpp state).
fn payload(bytes: &[u8], kind: Kind) -> Result<&[u8]> {
    if !bytes.starts_with(&MAGIC) {
        return Ok(bytes);
    }
    let bad = |reason: String| {
        Err(Error::State {
            reason: reason.into(),
        })
    };
    if bytes.len() < HEADER_LEN {
        return bad(format!(
            "{} bytes: shorter than the state header",
            bytes.len()
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
    let version = u32_at(8);
    if version != VERSION || u32_at(28) != 0 {
        return bad(format!(
            "state format version {version}, this crate reads {VERSION}"
        ));
    }
    let found = u32_at(12);
    if found != kind as u32 {
        let other = if found == Kind::Context as u32 {
            Kind::Context.what()
        } else {
            Kind::Sequence.what()
        };
        return bad(format!("{other}, not {}", kind.what()));
    }
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default());
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return bad(format!(
            "{} payload bytes where the header says {len} (truncated or extended)",
            payload.len()
        ));
    }
    if crc32fast::hash(payload) != u32_at(24) {
        return bad("checksum mismatch: the state bytes are corrupted".into());
    }
    Ok(payload)
}
