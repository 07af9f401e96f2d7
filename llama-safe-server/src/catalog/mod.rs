//! Finding GGUF models where users keep them: folders of their own
//! (`--models-dir`), and, opt-in, the Hugging Face hub cache, Ollama's store
//! and LM Studio's folder, each as that tool lays it out. Every model gets
//! the name its users know it by (`org/name:file`, Ollama's `name:tag`);
//! the shards of a split GGUF are one model; a projector (`mmproj`) or a
//! draft model beside a model is found but not listed as a chat model.
//! A scan reads only each file's GGUF header, and runs when asked, never on
//! a timer.
//!
//! ```no_run
//! use llama_safe_server::catalog::{Catalog, Sources};
//! let sources = Sources::default()
//!     .with_dir("/srv/models")
//!     .with_hf_cache(Sources::default_hf_cache())
//!     .with_ollama(Sources::default_ollama());
//! let catalog = Catalog::scan(&sources);
//! for model in catalog.chat_models() {
//!     println!("{} {} {} bytes", model.name, model.quantization, model.size);
//! }
//! ```

mod dirs;
mod hf;
mod lmstudio;
mod ollama;
mod split;

use llama_safe::gguf::GgufFile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where to look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    dirs: Vec<PathBuf>,
    hf_cache: Option<PathBuf>,
    ollama: Option<PathBuf>,
    lm_studio: Option<PathBuf>,
}

impl Sources {
    /// A folder of GGUF files (searched to a depth of [`MAX_DEPTH`]);
    /// a model's name is its path below the folder, without `.gguf`.
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dirs.push(dir.into());
        self
    }

    /// The Hugging Face hub cache (`models--ORG--NAME/snapshots/REV/`).
    pub fn with_hf_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.hf_cache = Some(dir.into());
        self
    }

    /// Ollama's models folder (`manifests/` and `blobs/`).
    pub fn with_ollama(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ollama = Some(dir.into());
        self
    }

    /// LM Studio's models folder (`PUBLISHER/REPO/*.gguf`).
    pub fn with_lm_studio(mut self, dir: impl Into<PathBuf>) -> Self {
        self.lm_studio = Some(dir.into());
        self
    }

    /// `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub fn default_hf_cache() -> PathBuf {
        if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
            return dir.into();
        }
        if let Some(home) = std::env::var_os("HF_HOME") {
            return PathBuf::from(home).join("hub");
        }
        home().join(".cache/huggingface/hub")
    }

    /// `$OLLAMA_MODELS`, else `~/.ollama/models`.
    pub fn default_ollama() -> PathBuf {
        std::env::var_os("OLLAMA_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".ollama/models"))
    }

    /// `~/.lmstudio/models`, else (older versions) `~/.cache/lm-studio/models`.
    pub fn default_lm_studio() -> PathBuf {
        let new = home().join(".lmstudio/models");
        if new.is_dir() {
            new
        } else {
            home().join(".cache/lm-studio/models")
        }
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// Deepest a folder is searched below a models folder.
pub const MAX_DEPTH: usize = 6;
/// Most GGUF files one scan reads; the rest are reported as skipped.
pub const MAX_FILES: usize = 10_000;

/// Where a model was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// A folder given with [`Sources::with_dir`].
    Dir,
    /// The Hugging Face hub cache.
    HuggingFace,
    /// Ollama's store.
    Ollama,
    /// LM Studio's folder.
    LmStudio,
}

/// A store's folder, resolved: what its scan may read is below it.
pub(crate) struct Store {
    real: PathBuf,
}

impl Store {
    /// `root`, resolved (`None`, and said, if it cannot be).
    fn open(root: &Path, skipped: &mut Vec<(PathBuf, String)>) -> Option<Store> {
        match root.canonicalize() {
            Ok(real) => Some(Store { real }),
            Err(e) => {
                skipped.push((root.to_path_buf(), format!("cannot be read: {e}")));
                None
            }
        }
    }

    /// `path` with every link followed, if it stays inside the store; a
    /// path that leaves it is skipped and said.
    fn resolve(&self, path: &Path, skipped: &mut Vec<(PathBuf, String)>) -> Option<PathBuf> {
        match path.canonicalize() {
            Ok(real) if real.starts_with(&self.real) => Some(real),
            Ok(real) => {
                skipped.push((
                    path.to_path_buf(),
                    format!(
                        "a link out of the store (to {}): not followed",
                        real.display()
                    ),
                ));
                None
            }
            Err(e) => {
                skipped.push((path.to_path_buf(), format!("cannot be read: {e}")));
                None
            }
        }
    }
}

/// What a file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A language model (chat, completion, embeddings).
    Model,
    /// A multimodal projector (`mmproj`, architecture `clip`).
    Projector,
    /// A draft model for speculative decoding (`draft` in its name).
    Draft,
}

/// One model found.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The name requests use.
    pub name: String,
    /// The file llama.cpp loads (the first shard of a split model).
    pub path: PathBuf,
    /// Every file, shards in order.
    pub files: Vec<PathBuf>,
    /// Bytes of all files.
    pub size: u64,
    /// Where it was found.
    pub source: Source,
    /// What it is for.
    pub kind: Kind,
    /// `general.architecture`.
    pub family: String,
    /// The quantization, as llama.cpp names it (`Q4_K_M`), from
    /// `general.file_type`; empty when the file does not say.
    pub quantization: String,
}

/// What a scan found.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
    /// Files found but not listed, with why (not a GGUF, a name taken by
    /// another model, a missing shard, over the file limit).
    pub skipped: Vec<(PathBuf, String)>,
}

/// A file a source found, before its header is read.
pub(crate) struct Found {
    pub name: String,
    pub files: Vec<PathBuf>,
    pub source: Source,
}

impl Catalog {
    /// Scans every source. Unreadable folders and files are skipped (and
    /// said in [`skipped`](Self::skipped)), never an error: one bad file
    /// must not hide the others.
    pub fn scan(sources: &Sources) -> Catalog {
        let mut catalog = Catalog::default();
        let mut found = Vec::new();
        for dir in &sources.dirs {
            dirs::scan(dir, &mut found, &mut catalog.skipped);
        }
        if let Some(dir) = &sources.hf_cache {
            hf::scan(dir, &mut found, &mut catalog.skipped);
        }
        if let Some(dir) = &sources.ollama {
            ollama::scan(dir, &mut found, &mut catalog.skipped);
        }
        if let Some(dir) = &sources.lm_studio {
            lmstudio::scan(dir, &mut found, &mut catalog.skipped);
        }
        for (i, f) in found.into_iter().enumerate() {
            if i >= MAX_FILES {
                catalog
                    .skipped
                    .push((f.files[0].clone(), format!("over {MAX_FILES} models")));
                continue;
            }
            catalog.add(f);
        }
        catalog
    }

    fn add(&mut self, found: Found) {
        let path = found.files[0].clone();
        // A name is written in logs and answers: a control character in it
        // (a newline in a file name) could forge lines.
        if found.name.chars().any(char::is_control) {
            self.skipped
                .push((path, "a control character in the name".into()));
            return;
        }
        if let Some(other) = self.entries.get(&found.name) {
            let why = format!("the name {:?} is {}'s", found.name, other.path.display());
            self.skipped.push((path, why));
            return;
        }
        let header = match GgufFile::open(&path) {
            Ok(h) => h,
            Err(e) => {
                self.skipped.push((path, e.to_string()));
                return;
            }
        };
        let family = header.get_str("general.architecture").unwrap_or_default();
        let projector = family == "clip"
            || header.get_str("general.type").is_ok_and(|t| t == "mmproj")
            || file_name(&path).contains("mmproj");
        let kind = if projector {
            Kind::Projector
        } else if file_name(&path).contains("draft") {
            Kind::Draft
        } else {
            Kind::Model
        };
        let quantization = header
            .get_u64("general.file_type")
            .ok()
            .and_then(ftype_name)
            .unwrap_or_default()
            .to_string();
        let size = found
            .files
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum();
        self.entries.insert(
            found.name.clone(),
            Entry {
                name: found.name,
                path,
                files: found.files,
                size,
                source: found.source,
                kind,
                family,
                quantization,
            },
        );
    }

    /// Every entry, by name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The language models (no projectors, no drafts), by name.
    pub fn chat_models(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().filter(|e| e.kind == Kind::Model)
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }
}

/// The file name, lower case.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// llama.cpp's name for a `general.file_type` (its `llama_ftype`).
pub fn ftype_name(ftype: u64) -> Option<&'static str> {
    Some(match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}
