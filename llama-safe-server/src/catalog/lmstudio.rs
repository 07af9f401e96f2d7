//! LM Studio's folder: `PUBLISHER/REPO/*.gguf`, named `publisher/repo/file`.

use super::{dirs, split, Found, Source, Store};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub(super) fn scan(root: &Path, found: &mut Vec<Found>, skipped: &mut Vec<(PathBuf, String)>) {
    let Some(store) = Store::open(root, skipped) else {
        return;
    };
    let mut files = Vec::new();
    dirs::walk(&store, root, 0, &mut files, &mut HashSet::new(), skipped);
    let mut by_repo: std::collections::BTreeMap<PathBuf, Vec<PathBuf>> = Default::default();
    for f in files {
        // Only PUBLISHER/REPO/FILE.gguf: LM Studio's own layout.
        match f.strip_prefix(root).map(|r| r.components().count()) {
            Ok(3) => by_repo
                .entry(f.parent().map(Path::to_path_buf).unwrap_or_default())
                .or_default()
                .push(f),
            _ => skipped.push((f, "not PUBLISHER/REPO/FILE.gguf".into())),
        }
    }
    for (repo, files) in by_repo {
        let prefix = repo
            .strip_prefix(root)
            .unwrap_or(Path::new(""))
            .to_string_lossy()
            .replace('\\', "/");
        for (stem, files) in split::group(files, skipped) {
            found.push(Found {
                name: format!("{prefix}/{stem}"),
                files,
                source: Source::LmStudio,
            });
        }
    }
}
