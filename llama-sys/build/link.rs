//! Telling rustc what to link: the static llama.cpp libraries in dependency
//! order, then what they need from the system (OpenMP, the C++ runtime, the
//! GPU libraries).

use crate::env;
use std::path::Path;

/// The link lines emitted, kept so that a C program can be linked the same
/// way (published as `links` metadata, see `main.rs`).
#[derive(Default)]
pub struct LinkLine {
    args: Vec<String>,
}

impl LinkLine {
    fn search(&mut self, dir: &Path) {
        println!("cargo:rustc-link-search=native={}", dir.display());
        self.args.push(format!("-L{}", dir.display()));
    }

    fn lib(&mut self, kind: Option<&str>, name: &str) {
        match kind {
            Some(kind) => println!("cargo:rustc-link-lib={kind}={name}"),
            None => println!("cargo:rustc-link-lib={name}"),
        }
        self.args.push(match kind {
            Some("framework") => format!("-framework {name}"),
            _ => format!("-l{name}"),
        });
    }

    /// The same libraries as C compiler arguments, `|`-separated.
    pub fn c_args(&self) -> String {
        self.args.join("|")
    }
}

/// The static libraries in link order: each may use those after it.
const LIBRARY_ORDER: &[&str] = &[
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

/// Emits the link lines for an install prefix built by `cmake_build`.
pub fn emit(prefix: &Path, cuda_root: Option<&Path>, vulkan: bool, metal: bool) -> LinkLine {
    let mut line = LinkLine::default();
    let lib_dir = prefix.join("lib");
    line.search(&lib_dir);
    let msvc = env::target_cfg("target_env") == "msvc";
    for name in LIBRARY_ORDER {
        let file = if msvc {
            format!("{name}.lib")
        } else {
            format!("lib{name}.a")
        };
        if lib_dir.join(file).is_file() {
            line.lib(Some("static"), name);
        }
    }

    openmp(&mut line, &prefix.join("build").join("CMakeCache.txt"));

    if let Some(root) = cuda_root {
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
    if vulkan {
        let name = if env::target_cfg("target_os") == "windows" {
            "vulkan-1"
        } else {
            "vulkan"
        };
        line.lib(None, name);
    }
    if metal {
        for framework in ["Foundation", "Metal", "MetalKit", "Accelerate"] {
            line.lib(Some("framework"), framework);
        }
    }
    cxx_runtime(&mut line);
    line
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
