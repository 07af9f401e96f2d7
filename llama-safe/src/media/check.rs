//! What a projector file must hold before libmtmd reads it: the checks
//! that turn its aborts into [`Error::Projector`].
//!
//! clip.cpp (tools/mtmd of the pinned source) reads each `clip.*` scalar
//! with a typed getter (`gguf_get_val_u32` and friends), which
//! `GGML_ASSERT`s the stored type; it divides by the patch size and the
//! head count; it asserts that an encoder it is told about is there. Arrays
//! it checks itself (a throw, caught by libmtmd).

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use llama_safe_sys as sys;

/// Longest side of a projector's input image, in pixels.
const MAX_IMAGE_SIZE: u64 = 16_384;
/// Most encoder layers.
const MAX_BLOCKS: u64 = 1_024;

/// The getter clip.cpp reads a key with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Read {
    Bool,
    Str,
    F32,
    I32,
    /// One of the array getters, which check the type and throw.
    Array,
    U32,
}

/// How clip.cpp reads `key` (`clip-impl.h`'s `KEY_*` and their getters):
/// every `clip.*` scalar not listed is read with `get_u32`.
fn read_as(key: &str) -> Read {
    const BOOLS: [&str; 5] = [
        "clip.has_vision_encoder",
        "clip.has_audio_encoder",
        "clip.has_gen_audio_encoder",
        "clip.use_gelu",
        "clip.use_silu",
    ];
    const STRINGS: [&str; 6] = [
        "clip.projector_type",
        "clip.vision.projector_type",
        "clip.audio.projector_type",
        "clip.gen.audio.projector_type",
        "clip.gen.audio.model_variant",
        "clip.vision.mm_patch_merge_type",
    ];
    const ARRAY_SUFFIXES: [&str; 9] = [
        ".image_mean",
        ".image_std",
        ".image_grid_pinpoints",
        ".projector.spatial_offsets",
        ".wa_layer_indexes",
        ".wa_pattern_mode",
        ".rvq.codebook_size",
        ".feature_layer",
        "n_wa_pattern_list",
    ];
    if BOOLS.contains(&key) {
        Read::Bool
    } else if STRINGS.contains(&key) {
        Read::Str
    } else if key.ends_with(".attention.layer_norm_epsilon") || key == "clip.vision.swiglu_clamp" {
        Read::F32
    } else if key == "clip.minicpmv_version" {
        Read::I32
    } else if ARRAY_SUFFIXES.iter().any(|s| key.ends_with(s)) {
        Read::Array
    } else {
        Read::U32
    }
}

/// The checks, on the opened file.
pub(super) fn check(file: &GgufFile) -> Result<()> {
    let bad = |reason: String| Error::Projector {
        path: file.path().to_path_buf(),
        reason: reason.into(),
    };
    for key in file.keys() {
        if !key.starts_with("clip.") {
            continue;
        }
        let Some(stored) = file.value_type(&key) else {
            continue;
        };
        let (wanted, name) = match read_as(&key) {
            Read::Bool => (sys::GGUF_TYPE_BOOL, "a bool"),
            Read::Str => (sys::GGUF_TYPE_STRING, "a string"),
            Read::F32 => (sys::GGUF_TYPE_FLOAT32, "a float32"),
            Read::I32 => (sys::GGUF_TYPE_INT32, "an int32"),
            Read::Array => (sys::GGUF_TYPE_ARRAY, "an array"),
            Read::U32 => (sys::GGUF_TYPE_UINT32, "a uint32"),
        };
        if stored != wanted {
            return Err(bad(format!(
                "{key} must be {name} (libmtmd aborts on another type)"
            )));
        }
    }
    let flag = |key: &str| file.get_bool(key).unwrap_or(false);
    let vision = flag("clip.has_vision_encoder");
    let audio = flag("clip.has_audio_encoder");
    if !vision && !audio {
        return Err(bad(
            "not a projector: neither clip.has_vision_encoder nor clip.has_audio_encoder is true \
             (is this the language model?)"
                .into(),
        ));
    }
    for (on, prefix) in [(vision, "vision"), (audio, "audio")] {
        if !on {
            continue;
        }
        let get = |name: &str| {
            let key = format!("clip.{prefix}.{name}");
            file.get_u64(&key)
                .map_err(|_| bad(format!("{key} is missing")))
        };
        let n_embd = get("embedding_length")?;
        let n_head = get("attention.head_count")?;
        let blocks = get("block_count")?;
        let head_dim_key = format!("clip.{prefix}.attention.head_dim");
        if n_embd == 0 || n_head == 0 {
            return Err(bad(format!(
                "clip.{prefix}: embedding_length {n_embd} and head_count {n_head} must be at least 1"
            )));
        }
        if !file.has(&head_dim_key) && n_embd % n_head != 0 {
            return Err(bad(format!(
                "clip.{prefix}: embedding_length {n_embd} is not a multiple of head_count {n_head}"
            )));
        }
        if blocks > MAX_BLOCKS {
            return Err(bad(format!(
                "clip.{prefix}.block_count {blocks} is over {MAX_BLOCKS}"
            )));
        }
    }
    if vision {
        let get = |key: &str| {
            file.get_u64(key)
                .map_err(|_| bad(format!("{key} is missing")))
        };
        let image_size = get("clip.vision.image_size")?;
        let patch_size = get("clip.vision.patch_size")?;
        if patch_size == 0 || image_size == 0 || image_size > MAX_IMAGE_SIZE {
            return Err(bad(format!(
                "clip.vision.image_size {image_size} and patch_size {patch_size} must be in \
                 1..={MAX_IMAGE_SIZE}"
            )));
        }
    }
    Ok(())
}
