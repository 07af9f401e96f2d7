#!/usr/bin/env bash
# Copies the pinned llama.cpp source that the CMake build needs into
# llama-sys/llama.cpp/, so that `cargo package -p llama-sys` carries it and a
# build from the published package needs no network (README, "Where
# llama.cpp comes from"). Run it before `cargo package` / `cargo publish`.
#
#   scripts/package-llama-sys.sh          # copy (re-copy) the source
#   scripts/package-llama-sys.sh --clean  # remove the copy
#
# The source comes from the carrier package named in vendor/llama-cpp.toml:
# its .crate file (from cargo's cache, fetched through the registry when
# missing) is checked against the pin's SHA-256 before anything is copied.
# The copy is git-ignored: the repository tracks no third-party source.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest="$repo/llama-sys/llama.cpp"
pin="$repo/vendor/llama-cpp.toml"

if [ "${1:-}" = --clean ]; then
  rm -rf "$dest"
  exit 0
fi

field() { sed -n "s/^$1 = \"\(.*\)\"$/\1/p" "$pin" | head -1; }
name=$(field name)
version=$(field version)
sha256=$(field sha256)
subdir=$(field subdir)
[ -n "$name" ] && [ -n "$version" ] && [ -n "$sha256" ] && [ -n "$subdir" ] || {
  echo "package-llama-sys: cannot read name, version, sha256 and subdir from $pin" >&2
  exit 1
}

cargo_home=${CARGO_HOME:-$HOME/.cargo}
find_crate() { ls "$cargo_home"/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -1; }
crate=$(find_crate || true)
if [ -z "$crate" ]; then
  # Let cargo download it (and check it against the committed lock file).
  work=$(mktemp -d)
  cp "$repo/vendor/provision/manifest.toml" "$work/Cargo.toml"
  cp "$repo/vendor/provision/Cargo.lock" "$repo/vendor/provision/lib.rs" "$work/"
  cargo fetch --locked --manifest-path "$work/Cargo.toml"
  rm -rf "$work"
  crate=$(find_crate)
fi
actual=$(sha256sum "$crate" | cut -d' ' -f1)
if [ "$actual" != "$sha256" ]; then
  echo "package-llama-sys: $crate has SHA-256 $actual, the pin says $sha256" >&2
  exit 1
fi

unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
tar -xzf "$crate" -C "$unpacked"
src="$unpacked/$name-$version/$subdir"

# What the CMake build reads with tests, tools, examples, common and the
# server off: the top-level CMake files, cmake/, include/, src/, ggml/ (the
# CPU backend and the backends this crate has features for), and vendor/
# (added unconditionally by the top-level CMakeLists; cpp-httplib only with
# common, left out), and tools/mtmd (the `mtmd` feature).
rm -rf "$dest"
mkdir -p "$dest/ggml/src" "$dest/vendor"
cp "$src/CMakeLists.txt" "$src/LICENSE" "$dest/"
cp -r "$src/cmake" "$src/include" "$src/src" "$dest/"
cp -r "$src/ggml/CMakeLists.txt" "$src/ggml/cmake" "$src/ggml/include" "$dest/ggml/"
find "$src/ggml/src" -maxdepth 1 -type f -exec cp {} "$dest/ggml/src/" \;
for backend in ggml-cpu ggml-cuda ggml-vulkan ggml-metal ggml-rpc ggml-blas; do
  cp -r "$src/ggml/src/$backend" "$dest/ggml/src/"
done
for dir in "$src"/vendor/*; do
  case "$(basename "$dir")" in cpp-httplib) ;; *) cp -r "$dir" "$dest/vendor/" ;; esac
done
# libmtmd, for the `mtmd` feature (LLAMA_BUILD_MTMD builds tools/mtmd alone).
mkdir -p "$dest/tools"
cp -r "$src/tools/mtmd" "$dest/tools/"
cat > "$dest/PROVENANCE" <<EOF
The llama.cpp source this llama-sys package builds, copied by
scripts/package-llama-sys.sh from $name $version ($subdir/),
whose .crate has SHA-256 $sha256 (checked). Only what the CMake build
reads is here; llama.cpp is MIT-licensed (LICENSE).
EOF
echo "package-llama-sys: copied llama.cpp from $name $version into $dest ($(du -sh "$dest" | cut -f1))"
