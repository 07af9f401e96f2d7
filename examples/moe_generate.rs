//! Load a GGUF model with MoE expert offload and generate text.
//!
//! ```text
//! cargo run --release --example moe_generate                      # the demo MoE model
//! cargo run --release --example moe_generate -- --model qwen3-30b-a3b-q4_k_m.gguf \
//!     --n-gpu-layers 999 --cpu-moe --prompt "Explain mixture of experts"
//! ```
//!
//! `--image FILE` (with `--mmproj FILE`, or the demo projector for the demo
//! model) puts images in the prompt, through the model's projector.
//!
//! `--fit` fits the load to the devices' free memory less `--fit-target`
//! MiB, as llama.cpp's `--fit` does: the smallest `--n-cpu-moe` whose
//! weights, KV cache and compute buffers fit, then fewer `--n-gpu-layers`,
//! then a smaller context down to `--fit-ctx` (dry runs of llama.cpp's
//! loader and context, see `LlamaModelParams::fit`). `--fit-device-memory
//! 20G` fits to a fixed size per device instead. `--list-devices` shows
//! what ggml found.
//!
//! The generated text goes to stdout; progress, placement and stats go to
//! stderr, so the text can be piped.

use clap::Parser;
use llama_safe::cli::{
    run_main, stats_line, GenerationArgs, MediaArgs, SamplingArgs, SpeculationArgs,
};
use llama_safe::demo::DEMO_PROMPT;
use llama_safe::*;
use std::io::Write;

#[derive(Parser, Debug)]
#[command(about = "Generate text with MoE expert tensors kept in host memory")]
struct Args {
    #[command(flatten)]
    generation: GenerationArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    speculation: SpeculationArgs,
    #[command(flatten)]
    media: MediaArgs,
    /// The prompt (default: the demo model's prompt).
    #[arg(long, short)]
    prompt: Option<String>,
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
    let threads = args.generation.model.threads();
    // --fit leaves room for the projector on its device.
    let reserved = match args.generation.fit.enabled() {
        true => args.media.reserved(&args.generation.model)?,
        false => Vec::new(),
    };
    let Some((model, ctx_params)) = args.generation.load_reserving(&reserved)? else {
        return Ok(()); // --list-devices
    };
    let speculation = args.speculation.speculation(&model, threads)?;
    let projector = args.media.projector(&model, &args.generation.model)?;
    let mut ctx = LlamaContext::new(&model, &args.speculation.context(ctx_params))?;

    let mut prompt = args.prompt.unwrap_or_else(|| DEMO_PROMPT.into());
    if let Some(projector) = &projector {
        if !prompt.contains(projector.marker()) {
            prompt = format!(
                "{}{prompt}",
                projector.marker().repeat(args.media.image.len())
            );
        }
    }
    let prompt = if args.chat {
        model.apply_chat_template(&[ChatMessage::new("user", prompt)], true)?
    } else {
        prompt
    };
    let mut options = GenerateOptions::default()
        .with_max_tokens(args.max_tokens)
        .with_sampling(args.sampling.options());
    if let Some(speculation) = speculation {
        options = options.with_speculation(speculation);
    }

    let mut out = std::io::stdout().lock();
    let generation = match &projector {
        Some(projector) => {
            let how = if args.chat {
                Tokenize::CHAT
            } else {
                Tokenize::PROMPT
            };
            let chunks = args.media.chunks(projector, &prompt, how)?;
            ctx.generate_media(&chunks, &options)?
        }
        None => {
            if !args.chat {
                let _ = write!(out, "{prompt}");
            }
            ctx.generate(&prompt, &options)?
        }
    };
    for event in generation {
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
