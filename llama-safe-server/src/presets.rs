//! Per-model settings in a TOML file (llama-server's presets): MoE
//! offload, GPU layers, context, parallel sequences, KV cache types, a chat
//! template, aliases. `[defaults]` applies to every model; `[models."NAME"]`
//! to one. An unknown key is an error naming the key, the file and the line.
//!
//! ```
//! use llama_safe_server::presets::Presets;
//! let presets = Presets::parse(r#"
//!     [defaults]
//!     ctx_size = 8192
//!
//!     [models."qwen3-30b-a3b"]
//!     cpu_moe = true
//!     n_gpu_layers = 999
//!     aliases = ["qwen3"]
//! "#, "models.toml".as_ref())?;
//! assert_eq!(presets.resolve("qwen3"), "qwen3-30b-a3b");
//! let p = presets.for_model("qwen3-30b-a3b");
//! assert_eq!((p.cpu_moe, p.ctx_size), (Some(true), Some(8192)));
//! # Ok::<(), llama_safe_server::presets::PresetError>(())
//! ```

use llama_safe::engine::EngineConfig;
use llama_safe::{ContextParams, KvCacheType, LlamaModelParams};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The largest presets file read.
pub const MAX_PRESETS_BYTES: u64 = 1 << 20;

/// One model's settings; unset ones keep the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Every expert tensor in host memory (`--cpu-moe`).
    pub cpu_moe: Option<bool>,
    /// The experts of the first N layers in host memory (`--n-cpu-moe`).
    pub n_cpu_moe: Option<u32>,
    /// Fit the model and context to the devices' free memory (`--fit`).
    pub fit: Option<bool>,
    /// Layers on the GPU (`--n-gpu-layers`).
    pub n_gpu_layers: Option<u32>,
    /// KV cells (`--ctx-size`).
    pub ctx_size: Option<u32>,
    /// Sequences decoded together (`--parallel`).
    pub parallel: Option<u32>,
    /// KV cache type of K (`f16`, `q8_0`, ...).
    pub cache_type_k: Option<String>,
    /// KV cache type of V.
    pub cache_type_v: Option<String>,
    /// A Jinja chat template file (relative paths: to the presets file).
    pub chat_template_file: Option<PathBuf>,
    /// Other names requests may use.
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Preset,
    #[serde(default)]
    models: BTreeMap<String, Preset>,
}

/// A presets file that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (naming the key and the line where TOML says).
    pub message: String,
}

impl std::fmt::Display for PresetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for PresetError {}

/// The settings of every model, from one file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Presets {
    path: PathBuf,
    defaults: Preset,
    models: BTreeMap<String, Preset>,
    aliases: BTreeMap<String, String>,
}

impl Presets {
    /// Reads `path`: a regular file of at most [`MAX_PRESETS_BYTES`] (a FIFO
    /// or a device is refused unread). Each chat template it names is read
    /// too, by the same rule, so a bad one is an error now, not at every
    /// load of its model.
    pub fn load(path: &Path) -> Result<Presets, PresetError> {
        let fail = |message: String| PresetError {
            path: path.to_path_buf(),
            message,
        };
        let bytes = llama_safe::files::read_regular(path, MAX_PRESETS_BYTES)
            .map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8".into()))?;
        let presets = Presets::parse(&text, path)?;
        let templates = std::iter::once(("[defaults]".to_string(), &presets.defaults)).chain(
            presets
                .models
                .iter()
                .map(|(n, p)| (format!("[models.{n:?}]"), p)),
        );
        for (table, preset) in templates {
            if let Some(file) = &preset.chat_template_file {
                llama_safe::chat::read_template_file(file)
                    .map_err(|e| fail(format!("{table}: `chat_template_file`: {e}")))?;
            }
        }
        Ok(presets)
    }

    /// Checks the presets against the models found: a preset for a model
    /// that is not there, or an alias that is another model's name (it
    /// would hide that model), is an error naming them.
    pub fn check_against<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), PresetError> {
        let names: std::collections::BTreeSet<&str> = names.into_iter().collect();
        let fail = |message: String| PresetError {
            path: self.path.clone(),
            message,
        };
        let missing: Vec<&String> = self
            .models
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .collect();
        if !missing.is_empty() {
            return Err(fail(format!(
                "presets for models that were not found: {missing:?} (names as GET /v1/models lists them)"
            )));
        }
        if let Some((alias, model)) = self
            .aliases
            .iter()
            .find(|(a, _)| names.contains(a.as_str()))
        {
            return Err(fail(format!(
                "the alias {alias:?} of {model:?} is the name of another model found, which it would hide"
            )));
        }
        Ok(())
    }

    /// Parses `text`, the contents of `path` (for messages, and for
    /// relative template paths).
    pub fn parse(text: &str, path: &Path) -> Result<Presets, PresetError> {
        let fail = |message: String| PresetError {
            path: path.to_path_buf(),
            message,
        };
        let file: File =
            toml::from_str(text).map_err(|e| fail(e.to_string().trim().to_string()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let mut presets = Presets {
            path: path.to_path_buf(),
            defaults: file.defaults,
            models: BTreeMap::new(),
            aliases: BTreeMap::new(),
        };
        check(&presets.defaults, "[defaults]").map_err(fail)?;
        if !presets.defaults.aliases.is_empty() {
            return Err(fail("[defaults] cannot have aliases".into()));
        }
        for (name, mut preset) in file.models {
            let table = format!("[models.{name:?}]");
            check(&preset, &table).map_err(fail)?;
            if let Some(t) = &preset.chat_template_file {
                preset.chat_template_file = Some(base.join(t));
            }
            for alias in &preset.aliases {
                if alias.is_empty() || alias == &name {
                    return Err(fail(format!(
                        "{table}: an alias must be another, non-empty name"
                    )));
                }
                if let Some(other) = presets.aliases.insert(alias.clone(), name.clone()) {
                    return Err(fail(format!(
                        "the alias {alias:?} is given to both {other:?} and {name:?}"
                    )));
                }
            }
            presets.models.insert(name, preset);
        }
        if let Some(defaults_template) = &presets.defaults.chat_template_file {
            presets.defaults.chat_template_file = Some(base.join(defaults_template));
        }
        if let Some((alias, _)) = presets
            .aliases
            .iter()
            .find(|(a, _)| presets.models.contains_key(*a))
        {
            return Err(fail(format!(
                "{alias:?} is both a model's name and another's alias"
            )));
        }
        Ok(presets)
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model a name means: an alias's model, else the name itself.
    pub fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        self.aliases.get(name).map_or(name, String::as_str)
    }

    /// The aliases of `name`.
    pub fn aliases_of(&self, name: &str) -> &[String] {
        self.models.get(name).map_or(&[], |p| p.aliases.as_slice())
    }

    /// `[defaults]` with `[models."NAME"]` over it.
    pub fn for_model(&self, name: &str) -> Preset {
        let d = &self.defaults;
        let Some(m) = self.models.get(name) else {
            return d.clone();
        };
        Preset {
            cpu_moe: m.cpu_moe.or(d.cpu_moe),
            n_cpu_moe: m.n_cpu_moe.or(d.n_cpu_moe),
            fit: m.fit.or(d.fit),
            n_gpu_layers: m.n_gpu_layers.or(d.n_gpu_layers),
            ctx_size: m.ctx_size.or(d.ctx_size),
            parallel: m.parallel.or(d.parallel),
            cache_type_k: m.cache_type_k.clone().or_else(|| d.cache_type_k.clone()),
            cache_type_v: m.cache_type_v.clone().or_else(|| d.cache_type_v.clone()),
            chat_template_file: m
                .chat_template_file
                .clone()
                .or_else(|| d.chat_template_file.clone()),
            aliases: m.aliases.clone(),
        }
    }
}

/// What can be checked without the model.
fn check(p: &Preset, table: &str) -> Result<(), String> {
    if p.cpu_moe == Some(true) && p.n_cpu_moe.is_some() {
        return Err(format!(
            "{table}: `cpu_moe` and `n_cpu_moe` together (choose one)"
        ));
    }
    for (key, value) in [
        ("cache_type_k", &p.cache_type_k),
        ("cache_type_v", &p.cache_type_v),
    ] {
        if let Some(v) = value {
            v.parse::<KvCacheType>()
                .map_err(|e| format!("{table}: `{key}`: {e}"))?;
        }
    }
    for (key, value) in [("ctx_size", p.ctx_size), ("parallel", p.parallel)] {
        if value == Some(0) {
            return Err(format!("{table}: `{key}` must be above 0"));
        }
    }
    Ok(())
}

impl Preset {
    /// `base` with this preset's load settings: offload, GPU layers.
    pub fn model_params(&self, mut base: LlamaModelParams) -> LlamaModelParams {
        if let Some(n) = self.n_gpu_layers {
            base = base.with_n_gpu_layers(n);
        }
        if self.cpu_moe == Some(true) {
            base = base.with_cpu_moe_all();
        } else if let Some(n) = self.n_cpu_moe {
            base = base.with_n_cpu_moe(n);
        }
        base
    }

    /// `base` with this preset's context settings: size, sequences, KV
    /// cache types.
    pub fn engine_config(&self, mut base: EngineConfig) -> EngineConfig {
        if let Some(n) = self.ctx_size {
            base = base.with_n_ctx(n);
        }
        if let Some(n) = self.parallel {
            base = base.with_n_parallel(n);
        }
        let kv = |v: &Option<String>| v.as_deref().and_then(|t| t.parse::<KvCacheType>().ok());
        let (k, v) = (kv(&self.cache_type_k), kv(&self.cache_type_v));
        if k.is_some() || v.is_some() {
            let ctx: ContextParams = base
                .context_params()
                .with_kv_cache_type(k.unwrap_or(KvCacheType::F16), v.unwrap_or(KvCacheType::F16));
            base = base.with_context(ctx);
        }
        base
    }
}
