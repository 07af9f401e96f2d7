//! Regressions for each class of crash an audit and a fuzz run found
//! reachable from safe code or from a file. Each case that used to abort,
//! overflow the stack, hang or deadlock runs in a child process (this test
//! binary again, told by an environment variable to run that one case), so
//! a crash is a failed assertion here, not a dead test run.

#[path = "common/child.rs"]
mod child;
mod common;
#[path = "common/gguf_layout.rs"]
#[allow(dead_code)]
mod gguf_layout;

use child::in_child;
use common::*;
use gguf_layout::{string_array_items, string_array_value, ty, Layout};
use llama_safe::demo::{DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::*;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

fn load_with(params: &LlamaModelParams) -> Result<LlamaModel> {
    LlamaModel::load(&LlamaBackend::init(), moe_path(), params)
}

fn default_model() -> LlamaModel {
    load_with(&LlamaModelParams::default()).unwrap()
}

fn ctx_params() -> ContextParams {
    ContextParams::default().with_n_ctx(128).with_threads(1)
}

// --- Lifetimes and model identity -------------------------------------------

#[test]
fn sampler_of_another_model_is_a_typed_error() {
    // Used to throw std::out_of_range through C (abort), or read a freed
    // vocabulary once its model was dropped.
    in_child("sampler_of_another_model_is_a_typed_error", LIMIT, || {
        let a = default_model();
        let b = LlamaModel::load(&LlamaBackend::init(), dense_path(), &Default::default()).unwrap();
        let grammar = SamplingOptions::greedy().with_grammar(r#"root ::= [a-z ]+"#);
        let mut sampler = Sampler::new(&a, &grammar).unwrap();
        let mut ctx = LlamaContext::new(&b, &ctx_params()).unwrap();
        ctx.decode(&b.tokenize("Once upon", Tokenize::PROMPT).unwrap())
            .unwrap();
        assert!(matches!(
            sampler.sample(&mut ctx),
            Err(Error::ModelMismatch { .. })
        ));
        // Generation is a method of the context, which runs its own model:
        // a generation over another model's context cannot be written.
    });
}

// --- C++ exceptions ------------------------------------------------------------

fn grammar_run(grammar: &str, logit_bias: Vec<(Token, f32)>) -> Result<GenerationStats> {
    let model = default_model();
    let mut ctx = LlamaContext::new(&model, &ctx_params())?;
    let options = GenerateOptions::default()
        .with_max_tokens(16)
        .with_sampling(
            SamplingOptions::greedy()
                .with_grammar(grammar)
                .with_logit_bias(logit_bias),
        );
    let mut stats = None;
    for event in ctx.generate(demo::DEMO_PROMPT, &options)? {
        if let Event::Done(s) = event? {
            stats = Some(s);
        }
    }
    Ok(stats.expect("a Done event"))
}

#[test]
fn grammar_dead_end_stops_generation() {
    // "Unexpected empty grammar stack" was thrown out of llama_sampler_sample.
    in_child("grammar_dead_end_stops_generation", LIMIT, || {
        let stats = grammar_run(r#"root ::= "\x00""#, Vec::new()).unwrap();
        assert_eq!(stats.stop_reason, StopReason::GrammarDeadEnd);
    });
}

#[test]
fn grammar_whose_only_way_out_is_a_banned_eos_stops_generation() {
    in_child(
        "grammar_whose_only_way_out_is_a_banned_eos_stops_generation",
        LIMIT,
        || {
            let model = default_model();
            let eos = model.token_eos().unwrap();
            drop(model);
            let stats =
                grammar_run(r#"root ::= " there""#, vec![(eos, f32::NEG_INFINITY)]).unwrap();
            assert_eq!(stats.stop_reason, StopReason::GrammarDeadEnd);
            assert!(stats.generated_tokens <= 2, "{stats:?}");
        },
    );
}

#[test]
fn sampler_accept_of_a_token_the_grammar_forbids_is_a_typed_error() {
    in_child(
        "sampler_accept_of_a_token_the_grammar_forbids_is_a_typed_error",
        LIMIT,
        || {
            let model = default_model();
            let options = SamplingOptions::greedy().with_grammar(r#"root ::= "x""#);
            let mut sampler = Sampler::new(&model, &options).unwrap();
            let once = model.tokenize("Once", Tokenize::TEXT).unwrap()[0];
            assert!(matches!(
                sampler.accept(once),
                Err(Error::GrammarDeadEnd { .. })
            ));
            assert!(matches!(
                sampler.accept(Token(-5)),
                Err(Error::InvalidToken { .. })
            ));
        },
    );
}

#[test]
fn a_grammar_end_or_dead_end_from_accept_is_a_typed_error_not_an_abort() {
    // Used to abort: accepting end-of-generation before the grammar is done
    // (GGML_ABORT in llama_grammar_accept_impl), and using a sampler again
    // after its grammar's dead end (GGML_ASSERT(!stacks.empty())).
    in_child(
        "a_grammar_end_or_dead_end_from_accept_is_a_typed_error_not_an_abort",
        LIMIT,
        || {
            let model = default_model();
            let eos = model.token_eos().unwrap();
            let plain = SamplingOptions::greedy().with_grammar(r#"root ::= "xyz""#);
            let mut sampler = Sampler::new(&model, &plain).unwrap();
            assert!(matches!(
                sampler.accept(eos),
                Err(Error::GrammarDeadEnd { .. })
            ));
            // A grammar that may end here accepts it.
            let optional = SamplingOptions::greedy().with_grammar(r#"root ::= "xyz"?"#);
            Sampler::new(&model, &optional)
                .unwrap()
                .accept(eos)
                .unwrap();

            // A lazy grammar triggered by a token its grammar rejects.
            let lazy = SamplingOptions::chain(vec![
                SamplerStage::LazyGrammar {
                    grammar: r#"root ::= "xyz""#.into(),
                    trigger_words: Vec::new(),
                    trigger_tokens: vec![Token(5)],
                },
                SamplerStage::Greedy,
            ]);
            let mut sampler = Sampler::new(&model, &lazy).unwrap();
            sampler
                .accept(model.tokenize("Once", Tokenize::TEXT).unwrap()[0])
                .unwrap();
            assert!(matches!(
                sampler.accept(Token(5)),
                Err(Error::GrammarDeadEnd { .. })
            ));
            let mut ctx = LlamaContext::new(&model, &ctx_params()).unwrap();
            ctx.decode(&model.tokenize("Once", Tokenize::PROMPT).unwrap())
                .unwrap();
            assert!(matches!(
                sampler.sample(&mut ctx),
                Err(Error::GrammarDeadEnd { .. })
            ));
            assert!(matches!(
                sampler.accept(eos),
                Err(Error::GrammarDeadEnd { .. })
            ));
            // A reset brings the grammar back.
            sampler.reset();
            sampler.sample(&mut ctx).unwrap();
        },
    );
}

#[test]
fn logit_bias_outside_the_vocabulary_is_a_typed_error() {
    let model = default_model();
    let options =
        SamplingOptions::greedy().with_logit_bias(vec![(Token(model.n_vocab() as i32), -1.0)]);
    assert!(matches!(
        Sampler::new(&model, &options),
        Err(Error::InvalidToken { .. })
    ));
}

// --- Values llama.cpp asserts on ---------------------------------------------

fn override_rejected(key: &str, value: KvValue) -> Error {
    override_rejected_in(&moe_path(), key, value)
}

/// `plan` and `load` of `path` with `key` overridden both give
/// `InvalidModel` for that key.
fn override_rejected_in(path: &std::path::Path, key: &str, value: KvValue) -> Error {
    let params = LlamaModelParams::default().with_kv_override(key, value);
    let planned = params.plan(path);
    let backend = LlamaBackend::init();
    let loaded = LlamaModel::load(&backend, path, &params);
    match (planned, loaded) {
        (Err(Error::InvalidModel { key: k1, .. }), Err(e @ Error::InvalidModel { .. })) => {
            assert_eq!(k1, key);
            e
        }
        (p, l) => panic!("{key}: plan {p:?}, load {:?}", l.map(|_| "loaded")),
    }
}

#[test]
fn hparams_that_abort_the_loader_are_invalid_model() {
    // Each used to be a GGML_ASSERT in llama_model_base::load_hparams or
    // (the epsilons) in the first decode.
    in_child(
        "hparams_that_abort_the_loader_are_invalid_model",
        LIMIT,
        || {
            for (key, value) in [
                ("llama.block_count", KvValue::Int(0)),
                ("llama.block_count", KvValue::Int(513)),
                ("llama.expert_count", KvValue::Int(1025)),
                ("llama.expert_used_count", KvValue::Int(0)),
                ("llama.expert_used_count", KvValue::Int(5)),
                ("llama.expert_group_count", KvValue::Int(4)),
                ("llama.nextn_predict_layers", KvValue::Int(9)),
                ("llama.rope.scaling.type", KvValue::Str("linear2".into())),
                (
                    "llama.attention.layer_norm_rms_epsilon",
                    KvValue::Float(f64::NAN),
                ),
                (
                    "llama.attention.layer_norm_rms_epsilon",
                    KvValue::Float(-1.0),
                ),
            ] {
                let e = override_rejected(key, value);
                assert!(e.to_string().contains(key), "{e}");
            }
        },
    );
}

#[test]
fn a_rope_dimension_other_than_the_head_size_is_invalid_model() {
    // qwen3moe, deepseek and 60 more architectures assert
    // `n_embd_head == n_rot` when their graph is built (the first decode);
    // llama's loader throws for it itself.
    in_child(
        "a_rope_dimension_other_than_the_head_size_is_invalid_model",
        LIMIT,
        || {
            let path = llama_safe::demo::Family::Qwen3Moe.cached().unwrap();
            for rot in [8, 32] {
                let key = "qwen3moe.rope.dimension_count";
                let e = override_rejected_in(&path, key, KvValue::Int(rot));
                assert!(e.to_string().contains("head size 16"), "{e}");
            }
        },
    );
}

/// The demo MoE model with metadata `key` set to `(type, encoded value)`,
/// written to a new file.
fn rewritten(name: &str, key: &str, ty: u32, value: Vec<u8>) -> std::path::PathBuf {
    let layout = Layout::parse(std::fs::read(moe_path()).unwrap());
    let mut kvs = layout.kv_triples();
    match kvs.iter_mut().find(|(k, _, _)| k == key) {
        Some(kv) => *kv = (key.to_string(), ty, value),
        None => kvs.push((key.to_string(), ty, value)),
    }
    let path = scratch(name).join("model.gguf");
    std::fs::write(&path, layout.rebuild(&kvs)).unwrap();
    path
}

#[test]
fn file_values_that_abort_are_invalid_model() {
    in_child("file_values_that_abort_are_invalid_model", LIMIT, || {
        let backend = LlamaBackend::init();
        // block_count 0 in the file itself.
        let zero_blocks = rewritten(
            "zero-blocks",
            "llama.block_count",
            ty::U32,
            0u32.to_le_bytes().to_vec(),
        );
        // Two tokens with the same text: the loader asserts its maps agree.
        let layout = Layout::parse(std::fs::read(moe_path()).unwrap());
        let mut tokens = string_array_items(&layout.kv("tokenizer.ggml.tokens").unwrap().value);
        tokens[7] = tokens[6].clone();
        let duplicate = rewritten(
            "dup-token",
            "tokenizer.ggml.tokens",
            ty::ARRAY,
            string_array_value(&tokens),
        );
        for path in [&zero_blocks, &duplicate] {
            let params = LlamaModelParams::default();
            let planned = params.plan(path);
            let loaded = LlamaModel::load(&backend, path, &params);
            assert!(
                matches!(planned, Err(Error::InvalidModel { .. })),
                "{planned:?}"
            );
            assert!(matches!(loaded, Err(Error::InvalidModel { .. })));
        }
    });
}

#[test]
fn misaligned_tensor_data_is_invalid_for_mmap_and_loads_read() {
    // general.alignment 1 put tensor data off ggml's 32-byte alignment:
    // GGML_ASSERT "buffer pointer must be aligned" when memory-mapped.
    in_child(
        "misaligned_tensor_data_is_invalid_for_mmap_and_loads_read",
        LIMIT,
        || {
            let path = rewritten(
                "align",
                "general.alignment",
                ty::U32,
                1u32.to_le_bytes().to_vec(),
            );
            let backend = LlamaBackend::init();
            let mapped = LlamaModelParams::default().with_load_mode(LoadMode::Mmap);
            let file = gguf::GgufFile::open(&path).unwrap();
            if file
                .tensor_extents()
                .iter()
                .any(|(_, start, _)| start % 32 != 0)
            {
                assert!(matches!(
                    LlamaModel::load(&backend, &path, &mapped),
                    Err(Error::InvalidModel { .. })
                ));
                assert!(matches!(
                    mapped.plan(&path),
                    Err(Error::InvalidModel { .. })
                ));
            }
            // Read into aligned buffers, the same file is no danger (it loads,
            // or llama.cpp rejects its shifted data with an error).
            let read = LlamaModelParams::default().with_load_mode(LoadMode::Read);
            assert_eq!(
                read.plan(&path).is_ok(),
                LlamaModel::load(&backend, &path, &read).is_ok()
            );
        },
    );
}

#[test]
fn a_vocabulary_without_a_tokenizer_is_a_typed_error() {
    // tokenizer.ggml.model "none": every tokenizer call asserted.
    in_child(
        "a_vocabulary_without_a_tokenizer_is_a_typed_error",
        LIMIT,
        || {
            let params = LlamaModelParams::default()
                .with_kv_override("tokenizer.ggml.model", KvValue::Str("none".into()));
            let model = load_with(&params).unwrap();
            assert!(matches!(
                model.tokenize("Once", Tokenize::PROMPT),
                Err(Error::Unsupported { .. })
            ));
            assert!(matches!(
                model.token_bytes(Token(3), false),
                Err(Error::Unsupported { .. })
            ));
            let mut ctx = LlamaContext::new(&model, &ctx_params()).unwrap();
            assert!(ctx.generate("Once", &GenerateOptions::default()).is_err());
        },
    );
}

#[test]
fn a_bert_vocabulary_with_byte_tokens_is_invalid_model() {
    // A WPM vocabulary cannot render byte tokens: GGML_ABORT in token_to_byte.
    in_child(
        "a_bert_vocabulary_with_byte_tokens_is_invalid_model",
        LIMIT,
        || {
            let params = LlamaModelParams::default()
                .with_kv_override("tokenizer.ggml.model", KvValue::Str("bert".into()));
            assert!(matches!(
                load_with(&params),
                Err(Error::InvalidModel { .. })
            ));
        },
    );
}

#[test]
fn context_on_a_vocab_only_model_is_unsupported() {
    // Created fine, then aborted in the first decode.
    in_child(
        "context_on_a_vocab_only_model_is_unsupported",
        LIMIT,
        || {
            let model = load_with(&LlamaModelParams::default().with_vocab_only(true)).unwrap();
            assert!(!model
                .tokenize("Once upon a time", Tokenize::PROMPT)
                .unwrap()
                .is_empty());
            assert!(matches!(
                LlamaContext::new(&model, &ctx_params()),
                Err(Error::Unsupported { .. })
            ));
        },
    );
}

#[test]
fn partial_copy_across_kv_streams_is_a_typed_error() {
    // GGML_ASSERT "seq_cp() is only supported for full KV buffers".
    in_child(
        "partial_copy_across_kv_streams_is_a_typed_error",
        LIMIT,
        || {
            let model = default_model();
            let mut ctx = LlamaContext::new(
                &model,
                &ctx_params().with_n_seq_max(2).with_kv_unified(false),
            )
            .unwrap();
            ctx.decode(
                &model
                    .tokenize("Once upon a time", Tokenize::PROMPT)
                    .unwrap(),
            )
            .unwrap();
            assert!(matches!(
                ctx.seq_copy(0, 1, 0..2),
                Err(Error::InvalidParameter { .. })
            ));
            ctx.seq_copy(0, 1, ..).unwrap();
            assert_eq!(ctx.seq_pos_max(1), ctx.seq_pos_max(0));
            assert!(ctx.seq_shift(0, .., i32::MAX).is_err());
        },
    );
}

#[test]
fn absurd_thread_counts_are_clamped() {
    // with_threads(100_000) crashed (SIGSEGV) inside libgomp.
    in_child("absurd_thread_counts_are_clamped", LIMIT, || {
        let model = default_model();
        for n in [100_000, u32::MAX] {
            let params = ContextParams::default().with_n_ctx(64).with_threads(n);
            assert_eq!(params.threads(), limits::MAX_THREADS);
            let mut ctx = LlamaContext::new(&model, &params).unwrap();
            ctx.decode(&model.tokenize("Once", Tokenize::PROMPT).unwrap())
                .unwrap();
        }
    });
}

/// A context in embeddings mode (no pooling) that has decoded "Once upon".
fn embeddings_of_once_upon(model: &LlamaModel) -> LlamaContext {
    let mut ctx = LlamaContext::new(
        model,
        &ctx_params()
            .with_embeddings(true)
            .with_pooling(Pooling::None),
    )
    .unwrap();
    ctx.decode(&model.tokenize("Once upon", Tokenize::PROMPT).unwrap())
        .unwrap();
    ctx
}

#[test]
fn embeddings_are_sized_by_n_embd_out() {
    // Slices of n_embd floats over llama.cpp's n_embd_out were read out of
    // bounds; here the two agree, and the slice follows n_embd_out.
    let model = default_model();
    let ctx = embeddings_of_once_upon(&model);
    assert_eq!(
        ctx.embeddings_ith(0).unwrap().len(),
        model.n_embd_out() as usize
    );
}

// --- Patterns ----------------------------------------------------------------

#[test]
fn hostile_patterns_are_rejected_or_bounded() {
    // Deep nesting overflowed std::regex's stack when compiling; a long text
    // overflowed it when matching; (a*)*b ran for more than 300 s.
    in_child(
        "hostile_patterns_are_rejected_or_bounded",
        Duration::from_secs(60),
        || {
            let deep = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
            for p in [
                deep.as_str(),
                "(a*)*b",
                "(a|aa)*b",
                "(x+x+)+y",
                &"a".repeat(300),
            ] {
                assert!(
                    matches!(TensorPattern::new(p), Err(Error::InvalidPattern { .. })),
                    "{p:.40}"
                );
            }
            let p = TensorPattern::new(r"blk\.\d+\.ffn_up_exps").unwrap();
            assert!(!p.is_match(&"a".repeat(1_000_000)));
            // The worst patterns within the bounds, on the longest names.
            let name = "a".repeat(63);
            for p in [".*.*.*x", "a*a*a*b", r"(a|b)c*d*e*\d", "a+a+a+$x"] {
                let p = TensorPattern::new(p).unwrap();
                let start = Instant::now();
                assert!(!p.is_match(&name));
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "{p}: {:?}",
                    start.elapsed()
                );
            }
        },
    );
}

// --- Callbacks ---------------------------------------------------------------

#[test]
fn a_load_inside_the_progress_callback_does_not_deadlock() {
    in_child(
        "a_load_inside_the_progress_callback_does_not_deadlock",
        Duration::from_secs(60),
        || {
            use std::sync::{Arc, Mutex};
            let slot: Arc<Mutex<Option<LlamaModelParams>>> = Arc::default();
            let inner = slot.clone();
            let nested = Arc::new(Mutex::new(Vec::new()));
            let seen = nested.clone();
            let params = LlamaModelParams::default().with_progress_callback(move |p| {
                if p >= 1.0 {
                    // Take the params out first, so the nested load does not
                    // start yet another one.
                    if let Some(params) = inner.lock().unwrap().take() {
                        seen.lock().unwrap().push(load_with(&params).is_ok());
                    }
                }
                true
            });
            *slot.lock().unwrap() = Some(params.clone());
            let _model = load_with(&params).unwrap();
            assert_eq!(*nested.lock().unwrap(), [true]);
        },
    );
}

// --- State blobs ---------------------------------------------------------------

#[test]
fn corrupted_state_blobs_are_typed_errors() {
    // About 45% of corrupted blobs used to load without an error.
    let model = default_model();
    let mut ctx = LlamaContext::new(&model, &ctx_params()).unwrap();
    ctx.decode(
        &model
            .tokenize("Once upon a time", Tokenize::PROMPT)
            .unwrap(),
    )
    .unwrap();
    let saved = ctx.save_state().unwrap();
    let seq = ctx.save_seq_state(0).unwrap();
    let mut rng = 0x1234_5678_u64;
    let mut accepted = 0;
    for i in 0..200 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut bad = saved.clone();
        match i % 3 {
            0 => {
                let at = (rng as usize) % bad.len();
                bad[at] ^= 1 << (rng % 8);
            }
            1 => bad.truncate((rng as usize) % bad.len()),
            _ => bad.extend_from_slice(&[0; 7]),
        }
        if bad.starts_with(b"LLSAFEST") && ctx.load_state(&bad).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 0, "corrupted blobs accepted");
    assert!(matches!(ctx.load_state(&seq), Err(Error::State { .. })));
    assert!(matches!(
        ctx.load_seq_state(&saved, 0),
        Err(Error::State { .. })
    ));
    ctx.load_state(&saved).unwrap();
    ctx.load_seq_state(&seq, 0).unwrap();
    // Raw llama.cpp state (no header) still loads.
    ctx.load_state(&saved[40..]).unwrap(); // after the 40-byte header
}

// --- Logging -------------------------------------------------------------------

#[test]
fn a_logger_that_calls_back_into_the_crate_works() {
    // The bridge held its line buffer while calling the logger, so a nested
    // call's lines were dropped (or a nested capture panicked).
    in_child(
        "a_logger_that_calls_back_into_the_crate_works",
        LIMIT,
        || {
            use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
            static IN_LOGGER: AtomicBool = AtomicBool::new(false);
            static NESTED_OK: AtomicUsize = AtomicUsize::new(0);
            struct Reentrant;
            impl log::Log for Reentrant {
                fn enabled(&self, _: &log::Metadata) -> bool {
                    true
                }
                fn log(&self, _: &log::Record) {
                    if IN_LOGGER.swap(true, Ordering::SeqCst) {
                        return;
                    }
                    // Calls back into llama-safe (a GGUF read logs through the
                    // same bridge on this thread).
                    if gguf::GgufFile::open(moe_path()).is_ok() {
                        NESTED_OK.fetch_add(1, Ordering::SeqCst);
                    }
                    IN_LOGGER.store(false, Ordering::SeqCst);
                }
                fn flush(&self) {}
            }
            static LOGGER: Reentrant = Reentrant;
            log::set_logger(&LOGGER).unwrap();
            log::set_max_level(log::LevelFilter::Trace);
            let model = default_model();
            assert!(NESTED_OK.load(Ordering::SeqCst) > 0);
            assert_eq!(
                greedy_text(&model, demo::DEMO_PROMPT),
                demo::DEMO_CONTINUATION
            );
        },
    );
}

#[test]
fn banning_every_token_does_not_abort() {
    // With every logit at -inf the distribution sampler has nothing to draw.
    in_child("banning_every_token_does_not_abort", LIMIT, || {
        let model = default_model();
        let ban_all: Vec<(Token, f32)> = (0..model.n_vocab() as i32)
            .map(|t| (Token(t), f32::NEG_INFINITY))
            .collect();
        for temperature in [0.0, 1.0] {
            let mut ctx = LlamaContext::new(&model, &ctx_params()).unwrap();
            let options = GenerateOptions::default().with_max_tokens(4).with_sampling(
                SamplingOptions::default()
                    .with_temperature(temperature)
                    .with_logit_bias(ban_all.clone()),
            );
            let result: Result<Vec<Event>> = ctx
                .generate(demo::DEMO_PROMPT, &options)
                .and_then(|g| g.collect());
            // Whatever llama.cpp draws from nothing, it is an answer or an
            // error, not an abort (this test runs in a child process).
            if let Ok(events) = result {
                assert!(matches!(events.last(), Some(Event::Done(_))));
            }
        }
    });
}

#[test]
fn an_embedding_width_override_does_not_read_out_of_bounds() {
    in_child(
        "an_embedding_width_override_does_not_read_out_of_bounds",
        LIMIT,
        || {
            // Wider than the llama graph's output: a read past the tensor.
            let wide = LlamaModelParams::default()
                .with_kv_override("llama.embedding_length_out", KvValue::Int(128));
            assert!(matches!(load_with(&wide), Err(Error::InvalidModel { .. })));
            for width in [32, 64] {
                let params = LlamaModelParams::default()
                    .with_kv_override("llama.embedding_length_out", KvValue::Int(width));
                let model = load_with(&params).unwrap();
                let ctx = embeddings_of_once_upon(&model);
                assert_eq!(model.n_embd_out(), width as u32);
                assert_eq!(ctx.embeddings_ith(0).unwrap().len(), width as usize);
            }
        },
    );
}

/// `n_outputs_max`: llama.cpp asserts (aborts) on a limit below `n_seq_max`
/// and on a batch with more outputs than the limit; both are typed errors
/// here, checked in a child process so an abort would be counted.
#[test]
fn output_limit_is_checked_before_llama_cpp_asserts() {
    in_child(
        "output_limit_is_checked_before_llama_cpp_asserts",
        Duration::from_secs(60),
        || {
            let model = load_moe();
            let below = ContextParams::default()
                .with_n_ctx(256)
                .with_threads(1)
                .with_n_seq_max(2)
                .with_n_outputs_max(1);
            assert!(matches!(
                LlamaContext::new(&model, &below),
                Err(Error::InvalidParameter {
                    name: "n_outputs_max",
                    ..
                })
            ));
            assert!(matches!(
                LlamaModelParams::default().memory_plan(model.path(), &below),
                Err(Error::InvalidParameter {
                    name: "n_outputs_max",
                    ..
                })
            ));
            let embeddings = ContextParams::default()
                .with_n_ctx(256)
                .with_threads(1)
                .with_embeddings(true)
                .with_n_outputs_max(1);
            assert!(LlamaContext::new(&model, &embeddings).is_err());

            let mut ctx = LlamaContext::new(
                &model,
                &ContextParams::default()
                    .with_n_ctx(256)
                    .with_threads(1)
                    .with_n_outputs_max(1),
            )
            .unwrap();
            let tokens = model.tokenize(DEMO_PROMPT, Tokenize::PROMPT).unwrap();
            let mut batch = Batch::new();
            batch.add_sequence(&tokens, 0, 0, true).unwrap();
            batch.keep_all_outputs();
            match ctx.decode_batch(&batch) {
                Err(Error::Decode(DecodeError::TooManyOutputs { outputs, limit: 1 })) => {
                    assert_eq!(outputs, tokens.len())
                }
                other => panic!("expected TooManyOutputs, got {other:?}"),
            }
            // Generation asks for one output per decode, and its text is the same.
            let text = greedy_in(&mut ctx, DEMO_PROMPT, 64);
            assert!(text.starts_with(DEMO_CONTINUATION), "{text:?}");
        },
    );
}

// --- The CPU backend's kernels -----------------------------------------------

#[test]
fn dense_quantized_layers_decode_on_any_cpu() {
    // On a CPU with AMX, `-march=native` used to compile ggml's AMX buffer
    // type, which took the dense demo model's Q8_0 feed-forward weights, and
    // its matrix kernel segfaulted at the first decode (this project's 2-core
    // VM; ggml-org/llama.cpp#20824). llama-sys now builds without AMX unless
    // LLAMA_SYS_AMX=1. Nothing lands in an "AMX" buffer and the text is right.
    in_child("dense_quantized_layers_decode_on_any_cpu", LIMIT, || {
        let model = LlamaModel::load(
            &LlamaBackend::init(),
            dense_path(),
            &LlamaModelParams::default(),
        )
        .unwrap();
        assert!(
            model
                .placement()
                .buffers
                .iter()
                .all(|b| !b.name.contains("AMX")),
            "{:?}",
            model.placement()
        );
        for threads in [1, 2] {
            let mut ctx = LlamaContext::new(
                &model,
                &ContextParams::default()
                    .with_n_ctx(128)
                    .with_threads(threads),
            )
            .unwrap();
            assert_eq!(greedy_in(&mut ctx, DEMO_PROMPT, 32), DEMO_CONTINUATION);
        }
    });
}
