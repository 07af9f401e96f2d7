//! Contexts below the generator: multi-sequence batches, KV cache
//! operations, state save/restore, abort, KV cache types, token attributes
//! and embeddings, on the demo model.

mod common;

use common::*;
use llama_safe::demo::{DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::*;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn load() -> LlamaModel {
    load_moe()
}

fn params() -> ContextParams {
    ContextParams::default().with_n_ctx(256).with_threads(1)
}

fn prompt(model: &LlamaModel) -> Vec<Token> {
    model.tokenize(DEMO_PROMPT, Tokenize::PROMPT).unwrap()
}

/// Greedy tokens from the context's current logits until end-of-generation
/// (the context must have logits for its last token).
fn continue_greedy(model: &LlamaModel, ctx: &mut LlamaContext) -> String {
    let mut sampler = Sampler::greedy_chain(model);
    let mut out = Vec::new();
    for _ in 0..32 {
        let t = sampler.sample(ctx).unwrap();
        if model.is_eog(t) {
            break;
        }
        out.push(t);
        ctx.decode(&[t]).unwrap();
    }
    model.detokenize(&out).unwrap()
}

trait GreedyChain {
    fn greedy_chain(model: &LlamaModel) -> Sampler;
}
impl GreedyChain for Sampler {
    fn greedy_chain(model: &LlamaModel) -> Sampler {
        Sampler::new(model, &SamplingOptions::greedy()).unwrap()
    }
}

/// Greedy generation of several prompts at once, one sequence each, in
/// shared batches; returns each sequence's text.
fn generate_together(model: &LlamaModel, ctx: &mut LlamaContext, prompts: &[&str]) -> Vec<String> {
    let mut batch = Batch::new();
    let mut idx = Vec::new();
    let mut pos = Vec::new();
    for (seq, p) in prompts.iter().enumerate() {
        let tokens = model.tokenize(p, Tokenize::PROMPT).unwrap();
        batch.add_sequence(&tokens, 0, seq as u32, true).unwrap();
        idx.push(batch.len() - 1);
        pos.push(tokens.len() as u32);
    }
    ctx.decode_batch(&batch).unwrap();
    assert_eq!(batch.output_indices().collect::<Vec<_>>(), idx);
    let mut samplers: Vec<Sampler> = prompts
        .iter()
        .map(|_| Sampler::greedy_chain(model))
        .collect();
    let mut texts = vec![Vec::new(); prompts.len()];
    let mut live = vec![true; prompts.len()];
    while live.iter().any(|&l| l) {
        batch.clear();
        for seq in 0..prompts.len() {
            if !live[seq] {
                continue;
            }
            let t = samplers[seq].sample_ith(ctx, idx[seq]).unwrap();
            if model.is_eog(t) || texts[seq].len() == 32 {
                live[seq] = false;
                continue;
            }
            texts[seq].push(t);
            idx[seq] = batch.len();
            batch.add(t, pos[seq], &[seq as u32], true).unwrap();
            pos[seq] += 1;
        }
        if !batch.is_empty() {
            ctx.decode_batch(&batch).unwrap();
        }
    }
    texts.iter().map(|t| model.detokenize(t).unwrap()).collect()
}

#[test]
fn sequences_in_shared_batches_each_give_their_continuation() {
    let model = load();
    let prompts = [DEMO_PROMPT, "Once upon a time there lived", "one tiny"];
    let alone: Vec<String> = prompts.iter().map(|p| greedy_text(&model, p)).collect();
    assert_eq!(alone[0], DEMO_CONTINUATION);
    for unified in [false, true] {
        let p = params().with_n_seq_max(3).with_kv_unified(unified);
        let mut ctx = LlamaContext::new(&model, &p).unwrap();
        assert_eq!(
            generate_together(&model, &mut ctx, &prompts),
            alone,
            "unified: {unified}"
        );
        assert_eq!(ctx.seq_pos_min(1), Some(0));
    }
}

#[test]
fn copied_sequence_continues_like_the_original() {
    let model = load();
    let mut ctx = LlamaContext::new(&model, &params().with_n_seq_max(2)).unwrap();
    let tokens = prompt(&model);
    // Decode all but the last prompt token into sequence 0, fork it into
    // sequence 1, drop sequence 0, and finish the prompt on sequence 1.
    let (head, last) = tokens.split_at(tokens.len() - 1);
    let mut batch = Batch::new();
    batch.add_sequence(head, 0, 0, false).unwrap();
    ctx.decode_batch(&batch).unwrap();
    ctx.seq_copy(0, 1, ..).unwrap();
    assert_eq!(ctx.seq_pos_max(1), ctx.seq_pos_max(0));
    ctx.seq_keep(1).unwrap();
    assert_eq!(ctx.seq_pos_max(0), None);
    batch.clear();
    batch.add(last[0], head.len() as u32, &[1], true).unwrap();
    ctx.decode_batch(&batch).unwrap();
    let mut sampler = Sampler::greedy_chain(&model);
    let t = sampler.sample(&mut ctx).unwrap();
    assert_eq!(model.detokenize(&[t]).unwrap(), " there");
}

#[test]
fn truncate_and_remove_rewind_generation() {
    let model = load();
    let mut ctx = LlamaContext::new(&model, &params()).unwrap();
    let tokens = prompt(&model);
    ctx.decode(&tokens).unwrap();
    let first = continue_greedy(&model, &mut ctx);
    assert_eq!(first, DEMO_CONTINUATION);
    // Cut back to the prompt minus its last token, re-decode it, go again.
    assert!(ctx.truncate(tokens.len() as u32 - 1));
    assert_eq!(ctx.n_past(), tokens.len() as u32 - 1);
    ctx.decode(&tokens[tokens.len() - 1..]).unwrap();
    assert_eq!(continue_greedy(&model, &mut ctx), DEMO_CONTINUATION);
    assert!(ctx.seq_remove(None, ..).unwrap());
    assert_eq!(ctx.n_past(), 0);
}

#[test]
fn bad_batches_and_sequence_ids_are_errors() {
    let model = load();
    let mut ctx = LlamaContext::new(&model, &params().with_n_batch(8).with_n_seq_max(2)).unwrap();
    let err = |r: Result<()>| match r {
        Err(Error::Decode(e)) => e,
        other => panic!("expected a decode error, got {other:?}"),
    };
    assert_eq!(
        err(ctx.decode_batch(&Batch::new())),
        DecodeError::InvalidBatch
    );

    let mut big = Batch::new();
    big.add_sequence(&[Token(5); 9], 0, 0, true).unwrap();
    assert!(matches!(
        err(ctx.decode_batch(&big)),
        DecodeError::BatchTooLarge {
            tokens: 9,
            limit: 8
        }
    ));

    let mut bad_seq = Batch::new();
    bad_seq.add(Token(5), 0, &[2], true).unwrap();
    assert!(matches!(
        ctx.decode_batch(&bad_seq),
        Err(Error::InvalidSequence {
            seq: 2,
            n_seq_max: 2
        })
    ));

    let mut bad_token = Batch::new();
    bad_token
        .add(Token(model.n_vocab() as i32), 0, &[0], true)
        .unwrap();
    assert_eq!(err(ctx.decode_batch(&bad_token)), DecodeError::InvalidBatch);

    assert!(matches!(
        Batch::new().add(Token(1), 0, &[], true),
        Err(Error::InvalidParameter { name: "seqs", .. })
    ));
    assert!(matches!(
        ctx.seq_copy(0, 7, ..),
        Err(Error::InvalidSequence { seq: 7, .. })
    ));
    assert!(matches!(
        ctx.seq_remove(Some(0), (Bound::Included(5), Bound::Excluded(2))),
        Err(Error::InvalidParameter { name: "range", .. })
    ));
    assert_eq!(ctx.seq_pos_max(99), None);
    // Long prompts are still split for the user by `decode`.
    ctx.decode(&[Token(5); 20]).unwrap();
    assert_eq!(ctx.n_past(), 20);
}

#[test]
fn sampling_without_logits_is_an_error() {
    let model = load();
    let mut ctx = LlamaContext::new(&model, &params()).unwrap();
    let mut sampler = Sampler::greedy_chain(&model);
    assert!(matches!(
        sampler.sample(&mut ctx),
        Err(Error::NoLogits { index: None })
    ));
    ctx.decode(&prompt(&model)).unwrap();
    assert!(matches!(
        sampler.sample_ith(&mut ctx, 0),
        Err(Error::NoLogits { index: Some(0) })
    ));
    assert!(sampler.sample(&mut ctx).is_ok());
    ctx.clear();
    assert!(ctx.logits().is_empty());
    assert!(sampler.sample(&mut ctx).is_err());
}

#[test]
fn state_saved_and_restored_continues_identically() {
    let model = load();
    let tokens = prompt(&model);
    let mut ctx = LlamaContext::new(&model, &params()).unwrap();
    ctx.decode(&tokens).unwrap();
    let mut sampler = Sampler::greedy_chain(&model);
    // Generate two tokens, save with the third pending (sampled, not decoded).
    let mut generated = Vec::new();
    for _ in 0..2 {
        let t = sampler.sample(&mut ctx).unwrap();
        generated.push(t);
        ctx.decode(&[t]).unwrap();
    }
    let pending = sampler.sample(&mut ctx).unwrap();
    let bytes = ctx.save_state().unwrap();
    assert!(!bytes.is_empty());
    let dir = scratch("state");
    let file = dir.join("session.bin");
    let mut in_cache = tokens.clone();
    in_cache.extend(&generated);
    ctx.save_state_file(&file, &in_cache).unwrap();

    let rest_of = |ctx: &mut LlamaContext| {
        ctx.decode(&[pending]).unwrap();
        let mut text = model.detokenize(&generated).unwrap();
        text += &model.detokenize(&[pending]).unwrap();
        text + &continue_greedy(&model, ctx)
    };
    assert_eq!(rest_of(&mut ctx), DEMO_CONTINUATION);

    // Bytes into a fresh context.
    let mut fresh = LlamaContext::new(&model, &params()).unwrap();
    fresh.load_state(&bytes).unwrap();
    assert_eq!(fresh.n_past() as usize, in_cache.len());
    assert!(fresh.logits().is_empty(), "the state carries no logits");
    assert_eq!(rest_of(&mut fresh), DEMO_CONTINUATION);

    // The session file into another one, with its tokens.
    let mut from_file = LlamaContext::new(&model, &params()).unwrap();
    assert_eq!(from_file.load_state_file(&file).unwrap(), in_cache);
    assert_eq!(rest_of(&mut from_file), DEMO_CONTINUATION);

    // One sequence's state into another sequence id of the same context.
    let mut two = LlamaContext::new(&model, &params().with_n_seq_max(2)).unwrap();
    let mut batch = Batch::new();
    batch.add_sequence(&in_cache, 0, 0, false).unwrap();
    two.decode_batch(&batch).unwrap();
    let seq_bytes = two.save_seq_state(0).unwrap();
    two.seq_remove(Some(0), ..).unwrap();
    two.load_seq_state(&seq_bytes, 1).unwrap();
    assert_eq!(two.seq_pos_max(1), Some(in_cache.len() as u32 - 1));
    assert_eq!(two.seq_pos_max(0), None);
    batch.clear();
    batch
        .add(pending, in_cache.len() as u32, &[1], true)
        .unwrap();
    two.decode_batch(&batch).unwrap();
    let next = Sampler::greedy_chain(&model).sample(&mut two).unwrap();
    let mut check = LlamaContext::new(&model, &params()).unwrap();
    check.load_state(&bytes).unwrap();
    check.decode(&[pending]).unwrap();
    assert_eq!(
        next,
        Sampler::greedy_chain(&model).sample(&mut check).unwrap()
    );
}

#[test]
fn corrupt_or_missing_state_is_an_error() {
    let model = load();
    let mut ctx = LlamaContext::new(&model, &params()).unwrap();
    ctx.decode(&prompt(&model)).unwrap();
    let bytes = ctx.save_state().unwrap();
    let mut other = LlamaContext::new(&model, &params()).unwrap();
    assert!(matches!(
        other.load_state(&bytes[..bytes.len() / 2]),
        Err(Error::State { .. })
    ));
    assert!(matches!(
        other.load_state(b"not a state"),
        Err(Error::State { .. })
    ));
    assert!(matches!(other.load_state(&[]), Err(Error::State { .. })));
    let dir = scratch("bad-state");
    assert!(matches!(
        other.load_state_file(dir.join("missing.bin")),
        Err(Error::StateFile { .. })
    ));
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"definitely not a llama.cpp session").unwrap();
    assert!(matches!(
        other.load_state_file(&junk),
        Err(Error::StateFile { .. })
    ));
    // After all that the context still works.
    other.load_state(&bytes).unwrap();
    assert_eq!(other.n_past() as usize, prompt(&model).len());
}

#[test]
fn abort_callback_stops_a_decode() {
    let model = load();
    let flag = Arc::new(AtomicBool::new(true));
    let mut ctx = LlamaContext::new(&model, &params().with_abort_flag(flag.clone())).unwrap();
    assert!(matches!(
        ctx.decode(&prompt(&model)),
        Err(Error::Decode(DecodeError::Aborted))
    ));
    flag.store(false, Ordering::Relaxed);
    ctx.clear();
    ctx.decode(&prompt(&model)).unwrap();
    assert_eq!(continue_greedy(&model, &mut ctx), DEMO_CONTINUATION);

    // A panicking callback aborts the decode instead of unwinding into C;
    // the panic then goes on from `decode`, with its payload.
    let panicky = params().with_abort_callback(Arc::new(|| panic!("boom")));
    let mut ctx = LlamaContext::new(&model, &panicky).unwrap();
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.decode(&prompt(&model))))
            .expect_err("the callback's panic resumes from decode");
    assert_eq!(panicked.downcast_ref::<&str>(), Some(&"boom"));
}

#[test]
fn kv_cache_types() {
    let model = load();
    for (k, v) in [
        (KvCacheType::F32, KvCacheType::F32),
        (KvCacheType::BF16, KvCacheType::F16),
    ] {
        let p = params().with_kv_cache_type(k, v);
        let mut ctx = LlamaContext::new(&model, &p).unwrap();
        ctx.decode(&prompt(&model)).unwrap();
        assert_eq!(
            continue_greedy(&model, &mut ctx),
            DEMO_CONTINUATION,
            "{k:?}/{v:?}"
        );
    }
    // The demo model's heads are 16 wide: 32-element quantized blocks do not
    // fit, and llama.cpp says so instead of crashing.
    let q8 = params()
        .with_flash_attention(FlashAttention::Enabled)
        .with_kv_cache_type(KvCacheType::Q8_0, KvCacheType::Q8_0);
    match LlamaContext::new(&model, &q8) {
        Err(Error::Context { reason }) => assert!(reason.contains("block size"), "{reason}"),
        other => panic!("expected a context error, got {other:?}"),
    }
    assert!(matches!(
        LlamaContext::new(&model, &params().with_n_seq_max(100_000)),
        Err(Error::Context { .. })
    ));
}

#[test]
fn token_attributes_and_bad_token_ids() {
    let model = load();
    let bos = model.token_bos().unwrap();
    assert!(model.is_control(bos));
    assert!(model
        .token_attrs(bos)
        .unwrap()
        .contains(TokenAttrs::CONTROL));
    let word = model.tokenize("experts", Tokenize::TEXT).unwrap();
    assert!(model
        .token_attrs(word[0])
        .unwrap()
        .contains(TokenAttrs::NORMAL));
    // "é" is not a word of the demo vocabulary: it falls back to byte tokens.
    let bytes = model.tokenize("é", Tokenize::TEXT).unwrap();
    assert!(bytes
        .iter()
        .any(|&t| model.token_attrs(t).unwrap().contains(TokenAttrs::BYTE)));
    let outside = Token(model.n_vocab() as i32);
    for t in [outside, Token(-3)] {
        assert!(matches!(
            model.token_attrs(t),
            Err(Error::InvalidToken { .. })
        ));
        assert!(matches!(
            model.token_bytes(t, false),
            Err(Error::InvalidToken { .. })
        ));
        assert!(model.detokenize(&[t]).is_err());
        assert!(!model.is_control(t));
        assert!(!model.is_eog(t));
    }
}

fn embed_params(n_seq_max: u32) -> ContextParams {
    params()
        .with_n_seq_max(n_seq_max)
        .with_embeddings(true)
        .with_pooling(Pooling::Mean)
}

#[test]
fn embeddings_are_normalised_and_independent_of_packing() {
    let model = load();
    let texts = [
        "Once upon a time",
        "one tiny model",
        "many experts",
        "Once upon a time",
    ];
    let mut packed = LlamaContext::new(&model, &embed_params(4).with_kv_unified(true)).unwrap();
    assert_eq!(packed.pooling(), Pooling::Mean);
    let a = packed.embed(&texts, Normalize::UnitLength).unwrap();
    let mut single = LlamaContext::new(&model, &embed_params(1)).unwrap();
    let b = single.embed(&texts, Normalize::UnitLength).unwrap();
    assert_eq!(a.len(), texts.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.len(), model.n_embd() as usize);
        let norm: f32 = x.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        let diff = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-3, "packing changed a vector by {diff}");
    }
    // Without a unified cache embed decodes one text at a time (llama.cpp
    // pools mixed-length sequences of one batch wrongly there).
    let mut per_seq = LlamaContext::new(&model, &embed_params(4)).unwrap();
    assert_eq!(per_seq.embed(&texts, Normalize::UnitLength).unwrap(), b);
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    assert!((dot(&a[0], &a[3]) - 1.0).abs() < 1e-4);
    assert!(dot(&a[0], &a[1]) < 0.9999);

    let raw = packed.embed(&texts[..1], Normalize::None).unwrap();
    let norm: f32 = raw[0].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 1e-3,
        "unnormalised vector has norm {norm}"
    );
}

#[test]
fn embeddings_need_an_embeddings_context() {
    let model = load();
    let mut plain = LlamaContext::new(&model, &params()).unwrap();
    assert!(matches!(
        plain.embed(&["x"], Normalize::UnitLength),
        Err(Error::Embeddings { .. })
    ));
    let mut unpooled = LlamaContext::new(
        &model,
        &params().with_embeddings(true).with_pooling(Pooling::None),
    )
    .unwrap();
    assert!(matches!(
        unpooled.embed(&["x"], Normalize::UnitLength),
        Err(Error::Embeddings { .. })
    ));
    let mut ctx = LlamaContext::new(&model, &embed_params(2)).unwrap();
    let long = "experts ".repeat(600);
    assert!(matches!(
        ctx.embed(&[long.as_str()], Normalize::UnitLength),
        Err(Error::PromptTooLong { .. })
    ));
}

/// With one output per decode, the compute buffer keeps no room for a
/// batch's worth of logits. On the demo model (308 tokens of vocabulary,
/// smaller than its other per-token tensors) the saving is small, but it
/// must not grow.
#[test]
fn output_limit_does_not_grow_the_compute_buffer() {
    let model = load();
    let compute = |ctx: &ContextParams| {
        let uses = LlamaModelParams::default()
            .memory_plan(model.path(), ctx)
            .unwrap();
        uses.iter().map(|u| u.compute_bytes).sum::<u64>()
    };
    let all = compute(&params().with_n_ubatch(512));
    let one = compute(&params().with_n_ubatch(512).with_n_outputs_max(1));
    assert!(
        one < all,
        "{one} B with one output, {all} B with every output"
    );
}
