//! One measured run, in its own process so that its peak resident memory is
//! its own: the Rust path (`run_rust`, called in the benchmark's child mode)
//! or the C program (`run_c`).

use super::config::Config;
use llama_safe::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What every run of one benchmark shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    /// The GGUF file.
    pub model: PathBuf,
    /// The prompt (tokenized with BOS, special tokens parsed).
    pub prompt: String,
    /// Most tokens to generate (greedy).
    pub max_tokens: u32,
    /// CPU threads for prompt and generation.
    pub threads: u32,
    /// Context size.
    pub ctx_size: u32,
    /// Layers on the GPU.
    pub n_gpu_layers: u32,
    /// Plain reads instead of mmap.
    pub no_mmap: bool,
    /// Ban the end-of-sequence token, so every run generates `max_tokens`.
    pub ignore_eos: bool,
    /// An RPC server (`host:port`) whose device gets the layers, standing
    /// in for a GPU; its memory is measured (see [`DeviceUse`]).
    #[serde(default)]
    pub rpc: Option<String>,
    /// The RPC server's process id, to read its resident memory.
    #[serde(default)]
    pub rpc_pid: Option<u32>,
    /// A GPU device to put the layers on (`Vulkan0`, `CUDA0`); its memory
    /// is measured as the RPC device's is.
    #[serde(default)]
    pub device: Option<String>,
}

/// What one run put on the accelerator (the RPC device), from llama.cpp's
/// memory breakdown of the context, and what a dry run predicted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceUse {
    /// The device (`RPC0`).
    pub device: String,
    /// Weight bytes on it.
    pub model_bytes: u64,
    /// KV cache bytes on it.
    pub context_bytes: u64,
    /// Compute buffer bytes on it.
    pub compute_bytes: u64,
    /// What `LlamaModelParams::memory_plan` predicted for it before the load.
    pub predicted_bytes: u64,
    /// Host-memory bytes of the same breakdown (weights, KV, compute).
    pub host_bytes: u64,
    /// The RPC server's resident memory before this run's load, bytes.
    pub server_rss_idle: Option<u64>,
    /// The RPC server's resident memory with the model loaded and the
    /// context created, bytes.
    pub server_rss_loaded: Option<u64>,
}

impl DeviceUse {
    /// Weights, KV cache and compute buffers on the device.
    pub fn total(&self) -> u64 {
        self.model_bytes + self.context_bytes + self.compute_bytes
    }
}

/// A process's resident memory (`VmRSS`), bytes (Linux).
fn rss_of(pid: u32) -> Option<u64> {
    super::process::status_bytes(Some(pid), "VmRSS")
}

/// Memory a GPU device had in use before and after the load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceMemory {
    /// ggml's device name (`CUDA0`).
    pub name: String,
    /// `total - free` before loading, bytes.
    pub used_before: u64,
    /// `total - free` after loading and creating the context, bytes.
    pub used_after: u64,
    /// `total - free` after the first decode (the prompt's), bytes.
    #[serde(default)]
    pub used_after_decode: Option<u64>,
    /// Total memory, bytes.
    pub total: u64,
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Configuration name.
    pub config: String,
    /// Model load time (file to usable model), ms.
    pub load_ms: f64,
    /// From the start of generation (before tokenizing) to the first sampled token, ms.
    pub ttft_ms: f64,
    /// Tokenizing and decoding the prompt, ms.
    pub prompt_ms: f64,
    /// From the end of the prompt to the last sampled token, ms.
    pub generation_ms: f64,
    /// Prompt tokens, as tokenized.
    pub prompt_tokens: usize,
    /// Tokens generated, as sampled (end-of-generation not counted).
    pub generated_tokens: usize,
    /// `prompt_tokens / prompt_ms`, per second.
    pub prompt_tps: f64,
    /// `generated_tokens / generation_ms`, per second.
    pub generation_tps: f64,
    /// `MaxTokens` or `EndOfGeneration`.
    pub stop: String,
    /// The generated text.
    pub text: String,
    /// Weight bytes per buffer type from the placement report (Rust path only).
    pub buffers: BTreeMap<String, u64>,
    /// Tensors the overrides moved, and their bytes (Rust path only).
    pub moved_tensors: usize,
    /// Bytes of the moved tensors.
    pub moved_bytes: u64,
    /// Peak resident memory of the run's process (`VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// GPU devices' memory in use (none on a CPU-only build).
    pub devices: Vec<DeviceMemory>,
    /// The RPC device's share, when the run used one.
    #[serde(default)]
    pub device_use: Option<DeviceUse>,
    /// For a fit configuration: what `LlamaModelParams::fit` decided.
    #[serde(default)]
    pub fit_choice: Option<String>,
}

/// The process's peak resident memory from `/proc/self/status` (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    super::process::status_bytes(None, "VmHWM")
}

fn rate(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1e3 / ms
    } else {
        0.0
    }
}

fn gpu_memory(backend: &LlamaBackend) -> Vec<(String, u64, u64)> {
    backend
        .devices()
        .into_iter()
        .filter(|d| matches!(d.kind, DeviceKind::Gpu | DeviceKind::IntegratedGpu))
        .map(|d| {
            (
                d.name,
                d.memory_total.saturating_sub(d.memory_free),
                d.memory_total,
            )
        })
        .collect()
}

/// The first device of the RPC server at `endpoint`.
#[cfg(feature = "rpc")]
fn rpc_device(backend: &LlamaBackend, endpoint: &str) -> Result<String> {
    let devices = backend.add_rpc_server(endpoint)?;
    devices
        .first()
        .map(|d| d.name.clone())
        .ok_or_else(|| Error::Unsupported {
            reason: format!("the RPC server at {endpoint} offers no device").into(),
        })
}

#[cfg(not(feature = "rpc"))]
fn rpc_device(_: &LlamaBackend, _: &str) -> Result<String> {
    Err(Error::Unsupported {
        reason: "an RPC device needs the `rpc` feature".into(),
    })
}

/// The load and context params every configuration starts from: the
/// spec's layers, context, threads and load mode, on `device` if given,
/// one output per decode.
pub fn base_params(spec: &RunSpec, device: Option<&str>) -> (LlamaModelParams, ContextParams) {
    let mut params = LlamaModelParams::default().with_n_gpu_layers(spec.n_gpu_layers);
    if let Some(name) = device {
        params = params.with_devices(&[name]);
    }
    if spec.no_mmap {
        params = params.with_load_mode(LoadMode::Read);
    }
    let ctx = ContextParams::default()
        .with_n_ctx(spec.ctx_size)
        .with_threads(spec.threads)
        .with_n_outputs_max(1);
    (params, ctx)
}

/// One run of the Rust path (high-level `generate`, greedy) in this process.
pub fn run_rust(spec: &RunSpec, config: &Config) -> Result<RunResult> {
    let backend = LlamaBackend::init_with(
        BackendOptions::default().with_software_devices(spec.device.is_some()),
    )?;
    let before = gpu_memory(&backend);
    let server_rss_idle = spec.rpc_pid.and_then(rss_of);
    let device = match (&spec.rpc, &spec.device) {
        (Some(endpoint), _) => Some(rpc_device(&backend, endpoint)?),
        (None, Some(name)) => Some(name.clone()),
        (None, None) => None,
    };
    let (mut params, mut ctx_params) = base_params(spec, device.as_deref());
    let mut fit_choice = None;
    params = match config {
        Config::CpuMoe => params.with_cpu_moe_all(),
        Config::NCpuMoe(k) => params.with_n_cpu_moe(*k),
        Config::Baseline | Config::CGreedy => params,
        Config::Fit(budget) => {
            let options = fit::FitOptions::default().with_budget(*budget);
            let fitted = params.fit(&spec.model, &ctx_params, &options)?;
            eprint!("{fitted}");
            fit_choice = fitted.steps.last().cloned();
            ctx_params = fitted.ctx;
            fitted.params
        }
    };
    let predicted = match &device {
        Some(_) => Some(params.memory_plan(&spec.model, &ctx_params)?),
        None => None,
    };
    let start = Instant::now();
    let model = LlamaModel::load(&backend, &spec.model, &params)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut ctx = LlamaContext::new(&model, &ctx_params)?;
    let after = gpu_memory(&backend);
    let device_use = match (&device, &predicted) {
        (Some(device), Some(predicted)) => {
            let real = ctx.memory_breakdown()?;
            let on = context::device_totals(&real, Some(device));
            Some(DeviceUse {
                device: device.clone(),
                model_bytes: on.model_bytes,
                context_bytes: on.context_bytes,
                compute_bytes: on.compute_bytes,
                predicted_bytes: context::device_bytes(predicted, Some(device)),
                host_bytes: context::host_bytes(&real),
                server_rss_idle,
                server_rss_loaded: spec.rpc_pid.and_then(rss_of),
            })
        }
        _ => None,
    };

    let mut sampling = SamplingOptions::greedy();
    if spec.ignore_eos {
        sampling = sampling.with_logit_bias(
            model
                .token_eos()
                .map(|eos| vec![(eos, f32::NEG_INFINITY)])
                .unwrap_or_default(),
        );
    }
    let options = GenerateOptions::default()
        .with_max_tokens(spec.max_tokens)
        .with_sampling(sampling);
    let mut text = String::new();
    let mut stats = None;
    let mut after_decode = None;
    for event in ctx.generate(&spec.prompt, &options)? {
        match event? {
            Event::Piece(p) => {
                if after_decode.is_none() {
                    after_decode = Some(gpu_memory(&backend));
                }
                text.push_str(&p.text)
            }
            Event::Done(s) => stats = Some(s),
        }
    }
    let after_decode = after_decode.unwrap_or_else(|| gpu_memory(&backend));
    let stats = stats.expect("a generation always ends with Done");
    let placement = model.placement();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    Ok(RunResult {
        config: config.name(),
        load_ms,
        ttft_ms: ms(stats.time_to_first_token),
        prompt_ms: ms(stats.prompt_time),
        generation_ms: ms(stats.generation_time),
        prompt_tokens: stats.prompt_tokens,
        generated_tokens: stats.generated_tokens,
        prompt_tps: stats.prompt_tokens_per_second,
        generation_tps: stats.generation_tokens_per_second,
        stop: format!("{:?}", stats.stop_reason),
        text,
        buffers: placement.bytes_by_buffer(),
        moved_tensors: placement.moved.len(),
        moved_bytes: placement.moved_bytes(),
        peak_rss_bytes: peak_rss_bytes(),
        devices: before
            .into_iter()
            .zip(after)
            .zip(after_decode)
            .map(
                |(((name, used_before, total), (_, used_after, _)), (_, decoded, _))| {
                    DeviceMemory {
                        name,
                        used_before,
                        used_after,
                        used_after_decode: Some(decoded),
                        total,
                    }
                },
            )
            .collect(),
        device_use,
        fit_choice,
    })
}

/// What `bench/greedy.c` prints.
#[derive(Deserialize)]
struct COutput {
    load_ms: f64,
    prompt_tokens: usize,
    generated_tokens: usize,
    ttft_ms: f64,
    prompt_ms: f64,
    generation_ms: f64,
    stop: String,
    text: String,
    peak_rss_bytes: Option<u64>,
}

/// One run of the C program `exe` (see `bench/greedy.c`).
pub fn run_c(exe: &Path, spec: &RunSpec) -> std::result::Result<RunResult, String> {
    let out = Command::new(exe)
        .arg(&spec.model)
        .arg(&spec.prompt)
        .arg(spec.max_tokens.to_string())
        .arg(spec.threads.to_string())
        .arg(spec.ctx_size.to_string())
        .arg(spec.n_gpu_layers.to_string())
        .arg(if spec.ignore_eos { "1" } else { "0" })
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let c: COutput = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("unreadable output of {}: {e}", exe.display()))?;
    Ok(RunResult {
        config: Config::CGreedy.name(),
        load_ms: c.load_ms,
        ttft_ms: c.ttft_ms,
        prompt_ms: c.prompt_ms,
        generation_ms: c.generation_ms,
        prompt_tokens: c.prompt_tokens,
        generated_tokens: c.generated_tokens,
        prompt_tps: rate(c.prompt_tokens, c.prompt_ms),
        generation_tps: rate(c.generated_tokens, c.generation_ms),
        stop: c.stop,
        text: c.text,
        buffers: BTreeMap::new(),
        moved_tensors: 0,
        moved_bytes: 0,
        peak_rss_bytes: c.peak_rss_bytes,
        devices: Vec::new(),
        device_use: None,
        fit_choice: None,
    })
}
