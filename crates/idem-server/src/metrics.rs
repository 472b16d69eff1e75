//! Counters and latency histograms by outcome, rendered in Prometheus' text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idem_http::Outcome;

/// Every outcome label, in the order they are rendered. `other` is for responses that
/// carry no [`Outcome`] (a route the layer does not wrap) or one added to idem-http later.
const OUTCOMES: [&str; 13] = [
    "executed",
    "replayed",
    "conflict",
    "mismatch",
    "rejected",
    "store_failed",
    "released",
    "unrecorded",
    "superseded",
    "response_too_large",
    "passed_through",
    "other",
    "none",
];

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

#[derive(Debug, Default)]
struct Latency {
    count: AtomicU64,
    sum_us: AtomicU64,
    /// Per bucket, the requests at or under its bound and over the previous one.
    buckets: [AtomicU64; BUCKETS_US.len()],
}

/// The server's counters. Lock-free: each request does a few relaxed atomic increments.
#[derive(Debug, Default)]
pub struct Metrics {
    by_outcome: [Latency; OUTCOMES.len()],
    ledger_errors: AtomicU64,
}

impl Metrics {
    /// Counts one request with `outcome` (`None`: the response carried none) that took `latency`.
    pub fn record(&self, outcome: Option<Outcome>, latency: Duration) {
        let label = outcome.map_or("none", Outcome::as_str);
        let index = OUTCOMES.iter().position(|known| *known == label).unwrap_or(OUTCOMES.len() - 2);
        let stats = &self.by_outcome[index];
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        stats.count.fetch_add(1, Ordering::Relaxed);
        stats.sum_us.fetch_add(latency_us, Ordering::Relaxed);
        if let Some(bucket) = BUCKETS_US.iter().position(|bound| latency_us <= *bound) {
            stats.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a payments/users database failure inside a handler (answered 503).
    pub fn record_ledger_error(&self) {
        self.ledger_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests ended with `label` (an [`Outcome::as_str`], or `none`).
    #[must_use]
    pub fn count(&self, label: &str) -> u64 {
        OUTCOMES
            .iter()
            .position(|known| *known == label)
            .map_or(0, |i| self.by_outcome[i].count.load(Ordering::Relaxed))
    }

    /// The metrics in Prometheus' text exposition format (version 0.0.4).
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "idem_executions_total",
                "Requests whose handler ran under a claim and whose response was recorded.",
                "executed",
            ),
            ("idem_replays_total", "Requests answered with a recorded response.", "replayed"),
            ("idem_conflicts_total", "Requests refused with 409 because the same key was in flight.", "conflict"),
            (
                "idem_mismatches_total",
                "Requests refused with 422 because the key was used for another request.",
                "mismatch",
            ),
        ];
        for (name, help, label) in counters {
            write_counter(&mut out, name, help, self.count(label));
        }
        let store_errors =
            self.count("store_failed") + self.count("unrecorded") + self.ledger_errors.load(Ordering::Relaxed);
        write_counter(
            &mut out,
            "idem_store_errors_total",
            "Requests that met a store or database failure.",
            store_errors,
        );

        out.push_str("# HELP idem_requests_total Requests by what the idempotency layer did with them.\n");
        out.push_str("# TYPE idem_requests_total counter\n");
        for (label, stats) in OUTCOMES.iter().zip(&self.by_outcome) {
            let count = stats.count.load(Ordering::Relaxed);
            writeln!(out, "idem_requests_total{{outcome=\"{label}\"}} {count}")
                .expect("writing to a String cannot fail");
        }

        out.push_str("# HELP idem_request_duration_seconds Request latency by outcome.\n");
        out.push_str("# TYPE idem_request_duration_seconds histogram\n");
        for (label, stats) in OUTCOMES.iter().zip(&self.by_outcome) {
            let mut cumulative = 0;
            for (bound_us, bucket) in BUCKETS_US.iter().zip(&stats.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = *bound_us as f64 / 1e6;
                writeln!(out, "idem_request_duration_seconds_bucket{{outcome=\"{label}\",le=\"{le}\"}} {cumulative}")
                    .expect("writing to a String cannot fail");
            }
            let count = stats.count.load(Ordering::Relaxed);
            let sum_s = stats.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            writeln!(out, "idem_request_duration_seconds_bucket{{outcome=\"{label}\",le=\"+Inf\"}} {count}")
                .expect("writing to a String cannot fail");
            writeln!(out, "idem_request_duration_seconds_sum{{outcome=\"{label}\"}} {sum_s}")
                .expect("writing to a String cannot fail");
            writeln!(out, "idem_request_duration_seconds_count{{outcome=\"{label}\"}} {count}")
                .expect("writing to a String cannot fail");
        }
        out
    }
}

fn write_counter(out: &mut String, name: &str, help: &str, value: u64) {
    writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}")
        .expect("writing to a String cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_follow_recorded_requests() {
        // Goal: each outcome has its counter, and a latency lands in its bucket and above (cumulative).
        let metrics = Metrics::default();
        metrics.record(Some(Outcome::Executed), Duration::from_micros(700));
        metrics.record(Some(Outcome::Replayed), Duration::from_micros(100));
        metrics.record(Some(Outcome::Replayed), Duration::from_secs(60));
        metrics.record(None, Duration::ZERO);
        metrics.record_ledger_error();
        let text = metrics.render();
        assert!(text.contains("\nidem_executions_total 1\n"));
        assert!(text.contains("\nidem_replays_total 2\n"));
        assert!(text.contains("\nidem_store_errors_total 1\n"));
        assert!(text.contains("idem_requests_total{outcome=\"none\"} 1\n"));
        assert!(text.contains("idem_request_duration_seconds_bucket{outcome=\"executed\",le=\"0.0005\"} 0\n"));
        assert!(text.contains("idem_request_duration_seconds_bucket{outcome=\"executed\",le=\"0.001\"} 1\n"));
        assert!(text.contains("idem_request_duration_seconds_bucket{outcome=\"replayed\",le=\"10\"} 1\n"));
        assert!(text.contains("idem_request_duration_seconds_bucket{outcome=\"replayed\",le=\"+Inf\"} 2\n"));
    }
}
