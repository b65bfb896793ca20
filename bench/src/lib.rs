//! `quarry bench`: load generators for the search tool's latency figures
//! and the orchestrator's overhead.
//!
//! Speed targets are measured here, never by timed assertions in tests:
//! - [`search`]: search latency per mode × filter on a configured collection
//!   (e.g. Tate's `artworks`) or a [`synthetic`] one of any size, BM25
//!   indexing and embedding throughput, query embedding time apart;
//! - [`freshness`]: commit → searchable latency with the sync and the index
//!   follower running in-process;
//! - [`ask`]: the orchestrator's own overhead per `Ask` (end-to-end minus
//!   model and database time) under N concurrent streams against a scripted
//!   model with a fixed latency, with throughput and peak memory;
//! - [`fairness`]: one tenant's latency alone and beside another tenant's
//!   flood, with the fair-share limits in force, and both processes' memory.

pub mod ask;
pub mod fairness;
pub mod freshness;
pub mod search;
pub mod synthetic;

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use hdrhistogram::Histogram;
use quarry_llm::embed::EmbeddingConfig;
use quarry_search::SearchConfig;
use quarry_search_sync::SyncConfig;
use serde::Deserialize;

/// The parts of the configuration the benchmarks use (the rest, `[auth]`
/// included, need not be present).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BenchConfig {
    /// `[database]`.
    #[serde(default)]
    pub database: quarry_server::config::DatabaseConfig,
    /// `[embedding]`.
    #[serde(default)]
    pub embedding: Option<EmbeddingConfig>,
    /// `[search]`.
    #[serde(default)]
    pub search: Option<SearchConfig>,
    /// `[sync]`.
    #[serde(default)]
    pub sync: SyncConfig,
}

impl BenchConfig {
    /// Reads `path` (if any) and `QUARRY__…` variables as `quarry serve` does.
    ///
    /// # Errors
    /// An unreadable file or invalid values.
    pub fn load(path: Option<&Path>) -> anyhow::Result<BenchConfig> {
        figment(path)
            .extract()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))
    }
}

/// The configuration figment: `path` (if any) and `QUARRY__…` variables, as
/// `quarry serve` reads them.
/// The caller of a benchmark's or evaluation's own calls into a tool: a
/// local principal (tenant `local`, no roles or scopes) named `subject`,
/// with a fresh request id, no deadline and the unrestricted grant of
/// operator work (benchmarks and evaluations measure the tools, not the
/// policy).
pub fn local_caller(subject: &str) -> quarry_auth::Caller {
    quarry_auth::Caller::operator(quarry_auth::Principal {
        tenant: "local".to_owned(),
        subject: subject.to_owned(),
        roles: vec![],
        scopes: vec![],
    })
}

pub(crate) fn figment(path: Option<&Path>) -> Figment {
    quarry_server::Config::figment(
        path,
        figment::providers::Env::prefixed(quarry_server::config::ENV_PREFIX).split("__"),
    )
}

/// Prints `bench: <message>` on stderr when `on`.
pub(crate) fn progress(on: bool, message: impl AsRef<str>) {
    if on {
        eprintln!("bench: {}", message.as_ref());
    }
}

/// A latency distribution, recorded in microseconds (1 µs … 10 min, three
/// significant digits).
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

/// Highest latency recorded: 10 minutes, in microseconds.
const MAX_MICROS: u64 = 600_000_000;

impl Latencies {
    /// An empty distribution.
    ///
    /// # Errors
    /// Never in practice (the bounds are fixed and valid).
    pub fn new() -> anyhow::Result<Latencies> {
        let histogram = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .map_err(|e| anyhow::anyhow!("latency histogram: {e}"))?;
        Ok(Latencies { histogram })
    }

    /// Records one latency (clamped to 1 µs … 10 min).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        self.histogram.saturating_record(micros);
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The summary in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if self.histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.histogram.len(),
            p50_ms: ms(self.histogram.value_at_quantile(0.50)),
            p90_ms: ms(self.histogram.value_at_quantile(0.90)),
            p99_ms: ms(self.histogram.value_at_quantile(0.99)),
            max_ms: ms(self.histogram.max()),
            mean_ms: self.histogram.mean() / 1000.0,
        }
    }
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    /// Latencies recorded.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
}

impl LatencySummary {
    /// As a JSON object (`count`, `p50_ms`, `p90_ms`, `p99_ms`, `max_ms`, `mean_ms`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "p50_ms": round3(self.p50_ms),
            "p90_ms": round3(self.p90_ms),
            "p99_ms": round3(self.p99_ms),
            "max_ms": round3(self.max_ms),
            "mean_ms": round3(self.mean_ms),
        })
    }
}

/// `x` rounded to three decimals (JSON output).
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_milliseconds() {
        let mut l = Latencies::new().unwrap();
        for i in 1..=100u64 {
            l.record(Duration::from_millis(i));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.mean_ms - 50.5).abs() < 0.1, "{s:?}");
        assert_eq!(
            Latencies::new().unwrap().summary(),
            LatencySummary::default()
        );
    }
}
