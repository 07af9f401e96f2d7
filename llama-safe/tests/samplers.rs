//! Each sampler stage does what it must, and chains llama.cpp would abort
//! on are refused.

mod common;

use common::*;
use llama_safe::*;

fn model() -> LlamaModel {
    LlamaModel::load(&LlamaBackend::init(), moe_path(), &Default::default()).unwrap()
}

/// 40 tokens after the demo prompt, EOS banned so the demo model loops.
fn run(model: &LlamaModel, mut stages: Vec<SamplerStage>) -> String {
    let eos = model.token_eos().unwrap();
    stages.insert(0, SamplerStage::LogitBias(vec![(eos, f32::NEG_INFINITY)]));
    let mut ctx = LlamaContext::new(
        model,
        &ContextParams::default().with_n_ctx(256).with_threads(2),
    )
    .unwrap();
    let options = GenerateOptions::default()
        .with_max_tokens(40)
        .with_sampling(SamplingOptions::chain(stages));
    let mut text = String::new();
    for event in ctx.generate(demo::DEMO_PROMPT, &options).unwrap() {
        if let Event::Piece(p) = event.unwrap() {
            text.push_str(&p.text);
        }
    }
    text
}

#[test]
fn chains_that_llama_cpp_would_abort_on_are_refused() {
    let model = model();
    let bad = [
        vec![SamplerStage::TopK(5)],
        vec![SamplerStage::Greedy, SamplerStage::TopK(5)],
        vec![SamplerStage::Dist { seed: 1 }, SamplerStage::Greedy],
        vec![
            SamplerStage::Penalties {
                last_n: i32::MAX,
                repeat: 1.1,
                frequency: 0.0,
                presence: 0.0,
            },
            SamplerStage::Greedy,
        ],
        vec![
            SamplerStage::Dry {
                multiplier: 1.0,
                base: 2.0,
                allowed_length: 2,
                last_n: i32::MAX,
                breakers: vec![],
            },
            SamplerStage::Greedy,
        ],
        vec![SamplerStage::Mirostat {
            tau: 5.0,
            eta: 0.1,
            m: 0,
            seed: 1,
        }],
    ];
    for chain in bad {
        let r = Sampler::new(&model, &SamplingOptions::chain(chain.clone()));
        assert!(
            matches!(r, Err(Error::InvalidParameter { .. })),
            "{chain:?}: {r:?}"
        );
    }
    let nul = vec![
        SamplerStage::Dry {
            multiplier: 1.0,
            base: 2.0,
            allowed_length: 2,
            last_n: 64,
            breakers: vec!["a\0b".into()],
        },
        SamplerStage::Greedy,
    ];
    assert!(matches!(
        Sampler::new(&model, &SamplingOptions::chain(nul)),
        Err(Error::NulByte { .. })
    ));
}

#[test]
fn the_preset_is_a_chain_of_stages() {
    let model = model();
    let greedy = run(&model, vec![SamplerStage::Greedy]);
    assert!(greedy.starts_with(demo::DEMO_CONTINUATION), "{greedy}");
    // top-k 1 then a draw, and top-n-sigma with n near 0 then a draw, keep
    // only the best token: the greedy text.
    assert_eq!(
        run(
            &model,
            vec![SamplerStage::TopK(1), SamplerStage::Dist { seed: 3 }]
        ),
        greedy
    );
    assert_eq!(
        run(
            &model,
            vec![
                SamplerStage::TopNSigma(1e-6),
                SamplerStage::Dist { seed: 3 }
            ]
        ),
        greedy
    );
    let preset = SamplingOptions::default();
    let stages = preset.stages();
    assert!(matches!(stages.last(), Some(SamplerStage::Dist { .. })));
    assert!(stages.contains(&SamplerStage::TopK(40)));
    assert_eq!(
        SamplingOptions::greedy().stages(),
        vec![SamplerStage::Greedy]
    );
}

#[test]
fn xtc_excludes_the_top_choice() {
    let model = model();
    let greedy = run(&model, vec![SamplerStage::Greedy]);
    let xtc = |probability| {
        run(
            &model,
            vec![
                // The demo model is very sure of itself: flatten it first, so
                // that more than one token is a "top choice".
                SamplerStage::Temperature(100.0),
                SamplerStage::Xtc {
                    probability,
                    threshold: 0.001,
                    min_keep: 1,
                    seed: 5,
                },
                SamplerStage::Greedy,
            ],
        )
    };
    assert_eq!(xtc(0.0), greedy, "probability 0 never acts");
    assert_ne!(
        xtc(1.0),
        greedy,
        "probability 1 always removes the top choice"
    );
}

#[test]
fn dry_breaks_the_loop_greedy_falls_into() {
    let model = model();
    let greedy = run(&model, vec![SamplerStage::Greedy]);
    let dry = run(
        &model,
        vec![
            SamplerStage::Dry {
                multiplier: 3.0,
                base: 2.0,
                allowed_length: 1,
                last_n: 256,
                breakers: vec![],
            },
            SamplerStage::Greedy,
        ],
    );
    let loops = |t: &str| t.matches("one tiny model with many experts").count();
    assert!(loops(&greedy) >= 3, "{greedy}");
    assert!(loops(&dry) < loops(&greedy), "DRY: {dry}\ngreedy: {greedy}");
}

#[test]
fn penalties_reduce_repetition() {
    let model = model();
    let greedy = run(&model, vec![SamplerStage::Greedy]);
    let penalised = run(
        &model,
        vec![
            SamplerStage::Penalties {
                last_n: 64,
                repeat: 1.0,
                frequency: 5.0,
                presence: 5.0,
            },
            SamplerStage::Greedy,
        ],
    );
    let loops = |t: &str| t.matches("many experts").count();
    assert!(loops(&penalised) < loops(&greedy), "{penalised}");
}

#[test]
fn seeded_draws_reproduce_and_seeds_differ() {
    let model = model();
    for (i, chain) in [
        // The demo model is very sure of itself: a high temperature lets
        // the draws differ.
        |seed| {
            vec![
                SamplerStage::Temperature(100.0),
                SamplerStage::Dist { seed },
            ]
        },
        |seed| {
            vec![
                SamplerStage::Temperature(100.0),
                SamplerStage::Mirostat {
                    tau: 20.0,
                    eta: 0.1,
                    m: 100,
                    seed,
                },
            ]
        },
        |seed| {
            vec![
                SamplerStage::Temperature(100.0),
                SamplerStage::MirostatV2 {
                    tau: 20.0,
                    eta: 0.1,
                    seed,
                },
            ]
        },
        |seed| {
            vec![
                SamplerStage::DynamicTemperature {
                    temperature: 100.0,
                    delta: 50.0,
                    exponent: 1.0,
                },
                SamplerStage::Dist { seed },
            ]
        },
    ]
    .into_iter()
    .enumerate()
    {
        let a = run(&model, chain(11));
        assert_eq!(a, run(&model, chain(11)), "the same seed, the same text");
        assert!(!a.is_empty());
        // Mirostat 1 estimates the distribution's shape from its head; on a
        // flattened one it keeps the best token, so its seed does not show.
        if i != 1 {
            let others: Vec<String> = (12..16).map(|s| run(&model, chain(s))).collect();
            assert!(
                others.iter().any(|o| o != &a),
                "chain {i}: seeds change nothing: {a}"
            );
        }
    }
}

#[test]
fn mirostat_with_a_tiny_target_surprise_keeps_only_the_best_token() {
    let model = model();
    let greedy = run(&model, vec![SamplerStage::Greedy]);
    for seed in [1, 2] {
        let v1 = run(
            &model,
            vec![
                SamplerStage::Temperature(100.0),
                SamplerStage::Mirostat {
                    tau: 0.01,
                    eta: 0.1,
                    m: 100,
                    seed,
                },
            ],
        );
        let v2 = run(
            &model,
            vec![
                SamplerStage::Temperature(100.0),
                SamplerStage::MirostatV2 {
                    tau: 0.01,
                    eta: 0.1,
                    seed,
                },
            ],
        );
        assert_eq!(v1, greedy);
        assert_eq!(v2, greedy);
    }
}
