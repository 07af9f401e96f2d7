//! Mean, standard deviation, min and max of repeated measurements.

use serde::{Deserialize, Serialize};

/// Summary of `n` measurements of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of measurements.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for one measurement.
    pub sd: f64,
    /// Smallest measurement.
    pub min: f64,
    /// Largest measurement.
    pub max: f64,
}

impl Summary {
    /// Summarises `values`; `None` if there are none.
    ///
    /// ```
    /// let s = llama_workspace::bench::Summary::of(&[1.0, 2.0, 3.0]).unwrap();
    /// assert_eq!((s.mean, s.sd, s.min, s.max), (2.0, 1.0, 1.0, 3.0));
    /// ```
    pub fn of(values: &[f64]) -> Option<Summary> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Summary {
            n,
            mean,
            sd,
            min,
            max,
        })
    }

    /// `mean ± sd (min–max)` with `digits` decimals.
    pub fn display(&self, digits: usize) -> String {
        format!(
            "{:.d$} ± {:.d$} ({:.d$}–{:.d$})",
            self.mean,
            self.sd,
            self.min,
            self.max,
            d = digits
        )
    }
}
