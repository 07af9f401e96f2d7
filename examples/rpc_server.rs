//! Serves this machine's devices over llama.cpp's RPC protocol, so another
//! machine can put model layers on them (`LlamaBackend::add_rpc_server`).
//! Needs the `rpc` feature.
//!
//! ```text
//! cargo run --release --features rpc --example rpc_server -- --host 0.0.0.0 --port 50052
//! cargo run --release --features rpc,cuda --example rpc_server -- --device CUDA0
//! ```
//!
//! The protocol has no authentication or encryption: listen only on networks
//! you trust.

use clap::Parser;
use llama_safe::cli::run_main;
use llama_safe::LlamaBackend;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Serve local devices over llama.cpp's RPC protocol")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port.
    #[arg(long, short, default_value_t = 50052)]
    port: u16,
    /// Devices to serve, by name (repeatable; default: every local device).
    #[arg(long = "device", short)]
    devices: Vec<String>,
    /// CPU threads for the CPU device.
    #[arg(long, short = 't')]
    threads: Option<u32>,
    /// Folder for llama.cpp's tensor cache (skips resending big tensors).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    run_main(|| {
        let backend = LlamaBackend::init();
        if !matches!(args.host.as_str(), "127.0.0.1" | "localhost") {
            eprintln!("rpc_server: warning: the RPC protocol is unauthenticated; {} is reachable from the network", args.host);
        }
        let endpoint = format!("{}:{}", args.host, args.port);
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        let devices: Vec<&str> = args.devices.iter().map(String::as_str).collect();
        eprintln!("rpc_server: serving on {endpoint}");
        match llama_safe::rpc::serve(
            &backend,
            &endpoint,
            &devices,
            threads,
            args.cache_dir.as_deref(),
        ) {
            Ok(never) => match never {},
            Err(e) => Err(e),
        }
    });
}
