#!/usr/bin/env bash
# Builds llama.cpp's own tools, the peers of our benchmarks, from the
# llama-cpp-python source distribution on the Python package index, which
# carries llama.cpp's whole tree, tools included (the package llama-sys builds
# from does not carry them). Pinned by version and SHA-256; the binaries land
# in target/peers/ (or target/peers/vulkan/ with --vulkan).
#
#   scripts/build-llama-peer.sh llama-server                 # the serving peer
#   scripts/build-llama-peer.sh --vulkan llama-fit-params llama-completion
#
# --vulkan builds ggml's Vulkan backend with the headers that
# scripts/provision-vulkan.sh installs (run it first). Prints each binary's path.
# Not run by CI: it is another llama.cpp build (10 to 20 minutes on 2 cores).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
url=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$version.tar.gz
peers="$repo/target/peers"
flavour=cpu
extra=()
if [ "${1:-}" = "--vulkan" ]; then
  shift
  flavour=vulkan
  : "${VULKAN_SDK:=$HOME/.cache/llama-safe/vulkan-sdk}"
  export VULKAN_SDK
  extra=(-DGGML_VULKAN=ON)
fi
[ $# -gt 0 ] || { echo "usage: $0 [--vulkan] TARGET..." >&2; exit 2; }
sdist="$peers/llama_cpp_python-$version.tar.gz"
mkdir -p "$peers"
if [ ! -f "$sdist" ]; then
  curl -sfL -o "$sdist.part" "$url"
  mv "$sdist.part" "$sdist"
fi
actual=$(sha256sum "$sdist" | cut -d' ' -f1)
if [ "$actual" != "$sha256" ]; then
  echo "build-llama-peer: $sdist has SHA-256 $actual, expected $sha256" >&2
  exit 1
fi
src="$peers/llama_cpp_python-$version"
[ -d "$src" ] || tar -xzf "$sdist" -C "$peers"
build="$peers/build-$flavour"
out="$peers"
[ "$flavour" = cpu ] || out="$peers/$flavour"
mkdir -p "$out"
# As llama-sys builds ours: no AMX kernels (their matrix kernel segfaults on
# some AMX machines, ggml-org/llama.cpp#20824; LLAMA_SYS_AMX=1 keeps them).
case "$(uname -m)" in
  x86_64|i686) [ -n "${LLAMA_SYS_AMX:-}" ] || extra+=(
    "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16") ;;
esac
cmake -S "$src/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON "${extra[@]}" >/dev/null
for target in "$@"; do
  cmake --build "$build" --target "$target" -j"$(nproc)" >/dev/null
  cp "$build/bin/$target" "$out/$target"
  echo "$out/$target"
done
