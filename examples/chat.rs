//! An interactive chat with the model's own template, keeping the KV cache
//! across turns: each turn decodes only what the template added since the
//! last one.
//!
//! ```text
//! cargo run --release --example chat                       # the demo model
//! cargo run --release --example chat -- --model model.gguf --cpu-moe
//! printf 'Hi\nTell me more\n' | cargo run --release --example chat -- --temp 0
//! ```
//!
//! Replies go to stdout; prompts, cache reuse and stats go to stderr. An
//! empty line or end of input ends the chat.

use clap::Parser;
use llama_safe::cli::{run_main, stats_line, GenerationArgs, SamplingArgs};
use llama_safe::*;
use std::io::{BufRead, IsTerminal, Write};

#[derive(Parser, Debug)]
#[command(about = "Chat with a GGUF model, reusing the KV cache across turns")]
struct Args {
    #[command(flatten)]
    generation: GenerationArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// A system message to start the conversation with.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: u32,
}

fn main() {
    let args = Args::parse();
    run_main(|| run(args));
}

fn run(args: Args) -> Result<()> {
    let Some((model, ctx_params)) = args.generation.load()? else {
        return Ok(()); // --list-devices
    };
    let threads = args.generation.model.threads();
    let mut ctx = LlamaContext::new(&model, &ctx_params)?;
    let options = GenerateOptions::default()
        .with_max_tokens(args.max_tokens)
        .with_sampling(args.sampling.options());

    let mut messages: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage::new("system", s.clone()))
        .collect();
    // The text whose tokens are in the KV cache, so each turn only decodes
    // the rest of the newly formatted conversation.
    let mut cached = String::new();
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut lines = stdin.lock().lines();
    let mut out = std::io::stdout().lock();
    for turn in 1.. {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next().transpose().map_err(|source| Error::System {
            what: "read standard input".into(),
            source: source.into(),
        })?
        else {
            break;
        };
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        messages.push(ChatMessage::new("user", line));
        let formatted = model.apply_chat_template(&messages, true)?;
        let prompt = match formatted.strip_prefix(cached.as_str()) {
            Some(rest) if !cached.is_empty() => rest.to_string(),
            _ => {
                ctx.clear();
                formatted.clone()
            }
        };
        let reused = ctx.n_past();

        let mut reply = String::new();
        let mut last = None;
        let mut stop = None;
        for event in ctx.generate(&prompt, &options)? {
            match event? {
                Event::Piece(piece) => {
                    reply.push_str(&piece.text);
                    last = Some(piece.token);
                    let _ = write!(out, "{}", piece.text);
                    let _ = out.flush();
                }
                Event::Done(stats) => {
                    let _ = writeln!(out);
                    eprintln!(
                        "turn {turn}: {reused} cached tokens reused, {} prompt tokens decoded",
                        stats.prompt_tokens
                    );
                    eprintln!("{}", stats_line(&stats, threads));
                    stop = Some(stats.stop_reason);
                }
            }
        }
        // The generator leaves the last token undecoded when it stops at the
        // token limit; decode it so the cache holds the whole reply.
        if let (Some(StopReason::MaxTokens), Some(token)) = (stop, last) {
            ctx.decode(&[token])?;
        }
        cached = formatted + &reply;
        messages.push(ChatMessage::new("assistant", reply));
    }
    Ok(())
}
