//! The A/B offload benchmark behind `src/bin/moe_bench.rs`: configurations,
//! one measured run per child process, summaries and the JSON, Markdown and
//! SVG reports; and the closed-loop serving load behind
//! `src/bin/serve_bench.rs` ([`serving`]); the processes around them
//! ([`process`]: ports, `/proc` memory, an RPC server).

pub mod config;
pub mod measure;
pub mod peer;
pub mod process;
pub mod report;
pub mod serving;
pub mod stats;

pub use config::Config;
pub use measure::RunResult;
pub use stats::Summary;
