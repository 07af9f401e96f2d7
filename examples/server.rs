//! An HTTP server for one model: `POST /api/generate`, OpenAI's
//! `POST /v1/completions` and `POST /v1/chat/completions` (streaming as
//! server-sent events, or not), `GET /health`, `GET /metrics`.
//!
//! ```text
//! cargo run --release --example server                              # the demo model on :8080
//! cargo run --release --features cuda --example server -- --model qwen3-30b-a3b-q4_k_m.gguf \
//!     --cpu-moe --contexts 4 --port 8080
//! curl -N localhost:8080/api/generate -d '{"prompt": "Once upon a time", "temperature": 0}'
//! ```
//!
//! SIGINT or SIGTERM stops taking connections and lets the answers in flight
//! finish.

use clap::Parser;
use llama_safe::*;
use llama_workspace::cli::{run_main, ModelArgs};
use llama_workspace::server::{serve, AppState};

#[derive(Parser, Debug)]
#[command(about = "Serve a GGUF model over HTTP (OpenAI-style and /api/generate)")]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Contexts, i.e. requests generating at the same time.
    #[arg(long, default_value_t = 2)]
    contexts: usize,
    /// Requests that may wait for a context before the server answers 429.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Context size of each context, in tokens (prompt and answer).
    #[arg(long, short = 'c', default_value_t = 4096)]
    ctx_size: u32,
    /// The model name clients use (default: the file name without `.gguf`).
    #[arg(long)]
    alias: Option<String>,
}

fn main() {
    let args = Args::parse();
    run_main(|| run(args));
}

fn run(args: Args) -> Result<()> {
    let backend = LlamaBackend::init();
    // Loaded once and kept for the life of the process; contexts borrow it.
    let model: &'static LlamaModel = Box::leak(Box::new(args.model.load(&backend)?));
    let name = args.alias.clone().unwrap_or_else(|| {
        model
            .path()
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
    });
    // Each context gets an equal share of the threads.
    let threads = (args.model.threads() / args.contexts.max(1) as u32).max(1);
    let params = ContextParams::default()
        .with_n_ctx(args.ctx_size)
        .with_threads(threads);
    let state = AppState::new(model, name.clone(), &params, args.contexts, args.queue)?;

    let runtime = tokio::runtime::Runtime::new().map_err(|source| Error::Io {
        path: "tokio runtime".into(),
        source,
    })?;
    runtime.block_on(async {
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|source| Error::Io { path: address.clone().into(), source })?;
        let local = listener.local_addr().map_err(|source| Error::Io { path: address.into(), source })?;
        eprintln!(
            "server: {name} on http://{local} ({} contexts of {} tokens, {threads} threads each, queue {})",
            args.contexts, state.pool.n_ctx(), args.queue
        );
        serve(listener, state, shutdown_signal())
            .await
            .map_err(|source| Error::Io { path: local.to_string().into(), source })?;
        eprintln!("server: stopped");
        Ok(())
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("server: shutting down, finishing requests in flight");
}
