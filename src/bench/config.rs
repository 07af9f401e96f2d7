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
}

impl Config {
    /// Parses `baseline`, `cpu-moe`, `n-cpu-moe=K` or `c`.
    ///
    /// ```
    /// use llama_workspace::bench::Config;
    /// assert_eq!(Config::parse("n-cpu-moe=3"), Ok(Config::NCpuMoe(3)));
    /// assert!(Config::parse("n-cpu-moe=x").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Config, String> {
        match s.trim() {
            "baseline" => Ok(Config::Baseline),
            "cpu-moe" => Ok(Config::CpuMoe),
            "c" => Ok(Config::CGreedy),
            other => match other.strip_prefix("n-cpu-moe=") {
                Some(k) => k
                    .parse()
                    .map(Config::NCpuMoe)
                    .map_err(|_| format!("n-cpu-moe wants a layer count, got {k:?}")),
                None => Err(format!(
                    "unknown configuration {other:?}: use baseline, cpu-moe, n-cpu-moe=K or c"
                )),
            },
        }
    }

    /// The name used in reports (`baseline`, `cpu-moe`, `n-cpu-moe=K`, `c`).
    pub fn name(&self) -> String {
        match self {
            Config::Baseline => "baseline".into(),
            Config::CpuMoe => "cpu-moe".into(),
            Config::NCpuMoe(k) => format!("n-cpu-moe={k}"),
            Config::CGreedy => "c".into(),
        }
    }
}
