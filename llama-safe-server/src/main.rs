//! The `llama-safe-server` binary: see `llama-safe-server --help`.

fn main() {
    llama_safe_server::cli::main();
}
