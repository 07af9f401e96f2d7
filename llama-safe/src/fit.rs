//! Fitting a load to the devices as they are: read each device's free
//! memory, keep a margin, and choose the MoE offload, then the GPU layers,
//! then the context size, from dry runs of llama.cpp's loader and context
//! (like llama.cpp's `--fit`, `--fit-target` and `--fit-ctx`).

use crate::backend::LlamaBackend;
use crate::context::params::ContextParams;
use crate::context::{device_bytes, MemoryUse};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::LlamaModel;
use crate::model_params::LlamaModelParams;
use crate::moe::MoeMode;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// What [`LlamaModelParams::fit`] may change, and how much room it leaves.
///
/// ```
/// let options = llama_safe::fit::FitOptions::default()
///     .with_margin(512 << 20)
///     .with_min_ctx(2048);
/// assert_eq!(options.margin(), 512 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "builders return a new value: use it"]
pub struct FitOptions {
    margin: u64,
    min_ctx: u32,
    budget: Option<u64>,
    reserved: BTreeMap<String, u64>,
}

impl Default for FitOptions {
    /// llama.cpp's defaults: leave 1 GiB free on each device
    /// (`--fit-target 1024`), shrink the context no lower than 4,096 tokens
    /// (`--fit-ctx 4096`).
    fn default() -> Self {
        FitOptions {
            margin: 1 << 30,
            min_ctx: 4096,
            budget: None,
            reserved: BTreeMap::new(),
        }
    }
}

impl FitOptions {
    /// Bytes to leave free on each device (llama.cpp's `--fit-target`, in
    /// bytes): the budget is the device's free memory less this.
    pub fn with_margin(mut self, bytes: u64) -> Self {
        self.margin = bytes;
        self
    }

    /// The smallest context the fit may shrink to (llama.cpp's `--fit-ctx`);
    /// a context asked for below it is never grown.
    pub fn with_min_ctx(mut self, n: u32) -> Self {
        self.min_ctx = n;
        self
    }

    /// A fixed budget per device in bytes, instead of its free memory less
    /// the margin (for planning on another machine, and for tests).
    pub fn with_budget(mut self, bytes: Option<u64>) -> Self {
        self.budget = bytes;
        self
    }

    /// Bytes something else will take on `device` (a projector's encoder,
    /// see `media::Projector::plan_memory`): taken from its budget, as
    /// llama.cpp's `--fit` does for an `--mmproj`. Adds to what was
    /// reserved there before.
    pub fn with_reserved(mut self, device: impl Into<String>, bytes: u64) -> Self {
        *self.reserved.entry(device.into()).or_default() += bytes;
        self
    }

    /// Bytes reserved on `device`.
    pub fn reserved(&self, device: &str) -> u64 {
        self.reserved.get(device).copied().unwrap_or(0)
    }

    /// Bytes left free on each device.
    pub fn margin(&self) -> u64 {
        self.margin
    }

    /// The context floor.
    pub fn min_ctx(&self) -> u32 {
        self.min_ctx
    }
}

/// One device a fit placed something on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFit {
    /// Device name (`Vulkan0`, `CUDA0`, `RPC0`).
    pub name: String,
    /// Free memory the device reported (`None` with a fixed budget).
    pub free: Option<u64>,
    /// Bytes the fit allowed on it.
    pub budget: u64,
    /// Bytes the chosen settings put on it: weights, KV cache and compute.
    pub bytes: u64,
}

/// What [`LlamaModelParams::fit`] chose, and why.
#[derive(Debug, Clone)]
#[must_use = "builders return a new value: use it"]
pub struct Fitted {
    /// The params to load with: the caller's, with the chosen MoE mode and
    /// GPU layers.
    pub params: LlamaModelParams,
    /// The context params to use: the caller's, with the chosen size.
    pub ctx: ContextParams,
    /// The GPU layers chosen, if the fit had to lower them.
    pub n_gpu_layers: Option<u32>,
    /// Every device that gets something, with its budget and bytes.
    pub devices: Vec<DeviceFit>,
    /// The whole predicted breakdown, per buffer type.
    pub memory: Vec<MemoryUse>,
    /// Dry runs it took (each a `no_alloc` load and context).
    pub dry_runs: u32,
    /// What was tried and decided, one line each, in order.
    pub steps: Vec<String>,
}

impl Fitted {
    /// The MoE mode chosen (that of [`params`](Self::params)).
    pub fn moe(&self) -> MoeMode {
        self.params.moe_mode()
    }

    /// The context size chosen (that of [`ctx`](Self::ctx)).
    pub fn n_ctx(&self) -> u32 {
        self.ctx.n_ctx()
    }
}

impl fmt::Display for Fitted {
    /// The steps, one per line, as `moe_generate --fit` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            writeln!(f, "fit: {step}")?;
        }
        Ok(())
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Per-device budgets, read once: the registry's free memory less the
/// margin, or the fixed budget.
struct Budgets {
    options: FitOptions,
    free: BTreeMap<String, u64>,
}

impl Budgets {
    fn read(backend: &LlamaBackend, options: &FitOptions) -> Budgets {
        let free = backend
            .devices()
            .into_iter()
            .map(|d| (d.name, d.memory_free))
            .collect();
        Budgets {
            options: options.clone(),
            free,
        }
    }

    fn budget(&self, device: &str) -> u64 {
        let budget = match self.options.budget {
            Some(b) => b,
            None => self
                .free
                .get(device)
                .map_or(0, |free| free.saturating_sub(self.options.margin)),
        };
        budget.saturating_sub(self.options.reserved(device))
    }

    /// The devices in `uses`, each with its bytes and budget.
    fn devices(&self, uses: &[MemoryUse]) -> Vec<DeviceFit> {
        let mut names: Vec<&str> = uses
            .iter()
            .filter(|u| !u.host)
            .filter_map(|u| u.device.as_deref())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|name| DeviceFit {
                name: name.to_string(),
                free: match self.options.budget {
                    Some(_) => None,
                    None => self.free.get(name).copied(),
                },
                budget: self.budget(name),
                bytes: device_bytes(uses, Some(name)),
            })
            .collect()
    }

    fn fits(&self, uses: &[MemoryUse]) -> bool {
        self.devices(uses).iter().all(|d| d.bytes <= d.budget)
    }

    /// The first device over its budget, for messages.
    fn over(&self, uses: &[MemoryUse]) -> Option<DeviceFit> {
        self.devices(uses).into_iter().find(|d| d.bytes > d.budget)
    }
}

/// The largest value in `lo..=hi` whose measurement fits, knowing `lo`'s
/// does (measured as `at_lo`) and that the bytes grow with the value: a
/// binary search, about `log2(hi - lo)` measurements.
pub(crate) fn largest_fitting<T>(
    lo: u32,
    hi: u32,
    at_lo: T,
    mut measure: impl FnMut(u32) -> Result<T>,
    fits: impl Fn(&T) -> bool,
) -> Result<(u32, T)> {
    let (mut lo, mut hi, mut best) = (lo, hi, at_lo);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let measured = measure(mid)?;
        if fits(&measured) {
            lo = mid;
            best = measured;
        } else {
            hi = mid - 1;
        }
    }
    Ok((lo, best))
}

/// The state of one fit: the file, the budgets, the dry runs so far and
/// what was decided.
struct Fitter<'a> {
    file: GgufFile,
    ctx: &'a ContextParams,
    budgets: Budgets,
    dry_runs: std::cell::Cell<u32>,
    steps: Vec<String>,
}

impl Fitter<'_> {
    fn measure(&self, params: &LlamaModelParams, n_ctx: u32) -> Result<Vec<MemoryUse>> {
        self.dry_runs.set(self.dry_runs.get() + 1);
        LlamaModel::dry_memory(&self.file, params, &self.ctx.clone().with_n_ctx(n_ctx))
    }

    /// [`largest_fitting`] over dry runs of `candidate(value)` against the
    /// budgets.
    fn largest_fitting(
        &self,
        lo: u32,
        hi: u32,
        at_lo: Vec<MemoryUse>,
        candidate: impl Fn(u32) -> (LlamaModelParams, u32),
    ) -> Result<(u32, Vec<MemoryUse>)> {
        largest_fitting(
            lo,
            hi,
            at_lo,
            |value| {
                let (params, n_ctx) = candidate(value);
                self.measure(&params, n_ctx)
            },
            |uses| self.budgets.fits(uses),
        )
    }

    fn describe(&self, uses: &[MemoryUse]) -> String {
        let devices = self.budgets.devices(uses);
        if devices.is_empty() {
            return "nothing on a device".into();
        }
        devices
            .iter()
            .map(|d| format!("{} {} of {}", d.name, mib(d.bytes), mib(d.budget)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn done(
        self,
        params: LlamaModelParams,
        n_gpu_layers: Option<u32>,
        n_ctx: u32,
        memory: Vec<MemoryUse>,
    ) -> Fitted {
        Fitted {
            ctx: self.ctx.clone().with_n_ctx(n_ctx),
            devices: self.budgets.devices(&memory),
            params,
            n_gpu_layers,
            memory,
            dry_runs: self.dry_runs.get(),
            steps: self.steps,
        }
    }
}

impl LlamaModelParams {
    /// Fits these params and `ctx` to the devices' free memory, as
    /// llama.cpp's `--fit` does, and says what it chose and why.
    ///
    /// Each device's budget is its free memory (as ggml reports it) less
    /// [`FitOptions::with_margin`]. If everything fits as asked, nothing
    /// changes. Otherwise, in this order, each step only when the one before
    /// cannot fit:
    ///
    /// 1. the smallest [`with_n_cpu_moe`](Self::with_n_cpu_moe) that fits
    ///    (never fewer layers than these params already keep on the host);
    /// 2. with every expert on the host, the most
    ///    [`with_n_gpu_layers`](Self::with_n_gpu_layers) that fit (llama.cpp
    ///    offloads the last layers), then the experts of those layers back
    ///    on the device while they fit (the smallest `n_cpu_moe` again);
    /// 3. with no layer on the GPU, the largest context down to
    ///    [`FitOptions::with_min_ctx`].
    ///
    /// Explicit tensor overrides, devices and every other setting are kept
    /// as they are: the MoE patterns come after the caller's own overrides.
    /// Every candidate is a dry run of llama.cpp's loader and context (no
    /// weights are read), so device bytes are what a load will allocate.
    /// Nothing fitting even at the floor is [`Error::BudgetTooSmall`].
    ///
    /// ```
    /// use llama_safe::{demo::DemoModel, fit::FitOptions, ContextParams, LlamaModelParams};
    /// let ctx = ContextParams::default().with_n_ctx(256);
    /// let fitted = LlamaModelParams::default().fit(DemoModel::Moe.cached()?, &ctx, &FitOptions::default())?;
    /// // A CPU-only build puts nothing on a device: nothing to change.
    /// assert_eq!(fitted.n_ctx(), 256);
    /// println!("{fitted}");
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn fit(
        &self,
        path: impl AsRef<Path>,
        ctx: &ContextParams,
        options: &FitOptions,
    ) -> Result<Fitted> {
        let file = GgufFile::open(path)?;
        let backend = LlamaBackend::init();
        let layers = file.layer_count();
        let n_ctx = match ctx.n_ctx() {
            0 => file
                .architecture()
                .and_then(|a| file.get_u64(&format!("{a}.context_length")))
                .map_or(4096, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            n => n,
        };
        let floor = options.min_ctx.min(n_ctx);
        let mut fit = Fitter {
            file,
            ctx,
            budgets: Budgets::read(&backend, options),
            dry_runs: Default::default(),
            steps: Vec::new(),
        };

        // As asked.
        let asked = fit.measure(self, n_ctx)?;
        if fit.budgets.fits(&asked) {
            let line = format!("fits as asked: {}", fit.describe(&asked));
            fit.steps.push(line);
            return Ok(fit.done(self.clone(), None, n_ctx, asked));
        }
        let line = format!("as asked: {}: too much", fit.describe(&asked));
        fit.steps.push(line);

        // 1. Experts to the host, first layers first.
        let first = match self.moe_mode() {
            MoeMode::None => 0,
            MoeMode::FirstLayers(n) => n.min(layers),
            MoeMode::All => layers,
        };
        let all_experts = self.clone().with_n_cpu_moe(layers);
        let dense = fit.measure(&all_experts, n_ctx)?;
        if fit.budgets.fits(&dense) {
            // The smallest n that fits: the most layers (layers - n) whose
            // experts stay on the device.
            let (keep, uses) = fit.largest_fitting(0, layers - first, dense, |keep| {
                (self.clone().with_n_cpu_moe(layers - keep), n_ctx)
            })?;
            let n = layers - keep;
            let line = format!(
                "--n-cpu-moe {n}: {} (--n-cpu-moe {} does not fit)",
                fit.describe(&uses),
                n - 1
            );
            fit.steps.push(line);
            return Ok(fit.done(self.clone().with_n_cpu_moe(n), None, n_ctx, uses));
        }
        let line = format!(
            "every expert on the host: {}: the dense part does not fit either",
            fit.describe(&dense)
        );
        fit.steps.push(line);

        // 2. Fewer layers on the GPU.
        let asked_layers =
            u32::try_from(self.n_gpu_layers()).map_or(layers + 1, |n| n.min(layers + 1));
        let none = all_experts.clone().with_n_gpu_layers(0);
        let cpu_only = fit.measure(&none, n_ctx)?;
        if fit.budgets.fits(&cpu_only) {
            let (g, uses) = fit.largest_fitting(0, asked_layers, cpu_only, |g| {
                (all_experts.clone().with_n_gpu_layers(g), n_ctx)
            })?;
            let line = format!(
                "--n-gpu-layers {g} with every expert on the host: {} ({} does not fit)",
                fit.describe(&uses),
                g + 1
            );
            fit.steps.push(line);
            // Room left under the budget goes back to the experts of the
            // layers on the GPU: llama.cpp offloads the last `g` (blocks
            // from `layers + 1 - g` on), and `n_cpu_moe(n)` keeps blocks
            // `0..n` on the host, so the smallest n that still fits, not
            // below the first GPU block nor the caller's own n.
            let gpu_start = (layers + 1).saturating_sub(g).min(layers);
            let lowest = gpu_start.max(first.min(layers));
            let (keep, uses) = fit.largest_fitting(0, layers - lowest, uses, |keep| {
                (
                    self.clone()
                        .with_n_cpu_moe(layers - keep)
                        .with_n_gpu_layers(g),
                    n_ctx,
                )
            })?;
            let n = layers - keep;
            let params = self.clone().with_n_cpu_moe(n).with_n_gpu_layers(g);
            if keep > 0 {
                let why = if n > lowest {
                    format!("--n-cpu-moe {} does not fit", n - 1)
                } else {
                    "every GPU layer's experts on the device".into()
                };
                let line = format!(
                    "--n-gpu-layers {g} --n-cpu-moe {n}: {} ({why})",
                    fit.describe(&uses)
                );
                fit.steps.push(line);
            }
            return Ok(fit.done(params, Some(g), n_ctx, uses));
        }
        let line = format!(
            "--n-gpu-layers 0: {}: still too much",
            fit.describe(&cpu_only)
        );
        fit.steps.push(line);

        // 3. A smaller context, down to the floor.
        let at_floor = fit.measure(&none, floor)?;
        if let Some(over) = fit.budgets.over(&at_floor) {
            return Err(Error::BudgetTooSmall {
                needed: over.bytes,
                budget: over.budget,
            });
        }
        let (c, uses) = fit.largest_fitting(floor, n_ctx, at_floor, |c| (none.clone(), c))?;
        let line = format!(
            "context {c} (asked {n_ctx}, floor {floor}) with no layer on the GPU: {}",
            fit.describe(&uses)
        );
        fit.steps.push(line);
        Ok(fit.done(none, Some(0), c, uses))
    }
}
