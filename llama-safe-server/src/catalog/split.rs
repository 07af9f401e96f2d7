//! Split GGUFs: `NAME-00001-of-00003.gguf` and its siblings are one model.

use std::path::{Path, PathBuf};

/// `(stem, index, count)` of a shard's file name, 1-based.
///
/// `model-00002-of-00003.gguf` → `("model", 2, 3)`.
pub(crate) fn shard(path: &Path) -> Option<(String, u32, u32)> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (base, index) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(count) {
        return None;
    }
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (1..=count)
        .contains(&index)
        .then(|| (base.to_string(), index, count))
}

/// Groups `files` into models: a plain file alone, the shards of a split
/// model together (in order) when every shard is there. What is left out,
/// with why, goes to `skipped`.
pub(crate) fn group(
    files: Vec<PathBuf>,
    skipped: &mut Vec<(PathBuf, String)>,
) -> Vec<(String, Vec<PathBuf>)> {
    use std::collections::BTreeMap;
    let mut out = Vec::new();
    let mut splits: BTreeMap<(PathBuf, String, u32), Vec<(u32, PathBuf)>> = BTreeMap::new();
    for f in files {
        match shard(&f) {
            Some((base, index, count)) => {
                let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
                splits
                    .entry((dir, base, count))
                    .or_default()
                    .push((index, f));
            }
            None => {
                let stem = f
                    .file_name()
                    .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
                    .unwrap_or_default();
                out.push((stem, vec![f]));
            }
        }
    }
    for ((_, base, count), mut shards) in splits {
        shards.sort();
        if shards.len() as u32 != count
            || shards
                .iter()
                .enumerate()
                .any(|(i, (n, _))| *n != i as u32 + 1)
        {
            let why = format!("{} of {count} shards of {base:?} found", shards.len());
            skipped.extend(shards.into_iter().map(|(_, f)| (f, why.clone())));
            continue;
        }
        out.push((base, shards.into_iter().map(|(_, f)| f).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert_eq!(
            shard(Path::new("/m/qwen-q4_k_m-00002-of-00003.gguf")),
            Some(("qwen-q4_k_m".into(), 2, 3))
        );
        assert_eq!(shard(Path::new("qwen-00004-of-00003.gguf")), None);
        assert_eq!(shard(Path::new("qwen-2-of-3.gguf")), None);
        assert_eq!(shard(Path::new("qwen.gguf")), None);
    }

    #[test]
    fn a_split_model_is_one_and_an_incomplete_one_none() {
        let mut skipped = Vec::new();
        let files = [
            "a-00002-of-00002.gguf",
            "a-00001-of-00002.gguf",
            "b.gguf",
            "c-00001-of-00003.gguf",
        ]
        .map(PathBuf::from)
        .to_vec();
        let mut models = group(files, &mut skipped);
        models.sort();
        assert_eq!(models.len(), 2);
        assert_eq!(models[0].0, "a");
        assert_eq!(
            models[0].1,
            [
                PathBuf::from("a-00001-of-00002.gguf"),
                PathBuf::from("a-00002-of-00002.gguf")
            ]
        );
        assert_eq!(models[1], ("b".into(), vec![PathBuf::from("b.gguf")]));
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].1.contains("1 of 3 shards"), "{skipped:?}");
    }
}
