//! Pooled sentence embeddings: [`LlamaContext::embed`].

use crate::context::batch::Batch;
use crate::context::params::Pooling;
use crate::context::LlamaContext;
use crate::error::{Error, Result};
use crate::token::{Token, Tokenize};

impl LlamaContext {
    /// One pooled embedding per text, computed in this context, which must be in
    /// embeddings mode with a pooling other than [`Pooling::None`]
    /// ([`ContextParams::with_embeddings`](crate::ContextParams::with_embeddings),
    /// [`with_pooling`](crate::ContextParams::with_pooling)). Texts are packed
    /// into as few decodes as the batch size and `n_seq_max` allow (with a
    /// unified KV cache; one per decode otherwise); the cache is cleared
    /// before each. [`Normalize::UnitLength`] scales each vector to unit
    /// length (Euclidean), so dot products are cosine similarities.
    ///
    /// ```
    /// use llama_safe::{demo::DemoModel, ContextParams, LlamaBackend, LlamaContext, LlamaModel, Normalize, Pooling};
    /// let backend = LlamaBackend::init();
    /// let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
    /// let params = ContextParams::default()
    ///     .with_n_ctx(512)
    ///     .with_n_seq_max(4)
    ///     .with_kv_unified(true)
    ///     .with_embeddings(true)
    ///     .with_pooling(Pooling::Mean);
    /// let mut ctx = LlamaContext::new(&model, &params)?;
    /// let vectors = ctx.embed(&["one tiny model", "many experts"], Normalize::UnitLength)?;
    /// assert_eq!(vectors.len(), 2);
    /// assert_eq!(vectors[0].len(), model.n_embd_out() as usize);
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn embed(&mut self, texts: &[&str], scale: Normalize) -> Result<Vec<Vec<f32>>> {
        let tokenized = texts
            .iter()
            .map(|t| self.model().tokenize(t, Tokenize::PROMPT))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&[Token]> = tokenized.iter().map(Vec::as_slice).collect();
        self.embed_tokens(&refs, scale)
    }

    /// As [`embed`](Self::embed), for texts already tokenized (cut to
    /// [`embed_limit`](Self::embed_limit), say). An empty one is
    /// [`Error::EmptyPrompt`]; one over the limit [`Error::PromptTooLong`];
    /// a token outside the vocabulary [`Error::InvalidToken`].
    pub fn embed_tokens(&mut self, texts: &[&[Token]], scale: Normalize) -> Result<Vec<Vec<f32>>> {
        let normalize = scale == Normalize::UnitLength;
        let ctx = self;
        if !ctx.embeddings_enabled() {
            return Err(Error::Embeddings {
                reason: "the context is not in embeddings mode (ContextParams::with_embeddings)"
                    .into(),
            });
        }
        if matches!(ctx.pooling(), Pooling::None | Pooling::Model) {
            return Err(Error::Embeddings {
                reason: "the context pools nothing; choose a pooling (ContextParams::with_pooling)"
                    .into(),
            });
        }
        let limit = ctx.embed_limit() as usize;
        // Several texts per decode only in a unified cache (see
        // ContextParams::with_kv_unified for why).
        let max_seqs = if ctx.kv_unified() {
            ctx.n_seq_max() as usize
        } else {
            1
        };
        let tokenized = texts;
        for tokens in tokenized {
            for &t in tokens.iter() {
                ctx.model().check_token(t)?;
            }
            if tokens.is_empty() {
                return Err(Error::EmptyPrompt);
            }
            if tokens.len() > limit {
                return Err(Error::PromptTooLong {
                    tokens: tokens.len(),
                    n_ctx: limit as u32,
                });
            }
        }
        let mut out = Vec::with_capacity(texts.len());
        let mut batch = Batch::new();
        let mut group: Vec<&[Token]> = Vec::new();
        let mut group_tokens = 0;
        for (i, tokens) in tokenized.iter().enumerate() {
            group.push(tokens);
            group_tokens += tokens.len();
            let next_fits = tokenized
                .get(i + 1)
                .is_some_and(|n| group.len() < max_seqs && group_tokens + n.len() <= limit);
            if !next_fits {
                embed_group(ctx, &mut batch, &group, normalize, &mut out)?;
                group.clear();
                group_tokens = 0;
            }
        }
        Ok(out)
    }

    /// The most tokens one text may have for [`embed`](Self::embed): the
    /// context size, or the most one decode takes if that is less.
    pub fn embed_limit(&self) -> u32 {
        self.decode_limit().min(self.n_ctx())
    }
}

/// Decodes one pack of texts, one sequence each, and collects their vectors.
fn embed_group(
    ctx: &mut LlamaContext,
    batch: &mut Batch,
    group: &[&[Token]],
    normalize: bool,
    out: &mut Vec<Vec<f32>>,
) -> Result<()> {
    ctx.clear();
    batch.clear();
    for (seq, tokens) in group.iter().enumerate() {
        batch.add_sequence(tokens, 0, seq as u32, true)?;
    }
    batch.keep_all_outputs();
    ctx.decode_batch(batch)?;
    for seq in 0..group.len() {
        let mut v = ctx
            .embeddings_seq(seq as u32)
            .ok_or_else(|| Error::Embeddings {
                reason: format!("llama.cpp pooled no embedding for sequence {seq}").into(),
            })?
            .to_vec();
        if normalize {
            let norm = v
                .iter()
                .map(|x| f64::from(*x) * f64::from(*x))
                .sum::<f64>()
                .sqrt();
            if norm > 0.0 {
                v.iter_mut()
                    .for_each(|x| *x = (f64::from(*x) / norm) as f32);
            }
        }
        out.push(v);
    }
    Ok(())
}

/// How [`LlamaContext::embed`] scales each vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// To unit length (Euclidean), so a dot product is the cosine similarity.
    UnitLength,
    /// As the model gives it.
    None,
}
