//! The audit trail: every statement Quarry executes for a caller and every
//! refusal, in `quarry.audit_log` (migration V6).

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{Pool, error_text};

/// `[sql.audit]`: whether statements and refusals are recorded, and for how
/// long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record statements and refusals. Default true.
    pub enabled: bool,
    /// Entries older than this many days are deleted (hourly). Default 90.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 90,
        }
    }
}

/// How a recorded action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It ran and returned.
    Ok,
    /// It ran and failed (database error, timeout, cap).
    Error,
    /// It was refused before running (policy, validator, scope).
    Refused,
}

impl Outcome {
    /// The stored form: `ok`, `error`, `refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
        }
    }
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Row id (0 before it is stored).
    pub id: i64,
    /// When it was recorded, RFC 3339 (empty before it is stored).
    pub at: String,
    /// The caller's tenant.
    pub tenant: String,
    /// The caller inside the tenant.
    pub subject: String,
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// The tool: `sql`, or `rpc` for a refused call.
    pub tool: String,
    /// What was done: `execute`, `explain`, `generate`, or the RPC path.
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The SQL as executed (with the policy's rewrite), if any.
    pub sql: Option<String>,
    /// Rows returned.
    pub rows: Option<i64>,
    /// Bytes returned.
    pub bytes: Option<i64>,
    /// Wall time, milliseconds.
    pub duration_ms: Option<f64>,
    /// The error or refusal message.
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An entry of `subject` in `tenant` (request `request_id`) doing
    /// `action` with `tool`, ending in `outcome`; the SQL, figures and
    /// detail empty (set them with struct update syntax).
    pub fn new(
        tenant: &str,
        subject: &str,
        request_id: &str,
        tool: &str,
        action: &str,
        outcome: Outcome,
    ) -> Self {
        Self {
            id: 0,
            at: String::new(),
            tenant: tenant.to_owned(),
            subject: subject.to_owned(),
            request_id: request_id.to_owned(),
            tool: tool.to_owned(),
            action: action.to_owned(),
            outcome,
            sql: None,
            rows: None,
            bytes: None,
            duration_ms: None,
            detail: None,
        }
    }
}

/// Writes and reads `quarry.audit_log`.
#[derive(Debug, Clone)]
pub struct AuditLog {
    pool: Pool,
    config: AuditConfig,
}

impl AuditLog {
    /// An audit log on `pool` with `config`.
    pub fn new(pool: Pool, config: AuditConfig) -> Self {
        Self { pool, config }
    }

    /// The settings in force.
    pub fn config(&self) -> &AuditConfig {
        &self.config
    }

    /// Stores `entry` (its `id` and `at` are set by the database). A
    /// failure is logged at `warn` and not returned: the audit trail does
    /// not take the service down with it (availability over audit; the
    /// log line names the request id so the gap can be traced).
    pub async fn record(&self, entry: AuditEntry) {
        if !self.config.enabled {
            return;
        }
        if let Err(error) = self.insert(&entry).await {
            warn!(
                request_id = %entry.request_id,
                tenant = %entry.tenant,
                %error,
                "could not write the audit entry"
            );
        }
    }

    async fn insert(&self, e: &AuditEntry) -> Result<(), String> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| crate::pool_error_text(&e))?;
        // prepared once per connection (deadpool's statement cache)
        let insert = client
            .prepare_cached(
                "INSERT INTO quarry.audit_log (tenant, subject, request_id, tool, action, outcome, \
                 sql, rows, bytes, duration_ms, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .await
            .map_err(|e| error_text(&e))?;
        client
            .execute(
                &insert,
                &[
                    &e.tenant,
                    &e.subject,
                    &e.request_id,
                    &e.tool,
                    &e.action,
                    &e.outcome.as_str(),
                    &e.sql,
                    &e.rows,
                    &e.bytes,
                    &e.duration_ms,
                    &e.detail,
                ],
            )
            .await
            .map_err(|e| error_text(&e))?;
        Ok(())
    }

    /// Up to `limit` entries of `tenant` with an id below `before` (0: the
    /// newest), newest first.
    ///
    /// # Errors
    /// The pool's or PostgreSQL's error, as text.
    pub async fn list(
        &self,
        tenant: &str,
        limit: i64,
        before: i64,
    ) -> Result<Vec<AuditEntry>, String> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| crate::pool_error_text(&e))?;
        let before = if before <= 0 { i64::MAX } else { before };
        let rows = client
            .query(
                "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                 tenant, subject, request_id, tool, action, outcome, sql, rows, bytes, \
                 duration_ms, detail FROM quarry.audit_log \
                 WHERE tenant = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                &[&tenant, &before, &limit],
            )
            .await
            .map_err(|e| error_text(&e))?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at: r.get(1),
                tenant: r.get(2),
                subject: r.get(3),
                request_id: r.get(4),
                tool: r.get(5),
                action: r.get(6),
                outcome: match r.get::<_, &str>(7) {
                    "ok" => Outcome::Ok,
                    "error" => Outcome::Error,
                    _ => Outcome::Refused,
                },
                sql: r.get(8),
                rows: r.get(9),
                bytes: r.get(10),
                duration_ms: r.get(11),
                detail: r.get(12),
            })
            .collect())
    }

    /// Deletes entries older than the retention; returns how many.
    ///
    /// # Errors
    /// The pool's or PostgreSQL's error, as text.
    pub async fn purge(&self) -> Result<u64, String> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| crate::pool_error_text(&e))?;
        let days = f64::from(self.config.retention_days);
        client
            .execute(
                "DELETE FROM quarry.audit_log WHERE at < now() - make_interval(days => $1::float8::int)",
                &[&days],
            )
            .await
            .map_err(|e| error_text(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    fn entry(tenant: &str, outcome: Outcome) -> AuditEntry {
        AuditEntry {
            sql: Some("SELECT 1".into()),
            rows: Some(1),
            bytes: Some(8),
            duration_ms: Some(1.5),
            ..AuditEntry::new(tenant, "ann", "r1", "sql", "execute", outcome)
        }
    }

    #[tokio::test]
    async fn entries_are_stored_listed_per_tenant_and_purged() {
        let db = TestDb::create().await;
        crate::migrate(db.pool()).await.unwrap();
        let log = AuditLog::new(db.pool().clone(), AuditConfig::default());
        log.record(entry("a", Outcome::Ok)).await;
        log.record(entry("a", Outcome::Refused)).await;
        log.record(entry("b", Outcome::Error)).await;
        let a = log.list("a", 10, 0).await.unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].outcome, Outcome::Refused, "newest first");
        assert!(a.iter().all(|e| e.tenant == "a"));
        assert!(a[0].at.ends_with('Z'));
        assert_eq!(log.list("a", 1, a[0].id).await.unwrap()[0].id, a[1].id);
        // nothing is past the retention yet
        assert_eq!(log.purge().await.unwrap(), 0);
        let client = db.pool().get().await.unwrap();
        client
            .execute(
                "UPDATE quarry.audit_log SET at = now() - interval '91 days' WHERE tenant = 'b'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(log.purge().await.unwrap(), 1);
        // disabled: nothing is written
        let off = AuditLog::new(
            db.pool().clone(),
            AuditConfig {
                enabled: false,
                retention_days: 90,
            },
        );
        off.record(entry("c", Outcome::Ok)).await;
        assert!(off.list("c", 10, 0).await.unwrap().is_empty());
    }
}
