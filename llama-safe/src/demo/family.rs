//! The MoE families the synthetic writer reproduces, scaled down: each with
//! the architecture name, metadata keys, tensor names and shapes the pinned
//! llama.cpp's loader for it requires (`src/models/<arch>.cpp`,
//! `load_arch_hparams` and `load_arch_tensors`), and the demo model's
//! vocabulary and next-word table, so each continues [`DEMO_PROMPT`] the
//! same way.
//!
//! [`DEMO_PROMPT`]: super::DEMO_PROMPT

use super::{DemoModel, Rng, SyntheticMoe, VERSION};
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufWriter, MetaValue};
use std::path::{Path, PathBuf};

/// A family of MoE models, by the tensor layout llama.cpp loads for it.
///
/// ```
/// use llama_safe::demo::Family;
/// // DeepSeek-MoE's first block is dense: no expert tensors to move there.
/// assert!(Family::DeepseekMoe.expert_tensors(0).is_empty());
/// assert_eq!(
///     Family::GptOss.expert_tensors(1),
///     ["blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight", "blk.1.ffn_down_exps.weight",
///      "blk.1.ffn_gate_exps.bias", "blk.1.ffn_up_exps.bias", "blk.1.ffn_down_exps.bias"],
/// );
/// let path = Family::Qwen3Moe.cached()?;
/// assert!(path.exists());
/// # Ok::<(), llama_safe::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family {
    /// Mixtral: architecture `llama` with `ffn_gate_inp` and
    /// `ffn_{gate,up,down}_exps` (the demo model's layout).
    Mixtral,
    /// Qwen3-30B-A3B and relatives (`qwen3moe`): Q/K norms,
    /// `expert_feed_forward_length`.
    Qwen3Moe,
    /// Phi-3.5-MoE (`phimoe`): biases on the norms, the attention output and
    /// the output head.
    PhiMoe,
    /// DeepSeek-MoE 16B (`deepseek`): a leading dense block, then experts
    /// plus a shared expert (`ffn_{gate,up,down}_shexp`) per block.
    DeepseekMoe,
    /// GPT-OSS 20B/120B (`gpt-oss`): attention sinks, sliding-window
    /// attention on every other block, biases on the router and the experts,
    /// a post-attention norm instead of an FFN norm.
    GptOss,
    /// Qwen3-VL-30B-A3B's language model (`qwen3vlmoe`): Qwen3-MoE's
    /// tensors with interleaved M-RoPE (`rope.dimension_sections`), so
    /// images take one position per row or column, not per token.
    Qwen3VlMoe,
}

/// The expert weight tensors of a block, as `with_cpu_moe_all` names them.
pub(super) const EXPERT_TENSORS: [&str; 3] = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"];

/// What a block's feed-forward is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ffn {
    /// `ffn_{gate,up,down}`.
    Dense,
    /// `ffn_gate_inp` and the expert tensors.
    Experts,
}

impl Family {
    /// Every family, in the order above.
    pub const ALL: [Family; 6] = [
        Family::Mixtral,
        Family::Qwen3Moe,
        Family::PhiMoe,
        Family::DeepseekMoe,
        Family::GptOss,
        Family::Qwen3VlMoe,
    ];

    /// `general.architecture` (llama.cpp's name for the architecture).
    pub fn arch(self) -> &'static str {
        match self {
            Family::Mixtral => "llama",
            Family::Qwen3Moe => "qwen3moe",
            Family::PhiMoe => "phimoe",
            Family::DeepseekMoe => "deepseek",
            Family::GptOss => "gpt-oss",
            Family::Qwen3VlMoe => "qwen3vlmoe",
        }
    }

    /// A human name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Family::Mixtral => "Mixtral",
            Family::Qwen3Moe => "Qwen3-MoE",
            Family::PhiMoe => "Phi-3.5-MoE",
            Family::DeepseekMoe => "DeepSeek-MoE",
            Family::GptOss => "GPT-OSS",
            Family::Qwen3VlMoe => "Qwen3-VL-MoE",
        }
    }

    /// Blocks at the start with a dense FFN instead of experts
    /// (`leading_dense_block_count`).
    pub fn leading_dense_blocks(self) -> u32 {
        match self {
            Family::DeepseekMoe => 1,
            _ => 0,
        }
    }

    /// The tensors of block `layer` that `with_cpu_moe_all` moves: the
    /// expert weights, and their biases where the family has them; none in
    /// a leading dense block. The router (`ffn_gate_inp`), shared experts,
    /// attention and norms are never among them.
    pub fn expert_tensors(self, layer: u32) -> Vec<String> {
        if layer < self.leading_dense_blocks() {
            return Vec::new();
        }
        let suffixes: &[&str] = match self {
            Family::GptOss => &["weight", "bias"],
            _ => &["weight"],
        };
        suffixes
            .iter()
            .flat_map(|suffix| {
                EXPERT_TENSORS
                    .iter()
                    .map(move |name| format!("blk.{layer}.{name}.{suffix}"))
            })
            .collect()
    }

    /// Writes a model of this family with `shape` to `path`.
    pub fn write(self, shape: &SyntheticMoe, path: &Path) -> Result<()> {
        shape.check()?;
        if shape.n_layer <= self.leading_dense_blocks() {
            return Err(Error::InvalidParameter {
                name: "SyntheticMoe",
                reason: format!(
                    "{} needs more than {} blocks (its leading dense ones)",
                    self.name(),
                    self.leading_dense_blocks()
                )
                .into(),
            });
        }
        super::build_family(DemoModel::Moe, self, shape)?.write_to(path)
    }

    /// This family at the demo model's shape, in the cache folder (see
    /// [`DemoModel::cached`](super::DemoModel::cached)), written on first use.
    pub fn cached(self) -> Result<PathBuf> {
        let file = format!("family-{}-v{VERSION}.gguf", self.arch());
        super::cached_file(&file, |path| self.write(&SyntheticMoe::DEMO, path))
    }

    /// The family's own metadata, beyond the keys every family has.
    pub(super) fn metadata(self, w: &mut GgufWriter, shape: &SyntheticMoe) {
        let arch = self.arch();
        let key = |name: &str| format!("{arch}.{name}");
        match self {
            Family::Mixtral | Family::PhiMoe => {}
            Family::Qwen3Moe => {
                w.meta(
                    &key("expert_feed_forward_length"),
                    MetaValue::U32(shape.n_ff),
                );
            }
            Family::Qwen3VlMoe => {
                // Half the head's dimensions, split among time, height and
                // width as Qwen3-VL splits its 64 (24, 20, 20).
                let half = (shape.n_embd / shape.n_head / 2) as i32;
                let (h, w_) = (half / 4, half / 4);
                w.meta(
                    &key("expert_feed_forward_length"),
                    MetaValue::U32(shape.n_ff),
                )
                .meta(
                    &key("rope.dimension_sections"),
                    MetaValue::I32Array(vec![half - h - w_, h, w_, 0]),
                );
            }
            Family::DeepseekMoe => {
                w.meta(
                    &key("expert_feed_forward_length"),
                    MetaValue::U32(shape.n_ff),
                )
                .meta(
                    &key("leading_dense_block_count"),
                    MetaValue::U32(self.leading_dense_blocks()),
                )
                .meta(&key("expert_shared_count"), MetaValue::U32(1))
                .meta(&key("expert_weights_scale"), MetaValue::F32(1.0));
            }
            Family::GptOss => {
                w.meta(
                    &key("expert_feed_forward_length"),
                    MetaValue::U32(shape.n_ff),
                )
                .meta(&key("attention.sliding_window"), MetaValue::U32(128));
            }
        }
    }

    /// Tensors of the output head beyond `output_norm.weight` and
    /// `output.weight`.
    pub(super) fn output_extras(
        self,
        t: &mut Tensors<'_>,
        n_embd: u64,
        n_vocab: u64,
    ) -> Result<()> {
        if self == Family::PhiMoe {
            t.zeros("output_norm.bias", n_embd)?;
            t.zeros("output.bias", n_vocab)?;
        }
        Ok(())
    }

    /// Attention tensors of block `layer` beyond the norm and Q, K, V, O.
    pub(super) fn attention_extras(
        self,
        t: &mut Tensors<'_>,
        layer: u64,
        shape: &SyntheticMoe,
    ) -> Result<()> {
        let name = |n: &str, suffix: &str| format!("blk.{layer}.{n}.{suffix}");
        let n_embd = u64::from(shape.n_embd);
        let head = u64::from(shape.n_embd / shape.n_head);
        match self {
            Family::Mixtral | Family::DeepseekMoe => {}
            Family::Qwen3Moe | Family::Qwen3VlMoe => {
                t.ones(&name("attn_q_norm", "weight"), head)?;
                t.ones(&name("attn_k_norm", "weight"), head)?;
            }
            Family::PhiMoe => {
                t.zeros(&name("attn_norm", "bias"), n_embd)?;
                t.zeros(&name("attn_output", "bias"), n_embd)?;
            }
            Family::GptOss => {
                t.ones(&name("post_attention_norm", "weight"), n_embd)?;
                t.zeros(&name("attn_sinks", "weight"), u64::from(shape.n_head))?;
                t.zeros(&name("attn_output", "bias"), n_embd)?;
            }
        }
        Ok(())
    }

    /// Whether blocks have `ffn_norm` (GPT-OSS normalises with
    /// `post_attention_norm` instead).
    pub(super) fn has_ffn_norm(self) -> bool {
        self != Family::GptOss
    }

    /// The feed-forward of block `layer`.
    pub(super) fn ffn(self, layer: u64) -> Ffn {
        if layer < u64::from(self.leading_dense_blocks()) {
            Ffn::Dense
        } else {
            Ffn::Experts
        }
    }

    /// Feed-forward tensors of block `layer` beyond the dense or expert ones.
    pub(super) fn ffn_extras(
        self,
        t: &mut Tensors<'_>,
        layer: u64,
        ffn: Ffn,
        shape: &SyntheticMoe,
    ) -> Result<()> {
        let name = |n: &str, suffix: &str| format!("blk.{layer}.{n}.{suffix}");
        let n_embd = u64::from(shape.n_embd);
        let n_ff = u64::from(shape.n_ff);
        let n_expert = u64::from(shape.n_expert);
        match (self, ffn) {
            (Family::PhiMoe, _) => t.zeros(&name("ffn_norm", "bias"), n_embd)?,
            (Family::DeepseekMoe, Ffn::Experts) => {
                // One shared expert, as wide as a routed one.
                t.random(
                    &name("ffn_gate_shexp", "weight"),
                    &[n_embd, n_ff],
                    GgmlType::Q8_0,
                    0.02,
                )?;
                t.random(
                    &name("ffn_up_shexp", "weight"),
                    &[n_embd, n_ff],
                    GgmlType::Q8_0,
                    0.02,
                )?;
                t.random(
                    &name("ffn_down_shexp", "weight"),
                    &[n_ff, n_embd],
                    GgmlType::Q8_0,
                    0.02,
                )?;
            }
            (Family::GptOss, Ffn::Experts) => {
                t.zeros(&name("ffn_gate_inp", "bias"), n_expert)?;
                t.random(
                    &name("ffn_gate_exps", "bias"),
                    &[n_ff, n_expert],
                    GgmlType::F32,
                    0.01,
                )?;
                t.random(
                    &name("ffn_up_exps", "bias"),
                    &[n_ff, n_expert],
                    GgmlType::F32,
                    0.01,
                )?;
                t.random(
                    &name("ffn_down_exps", "bias"),
                    &[n_embd, n_expert],
                    GgmlType::F32,
                    0.01,
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Adds tensors to a writer with the demo's generator.
pub(super) struct Tensors<'a> {
    pub(super) w: &'a mut GgufWriter,
    pub(super) rng: &'a mut Rng,
}

impl Tensors<'_> {
    /// An F32 vector of ones (a norm's weight).
    pub(super) fn ones(&mut self, name: &str, n: u64) -> Result<()> {
        self.w
            .tensor(name, &[n], GgmlType::F32, &vec![1.0; n as usize])?;
        Ok(())
    }

    /// An F32 vector of zeros (a bias).
    pub(super) fn zeros(&mut self, name: &str, n: u64) -> Result<()> {
        self.w
            .tensor(name, &[n], GgmlType::F32, &vec![0.0; n as usize])?;
        Ok(())
    }

    /// Small random weights of `dims`, stored as `ty`.
    pub(super) fn random(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        scale: f32,
    ) -> Result<()> {
        let n = dims.iter().product();
        self.w.tensor(name, dims, ty, &self.rng.fill(n, scale))?;
        Ok(())
    }
}
