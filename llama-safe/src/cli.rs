//! Command-line flags in llama.cpp's names, for programs built on llama-safe
//! (its examples and the `llama-safe-server` binary use them): which model to
//! load and how to place it (`--model`, `--cpu-moe`, `--n-cpu-moe`,
//! `--n-cpu-ffn`, `--n-gpu-layers`, `--device`, ...), the context's offload
//! flags, `--fit`, and sampling. Behind the `cli` feature (clap, indicatif).

use crate::demo::DemoModel;
use crate::*;
use clap::Args;
use std::path::PathBuf;

/// Parses a byte size: a number, optionally followed by K, M, G or T
/// (powers of 1024; `KiB`, `GB` and the like accepted too).
///
/// ```
/// use llama_safe::cli::parse_size;
/// assert_eq!(parse_size("24G"), Ok(24 << 30));
/// assert_eq!(parse_size("512MiB"), Ok(512 << 20));
/// assert_eq!(parse_size("1000"), Ok(1000));
/// assert!(parse_size("lots").is_err());
/// ```
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 24G, 512M)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches(['B', 'I'])
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (K, M, G or T)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Model and placement flags, the same as llama.cpp's where they overlap.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF model (default: the built-in demo MoE model, written to the cache on first use).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Keep all MoE expert tensors in host memory (llama.cpp's --cpu-moe).
    #[arg(long, conflicts_with = "n_cpu_moe")]
    pub cpu_moe: bool,
    /// Keep the expert tensors of the first N layers in host memory (llama.cpp's --n-cpu-moe).
    #[arg(long, value_name = "N")]
    pub n_cpu_moe: Option<u32>,
    /// Keep the dense FFN weights of the first N layers in host memory (llama.cpp's --n-cpu-ffn).
    #[arg(long, value_name = "N")]
    pub n_cpu_ffn: Option<u32>,
    /// Layers to put on the GPU (999: all).
    #[arg(long, short = 'g', default_value_t = 999)]
    pub n_gpu_layers: u32,
    /// Devices to offload to, by name, comma-separated (llama.cpp's --device:
    /// `Vulkan0`, `CUDA0,CUDA1`); default: every GPU ggml finds. Naming
    /// devices also offers Vulkan's software devices (lavapipe). An unknown
    /// name is an error that lists the devices there are.
    #[arg(long, value_name = "NAME[,NAME...]", value_delimiter = ',')]
    pub device: Vec<String>,
    /// Load weights with plain reads instead of mmap.
    #[arg(long, conflicts_with = "mlock")]
    pub no_mmap: bool,
    /// Lock the mapped weights in RAM (llama.cpp's --mlock).
    #[arg(long)]
    pub mlock: bool,
    /// Bypass the device's pinned host buffers for weights kept on the host
    /// (llama.cpp's --no-host).
    #[arg(long)]
    pub no_host: bool,
    /// No extra CPU buffer types, i.e. no weight repacking (llama.cpp's --no-repack).
    #[arg(long)]
    pub no_repack: bool,
    /// A Jinja chat template file to use instead of the model's own.
    #[arg(long, value_name = "FILE")]
    pub chat_template_file: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<u32>,
    /// Print no loading progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// List the devices (name, kind, free and total memory) and exit
    /// (llama.cpp's --list-devices).
    #[arg(long)]
    pub list_devices: bool,
}

/// A template file, read up to [`MAX_CHAT_TEMPLATE_BYTES`] (a bigger one is
/// refused, not read whole).
fn read_template(file: &std::path::Path) -> Result<String> {
    crate::chat::read_template_file(file)
}

impl ModelArgs {
    /// The model path: `--model`, or the demo MoE model (written on first use).
    pub fn path(&self) -> Result<PathBuf> {
        match &self.model {
            Some(path) => Ok(path.clone()),
            None => DemoModel::Moe.cached(),
        }
    }

    /// Whether no `--model` was given.
    pub fn is_demo(&self) -> bool {
        self.model.is_none()
    }

    /// Load parameters from the flags (no progress callback).
    pub fn params(&self) -> LlamaModelParams {
        let mut params = LlamaModelParams::default().with_n_gpu_layers(self.n_gpu_layers);
        if self.cpu_moe {
            params = params.with_cpu_moe_all();
        } else if let Some(n) = self.n_cpu_moe {
            params = params.with_n_cpu_moe(n);
        }
        if let Some(n) = self.n_cpu_ffn {
            params = params.with_n_cpu_ffn(n);
        }
        if self.no_mmap {
            params = params.with_load_mode(LoadMode::Read);
        }
        if self.mlock {
            params = params.with_load_mode(LoadMode::MmapLocked);
        }
        params = params
            .with_no_host(self.no_host)
            .with_extra_buffer_types(!self.no_repack);
        if !self.device.is_empty() {
            params = params.with_devices(&self.device);
        }
        if let Some(file) = &self.chat_template_file {
            params = match read_template(file) {
                Ok(template) => params.with_chat_template(template),
                Err(e) => params.invalid(e),
            };
        }
        params
    }

    /// Initialises llama.cpp for these flags: when devices are named
    /// (`--device`) or listed, Vulkan's software devices are offered too
    /// (lavapipe as `Vulkan0` on a machine without a GPU, no environment
    /// variable needed).
    pub fn backend(&self) -> Result<LlamaBackend> {
        let named = !self.device.is_empty() || self.list_devices;
        LlamaBackend::init_with(BackendOptions::default().with_software_devices(named))
    }

    /// With `--list-devices`, prints the devices and returns `true` (the
    /// caller then exits).
    pub fn list_devices(&self, backend: &LlamaBackend) -> bool {
        if !self.list_devices {
            return false;
        }
        let mib = |b: u64| b / (1024 * 1024);
        println!("Available devices:");
        for d in backend.devices() {
            println!(
                "  {}: {} ({:?}, {} MiB free of {} MiB)",
                d.name,
                d.description,
                d.kind,
                mib(d.memory_free),
                mib(d.memory_total)
            );
        }
        true
    }

    /// Threads: `--threads`, or every core.
    pub fn threads(&self) -> u32 {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
    }

    /// Loads the model, with a progress bar on stderr unless `--quiet`, and
    /// says on stderr what was loaded and where its tensors went.
    pub fn load(&self, backend: &LlamaBackend) -> Result<LlamaModel> {
        self.load_with(backend, self.params())
    }

    /// [`load`](Self::load) with `params` (e.g. from `--fit`) instead of the
    /// flags' own.
    pub fn load_with(
        &self,
        backend: &LlamaBackend,
        params: LlamaModelParams,
    ) -> Result<LlamaModel> {
        let path = self.path()?;
        if self.is_demo() {
            eprintln!("model: built-in demo MoE model ({})", path.display());
        }
        let mut params = params;
        if !self.quiet {
            params = params.with_progress_callback(progress_bar());
        }
        let model = LlamaModel::load(backend, &path, &params)?;
        let asked_moe = self.cpu_moe || self.n_cpu_moe.is_some_and(|n| n > 0);
        if asked_moe && !model.is_moe() {
            eprintln!(
                "note: {} is not a MoE model; --cpu-moe/--n-cpu-moe move nothing",
                path.display()
            );
        }
        eprintln!(
            "model: {} ({}), {} layers, {} experts ({} used), {} params",
            model.description(),
            model.architecture(),
            model.n_layer(),
            model.n_expert(),
            model.n_expert_used(),
            model.n_params()
        );
        eprint!("{}", model.placement());
        Ok(model)
    }
}

/// Context flags with llama.cpp's names: attention, KV cache type and
/// placement, operation offload.
#[derive(Args, Debug, Clone)]
pub struct ContextArgs {
    /// Flash attention: on, off or auto (llama.cpp's -fa).
    #[arg(long = "flash-attn", short = 'F', alias = "fa", value_name = "on|off|auto",
          default_value = "auto", value_parser = ["on", "off", "auto"])]
    pub flash_attn: String,
    /// K cache type: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1
    /// (llama.cpp's -ctk).
    #[arg(long = "cache-type-k", alias = "ctk", value_name = "TYPE", default_value = "f16",
          value_parser = parse_kv_type)]
    pub cache_type_k: KvCacheType,
    /// V cache type; a quantized one needs flash attention (llama.cpp's -ctv).
    #[arg(long = "cache-type-v", alias = "ctv", value_name = "TYPE", default_value = "f16",
          value_parser = parse_kv_type)]
    pub cache_type_v: KvCacheType,
    /// Keep the KV cache and attention in host memory (llama.cpp's -nkvo).
    #[arg(long, alias = "nkvo")]
    pub no_kv_offload: bool,
    /// Run large batches' operations where their weights are, not on the
    /// GPU (llama.cpp's --no-op-offload).
    #[arg(long)]
    pub no_op_offload: bool,
}

fn parse_kv_type(text: &str) -> std::result::Result<KvCacheType, String> {
    text.parse().map_err(|e: Error| e.to_string())
}

impl ContextArgs {
    /// `params` with these flags applied.
    pub fn apply(&self, params: ContextParams) -> ContextParams {
        let flash = match self.flash_attn.as_str() {
            "on" => FlashAttention::Enabled,
            "off" => FlashAttention::Disabled,
            _ => FlashAttention::Auto,
        };
        params
            .with_flash_attention(flash)
            .with_kv_cache_type(self.cache_type_k, self.cache_type_v)
            .with_offload_kqv(!self.no_kv_offload)
            .with_op_offload(!self.no_op_offload)
    }
}

/// `--fit` and its options, with llama.cpp's names: fit the load to the
/// devices' free memory ([`LlamaModelParams::fit`]).
#[derive(Args, Debug, Clone)]
pub struct FitArgs {
    /// Fit to the devices' free memory: choose --n-cpu-moe, then
    /// --n-gpu-layers, then a smaller context (llama.cpp's --fit on).
    #[arg(long)]
    pub fit: bool,
    /// MiB to leave free on each device (llama.cpp's --fit-target).
    #[arg(long, value_name = "MiB", default_value_t = 1024)]
    pub fit_target: u64,
    /// Smallest context --fit may shrink to (llama.cpp's --fit-ctx).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub fit_ctx: u32,
    /// Fit to SIZE per device (bytes, or with K, M, G, T: 24G, 512M) instead
    /// of the free memory less --fit-target.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub fit_device_memory: Option<u64>,
}

impl FitArgs {
    /// Whether a fit was asked for.
    pub fn enabled(&self) -> bool {
        self.fit || self.fit_device_memory.is_some()
    }

    /// The fit's options.
    pub fn options(&self) -> fit::FitOptions {
        fit::FitOptions::default()
            .with_margin(self.fit_target.saturating_mul(1024 * 1024))
            .with_min_ctx(self.fit_ctx)
            .with_budget(self.fit_device_memory)
    }

    /// Fits `model`'s params and `ctx` when asked, printing the steps on
    /// stderr: the params and context to load with, or `None` when no fit
    /// was asked for.
    pub fn run(
        &self,
        model: &ModelArgs,
        ctx: &ContextParams,
    ) -> Result<Option<(LlamaModelParams, ContextParams)>> {
        self.run_reserving(model, ctx, &[])
    }

    /// [`run`](Self::run), with bytes on devices that something else loaded
    /// beside the model will take (a projector: see
    /// `MediaArgs::reserved`, the `mtmd` feature).
    pub fn run_reserving(
        &self,
        model: &ModelArgs,
        ctx: &ContextParams,
        reserved: &[(String, u64)],
    ) -> Result<Option<(LlamaModelParams, ContextParams)>> {
        if !self.enabled() {
            return Ok(None);
        }
        let options = reserved.iter().fold(self.options(), |o, (device, bytes)| {
            o.with_reserved(device.clone(), *bytes)
        });
        let fitted = model.params().fit(model.path()?, ctx, &options)?;
        eprint!("{fitted}");
        eprintln!("fit: {} dry runs", fitted.dry_runs);
        Ok(Some((fitted.params, fitted.ctx)))
    }
}

/// What the generating examples (`moe_generate`, `chat`) share: the model
/// and placement flags, the context size and flags, and `--fit`.
#[derive(Args, Debug, Clone)]
pub struct GenerationArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub model: ModelArgs,
    /// Context size in tokens.
    #[arg(long, short = 'c', default_value_t = 4096)]
    pub ctx_size: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub context: ContextArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub fit: FitArgs,
}

impl GenerationArgs {
    /// Loads the model for one generating sequence, as the flags say: the
    /// context of `--ctx-size` tokens with the context flags, one output per
    /// decode (as llama-server keeps), and `--fit` when asked. The model and
    /// the params to create its context with, or `None` once
    /// `--list-devices` has listed them.
    pub fn load(&self) -> Result<Option<(LlamaModel, ContextParams)>> {
        self.load_reserving(&[])
    }

    /// [`load`](Self::load), `--fit` leaving `reserved` bytes on their
    /// devices (see [`FitArgs::run_reserving`]).
    pub fn load_reserving(
        &self,
        reserved: &[(String, u64)],
    ) -> Result<Option<(LlamaModel, ContextParams)>> {
        let backend = self.model.backend()?;
        if self.model.list_devices(&backend) {
            return Ok(None);
        }
        let ctx_params = self.context.apply(
            ContextParams::default()
                .with_n_ctx(self.ctx_size)
                .with_threads(self.model.threads())
                .with_n_outputs_max(1),
        );
        let (params, ctx_params) = self
            .fit
            .run_reserving(&self.model, &ctx_params, reserved)?
            .unwrap_or_else(|| (self.model.params(), ctx_params));
        Ok(Some((self.model.load_with(&backend, params)?, ctx_params)))
    }
}

/// A load progress callback for stderr: a bar (indicatif) when stderr is a
/// terminal; otherwise one plain line when the load is done, so logs and
/// pipes get no redraw frames.
pub fn progress_bar() -> impl FnMut(f32) -> bool + Send + 'static {
    use std::io::IsTerminal;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template("loading [{bar:30}] {pos:>3}% {elapsed}")
                .expect("a valid template")
                .progress_chars("#>-"),
        );
        bar
    });
    let start = std::time::Instant::now();
    let mut done = false;
    move |p| {
        let pct = (p.clamp(0.0, 1.0) * 100.0) as u64;
        if let Some(bar) = &bar {
            bar.set_position(pct);
        }
        if pct >= 100 && !done {
            done = true;
            match &bar {
                Some(bar) => bar.finish(),
                None => eprintln!("loaded in {:.2} s", start.elapsed().as_secs_f64()),
            }
        }
        true
    }
}

/// Sampling flags; `--temp 0` means greedy.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k (0: off).
    #[arg(long, default_value_t = 40)]
    pub top_k: i32,
    /// Top-p (1: off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0: off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u32,
}

impl SamplingArgs {
    /// The sampling options these flags describe.
    pub fn options(&self) -> SamplingOptions {
        SamplingOptions::default()
            .with_temperature(self.temp)
            .with_top_k(self.top_k)
            .with_top_p(self.top_p)
            .with_min_p(self.min_p)
            .with_repeat_penalty(self.repeat_penalty)
            .with_seed(self.seed)
    }
}

/// One line of exact generation stats, as the examples print it.
pub fn stats_line(stats: &GenerationStats, threads: u32) -> String {
    let mut line = format!(
        "stats: prompt {} tokens, generated {} tokens, time to first token {:.2} ms, \
         prompt {:.1} tokens/s, generation {:.1} tokens/s, threads {threads}, stop: {:?}",
        stats.prompt_tokens,
        stats.generated_tokens,
        stats.time_to_first_token.as_secs_f64() * 1e3,
        stats.prompt_tokens_per_second,
        stats.generation_tokens_per_second,
        stats.stop_reason
    );
    if let Some(s) = &stats.speculation {
        line.push_str(&format!(
            "\nspeculation: drafted {}, accepted {} ({:.1} %), {} decodes, {:.2} tokens per decode",
            s.drafted,
            s.accepted,
            100.0 * s.acceptance_rate(),
            s.target_decodes,
            s.tokens_per_decode()
        ));
    }
    line
}

/// Speculative decoding, in llama-server's flag names.
#[derive(Args, Debug, Clone)]
pub struct SpeculationArgs {
    /// Where drafts come from: `ngram-simple` (prompt lookup: the text so
    /// far), `ngram-map-k` (the most frequent continuations of the text so
    /// far), `draft-simple` (a draft model, `--model-draft`), `none`.
    /// Default: `draft-simple` with `--model-draft`, else `none`.
    #[arg(long, value_parser = ["none", "ngram-simple", "ngram-map-k", "draft-simple"])]
    pub spec_type: Option<String>,
    /// Most tokens drafted per step.
    #[arg(long, default_value_t = 16)]
    pub spec_draft_n_max: u32,
    /// Fewest tokens a draft must have to be checked.
    #[arg(long, default_value_t = 1)]
    pub spec_draft_n_min: u32,
    /// Longest n-gram looked up (the n-gram sources).
    #[arg(long, default_value_t = 3)]
    pub spec_ngram_size_n: u32,
    /// Times the n-gram map must have seen a continuation to draft it.
    #[arg(long, default_value_t = 1)]
    pub spec_ngram_min_hits: u32,
    /// A draft model: a smaller GGUF with the same vocabulary (llama-server's
    /// --model-draft).
    #[arg(long, visible_alias = "md", value_name = "FILE")]
    pub model_draft: Option<PathBuf>,
    /// Keep all of the draft model's expert tensors in host memory.
    #[arg(long, conflicts_with = "n_cpu_moe_draft")]
    pub cpu_moe_draft: bool,
    /// Keep the expert tensors of the draft model's first N layers in host memory.
    #[arg(long, value_name = "N")]
    pub n_cpu_moe_draft: Option<u32>,
    /// The draft model's layers on the GPU (999: all).
    #[arg(long, visible_alias = "ngld", default_value_t = 999)]
    pub gpu_layers_draft: u32,
    /// Stop a draft where the draft model's probability of its best token
    /// is below this.
    #[arg(long, default_value_t = 0.75)]
    pub spec_draft_p_min: f32,
}

impl SpeculationArgs {
    /// The source asked for: `--spec-type`, else `draft-simple` with
    /// `--model-draft`, else `none`.
    pub fn spec_type(&self) -> &str {
        match (&self.spec_type, &self.model_draft) {
            (Some(t), _) => t,
            (None, Some(_)) => "draft-simple",
            (None, None) => "none",
        }
    }

    /// Whether speculation is asked for.
    pub fn enabled(&self) -> bool {
        self.spec_type() != "none"
    }

    /// The draft model's load parameters.
    pub fn draft_params(&self) -> LlamaModelParams {
        let params = LlamaModelParams::default().with_n_gpu_layers(self.gpu_layers_draft);
        match (self.cpu_moe_draft, self.n_cpu_moe_draft) {
            (true, _) => params.with_cpu_moe_all(),
            (false, Some(n)) => params.with_n_cpu_moe(n),
            (false, None) => params,
        }
    }

    /// The speculation asked for, if any: for `draft-simple`, the draft
    /// model loaded (its placement said on stderr), its context with
    /// `threads`, its vocabulary checked against `target`'s.
    pub fn speculation(&self, target: &LlamaModel, threads: u32) -> Result<Option<Speculation>> {
        let Some(path) = self
            .model_draft
            .as_ref()
            .filter(|_| self.spec_type() == "draft-simple")
        else {
            return self.text_speculation();
        };
        let draft = LlamaModel::load(&LlamaBackend::init(), path, &self.draft_params())?;
        eprintln!(
            "draft model: {} ({}), {} layers, {} experts",
            draft.description(),
            draft.architecture(),
            draft.n_layer(),
            draft.n_expert()
        );
        eprint!("{}", draft.placement());
        let draft = DraftModel::new(draft)
            .with_p_min(self.spec_draft_p_min)
            .with_context(ContextParams::default().with_threads(threads));
        draft.check_compatible(target)?;
        self.sized(Speculation::draft_model(draft)).map(Some)
    }

    /// The speculation asked for when it needs no draft model (`none`,
    /// `ngram-simple`, `ngram-map-k`); a draft model given without
    /// `draft-simple`, or `draft-simple` here, is an error.
    pub fn text_speculation(&self) -> Result<Option<Speculation>> {
        let text = |s: Speculation| {
            s.with_ngram(1, self.spec_ngram_size_n.max(1))
                .with_min_hits(self.spec_ngram_min_hits)
        };
        let spec = match (self.spec_type(), &self.model_draft) {
            ("none", None) => return Ok(None),
            ("ngram-simple", None) => text(Speculation::prompt_lookup()),
            ("ngram-map-k", None) => text(Speculation::ngram_map()),
            (kind, draft) => {
                let reason = match (kind, draft) {
                    ("draft-simple", None) => "--spec-type draft-simple needs --model-draft".into(),
                    ("draft-simple", Some(_)) => {
                        "a draft model drafts for the one model it was checked against, \
                         not for a folder of models"
                            .into()
                    }
                    _ => format!(
                        "--spec-type {kind} does not use a draft model; --model-draft goes \
                         with draft-simple"
                    ),
                };
                return Err(Error::InvalidParameter {
                    name: "spec_type",
                    reason: reason.into(),
                });
            }
        };
        self.sized(spec).map(Some)
    }

    /// `spec` with the draft sizes of the flags, checked.
    fn sized(&self, spec: Speculation) -> Result<Speculation> {
        let spec = spec
            .with_draft_max(self.spec_draft_n_max)
            .with_draft_min(self.spec_draft_n_min);
        spec.check()?;
        Ok(spec)
    }

    /// `ctx` with room for a draft's outputs in one decode.
    pub fn context(&self, ctx: ContextParams) -> ContextParams {
        if self.enabled() && ctx.n_outputs_max() != 0 {
            let n = ctx.n_outputs_max().max(self.spec_draft_n_max + 1);
            ctx.with_n_outputs_max(n)
        } else {
            ctx
        }
    }
}

/// Images in the prompt, in llama.cpp's flag names (the `mtmd` feature).
#[cfg(feature = "mtmd")]
#[derive(Args, Debug, Clone)]
pub struct MediaArgs {
    /// The model's projector (`mmproj`) file. With the demo model and
    /// `--image`, the demo projector is used when this is not given.
    #[arg(long, value_name = "FILE")]
    pub mmproj: Option<PathBuf>,
    /// An image file (PNG, JPEG, WebP, GIF, BMP) for the prompt; repeat for
    /// more. Each `<__media__>` in the prompt stands for the next one; a
    /// prompt without markers gets them at its start.
    #[arg(long, value_name = "FILE")]
    pub image: Vec<PathBuf>,
    /// Run the projector on the host instead of the GPU.
    #[arg(long)]
    pub no_mmproj_offload: bool,
}

#[cfg(feature = "mtmd")]
impl MediaArgs {
    /// Whether media are asked for.
    pub fn enabled(&self) -> bool {
        !self.image.is_empty()
    }

    /// The projector file (`--mmproj`, or the demo projector for the demo
    /// model), when images are given.
    fn path(&self, demo_model: bool) -> Result<Option<PathBuf>> {
        if !self.enabled() {
            return Ok(None);
        }
        match (&self.mmproj, demo_model) {
            (Some(path), _) => Ok(Some(path.clone())),
            (None, true) => crate::demo::DemoProjector::cached().map(Some),
            (None, false) => Err(Error::InvalidParameter {
                name: "--image",
                reason: "images need the model's projector: give --mmproj FILE".into(),
            }),
        }
    }

    /// How the projector loads: on the model's first `--device` (else the
    /// first GPU) unless `--no-mmproj-offload`, with the model's threads.
    pub fn params(&self, model: &ModelArgs) -> crate::media::ProjectorParams {
        let params = crate::media::ProjectorParams::default()
            .with_gpu(!self.no_mmproj_offload)
            .with_n_threads(model.threads());
        match model.device.first() {
            Some(device) if !self.no_mmproj_offload && device != "none" => {
                params.with_device(device.clone())
            }
            _ => params,
        }
    }

    /// What the projector will take on each device other than the host
    /// (a dry run), for `--fit` to leave free; said on stderr.
    pub fn reserved(&self, model: &ModelArgs) -> Result<Vec<(String, u64)>> {
        let Some(path) = self.path(model.is_demo())? else {
            return Ok(Vec::new());
        };
        let planned = crate::media::Projector::plan_memory(&path, &self.params(model))?;
        let on_devices: Vec<(String, u64)> = planned
            .into_iter()
            .filter(|(name, _)| name != "CPU")
            .collect();
        for (device, bytes) in &on_devices {
            eprintln!(
                "fit: the projector takes {:.1} MiB on {device}",
                *bytes as f64 / (1024.0 * 1024.0)
            );
        }
        Ok(on_devices)
    }

    /// The projector for `model` (loaded as `args` say), when images are
    /// given; said on stderr.
    pub fn projector(
        &self,
        model: &LlamaModel,
        args: &ModelArgs,
    ) -> Result<Option<crate::media::Projector>> {
        let Some(path) = self.path(args.is_demo())? else {
            return Ok(None);
        };
        let projector = crate::media::Projector::load(model, &path, &self.params(args))?;
        eprintln!(
            "projector: {} on {} (vision {}, audio {})",
            path.display(),
            projector.backend(),
            projector.supports_vision(),
            projector.supports_audio()
        );
        Ok(Some(projector))
    }

    /// `prompt` with a marker per image where it has none, tokenized with
    /// the images read and decoded.
    pub fn chunks(
        &self,
        projector: &crate::media::Projector,
        prompt: &str,
        how: Tokenize,
    ) -> Result<crate::media::MediaChunks> {
        let images = self
            .image
            .iter()
            .map(|path| crate::media::Bitmap::from_image_file(path, projector.limits()))
            .collect::<Result<Vec<_>>>()?;
        let prompt = if prompt.contains(projector.marker()) {
            prompt.to_string()
        } else {
            format!("{}{prompt}", projector.marker().repeat(images.len()))
        };
        let refs: Vec<&crate::media::Bitmap> = images.iter().collect();
        let chunks = projector.tokenize(&prompt, &refs, how)?;
        eprintln!(
            "media: {} image(s), {} chunks, {} tokens",
            images.len(),
            chunks.len(),
            chunks.n_tokens()
        );
        Ok(chunks)
    }
}

/// Runs `main`'s body; on error prints it with its causes and exits 1.
pub fn run_main(body: impl FnOnce() -> Result<()>) {
    if let Err(e) = body() {
        eprintln!("error: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            eprintln!("  caused by: {s}");
            source = s.source();
        }
        std::process::exit(1);
    }
}
