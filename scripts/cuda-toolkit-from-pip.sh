#!/usr/bin/env bash
# Assembles a CUDA toolkit that can *compile and link* the `cuda` feature from
# NVIDIA's Python wheels (PyPI), for machines without a GPU or a system CUDA:
#
#   scripts/cuda-toolkit-from-pip.sh /opt/cuda-pip
#   CUDA_PATH=/opt/cuda-pip/toolkit LLAMA_SYS_CUDA_ARCHITECTURES=90 \
#       cargo build --release --features cuda --example moe_generate
#
# The wheels carry nvcc, cicc, the runtime, cuBLAS and CCCL in one tree
# (nvidia/cu13); this adds what CMake's FindCUDAToolkit and the linker expect
# of a toolkit: unversioned library links, lib64/, and a libcuda.so stub
# (the real one comes with the driver, on a GPU machine). Binaries built
# against the stub run only where a driver is installed.
set -euo pipefail
dest=${1:?usage: $0 DEST}
version=${CUDA_PIP_VERSION:-13.5.37}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
python3 -m pip install -q --target "$dest/site" \
  "nvidia-cuda-nvcc==$version" "nvidia-cuda-runtime==$version" nvidia-cublas nvidia-cuda-cccl
root="$dest/site/nvidia/cu13"
ln -sfn "$root" "$dest/toolkit"
lib="$root/lib"
for name in cudart cublas cublasLt; do
  so=$(ls "$lib"/lib$name.so.* | head -1)
  ln -sfn "$(basename "$so")" "$lib/lib$name.so"
done
ln -sfn lib "$root/lib64"
# FindCUDAToolkit reads the version from nvcc; some CMake versions also want version.json.
[ -e "$root/version.json" ] || printf '{"cuda":{"version":"%s"}}\n' "$version" > "$root/version.json"

# libcuda stub: every cu* function cuda.h declares, and the versioned names
# its macros map them to (cuMemAlloc -> cuMemAlloc_v2), as empty exports.
mkdir -p "$lib/stubs"
{
  grep -oE 'CUDAAPI +cu[A-Za-z0-9_]+' "$root/include/cuda.h" | awk '{print $2}'
  grep -oE '^ *# *define +cu[A-Za-z0-9_]+ +cu[A-Za-z0-9_]+' "$root/include/cuda.h" | awk '{print $NF}'
} | sort -u | sed 's/.*/void &(void) {}/' > "$dest/libcuda-stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/stubs/libcuda.so" "$dest/libcuda-stub.c"
"$root/bin/nvcc" --version | tail -2
echo "CUDA toolkit for building (not running) at $dest/toolkit"
