//! Shared helpers for the integration tests (included with `mod common;`).
#![allow(dead_code)]

use llama_safe::demo::DemoModel;
use llama_safe::*;
use std::path::PathBuf;

/// The demo MoE model, written once into the cache.
pub fn moe_path() -> PathBuf {
    DemoModel::Moe.cached().expect("write demo model")
}

/// The demo MoE model, loaded with default params.
pub fn load_moe() -> LlamaModel {
    LlamaModel::load(
        &LlamaBackend::init(),
        moe_path(),
        &LlamaModelParams::default(),
    )
    .expect("load the demo model")
}

/// The dense demo model.
pub fn dense_path() -> PathBuf {
    DemoModel::Dense.cached().expect("write dense demo model")
}

/// A fresh scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llama-safe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Greedy generation of the demo prompt; returns the text.
pub fn greedy_text(model: &LlamaModel, prompt: &str) -> String {
    let mut ctx = LlamaContext::new(
        model,
        &ContextParams::default().with_n_ctx(128).with_threads(1),
    )
    .unwrap();
    greedy_in(&mut ctx, prompt, 32)
}

/// Greedy generation of `prompt` in `ctx`, at most `max_tokens`; the text.
pub fn greedy_in(ctx: &mut LlamaContext, prompt: &str, max_tokens: u32) -> String {
    let options = GenerateOptions::default()
        .with_sampling(SamplingOptions::greedy())
        .with_max_tokens(max_tokens);
    let mut text = String::new();
    for event in ctx.generate(prompt, &options).unwrap() {
        if let Event::Piece(p) = event.unwrap() {
            text.push_str(&p.text);
        }
    }
    text
}

/// Names of the tensors the load's overrides moved, in load order.
pub fn moved_names(model: &LlamaModel) -> Vec<String> {
    model
        .placement()
        .moved
        .iter()
        .map(|t| t.name.clone())
        .collect()
}

/// The tensors a plan says its overrides move, with their bytes.
pub fn planned_moves(plan: &Plan) -> std::collections::BTreeSet<(String, u64)> {
    plan.moved
        .iter()
        .map(|t| (t.name.clone(), t.bytes))
        .collect()
}

/// The tensors a load's overrides moved, with their bytes.
pub fn loaded_moves(model: &LlamaModel) -> std::collections::BTreeSet<(String, u64)> {
    model
        .placement()
        .moved
        .iter()
        .map(|t| (t.name.clone(), t.bytes))
        .collect()
}
