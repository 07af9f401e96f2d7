//! Telling rustc what to link: the llama.cpp libraries in dependency order
//! (static archives, a prebuilt install's shared libraries, or the
//! `dynamic` feature's one shared library), then what they need from the
//! system (OpenMP, the C++ runtime, the GPU libraries).

use crate::env;
use std::path::{Path, PathBuf};

/// The link lines: cargo's, and the same for C programs (published as
/// `links` metadata, see [`LinkLine::print_metadata`]), kept until
/// [`LinkLine::print`].
#[derive(Default)]
pub struct LinkLine {
    cargo: Vec<String>,
    /// Folders a C program searches, in order.
    c_dirs: Vec<PathBuf>,
    /// Libraries a C program links, in order, as cargo writes them
    /// (`static=llama`, `dylib=gomp`, `framework=Metal`).
    c_libs: Vec<String>,
    /// What the libraries need from the system, as C compiler arguments.
    system: Vec<String>,
}

impl LinkLine {
    fn search(&mut self, dir: &Path) {
        self.cargo
            .push(format!("cargo:rustc-link-search=native={}", dir.display()));
        self.c_dirs.push(dir.to_path_buf());
        self.system.push(format!("-L{}", dir.display()));
    }

    /// Where the llama.cpp libraries are: `rust` for rustc (the prefixed
    /// copies when symbols are isolated), `c` for C programs.
    fn search_archives(&mut self, rust: &Path, c: &Path) {
        self.cargo
            .push(format!("cargo:rustc-link-search=native={}", rust.display()));
        self.c_dirs.push(c.to_path_buf());
    }

    /// One of llama.cpp's own libraries.
    fn archive(&mut self, kind: &str, name: &str) {
        self.cargo
            .push(format!("cargo:rustc-link-lib={kind}={name}"));
        self.c_libs.push(format!("{kind}={name}"));
    }

    /// A library of the system.
    fn lib(&mut self, kind: Option<&str>, name: &str) {
        self.cargo.push(match kind {
            Some(kind) => format!("cargo:rustc-link-lib={kind}={name}"),
            None => format!("cargo:rustc-link-lib={name}"),
        });
        self.c_libs
            .push(format!("{}={name}", kind.unwrap_or("dylib")));
        self.system.push(match kind {
            Some("framework") => format!("-framework {name}"),
            _ => format!("-l{name}"),
        });
    }

    /// Tells cargo.
    pub fn print(&self) {
        for line in &self.cargo {
            println!("{line}");
        }
    }

    /// The same libraries for C programs, as `links` metadata (dependents
    /// read `DEP_LLAMA_SAFE_LIB_DIRS`, `DEP_LLAMA_SAFE_LIBS`):
    /// - `lib-dirs`: the folders to search, joined as `PATH` is (`:` on
    ///   Unix, `;` on Windows; `std::env::split_paths` reads it);
    /// - `libs`: the libraries in link order, comma-separated, each as cargo
    ///   writes them: `static=llama`, `dylib=gomp`, `framework=Metal`.
    pub fn print_metadata(&self) {
        let dirs = std::env::join_paths(&self.c_dirs).unwrap_or_default();
        println!("cargo:lib-dirs={}", dirs.to_string_lossy());
        println!("cargo:libs={}", self.c_libs.join(","));
    }

    /// What the libraries need from the system, as C compiler arguments.
    pub fn system_args(&self) -> &[String] {
        &self.system
    }
}

/// The static libraries in link order: each may use those after it.
pub const LIBRARY_ORDER: &[&str] = &[
    "mtmd",
    "vendor-hash",
    "llama",
    "ggml",
    "ggml-cpu",
    "ggml-blas",
    "ggml-cuda",
    "ggml-vulkan",
    "ggml-metal",
    "ggml-rpc",
    "ggml-base",
];

/// The static archives of `LIBRARY_ORDER` present in `dir`, in that order.
pub fn archives(dir: &Path) -> Vec<PathBuf> {
    LIBRARY_ORDER
        .iter()
        .map(|name| dir.join(format!("lib{name}.a")))
        .filter(|p| p.is_file())
        .collect()
}

/// How the llama.cpp libraries are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Static archives (CMake's install, or their symbol-prefixed copies):
    /// rustc also links what they need from the system.
    Static,
    /// A prebuilt install's shared libraries, which name their own
    /// dependencies (OpenMP, CUDA, ...).
    Shared,
    /// The one shared library of the `dynamic` feature (see `dynamic.rs`).
    Combined,
}

/// Where OpenMP's link flags come from, for static archives.
#[derive(Clone, Copy)]
pub enum OpenMp<'a> {
    /// A CMake build's `CMakeCache.txt` (the libraries CMake found).
    CmakeCache(&'a Path),
    /// An install without its build folder: on or off, per its ggml config;
    /// the compiler's usual runtime is linked (`gomp` for GCC).
    Enabled(bool),
}

/// Everything `emit` links.
#[derive(Clone, Copy)]
pub struct Libraries<'a> {
    /// The folder rustc links from.
    pub rust_dir: &'a Path,
    /// The folder C programs link from (the unprefixed archives).
    pub c_dir: &'a Path,
    pub kind: Kind,
    pub openmp: OpenMp<'a>,
    pub cuda_root: Option<&'a Path>,
    pub vulkan: bool,
    pub metal: bool,
}

/// Emits the link lines; returns them for C programs too.
pub fn emit(libs: &Libraries) -> LinkLine {
    let mut line = LinkLine::default();
    line.search_archives(libs.rust_dir, libs.c_dir);
    let msvc = env::target_cfg("target_env") == "msvc";
    match libs.kind {
        Kind::Combined => line.archive("dylib", crate::dynamic::LIBRARY),
        Kind::Static | Kind::Shared => {
            let shared = libs.kind == Kind::Shared;
            for name in LIBRARY_ORDER {
                let file = if msvc {
                    format!("{name}.lib")
                } else {
                    crate::prebuilt::library_file(name, shared)
                };
                if libs.rust_dir.join(file).is_file() {
                    line.archive(if shared { "dylib" } else { "static" }, name);
                }
            }
        }
    }
    if libs.kind == Kind::Static {
        system_libraries(&mut line, libs);
    }
    // The shim (C++) needs the C++ runtime however llama.cpp is linked.
    cxx_runtime(&mut line);
    line
}

/// What static archives need from the system: OpenMP, the GPU libraries.
fn system_libraries(line: &mut LinkLine, libs: &Libraries) {
    match libs.openmp {
        OpenMp::CmakeCache(cache) => openmp(line, cache),
        OpenMp::Enabled(true) => {
            let gnu = env::target_cfg("target_env") == "gnu";
            line.lib(None, if gnu { "gomp" } else { "omp" });
        }
        OpenMp::Enabled(false) => {}
    }
    if let Some(root) = libs.cuda_root {
        for sub in ["lib64", "lib", "lib/x64", "lib64/stubs", "lib/stubs"] {
            let dir = root.join(sub);
            if dir.is_dir() {
                line.search(&dir);
            }
        }
        for lib in ["cudart", "cublas", "cublasLt", "cuda"] {
            line.lib(None, lib);
        }
    }
    if libs.vulkan {
        // The loader: VULKAN_SDK's (scripts/provision-vulkan.sh links the
        // system's there), else the system's search path.
        if let Some(sdk) = env::var_os("VULKAN_SDK") {
            for sub in ["lib", "lib64", "Lib"] {
                let dir = Path::new(&sdk).join(sub);
                if dir.is_dir() {
                    line.search(&dir);
                }
            }
        }
        let name = if env::target_cfg("target_os") == "windows" {
            "vulkan-1"
        } else {
            "vulkan"
        };
        line.lib(None, name);
    }
    if libs.metal {
        for framework in ["Foundation", "Metal", "MetalKit", "Accelerate"] {
            line.lib(Some("framework"), framework);
        }
    }
}

/// Links the OpenMP runtime CMake found for ggml-cpu, read from its cache
/// (`OpenMP_CXX_LIB_NAMES` and each `OpenMP_<name>_LIBRARY`).
fn openmp(line: &mut LinkLine, cache: &Path) {
    let Ok(text) = std::fs::read_to_string(cache) else {
        return;
    };
    let value = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
            .and_then(|l| l.split_once('='))
            .map(|(_, v)| v.trim().to_string())
    };
    if value("GGML_OPENMP_ENABLED").as_deref() == Some("OFF") {
        return;
    }
    let Some(names) = value("OpenMP_CXX_LIB_NAMES") else {
        return;
    };
    for name in names
        .split(';')
        .filter(|n| !n.is_empty() && *n != "pthread")
    {
        if let Some(path) = value(&format!("OpenMP_{name}_LIBRARY")) {
            if let Some(dir) = Path::new(&path).parent() {
                line.search(dir);
            }
        }
        line.lib(None, name);
    }
}

/// The C++ standard library: `CXXSTDLIB` if set (empty means none), else
/// the target's usual one.
fn cxx_runtime(line: &mut LinkLine) {
    let lib = match env::var("CXXSTDLIB") {
        Some(lib) => lib,
        None => {
            let os = env::target_cfg("target_os");
            let target_env = env::target_cfg("target_env");
            match (os.as_str(), target_env.as_str()) {
                (_, "msvc") => String::new(),
                ("macos" | "ios" | "freebsd" | "openbsd", _) => "c++".into(),
                ("android", _) => "c++_shared".into(),
                _ => "stdc++".into(),
            }
        }
    };
    if !lib.is_empty() {
        line.lib(None, &lib);
    }
}
