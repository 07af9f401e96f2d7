//! llama.cpp's RPC backend on loopback (feature `rpc`): an `rpc_server`
//! process serves this machine's CPU; the demo model loads with its layers on
//! the remote device (and, separately, with the experts kept local) and gives
//! the same greedy sentence as a local run; for every model family and
//! `n_cpu_moe`, the bytes on the device (weights, KV cache, compute buffers)
//! are what `memory_plan`'s dry run predicted, and `fit_n_cpu_moe` picks
//! `n` from them. Bad endpoints are typed errors within the timeout, never a
//! hang or an abort.
//!
//! Needs the example built in the same profile first:
//! `cargo build --features rpc --example rpc_server` (`.ci/run` does it).

#[path = "../llama-safe/tests/common/mod.rs"]
mod common;

use common::greedy_text;
use llama_safe::demo::{DemoModel, DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::*;
use llama_workspace::bench::process::{self, RpcServer};
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn rpc_server_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("rpc_server");
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build --features rpc --example rpc_server` (same profile)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    process::free_port().unwrap()
}

fn start_server() -> (RpcServer, String) {
    let server = RpcServer::start(
        &rpc_server_exe(),
        1,
        Some(std::path::Path::new("/tmp/rpc-server.log")),
    )
    .unwrap();
    let endpoint = server.endpoint.clone();
    (server, endpoint)
}

#[test]
fn bad_endpoints_are_typed_errors_within_the_timeout() {
    let backend = LlamaBackend::init();
    for endpoint in [
        "nonsense",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        ":50052",
        "::1:50052",
    ] {
        assert!(
            matches!(
                backend.add_rpc_server(endpoint),
                Err(Error::InvalidParameter {
                    name: "endpoint",
                    ..
                })
            ),
            "{endpoint}"
        );
    }
    let timeout = Duration::from_secs(2);
    // Nothing listening.
    let closed = format!("127.0.0.1:{}", free_port());
    let start = Instant::now();
    assert!(matches!(
        backend.add_rpc_server_with_timeout(&closed, timeout),
        Err(Error::Rpc { .. })
    ));
    assert!(start.elapsed() < timeout + Duration::from_secs(1));
    // Something listening that is not an RPC server: one that answers
    // garbage, one that says nothing.
    for garbage in [true, false] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                if garbage {
                    let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                } else {
                    std::thread::sleep(Duration::from_secs(4));
                }
            }
        });
        let start = Instant::now();
        let err = backend
            .add_rpc_server_with_timeout(&endpoint, timeout)
            .unwrap_err();
        assert!(matches!(err, Error::Rpc { .. }), "{err}");
        assert!(start.elapsed() < timeout + Duration::from_secs(1), "{err}");
    }
}

#[test]
fn layers_on_an_rpc_device_give_the_local_sentence_and_fit_predicts_its_bytes() {
    // Declared first, so it is dropped (killed) last: llama.cpp aborts the
    // process if its RPC server goes away while a model still uses it.
    let (_server, endpoint) = start_server();
    let backend = LlamaBackend::init();
    let local_model = LlamaModel::load(&backend, common::moe_path(), &Default::default()).unwrap();
    let local = greedy_text(&local_model, DEMO_PROMPT);
    drop(local_model);
    assert_eq!(local, DEMO_CONTINUATION);

    let remote = backend.add_rpc_server(&endpoint).unwrap();
    assert!(!remote.is_empty());
    assert!(
        remote.iter().all(|d| d.name.starts_with("RPC")),
        "{remote:?}"
    );
    assert_eq!(
        backend.add_rpc_server(&endpoint).unwrap(),
        remote,
        "adding again gives the same devices"
    );
    assert!(backend.devices().iter().any(|d| d.name == remote[0].name));
    let rpc = remote[0].name.as_str();

    // Every layer on the remote device.
    let params = LlamaModelParams::default()
        .with_n_gpu_layers(999)
        .with_devices(&[rpc]);
    let on_rpc = LlamaModel::load(&backend, DemoModel::Moe.cached().unwrap(), &params).unwrap();
    let buffers = on_rpc.placement().bytes_by_buffer();
    assert!(buffers.keys().any(|k| k.starts_with("RPC")), "{buffers:?}");
    assert_eq!(greedy_text(&on_rpc, DEMO_PROMPT), local);
    drop(on_rpc);

    // The same, with the experts kept in local memory.
    let params = params.with_cpu_moe_all();
    let experts_local =
        LlamaModel::load(&backend, DemoModel::Moe.cached().unwrap(), &params).unwrap();
    assert_eq!(experts_local.placement().moved.len(), 12);
    assert!(experts_local
        .placement()
        .moved
        .iter()
        .all(|t| t.buffer_type.starts_with("CPU")));
    let buffers = experts_local.placement().bytes_by_buffer();
    assert!(buffers.keys().any(|k| k.starts_with("RPC")), "{buffers:?}");
    assert_eq!(greedy_text(&experts_local, DEMO_PROMPT), local);
    drop(experts_local);

    // In this test, not one of its own: a device stays registered for the
    // life of the process, and once its server is gone llama.cpp aborts the
    // next load that queries it; and two servers started at once could get
    // the same port from `free_port`.
    fit_predicts_the_bytes_on_the_rpc_device_for_every_family(&backend, rpc);
}

/// The RPC device stands in for a GPU: weights, KV cache and compute
/// buffers on it are what a dry run predicts, for each model family and
/// offload, and `fit_n_cpu_moe` picks n from those figures.
fn fit_predicts_the_bytes_on_the_rpc_device_for_every_family(backend: &LlamaBackend, rpc: &str) {
    let rpc = rpc.to_string();
    let params = LlamaModelParams::default()
        .with_n_gpu_layers(999)
        .with_devices(&[rpc.as_str()]);
    let ctx = ContextParams::default().with_n_ctx(256).with_threads(1);
    for family in llama_safe::demo::Family::ALL {
        let path = family.cached().unwrap();
        let mut device = Vec::new();
        for n in 0..=4 {
            let params = params.clone().with_n_cpu_moe(n);
            let predicted = params.memory_plan(&path, &ctx).unwrap();
            let model = LlamaModel::load(backend, &path, &params).unwrap();
            let real = LlamaContext::new(&model, &ctx)
                .unwrap()
                .memory_breakdown()
                .unwrap();
            let (p, r) = (
                context::device_bytes(&predicted, Some(&rpc)),
                context::device_bytes(&real, Some(&rpc)),
            );
            assert_eq!(
                p,
                r,
                "{} n_cpu_moe({n}): {predicted:?} vs {real:?}",
                family.name()
            );
            // Weights on the device are everything but the experts moved
            // and the token embeddings (llama.cpp keeps the input layer on
            // the host), give or take the buffer's alignment padding.
            let plan = params.plan(&path).unwrap();
            let embeddings: u64 = llama_safe::gguf::GgufFile::open(&path)
                .unwrap()
                .tensors()
                .iter()
                .filter(|t| t.name == "token_embd.weight")
                .map(|t| t.bytes)
                .sum();
            let weights = context::device_totals(&real, Some(&rpc)).model_bytes;
            let expected = plan.total_bytes - plan.moved_bytes() - embeddings;
            assert!(
                weights >= expected && weights - expected <= 32 * 64,
                "{}: {weights} bytes of weights on the device, {expected} expected",
                family.name()
            );
            device.push(r);
        }
        assert!(device.windows(2).all(|w| w[1] <= w[0]), "{device:?}");
        assert!(device[4] < device[0], "{}: {device:?}", family.name());
        // A budget of exactly the bytes at n = 2 picks the smallest n that
        // fits it; one byte less needs more blocks on the host.
        let fit = params
            .fit_n_cpu_moe(&path, &ctx, device[2], Some(&rpc))
            .unwrap();
        let smallest = device.iter().position(|&d| d <= device[2]).unwrap() as u32;
        assert_eq!(fit.n_cpu_moe, smallest, "{}", family.name());
        assert_eq!(fit.device_bytes, device[smallest as usize]);
        match params.fit_n_cpu_moe(&path, &ctx, device[4] - 1, Some(&rpc)) {
            Err(Error::BudgetTooSmall { needed, .. }) => assert_eq!(needed, device[4]),
            other => panic!("{}: {other:?}", family.name()),
        }
    }
}
