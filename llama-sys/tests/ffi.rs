//! The raw API against the pinned llama.cpp: backend, devices, defaults and
//! the GGUF reader, with files written by the test itself.

use llama_safe_sys::*;
use std::ffi::{CStr, CString};
use std::io::Write;
use std::sync::Once;

fn init() {
    static INIT: Once = Once::new();
    // SAFETY: llama_backend_init may be called once per process; Once ensures it.
    INIT.call_once(|| unsafe { llama_backend_init() });
}

#[test]
fn system_info_is_not_empty() {
    init();
    // SAFETY: returns a static NUL-terminated string owned by llama.cpp.
    let info = unsafe { CStr::from_ptr(llama_print_system_info()) };
    let info = info.to_str().expect("utf-8");
    assert!(!info.trim().is_empty());
    assert!(info.contains("CPU"), "system info: {info}");
}

#[test]
fn cpu_device_is_enumerated() {
    init();
    // SAFETY: plain queries of the backend registry; the names are static strings.
    let names: Vec<(String, u32)> = unsafe {
        (0..ggml_backend_dev_count())
            .map(|i| {
                let dev = ggml_backend_dev_get(i);
                assert!(!dev.is_null());
                let name = CStr::from_ptr(ggml_backend_dev_name(dev))
                    .to_string_lossy()
                    .into_owned();
                (name, ggml_backend_dev_type(dev))
            })
            .collect()
    };
    assert!(
        names
            .iter()
            .any(|(_, t)| *t == GGML_BACKEND_DEVICE_TYPE_CPU),
        "devices: {names:?}"
    );
    // SAFETY: returns a static buffer type owned by ggml.
    let cpu = unsafe { ggml_backend_cpu_buffer_type() };
    assert!(!cpu.is_null());
    // SAFETY: cpu is a valid buffer type; its name is a static string.
    let name = unsafe { CStr::from_ptr(ggml_backend_buft_name(cpu)) };
    assert_eq!(name.to_str().unwrap(), "CPU");
}

#[test]
fn default_params_hold_upstream_defaults() {
    // SAFETY: returns a plain struct by value.
    let m = unsafe { llama_model_default_params() };
    assert!(m.devices.is_null());
    assert!(m.tensor_buft_overrides.is_null());
    assert_eq!(m.n_gpu_layers, -1, "upstream default: all layers (-1)");
    assert_eq!(m.split_mode, LLAMA_SPLIT_MODE_LAYER);
    assert_eq!(m.main_gpu, 0);
    assert!(!m.vocab_only);
    assert!(m.use_extra_bufts);
    assert!(!m.no_alloc);
    // SAFETY: returns a plain struct by value.
    let c = unsafe { llama_context_default_params() };
    assert_eq!(c.n_ctx, 512);
    assert_eq!(c.n_batch, 2048);
    assert_eq!(c.n_ubatch, 512);
    assert_eq!(c.n_seq_max, 1);
    assert!(!c.embeddings);
    assert!(c.offload_kqv);
}

#[test]
fn override_limit_is_positive() {
    // SAFETY: pure function.
    assert!(unsafe { llama_max_tensor_buft_overrides() } > 0);
    // SAFETY: pure function.
    assert!(unsafe { llama_max_devices() } > 0);
}

#[test]
fn gguf_written_here_reads_back() {
    // A minimal valid GGUF v3: magic, version, 0 tensors, 2 key/values.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"GGUF");
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes()); // tensors
    bytes.extend_from_slice(&2u64.to_le_bytes()); // key/values
    let key = |b: &mut Vec<u8>, k: &str| {
        b.extend_from_slice(&(k.len() as u64).to_le_bytes());
        b.extend_from_slice(k.as_bytes());
    };
    key(&mut bytes, "general.architecture");
    bytes.extend_from_slice(&8u32.to_le_bytes()); // GGUF_TYPE_STRING
    key(&mut bytes, "llama");
    key(&mut bytes, "llama.block_count");
    bytes.extend_from_slice(&4u32.to_le_bytes()); // GGUF_TYPE_UINT32
    bytes.extend_from_slice(&7u32.to_le_bytes());

    let dir = tempdir();
    let path = dir.join("tiny.gguf");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    let params = gguf_init_params {
        no_alloc: true,
        ctx: std::ptr::null_mut(),
    };
    // SAFETY: c_path is a valid C string; params asks for no tensor data.
    let ctx = unsafe { gguf_init_from_file(c_path.as_ptr(), params) };
    assert!(!ctx.is_null(), "gguf rejected its own kind of file");
    // SAFETY: ctx is a live gguf context until gguf_free below; keys are C strings.
    unsafe {
        assert_eq!(gguf_get_version(ctx), 3);
        assert_eq!(gguf_get_n_tensors(ctx), 0);
        assert_eq!(gguf_get_n_kv(ctx), 2);
        let arch = gguf_find_key(ctx, c"general.architecture".as_ptr());
        assert!(arch >= 0);
        let value = CStr::from_ptr(gguf_get_val_str(ctx, arch));
        assert_eq!(value.to_str().unwrap(), "llama");
        let blocks = gguf_find_key(ctx, c"llama.block_count".as_ptr());
        assert_eq!(gguf_get_val_u32(ctx, blocks), 7);
        assert_eq!(gguf_find_key(ctx, c"missing.key".as_ptr()), -1);
        gguf_free(ctx);
    }
}

#[test]
fn junk_file_is_rejected_without_crashing() {
    let dir = tempdir();
    for (name, bytes) in [
        ("junk.gguf", b"this is not a gguf file at all".to_vec()),
        ("empty.gguf", Vec::new()),
        // right magic, absurd tensor count
        (
            "bad-count.gguf",
            [
                b"GGUF".as_slice(),
                &3u32.to_le_bytes(),
                &u64::MAX.to_le_bytes(),
                &0u64.to_le_bytes(),
            ]
            .concat(),
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let c_path = CString::new(path.to_str().unwrap()).unwrap();
        let params = gguf_init_params {
            no_alloc: true,
            ctx: std::ptr::null_mut(),
        };
        // SAFETY: c_path is a valid C string; a NULL result is the documented failure.
        let ctx = unsafe { gguf_init_from_file(c_path.as_ptr(), params) };
        assert!(ctx.is_null(), "{name} was accepted");
    }
}

#[test]
fn regex_shim_has_std_regex_semantics() {
    let check = |p: &CStr| {
        let mut err = [0 as std::ffi::c_char; 256];
        // SAFETY: p is a C string and err a writable buffer of the given length.
        unsafe { llama_sys_regex_check(p.as_ptr(), err.as_mut_ptr(), err.len()) }
    };
    assert_eq!(check(c"blk\\.\\d+\\.ffn_(up|down)_exps"), 1);
    assert_eq!(check(c"ffn_(up"), 0);
    assert_eq!(check(c"[z-a]"), 0);
    let search = |p: &CStr, t: &CStr| {
        // SAFETY: both are C strings.
        unsafe { llama_sys_regex_search(p.as_ptr(), t.as_ptr()) }
    };
    assert_eq!(search(c"blk\\.1\\.ffn", c"blk.1.ffn_up_exps.weight"), 1);
    assert_eq!(search(c"blk\\.1\\.ffn", c"blk.11.ffn_up_exps.weight"), 0);
    assert_eq!(search(c"(", c"x"), -1);
}

/// A fresh folder under the target directory for this test run.
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "llama-sys-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
