//! The params own everything llama.cpp points to: strings dropped before
//! the load, clones, moves across threads and repeated loads are all fine.
//! `.ci/run` also runs this binary under valgrind.

mod common;

use common::*;
use llama_safe::demo::{DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::*;

const fn assert_send<T: Send>() {}
const fn assert_sync<T: Sync>() {}
const _: () = {
    assert_send::<LlamaModelParams>();
    assert_sync::<LlamaModelParams>();
    assert_send::<LlamaModel>();
    assert_sync::<LlamaModel>();
    assert_send::<LlamaBackend>();
    assert_send::<LlamaContext>();
    assert_send::<Sampler>();
    assert_send::<gguf::GgufFile>();
};

#[test]
fn strings_dropped_before_the_load() {
    let params = {
        let pattern = String::from(r"blk\.1\.ffn_(up|down|gate)_exps");
        let key = String::from("llama.expert_used_count");
        let params = LlamaModelParams::default()
            .with_tensor_override(&pattern, OverrideTarget::Cpu)
            .with_kv_override(&key, KvValue::Int(2));
        drop(pattern);
        drop(key);
        params
    };
    // Scribble over freed heap memory to make a dangling pointer visible.
    let noise: Vec<String> = (0..1000)
        .map(|i| format!("noise-{i}-{}", "x".repeat(40)))
        .collect();
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, moe_path(), &params).unwrap();
    drop(noise);
    assert_eq!(model.placement().moved.len(), 3);
    assert_eq!(model.n_expert_used(), 2);
}

#[test]
fn clone_then_drop_the_original() {
    let original = LlamaModelParams::default().with_n_cpu_moe(2);
    let copy = original.clone();
    drop(original);
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, moe_path(), &copy).unwrap();
    assert_eq!(model.placement().moved.len(), 6);
}

#[test]
fn params_and_model_move_across_threads() {
    let params = LlamaModelParams::default().with_cpu_moe_all();
    let model = std::thread::spawn(move || {
        let backend = LlamaBackend::init();
        LlamaModel::load(&backend, moe_path(), &params).unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(model.placement().moved.len(), 12);
    let text = std::thread::spawn(move || greedy_text(&model, DEMO_PROMPT))
        .join()
        .unwrap();
    assert_eq!(text, DEMO_CONTINUATION);
}

#[test]
fn one_params_value_loads_twice() {
    let params = LlamaModelParams::default().with_n_cpu_moe(1);
    let backend = LlamaBackend::init();
    let a = LlamaModel::load(&backend, moe_path(), &params).unwrap();
    let b = LlamaModel::load(&backend, moe_path(), &params).unwrap();
    assert_eq!(moved_names(&a), moved_names(&b));
    assert_eq!(a.placement().moved.len(), 3);
}

#[test]
fn debug_shows_the_patterns() {
    let params = LlamaModelParams::default()
        .with_tensor_override(r"attn_q", OverrideTarget::Device("CPU".into()))
        .with_cpu_moe_all();
    let text = format!("{params:?}");
    assert!(text.contains("attn_q => CPU"), "{text}");
    assert!(text.contains("All"), "{text}");
}

#[test]
fn model_outlives_the_callers_backend_handle() {
    let model = {
        let backend = LlamaBackend::init();
        LlamaModel::load(&backend, moe_path(), &LlamaModelParams::default()).unwrap()
    };
    assert_eq!(greedy_text(&model, DEMO_PROMPT), DEMO_CONTINUATION);
}

#[test]
fn one_file_written_by_many_threads_at_once_is_whole() {
    // A fresh cache: every test thread may write the demo model at once.
    let dir = scratch("concurrent-write");
    let path = dir.join("demo.gguf");
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| llama_safe::demo::DemoModel::Moe.write(&path).unwrap());
        }
    });
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, &path, &LlamaModelParams::default()).unwrap();
    assert_eq!(greedy_text(&model, DEMO_PROMPT), DEMO_CONTINUATION);
    let leftovers = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(leftovers, 1, "temporary files left behind");
}

/// Contexts, samplers and adapters hold a handle of their model: the
/// caller's handle can go first, and they still generate (valgrind runs
/// this binary in CI: a freed model would show).
#[test]
fn context_and_sampler_outlive_the_callers_model_handle() {
    let backend = LlamaBackend::init();
    let (mut ctx, mut sampler) = {
        let model = LlamaModel::load(&backend, moe_path(), &LlamaModelParams::default()).unwrap();
        let ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(128)).unwrap();
        let sampler = Sampler::new(&model, &SamplingOptions::greedy()).unwrap();
        (ctx, sampler)
    };
    let model = ctx.model().clone();
    let prompt = model.tokenize(DEMO_PROMPT, Tokenize::PROMPT).unwrap();
    drop(model);
    ctx.decode(&prompt).unwrap();
    let token = sampler.sample(&mut ctx).unwrap();
    let piece = ctx.model().detokenize(&[token]).unwrap();
    assert!(DEMO_CONTINUATION.starts_with(&piece), "{piece:?}");
    // A context moved into another thread, used there.
    let text = std::thread::spawn(move || {
        drop(sampler);
        ctx.clear();
        greedy_in(&mut ctx, DEMO_PROMPT, 32)
    })
    .join()
    .unwrap();
    assert!(text.starts_with(DEMO_CONTINUATION), "{text:?}");
}
