//! Dry runs: which tensors the overrides would move (from the GGUF tensor
//! table), what a load and a context would allocate where (llama.cpp's
//! loader and context with `no_alloc`), and the smallest `n_cpu_moe` whose
//! weights, KV cache and compute buffers fit an accelerator's memory.

use crate::context::params::ContextParams;
use crate::context::{device_bytes, host_bytes, MemoryUse};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::model_params::LlamaModelParams;
use crate::moe;
use crate::tensor_override::{OverrideTarget, TensorPattern};
use std::collections::BTreeMap;
use std::path::Path;

/// A tensor an override would move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTensor {
    /// Tensor name.
    pub name: String,
    /// Exact bytes.
    pub bytes: u64,
    /// ggml type name.
    pub ggml_type: String,
    /// Where the first matching override sends it.
    pub target: OverrideTarget,
    /// The pattern that matched.
    pub pattern: String,
}

/// What a set of params would do to one model file, without loading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Layers (blocks) of the model.
    pub block_count: u32,
    /// Blocks that have expert tensors.
    pub expert_layers: Vec<u32>,
    /// Every tensor an override would move, in file order.
    pub moved: Vec<PlannedTensor>,
    /// Bytes of all weights.
    pub total_bytes: u64,
}

impl Plan {
    /// Bytes moved, per target (`CPU`, `CUDA0`, ...).
    pub fn moved_bytes_by_target(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for t in &self.moved {
            *out.entry(t.target.to_string()).or_insert(0) += t.bytes;
        }
        out
    }

    /// Bytes moved in all.
    pub fn moved_bytes(&self) -> u64 {
        self.moved.iter().map(|t| t.bytes).sum()
    }

    /// Bytes no override touches: they go where `n_gpu_layers` puts them.
    pub fn remaining_bytes(&self) -> u64 {
        self.total_bytes - self.moved_bytes()
    }

    /// How many expert layers have at least one tensor moved.
    pub fn expert_layers_moved(&self) -> usize {
        let moved: std::collections::BTreeSet<u32> = self
            .moved
            .iter()
            .filter_map(|t| moe::tensor_layer(&t.name))
            .collect();
        self.expert_layers
            .iter()
            .filter(|l| moved.contains(l))
            .count()
    }
}

impl LlamaModelParams {
    /// What these params would move for the model at `path`, from its GGUF
    /// tensor table alone (no weights are read), matching patterns with the
    /// same regex engine and first-match rule as llama.cpp.
    ///
    /// It is a real pre-check: the file goes through the same checks as
    /// [`LlamaModel::load`](crate::LlamaModel::load) and through llama.cpp's
    /// loader without allocating weights, so a file or params that `load`
    /// rejects give the same error here.
    ///
    /// ```no_run
    /// let plan = llama_safe::LlamaModelParams::default().with_n_cpu_moe(10).plan("model.gguf")?;
    /// println!("{} of {} expert layers on the CPU", plan.expert_layers_moved(), plan.expert_layers.len());
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn plan(&self, path: impl AsRef<Path>) -> Result<Plan> {
        let file = GgufFile::open(path)?;
        let _backend = crate::backend::LlamaBackend::init();
        crate::model::LlamaModel::dry_load(&file, self)?;
        let block_count = file.layer_count();
        let tensors = file.tensors();
        let experts = TensorPattern::new(moe::ALL_EXPERTS_PATTERN)?;
        let mut expert_layers: Vec<u32> = tensors
            .iter()
            .filter(|t| experts.is_match(&t.name))
            .filter_map(|t| moe::tensor_layer(&t.name))
            .collect();
        expert_layers.sort_unstable();
        expert_layers.dedup();
        let moved = self.planned_moves(&tensors, block_count);
        Ok(Plan {
            block_count,
            expert_layers,
            moved,
            total_bytes: tensors.iter().map(|t| t.bytes).sum(),
        })
    }

    /// The `tensors` (of a model of `block_count` layers) the overrides
    /// match, each with the first override that matches it (llama.cpp's
    /// rule), in file order. Each pattern is compiled once, for the
    /// tensors no earlier pattern matched.
    pub(crate) fn planned_moves(
        &self,
        tensors: &[TensorInfo],
        block_count: u32,
    ) -> Vec<PlannedTensor> {
        let overrides = self.effective_overrides(block_count);
        let mut first: Vec<Option<usize>> = vec![None; tensors.len()];
        for (k, (pattern, _)) in overrides.iter().enumerate() {
            let open: Vec<usize> = (0..tensors.len()).filter(|&i| first[i].is_none()).collect();
            if open.is_empty() {
                break;
            }
            let names: Vec<&str> = open.iter().map(|&i| tensors[i].name.as_str()).collect();
            for (&i, hit) in open.iter().zip(pattern.matches(&names)) {
                if hit {
                    first[i] = Some(k);
                }
            }
        }
        tensors
            .iter()
            .zip(first)
            .filter_map(|(t, k)| {
                let (pattern, target) = &overrides[k?];
                Some(PlannedTensor {
                    name: t.name.clone(),
                    bytes: t.bytes,
                    ggml_type: t.ggml_type.clone(),
                    target: target.clone(),
                    pattern: pattern.as_str().to_string(),
                })
            })
            .collect()
    }
}

/// The result of [`LlamaModelParams::fit_n_cpu_moe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoeFit {
    /// The smallest `n` for [`LlamaModelParams::with_n_cpu_moe`] that fits.
    pub n_cpu_moe: u32,
    /// Bytes on the accelerators with that `n`: weights, KV cache and
    /// compute buffers.
    pub device_bytes: u64,
    /// Bytes in host memory with that `n`, counted the same way.
    pub host_bytes: u64,
    /// The whole breakdown with that `n`, per buffer type.
    pub memory: Vec<MemoryUse>,
    /// Dry runs it took (each a `no_alloc` load and context).
    pub dry_runs: u32,
}

impl LlamaModelParams {
    /// What a load with these params and a context with `ctx` would
    /// allocate, per buffer type: weights, KV cache and compute buffers,
    /// from a dry run of llama.cpp's loader and context (`no_alloc`, as its
    /// `--fit` does; no weights are read). On devices this is exactly what a
    /// real load and [`LlamaContext::memory_breakdown`](crate::LlamaContext::memory_breakdown)
    /// report.
    ///
    /// ```
    /// use llama_safe::{context::host_bytes, demo::DemoModel, ContextParams, LlamaModelParams};
    /// let uses = LlamaModelParams::default()
    ///     .memory_plan(DemoModel::Moe.cached()?, &ContextParams::default().with_n_ctx(256))?;
    /// assert!(host_bytes(&uses) > 0);
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn memory_plan(
        &self,
        path: impl AsRef<Path>,
        ctx: &ContextParams,
    ) -> Result<Vec<MemoryUse>> {
        let file = GgufFile::open(path)?;
        let _backend = crate::backend::LlamaBackend::init();
        crate::model::LlamaModel::dry_memory(&file, self, ctx)
    }
}

impl LlamaModelParams {
    /// The smallest `n_cpu_moe` for which everything a load with these
    /// params and a context with `ctx` put on the accelerators (weights, KV cache
    /// and compute buffers, for that context size, batch and cache type)
    /// fits `device_budget_bytes`, with `device` naming one device
    /// (`CUDA0`, `RPC0`) or `None` for all of them.
    ///
    /// Each candidate is a dry run ([`LlamaModelParams::memory_plan`]); the
    /// device bytes fall as `n` grows, so a binary search needs about
    /// `log2(layers)` of them. These params' own MoE mode is replaced by
    /// `with_n_cpu_moe(n)`. More than the budget even with every expert on
    /// the host is [`Error::BudgetTooSmall`].
    ///
    /// ```
    /// use llama_safe::{demo::DemoModel, ContextParams, LlamaModelParams};
    /// let ctx = ContextParams::default().with_n_ctx(256);
    /// // A CPU-only build puts nothing on a device: n = 0 fits any budget.
    /// let fit = LlamaModelParams::default().fit_n_cpu_moe(DemoModel::Moe.cached()?, &ctx, 0, None)?;
    /// assert_eq!((fit.n_cpu_moe, fit.device_bytes), (0, 0));
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn fit_n_cpu_moe(
        &self,
        path: impl AsRef<Path>,
        ctx: &ContextParams,
        device_budget_bytes: u64,
        device: Option<&str>,
    ) -> Result<MoeFit> {
        let params = self;
        // One parse of the file for every dry run.
        let file = GgufFile::open(path)?;
        let _backend = crate::backend::LlamaBackend::init();
        let block_count = file.layer_count();
        let mut dry_runs = 0;
        let mut measure = |n: u32| -> Result<Vec<MemoryUse>> {
            dry_runs += 1;
            let params = params.clone().with_n_cpu_moe(n);
            crate::model::LlamaModel::dry_memory(&file, &params, ctx)
        };
        let fits = |uses: &Vec<MemoryUse>| device_bytes(uses, device) <= device_budget_bytes;
        let all_on_host = measure(block_count)?;
        if !fits(&all_on_host) {
            return Err(Error::BudgetTooSmall {
                needed: device_bytes(&all_on_host, device),
                budget: device_budget_bytes,
            });
        }
        // The smallest n that fits: the most layers (block_count - n) whose
        // experts stay on the device.
        let (keep, best) = crate::fit::largest_fitting(
            0,
            block_count,
            all_on_host,
            |keep| measure(block_count - keep),
            fits,
        )?;
        Ok(MoeFit {
            n_cpu_moe: block_count - keep,
            device_bytes: device_bytes(&best, device),
            host_bytes: host_bytes(&best),
            memory: best,
            dry_runs,
        })
    }
}
