//! [`Projector`]: a model's projector (`mmproj`) file loaded by libmtmd,
//! and how to load it ([`ProjectorParams`]).

use super::{check, Bitmap, MediaChunks, MediaKind, MediaLimits};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::{LlamaModel, Tokenize};
use llama_safe_sys::mtmd;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// How to load a [`Projector`].
///
/// ```
/// use llama_safe::media::ProjectorParams;
/// // The vision tower on the host, 4 threads, at most 8 images a prompt.
/// let params = ProjectorParams::default()
///     .with_gpu(false)
///     .with_n_threads(4)
///     .with_limits(llama_safe::media::MediaLimits::default().with_max_media(8));
/// assert!(!params.gpu());
/// ```
#[derive(Debug, Clone)]
#[must_use = "builders return a new value: use it"]
pub struct ProjectorParams {
    gpu: bool,
    device: Option<String>,
    n_threads: u32,
    marker: Option<String>,
    image_min_tokens: Option<u32>,
    image_max_tokens: Option<u32>,
    warmup: bool,
    limits: MediaLimits,
}

impl Default for ProjectorParams {
    /// On the first GPU when there is one (libmtmd's default), as many
    /// threads as the machine has cores, the default marker, a warmup
    /// encode at load, [`MediaLimits::default`].
    fn default() -> Self {
        ProjectorParams {
            gpu: true,
            device: None,
            n_threads: std::thread::available_parallelism().map_or(4, |n| n.get() as u32),
            marker: None,
            image_min_tokens: None,
            image_max_tokens: None,
            warmup: true,
            limits: MediaLimits::default(),
        }
    }
}

impl ProjectorParams {
    /// Run the encoder on a GPU (`true`, the default) or on the host. The
    /// projector's placement is its own: the language model's experts can
    /// stay in host memory (`--cpu-moe`) while the vision tower runs on the
    /// GPU.
    pub fn with_gpu(mut self, gpu: bool) -> Self {
        self.gpu = gpu;
        self
    }

    /// The device to run the encoder on, by ggml's name (`CUDA0`,
    /// `Vulkan1`, ...; see [`LlamaBackend::devices`](crate::LlamaBackend::devices)).
    pub fn with_device(mut self, name: impl Into<String>) -> Self {
        self.device = Some(name.into());
        self
    }

    /// Threads of the encoder on the host (1 to
    /// [`MAX_THREADS`](crate::limits::MAX_THREADS)).
    pub fn with_n_threads(mut self, n: u32) -> Self {
        self.n_threads = n;
        self
    }

    /// The text that stands for a medium in a prompt, instead of libmtmd's
    /// `<__media__>`.
    pub fn with_marker(mut self, marker: impl Into<String>) -> Self {
        self.marker = Some(marker.into());
        self
    }

    /// Bounds on the tokens one image becomes, for models with a dynamic
    /// resolution (Qwen-VL and others); others ignore them.
    pub fn with_image_tokens(mut self, min: Option<u32>, max: Option<u32>) -> Self {
        self.image_min_tokens = min;
        self.image_max_tokens = max;
        self
    }

    /// Whether to run one encode at load, so the first request does not pay
    /// for allocating the encoder's buffers (default on).
    pub fn with_warmup(mut self, warmup: bool) -> Self {
        self.warmup = warmup;
        self
    }

    /// The budget of every medium this projector is given.
    pub fn with_limits(mut self, limits: MediaLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether the encoder may run on a GPU.
    pub fn gpu(&self) -> bool {
        self.gpu
    }

    /// The media budget.
    pub fn limits(&self) -> &MediaLimits {
        &self.limits
    }
}

/// [`ProjectorParams`] as libmtmd's struct, with the marker it points to.
struct RawParams {
    raw: mtmd::mtmd_context_params,
    /// Kept alive while `raw.media_marker` points into it.
    marker: CString,
}

impl RawParams {
    fn new(params: &ProjectorParams) -> Result<RawParams> {
        if params.n_threads == 0 || params.n_threads > crate::limits::MAX_THREADS {
            return Err(Error::InvalidParameter {
                name: "n_threads",
                reason: format!(
                    "{} is not in 1..={}",
                    params.n_threads,
                    crate::limits::MAX_THREADS
                )
                .into(),
            });
        }
        let marker = match &params.marker {
            Some(m) if m.is_empty() => {
                return Err(Error::InvalidParameter {
                    name: "marker",
                    reason: "the media marker is empty".into(),
                })
            }
            Some(m) => CString::new(m.as_str()).map_err(|_| Error::NulByte {
                what: "the media marker",
            })?,
            // SAFETY: a static NUL-terminated string.
            None => unsafe { std::ffi::CStr::from_ptr(mtmd::mtmd_default_marker()) }.to_owned(),
        };
        let device = match &params.device {
            None => std::ptr::null_mut(),
            Some(name) => crate::backend::device_by_name(name)?,
        };
        crate::logging::install_mtmd();
        // SAFETY: plain values; the defaults are libmtmd's own.
        let mut raw = unsafe { mtmd::mtmd_context_params_default() };
        raw.use_gpu = params.gpu || !device.is_null();
        raw.device = device;
        raw.print_timings = false;
        raw.n_threads = params.n_threads as i32;
        raw.media_marker = marker.as_ptr();
        raw.warmup = params.warmup;
        if let Some(n) = params.image_min_tokens {
            raw.image_min_tokens = n.min(i32::MAX as u32) as i32;
        }
        if let Some(n) = params.image_max_tokens {
            raw.image_max_tokens = n.min(i32::MAX as u32) as i32;
        }
        Ok(RawParams { raw, marker })
    }
}

/// A loaded projector: turns [`Bitmap`]s into embeddings for one
/// [`LlamaModel`]. A cheap handle (clone it to share it); tokenizing works
/// from many threads at once, encoding takes one at a time.
#[derive(Clone)]
pub struct Projector {
    inner: Arc<Inner>,
}

struct Inner {
    raw: NonNull<mtmd::mtmd_context>,
    /// Encodes write the context's one output buffer: one at a time.
    encode: Mutex<()>,
    /// libmtmd keeps a pointer to the model: freed after the projector.
    model: LlamaModel,
    path: PathBuf,
    marker: String,
    /// The ggml backend its encoder runs on (`CPU`, `Vulkan0`, `CUDA0`).
    backend: String,
    /// Its devices and its model's whose work is serialised (`device_lock`).
    serial: crate::device_lock::SerialDevices,
    limits: MediaLimits,
    vision: bool,
    audio: bool,
    sample_rate: Option<u32>,
    mrope: bool,
}

// SAFETY: an mtmd_context refers to its model (kept alive by `model`, a
// Send + Sync handle) and its own backends; mtmd_tokenize is documented
// thread-safe on a shared context, and mtmd_encode_chunk, which writes the
// context's output buffer, runs under `encode`.
unsafe impl Send for Inner {}
// SAFETY: as above.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        let _device = self.serial.lock();
        // SAFETY: raw came from mtmd_init_from_file and is freed once, when
        // no chunk or context refers to it (they hold a handle); the model
        // it points to is dropped after this (fields drop after `drop`).
        unsafe { mtmd::mtmd_free(self.raw.as_ptr()) };
    }
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("path", &self.inner.path)
            .field("vision", &self.inner.vision)
            .field("audio", &self.inner.audio)
            .finish_non_exhaustive()
    }
}

impl Projector {
    /// Loads the projector at `path` for `model`.
    ///
    /// The file is checked before libmtmd reads it (see
    /// [`Error::Projector`]); a projector made for another model (another
    /// embedding width) is refused with libmtmd's own reason.
    pub fn load(
        model: &LlamaModel,
        path: impl AsRef<Path>,
        params: &ProjectorParams,
    ) -> Result<Projector> {
        let path = path.as_ref();
        if model.is_vocab_only() {
            return Err(Error::Unsupported {
                reason: "a projector needs the model's weights; this model was loaded \
                         vocabulary-only"
                    .into(),
            });
        }
        check::check(&GgufFile::open(path)?)?;
        let raw_params = RawParams::new(params)?;
        let c_path = crate::ffi::c_path(path)?;
        // The encoder's device (named, or any GPU), with the model's.
        let own = match &params.device {
            Some(name) => crate::device_lock::SerialDevices::of_names([name]),
            None if params.gpu => crate::device_lock::SerialDevices::for_model(&[]),
            None => Default::default(),
        };
        let serial = own.union(model.serial_devices());
        let device = serial.lock();
        // SAFETY: the path and marker are NUL-terminated strings that outlive
        // the call (libmtmd copies the marker into its own std::string); the
        // model is live and outlives the projector (`Inner::model`); the
        // file passed the checks of `check` against clip.cpp's asserts; a
        // throw is caught by the firewall, a failure logged and NULL.
        let mut out = std::ptr::null_mut();
        let (thrown, lines) = crate::logging::capture(|| unsafe {
            mtmd::llama_sys_mtmd_init_from_file(
                c_path.as_ptr(),
                model.as_ptr(),
                raw_params.raw,
                &mut out,
            )
        });
        drop(device);
        crate::ffi::check("mtmd_init_from_file", thrown)?;
        let raw = NonNull::new(out).ok_or_else(|| Error::Projector {
            path: path.to_path_buf(),
            reason: crate::logging::reason(&lines),
        })?;
        // clip.cpp says where its encoder runs ("CLIP using Vulkan0 backend").
        let backend = lines
            .iter()
            .find_map(|l| {
                let rest = l.text.split("CLIP using ").nth(1)?;
                rest.split(" backend").next().map(str::to_string)
            })
            .unwrap_or_else(|| "CPU".to_string());
        let ctx = raw.as_ptr();
        // SAFETY: ctx is live; these only read what it loaded.
        let (vision, audio, rate, mrope) = unsafe {
            (
                mtmd::mtmd_support_vision(ctx),
                mtmd::mtmd_support_audio(ctx),
                mtmd::mtmd_get_audio_sample_rate(ctx),
                mtmd::mtmd_decode_use_mrope(ctx),
            )
        };
        Ok(Projector {
            inner: Arc::new(Inner {
                raw,
                encode: Mutex::new(()),
                model: model.clone(),
                path: path.to_path_buf(),
                marker: raw_params.marker.to_string_lossy().into_owned(),
                backend,
                serial,
                limits: params.limits,
                vision,
                audio,
                sample_rate: u32::try_from(rate).ok().filter(|&r| r > 0),
                mrope,
            }),
        })
    }

    /// What loading the projector at `path` with `params` would allocate,
    /// per device (`CPU`, `Vulkan0`, ...): its weights and compute buffers,
    /// from a dry run of libmtmd's loader that allocates and reads nothing
    /// (what llama.cpp's `--fit` counts for an `--mmproj`). The file is
    /// checked as [`load`](Self::load) checks it.
    pub fn plan_memory(
        path: impl AsRef<Path>,
        params: &ProjectorParams,
    ) -> Result<Vec<(String, u64)>> {
        let path = path.as_ref();
        check::check(&GgufFile::open(path)?)?;
        let raw_params = RawParams::new(params)?;
        let c_path = crate::ffi::c_path(path)?;
        const CAP: usize = 16;
        let mut out = [mtmd::llama_sys_mtmd_device_bytes {
            device: std::ptr::null_mut(),
            bytes: 0,
        }; CAP];
        // (libmtmd's image token limit comes back too; -1 for models of a
        // fixed resolution.)
        let (mut n, mut max_tokens) = (0usize, 0i32);
        // SAFETY: the path and marker outlive the call; `out` has room for
        // CAP entries and the shim writes at most that many; the file passed
        // `check` (the dry run parses it as a load does); a throw is caught.
        let (thrown, lines) = crate::logging::capture(|| unsafe {
            mtmd::llama_sys_mtmd_memory_usage(
                c_path.as_ptr(),
                raw_params.raw,
                out.as_mut_ptr(),
                CAP,
                &mut n,
                &mut max_tokens,
            )
        });
        crate::ffi::check("mtmd_get_memory_usage", thrown)?;
        // A failed dry run is an empty map (libmtmd silences its log for
        // it); a loaded projector has weights somewhere.
        if n == 0 {
            return Err(Error::Projector {
                path: path.to_path_buf(),
                reason: crate::logging::reason(&lines),
            });
        }
        Ok(out[..n.min(CAP)]
            .iter()
            .map(|entry| {
                let name = if entry.device.is_null() {
                    "CPU".to_string()
                } else {
                    // SAFETY: a device of ggml's registry; its name is a
                    // static string.
                    unsafe {
                        std::ffi::CStr::from_ptr(llama_safe_sys::ggml_backend_dev_name(
                            entry.device,
                        ))
                    }
                    .to_string_lossy()
                    .into_owned()
                };
                (name, entry.bytes)
            })
            .collect())
    }

    /// The ggml backend the encoder runs on: `CPU`, or the device's name
    /// (`Vulkan0`, `CUDA0`).
    pub fn backend(&self) -> &str {
        &self.inner.backend
    }

    /// The projector's file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Locks the devices of the projector and its model whose work is
    /// serialised (see `device_lock`).
    pub(crate) fn device_guard(&self) -> crate::device_lock::DeviceGuard {
        self.inner.serial.lock()
    }

    /// The model it was loaded for.
    pub fn model(&self) -> &LlamaModel {
        &self.inner.model
    }

    /// The text that stands for one medium in a prompt.
    pub fn marker(&self) -> &str {
        &self.inner.marker
    }

    /// Whether it takes images.
    pub fn supports_vision(&self) -> bool {
        self.inner.vision
    }

    /// Whether it takes audio.
    pub fn supports_audio(&self) -> bool {
        self.inner.audio
    }

    /// The sample rate audio must have, in Hz (16,000 for Whisper-style
    /// encoders), when it takes audio.
    pub fn audio_sample_rate(&self) -> Option<u32> {
        self.inner.sample_rate
    }

    /// Whether the model places media with M-RoPE (several positions per
    /// token, Qwen-VL style): then a media chunk takes fewer positions
    /// than tokens.
    pub fn uses_mrope(&self) -> bool {
        self.inner.mrope
    }

    /// The budget media are checked against.
    pub fn limits(&self) -> &MediaLimits {
        &self.inner.limits
    }

    /// Splits `prompt` into text and media chunks: each
    /// [`marker`](Self::marker) in it stands for the next of `media`, in
    /// order. The counts must match ([`Error::MediaMarkers`]), each medium
    /// must be of a kind this projector takes, and there may be at most
    /// [`MediaLimits::max_media`] of them. Images are resized and
    /// normalised here, for the encoder.
    pub fn tokenize(&self, prompt: &str, media: &[&Bitmap], how: Tokenize) -> Result<MediaChunks> {
        MediaLimits::within(
            "media in the prompt",
            media.len() as u64,
            self.inner.limits.max_media() as u64,
        )?;
        let markers = prompt.matches(self.marker()).count();
        if markers != media.len() {
            return Err(Error::MediaMarkers {
                markers,
                media: media.len(),
            });
        }
        for (i, bitmap) in media.iter().enumerate() {
            let (supported, name) = match bitmap.kind() {
                MediaKind::Image => (self.inner.vision, "image"),
                MediaKind::Audio => (self.inner.audio, "audio"),
            };
            if !supported {
                return Err(Error::Media {
                    what: format!("{name} {i}"),
                    reason: format!("the projector {} takes no {name}", self.path().display())
                        .into(),
                });
            }
        }
        if prompt.contains('\0') {
            return Err(Error::NulByte { what: "a prompt" });
        }
        let text = CString::new(prompt).expect("checked for NUL");
        let raw_text = mtmd::mtmd_input_text {
            text: text.as_ptr(),
            text_len: prompt.len(),
            add_special: how.add_special,
            parse_special: how.parse_special,
        };
        let bitmaps: Vec<*const mtmd::mtmd_bitmap> = media.iter().map(|b| b.as_ptr()).collect();
        let chunks = MediaChunks::empty(self.clone())?;
        let mut status = 0;
        // SAFETY: the context is live and mtmd_tokenize is thread-safe on it;
        // the text and the bitmaps outlive the call (libmtmd copies and
        // preprocesses what it keeps into the chunks); the marker count and
        // the media kinds are checked above (its asserts on an image for a
        // projector without vision cannot fire); a throw is caught.
        let (thrown, lines) = crate::logging::capture(|| unsafe {
            mtmd::llama_sys_mtmd_tokenize(
                self.as_ptr(),
                chunks.as_ptr(),
                &raw_text,
                bitmaps.as_ptr(),
                bitmaps.len(),
                &mut status,
            )
        });
        crate::ffi::check("mtmd_tokenize", thrown)?;
        match status {
            0 => Ok(chunks),
            1 => Err(Error::MediaMarkers {
                markers,
                media: media.len(),
            }),
            _ => Err(Error::Media {
                what: "media".into(),
                reason: crate::logging::reason(&lines),
            }),
        }
    }

    /// The embeddings the encoder makes of one media chunk: one row of the
    /// model's input width per token of the chunk (what
    /// [`LlamaContext::generate_media`](crate::LlamaContext::generate_media)
    /// decodes). A text chunk is [`Error::InvalidParameter`].
    pub fn encode(&self, chunk: &super::Chunk<'_>) -> Result<Vec<f32>> {
        let _one_at_a_time = self.encode_lock();
        self.encode_locked(chunk)?;
        let n = chunk.n_tokens() * self.n_embd();
        // SAFETY: after a successful encode of this chunk, the context's
        // output holds n_tokens * n_embd floats (mtmd_encode_impl resizes it
        // to that), unchanged while the lock is held.
        let out = unsafe { mtmd::mtmd_get_output_embd(self.as_ptr()) };
        // SAFETY: as above; copied out before the lock is released.
        Ok(unsafe { std::slice::from_raw_parts(out, n) }.to_vec())
    }

    /// Runs the encoder on `chunk`, leaving its embeddings in the
    /// context's output; the caller holds [`encode_lock`](Self::encode_lock).
    pub(crate) fn encode_locked(&self, chunk: &super::Chunk<'_>) -> Result<()> {
        if chunk.kind() == super::ChunkKind::Text {
            return Err(Error::InvalidParameter {
                name: "chunk",
                reason: "a text chunk has nothing to encode".into(),
            });
        }
        if chunk.n_tokens() == 0 {
            return Err(Error::Media {
                what: "media".into(),
                reason: "the medium gave no tokens (too short?)".into(),
            });
        }
        let mut status = 0;
        // SAFETY: the context is live and used by one encode at a time (the
        // caller holds the lock); the chunk belongs to chunks of this
        // projector (checked by the caller) and is a media chunk with tokens
        // (checked above); a throw is caught by the firewall.
        let device = self.inner.serial.lock();
        let (thrown, lines) = crate::logging::capture(|| unsafe {
            mtmd::llama_sys_mtmd_encode_chunk(self.as_ptr(), chunk.as_ptr(), &mut status)
        });
        drop(device);
        crate::ffi::check("mtmd_encode_chunk", thrown)?;
        if status != 0 {
            return Err(Error::Media {
                what: "media".into(),
                reason: crate::logging::reason(&lines),
            });
        }
        Ok(())
    }

    /// Held while an encode's output is written or read.
    pub(crate) fn encode_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.encode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The width of one embedding row: the model's input width.
    pub(crate) fn n_embd(&self) -> usize {
        // SAFETY: the model is live.
        unsafe { llama_safe_sys::llama_model_n_embd_inp(self.inner.model.as_ptr()) }.max(0) as usize
    }

    pub(crate) fn as_ptr(&self) -> *mut mtmd::mtmd_context {
        self.inner.raw.as_ptr()
    }
}
