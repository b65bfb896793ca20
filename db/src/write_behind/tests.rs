use super::*;
use crate::audit::{AuditLog, Outcome};
use crate::supervisor::TaskStatus;
use crate::testing::TestDb;
use crate::usage::UsageLedger;

fn entry(tenant: &str, request_id: &str) -> AuditEntry {
    AuditEntry {
        sql: Some("SELECT 'it''s' AS a".into()),
        rows: Some(1),
        bytes: Some(4),
        duration_ms: Some(0.5),
        ..AuditEntry::new(tenant, "ann", request_id, "sql", "execute", Outcome::Ok)
    }
}

fn charge(rows: i64) -> UsageAmounts {
    UsageAmounts {
        requests: 1,
        rows,
        bytes: 10 * rows,
        cost_usd: 0.25,
        ..UsageAmounts::default()
    }
}

async fn requests_and_rows(ledger: &UsageLedger, tenant: &str) -> (i64, i64, f64) {
    let days = ledger.report(tenant, 1).await.unwrap();
    days.first().map_or((0, 0, 0.0), |d| {
        (d.amounts.requests, d.amounts.rows, d.amounts.cost_usd)
    })
}

/// A migrated database and a writer into it (audit enabled).
async fn started() -> (TestDb, Supervisor, WriteBehind) {
    let db = TestDb::create().await;
    crate::migrate(db.pool()).await.unwrap();
    let supervisor = Supervisor::new();
    let behind = WriteBehind::start(
        db.pool().clone(),
        &AuditConfig::default(),
        &supervisor,
        "sql",
    );
    (db, supervisor, behind)
}

#[test]
fn charges_add_up_per_tenant_and_day_and_flushes_are_kept_apart() {
    let (done, _) = oneshot::channel();
    let items = vec![
        Item::Charge("a".into(), 20_000, charge(1)),
        Item::Audit(Box::new(entry("a", "r1")), 1.0),
        Item::Charge("a".into(), 20_000, charge(2)),
        Item::Flush(done),
        Item::Charge("a".into(), 20_001, charge(4)),
        Item::Charge("b".into(), 20_000, charge(8)),
    ];
    let (batch, flushes) = Batch::of(items);
    assert_eq!(flushes.len(), 1);
    assert_eq!(batch.audit.len(), 1);
    assert_eq!(batch.charges, 4);
    let sums: Vec<((String, i64), i64, i64)> = batch
        .usage
        .iter()
        .map(|(key, a)| (key.clone(), a.requests, a.rows))
        .collect();
    assert_eq!(
        sums,
        [
            (("a".into(), 20_000), 2, 3),
            (("a".into(), 20_001), 1, 4),
            (("b".into(), 20_000), 1, 8),
        ]
    );
}

#[tokio::test]
async fn queued_bookkeeping_is_stored_in_order_and_flush_waits_for_it() {
    let (db, supervisor, behind) = started().await;
    for i in 0..5 {
        behind.audit(entry(if i % 2 == 0 { "a" } else { "b" }, &format!("r{i}")));
        behind.charge(if i % 2 == 0 { "a" } else { "b" }, charge(i));
    }
    assert!(behind.flush().await, "stored within the flush timeout");
    // everything queued before the flush is readable right after it
    let log = AuditLog::new(db.pool().clone(), AuditConfig::default());
    let a = log.list("a", 10, 0).await.unwrap();
    let ids: Vec<&str> = a.iter().map(|e| e.request_id.as_str()).collect();
    assert_eq!(ids, ["r4", "r2", "r0"], "newest first, in queue order");
    assert_eq!(
        a[0].sql.as_deref(),
        Some("SELECT 'it''s' AS a"),
        "stored as data"
    );
    assert!(a[0].at.ends_with('Z') && a[0].at >= a[2].at, "{a:?}");
    assert_eq!(log.list("b", 10, 0).await.unwrap().len(), 2);
    let ledger = UsageLedger::new(db.pool().clone());
    assert_eq!(requests_and_rows(&ledger, "a").await, (3, 6, 0.75));
    assert_eq!(requests_and_rows(&ledger, "b").await, (2, 4, 0.5));
    // adds to what the ledger already holds, as the synchronous charge does
    ledger.charge("a", &charge(10)).await.unwrap();
    behind.charge("a", charge(100));
    assert!(behind.flush().await);
    assert_eq!(requests_and_rows(&ledger, "a").await, (5, 116, 1.25));
    assert_eq!(supervisor.tasks()[TASK_NAME].status, TaskStatus::Running);
    // a ledger's queued charge: a report of that ledger flushes first, so
    // it includes the charge; a ledger without a write-behind queues none
    assert!(!ledger.charge_behind("d", &charge(1)));
    let behind_ledger = UsageLedger::new(db.pool().clone()).with_write_behind(behind.clone());
    assert!(behind_ledger.charge_behind("d", &charge(3)));
    assert_eq!(requests_and_rows(&behind_ledger, "d").await, (1, 3, 0.25));

    // with the audit disabled, charges are still stored but no entry is
    let off = WriteBehind::start(
        db.pool().clone(),
        &AuditConfig {
            enabled: false,
            retention_days: 90,
        },
        &supervisor,
        "sql",
    );
    off.audit(entry("c", "r9"));
    off.charge("c", charge(1));
    assert!(off.flush().await);
    assert!(log.list("c", 10, 0).await.unwrap().is_empty());
    assert_eq!(requests_and_rows(&ledger, "c").await, (1, 1, 0.25));
}

#[tokio::test]
async fn a_batch_postgresql_refuses_is_retried_until_stored_and_a_flush_waits_for_it() {
    let (db, supervisor, behind) = started().await;
    let admin = db.pool().get().await.unwrap();
    // the audit table goes away: every store fails (42P01) until it is back
    admin
        .batch_execute("ALTER TABLE quarry.audit_log RENAME TO audit_log_away")
        .await
        .unwrap();
    behind.audit(entry("a", "during"));
    behind.charge("a", charge(3));
    let ledger = UsageLedger::new(db.pool().clone());
    let repair = {
        let supervisor = supervisor.clone();
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let state = supervisor.tasks()[TASK_NAME].clone();
                if state.status == TaskStatus::Restarting {
                    assert!(
                        state.last_error.as_deref().unwrap_or("").contains("42P01"),
                        "{state:?}"
                    );
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never reported down"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // nothing half-stored: the charge waits with the entry
            assert_eq!(requests_and_rows(&ledger, "a").await, (0, 0, 0.0));
            admin
                .batch_execute("ALTER TABLE quarry.audit_log_away RENAME TO audit_log")
                .await
                .unwrap();
        })
    };
    // queued with the entry it follows: answered only once that is stored,
    // which needs the table back
    assert!(behind.flush().await, "stored once the table is back");
    repair.await.unwrap();
    let log = AuditLog::new(db.pool().clone(), AuditConfig::default());
    let ids: Vec<String> = log
        .list("a", 10, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.request_id)
        .collect();
    assert_eq!(ids, ["during"], "nothing lost, nothing twice");
    assert_eq!(requests_and_rows(&ledger, "a").await, (1, 3, 0.25));
    let state = supervisor.tasks()[TASK_NAME].clone();
    assert_eq!(state.status, TaskStatus::Running, "{state:?}");
    assert!(state.restarts >= 1, "{state:?}");
}

#[tokio::test]
async fn a_flush_gives_up_after_its_timeout_while_nothing_can_be_stored() {
    let (db, _supervisor, behind) = started().await;
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute("ALTER TABLE quarry.usage_daily RENAME TO usage_daily_away")
        .await
        .unwrap();
    behind.charge("a", charge(1));
    let started = tokio::time::Instant::now();
    assert!(!behind.flush().await);
    assert!(started.elapsed() >= FLUSH_TIMEOUT);
}

/// PostgreSQL's `text` cannot hold NUL (SQLSTATE 22021): a client's SQL
/// with one is stored with U+FFFD in its place, rather than failing its
/// batch on every retry and holding back what is queued behind it.
#[tokio::test]
async fn a_nul_in_a_clients_text_does_not_hold_the_queue_back() {
    let (db, supervisor, behind) = started().await;
    behind.audit(AuditEntry {
        sql: Some("SELECT '\0'".into()),
        detail: Some("parse error at \0".into()),
        ..AuditEntry::new("a", "an\0n", "r1", "sql", "execute", Outcome::Refused)
    });
    behind.charge("a\0", charge(1));
    behind.audit(entry("a", "r2"));
    assert!(behind.flush().await, "stored, not retried forever");
    let log = AuditLog::new(db.pool().clone(), AuditConfig::default());
    let listed = log.list("a", 10, 0).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[1].sql.as_deref(), Some("SELECT '\u{FFFD}'"));
    assert_eq!(listed[1].subject, "an\u{FFFD}n");
    let ledger = UsageLedger::new(db.pool().clone());
    assert_eq!(requests_and_rows(&ledger, "a\u{FFFD}").await, (1, 1, 0.25));
    assert_eq!(supervisor.tasks()[TASK_NAME].status, TaskStatus::Running);
}
