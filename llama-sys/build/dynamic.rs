//! The `dynamic` feature: llama.cpp and ggml as one shared library,
//! `libllama_safe_sys.so`, linked from the same static archives the default
//! build uses (position-independent, symbol-prefixed when isolation is on),
//! so it costs one link, not another llama.cpp build.
//!
//! Its soname is its absolute path, so every binary linked against it
//! records that path and loads the library from there, with no rpath,
//! `LD_LIBRARY_PATH` or install step (cargo cannot pass an rpath to the
//! binaries of the crates that depend on this one). The price: a binary
//! copied to another machine needs the library at the same path there; ship
//! the default static build instead.
//!
//! ELF targets only (Linux, the BSDs); elsewhere the feature is an error.

use crate::link::LinkLine;
use std::path::{Path, PathBuf};

/// The library's name for the linker (`-l`).
pub const LIBRARY: &str = "llama_safe_sys";

/// Why the feature cannot be used for this target, if it cannot.
pub fn unsupported() -> Option<String> {
    crate::env::non_elf_os()
        .map(|os| format!("the `dynamic` feature builds ELF shared libraries; {os} is not ELF"))
}

/// Links the archives of `archive_dir` (everything in them: `--whole-archive`)
/// and what they need (`line`'s system part) into `out_dir/dynamic/`;
/// returns that folder.
pub fn build(archive_dir: &Path, line: &LinkLine, out_dir: &Path) -> Result<PathBuf, String> {
    let dir = out_dir.join("dynamic");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let library = dir.join(format!("lib{LIBRARY}.so"));
    let archives = crate::link::archives(archive_dir);
    let compiler = cc::Build::new()
        .cpp(true)
        .cargo_metadata(false)
        .get_compiler();
    let mut cmd = compiler.to_command();
    cmd.arg("-shared")
        .arg("-o")
        .arg(&library)
        .arg(format!("-Wl,-soname,{}", library.display()))
        .arg("-Wl,--whole-archive")
        .args(&archives)
        .arg("-Wl,--no-whole-archive")
        .args(line.system_args())
        .arg("-lm");
    let out = cmd.output().map_err(|e| {
        format!(
            "cannot run the C++ compiler to link {}: {e}",
            library.display()
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "linking {} failed: {}",
            library.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(dir)
}
