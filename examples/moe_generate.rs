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
use llama_safe::demo::{DemoModel, DEMO_PROMPT};
use llama_safe::*;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Generate text with MoE expert tensors kept in host memory")]
struct Args {
    /// GGUF model (default: the built-in demo MoE model, written to the cache on first use).
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// The prompt (default: the demo model's prompt).
    #[arg(long, short)]
    prompt: Option<String>,
    /// Keep all MoE expert tensors in host memory (llama.cpp's --cpu-moe).
    #[arg(long, conflicts_with = "n_cpu_moe")]
    cpu_moe: bool,
    /// Keep the expert tensors of the first N layers in host memory (llama.cpp's --n-cpu-moe).
    #[arg(long, value_name = "N")]
    n_cpu_moe: Option<u32>,
    /// Layers to put on the GPU (999: all).
    #[arg(long, short = 'g', default_value_t = 999)]
    n_gpu_layers: u32,
    /// Context size in tokens.
    #[arg(long, short = 'c', default_value_t = 4096)]
    ctx_size: u32,
    /// CPU threads (default: all cores).
    #[arg(long, short = 't')]
    threads: Option<u32>,
    /// Temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Top-k (0: off).
    #[arg(long, default_value_t = 40)]
    top_k: i32,
    /// Top-p (1: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Min-p (0: off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Repetition penalty (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u32,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: u32,
    /// Format the prompt with the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
    /// Load weights with plain reads instead of mmap (upstream suggests it with CPU overrides).
    #[arg(long)]
    no_mmap: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            eprintln!("  caused by: {s}");
            source = s.source();
        }
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let backend = LlamaBackend::init();
    let (path, prompt) = match &args.model {
        Some(path) => (
            path.clone(),
            args.prompt
                .clone()
                .unwrap_or_else(|| "Once upon a time".into()),
        ),
        None => {
            let path = DemoModel::Moe.cached()?;
            eprintln!("model: built-in demo MoE model ({})", path.display());
            (
                path,
                args.prompt.clone().unwrap_or_else(|| DEMO_PROMPT.into()),
            )
        }
    };

    let mut params = LlamaModelParams::default().with_n_gpu_layers(args.n_gpu_layers);
    if args.cpu_moe {
        params = params.with_cpu_moe_all();
    } else if let Some(n) = args.n_cpu_moe {
        params = params.with_n_cpu_moe(n);
    }
    if args.no_mmap {
        params = params.with_load_mode(LoadMode::Read);
    }
    let mut shown = -1i32;
    params = params.with_progress_callback(move |p| {
        let pct = (p * 100.0) as i32;
        // Redraw every 5%, not on each of llama.cpp's many small steps.
        if pct / 5 != shown {
            shown = pct / 5;
            let filled = (pct / 5) as usize;
            eprint!(
                "\rloading [{}{}] {pct:3}%",
                "#".repeat(filled),
                " ".repeat(20 - filled.min(20))
            );
            if pct >= 100 {
                eprintln!();
            }
        }
        true
    });

    let model = LlamaModel::load(&backend, &path, &params)?;
    if (args.cpu_moe || args.n_cpu_moe.is_some_and(|n| n > 0)) && !model.is_moe() {
        eprintln!(
            "note: {} is not a MoE model; --cpu-moe/--n-cpu-moe move nothing",
            path.display()
        );
    }
    eprintln!(
        "model: {} ({}), {} layers, {} experts ({} used), {} params",
        model.description(),
        model.architecture(),
        model.n_layer(),
        model.n_expert(),
        model.n_expert_used(),
        model.n_params()
    );
    eprint!("{}", model.placement());

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let ctx_params = ContextParams::default()
        .with_n_ctx(args.ctx_size)
        .with_threads(threads);
    let mut ctx = LlamaContext::new(&model, &ctx_params)?;

    let prompt = if args.chat {
        model.apply_chat_template(&[ChatMessage::new("user", prompt)], true)?
    } else {
        prompt
    };
    let sampling = SamplingOptions {
        temperature: args.temp,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        seed: args.seed,
        ..SamplingOptions::default()
    };
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
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
                eprintln!(
                    "stats: prompt {} tokens, generated {} tokens, time to first token {:.2} ms, \
                     prompt {:.1} tokens/s, generation {:.1} tokens/s, threads {threads}, stop: {:?}",
                    stats.prompt_tokens,
                    stats.generated_tokens,
                    stats.time_to_first_token.as_secs_f64() * 1e3,
                    stats.prompt_tokens_per_second,
                    stats.generation_tokens_per_second,
                    stats.stop_reason
                );
            }
        }
    }
    Ok(())
}
