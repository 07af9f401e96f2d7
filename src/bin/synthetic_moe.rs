//! Writes a synthetic MoE GGUF of a chosen shape (the demo vocabulary, random
//! weights that compute like trained ones), for measuring offload on models
//! big enough to matter without downloading any.
//!
//! ```text
//! cargo run --release --bin synthetic_moe -- --out moe-0.8g.gguf \
//!     --layers 8 --embd 1024 --ff 1024 --experts 32 --used 4
//! # shaped like Qwen3-30B-A3B (48 blocks, 128 experts, 8 used), narrower:
//! cargo run --release --bin synthetic_moe -- --out qwen3moe-3g.gguf --family qwen3moe \
//!     --layers 48 --embd 768 --ff 192 --experts 128 --used 8 --heads 8
//! ```

use clap::Parser;
use llama_safe::cli::run_main;
use llama_safe::demo::{Family, SyntheticMoe};
use llama_safe::gguf::GgmlType;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Write a synthetic MoE GGUF model")]
struct Args {
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Layers.
    #[arg(long, default_value_t = 8)]
    layers: u32,
    /// Embedding width.
    #[arg(long, default_value_t = 1024)]
    embd: u32,
    /// Hidden width of each expert.
    #[arg(long, default_value_t = 1024)]
    ff: u32,
    /// Experts per layer.
    #[arg(long, default_value_t = 32)]
    experts: u32,
    /// Experts used per token.
    #[arg(long, default_value_t = 4)]
    used: u32,
    /// Attention heads.
    #[arg(long, default_value_t = 8)]
    heads: u32,
    /// Store experts as F16 instead of Q8_0.
    #[arg(long)]
    f16_experts: bool,
    /// Tensor layout: llama (Mixtral), qwen3moe, phimoe, deepseek or gpt-oss.
    #[arg(long, default_value = "llama", value_parser = parse_family)]
    family: Family,
}

fn parse_family(arch: &str) -> Result<Family, String> {
    Family::ALL
        .into_iter()
        .find(|f| f.arch() == arch)
        .ok_or_else(|| {
            let known: Vec<&str> = Family::ALL.iter().map(|f| f.arch()).collect();
            format!("unknown family {arch:?}; one of {}", known.join(", "))
        })
}

fn main() {
    let args = Args::parse();
    run_main(|| {
        let shape = SyntheticMoe {
            n_layer: args.layers,
            n_embd: args.embd,
            n_ff: args.ff,
            n_expert: args.experts,
            n_expert_used: args.used,
            n_head: args.heads,
            expert_type: if args.f16_experts {
                GgmlType::F16
            } else {
                GgmlType::Q8_0
            },
        };
        eprintln!(
            "writing {} ({}, {:.1} MiB of experts)",
            args.out.display(),
            args.family.name(),
            shape.expert_bytes() as f64 / (1024.0 * 1024.0)
        );
        args.family.write(&shape, &args.out)?;
        let size = std::fs::metadata(&args.out).map_or(0, |m| m.len());
        eprintln!("wrote {} bytes", size);
        Ok(())
    });
}
