//! Sample statistics for the benchmark: nearest-rank percentiles over raw samples, medians,
//! and a deterministic random stream for choosing targets (so two runs delete the same rows).

use serde::{Deserialize, Serialize};

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// Summarises samples given in milliseconds (empty input gives all zeros and n = 0).
    pub fn of_ms(samples: &[f64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        Summary {
            n: s.len(),
            p50_ms: percentile(&s, 0.50),
            p95_ms: percentile(&s, 0.95),
            p99_ms: percentile(&s, 0.99),
            mean_ms: s.iter().sum::<f64>() / s.len() as f64,
            min_ms: s[0],
            max_ms: s[s.len() - 1],
        }
    }

    /// Summarises durations.
    pub fn of(samples: &[std::time::Duration]) -> Summary {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Summary::of_ms(&ms)
    }
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at least `q` of the
/// samples at or below it (so p99 of 200 samples is the 198th, a real observed value).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of unsorted values (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 0.5)
}

/// SplitMix64: a fixed algorithm (unlike `rand`'s, which may change between versions), so the
/// same seed picks the same delete targets on every machine and toolchain.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        let s = Summary::of_ms(&v);
        assert_eq!(s.n, 200);
        assert_eq!(s.p50_ms, 100.0);
        assert_eq!(s.p95_ms, 190.0);
        assert_eq!(s.p99_ms, 198.0);
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.max_ms, 200.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(Summary::of_ms(&[]).n, 0);
    }

    #[test]
    fn splitmix_is_deterministic_and_shuffles() {
        let mut a = SplitMix::new(7);
        let mut b = SplitMix::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut v: Vec<u32> = (0..50).collect();
        a.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
