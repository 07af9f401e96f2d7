//! Bad input gives a typed error with context; nothing panics or aborts.

mod common;

use common::*;
use llama_safe::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn load(path: &std::path::Path) -> Result<LlamaModel> {
    let backend = LlamaBackend::init();
    LlamaModel::load(&backend, path, &LlamaModelParams::default())
}

#[test]
fn missing_path() {
    let path = scratch("missing").join("nope.gguf");
    match load(&path) {
        Err(Error::NotFound { path: p }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
}

#[test]
fn directory() {
    let dir = scratch("dir");
    assert!(matches!(load(&dir), Err(Error::IsDirectory { .. })));
}

#[cfg(target_os = "linux")]
#[test]
fn unreadable_file() {
    // Opening succeeds but reading fails (even for root), like a bad disk.
    let path = std::path::Path::new("/proc/self/mem");
    assert!(
        matches!(load(path), Err(Error::Unreadable { .. })),
        "{:?}",
        load(path)
    );
}

#[test]
fn not_gguf() {
    let dir = scratch("notgguf");
    for (name, bytes) in [
        ("text.gguf", &b"hello, world"[..]),
        ("empty.gguf", &b""[..]),
        ("short.gguf", &b"GG"[..]),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(load(&path), Err(Error::NotGguf { .. })), "{name}");
    }
}

#[test]
fn corrupt_header_is_invalid_gguf_with_reason() {
    let path = scratch("corrupt").join("corrupt.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    match load(&path) {
        Err(Error::InvalidGguf { reason, .. }) => assert!(reason.contains("tensors"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_gguf_reports_llama_cpps_reason() {
    let bytes = std::fs::read(moe_path()).unwrap();
    let path = scratch("truncated").join("truncated.gguf");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    match load(&path) {
        Err(Error::Load { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(reason.contains("not within the file bounds"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_device_is_an_error_at_load() {
    let params = LlamaModelParams::default()
        .with_tensor_override("ffn_up_exps", OverrideTarget::Device("CUDA7".into()));
    let backend = LlamaBackend::init();
    match LlamaModel::load(&backend, moe_path(), &params) {
        Err(Error::UnknownDevice { name, available }) => {
            assert_eq!(name, "CUDA7");
            assert!(available.iter().any(|d| d == "CPU"), "{available:?}");
        }
        other => panic!("{other:?}"),
    }
    let params = LlamaModelParams::default().with_devices(&["NOPE0"]);
    assert!(matches!(
        LlamaModel::load(&backend, moe_path(), &params),
        Err(Error::UnknownDevice { .. })
    ));
}

#[test]
fn impossible_parameters() {
    assert!(matches!(
        LlamaModelParams::default()
            .with_tensor_split(&[-1.0])
            .check(),
        Err(Error::InvalidParameter {
            name: "tensor_split",
            ..
        })
    ));
    assert!(LlamaModelParams::default()
        .with_tensor_split(&[1.0; 1000])
        .check()
        .is_err());
    assert!(LlamaModelParams::default()
        .with_kv_override(&"k".repeat(200), KvValue::Bool(true))
        .check()
        .is_err());
    assert!(LlamaModelParams::default()
        .with_kv_override("a.b", KvValue::Str("s".repeat(200)))
        .check()
        .is_err());
    // Builders stay chainable; the first mistake comes back from the load,
    // the plan and the fit, whatever is chained after it.
    let bad = LlamaModelParams::default()
        .with_tensor_override("(", OverrideTarget::Cpu)
        .with_cpu_moe_all()
        .with_tensor_override("blk\\.[", OverrideTarget::Cpu);
    assert!(
        matches!(bad.check(), Err(Error::InvalidPattern { ref pattern, .. }) if pattern == "(")
    );
    let backend = LlamaBackend::init();
    assert!(matches!(
        LlamaModel::load(&backend, moe_path(), &bad),
        Err(Error::InvalidPattern { .. })
    ));
    assert!(matches!(
        bad.plan(moe_path()),
        Err(Error::InvalidPattern { .. })
    ));
    assert!(matches!(
        bad.fit(
            moe_path(),
            &ContextParams::default(),
            &FitOptions::default()
        ),
        Err(Error::InvalidPattern { .. })
    ));
}

#[test]
fn progress_callback_false_cancels_the_load() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let params = LlamaModelParams::default().with_progress_callback(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        false
    });
    let backend = LlamaBackend::init();
    assert!(matches!(
        LlamaModel::load(&backend, moe_path(), &params),
        Err(Error::LoadCancelled { .. })
    ));
    assert!(calls.load(Ordering::SeqCst) >= 1);
}

#[test]
fn progress_callback_panic_cancels_the_load_and_resumes() {
    let params = LlamaModelParams::default().with_progress_callback(|p| {
        if p > 0.0 {
            panic!("boom in the progress callback");
        }
        true
    });
    let backend = LlamaBackend::init();
    // The load is cancelled inside llama.cpp, then the panic goes on
    // unwinding from `load`, with its own payload.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        LlamaModel::load(&backend, moe_path(), &params)
    }))
    .expect_err("the callback's panic resumes from load");
    assert_eq!(
        panicked.downcast_ref::<&str>(),
        Some(&"boom in the progress callback")
    );
    // The params are still usable afterwards.
    let ok = LlamaModelParams::default().with_progress_callback(|_| true);
    assert!(LlamaModel::load(&backend, moe_path(), &ok).is_ok());
}

#[test]
fn prompt_longer_than_the_context() {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, moe_path(), &LlamaModelParams::default()).unwrap();
    let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(16)).unwrap();
    let prompt = "Once upon a time ".repeat(300);
    match ctx.generate(&prompt, &GenerateOptions::default()) {
        Err(Error::PromptTooLong { tokens, n_ctx }) => {
            assert!(tokens > n_ctx as usize);
            assert_eq!(n_ctx, ctx.n_ctx());
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("accepted a prompt longer than the context"),
    }
}

#[test]
fn invalid_grammar() {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, moe_path(), &LlamaModelParams::default()).unwrap();
    let options = SamplingOptions::greedy().with_grammar("root ::= (");
    assert!(matches!(
        Sampler::new(&model, &options),
        Err(Error::Grammar { .. })
    ));
}

/// One mistake, one error, whatever the entry point: a prompt of no tokens
/// is `Error::EmptyPrompt` (kind `InvalidInput`) for `generate_tokens`,
/// `decode` and the engine. (An empty text is not: tokenized as a prompt it
/// is the BOS token, from which a model generates.)
#[test]
fn an_empty_prompt_is_one_error_everywhere() {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, moe_path(), &LlamaModelParams::default()).unwrap();
    let params = ContextParams::default().with_n_ctx(128);
    let mut ctx = LlamaContext::new(&model, &params).unwrap();
    let generate = ctx
        .generate_tokens(&[], &GenerateOptions::default())
        .map(|_| ());
    let decode = ctx.decode(&[]);
    let engine = llama_safe::engine::Engine::new(
        &model,
        llama_safe::engine::EngineConfig::default().with_n_ctx(128),
    )
    .unwrap()
    .submit(llama_safe::engine::Request::new(
        Vec::new(),
        GenerateOptions::default(),
    ))
    .map(|_| ());
    for (entry, result) in [
        ("generate_tokens", generate),
        ("decode", decode),
        ("engine", engine),
    ] {
        match result {
            Err(e @ Error::EmptyPrompt) => assert_eq!(e.kind(), ErrorKind::InvalidInput),
            other => panic!("{entry}: expected EmptyPrompt, got {other:?}"),
        }
    }
}

/// Regression (audit round 3): a 4 GiB sparse `.gguf` holding a 0.5 MB
/// model loaded with 4 GB resident (llama.cpp maps the whole file and
/// populates the mapping). Refused before the mapping, naming the extent;
/// read into buffers (LoadMode::Read) only the tensors are read, so it loads.
#[test]
fn a_file_much_longer_than_its_tensors_is_not_mapped() {
    let path = scratch("sparse").join("sparse.gguf");
    std::fs::copy(moe_path(), &path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    match load(&path) {
        Err(Error::InvalidModel { reason, .. }) => {
            assert!(reason.contains("tensors end at byte"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let read = LlamaModelParams::default().with_load_mode(LoadMode::Read);
    let model = LlamaModel::load(&LlamaBackend::init(), &path, &read).unwrap();
    assert_eq!(
        greedy_text(&model, demo::DEMO_PROMPT),
        demo::DEMO_CONTINUATION
    );
    drop(model);
    std::fs::remove_file(&path).unwrap();
}

/// A FIFO named like a model would block the open: refused unread.
#[cfg(unix)]
#[test]
fn a_fifo_is_not_opened() {
    let path = scratch("fifo").join("fifo.gguf");
    let _ = std::fs::remove_file(&path);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo reads it and returns a status.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(
        matches!(load(&path), Err(Error::Unreadable { .. })),
        "{:?}",
        load(&path)
    );
    std::fs::remove_file(&path).unwrap();
}
