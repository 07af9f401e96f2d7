#!/usr/bin/env bash
# One binary, two copies of ggml or llama.cpp: a `cargo new` project outside
# the workspace depends on llama-safe and on a peer crate that builds its own
# (whisper-rs-sys: whisper.cpp's ggml; llama-cpp-sys-2: llama.cpp itself),
# generates through llama-safe, calls into the peer, and generates again.
# Then, for whisper-rs-sys, the same project with LLAMA_SYS_ISOLATE_SYMBOLS=0
# must fail to link: the check can fail.
#   .ci/coexist.sh [WORK_DIR [PEER...]]   PEER: whisper-rs-sys (default), llama-cpp-sys-2
# llama-cpp-sys-2 compiles a second llama.cpp (about 9 minutes on 2 cores),
# so CI runs whisper-rs-sys only.
set -euo pipefail
. "$(dirname "$0")/workdir.sh"
shift || true
peers=("$@")
[ ${#peers[@]} -gt 0 ] || peers=(whisper-rs-sys)
export CARGO_TARGET_DIR="$work/target"
sentence="Once upon a time there lived one tiny model with many experts."

for peer in "${peers[@]}"; do
  case "$peer" in
    whisper-rs-sys) version="=0.15.0"; main=coexist_whisper.rs ;;
    llama-cpp-sys-2) version="=0.1.161"; main=coexist_llama_cpp_sys_2.rs ;;
    *) echo "coexist: unknown peer $peer" >&2; exit 2 ;;
  esac
  dir="$work/coexist-$peer"
  rm -rf "$dir"
  cargo new -q --vcs none --name "coexist-$peer" "$dir"
  (cd "$dir" && cargo add -q llama-safe --path "$repo/llama-safe" && cargo add -q "$peer@$version")
  cp "$repo/.ci/consumers/$main" "$dir/src/main.rs"
  cp "$repo/.ci/consumers/coexist_ours.rs" "$repo/.ci/consumers/raw_generate.rs" "$dir/src/"
  out=$(cd "$dir" && cargo run -q --release 2>"$dir/run.err") || {
    echo "coexist: llama-safe with $peer failed:"; tail -20 "$dir/run.err"; exit 1
  }
  echo "$out" | sed "s/^/coexist ($peer): /"
  [ "$(grep -c "^llama-safe: *$sentence\$" <<<"$out")" = 2 ]
  if [ "$peer" = llama-cpp-sys-2 ]; then
    grep -q "^llama-cpp-sys-2: *$sentence\$" <<<"$out"
  else
    grep -q "^whisper.cpp: a buffer that is not a model loads as NULL\$" <<<"$out"
    if (cd "$dir" && LLAMA_SYS_ISOLATE_SYMBOLS=0 cargo build -q --release 2>"$dir/unprefixed.err"); then
      echo "coexist: without symbol prefixes the project linked; the check proves nothing" >&2
      exit 1
    fi
    # GNU ld says "multiple definition of `ggml_x'", lld "duplicate symbol: ggml_x"
    # (lld stops after 20 errors, in an order that follows the link line: the
    # first ones may be ggml's quantize_row_* rather than ggml_*).
    clash='(multiple definition of .|duplicate symbol: )[A-Za-z_][A-Za-z_0-9]+'
    grep -Eq "$clash" "$dir/unprefixed.err"
    echo "coexist ($peer): without symbol prefixes the link fails: $(grep -Eo "$clash" "$dir/unprefixed.err" | sed -n 1p)"
  fi
done
echo "coexist: ok"
