//! GGUF files in a folder of the user's own, to a bounded depth, never
//! outside it.

use super::{split, Found, Source, Store, MAX_DEPTH, MAX_FILES};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Every `*.gguf` below `root` (following symbolic links that stay inside
/// it, each folder once), grouped into models named by their path below
/// `root`.
pub(super) fn scan(root: &Path, found: &mut Vec<Found>, skipped: &mut Vec<(PathBuf, String)>) {
    let Some(store) = Store::open(root, skipped) else {
        return;
    };
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    walk(&store, root, 0, &mut files, &mut seen, skipped);
    // Group per folder, so shards pair up only with their siblings.
    let mut by_dir: std::collections::BTreeMap<PathBuf, Vec<PathBuf>> = Default::default();
    for f in files {
        by_dir
            .entry(f.parent().map(Path::to_path_buf).unwrap_or_default())
            .or_default()
            .push(f);
    }
    for (dir, files) in by_dir {
        let prefix = dir.strip_prefix(root).unwrap_or(Path::new(""));
        for (stem, files) in split::group(files, skipped) {
            let name = prefix.join(&stem).to_string_lossy().replace('\\', "/");
            found.push(Found {
                name,
                files,
                source: Source::Dir,
            });
        }
    }
}

/// The GGUF files below `dir`, inside `store`: a link that leads out of
/// the store (to another folder, to `/`) is skipped and said, and only
/// regular files are taken.
pub(super) fn walk(
    store: &Store,
    dir: &Path,
    depth: usize,
    files: &mut Vec<PathBuf>,
    seen: &mut HashSet<PathBuf>,
    skipped: &mut Vec<(PathBuf, String)>,
) {
    // A link back up the tree is read once.
    let Some(real) = store.resolve(dir, skipped) else {
        return;
    };
    if !seen.insert(real) || depth > MAX_DEPTH {
        return;
    }
    let Ok(read) = std::fs::read_dir(dir) else {
        skipped.push((dir.to_path_buf(), "cannot be read".into()));
        return;
    };
    let mut entries: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if files.len() >= MAX_FILES {
            skipped.push((path, format!("over {MAX_FILES} files")));
            return;
        }
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let dir_link = path.is_symlink() && path.is_dir();
        if dir_link && !hidden {
            // Inside the store, the folder is listed under its own path, so
            // a model's name never depends on which of its paths came first;
            // outside, it is not followed at all.
            if store.resolve(&path, skipped).is_some() {
                skipped.push((
                    path,
                    "a link to a folder inside the store: listed under its own path".into(),
                ));
            }
        } else if path.is_dir() && !hidden {
            walk(store, &path, depth + 1, files, seen, skipped);
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            if !path.exists() {
                // A link whose target is gone (an interrupted download).
                skipped.push((path, "a link to a missing file".into()));
            } else if let Some(real) = store.resolve(&path, skipped) {
                if real.is_file() {
                    files.push(path);
                } else {
                    skipped.push((path, "not a regular file".into()));
                }
            }
        }
    }
}
