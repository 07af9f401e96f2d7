//! Every environment variable the build script reads goes through here, so
//! each one is also registered with `cargo:rerun-if-env-changed`.

use std::ffi::OsString;

/// Reads `name`, telling cargo to rerun the build script when it changes.
/// The target-prefixed form (`X86_64_UNKNOWN_LINUX_GNU_LLAMA_CPP_DIR` for a
/// build for that target) wins over the plain one, as openssl-sys does, so a
/// cross build can set one value per target.
pub fn var_os(name: &str) -> Option<OsString> {
    let target = std::env::var("TARGET").unwrap_or_default();
    let prefixed = format!(
        "{}_{name}",
        target.to_ascii_uppercase().replace(['-', '.'], "_")
    );
    println!("cargo:rerun-if-env-changed={prefixed}");
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var_os(&prefixed).or_else(|| std::env::var_os(name))
}

/// Reads `name` as UTF-8; a value that is not UTF-8 is treated as unset.
pub fn var(name: &str) -> Option<String> {
    var_os(name).and_then(|v| v.into_string().ok())
}

/// True when `name` is set to anything but empty, `0`, `false`, `off` or `no`.
pub fn flag(name: &str) -> bool {
    match var(name) {
        None => false,
        Some(v) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "off" | "no"
        ),
    }
}

/// Variables cargo sets for every build script; they cannot change without
/// cargo rerunning us, so no `rerun-if-env-changed` is printed.
pub fn cargo(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo did not set {name}"))
}

/// A `CARGO_CFG_*` target fact (comma-separated values), or empty.
pub fn target_cfg(name: &str) -> String {
    std::env::var(format!("CARGO_CFG_{}", name.to_ascii_uppercase())).unwrap_or_default()
}

/// The target's OS when it does not use ELF objects (Apple's Mach-O,
/// Windows' COFF), `None` for ELF targets (Linux, Android, the BSDs): symbol
/// prefixing and the `dynamic` feature handle ELF only.
pub fn non_elf_os() -> Option<String> {
    let os = target_cfg("target_os");
    matches!(
        os.as_str(),
        "macos" | "ios" | "tvos" | "watchos" | "visionos" | "windows"
    )
    .then_some(os)
}

/// Whether a cargo feature of this crate is enabled.
pub fn feature(name: &str) -> bool {
    let var = format!(
        "CARGO_FEATURE_{}",
        name.to_ascii_uppercase().replace('-', "_")
    );
    std::env::var_os(var).is_some()
}
