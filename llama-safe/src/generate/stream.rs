//! The token-stream core that [`LlamaContext::generate`](crate::LlamaContext::generate)
//! and the batching engine share: what one sampled token does (end of
//! generation, a UTF-8 piece, a stop string, the token limit), the tail at
//! the end, and the stats. The callers only sample and decode.

use super::stop::StopMatcher;
use super::{Event, GenerateOptions, GenerationStats, Piece, StopReason, TokenLogprob};
use crate::error::{Error, Result};
use crate::model::LlamaModel;
use crate::token::{Token, Utf8Stream};
use std::time::{Duration, Instant};

/// One request's stream of tokens, from the prompt read to `Done`.
pub(crate) struct TokenStream {
    utf8: Utf8Stream,
    stop: StopMatcher,
    max_tokens: usize,
    /// Alternatives per log-probability, if asked for.
    logprobs: Option<u32>,
    prompt_tokens: usize,
    generated: usize,
    /// The last token generated (not end-of-generation): a tail of bytes
    /// that completes only at the end is its piece.
    last_generated: Option<Token>,
    /// Time zero of the request: pieces' `at` and the time to first token.
    origin: Instant,
    /// When the prompt started being read, and when it was.
    prompt_start: Instant,
    prompt_done: Option<Instant>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    finished: bool,
}

/// What a sampled token did.
pub(crate) enum Step {
    /// Feed `token` to the context and sample again; `piece` is its text
    /// so far (possibly empty, while a UTF-8 character is split).
    Continue { token: Token, piece: Piece },
    /// The request is over: its last events (a piece, the tail, `Done`).
    Finished(Vec<Event>),
}

impl TokenStream {
    /// A stream for `options` after a prompt of `prompt_tokens` tokens;
    /// `origin` is the request's time zero, `prompt_start` when its prompt
    /// started being read.
    pub fn new(
        options: &GenerateOptions,
        prompt_tokens: usize,
        origin: Instant,
        prompt_start: Instant,
    ) -> TokenStream {
        TokenStream {
            utf8: Utf8Stream::default(),
            stop: StopMatcher::new(options.stop()),
            max_tokens: options.max_tokens() as usize,
            logprobs: options.logprobs(),
            prompt_tokens,
            generated: 0,
            last_generated: None,
            origin,
            prompt_start,
            prompt_done: None,
            first_token: None,
            last_token: None,
            finished: false,
        }
    }

    /// The prompt has been read (only the first call counts).
    pub fn prompt_read(&mut self) {
        self.prompt_done.get_or_insert_with(Instant::now);
    }

    /// Whether the request is over before sampling anything more: the
    /// limit is reached (a limit of 0 samples nothing).
    pub fn limit_reached(&self) -> bool {
        self.generated >= self.max_tokens
    }

    /// How many more tokens may be generated.
    pub fn remaining(&self) -> usize {
        self.max_tokens.saturating_sub(self.generated)
    }

    /// What the token the sampler gave (or its error) does; `logits` are
    /// those it was sampled from (for log-probabilities, when asked for).
    pub fn accept(
        &mut self,
        model: &LlamaModel,
        sampled: Result<Token>,
        logits: Option<&[f32]>,
    ) -> Result<Step> {
        let token = match sampled {
            Err(Error::GrammarDeadEnd { .. }) => {
                return Ok(Step::Finished(self.finish(StopReason::GrammarDeadEnd)))
            }
            other => other?,
        };
        let now = Instant::now();
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
        if model.is_eog(token) {
            return Ok(Step::Finished(self.finish(StopReason::EndOfGeneration)));
        }
        self.generated += 1;
        self.last_generated = Some(token);
        let text = self.utf8.push(&model.token_bytes(token, false)?);
        let (emit, stopped) = self.stop.push(&text);
        let logprob = self
            .logprobs
            .zip(logits)
            .and_then(|(top, logits)| TokenLogprob::from_logits(logits, token, top as usize));
        let piece = Piece {
            token,
            text: emit,
            at: self.origin.elapsed(),
            logprob,
        };
        if stopped {
            let mut events = vec![Event::Piece(piece)];
            events.extend(self.finish(StopReason::StopString));
            return Ok(Step::Finished(events));
        }
        if self.limit_reached() {
            let mut events = vec![Event::Piece(piece)];
            events.extend(self.finish(StopReason::MaxTokens));
            return Ok(Step::Finished(events));
        }
        Ok(Step::Continue { token, piece })
    }

    /// Ends the stream: the text held back (a split character, a possible
    /// stop string's start) as a last piece, then `Done`. Later calls give
    /// nothing.
    pub fn finish(&mut self, reason: StopReason) -> Vec<Event> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        let mut events = Vec::new();
        if reason != StopReason::StopString {
            let tail = self.stop.finish_with(&self.utf8.finish());
            if let (false, Some(token)) = (tail.is_empty(), self.last_generated) {
                events.push(Event::Piece(Piece {
                    token,
                    text: tail,
                    at: self.origin.elapsed(),
                    logprob: None,
                }));
            }
        }
        events.push(Event::Done(self.stats(reason)));
        events
    }

    fn stats(&self, stop_reason: StopReason) -> GenerationStats {
        let prompt_done = self.prompt_done.unwrap_or(self.prompt_start);
        GenerationStats::measured(
            self.prompt_tokens,
            self.generated,
            self.first_token
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(self.origin)),
            prompt_done.saturating_duration_since(self.prompt_start),
            self.last_token
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(prompt_done)),
            stop_reason,
        )
    }
}
