//! Speculative decoding (prompt lookup) against plain generation on the
//! demo model: greedy output identical token for token, with stop strings,
//! token limits, grammars and cancellation; the KV cache left as the plain
//! path leaves it; with temperature, the same distribution (a chi-squared
//! test at a stated false-alarm rate).

mod common;

use common::moe_path;
use llama_safe::demo::DEMO_PROMPT;
use llama_safe::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The demo's sentence twice and its start again: prompt lookup finds the
/// continuation in the prompt.
const REPEATING: &str = "Once upon a time there lived one tiny model with many experts. \
                         Once upon a time there lived one tiny model with many experts. Once upon a time";

fn model() -> LlamaModel {
    LlamaModel::load(
        &LlamaBackend::init(),
        moe_path(),
        &LlamaModelParams::default(),
    )
    .unwrap()
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
    let n_past = ctx.n_past();
    (tokens, text, stats.unwrap(), n_past)
}

fn eos_banned(model: &LlamaModel) -> SamplingOptions {
    let eos = model.token_eos().unwrap();
    SamplingOptions::greedy().with_logit_bias(vec![(eos, f32::NEG_INFINITY)])
}

#[test]
fn greedy_output_is_identical_and_drafts_are_accepted() {
    let model = model();
    let spec = Speculation::prompt_lookup().with_draft_max(8);
    for (prompt, sampling, max_tokens) in [
        (DEMO_PROMPT, SamplingOptions::greedy(), 64),
        (REPEATING, SamplingOptions::greedy(), 64),
        (REPEATING, eos_banned(&model), 200),
        (DEMO_PROMPT, eos_banned(&model), 150),
    ] {
        let plain = GenerateOptions::default()
            .with_sampling(sampling.clone())
            .with_max_tokens(max_tokens);
        let fast = plain.clone().with_speculation(spec.clone());
        let (a_tokens, a_text, a_stats, a_kv) = run(&model, prompt, &plain);
        let (b_tokens, b_text, b_stats, b_kv) = run(&model, prompt, &fast);
        assert_eq!(a_text, b_text, "{prompt:?} {max_tokens}");
        assert_eq!(a_tokens, b_tokens);
        assert_eq!(
            (a_stats.generated_tokens, a_stats.stop_reason),
            (b_stats.generated_tokens, b_stats.stop_reason)
        );
        assert_eq!(a_kv, b_kv, "the cache holds the same tokens after");
        assert!(a_stats.speculation.is_none());
        let s = b_stats.speculation.unwrap();
        assert_eq!(s.generated, b_stats.generated_tokens);
        assert!(s.accepted <= s.drafted && s.target_decodes <= s.generated.max(1));
        eprintln!(
            "{:>3} tokens: drafted {}, accepted {} ({:.0} %), {:.2} tokens per decode",
            s.generated,
            s.drafted,
            s.accepted,
            100.0 * s.acceptance_rate(),
            s.tokens_per_decode()
        );
        if max_tokens >= 150 {
            // A repeating text: most drafts are right, decodes are saved.
            assert!(s.acceptance_rate() > 0.5, "{s:?}");
            assert!(s.tokens_per_decode() > 2.0, "{s:?}");
        }
    }
}

#[test]
fn stops_limits_grammars_and_cancellation_behave_as_without() {
    let model = model();
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
    for plain in cases {
        let fast = plain.clone().with_speculation(spec.clone());
        let a = run(&model, REPEATING, &plain);
        let b = run(&model, REPEATING, &fast);
        assert_eq!(a.1, b.1, "{plain:?}");
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
    let model = model();
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

#[test]
fn with_temperature_the_distribution_is_the_models() {
    // The third token after a prompt that drafts: a position speculation
    // checks in a batch. 400 draws each way, with different seeds (two
    // independent samples), temperature 2 and no top-k, top-p or min-p cut:
    // the drafted token (the sentence's own) comes about 3 times in 4, the
    // rest spread thin over the vocabulary; a speculation that kept drafts
    // the model would not sample would push that share up. Categories of
    // fewer than 5 expected draws per side are pooled. The test fails when
    // chi-squared exceeds the 99.9th percentile for its degrees of freedom
    // (Wilson-Hilferty): a false alarm once in a thousand runs when the
    // distributions agree.
    let model = model();
    let mut counts = [
        std::collections::BTreeMap::new(),
        std::collections::BTreeMap::new(),
    ];
    for seed in 0..400u32 {
        let plain = GenerateOptions::default()
            .with_sampling(
                SamplingOptions::default()
                    .with_temperature(2.0)
                    .with_top_k(0)
                    .with_top_p(1.0)
                    .with_min_p(0.0)
                    .with_seed(seed),
            )
            .with_max_tokens(3);
        let other_seed = plain.sampling().clone().with_seed(seed + 100_000);
        let fast = plain
            .clone()
            .with_sampling(other_seed)
            .with_speculation(Speculation::prompt_lookup().with_draft_max(4));
        for (i, options) in [plain, fast].iter().enumerate() {
            let (tokens, ..) = run(&model, REPEATING, options);
            if let Some(&t) = tokens.get(2) {
                *counts[i].entry(t).or_insert(0.0) += 1.0;
            }
        }
    }
    // Pool the rare categories.
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
    let df_f = df.max(1) as f64;
    // z for 0.999 one-sided.
    let z = 3.090;
    let critical = df_f * (1.0 - 2.0 / (9.0 * df_f) + z * (2.0 / (9.0 * df_f)).sqrt()).powi(3);
    eprintln!(
        "chi-squared {chi:.2} on {df} degrees of freedom; critical value at 0.1 % {critical:.2}; {counts:?}"
    );
    assert!(df >= 1, "too few categories to compare: {counts:?}");
    assert!(
        chi < critical,
        "chi-squared {chi} >= {critical} ({counts:?})"
    );
}

#[test]
fn in_the_engine_drafts_ride_beside_other_sequences() {
    use llama_safe::engine::{Engine, EngineConfig};
    let model = model();
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
        // The same tokens as alone, without speculation.
        let mut plain = options.clone();
        plain = GenerateOptions::default()
            .with_sampling(plain.sampling().clone())
            .with_max_tokens(plain.max_tokens())
            .with_stop(plain.stop().to_vec());
        let (alone, ..) = run(&model, prompt, &plain);
        assert_eq!(tokens, alone, "{prompt:?}");
        match (options.speculation(), done.speculation) {
            (Some(_), Some(s)) => {
                eprintln!(
                    "engine: {} tokens, {:?}, {s:?}",
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
