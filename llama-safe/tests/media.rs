//! Images through a projector (the `mtmd` feature), on the demo model and
//! the demo projector: the safe API against libmtmd's C API called
//! directly, MoE offload, and hostile media and projector files.

#[path = "common/child.rs"]
mod child;
mod common;
#[path = "common/gguf_layout.rs"]
#[allow(dead_code)]
mod gguf_layout;

use child::in_child;
use gguf_layout::{string_value, ty, Layout};
use llama_safe::demo::{DemoProjector, DEMO_CONTINUATION};
use llama_safe::media::{Bitmap, ChunkKind, MediaLimits, Projector, ProjectorParams};
use llama_safe::sys::{self, mtmd};
use llama_safe::*;
use std::ffi::{CStr, CString};
use std::time::Duration;

/// A 32×32 test picture: a gradient, so every patch differs.
fn picture() -> Vec<u8> {
    (0..32u32 * 32)
        .flat_map(|i| {
            let (x, y) = (i % 32, i / 32);
            [(x * 8) as u8, (y * 8) as u8, ((x + y) * 4) as u8]
        })
        .collect()
}

fn params() -> ProjectorParams {
    ProjectorParams::default().with_gpu(false).with_n_threads(1)
}

fn load(model_params: &LlamaModelParams) -> (LlamaModel, Projector) {
    load_from(&common::moe_path(), model_params)
}

fn load_from(path: &std::path::Path, model_params: &LlamaModelParams) -> (LlamaModel, Projector) {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, path, model_params).unwrap();
    let projector = Projector::load(&model, DemoProjector::cached().unwrap(), &params()).unwrap();
    (model, projector)
}

fn prompt(projector: &Projector) -> String {
    format!("{} Once upon a time", projector.marker())
}

/// What a run gives: the greedy text, the image's embedding, and the
/// logits after the prompt (which the positions given to the image and
/// the text after it change).
type Run = (String, Vec<f32>, Vec<f32>);

/// [`Run`] through the safe API.
fn safe_run(model_params: &LlamaModelParams) -> Run {
    safe_run_on(&common::moe_path(), model_params)
}

fn safe_run_on(path: &std::path::Path, model_params: &LlamaModelParams) -> Run {
    let (model, projector) = load_from(path, model_params);
    let image = Bitmap::from_rgb(32, 32, &picture(), &MediaLimits::default()).unwrap();
    let chunks = projector
        .tokenize(&prompt(&projector), &[&image], Tokenize::PROMPT)
        .unwrap();
    let image_chunk = chunks
        .iter()
        .find(|c| c.kind() == ChunkKind::Image)
        .unwrap();
    assert_eq!(image_chunk.n_tokens(), DemoProjector::IMAGE_TOKENS);
    assert_eq!(image_chunk.id().as_deref(), Some(image.id()));
    let embedding = projector.encode(&image_chunk).unwrap();
    let mut ctx = LlamaContext::new(
        &model,
        &ContextParams::default().with_n_ctx(256).with_threads(1),
    )
    .unwrap();
    let options = GenerateOptions::default()
        .with_sampling(SamplingOptions::greedy())
        .with_max_tokens(32);
    let mut text = String::new();
    for event in ctx.generate_media(&chunks, &options).unwrap() {
        if let Event::Piece(p) = event.unwrap() {
            text.push_str(&p.text);
        }
    }
    let mut ctx = LlamaContext::new(
        &model,
        &ContextParams::default().with_n_ctx(256).with_threads(1),
    )
    .unwrap();
    ctx.decode_media(&chunks).unwrap();
    (text, embedding, ctx.logits().to_vec())
}

/// The same through libmtmd's and llama.cpp's C API, called directly:
/// mtmd_tokenize, mtmd_encode_chunk, mtmd_helper_eval_chunks, then a
/// greedy loop over llama_decode.
fn c_api_run() -> Run {
    c_api_run_on(&common::moe_path())
}

fn c_api_run_on(path: &std::path::Path) -> Run {
    let _backend = LlamaBackend::init();
    let model_path = CString::new(path.to_str().unwrap()).unwrap();
    let mmproj = CString::new(DemoProjector::cached().unwrap().to_str().unwrap()).unwrap();
    let pixels = picture();
    // SAFETY: the C API used as its headers document it, every object freed
    // once after its last use.
    unsafe {
        let model =
            sys::llama_model_load_from_file(model_path.as_ptr(), sys::llama_model_default_params());
        assert!(!model.is_null());
        let mut cparams = sys::llama_context_default_params();
        cparams.n_ctx = 256;
        cparams.n_threads = 1;
        cparams.n_threads_batch = 1;
        let lctx = sys::llama_init_from_model(model, cparams);
        assert!(!lctx.is_null());
        let mut mparams = mtmd::mtmd_context_params_default();
        mparams.use_gpu = false;
        mparams.n_threads = 1;
        mparams.print_timings = false;
        let mctx = mtmd::mtmd_init_from_file(mmproj.as_ptr(), model, mparams);
        assert!(!mctx.is_null());
        let bitmap = mtmd::mtmd_bitmap_init(32, 32, pixels.as_ptr());
        let marker = CStr::from_ptr(mtmd::mtmd_default_marker())
            .to_str()
            .unwrap();
        let text = CString::new(format!("{marker} Once upon a time")).unwrap();
        let input = mtmd::mtmd_input_text {
            text: text.as_ptr(),
            text_len: text.as_bytes().len(),
            add_special: true,
            parse_special: false,
        };
        let chunks = mtmd::mtmd_input_chunks_init();
        let bitmaps = [bitmap.cast_const()];
        assert_eq!(
            mtmd::mtmd_tokenize(mctx, chunks, &input, bitmaps.as_ptr(), 1),
            0
        );
        let mut embedding = Vec::new();
        for i in 0..mtmd::mtmd_input_chunks_size(chunks) {
            let chunk = mtmd::mtmd_input_chunks_get(chunks, i);
            if mtmd::mtmd_input_chunk_get_type(chunk) == mtmd::MTMD_INPUT_CHUNK_TYPE_IMAGE {
                assert_eq!(mtmd::mtmd_encode_chunk(mctx, chunk), 0);
                let n = mtmd::mtmd_input_chunk_get_n_tokens(chunk)
                    * sys::llama_model_n_embd_inp(model) as usize;
                embedding =
                    std::slice::from_raw_parts(mtmd::mtmd_get_output_embd(mctx), n).to_vec();
            }
        }
        let mut n_past = 0;
        assert_eq!(
            mtmd::mtmd_helper_eval_chunks(mctx, lctx, chunks, 0, 0, 512, true, &mut n_past),
            0
        );
        let vocab = sys::llama_model_get_vocab(model);
        let n_vocab = sys::llama_vocab_n_tokens(vocab) as usize;
        let mut out = String::new();
        let prompt_logits =
            std::slice::from_raw_parts(sys::llama_get_logits_ith(lctx, -1), n_vocab).to_vec();
        for _ in 0..32 {
            let logits = std::slice::from_raw_parts(sys::llama_get_logits_ith(lctx, -1), n_vocab);
            let mut token = 0;
            for (i, l) in logits.iter().enumerate() {
                if *l > logits[token as usize] {
                    token = i as i32;
                }
            }
            if sys::llama_vocab_is_eog(vocab, token) {
                break;
            }
            let mut buf = [0 as std::ffi::c_char; 64];
            let n = sys::llama_token_to_piece(vocab, token, buf.as_mut_ptr(), 64, 0, false);
            out.push_str(
                std::str::from_utf8(std::slice::from_raw_parts(buf.as_ptr().cast(), n as usize))
                    .unwrap(),
            );
            let mut one = token;
            assert_eq!(
                sys::llama_decode(lctx, sys::llama_batch_get_one(&mut one, 1)),
                0
            );
        }
        mtmd::mtmd_input_chunks_free(chunks);
        mtmd::mtmd_bitmap_free(bitmap);
        mtmd::mtmd_free(mctx);
        sys::llama_free(lctx);
        sys::llama_model_free(model);
        (out, embedding, prompt_logits)
    }
}

#[test]
fn an_image_and_its_text_are_what_the_c_api_gives() {
    let (text, embedding, logits) = safe_run(&LlamaModelParams::default());
    // The demo projector reads as the sentence's first word, so the text is
    // the demo sentence's (see DemoProjector).
    assert_eq!(text, DEMO_CONTINUATION);
    assert_eq!(embedding.len(), DemoProjector::IMAGE_TOKENS * 64);
    let (c_text, c_embedding, c_logits) = c_api_run();
    assert_eq!(text, c_text);
    // Bit for bit: the same encoder on the same preprocessed pixels, the
    // same positions.
    assert_eq!(embedding, c_embedding);
    assert_eq!(logits, c_logits);
    // The pixels reach the embedding: another picture, another embedding.
    let (_, projector) = load(&LlamaModelParams::default());
    let grey = Bitmap::from_rgb(32, 32, &[128; 32 * 32 * 3], &MediaLimits::default()).unwrap();
    let chunks = projector
        .tokenize(&prompt(&projector), &[&grey], Tokenize::PROMPT)
        .unwrap();
    let image = chunks
        .iter()
        .find(|c| c.kind() == ChunkKind::Image)
        .unwrap();
    assert_ne!(projector.encode(&image).unwrap(), embedding);
}

/// Qwen3-VL-MoE's language model places an image with M-RoPE: all its
/// tokens at one time position, spread over x and y, and the text after it
/// starts past the grid's longest side, not one past the last cell's
/// position (which is what the KV cache would suggest). The safe API places
/// it as libmtmd's own helper does.
#[test]
fn m_rope_positions_are_libmtmds() {
    let path = demo::Family::Qwen3VlMoe.cached().unwrap();
    let (_, projector) = load_from(&path, &LlamaModelParams::default());
    assert!(projector.uses_mrope());
    let image = Bitmap::from_rgb(32, 32, &picture(), &MediaLimits::default()).unwrap();
    let chunks = projector
        .tokenize(&prompt(&projector), &[&image], Tokenize::PROMPT)
        .unwrap();
    let image_chunk = chunks
        .iter()
        .find(|c| c.kind() == ChunkKind::Image)
        .unwrap();
    // The demo projector's grid is one row of 16 (an MLP projector).
    assert_eq!((image_chunk.n_tokens(), image_chunk.n_pos()), (16, 16));
    let run = safe_run_on(&path, &LlamaModelParams::default());
    assert_eq!(run, c_api_run_on(&path));
    // And with its experts in host memory.
    let moved = safe_run_on(
        &path,
        &LlamaModelParams::default()
            .with_n_gpu_layers(999)
            .with_cpu_moe_all(),
    );
    assert_eq!(moved, run);
    // The engine places one position per cell: it refuses M-RoPE media
    // instead of misplacing them.
    use llama_safe::engine::{Engine, EngineConfig, Request};
    let engine = Engine::new(projector.model(), EngineConfig::default().with_n_ctx(512)).unwrap();
    let request = Request::with_media(chunks, GenerateOptions::default()).unwrap();
    let e = engine.submit(request).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
}

#[test]
fn experts_in_host_memory_change_nothing() {
    let plain = safe_run(&LlamaModelParams::default());
    let moved = safe_run(
        &LlamaModelParams::default()
            .with_n_gpu_layers(999)
            .with_cpu_moe_all(),
    );
    assert_eq!(plain, moved);
}

#[test]
fn an_encoded_image_decodes_to_the_same_pixels() {
    let limits = MediaLimits::default();
    let raw = Bitmap::from_rgb(32, 32, &picture(), &limits).unwrap();
    let mut png = Vec::new();
    image::RgbImage::from_raw(32, 32, picture())
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let decoded = Bitmap::from_image_bytes(&png, &limits).unwrap();
    assert_eq!(decoded.id(), raw.id());
    let dir = common::scratch("media-file");
    std::fs::write(dir.join("picture.png"), &png).unwrap();
    let from_file = Bitmap::from_image_file(dir.join("picture.png"), &limits).unwrap();
    assert_eq!(from_file.id(), raw.id());
    // RGBA loses its alpha, as llama.cpp's loader does.
    let mut rgba_png = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(32, 32, picture()).unwrap())
        .to_rgba8()
        .write_to(
            &mut std::io::Cursor::new(&mut rgba_png),
            image::ImageFormat::Png,
        )
        .unwrap();
    assert_eq!(
        Bitmap::from_image_bytes(&rgba_png, &limits).unwrap().id(),
        raw.id()
    );
}

#[test]
fn bad_media_are_typed_errors() {
    let (_, projector) = load(&LlamaModelParams::default());
    let limits = MediaLimits::default();
    let kind = |r: Result<Bitmap>| r.unwrap_err().kind();
    // Zero size, wrong channel counts.
    assert_eq!(
        kind(Bitmap::from_rgb(0, 4, &[], &limits)),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Bitmap::from_rgb(4, 4, &[0; 64], &limits)),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Bitmap::from_rgb(4, 4, &[0; 16], &limits)),
        ErrorKind::InvalidInput
    );
    // Absurd sizes are refused before any allocation.
    let e = Bitmap::from_rgb(100_000, 100_000, &[], &limits).unwrap_err();
    assert!(matches!(e, Error::MediaLimit { .. }), "{e}");
    // Not an image, a truncated one, an empty file.
    let mut png = Vec::new();
    image::RgbImage::from_raw(32, 32, picture())
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert_eq!(
        kind(Bitmap::from_image_bytes(b"GGUF not a picture", &limits)),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Bitmap::from_image_bytes(&png[..png.len() / 2], &limits)),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Bitmap::from_image_bytes(&[], &limits)),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Bitmap::from_image_file("/nonexistent/picture.png", &limits)),
        ErrorKind::NotFound
    );
    // Too many encoded bytes.
    let small = limits.with_max_encoded_bytes(100);
    assert!(matches!(
        Bitmap::from_image_bytes(&png, &small),
        Err(Error::MediaLimit { .. })
    ));
    // Audio the vision-only projector does not take.
    let audio = Bitmap::from_pcm(&[0.0; 1600], &limits).unwrap();
    let e = projector
        .tokenize(&prompt(&projector), &[&audio], Tokenize::PROMPT)
        .unwrap_err();
    assert!(matches!(e, Error::Media { .. }), "{e}");
    assert_eq!(
        kind(Bitmap::from_pcm(&[], &limits)),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Bitmap::from_pcm(&[f32::NAN], &limits)),
        ErrorKind::InvalidInput
    );
    // Markers and media that do not pair up.
    let image = Bitmap::from_rgb(32, 32, &picture(), &limits).unwrap();
    let e = projector
        .tokenize("no marker", &[&image], Tokenize::PROMPT)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::MediaMarkers {
                markers: 0,
                media: 1
            }
        ),
        "{e}"
    );
    let two = format!("{0}{0}", projector.marker());
    let e = projector
        .tokenize(&two, &[&image], Tokenize::PROMPT)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::MediaMarkers {
                markers: 2,
                media: 1
            }
        ),
        "{e}"
    );
    // A prompt that ends with an image has nothing to generate from.
    let model = projector.model().clone();
    let chunks = projector
        .tokenize(projector.marker(), &[&image], Tokenize::PROMPT)
        .unwrap();
    let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(256)).unwrap();
    let e = ctx
        .generate_media(&chunks, &GenerateOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // More than the context holds (20 images of 16 tokens in 256 cells):
    // refused before anything runs.
    let mut small_ctx =
        LlamaContext::new(&model, &ContextParams::default().with_n_ctx(256)).unwrap();
    let many: Vec<&Bitmap> = (0..20).map(|_| &image).collect();
    let chunks = projector
        .tokenize(&projector.marker().repeat(20), &many, Tokenize::PROMPT)
        .unwrap();
    let e = small_ctx.decode_media(&chunks).unwrap_err();
    assert!(matches!(e, Error::PromptTooLong { .. }), "{e}");
    assert_eq!(small_ctx.n_past(), 0);
}

#[test]
fn a_dry_run_plans_the_projectors_memory() {
    let params = ProjectorParams::default().with_gpu(false).with_n_threads(1);
    let planned = Projector::plan_memory(DemoProjector::cached().unwrap(), &params).unwrap();
    // On the host: at least its weights (the file less its metadata).
    let file = std::fs::metadata(DemoProjector::cached().unwrap())
        .unwrap()
        .len();
    let host: u64 = planned
        .iter()
        .filter(|(d, _)| d == "CPU")
        .map(|(_, b)| b)
        .sum();
    assert!(
        host > file / 2 && planned.len() == 1,
        "{planned:?} for a {file}-byte file"
    );
    let (_, projector) = load(&LlamaModelParams::default());
    assert_eq!(projector.backend(), "CPU");
    // A reservation comes off a fit's budget.
    let options = FitOptions::default()
        .with_reserved("Vulkan0", 5)
        .with_reserved("Vulkan0", 7);
    assert_eq!(
        (options.reserved("Vulkan0"), options.reserved("CUDA0")),
        (12, 0)
    );
    // A file that is not a projector: typed, as for a load.
    let e = Projector::plan_memory(common::moe_path(), &params).unwrap_err();
    assert!(matches!(e, Error::Projector { .. }), "{e}");
}

#[test]
fn a_thousand_images_in_one_prompt_are_refused_early() {
    let (_, projector) = load(&LlamaModelParams::default());
    let image = Bitmap::from_rgb(32, 32, &picture(), &MediaLimits::default()).unwrap();
    let media: Vec<&Bitmap> = (0..1000).map(|_| &image).collect();
    let text = projector.marker().repeat(1000);
    let e = projector
        .tokenize(&text, &media, Tokenize::PROMPT)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::MediaLimit {
                value: 1000,
                limit: 32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header() {
    // A real 1×1 PNG whose header then claims 16,000 × 16,000 pixels (256
    // million, 768 MB as RGB): refused before a pixel is decoded.
    let mut png = Vec::new();
    image::RgbImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    // IHDR data starts at byte 16 (8 signature, 4 length, 4 type).
    png[16..20].copy_from_slice(&16_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&16_000u32.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let before = child::peak_rss();
    let e = Bitmap::from_image_bytes(&png, &MediaLimits::default()).unwrap_err();
    assert!(
        matches!(&e, Error::MediaLimit { what, .. } if what.contains("pixels")),
        "{e}"
    );
    assert!(child::peak_rss() < before + (64 << 20));
}

/// The demo projector with metadata `key` set to a value of GGUF type `ty`
/// (`value` its encoded bytes).
fn hostile_projector(name: &str, key: &str, ty: u32, value: Vec<u8>) -> std::path::PathBuf {
    let layout = Layout::parse(std::fs::read(DemoProjector::cached().unwrap()).unwrap());
    let mut kvs = layout.kv_triples();
    let kv = kvs
        .iter_mut()
        .find(|(k, _, _)| k == key)
        .expect("key in the demo projector");
    (kv.1, kv.2) = (ty, value);
    let path = common::scratch(&format!("mmproj-{name}")).join("mmproj.gguf");
    std::fs::write(&path, layout.rebuild(&kvs)).unwrap();
    path
}

#[test]
fn hostile_projector_files_are_typed_errors() {
    in_child(
        "hostile_projector_files_are_typed_errors",
        Duration::from_secs(120),
        || {
            let model = common::load_moe();
            let load =
                |path: &std::path::Path| Projector::load(&model, path, &params()).unwrap_err();
            let dir = common::scratch("mmproj-files");
            // Not a GGUF; truncated; the language model itself; missing.
            std::fs::write(dir.join("text.gguf"), b"not a projector").unwrap();
            assert_eq!(load(&dir.join("text.gguf")).kind(), ErrorKind::InvalidFile);
            let good = std::fs::read(DemoProjector::cached().unwrap()).unwrap();
            std::fs::write(dir.join("short.gguf"), &good[..good.len() / 3]).unwrap();
            assert_eq!(load(&dir.join("short.gguf")).kind(), ErrorKind::InvalidFile);
            let e = load(&common::moe_path());
            assert!(
                matches!(&e, Error::Projector { reason, .. } if reason.to_string().contains("not a projector")),
                "{e}"
            );
            assert_eq!(load(&dir.join("missing.gguf")).kind(), ErrorKind::NotFound);
            // A projector made for another model: libmtmd's own reason.
            DemoProjector::write_for(32, &dir.join("other.gguf")).unwrap();
            let e = load(&dir.join("other.gguf"));
            assert!(
                matches!(&e, Error::Projector { reason, .. } if reason.to_string().contains("mismatch")),
                "{e}"
            );
            // Values libmtmd reads with typed getters that assert the
            // stored type, and a head count it divides by: with libmtmd's C
            // API called directly, zero heads and each wrong-typed key here
            // ended the process with SIGABRT (measured 2026-12-07); a zero
            // patch size and a 2^30 image size it refuses itself. All are
            // typed errors here, before libmtmd reads the file.
            let u32_value = |v: u32| v.to_le_bytes().to_vec();
            for (name, key, ty, value) in [
                ("patch0", "clip.vision.patch_size", ty::U32, u32_value(0)),
                (
                    "heads0",
                    "clip.vision.attention.head_count",
                    ty::U32,
                    u32_value(0),
                ),
                (
                    "typed",
                    "clip.vision.block_count",
                    ty::STRING,
                    string_value("2"),
                ),
                (
                    "eps",
                    "clip.vision.attention.layer_norm_epsilon",
                    ty::U32,
                    u32_value(1),
                ),
                ("flag", "clip.use_gelu", ty::U32, u32_value(1)),
                (
                    "size",
                    "clip.vision.image_size",
                    ty::U32,
                    u32_value(1 << 30),
                ),
            ] {
                let path = hostile_projector(name, key, ty, value);
                let e = load(&path);
                assert!(matches!(e, Error::Projector { .. }), "{name}: {e}");
            }
        },
    );
}

#[test]
fn the_engine_reads_images_beside_text_and_caches_them() {
    use llama_safe::engine::{Engine, EngineConfig, Request};
    let (model, projector) = load(&LlamaModelParams::default());
    let engine = Engine::new(
        &model,
        EngineConfig::default()
            .with_n_ctx(1024)
            .with_n_parallel(2)
            .with_threads(1),
    )
    .unwrap();
    let options = GenerateOptions::default()
        .with_sampling(SamplingOptions::greedy())
        .with_max_tokens(32);
    let limits = MediaLimits::default();
    let image = Bitmap::from_rgb(32, 32, &picture(), &limits).unwrap();
    let media_request = |image: &Bitmap| {
        let chunks = projector
            .tokenize(&prompt(&projector), &[image], Tokenize::PROMPT)
            .unwrap();
        Request::with_media(chunks, options.clone()).unwrap()
    };
    // An image request and a text one in the same batches: each gives its
    // text, the image's the same as LlamaContext::generate_media gives.
    let with_image = engine.submit(media_request(&image)).unwrap();
    let text_only = engine
        .submit(Request::new(
            model.tokenize(demo::DEMO_PROMPT, Tokenize::PROMPT).unwrap(),
            options.clone(),
        ))
        .unwrap();
    assert_eq!(
        with_image.text().unwrap(),
        safe_run(&LlamaModelParams::default()).0
    );
    assert_eq!(text_only.text().unwrap(), DEMO_CONTINUATION);
    // The same image again: its cells are reused, past the image.
    let before = engine.stats().prompt_cache_tokens;
    assert_eq!(
        engine
            .submit(media_request(&image))
            .unwrap()
            .text()
            .unwrap(),
        DEMO_CONTINUATION
    );
    let reused = engine.stats().prompt_cache_tokens - before;
    assert!(
        reused > DemoProjector::IMAGE_TOKENS as u64,
        "reused {reused}"
    );
    // Another image at the same place: nothing of the first image is reused.
    let grey = Bitmap::from_rgb(32, 32, &[128; 32 * 32 * 3], &limits).unwrap();
    let before = engine.stats().prompt_cache_tokens;
    assert_eq!(
        engine.submit(media_request(&grey)).unwrap().text().unwrap(),
        DEMO_CONTINUATION
    );
    let reused = engine.stats().prompt_cache_tokens - before;
    assert!(
        reused < DemoProjector::IMAGE_TOKENS as u64,
        "reused {reused}"
    );
    // A prompt that ends with an image cannot start generating.
    let chunks = projector
        .tokenize(projector.marker(), &[&image], Tokenize::PROMPT)
        .unwrap();
    assert!(Request::with_media(chunks, options.clone()).is_err());
}

/// One second of a 440 Hz tone at 16 kHz.
fn tone() -> Vec<f32> {
    (0..16_000)
        .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 0.5)
        .collect()
}

/// Audio through the demo audio projector (Qwen2-Audio's layout): the
/// embedding is libmtmd's own, bit for bit, and the text after the clip is
/// the demo sentence's.
#[test]
fn audio_is_what_the_c_api_gives() {
    use llama_safe::demo::DemoAudioProjector;
    let model = common::load_moe();
    let path = DemoAudioProjector::cached().unwrap();
    let projector = Projector::load(&model, &path, &params()).unwrap();
    assert!(projector.supports_audio() && !projector.supports_vision());
    assert_eq!(projector.audio_sample_rate(), Some(16_000));
    let clip = Bitmap::from_pcm(&tone(), &MediaLimits::default()).unwrap();
    let chunks = projector
        .tokenize(&prompt(&projector), &[&clip], Tokenize::PROMPT)
        .unwrap();
    let audio = chunks
        .iter()
        .find(|c| c.kind() == ChunkKind::Audio)
        .unwrap();
    assert_eq!(audio.n_tokens(), DemoAudioProjector::TOKENS);
    let embedding = projector.encode(&audio).unwrap();
    let mut ctx = LlamaContext::new(
        &model,
        &ContextParams::default().with_n_ctx(1024).with_threads(1),
    )
    .unwrap();
    let options = GenerateOptions::default()
        .with_sampling(SamplingOptions::greedy())
        .with_max_tokens(32);
    let mut text = String::new();
    for event in ctx.generate_media(&chunks, &options).unwrap() {
        if let Event::Piece(p) = event.unwrap() {
            text.push_str(&p.text);
        }
    }
    assert_eq!(text, DEMO_CONTINUATION);
    // libmtmd's C API, directly.
    let samples = tone();
    let mmproj = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: the C API as its header documents it, each object freed once.
    let c_embedding = unsafe {
        let mut p = mtmd::mtmd_context_params_default();
        p.use_gpu = false;
        p.n_threads = 1;
        let mctx = mtmd::mtmd_init_from_file(mmproj.as_ptr(), model_raw(&model), p);
        assert!(!mctx.is_null());
        let bitmap = mtmd::mtmd_bitmap_init_from_audio(samples.len(), samples.as_ptr());
        let text = CString::new(prompt(&projector)).unwrap();
        let input = mtmd::mtmd_input_text {
            text: text.as_ptr(),
            text_len: text.as_bytes().len(),
            add_special: true,
            parse_special: false,
        };
        let list = mtmd::mtmd_input_chunks_init();
        let bitmaps = [bitmap.cast_const()];
        assert_eq!(
            mtmd::mtmd_tokenize(mctx, list, &input, bitmaps.as_ptr(), 1),
            0
        );
        let mut out = Vec::new();
        for i in 0..mtmd::mtmd_input_chunks_size(list) {
            let chunk = mtmd::mtmd_input_chunks_get(list, i);
            if mtmd::mtmd_input_chunk_get_type(chunk) == mtmd::MTMD_INPUT_CHUNK_TYPE_AUDIO {
                assert_eq!(mtmd::mtmd_encode_chunk(mctx, chunk), 0);
                let n = mtmd::mtmd_input_chunk_get_n_tokens(chunk) * 64;
                out = std::slice::from_raw_parts(mtmd::mtmd_get_output_embd(mctx), n).to_vec();
            }
        }
        mtmd::mtmd_input_chunks_free(list);
        mtmd::mtmd_bitmap_free(bitmap);
        mtmd::mtmd_free(mctx);
        out
    };
    assert_eq!(embedding, c_embedding);
    // An image for an audio-only projector: typed.
    let image = Bitmap::from_rgb(32, 32, &picture(), &MediaLimits::default()).unwrap();
    let e = projector
        .tokenize(&prompt(&projector), &[&image], Tokenize::PROMPT)
        .unwrap_err();
    assert!(matches!(e, Error::Media { .. }), "{e}");
}

/// The raw model of a loaded one, for the C API (a second load of the same
/// file: the safe handle does not lend its pointer).
fn model_raw(model: &LlamaModel) -> *mut sys::llama_model {
    let path = CString::new(model.path().to_str().unwrap()).unwrap();
    // SAFETY: a plain load; leaked for the test's life (the C API objects
    // made from it are freed first).
    unsafe { sys::llama_model_load_from_file(path.as_ptr(), sys::llama_model_default_params()) }
}
