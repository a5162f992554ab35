//! The server's own measurements, read through `lnrs::metrics`: the process-wide application
//! histograms (snapshot capture = the writer-blocked CHECKPOINT + file read, snapshot commit,
//! delete end to end, restore, verify, subscriber lag) encoded as Prometheus text, parsed
//! back, and differenced between two points of the run.
//!
//! The server runs in this process, so the histograms it records into are the ones an
//! in-process [`Exposition`] encodes — the same numbers `/metrics` would serve. Quantiles are
//! estimated the way Prometheus' `histogram_quantile` does (linear within a bucket), so their
//! resolution is the bucket grid (…, 5, 10, 25, 50 ms, …); the mean (sum / count) is exact.

use std::collections::BTreeMap;

use lnrs::metrics::{Exposition, GrpcMetrics, Live};
use serde::Serialize;

/// One histogram series: cumulative bucket counts by upper bound, sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist {
    /// (upper bound in seconds, cumulative count), ascending; +Inf last.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// Every histogram series of a scrape, keyed by name plus its labels other than `le`
/// (e.g. `lnrs_restore_seconds{outcome="restored"}`).
#[derive(Debug, Clone, Default)]
pub struct Scrape(pub BTreeMap<String, Hist>);

/// Reads the process-wide application metrics now.
pub fn scrape() -> Scrape {
    let exposition = Exposition::new(&GrpcMetrics::default(), Live::default);
    let (text, _) = exposition.encode(false);
    parse(&text)
}

/// Parses histogram series out of Prometheus text format.
pub fn parse(text: &str) -> Scrape {
    let mut out: BTreeMap<String, Hist> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut le = None;
        let others: Vec<&str> = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .filter(|l| match l.strip_prefix("le=") {
                Some(v) => {
                    le = Some(v.trim_matches('"').to_string());
                    false
                }
                None => true,
            })
            .collect();
        let key = |base: &str| {
            if others.is_empty() {
                base.to_string()
            } else {
                format!("{base}{{{}}}", others.join(","))
            }
        };
        if let Some(base) = name.strip_suffix("_bucket") {
            let Some(le) = le else { continue };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse::<f64>() {
                    Ok(b) => b,
                    Err(_) => continue,
                }
            };
            out.entry(key(base))
                .or_default()
                .buckets
                .push((bound, value as u64));
        } else if let Some(base) = name.strip_suffix("_sum") {
            out.entry(key(base)).or_default().sum = value;
        } else if let Some(base) = name.strip_suffix("_count") {
            out.entry(key(base)).or_default().count = value as u64;
        }
    }
    out.retain(|_, h| !h.buckets.is_empty());
    for h in out.values_mut() {
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Scrape(out)
}

impl Scrape {
    /// What was recorded into `name` between `earlier` and `self`.
    pub fn since(&self, earlier: &Scrape, name: &str) -> Hist {
        let now = self.0.get(name).cloned().unwrap_or_default();
        let Some(before) = earlier.0.get(name) else {
            return now;
        };
        Hist {
            buckets: now
                .buckets
                .iter()
                .map(|&(le, c)| {
                    let b = before
                        .buckets
                        .iter()
                        .find(|(l, _)| *l == le)
                        .map_or(0, |(_, c)| *c);
                    (le, c.saturating_sub(b))
                })
                .collect(),
            sum: now.sum - before.sum,
            count: now.count.saturating_sub(before.count),
        }
    }
}

impl Hist {
    /// `histogram_quantile`: linear interpolation inside the bucket holding rank q·count. In
    /// the +Inf bucket, the largest finite bound (a lower bound of the true value).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q * self.count as f64;
        let mut prev_bound = 0.0;
        let mut prev_count = 0u64;
        for &(le, c) in &self.buckets {
            if c as f64 >= rank {
                if le.is_infinite() {
                    return Some(prev_bound);
                }
                let in_bucket = (c - prev_count) as f64;
                if in_bucket <= 0.0 {
                    return Some(le);
                }
                return Some(
                    prev_bound + (le - prev_bound) * (rank - prev_count as f64) / in_bucket,
                );
            }
            prev_bound = le;
            prev_count = c;
        }
        Some(prev_bound)
    }

    /// Fraction of observations at or below `bound` seconds when `bound` is a bucket bound.
    pub fn fraction_at_or_below(&self, bound: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        self.buckets
            .iter()
            .find(|(le, _)| (*le - bound).abs() < 1e-12)
            .map(|(_, c)| *c as f64 / self.count as f64)
    }

    /// Count, exact mean and interpolated quantiles, in milliseconds.
    pub fn summary(&self) -> HistSummary {
        let ms = |v: Option<f64>| v.map(|s| s * 1e3);
        HistSummary {
            count: self.count,
            mean_ms: (self.count > 0).then(|| self.sum / self.count as f64 * 1e3),
            p50_ms: ms(self.quantile(0.5)),
            p95_ms: ms(self.quantile(0.95)),
            p99_ms: ms(self.quantile(0.99)),
            buckets_ms: self
                .buckets
                .iter()
                .filter(|(le, _)| le.is_finite())
                .map(|&(le, c)| (le * 1e3, c))
                .collect(),
        }
    }
}

/// A server histogram over one phase of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistSummary {
    pub count: u64,
    /// Exact (sum / count).
    pub mean_ms: Option<f64>,
    /// Interpolated within the bucket grid.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Cumulative counts by upper bound (ms), for readers who distrust interpolation.
    pub buckets_ms: Vec<(f64, u64)>,
}

/// Series names used by the benchmark.
pub const CAPTURE: &str = "lnrs_snapshot_capture_seconds";
pub const COMMIT: &str = "lnrs_snapshot_commit_seconds";
pub const DELETE: &str = "lnrs_delete_seconds";
pub const RESTORED: &str = "lnrs_restore_seconds{outcome=\"restored\"}";
pub const LAG: &str = "lnrs_event_subscriber_lag_events";

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP x_seconds help
# TYPE x_seconds histogram
x_seconds_sum 0.05
x_seconds_count 4
x_seconds_bucket{le=\"0.01\"} 1
x_seconds_bucket{le=\"0.025\"} 3
x_seconds_bucket{le=\"+Inf\"} 4
r_seconds_bucket{outcome=\"restored\",le=\"1.0\"} 2
r_seconds_bucket{outcome=\"restored\",le=\"+Inf\"} 2
r_seconds_sum{outcome=\"restored\"} 1.0
r_seconds_count{outcome=\"restored\"} 2
plain_total 5
";

    #[test]
    fn parses_histograms_with_and_without_labels() {
        let s = parse(TEXT);
        let x = &s.0["x_seconds"];
        assert_eq!(x.count, 4);
        assert_eq!(x.buckets.len(), 3);
        assert_eq!(x.buckets[1], (0.025, 3));
        assert!(s.0.contains_key("r_seconds{outcome=\"restored\"}"));
        assert!(!s.0.contains_key("plain_total"));
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let x = &parse(TEXT).0["x_seconds"];
        // rank 2 of 4 is halfway through the (0.01, 0.025] bucket holding ranks 2 and 3.
        let p50 = x.quantile(0.5).unwrap_or_default();
        assert!((p50 - 0.0175).abs() < 1e-9, "{p50}");
        // rank 3.96 lands in +Inf: the largest finite bound.
        assert_eq!(x.quantile(0.99), Some(0.025));
        assert_eq!(x.fraction_at_or_below(0.025), Some(0.75));
        assert_eq!(Hist::default().quantile(0.5), None);
    }

    #[test]
    fn differences_between_scrapes() {
        let before = parse(TEXT);
        let after = parse(
            &TEXT
                .replace("x_seconds_count 4", "x_seconds_count 6")
                .replace(
                    "x_seconds_bucket{le=\"+Inf\"} 4",
                    "x_seconds_bucket{le=\"+Inf\"} 6",
                ),
        );
        let d = after.since(&before, "x_seconds");
        assert_eq!(d.count, 2);
        assert_eq!(d.buckets.last().map(|b| b.1), Some(2));
        assert_eq!(after.since(&before, "missing").count, 0);
    }

    #[test]
    fn the_server_exposes_the_histograms_the_benchmark_reads() {
        let s = scrape();
        for name in [CAPTURE, COMMIT, DELETE, LAG] {
            assert!(s.0.contains_key(name), "{name} missing from the exposition");
        }
    }
}
