//! Generation on the demo model: known text through both APIs, exact stats,
//! stop strings, UTF-8 streaming, and one model shared by several threads.

mod common;

use common::*;
use llama_safe::demo::{DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::*;
use std::sync::Arc;

fn load() -> LlamaModel {
    let backend = LlamaBackend::init();
    LlamaModel::load(
        &backend,
        moe_path(),
        &LlamaModelParams::default().with_cpu_moe_all(),
    )
    .unwrap()
}

fn run(
    model: &LlamaModel,
    prompt: &str,
    options: &GenerateOptions,
) -> (String, Vec<Token>, GenerationStats) {
    let mut ctx = LlamaContext::new(
        model,
        &ContextParams::default().with_n_ctx(256).with_threads(1),
    )
    .unwrap();
    let (mut text, mut tokens, mut stats) = (String::new(), Vec::new(), None);
    for event in ctx.generate(prompt, options).unwrap() {
        match event.unwrap() {
            Event::Piece(p) => {
                text.push_str(&p.text);
                if p.token.0 >= 0 {
                    tokens.push(p.token);
                }
            }
            Event::Done(s) => stats = Some(s),
        }
    }
    (text, tokens, stats.expect("a Done event"))
}

fn greedy() -> GenerateOptions {
    GenerateOptions::default()
        .with_sampling(SamplingOptions::greedy())
        .with_max_tokens(64)
}

#[test]
fn high_level_api_gives_the_known_sentence_with_exact_stats() {
    let model = load();
    let (text, tokens, stats) = run(&model, DEMO_PROMPT, &greedy());
    assert_eq!(text, DEMO_CONTINUATION);
    assert_eq!(stats.stop_reason, StopReason::EndOfGeneration);
    assert_eq!(
        stats.prompt_tokens,
        model.tokenize(DEMO_PROMPT, Tokenize::CHAT).unwrap().len()
    );
    assert_eq!(stats.generated_tokens, tokens.len());
    let whole = model
        .tokenize(
            &format!("{DEMO_PROMPT}{DEMO_CONTINUATION}"),
            Tokenize::PROMPT,
        )
        .unwrap();
    assert_eq!(stats.prompt_tokens + stats.generated_tokens, whole.len());
    assert!(stats.time_to_first_token >= stats.prompt_time);
    assert!(stats.generation_tokens_per_second > 0.0 && stats.prompt_tokens_per_second > 0.0);
}

#[test]
fn low_level_api_gives_the_known_sentence() {
    let model = load();
    let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(128)).unwrap();
    let mut sampler = Sampler::new(&model, &SamplingOptions::greedy()).unwrap();
    ctx.decode(&model.tokenize(DEMO_PROMPT, Tokenize::PROMPT).unwrap())
        .unwrap();
    let mut out = Vec::new();
    loop {
        let token = sampler.sample(&mut ctx).unwrap();
        if model.is_eog(token) {
            break;
        }
        out.push(token);
        ctx.decode(&[token]).unwrap();
    }
    assert_eq!(model.detokenize(&out).unwrap(), DEMO_CONTINUATION);
    assert_eq!(
        ctx.n_past() as usize,
        model.tokenize(DEMO_PROMPT, Tokenize::PROMPT).unwrap().len() + out.len()
    );
}

#[test]
fn max_tokens_and_stop_strings() {
    let model = load();
    let (text, tokens, stats) = run(&model, DEMO_PROMPT, &greedy().with_max_tokens(3));
    assert_eq!(text, " there lived one");
    assert_eq!((tokens.len(), stats.generated_tokens), (3, 3));
    assert_eq!(stats.stop_reason, StopReason::MaxTokens);

    let options = greedy().with_stop(vec![" tiny".into()]);
    let (text, _, stats) = run(&model, DEMO_PROMPT, &options);
    assert_eq!(text, " there lived one");
    assert_eq!(stats.stop_reason, StopReason::StopString);
}

#[test]
fn cancel_flag_stops_generation() {
    let model = load();
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (text, _, stats) = run(&model, DEMO_PROMPT, &greedy().with_cancel(flag));
    assert_eq!(text, "");
    assert_eq!(stats.stop_reason, StopReason::Cancelled);
}

#[test]
fn streaming_never_splits_a_character_of_byte_tokens() {
    let model = load();
    let text = "€ and 😀 and é";
    let tokens = model.tokenize(text, Tokenize::TEXT).unwrap();
    // Not in the demo vocabulary: these characters come out as byte tokens.
    assert!(tokens.len() > text.chars().count());
    let mut stream = Utf8Stream::default();
    let mut out = String::new();
    let mut held_back = 0;
    for t in &tokens {
        let bytes = model.token_bytes(*t, false).unwrap();
        let piece = stream.push(&bytes);
        if piece.is_empty() && !bytes.is_empty() {
            held_back += 1;
        }
        out.push_str(&piece); // a String: a half character could not even be stored
    }
    out.push_str(&stream.finish());
    assert_eq!(out.trim_start(), text);
    assert!(
        held_back >= 5,
        "multi-byte characters were held until complete"
    );
}

#[test]
fn chat_template_of_the_model() {
    let model = load();
    let prompt = model
        .apply_chat_template(&[ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn one_model_many_threads_same_text() {
    let model = Arc::new(load());
    let alone = run(&model, DEMO_PROMPT, &greedy()).0;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || {
                (0..3)
                    .map(|_| run(&model, DEMO_PROMPT, &greedy()).0)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for text in h.join().unwrap() {
            assert_eq!(text, alone);
        }
    }
}

#[test]
fn seeded_sampling_is_reproducible() {
    let model = load();
    let options = GenerateOptions::default()
        .with_sampling(
            SamplingOptions::default()
                .with_temperature(0.8)
                .with_seed(7),
        )
        .with_max_tokens(8);
    assert_eq!(
        run(&model, DEMO_PROMPT, &options).0,
        run(&model, DEMO_PROMPT, &options).0
    );
}
