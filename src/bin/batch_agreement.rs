//! How often a sequence decoded in a batch gives the same greedy text as the
//! same prompt decoded alone. llama.cpp's batched kernels are not always
//! bit-identical to single-sequence ones, so on real-sized models the two
//! can drift apart after some tokens; this measures how often and where.
//!
//! ```text
//! cargo run --release --bin batch_agreement -- --model m.gguf --prompts 32 --parallel 4
//! ```

use clap::Parser;
use llama_safe::cli::run_main;
use llama_safe::engine::{Engine, EngineConfig, Request};
use llama_safe::*;
use llama_workspace::bench::serving::prompt;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Batched against solo greedy text, prompt by prompt")]
struct Args {
    /// The GGUF model (default: the demo model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Distinct prompts.
    #[arg(long, default_value_t = 32)]
    prompts: usize,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 4)]
    parallel: u32,
    /// Tokens per answer (EOS banned).
    #[arg(long, default_value_t = 48)]
    max_tokens: u32,
    /// Threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
}

fn main() {
    let args = Args::parse();
    run_main(|| {
        let backend = LlamaBackend::init();
        let path = match &args.model {
            Some(p) => p.clone(),
            None => demo::DemoModel::Moe.cached()?,
        };
        let model = LlamaModel::load(&backend, &path, &Default::default())?;
        let eos = model.token_eos().unwrap_or(Token(2));
        let options = GenerateOptions::default()
            .with_max_tokens(args.max_tokens)
            .with_sampling(
                SamplingOptions::greedy().with_logit_bias(vec![(eos, f32::NEG_INFINITY)]),
            );
        let engine = Engine::new(
            &model,
            EngineConfig::default()
                .with_n_ctx(8192)
                .with_n_parallel(args.parallel)
                .with_threads(args.threads)
                .with_prompt_cache(false),
        )?;
        let handles = (0..args.prompts)
            .map(|i| {
                let tokens = model.tokenize(&prompt(i), Tokenize::PROMPT)?;
                engine.submit(Request::new(tokens, options.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        let batched = handles
            .into_iter()
            .map(|h| h.text())
            .collect::<Result<Vec<_>>>()?;
        let mut ctx = LlamaContext::new(
            &model,
            &ContextParams::default()
                .with_n_ctx(1024)
                .with_threads(args.threads),
        )?;
        let mut same = 0;
        let mut diverged_at = Vec::new();
        for (i, b) in batched.iter().enumerate() {
            ctx.clear();
            let mut solo = String::new();
            for event in ctx.generate(&prompt(i), &options)? {
                if let Event::Piece(p) = event? {
                    solo.push_str(&p.text);
                }
            }
            if &solo == b {
                same += 1;
            } else {
                let at = solo
                    .chars()
                    .zip(b.chars())
                    .take_while(|(x, y)| x == y)
                    .count();
                diverged_at.push(at);
            }
        }
        println!(
            "{} of {} prompts give the same greedy text batched ({} at a time) as alone; \
             {} tokens each; model {}; threads {}",
            same,
            args.prompts,
            args.parallel,
            args.max_tokens,
            path.display(),
            args.threads
        );
        if !diverged_at.is_empty() {
            println!("the others first differ at character {diverged_at:?}");
        }
        Ok(())
    });
}
