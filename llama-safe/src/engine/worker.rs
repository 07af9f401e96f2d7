//! The engine's thread: admits requests, builds one batch per step, decodes
//! it, samples every sequence that has logits in it.

use super::slot::{Outcome, Run, Slot};
use super::{Counters, EngineConfig, Job};
use crate::context::batch::Batch;
use crate::context::LlamaContext;
use crate::error::{Error, Result};
use crate::generate::speculate::{ModelDrafter, Want};
use crate::model::LlamaModel;
use crate::sampler::Sampler;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Runs until the job channel is closed and every request is done.
pub(super) fn run(
    model: &LlamaModel,
    config: &EngineConfig,
    counters: &Counters,
    jobs: flume::Receiver<Job>,
    ready: flume::Sender<Result<()>>,
) {
    let ctx = match LlamaContext::new(model, &config.context_params()) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // The draft model's context: a sequence per engine sequence, room for
    // the cells the engine's reservations allow plus a draft each.
    let drafter = match config.speculation().and_then(|s| s.draft()) {
        None => None,
        Some(draft) => {
            let cells = if config.kv_unified {
                config.n_ctx
            } else {
                config.n_ctx_per_request() * config.n_parallel
            };
            let n_ctx = cells + config.n_parallel * (config.max_draft + 1);
            match ModelDrafter::new(draft, model, n_ctx, config.n_parallel) {
                Ok(d) => Some(d),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        }
    };
    let _ = ready.send(Ok(()));
    // Samplers are built on a thread of their own, in submission order: a
    // grammar that takes its budget's time to build delays the admission
    // of the requests behind it, never the steps of those running.
    std::thread::scope(|scope| {
        let (built_tx, built_rx) = flume::unbounded();
        let builder = std::thread::Builder::new()
            .name("llama-engine-samplers".into())
            .spawn_scoped(scope, move || {
                for job in jobs.iter() {
                    let sampler = Sampler::new(model, job.request.options.sampling());
                    if built_tx.send((job, sampler)).is_err() {
                        return;
                    }
                }
            });
        if let Err(e) = builder {
            eprintln!("llama-safe engine: cannot start the sampler thread: {e}");
            return;
        }
        serve(config, counters, ctx, drafter, &built_rx);
    });
}

/// A submitted request and its sampler (built, or why it could not be).
type Built = (Job, Result<Sampler>);

fn serve(
    config: &EngineConfig,
    counters: &Counters,
    ctx: LlamaContext,
    drafter: Option<ModelDrafter>,
    jobs: &flume::Receiver<Built>,
) {
    let mut worker = Worker {
        drafter,
        n_ctx: ctx.n_ctx() as usize,
        n_batch: ctx.decode_limit().max(1) as usize,
        ctx,
        config,
        counters,
        slots: (0..config.n_parallel)
            .map(|seq| Slot {
                seq,
                cached: Vec::new(),
                last_used: Instant::now(),
                run: None,
            })
            .collect(),
        waiting: VecDeque::new(),
        batch: Batch::new(),
    };
    worker.serve(jobs);
}

pub(super) struct Worker<'a> {
    pub(super) ctx: LlamaContext,
    /// The draft model's context, when the engine speculates with one.
    drafter: Option<ModelDrafter>,
    config: &'a EngineConfig,
    pub(super) counters: &'a Counters,
    pub(super) slots: Vec<Slot>,
    waiting: VecDeque<Built>,
    batch: Batch,
    n_ctx: usize,
    n_batch: usize,
}

impl Worker<'_> {
    fn serve(&mut self, jobs: &flume::Receiver<Built>) {
        let mut open = true;
        loop {
            // Take what was submitted; with nothing to do, wait for it.
            let idle = self.waiting.is_empty() && self.slots.iter().all(|s| s.run.is_none());
            if idle {
                if !open {
                    return;
                }
                match jobs.recv_timeout(Duration::from_millis(100)) {
                    Ok(job) => self.waiting.push_back(job),
                    Err(flume::RecvTimeoutError::Timeout) => continue,
                    Err(flume::RecvTimeoutError::Disconnected) => open = false,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(flume::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                    Err(flume::TryRecvError::Empty) => break,
                }
            }
            self.drop_cancelled();
            self.admit();
            // Media the prompts have reached, outside the shared batch.
            #[cfg(feature = "mtmd")]
            self.feed_media();
            self.publish();
            if !self.build_batch() {
                if !self.waiting.is_empty() && self.slots.iter().all(|s| s.run.is_none()) {
                    // Cannot happen (submit refuses what never fits), but
                    // never spin: fail the head of the queue.
                    if let Some((job, _)) = self.waiting.pop_front() {
                        self.counters.queued.fetch_sub(1, Ordering::SeqCst);
                        let _ = job.events.send(Err(Error::EngineStopped));
                    }
                }
                continue;
            }
            self.step();
        }
    }

    /// Ends runs whose client cancelled or went away, and drops waiting
    /// requests nobody wants any more (all of them once the engine is closed).
    fn drop_cancelled(&mut self) {
        if self.counters.closed.load(Ordering::SeqCst) {
            for (job, _) in self.waiting.drain(..) {
                self.counters.queued.fetch_sub(1, Ordering::SeqCst);
                let _ = job.events.send(Err(Error::EngineStopped));
            }
        }
        for i in 0..self.slots.len() {
            if self.slots[i].run.as_ref().is_some_and(Run::cancelled) {
                self.end_run(i);
                self.forget(i);
            }
        }
        let before = self.waiting.len();
        self.waiting.retain(|(job, _)| {
            !(job.cancel.load(Ordering::Relaxed) || job.events.is_disconnected())
        });
        let dropped = before - self.waiting.len();
        self.counters.queued.fetch_sub(dropped, Ordering::SeqCst);
    }

    /// Ends the run of slot `i` (its cells stay, for the prompt cache).
    pub(super) fn end_run(&mut self, i: usize) -> Option<Run> {
        let run = self.slots[i].run.take();
        if run.is_some() {
            self.counters.active.fetch_sub(1, Ordering::SeqCst);
            self.slots[i].last_used = Instant::now();
        }
        run
    }

    /// Frees every KV cell of slot `i`.
    pub(super) fn forget(&mut self, i: usize) {
        let seq = self.slots[i].seq;
        let _ = self.ctx.seq_remove(Some(seq), ..);
        self.slots[i].cached.clear();
        if let Some(drafter) = &mut self.drafter {
            drafter.forget(seq);
        }
    }

    /// Cells taken now: reservations of running requests (their cached
    /// tokens are part of them) and the prompt cache of idle slots.
    fn cells_taken(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.run.as_ref().map_or(s.cached.len(), |r| r.reserved))
            .sum()
    }

    /// Starts waiting requests, first come first served, while a slot and
    /// the cells they reserve are free.
    fn admit(&mut self) {
        while let Some((job, _)) = self.waiting.front() {
            let prompt = &job.request.prompt;
            let need = prompt.len() + job.request.options.max_tokens() as usize;
            // The idle slot sharing the longest prefix with the prompt, else
            // the least recently used one.
            let Some(pick) = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.run.is_none())
                .map(|(i, s)| (i, common_prefix(&s.cached, prompt)))
                .max_by_key(|&(i, common)| (common, std::cmp::Reverse(self.slots[i].last_used)))
                .map(|(i, common)| (i, if self.config.prompt_cache { common } else { 0 }))
            else {
                return; // every slot is busy
            };
            let (slot, common) = pick;
            // One prompt token is always decoded, for its logits.
            let reuse = common.min(prompt.len() - 1);
            // Never into the middle of a medium's cells.
            #[cfg(feature = "mtmd")]
            let reuse = super::media::reuse_boundary(prompt, reuse);
            let mut taken = self.cells_taken() - self.slots[slot].cached.len();
            // In a shared cache, give back cached cells, least recently used
            // first, until it fits (a cache of its own always fits: submit
            // checked it).
            while self.config.kv_unified() && taken + need > self.n_ctx {
                let victim = self
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| *i != slot && s.run.is_none() && !s.cached.is_empty())
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(i, _)| i);
                match victim {
                    Some(v) => {
                        taken -= self.slots[v].cached.len();
                        self.forget(v);
                    }
                    None => return, // wait for running requests to finish
                }
            }
            let (job, sampler) = self.waiting.pop_front().expect("front exists");
            let sampler = match sampler {
                Ok(sampler) => sampler,
                Err(e) => {
                    // Checked at submit; should it fail now, the client hears why.
                    self.counters.queued.fetch_sub(1, Ordering::SeqCst);
                    let _ = job.events.send(Err(e));
                    continue;
                }
            };
            self.counters.active.fetch_add(1, Ordering::SeqCst);
            self.counters.queued.fetch_sub(1, Ordering::SeqCst);
            let seq = self.slots[slot].seq;
            let _ = self.ctx.seq_remove(Some(seq), reuse as u32..);
            self.slots[slot].cached.truncate(reuse);
            if reuse > 0 {
                self.counters
                    .prompt_cache_hits
                    .fetch_add(1, Ordering::Relaxed);
                self.counters
                    .prompt_cache_tokens
                    .fetch_add(reuse as u64, Ordering::Relaxed);
            }
            self.slots[slot].run = Some(Run::new(job, sampler));
        }
    }

    /// One token of every generating sequence with its draft, then prompt
    /// chunks, within `n_batch`. False when there is nothing to decode.
    fn build_batch(&mut self) -> bool {
        self.batch.clear();
        let mut room = self.n_batch;
        // Pending tokens first; drafts share the room they leave, within
        // the outputs the context keeps.
        let pending = self
            .slots
            .iter()
            .filter(|s| s.run.as_ref().is_some_and(|r| r.pending.is_some()))
            .count();
        let mut draft_room = room.saturating_sub(pending);
        let limits: Vec<usize> = self
            .slots
            .iter()
            .map(|slot| match &slot.run {
                Some(run) if run.pending.is_some() => {
                    let limit = run.draft_limit(draft_room.min(self.config.max_draft() as usize));
                    draft_room -= limit;
                    limit
                }
                _ => 0,
            })
            .collect();
        self.make_drafts(&limits);
        for slot in &mut self.slots {
            let Some(run) = slot.run.as_mut() else {
                continue;
            };
            run.output = None;
            let Some(token) = run.pending else {
                run.draft.clear();
                continue;
            };
            if room == 0 {
                run.draft.clear();
                continue;
            }
            let pos = slot.cached.len() as u32;
            if self.batch.add(token, pos, &[slot.seq], true).is_ok() {
                run.output = Some(self.batch.len() - 1);
                room -= 1;
                let mut added = 0;
                for (k, &t) in run.draft.iter().take(room).enumerate() {
                    if self
                        .batch
                        .add(t, pos + 1 + k as u32, &[slot.seq], true)
                        .is_err()
                    {
                        break;
                    }
                    added += 1;
                }
                run.draft.truncate(added);
                room -= added;
            } else {
                run.draft.clear();
            }
        }
        for slot in &mut self.slots {
            let Some(run) = slot.run.as_mut() else {
                continue;
            };
            let prompt = &run.job.request.prompt;
            let done = slot.cached.len();
            if run.pending.is_some() || done >= prompt.len() || room == 0 {
                continue;
            }
            let take = (prompt.len() - done).min(room);
            // Up to the next medium, which `feed_media` decodes.
            #[cfg(feature = "mtmd")]
            let take = prompt[done..done + take]
                .iter()
                .take_while(|t| !super::media::is_placeholder(**t))
                .count();
            for (k, &token) in prompt[done..done + take].iter().enumerate() {
                let last = done + k + 1 == prompt.len();
                let pos = (done + k) as u32;
                if self.batch.add(token, pos, &[slot.seq], last).is_ok() && last {
                    run.output = Some(self.batch.len() - 1);
                }
            }
            room -= take;
        }
        !self.batch.is_empty()
    }

    /// Each run's draft for this step, at most `limits[i]` tokens for slot
    /// `i`: from the text, or from the draft model for all that use it at
    /// once. Should the draft model fail, the runs that asked it hear why
    /// and end (as when a decode fails).
    fn make_drafts(&mut self, limits: &[usize]) {
        let mut by_model = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(run) = slot.run.as_mut() else {
                continue;
            };
            run.draft.clear();
            if limits[i] > 0 && !run.draft_from_text(limits[i]) {
                by_model.push(i);
            }
        }
        let Some(drafter) = self.drafter.as_mut() else {
            return;
        };
        if by_model.is_empty() {
            return;
        }
        let wants: Vec<Want<'_>> = by_model
            .iter()
            .filter_map(|&i| {
                let slot = &self.slots[i];
                slot.run.as_ref()?.want(slot.seq, limits[i])
            })
            .collect();
        let drafted = drafter.draft(&wants);
        drop(wants);
        match drafted {
            Ok(drafts) => {
                for (&i, draft) in by_model.iter().zip(drafts) {
                    if let Some(run) = self.slots[i].run.as_mut() {
                        run.draft = draft;
                    }
                }
            }
            Err(e) => {
                for &i in &by_model {
                    if let Some(run) = self.end_run(i) {
                        run.fail(e.clone());
                    }
                    self.forget(i);
                }
                self.publish();
            }
        }
    }

    /// Decodes the batch, then samples every sequence with logits in it.
    fn step(&mut self) {
        let n = self.batch.len() as u64;
        #[cfg(feature = "tracing")]
        let _span = tracing::debug_span!("llama_engine_step", tokens = n).entered();
        let decoded = self.ctx.decode_batch(&self.batch);
        self.counters.decodes.fetch_add(1, Ordering::Relaxed);
        self.counters.last_batch_tokens.store(n, Ordering::Relaxed);
        if let Err(e) = decoded {
            // Every sequence in the failed batch hears why and is dropped
            // (a reservation makes a full cache unexpected).
            for i in 0..self.slots.len() {
                if self.slots[i].run.is_some() && self.in_batch(self.slots[i].seq) {
                    if let Some(run) = self.end_run(i) {
                        run.fail(e.clone());
                    }
                    self.forget(i);
                }
            }
            self.publish();
            return;
        }
        self.counters.tokens_decoded.fetch_add(n, Ordering::Relaxed);
        // The batch's tokens are now in the cells of their sequences.
        for slot in &mut self.slots {
            let Some(run) = slot.run.as_mut() else {
                continue;
            };
            if let Some(token) = run.pending.take() {
                slot.cached.push(token);
                slot.cached.extend_from_slice(&run.draft);
            } else {
                let prompt = &run.job.request.prompt;
                let fed = self
                    .batch
                    .seq_ids()
                    .filter(|&s| s == slot.seq as i32)
                    .count();
                let done = slot.cached.len();
                slot.cached.extend_from_slice(&prompt[done..done + fed]);
                if slot.cached.len() == prompt.len() {
                    run.prompt_read();
                }
            }
        }
        for i in 0..self.slots.len() {
            let Some(run) = self.slots[i].run.as_mut() else {
                continue;
            };
            let Some(at) = run.output.take() else {
                continue;
            };
            let (outcome, rejected) = run.sample_checking(&mut self.ctx, at);
            if rejected > 0 {
                // The cells of the drafted tokens the model did not take.
                let slot = &mut self.slots[i];
                let keep = slot.cached.len() - rejected;
                let _ = self.ctx.seq_remove(Some(slot.seq), keep as u32..);
                slot.cached.truncate(keep);
            }
            if let Outcome::Finished(last) = outcome {
                let run = self.end_run(i);
                if !self.config.prompt_cache {
                    self.forget(i);
                }
                self.publish();
                if let Some(run) = run {
                    let _ = run.job.events.send(last);
                }
            }
        }
        self.publish();
    }

    fn in_batch(&self, seq: u32) -> bool {
        self.batch.seq_ids().any(|s| s == seq as i32)
    }

    pub(super) fn publish(&self) {
        self.counters.kv_cells_used.store(
            self.slots.iter().map(|s| s.cached.len() as u64).sum(),
            Ordering::Relaxed,
        );
    }
}

fn common_prefix(a: &[crate::Token], b: &[crate::Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
