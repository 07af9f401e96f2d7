//! The A/B offload benchmark: runs configurations (baseline, `--cpu-moe`,
//! `--n-cpu-moe K`, and the C API baseline) interleaved, N times each after
//! a warm-up, each run in its own process; writes JSON, Markdown and SVG.
//!
//! ```text
//! cargo run --release --bin moe_bench                           # demo model
//! cargo run --release --bin moe_bench -- --model model.gguf \
//!     --configs baseline,cpu-moe,n-cpu-moe=8,c --runs 5 --max-tokens 64 --out bench-out
//! # An RPC server as the accelerator (feature rpc): a fresh one per run,
//! # every layer on its device; reports the bytes on it and fit's prediction.
//! cargo build --release --features rpc --example rpc_server --bin moe_bench
//! target/release/moe_bench --model model.gguf --rpc-server target/release/examples/rpc_server
//! # A GPU (here Vulkan; --device also offers the software device, lavapipe),
//! # with `fit` (free memory less 1 GiB) or `fit=SIZE` among the configurations:
//! cargo build --release --features vulkan --bin moe_bench
//! target/release/moe_bench --device Vulkan0 --configs baseline,n-cpu-moe=2,cpu-moe,fit=9M
//! ```
//!
//! Run it with the machine otherwise idle: llama.cpp's threads spin, and a
//! second busy process can slow decoding many times over.

use clap::Parser;
use llama_safe::cli::run_main;
use llama_safe::demo::DEMO_PROMPT;
use llama_safe::*;
use llama_workspace::bench::measure::{self, run_c, run_rust, RunSpec};
use llama_workspace::bench::peer;
use llama_workspace::bench::process::RpcServer;
use llama_workspace::bench::report::{FitComparison, Meta, Report};
use llama_workspace::bench::{Config, RunResult};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser, Debug)]
#[command(
    about = "Measure MoE offload configurations, interleaved, and the binding's overhead against C"
)]
struct Args {
    /// GGUF model (default: the built-in demo MoE model).
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// Configurations: baseline, cpu-moe, n-cpu-moe=K, c (the C API greedy loop).
    /// Default: baseline, cpu-moe, n-cpu-moe=(half the layers), and c when built.
    #[arg(long, value_delimiter = ',')]
    configs: Vec<String>,
    /// Measured runs per configuration (at least 3).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Unmeasured warm-up runs per configuration.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Prompt.
    #[arg(long, short)]
    prompt: Option<String>,
    /// Most tokens to generate per run (greedy).
    #[arg(long, short = 'n', default_value_t = 32)]
    max_tokens: u32,
    /// CPU threads (default: all cores).
    #[arg(long, short = 't')]
    threads: Option<u32>,
    /// Context size.
    #[arg(long, short = 'c', default_value_t = 2048)]
    ctx_size: u32,
    /// Layers on the GPU.
    #[arg(long, short = 'g', default_value_t = 999)]
    n_gpu_layers: u32,
    /// Plain reads instead of mmap.
    #[arg(long)]
    no_mmap: bool,
    /// Let end-of-sequence stop a run early (by default EOS is banned, so
    /// every run generates exactly --max-tokens).
    #[arg(long)]
    stop_at_eos: bool,
    /// Start this `rpc_server` (the example) on loopback for every run and
    /// put the layers on its device (needs the `rpc` feature): the device
    /// stands in for a GPU, and its bytes are measured.
    #[arg(long)]
    rpc_server: Option<PathBuf>,
    /// Put the layers on this GPU device (`Vulkan0`, `CUDA0`; see
    /// `moe_generate --list-devices`) and measure its memory as for an RPC
    /// device.
    #[arg(long)]
    device: Option<String>,
    /// A folder with llama.cpp's `llama-fit-params` and `llama-server`
    /// (scripts/build-llama-peer.sh): with `--device`, their own figures
    /// for each configuration on the same device go beside ours.
    #[arg(long)]
    llama_cpp: Option<PathBuf>,
    /// Threads of the RPC server.
    #[arg(long, default_value_t = 1)]
    rpc_threads: u32,
    /// Internal: the RPC endpoint of a child run.
    #[arg(long, hide = true)]
    rpc: Option<String>,
    /// Internal: the RPC server's pid, for its resident memory.
    #[arg(long, hide = true)]
    rpc_pid: Option<u32>,
    /// Folder for bench.json, bench.md and bench.svg.
    #[arg(long, default_value = "target/moe_bench")]
    out: PathBuf,
    /// Internal: run one measurement of this configuration and print its JSON.
    #[arg(long, hide = true)]
    child: Option<String>,
}

fn main() {
    let args = Args::parse();
    run_main(|| run(args));
}

fn run(args: Args) -> Result<()> {
    // A named device may be a software one (lavapipe): offer those too.
    let _backend = LlamaBackend::init_with(
        BackendOptions::default().with_software_devices(args.device.is_some()),
    )?;
    let model = match &args.model {
        Some(m) => m.clone(),
        None => demo::DemoModel::Moe.cached()?,
    };
    let spec = RunSpec {
        model: model.clone(),
        prompt: args.prompt.clone().unwrap_or_else(|| DEMO_PROMPT.into()),
        max_tokens: args.max_tokens,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        ctx_size: args.ctx_size,
        n_gpu_layers: args.n_gpu_layers,
        no_mmap: args.no_mmap,
        ignore_eos: !args.stop_at_eos,
        rpc: args.rpc.clone(),
        rpc_pid: args.rpc_pid,
        device: args.device.clone(),
    };
    if let Some(child) = &args.child {
        let config = Config::parse(child).map_err(invalid("child"))?;
        let result = run_rust(&spec, &config)?;
        println!("{}", serde_json::to_string(&result).expect("serialisable"));
        return Ok(());
    }
    if args.runs < 3 {
        return Err(invalid("runs")(
            "at least 3 runs are needed for a spread".into(),
        ));
    }
    let c_exe = option_env!("LLAMA_C_GREEDY").map(PathBuf::from);
    let configs = configs(&args, &model, c_exe.is_some())?;
    if configs.contains(&Config::CGreedy) && c_exe.is_none() {
        return Err(invalid("configs")(
            "the C program was not built (see the build warnings)".into(),
        ));
    }
    let order: Vec<String> = configs.iter().map(Config::name).collect();
    eprintln!(
        "moe_bench: {} on {}; {} warm-up + {} runs each, interleaved; {} threads",
        order.join(", "),
        model.display(),
        args.warmup,
        args.runs,
        spec.threads
    );

    let mut runs = Vec::new();
    for round in 0..args.warmup + args.runs {
        for config in &configs {
            let result = one_run(&args, &spec, config, c_exe.as_deref())?;
            let measured = round >= args.warmup;
            eprintln!(
                "  {} {:<14} load {:>9.1} ms  ttft {:>8.2} ms  gen {:>9.1} tok/s  {} tokens, {}",
                if measured {
                    format!("run {:>2}", round - args.warmup + 1)
                } else {
                    "warm-up".into()
                },
                result.config,
                result.load_ms,
                result.ttft_ms,
                result.generation_tps,
                result.generated_tokens,
                result.stop
            );
            if measured {
                runs.push(result);
            }
        }
    }

    let mut report = Report::new(meta(&args, &spec)?, runs, &order);
    if let (Some(dir), Some(device)) = (&args.llama_cpp, &args.device) {
        peer_figures(&mut report, dir, &spec, &configs, device);
    }
    std::fs::create_dir_all(&args.out).map_err(io(&args.out))?;
    let write = |name: &str, text: String| {
        let path = args.out.join(name);
        std::fs::write(&path, text).map_err(io(&path))
    };
    write(
        "bench.json",
        serde_json::to_string_pretty(&report).expect("serialisable") + "\n",
    )?;
    write("bench.md", report.markdown())?;
    write("bench.svg", report.svg())?;
    println!("{}", report.markdown());
    eprintln!(
        "moe_bench: wrote bench.json, bench.md, bench.svg to {}",
        args.out.display()
    );
    Ok(())
}

/// llama.cpp's own figures, run after ours, one at a time: for each fixed
/// configuration its dry run and its server once loaded; for each fit
/// configuration its `--fit` choice, loaded, beside ours on its budget.
fn peer_figures(report: &mut Report, dir: &Path, spec: &RunSpec, configs: &[Config], device: &str) {
    for config in configs {
        if *config == Config::CGreedy {
            continue;
        }
        // llama.cpp reads the device's free memory itself: its margin is
        // set so that free less margin is our budget.
        let margin = match config {
            Config::Fit(Some(budget)) => {
                let backend = LlamaBackend::init();
                let free = backend
                    .devices()
                    .into_iter()
                    .find(|d| d.name == device)
                    .map_or(0, |d| d.memory_free);
                Some(peer::margin_for(free, *budget))
            }
            Config::Fit(None) => Some(1024),
            _ => None,
        };
        eprintln!("moe_bench: llama.cpp's tools for {}", config.name());
        report.peer.extend(peer::measure(dir, spec, config, device));
        if let Some(margin_mib) = margin {
            let peer = peer::fit_choice(dir, spec, device, margin_mib);
            let ours = match &peer {
                Ok(p) => ours_for_budget(spec, device, p.budget_mib << 20),
                Err(_) => Err("llama.cpp's budget is unknown".into()),
            };
            report.peer_fit.push(FitComparison {
                config: config.name(),
                margin_mib,
                peer,
                ours,
            });
        }
    }
}

/// Our fit for `budget` bytes on `device`: the step it ended with, and the
/// device bytes it predicts.
fn ours_for_budget(
    spec: &RunSpec,
    device: &str,
    budget: u64,
) -> std::result::Result<(String, u64), String> {
    let (params, ctx) = measure::base_params(spec, Some(device));
    let options = fit::FitOptions::default().with_budget(Some(budget));
    let fitted = params
        .fit(&spec.model, &ctx, &options)
        .map_err(|e| e.to_string())?;
    let bytes = fitted.devices.iter().map(|d| d.bytes).sum();
    Ok((fitted.steps.last().cloned().unwrap_or_default(), bytes))
}

/// The configurations asked for, or the default set.
fn configs(args: &Args, model: &Path, have_c: bool) -> Result<Vec<Config>> {
    if !args.configs.is_empty() {
        return args
            .configs
            .iter()
            .map(|c| Config::parse(c).map_err(invalid("configs")))
            .collect();
    }
    let layers = gguf::GgufFile::open(model)?.block_count().unwrap_or(2) as u32;
    let mut v = vec![
        Config::Baseline,
        Config::CpuMoe,
        Config::NCpuMoe((layers / 2).max(1)),
    ];
    if have_c {
        v.push(Config::CGreedy);
    }
    Ok(v)
}

/// One run in a fresh process: this program in child mode, or the C program.
fn one_run(
    args: &Args,
    spec: &RunSpec,
    config: &Config,
    c_exe: Option<&Path>,
) -> Result<RunResult> {
    let failed = |reason: String| Error::InvalidParameter {
        name: "run",
        reason: reason.into(),
    };
    if *config == Config::CGreedy {
        return run_c(c_exe.expect("checked above"), spec).map_err(failed);
    }
    let exe = std::env::current_exe().map_err(io(Path::new("current_exe")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--child")
        .arg(config.name())
        .arg("--model")
        .arg(&spec.model)
        .arg("--prompt")
        .arg(&spec.prompt)
        .args(["--max-tokens", &spec.max_tokens.to_string()])
        .args(["--threads", &spec.threads.to_string()])
        .args(["--ctx-size", &spec.ctx_size.to_string()])
        .args(["--n-gpu-layers", &spec.n_gpu_layers.to_string()]);
    if args.no_mmap {
        cmd.arg("--no-mmap");
    }
    if args.stop_at_eos {
        cmd.arg("--stop-at-eos");
    }
    if let Some(device) = &args.device {
        cmd.args(["--device", device]);
    }
    // Declared before the run, so the server outlives the child's model.
    let _server = match &args.rpc_server {
        Some(exe) => {
            let server =
                RpcServer::start(exe, args.rpc_threads, None).map_err(invalid("rpc-server"))?;
            cmd.args(["--rpc", &server.endpoint])
                .args(["--rpc-pid", &server.pid().to_string()]);
            Some(server)
        }
        None => None,
    };
    let out = cmd.output().map_err(io(Path::new("child process")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "{} run failed: {}",
            config.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| failed(format!("unreadable child output: {e}")))
}

fn meta(args: &Args, spec: &RunSpec) -> Result<Meta> {
    // Streamed: the model may be far bigger than memory.
    let mut file = std::fs::File::open(&spec.model).map_err(io(&spec.model))?;
    let mut hasher = Sha256::new();
    let model_bytes = std::io::copy(&mut file, &mut hasher).map_err(io(&spec.model))?;
    let backend = LlamaBackend::init();
    let features: Vec<String> = [
        ("cuda", cfg!(feature = "cuda")),
        ("vulkan", cfg!(feature = "vulkan")),
        ("metal", cfg!(feature = "metal")),
        ("rpc", cfg!(feature = "rpc")),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(f, _)| f.to_string())
    .collect();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    Ok(Meta {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: spec.model.display().to_string(),
        model_bytes,
        model_sha256: format!("{:x}", hasher.finalize()),
        llama_cpp_revision: format!(
            "{} ({})",
            LLAMA_CPP_REVISION,
            llama_safe_sys::LLAMA_CPP_SOURCE
        ),
        features,
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        gpus: backend
            .devices()
            .into_iter()
            .filter(|d| matches!(d.kind, DeviceKind::Gpu | DeviceKind::IntegratedGpu))
            .map(|d| format!("{}: {}", d.name, d.description))
            .collect(),
        threads: spec.threads,
        runs: args.runs,
        warmup: args.warmup,
        prompt: spec.prompt.clone(),
        max_tokens: spec.max_tokens,
        ctx_size: spec.ctx_size,
        n_gpu_layers: spec.n_gpu_layers,
    })
}

fn invalid(name: &'static str) -> impl Fn(String) -> Error {
    move |reason| Error::InvalidParameter {
        name,
        reason: reason.into(),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source: source.into(),
    }
}
