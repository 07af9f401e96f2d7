//! Checks for the external tools the build needs, done before CMake runs so a
//! missing tool gets one clear message.

use crate::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether `program --version` runs.
fn runs(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The CMake binary (`CMAKE`, else `cmake` on `PATH`), if it runs.
pub fn cmake() -> Result<PathBuf, String> {
    let cmake = env::var_os("CMAKE").map_or_else(|| PathBuf::from("cmake"), PathBuf::from);
    if runs(&cmake) {
        Ok(cmake)
    } else {
        Err(format!(
            "`{}` was not found or does not run",
            cmake.display()
        ))
    }
}

/// The first line of `cmake --version`, for the build cache's key.
pub fn cmake_version() -> Option<String> {
    let cmake = cmake().ok()?;
    let out = std::process::Command::new(cmake)
        .arg("--version")
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .next()
        .map(str::to_string)
}

/// Install hints for CMake.
pub fn cmake_help() -> Vec<String> {
    vec![
        "install CMake 3.14 or newer: `apt-get install cmake` (Debian/Ubuntu), \
         `dnf install cmake`, `brew install cmake`, or `pip install cmake`"
            .into(),
        "or point the CMAKE environment variable at a cmake binary".into(),
    ]
}

/// The CUDA toolkit root: `CUDA_PATH`, `CUDA_HOME`, `CUDAToolkit_ROOT`, then
/// the folder above the `nvcc` found on `PATH`, then `/usr/local/cuda`.
/// Returns the root and its `nvcc`.
pub fn cuda_toolkit() -> Result<(PathBuf, PathBuf), String> {
    let named = ["CUDA_PATH", "CUDA_HOME", "CUDAToolkit_ROOT"]
        .into_iter()
        .filter_map(env::var_os)
        .map(PathBuf::from);
    let from_path = which("nvcc").and_then(|nvcc| Some(nvcc.parent()?.parent()?.to_path_buf()));
    let candidates = named
        .chain(from_path)
        .chain(std::iter::once(PathBuf::from("/usr/local/cuda")));
    for root in candidates {
        // nvcc runs on the host, so the host (cfg!) is the right question here.
        let nvcc = root
            .join("bin")
            .join(if cfg!(windows) { "nvcc.exe" } else { "nvcc" });
        if runs(&nvcc) {
            return Ok((root, nvcc));
        }
    }
    Err("the `cuda` feature needs the CUDA toolkit, and `nvcc` was not found".into())
}

/// Install hints for the CUDA toolkit.
pub fn cuda_help() -> Vec<String> {
    vec![
        "install the CUDA toolkit (nvcc, cudart, cuBLAS) 12.x or newer".into(),
        "or set CUDA_PATH (or CUDA_HOME) to its root, the folder holding bin/nvcc".into(),
        "or build without `--features cuda` for the CPU backend".into(),
    ]
}

/// `name` on `PATH`, if present.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
