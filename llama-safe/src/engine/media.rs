//! Prompts with media in the engine (the `mtmd` feature).
//!
//! A request's prompt stays a list of tokens: each media chunk is stood
//! for by as many placeholder tokens as it takes cells, negative ids drawn
//! from the medium's id (the SHA-256 of its pixels or samples). The prompt
//! cache compares prompts as before, so the same image at the same place
//! after the same text reuses its cells, and a different one never does;
//! a reuse never stops inside an image. The worker decodes a media chunk
//! on its own, through the projector, when a sequence's prompt reaches it;
//! text rides in the shared batch as before.

use super::Request;
use crate::error::{Error, Result};
use crate::media::{ChunkKind, MediaChunks};
use crate::{GenerateOptions, Token};
use std::sync::Arc;

/// A request's media: the chunks, and where each media chunk sits in the
/// prompt's tokens.
#[derive(Debug)]
pub(super) struct PromptMedia {
    pub chunks: MediaChunks,
    pub spans: Vec<Span>,
}

/// A media chunk's placeholder tokens in the prompt.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    /// Index of its first placeholder.
    pub start: usize,
    /// Index of the chunk in [`PromptMedia::chunks`].
    pub chunk: usize,
}

impl Request {
    /// A request for a prompt with media, as
    /// [`Projector::tokenize`](crate::media::Projector::tokenize) split it.
    /// It must end with text (generation starts from its last token's
    /// logits); the engine must run the projector's model (checked at
    /// [`submit`](super::Engine::submit)).
    pub fn with_media(chunks: MediaChunks, options: GenerateOptions) -> Result<Request> {
        let mut prompt = Vec::with_capacity(chunks.n_tokens());
        let mut spans = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            if chunk.kind() == ChunkKind::Text {
                prompt.extend_from_slice(chunk.tokens());
                continue;
            }
            let id = chunk.id().unwrap_or_default();
            spans.push(Span {
                start: prompt.len(),
                chunk: i,
            });
            prompt.extend((0..chunk.n_tokens()).map(|j| placeholder(&id, j)));
        }
        if prompt.last().is_none_or(|t| is_placeholder(*t)) {
            return Err(Error::InvalidParameter {
                name: "chunks",
                reason: "a prompt with media must end with text, which generation starts from"
                    .into(),
            });
        }
        Ok(Request {
            prompt,
            options,
            media: Some(Arc::new(PromptMedia { chunks, spans })),
        })
    }

    /// The request's media, if any.
    pub fn media(&self) -> Option<&MediaChunks> {
        self.media.as_ref().map(|m| &m.chunks)
    }
}

/// Whether `token` stands for a medium's cell.
pub(super) fn is_placeholder(token: Token) -> bool {
    token.0 < 0
}

/// Placeholder `j` of the medium `id`: a negative id from a 64-bit FNV-1a
/// of both (30 bits kept; two media that differ differ in their first
/// placeholder with probability 1 - 2^-30, in all of them practically
/// always).
fn placeholder(id: &str, j: usize) -> Token {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain((j as u64).to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Token(-1 - (h & 0x3fff_ffff) as i32)
}

/// `reuse` cells of a cached prefix, cut back so that it never ends inside
/// a medium (its cells are all decoded together, or none).
pub(super) fn reuse_boundary(prompt: &[Token], mut reuse: usize) -> usize {
    while reuse > 0
        && reuse < prompt.len()
        && is_placeholder(prompt[reuse])
        && is_placeholder(prompt[reuse - 1])
    {
        reuse -= 1;
    }
    reuse
}

/// The checks [`Engine::submit`](super::Engine::submit) makes of a request
/// with media.
pub(super) fn check(
    media: &PromptMedia,
    model: &crate::LlamaModel,
    request: &Request,
) -> Result<()> {
    let projector = media.chunks.projector();
    if !projector.model().same_model(model) {
        return Err(Error::ModelMismatch {
            what: "media chunks of a projector for another model",
        });
    }
    if projector.uses_mrope() {
        return Err(Error::Unsupported {
            reason: "the engine places tokens one position per cell; this model's media use \
                     M-RoPE: use LlamaContext::generate_media"
                .into(),
        });
    }
    if request
        .options
        .speculation()
        .is_some_and(|s| s.draft().is_some())
    {
        return Err(Error::Unsupported {
            reason: "a draft model cannot draft for a prompt with media (it would not see them)"
                .into(),
        });
    }
    Ok(())
}

impl super::worker::Worker<'_> {
    /// Decodes, for every running sequence whose prompt has reached a
    /// medium, that medium (encoder and embeddings, outside the shared
    /// batch). A failure ends that request with its error.
    pub(super) fn feed_media(&mut self) {
        for i in 0..self.slots.len() {
            let Some(run) = self.slots[i].run.as_ref() else {
                continue;
            };
            let Some(media) = run.job.request.media.clone() else {
                continue;
            };
            let done = self.slots[i].cached.len();
            let Some(span) = media.spans.iter().find(|s| s.start == done) else {
                continue;
            };
            let Some(chunk) = media.chunks.get(span.chunk) else {
                continue;
            };
            let seq = self.slots[i].seq;
            // One position per cell (M-RoPE media are refused at submit).
            match self.ctx.decode_chunk(&chunk, seq, done as u32) {
                Ok(_) => {
                    let prompt = &self.slots[i]
                        .run
                        .as_ref()
                        .expect("running")
                        .job
                        .request
                        .prompt;
                    let placeholders = prompt[done..done + chunk.n_tokens()].to_vec();
                    self.slots[i].cached.extend(placeholders);
                    self.counters.tokens_decoded.fetch_add(
                        chunk.n_tokens() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                Err(e) => {
                    if let Some(run) = self.end_run(i) {
                        run.fail(e);
                    }
                    self.forget(i);
                }
            }
        }
        self.publish();
    }
}
