#!/usr/bin/env bash
# Times the README's two quick-start commands cold: a fresh clone of HEAD, an
# empty target folder, no cached llama.cpp build (LLAMA_SYS_CACHE_DIR in a new
# folder) and no demo model (LLAMA_SAFE_CACHE_DIR likewise). Crates already
# downloaded to ~/.cargo stay (a download's time is the network's, not ours).
# Also lists the HTTP crates the main job compiled (there must be none).
#   scripts/quickstart-cold.sh [WORK_DIR]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
rm -rf "$work/clone" "$work/caches"
git clone -q "$repo" "$work/clone"
export LLAMA_SYS_CACHE_DIR="$work/caches/llama-sys" LLAMA_SAFE_CACHE_DIR="$work/caches/llama-safe"
export CARGO_TARGET_DIR="$work/clone/target"
cd "$work/clone"
cargo fetch -q
echo "quickstart-cold: $(nproc) cores, $(git rev-parse --short HEAD), $(cargo --version)"
t0=$(date +%s)
cargo run --release --example moe_generate > "$work/main.out" 2> "$work/main.err"
t1=$(date +%s)
cargo test --workspace > "$work/test.out" 2> "$work/test.err"
t2=$(date +%s)
echo "main job:  $(( t1 - t0 )) s  ($(cat "$work/main.out"))"
echo "the tests: $(( t2 - t1 )) s  ($(grep -c '^test result: ok' "$work/test.out") test binaries, all ok)"
http=$(grep -Eo 'Compiling (axum|hyper|hyper-util|reqwest|tokio|tower|h2) v[0-9.]+' "$work/main.err" || true)
echo "HTTP crates compiled by the main job: ${http:-none}"
[ -z "$http" ]
