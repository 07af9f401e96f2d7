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
# 3. A service of its own (axum) that mounts llama-safe-server's router under
#    /llm, depending on the crate by path with default features off, as a
#    service author would; driven by the official openai client.
dir="$work/service"
rm -rf "$dir"
cargo new -q --vcs none --name consumer-service "$dir"
(cd "$dir" && cargo add -q llama-safe --path "$repo/llama-safe" \
  && cargo add -q llama-safe-server --path "$repo/llama-safe-server" --no-default-features \
  && cargo add -q axum@0.8 && cargo add -q tokio@1 --features macros,rt-multi-thread,net)
cp "$repo/.ci/consumers/server_main.rs" "$dir/src/main.rs"
(cd "$dir" && cargo build -q --release)
if (cd "$dir" && cargo tree -q -e normal -i clap >/dev/null 2>&1); then
  echo "consumer-service: llama-safe-server without default features pulled in clap" >&2; exit 1
fi
"$work/target/release/consumer-service" > "$work/service.out" 2>"$work/service.err" &
service_pid=$!
addr=$(wait_addr "$work/service.out")
timeout 300 "$repo/target/venv/bin/python" "$repo/.ci/consumer_client.py" "$addr"
kill "$service_pid"; wait "$service_pid" 2>/dev/null || true

# 4. `cargo install --path` of the binary into an empty root, then started
#    with an API key from the environment and asked.
root="$work/install-root"
rm -rf "$root"
cargo install -q --path "$repo/llama-safe-server" --root "$root"
"$root/bin/llama-safe-server" --version
LLAMA_SAFE_API_KEY=install-key "$root/bin/llama-safe-server" --port 0 --quiet 2>"$work/installed.err" &
server_pid=$!
addr=$(wait_addr "$work/installed.err")
[ "$(curl -s -o /dev/null -w '%{http_code}' "$addr/v1/models")" = 401 ]
out=$(curl -sf -H "Authorization: Bearer install-key" "$addr/v1/completions" \
  -d '{"prompt": "Once upon a time", "temperature": 0}')
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
grep -q '"text":" there lived one tiny model with many experts."' <<<"$out"
if grep -q install-key "$work/installed.err"; then
  echo "consumer-install: the key was logged" >&2; exit 1
fi
echo "consumer-install: $root/bin/llama-safe-server answered"
echo "consumers: ok"
