//! Images in requests (the `mtmd` feature), over real HTTP on loopback:
//! OpenAI's `image_url` data URLs, Ollama's `images`, and what a hostile
//! client may send instead.

mod support;

use llama_safe::demo::{DemoModel, DemoProjector, DEMO_CONTINUATION};
use llama_safe::media::{Projector, ProjectorParams};
use llama_safe::*;
use llama_safe_server::{AppState, ServerConfig};
use serde_json::{json, Value};
use support::{engine, post, start_state};

/// A 32×32 PNG, base64.
fn png_base64() -> String {
    use base64::Engine as _;
    let pixels: Vec<u8> = (0..32u32 * 32)
        .flat_map(|i| [(i % 32 * 8) as u8, (i / 32 * 8) as u8, 7])
        .collect();
    let mut png = Vec::new();
    image::RgbImage::from_raw(32, 32, pixels)
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(png)
}

/// A mono 16-bit PCM WAV file of `samples` at `rate`, base64.
fn wav_base64(samples: &[f32], rate: u32) -> String {
    use base64::Engine as _;
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    base64::engine::general_purpose::STANDARD.encode(wav)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_from_an_openai_client_is_heard() {
    use llama_safe::demo::DemoAudioProjector;
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(
        &backend,
        DemoModel::Moe.cached().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let params = ProjectorParams::default().with_gpu(false);
    let projector =
        Projector::load(&model, DemoAudioProjector::cached().unwrap(), &params).unwrap();
    let state =
        AppState::new_with_projector(model, "demo", Vec::new(), engine(2), projector).unwrap();
    let s = start_state(state, ServerConfig::default().with_max_body_bytes(32 << 20)).await;
    let tone: Vec<f32> = (0..16_000)
        .map(|i| (i as f32 * 0.1727).sin() * 0.5)
        .collect();
    let body = |wav: String| {
        json!({"temperature": 0, "max_tokens": 16, "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
            {"type": "text", "text": "Once upon a time"},
        ]}]})
    };
    let (status, v) = post(
        &s.base,
        "/v1/chat/completions",
        body(wav_base64(&tone, 16_000)),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["usage"]["prompt_tokens"].as_u64().unwrap() > DemoAudioProjector::TOKENS as u64,
        "{v}"
    );
    // Another sample rate is refused, not resampled; not a WAV; an image.
    let (status, v) = post(
        &s.base,
        "/v1/chat/completions",
        body(wav_base64(&tone, 8_000)),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("16000 Hz"),
        "{v}"
    );
    let (status, v) = post(
        &s.base,
        "/v1/chat/completions",
        body("UklGRiQAAABXQVZF".into()),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = post(
        &s.base,
        "/v1/chat/completions",
        json!({"max_tokens": 4, "messages": [{"role": "user", "content": [
            image_part(format!("data:image/png;base64,{}", png_base64())),
            {"type": "text", "text": "hi"},
        ]}]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
}

async fn start(with_projector: bool) -> support::Server {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(
        &backend,
        DemoModel::Moe.cached().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let state = if with_projector {
        let params = ProjectorParams::default().with_gpu(false);
        let projector = Projector::load(&model, DemoProjector::cached().unwrap(), &params).unwrap();
        AppState::new_with_projector(model, "demo", Vec::new(), engine(2), projector).unwrap()
    } else {
        AppState::new(model, "demo", engine(2)).unwrap()
    };
    start_state(state, ServerConfig::default().with_max_body_bytes(32 << 20)).await
}

fn image_part(url: String) -> Value {
    json!({"type": "image_url", "image_url": {"url": url}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_from_openai_and_ollama_clients_are_read() {
    let s = start(true).await;
    let url = format!("data:image/png;base64,{}", png_base64());
    // OpenAI chat: the image, then the text, in one user message. The
    // demo template wraps it in ChatML, so the answer is the demo's reply
    // to "Once upon a time" after an image that reads as "Once".
    let (status, v) = post(
        &s.base,
        "/v1/chat/completions",
        json!({"temperature": 0, "messages": [{"role": "user", "content": [
            image_part(url.clone()),
            {"type": "text", "text": "Once upon a time"},
        ]}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let chat = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!chat.is_empty());
    assert!(
        v["usage"]["prompt_tokens"].as_u64().unwrap() > DemoProjector::IMAGE_TOKENS as u64,
        "{v}"
    );
    // The same request again: the same answer (the image's cells reused).
    let (_, again) = post(
        &s.base,
        "/v1/chat/completions",
        json!({"temperature": 0, "messages": [{"role": "user", "content": [
            image_part(url.clone()),
            {"type": "text", "text": "Once upon a time"},
        ]}]}),
    )
    .await;
    assert_eq!(again["choices"][0]["message"]["content"], chat.as_str());
    // Ollama generate: `images` before the prompt, as Ollama does.
    let (status, v) = post(
        &s.base,
        "/api/generate",
        json!({"prompt": " Once upon a time", "images": [png_base64()], "stream": false,
               "options": {"temperature": 0}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"], DEMO_CONTINUATION);
    // Ollama chat: `images` on the message.
    let (status, v) = post(
        &s.base,
        "/api/chat",
        json!({"messages": [{"role": "user", "content": "Once upon a time", "images": [png_base64()]}],
               "stream": false, "options": {"temperature": 0}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["message"]["content"].is_string());
    // Anthropic Messages: a base64 image block; a URL source is refused.
    let block = |source: Value| {
        json!({"model": "demo", "max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": [
            {"type": "image", "source": source}, {"type": "text", "text": "Once upon a time"}]}]})
    };
    let (status, v) = post(
        &s.base,
        "/v1/messages",
        block(json!({"type": "base64", "media_type": "image/png", "data": png_base64()})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["usage"]["input_tokens"].as_u64().unwrap() > DemoProjector::IMAGE_TOKENS as u64,
        "{v}"
    );
    let (status, v) = post(
        &s.base,
        "/v1/messages",
        block(json!({"type": "url", "url": "https://example.com/cat.png"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_media_get_400_and_the_server_goes_on() {
    let s = start(true).await;
    let chat = |content: Value| json!({"messages": [{"role": "user", "content": content}], "max_tokens": 4});
    let text = json!({"type": "text", "text": "hi"});
    let cases: Vec<(&str, Value)> = vec![
        (
            "remote URL",
            chat(json!([
                image_part("https://example.com/cat.png".into()),
                text
            ])),
        ),
        (
            "not base64",
            chat(json!([
                image_part("data:image/png;base64,@@@@".into()),
                text
            ])),
        ),
        (
            "no data",
            chat(json!([image_part("data:image/png;base64,".into()), text])),
        ),
        (
            "not an image",
            chat(json!([
                image_part(format!("data:image/png;base64,{}", "R0dVRg==")),
                text
            ])),
        ),
        (
            "truncated PNG",
            chat(json!([
                image_part(format!("data:image/png;base64,{}", &png_base64()[..200])),
                text
            ])),
        ),
        (
            "audio for a vision projector",
            chat(
                json!([{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}, text]),
            ),
        ),
        (
            "unknown part",
            chat(json!([{"type": "video_url", "video_url": {"url": "x"}}])),
        ),
        // Beside an image, a marker in the text would take the image's
        // place: the counts no longer match.
        (
            "marker typed by the user",
            chat(
                json!([{"type": "text", "text": "<__media__> hi"}, image_part(format!("data:image/png;base64,{}", png_base64()))]),
            ),
        ),
        (
            "1000 images",
            chat(Value::Array(
                (0..1000)
                    .map(|_| image_part(format!("data:image/png;base64,{}", png_base64())))
                    .collect(),
            )),
        ),
    ];
    for (name, body) in cases {
        let started = std::time::Instant::now();
        let (status, v) = post(&s.base, "/v1/chat/completions", body).await;
        assert_eq!(status, 400, "{name}: {v}");
        assert!(v["error"]["message"].is_string(), "{name}: {v}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{name} took {:?}",
            started.elapsed()
        );
    }
    let (status, v) = post(
        &s.base,
        "/api/generate",
        json!({"prompt": "hi", "images": ["@@"], "stream": false}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = post(
        &s.base,
        "/v1/completions",
        json!({"prompt": "hi", "images": [png_base64()]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    // Still serving.
    let (status, v) = post(
        &s.base,
        "/api/generate",
        json!({"prompt": "Once upon a time", "stream": false, "options": {"temperature": 0}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"], DEMO_CONTINUATION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_projector_says_so() {
    let s = start(false).await;
    let url = format!("data:image/png;base64,{}", png_base64());
    let (status, v) = post(
        &s.base,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": [image_part(url)]}]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("--mmproj"),
        "{v}"
    );
}
