//! One sequence of the engine: its KV slot, and the request it runs.

use super::Job;
use crate::error::Error;
use crate::generate::stop::StopMatcher;
use crate::generate::{Event, GenerationStats, Piece, StopReason};
use crate::sampler::Sampler;
use crate::token::{Token, Utf8Stream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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
    utf8: Utf8Stream,
    stop: StopMatcher,
    /// Sampled but not decoded yet: the next token to feed.
    pub pending: Option<Token>,
    /// Cells reserved: prompt + max_tokens.
    pub reserved: usize,
    /// Index of this sequence's logits in the batch being decoded.
    pub output: Option<usize>,
    generated: usize,
    /// The last token generated (not end-of-generation): a tail of bytes
    /// that completes only at the end is its piece.
    last_generated: Option<Token>,
    admitted: Instant,
    prompt_done: Option<Instant>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
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
        let reserved = job.request.prompt.len() + job.request.options.max_tokens() as usize;
        Run {
            stop: StopMatcher::new(job.request.options.stop()),
            job,
            sampler,
            utf8: Utf8Stream::default(),
            pending: None,
            reserved,
            output: None,
            generated: 0,
            last_generated: None,
            admitted: Instant::now(),
            prompt_done: None,
            first_token: None,
            last_token: None,
        }
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
        self.prompt_done.get_or_insert_with(Instant::now);
    }

    /// Samples from batch entry `i`, streams the piece, and decides whether
    /// the request goes on.
    pub fn sample(&mut self, ctx: &mut crate::LlamaContext, i: usize) -> Outcome {
        let model = ctx.model().clone();
        let token = match self.sampler.sample_ith(ctx, i) {
            Ok(t) => t,
            Err(Error::GrammarDeadEnd { .. }) => {
                return self.finish(StopReason::GrammarDeadEnd);
            }
            Err(e) => return Outcome::Finished(Err(e)),
        };
        let now = Instant::now();
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
        if model.is_eog(token) {
            return self.finish(StopReason::EndOfGeneration);
        }
        self.generated += 1;
        self.last_generated = Some(token);
        let bytes = match model.token_bytes(token, false) {
            Ok(b) => b,
            Err(e) => return Outcome::Finished(Err(e)),
        };
        let text = self.utf8.push(&bytes);
        let (emit, stopped) = self.stop.push(&text);
        self.piece(token, emit);
        if stopped {
            return self.finish(StopReason::StopString);
        }
        if self.generated >= self.job.request.options.max_tokens() as usize {
            return self.finish(StopReason::MaxTokens);
        }
        self.pending = Some(token);
        Outcome::Continue
    }

    fn piece(&self, token: Token, text: String) {
        if text.is_empty() {
            return;
        }
        let _ = self.job.events.send(Ok(Event::Piece(Piece {
            token,
            text,
            at: self.job.submitted.elapsed(),
        })));
    }

    fn finish(&mut self, reason: StopReason) -> Outcome {
        if let (true, Some(token)) = (reason != StopReason::StopString, self.last_generated) {
            let tail = self.stop.finish_with(&self.utf8.finish());
            self.piece(token, tail);
        }
        Outcome::Finished(Ok(Event::Done(self.stats(reason))))
    }

    fn stats(&self, stop_reason: StopReason) -> GenerationStats {
        let prompt_done = self.prompt_done.unwrap_or(self.admitted);
        GenerationStats::measured(
            self.job.request.prompt.len(),
            self.generated,
            self.first_token.map_or(Duration::ZERO, |t| {
                t.saturating_duration_since(self.job.submitted)
            }),
            prompt_done.saturating_duration_since(self.admitted),
            self.last_token
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(prompt_done)),
            stop_reason,
        )
    }
}
