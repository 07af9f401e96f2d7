//! What one benchmark configuration runs: where the experts go, or the C
//! baseline program.

use serde::{Deserialize, Serialize};

/// One configuration of the A/B benchmark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Config {
    /// Every layer on the GPU (or wherever `n_gpu_layers` says), no overrides.
    Baseline,
    /// `with_cpu_moe_all()`.
    CpuMoe,
    /// `with_n_cpu_moe(k)`.
    NCpuMoe(u32),
    /// The same greedy loop as `Baseline`, through the C API (`bench/greedy.c`).
    CGreedy,
    /// `LlamaModelParams::fit`: to the devices' free memory less 1 GiB
    /// (`None`), or to a fixed budget per device in bytes.
    Fit(Option<u64>),
}

impl Config {
    /// Parses `baseline`, `cpu-moe`, `n-cpu-moe=K`, `c`, `fit` or
    /// `fit=SIZE` (bytes, or with K, M, G, T).
    ///
    /// ```
    /// use llama_workspace::bench::Config;
    /// assert_eq!(Config::parse("n-cpu-moe=3"), Ok(Config::NCpuMoe(3)));
    /// assert_eq!(Config::parse("fit=8M"), Ok(Config::Fit(Some(8 << 20))));
    /// assert!(Config::parse("n-cpu-moe=x").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Config, String> {
        match s.trim() {
            "baseline" => Ok(Config::Baseline),
            "cpu-moe" => Ok(Config::CpuMoe),
            "c" => Ok(Config::CGreedy),
            "fit" => Ok(Config::Fit(None)),
            other => {
                if let Some(k) = other.strip_prefix("n-cpu-moe=") {
                    return k
                        .parse()
                        .map(Config::NCpuMoe)
                        .map_err(|_| format!("n-cpu-moe wants a layer count, got {k:?}"));
                }
                if let Some(size) = other.strip_prefix("fit=") {
                    return llama_safe::cli::parse_size(size).map(|b| Config::Fit(Some(b)));
                }
                Err(format!(
                    "unknown configuration {other:?}: use baseline, cpu-moe, n-cpu-moe=K, c, \
                     fit or fit=SIZE"
                ))
            }
        }
    }

    /// The name used in reports (`baseline`, `cpu-moe`, `n-cpu-moe=K`, `c`).
    pub fn name(&self) -> String {
        match self {
            Config::Baseline => "baseline".into(),
            Config::CpuMoe => "cpu-moe".into(),
            Config::NCpuMoe(k) => format!("n-cpu-moe={k}"),
            Config::CGreedy => "c".into(),
            Config::Fit(None) => "fit".into(),
            Config::Fit(Some(b)) if b % (1 << 20) == 0 => format!("fit={}M", b >> 20),
            Config::Fit(Some(b)) => format!("fit={b}"),
        }
    }
}
