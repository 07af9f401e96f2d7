#!/usr/bin/env bash
# A consumer built the way air-gapped CI, Nix-style sandboxes and distribution
# packaging build: from the packaged .crate files, every other dependency
# vendored by `cargo vendor`, offline, with an empty CARGO_HOME (no registry
# cache, so no copy of the carrier package either) and, where `unshare -n`
# works, in a network namespace with nothing but loopback. It runs the README's
# shortest program on the demo model.
#   .ci/offline-consumer.sh [WORK_DIR]
set -euo pipefail
. "$(dirname "$0")/workdir.sh"
sentence="Once upon a time there lived one tiny model with many experts."

# 1. The three packages, the -sys one carrying its llama.cpp source. (Built
#    and run below instead of by `cargo package`'s own verification.)
"$repo/scripts/package-llama-sys.sh"
(cd "$repo" && cargo package -q --no-verify --allow-dirty -p llama-safe-sys -p llama-safe -p llama-safe-server)
# What crates.io would take: both, under their names, built from the packages.
# Cargo unpacks the packages of its temporary registry into
# $CARGO_HOME/registry/src/-<hash of the registry's path>/ and reuses an
# unpacked copy of the same version as is: on a machine that verified an
# older commit from the same path, it would build that commit's sources.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rm -rf "$cargo_home"/registry/src/-*/llama-safe-sys-* "$cargo_home"/registry/src/-*/llama-safe-[0-9]* \
  "$cargo_home"/registry/src/-*/llama-safe-server-*
(cd "$repo" && cargo publish -q --dry-run --allow-dirty -p llama-safe-sys -p llama-safe -p llama-safe-server)
"$repo/scripts/package-llama-sys.sh" --clean
sys_crate=$(ls "$repo"/target/package/llama-safe-sys-*.crate | tail -1)
safe_crate=$(ls "$repo"/target/package/llama-safe-[0-9]*.crate | tail -1)
size=$(stat -c %s "$sys_crate")
echo "offline-consumer: $(basename "$sys_crate"): $size bytes ($(( size / 1024 )) KiB), $(tar -tzf "$sys_crate" | grep -c '/llama.cpp/') files of llama.cpp source"
if [ "$size" -ge $(( 10 * 1024 * 1024 )) ]; then
  echo "offline-consumer: the package is over crates.io's 10 MB limit" >&2; exit 1
fi
rm -rf "$work/crates" && mkdir -p "$work/crates"
tar -xzf "$sys_crate" -C "$work/crates"
tar -xzf "$safe_crate" -C "$work/crates"
sys_dir=$(ls -d "$work"/crates/llama-safe-sys-*)
safe_dir=$(ls -d "$work"/crates/llama-safe-[0-9]*)

# 2. A consumer of the packaged llama-safe; the packaged llama-safe-sys stands in
#    for the registry's (a [patch], as a not-yet-published crate is tested).
dir="$work/consumer"
rm -rf "$dir"
cargo new -q --vcs none --name offline-consumer "$dir"
cat >> "$dir/Cargo.toml" <<EOF
llama-safe = { path = "$safe_dir" }

[patch.crates-io]
llama-safe-sys = { path = "$sys_dir" }
EOF
readme_simple > "$dir/src/main.rs"

# 3. Vendor everything from the registry, once, online (what a user does
#    before going offline).
mkdir -p "$dir/.cargo"
(cd "$dir" && cargo vendor vendor > .cargo/config.toml 2>/dev/null)
grep -q "replace-with" "$dir/.cargo/config.toml"

# 4. Build and run with no registry cache, offline, and no network.
home="$work/empty-cargo-home"
rm -rf "$home" && mkdir -p "$home"
jail=()
if unshare -n true 2>/dev/null; then jail=(unshare -n); fi
log="$work/offline-build.log"
# LLAMA_SYS_CACHE_DIR=off: build llama.cpp from the package's own source,
# not from the machine's shared build of the same pinned source.
out=$(cd "$dir" && env CARGO_HOME="$home" CARGO_NET_OFFLINE=true LLAMA_SYS_CACHE_DIR=off \
  "${jail[@]}" cargo run -q --release --offline 2>"$log") || {
  echo "offline-consumer: the offline build failed:" >&2; tail -30 "$log" >&2; exit 1
}
echo "offline-consumer (${jail[*]:-no network namespace}, empty CARGO_HOME): $out"
[ "$out" = "$sentence" ]
if grep -q "provisioned llama.cpp" "$log"; then
  echo "offline-consumer: the build script provisioned llama.cpp (network)" >&2; exit 1
fi
grep -q "LLAMA_SYS_SOURCE_ORIGIN=package source" "$dir"/target/release/build/llama-safe-sys-*/output || {
  echo "offline-consumer: llama-safe-sys did not build the source its package carries" >&2; exit 1
}
[ -z "$(ls -A "$home/registry" 2>/dev/null)" ] || {
  echo "offline-consumer: something wrote to the empty CARGO_HOME's registry" >&2; exit 1
}
# 5. `cargo install` of the server from its package, offline and with no
#    network, its other dependencies vendored: how a packager builds it.
#    (The llama.cpp build of step 4 is reused: same package, same target.)
server_crate=$(ls "$repo"/target/package/llama-safe-server-*.crate | tail -1)
tar -xzf "$server_crate" -C "$work/crates"
server_dir=$(ls -d "$work"/crates/llama-safe-server-*)
cat >> "$server_dir/Cargo.toml" <<EOF

[patch.crates-io]
llama-safe = { path = "$safe_dir" }
llama-safe-sys = { path = "$sys_dir" }
EOF
mkdir -p "$server_dir/.cargo"
(cd "$server_dir" && cargo vendor vendor > .cargo/config.toml 2>/dev/null)
root="$work/server-root"
rm -rf "$root"
(cd "$server_dir" && env CARGO_HOME="$home" CARGO_NET_OFFLINE=true CARGO_TARGET_DIR="$dir/target" \
  LLAMA_SYS_CACHE_DIR=off "${jail[@]}" cargo install -q --offline --path . --root "$root" 2>"$log") || {
  echo "offline-consumer: the offline install of the server failed:" >&2; tail -30 "$log" >&2; exit 1
}
"$root/bin/llama-safe-server" --version
"$root/bin/llama-safe-server" --port 0 --quiet 2>"$work/offline-server.err" &
server_pid=$!
addr=$(wait_addr "$work/offline-server.err")
out=$(curl -sf "$addr/v1/completions" -d '{"prompt": "Once upon a time", "temperature": 0}')
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
grep -q '"text":" there lived one tiny model with many experts."' <<<"$out"
echo "offline-consumer: llama-safe-server installed from $(basename "$server_crate") offline, and it answered"
echo "offline-consumer: ok"
