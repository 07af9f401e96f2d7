//! Host package for the workspace examples and integration tests: the
//! command-line pieces the examples share live in [`cli`], the A/B
//! benchmark behind `src/bin/moe_bench.rs` in [`bench`](mod@bench).

pub mod bench;
pub mod cli;
pub mod server;

/// The README's Rust listings, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
