//! Many models from one server, over real HTTP on loopback: three small
//! models written by the crate (two MoE with different offload presets,
//! one dense) in a models folder, a Hugging Face cache and an Ollama store
//! laid out as those tools lay them out. Discovery and names, loading on
//! demand (one load for concurrent first requests), LRU unloading, Ollama's
//! `keep_alive`, the memory budget, unloading while a stream runs, a file
//! gone from disk.

mod support;

use llama_safe::demo::{DemoModel, DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::engine::EngineConfig;
use llama_safe::LlamaBackend;
use llama_safe_server::catalog::Sources;
use llama_safe_server::presets::Presets;
use llama_safe_server::{serve_models, KeepAlive, Models, ModelsConfig, ServerConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::call;

const MOE: &str = "tiny-moe";
const HF: &str = "acme/Tiny-MoE-GGUF:tiny-moe-q8_0";
const DENSE: &str = "tiny-dense:latest";

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The three sources, in a fresh folder named after `test`.
fn layout(test: &str) -> (PathBuf, Sources) {
    let root =
        std::env::temp_dir().join(format!("llama-safe-models-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let moe = std::fs::read(DemoModel::Moe.cached().unwrap()).unwrap();
    let dense = std::fs::read(DemoModel::Dense.cached().unwrap()).unwrap();
    write(&root.join("models/tiny-moe.gguf"), &moe);
    // The Hugging Face cache: the snapshot links into blobs/.
    let repo = root.join("hf/models--acme--Tiny-MoE-GGUF");
    write(&repo.join("blobs/5eed"), &moe);
    write(&repo.join("refs/main"), b"abc123");
    std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        "../../blobs/5eed",
        repo.join("snapshots/abc123/tiny-moe-q8_0.gguf"),
    )
    .unwrap();
    #[cfg(not(unix))]
    write(&repo.join("snapshots/abc123/tiny-moe-q8_0.gguf"), &moe);
    // Ollama's store: a manifest naming the model's blob.
    let hex = "d".repeat(64);
    write(&root.join(format!("ollama/blobs/sha256-{hex}")), &dense);
    write(
        &root.join("ollama/manifests/registry.ollama.ai/library/tiny-dense/latest"),
        format!(r#"{{"schemaVersion":2,"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{hex}","size":{}}}]}}"#, dense.len()).as_bytes(),
    );
    let sources = Sources::default()
        .with_dir(root.join("models"))
        .with_hf_cache(root.join("hf"))
        .with_ollama(root.join("ollama"));
    (root, sources)
}

/// Two MoE models with different offload, aliases.
fn presets() -> Presets {
    Presets::parse(
        &format!(
            r#"
            [defaults]
            ctx_size = 1024
            [models."{MOE}"]
            cpu_moe = true
            aliases = ["moe"]
            [models."{HF}"]
            n_cpu_moe = 2
            "#
        ),
        Path::new("models.toml"),
    )
    .unwrap()
}

struct Server {
    base: String,
    models: Arc<Models>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    root: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn start(test: &str, tune: impl FnOnce(ModelsConfig) -> ModelsConfig) -> Server {
    start_keyed(test, tune, ServerConfig::default()).await
}

async fn start_keyed(
    test: &str,
    tune: impl FnOnce(ModelsConfig) -> ModelsConfig,
    server: ServerConfig,
) -> Server {
    let (root, sources) = layout(test);
    let engine = EngineConfig::default()
        .with_n_ctx(1024)
        .with_n_parallel(2)
        .with_threads(1);
    let config = tune(
        ModelsConfig::new(sources)
            .with_presets(presets())
            .with_engine(engine)
            .with_max_resident(2),
    );
    let models = Models::new(&LlamaBackend::init(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let served = models.clone();
    tokio::spawn(async move {
        serve_models(listener, served, &server, async {
            let _ = rx.await;
        })
        .await
    });
    Server {
        base,
        models,
        stop: Some(tx),
        root,
    }
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    call(base, path, None, Some(body)).await
}

async fn get(base: &str, path: &str) -> Value {
    call(base, path, None, None).await.1
}

async fn complete(base: &str, model: &str) -> (u16, Value) {
    post(
        base,
        "/v1/completions",
        json!({"model": model, "prompt": DEMO_PROMPT, "temperature": 0}),
    )
    .await
}

/// The names `/api/ps` lists.
async fn ps(base: &str) -> Vec<String> {
    let mut names: Vec<String> = get(base, "/api/ps").await["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Waits (up to 5 s) for `/api/ps` to list `want`.
async fn ps_becomes(base: &str, want: &[&str]) {
    let start = Instant::now();
    loop {
        let now = ps(base).await;
        if now == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "ps is {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_names_loading_on_demand_and_lru() {
    let s = start("lru", |c| c).await;
    let b = &s.base;
    let listed = get(b, "/v1/models").await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [HF, DENSE, MOE]);
    assert!(listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["loaded"] == false && m["family"] == "llama"));
    let tags = get(b, "/api/tags").await;
    assert_eq!(tags["models"].as_array().unwrap().len(), 3);
    assert!(
        ps(b).await.is_empty(),
        "nothing loads before a request names it"
    );

    // On demand, each with its own offload preset; an alias works.
    let (status, v) = complete(b, "moe").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], DEMO_CONTINUATION);
    assert_eq!(complete(b, HF).await.0, 200);
    let moved: Vec<(String, usize)> = s
        .models
        .loaded()
        .iter()
        .map(|l| {
            (
                l.state.model_name.clone(),
                l.state.model.placement().moved.len(),
            )
        })
        .collect();
    assert!(
        moved.contains(&(MOE.to_string(), 12)) && moved.contains(&(HF.to_string(), 6)),
        "{moved:?}"
    );
    ps_becomes(b, &[HF, MOE]).await;
    // A third model: the least recently used idle one (the first) goes.
    let (status, v) = post(b, "/api/chat", json!({"model": DENSE, "messages": [{"role": "user", "content": DEMO_PROMPT}], "stream": false, "options": {"temperature": 0}})).await;
    assert_eq!(status, 200, "{v}");
    ps_becomes(b, &[HF, DENSE]).await;
    let v = get(b, "/v1/models").await;
    let loaded: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["loaded"] == true)
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(loaded, [HF, DENSE]);
    // /api/show for a model not loaded reads its header.
    let (status, shown) = post(b, "/api/show", json!({"model": MOE})).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["model_info"]["general.architecture"], "llama");
    assert_eq!(ps(b).await, [HF, DENSE], "show loads nothing");
    // /metrics: one family each, samples labelled by model.
    let text = reqwest::get(format!("{b}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.matches("# TYPE llama_kv_cells gauge").count(), 1);
    assert!(
        text.contains(&format!("llama_kv_cells{{model=\"{DENSE}\"}}")),
        "{text}"
    );
    // Unknown names, explicit load and unload.
    let (status, v) = complete(b, "nope").await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (404, Some("model")),
        "{v}"
    );
    let (status, v) = complete(b, "default").await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        post(b, "/models/unload", json!({"model": DENSE})).await.0,
        200
    );
    ps_becomes(b, &[HF]).await;
    assert_eq!(post(b, "/models/load", json!({"model": MOE})).await.0, 200);
    ps_becomes(b, &[HF, MOE]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_forever_and_ollama_load_unload() {
    let s = start("keepalive", |c| {
        c.with_keep_alive(KeepAlive::For(Duration::from_secs(60)))
    })
    .await;
    let b = &s.base;
    let body = |keep: Value| json!({"model": MOE, "prompt": DEMO_PROMPT, "stream": false, "keep_alive": keep, "options": {"temperature": 0}});
    let (status, v) = post(b, "/api/generate", body(json!(0))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"], DEMO_CONTINUATION);
    ps_becomes(b, &[]).await;
    assert_eq!(post(b, "/api/generate", body(json!(-1))).await.0, 200);
    let ps_v = get(b, "/api/ps").await;
    assert!(
        ps_v["models"][0]["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("21"),
        "{ps_v}"
    );
    // A duration: it stays, with an expiry in about that long.
    assert_eq!(
        post(
            b,
            "/api/generate",
            json!({"model": HF, "prompt": DEMO_PROMPT, "stream": false, "keep_alive": "10m"})
        )
        .await
        .0,
        200
    );
    ps_becomes(b, &[HF, MOE]).await;
    assert_eq!(post(b, "/api/generate", body(json!("soon"))).await.0, 400);
    // Ollama's load and unload: no prompt, keep_alive 0 unloads.
    let (status, v) = post(b, "/api/generate", json!({"model": HF, "keep_alive": 0})).await;
    assert_eq!(
        (status, v["done_reason"].as_str()),
        (200, Some("unload")),
        "{v}"
    );
    ps_becomes(b, &[MOE]).await;
    let (status, v) = post(b, "/api/chat", json!({"model": DENSE, "messages": []})).await;
    assert_eq!(
        (status, v["done_reason"].as_str()),
        (200, Some("load")),
        "{v}"
    );
    ps_becomes(b, &[DENSE, MOE]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_load_once() {
    let s = start("concurrent", |c| c).await;
    let before = s.models.loads();
    let b = s.base.clone();
    let answers = futures_util::future::join_all((0..6).map(|_| {
        let b = b.clone();
        async move { complete(&b, DENSE).await }
    }))
    .await;
    for (status, v) in &answers {
        assert_eq!(*status, 200, "{v}");
    }
    assert_eq!(
        s.models.loads() - before,
        1,
        "one load for six first requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_refuses_with_503_instead_of_loading() {
    // Too small for any one model.
    let s = start("budget-small", |c| c.with_memory_budget(1 << 10)).await;
    let (status, v) = complete(&s.base, MOE).await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than the whole budget"),
        "{v}"
    );
    assert!(ps(&s.base).await.is_empty());
    drop(s);

    // Room for one: a second model waits its turn while the first is in
    // use (a stream runs), then replaces it once it is idle.
    let probe = start("budget-probe", |c| c).await;
    complete(&probe.base, MOE).await;
    let one = probe.models.loaded()[0].planned_bytes;
    drop(probe);
    let s = start("budget-one", |c| c.with_memory_budget(one + one / 2)).await;
    let b = s.base.clone();
    let stream = tokio::spawn({
        let b = b.clone();
        async move {
            post(&b, "/v1/completions", json!({"model": MOE, "prompt": DEMO_PROMPT, "temperature": 0, "max_tokens": 600, "logit_bias": {"2": -100}})).await
        }
    });
    // Until the stream has its model, then ask for another.
    let start_wait = Instant::now();
    while ps(&b).await.is_empty() {
        assert!(start_wait.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, v) = complete(&b, HF).await;
    if !stream.is_finished() {
        assert_eq!(status, 503, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("budget"),
            "{v}"
        );
    }
    let (status, v) = stream.await.unwrap();
    assert_eq!(status, 200, "{v}");
    // The stream's handler lets go of its model a moment after the client
    // has the last byte: until then the budget still counts it (seen as one
    // 503 on a loaded machine). Within a few seconds the load must go through.
    let start_wait = Instant::now();
    loop {
        let (status, v) = complete(&b, HF).await;
        if status == 200 {
            break;
        }
        assert!(
            status == 503 && start_wait.elapsed() < Duration::from_secs(10),
            "{status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ps_becomes(&b, &[HF]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_waits_for_the_stream_and_a_vanished_file_is_an_error() {
    let s = start("unload", |c| c).await;
    let b = s.base.clone();
    let stream = tokio::spawn({
        let b = b.clone();
        async move {
            post(&b, "/v1/completions", json!({"model": MOE, "prompt": DEMO_PROMPT, "temperature": 0, "max_tokens": 400, "logit_bias": {"2": -100}})).await
        }
    });
    let start_wait = Instant::now();
    while ps(&b).await.is_empty() {
        assert!(start_wait.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, v) = post(&b, "/models/unload", json!({"model": MOE})).await;
    assert_eq!((status, v["loaded"].as_bool()), (200, Some(true)), "{v}");
    let (status, v) = stream.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["usage"]["completion_tokens"], 400,
        "the stream ran to its end"
    );
    ps_becomes(&b, &[]).await;

    // The file goes away: the next load is an error, the server lives.
    std::fs::remove_file(s.root.join("models/tiny-moe.gguf")).unwrap();
    let (status, v) = complete(&b, MOE).await;
    assert!(status == 404 || status == 500, "{status} {v}");
    assert!(v["error"]["message"].as_str().is_some(), "{v}");
    assert_eq!(complete(&b, DENSE).await.0, 200);
}

/// Regression (audit round 3): any inference key could load or unload a
/// model other clients were using; `/models/unload` of a name that does not
/// exist answered 200; `keep_alive: ""` unloaded at once and `"-inf"` meant
/// forever while `"inf"` was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_needs_the_admin_key_and_names_that_exist() {
    let keys = ServerConfig::default()
        .with_api_key("client")
        .with_admin_api_key("admin");
    let s = start_keyed("admin", |c| c, keys).await;
    let b = &s.base;
    let as_ =
        |key: &'static str, path: &'static str, body: Value| call(b, path, Some(key), Some(body));
    let load = json!({"model": MOE});
    let (status, v) = as_("client", "/models/load", load.clone()).await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--admin-api-key"),
        "{v}"
    );
    assert_eq!(as_("client", "/models/unload", load.clone()).await.0, 403);
    assert_eq!(as_("admin", "/models/load", load.clone()).await.0, 200);
    // Ollama's unload and `keep_alive` change the model for everyone too.
    let unload = json!({"model": MOE, "keep_alive": 0});
    assert_eq!(as_("client", "/api/generate", unload.clone()).await.0, 403);
    let gen = |keep: Value| json!({"model": MOE, "prompt": DEMO_PROMPT, "stream": false, "keep_alive": keep});
    assert_eq!(as_("client", "/api/generate", gen(json!(0))).await.0, 403);
    assert_eq!(as_("client", "/api/chat", json!({"model": MOE, "messages": [{"role": "user", "content": "hi"}], "stream": false, "keep_alive": "5m"})).await.0, 403);
    // The inference key still infers, and still loads on demand.
    let (status, v) = as_(
        "client",
        "/v1/completions",
        json!({"model": DENSE, "prompt": DEMO_PROMPT, "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Bad keep-alives are refused, not read as "now" or "forever".
    for bad in ["", "inf", "-inf", "NaN"] {
        let (status, v) = as_("admin", "/api/generate", gen(json!(bad))).await;
        assert_eq!(status, 400, "{bad:?}: {v}");
        assert_eq!(v["error"]["param"], "keep_alive");
    }
    assert!(
        s.models.is_loaded(MOE),
        "a refused keep_alive unloaded nothing"
    );
    // Unloading a name that is no model is 404, as loading one is.
    for path in ["/models/unload", "/models/load"] {
        let (status, v) = as_("admin", path, json!({"model": "no-such-model"})).await;
        assert_eq!(status, 404, "{path}: {v}");
    }
    let (status, v) = as_("admin", "/models/unload", load).await;
    assert_eq!((status, v["success"].as_bool()), (200, Some(true)), "{v}");
    drop(s);

    // Inference keys and no admin key: nobody manages the models.
    let s = start_keyed(
        "noadmin",
        |c| c,
        ServerConfig::default().with_api_key("client"),
    )
    .await;
    let (status, v) = call(
        &s.base,
        "/models/load",
        Some("client"),
        Some(json!({"model": MOE})),
    )
    .await;
    assert_eq!(status, 403, "{v}");
}
