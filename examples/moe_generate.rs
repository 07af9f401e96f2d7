//! Load a GGUF model with MoE expert offload and generate text.
//!
//! ```text
//! cargo run --release --example moe_generate                      # the demo MoE model
//! cargo run --release --example moe_generate -- --model qwen3-30b-a3b-q4_k_m.gguf \
//!     --n-gpu-layers 999 --cpu-moe --prompt "Explain mixture of experts"
//! ```
//!
//! The generated text goes to stdout; progress, placement and stats go to
//! stderr, so the text can be piped.

use clap::Parser;
use llama_safe::demo::DEMO_PROMPT;
use llama_safe::*;
use llama_workspace::cli::{run_main, stats_line, ModelArgs, SamplingArgs};
use std::io::Write;

#[derive(Parser, Debug)]
#[command(about = "Generate text with MoE expert tensors kept in host memory")]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// The prompt (default: the demo model's prompt).
    #[arg(long, short)]
    prompt: Option<String>,
    /// Context size in tokens.
    #[arg(long, short = 'c', default_value_t = 4096)]
    ctx_size: u32,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: u32,
    /// Format the prompt with the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
}

fn main() {
    let args = Args::parse();
    run_main(|| run(args));
}

fn run(args: Args) -> Result<()> {
    let backend = LlamaBackend::init();
    let model = args.model.load(&backend)?;
    let threads = args.model.threads();
    let ctx_params = ContextParams::default()
        .with_n_ctx(args.ctx_size)
        .with_threads(threads);
    let mut ctx = LlamaContext::new(&model, &ctx_params)?;

    let prompt = args.prompt.unwrap_or_else(|| DEMO_PROMPT.into());
    let prompt = if args.chat {
        model.apply_chat_template(&[ChatMessage::new("user", prompt)], true)?
    } else {
        prompt
    };
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: args.sampling.options(),
        ..GenerateOptions::default()
    };

    let mut out = std::io::stdout().lock();
    if !args.chat {
        let _ = write!(out, "{prompt}");
    }
    for event in model.generate(&mut ctx, &prompt, &options)? {
        match event? {
            Event::Piece(piece) => {
                let _ = write!(out, "{}", piece.text);
                let _ = out.flush();
            }
            Event::Done(stats) => {
                let _ = writeln!(out);
                eprintln!("{}", stats_line(&stats, threads));
            }
        }
    }
    Ok(())
}
