//! The pinned llama.cpp source, read from `vendor/llama-cpp.toml`.
//!
//! The file is tiny and flat, so it is parsed here by hand rather than with a
//! TOML crate: `key = "value"` lines inside `[section]`s.

use std::path::Path;

/// What `vendor/llama-cpp.toml` says.
#[derive(Debug, Clone)]
pub struct Pin {
    /// Human description of the upstream revision, e.g. "llama.cpp after b10335 (ggml 0.26.0)".
    pub describe: String,
    /// The published package that carries the source.
    pub package_name: String,
    /// Its exact version.
    pub package_version: String,
    /// Folder inside the package that holds the llama.cpp tree.
    pub subdir: String,
    /// SHA-256 of the package's `.crate` file.
    pub sha256: String,
}

impl Pin {
    pub fn read(path: &Path) -> Result<Pin, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the pin file {}: {e}", path.display()))?;
        let mut section = String::new();
        let mut get = std::collections::HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_string();
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let value = value.trim().trim_matches('"').to_string();
                get.insert(format!("{section}.{}", key.trim()), value);
            }
        }
        let mut take = |key: &str| {
            get.remove(key)
                .ok_or_else(|| format!("the pin file {} has no `{key}`", path.display()))
        };
        Ok(Pin {
            describe: take("upstream.describe")?,
            package_name: take("package.name")?,
            package_version: take("package.version")?,
            subdir: take("package.subdir")?,
            sha256: take("package.sha256")?,
        })
    }
}
