//! Images (and audio) in requests: OpenAI's `image_url` content parts (a
//! `data:` URL) and `input_audio` parts, Ollama's `images` (base64, on
//! `/api/generate` and on each `/api/chat` message). Each medium becomes
//! the projector's marker in the prompt, where it was; the bytes are
//! decoded on the blocking side, after the template (see `generation`).
//!
//! Remote URLs are never fetched: this server does not reach out to the
//! network on a client's behalf.

use crate::error::ApiError;
use serde_json::Value;

/// One medium of a request, still encoded.
#[derive(Debug, Clone)]
pub struct MediaPart {
    /// An image (any format the `image` crate decodes) or audio (WAV).
    pub audio: bool,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

/// Collects a request's media in prompt order, each checked against the
/// server's limits as it comes.
#[derive(Debug)]
pub struct Collector {
    /// The text that stands for a medium in the prompt, or `None` when this
    /// server takes no media (no projector, or built without `mtmd`).
    marker: Option<String>,
    /// Most media a request may have.
    max_media: usize,
    /// Most bytes one medium may have, decoded.
    max_bytes: usize,
    /// What was collected.
    pub parts: Vec<MediaPart>,
}

impl Collector {
    /// A collector for `state`'s projector.
    pub fn for_state(state: &crate::AppState) -> Collector {
        #[cfg(feature = "mtmd")]
        if let Some(p) = state.projector() {
            return Collector {
                marker: Some(p.marker().to_string()),
                max_media: p.limits().max_media(),
                max_bytes: p.limits().max_encoded_bytes() as usize,
                parts: Vec::new(),
            };
        }
        let _ = state;
        Collector::none()
    }

    /// A collector that takes no media.
    pub fn none() -> Collector {
        Collector {
            marker: None,
            max_media: 0,
            max_bytes: 0,
            parts: Vec::new(),
        }
    }

    /// The marker to put in the prompt for one more medium, after checking
    /// that this server takes media and the request is within its count.
    fn next(&mut self, param: &'static str) -> Result<String, ApiError> {
        let Some(marker) = &self.marker else {
            return Err(ApiError::bad(
                param,
                "this server takes no images or audio: start it with --mmproj FILE \
                 (the model's projector)",
            ));
        };
        if self.parts.len() >= self.max_media {
            return Err(ApiError::bad(
                param,
                format!(
                    "at most {} images and audio clips per request",
                    self.max_media
                ),
            ));
        }
        Ok(marker.clone())
    }

    /// Adds one medium from base64 (`data` without any `data:` prefix);
    /// returns its marker.
    pub fn add_base64(
        &mut self,
        param: &'static str,
        data: &str,
        audio: bool,
    ) -> Result<String, ApiError> {
        let marker = self.next(param)?;
        // 4 base64 characters are 3 bytes: refuse before decoding.
        if data.len() / 4 * 3 > self.max_bytes {
            return Err(ApiError::bad(
                param,
                format!("a medium is over {} bytes", self.max_bytes),
            ));
        }
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| ApiError::bad(param, format!("the medium is not valid base64: {e}")))?;
        if bytes.is_empty() {
            return Err(ApiError::bad(param, "the medium is empty"));
        }
        self.parts.push(MediaPart { audio, bytes });
        Ok(marker)
    }

    /// Adds an image from an OpenAI `image_url` (a `data:` URL); returns
    /// its marker.
    pub fn add_url(&mut self, param: &'static str, url: &str) -> Result<String, ApiError> {
        let Some(rest) = url.strip_prefix("data:") else {
            return Err(ApiError::bad(
                param,
                "only `data:` image URLs are taken (base64); this server does not fetch \
                 remote URLs",
            ));
        };
        let Some((kind, data)) = rest.split_once(',') else {
            return Err(ApiError::bad(
                param,
                "a `data:` URL needs a comma before its data",
            ));
        };
        if !kind.ends_with(";base64") {
            return Err(ApiError::bad(
                param,
                "a `data:` image URL must be base64 (`;base64,`)",
            ));
        }
        self.add_base64(param, data, false)
    }

    /// The content of an OpenAI message given as parts: text as it is,
    /// each `image_url` and `input_audio` part as a marker in its place.
    pub fn content_parts(&mut self, parts: &[Value]) -> Result<String, ApiError> {
        let bad = |s: &str| ApiError::bad("messages", s.to_string());
        let mut content = String::new();
        for p in parts {
            match p.get("type").and_then(Value::as_str) {
                Some("text") => match p.get("text") {
                    Some(Value::String(t)) => content.push_str(t),
                    _ => return Err(bad("a `text` part needs a string `text`")),
                },
                Some("image_url") => {
                    let url = match p.get("image_url") {
                        Some(Value::String(u)) => u.as_str(),
                        Some(v) => v.get("url").and_then(Value::as_str).unwrap_or_default(),
                        None => "",
                    };
                    content.push_str(&self.add_url("messages", url)?);
                }
                Some("input_audio") => {
                    let audio = p.get("input_audio");
                    let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
                    let format = audio.and_then(|a| a.get("format")).and_then(Value::as_str);
                    match (data, format) {
                        (Some(data), Some("wav") | None) => {
                            content.push_str(&self.add_base64("messages", data, true)?)
                        }
                        (Some(_), Some(other)) => {
                            return Err(bad(&format!(
                                "`input_audio.format` {other:?}: only \"wav\" is decoded"
                            )))
                        }
                        (None, _) => {
                            return Err(bad("an `input_audio` part needs `data` (base64)"))
                        }
                    }
                }
                _ => {
                    return Err(bad(
                        "content parts are `text`, `image_url` (a data: URL) or `input_audio`",
                    ))
                }
            }
        }
        Ok(content)
    }

    /// Ollama's `images` (a list of base64 strings): their markers, to put
    /// before the text they go with.
    pub fn ollama_images(
        &mut self,
        param: &'static str,
        images: &Value,
    ) -> Result<String, ApiError> {
        let list = match images {
            Value::Null => return Ok(String::new()),
            Value::Array(list) => list,
            _ => {
                return Err(ApiError::bad(
                    param,
                    "`images` must be a list of base64 strings",
                ))
            }
        };
        let mut markers = String::new();
        for image in list {
            let Some(data) = image.as_str() else {
                return Err(ApiError::bad(
                    param,
                    "`images` must be a list of base64 strings",
                ));
            };
            markers.push_str(&self.add_base64(param, data, false)?);
        }
        Ok(markers)
    }
}

/// Decodes a request's media and tokenizes `prompt` with them, on the
/// blocking side (decoding an image takes milliseconds to seconds).
#[cfg(feature = "mtmd")]
pub(crate) fn tokenize(
    state: &crate::AppState,
    prompt: &str,
    parts: &[MediaPart],
    param: &'static str,
) -> Result<llama_safe::media::MediaChunks, ApiError> {
    use llama_safe::media::Bitmap;
    let Some(projector) = state.projector() else {
        return Err(ApiError::bad(param, "this server takes no images or audio"));
    };
    let bitmaps = parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let bitmap = if part.audio {
                wav(&part.bytes, projector)
            } else {
                Bitmap::from_image_bytes(&part.bytes, projector.limits()).map_err(|e| e.to_string())
            };
            bitmap.map_err(|e| ApiError::bad(param, format!("medium {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&Bitmap> = bitmaps.iter().collect();
    projector
        .tokenize(prompt, &refs, llama_safe::Tokenize::CHAT)
        .map_err(|e| ApiError::from_error(param, &e))
}

/// A WAV file as mono samples at the projector's rate (channels averaged;
/// another rate is refused, not resampled).
#[cfg(feature = "mtmd")]
fn wav(
    bytes: &[u8],
    projector: &llama_safe::media::Projector,
) -> Result<llama_safe::media::Bitmap, String> {
    let Some(rate) = projector.audio_sample_rate() else {
        return Err("this model's projector takes no audio".into());
    };
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a WAV file this server decodes: {e}"))?;
    let spec = reader.spec();
    if spec.sample_rate != rate {
        return Err(format!(
            "audio at {} Hz: this projector takes {rate} Hz (resample it first)",
            spec.sample_rate
        ));
    }
    let channels = usize::from(spec.channels.max(1));
    let frames = u64::from(reader.duration());
    let limit = projector.limits().max_audio_samples();
    if frames > limit {
        return Err(format!("{frames} samples is over the limit of {limit}"));
    }
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|s| s as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?
        }
    };
    let mono: Vec<f32> = samples
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f32>() / frame.len() as f32)
        .collect();
    llama_safe::media::Bitmap::from_pcm(&mono, projector.limits()).map_err(|e| e.to_string())
}
