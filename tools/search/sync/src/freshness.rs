//! Freshness: time from a source change (its outbox entry) to the commit
//! that made the document current in the sidecar.

use std::collections::VecDeque;
use std::time::Duration;

/// Latencies kept for [`Freshness`] (the most recent ones).
pub(crate) const WINDOW: usize = 10_000;

/// Summary of commit latencies, from the outbox entry's `enqueued_at` (the
/// source statement, `clock_timestamp()`) to the sidecar transaction's last
/// statement, both read from the PostgreSQL server clock. It covers the
/// sidecar only; the tantivy follower adds its own refresh delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Freshness {
    /// Changes summarised.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

impl Freshness {
    /// Summarises `latencies` (nearest-rank percentiles); all zero when empty.
    pub fn from_latencies(latencies: impl IntoIterator<Item = Duration>) -> Freshness {
        let mut sorted: Vec<Duration> = latencies.into_iter().collect();
        sorted.sort_unstable();
        let Some(&max) = sorted.last() else {
            return Freshness::default();
        };
        let rank = |p: usize| {
            // nearest rank: ceil(p/100 * n), 1-based
            let index = (p * sorted.len()).div_ceil(100).saturating_sub(1);
            sorted.get(index).copied().unwrap_or(max)
        };
        Freshness {
            count: sorted.len(),
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
            max,
        }
    }
}

/// The most recent [`WINDOW`] latencies.
#[derive(Debug, Default)]
pub(crate) struct Window {
    latencies: VecDeque<Duration>,
}

impl Window {
    pub(crate) fn extend(&mut self, latencies: &[Duration]) {
        for &latency in latencies {
            if self.latencies.len() == WINDOW {
                self.latencies.pop_front();
            }
            self.latencies.push_back(latency);
        }
    }

    pub(crate) fn summary(&self) -> Freshness {
        Freshness::from_latencies(self.latencies.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |n| Duration::from_millis(n);
        let f = Freshness::from_latencies((1..=100).map(ms));
        assert_eq!(
            (f.count, f.p50, f.p90, f.p99, f.max),
            (100, ms(50), ms(90), ms(99), ms(100))
        );
        let f = Freshness::from_latencies([ms(7)]);
        assert_eq!((f.p50, f.p99), (ms(7), ms(7)));
        assert_eq!(Freshness::from_latencies([]), Freshness::default());
    }

    #[test]
    fn window_keeps_the_latest() {
        let mut w = Window::default();
        w.extend(&vec![Duration::from_secs(9); WINDOW]);
        w.extend(&[Duration::from_secs(1)]);
        assert_eq!(w.summary().count, WINDOW);
        assert_eq!(w.latencies.front(), Some(&Duration::from_secs(9)));
        assert_eq!(w.latencies.back(), Some(&Duration::from_secs(1)));
    }
}
