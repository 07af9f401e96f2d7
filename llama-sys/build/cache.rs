//! One build of llama.cpp per configuration, shared by every profile,
//! target directory and project on the machine.
//!
//! The CMake build of the *pinned* source is keyed by everything that can
//! change its output: the pin's checksum, this crate's version, the target,
//! the features and CMake options, the CMake definitions in `cmake_build.rs`,
//! the compilers and flags from the environment, what CMake's find_package
//! reads from it (`VULKAN_SDK`, `CUDA_PATH`, `PATH`, ...), the cmake binary.
//! A folder without the marker (a build that failed or was killed) is
//! emptied before it is built into again. It lives in a user-level cache folder
//! (`LLAMA_SYS_CACHE_DIR`, else the user's cache folder + `llama-sys`),
//! one subfolder per key, with a `.complete` marker written last: a build
//! script that finds the marker links the libraries there and compiles
//! nothing. A file lock makes concurrent builds of one key wait for each
//! other. A source the user may edit (`LLAMA_CPP_DIR`, `vendor/llama.cpp`)
//! is never cached: it builds in `OUT_DIR` as before.
//!
//! `LLAMA_SYS_CACHE_DIR=off` turns the cache off; deleting the folder
//! cleans it.

use crate::env;
use fs4::FileExt;
use std::path::{Path, PathBuf};

/// Where cached builds go, or `None` when the cache is off.
pub fn dir() -> Option<PathBuf> {
    match env::var_os("LLAMA_SYS_CACHE_DIR") {
        Some(v) if matches!(v.to_str(), Some("off" | "0" | "false" | "no" | "")) => None,
        Some(v) => Some(PathBuf::from(v)),
        None => platform_cache_dir().map(|d| d.join("llama-sys")),
    }
}

/// The user's cache folder (the `dirs` crate: `$XDG_CACHE_HOME` or
/// `~/.cache` on Linux and other Unixes, `~/Library/Caches` on macOS, the
/// Local AppData known folder on Windows).
///
/// The cache belongs to the machine running the build, so the host's folder
/// (what `dirs` returns in a build script) is the right one here.
fn platform_cache_dir() -> Option<PathBuf> {
    // dirs reads these; registering them reruns the build when they change.
    env::var_os("XDG_CACHE_HOME");
    env::var_os("HOME");
    dirs::cache_dir()
}

/// A stable 64-bit FNV-1a of `text`, as hex: the key's folder name (the
/// whole description is kept beside it, in `KEY`), and the fingerprint of
/// longer inputs in the description.
pub fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The build for `description` (every input that changes the output, one
/// per line) under `cache`: returns its install prefix, running `build` with
/// the folder to build into only when no complete build is there.
pub fn build(
    cache: &Path,
    description: &str,
    build: impl FnOnce(&Path) -> PathBuf,
) -> Result<PathBuf, String> {
    let entry = cache.join(fingerprint(description));
    let done = entry.join(".complete");
    if done.is_file() {
        println!(
            "llama-sys: reusing the cached llama.cpp build in {}",
            entry.display()
        );
        return Ok(entry);
    }
    std::fs::create_dir_all(&entry)
        .map_err(|e| format!("cannot create the build cache {}: {e}", entry.display()))?;
    let lock_path = entry.with_extension("lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    FileExt::lock(&lock).map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    // Another build may have finished while this one waited.
    if !done.is_file() {
        // What an earlier, failed build left (a CMake cache that remembers
        // what it found then) must not be reused: start from nothing.
        std::fs::remove_dir_all(&entry)
            .and_then(|()| std::fs::create_dir_all(&entry))
            .map_err(|e| format!("cannot clear {}: {e}", entry.display()))?;
        std::fs::write(entry.join("KEY"), description)
            .map_err(|e| format!("cannot write {}: {e}", entry.display()))?;
        let prefix = build(&entry);
        debug_assert_eq!(prefix, entry);
        std::fs::write(&done, b"").map_err(|e| format!("cannot write {}: {e}", done.display()))?;
    }
    let _ = FileExt::unlock(&lock);
    Ok(entry)
}
