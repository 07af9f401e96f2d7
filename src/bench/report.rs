//! The benchmark's report: what ran where, every run, and per-configuration
//! summaries; written as JSON, a Markdown table and an SVG chart.

use super::config::Config;
use super::measure::{DeviceUse, RunResult};
use super::stats::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Where and how the benchmark ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The command line.
    pub command: String,
    /// Unix time at the start.
    pub started_unix: u64,
    /// The GGUF file, its size and SHA-256.
    pub model: String,
    /// Bytes.
    pub model_bytes: u64,
    /// Hex SHA-256 of the file.
    pub model_sha256: String,
    /// llama.cpp as built (`LLAMA_CPP_REVISION`, and where its source came from).
    pub llama_cpp_revision: String,
    /// Cargo features of the build (`cuda`, ...); empty for CPU.
    pub features: Vec<String>,
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// Logical cores available to the process.
    pub cores: usize,
    /// GPU devices ggml saw (name: description).
    pub gpus: Vec<String>,
    /// CPU threads given to llama.cpp.
    pub threads: u32,
    /// Measured runs per configuration.
    pub runs: usize,
    /// Unmeasured warm-up runs per configuration.
    pub warmup: usize,
    /// Prompt.
    pub prompt: String,
    /// Most tokens generated per run.
    pub max_tokens: u32,
    /// Context size.
    pub ctx_size: u32,
    /// Layers on the GPU.
    pub n_gpu_layers: u32,
}

/// Summaries of one configuration's runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigSummary {
    /// Configuration name.
    pub config: String,
    /// Load time, ms.
    pub load_ms: Summary,
    /// Time to first token, ms.
    pub ttft_ms: Summary,
    /// Prompt tokens per second.
    pub prompt_tps: Summary,
    /// Generation tokens per second.
    pub generation_tps: Summary,
    /// Peak resident memory, MiB (absent where /proc is missing).
    pub peak_rss_mib: Option<Summary>,
    /// GPU memory the load took (after minus before, all GPUs), MiB.
    pub gpu_mib: Option<Summary>,
    /// Weight bytes per buffer type (the same in every run).
    pub buffers: BTreeMap<String, u64>,
    /// Tensors moved by the overrides.
    pub moved_tensors: usize,
}

/// The Rust path against the C program, run by run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overhead {
    /// Rust configuration compared (`baseline`).
    pub rust_config: String,
    /// Rust generation tokens/s divided by C's, per run pair.
    pub generation_tps_ratio: Summary,
    /// Rust load time divided by C's, per run pair.
    pub load_ms_ratio: Summary,
}

/// Both fits on one budget: llama.cpp's (`llama-fit-params`, which reads
/// the free memory itself) and ours given the budget llama.cpp saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitComparison {
    /// The configuration (`fit=100M`).
    pub config: String,
    /// The margin given to llama.cpp (`-fitt`), MiB.
    pub margin_mib: u64,
    /// llama.cpp's choice, and its bytes once loaded.
    pub peer: Result<super::peer::PeerFit, String>,
    /// Our choice for llama.cpp's budget, and the device bytes it predicts.
    pub ours: Result<(String, u64), String>,
}

/// Everything the benchmark writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Where and how.
    pub meta: Meta,
    /// Every measured run, in the order run (configurations interleaved).
    pub runs: Vec<RunResult>,
    /// One entry per configuration, in the order given.
    pub summaries: Vec<ConfigSummary>,
    /// Present when the C program ran.
    pub overhead: Option<Overhead>,
    /// llama.cpp's own tools on the same device, per fixed configuration
    /// (with `moe_bench --llama-cpp DIR`; fit configurations are in
    /// `peer_fit`).
    #[serde(default)]
    pub peer: Vec<super::peer::PeerMemory>,
    /// llama.cpp's `--fit` choice for each fit configuration, and ours for
    /// the same budget.
    #[serde(default)]
    pub peer_fit: Vec<FitComparison>,
}

const MIB: f64 = 1024.0 * 1024.0;

impl Report {
    /// Builds the summaries from `runs` (configurations in `order`).
    pub fn new(meta: Meta, runs: Vec<RunResult>, order: &[String]) -> Report {
        let summaries = order
            .iter()
            .filter_map(|name| summarize(name, &runs))
            .collect();
        let overhead = overhead(&runs);
        Report {
            meta,
            runs,
            summaries,
            overhead,
            peer: Vec::new(),
            peer_fit: Vec::new(),
        }
    }

    /// A Markdown table of the summaries, with the setup above it.
    pub fn markdown(&self) -> String {
        let m = &self.meta;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Model `{}` ({:.1} MiB, sha256 `{}`), llama.cpp {}, features [{}], {} ({} cores{}), \
             {} threads, {} runs per configuration after {} warm-up, interleaved; prompt {:?}, \
             up to {} tokens, greedy.\n",
            m.model,
            m.model_bytes as f64 / MIB,
            &m.model_sha256[..16.min(m.model_sha256.len())],
            m.llama_cpp_revision,
            m.features.join(", "),
            m.cpu,
            m.cores,
            if m.gpus.is_empty() {
                ", no GPU".to_string()
            } else {
                format!(", {}", m.gpus.join(", "))
            },
            m.threads,
            m.runs,
            m.warmup,
            m.prompt,
            m.max_tokens
        );
        s.push_str("| config | moved | weights by buffer (MiB) | GPU MiB | load ms | TTFT ms | prompt tok/s | gen tok/s | peak RSS MiB |\n");
        s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        for c in &self.summaries {
            let buffers = if c.buffers.is_empty() {
                "—".to_string()
            } else {
                c.buffers
                    .iter()
                    .map(|(k, v)| format!("{k} {:.2}", *v as f64 / MIB))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let opt = |s: &Option<Summary>, d| s.map_or("—".into(), |s| s.display(d));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.config,
                c.moved_tensors,
                buffers,
                opt(&c.gpu_mib, 1),
                c.load_ms.display(1),
                c.ttft_ms.display(2),
                c.prompt_tps.display(0),
                c.generation_tps.display(0),
                opt(&c.peak_rss_mib, 1)
            );
        }
        s.push_str(&self.text_agreement());
        s.push_str(&self.device_table());
        s.push_str(&self.peer_table());
        if let Some(o) = &self.overhead {
            let _ = writeln!(
                s,
                "\nRust (`{}`) ÷ C, paired by run: generation tok/s {}, load time {} \
                 (mean ± sd (min–max), {} pairs).",
                o.rust_config,
                o.generation_tps_ratio.display(3),
                o.load_ms_ratio.display(3),
                o.generation_tps_ratio.n
            );
        }
        s
    }

    /// The accelerator table, for runs that put layers on a GPU or an RPC
    /// device: bytes on it (weights, KV cache, compute buffers; llama.cpp's
    /// memory breakdown), what the dry run predicted and its error, host
    /// bytes, ggml's device memory query after the load and after the first
    /// decode (each less its value before the load), and an RPC server's
    /// resident memory growth. Empty without such runs.
    fn device_table(&self) -> String {
        let mut s = String::new();
        let mut header = false;
        for c in &self.summaries {
            let uses: Vec<&DeviceUse> = self
                .runs
                .iter()
                .filter(|r| r.config == c.config)
                .filter_map(|r| r.device_use.as_ref())
                .collect();
            let Some(first) = uses.first() else { continue };
            if !header {
                header = true;
                let _ = writeln!(
                    s,
                    "\nOn the device `{}` (MiB; mean ± sd (min–max) over the runs):\n",
                    first.device
                );
                s.push_str("| config | device total | weights | KV cache | compute | predicted | prediction error | host (weights+KV+compute) | device query: used after load | used after 1st decode | RPC server RSS growth |\n");
                s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
            }
            let of = |f: &dyn Fn(&DeviceUse) -> f64| {
                Summary::of(&uses.iter().map(|u| f(u)).collect::<Vec<_>>())
                    .map_or("—".into(), |x| x.display(1))
            };
            let mib = |b: u64| b as f64 / MIB;
            // ggml's own device query (total - free), as it changed over
            // the load and over the first decode.
            let query = |after: &dyn Fn(&super::measure::DeviceMemory) -> Option<u64>| {
                let deltas: Vec<f64> = self
                    .runs
                    .iter()
                    .filter(|r| r.config == c.config)
                    .flat_map(|r| r.devices.iter())
                    .filter(|d| d.name == first.device)
                    .filter_map(|d| Some((after(d)? as f64 - d.used_before as f64) / MIB))
                    .collect();
                Summary::of(&deltas).map_or("—".into(), |x| x.display(1))
            };
            let growth: Vec<f64> = uses
                .iter()
                .filter_map(|u| Some(u.server_rss_loaded? as f64 - u.server_rss_idle? as f64))
                .map(|b| b / MIB)
                .collect();
            let error = Summary::of(
                &uses
                    .iter()
                    .map(|u| 100.0 * (u.predicted_bytes as f64 / u.total().max(1) as f64 - 1.0))
                    .collect::<Vec<_>>(),
            )
            .map_or("—".into(), |x| format!("{} %", x.display(2)));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.config,
                of(&|u| mib(u.total())),
                of(&|u| mib(u.model_bytes)),
                of(&|u| mib(u.context_bytes)),
                of(&|u| mib(u.compute_bytes)),
                of(&|u| mib(u.predicted_bytes)),
                error,
                of(&|u| mib(u.host_bytes)),
                query(&|d| Some(d.used_after)),
                query(&|d| d.used_after_decode),
                Summary::of(&growth).map_or("—".into(), |x| x.display(1)),
            );
        }
        s
    }

    /// Whether every run generated the same text as the first one, and
    /// where each that did not first differs.
    fn text_agreement(&self) -> String {
        let Some(first) = self.runs.first() else {
            return String::new();
        };
        let differing: Vec<String> = self
            .runs
            .iter()
            .filter(|r| r.text != first.text)
            .map(|r| {
                let at = r
                    .text
                    .chars()
                    .zip(first.text.chars())
                    .take_while(|(a, b)| a == b)
                    .count();
                format!("{} (from character {at})", r.config)
            })
            .collect();
        if differing.is_empty() {
            format!(
                "\nText: all {} runs generated the same text as `{}`'s first run.\n",
                self.runs.len(),
                first.config
            )
        } else {
            format!(
                "\nText: {} of {} runs differ from `{}`'s first run: {}.\n",
                differing.len(),
                self.runs.len(),
                first.config,
                differing.join(", ")
            )
        }
    }

    /// llama.cpp's own figures beside ours, per configuration, in whole MiB
    /// as llama.cpp prints them, and the two fits' choices. Empty without
    /// `--llama-cpp`.
    fn peer_table(&self) -> String {
        let mut s = String::new();
        if !self.peer.is_empty() {
            s.push_str("\nllama.cpp's own tools on the same device (MiB: weights + KV cache + compute = total; llama.cpp truncates to whole MiB):\n\n");
            s.push_str("| config | llama.cpp flags | llama-fit-params dry run | llama-server loaded | ours loaded (mean) |\n");
            s.push_str("| --- | --- | --- | --- | --- |\n");
        }
        let show = |r: &Result<super::peer::PeerMib, String>| match r {
            Ok(m) => format!(
                "{} + {} + {} = {}",
                m.model,
                m.context,
                m.compute,
                m.total()
            ),
            Err(e) => format!("— ({})", e.replace('|', "/")),
        };
        for p in &self.peer {
            let ours: Vec<f64> = self
                .runs
                .iter()
                .filter(|r| r.config == p.config)
                .filter_map(|r| r.device_use.as_ref())
                .map(|u| u.total() as f64 / MIB)
                .collect();
            let _ = writeln!(
                s,
                "| {} | `{}` | {} | {} | {} |",
                p.config,
                p.args.join(" "),
                show(&p.dry_run),
                show(&p.served),
                Summary::of(&ours).map_or("—".into(), |x| format!("{:.1}", x.mean)),
            );
        }
        if !self.peer_fit.is_empty() {
            s.push_str("\nThe two fits on the same budget (llama.cpp reads the free memory itself; ours is given the budget it saw):\n\n");
            s.push_str("| config | budget MiB (free − margin) | llama.cpp chose | llama-server loaded | ours chose | ours on the device (MiB) |\n");
            s.push_str("| --- | --- | --- | --- | --- | --- |\n");
        }
        for f in &self.peer_fit {
            let (budget, theirs, served) = match &f.peer {
                Ok(p) => (
                    format!("{} ({} − {})", p.budget_mib, p.free_mib, f.margin_mib),
                    format!("`{}`", p.flags),
                    show(&p.served),
                ),
                Err(e) => (
                    "—".into(),
                    format!("failed: {}", e.replace('|', "/")),
                    "—".into(),
                ),
            };
            let (ours, bytes) = match &f.ours {
                Ok((choice, bytes)) => (choice.clone(), format!("{:.1}", *bytes as f64 / MIB)),
                Err(e) => (format!("failed: {}", e.replace('|', "/")), "—".into()),
            };
            let _ = writeln!(
                s,
                "| {} | {budget} | {theirs} | {served} | {ours} | {bytes} |",
                f.config
            );
        }
        s
    }

    /// An SVG chart: weights by buffer type and GPU memory per configuration
    /// (left), generation tokens/s with min–max whiskers (right).
    pub fn svg(&self) -> String {
        let (w, h, pad, top) = (900.0, 380.0, 60.0, 50.0);
        let panel = (w - 3.0 * pad) / 2.0;
        let plot_h = h - top - 70.0;
        let n = self.summaries.len().max(1) as f64;
        let slot = panel / n;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let palette = [
            "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2",
        ];
        let mut colours: BTreeMap<&str, &str> = BTreeMap::new();
        for c in &self.summaries {
            for k in c.buffers.keys() {
                let next = palette[colours.len() % palette.len()];
                colours.entry(k).or_insert(next);
            }
        }

        // Left: MiB per buffer type, stacked; GPU memory as a black tick.
        let max_mib = self
            .summaries
            .iter()
            .map(|c| {
                let weights = c.buffers.values().sum::<u64>() as f64 / MIB;
                weights.max(c.gpu_mib.map_or(0.0, |g| g.max))
            })
            .fold(0.0, f64::max)
            .max(1e-9);
        let x0 = pad;
        let _ = writeln!(
            s,
            r#"<text x="{x0}" y="25" font-size="14">Weights by buffer (MiB); tick: GPU memory in use</text>"#
        );
        for (i, c) in self.summaries.iter().enumerate() {
            let x = x0 + i as f64 * slot + slot * 0.2;
            let bw = slot * 0.6;
            let mut y = top + plot_h;
            for (k, v) in &c.buffers {
                let bh = *v as f64 / MIB / max_mib * plot_h;
                y -= bh;
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}" fill="{}"><title>{k}: {:.2} MiB</title></rect>"#,
                    colours[k.as_str()],
                    *v as f64 / MIB
                );
            }
            if let Some(g) = c.gpu_mib {
                let gy = top + plot_h - g.mean / max_mib * plot_h;
                let _ = writeln!(
                    s,
                    r#"<line x1="{x:.1}" x2="{:.1}" y1="{gy:.1}" y2="{gy:.1}" stroke="black" stroke-width="3"/>"#,
                    x + bw
                );
            }
            label(&mut s, x + bw / 2.0, top + plot_h + 16.0, &c.config);
        }
        axis(&mut s, x0, top, plot_h, panel, max_mib, "MiB");
        for (j, (k, col)) in colours.iter().enumerate() {
            let ly = h - 30.0 + (j / 3) as f64 * 14.0;
            let lx = x0 + (j % 3) as f64 * 140.0;
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{:.1}" width="10" height="10" fill="{col}"/><text x="{:.1}" y="{ly:.1}">{k}</text>"#,
                ly - 9.0,
                lx + 14.0
            );
        }

        // Right: generation tokens/s.
        let x1 = 2.0 * pad + panel;
        let max_tps = self
            .summaries
            .iter()
            .map(|c| c.generation_tps.max)
            .fold(0.0, f64::max)
            .max(1e-9);
        let _ = writeln!(
            s,
            r#"<text x="{x1}" y="25" font-size="14">Generation tok/s (whiskers: min–max, n = {})</text>"#,
            self.meta.runs
        );
        for (i, c) in self.summaries.iter().enumerate() {
            let x = x1 + i as f64 * slot + slot * 0.2;
            let bw = slot * 0.6;
            let y_of = |v: f64| top + plot_h - v / max_tps * plot_h;
            let t = c.generation_tps;
            let _ = writeln!(
                s,
                r##"<rect x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="#4c78a8"><title>{}: {}</title></rect>"##,
                y_of(t.mean),
                t.mean / max_tps * plot_h,
                c.config,
                t.display(1)
            );
            let cx = x + bw / 2.0;
            let _ = writeln!(
                s,
                r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/>"#,
                y_of(t.min),
                y_of(t.max)
            );
            label(&mut s, cx, top + plot_h + 16.0, &c.config);
        }
        axis(&mut s, x1, top, plot_h, panel, max_tps, "tok/s");
        s.push_str("</svg>\n");
        s
    }
}

fn label(s: &mut String, x: f64, y: f64, text: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle">{text}</text>"#
    );
}

fn axis(s: &mut String, x: f64, top: f64, plot_h: f64, width: f64, max: f64, unit: &str) {
    let bottom = top + plot_h;
    let _ = writeln!(
        s,
        r#"<line x1="{x}" x2="{x}" y1="{top}" y2="{bottom}" stroke="black"/><line x1="{x}" x2="{:.1}" y1="{bottom}" y2="{bottom}" stroke="black"/>"#,
        x + width
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let y = bottom - plot_h * k as f64 / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10">{}</text>"#,
            x - 4.0,
            y + 3.0,
            if max >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="10">{unit}</text>"#,
        x - 40.0,
        top - 6.0
    );
}

fn summarize(name: &str, runs: &[RunResult]) -> Option<ConfigSummary> {
    let mine: Vec<&RunResult> = runs.iter().filter(|r| r.config == name).collect();
    let first = mine.first()?;
    let of = |f: &dyn Fn(&RunResult) -> f64| {
        Summary::of(&mine.iter().map(|r| f(r)).collect::<Vec<_>>()).expect("at least one run")
    };
    let rss: Vec<f64> = mine
        .iter()
        .filter_map(|r| r.peak_rss_bytes.map(|b| b as f64 / MIB))
        .collect();
    let gpu: Vec<f64> = mine
        .iter()
        .filter(|r| !r.devices.is_empty())
        .map(|r| {
            r.devices
                .iter()
                .map(|d| d.used_after as f64 - d.used_before as f64)
                .sum::<f64>()
                / MIB
        })
        .collect();
    Some(ConfigSummary {
        config: name.to_string(),
        load_ms: of(&|r| r.load_ms),
        ttft_ms: of(&|r| r.ttft_ms),
        prompt_tps: of(&|r| r.prompt_tps),
        generation_tps: of(&|r| r.generation_tps),
        peak_rss_mib: Summary::of(&rss),
        gpu_mib: Summary::of(&gpu),
        buffers: first.buffers.clone(),
        moved_tensors: first.moved_tensors,
    })
}

/// Pairs the k-th `c` run with the k-th `baseline` run.
fn overhead(runs: &[RunResult]) -> Option<Overhead> {
    let pick = |config: Config| {
        let name = config.name();
        runs.iter().filter(move |r| r.config == name)
    };
    let pairs: Vec<(&RunResult, &RunResult)> =
        pick(Config::Baseline).zip(pick(Config::CGreedy)).collect();
    if pairs.is_empty() {
        return None;
    }
    let ratio = |f: &dyn Fn(&RunResult) -> f64| {
        let v: Vec<f64> = pairs
            .iter()
            .filter(|(_, c)| f(c) > 0.0)
            .map(|(r, c)| f(r) / f(c))
            .collect();
        Summary::of(&v)
    };
    Some(Overhead {
        rust_config: Config::Baseline.name(),
        generation_tps_ratio: ratio(&|r| r.generation_tps)?,
        load_ms_ratio: ratio(&|r| r.load_ms)?,
    })
}
