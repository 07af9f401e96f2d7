//! Saving and restoring a context's state (its KV cache), to bytes or to a
//! session file, whole or one sequence at a time.
//!
//! The state holds the KV cache, not the logits of the last decode: to go on
//! generating after a restore, decode the next token (the one sampled but not
//! yet decoded when the state was saved), as the tests show.

use super::LlamaContext;
use crate::error::{Error, Result};
use crate::gguf::reader::c_path;
use crate::token::Token;
use std::path::Path;

impl LlamaContext<'_> {
    /// Size in bytes of the state as it is now.
    pub fn state_size(&mut self) -> usize {
        // SAFETY: the context is live.
        unsafe { llama_sys::llama_state_get_size(self.as_ptr()) }
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
        let mut buf = vec![0u8; self.state_size()];
        // SAFETY: buf is writable for its length; llama.cpp writes at most
        // that many bytes and returns how many it wrote (0 on error).
        let n =
            unsafe { llama_sys::llama_state_get_data(self.as_ptr(), buf.as_mut_ptr(), buf.len()) };
        finish_save(buf, n, "the context state")
    }

    /// Restores a state from [`save_state`](Self::save_state). Bytes that do
    /// not come from a context over the same model are [`Error::State`].
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.outputs.clear();
        let (n, lines) = crate::logging::capture(|| {
            // SAFETY: bytes is readable for its length; llama.cpp bounds
            // every read by it and returns 0 on malformed data.
            unsafe { llama_sys::llama_state_set_data(self.as_ptr(), bytes.as_ptr(), bytes.len()) }
        });
        if n == 0 {
            return Err(Error::State {
                reason: crate::logging::reason(&lines),
            });
        }
        Ok(())
    }

    /// The state of one sequence as bytes.
    pub fn save_seq_state(&mut self, seq: u32) -> Result<Vec<u8>> {
        let seq = self.check_seq("seq", seq)?;
        // SAFETY: the context is live and the sequence id checked.
        let size = unsafe { llama_sys::llama_state_seq_get_size(self.as_ptr(), seq) };
        let mut buf = vec![0u8; size];
        // SAFETY: buf is writable for its length.
        let n = unsafe {
            llama_sys::llama_state_seq_get_data(self.as_ptr(), buf.as_mut_ptr(), buf.len(), seq)
        };
        finish_save(buf, n, "the sequence state")
    }

    /// Restores a sequence state from [`save_seq_state`](Self::save_seq_state)
    /// into sequence `seq` (which may differ from the one saved).
    pub fn load_seq_state(&mut self, bytes: &[u8], seq: u32) -> Result<()> {
        let seq = self.check_seq("seq", seq)?;
        self.outputs.clear();
        let (n, lines) = crate::logging::capture(|| {
            // SAFETY: bytes is readable for its length; id checked.
            unsafe {
                llama_sys::llama_state_seq_set_data(self.as_ptr(), bytes.as_ptr(), bytes.len(), seq)
            }
        });
        if n == 0 {
            return Err(Error::State {
                reason: crate::logging::reason(&lines),
            });
        }
        Ok(())
    }

    /// Writes the state and `tokens` (usually the tokens in the cache) to a
    /// session file.
    pub fn save_state_file(&mut self, path: impl AsRef<Path>, tokens: &[Token]) -> Result<()> {
        let path = path.as_ref();
        let c = c_path(path)?;
        let ids: Vec<i32> = tokens.iter().map(|t| t.0).collect();
        let (ok, lines) = crate::logging::capture(|| {
            // SAFETY: c is a NUL-terminated path, ids readable for its length.
            unsafe {
                llama_sys::llama_state_save_file(self.as_ptr(), c.as_ptr(), ids.as_ptr(), ids.len())
            }
        });
        if !ok {
            return Err(Error::StateFile {
                path: path.to_path_buf(),
                reason: crate::logging::reason(&lines),
            });
        }
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
        let (ok, lines) = crate::logging::capture(|| {
            // SAFETY: c is a NUL-terminated path; ids is writable for the
            // capacity passed, which llama.cpp checks before writing.
            unsafe {
                llama_sys::llama_state_load_file(
                    self.as_ptr(),
                    c.as_ptr(),
                    ids.as_mut_ptr(),
                    ids.len(),
                    &mut count,
                )
            }
        });
        if !ok {
            return Err(Error::StateFile {
                path: path.to_path_buf(),
                reason: crate::logging::reason(&lines),
            });
        }
        ids.truncate(count);
        Ok(ids.into_iter().map(Token).collect())
    }
}

fn finish_save(mut buf: Vec<u8>, written: usize, what: &str) -> Result<Vec<u8>> {
    if written == 0 && !buf.is_empty() {
        return Err(Error::State {
            reason: format!("llama.cpp could not write {what}"),
        });
    }
    buf.truncate(written);
    Ok(buf)
}
