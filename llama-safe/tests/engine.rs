//! The batching engine: batched sequences give what they give alone,
//! cancellation frees cells, admission waits for room, seeds reproduce,
//! stop strings hold across pieces, the prompt cache reuses a prefix.

mod common;

use common::*;
use llama_safe::engine::{Engine, EngineConfig, Handle, Request};
use llama_safe::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn model() -> LlamaModel {
    LlamaModel::load(&LlamaBackend::init(), moe_path(), &Default::default()).unwrap()
}

fn options(max_tokens: u32, sampling: SamplingOptions) -> GenerateOptions {
    GenerateOptions::default()
        .with_max_tokens(max_tokens)
        .with_sampling(sampling)
}

fn request(model: &LlamaModel, prompt: &str, options: GenerateOptions) -> Request {
    Request::new(model.tokenize(prompt, Tokenize::PROMPT).unwrap(), options)
}

/// The text and stats of a finished handle.
fn finish(handle: Handle) -> (String, GenerationStats) {
    let mut text = String::new();
    for event in handle {
        match event.unwrap() {
            Event::Piece(p) => text.push_str(&p.text),
            Event::Done(stats) => return (text, stats),
        }
    }
    panic!("no Done event");
}

/// What a request's events say, timing aside: every piece (token and
/// text, in order) and the stats' counts and stop reason.
#[derive(Debug, PartialEq)]
struct Transcript {
    pieces: Vec<(Token, String)>,
    prompt_tokens: usize,
    generated_tokens: usize,
    stop: StopReason,
}

fn transcript(events: impl IntoIterator<Item = Result<Event>>) -> Transcript {
    let mut pieces = Vec::new();
    for event in events {
        match event.unwrap() {
            Event::Piece(p) => pieces.push((p.token, p.text)),
            Event::Done(stats) => {
                return Transcript {
                    pieces,
                    prompt_tokens: stats.prompt_tokens,
                    generated_tokens: stats.generated_tokens,
                    stop: stats.stop_reason,
                }
            }
        }
    }
    panic!("no Done event");
}

/// The same request run alone through `LlamaContext::generate`.
fn solo_transcript(model: &LlamaModel, prompt: &str, options: &GenerateOptions) -> Transcript {
    let mut ctx = LlamaContext::new(
        model,
        &ContextParams::default().with_n_ctx(256).with_threads(2),
    )
    .unwrap();
    transcript(ctx.generate(prompt, options).unwrap())
}

/// Its text only.
fn solo(model: &LlamaModel, prompt: &str, options: &GenerateOptions) -> String {
    solo_transcript(model, prompt, options)
        .pieces
        .into_iter()
        .map(|(_, text)| text)
        .collect()
}

const PROMPTS: [&str; 6] = [
    demo::DEMO_PROMPT,
    "Once upon",
    "many experts",
    "tiny model with",
    "there lived one",
    "Once upon a time there lived one tiny",
];

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn batched_sequences_give_what_they_give_alone() {
    // In one shared KV cache, and in a cache per sequence.
    for unified in [true, false] {
        batched_as_alone(unified);
    }
}

fn batched_as_alone(unified: bool) {
    let model = model();
    let engine = Engine::new(
        &model,
        EngineConfig::default()
            .with_n_ctx(1024)
            .with_n_parallel(4)
            .with_threads(2)
            .with_kv_unified(unified),
    )
    .unwrap();
    let opts = options(24, SamplingOptions::greedy());
    // Twice: the second round reuses the first's cached prompts.
    for round in 0..2 {
        let handles: Vec<Handle> = PROMPTS
            .iter()
            .map(|p| engine.submit(request(&model, p, opts.clone())).unwrap())
            .collect();
        let results: Vec<Transcript> = handles.into_iter().map(transcript).collect();
        // Event for event: the same pieces (token and text), counts and stop
        // reason as the request alone through `generate` (one core makes both).
        for (prompt, batched) in PROMPTS.iter().zip(&results) {
            assert_eq!(
                batched,
                &solo_transcript(&model, prompt, &opts),
                "{prompt} (unified {unified}, round {round})"
            );
            assert_eq!(
                batched.prompt_tokens,
                model.tokenize(prompt, Tokenize::PROMPT).unwrap().len()
            );
            assert!(batched.generated_tokens > 0);
        }
        let first: String = results[0].pieces.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(first, demo::DEMO_CONTINUATION);
        if round == 0 {
            // Interleaved: one after another, each sequence would take at
            // least one decode per token it generated (its prompt's decode
            // gives the first token, each later token needs the one before
            // decoded); batched, one decode serves every running sequence.
            let s = engine.stats();
            let generated: u64 = results.iter().map(|t| t.generated_tokens as u64).sum();
            assert!(s.decodes < generated, "{s:?}, {generated} tokens generated");
        }
    }
    assert!(engine.stats().prompt_cache_hits > 0);
    // Without a shared cache a request gets its sequence's share.
    let share = engine.config().n_ctx_per_request() as usize;
    assert_eq!(share, if unified { 1024 } else { 256 });
    let prompt = model.tokenize(demo::DEMO_PROMPT, Tokenize::PROMPT).unwrap();
    let too_long = options((share - prompt.len() + 1) as u32, SamplingOptions::greedy());
    assert!(matches!(
        engine.submit(Request::new(prompt.clone(), too_long)).err(),
        Some(Error::PromptTooLong { n_ctx, .. }) if n_ctx as usize == share
    ));
    let fits = options((share - prompt.len()) as u32, SamplingOptions::greedy());
    assert!(engine.submit(Request::new(prompt, fits)).is_ok());
}

#[test]
fn dropping_a_handle_cancels_and_frees_its_cells() {
    let model = model();
    let engine = Engine::new(
        &model,
        EngineConfig::default()
            .with_n_ctx(2048)
            .with_n_parallel(2)
            .with_threads(2)
            .with_prompt_cache(false),
    )
    .unwrap();
    let eos = model.token_eos().unwrap();
    let long = options(
        1500,
        SamplingOptions::greedy().with_logit_bias(vec![(eos, f32::NEG_INFINITY)]),
    );
    let handle = engine
        .submit(request(&model, demo::DEMO_PROMPT, long))
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(handle.recv(), Some(Ok(Event::Piece(_)))));
    }
    assert!(engine.stats().kv_cells_used > 0);
    drop(handle);
    wait_until("the cancelled sequence is gone", || {
        let s = engine.stats();
        s.active == 0 && s.kv_cells_used == 0
    });
}

#[test]
fn admission_waits_for_room_and_refuses_what_never_fits() {
    let model = model();
    let engine = Engine::new(
        &model,
        EngineConfig::default()
            .with_n_ctx(64)
            .with_n_parallel(2)
            .with_threads(2)
            .with_queue(0),
    )
    .unwrap();
    let eos = model.token_eos().unwrap();
    let long = options(
        55,
        SamplingOptions::greedy().with_logit_bias(vec![(eos, f32::NEG_INFINITY)]),
    );
    let opts = options(40, SamplingOptions::greedy());
    // 5 + 55 cells reserved: the second (5 + 40) must wait for the first.
    let first = engine
        .submit(request(&model, demo::DEMO_PROMPT, long))
        .unwrap();
    assert!(matches!(first.recv(), Some(Ok(Event::Piece(_)))));
    let second = engine
        .submit(request(&model, demo::DEMO_PROMPT, opts.clone()))
        .unwrap();
    let s = engine.stats();
    assert_eq!((s.active, s.queued), (1, 1), "{s:?}");
    // n_parallel + queue = 2 requests are in flight: the engine is full.
    assert!(matches!(
        engine.submit(request(&model, "Once", opts.clone())),
        Err(Error::EngineBusy { .. })
    ));
    let (text, stats) = finish(first);
    assert_eq!(stats.stop_reason, StopReason::MaxTokens);
    assert_eq!(stats.generated_tokens, 55, "{text}");
    assert_eq!(finish(second).0, demo::DEMO_CONTINUATION);
    assert!(matches!(
        engine.submit(request(
            &model,
            demo::DEMO_PROMPT,
            options(60, SamplingOptions::greedy())
        )),
        Err(Error::PromptTooLong { .. })
    ));
    assert!(matches!(
        engine.submit(Request::new(Vec::new(), opts.clone())),
        Err(Error::EmptyPrompt)
    ));
    assert!(matches!(
        engine.submit(Request::new(vec![Token(1 << 20)], opts)),
        Err(Error::InvalidToken { .. })
    ));
}

#[test]
fn each_sequence_keeps_its_own_seed_sampler_and_stop_strings() {
    let model = model();
    let engine = Engine::new(
        &model,
        EngineConfig::default().with_n_ctx(1024).with_threads(2),
    )
    .unwrap();
    let seeded = options(
        16,
        SamplingOptions::default()
            .with_temperature(1.5)
            .with_top_k(0)
            .with_top_p(1.0)
            .with_min_p(0.0)
            .with_seed(42),
    );
    let stop = options(24, SamplingOptions::greedy()).with_stop(vec!["tiny mo".into()]);
    let grammar = options(
        8,
        SamplingOptions::greedy().with_grammar(r#"root ::= " there lived""#),
    );
    let a = engine
        .submit(request(&model, "Once upon", seeded.clone()))
        .unwrap();
    let b = engine
        .submit(request(&model, demo::DEMO_PROMPT, stop))
        .unwrap();
    let c = engine
        .submit(request(&model, "Once upon", seeded.clone()))
        .unwrap();
    let d = engine
        .submit(request(&model, demo::DEMO_PROMPT, grammar))
        .unwrap();
    let (a, _) = finish(a);
    let (b, b_stats) = finish(b);
    let (c, _) = finish(c);
    let (d, _) = finish(d);
    assert_eq!(a, c, "the same seed gives the same text");
    assert_eq!(a, solo(&model, "Once upon", &seeded));
    assert_eq!(b, " there lived one ");
    assert_eq!(b_stats.stop_reason, StopReason::StopString);
    assert_eq!(d, " there lived");
}

#[test]
fn the_prompt_cache_reuses_a_shared_prefix() {
    let model = model();
    let engine = Engine::new(
        &model,
        EngineConfig::default().with_n_ctx(1024).with_threads(2),
    )
    .unwrap();
    let opts = options(24, SamplingOptions::greedy());
    let prompt = model.tokenize(demo::DEMO_PROMPT, Tokenize::PROMPT).unwrap();
    let (first, _) = finish(
        engine
            .submit(Request::new(prompt.clone(), opts.clone()))
            .unwrap(),
    );
    assert_eq!(engine.stats().prompt_cache_hits, 0);
    let (again, _) = finish(
        engine
            .submit(Request::new(prompt.clone(), opts.clone()))
            .unwrap(),
    );
    assert_eq!(first, again);
    let s = engine.stats();
    assert_eq!(s.prompt_cache_hits, 1);
    assert_eq!(s.prompt_cache_tokens, prompt.len() as u64 - 1);
    // A longer prompt sharing the first one's tokens reuses them too.
    let (longer, _) = finish(
        engine
            .submit(request(
                &model,
                "Once upon a time there lived",
                opts.clone(),
            ))
            .unwrap(),
    );
    assert_eq!(longer, solo(&model, "Once upon a time there lived", &opts));
    assert_eq!(engine.stats().prompt_cache_hits, 2);
}

#[test]
fn handles_work_from_async_code_and_other_threads() {
    let model = model();
    let engine = Arc::new(
        Engine::new(
            &model,
            EngineConfig::default().with_n_ctx(1024).with_threads(2),
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let engine = engine.clone();
            let model = model.clone();
            std::thread::spawn(move || {
                let handle = engine
                    .submit(request(
                        &model,
                        demo::DEMO_PROMPT,
                        options(24, SamplingOptions::greedy()),
                    ))
                    .unwrap();
                // A minimal executor: the future is ready or woken by the engine.
                let text = futures_lite_block_on(async move {
                    let mut text = String::new();
                    while let Some(event) = handle.recv_async().await {
                        if let Event::Piece(p) = event.unwrap() {
                            text.push_str(&p.text);
                        }
                    }
                    text
                });
                assert_eq!(text, demo::DEMO_CONTINUATION);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Polls a future to completion on this thread, parking between wake-ups.
fn futures_lite_block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn a_slow_sampler_build_does_not_stall_running_sequences() {
    // The engine built each request's sampler in its own step, so a large
    // grammar stopped every running sequence for as long as it took.
    let model = model();
    let mut grammar = String::from("root ::= r0\n");
    // Large (about 1 MB, near the limits), but with one parse stack.
    let words = " once upon a time".repeat(6);
    for i in 0..8000 {
        grammar.push_str(&format!("r{i} ::= \"{words}\" r{}\n", i + 1));
    }
    grammar.push_str("r8000 ::= \" there\"\n");
    let slow = SamplingOptions::greedy().with_grammar(grammar);
    // What one build takes here (the median of three, past the first).
    drop(Sampler::new(&model, &slow).unwrap());
    let mut builds: Vec<Duration> = (0..3)
        .map(|_| {
            let start = Instant::now();
            drop(Sampler::new(&model, &slow).unwrap());
            start.elapsed()
        })
        .collect();
    builds.sort();
    let build = builds[1];
    let engine = Engine::new(
        &model,
        EngineConfig::default()
            .with_n_ctx(2048)
            .with_n_parallel(2)
            .with_threads(1)
            .with_queue(4),
    )
    .unwrap();
    let eos = model.token_eos().unwrap();
    let long = SamplingOptions::greedy().with_logit_bias(vec![(eos, f32::NEG_INFINITY)]);
    // Long enough to outlast the slow request whatever the machine's
    // speed; cancelled once that one is done.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let long_options = options(2000, long).with_cancel(stop.clone());
    let running = engine
        .submit(request(&model, demo::DEMO_PROMPT, long_options))
        .unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut times = Vec::new();
        for event in running {
            let Ok(event) = event else { break }; // cancelled
            if let Event::Piece(_) = event {
                times.push(Instant::now());
                if times.len() == 1 {
                    first_tx.send(()).unwrap();
                }
            }
        }
        times
    });
    first_rx.recv().unwrap();
    // (Submitting checks the options by building a sampler on this thread;
    // the engine then builds its own: that is the build measured here.)
    let slow_request = engine
        .submit(request(&model, demo::DEMO_PROMPT, options(2, slow)))
        .unwrap();
    let submitted = Instant::now();
    let (_, stats) = finish(slow_request);
    assert_eq!(stats.generated_tokens, 2);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let times = reader.join().unwrap();
    assert!(
        times.len() < 2000,
        "the long sequence ended before the slow request did"
    );
    let worst = times
        .windows(2)
        .filter(|w| w[1] > submitted)
        .map(|w| w[1] - w[0])
        .max()
        .expect("pieces after the slow request was submitted");
    eprintln!("sampler build {build:?}; worst gap of the running sequence {worst:?}");
    assert!(
        worst < build / 2,
        "the running sequence waited {worst:?} (the build takes {build:?})"
    );
}
