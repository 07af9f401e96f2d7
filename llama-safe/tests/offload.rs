//! MoE offload on the demo models: what moves, what the placement and the
//! plan say, and that the output does not change.

mod common;

use common::*;
use llama_safe::demo::{DemoModel, DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::*;
use std::collections::BTreeSet;

const EXPERT_KINDS: [&str; 3] = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"];

fn expected(layers: std::ops::Range<u32>) -> BTreeSet<String> {
    layers
        .flat_map(|l| {
            EXPERT_KINDS
                .iter()
                .map(move |k| format!("blk.{l}.{k}.weight"))
        })
        .collect()
}

fn moved(model: &LlamaModel) -> BTreeSet<String> {
    moved_names(model).into_iter().collect()
}

#[test]
fn cpu_moe_all_moves_exactly_the_expert_tensors_of_every_layer() {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(
        &backend,
        moe_path(),
        &LlamaModelParams::default().with_cpu_moe_all(),
    )
    .unwrap();
    assert_eq!(moved(&model), expected(0..DemoModel::Moe.block_count()));
    assert_eq!(
        model.placement().moved.len(),
        12,
        "no tensor reported twice"
    );
    for t in &model.placement().moved {
        assert!(t.buffer_type.starts_with("CPU"), "{t:?}");
        assert_eq!(t.ggml_type, "q8_0");
        assert_eq!(t.bytes, 64 * 64 * 4 / 32 * 34);
    }
}

#[test]
fn n_cpu_moe_moves_exactly_layers_below_n() {
    let backend = LlamaBackend::init();
    for k in 0..=5 {
        let params = LlamaModelParams::default().with_n_cpu_moe(k);
        let model = LlamaModel::load(&backend, moe_path(), &params).unwrap();
        assert_eq!(moved(&model), expected(0..k.min(4)), "n_cpu_moe({k})");
    }
}

#[test]
fn dense_model_moves_nothing() {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(
        &backend,
        dense_path(),
        &LlamaModelParams::default().with_cpu_moe_all(),
    )
    .unwrap();
    assert!(!model.is_moe());
    assert!(model.placement().moved.is_empty());
    assert_eq!(model.n_expert(), 0);
}

#[test]
fn placement_totals_add_up_to_the_model_size() {
    let backend = LlamaBackend::init();
    for params in [
        LlamaModelParams::default(),
        LlamaModelParams::default().with_cpu_moe_all(),
    ] {
        let model = LlamaModel::load(&backend, moe_path(), &params).unwrap();
        let p = model.placement();
        assert!(!p.buffers.is_empty(), "no weight buffer found in the model");
        // Buffers are padded for alignment.
        let tolerance = p.buffers.len() as u64 * 4096;
        let (total, size) = (p.total_bytes(), model.size_bytes());
        assert!(
            total.abs_diff(size) <= tolerance,
            "buffers {total} vs model size {size}"
        );
    }
}

#[test]
fn placement_lists_each_moved_tensor_once() {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(
        &backend,
        moe_path(),
        &LlamaModelParams::default().with_n_cpu_moe(1),
    )
    .unwrap();
    assert_eq!(model.placement().moved.len(), 3, "{}", model.placement());
}

#[test]
fn greedy_output_is_the_known_sentence_with_and_without_offload() {
    let backend = LlamaBackend::init();
    for params in [
        LlamaModelParams::default(),
        LlamaModelParams::default().with_cpu_moe_all(),
        LlamaModelParams::default().with_n_cpu_moe(2),
        LlamaModelParams::default()
            .with_cpu_moe_all()
            .with_load_mode(LoadMode::Read),
    ] {
        let model = LlamaModel::load(&backend, moe_path(), &params).unwrap();
        assert_eq!(
            greedy_text(&model, DEMO_PROMPT),
            DEMO_CONTINUATION,
            "{params:?}"
        );
    }
    let dense = LlamaModel::load(&backend, dense_path(), &LlamaModelParams::default()).unwrap();
    assert_eq!(greedy_text(&dense, DEMO_PROMPT), DEMO_CONTINUATION);
}

#[test]
fn plan_predicts_exactly_what_the_load_reports() {
    let backend = LlamaBackend::init();
    let cases = [
        LlamaModelParams::default(),
        LlamaModelParams::default().with_cpu_moe_all(),
        LlamaModelParams::default().with_n_cpu_moe(3),
        LlamaModelParams::default()
            .with_tensor_override(r"blk\.0\.attn_(q|k)", OverrideTarget::Cpu)
            .with_n_cpu_moe(1),
    ];
    for params in cases {
        let plan = params.plan(moe_path()).unwrap();
        let model = LlamaModel::load(&backend, moe_path(), &params).unwrap();
        let (planned, loaded) = (planned_moves(&plan), loaded_moves(&model));
        assert_eq!(planned, loaded, "{params:?}");
        assert_eq!(plan.moved_bytes(), model.placement().moved_bytes());
        assert_eq!(plan.total_bytes, model.size_bytes());
    }
    let plan = LlamaModelParams::default()
        .with_n_cpu_moe(3)
        .plan(moe_path())
        .unwrap();
    assert_eq!(plan.expert_layers, vec![0, 1, 2, 3]);
    assert_eq!(plan.expert_layers_moved(), 3);
}

#[test]
fn explicit_overrides_come_first_and_last_moe_call_wins() {
    // An explicit pattern for the layer-0 experts wins over the MoE pattern
    // because llama.cpp applies the first match.
    let params = LlamaModelParams::default()
        .with_n_cpu_moe(4)
        .with_cpu_moe_all()
        .with_tensor_override(r"blk\.0\.ffn_up_exps", OverrideTarget::Cpu);
    assert_eq!(params.moe_mode(), MoeMode::All);
    let effective = params.effective_overrides(4);
    assert_eq!(
        effective.len(),
        2,
        "one explicit, one MoE pattern; no duplicates"
    );
    assert_eq!(effective[0].0.as_str(), r"blk\.0\.ffn_up_exps");
    let plan = params.plan(moe_path()).unwrap();
    let first = plan
        .moved
        .iter()
        .find(|t| t.name == "blk.0.ffn_up_exps.weight")
        .unwrap();
    assert_eq!(first.pattern, r"blk\.0\.ffn_up_exps");
    assert_eq!(
        LlamaModelParams::default()
            .with_cpu_moe_all()
            .with_n_cpu_moe(2)
            .moe_mode(),
        MoeMode::FirstLayers(2)
    );
    assert_eq!(
        LlamaModelParams::default()
            .with_cpu_moe_all()
            .with_n_cpu_moe(0)
            .moe_mode(),
        MoeMode::None
    );
}

#[test]
fn fit_counts_weights_kv_and_compute_and_a_cpu_build_has_no_device_bytes() {
    // Without an accelerator everything is host memory: n = 0 fits any
    // budget, and the host side counts the KV cache and compute buffers
    // besides the weights. (tests/rpc.rs checks fit against a real device.)
    let ctx = ContextParams::default().with_n_ctx(256);
    let params = LlamaModelParams::default();
    let fit = params.fit_n_cpu_moe(moe_path(), &ctx, 0, None).unwrap();
    assert_eq!((fit.n_cpu_moe, fit.device_bytes), (0, 0));
    let weights = params.plan(moe_path()).unwrap().total_bytes;
    let kv: u64 = fit.memory.iter().map(|u| u.context_bytes).sum();
    let compute: u64 = fit.memory.iter().map(|u| u.compute_bytes).sum();
    assert!(kv > 0 && compute > 0, "{:?}", fit.memory);
    assert_eq!(fit.host_bytes, weights + kv + compute);
    // The dry run predicts what a real load and context allocate (the real
    // load's weights are in a `CPU_Mapped` buffer, the dry run's in `CPU`).
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, moe_path(), &params).unwrap();
    let real = LlamaContext::new(&model, &ctx)
        .unwrap()
        .memory_breakdown()
        .unwrap();
    let sums = |uses: &[context::MemoryUse]| {
        (
            uses.iter().map(|u| u.model_bytes).sum::<u64>(),
            uses.iter().map(|u| u.context_bytes).sum::<u64>(),
            uses.iter().map(|u| u.compute_bytes).sum::<u64>(),
            context::host_bytes(uses),
        )
    };
    assert_eq!(sums(&real), sums(&fit.memory));
}
