//! [`Bitmap`]: one image (RGB pixels) or audio clip (PCM samples) in
//! libmtmd's own type, checked against [`MediaLimits`] before any copy.

use super::MediaLimits;
use crate::error::{Error, Result};
use llama_safe_sys::mtmd;
use sha2::{Digest, Sha256};
use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;

/// What a [`Bitmap`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An image: RGB pixels.
    Image,
    /// An audio clip: mono PCM samples.
    Audio,
}

/// One image or audio clip, ready for [`Projector::tokenize`](super::Projector::tokenize).
///
/// Its [`id`](Self::id) is the SHA-256 of its kind, size and data: the
/// same picture sent twice has the same id, which is how a prompt cache
/// knows it has already seen it.
///
/// ```
/// use llama_safe::media::{Bitmap, MediaLimits};
/// let limits = MediaLimits::default();
/// let red = Bitmap::from_rgb(2, 1, &[255, 0, 0, 255, 0, 0], &limits)?;
/// assert_eq!((red.width(), red.height()), (2, 1));
/// assert!(Bitmap::from_rgb(2, 1, &[255, 0, 0, 255], &limits).is_err()); // 4 bytes, not 6
/// # Ok::<(), llama_safe::Error>(())
/// ```
pub struct Bitmap {
    raw: NonNull<mtmd::mtmd_bitmap>,
    kind: MediaKind,
    width: u32,
    height: u32,
    id: String,
}

// SAFETY: an mtmd_bitmap is a plain buffer with its size and id; after
// construction nothing here changes it (every method takes `&self` and only
// reads), and libmtmd's tokenizer only reads it.
unsafe impl Send for Bitmap {}
// SAFETY: as above: shared use is read-only.
unsafe impl Sync for Bitmap {}

impl Drop for Bitmap {
    fn drop(&mut self) {
        // SAFETY: raw came from mtmd_bitmap_init* and is freed once; chunks
        // made from it copied what they need (mtmd_tokenize preprocesses the
        // pixels into its own buffers).
        unsafe { mtmd::mtmd_bitmap_free(self.raw.as_ptr()) };
    }
}

impl std::fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitmap")
            .field("kind", &self.kind)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("id", &self.id)
            .finish()
    }
}

impl Bitmap {
    /// An image from packed RGB bytes, row by row (`width * height * 3`
    /// bytes). A zero side, a size over `limits` or another byte count is
    /// an error.
    pub fn from_rgb(width: u32, height: u32, rgb: &[u8], limits: &MediaLimits) -> Result<Bitmap> {
        check_image_size("image", width, height, limits)?;
        let expected = u64::from(width) * u64::from(height) * 3;
        if rgb.len() as u64 != expected {
            let channels = rgb.len() as f64 / (u64::from(width) * u64::from(height)) as f64;
            return Err(Error::Media {
                what: "image".into(),
                reason: format!(
                    "{} bytes for {width}x{height} RGB, which needs {expected} \
                     ({channels:.2} bytes a pixel, not 3)",
                    rgb.len()
                )
                .into(),
            });
        }
        let id = content_id(MediaKind::Image, width, height, rgb);
        // SAFETY: `rgb` holds exactly width * height * 3 bytes (checked
        // above), which is what mtmd_bitmap_init copies; the firewall turns
        // a std::bad_alloc into a status.
        let raw = crate::ffi::guarded_non_null(
            "mtmd_bitmap_init",
            |out| unsafe { mtmd::llama_sys_mtmd_bitmap_init(width, height, rgb.as_ptr(), out) },
            |reason| Error::Media {
                what: "image".into(),
                reason,
            },
        )?;
        Bitmap::finish(raw, MediaKind::Image, width, height, id)
    }

    /// An image decoded from an encoded file's bytes (PNG, JPEG, WebP, GIF,
    /// BMP) by the `image` crate. The header's size is checked against
    /// `limits` before any pixel is decoded; alpha is dropped, as
    /// llama.cpp's own loader does; a GIF gives its first frame.
    pub fn from_image_bytes(bytes: &[u8], limits: &MediaLimits) -> Result<Bitmap> {
        MediaLimits::within(
            "image bytes",
            bytes.len() as u64,
            limits.max_encoded_bytes(),
        )?;
        let bad = |reason: String| Error::Media {
            what: "image".into(),
            reason: reason.into(),
        };
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| bad(format!("cannot read it: {e}")))?;
        if reader.format().is_none() {
            return Err(bad(
                "not an image format this build decodes (PNG, JPEG, WebP, GIF, BMP)".into(),
            ));
        }
        let mut decoder = reader
            .into_decoder()
            .map_err(|e| bad(format!("cannot decode it: {e}")))?;
        use image::ImageDecoder;
        let (width, height) = decoder.dimensions();
        check_image_size("image", width, height, limits)?;
        // The decoder's own allocation budget: the pixels at the widest
        // colour type (RGBA, 16 bits a channel), plus slack for its buffers.
        let mut decoder_limits = image::Limits::default();
        decoder_limits.max_image_width = Some(width);
        decoder_limits.max_image_height = Some(height);
        decoder_limits.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + (16 << 20));
        decoder
            .set_limits(decoder_limits)
            .map_err(|e| bad(format!("cannot decode it: {e}")))?;
        let image = image::DynamicImage::from_decoder(decoder)
            .map_err(|e| bad(format!("cannot decode it: {e}")))?;
        let rgb = image.to_rgb8();
        Bitmap::from_rgb(rgb.width(), rgb.height(), rgb.as_raw(), limits)
    }

    /// An image read from a file and decoded as [`from_image_bytes`](Self::from_image_bytes)
    /// does; the file's size is checked before it is read.
    pub fn from_image_file(path: impl AsRef<Path>, limits: &MediaLimits) -> Result<Bitmap> {
        let path = path.as_ref();
        let io = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: path.to_path_buf(),
            },
            _ => Error::Unreadable {
                path: path.to_path_buf(),
                source: source.into(),
            },
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_dir() {
            return Err(Error::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        MediaLimits::within("image bytes", meta.len(), limits.max_encoded_bytes())?;
        let bytes = std::fs::read(path).map_err(io)?;
        Bitmap::from_image_bytes(&bytes, limits).map_err(|e| match e {
            Error::Media { reason, .. } => Error::Media {
                what: format!("image {}", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// An audio clip from mono PCM samples in [-1, 1] at the projector's
    /// [`audio_sample_rate`](super::Projector::audio_sample_rate). No
    /// samples, a sample that is not finite, or more than `limits` allow is
    /// an error.
    pub fn from_pcm(samples: &[f32], limits: &MediaLimits) -> Result<Bitmap> {
        let bad = |reason: &str| Error::Media {
            what: "audio".into(),
            reason: reason.to_string().into(),
        };
        if samples.is_empty() {
            return Err(bad("no samples"));
        }
        MediaLimits::within(
            "audio samples",
            samples.len() as u64,
            limits.max_audio_samples(),
        )?;
        if samples.iter().any(|s| !s.is_finite()) {
            return Err(bad("a sample is not a finite number"));
        }
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let n = samples.len() as u32;
        let id = content_id(MediaKind::Audio, n, 1, &bytes);
        // SAFETY: `samples` holds n_samples floats, which
        // mtmd_bitmap_init_from_audio copies (its assert that the copy has
        // n_samples * 4 bytes holds for a non-NULL pointer); the firewall
        // turns a std::bad_alloc into a status.
        let raw = crate::ffi::guarded_non_null(
            "mtmd_bitmap_init_from_audio",
            |out| unsafe {
                mtmd::llama_sys_mtmd_bitmap_init_from_audio(samples.len(), samples.as_ptr(), out)
            },
            |reason| Error::Media {
                what: "audio".into(),
                reason,
            },
        )?;
        Bitmap::finish(raw, MediaKind::Audio, n, 1, id)
    }

    /// Sets the id libmtmd carries into the chunks (their
    /// [`Chunk::id`](super::Chunk::id)).
    fn finish(
        raw: NonNull<mtmd::mtmd_bitmap>,
        kind: MediaKind,
        width: u32,
        height: u32,
        id: String,
    ) -> Result<Bitmap> {
        let bitmap = Bitmap {
            raw,
            kind,
            width,
            height,
            id,
        };
        let c_id = CString::new(bitmap.id.as_str()).expect("hex has no NUL");
        // SAFETY: the bitmap is live and not shared yet; the id is a
        // NUL-terminated string libmtmd copies into its own std::string.
        let status =
            unsafe { mtmd::llama_sys_mtmd_bitmap_set_id(bitmap.raw.as_ptr(), c_id.as_ptr()) };
        crate::ffi::check("mtmd_bitmap_set_id", status)?;
        Ok(bitmap)
    }

    /// Image or audio.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// Width in pixels (samples for audio).
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels (1 for audio).
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The SHA-256 of kind, size and data, as hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn as_ptr(&self) -> *const mtmd::mtmd_bitmap {
        self.raw.as_ptr()
    }
}

/// A zero side or a size over `limits` is an error.
fn check_image_size(what: &str, width: u32, height: u32, limits: &MediaLimits) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::Media {
            what: what.into(),
            reason: format!("{width}x{height} has no pixels").into(),
        });
    }
    MediaLimits::within(
        &format!("{what} side"),
        u64::from(width.max(height)),
        u64::from(limits.max_side()),
    )?;
    MediaLimits::within(
        &format!("{what} pixels"),
        u64::from(width) * u64::from(height),
        limits.max_pixels(),
    )
}

/// Hex SHA-256 of the kind, size and data.
fn content_id(kind: MediaKind, width: u32, height: u32, data: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(match kind {
        MediaKind::Image => b"image\0",
        MediaKind::Audio => b"audio\0",
    });
    hash.update(width.to_le_bytes());
    hash.update(height.to_le_bytes());
    hash.update(data);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
