//! Decoding [`MediaChunks`] into a [`LlamaContext`]: text chunks as
//! tokens, media chunks through the projector's encoder and libmtmd's
//! embedding decoder (which sets M-RoPE positions and non-causal attention
//! where the model needs them), then generation from the last text chunk.

use super::{Chunk, ChunkKind, MediaChunks};
use crate::context::batch::Batch;
use crate::error::{DecodeError, Error, Result};
use crate::{GenerateOptions, Generation, LlamaContext};
use llama_safe_sys::mtmd;

impl LlamaContext {
    /// Decodes `chunks` into sequence 0 after what the context holds; the
    /// last chunk's output is kept when it is text (as
    /// [`decode`](Self::decode) does). The chunks must come from a
    /// projector of this context's model ([`Error::ModelMismatch`]) and fit
    /// the context ([`Error::PromptTooLong`], before anything runs).
    ///
    /// Positions follow libmtmd's: a media chunk takes
    /// [`Chunk::n_pos`] positions (fewer than its cells with M-RoPE), and
    /// the text after it starts there.
    pub fn decode_media(&mut self, chunks: &MediaChunks) -> Result<()> {
        let mut pos = self.n_past();
        self.check_media(chunks, pos, 0)?;
        for chunk in chunks.iter() {
            pos = self.decode_chunk(&chunk, 0, pos)?;
        }
        Ok(())
    }

    /// Decodes a prompt with media and generates from it, as
    /// [`generate`](Self::generate) does from text. The prompt must end
    /// with text: generation starts from its last token. The stats' prompt
    /// counts every cell of the prompt, media included.
    ///
    /// Speculation from a draft model is [`Error::Unsupported`] here (the
    /// draft model would not see the media); n-gram sources work.
    pub fn generate_media<'c>(
        &'c mut self,
        chunks: &MediaChunks,
        options: &GenerateOptions,
    ) -> Result<Generation<'c>> {
        let start = std::time::Instant::now();
        let last = chunks
            .iter()
            .last()
            .filter(|c| c.kind() == ChunkKind::Text && !c.tokens().is_empty())
            .ok_or_else(|| Error::InvalidParameter {
                name: "chunks",
                reason: "a prompt with media must end with text, which generation starts from"
                    .into(),
            })?;
        if options.speculation().is_some_and(|s| s.draft().is_some()) {
            return Err(Error::Unsupported {
                reason: "a draft model cannot draft for a prompt with media (it would not see \
                         them); use an n-gram source"
                    .into(),
            });
        }
        options.check()?;
        self.decode_media(chunks)?;
        self.generate_decoded(last.tokens(), chunks.n_tokens(), options, start)
    }

    /// The checks before any chunk runs: the chunks' projector belongs to
    /// this model, and `pos` plus their tokens fit the context.
    pub(crate) fn check_media(&self, chunks: &MediaChunks, pos: u32, seq: u32) -> Result<()> {
        if !chunks.projector().model().same_model(self.model()) {
            return Err(Error::ModelMismatch {
                what: "media chunks of a projector for another model",
            });
        }
        if seq >= self.n_seq_max() {
            return Err(Error::InvalidSequence {
                seq: seq.into(),
                n_seq_max: self.n_seq_max(),
            });
        }
        if chunks.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let needed = pos as usize + chunks.n_tokens();
        if needed > self.n_ctx() as usize {
            return Err(Error::PromptTooLong {
                tokens: needed,
                n_ctx: self.n_ctx(),
            });
        }
        Ok(())
    }

    /// Decodes one chunk (of chunks checked by [`check_media`](Self::check_media))
    /// into sequence `seq` from position `pos`; returns the position after
    /// it (`pos` plus its [`Chunk::n_pos`]).
    pub(crate) fn decode_chunk(&mut self, chunk: &Chunk<'_>, seq: u32, pos: u32) -> Result<u32> {
        if chunk.kind() == ChunkKind::Text {
            let tokens = chunk.tokens();
            let limit = self.decode_limit().max(1) as usize;
            let mut batch = Batch::new();
            let mut at = pos;
            for part in tokens.chunks(limit) {
                batch.clear();
                batch.add_sequence(part, at, seq, true)?;
                self.decode_batch(&batch)?;
                at += part.len() as u32;
            }
            return Ok(at);
        }
        self.decode_media_chunk(chunk, pos, seq)?;
        Ok(pos + chunk.n_pos())
    }

    /// Encodes a media chunk and decodes its embeddings at `pos` of `seq`.
    fn decode_media_chunk(&mut self, chunk: &Chunk<'_>, pos: u32, seq: u32) -> Result<()> {
        let projector = chunk.projector();
        // SAFETY: the projector's context and the chunk are live.
        let non_causal =
            unsafe { mtmd::mtmd_decode_use_non_causal(projector.as_ptr(), chunk.as_ptr()) };
        let n_tokens = chunk.n_tokens();
        // llama.cpp asserts that a non-causal batch fits one micro-batch.
        let n_batch = if non_causal {
            if n_tokens > self.n_ubatch() as usize {
                return Err(DecodeError::BatchTooLarge {
                    tokens: n_tokens,
                    limit: self.n_ubatch(),
                }
                .into());
            }
            self.n_ubatch()
        } else {
            self.decode_limit().max(1)
        };
        let _one_at_a_time = projector.encode_lock();
        projector.encode_locked(chunk)?;
        let mut status = 0;
        let mut new_pos = 0;
        let device = projector.device_guard();
        // SAFETY: the projector's output holds this chunk's embeddings
        // (encoded above, under the lock still held), n_tokens rows of the
        // model's input width, as mtmd_helper_decode_image_chunk reads them;
        // both contexts are live and of one model (check_media); n_batch is
        // at least 1 (its assert) and within what one decode takes, the
        // sequence is below n_seq_max and the cells fit (check_media); a
        // throw is caught by the firewall.
        let (thrown, lines) = crate::logging::capture(|| unsafe {
            mtmd::llama_sys_mtmd_helper_decode_image_chunk(
                projector.as_ptr(),
                self.as_ptr(),
                chunk.as_ptr(),
                mtmd::mtmd_get_output_embd(projector.as_ptr()),
                pos as i32,
                seq as i32,
                n_batch as i32,
                &mut new_pos,
                &mut status,
            )
        });
        drop(device);
        self.forget_outputs();
        crate::ffi::check("mtmd_helper_decode_image_chunk", thrown)?;
        match status {
            0 => Ok(()),
            -1 => Err(Error::Media {
                what: "media".into(),
                reason: crate::logging::reason(&lines),
            }),
            other => Err(DecodeError::from_status(other)
                .unwrap_or(DecodeError::Other(other))
                .into()),
        }
    }
}
