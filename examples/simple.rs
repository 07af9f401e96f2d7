//! The shortest complete program: load a GGUF model and generate text.
//!
//! ```text
//! cargo run --release --example simple                 # the demo model
//! cargo run --release --example simple -- model.gguf "Your prompt"
//! ```

use llama_safe::demo::{DemoModel, DEMO_PROMPT};
use llama_safe::*;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = match args.next() {
        Some(path) => path.into(),
        None => DemoModel::Moe.cached()?,
    };
    let prompt = args.next().unwrap_or_else(|| DEMO_PROMPT.to_string());

    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, &path, &LlamaModelParams::default())?;
    let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(2048))?;
    let options = GenerateOptions::default()
        .with_max_tokens(64)
        .with_sampling(SamplingOptions::greedy());

    print!("{prompt}");
    for event in ctx.generate(&prompt, &options)? {
        if let Event::Piece(piece) = event? {
            print!("{}", piece.text);
        }
    }
    println!();
    Ok(())
}
