//! Checks a model file before llama.cpp's loader sees it, for every value
//! the pinned loader would *abort* on (a `GGML_ASSERT` in hparam or vocab
//! loading, or at the first decode) rather than reject with an error.
//!
//! Each rule cites the llama.cpp code it guards. Values are read with the
//! key/value overrides of the params applied, as the loader reads them.
//! Anything the loader rejects by itself (a missing key, an unknown
//! architecture, a tensor of the wrong shape) is left to it: it fails
//! cleanly with a reason. [`LlamaModel::load`](crate::LlamaModel::load) and
//! [`LlamaModelParams::plan`] run the same checks, so a dry run rejects what
//! a load would.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model_params::{KvValue, LlamaModelParams, LoadMode};
use std::collections::HashSet;

/// `LLAMA_MAX_LAYERS` in `src/llama-hparams.h`.
pub const MAX_LAYERS: u64 = 512;
/// `LLAMA_MAX_EXPERTS` in `src/llama-hparams.h`.
pub const MAX_EXPERTS: u64 = 1024;
/// The rope scaling names `llama_rope_scaling_type_from_string` knows
/// (`src/llama-model.cpp`); any other aborts the load.
const ROPE_SCALING_TYPES: [&str; 4] = ["none", "linear", "yarn", "longrope"];

/// Architectures whose graph outputs `embedding_length_out`-wide embeddings.
const PROJECTING_ARCHS: [&str; 7] = [
    "qwen35",
    "qwen4exp",
    "gemma4-assistant",
    "deepseek4",
    "wavtokenizer-dec",
    "lfm2",
    "lfm2moe",
];

/// Architectures whose graph asserts `n_embd_head == n_rot` and that the
/// key and value heads are as wide (`GGML_ASSERT(n_embd_head ==
/// hparams.n_embd_head_k())` in `src/models/*.cpp`, reached when the first
/// graph is built); llama's loader also throws for the first itself.
const ROT_IS_HEAD_ARCHS: [&str; 62] = [
    "apertus",
    "arcee",
    "arctic",
    "baichuan",
    "chameleon",
    "codeshell",
    "cogvlm",
    "cohere2moe",
    "dbrx",
    "deci",
    "deepseek",
    "dots1",
    "dream",
    "ernie4_5",
    "ernie4_5-moe",
    "exaone",
    "exaone-moe",
    "exaone4",
    "falcon",
    "granite",
    "granite_swa",
    "graniteswitch",
    "grok",
    "grovemoe",
    "hunyuan-moe",
    "hunyuan_vl",
    "hy_v3",
    "internlm2",
    "jais2",
    "llada",
    "llada-moe",
    "llama",
    "llama4",
    "maincoder",
    "mellum",
    "minimax-01",
    "minimax-m2",
    "minimax-m3",
    "mistral3",
    "nemotron",
    "olmo",
    "olmo2",
    "olmoe",
    "orion",
    "paddleocr",
    "pangu-embedded",
    "plamo",
    "pockettts",
    "qwen2",
    "qwen2moe",
    "qwen2vl",
    "qwen3",
    "qwen3moe",
    "qwen3vl",
    "qwen3vlmoe",
    "rnd1",
    "seed_oss",
    "smallthinker",
    "smollm3",
    "starcoder2",
    "talkie",
    "xverse",
];

/// Metadata as the loader reads it: the file's values under the overrides.
struct Meta<'a> {
    file: &'a GgufFile,
    params: &'a LlamaModelParams,
}

impl Meta<'_> {
    fn override_of(&self, key: &str) -> Option<&KvValue> {
        self.params
            .kv_overrides()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    fn str(&self, key: &str) -> Option<String> {
        match self.override_of(key) {
            Some(KvValue::Str(s)) => Some(s.clone()),
            Some(_) => None,
            None => self.file.get_str(key).ok(),
        }
    }

    /// An integer, or None when absent or of another type (the loader then
    /// uses its default or fails cleanly).
    fn u64(&self, key: &str) -> Option<u64> {
        match self.override_of(key) {
            Some(KvValue::Int(v)) => Some((*v).max(0) as u64),
            Some(_) => None,
            None => self.file.get_u64(key).ok(),
        }
    }

    fn u64_list(&self, key: &str) -> Option<Vec<u64>> {
        match self.override_of(key) {
            Some(KvValue::Int(v)) => Some(vec![(*v).max(0) as u64]),
            Some(_) => None,
            None => self.file.get_u64_list(key).ok(),
        }
    }

    fn f64(&self, key: &str) -> Option<f64> {
        match self.override_of(key) {
            Some(KvValue::Float(v)) => Some(*v),
            Some(_) => None,
            None => self.file.get_f64(key).ok(),
        }
    }
}

/// Runs every check on `file` as `params` would load it.
pub(crate) fn model(file: &GgufFile, params: &LlamaModelParams) -> Result<()> {
    let meta = Meta { file, params };
    let invalid = |key: &str, reason: String| Error::InvalidModel {
        path: file.path().to_path_buf(),
        key: key.to_string(),
        reason: reason.into(),
    };
    // Read into buffers, the tensor data is neither mapped nor misaligned.
    if params.load_mode() != LoadMode::Read {
        let extents = file.tensor_extents();
        mapped_alignment(file, &extents).map_err(|(key, reason)| invalid(&key, reason))?;
        if !params.vocab_only() {
            mapped_extent(file, &extents).map_err(|(key, reason)| invalid(&key, reason))?;
        }
    }
    vocab(&meta).map_err(|(key, reason)| invalid(&key, reason))?;
    let Some(arch) = meta.str("general.architecture") else {
        return Ok(()); // the loader rejects it by itself
    };
    // llama_model_base::load_hparams returns before the hparams for these.
    if params.vocab_only() || arch == "clip" {
        return Ok(());
    }
    hparams(&meta, &arch).map_err(|(key, reason)| invalid(&key, reason))
}

type Rejection = (String, String);

/// Bytes a mapped file may hold after its last tensor's data (alignment
/// padding, a small trailer) before the load refuses it.
pub const MAX_TRAILING_BYTES: u64 = 1 << 20;

/// llama.cpp maps the whole file and, prefetching, populates every page
/// of the mapping: a 4 GiB sparse file holding a 0.5 MB model took 4 GB of
/// memory to load. A file much longer than its tensors is refused when it
/// would be mapped (read into buffers, only the tensors are read: the
/// caller skips this then, and for a vocabulary-only load).
fn mapped_extent(
    file: &GgufFile,
    extents: &[(String, u64, u64)],
) -> std::result::Result<(), Rejection> {
    let Ok(size) = std::fs::metadata(file.path()).map(|m| m.len()) else {
        return Ok(()); // the loader reports an unreadable file itself
    };
    let end = extents
        .iter()
        .map(|(_, start, bytes)| start.saturating_add(*bytes))
        .max()
        .unwrap_or(0);
    if size.saturating_sub(end) > MAX_TRAILING_BYTES {
        return Err((
            "tensor data".into(),
            format!(
                "the file is {size} bytes but its tensors end at byte {end}: {} bytes after them would be mapped and read into memory (a sparse or padded file; LoadMode::Read loads only the tensors)",
                size - end
            ),
        ));
    }
    Ok(())
}

/// Tensor data that llama.cpp maps from the file must start on ggml's
/// `TENSOR_ALIGNMENT` (32 bytes): `ggml_backend_cpu_buffer_from_ptr`
/// asserts it. A `general.alignment` below 32 can misplace it.
/// (Read into buffers, ggml aligns the data itself: the caller skips this.)
fn mapped_alignment(
    file: &GgufFile,
    extents: &[(String, u64, u64)],
) -> std::result::Result<(), Rejection> {
    const TENSOR_ALIGNMENT: u64 = 32;
    for (name, start, _) in extents {
        if start % TENSOR_ALIGNMENT != 0 {
            return Err((
                "general.alignment".into(),
                format!(
                    "{}: tensor {name} starts at offset {start}, not a multiple of {TENSOR_ALIGNMENT} as memory-mapping needs (LoadMode::Read loads it)",
                    file.alignment()
                ),
            ));
        }
    }
    Ok(())
}

/// `llama_vocab::impl::load`: `GGML_ASSERT(id_to_token.size() ==
/// token_to_id.size())` aborts on two tokens with the same text; and a WPM
/// (`bert`) vocabulary cannot render byte tokens (`token_to_byte` aborts),
/// which a grammar or a detokenization would reach.
fn vocab(meta: &Meta<'_>) -> std::result::Result<(), Rejection> {
    const KEY: &str = "tokenizer.ggml.tokens";
    const TOKEN_TYPE_BYTE: u64 = 6; // LLAMA_TOKEN_TYPE_BYTE
    if meta.str("tokenizer.ggml.model").as_deref() == Some("bert") {
        let types = meta
            .file
            .get_u64_list("tokenizer.ggml.token_type")
            .unwrap_or_default();
        if let Some(id) = types.iter().position(|&t| t == TOKEN_TYPE_BYTE) {
            return Err((
                "tokenizer.ggml.token_type".into(),
                format!("token {id} is a byte token, which a WPM (bert) vocabulary cannot have"),
            ));
        }
    }
    let Ok(tokens) = meta.file.get_str_list(KEY) else {
        return Ok(());
    };
    let mut seen = HashSet::with_capacity(tokens.len());
    for (id, text) in tokens.iter().enumerate() {
        if !seen.insert(*text) {
            return Err((
                KEY.into(),
                format!(
                    "token {id} ({:?}) repeats an earlier token's text",
                    String::from_utf8_lossy(text)
                ),
            ));
        }
    }
    Ok(())
}

/// The asserts of `llama_model_base::load_hparams` (`src/llama-model.cpp`)
/// that a file or an override can reach, and the norm epsilons the first
/// decode asserts on.
fn hparams(meta: &Meta<'_>, arch: &str) -> std::result::Result<(), Rejection> {
    let key = |name: &str| format!("{arch}.{name}");
    let fail = |name: &str, reason: String| Err((key(name), reason));

    // GGML_ASSERT(hparams.n_layer_all > 0 && hparams.n_layer_all <= LLAMA_MAX_LAYERS)
    let Some(n_layer) = meta.u64(&key("block_count")) else {
        return Ok(()); // required: the loader rejects its absence itself
    };
    if n_layer == 0 || n_layer > MAX_LAYERS {
        return fail(
            "block_count",
            format!("{n_layer} is outside 1..={MAX_LAYERS} (LLAMA_MAX_LAYERS)"),
        );
    }
    // GGML_ASSERT(hparams.n_layer_nextn <= hparams.n_layer_all)
    let nextn = meta.u64(&key("nextn_predict_layers")).unwrap_or(0);
    if nextn > n_layer {
        return fail(
            "nextn_predict_layers",
            format!("{nextn} exceeds block_count {n_layer}"),
        );
    }

    let mut n_expert = meta.u64(&key("expert_count")).unwrap_or(0);
    // get_key_or_arr: a scalar applies to every layer; a longer array is
    // rejected by the loader itself.
    let used = meta.u64_list(&key("expert_used_count")).unwrap_or_default();
    if used.len() as u64 > n_layer {
        return Ok(());
    }
    let mut used_max = used.iter().copied().max().unwrap_or(0);
    if (arch == "hunyuan-vl" || arch == "hunyuan-dense") && n_expert <= 1 {
        n_expert = 0;
        used_max = 0;
    }
    let groups = meta.u64(&key("expert_group_count")).unwrap_or(0);
    let group_used = meta.u64(&key("expert_group_used_count")).unwrap_or(0);
    if n_expert > MAX_EXPERTS {
        return fail(
            "expert_count",
            format!("{n_expert} exceeds {MAX_EXPERTS} (LLAMA_MAX_EXPERTS)"),
        );
    }
    if used_max > n_expert {
        return fail(
            "expert_used_count",
            format!("{used_max} exceeds expert_count {n_expert}"),
        );
    }
    if n_expert > 0 {
        if used_max == 0 {
            return fail(
                "expert_used_count",
                format!(
                    "0 (or absent) with expert_count {n_expert}: a MoE model must use an expert"
                ),
            );
        }
        if groups >= n_expert {
            return fail(
                "expert_group_count",
                format!("{groups} is not below expert_count {n_expert}"),
            );
        }
        if groups > 1 {
            if n_expert % groups != 0 {
                return fail(
                    "expert_group_count",
                    format!("expert_count {n_expert} is not a multiple of {groups} groups"),
                );
            }
            if group_used == 0 || group_used >= groups {
                return fail(
                    "expert_group_used_count",
                    format!("{group_used} is outside 1..{groups}"),
                );
            }
        }
    } else if used_max != 0 || groups != 0 {
        return fail(
            if used_max != 0 {
                "expert_used_count"
            } else {
                "expert_group_count"
            },
            format!("experts used or grouped ({used_max}, {groups}) in a model without experts"),
        );
    }

    // The embeddings llama.cpp copies out are n_embd_out() wide; only the
    // architectures whose graph projects to that width (src/models/*.cpp
    // using n_embd_out()) produce it, for the rest a wider value reads past
    // the output tensor: GGML_ASSERT "tensor read out of bounds".
    if !PROJECTING_ARCHS.contains(&arch) {
        let n_embd = meta.u64(&key("embedding_length")).unwrap_or(0);
        if let Some(out) = meta.u64(&key("embedding_length_out")) {
            if out > n_embd {
                return fail(
                    "embedding_length_out",
                    format!(
                        "{out} exceeds embedding_length {n_embd}, which is what {arch} outputs"
                    ),
                );
            }
        }
    }

    if ROT_IS_HEAD_ARCHS.contains(&arch) {
        head_sizes(meta, arch)?;
    }

    // GGML_ASSERT(hparams.rope_scaling_type_train != LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED)
    if let Some(scaling) = meta.str(&key("rope.scaling.type")) {
        if !ROPE_SCALING_TYPES.contains(&scaling.as_str()) {
            return fail(
                "rope.scaling.type",
                format!("{scaling:?} is none of {ROPE_SCALING_TYPES:?}"),
            );
        }
    }

    // ggml's norm ops assert `eps >= 0.0f` at the first decode, which a NaN
    // fails too.
    for name in [
        "attention.layer_norm_rms_epsilon",
        "attention.layer_norm_epsilon",
    ] {
        if let Some(eps) = meta.f64(&key(name)) {
            if !(eps.is_finite() && eps >= 0.0) {
                return fail(name, format!("{eps} is not a finite value >= 0"));
            }
        }
    }
    Ok(())
}

/// For [`ROT_IS_HEAD_ARCHS`]: the rope dimension and the value head size
/// must equal the key head size, each computed as `load_hparams` does
/// (`key_length`, `value_length`, `rope.dimension_count`, else
/// `embedding_length / head_count` of the first layer).
fn head_sizes(meta: &Meta<'_>, arch: &str) -> std::result::Result<(), Rejection> {
    let key = |name: &str| format!("{arch}.{name}");
    let n_embd = meta.u64(&key("embedding_length")).unwrap_or(0);
    let n_head = meta
        .u64_list(&key("attention.head_count"))
        .and_then(|heads| heads.first().copied())
        .unwrap_or(0);
    if n_head == 0 {
        return Ok(()); // no attention heads: no rope
    }
    let head_k = meta
        .u64(&key("attention.key_length"))
        .unwrap_or(n_embd / n_head);
    let head_v = meta
        .u64(&key("attention.value_length"))
        .unwrap_or(n_embd / n_head);
    let rot = meta.u64(&key("rope.dimension_count")).unwrap_or(head_k);
    if head_v != head_k {
        return Err((
            key("attention.value_length"),
            format!("{head_v} differs from the key head size {head_k}, which {arch} requires"),
        ));
    }
    if rot != head_k {
        return Err((
            key("rope.dimension_count"),
            format!("{rot} differs from the head size {head_k}, which {arch} requires"),
        ));
    }
    Ok(())
}
