//! Host package for what the workspace does not publish: the examples, and
//! the benchmarks behind `src/bin/moe_bench.rs` and `src/bin/serve_bench.rs`
//! in [`bench`](mod@bench). The examples' command-line flags are
//! `llama_safe::cli` (the `cli` feature); the server is the
//! `llama-safe-server` crate.

pub mod bench;
