//! Sync settings (`[search.sync]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a [`crate::Syncer`] batches and polls. Every field has a default, so
/// an empty table is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Source rows copied per backfill transaction (default 1000).
    pub backfill_batch: usize,
    /// Outbox entries claimed per incremental transaction (default 500).
    pub outbox_batch: usize,
    /// Documents read per embedding round, and texts per embedder call
    /// (default 64).
    pub embed_batch: usize,
    /// Milliseconds between checks when no notification arrives: the
    /// fallback for lost `NOTIFY`s, the check for a recreated source table
    /// and the retry delay after an error (default 1000).
    pub poll_interval_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            backfill_batch: 1000,
            outbox_batch: 500,
            embed_batch: 64,
            poll_interval_ms: 1000,
        }
    }
}

impl SyncConfig {
    /// [`SyncConfig::poll_interval_ms`] as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// Batch sizes clamped to at least 1 and to what PostgreSQL's `LIMIT`
    /// (`bigint`) holds.
    pub(crate) fn limit(n: usize) -> i64 {
        i64::try_from(n.max(1)).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_fields_and_unknown_fields_are_refused() {
        let config: SyncConfig = toml::from_str("outbox_batch = 10").unwrap();
        assert_eq!(config.outbox_batch, 10);
        assert_eq!(config.backfill_batch, 1000);
        assert_eq!(config.poll_interval(), Duration::from_secs(1));
        assert!(toml::from_str::<SyncConfig>("batch = 1").is_err());
        assert_eq!(SyncConfig::limit(0), 1);
    }
}
