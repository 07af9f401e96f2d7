//! Pooled sentence embeddings and their cosine similarities.
//!
//! ```text
//! cargo run --release --example embeddings                  # the demo model, demo sentences
//! cargo run --release --example embeddings -- --model bge-small.gguf --pooling cls \
//!     "A cat sat on the mat." "A dog lay on the rug." "Stock prices fell."
//! ```

use clap::{Parser, ValueEnum};
use llama_safe::cli::{run_main, ModelArgs};
use llama_safe::*;

#[derive(Parser, Debug)]
#[command(about = "Print sentence embeddings and their cosine similarities")]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// How token embeddings are pooled into one vector per sentence.
    #[arg(long, value_enum, default_value_t = PoolingArg::Mean)]
    pooling: PoolingArg,
    /// Print raw vectors instead of unit-length ones.
    #[arg(long)]
    no_normalize: bool,
    /// Values of each vector to print.
    #[arg(long, default_value_t = 6)]
    show: usize,
    /// The sentences (default: four demo sentences).
    sentences: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PoolingArg {
    /// What the GGUF file says.
    Model,
    Mean,
    Cls,
    Last,
}

fn main() {
    let args = Args::parse();
    run_main(|| run(args));
}

fn run(args: Args) -> Result<()> {
    let sentences: Vec<String> = if args.sentences.is_empty() {
        [
            "Once upon a time",
            "one tiny model",
            "many experts",
            "Once upon a time",
        ]
        .map(String::from)
        .to_vec()
    } else {
        args.sentences.clone()
    };
    let backend = args.model.backend()?;
    let model = args.model.load(&backend)?;
    let pooling = match args.pooling {
        PoolingArg::Model => Pooling::Model,
        PoolingArg::Mean => Pooling::Mean,
        PoolingArg::Cls => Pooling::Cls,
        PoolingArg::Last => Pooling::Last,
    };
    let params = ContextParams::default()
        .with_n_ctx(2048)
        .with_n_batch(2048)
        .with_n_ubatch(2048)
        .with_n_seq_max(sentences.len().clamp(1, 64) as u32)
        .with_kv_unified(true)
        .with_threads(args.model.threads())
        .with_embeddings(true)
        .with_pooling(pooling);
    let mut ctx = LlamaContext::new(&model, &params)?;
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let scale = if args.no_normalize {
        Normalize::None
    } else {
        Normalize::UnitLength
    };
    let vectors = ctx.embed(&texts, scale)?;

    println!(
        "{} sentences, {} dimensions, pooling {:?}",
        texts.len(),
        vectors[0].len(),
        ctx.pooling()
    );
    for (i, (text, v)) in texts.iter().zip(&vectors).enumerate() {
        let head: Vec<String> = v
            .iter()
            .take(args.show)
            .map(|x| format!("{x:+.4}"))
            .collect();
        println!("[{i}] {text:?}: [{} ...]", head.join(", "));
    }
    println!("cosine similarity:");
    print!("     ");
    for j in 0..vectors.len() {
        print!(" {j:>6}");
    }
    println!();
    for (i, a) in vectors.iter().enumerate() {
        print!("[{i:>2}] ");
        for b in &vectors {
            print!(" {:>6.3}", cosine(a, b));
        }
        println!();
    }
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
