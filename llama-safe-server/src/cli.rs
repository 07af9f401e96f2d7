//! The `llama-safe-server` command line (the `cli` feature): llama.cpp's
//! model and offload flags (`--model`, `--cpu-moe`, `--n-cpu-moe`,
//! `--device`, `--fit`, ...) and the server's own.
//!
//! ```text
//! llama-safe-server                                         # the demo model on :8080
//! llama-safe-server --model qwen3-30b-a3b-q4_k_m.gguf --cpu-moe --parallel 4 --api-key "$KEY"
//! curl -N localhost:8080/api/generate -d '{"prompt": "Once upon a time", "temperature": 0}'
//! ```
//!
//! SIGINT or SIGTERM stops taking connections, answers queued requests 503
//! and lets the answers in flight finish within `--shutdown-timeout`.

use crate::{serve_models, AppState, ServerConfig, Timeouts};
use clap::Parser;
use llama_safe::cli::{run_main, FitArgs, ModelArgs};
use llama_safe::engine::EngineConfig;
use llama_safe::*;

/// The flags.
#[derive(Parser, Debug)]
#[command(
    name = "llama-safe-server",
    version,
    about = "Serve a GGUF model over HTTP: OpenAI's, Ollama's and Anthropic's APIs, MoE offload included"
)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests generating at the same time (sequences of the one context,
    /// decoded together in one batch per step).
    #[arg(long, short = 'n', default_value_t = 4)]
    parallel: u32,
    /// Requests that may wait for room before the server answers 429.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// KV cells of the context: each of the `--parallel` sequences gets
    /// its share (prompt and answer), or all of them with `--kv-unified`.
    #[arg(long, short = 'c', default_value_t = 4096)]
    ctx_size: u32,
    /// Most tokens per decode (prompts are read in chunks of this size).
    #[arg(long, short = 'b', default_value_t = 512)]
    batch_size: u32,
    /// Reuse the KV cells of a finished request for a prompt that starts
    /// with the same tokens (on by default).
    #[arg(long)]
    no_prompt_cache: bool,
    /// One KV cache shared by all parallel sequences: a request may take
    /// all of `--ctx-size`, but every token attends over the cells of the
    /// others (and of the prompt cache) too. Without it, as llama-server
    /// with `-np`, each sequence has a cache of its own of `--ctx-size /
    /// --parallel` cells (rounded up to 256), the most one request takes.
    #[arg(long, visible_alias = "kvu")]
    kv_unified: bool,
    /// Seconds a client has to send a request's headers (and, on a
    /// kept-alive connection, the next request's): slow or idle clients are
    /// closed.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a client has to send a request's body (408 otherwise).
    #[arg(long, default_value_t = 30.0)]
    body_timeout: f64,
    /// Seconds the streams in flight may take to finish after SIGINT or
    /// SIGTERM; requests still queued get 503 at once.
    #[arg(long, default_value_t = 10.0)]
    shutdown_timeout: f64,
    /// The model name clients use (default: the file name without `.gguf`).
    #[arg(long)]
    alias: Option<String>,
    /// An API key clients must send (`Authorization: Bearer KEY`, or
    /// `x-api-key`); repeat for several. Also from LLAMA_SAFE_API_KEY
    /// (comma-separated). Every route but /health then needs one. An empty
    /// key (an unset variable in a script) is an error, never an open
    /// server.
    #[arg(long = "api-key", value_delimiter = ',', allow_hyphen_values = true)]
    api_keys: Vec<String>,
    /// The key that may also manage models (`/models/load`,
    /// `/models/unload`, Ollama's unload, `keep_alive`). Also from
    /// LLAMA_SAFE_ADMIN_API_KEY. Without it, a server with --api-key lets
    /// no request manage models; one with no key at all lets every one.
    #[arg(long = "admin-api-key", allow_hyphen_values = true)]
    admin_api_key: Option<String>,
    /// Serve /metrics without a key even when keys are required.
    #[arg(long)]
    open_metrics: bool,
    /// The largest request body, in bytes (413 beyond). Default: 2 MiB,
    /// or 32 MiB when a projector takes images.
    #[arg(long)]
    max_body_bytes: Option<usize>,
    #[command(flatten)]
    media: MediaFlags,
    #[command(flatten)]
    fit: FitArgs,
    #[command(flatten)]
    many: ManyArgs,
    #[command(flatten)]
    speculation: llama_safe::cli::SpeculationArgs,
}

/// Images and audio in requests (the `mtmd` feature).
#[derive(clap::Args, Debug)]
struct MediaFlags {
    /// The model's projector (`mmproj`) file: requests may then carry
    /// images (and audio, where the projector takes it). The demo model
    /// gets the demo projector without it.
    #[cfg(feature = "mtmd")]
    #[arg(long, value_name = "FILE")]
    mmproj: Option<std::path::PathBuf>,
    /// Run the projector on the host instead of the GPU.
    #[cfg(feature = "mtmd")]
    #[arg(long)]
    no_mmproj_offload: bool,
    /// No projector, not even the demo model's.
    #[cfg(feature = "mtmd")]
    #[arg(long, conflicts_with = "mmproj")]
    no_mmproj: bool,
}

/// The largest body by default: room for a few photos with a projector.
const MEDIA_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Serving many models, found where users keep them.
#[derive(clap::Args, Debug)]
struct ManyArgs {
    /// A folder of GGUF models to serve, each loaded when a request names
    /// it (repeatable; instead of --model).
    #[arg(long = "models-dir", value_name = "DIR")]
    models_dirs: Vec<std::path::PathBuf>,
    /// Serve the GGUF models of the Hugging Face hub cache too (default
    /// location: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
    hf_cache: Option<std::path::PathBuf>,
    /// Serve Ollama's models too (default: $OLLAMA_MODELS, ~/.ollama/models).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
    ollama_models: Option<std::path::PathBuf>,
    /// Serve LM Studio's models too (default: ~/.lmstudio/models).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
    lm_studio: Option<std::path::PathBuf>,
    /// Per-model settings (TOML: [defaults] and [models."NAME"] tables).
    #[arg(long, value_name = "FILE")]
    models_preset: Option<std::path::PathBuf>,
    /// Most models loaded at once; the least recently used idle one goes
    /// first.
    #[arg(long, default_value_t = 3)]
    models_max: usize,
    /// How long a model stays loaded after its last request ("5m", "30s",
    /// "0", "-1" for ever); a request's `keep_alive` overrides it.
    #[arg(long, default_value = "5m", allow_hyphen_values = true)]
    keep_alive: String,
    /// Bytes the loaded models may plan for in all (dry runs of weights,
    /// KV cache, compute buffers); a load beyond is refused with 503.
    #[arg(long, value_parser = llama_safe::cli::parse_size)]
    memory_budget: Option<u64>,
    /// Seconds a request waits for its model to load.
    #[arg(long, default_value_t = 300.0)]
    load_timeout: f64,
}

impl ManyArgs {
    fn sources(&self) -> Option<crate::catalog::Sources> {
        use crate::catalog::Sources;
        let or_default = |p: &std::path::PathBuf, d: fn() -> std::path::PathBuf| {
            if p.as_os_str().is_empty() {
                d()
            } else {
                p.clone()
            }
        };
        let mut s = Sources::default();
        for dir in &self.models_dirs {
            s = s.with_dir(dir);
        }
        if let Some(p) = &self.hf_cache {
            s = s.with_hf_cache(or_default(p, Sources::default_hf_cache));
        }
        if let Some(p) = &self.ollama_models {
            s = s.with_ollama(or_default(p, Sources::default_ollama));
        }
        if let Some(p) = &self.lm_studio {
            s = s.with_lm_studio(or_default(p, Sources::default_lm_studio));
        }
        let any = !self.models_dirs.is_empty()
            || self.hf_cache.is_some()
            || self.ollama_models.is_some()
            || self.lm_studio.is_some();
        any.then_some(s)
    }
}

/// Parses the command line and serves until SIGINT or SIGTERM; exits 1
/// with the error on failure.
pub fn main() {
    let args = Args::parse();
    run_main(|| run(args));
}

/// Serves as `args` say.
pub fn run(args: Args) -> Result<()> {
    // Checked first: a bad key must not wait for a model to load.
    let keys = keys(&args)?;
    let backend = args.model.backend()?;
    if args.model.list_devices(&backend) {
        return Ok(());
    }
    // Every decode uses all the threads: one batch carries every request.
    let threads = args.model.threads();
    let mut config = EngineConfig::default()
        .with_n_ctx(args.ctx_size)
        .with_n_parallel(args.parallel)
        .with_n_batch(args.batch_size)
        .with_threads(threads)
        .with_queue(args.queue)
        .with_prompt_cache(!args.no_prompt_cache)
        .with_kv_unified(args.kv_unified);
    if args.speculation.enabled() {
        // Room for every request's drafts; the source is set below, once
        // the model (a draft model's target) is loaded.
        config = config.with_max_draft(args.speculation.spec_draft_n_max);
    }
    let served = match args.many.sources() {
        Some(sources) => {
            if args.model.model.is_some() {
                return Err(Error::InvalidParameter {
                    name: "model",
                    reason: "--model serves one model; with --models-dir and the like, put it in a models folder".into(),
                });
            }
            let keep_alive =
                crate::KeepAlive::parse(&serde_json::Value::String(args.many.keep_alive.clone()))
                    .map_err(|reason| Error::InvalidParameter {
                    name: "keep_alive",
                    reason: reason.into(),
                })?;
            let presets = match &args.many.models_preset {
                Some(path) => {
                    crate::presets::Presets::load(path).map_err(|e| Error::InvalidParameter {
                        name: "models_preset",
                        reason: e.to_string().into(),
                    })?
                }
                None => crate::presets::Presets::default(),
            };
            // A draft model drafts for one vocabulary: not for a catalog.
            if let Some(s) = args.speculation.text_speculation()? {
                config = config.with_speculation(s);
            }
            let mut many = crate::ModelsConfig::new(sources)
                .with_presets(presets)
                .with_max_resident(args.many.models_max)
                .with_keep_alive(keep_alive)
                .with_load_timeout(std::time::Duration::from_secs_f64(
                    args.many.load_timeout.max(0.0),
                ))
                .with_engine(config.clone())
                .with_params(args.model.params());
            if let Some(budget) = args.many.memory_budget {
                many = many.with_memory_budget(budget);
            }
            crate::models::release_memory_eagerly();
            let models = crate::Models::new(&backend, many);
            models
                .check_presets()
                .map_err(|e| Error::InvalidParameter {
                    name: "models_preset",
                    reason: e.to_string().into(),
                })?;
            let found = models.available();
            eprintln!(
                "server: {} models found{}",
                found.len(),
                found
                    .iter()
                    .take(8)
                    .map(|e| format!("\n  {:?} ({:?}, {} MiB)", e.name, e.source, e.size >> 20))
                    .collect::<String>()
            );
            (format!("{} models", found.len()), models, false)
        }
        None => {
            // --fit leaves room for the projector on its device.
            let reserved = if args.fit.enabled() {
                projector_reserved(&args, threads)?
            } else {
                Vec::new()
            };
            let params =
                match args
                    .fit
                    .run_reserving(&args.model, &config.context_params(), &reserved)?
                {
                    Some((params, ctx)) => {
                        config = config.with_n_ctx(ctx.n_ctx());
                        params
                    }
                    None => args.model.params(),
                };
            let model = args.model.load_with(&backend, params)?;
            // Every request drafts unless it says `speculative.n_max: 0`.
            if let Some(s) = args.speculation.speculation(&model, threads)? {
                config = config.with_speculation(s);
            }
            let name = args.alias.clone().unwrap_or_else(|| {
                model
                    .path()
                    .file_stem()
                    .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
            });
            let state = single_state(&args, model, name.clone(), config.clone(), threads)?;
            let media = takes_media(&state);
            (name, crate::Models::single(state), media)
        }
    };
    let (name, models, takes_media) = served;
    let max_body_bytes = args.max_body_bytes.unwrap_or(if takes_media {
        MEDIA_MAX_BODY_BYTES
    } else {
        crate::DEFAULT_MAX_BODY_BYTES
    });

    let runtime = tokio::runtime::Runtime::new().map_err(|source| Error::System {
        what: "start the tokio runtime".into(),
        source: source.into(),
    })?;
    runtime.block_on(async {
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|source| Error::System { what: format!("listen on {address}"), source: source.into() })?;
        let local = listener.local_addr().map_err(|source| Error::System { what: format!("address of {address}"), source: source.into() })?;
        let name = name.escape_debug();
        eprintln!(
            "server: {name} on http://{local} ({} parallel sequences, {} KV cells{}, {threads} threads, queue {})",
            args.parallel,
            config.n_ctx(),
            if config.kv_unified() {
                " shared".to_string()
            } else {
                format!(", {} per sequence", config.n_ctx_per_request())
            },
            args.queue
        );
        let seconds = |s: f64| std::time::Duration::from_secs_f64(s.max(0.0));
        let timeouts = Timeouts {
            header: seconds(args.header_timeout),
            body: seconds(args.body_timeout),
            shutdown: seconds(args.shutdown_timeout),
        };
        let (keys, admin) = &keys;
        let mut config = keys
            .iter()
            .fold(ServerConfig::default(), |c, key| c.with_api_key(key))
            .with_timeouts(timeouts)
            .with_max_body_bytes(max_body_bytes)
            .with_open_metrics(args.open_metrics);
        if let Some(admin) = admin {
            config = config.with_admin_api_key(admin);
        }
        if config.requires_key() {
            eprintln!(
                "server: API keys required ({} configured{}){}",
                keys.len(),
                if admin.is_some() { ", and an admin key" } else { "; model management off: no --admin-api-key" },
                if config.open_metrics() { "; /metrics open" } else { "" }
            );
        }
        serve_models(listener, models, &config, shutdown_signal())
            .await
            .map_err(|source| Error::System { what: format!("serve on {local}"), source: source.into() })?;
        eprintln!("server: stopped");
        Ok(())
    })
}

/// The inference keys (`--api-key`, then `LLAMA_SAFE_API_KEY`) and the
/// admin key (`--admin-api-key`, else `LLAMA_SAFE_ADMIN_API_KEY`). Keys
/// fail closed: a variable that is set but empty, or an empty entry of a
/// comma-separated list, is an error, not an open server.
fn keys(args: &Args) -> Result<(Vec<String>, Option<String>)> {
    keys_from(
        &args.api_keys,
        std::env::var_os("LLAMA_SAFE_API_KEY"),
        args.admin_api_key.as_deref(),
        std::env::var_os("LLAMA_SAFE_ADMIN_API_KEY"),
    )
}

/// [`keys`] from the flags and the variables' values.
fn keys_from(
    flags: &[String],
    env: Option<std::ffi::OsString>,
    admin_flag: Option<&str>,
    admin_env: Option<std::ffi::OsString>,
) -> Result<(Vec<String>, Option<String>)> {
    let empty = |name: &'static str, reason: &str| {
        Error::InvalidParameter {
        name,
        reason: format!("{reason}: refusing to start a server that anyone could use by mistake (set a key, or unset the variable to serve without keys)").into(),
    }
    };
    let mut keys = flags.to_vec();
    if let Some(value) = env {
        let value = value
            .into_string()
            .map_err(|_| empty("api_key", "LLAMA_SAFE_API_KEY is not UTF-8"))?;
        keys.extend(value.split(',').map(str::to_string));
    }
    if keys.iter().any(|k| k.trim().is_empty()) {
        return Err(empty(
            "api_key",
            "an API key is empty (LLAMA_SAFE_API_KEY set to \"\" or with an empty entry, or --api-key \"\")",
        ));
    }
    let admin = match (admin_flag, admin_env) {
        (Some(k), _) => Some(k.to_string()),
        (None, Some(v)) => Some(
            v.into_string()
                .map_err(|_| empty("admin_api_key", "LLAMA_SAFE_ADMIN_API_KEY is not UTF-8"))?,
        ),
        (None, None) => None,
    };
    if admin.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(empty("admin_api_key", "the admin API key is empty"));
    }
    Ok((keys, admin))
}

/// The one model's state, with its projector when there is one
/// (`--mmproj`, or the demo projector for the demo model).
fn single_state(
    args: &Args,
    model: LlamaModel,
    name: String,
    config: EngineConfig,
    threads: u32,
) -> Result<std::sync::Arc<AppState>> {
    #[cfg(feature = "mtmd")]
    {
        let path = match (
            &args.media.mmproj,
            args.model.is_demo() && !args.media.no_mmproj,
        ) {
            (Some(path), _) => Some(path.clone()),
            (None, true) => Some(llama_safe::demo::DemoProjector::cached()?),
            (None, false) => None,
        };
        if let Some(path) = path {
            let params = llama_safe::media::ProjectorParams::default()
                .with_gpu(!args.media.no_mmproj_offload)
                .with_n_threads(threads);
            let projector = llama_safe::media::Projector::load(&model, &path, &params)?;
            eprintln!(
                "server: projector {} (images {}, audio {})",
                path.display(),
                projector.supports_vision(),
                projector.supports_audio()
            );
            return AppState::new_with_projector(model, name, Vec::new(), config, projector);
        }
    }
    let _ = (args, threads);
    AppState::new(model, name, config)
}

/// The projector to load: `--mmproj`, or the demo projector for the demo
/// model (unless `--no-mmproj`).
#[cfg(feature = "mtmd")]
fn projector_path(args: &Args) -> Result<Option<std::path::PathBuf>> {
    match (
        &args.media.mmproj,
        args.model.is_demo() && !args.media.no_mmproj,
    ) {
        (Some(path), _) => Ok(Some(path.clone())),
        (None, true) => llama_safe::demo::DemoProjector::cached().map(Some),
        (None, false) => Ok(None),
    }
}

/// On the model's first `--device` (else the first GPU) unless
/// `--no-mmproj-offload`.
#[cfg(feature = "mtmd")]
fn projector_params(args: &Args, threads: u32) -> llama_safe::media::ProjectorParams {
    let params = llama_safe::media::ProjectorParams::default()
        .with_gpu(!args.media.no_mmproj_offload)
        .with_n_threads(threads);
    match args.model.device.first() {
        Some(device) if !args.media.no_mmproj_offload && device != "none" => {
            params.with_device(device.clone())
        }
        _ => params,
    }
}

/// What the projector will take on each device but the host (a dry run),
/// for `--fit` to leave free.
fn projector_reserved(args: &Args, threads: u32) -> Result<Vec<(String, u64)>> {
    #[cfg(feature = "mtmd")]
    if let Some(path) = projector_path(args)? {
        let planned =
            llama_safe::media::Projector::plan_memory(&path, &projector_params(args, threads))?;
        return Ok(planned
            .into_iter()
            .filter(|(name, _)| name != "CPU")
            .collect());
    }
    let _ = (args, threads);
    Ok(Vec::new())
}

/// Whether requests to `state` may carry media.
fn takes_media(state: &AppState) -> bool {
    #[cfg(feature = "mtmd")]
    return state.projector().is_some();
    #[cfg(not(feature = "mtmd"))]
    {
        let _ = state;
        false
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("server: shutting down, finishing the streams in flight");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (audit round 3): `LLAMA_SAFE_API_KEY=`, `--api-key ""`
    /// and `LLAMA_SAFE_API_KEY=","` started an open server, saying nothing.
    #[test]
    fn keys_fail_closed() {
        let env = |s: &str| Some(std::ffi::OsString::from(s));
        for (flags, var) in [
            (vec![], env("")),
            (vec![], env(",")),
            (vec![], env("good,")),
            (vec![String::new()], None),
            (vec![" ".to_string()], env("good")),
        ] {
            let e = keys_from(&flags, var.clone(), None, None).unwrap_err();
            assert!(e.to_string().contains("empty"), "{flags:?} {var:?}: {e}");
        }
        assert!(keys_from(&[], None, Some(""), None).is_err());
        assert!(keys_from(&[], None, None, env("")).is_err());
        let (keys, admin) = keys_from(&["a".into()], env("b,c"), None, env("root")).unwrap();
        assert_eq!(
            (keys, admin.as_deref()),
            (vec!["a".into(), "b".into(), "c".into()], Some("root"))
        );
        assert_eq!(keys_from(&[], None, None, None).unwrap(), (vec![], None));
    }

    /// Regression (audit round 3): `--keep-alive -1`, as `--help` documents
    /// it, was a clap error.
    #[test]
    fn negative_keep_alive_parses() {
        let args = Args::try_parse_from([
            "llama-safe-server",
            "--models-dir",
            "m",
            "--keep-alive",
            "-1",
        ])
        .unwrap();
        assert_eq!(args.many.keep_alive, "-1");
        let args = Args::try_parse_from([
            "llama-safe-server",
            "--keep-alive=-5m",
            "--admin-api-key",
            "k",
        ])
        .unwrap();
        assert_eq!(args.many.keep_alive, "-5m");
    }
}
