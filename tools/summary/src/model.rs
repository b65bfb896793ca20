//! The values the tool's modules share: a stored [`Summary`], and what a
//! build is asked to do ([`BuildOptions`]), reports as it goes
//! ([`BuildProgressEvent`]) and reports at the end ([`BuildReport`]). Plain
//! data, so the service, the builder and the store each import it rather
//! than one another.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One stored summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Kind name.
    pub kind: String,
    /// Entity key (text form).
    pub entity_key: String,
    /// Entity display name.
    pub entity_name: String,
    /// The paragraph.
    pub text: String,
    /// The facts, an object keyed by figure name.
    pub facts: serde_json::Value,
    /// Hash of the inputs (16 hex digits).
    pub data_version: String,
    /// When text and facts were last computed.
    pub computed_at: DateTime<Utc>,
    /// When a build last confirmed (or recomputed) them.
    pub checked_at: DateTime<Utc>,
    /// Seconds from `checked_at` to the response.
    pub age_seconds: u64,
    /// Why the latest build of this entity failed, if it did.
    pub last_error: Option<String>,
    /// Search: cosine similarity or `ts_rank_cd`; get: match score; listing: 0.
    pub score: f64,
}

impl Summary {
    /// Citation id, `summary:<kind>:<entity_key>`.
    pub fn id(&self) -> String {
        format!("summary:{}:{}", self.kind, self.entity_key)
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildOptions {
    /// Kinds to build; empty builds every kind.
    pub kinds: Vec<String>,
    /// Entity keys to build (requires exactly one kind); empty builds all.
    pub entity_keys: Vec<String>,
    /// Recompute even when the data version is unchanged.
    pub force: bool,
    /// What started the build: `schedule`, `rpc`, `cli`, `startup`.
    pub trigger: String,
}

impl BuildOptions {
    /// Every entity of every kind, started by `trigger`.
    pub fn all(trigger: impl Into<String>) -> BuildOptions {
        BuildOptions {
            trigger: trigger.into(),
            ..BuildOptions::default()
        }
    }
}

/// Progress of a running build: entities of `kind` processed so far, of `total`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildProgressEvent {
    /// Kind being built.
    pub kind: String,
    /// Entities of the kind processed so far (built, unchanged or failed).
    pub done: u64,
    /// Entities of the kind in this build.
    pub total: u64,
}

/// An entity whose build failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFailure {
    /// Kind.
    pub kind: String,
    /// The tenant the kind was being built for; empty for a shared kind
    /// (and for a tenant-scoped kind's `tenants` query failing).
    #[serde(default)]
    pub tenant: String,
    /// Entity key; empty when the kind's entities query itself failed.
    pub entity_key: String,
    /// Entity name; empty when unknown.
    pub entity_name: String,
    /// What went wrong, e.g. `figure acquisitions: division by zero`.
    pub error: String,
    /// Whether it failed because the database was unreachable or going away
    /// (no pooled connection, a closed connection, SQLSTATE class 08 or
    /// 57P01–57P03; [`quarry_db::is_unavailable`]), which a retry may get
    /// past, rather than because of the definition or the data.
    #[serde(default)]
    pub unavailable: bool,
}

/// What a build did (stored as JSON in `quarry.summary_builds.report`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildReport {
    /// When the build started (after taking the lock).
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// What started it: `schedule`, `rpc`, `cli`, `startup`.
    pub trigger: String,
    /// Entities examined.
    pub entities: u64,
    /// Summaries written because the data version changed (or `force`).
    pub built: u64,
    /// Entities whose data version was unchanged (only `checked_at` moved).
    pub unchanged: u64,
    /// Entities whose build failed (plus kinds whose entities query failed).
    pub failed: u64,
    /// Summaries deleted because their entity no longer exists.
    pub removed: u64,
    /// Summaries embedded (new or changed texts, and any left unembedded by
    /// an earlier build).
    #[serde(default)]
    pub embedded: u64,
    /// The failures, in kind then key order.
    pub failures: Vec<BuildFailure>,
    /// Problems that lost nothing (an embedder failure: texts stored without
    /// embeddings; entities-query rows without a key, or with a duplicate key).
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl BuildReport {
    /// The report as a caller of `tenant` may see it: only the failures of
    /// shared kinds and of that tenant's builds (another tenant's failures
    /// name its entities). Counts (`failed` among them) stay those of the
    /// whole build.
    #[must_use]
    pub fn visible_to(mut self, tenant: &str) -> BuildReport {
        self.failures
            .retain(|f| f.tenant.is_empty() || f.tenant == tenant);
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_sees_only_shared_and_its_own_tenants_failures() {
        let failure = |tenant: &str, key: &str| BuildFailure {
            kind: "artist".into(),
            tenant: tenant.into(),
            entity_key: key.into(),
            entity_name: String::new(),
            error: "boom".into(),
            unavailable: false,
        };
        let now = Utc::now();
        let report = BuildReport {
            started_at: now,
            finished_at: now,
            trigger: "test".into(),
            entities: 3,
            built: 0,
            unchanged: 0,
            failed: 3,
            removed: 0,
            embedded: 0,
            failures: vec![
                failure("", "1"),
                failure("early", "2"),
                failure("modern", "3"),
            ],
            warnings: Vec::new(),
        };
        let keys = |r: BuildReport| -> Vec<String> {
            r.failures.into_iter().map(|f| f.entity_key).collect()
        };
        assert_eq!(keys(report.clone().visible_to("early")), ["1", "2"]);
        assert_eq!(keys(report.clone().visible_to("acme")), ["1"]);
        assert_eq!(report.visible_to("modern").failed, 3);
        // reports stored before tenants parse, their failures shared
        let old = serde_json::json!({"kind": "artist", "entity_key": "1", "entity_name": "", "error": "x"});
        let parsed: BuildFailure = serde_json::from_value(old).unwrap();
        assert_eq!(parsed.tenant, "");
    }
}
