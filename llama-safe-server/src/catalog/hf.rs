//! The Hugging Face hub cache: `models--ORG--NAME/snapshots/REV/FILE.gguf`,
//! symbolic links into the repository's `blobs/`, `refs/main` naming the
//! revision `main` points at. A model is named `org/name:file` (the file's
//! name without `.gguf` and without a shard suffix).

use super::{dirs, split, Found, Source, Store};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub(super) fn scan(root: &Path, found: &mut Vec<Found>, skipped: &mut Vec<(PathBuf, String)>) {
    // Snapshots link into the repository's blobs: inside the cache.
    let Some(store) = Store::open(root, skipped) else {
        return;
    };
    let Ok(read) = std::fs::read_dir(root) else {
        return;
    };
    let mut repos: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
    repos.sort();
    for repo in repos {
        let Some(id) = repo
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("models--"))
            .map(|n| n.replace("--", "/"))
        else {
            continue; // datasets--, spaces--, .locks
        };
        let Some(snapshot) = snapshot(&repo) else {
            continue;
        };
        let mut files = Vec::new();
        dirs::walk(
            &store,
            &snapshot,
            0,
            &mut files,
            &mut HashSet::new(),
            skipped,
        );
        for (stem, files) in split::group(files, skipped) {
            found.push(Found {
                name: format!("{id}:{stem}"),
                files,
                source: Source::HuggingFace,
            });
        }
    }
}

/// The snapshot `refs/main` names, else the most recently modified one.
fn snapshot(repo: &Path) -> Option<PathBuf> {
    let snapshots = repo.join("snapshots");
    let rev = llama_safe::files::read_regular(&repo.join("refs/main"), 256)
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    if let Some(rev) = rev {
        let dir = snapshots.join(rev.trim());
        if !rev.trim().is_empty() && !rev.contains('/') && dir.is_dir() {
            return Some(dir);
        }
    }
    std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}
