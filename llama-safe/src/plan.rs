//! Dry runs from GGUF metadata alone: which tensors the overrides would
//! move, and the smallest `n_cpu_moe` that fits a VRAM budget.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
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
        crate::backend::LlamaBackend::init();
        crate::model::LlamaModel::dry_load(&file, self)?;
        let block_count = u32::try_from(file.block_count().unwrap_or(0)).unwrap_or(u32::MAX);
        let overrides = self.effective_overrides(block_count);
        let tensors = file.tensors();
        let experts = TensorPattern::new(moe::ALL_EXPERTS_PATTERN)?;
        let mut expert_layers: Vec<u32> = tensors
            .iter()
            .filter(|t| experts.is_match(&t.name))
            .filter_map(|t| moe::tensor_layer(&t.name))
            .collect();
        expert_layers.sort_unstable();
        expert_layers.dedup();
        let moved = tensors
            .iter()
            .filter_map(|t| {
                let (pattern, target) = overrides.iter().find(|(p, _)| p.is_match(&t.name))?;
                Some(PlannedTensor {
                    name: t.name.clone(),
                    bytes: t.bytes,
                    ggml_type: t.ggml_type.clone(),
                    target: target.clone(),
                    pattern: pattern.as_str().to_string(),
                })
            })
            .collect();
        Ok(Plan {
            block_count,
            expert_layers,
            moved,
            total_bytes: tensors.iter().map(|t| t.bytes).sum(),
        })
    }
}

/// The result of [`MoeOffload::fit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoeFit {
    /// The smallest `n` for [`LlamaModelParams::with_n_cpu_moe`] that fits.
    pub n_cpu_moe: u32,
    /// Weight bytes left for the device with that `n`.
    pub device_bytes: u64,
    /// Expert bytes kept in host memory with that `n`.
    pub host_bytes: u64,
}

/// Sizing MoE offload against a VRAM budget.
#[derive(Debug, Clone, Copy)]
pub struct MoeOffload;

impl MoeOffload {
    /// The smallest `n_cpu_moe` whose remaining weights fit `vram_budget_bytes`,
    /// assuming every layer is on the GPU (`n_gpu_layers` at or above the
    /// layer count). Only weights count: leave room in the budget for the KV
    /// cache and compute buffers of your context size.
    pub fn fit(path: impl AsRef<Path>, vram_budget_bytes: u64) -> Result<MoeFit> {
        let plan = LlamaModelParams::default().with_cpu_moe_all().plan(path)?;
        let mut per_layer: BTreeMap<u32, u64> = BTreeMap::new();
        for t in &plan.moved {
            if let Some(layer) = moe::tensor_layer(&t.name) {
                *per_layer.entry(layer).or_insert(0) += t.bytes;
            }
        }
        let mut host = 0u64;
        for n in 0..=plan.block_count {
            if n > 0 {
                host += per_layer.get(&(n - 1)).copied().unwrap_or(0);
            }
            let device = plan.total_bytes - host;
            if device <= vram_budget_bytes {
                return Ok(MoeFit {
                    n_cpu_moe: n,
                    device_bytes: device,
                    host_bytes: host,
                });
            }
        }
        Err(Error::BudgetTooSmall {
            needed: plan.total_bytes - host,
            budget: vram_budget_bytes,
        })
    }
}
