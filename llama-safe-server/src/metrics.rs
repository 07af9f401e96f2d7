//! Counters and histograms for `GET /metrics`, in Prometheus's text format.

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

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            *self.sum.lock().unwrap_or_else(|e| e.into_inner())
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

/// What the server counts.
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

    /// The Prometheus text exposition, with the engine's gauges.
    pub fn render(&self, parallel: u32, engine: &llama_safe::engine::EngineStats) -> String {
        let mut out = String::new();
        out.push_str("# HELP llama_requests_total Requests answered, by endpoint and status.\n# TYPE llama_requests_total counter\n");
        for ((endpoint, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "llama_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            &mut out,
            "llama_tokens_generated_total",
            "Tokens generated.",
            self.tokens_generated.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "llama_prompt_tokens_total",
            "Prompt tokens decoded.",
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        self.ttft.render(
            &mut out,
            "llama_time_to_first_token_seconds",
            "Time to first token.",
        );
        self.tokens_per_second.render(
            &mut out,
            "llama_generation_tokens_per_second",
            "Generation speed per request.",
        );
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut out,
            "llama_sequences",
            "Sequences the engine decodes at once.",
            u64::from(parallel),
        );
        gauge(
            &mut out,
            "llama_sequences_active",
            "Requests generating or reading their prompt.",
            engine.active as u64,
        );
        gauge(
            &mut out,
            "llama_requests_queued",
            "Requests waiting for room.",
            engine.queued as u64,
        );
        gauge(
            &mut out,
            "llama_batch_tokens",
            "Tokens in the engine's last decode.",
            engine.last_batch_tokens,
        );
        gauge(
            &mut out,
            "llama_kv_cells",
            "KV cells of the engine's context.",
            engine.kv_cells,
        );
        gauge(
            &mut out,
            "llama_kv_cells_used",
            "KV cells holding tokens (running requests and the prompt cache).",
            engine.kv_cells_used,
        );
        counter(
            &mut out,
            "llama_decodes_total",
            "Decodes (batches) run.",
            engine.decodes,
        );
        counter(
            &mut out,
            "llama_prompt_cache_hits_total",
            "Requests that reused cached prompt tokens.",
            engine.prompt_cache_hits,
        );
        counter(
            &mut out,
            "llama_prompt_cache_tokens_total",
            "Prompt tokens reused from the cache instead of decoded.",
            engine.prompt_cache_tokens,
        );
        out
    }
}
