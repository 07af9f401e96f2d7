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

#[test]
fn log_probabilities_of_each_piece() {
    let model = load();
    let mut ctx = LlamaContext::new(
        &model,
        &ContextParams::default().with_n_ctx(256).with_threads(1),
    )
    .unwrap();
    let options = greedy().with_logprobs(4);
    let mut pieces = 0;
    for event in ctx.generate(DEMO_PROMPT, &options).unwrap() {
        if let Event::Piece(p) = event.unwrap() {
            let Some(lp) = p.logprob else {
                continue; // the held-back tail carries none
            };
            pieces += 1;
            assert_eq!(lp.top.len(), 4);
            // Greedy takes the most likely token; the list is sorted.
            assert_eq!(lp.top[0], (p.token, lp.logprob));
            assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
            assert!(lp.logprob <= 0.0);
            let mass: f32 = lp.top.iter().map(|(_, l)| l.exp()).sum();
            assert!(mass <= 1.0 + 1e-4, "{mass}");
        }
    }
    assert_eq!(pieces, 9);
    // Without asking, none; more than the most is a typed error.
    let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(256)).unwrap();
    for event in ctx.generate(DEMO_PROMPT, &greedy()).unwrap() {
        if let Event::Piece(p) = event.unwrap() {
            assert!(p.logprob.is_none());
        }
    }
    let too_many = greedy().with_logprobs(MAX_TOP_LOGPROBS + 1);
    assert!(matches!(
        ctx.generate(DEMO_PROMPT, &too_many).err(),
        Some(Error::InvalidParameter {
            name: "logprobs",
            ..
        })
    ));
}

#[test]
fn template_options_and_a_template_of_ones_own() {
    use llama_safe::chat::{ReasoningSplitter, TemplateOptions};
    let thinking = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}\
                    {% if add_generation_prompt %}assistant: {% if enable_thinking is defined and not enable_thinking %}\
                    <think></think>{% else %}<think>{% endif %}{% endif %}";
    let params = LlamaModelParams::default().with_chat_template(thinking);
    let model = LlamaModel::load(&LlamaBackend::init(), moe_path(), &params).unwrap();
    assert_eq!(model.chat_template().as_deref(), Some(thinking));
    let hi = [ChatMessage::new("user", "Hi")];
    let on = model
        .apply_chat_template_with(&hi, &TemplateOptions::default())
        .unwrap();
    assert_eq!(on, "user: Hi\nassistant: <think>");
    assert!(ReasoningSplitter::for_prompt(&on).thinking());
    let off = model
        .apply_chat_template_with(&hi, &TemplateOptions::default().with_thinking(false))
        .unwrap();
    assert_eq!(off, "user: Hi\nassistant: <think></think>");
    assert!(!ReasoningSplitter::for_prompt(&off).thinking());
    // A template with no tool syntax gets the tools in a system message.
    let tool = Tool {
        name: "weather".into(),
        description: "The weather".into(),
        parameters: serde_json::json!({"type": "object"}),
    };
    let with_tools = model
        .apply_chat_template_with(&hi, &TemplateOptions::default().with_tools(vec![tool]))
        .unwrap();
    assert!(
        with_tools.starts_with("system: You can call these tools:"),
        "{with_tools}"
    );
    // Too big a template is refused at load.
    let huge =
        LlamaModelParams::default().with_chat_template("x".repeat(MAX_CHAT_TEMPLATE_BYTES + 1));
    assert!(matches!(
        LlamaModel::load(&LlamaBackend::init(), moe_path(), &huge),
        Err(Error::InvalidParameter {
            name: "chat_template",
            ..
        })
    ));
}
