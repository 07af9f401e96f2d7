#!/usr/bin/env bash
# What happens when llama-safe-sys and another crate that links its own ggml
# (whisper-rs-sys, the whisper.cpp bindings) end up in one binary: builds a
# throwaway project outside the workspace that calls both, and reports the
# linker's verdict (and, if it links, what runs).
#   scripts/ggml-clash-check.sh [WORK_DIR]
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work" && work=$(cd "$work" && pwd)
rm -rf "$work/clash"
cargo new -q --vcs none --name ggml-clash "$work/clash"
cd "$work/clash"
cargo add -q llama-safe-sys --path "$repo/llama-sys"
cargo add -q whisper-rs-sys@=0.15.0
cat > src/main.rs <<'RS'
use std::ffi::CStr;
fn main() {
    // SAFETY: both return static NUL-terminated strings.
    unsafe {
        let llama = CStr::from_ptr(llama_sys::llama_print_system_info());
        println!("llama.cpp:   {}", llama.to_string_lossy());
        let whisper = CStr::from_ptr(whisper_rs_sys::whisper_print_system_info());
        println!("whisper.cpp: {}", whisper.to_string_lossy());
    }
}
RS
if cargo build --release 2> build.err; then
  echo "ggml-clash: linked; running it:"
  ./target/release/ggml-clash
else
  echo "ggml-clash: the link failed:"
  grep -E "multiple definition|duplicate symbol|error:" build.err | head -8
fi
