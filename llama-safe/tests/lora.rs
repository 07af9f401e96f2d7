//! LoRA adapters: the demo adapter changes the demo model's sentence in a
//! known way, and taking it off gives the sentence back.

mod common;

use common::*;
use llama_safe::demo::{DemoLora, DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::*;

fn text(ctx: &mut LlamaContext) -> String {
    ctx.clear();
    greedy_in(ctx, DEMO_PROMPT, GenerateOptions::default().max_tokens())
}

#[test]
fn the_demo_adapter_changes_the_sentence_and_comes_off_again() {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, moe_path(), &Default::default()).unwrap();
    let adapter = model.load_lora(DemoLora::cached().unwrap()).unwrap();
    let mut ctx = LlamaContext::new(
        &model,
        &ContextParams::default().with_n_ctx(128).with_threads(2),
    )
    .unwrap();
    assert_eq!(text(&mut ctx), DEMO_CONTINUATION);
    ctx.set_loras(&[(&adapter, 1.0)]).unwrap();
    assert_eq!(text(&mut ctx), DemoLora::CONTINUATION);
    // Scale 0 is no adapter at all.
    ctx.set_loras(&[(&adapter, 0.0)]).unwrap();
    assert_eq!(text(&mut ctx), DEMO_CONTINUATION);
    ctx.set_loras(&[(&adapter, 1.0)]).unwrap();
    // The context keeps the adapter alive while it is applied.
    drop(adapter);
    assert_eq!(text(&mut ctx), DemoLora::CONTINUATION);
    ctx.clear_loras();
    assert_eq!(text(&mut ctx), DEMO_CONTINUATION);
}

#[test]
fn adapters_are_per_context_and_per_model() {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, moe_path(), &Default::default()).unwrap();
    let dense = LlamaModel::load(&backend, dense_path(), &Default::default()).unwrap();
    let adapter = model.load_lora(DemoLora::cached().unwrap()).unwrap();
    let params = ContextParams::default().with_n_ctx(128).with_threads(2);
    let mut with = LlamaContext::new(&model, &params).unwrap();
    let mut without = LlamaContext::new(&model, &params).unwrap();
    with.set_loras(&[(&adapter, 1.0)]).unwrap();
    assert_eq!(text(&mut with), DemoLora::CONTINUATION);
    assert_eq!(text(&mut without), DEMO_CONTINUATION);
    let mut other = LlamaContext::new(&dense, &params).unwrap();
    assert!(matches!(
        other.set_loras(&[(&adapter, 1.0)]),
        Err(Error::ModelMismatch { .. })
    ));
    assert!(matches!(
        with.set_loras(&[(&adapter, f32::NAN)]),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn bad_adapter_files_are_typed_errors() {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, moe_path(), &Default::default()).unwrap();
    // A model is not an adapter; a missing file is not found.
    assert!(matches!(
        model.load_lora(moe_path()),
        Err(Error::Lora { .. })
    ));
    let missing = scratch("lora").join("none.gguf");
    assert!(matches!(
        model.load_lora(&missing),
        Err(Error::NotFound { .. })
    ));
    // alpha of the wrong type: llama.cpp's getter would assert.
    let mut w = gguf::GgufWriter::new();
    w.meta("general.architecture", gguf::MetaValue::Str("llama".into()))
        .meta("general.type", gguf::MetaValue::Str("adapter".into()))
        .meta("adapter.type", gguf::MetaValue::Str("lora".into()))
        .meta("adapter.lora.alpha", gguf::MetaValue::Str("one".into()));
    let path = scratch("lora-alpha").join("a.gguf");
    w.write_to(&path).unwrap();
    assert!(matches!(model.load_lora(&path), Err(Error::Lora { .. })));
}
