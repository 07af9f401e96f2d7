//! A bounded pool of contexts over one model: at most `size` requests hold a
//! context, at most `queue` more wait for one, the rest are turned away.

use llama_safe::{ContextParams, LlamaContext, LlamaModel, Result};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Contexts for concurrent requests.
pub struct ContextPool {
    contexts: Mutex<Vec<LlamaContext<'static>>>,
    slots: Arc<Semaphore>,
    admission: Arc<Semaphore>,
    size: usize,
    capacity: usize,
    n_ctx: u32,
}

/// Every context and queue place is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl ContextPool {
    /// `size` contexts made with `params`, and room for `queue` waiting requests.
    pub fn new(
        model: &'static LlamaModel,
        params: &ContextParams,
        size: usize,
        queue: usize,
    ) -> Result<Arc<ContextPool>> {
        let size = size.max(1);
        let contexts = (0..size)
            .map(|_| LlamaContext::new(model, params))
            .collect::<Result<Vec<_>>>()?;
        let n_ctx = contexts[0].n_ctx();
        Ok(Arc::new(ContextPool {
            n_ctx,
            contexts: Mutex::new(contexts),
            slots: Arc::new(Semaphore::new(size)),
            admission: Arc::new(Semaphore::new(size + queue)),
            size,
            capacity: size + queue,
        }))
    }

    /// Waits for a context, unless `size + queue` requests are already in.
    pub async fn acquire(self: &Arc<Self>) -> std::result::Result<Lease, Busy> {
        let admission = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the pool never closes its semaphore");
        let ctx = self
            .contexts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .expect("a slot permit means a free context");
        Ok(Lease {
            ctx: Some(ctx),
            pool: self.clone(),
            _slot: slot,
            _admission: admission,
        })
    }

    /// Size of each context in tokens.
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// Contexts in the pool.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Contexts held by requests now.
    pub fn in_use(&self) -> usize {
        self.size
            - self
                .contexts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
    }

    /// Requests waiting for a context now.
    pub fn queued(&self) -> usize {
        let admitted = self.capacity - self.admission.available_permits();
        admitted.saturating_sub(self.size - self.slots.available_permits())
    }
}

/// A context held by one request; dropping it clears the context's KV cache
/// and gives it back, waking the next request in the queue.
pub struct Lease {
    ctx: Option<LlamaContext<'static>>,
    pool: Arc<ContextPool>,
    _slot: OwnedSemaphorePermit,
    _admission: OwnedSemaphorePermit,
}

impl Lease {
    /// The context.
    pub fn context(&mut self) -> &mut LlamaContext<'static> {
        self.ctx.as_mut().expect("present until drop")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(mut ctx) = self.ctx.take() {
            ctx.clear();
            self.pool
                .contexts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ctx);
        }
        // The permits drop after this, so the context is back before a
        // waiting request can take the slot.
    }
}
