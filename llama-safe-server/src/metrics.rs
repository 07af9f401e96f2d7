//! Counters and histograms for `GET /metrics`, in Prometheus's text format;
//! with several models, every sample carries a `model` label and each
//! metric family is written once.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A cumulative histogram with fixed buckets.
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum: Mutex<f64>,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: Mutex::new(0.0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if v <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        *self.sum.lock().unwrap_or_else(|e| e.into_inner()) += v;
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut Families, name: &'static str, help: &'static str, label: &str) {
        let f = out.family(name, help, "histogram");
        let sep = if label.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            f.push(format!(
                "{name}_bucket{{{label}{sep}le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            ));
        }
        let n = self.count.load(Ordering::Relaxed);
        f.push(format!("{name}_bucket{{{label}{sep}le=\"+Inf\"}} {n}"));
        let sum = *self.sum.lock().unwrap_or_else(|e| e.into_inner());
        f.push(format!("{name}_sum{} {sum}", braces(label)));
        f.push(format!("{name}_count{} {n}", braces(label)));
    }
}

/// `{label}`, or nothing for no label.
fn braces(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!("{{{label}}}")
    }
}

/// Metric families in the order first met, each with its samples.
#[derive(Default)]
pub struct Families {
    order: Vec<&'static str>,
    families: BTreeMap<&'static str, (&'static str, &'static str, Vec<String>)>,
}

impl Families {
    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
    ) -> &mut Vec<String> {
        if !self.families.contains_key(name) {
            self.order.push(name);
        }
        &mut self
            .families
            .entry(name)
            .or_insert((help, kind, Vec::new()))
            .2
    }

    fn sample(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        label: &str,
        v: u64,
    ) {
        self.family(name, help, kind)
            .push(format!("{name}{} {v}", braces(label)));
    }

    /// The text exposition.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for name in self.order {
            let (help, kind, lines) = &self.families[name];
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

/// What the server counts, per model.
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Tokens generated, all requests.
    pub tokens_generated: AtomicU64,
    /// Prompt tokens decoded, all requests.
    pub prompt_tokens: AtomicU64,
    /// Time to first token, seconds.
    pub ttft: Histogram,
    /// Generation speed per request, tokens per second.
    pub tokens_per_second: Histogram,
    /// Tokens drafted by speculative decoding.
    pub drafted: AtomicU64,
    /// Drafted tokens the model agreed with.
    pub accepted: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            tokens_generated: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            ttft: Histogram::new(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            tokens_per_second: Histogram::new(&[
                1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
            ]),
            drafted: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one request to `endpoint` answered with `status`.
    pub fn request(&self, endpoint: &'static str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((endpoint, status))
            .or_default() += 1;
    }

    /// The Prometheus text exposition of one model, with the engine's
    /// gauges.
    pub fn render(&self, parallel: u32, engine: &llama_safe::engine::EngineStats) -> String {
        let mut out = Families::default();
        self.render_into(&mut out, None, parallel, engine);
        out.finish()
    }

    /// Adds this model's samples to `out`, labelled `model="NAME"` when
    /// `model` is given.
    pub fn render_into(
        &self,
        out: &mut Families,
        model: Option<&str>,
        parallel: u32,
        engine: &llama_safe::engine::EngineStats,
    ) {
        let label = model.map_or(String::new(), |m| {
            format!("model=\"{}\"", m.replace(['"', '\\', '\n'], "_"))
        });
        let sep = if label.is_empty() { "" } else { "," };
        {
            let f = out.family(
                "llama_requests_total",
                "Requests answered, by endpoint and status.",
                "counter",
            );
            for ((endpoint, status), n) in self
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                f.push(format!(
                    "llama_requests_total{{{label}{sep}endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
                ));
            }
        }
        let counter = "counter";
        let gauge = "gauge";
        out.sample(
            "llama_tokens_generated_total",
            "Tokens generated.",
            counter,
            &label,
            self.tokens_generated.load(Ordering::Relaxed),
        );
        out.sample(
            "llama_speculative_drafted_total",
            "Tokens drafted by speculative decoding.",
            counter,
            &label,
            self.drafted.load(Ordering::Relaxed),
        );
        out.sample(
            "llama_speculative_accepted_total",
            "Drafted tokens the model agreed with.",
            counter,
            &label,
            self.accepted.load(Ordering::Relaxed),
        );
        out.sample(
            "llama_prompt_tokens_total",
            "Prompt tokens decoded.",
            counter,
            &label,
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        self.ttft.render(
            out,
            "llama_time_to_first_token_seconds",
            "Time to first token.",
            &label,
        );
        self.tokens_per_second.render(
            out,
            "llama_generation_tokens_per_second",
            "Generation speed per request.",
            &label,
        );
        out.sample(
            "llama_sequences",
            "Sequences the engine decodes at once.",
            gauge,
            &label,
            u64::from(parallel),
        );
        out.sample(
            "llama_sequences_active",
            "Requests generating or reading their prompt.",
            gauge,
            &label,
            engine.active as u64,
        );
        out.sample(
            "llama_requests_queued",
            "Requests waiting for room.",
            gauge,
            &label,
            engine.queued as u64,
        );
        out.sample(
            "llama_batch_tokens",
            "Tokens in the engine's last decode.",
            gauge,
            &label,
            engine.last_batch_tokens,
        );
        out.sample(
            "llama_kv_cells",
            "KV cells of the engine's context.",
            gauge,
            &label,
            engine.kv_cells,
        );
        out.sample(
            "llama_kv_cells_used",
            "KV cells holding tokens (running requests and the prompt cache).",
            gauge,
            &label,
            engine.kv_cells_used,
        );
        out.sample(
            "llama_decodes_total",
            "Decodes (batches) run.",
            counter,
            &label,
            engine.decodes,
        );
        out.sample(
            "llama_prompt_cache_hits_total",
            "Requests that reused cached prompt tokens.",
            counter,
            &label,
            engine.prompt_cache_hits,
        );
        out.sample(
            "llama_prompt_cache_tokens_total",
            "Prompt tokens reused from the cache instead of decoded.",
            counter,
            &label,
            engine.prompt_cache_tokens,
        );
    }
}
