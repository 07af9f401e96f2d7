//! Load a GGUF model with MoE expert offload and generate text.
//!
//! ```text
//! cargo run --release --example moe_generate                      # the demo MoE model
//! cargo run --release --example moe_generate -- --model qwen3-30b-a3b-q4_k_m.gguf \
//!     --n-gpu-layers 999 --cpu-moe --prompt "Explain mixture of experts"
//! ```
//!
//! `--fit-device-memory 20G` picks `--n-cpu-moe` itself: the smallest `n`
//! whose weights, KV cache and compute buffers on the accelerators fit
//! (dry runs of llama.cpp's loader and context, see `fit_n_cpu_moe`).
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
    /// Pick --n-cpu-moe so that weights, KV cache and compute buffers on the
    /// accelerators fit SIZE (bytes, or with K, M, G, T: 24G, 512M).
    #[arg(long, value_name = "SIZE", value_parser = llama_workspace::cli::parse_size,
          conflicts_with_all = ["cpu_moe", "n_cpu_moe"])]
    fit_device_memory: Option<u64>,
}

fn main() {
    let args = Args::parse();
    run_main(|| run(args));
}

fn run(mut args: Args) -> Result<()> {
    let backend = LlamaBackend::init();
    let threads = args.model.threads();
    let ctx_params = ContextParams::default()
        .with_n_ctx(args.ctx_size)
        .with_threads(threads);
    if let Some(budget) = args.fit_device_memory {
        args.model.n_cpu_moe = Some(fit(&args.model, budget, &ctx_params)?);
    }
    let model = args.model.load(&backend)?;
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
    for event in ctx.generate(&prompt, &options)? {
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

/// The `--n-cpu-moe` that `--fit-device-memory` picks, and why, on stderr.
fn fit(model: &ModelArgs, budget: u64, ctx: &ContextParams) -> Result<u32> {
    let path = model.path()?;
    let params = model.params();
    let fit = params.fit_n_cpu_moe(&path, ctx, budget, None)?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let on = context::device_totals(&fit.memory, None);
    if fit.device_bytes == 0 {
        eprintln!(
            "fit: nothing goes to an accelerator with these settings (no GPU or RPC device): \
             --n-cpu-moe 0"
        );
        return Ok(0);
    }
    eprintln!(
        "fit: --n-cpu-moe {}: {:.1} MiB on the accelerators (weights {:.1}, KV cache {:.1}, \
         compute {:.1}) within {:.1} MiB; {} dry runs",
        fit.n_cpu_moe,
        mib(fit.device_bytes),
        mib(on.model_bytes),
        mib(on.context_bytes),
        mib(on.compute_bytes),
        mib(budget),
        fit.dry_runs
    );
    if fit.n_cpu_moe > 0 {
        let fewer = params
            .with_n_cpu_moe(fit.n_cpu_moe - 1)
            .memory_plan(&path, ctx)?;
        eprintln!(
            "fit: --n-cpu-moe {} would need {:.1} MiB",
            fit.n_cpu_moe - 1,
            mib(context::device_bytes(&fewer, None))
        );
    }
    Ok(fit.n_cpu_moe)
}
