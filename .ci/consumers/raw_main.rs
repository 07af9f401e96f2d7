//! A consumer of `llama-safe-sys` alone: greedy generation through the raw C API.
//! Usage: raw-consumer MODEL.gguf PROMPT

mod ffi {
    pub use llama_safe_sys::*;
}
include!("raw_generate.rs");

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("model path");
    let prompt = args.next().expect("prompt");
    println!("{}", generate(&path, &prompt));
}
