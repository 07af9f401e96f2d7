//! Tokens, tokenization and detokenization.

use crate::error::{Error, Result};
use crate::model::LlamaModel;

/// A token id of a model's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub i32);

impl LlamaModel {
    /// Tokenizes `text`. `add_bos` adds the model's start token where the
    /// model asks for one; `parse_special` turns special-token text (like
    /// `<|im_start|>`) into those tokens instead of plain text.
    pub fn tokenize(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<Token>> {
        let len = i32::try_from(text.len()).map_err(|_| Error::Tokenize {
            reason: "text longer than 2 GiB".into(),
        })?;
        let mut out = vec![0i32; text.len() + 2];
        loop {
            // SAFETY: text is valid for len bytes (no NUL needed); out is
            // writable for its length.
            let n = unsafe {
                llama_sys::llama_tokenize(
                    self.vocab(),
                    text.as_ptr().cast(),
                    len,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    add_bos,
                    parse_special,
                )
            };
            if n >= 0 {
                out.truncate(n as usize);
                return Ok(out.into_iter().map(Token).collect());
            }
            if n == i32::MIN {
                return Err(Error::Tokenize {
                    reason: "llama.cpp reported an overflow".into(),
                });
            }
            out.resize((-n) as usize, 0);
        }
    }

    /// The bytes of one token's text (byte tokens give single bytes, which
    /// may be half of a UTF-8 character; see [`Utf8Stream`](crate::Utf8Stream)).
    /// `special` renders control tokens as their text.
    pub fn token_bytes(&self, token: Token, special: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 32];
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe {
                llama_sys::llama_token_to_piece(
                    self.vocab(),
                    token.0,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize((-n) as usize, 0);
        }
    }

    /// The text of `tokens`, joined (invalid UTF-8 replaced).
    pub fn detokenize(&self, tokens: &[Token]) -> String {
        let bytes: Vec<u8> = tokens
            .iter()
            .flat_map(|t| self.token_bytes(*t, false))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The start-of-sequence token.
    pub fn token_bos(&self) -> Token {
        // SAFETY: the vocab lives with the model.
        Token(unsafe { llama_sys::llama_vocab_bos(self.vocab()) })
    }

    /// The end-of-sequence token.
    pub fn token_eos(&self) -> Token {
        // SAFETY: the vocab lives with the model.
        Token(unsafe { llama_sys::llama_vocab_eos(self.vocab()) })
    }

    /// Whether `token` ends generation (EOS, EOT and the like).
    pub fn is_eog(&self, token: Token) -> bool {
        // SAFETY: the vocab lives with the model.
        unsafe { llama_sys::llama_vocab_is_eog(self.vocab(), token.0) }
    }

    /// Whether `token` is a control token.
    pub fn is_control(&self, token: Token) -> bool {
        // SAFETY: the vocab lives with the model.
        unsafe { llama_sys::llama_vocab_is_control(self.vocab(), token.0) }
    }
}

/// Turns token bytes into text without ever emitting half of a UTF-8
/// character: incomplete sequences are held until their last byte arrives.
///
/// ```
/// let mut s = llama_safe::Utf8Stream::default();
/// assert_eq!(s.push(&[0xE2, 0x82]), "");      // first two bytes of '€'
/// assert_eq!(s.push(&[0xAC, b'!']), "€!");
/// assert_eq!(s.finish(), "");
/// ```
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // from_utf8 checked these bytes, so this cannot fail.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: keep it.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Invalid bytes: replace them, as lossy decoding would.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream; incomplete trailing bytes become U+FFFD.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}
