//! One sequence of the engine: its KV slot, and the request it runs.

use super::Job;
use crate::error::Error;
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
    /// Index of this sequence's logits in the batch being decoded.
    pub output: Option<usize>,
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
        Run {
            stream,
            job,
            sampler,
            pending: None,
            reserved,
            output: None,
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
        self.stream.prompt_read();
    }

    /// Samples from batch entry `i`, streams the piece, and decides whether
    /// the request goes on.
    pub fn sample(&mut self, ctx: &mut crate::LlamaContext, i: usize) -> Outcome {
        if self.stream.limit_reached() {
            let events = self.stream.finish(StopReason::MaxTokens);
            return self.send_all_but_last(events);
        }
        let model = ctx.model().clone();
        let sampled = self.sampler.sample_ith(ctx, i);
        match self.stream.accept(&model, sampled, ctx.logits_ith(i)) {
            Ok(Step::Continue { token, piece }) => {
                let _ = self.job.events.send(Ok(Event::Piece(piece)));
                self.pending = Some(token);
                Outcome::Continue
            }
            Ok(Step::Finished(events)) => self.send_all_but_last(events),
            Err(e) => Outcome::Finished(Err(e)),
        }
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
