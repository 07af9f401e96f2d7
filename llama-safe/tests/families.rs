//! MoE offload on every model family the synthetic writer reproduces
//! (Mixtral, Qwen3-MoE, Phi-3.5-MoE, DeepSeek-MoE, GPT-OSS): each loads and
//! generates; `with_cpu_moe_all()` and `with_n_cpu_moe(n)` move exactly the
//! expert tensors (weights and biases) of the blocks they name, never the
//! router, shared experts, attention or norms; the text does not change;
//! `plan()` predicts the load's placement. And the dense-FFN offload
//! (`with_n_cpu_ffn`, llama.cpp's `--n-cpu-ffn`).

mod common;

use common::*;
use llama_safe::demo::{DemoModel, Family, DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::gguf::GgufFile;
use llama_safe::*;
use std::collections::BTreeSet;

const BLOCKS: u32 = 4;

fn load(backend: &LlamaBackend, family: Family, params: &LlamaModelParams) -> LlamaModel {
    let path = family.cached().unwrap();
    LlamaModel::load(backend, &path, params)
        .unwrap_or_else(|e| panic!("{} does not load: {e}", family.name()))
}

fn expected(family: Family, blocks: std::ops::Range<u32>) -> BTreeSet<String> {
    blocks.flat_map(|b| family.expert_tensors(b)).collect()
}

fn moved(model: &LlamaModel) -> BTreeSet<String> {
    let names = moved_names(model);
    let set: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(set.len(), names.len(), "a tensor reported twice: {names:?}");
    set
}

#[test]
fn every_family_loads_as_its_architecture_and_continues_the_demo_prompt() {
    let backend = LlamaBackend::init();
    for family in Family::ALL {
        let model = load(&backend, family, &LlamaModelParams::default());
        assert_eq!(
            model.meta("general.architecture").as_deref(),
            Some(family.arch())
        );
        assert!(model.is_moe(), "{}", family.name());
        assert_eq!(model.n_expert(), 4, "{}", family.name());
        assert_eq!(
            greedy_text(&model, DEMO_PROMPT),
            DEMO_CONTINUATION,
            "{}",
            family.name()
        );
    }
}

#[test]
fn cpu_moe_all_moves_exactly_the_expert_weights_and_biases() {
    let backend = LlamaBackend::init();
    for family in Family::ALL {
        let model = load(
            &backend,
            family,
            &LlamaModelParams::default().with_cpu_moe_all(),
        );
        let moved = moved(&model);
        assert_eq!(moved, expected(family, 0..BLOCKS), "{}", family.name());
        for name in &moved {
            for never in ["ffn_gate_inp", "shexp", "attn", "norm", "sinks"] {
                assert!(!name.contains(never), "{}: {name} moved", family.name());
            }
        }
    }
}

#[test]
fn the_tensors_left_in_place_include_each_familys_own() {
    // What the families add must be in the files (so the test above would
    // see it moved if a pattern were too wide).
    let own: [(Family, &[&str]); 4] = [
        (Family::Qwen3Moe, &["blk.1.attn_q_norm.weight"]),
        (Family::PhiMoe, &["output.bias", "blk.1.ffn_norm.bias"]),
        (
            Family::DeepseekMoe,
            &["blk.0.ffn_gate.weight", "blk.1.ffn_gate_shexp.weight"],
        ),
        (
            Family::GptOss,
            &["blk.1.attn_sinks.weight", "blk.1.ffn_gate_inp.bias"],
        ),
    ];
    for (family, names) in own {
        let file = GgufFile::open(family.cached().unwrap()).unwrap();
        let tensors: BTreeSet<String> = file.tensors().iter().map(|t| t.name.clone()).collect();
        for name in names {
            assert!(tensors.contains(*name), "{}: no {name}", family.name());
        }
    }
}

#[test]
fn n_cpu_moe_counts_blocks_as_llama_cpp_does() {
    // `--n-cpu-moe N` names blocks 0..N whether or not they have experts:
    // for DeepSeek-MoE, n = 1 names only the dense block and moves nothing.
    let backend = LlamaBackend::init();
    for family in Family::ALL {
        for n in 0..=BLOCKS + 1 {
            let params = LlamaModelParams::default().with_n_cpu_moe(n);
            let model = load(&backend, family, &params);
            assert_eq!(
                moved(&model),
                expected(family, 0..n.min(BLOCKS)),
                "{} with_n_cpu_moe({n})",
                family.name()
            );
        }
    }
    assert!(expected(Family::DeepseekMoe, 0..1).is_empty());
}

#[test]
fn offload_does_not_change_the_text() {
    let backend = LlamaBackend::init();
    for family in Family::ALL {
        let base = greedy_text(
            &load(&backend, family, &LlamaModelParams::default()),
            DEMO_PROMPT,
        );
        for params in [
            LlamaModelParams::default().with_cpu_moe_all(),
            LlamaModelParams::default().with_n_cpu_moe(2),
        ] {
            let text = greedy_text(&load(&backend, family, &params), DEMO_PROMPT);
            assert_eq!(text, base, "{} {params:?}", family.name());
        }
    }
}

#[test]
fn plan_equals_the_load_placement() {
    let backend = LlamaBackend::init();
    for family in Family::ALL {
        let path = family.cached().unwrap();
        for params in [
            LlamaModelParams::default(),
            LlamaModelParams::default().with_cpu_moe_all(),
            LlamaModelParams::default().with_n_cpu_moe(2),
        ] {
            let plan = params.plan(&path).unwrap();
            let model = LlamaModel::load(&backend, &path, &params).unwrap();
            let (planned, loaded) = (planned_moves(&plan), loaded_moves(&model));
            assert_eq!(planned, loaded, "{} {params:?}", family.name());
            assert_eq!(plan.total_bytes, model.size_bytes(), "{}", family.name());
            let first_moe_block = family.leading_dense_blocks();
            assert_eq!(
                plan.expert_layers,
                (first_moe_block..BLOCKS).collect::<Vec<_>>(),
                "{}",
                family.name()
            );
        }
    }
}

#[test]
fn the_mixtral_family_is_the_demo_model() {
    let dir = scratch("families-mixtral");
    let (a, b) = (dir.join("family.gguf"), dir.join("demo.gguf"));
    Family::Mixtral
        .write(&llama_safe::demo::SyntheticMoe::DEMO, &a)
        .unwrap();
    DemoModel::Moe.write(&b).unwrap();
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_deepseek_model_needs_a_block_after_its_dense_one() {
    let shape = llama_safe::demo::SyntheticMoe {
        n_layer: 1,
        ..llama_safe::demo::SyntheticMoe::DEMO
    };
    let dir = scratch("families-deepseek-one-block");
    let err = Family::DeepseekMoe
        .write(&shape, &dir.join("x.gguf"))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

// --- Dense-FFN offload (llama.cpp's --n-cpu-ffn) -------------------------------

fn dense_ffn(blocks: std::ops::Range<u32>) -> BTreeSet<String> {
    blocks
        .flat_map(|b| ["ffn_gate", "ffn_up", "ffn_down"].map(|k| format!("blk.{b}.{k}.weight")))
        .collect()
}

#[test]
fn n_cpu_ffn_moves_exactly_the_dense_ffn_of_the_first_blocks() {
    let backend = LlamaBackend::init();
    let dense = llama_safe::demo::DemoModel::Dense.cached().unwrap();
    for n in 0..=BLOCKS + 1 {
        let params = LlamaModelParams::default().with_n_cpu_ffn(n);
        let model = LlamaModel::load(&backend, &dense, &params).unwrap();
        assert_eq!(moved(&model), dense_ffn(0..n.min(BLOCKS)), "n_cpu_ffn({n})");
        let plan = params.plan(&dense).unwrap();
        let planned: BTreeSet<String> = plan.moved.iter().map(|t| t.name.clone()).collect();
        assert_eq!(planned, moved(&model), "plan, n_cpu_ffn({n})");
        assert_eq!(greedy_text(&model, DEMO_PROMPT), DEMO_CONTINUATION);
    }
}

#[test]
fn n_cpu_ffn_and_moe_offload_move_disjoint_sets() {
    // DeepSeek-MoE: block 0 is dense, the rest have experts and a shared
    // expert; --n-cpu-ffn takes block 0's FFN, --cpu-moe the experts, and
    // neither the shared experts nor the routers.
    let backend = LlamaBackend::init();
    let family = Family::DeepseekMoe;
    let ffn_only = load(
        &backend,
        family,
        &LlamaModelParams::default().with_n_cpu_ffn(BLOCKS),
    );
    assert_eq!(moved(&ffn_only), dense_ffn(0..1));
    let both = LlamaModelParams::default()
        .with_n_cpu_ffn(BLOCKS)
        .with_cpu_moe_all();
    let model = load(&backend, family, &both);
    let mut expected = expected(family, 0..BLOCKS);
    expected.extend(dense_ffn(0..1));
    assert_eq!(moved(&model), expected);
    assert_eq!(greedy_text(&model, DEMO_PROMPT), DEMO_CONTINUATION);
}
