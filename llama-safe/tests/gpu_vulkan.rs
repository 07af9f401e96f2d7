//! The GPU path on a real ggml GPU backend: Vulkan (in CI, on Mesa's
//! software device, lavapipe, offered through
//! `BackendOptions::with_software_devices`: no environment variable).
//! Non-expert weights go to the device, the expert tensors the overrides
//! move stay in host memory, exactly the planned bytes leave the device,
//! and the text does not change. Built and run with `--features vulkan`.

#[path = "common/child.rs"]
mod child;
mod common;

use child::in_child;
use common::*;
use llama_safe::context::{device_bytes, device_totals};
use llama_safe::demo::{DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::*;

/// One test at a time: these tests compare the bytes on the device with
/// plans, which another test's model on the same device would change.
/// (Two tests at once once ended the process with SIGSEGV on lavapipe; the
/// library now serialises each Vulkan device's work itself, as
/// `four_threads_on_one_device_each_with_its_own_context` checks.)
static DEVICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn device_lock() -> std::sync::MutexGuard<'static, ()> {
    DEVICE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The backend, with Vulkan's software devices offered (the first test to
/// run sets this for the process; every test asks for the same).
fn backend() -> LlamaBackend {
    LlamaBackend::init_with(BackendOptions::default().with_software_devices(true)).unwrap()
}

/// The first Vulkan device's name.
fn vulkan_device(backend: &LlamaBackend) -> String {
    backend
        .devices()
        .into_iter()
        .find(|d| d.name.starts_with("Vulkan"))
        .map(|d| d.name)
        .expect(
            "no Vulkan device: no Vulkan driver is installed (Debian: mesa-vulkan-drivers, \
             see scripts/provision-vulkan.sh)",
        )
}

/// Weight bytes in the device's buffers.
fn weights_on(model: &LlamaModel, device: &str) -> u64 {
    model
        .placement()
        .buffers
        .iter()
        .filter(|b| b.name == device)
        .map(|b| b.bytes)
        .sum()
}

/// Greedy text of the demo prompt, and the context's device totals.
fn run(model: &LlamaModel, device: &str) -> (String, MemoryTotalsSeen) {
    let mut ctx = LlamaContext::new(
        model,
        &ContextParams::default().with_n_ctx(256).with_threads(2),
    )
    .unwrap();
    let text = greedy_in(&mut ctx, DEMO_PROMPT, 64);
    let uses = ctx.memory_breakdown().unwrap();
    let totals = device_totals(&uses, Some(device));
    (
        text,
        MemoryTotalsSeen {
            model: totals.model_bytes,
            context: totals.context_bytes,
            compute: totals.compute_bytes,
            device_all: device_bytes(&uses, Some(device)),
        },
    )
}

#[derive(Debug)]
struct MemoryTotalsSeen {
    model: u64,
    context: u64,
    compute: u64,
    device_all: u64,
}

#[test]
fn experts_stay_in_host_memory_and_the_text_does_not_change() {
    let _one_at_a_time = device_lock();
    let backend = backend();
    let device = vulkan_device(&backend);
    let all_on_device = LlamaModelParams::default()
        .with_n_gpu_layers(999)
        .with_devices(&[device.as_str()]);
    let mut seen = Vec::new();
    for (label, params) in [
        ("no offload", all_on_device.clone()),
        ("n_cpu_moe 2", all_on_device.clone().with_n_cpu_moe(2)),
        ("cpu_moe", all_on_device.clone().with_cpu_moe_all()),
    ] {
        let plan = params.plan(moe_path()).unwrap();
        let model = LlamaModel::load(&backend, moe_path(), &params).unwrap();
        let on_device = weights_on(&model, &device);
        for t in &model.placement().moved {
            assert!(t.buffer_type.starts_with("CPU"), "{label}: {t:?}");
        }
        let (text, memory) = run(&model, &device);
        eprintln!(
            "{label}: {device} weights {on_device} B, moved {} B; context {memory:?}",
            plan.moved_bytes()
        );
        assert_eq!(text, DEMO_CONTINUATION, "{label}");
        assert!(
            memory.model > 0 && memory.context > 0,
            "{label}: {memory:?}"
        );
        assert_eq!(
            memory.model, on_device,
            "{label}: breakdown and placement agree"
        );
        assert!(memory.device_all >= memory.model + memory.context + memory.compute);
        seen.push((label, on_device, plan.moved_bytes()));
    }
    let (_, all, _) = seen[0];
    assert!(all > 0, "the weights went to {device}");
    for &(label, on_device, moved) in &seen[1..] {
        // Exactly the planned bytes leave the device (buffers are padded
        // to the device's alignment: allow that much).
        let left = all - on_device;
        assert!(
            left >= moved && left - moved < 4096,
            "{label}: {left} B left {device}, {moved} B planned"
        );
    }
    assert!(seen[2].1 < seen[1].1 && seen[1].1 < seen[0].1, "{seen:?}");
}

#[test]
fn an_unknown_device_is_a_typed_error() {
    let _one_at_a_time = device_lock();
    let backend = backend();
    let params = LlamaModelParams::default()
        .with_n_gpu_layers(999)
        .with_devices(&["Vulkan9"]);
    let result = LlamaModel::load(&backend, moe_path(), &params);
    assert!(
        matches!(result, Err(Error::UnknownDevice { .. })),
        "{result:?}"
    );
}

#[test]
fn offload_controls_change_what_they_say_on_the_device() {
    let _one_at_a_time = device_lock();
    let backend = backend();
    let device = vulkan_device(&backend);
    let base = LlamaModelParams::default()
        .with_n_gpu_layers(999)
        .with_devices(&[device.as_str()])
        .with_cpu_moe_all();
    let ctx_default = ContextParams::default().with_n_ctx(256).with_threads(2);
    let model = LlamaModel::load(&backend, moe_path(), &base).unwrap();
    let measure = |model: &LlamaModel, params: &ContextParams| {
        let mut ctx = LlamaContext::new(model, params).unwrap();
        let text = greedy_in(&mut ctx, DEMO_PROMPT, 64);
        let uses = ctx.memory_breakdown().unwrap();
        (text, device_totals(&uses, Some(&device)), uses)
    };
    let (text, on_device, _) = measure(&model, &ctx_default);
    assert_eq!(text, DEMO_CONTINUATION);
    // The KV cache off the device: no context bytes there, the same text.
    let (text, off, uses) = measure(&model, &ctx_default.clone().with_offload_kqv(false));
    eprintln!("offload_kqv false: {off:?} {uses:?}");
    assert_eq!(text, DEMO_CONTINUATION);
    assert!(
        on_device.context_bytes > 0 && off.context_bytes == 0,
        "{on_device:?} {off:?}"
    );
    // The KV cache's type sets its bytes on the device: F32 twice F16's
    // (the demo's 16-wide heads allow no block-quantized cache: a typed
    // error), with flash attention on.
    let (text, f32_kv, _) = measure(
        &model,
        &ctx_default
            .clone()
            .with_kv_cache_type(KvCacheType::F32, KvCacheType::F32)
            .with_flash_attention(FlashAttention::Enabled),
    );
    eprintln!("f32 KV + flash attention: {f32_kv:?}");
    assert_eq!(text, DEMO_CONTINUATION);
    assert_eq!(f32_kv.context_bytes, 2 * on_device.context_bytes);
    let q8 = LlamaContext::new(
        &model,
        &ctx_default
            .clone()
            .with_kv_cache_type(KvCacheType::Q8_0, KvCacheType::Q8_0),
    );
    assert!(matches!(q8, Err(Error::Context { .. })), "{q8:?}");
    // Operation offload off: host weights are not copied to the device
    // for big batches, so its compute buffer is smaller; the same text.
    let (text, no_op, _) = measure(&model, &ctx_default.clone().with_op_offload(false));
    eprintln!("op_offload false: {no_op:?}");
    assert_eq!(text, DEMO_CONTINUATION);
    assert!(
        no_op.compute_bytes < on_device.compute_bytes,
        "{no_op:?} {on_device:?}"
    );
    // Flash attention off: attention's score matrix is materialised in the
    // device's compute buffer, so it grows; the same text.
    let (text, fa_on, _) = measure(
        &model,
        &ctx_default
            .clone()
            .with_flash_attention(FlashAttention::Enabled),
    );
    let (text_off, fa_off, _) = measure(
        &model,
        &ctx_default
            .clone()
            .with_flash_attention(FlashAttention::Disabled),
    );
    eprintln!("flash attention on: {fa_on:?}, off: {fa_off:?}");
    assert_eq!(
        (text.as_str(), text_off.as_str()),
        (DEMO_CONTINUATION, DEMO_CONTINUATION)
    );
    assert!(
        fa_off.compute_bytes > fa_on.compute_bytes,
        "{fa_off:?} {fa_on:?}"
    );
    // mlock keeps the mapping (the same buffers as mmap) and the text.
    let locked = LlamaModel::load(
        &backend,
        moe_path(),
        &base.clone().with_load_mode(LoadMode::MmapLocked),
    )
    .unwrap();
    assert_eq!(locked.placement().buffers, model.placement().buffers);
    assert_eq!(measure(&locked, &ctx_default).0, DEMO_CONTINUATION);
    drop(locked);
    // no_host, with the weights read (not mapped): the host weights leave
    // the device's pinned host buffer type for plain CPU memory.
    for no_host in [false, true] {
        let params = base
            .clone()
            .with_load_mode(LoadMode::Read)
            .with_no_host(no_host);
        let m = LlamaModel::load(&backend, moe_path(), &params).unwrap();
        let buffers: Vec<&str> = m
            .placement()
            .buffers
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        eprintln!("no_host {no_host}: {:?}", m.placement().buffers);
        assert_eq!(buffers.contains(&"Vulkan_Host"), !no_host, "{buffers:?}");
        let (text, _, _) = measure(&m, &ctx_default);
        assert_eq!(text, DEMO_CONTINUATION);
    }
}

/// A real load and context with the fit's params put exactly the bytes it
/// predicted on the device.
fn loads_as_fitted(backend: &LlamaBackend, path: &std::path::Path, fitted: &Fitted, device: &str) {
    let model = LlamaModel::load(backend, path, &fitted.params).unwrap();
    let ctx = LlamaContext::new(&model, &fitted.ctx).unwrap();
    let seen = device_bytes(&ctx.memory_breakdown().unwrap(), Some(device));
    assert_eq!(seen, fitted.devices[0].bytes, "{fitted}");
}

/// Device bytes a dry run predicts for `params` and `ctx` on `device`.
fn predicted(
    path: &std::path::Path,
    params: &LlamaModelParams,
    ctx: &ContextParams,
    device: &str,
) -> u64 {
    device_bytes(&params.memory_plan(path, ctx).unwrap(), Some(device))
}

#[test]
fn fit_moves_experts_then_layers_then_context_and_the_load_matches() {
    let _one_at_a_time = device_lock();
    let backend = backend();
    let device = vulkan_device(&backend);
    let path = demo::DemoModel::Moe.cached().unwrap();
    let ctx = ContextParams::default().with_n_ctx(4096).with_threads(2);
    let base = LlamaModelParams::default()
        .with_n_gpu_layers(999)
        .with_devices(&[&device])
        .with_tensor_override(r"^output_norm\.weight$", OverrideTarget::Cpu);
    let plan =
        |params: &LlamaModelParams, ctx: &ContextParams| predicted(&path, params, ctx, &device);
    let budget = |bytes: u64| {
        FitOptions::default()
            .with_budget(Some(bytes))
            .with_min_ctx(512)
    };
    let full = plan(&base, &ctx);
    let n2 = plan(&base.clone().with_n_cpu_moe(2), &ctx);
    let dense = plan(&base.clone().with_cpu_moe_all(), &ctx);
    let layers2 = plan(&base.clone().with_cpu_moe_all().with_n_gpu_layers(2), &ctx);
    let none = base.clone().with_cpu_moe_all().with_n_gpu_layers(0);
    let none_full_ctx = plan(&none, &ctx);
    let none_1024 = plan(&none, &ctx.clone().with_n_ctx(1024));
    let none_512 = plan(&none, &ctx.clone().with_n_ctx(512));
    eprintln!("full {full} n2 {n2} dense {dense} layers2 {layers2} none {none_full_ctx} none@1024 {none_1024} none@512 {none_512}");
    assert!(full > n2 && n2 > dense && dense > layers2 && layers2 > none_full_ctx);
    assert!(none_full_ctx > none_1024 && none_1024 > none_512);

    // Room for everything: nothing changes.
    let fitted = base.fit(&path, &ctx, &budget(full)).unwrap();
    eprint!("{fitted}");
    assert_eq!(
        (fitted.moe(), fitted.n_gpu_layers, fitted.n_ctx()),
        (MoeMode::None, None, 4096)
    );

    // 1. Experts: the smallest n_cpu_moe that fits, and a real load puts
    // exactly the predicted bytes on the device, with the same text.
    let fitted = base.fit(&path, &ctx, &budget(n2)).unwrap();
    eprint!("{fitted}");
    assert_eq!(
        (fitted.moe(), fitted.n_gpu_layers),
        (MoeMode::FirstLayers(2), None)
    );
    assert_eq!(fitted.devices.len(), 1);
    assert_eq!(
        (fitted.devices[0].bytes, fitted.devices[0].budget),
        (n2, n2)
    );
    // The caller's own override is kept, before the MoE patterns.
    let kept: Vec<String> = fitted
        .params
        .tensor_overrides()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(kept, [r"^output_norm\.weight$"]);
    {
        let model = LlamaModel::load(&backend, &path, &fitted.params).unwrap();
        let mut live = LlamaContext::new(&model, &fitted.ctx).unwrap();
        let text = greedy_in(&mut live, DEMO_PROMPT, 64);
        assert_eq!(
            device_bytes(&live.memory_breakdown().unwrap(), Some(&device)),
            n2
        );
        assert!(text.starts_with(DEMO_CONTINUATION), "{text:?}");
    }

    // 2. Even the dense part is too much: fewer layers, every expert on the host.
    let fitted = base.fit(&path, &ctx, &budget(layers2)).unwrap();
    eprint!("{fitted}");
    assert_eq!(fitted.n_gpu_layers, Some(2));
    assert_eq!(fitted.devices[0].bytes, layers2);
    loads_as_fitted(&backend, &path, &fitted, &device);
    // With room for the experts of the last block (llama.cpp offloads the
    // last layers: with 2 on the GPU, block 3 and the output), they come back.
    let back = plan(&base.clone().with_n_cpu_moe(3).with_n_gpu_layers(2), &ctx);
    let three = plan(&base.clone().with_cpu_moe_all().with_n_gpu_layers(3), &ctx);
    eprintln!("experts of block 3 back: {back}, 3 layers: {three}");
    assert!(back > layers2 && back < three);
    let fitted = base.fit(&path, &ctx, &budget(back)).unwrap();
    eprint!("{fitted}");
    assert_eq!(
        (fitted.moe(), fitted.n_gpu_layers),
        (MoeMode::FirstLayers(3), Some(2))
    );
    assert_eq!(fitted.devices[0].bytes, back);
    loads_as_fitted(&backend, &path, &fitted, &device);

    // 3. Not even with no layer: a smaller context, not below the floor.
    let fitted = base.fit(&path, &ctx, &budget(none_1024)).unwrap();
    eprint!("{fitted}");
    assert_eq!(fitted.n_gpu_layers, Some(0));
    assert!(
        fitted.n_ctx() >= 1024 && fitted.n_ctx() < 4096,
        "{}",
        fitted.n_ctx()
    );
    assert!(fitted.devices[0].bytes <= none_1024);
    loads_as_fitted(&backend, &path, &fitted, &device);

    // Nothing fits at the floor: a typed error naming the bytes.
    match base.fit(&path, &ctx, &budget(none_512 - 1)) {
        Err(Error::BudgetTooSmall { needed, budget }) => {
            assert_eq!((needed, budget), (none_512, none_512 - 1))
        }
        other => panic!("expected BudgetTooSmall, got {other:?}"),
    }

    // The device's own free memory, less the default 1 GiB margin: lavapipe
    // reports host RAM, so the demo model fits as asked.
    let fitted = base.fit(&path, &ctx, &FitOptions::default()).unwrap();
    eprint!("{fitted}");
    let seen = &fitted.devices[0];
    assert_eq!(seen.name, device);
    let free = seen.free.expect("the device's free memory");
    assert_eq!(seen.budget, free - (1 << 30));
    assert_eq!(fitted.n_gpu_layers, None);
}

/// The projector on the device, the language model's experts in host
/// memory (what `--cpu-moe --mmproj` does on a GPU): the encoder runs on
/// the device, its dry run puts its bytes there, the image's embedding is
/// the host encoder's to within float rounding, and the text after it does
/// not change. A fit reserving the projector's bytes leaves that much less
/// for the model.
#[cfg(feature = "mtmd")]
#[test]
fn the_projector_runs_on_the_device_beside_host_experts() {
    use llama_safe::demo::DemoProjector;
    use llama_safe::media::{Bitmap, ChunkKind, MediaLimits, Projector, ProjectorParams};
    let _one_at_a_time = device_lock();
    let backend = backend();
    let device = vulkan_device(&backend);
    let params = LlamaModelParams::default()
        .with_n_gpu_layers(999)
        .with_devices(&[device.as_str()])
        .with_cpu_moe_all();
    let model = LlamaModel::load(&backend, moe_path(), &params).unwrap();
    assert!(weights_on(&model, &device) > 0);
    for t in &model.placement().moved {
        assert!(t.buffer_type.starts_with("CPU"), "{t:?}");
    }
    let mmproj = DemoProjector::cached().unwrap();
    let pixels: Vec<u8> = (0..32u32 * 32)
        .flat_map(|i| [(i % 32 * 8) as u8, (i / 32 * 8) as u8, 9])
        .collect();
    let image = Bitmap::from_rgb(32, 32, &pixels, &MediaLimits::default()).unwrap();
    let mut runs = Vec::new();
    for (label, projector_params) in [
        (
            "host",
            ProjectorParams::default().with_gpu(false).with_n_threads(2),
        ),
        (
            "device",
            ProjectorParams::default()
                .with_device(device.clone())
                .with_n_threads(2),
        ),
    ] {
        let planned = Projector::plan_memory(&mmproj, &projector_params).unwrap();
        let projector = Projector::load(&model, &mmproj, &projector_params).unwrap();
        eprintln!(
            "{label}: encoder on {}, planned {planned:?}",
            projector.backend()
        );
        let on = if label == "host" {
            "CPU"
        } else {
            device.as_str()
        };
        assert_eq!(projector.backend(), on, "{label}");
        assert!(
            planned.iter().any(|(d, b)| d == on && *b > 0),
            "{label}: {planned:?}"
        );
        let prompt = format!("{} Once upon a time", projector.marker());
        let chunks = projector
            .tokenize(&prompt, &[&image], Tokenize::PROMPT)
            .unwrap();
        let embedding = projector
            .encode(
                &chunks
                    .iter()
                    .find(|c| c.kind() == ChunkKind::Image)
                    .unwrap(),
            )
            .unwrap();
        let mut ctx = LlamaContext::new(
            &model,
            &ContextParams::default().with_n_ctx(256).with_threads(2),
        )
        .unwrap();
        let options = GenerateOptions::default().with_sampling(SamplingOptions::greedy());
        let mut text = String::new();
        for event in ctx.generate_media(&chunks, &options).unwrap() {
            if let Event::Piece(p) = event.unwrap() {
                text.push_str(&p.text);
            }
        }
        assert_eq!(text, DEMO_CONTINUATION, "{label}");
        runs.push((embedding, planned));
    }
    let (host, device_run) = (&runs[0].0, &runs[1].0);
    assert_eq!(host.len(), device_run.len());
    let worst = host
        .iter()
        .zip(device_run)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "largest difference {worst}");
    // A fit that reserves the projector's device bytes gives the model
    // that much less.
    let reserved: u64 = runs[1]
        .1
        .iter()
        .filter(|(d, _)| *d == device)
        .map(|(_, b)| b)
        .sum();
    let ctx = ContextParams::default().with_n_ctx(256).with_threads(2);
    let budget = 64 << 20;
    let plain = params
        .fit(
            moe_path(),
            &ctx,
            &FitOptions::default().with_budget(Some(budget)),
        )
        .unwrap();
    let reserving = params
        .fit(
            moe_path(),
            &ctx,
            &FitOptions::default()
                .with_budget(Some(budget))
                .with_reserved(device.clone(), reserved),
        )
        .unwrap();
    assert_eq!(
        plain.devices[0].budget - reserving.devices[0].budget,
        reserved
    );
}

/// Four threads, each with its own model handle clone and its own context
/// on the one Vulkan device, generating at the same time: each gets the
/// text a run alone gets, and the process lives. Regression (audit round
/// 3): two such threads ended the process with SIGSEGV on lavapipe
/// (concurrent submissions to the device's one queue in ggml-vulkan);
/// llama-safe now serialises the work of each such device. In a child
/// process, so a crash is a failure here.
#[test]
fn four_threads_on_one_device_each_with_its_own_context() {
    let _one_at_a_time = device_lock();
    in_child(
        "four_threads_on_one_device_each_with_its_own_context",
        std::time::Duration::from_secs(600),
        || {
            let backend = backend();
            let device = vulkan_device(&backend);
            let params = LlamaModelParams::default()
                .with_n_gpu_layers(999)
                .with_devices(&[device.as_str()]);
            let shared = LlamaModel::load(&backend, moe_path(), &params).unwrap();
            let threads: Vec<_> = (0..4)
                .map(|i| {
                    let (backend, params, shared) =
                        (backend.clone(), params.clone(), shared.clone());
                    std::thread::spawn(move || {
                        // Two threads share a model, two load their own.
                        let model = if i % 2 == 0 {
                            shared
                        } else {
                            LlamaModel::load(&backend, moe_path(), &params).unwrap()
                        };
                        (0..3)
                            .map(|_| run(&model, &common_device(&model)).0)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for t in threads {
                for text in t.join().unwrap() {
                    assert_eq!(text, DEMO_CONTINUATION);
                }
            }
            eprintln!("four threads on {device}: every text as alone");
        },
    );
}

/// The device a model's weights went to.
fn common_device(model: &LlamaModel) -> String {
    model
        .placement()
        .buffers
        .iter()
        .find(|b| b.name.starts_with("Vulkan"))
        .map(|b| b.name.clone())
        .expect("weights on a Vulkan device")
}
