//! Linking a llama.cpp the user already built (`LLAMA_SYS_PREBUILT_DIR`, an
//! install prefix: `include/` and `lib/` or `lib64/`), static or shared,
//! instead of compiling one: a CUDA build made once is reused by every
//! project.
//!
//! The check that it matches the bindings: every header the bindings are
//! generated from (`wrapper.h` and what it includes) must be byte-for-byte
//! the pinned source's. Which backends it has is read from its
//! `lib/cmake/ggml/ggml-config.cmake`.

use std::path::{Path, PathBuf};

/// The headers `wrapper.h` reads, directly or not, and where the pinned
/// source keeps each.
const BOUND_HEADERS: &[(&str, &str)] = &[
    ("llama.h", "include"),
    ("gguf.h", "ggml/include"),
    ("ggml.h", "ggml/include"),
    ("ggml-alloc.h", "ggml/include"),
    ("ggml-backend.h", "ggml/include"),
    ("ggml-cpu.h", "ggml/include"),
    ("ggml-opt.h", "ggml/include"),
    ("ggml-rpc.h", "ggml/include"),
];

/// An existing llama.cpp install, checked against the pinned headers.
#[derive(Debug)]
pub struct Prebuilt {
    /// The install prefix (`include/` under it).
    pub prefix: PathBuf,
    /// Its library folder.
    pub lib_dir: PathBuf,
    /// Shared libraries (`libllama.so`) rather than static ones.
    pub shared: bool,
    /// Backends and options from `ggml-config.cmake` (`GGML_CUDA`, ...).
    config: String,
}

impl Prebuilt {
    /// Whether the ggml build had `option` (e.g. `GGML_OPENMP_ENABLED`) on.
    pub fn has(&self, option: &str) -> bool {
        self.config.contains(&format!("set({option} \"ON\")"))
    }
}

/// Reads and checks the install at `prefix` against the source at `pinned`.
pub fn open(prefix: &Path, pinned: &Path) -> Result<Prebuilt, String> {
    let include = prefix.join("include");
    let lib_dir = ["lib", "lib64"]
        .iter()
        .map(|d| prefix.join(d))
        .find(|d| {
            d.join(library_file("llama", false)).is_file()
                || d.join(library_file("llama", true)).is_file()
        })
        .ok_or_else(|| {
            format!(
                "LLAMA_SYS_PREBUILT_DIR={}: no lib/ or lib64/ holding {} or {}",
                prefix.display(),
                library_file("llama", false),
                library_file("llama", true)
            )
        })?;
    for (header, dir) in BOUND_HEADERS {
        let theirs = include.join(header);
        let ours = pinned.join(dir).join(header);
        let a = std::fs::read(&theirs).map_err(|e| {
            format!(
                "LLAMA_SYS_PREBUILT_DIR: cannot read {}: {e}",
                theirs.display()
            )
        })?;
        let b = std::fs::read(&ours)
            .map_err(|e| format!("cannot read the pinned {}: {e}", ours.display()))?;
        if a != b {
            return Err(format!(
                "LLAMA_SYS_PREBUILT_DIR: {} differs from the pinned llama.cpp's {header}, so the \
                 bindings would not match the libraries (a different llama.cpp version)",
                theirs.display()
            ));
        }
    }
    let config_file = lib_dir.join("cmake").join("ggml").join("ggml-config.cmake");
    let config = std::fs::read_to_string(&config_file).unwrap_or_default();
    let shared = !lib_dir.join(library_file("llama", false)).is_file();
    Ok(Prebuilt {
        prefix: prefix.to_path_buf(),
        lib_dir,
        shared,
        config,
    })
}

/// `libllama.a` / `libllama.so` (`.dylib` on Apple targets).
pub fn library_file(name: &str, shared: bool) -> String {
    let os = crate::env::target_cfg("target_os");
    match (shared, os.as_str()) {
        (false, _) => format!("lib{name}.a"),
        (true, "macos" | "ios") => format!("lib{name}.dylib"),
        (true, _) => format!("lib{name}.so"),
    }
}

/// Links cargo runs (`cargo run`, `cargo test`) find shared libraries in
/// search folders under the target directory: `OUT_DIR/prebuilt` gets a link
/// to each of the install's shared libraries.
pub fn link_into(prebuilt: &Prebuilt, out_dir: &Path) -> Result<PathBuf, String> {
    let dest = out_dir.join("prebuilt");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let entries = std::fs::read_dir(&prebuilt.lib_dir)
        .map_err(|e| format!("cannot read {}: {e}", prebuilt.lib_dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if text.contains(".so") || text.ends_with(".dylib") {
            link_or_copy(&entry.path(), &dest.join(&name))?;
        }
    }
    Ok(dest)
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), String> {
    #[cfg(unix)]
    let linked = std::os::unix::fs::symlink(from, to);
    #[cfg(not(unix))]
    let linked = std::fs::copy(from, to).map(|_| ());
    linked.map_err(|e| format!("cannot link {} to {}: {e}", from.display(), to.display()))
}
