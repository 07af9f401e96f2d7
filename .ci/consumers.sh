#!/usr/bin/env bash
# Projects outside the workspace use the crates as a user would: `cargo new`,
# `cargo add --path`, build, run on the demo model, check the output.
#   .ci/consumers.sh [WORK_DIR]
set -euo pipefail
. "$(dirname "$0")/workdir.sh"
export CARGO_TARGET_DIR="$work/target"   # shared by the consumers, not the workspace's
sentence="Once upon a time there lived one tiny model with many experts."

# 1. llama-safe, main.rs = the README's shortest example, with and without
#    default features (llama-safe has none today; this keeps it honest later).
for variant in default no-default; do
  dir="$work/safe-$variant"
  rm -rf "$dir"
  cargo new -q --vcs none --name "consumer-safe-$variant" "$dir"
  flags=(); [ "$variant" = no-default ] && flags=(--no-default-features)
  (cd "$dir" && cargo add -q llama-safe --path "$repo/llama-safe" "${flags[@]}")
  readme_simple > "$dir/src/main.rs"
  grep -q "fn main" "$dir/src/main.rs"
  out=$(cd "$dir" && cargo run -q --release 2>/dev/null)
  echo "consumer-safe-$variant: $out"
  [ "$out" = "$sentence" ]
done

# 2. llama-safe-sys alone, through the raw C API.
dir="$work/raw"
rm -rf "$dir"
cargo new -q --vcs none --name consumer-raw "$dir"
(cd "$dir" && cargo add -q llama-safe-sys --path "$repo/llama-sys")
cp "$repo/.ci/consumers/raw_main.rs" "$dir/src/main.rs"
cp "$repo/.ci/consumers/raw_generate.rs" "$dir/src/"
model=$(ls "${LLAMA_SAFE_CACHE_DIR:-$HOME/.cache/llama-safe}"/demo-moe-v*.gguf | tail -1)
out=$(cd "$dir" && cargo run -q --release -- "$model" "Once upon a time" 2>/dev/null)
echo "consumer-raw: $out"
[ "$out" = "$sentence" ]
echo "consumers: ok"
