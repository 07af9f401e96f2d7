//! [`Batch`]: tokens with their positions, sequences and output flags, for
//! decoding several sequences at once.

use crate::error::{Error, Result};
use crate::token::Token;

/// A batch of tokens for [`LlamaContext::decode_batch`](crate::LlamaContext::decode_batch).
///
/// Each entry is a token, its position, the sequences it belongs to (at least
/// one, each below the context's `n_seq_max`) and whether its logits (or
/// embedding) are kept. The batch owns all of it; nothing points into memory
/// that can go away before the decode.
///
/// ```
/// use llama_safe::{Batch, Token};
/// let mut batch = Batch::new();
/// batch.add_sequence(&[Token(1), Token(2), Token(3)], 0, 0, true)?;
/// batch.add(Token(7), 0, &[1], true)?;
/// assert_eq!(batch.len(), 4);
/// assert_eq!(batch.n_outputs(), 2);
/// # Ok::<(), llama_safe::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    tokens: Vec<i32>,
    pos: Vec<i32>,
    n_seq_id: Vec<i32>,
    seq_ids: Vec<Vec<i32>>,
    logits: Vec<i8>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds `token` at position `pos` to the sequences `seqs`; `logits`
    /// keeps its output. Empty `seqs`, or a position or sequence id beyond
    /// `i32::MAX`, is [`Error::InvalidParameter`].
    pub fn add(&mut self, token: Token, pos: u32, seqs: &[u32], logits: bool) -> Result<()> {
        if seqs.is_empty() {
            return Err(Error::InvalidParameter {
                name: "seqs",
                reason: "a token must belong to at least one sequence".into(),
            });
        }
        let pos = to_i32("pos", pos)?;
        let seqs = seqs
            .iter()
            .map(|&s| to_i32("seqs", s))
            .collect::<Result<Vec<_>>>()?;
        self.tokens.push(token.0);
        self.pos.push(pos);
        self.n_seq_id.push(seqs.len() as i32);
        self.seq_ids.push(seqs);
        self.logits.push(i8::from(logits));
        Ok(())
    }

    /// Adds `tokens` to sequence `seq` at positions `start..`, keeping the
    /// output of the last one if `logits_last`.
    pub fn add_sequence(
        &mut self,
        tokens: &[Token],
        start: u32,
        seq: u32,
        logits_last: bool,
    ) -> Result<()> {
        for (i, &token) in tokens.iter().enumerate() {
            let pos = u32::try_from(i)
                .ok()
                .and_then(|i| start.checked_add(i))
                .ok_or_else(|| Error::InvalidParameter {
                    name: "pos",
                    reason: "position overflows u32".into(),
                })?;
            self.add(token, pos, &[seq], logits_last && i + 1 == tokens.len())?;
        }
        Ok(())
    }

    /// Keeps the output of every token (what embeddings need).
    pub fn keep_all_outputs(&mut self) {
        self.logits.iter_mut().for_each(|l| *l = 1);
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.pos.clear();
        self.n_seq_id.clear();
        self.seq_ids.clear();
        self.logits.clear();
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the batch has no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Number of tokens whose output is kept.
    pub fn n_outputs(&self) -> usize {
        self.logits.iter().filter(|&&l| l != 0).count()
    }

    /// The output index (for [`LlamaContext::logits_ith`](crate::LlamaContext::logits_ith))
    /// of each kept token, by batch index.
    pub fn output_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.logits
            .iter()
            .enumerate()
            .filter(|(_, &l)| l != 0)
            .map(|(i, _)| i)
    }

    /// The largest sequence id used, if any.
    /// The first sequence id of each entry, in order.
    pub(crate) fn seq_ids(&self) -> impl Iterator<Item = i32> + '_ {
        self.seq_ids
            .iter()
            .map(|s| s.first().copied().unwrap_or(-1))
    }

    pub(crate) fn max_seq(&self) -> Option<i32> {
        self.seq_ids.iter().flatten().copied().max()
    }

    /// Calls `f` with a `llama_batch` viewing this batch.
    ///
    /// The view only lives for the call: the pointer table for the sequence
    /// ids is built here and dropped after `f` returns.
    pub(crate) fn with_raw<R>(&self, f: impl FnOnce(llama_safe_sys::llama_batch) -> R) -> R {
        let mut seq_ptrs: Vec<*mut i32> =
            self.seq_ids.iter().map(|s| s.as_ptr().cast_mut()).collect();
        // llama.cpp only reads a batch passed to llama_decode (it copies the
        // entries into its own storage), so the `*mut` casts of shared
        // buffers are never written through.
        let raw = llama_safe_sys::llama_batch {
            n_tokens: self.tokens.len() as i32,
            token: self.tokens.as_ptr().cast_mut(),
            embd: std::ptr::null_mut(),
            pos: self.pos.as_ptr().cast_mut(),
            n_seq_id: self.n_seq_id.as_ptr().cast_mut(),
            seq_id: seq_ptrs.as_mut_ptr(),
            logits: self.logits.as_ptr().cast_mut(),
        };
        f(raw)
    }
}

fn to_i32(name: &'static str, value: u32) -> Result<i32> {
    i32::try_from(value).map_err(|_| Error::InvalidParameter {
        name,
        reason: format!("{value} is beyond i32::MAX").into(),
    })
}
