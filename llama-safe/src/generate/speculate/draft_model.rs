//! Drafts from a second, smaller model with the target's vocabulary: its own
//! context, greedy, batched over every sequence that asks for a draft.

use crate::context::batch::Batch;
use crate::context::params::ContextParams;
use crate::context::LlamaContext;
use crate::error::{Error, Result};
use crate::model::LlamaModel;
use crate::token::Token;

/// A draft model for [`Speculation::draft_model`](super::Speculation::draft_model):
/// a smaller model with the target's vocabulary, loaded with its own
/// [`LlamaModelParams`](crate::LlamaModelParams) (so its own MoE offload and
/// devices), its own context parameters, and the confidence below which it
/// stops drafting.
///
/// ```
/// use llama_safe::{demo::*, *};
/// let backend = LlamaBackend::init();
/// let target = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
/// // The dense demo model has the same vocabulary: it can draft for the MoE one.
/// let draft = LlamaModel::load(&backend, DemoModel::Dense.cached()?, &Default::default())?;
/// let draft = DraftModel::new(draft).with_p_min(0.5);
/// draft.check_compatible(&target)?;
/// let mut ctx = LlamaContext::new(&target, &ContextParams::default().with_n_ctx(512))?;
/// let options = GenerateOptions::default()
///     .with_sampling(SamplingOptions::greedy())
///     .with_speculation(Speculation::draft_model(draft));
/// let mut text = String::new();
/// for event in ctx.generate(DEMO_PROMPT, &options)? {
///     if let Event::Piece(p) = event? {
///         text.push_str(&p.text);
///     }
/// }
/// assert_eq!(text, DEMO_CONTINUATION); // the same text as without a draft
/// # Ok::<(), llama_safe::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "builders return a new value: use it"]
pub struct DraftModel {
    model: LlamaModel,
    context: ContextParams,
    p_min: f32,
}

/// Vocabulary sizes may differ by this much (padding), as llama.cpp's
/// `SPEC_VOCAB_MAX_SIZE_DIFFERENCE`.
pub const MAX_VOCAB_DIFFERENCE: u32 = 128;

/// Token texts are compared from this id on (the first few are often
/// special tokens that differ harmlessly), as llama.cpp's
/// `SPEC_VOCAB_CHECK_START_TOKEN_ID`.
const CHECK_FROM: u32 = 5;

impl DraftModel {
    /// `model` as a draft model: default context parameters (the context
    /// size and sequences are set where it is used), `p_min` 0.75
    /// (llama-server's `--spec-draft-p-min`).
    pub fn new(model: LlamaModel) -> DraftModel {
        DraftModel {
            model,
            context: ContextParams::default(),
            p_min: 0.75,
        }
    }

    /// The draft context's parameters: threads, KV cache types, flash
    /// attention, batch sizes. Its size, sequences and outputs are set
    /// where it is made (the target context's size plus room for a draft).
    pub fn with_context(mut self, params: ContextParams) -> Self {
        self.context = params;
        self
    }

    /// Stop drafting where the draft model's probability of its most likely
    /// token is below `p` (0 drafts up to the limit every time).
    pub fn with_p_min(mut self, p: f32) -> Self {
        self.p_min = p;
        self
    }

    /// The draft model.
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// The confidence below which drafting stops.
    pub fn p_min(&self) -> f32 {
        self.p_min
    }

    /// Whether this draft model can draft for `target`, as llama.cpp's
    /// `common_speculative_are_compatible` decides: the same tokenizer type,
    /// start and end tokens and their use, vocabulary sizes within
    /// [`MAX_VOCAB_DIFFERENCE`], and the same text for every token id both
    /// have (from id 5). Anything else is [`Error::IncompatibleDraft`]: its
    /// drafts would be other tokens than the target's, accepted by chance.
    pub fn check_compatible(&self, target: &LlamaModel) -> Result<()> {
        let draft = &self.model;
        let bad = |reason: String| Error::IncompatibleDraft {
            draft: draft.path().to_path_buf(),
            target: target.path().to_path_buf(),
            reason: reason.into(),
        };
        draft.check_vocab()?;
        target.check_vocab()?;
        if draft.same_model(target) {
            return Ok(());
        }
        let (d, t) = (VocabFacts::of(draft), VocabFacts::of(target));
        if d.kind != t.kind {
            return Err(bad(format!(
                "tokenizer types differ ({} and {})",
                d.kind, t.kind
            )));
        }
        if (d.add_bos, d.add_eos, d.bos, d.eos) != (t.add_bos, t.add_eos, t.bos, t.eos) {
            return Err(bad(format!(
                "start/end tokens differ: add_bos {} / {}, add_eos {} / {}, bos {} / {}, eos {} / {}",
                d.add_bos, t.add_bos, d.add_eos, t.add_eos, d.bos, t.bos, d.eos, t.eos
            )));
        }
        let (nd, nt) = (draft.n_vocab(), target.n_vocab());
        if nd.abs_diff(nt) > MAX_VOCAB_DIFFERENCE {
            return Err(bad(format!(
                "vocabularies of {nd} and {nt} tokens (at most {MAX_VOCAB_DIFFERENCE} apart)"
            )));
        }
        for id in CHECK_FROM..nd.min(nt) {
            let (a, b) = (token_text(draft, id), token_text(target, id));
            if a != b {
                return Err(bad(format!(
                    "token {id} is {:?} in the draft and {:?} in the target",
                    String::from_utf8_lossy(a),
                    String::from_utf8_lossy(b)
                )));
            }
        }
        Ok(())
    }
}

/// What must agree between a draft's vocabulary and the target's.
struct VocabFacts {
    kind: llama_safe_sys::llama_vocab_type,
    add_bos: bool,
    add_eos: bool,
    bos: i32,
    eos: i32,
}

impl VocabFacts {
    fn of(model: &LlamaModel) -> VocabFacts {
        let v = model.vocab();
        // SAFETY: the vocab lives with the model; these read fields
        // (llama_vocab::get_add_bos and the like assert nothing).
        unsafe {
            VocabFacts {
                kind: llama_safe_sys::llama_vocab_type(v),
                add_bos: llama_safe_sys::llama_vocab_get_add_bos(v),
                add_eos: llama_safe_sys::llama_vocab_get_add_eos(v),
                bos: llama_safe_sys::llama_vocab_bos(v),
                eos: llama_safe_sys::llama_vocab_eos(v),
            }
        }
    }
}

/// The text of token `id` as the vocabulary stores it.
fn token_text(model: &LlamaModel, id: u32) -> &[u8] {
    debug_assert!(id < model.n_vocab());
    // SAFETY: the model has a tokenizer (check_vocab: token_get_text
    // asserts one) and `id` is below n_vocab (id_to_token.at throws past
    // it); the text is a std::string of the vocabulary, alive and
    // unchanged as long as the model, which `model` borrows.
    unsafe {
        let ptr = llama_safe_sys::llama_vocab_get_text(model.vocab(), id as i32);
        if ptr.is_null() {
            return &[];
        }
        std::ffi::CStr::from_ptr(ptr).to_bytes()
    }
}

/// One sequence's request for a draft.
pub(crate) struct Want<'a> {
    /// Its sequence id in the draft context.
    pub seq: u32,
    /// The text so far, ending with the token the draft follows.
    pub history: &'a [Token],
    /// Fewest tokens worth checking.
    pub min: usize,
    /// Most tokens to draft.
    pub limit: usize,
}

/// A draft model's context: one sequence per target sequence, each keeping
/// the text it has seen (only what changed is decoded again).
pub(crate) struct ModelDrafter {
    ctx: LlamaContext,
    /// The tokens in each sequence's cells, in position order.
    cached: Vec<Vec<Token>>,
    p_min: f32,
    /// The target's vocabulary size: drafted tokens at or past it end a draft.
    target_vocab: u32,
    batch: Batch,
}

impl ModelDrafter {
    /// A context of `draft` for `n_seq` sequences and `n_ctx` cells in all,
    /// after checking it can draft for `target`.
    pub(crate) fn new(
        draft: &DraftModel,
        target: &LlamaModel,
        n_ctx: u32,
        n_seq: u32,
    ) -> Result<ModelDrafter> {
        draft.check_compatible(target)?;
        if !(0.0..=1.0).contains(&draft.p_min) {
            return Err(Error::InvalidParameter {
                name: "p_min",
                reason: format!("{} is not a probability", draft.p_min).into(),
            });
        }
        let params = draft
            .context
            .clone()
            .with_n_ctx(n_ctx)
            .with_n_seq_max(n_seq)
            .with_kv_unified(true)
            .with_n_outputs_max(n_seq)
            .with_embeddings(false);
        let ctx = LlamaContext::new(&draft.model, &params)?;
        Ok(ModelDrafter {
            ctx,
            cached: vec![Vec::new(); n_seq as usize],
            p_min: draft.p_min,
            target_vocab: target.n_vocab(),
            batch: Batch::new(),
        })
    }

    /// Frees the cells of sequence `seq`.
    pub(crate) fn forget(&mut self, seq: u32) {
        if let Some(cached) = self.cached.get_mut(seq as usize) {
            let _ = self.ctx.seq_remove(Some(seq), ..);
            cached.clear();
        }
    }

    /// A draft for each of `wants`, in one decode per drafted position for
    /// all of them: first the text each sequence has not seen, then the
    /// draft model's most likely token, again and again, while its
    /// probability is at least `p_min`, the limit is not reached and the
    /// token does not end generation. A
    /// draft shorter than its `min` is empty. On an error the sequences
    /// concerned are forgotten (their cells freed), so the next call starts
    /// clean.
    pub(crate) fn draft(&mut self, wants: &[Want<'_>]) -> Result<Vec<Vec<Token>>> {
        let drafted = self.try_draft(wants);
        if drafted.is_err() {
            for w in wants {
                self.forget(w.seq);
            }
        }
        drafted
    }

    fn try_draft(&mut self, wants: &[Want<'_>]) -> Result<Vec<Vec<Token>>> {
        let n_vocab = self.ctx.model().n_vocab();
        let n_ctx = self.ctx.n_ctx() as usize;
        let limit = self.ctx.decode_limit().max(1) as usize;
        let mut drafts = vec![Vec::new(); wants.len()];
        let mut next: Vec<Option<Token>> = vec![None; wants.len()];
        // (want, next history index to decode)
        let mut feeding = Vec::new();
        for (k, w) in wants.iter().enumerate() {
            let known = w.history.iter().all(|t| t.0 >= 0 && (t.0 as u32) < n_vocab);
            let fits = w.history.len() + w.limit <= n_ctx;
            if w.limit == 0 || w.history.is_empty() || !known || !fits {
                continue;
            }
            let cached = &mut self.cached[w.seq as usize];
            let common = cached
                .iter()
                .zip(w.history)
                .take_while(|(a, b)| a == b)
                .count();
            // The last token is always decoded again: its logits are needed.
            let reuse = common.min(w.history.len() - 1);
            self.ctx.seq_remove(Some(w.seq), reuse as u32..)?;
            cached.truncate(reuse);
            feeding.push((k, reuse));
        }
        // The text each sequence has not seen, in batches of what one decode
        // takes; the logits of each one's last token.
        while !feeding.is_empty() {
            self.batch.clear();
            let mut outputs = Vec::new();
            for (k, from) in &mut feeding {
                let w = &wants[*k];
                let take = (w.history.len() - *from).min(limit - self.batch.len());
                for i in *from..*from + take {
                    let last = i + 1 == w.history.len();
                    self.batch.add(w.history[i], i as u32, &[w.seq], last)?;
                    if last {
                        outputs.push((*k, self.batch.len() - 1));
                    }
                }
                self.cached[w.seq as usize].extend_from_slice(&w.history[*from..*from + take]);
                *from += take;
                if self.batch.len() == limit {
                    break;
                }
            }
            self.ctx.decode_batch(&self.batch)?;
            for (k, i) in outputs {
                next[k] = self.most_likely(i);
            }
            feeding.retain(|&(k, from)| from < wants[k].history.len());
        }
        // Draft: each sequence's most likely token, decoded for the next
        // while more are wanted.
        loop {
            self.batch.clear();
            let mut outputs = Vec::new();
            for (k, w) in wants.iter().enumerate() {
                let Some(token) = next[k].take() else {
                    continue;
                };
                if token.0 as u32 >= self.target_vocab {
                    continue; // not a token of the target
                }
                drafts[k].push(token);
                // Nothing follows the end of generation.
                let ends = self.ctx.model().is_eog(token);
                if ends || drafts[k].len() >= w.limit || self.batch.len() == limit {
                    continue;
                }
                let pos = self.cached[w.seq as usize].len() as u32;
                self.batch.add(token, pos, &[w.seq], true)?;
                outputs.push((k, self.batch.len() - 1));
            }
            if self.batch.is_empty() {
                break;
            }
            self.ctx.decode_batch(&self.batch)?;
            for (k, i) in outputs {
                let token = *drafts[k].last().expect("pushed above");
                self.cached[wants[k].seq as usize].push(token);
                next[k] = self.most_likely(i);
            }
        }
        for (draft, w) in drafts.iter_mut().zip(wants) {
            if draft.len() < w.min {
                draft.clear();
            }
        }
        Ok(drafts)
    }

    /// The most likely token at output `i`, if its probability is at least
    /// `p_min`.
    fn most_likely(&self, i: usize) -> Option<Token> {
        let logits = self.ctx.logits_ith(i)?;
        let (best, &max) = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
        let p = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        (p >= self.p_min).then_some(Token(best as i32))
    }
}
