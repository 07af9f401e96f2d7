#!/usr/bin/env bash
# Linking llama.cpp without building it, and the `dynamic` feature, each in a
# `cargo new` project outside the workspace running the README's shortest
# program on the demo model:
#  1. LLAMA_SYS_PREBUILT_DIR at an install with static libraries (the one the
#     workspace's build made), CMAKE=/bin/false: nothing is compiled by CMake;
#  2. the same at an install with shared libraries (libllama.so, libggml*.so,
#     sonames and $ORIGIN runpaths as BUILD_SHARED_LIBS gives them, linked
#     here from those archives), run through `cargo run`;
#  3. an install whose llama.h differs from the pinned one: a build error;
#  4. `--features dynamic`: the binary runs from another folder, no
#     LD_LIBRARY_PATH, and needs libllama_safe_sys.so by absolute path.
#   .ci/prebuilt-consumer.sh [WORK_DIR]   (after a release build of the workspace)
set -euo pipefail
. "$(dirname "$0")/workdir.sh"
export CARGO_TARGET_DIR="$work/target"
sentence="Once upon a time there lived one tiny model with many experts."
lib=$(sed -n 's/^cargo:lib=//p' "$repo"/target/release/build/llama-safe-sys-*/output | sed -n 1p)
[ -f "$lib/libllama.a" ] || { echo "prebuilt-consumer: build the workspace in release first" >&2; exit 2; }
prefix=$(dirname "$lib")

dir="$work/prebuilt"
rm -rf "$dir"
cargo new -q --vcs none --name prebuilt-consumer "$dir"
(cd "$dir" && cargo add -q llama-safe --path "$repo/llama-safe")
readme_simple > "$dir/src/main.rs"

# 1. Static.
out=$(cd "$dir" && LLAMA_SYS_PREBUILT_DIR="$prefix" CMAKE=/bin/false cargo run -q --release 2>/dev/null)
echo "prebuilt (static): $out"
[ "$out" = "$sentence" ]

# 2. Shared: one .so per archive, each needing the ones after it.
shared="$work/shared-install"
rm -rf "$shared"
mkdir -p "$shared/lib"
cp -r "$prefix/include" "$shared/"
cp -r "$prefix/lib/cmake" "$shared/lib/"
needs=""
for name in ggml-base ggml-cpu ggml llama; do
  c++ -shared -o "$shared/lib/lib$name.so" -Wl,-soname,"lib$name.so" -Wl,-rpath,'$ORIGIN' \
    -Wl,--whole-archive "$prefix/lib/lib$name.a" -Wl,--no-whole-archive \
    -L"$shared/lib" $needs -fopenmp -lstdc++ -lm
  needs="-l$name $needs"
done
out=$(cd "$dir" && LLAMA_SYS_PREBUILT_DIR="$shared" CMAKE=/bin/false cargo run -q --release 2>/dev/null)
echo "prebuilt (shared): $out"
[ "$out" = "$sentence" ]
readelf -d "$CARGO_TARGET_DIR/release/prebuilt-consumer" | grep -q 'NEEDED.*\[libllama.so\]'

# 3. A different llama.h.
bad="$work/bad-install"
rm -rf "$bad"
cp -r "$prefix" "$bad"
echo "// another version" >> "$bad/include/llama.h"
if (cd "$dir" && LLAMA_SYS_PREBUILT_DIR="$bad" CMAKE=/bin/false cargo build -q --release 2>"$work/bad.err"); then
  echo "prebuilt-consumer: a mismatched llama.h was accepted" >&2; exit 1
fi
grep -q "differs from the pinned llama.cpp's llama.h" "$work/bad.err"
echo "prebuilt (mismatched llama.h): refused: $(grep -o 'differs from the pinned[^,]*' "$work/bad.err" | sed -n 1p)"

# 4. The dynamic feature.
(cd "$dir" && cargo build -q --release --features llama-safe/dynamic 2>/dev/null)
needed=$(readelf -d "$CARGO_TARGET_DIR/release/prebuilt-consumer" | grep -o 'NEEDED.*libllama_safe_sys.so\]')
out=$(cd / && env -u LD_LIBRARY_PATH "$CARGO_TARGET_DIR/release/prebuilt-consumer")
echo "dynamic: $out ($needed)"
[ "$out" = "$sentence" ]
grep -q '\[/' <<<"$needed"
echo "prebuilt-consumer: ok"
