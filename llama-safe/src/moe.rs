//! Which tensors are Mixture-of-Experts expert weights: the same patterns as
//! llama.cpp's `--cpu-moe` and `--n-cpu-moe N` (`common/common.h`,
//! `common/arg.cpp`, `common/fit.cpp` of the pinned source).
//!
//! Expert tensors are `blk.N.ffn_{up,down,gate,gate_up}_{exps,chexps}` with
//! their `.weight` and `.bias`. The router (`ffn_gate_inp`), shared experts
//! (`*_shexp`), attention and norms never match: they are small and used by
//! every token, so they belong on the GPU.

/// Every expert tensor of every layer (llama.cpp's `LLM_FFN_EXPS_REGEX`).
pub const ALL_EXPERTS_PATTERN: &str = r"\.ffn_(up|down|gate_up|gate)_(ch|)exps";

/// The expert tensors of layer (block) `layer` only.
///
/// ```
/// assert_eq!(llama_safe::moe::layer_pattern(3), r"blk\.3\.ffn_(up|down|gate_up|gate)_(ch|)exps");
/// ```
pub fn layer_pattern(layer: u32) -> String {
    format!(r"blk\.{layer}{ALL_EXPERTS_PATTERN}")
}

/// Every dense feed-forward weight of every layer (llama.cpp's
/// `LLM_FFN_DENSE_REGEX`): `ffn_up`, `ffn_down`, `ffn_gate` followed by a
/// dot, so never `*_exps` or `*_shexp`.
pub const DENSE_FFN_PATTERN: &str = r"\.ffn_(up|down|gate)\.";

/// The patterns of `--n-cpu-ffn n` for a model of `block_count` layers:
/// one per block `0..n` (`blk\.i\.ffn_(up|down|gate)\.`), or the one
/// [`DENSE_FFN_PATTERN`] when `n` covers every block.
///
/// ```
/// use llama_safe::moe::dense_ffn_patterns;
/// assert_eq!(dense_ffn_patterns(1, 4), [r"blk\.0\.ffn_(up|down|gate)\."]);
/// assert_eq!(dense_ffn_patterns(9, 4), [r"\.ffn_(up|down|gate)\."]);
/// assert!(dense_ffn_patterns(0, 4).is_empty());
/// ```
pub fn dense_ffn_patterns(n: u32, block_count: u32) -> Vec<String> {
    match n {
        0 => Vec::new(),
        n if n >= block_count => vec![DENSE_FFN_PATTERN.to_string()],
        n => (0..n)
            .map(|layer| format!(r"blk\.{layer}{DENSE_FFN_PATTERN}"))
            .collect(),
    }
}

/// Where the MoE expert tensors go; one mode at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MoeMode {
    /// No MoE override: experts follow `n_gpu_layers` like everything else.
    #[default]
    None,
    /// All expert tensors stay in host memory (`--cpu-moe`).
    All,
    /// The expert tensors of blocks `0..n` stay in host memory
    /// (`--n-cpu-moe n`).
    FirstLayers(u32),
}

impl MoeMode {
    /// The patterns this mode adds for a model with `block_count` layers:
    /// one pattern for [`MoeMode::All`] (and for `FirstLayers(n)` with
    /// `n >= block_count`), one per layer otherwise.
    pub fn patterns(self, block_count: u32) -> Vec<String> {
        match self {
            MoeMode::None | MoeMode::FirstLayers(0) => Vec::new(),
            MoeMode::All => vec![ALL_EXPERTS_PATTERN.to_string()],
            MoeMode::FirstLayers(n) if n >= block_count => vec![ALL_EXPERTS_PATTERN.to_string()],
            MoeMode::FirstLayers(n) => (0..n).map(layer_pattern).collect(),
        }
    }
}

/// The layer (block) index of a tensor name like `blk.12.ffn_up_exps.weight`.
pub fn tensor_layer(name: &str) -> Option<u32> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_layers_beyond_the_model_mean_all() {
        assert_eq!(
            MoeMode::FirstLayers(99).patterns(8),
            vec![ALL_EXPERTS_PATTERN]
        );
        assert_eq!(MoeMode::FirstLayers(2).patterns(8).len(), 2);
        assert!(MoeMode::FirstLayers(0).patterns(8).is_empty());
        assert_eq!(tensor_layer("blk.12.ffn_up_exps.weight"), Some(12));
        assert_eq!(tensor_layer("token_embd.weight"), None);
    }
}
