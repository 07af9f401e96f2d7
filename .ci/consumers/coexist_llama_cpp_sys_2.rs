//! One process, two copies of llama.cpp: llama-safe's (its symbols prefixed
//! `llama_safe_`) and llama-cpp-sys-2's (unprefixed), each generating from
//! the demo model, interleaved.

mod ffi {
    pub use llama_cpp_sys_2::*;
}
include!("raw_generate.rs");
include!("coexist_ours.rs");

fn main() -> llama_safe::Result<()> {
    let path = llama_safe::demo::DemoModel::Moe.cached()?;
    let prompt = llama_safe::demo::DEMO_PROMPT;
    println!("llama-safe:      {}", ours(&path, prompt)?);
    println!("llama-cpp-sys-2: {}", generate(path.to_str().expect("UTF-8 path"), prompt));
    println!("llama-safe:      {}", ours(&path, prompt)?);
    Ok(())
}
