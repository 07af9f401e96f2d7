//! Configuring and building llama.cpp with CMake: static libraries,
//! Release-optimised even in a debug profile, nothing but the libraries.

use crate::env;
use std::path::{Path, PathBuf};

/// What the features and environment ask of the build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub native: bool,
    /// Keep the AMX kernels `-march=native` turns on (see [`build`]).
    pub amx: bool,
    pub cuda: Option<CudaOptions>,
    pub vulkan: bool,
    pub metal: bool,
    pub rpc: bool,
    /// Also build libmtmd (`tools/mtmd`), the multimodal library.
    pub mtmd: bool,
    pub openmp: bool,
}

/// CUDA specifics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaOptions {
    pub nvcc: PathBuf,
    /// `CMAKE_CUDA_ARCHITECTURES`; `None` keeps upstream's default list.
    pub architectures: Option<String>,
}

/// Runs CMake configure, build and install into `out_dir` (`OUT_DIR` when
/// `None`); returns the install prefix (`lib/` and `include/` under it).
pub fn build(source: &Path, opts: &Options, out_dir: Option<&Path>) -> PathBuf {
    let on_off = |b: bool| if b { "ON" } else { "OFF" };
    let mut config = cmake::Config::new(source);
    if let Some(dir) = out_dir {
        config.out_dir(dir);
    }
    // Optimised C++ even when the Rust side is a debug build: an unoptimised
    // ggml is 10-50x slower, which nobody wants from `cargo test`.
    config
        .profile("Release")
        .define("CMAKE_BUILD_TYPE", "Release")
        .define("BUILD_SHARED_LIBS", "OFF")
        .define("CMAKE_INSTALL_LIBDIR", "lib")
        .define("CMAKE_POSITION_INDEPENDENT_CODE", "ON")
        .define("LLAMA_BUILD_COMMON", "OFF")
        .define("LLAMA_BUILD_TESTS", "OFF")
        .define("LLAMA_BUILD_TOOLS", "OFF")
        .define("LLAMA_BUILD_EXAMPLES", "OFF")
        .define("LLAMA_BUILD_SERVER", "OFF")
        .define("LLAMA_BUILD_APP", "OFF")
        .define("LLAMA_TOOLS_INSTALL", "OFF")
        .define("LLAMA_TESTS_INSTALL", "OFF")
        .define("LLAMA_OPENSSL", "OFF")
        .define("LLAMA_CURL", "OFF")
        .define("LLAMA_ALL_WARNINGS", "OFF")
        .define("GGML_BUILD_TESTS", "OFF")
        .define("GGML_BUILD_EXAMPLES", "OFF")
        .define("GGML_CCACHE", "OFF")
        .define("GGML_NATIVE", on_off(opts.native))
        .define("GGML_OPENMP", on_off(opts.openmp))
        .define("GGML_RPC", on_off(opts.rpc))
        .define("GGML_VULKAN", on_off(opts.vulkan))
        .define("GGML_METAL", on_off(opts.metal))
        .define("GGML_CUDA", on_off(opts.cuda.is_some()))
        // libmtmd alone, without the rest of tools/ (upstream's standalone
        // switch); no video, which would run ffmpeg as a subprocess.
        .define("LLAMA_BUILD_MTMD", on_off(opts.mtmd))
        .define("MTMD_VIDEO", "OFF");
    let target = env::cargo("TARGET");
    let x86 = target.starts_with("x86_64") || target.starts_with("i686");
    if opts.native && !opts.amx && x86 && !target.contains("msvc") {
        // `-march=native` on a CPU with AMX compiles ggml's AMX buffer type,
        // which takes Q4/Q8 weights of dense layers, and its matrix kernel
        // segfaults on some such machines (seen here on the 2-core VM of
        // this project with the dense demo model; upstream issue
        // ggml-org/llama.cpp#20824, closed unfixed). GCC and Clang keep an
        // explicit -mno-* over what -march implies, whatever the order.
        for flag in ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"] {
            config.cflag(flag).cxxflag(flag);
        }
    }
    if let Some(cuda) = &opts.cuda {
        config.define("CMAKE_CUDA_COMPILER", &cuda.nvcc);
        if let Some(archs) = &cuda.architectures {
            config.define("CMAKE_CUDA_ARCHITECTURES", archs);
        }
    }
    if opts.metal {
        // The Metal shaders are compiled into the library, so a binary needs
        // no `.metal` file next to it at run time.
        config.define("GGML_METAL_EMBED_LIBRARY", "ON");
    }
    // Keep CMake's own chatter out of cargo's output unless asked for.
    config.very_verbose(env::flag("LLAMA_SYS_VERBOSE"));
    let prefix = config.build();
    if opts.mtmd {
        install_vendor_hash(&prefix);
    }
    prefix
}

/// libmtmd links upstream's `vendor-hash` (SHA-256 and xxhash of media),
/// a static library CMake does not install: copy it next to the others.
fn install_vendor_hash(prefix: &Path) {
    let name = "libvendor-hash.a";
    let built = prefix.join("build").join("vendor").join("hash").join(name);
    let installed = prefix.join("lib").join(name);
    if let Err(e) = std::fs::copy(&built, &installed) {
        crate::fail::fail_plain(&format!(
            "libmtmd needs {}, which the CMake build did not leave ({e})",
            built.display()
        ));
    }
}
