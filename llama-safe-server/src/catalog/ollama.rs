//! Ollama's store: `manifests/REGISTRY/NAMESPACE/NAME/TAG`, a JSON manifest
//! whose layer of media type `application/vnd.ollama.image.model` names the
//! model's blob, `blobs/sha256-HEX`. Named `name:tag` on Ollama's own
//! registry and namespace, `namespace/name:tag` in another namespace, and
//! `registry/namespace/name:tag` elsewhere, as `ollama list` shows them.

use super::{Found, Source, Store};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Ollama's default registry and namespace.
const REGISTRY: &str = "registry.ollama.ai";
const NAMESPACE: &str = "library";
/// A manifest is small; a bigger file is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Deserialize)]
struct Manifest {
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
}

pub(super) fn scan(root: &Path, found: &mut Vec<Found>, skipped: &mut Vec<(PathBuf, String)>) {
    let Some(store) = Store::open(root, skipped) else {
        return;
    };
    let manifests = root.join("manifests");
    // REGISTRY/NAMESPACE/NAME/TAG: four levels, each listed in order, each
    // inside the store (a link to `/` would walk the whole file system).
    let mut list = |dir: &Path| -> Vec<PathBuf> {
        if store.resolve(dir, skipped).is_none() {
            return Vec::new();
        }
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        out.sort();
        out
    };
    let mut tags = Vec::new();
    for registry in list(&manifests) {
        for namespace in list(&registry) {
            for model in list(&namespace) {
                for tag in list(&model) {
                    tags.push([registry.clone(), namespace.clone(), model.clone(), tag]);
                }
            }
        }
    }
    for parts in tags {
        if store
            .resolve(&parts[3], skipped)
            .is_some_and(|t| t.is_file())
        {
            add(
                &store,
                root,
                parts.each_ref().map(PathBuf::as_path),
                found,
                skipped,
            );
        }
    }
}

fn add(
    store: &Store,
    root: &Path,
    parts: [&Path; 4],
    found: &mut Vec<Found>,
    skipped: &mut Vec<(PathBuf, String)>,
) {
    let tag_path = parts[3].to_path_buf();
    let [registry, namespace, model, tag] = parts.map(|p| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let manifest = llama_safe::files::read_regular(&tag_path, MAX_MANIFEST_BYTES)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok());
    let Some(manifest) = manifest else {
        skipped.push((tag_path, "not an Ollama manifest".into()));
        return;
    };
    let layer = manifest
        .layers
        .iter()
        .find(|l| l.media_type == "application/vnd.ollama.image.model");
    let blob = layer.and_then(|l| {
        let hex = l.digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| root.join("blobs").join(format!("sha256-{hex}")))
    });
    let inside = |b: &PathBuf| store.resolve(b, skipped).is_some_and(|r| r.is_file());
    let Some(blob) = blob.filter(inside) else {
        skipped.push((tag_path, "no model layer, or its blob is missing".into()));
        return;
    };
    let name = match (registry.as_str(), namespace.as_str()) {
        (REGISTRY, NAMESPACE) => format!("{model}:{tag}"),
        (REGISTRY, ns) => format!("{ns}/{model}:{tag}"),
        (reg, ns) => format!("{reg}/{ns}/{model}:{tag}"),
    };
    found.push(Found {
        name,
        files: vec![blob],
        source: Source::Ollama,
    });
}
