//! One sequence of the engine: its KV slot, and the request it runs.

use super::Job;
use crate::error::Error;
use crate::generate::speculate::{DraftState, Want};
use crate::generate::stream::{Step, TokenStream};
use crate::generate::{Event, StopReason};
use crate::sampler::Sampler;
use crate::token::Token;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// A sequence id of the context, and what its KV cells hold.
pub(super) struct Slot {
    /// The sequence id.
    pub seq: u32,
    /// The tokens in this sequence's KV cells, in position order.
    pub cached: Vec<Token>,
    /// When it last finished a request (for least-recently-used eviction).
    pub last_used: Instant,
    /// The request it runs, if any.
    pub run: Option<Run>,
}

/// A request running in a slot.
pub(super) struct Run {
    pub job: Job,
    sampler: Sampler,
    /// What each sampled token does: the core `generate` uses too.
    stream: TokenStream,
    /// Sampled but not decoded yet: the next token to feed.
    pub pending: Option<Token>,
    /// Cells reserved: prompt + max_tokens.
    pub reserved: usize,
    /// Index of this sequence's logits in the batch being decoded (of the
    /// pending token's, when a draft follows it).
    pub output: Option<usize>,
    /// Speculation: how it drafts, and the text so far to draft from.
    spec: Option<RunSpec>,
    /// Tokens drafted after the pending one in the batch being decoded.
    pub draft: Vec<Token>,
    /// Drafted and accepted so far, and decodes that checked a draft.
    spec_stats: crate::SpeculationStats,
}

/// A run's speculation.
struct RunSpec {
    speculation: crate::Speculation,
    /// The text sources' state (the n-gram map).
    state: DraftState,
    /// The prompt and the tokens generated.
    history: Vec<Token>,
}

/// What sampling one token did to a run.
pub(super) enum Outcome {
    /// Keep going: the token is pending.
    Continue,
    /// The request is over: its last event (`Done`, or the error), which
    /// the worker sends once it has released the sequence, so that a
    /// client holding it sees the engine without it.
    Finished(crate::Result<Event>),
}

impl Run {
    pub fn new(job: Job, sampler: Sampler) -> Run {
        let options = &job.request.options;
        let reserved = job.request.prompt.len() + options.max_tokens() as usize;
        let stream = TokenStream::new(
            options,
            job.request.prompt.len(),
            job.submitted,
            Instant::now(),
        );
        let spec = options.speculation().map(|s| RunSpec {
            speculation: s.clone(),
            state: s.state(),
            history: job.request.prompt.clone(),
        });
        Run {
            stream,
            job,
            sampler,
            pending: None,
            reserved,
            output: None,
            spec,
            draft: Vec::new(),
            spec_stats: Default::default(),
        }
    }

    /// How many tokens a draft may have in this step: at most `room`,
    /// fewer where the request may not generate that many; 0 without
    /// speculation.
    pub fn draft_limit(&self, room: usize) -> usize {
        match &self.spec {
            Some(s) => room
                .min(self.stream.remaining())
                .min(s.speculation.draft_max() as usize),
            None => 0,
        }
    }

    /// A draft of at most `limit` tokens from the text, for the text
    /// sources; false for a draft model (see [`want`](Self::want)).
    pub fn draft_from_text(&mut self, limit: usize) -> bool {
        self.draft.clear();
        match &mut self.spec {
            Some(s) if s.speculation.draft().is_none() => {
                self.draft = s
                    .speculation
                    .draft_from_text(&mut s.state, &s.history, limit);
                // A medium's placeholders are not tokens to draft.
                if let Some(end) = self.draft.iter().position(|t| t.0 < 0) {
                    self.draft.truncate(end);
                }
                true
            }
            _ => false,
        }
    }

    /// What to ask the draft model for, as sequence `seq`.
    pub fn want(&self, seq: u32, limit: usize) -> Option<Want<'_>> {
        let s = self.spec.as_ref()?;
        Some(Want {
            seq,
            history: &s.history,
            min: s.speculation.draft_min() as usize,
            limit,
        })
    }

    /// Whether the client cancelled or went away.
    pub fn cancelled(&self) -> bool {
        self.job.cancel.load(Ordering::Relaxed) || self.job.events.is_disconnected()
    }

    /// Sends an error and ends the request.
    pub fn fail(&self, error: Error) {
        let _ = self.job.events.send(Err(error));
    }

    /// Marks the prompt as read.
    pub fn prompt_read(&mut self) {
        self.stream.prompt_read();
    }

    /// Samples from batch entry `i`, streams the piece, and decides whether
    /// the request goes on; with a draft in the batch after entry `i`, then
    /// the model's token at each drafted position in order while they agree
    /// (the same rule as `LlamaContext::generate`'s). Also returns how many
    /// drafted tokens' cells to remove (the rejected ones: the cache keeps
    /// what generation without a draft would).
    pub fn sample_checking(&mut self, ctx: &mut crate::LlamaContext, i: usize) -> (Outcome, usize) {
        if self.stream.limit_reached() {
            let events = self.stream.finish(StopReason::MaxTokens);
            let events = self.with_spec_stats(events);
            return (self.send_all_but_last(events), 0);
        }
        let draft = std::mem::take(&mut self.draft);
        if self.spec.is_some() {
            self.spec_stats.target_decodes += 1;
            self.spec_stats.drafted += draft.len();
        }
        let model = ctx.model().clone();
        for j in 0..=draft.len() {
            let sampled = self.sampler.sample_ith(ctx, i + j);
            let agrees = j < draft.len() && sampled.as_ref().is_ok_and(|t| *t == draft[j]);
            let reject = draft.len() - j;
            match self.stream.accept(&model, sampled, ctx.logits_ith(i + j)) {
                Ok(Step::Continue { token, piece }) => {
                    let _ = self.job.events.send(Ok(Event::Piece(piece)));
                    if let Some(s) = &mut self.spec {
                        s.history.push(token);
                    }
                    if agrees {
                        self.spec_stats.accepted += 1;
                        continue;
                    }
                    self.pending = Some(token);
                    return (Outcome::Continue, reject);
                }
                Ok(Step::Finished(events)) => {
                    // A drafted end of generation (or last token) was right.
                    self.spec_stats.accepted += usize::from(agrees);
                    let events = self.with_spec_stats(events);
                    return (self.send_all_but_last(events), reject);
                }
                Err(e) => return (Outcome::Finished(Err(e)), reject),
            }
        }
        unreachable!("the loop returns at its last position")
    }

    /// Puts the speculation's figures into the `Done` among `events`.
    fn with_spec_stats(&self, events: Vec<Event>) -> Vec<Event> {
        crate::generate::speculate::with_stats(self.spec.as_ref().map(|_| self.spec_stats), events)
    }

    /// Sends every event but the last (`Done`), which the worker sends once
    /// the sequence is released.
    fn send_all_but_last(&self, mut events: Vec<Event>) -> Outcome {
        let last = events.pop();
        for event in events {
            let _ = self.job.events.send(Ok(event));
        }
        match last {
            Some(done) => Outcome::Finished(Ok(done)),
            None => Outcome::Finished(Err(Error::EngineStopped)),
        }
    }
}
