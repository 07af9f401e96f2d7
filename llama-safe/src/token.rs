//! Tokens, tokenization and detokenization.

use crate::error::{Error, Result};
use crate::model::LlamaModel;

/// A token id of a model's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Token(pub i32);

/// How [`LlamaModel::tokenize`] treats special tokens.
///
/// ```
/// use llama_safe::{demo::DemoModel, LlamaBackend, LlamaModel, Tokenize};
/// let model = LlamaModel::load(&LlamaBackend::init(), DemoModel::Moe.cached()?, &Default::default())?;
/// let prompt = model.tokenize("Once upon a time", Tokenize::PROMPT)?;
/// let text = model.tokenize("Once upon a time", Tokenize::TEXT)?;
/// assert_eq!(prompt[0], model.token_bos().unwrap());
/// assert_eq!(&prompt[1..], &text[..]);
/// # Ok::<(), llama_safe::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokenize {
    /// Add the model's start token (BOS) where the model asks for one.
    pub add_special: bool,
    /// Turn special-token text (like `<|im_start|>`) into those tokens
    /// instead of plain text.
    pub parse_special: bool,
}

impl Tokenize {
    /// Text as it is: no start token, special-token text stays text.
    pub const TEXT: Tokenize = Tokenize {
        add_special: false,
        parse_special: false,
    };
    /// The start of a prompt: the start token where the model wants one;
    /// special-token text stays text (what user input needs).
    pub const PROMPT: Tokenize = Tokenize {
        add_special: true,
        parse_special: false,
    };
    /// A prompt rendered by a chat template: the start token, and
    /// special-token text as those tokens.
    pub const CHAT: Tokenize = Tokenize {
        add_special: true,
        parse_special: true,
    };
}

impl LlamaModel {
    /// Tokenizes `text`, treating special tokens as `how` says.
    pub fn tokenize(&self, text: &str, how: Tokenize) -> Result<Vec<Token>> {
        let Tokenize {
            add_special: add_bos,
            parse_special,
        } = how;
        self.check_vocab()?;
        if add_bos {
            self.check_specials()?;
        }
        let len = i32::try_from(text.len()).map_err(|_| Error::Tokenize {
            reason: "text longer than 2 GiB".into(),
        })?;
        let mut out = vec![0i32; text.len() + 2];
        loop {
            let mut n = 0;
            // SAFETY: text is valid for len bytes (no NUL needed); out is
            // writable for its length; a throw is caught by the firewall.
            let status = unsafe {
                llama_safe_sys::llama_sys_tokenize(
                    self.vocab(),
                    text.as_ptr().cast(),
                    len,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    add_bos,
                    parse_special,
                    &mut n,
                )
            };
            crate::ffi::check("llama_tokenize", status)?;
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

    /// The longest text one token stands for, in bytes (at least 1), so a
    /// text longer than `n * max_token_bytes()` bytes cannot tokenize to
    /// `n` tokens or fewer: a check that costs nothing before tokenizing
    /// a long text. Read from the vocabulary on first use.
    pub fn max_token_bytes(&self) -> usize {
        *self.max_token_bytes_cell().get_or_init(|| {
            (0..self.n_vocab() as i32)
                .filter_map(|t| self.token_bytes(Token(t), true).ok())
                .map(|b| b.len())
                .max()
                .unwrap_or(1)
                .max(1)
        })
    }

    /// Tokenizes a prompt for a cache of `n_ctx` cells. A text too long for
    /// it whatever its tokens is [`Error::PromptTooLong`] before it is
    /// tokenized (which takes time and memory in proportion).
    pub(crate) fn tokenize_prompt(
        &self,
        text: &str,
        how: Tokenize,
        n_ctx: u32,
    ) -> Result<Vec<Token>> {
        let at_least = text.len().div_ceil(self.max_token_bytes());
        if at_least > n_ctx as usize {
            return Err(Error::PromptTooLong {
                tokens: at_least,
                n_ctx,
            });
        }
        self.tokenize(text, how)
    }

    /// The bytes of one token's text (byte tokens give single bytes, which
    /// may be half of a UTF-8 character; see [`Utf8Stream`](crate::Utf8Stream)).
    /// `special` renders control tokens as their text. A token outside the
    /// vocabulary is [`Error::InvalidToken`].
    pub fn token_bytes(&self, token: Token, special: bool) -> Result<Vec<u8>> {
        self.check_token(token)?;
        let mut buf = vec![0u8; 32];
        loop {
            let mut n = 0;
            // SAFETY: the token is in the vocabulary (checked above: llama.cpp
            // indexes its tables with it); buf is writable for its length; a
            // throw is caught by the firewall.
            let status = unsafe {
                llama_safe_sys::llama_sys_token_to_piece(
                    self.vocab(),
                    token.0,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    special,
                    &mut n,
                )
            };
            crate::ffi::check("llama_token_to_piece", status)?;
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            buf.resize((-n) as usize, 0);
        }
    }

    /// The text of `tokens`, joined (invalid UTF-8 replaced).
    ///
    /// ```
    /// use llama_safe::{demo::DemoModel, LlamaBackend, LlamaModel, Tokenize};
    /// let backend = LlamaBackend::init();
    /// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
    /// let tokens = model.tokenize("many experts", Tokenize::TEXT)?;
    /// assert_eq!(model.detokenize(&tokens)?, " many experts"); // SentencePiece adds a space
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn detokenize(&self, tokens: &[Token]) -> Result<String> {
        let mut bytes = Vec::new();
        for &t in tokens {
            bytes.extend(self.token_bytes(t, false)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The start-of-sequence token, if the vocabulary has one.
    pub fn token_bos(&self) -> Option<Token> {
        // SAFETY: the vocab lives with the model.
        Some(Token(unsafe {
            llama_safe_sys::llama_vocab_bos(self.vocab())
        }))
        .filter(|t| t.0 >= 0)
    }

    /// The end-of-sequence token, if the vocabulary has one.
    pub fn token_eos(&self) -> Option<Token> {
        // SAFETY: the vocab lives with the model.
        Some(Token(unsafe {
            llama_safe_sys::llama_vocab_eos(self.vocab())
        }))
        .filter(|t| t.0 >= 0)
    }

    /// Whether `token` ends generation (EOS, EOT and the like).
    pub fn is_eog(&self, token: Token) -> bool {
        // SAFETY: the vocab lives with the model; the lookup is a set
        // membership test, fine for any id.
        unsafe { llama_safe_sys::llama_vocab_is_eog(self.vocab(), token.0) }
    }

    /// Whether `token` is a control token (false outside the vocabulary).
    pub fn is_control(&self, token: Token) -> bool {
        self.token_attrs(token)
            .is_ok_and(|a| a.contains(TokenAttrs::CONTROL))
    }

    /// The attributes of `token` (normal, control, byte, ...).
    ///
    /// ```
    /// use llama_safe::{demo::DemoModel, LlamaBackend, LlamaModel, TokenAttrs};
    /// let backend = LlamaBackend::init();
    /// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
    /// let bos = model.token_bos().expect("the demo vocabulary has BOS");
    /// assert!(model.token_attrs(bos)?.contains(TokenAttrs::CONTROL));
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn token_attrs(&self, token: Token) -> Result<TokenAttrs> {
        self.check_token(token)?;
        // SAFETY: the token is in the vocabulary (checked above).
        let raw = unsafe { llama_safe_sys::llama_vocab_get_attr(self.vocab(), token.0) };
        Ok(TokenAttrs(raw))
    }

    /// llama.cpp asserts a tokenizer on every vocabulary call but
    /// `is_eog` and the counts; a model whose `tokenizer.ggml.model` is
    /// `none` or `no_vocab` has none.
    pub(crate) fn check_vocab(&self) -> Result<()> {
        // SAFETY: the vocab lives with the model.
        if unsafe { llama_safe_sys::llama_vocab_type(self.vocab()) }
            == llama_safe_sys::LLAMA_VOCAB_TYPE_NONE
        {
            return Err(Error::Unsupported {
                reason: "the model has no tokenizer (tokenizer.ggml.model is none)".into(),
            });
        }
        Ok(())
    }

    /// llama.cpp asserts that the special tokens a tokenization adds exist
    /// (`llama_vocab::impl::tokenize`: BOS and EOS where the vocabulary adds
    /// them, and for WPM always the CLS/BOS and SEP tokens).
    fn check_specials(&self) -> Result<()> {
        let vocab = self.vocab();
        // SAFETY: the vocab lives with the model; these read plain fields.
        let (kind, add_bos, add_eos, bos, eos, sep) = unsafe {
            (
                llama_safe_sys::llama_vocab_type(vocab),
                llama_safe_sys::llama_vocab_get_add_bos(vocab),
                llama_safe_sys::llama_vocab_get_add_eos(vocab),
                llama_safe_sys::llama_vocab_bos(vocab),
                llama_safe_sys::llama_vocab_eos(vocab),
                llama_safe_sys::llama_vocab_sep(vocab),
            )
        };
        let wpm = kind == llama_safe_sys::LLAMA_VOCAB_TYPE_WPM;
        let missing = if (add_bos || wpm) && bos < 0 {
            Some("BOS")
        } else if add_eos && !wpm && eos < 0 {
            Some("EOS")
        } else if wpm && sep < 0 {
            Some("SEP")
        } else {
            None
        };
        match missing {
            Some(name) => Err(Error::Tokenize {
                reason: format!(
                    "the vocabulary adds a {name} token but has none; tokenize without special tokens"
                ).into(),
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn check_token(&self, token: Token) -> Result<()> {
        self.check_vocab()?;
        let n_vocab = self.n_vocab();
        if token.0 < 0 || token.0 as u32 >= n_vocab {
            return Err(Error::InvalidToken {
                token: token.0,
                n_vocab,
            });
        }
        Ok(())
    }
}

/// The attributes of a vocabulary entry, as llama.cpp's `llama_token_attr`
/// bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenAttrs(pub u32);

impl TokenAttrs {
    /// The vocabulary's unknown token.
    pub const UNKNOWN: TokenAttrs = TokenAttrs(llama_safe_sys::LLAMA_TOKEN_ATTR_UNKNOWN);
    /// An unused entry.
    pub const UNUSED: TokenAttrs = TokenAttrs(llama_safe_sys::LLAMA_TOKEN_ATTR_UNUSED);
    /// An ordinary piece of text.
    pub const NORMAL: TokenAttrs = TokenAttrs(llama_safe_sys::LLAMA_TOKEN_ATTR_NORMAL);
    /// A control token (BOS, EOS, chat markers).
    pub const CONTROL: TokenAttrs = TokenAttrs(llama_safe_sys::LLAMA_TOKEN_ATTR_CONTROL);
    /// A token added by the model's authors.
    pub const USER_DEFINED: TokenAttrs = TokenAttrs(llama_safe_sys::LLAMA_TOKEN_ATTR_USER_DEFINED);
    /// A single raw byte (byte fallback).
    pub const BYTE: TokenAttrs = TokenAttrs(llama_safe_sys::LLAMA_TOKEN_ATTR_BYTE);
    /// Text that is normalised before matching.
    pub const NORMALIZED: TokenAttrs = TokenAttrs(llama_safe_sys::LLAMA_TOKEN_ATTR_NORMALIZED);
    /// Strips whitespace on its left.
    pub const LSTRIP: TokenAttrs = TokenAttrs(llama_safe_sys::LLAMA_TOKEN_ATTR_LSTRIP);
    /// Strips whitespace on its right.
    pub const RSTRIP: TokenAttrs = TokenAttrs(llama_safe_sys::LLAMA_TOKEN_ATTR_RSTRIP);
    /// Matches only as a whole word.
    pub const SINGLE_WORD: TokenAttrs = TokenAttrs(llama_safe_sys::LLAMA_TOKEN_ATTR_SINGLE_WORD);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: TokenAttrs) -> bool {
        self.0 & other.0 == other.0
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
