//! Saving and restoring a context's state (its KV cache), to bytes or to a
//! session file, whole or one sequence at a time.
//!
//! The state holds the KV cache, not the logits of the last decode: to go on
//! generating after a restore, decode the next token (the one sampled but not
//! yet decoded when the state was saved), as the tests show.
//!
//! Bytes from [`save_state`](LlamaContext::save_state) and
//! [`save_seq_state`](LlamaContext::save_seq_state) carry a small header of
//! this crate's (what they hold, their length, a CRC-32 and a fingerprint
//! of the model's metadata), so a truncated or corrupted blob, or one saved
//! with another model, is [`Error::State`] instead of a state llama.cpp
//! would half accept. Bytes without the header (from llama.cpp's C API) are
//! handed to llama.cpp once the lengths they start with are checked
//! against what follows (llama.cpp allocates a length it reads before it
//! checks it: 4 GiB for a length of `FFFFFFFF`).
//!
//! Session files ([`save_state_file`](LlamaContext::save_state_file)) are
//! llama.cpp's session format behind the same header, so a file saved with
//! another model, even one of the very same shape and architecture, is
//! refused. llama.cpp's own session files (from its tools) have no room for
//! a fingerprint: they load only when the caller says that is what they are
//! ([`load_llama_cpp_session_file`](LlamaContext::load_llama_cpp_session_file)),
//! with their lengths checked the same way and their tokens against the
//! vocabulary.

use super::LlamaContext;
use crate::error::{Error, Result};
use crate::ffi::{c_path, logged};
use crate::token::Token;
use std::path::Path;

impl LlamaContext {
    /// Size in bytes of the state as it is now.
    pub fn state_size(&mut self) -> usize {
        // SAFETY: the context is live.
        unsafe { llama_safe_sys::llama_state_get_size(self.as_ptr()) }
    }

    /// The whole state as bytes.
    ///
    /// ```no_run
    /// # fn f(ctx: &mut llama_safe::LlamaContext) -> llama_safe::Result<()> {
    /// let saved = ctx.save_state()?;
    /// // ... decode more, or clear ...
    /// ctx.load_state(&saved)?;
    /// # Ok(()) }
    /// ```
    pub fn save_state(&mut self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; HEADER_LEN];
        self.append_state(&mut buf)?;
        let written = buf.len() - HEADER_LEN;
        finish_save(buf, written, Kind::Context, fingerprint(self.model()))
    }

    /// Appends the whole state to `buf`, written there by llama.cpp (no
    /// copy of it is made).
    fn append_state(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let _device = self.device_guard();
        let at = buf.len();
        let size = self.state_size();
        buf.resize(at + size, 0);
        let payload = &mut buf[at..];
        // SAFETY: payload is writable for its length; llama.cpp writes at
        // most that many bytes and returns how many it wrote (0 on error).
        let n = unsafe {
            llama_safe_sys::llama_state_get_data(self.as_ptr(), payload.as_mut_ptr(), payload.len())
        };
        if n == 0 && size > 0 {
            return Err(Error::State {
                reason: format!("llama.cpp could not write {}", Kind::Context.what()).into(),
            });
        }
        buf.truncate(at + n);
        Ok(())
    }

    /// Why `tokens` cannot be this model's: the first one outside its
    /// vocabulary.
    fn foreign_token(&self, tokens: &[Token]) -> Option<String> {
        let bad = tokens
            .iter()
            .find(|t| self.model().check_token(**t).is_err())?;
        Some(format!(
            "token {} is outside this model's vocabulary of {} tokens",
            bad.0,
            self.model().n_vocab()
        ))
    }

    /// Restores a state from [`save_state`](Self::save_state). Bytes that do
    /// not come from a context over the same model are [`Error::State`].
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let _device = self.device_guard();
        let bytes = payload(bytes, Kind::Context, fingerprint(self.model()))?;
        check_arch_string(bytes, bytes.len() as u64).map_err(|reason| Error::State {
            reason: reason.into(),
        })?;
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
        let _device = self.device_guard();
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
        finish_save(buf, n, Kind::Sequence, fingerprint(self.model()))
    }

    /// Restores a sequence state from [`save_seq_state`](Self::save_seq_state)
    /// into sequence `seq` (which may differ from the one saved).
    pub fn load_seq_state(&mut self, bytes: &[u8], seq: u32) -> Result<()> {
        let _device = self.device_guard();
        let seq = self.check_seq(seq)?;
        let bytes = payload(bytes, Kind::Sequence, fingerprint(self.model()))?;
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
    /// session file of this crate's: llama.cpp's session format behind the
    /// header the byte state has (its length, a CRC-32 and the model's
    /// fingerprint), so [`load_state_file`](Self::load_state_file) refuses
    /// it for another model. For llama.cpp's own tools, use
    /// [`save_llama_cpp_session_file`](Self::save_llama_cpp_session_file).
    pub fn save_state_file(&mut self, path: impl AsRef<Path>, tokens: &[Token]) -> Result<()> {
        let path = path.as_ref();
        let fail = |reason: String| Error::StateFile {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        let count = u32::try_from(tokens.len()).map_err(|_| fail("too many tokens".into()))?;
        // The header, then llama.cpp's session format: magic, version,
        // count, tokens, the state.
        let mut buf = vec![0u8; HEADER_LEN];
        for word in [SESSION_MAGIC, SESSION_VERSION, count] {
            buf.extend_from_slice(&word.to_le_bytes());
        }
        for t in tokens {
            buf.extend_from_slice(&t.0.to_le_bytes());
        }
        self.append_state(&mut buf)?;
        let written = buf.len() - HEADER_LEN;
        let buf = finish_save(buf, written, Kind::Session, fingerprint(self.model()))?;
        std::fs::write(path, buf).map_err(|e| fail(e.to_string()))
    }

    /// Restores a session file from [`save_state_file`](Self::save_state_file)
    /// and returns its tokens. A missing, corrupt or truncated file, one
    /// saved with another model, and a file without this crate's header
    /// (llama.cpp's own: load it with
    /// [`load_llama_cpp_session_file`](Self::load_llama_cpp_session_file))
    /// are [`Error::StateFile`].
    pub fn load_state_file(&mut self, path: impl AsRef<Path>) -> Result<Vec<Token>> {
        let path = path.as_ref();
        let fail = |reason: String| Error::StateFile {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        let bytes = crate::files::read_regular(path, u64::MAX).map_err(|e| match e {
            Error::Io { source, .. } => fail(source.to_string()),
            e => fail(e.to_string()),
        })?;
        if !bytes.starts_with(&MAGIC) {
            return Err(fail(
                "not a session file of llama-safe's (no header naming the model); \
                 one from llama.cpp's tools loads with load_llama_cpp_session_file"
                    .into(),
            ));
        }
        let body = payload(&bytes, Kind::Session, fingerprint(self.model()))
            .map_err(|e| fail(e.to_string()))?;
        let word = |at: usize| {
            body.get(at..at + 4)
                .map(|w| u32::from_le_bytes(w.try_into().unwrap_or_default()))
        };
        if word(0) != Some(SESSION_MAGIC) || word(4) != Some(SESSION_VERSION) {
            return Err(fail("not a llama.cpp session inside the header".into()));
        }
        let count = word(8).unwrap_or_default() as usize;
        if count > self.n_ctx() as usize || 12 + 4 * count > body.len() {
            return Err(fail(format!(
                "{count} tokens: more than the context's {} or the file holds",
                self.n_ctx()
            )));
        }
        let tokens: Vec<Token> = body[12..12 + 4 * count]
            .chunks_exact(4)
            .map(|c| Token(i32::from_le_bytes(c.try_into().unwrap_or_default())))
            .collect();
        if let Some(why) = self.foreign_token(&tokens) {
            return Err(fail(why));
        }
        let state = &body[12 + 4 * count..];
        check_arch_string(state, state.len() as u64).map_err(fail)?;
        let _device = self.device_guard();
        self.outputs.clear();
        logged(
            // SAFETY: state is readable for its length; llama.cpp bounds
            // every read by it and returns 0 on malformed data.
            || unsafe {
                llama_safe_sys::llama_state_set_data(self.as_ptr(), state.as_ptr(), state.len())
            },
            |n| *n == 0,
            |reason| Error::StateFile {
                path: path.to_path_buf(),
                reason,
            },
        )?;
        Ok(tokens)
    }

    /// Writes the state and `tokens` as llama.cpp's own session file
    /// (`ggsn`, what its tools such as `llama-cli --prompt-cache` read):
    /// no header of this crate's, so nothing ties it to the model.
    pub fn save_llama_cpp_session_file(
        &mut self,
        path: impl AsRef<Path>,
        tokens: &[Token],
    ) -> Result<()> {
        let _device = self.device_guard();
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

    /// Restores llama.cpp's own session file (from its tools, or from
    /// [`save_llama_cpp_session_file`](Self::save_llama_cpp_session_file))
    /// and returns its tokens: the caller says where it comes from, as the
    /// format has no model fingerprint (a model of the same shape and
    /// architecture loads it). Its lengths are checked against its size and
    /// its tokens against the vocabulary; a missing, foreign or corrupt file
    /// is [`Error::StateFile`] with llama.cpp's reason.
    pub fn load_llama_cpp_session_file(&mut self, path: impl AsRef<Path>) -> Result<Vec<Token>> {
        let _device = self.device_guard();
        let path = path.as_ref();
        let c = c_path(path)?;
        if !path.is_file() {
            return Err(Error::StateFile {
                path: path.to_path_buf(),
                reason: "no such file".into(),
            });
        }
        check_session_file(path).map_err(|reason| Error::StateFile {
            path: path.to_path_buf(),
            reason: reason.into(),
        })?;
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
        let tokens: Vec<Token> = ids.into_iter().map(Token).collect();
        if let Some(why) = self.foreign_token(&tokens) {
            // The cache was restored from the same file: clear it too
            // (the device lock is taken again there).
            drop(_device);
            self.clear();
            return Err(Error::StateFile {
                path: path.to_path_buf(),
                reason: why.into(),
            });
        }
        Ok(tokens)
    }
}

/// The header's magic bytes.
const MAGIC: [u8; 8] = *b"LLSAFEST";
/// Version 2: magic, version u32, kind u32, payload length u64, CRC-32 of
/// the payload u32, 4 reserved bytes (zero), the model's fingerprint u64;
/// little-endian. Version 1 is the same without the fingerprint (read, not
/// written).
const VERSION: u32 = 2;
const HEADER_LEN: usize = 40;
const HEADER_LEN_V1: usize = 32;

/// Longest architecture name a state may start with (llama.cpp's are
/// under 20 bytes).
const MAX_ARCH_LEN: u32 = 64;
/// llama.cpp's session file magic (`ggsn`) and version.
const SESSION_MAGIC: u32 = llama_safe_sys::LLAMA_FILE_MAGIC_GGSN;
const SESSION_VERSION: u32 = llama_safe_sys::LLAMA_SESSION_VERSION;

/// FNV-1a 64 of the model's metadata, parameter count, size and
/// vocabulary: what a state must have been saved with.
fn fingerprint(model: &crate::LlamaModel) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes.iter().chain(&[0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (k, v) in model.metadata() {
        eat(k.as_bytes());
        eat(v.as_bytes());
    }
    eat(&model.n_params().to_le_bytes());
    eat(&model.size_bytes().to_le_bytes());
    eat(&model.n_vocab().to_le_bytes());
    h
}

/// A whole state starts with the model's architecture name, its length
/// first: that length must be short and within the `available` bytes.
fn check_arch_string(bytes: &[u8], available: u64) -> std::result::Result<(), String> {
    let Some(len) = bytes.get(..4) else {
        return Err(format!("{} bytes: too short for a state", bytes.len()));
    };
    let len = u32::from_le_bytes(len.try_into().unwrap_or_default());
    if len > MAX_ARCH_LEN || 4 + u64::from(len) > available {
        return Err(format!(
            "the state starts with an architecture name of {len} bytes \
             ({available} bytes available, at most {MAX_ARCH_LEN}): not a llama.cpp state"
        ));
    }
    Ok(())
}

/// Checks a session file's header, token count and architecture name
/// against its size before llama.cpp reads (and allocates) them.
fn check_session_file(path: &Path) -> std::result::Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut head = [0u8; 12];
    file.read_exact(&mut head)
        .map_err(|_| format!("{size} bytes: shorter than a session file header"))?;
    let word = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().unwrap_or_default());
    if word(0) != SESSION_MAGIC || word(4) != SESSION_VERSION {
        return Err(format!(
            "not a llama.cpp session file of version {SESSION_VERSION} (magic {:08x}, version {})",
            word(0),
            word(4)
        ));
    }
    let state_at = 12 + 4 * u64::from(word(8));
    if state_at + 4 > size {
        return Err(format!(
            "the file says {} tokens, more than its {size} bytes hold",
            word(8)
        ));
    }
    let mut len = [0u8; 4];
    file.seek(SeekFrom::Start(state_at))
        .and_then(|_| file.read_exact(&mut len))
        .map_err(|e| e.to_string())?;
    check_arch_string(&len, size - state_at)
}

/// What a state blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Context = 0,
    Sequence = 1,
    /// A session file: llama.cpp's session format (tokens, then the state).
    Session = 2,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Context => "a context state",
            Kind::Sequence => "a sequence state",
            Kind::Session => "a session file",
        }
    }
}

/// Writes the header in front of the `written` payload bytes.
fn finish_save(mut buf: Vec<u8>, written: usize, kind: Kind, model: u64) -> Result<Vec<u8>> {
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
    header[32..40].copy_from_slice(&model.to_le_bytes());
    Ok(buf)
}

/// The payload of `bytes` once its header checks out (a version 2 header
/// also names the model, which must be `model`), or `bytes` as they are
/// when they have no header (raw llama.cpp state).
fn payload(bytes: &[u8], kind: Kind, model: u64) -> Result<&[u8]> {
    if !bytes.starts_with(&MAGIC) {
        return Ok(bytes);
    }
    let bad = |reason: String| {
        Err(Error::State {
            reason: reason.into(),
        })
    };
    if bytes.len() < HEADER_LEN_V1 {
        return bad(format!(
            "{} bytes: shorter than the state header",
            bytes.len()
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
    let version = u32_at(8);
    let header_len = match version {
        1 => HEADER_LEN_V1,
        VERSION if bytes.len() >= HEADER_LEN => HEADER_LEN,
        VERSION => {
            return bad(format!(
                "{} bytes: shorter than the state header",
                bytes.len()
            ))
        }
        _ => 0,
    };
    if header_len == 0 || u32_at(28) != 0 {
        return bad(format!(
            "state format version {version}, this crate reads 1 and {VERSION}"
        ));
    }
    let found = u32_at(12);
    if found != kind as u32 {
        let other = [Kind::Context, Kind::Sequence, Kind::Session]
            .into_iter()
            .find(|k| *k as u32 == found)
            .map_or("another kind of state", Kind::what);
        return bad(format!("{other}, not {}", kind.what()));
    }
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default());
    let payload = &bytes[header_len..];
    if payload.len() as u64 != len {
        return bad(format!(
            "{} payload bytes where the header says {len} (truncated or extended)",
            payload.len()
        ));
    }
    if crc32fast::hash(payload) != u32_at(24) {
        return bad("checksum mismatch: the state bytes are corrupted".into());
    }
    if header_len == HEADER_LEN {
        let saved = u64::from_le_bytes(bytes[32..40].try_into().unwrap_or_default());
        if saved != model {
            return bad(format!(
                "{} saved with another model (fingerprint {saved:016x}, this model's {model:016x})",
                kind.what()
            ));
        }
    }
    Ok(payload)
}
