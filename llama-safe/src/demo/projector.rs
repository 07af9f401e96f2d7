//! [`DemoProjector`]: a small vision projector (`mmproj`) GGUF for the demo
//! models, so the multimodal path runs with nothing downloaded.

use super::{cached_file, family::Tensors, Rng, SyntheticMoe, VERSION};
use crate::error::Result;
use crate::gguf::{GgmlType, GgufWriter, MetaValue};
use std::path::{Path, PathBuf};

/// A LLaVA-style projector (`clip.projector_type` `mlp`: a ViT of two
/// blocks, 8×8 patches of a 32×32 image, then a two-layer MLP) with small
/// random but fixed weights, written for the demo models' embedding width.
///
/// An image becomes 16 tokens. The MLP's last bias points at the demo
/// sentence's first word and outweighs the rest, so the demo model reads
/// any image much as it reads "Once", and greedy text after an image is
/// the demo sentence's (the image's pixels move the embeddings, never the
/// argmax).
#[derive(Debug, Clone, Copy)]
pub struct DemoProjector;

impl DemoProjector {
    /// Input side, in pixels (images are resized to it).
    pub const IMAGE_SIZE: u32 = 32;
    /// Patch side, in pixels.
    pub const PATCH_SIZE: u32 = 8;
    /// Tokens one image becomes.
    pub const IMAGE_TOKENS: usize = 16;
    const N_EMBD: u64 = 32;
    const N_FF: u64 = 48;
    const MM_HIDDEN: u64 = 64;
    const BLOCKS: u32 = 2;

    /// Writes the projector for the demo models to `path`.
    pub fn write(path: &Path) -> Result<()> {
        Self::write_for(SyntheticMoe::DEMO.n_embd, path)
    }

    /// Writes the projector for a model of embedding width `n_embd_text`
    /// (a [`SyntheticMoe`] of another shape; or, for tests, a projector
    /// that does not match the model).
    pub fn write_for(n_embd_text: u32, path: &Path) -> Result<()> {
        Self::writer(n_embd_text)?.write_to(path)
    }

    /// The projector's path in the cache folder (as for
    /// [`DemoModel::cached`](super::DemoModel::cached)), writing it on first use.
    pub fn cached() -> Result<PathBuf> {
        cached_file(&format!("demo-mmproj-v{VERSION}.gguf"), Self::write)
    }

    fn writer(n_embd_text: u32) -> Result<GgufWriter> {
        let (e, ff, hidden) = (Self::N_EMBD, Self::N_FF, Self::MM_HIDDEN);
        let out = u64::from(n_embd_text);
        let patch = u64::from(Self::PATCH_SIZE);
        let n_pos = u64::from((Self::IMAGE_SIZE / Self::PATCH_SIZE).pow(2));
        let mut w = GgufWriter::new();
        w.meta("general.architecture", MetaValue::Str("clip".into()))
            .meta(
                "general.name",
                MetaValue::Str("llama-safe demo projector".into()),
            )
            .meta("clip.has_vision_encoder", MetaValue::Bool(true))
            .meta("clip.projector_type", MetaValue::Str("mlp".into()))
            .meta("clip.use_gelu", MetaValue::Bool(true))
            .meta("clip.vision.image_size", MetaValue::U32(Self::IMAGE_SIZE))
            .meta("clip.vision.patch_size", MetaValue::U32(Self::PATCH_SIZE))
            .meta("clip.vision.embedding_length", MetaValue::U32(e as u32))
            .meta("clip.vision.feed_forward_length", MetaValue::U32(ff as u32))
            .meta("clip.vision.block_count", MetaValue::U32(Self::BLOCKS))
            .meta("clip.vision.projection_dim", MetaValue::U32(n_embd_text))
            .meta("clip.vision.attention.head_count", MetaValue::U32(4))
            .meta(
                "clip.vision.attention.layer_norm_epsilon",
                MetaValue::F32(1e-5),
            )
            .meta("clip.vision.image_mean", MetaValue::F32Array(vec![0.5; 3]))
            .meta("clip.vision.image_std", MetaValue::F32Array(vec![0.5; 3]));
        let mut rng = Rng(0x5EED_0002);
        let mut t = Tensors {
            w: &mut w,
            rng: &mut rng,
        };
        t.random(
            "v.patch_embd.weight",
            &[patch, patch, 3, e],
            GgmlType::F32,
            0.1,
        )?;
        t.random("v.position_embd.weight", &[e, n_pos], GgmlType::F32, 0.1)?;
        encoder_blocks(&mut t, "v", Self::BLOCKS, e, ff, true)?;
        t.random("mm.0.weight", &[e, hidden], GgmlType::F32, 0.1)?;
        t.zeros("mm.0.bias", hidden)?;
        t.random("mm.2.weight", &[hidden, out], GgmlType::F32, 0.01)?;
        // Direction 0 of the demo model's embedding is its first word.
        let mut bias = vec![0f32; out as usize];
        bias[0] = 1.0;
        t.w.tensor("mm.2.bias", &[out], GgmlType::F32, &bias)?;
        Ok(w)
    }
}

/// An audio projector for the demo models (`clip.projector_type` `qwen2a`:
/// Qwen2-Audio's layout, a Whisper-style encoder of two blocks over 128 mel
/// bins, then one linear layer), small random but fixed weights. A clip
/// becomes [`TOKENS`](Self::TOKENS) tokens per 30 seconds (libmtmd pads
/// shorter ones to 30 s). Its bias points at the demo sentence's first word,
/// as [`DemoProjector`]'s does.
#[derive(Debug, Clone, Copy)]
pub struct DemoAudioProjector;

impl DemoAudioProjector {
    /// Tokens a clip of up to 30 seconds becomes.
    pub const TOKENS: usize = 750;
    const N_EMBD: u64 = 32;
    const N_FF: u64 = 48;
    const N_MEL: u64 = 128;
    const N_POS: u64 = 1500;
    const BLOCKS: u32 = 2;

    /// Writes the audio projector for the demo models to `path`.
    pub fn write(path: &Path) -> Result<()> {
        Self::writer(SyntheticMoe::DEMO.n_embd)?.write_to(path)
    }

    /// The audio projector's path in the cache folder, written on first use.
    pub fn cached() -> Result<PathBuf> {
        cached_file(&format!("demo-mmproj-audio-v{VERSION}.gguf"), Self::write)
    }

    fn writer(n_embd_text: u32) -> Result<GgufWriter> {
        let (e, ff) = (Self::N_EMBD, Self::N_FF);
        let out = u64::from(n_embd_text);
        let mut w = GgufWriter::new();
        w.meta("general.architecture", MetaValue::Str("clip".into()))
            .meta(
                "general.name",
                MetaValue::Str("llama-safe demo audio projector".into()),
            )
            .meta("clip.has_audio_encoder", MetaValue::Bool(true))
            .meta("clip.projector_type", MetaValue::Str("qwen2a".into()))
            .meta(
                "clip.audio.num_mel_bins",
                MetaValue::U32(Self::N_MEL as u32),
            )
            .meta("clip.audio.embedding_length", MetaValue::U32(e as u32))
            .meta("clip.audio.feed_forward_length", MetaValue::U32(ff as u32))
            .meta("clip.audio.block_count", MetaValue::U32(Self::BLOCKS))
            .meta("clip.audio.projection_dim", MetaValue::U32(n_embd_text))
            .meta("clip.audio.attention.head_count", MetaValue::U32(4))
            .meta(
                "clip.audio.attention.layer_norm_epsilon",
                MetaValue::F32(1e-5),
            );
        let mut rng = Rng(0x5EED_0003);
        let mut t = Tensors {
            w: &mut w,
            rng: &mut rng,
        };
        t.random(
            "a.conv1d.1.weight",
            &[3, Self::N_MEL, e],
            GgmlType::F32,
            0.05,
        )?;
        t.w.tensor(
            "a.conv1d.1.bias",
            &[1, e],
            GgmlType::F32,
            &vec![0.0; e as usize],
        )?;
        t.random("a.conv1d.2.weight", &[3, e, e], GgmlType::F32, 0.05)?;
        t.w.tensor(
            "a.conv1d.2.bias",
            &[1, e],
            GgmlType::F32,
            &vec![0.0; e as usize],
        )?;
        t.random(
            "a.position_embd.weight",
            &[e, Self::N_POS],
            GgmlType::F32,
            0.05,
        )?;
        // Whisper's key projection has no bias.
        encoder_blocks(&mut t, "a", Self::BLOCKS, e, ff, false)?;
        t.random("mm.a.fc.weight", &[e, out], GgmlType::F32, 0.01)?;
        let mut bias = vec![0f32; out as usize];
        bias[0] = 1.0;
        t.w.tensor("mm.a.fc.bias", &[out], GgmlType::F32, &bias)?;
        Ok(w)
    }
}

/// The transformer blocks of a projector's encoder (`{prefix}.blk.N`):
/// attention with biases (none on the key unless `key_bias`), two layer
/// norms, a feed-forward of width `ff`; small random weights.
fn encoder_blocks(
    t: &mut Tensors<'_>,
    prefix: &str,
    blocks: u32,
    e: u64,
    ff: u64,
    key_bias: bool,
) -> Result<()> {
    for layer in 0..blocks {
        let name = |n: &str, kind: &str| format!("{prefix}.blk.{layer}.{n}.{kind}");
        for n in ["attn_q", "attn_k", "attn_v", "attn_out"] {
            t.random(&name(n, "weight"), &[e, e], GgmlType::F32, 0.1)?;
            if key_bias || n != "attn_k" {
                t.zeros(&name(n, "bias"), e)?;
            }
        }
        for n in ["ln1", "ln2"] {
            t.ones(&name(n, "weight"), e)?;
            t.zeros(&name(n, "bias"), e)?;
        }
        t.random(&name("ffn_up", "weight"), &[e, ff], GgmlType::F32, 0.1)?;
        t.zeros(&name("ffn_up", "bias"), ff)?;
        t.random(&name("ffn_down", "weight"), &[ff, e], GgmlType::F32, 0.1)?;
        t.zeros(&name("ffn_down", "bias"), e)?;
    }
    Ok(())
}
