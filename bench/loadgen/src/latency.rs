//! Latency histograms: recorded per process, dumped as JSON buckets, merged across processes.

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded, in microseconds (60 s); larger values are clamped.
const MAX_US: u64 = 60_000_000;

/// A new histogram for microsecond latencies, 3 significant digits.
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_US, 3).context("histogram bounds")
}

/// Records one latency in microseconds.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_US));
}

/// A histogram as non-empty `[value_us, count]` buckets.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Buckets(pub Vec<(u64, u64)>);

impl Buckets {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        Buckets(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for &(v, n) in &self.0 {
            let _ = h.record_n(v.clamp(1, MAX_US), n);
        }
    }
}

/// Percentile summary in microseconds.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub count: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

pub fn summarize(h: &Histogram<u64>) -> Summary {
    Summary {
        count: h.len(),
        min_us: h.min(),
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        mean_us: h.mean(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_and_merge() {
        let mut a = new_histogram().unwrap();
        let mut b = new_histogram().unwrap();
        for v in 1..=1000 {
            record(&mut a, v);
            record(&mut b, v * 10);
        }
        let mut merged = new_histogram().unwrap();
        let ja = serde_json::to_string(&Buckets::from_histogram(&a)).unwrap();
        let jb = serde_json::to_string(&Buckets::from_histogram(&b)).unwrap();
        serde_json::from_str::<Buckets>(&ja)
            .unwrap()
            .add_to(&mut merged);
        serde_json::from_str::<Buckets>(&jb)
            .unwrap()
            .add_to(&mut merged);
        let s = summarize(&merged);
        assert_eq!(s.count, 2000);
        // 1..=1000 plus 10..=10000 step 10: the 1000th value is ~909.
        assert!((905..=915).contains(&s.p50_us), "{s:?}");
        assert!(s.max_us >= 9990);
    }
}
