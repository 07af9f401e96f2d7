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

/// The Vulkan headers CMake's FindVulkan will use: `VULKAN_SDK`'s, else the
/// system's (`/usr/include`, `/usr/local/include`). Checks they declare
/// `VK_EXT_layer_settings`, which the pinned ggml-vulkan uses; returns the
/// header version found.
pub fn vulkan_headers() -> Result<u32, String> {
    let candidates: Vec<PathBuf> = match env::var_os("VULKAN_SDK") {
        Some(sdk) => vec![PathBuf::from(sdk).join("include")],
        None => vec!["/usr/include".into(), "/usr/local/include".into()],
    };
    let Some(header) = candidates
        .iter()
        .map(|dir| dir.join("vulkan").join("vulkan_core.h"))
        .find(|h| h.is_file())
    else {
        return Err(format!(
            "the `vulkan` feature needs the Vulkan headers, and no vulkan/vulkan_core.h is in {}",
            candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    };
    let text = std::fs::read_to_string(&header)
        .map_err(|e| format!("cannot read {}: {e}", header.display()))?;
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("#define VK_HEADER_VERSION "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if !text.contains("VK_EXT_layer_settings") {
        return Err(format!(
            "the Vulkan headers in {} are too old: version 1.x.{version} lacks VK_EXT_layer_settings, \
             which the pinned ggml-vulkan needs (Debian 13's 1.4.309 works)",
            header.parent().and_then(Path::parent).unwrap_or(&header).display()
        ));
    }
    Ok(version)
}

/// Whether CMake can find SPIRV-Headers' package config, which the pinned
/// ggml-vulkan requires: under `VULKAN_SDK`, `CMAKE_PREFIX_PATH` or the
/// usual prefixes.
pub fn spirv_headers() -> Result<(), String> {
    let mut prefixes: Vec<PathBuf> = ["/usr", "/usr/local"].map(PathBuf::from).to_vec();
    prefixes.extend(env::var_os("VULKAN_SDK").map(PathBuf::from));
    if let Some(paths) = env::var_os("CMAKE_PREFIX_PATH") {
        prefixes.extend(std::env::split_paths(&paths));
    }
    let found = prefixes.iter().any(|p| {
        ["share/cmake", "lib/cmake", "lib64/cmake"].iter().any(|d| {
            p.join(d)
                .join("SPIRV-Headers/SPIRV-HeadersConfig.cmake")
                .is_file()
        }) || std::fs::read_dir(p.join("lib")).is_ok_and(|dirs| {
            dirs.flatten().any(|d| {
                d.path()
                    .join("cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake")
                    .is_file()
            })
        })
    });
    if found {
        Ok(())
    } else {
        Err(
            "the `vulkan` feature needs SPIRV-Headers (its CMake package), and none was found"
                .into(),
        )
    }
}

/// Install hints for Vulkan.
pub fn vulkan_help() -> Vec<String> {
    vec![
        "run scripts/provision-vulkan.sh (Debian 12: newer headers into a folder of their own, \
         glslc, Mesa's drivers) and export the VULKAN_SDK it prints"
            .into(),
        "or set VULKAN_SDK to a Vulkan SDK whose include/vulkan/vulkan_core.h is 1.3.2xx or newer"
            .into(),
        "SPIRV-Headers: Debian `apt-get install spirv-headers`, or add its prefix to CMAKE_PREFIX_PATH"
            .into(),
    ]
}
