//! Images and audio in a prompt, through a model's projector (`mmproj`)
//! file and llama.cpp's libmtmd (the `mtmd` feature).
//!
//! A vision or audio model ships as two GGUF files: the language model,
//! and a projector that turns pixels or samples into embeddings the
//! language model reads. [`Projector::load`] opens the projector for a
//! loaded [`LlamaModel`](crate::LlamaModel) (on its own device: the vision
//! tower can go to the GPU while the model's experts stay in host memory);
//! [`Bitmap`] holds one image or clip, decoded by the `image` crate;
//! [`Projector::tokenize`] splits a prompt with media markers into text and
//! media [`MediaChunks`]; [`LlamaContext::generate_media`](crate::LlamaContext::generate_media)
//! decodes them (with M-RoPE positions where the model uses them) and
//! generates.
//!
//! ```
//! use llama_safe::media::{Bitmap, MediaLimits, Projector, ProjectorParams};
//! use llama_safe::{demo::{DemoModel, DemoProjector}, *};
//! let backend = LlamaBackend::init();
//! let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &LlamaModelParams::default())?;
//! let projector = Projector::load(&model, DemoProjector::cached()?, &ProjectorParams::default())?;
//! let image = Bitmap::from_rgb(32, 32, &vec![200u8; 32 * 32 * 3], &MediaLimits::default())?;
//! let prompt = format!("{} Once upon a time", projector.marker());
//! let chunks = projector.tokenize(&prompt, &[&image], Tokenize::PROMPT)?;
//! let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(256))?;
//! let options = GenerateOptions::default().with_sampling(SamplingOptions::greedy());
//! let mut text = String::new();
//! for event in ctx.generate_media(&chunks, &options)? {
//!     if let Event::Piece(p) = event? { text.push_str(&p.text) }
//! }
//! assert_eq!(text, demo::DEMO_CONTINUATION);
//! # Ok::<(), llama_safe::Error>(())
//! ```

mod bitmap;
mod check;
mod chunks;
mod decode;
mod projector;

pub use bitmap::{Bitmap, MediaKind};
pub use chunks::{Chunk, ChunkKind, MediaChunks};
pub use projector::{Projector, ProjectorParams};

/// The budget every media input is checked against before anything is
/// decoded or allocated: image sides and pixels (read from the header, so
/// a decompression bomb is refused unread), encoded bytes, audio length,
/// and media per prompt.
///
/// ```
/// let limits = llama_safe::media::MediaLimits::default().with_max_media(4);
/// assert_eq!(limits.max_media(), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "builders return a new value: use it"]
pub struct MediaLimits {
    max_side: u32,
    max_pixels: u64,
    max_encoded_bytes: u64,
    max_audio_samples: u64,
    max_media: usize,
}

impl Default for MediaLimits {
    /// 16,384 pixels a side, 33.2 million pixels (8K UHD), 64 MiB encoded,
    /// 10 minutes of 16 kHz audio, 32 media per prompt.
    fn default() -> Self {
        MediaLimits {
            max_side: 16_384,
            max_pixels: 7_680 * 4_320,
            max_encoded_bytes: 64 << 20,
            max_audio_samples: 16_000 * 600,
            max_media: 32,
        }
    }
}

impl MediaLimits {
    /// Longest image side, in pixels.
    pub fn with_max_side(mut self, pixels: u32) -> Self {
        self.max_side = pixels;
        self
    }

    /// Most pixels of one image (width × height).
    pub fn with_max_pixels(mut self, pixels: u64) -> Self {
        self.max_pixels = pixels;
        self
    }

    /// Most bytes of one encoded image file (PNG, JPEG, ...).
    pub fn with_max_encoded_bytes(mut self, bytes: u64) -> Self {
        self.max_encoded_bytes = bytes;
        self
    }

    /// Most samples of one audio clip.
    pub fn with_max_audio_samples(mut self, samples: u64) -> Self {
        self.max_audio_samples = samples;
        self
    }

    /// Most media (images and clips) in one prompt.
    pub fn with_max_media(mut self, count: usize) -> Self {
        self.max_media = count;
        self
    }

    /// Longest image side.
    pub fn max_side(&self) -> u32 {
        self.max_side
    }

    /// Most pixels of one image.
    pub fn max_pixels(&self) -> u64 {
        self.max_pixels
    }

    /// Most bytes of one encoded image.
    pub fn max_encoded_bytes(&self) -> u64 {
        self.max_encoded_bytes
    }

    /// Most samples of one audio clip.
    pub fn max_audio_samples(&self) -> u64 {
        self.max_audio_samples
    }

    /// Most media in one prompt.
    pub fn max_media(&self) -> usize {
        self.max_media
    }

    /// [`Error::MediaLimit`](crate::Error::MediaLimit) when `value` is over `limit`.
    pub(crate) fn within(what: &str, value: u64, limit: u64) -> crate::Result<()> {
        if value > limit {
            return Err(crate::Error::MediaLimit {
                what: what.to_string(),
                value,
                limit,
            });
        }
        Ok(())
    }
}
