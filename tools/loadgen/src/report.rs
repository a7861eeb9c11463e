//! What a load run measured: a per-worker [`Tally`] merged into one [`LoadReport`], printed
//! as a single JSON line.
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Longest latency the histograms hold (longer ones are clamped to it).
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Counts and latencies of one worker; merged across workers at the end of a run.
#[derive(Clone, Debug)]
pub struct Tally {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// Answers that arrived before the run's deadline: the throughput's numerator.
    pub ok_in_window: u64,
    latency_ns: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            sent: 0,
            ok: 0,
            failed: 0,
            ok_in_window: 0,
            latency_ns: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("static histogram bounds are valid"),
        }
    }
}

impl Tally {
    /// One answered request that took `latency`; `in_window` if it arrived before the deadline.
    pub fn answered(&mut self, latency: Duration, in_window: bool) {
        self.ok += 1;
        if in_window {
            self.ok_in_window += 1;
        }
        let ns = (latency.as_nanos() as u64).clamp(1, MAX_LATENCY_NS);
        self.latency_ns.saturating_record(ns);
    }

    pub fn merge(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.failed += other.failed;
        self.ok_in_window += other.ok_in_window;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency_ns.add(&other.latency_ns);
    }

    fn quantile_us(&self, q: f64) -> f64 {
        if self.latency_ns.is_empty() {
            return 0.0;
        }
        self.latency_ns.value_at_quantile(q) as f64 / 1000.0
    }
}

/// How a run was set up (echoed into its report).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSpec {
    /// Generator and profile, e.g. `clickhouse/select1`.
    pub workload: String,
    /// Server address.
    pub target: String,
    pub connections: usize,
    /// Target rate in requests/s; `None` is flat out.
    pub rate: Option<f64>,
    /// Requests kept in flight per connection.
    pub in_flight: usize,
    pub duration_s: f64,
}

/// The JSON line a load run prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadReport {
    #[serde(flatten)]
    pub spec: RunSpec,
    /// Answered requests per second over the run's duration.
    pub throughput: f64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LoadReport {
    pub fn new(spec: RunSpec, tally: &Tally, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        LoadReport {
            throughput: tally.ok_in_window as f64 / secs,
            sent: tally.sent,
            ok: tally.ok,
            failed: tally.failed,
            p50_us: tally.quantile_us(0.50),
            p99_us: tally.quantile_us(0.99),
            p999_us: tally.quantile_us(0.999),
            max_us: if tally.latency_ns.is_empty() {
                0.0
            } else {
                tally.latency_ns.max() as f64 / 1000.0
            },
            spec: RunSpec {
                duration_s: secs,
                ..spec
            },
        }
    }

    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_counts_and_latencies() {
        let mut a = Tally {
            sent: 3,
            ..Tally::default()
        };
        a.answered(Duration::from_micros(100), true);
        a.answered(Duration::from_micros(100), false);
        let mut b = Tally {
            sent: 2,
            failed: 1,
            ..Tally::default()
        };
        b.answered(Duration::from_micros(300), true);
        a.merge(&b);
        let spec = RunSpec {
            workload: "t".into(),
            target: "x".into(),
            connections: 1,
            rate: None,
            in_flight: 1,
            duration_s: 0.0,
        };
        let r = LoadReport::new(spec, &a, Duration::from_secs(2));
        assert_eq!((r.sent, r.ok, r.failed), (5, 3, 1));
        assert_eq!(r.throughput, 1.0);
        assert!((r.p50_us - 100.0).abs() < 1.0, "{}", r.p50_us);
        assert!((r.max_us - 300.0).abs() < 1.0, "{}", r.max_us);
        let line = r.to_json_line();
        let back: LoadReport = serde_json::from_str(&line).unwrap();
        assert_eq!(back.spec.workload, "t");
        assert!(line.contains("\"p99_us\""));
    }
}
