//! Latency summaries: exact percentiles over every recorded sample (nearest rank).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// The distribution for plots: `(percentile, microseconds)`, percentiles spaced evenly
    /// on a log scale of `1 / (1 - q)` from 0 to 99.99, then the maximum.
    pub distribution: Vec<(f64, f64)>,
}

impl Summary {
    /// From latencies in nanoseconds (sorted in place).
    pub fn of(nanos: &mut [u64]) -> Summary {
        if nanos.is_empty() {
            return Summary::default();
        }
        nanos.sort_unstable();
        let us = |q: f64| at(nanos, q) as f64 / 1e3;
        let mean = nanos.iter().map(|&n| n as f64).sum::<f64>() / nanos.len() as f64 / 1e3;
        let mut distribution = Vec::new();
        // 10^0 .. 10^4 in 1/(1-q): q from 0 to 0.9999.
        for i in 0..=80 {
            let x = 10f64.powf(i as f64 / 20.0);
            let q = 1.0 - 1.0 / x;
            distribution.push((q * 100.0, us(q)));
        }
        distribution.push((100.0, *nanos.last().expect("not empty") as f64 / 1e3));
        Summary {
            count: nanos.len(),
            mean_us: mean,
            p50_us: us(0.50),
            p90_us: us(0.90),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: *nanos.last().expect("not empty") as f64 / 1e3,
            distribution,
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn at(sorted: &[u64], q: f64) -> u64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.p999_us, 999.0);
        assert_eq!(s.max_us, 1000.0);
        assert_eq!(s.distribution.first().map(|d| d.1), Some(1.0));
        assert_eq!(s.distribution.last().map(|d| d.1), Some(1000.0));
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Summary::of(&mut []).count, 0);
    }
}
