//! The GPU path on a real ggml GPU backend: Vulkan (in CI, on Mesa's
//! software device, lavapipe, made visible with `GGML_VK_VISIBLE_DEVICES=0`).
//! Non-expert weights go to the device, the expert tensors the overrides
//! move stay in host memory, exactly the planned bytes leave the device,
//! and the text does not change. Built and run with `--features vulkan`.

mod common;

use common::*;
use llama_safe::context::{device_bytes, device_totals};
use llama_safe::demo::{DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::*;

/// One test at a time: two of these tests running at once on two threads,
/// each with its own model and context on the Vulkan device, ended the
/// process with SIGSEGV on lavapipe (Mesa 25.0.7) in every run tried; run
/// one after the other they pass. Not yet known whether ggml-vulkan or the
/// driver is at fault: until it is, the tests take this lock.
static DEVICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn device_lock() -> std::sync::MutexGuard<'static, ()> {
    DEVICE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first Vulkan device's name.
fn vulkan_device(backend: &LlamaBackend) -> String {
    backend
        .devices()
        .into_iter()
        .find(|d| d.name.starts_with("Vulkan"))
        .map(|d| d.name)
        .expect(
            "no Vulkan device: on a machine with only a software device (lavapipe), \
             set GGML_VK_VISIBLE_DEVICES=0",
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
    let backend = LlamaBackend::init();
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
    let backend = LlamaBackend::init();
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
    let backend = LlamaBackend::init();
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
            .with_flash_attention(Some(true)),
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
