//! The MoE patterns against real tensor names of current architectures,
//! matched with the same std::regex engine llama.cpp uses.

use llama_safe::moe::{layer_pattern, ALL_EXPERTS_PATTERN};
use llama_safe::TensorPattern;

/// Expert tensors: must move with `--cpu-moe`.
const EXPERTS: &[&str] = &[
    "blk.0.ffn_gate_exps.weight",
    "blk.0.ffn_up_exps.weight",
    "blk.0.ffn_down_exps.weight",
    "blk.47.ffn_gate_up_exps.weight", // fused gate+up (gpt-oss and others)
    "blk.3.ffn_down_chexps.weight",   // chunked experts
    "blk.3.ffn_gate_chexps.weight",
    "blk.5.ffn_up_exps.bias", // expert biases move with their weights
    "blk.5.ffn_gate_up_exps.bias",
    "blk.5.ffn_down_exps.bias",
    "blk.12.ffn_gate_exps.scale",
];

/// Never moved by the MoE patterns.
const NOT_EXPERTS: &[&str] = &[
    "blk.0.ffn_gate_inp.weight", // the router
    "blk.0.ffn_gate_inp.bias",
    "blk.0.ffn_gate_shexp.weight", // shared experts
    "blk.0.ffn_up_shexp.weight",
    "blk.0.ffn_down_shexp.weight",
    "blk.0.ffn_gate_inp_shexp.weight",
    "blk.0.ffn_gate.weight", // dense FFN
    "blk.0.ffn_up.weight",
    "blk.0.ffn_down.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.0.attn_v.weight",
    "blk.0.attn_output.weight",
    "blk.0.attn_qkv.weight",
    "blk.0.attn_norm.weight",
    "blk.0.ffn_norm.weight",
    "blk.0.exp_probs_b.bias",
    "token_embd.weight",
    "output.weight",
    "output_norm.weight",
];

#[test]
fn all_experts_pattern_matches_experts_only() {
    let p = TensorPattern::new(ALL_EXPERTS_PATTERN).unwrap();
    for name in EXPERTS {
        assert!(p.is_match(name), "--cpu-moe must move {name}");
    }
    for name in NOT_EXPERTS {
        assert!(!p.is_match(name), "--cpu-moe must not move {name}");
    }
}

#[test]
fn layer_pattern_matches_its_layer_only() {
    let one = TensorPattern::new(&layer_pattern(1)).unwrap();
    assert!(one.is_match("blk.1.ffn_up_exps.weight"));
    assert!(one.is_match("blk.1.ffn_gate_up_exps.weight"));
    assert!(one.is_match("blk.1.ffn_down_chexps.weight"));
    for name in [
        "blk.10.ffn_up_exps.weight",
        "blk.11.ffn_up_exps.weight",
        "blk.21.ffn_up_exps.weight",
        "blk.0.ffn_up_exps.weight",
        "blk.1.ffn_gate_inp.weight",
        "blk.1.ffn_up_shexp.weight",
        "blk.1.attn_q.weight",
    ] {
        assert!(!one.is_match(name), "layer 1 pattern must not match {name}");
    }
}

#[test]
fn patterns_equal_upstream_text() {
    // common/fit.cpp of the pinned source builds exactly these strings.
    assert_eq!(
        ALL_EXPERTS_PATTERN,
        r"\.ffn_(up|down|gate_up|gate)_(ch|)exps"
    );
    assert_eq!(
        layer_pattern(7),
        r"blk\.7\.ffn_(up|down|gate_up|gate)_(ch|)exps"
    );
}

#[test]
fn invalid_patterns_are_typed_errors_naming_the_pattern() {
    for bad in ["ffn_(up", "[z-a]", "*exps", "a{2,1}", ""] {
        match TensorPattern::new(bad) {
            Err(llama_safe::Error::InvalidPattern { pattern, .. }) => assert_eq!(pattern, bad),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}
