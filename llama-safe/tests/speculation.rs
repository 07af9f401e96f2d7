//! Speculative decoding against plain generation, for every source (prompt
//! lookup, the n-gram map, a draft model: a smaller model with the same
//! vocabulary, and the same model as its own draft) on the demo models:
//! greedy output identical token for token, with stop strings, token
//! limits, grammars and cancellation, in `generate` and in the engine beside
//! other sequences; the KV cache left as the plain path leaves it; with
//! temperature, the same distribution (chi-squared tests at a stated
//! false-alarm rate); a draft model with another vocabulary is a typed
//! error.

mod common;
#[path = "common/gguf_layout.rs"]
#[allow(dead_code)]
mod gguf_layout;

use common::{dense_path, moe_path, scratch};
use gguf_layout::{string_array_items, string_array_value, ty, Layout};
use llama_safe::demo::DEMO_PROMPT;
use llama_safe::engine::{Engine, EngineConfig};
use llama_safe::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The demo's sentence twice and its start again: the text sources find the
/// continuation in the prompt.
const REPEATING: &str = "Once upon a time there lived one tiny model with many experts. \
                         Once upon a time there lived one tiny model with many experts. Once upon a time";

fn load(path: std::path::PathBuf) -> LlamaModel {
    LlamaModel::load(&LlamaBackend::init(), path, &LlamaModelParams::default()).unwrap()
}

/// The dense demo model drafting (p_min 0: the demo's probabilities are
/// flat, about 3 % for its best token).
fn dense_draft() -> DraftModel {
    DraftModel::new(load(dense_path()))
        .with_p_min(0.0)
        .with_context(ContextParams::default().with_threads(1))
}

/// (name, speculation) for every source; the target is the MoE demo model.
fn sources() -> Vec<(&'static str, Speculation)> {
    let itself = DraftModel::new(load(moe_path()))
        .with_p_min(0.0)
        .with_context(ContextParams::default().with_threads(1));
    vec![
        (
            "prompt lookup",
            Speculation::prompt_lookup().with_draft_max(8),
        ),
        ("n-gram map", Speculation::ngram_map().with_draft_max(8)),
        (
            "n-gram map, 2 hits",
            Speculation::ngram_map().with_min_hits(2).with_ngram(2, 4),
        ),
        (
            "dense draft",
            Speculation::draft_model(dense_draft()).with_draft_max(6),
        ),
        ("itself", Speculation::draft_model(itself).with_draft_max(5)),
    ]
}

/// (tokens, text, stats, KV cells after) of one generation in a fresh context.
fn run(
    model: &LlamaModel,
    prompt: &str,
    options: &GenerateOptions,
) -> (Vec<Token>, String, GenerationStats, u32) {
    let mut ctx = LlamaContext::new(
        model,
        &ContextParams::default().with_n_ctx(1024).with_threads(1),
    )
    .unwrap();
    let (mut tokens, mut text, mut stats) = (Vec::new(), String::new(), None);
    for event in ctx.generate(prompt, options).unwrap() {
        match event.unwrap() {
            Event::Piece(p) => {
                tokens.push(p.token);
                text.push_str(&p.text);
            }
            Event::Done(s) => stats = Some(s),
        }
    }
    (tokens, text, stats.unwrap(), ctx.n_past())
}

fn eos_banned(model: &LlamaModel) -> SamplingOptions {
    let eos = model.token_eos().unwrap();
    SamplingOptions::greedy().with_logit_bias(vec![(eos, f32::NEG_INFINITY)])
}

#[test]
fn greedy_output_is_identical_for_every_source() {
    let model = load(moe_path());
    for (name, spec) in sources() {
        for (prompt, sampling, max_tokens) in [
            (DEMO_PROMPT, SamplingOptions::greedy(), 64),
            (REPEATING, SamplingOptions::greedy(), 64),
            (REPEATING, eos_banned(&model), 160),
            (DEMO_PROMPT, eos_banned(&model), 100),
        ] {
            let plain = GenerateOptions::default()
                .with_sampling(sampling.clone())
                .with_max_tokens(max_tokens);
            let fast = plain.clone().with_speculation(spec.clone());
            let a = run(&model, prompt, &plain);
            let b = run(&model, prompt, &fast);
            assert_eq!(a.1, b.1, "{name}: {prompt:?} {max_tokens}");
            assert_eq!(a.0, b.0, "{name}");
            assert_eq!(a.2.stop_reason, b.2.stop_reason, "{name}");
            assert_eq!(a.3, b.3, "{name}: the cache holds the same tokens after");
            let s = b.2.speculation.unwrap();
            eprintln!(
                "{name:>18}, {max_tokens:>3} tokens: drafted {:>3}, accepted {:>3} ({:>3.0} %), {:.2} tokens per decode",
                s.drafted,
                s.accepted,
                100.0 * s.acceptance_rate(),
                s.tokens_per_decode()
            );
            assert!(s.accepted <= s.drafted, "{name}: {s:?}");
            if name == "itself" && max_tokens == 64 {
                // Plain greedy: the model drafting for itself is always right.
                assert!(s.drafted > 0, "{s:?}");
                assert_eq!(s.accepted, s.drafted, "{name}: {prompt:?}: {s:?}");
            }
            if max_tokens >= 150 && !name.contains("draft") && name != "itself" {
                // A repeating text: drafts from the text are mostly right.
                assert!(s.acceptance_rate() > 0.5, "{name}: {s:?}");
                assert!(s.tokens_per_decode() > 2.0, "{name}: {s:?}");
            }
        }
    }
}

#[test]
fn stops_limits_grammars_and_cancellation_behave_as_without() {
    let model = load(moe_path());
    let spec = Speculation::prompt_lookup().with_draft_max(16);
    let cases =
        [
            GenerateOptions::default()
                .with_sampling(eos_banned(&model))
                .with_max_tokens(37),
            GenerateOptions::default()
                .with_sampling(eos_banned(&model))
                .with_max_tokens(200)
                .with_stop(vec!["many experts. Once upon".into()]),
            GenerateOptions::default()
                .with_sampling(eos_banned(&model))
                .with_max_tokens(200)
                .with_stop(vec!["tiny".into()]),
            GenerateOptions::default()
                .with_sampling(SamplingOptions::greedy().with_grammar(
                    "root ::= (\" there\" | \" lived\" | \" one\" | \" tiny\")+ \".\"\n",
                ))
                .with_max_tokens(40),
        ];
    let drafting = Speculation::draft_model(dense_draft()).with_draft_max(8);
    for (plain, spec) in cases.iter().flat_map(|c| [(c, &spec), (c, &drafting)]) {
        let fast = plain.clone().with_speculation(spec.clone());
        let a = run(&model, REPEATING, plain);
        let b = run(&model, REPEATING, &fast);
        assert_eq!(a.1, b.1, "{} {plain:?}", spec.source_name());
        assert_eq!(a.0, b.0);
        assert_eq!(a.2.stop_reason, b.2.stop_reason);
        assert_eq!(a.2.generated_tokens, b.2.generated_tokens);
        assert_eq!(a.3, b.3, "no token past the end is kept in the cache");
    }
    // Cancelled after 20 pieces: nothing past the cancellation is emitted.
    let cancel = Arc::new(AtomicBool::new(false));
    let options = GenerateOptions::default()
        .with_sampling(eos_banned(&model))
        .with_max_tokens(300)
        .with_cancel(cancel.clone())
        .with_speculation(spec);
    let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(1024)).unwrap();
    let (mut pieces, mut stop) = (0, None);
    for event in ctx.generate(REPEATING, &options).unwrap() {
        match event.unwrap() {
            Event::Piece(_) => {
                pieces += 1;
                if pieces == 20 {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
            Event::Done(s) => stop = Some(s.stop_reason),
        }
    }
    assert_eq!(stop, Some(StopReason::Cancelled));
    // A step emits at most a draft's worth after the flag is seen.
    assert!((20..=20 + 17).contains(&pieces), "{pieces}");
}

#[test]
fn settings_that_cannot_work_are_typed_errors() {
    let model = load(moe_path());
    let mut ctx = LlamaContext::new(
        &model,
        &ContextParams::default()
            .with_n_ctx(256)
            .with_n_outputs_max(1),
    )
    .unwrap();
    let options = GenerateOptions::default().with_speculation(Speculation::prompt_lookup());
    assert!(matches!(
        ctx.generate(DEMO_PROMPT, &options).err(),
        Some(Error::InvalidParameter {
            name: "speculation",
            ..
        })
    ));
    let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(256)).unwrap();
    let bad =
        GenerateOptions::default().with_speculation(Speculation::prompt_lookup().with_draft_max(0));
    assert!(matches!(
        ctx.generate(DEMO_PROMPT, &bad).err(),
        Some(Error::InvalidParameter {
            name: "speculation",
            ..
        })
    ));
    let engine = llama_safe::engine::Engine::new(
        &model,
        llama_safe::engine::EngineConfig::default().with_n_ctx(256),
    )
    .unwrap();
    assert!(matches!(
        engine.submit_text(DEMO_PROMPT, options).err(),
        Some(Error::Unsupported { .. })
    ));
}

/// The demo MoE model with the text of one word piece changed: the same
/// architecture and sizes, another vocabulary.
fn other_vocabulary() -> std::path::PathBuf {
    let layout = Layout::parse(std::fs::read(moe_path()).unwrap());
    let mut kvs = layout.kv_triples();
    let tokens = kvs
        .iter_mut()
        .find(|(k, _, _)| k == "tokenizer.ggml.tokens")
        .unwrap();
    let mut items = string_array_items(&tokens.2);
    let at = items.iter().position(|t| t == "▁tiny").unwrap();
    items[at] = "▁tinz".into();
    tokens.2 = string_array_value(&items);
    assert_eq!(tokens.1, ty::ARRAY);
    let path = scratch("spec-vocab").join("other-vocab.gguf");
    std::fs::write(&path, layout.rebuild(&kvs)).unwrap();
    path
}

#[test]
fn a_draft_model_with_another_vocabulary_is_a_typed_error() {
    let model = load(moe_path());
    let other = DraftModel::new(load(other_vocabulary()));
    let err = other.check_compatible(&model).unwrap_err();
    assert!(
        matches!(&err, Error::IncompatibleDraft { reason, .. } if reason.to_string().contains("▁tinz")),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidFile);
    // Where generation starts, and where an engine is made.
    let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(256)).unwrap();
    let options =
        GenerateOptions::default().with_speculation(Speculation::draft_model(other.clone()));
    assert!(matches!(
        ctx.generate(DEMO_PROMPT, &options).err(),
        Some(Error::IncompatibleDraft { .. })
    ));
    let engine = Engine::new(
        &model,
        EngineConfig::default()
            .with_n_ctx(256)
            .with_speculation(Speculation::draft_model(other)),
    );
    assert!(matches!(
        engine.err(),
        Some(Error::IncompatibleDraft { .. })
    ));
    // A p_min that is not a probability.
    let bad = Speculation::draft_model(dense_draft().with_p_min(1.5));
    let options = GenerateOptions::default().with_speculation(bad);
    assert!(matches!(
        ctx.generate(DEMO_PROMPT, &options).err(),
        Some(Error::InvalidParameter { .. })
    ));
    // An engine drafting with one model refuses a request naming another.
    let engine = Engine::new(
        &model,
        EngineConfig::default()
            .with_n_ctx(256)
            .with_speculation(Speculation::draft_model(dense_draft())),
    )
    .unwrap();
    let options =
        GenerateOptions::default().with_speculation(Speculation::draft_model(dense_draft()));
    assert!(matches!(
        engine.submit_text(DEMO_PROMPT, options).err(),
        Some(Error::Unsupported { .. })
    ));
}

/// The chi-squared statistic of two samples' counts over the same
/// categories, and its degrees of freedom.
fn chi_squared(
    a: &std::collections::BTreeMap<Token, f64>,
    b: &std::collections::BTreeMap<Token, f64>,
) -> (f64, usize) {
    let keys: std::collections::BTreeSet<&Token> = a.keys().chain(b.keys()).collect();
    let (na, nb) = (a.values().sum::<f64>(), b.values().sum::<f64>());
    let mut chi = 0.0;
    for k in &keys {
        let (x, y) = (
            a.get(k).copied().unwrap_or(0.0),
            b.get(k).copied().unwrap_or(0.0),
        );
        let total = x + y;
        let (ea, eb) = (total * na / (na + nb), total * nb / (na + nb));
        chi += (x - ea).powi(2) / ea + (y - eb).powi(2) / eb;
    }
    (chi, keys.len().saturating_sub(1))
}

/// Whether, with temperature, speculating with `spec` keeps the model's
/// distribution: the third token after a prompt that drafts (a position
/// speculation checks in a batch), `draws` draws each way with different
/// seeds (two independent samples), temperature 2 and no top-k, top-p or
/// min-p cut: the drafted token (the sentence's own) comes about 3 times in
/// 4, the rest spread thin over the vocabulary; a speculation that kept
/// drafts the model would not sample would push that share up. Categories
/// of fewer than 10 draws in all are pooled. Fails when chi-squared exceeds
/// the 99.9th percentile for its degrees of freedom (Wilson-Hilferty): a
/// false alarm once in a thousand runs when the distributions agree.
fn assert_same_distribution(spec: Speculation, draws: u32) {
    let model = load(moe_path());
    let mut counts = [BTreeMap::new(), BTreeMap::new()];
    let sampling = SamplingOptions::default()
        .with_temperature(2.0)
        .with_top_k(0)
        .with_top_p(1.0)
        .with_min_p(0.0);
    for seed in 0..draws {
        let plain = GenerateOptions::default()
            .with_sampling(sampling.clone().with_seed(seed))
            .with_max_tokens(3);
        let fast = GenerateOptions::default()
            .with_sampling(sampling.clone().with_seed(seed + 100_000))
            .with_max_tokens(3)
            .with_speculation(spec.clone());
        for (i, options) in [plain, fast].iter().enumerate() {
            let (tokens, ..) = run(&model, REPEATING, options);
            if let Some(&t) = tokens.get(2) {
                *counts[i].entry(t).or_insert(0.0) += 1.0;
            }
        }
    }
    let rare: Vec<Token> = counts[0]
        .keys()
        .chain(counts[1].keys())
        .filter(|k| counts[0].get(*k).unwrap_or(&0.0) + counts[1].get(*k).unwrap_or(&0.0) < 10.0)
        .copied()
        .collect();
    for c in &mut counts {
        let pooled: f64 = rare.iter().filter_map(|k| c.remove(k)).sum();
        if pooled > 0.0 {
            *c.entry(Token(-1)).or_insert(0.0) += pooled;
        }
    }
    let (chi, df) = chi_squared(&counts[0], &counts[1]);
    assert!(df >= 1, "too few categories to compare: {counts:?}");
    let d = df as f64;
    // z for 0.999 one-sided.
    let critical = d * (1.0 - 2.0 / (9.0 * d) + 3.090 * (2.0 / (9.0 * d)).sqrt()).powi(3);
    eprintln!(
        "{}: chi-squared {chi:.2} on {df} degrees of freedom; critical value at 0.1 % {critical:.2}; {counts:?}",
        spec.source_name()
    );
    assert!(
        chi < critical,
        "chi-squared {chi} >= {critical} ({counts:?})"
    );
}

#[test]
fn with_temperature_prompt_lookup_keeps_the_models_distribution() {
    assert_same_distribution(Speculation::prompt_lookup().with_draft_max(4), 400);
}

#[test]
fn with_temperature_a_draft_model_keeps_the_models_distribution() {
    assert_same_distribution(
        Speculation::draft_model(dense_draft()).with_draft_max(4),
        300,
    );
}

/// Runs `cases` on `engine` at once, twice (the second round starts from
/// what the first left cached), and checks each against its solo output
/// without speculation; a speculating request must have had drafts
/// accepted.
fn assert_engine_as_solo(model: &LlamaModel, engine: &Engine, cases: &[(&str, GenerateOptions)]) {
    for round in 0..2 {
        let handles: Vec<_> = cases
            .iter()
            .map(|(prompt, options)| engine.submit_text(prompt, options.clone()).unwrap())
            .collect();
        for ((prompt, options), handle) in cases.iter().zip(handles) {
            let (mut tokens, mut done) = (Vec::new(), None);
            for event in handle {
                match event.unwrap() {
                    Event::Piece(p) => tokens.push(p.token),
                    Event::Done(s) => done = Some(s),
                }
            }
            let done = done.unwrap();
            let plain = GenerateOptions::default()
                .with_sampling(options.sampling().clone())
                .with_max_tokens(options.max_tokens())
                .with_stop(options.stop().to_vec());
            let (alone, ..) = run(model, prompt, &plain);
            assert_eq!(tokens, alone, "round {round}: {prompt:?}");
            match (options.speculation(), done.speculation) {
                (Some(spec), Some(s)) => {
                    eprintln!(
                        "engine, round {round}, {}: {} tokens, {:?}, {s:?}",
                        spec.source_name(),
                        tokens.len(),
                        done.stop_reason
                    );
                    assert!(s.accepted > 0 && s.target_decodes < s.generated, "{s:?}");
                }
                (None, None) => {}
                other => panic!("speculation stats {other:?}"),
            }
        }
    }
}

#[test]
fn in_the_engine_drafts_ride_beside_other_sequences() {
    let model = load(moe_path());
    let engine = Engine::new(
        &model,
        EngineConfig::default()
            .with_n_ctx(2048)
            .with_n_parallel(3)
            .with_threads(1)
            .with_max_draft(8),
    )
    .unwrap();
    let spec = Speculation::prompt_lookup().with_draft_max(8);
    let long = GenerateOptions::default()
        .with_sampling(eos_banned(&model))
        .with_max_tokens(120);
    let cases = [
        (REPEATING, long.clone().with_speculation(spec.clone())),
        (
            DEMO_PROMPT,
            GenerateOptions::default().with_sampling(SamplingOptions::greedy()),
        ),
        (REPEATING, long.clone()),
        (
            REPEATING,
            long.clone()
                .with_stop(vec!["tiny model".into()])
                .with_speculation(spec),
        ),
    ];
    assert_engine_as_solo(&model, &engine, &cases);
}

#[test]
fn in_the_engine_a_draft_model_drafts_for_every_sequence_at_once() {
    let model = load(moe_path());
    let engine_spec = Speculation::draft_model(dense_draft()).with_draft_max(6);
    let engine = Engine::new(
        &model,
        EngineConfig::default()
            .with_n_ctx(2048)
            .with_n_parallel(4)
            .with_threads(1)
            .with_speculation(engine_spec.clone()),
    )
    .unwrap();
    let long = GenerateOptions::default()
        .with_sampling(eos_banned(&model))
        .with_max_tokens(90);
    let cases = [
        (
            REPEATING,
            long.clone().with_speculation(engine_spec.clone()),
        ),
        (
            DEMO_PROMPT,
            GenerateOptions::default()
                .with_sampling(SamplingOptions::greedy())
                .with_speculation(engine_spec.clone()),
        ),
        (REPEATING, long.clone()),
        (
            REPEATING,
            long.clone()
                .with_stop(vec!["tiny model".into()])
                .with_speculation(engine_spec.clone()),
        ),
        (
            DEMO_PROMPT,
            long.clone()
                .with_speculation(Speculation::ngram_map().with_draft_max(4)),
        ),
    ];
    assert_engine_as_solo(&model, &engine, &cases);
}

#[test]
fn a_smaller_moe_drafts_for_a_bigger_one_with_its_own_offload() {
    // The target: a synthetic MoE twice the demo's depth and width, 8
    // experts (the demo vocabulary and next-word table); the draft: the
    // demo MoE, its experts kept in host memory by its own parameters.
    let shape = llama_safe::demo::SyntheticMoe {
        n_layer: 8,
        n_embd: 128,
        n_ff: 128,
        n_expert: 8,
        n_expert_used: 2,
        n_head: 4,
        expert_type: llama_safe::gguf::GgmlType::Q8_0,
    };
    let path = scratch("spec-synthetic").join("target.gguf");
    shape.write(&path).unwrap();
    let target = load(path);
    let draft = LlamaModel::load(
        &LlamaBackend::init(),
        moe_path(),
        &LlamaModelParams::default().with_cpu_moe_all(),
    )
    .unwrap();
    assert!(
        !draft.placement().moved.is_empty(),
        "the draft's experts were moved"
    );
    let spec = Speculation::draft_model(
        DraftModel::new(draft)
            .with_p_min(0.0)
            .with_context(ContextParams::default().with_threads(1)),
    )
    .with_draft_max(8);
    for options in [
        GenerateOptions::default().with_sampling(SamplingOptions::greedy()),
        GenerateOptions::default()
            .with_sampling(eos_banned(&target))
            .with_max_tokens(120),
    ] {
        let a = run(&target, REPEATING, &options);
        let b = run(
            &target,
            REPEATING,
            &options.clone().with_speculation(spec.clone()),
        );
        assert_eq!(a.0, b.0);
        assert_eq!(a.3, b.3);
        let s = b.2.speculation.unwrap();
        eprintln!("synthetic target: {} tokens, {s:?}", a.0.len());
        assert!(s.accepted > 0, "{s:?}");
    }
}
