//! Write-behind for the bookkeeping every SQL statement leaves: its audit
//! entry (`quarry.audit_log`) and its usage charge (`quarry.usage_daily`).
//! The SQL tool queues both ([`WriteBehind::audit`], [`WriteBehind::charge`])
//! and returns its result; a background writer stores them, in batches, so
//! neither write is on the statement's path (they took ≈ 0.4 ms of each
//! statement's round trip on the 2-core benchmark machine, `quarry bench ask`).
//!
//! What callers can rely on:
//! - **Read-your-writes in this process.** [`WriteBehind::flush`] returns
//!   once every item queued before it is stored; the audit log's and the
//!   usage report's readers call it first, so a caller who ran a statement
//!   then reads the audit log or its usage through the same server sees it.
//!   Another replica sees it once the writer has stored it: normally within
//!   a millisecond or two of the statement.
//! - **Batches.** The writer takes what is queued (at most [`MAX_BATCH`]
//!   items), adds up the usage charges per tenant and UTC day, and stores
//!   the batch in one statement: one round trip and one commit for many
//!   statements' bookkeeping, where each statement took two before.
//! - **Faults are retried, not dropped.** A batch that cannot be stored
//!   (PostgreSQL down, say) is retried with the supervisor's backoff
//!   ([`crate::supervisor::restart_delays`]) until it is; meanwhile the
//!   writer reports itself down through its [`TaskHandle`] (health and the
//!   `quarry_background_task_up` metric) and new items wait in the queue.
//!   Before this, a failed write was logged and lost. A NUL character,
//!   which PostgreSQL's `text` cannot hold, is stored as U+FFFD, so a
//!   client's text cannot make a batch fail for good; a batch refused for
//!   good for another reason (none is known) would hold the queue back,
//!   reported down, until the process restarts.
//! - **What can still be lost:** items offered while the queue is full
//!   ([`QUEUE_CAPACITY`]; logged and counted in
//!   `quarry_bookkeeping_dropped_total`, and the statement still runs:
//!   availability over audit, as [`crate::audit::AuditLog::record`]), and
//!   the items queued when the process dies (normally the last few
//!   milliseconds of statements).
//! - **What may be stored twice:** a batch whose commit succeeded but whose
//!   answer was lost (the connection broke in between) is retried.
//! - **Times.** An audit entry's `at` is when it was queued (the statement's
//!   end), and a charge counts on the UTC day it was queued on, not when the
//!   batch is stored.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::audit::{AuditConfig, AuditEntry};
use crate::supervisor::{MAX_RESTART_DELAY, Supervisor, TaskHandle, restart_delays};
use crate::usage::UsageAmounts;
use crate::{Pool, error_text};

/// Items (audit entries, charges, flushes) the queue holds before new
/// audit entries and charges are dropped: at 1,000 statements a second,
/// 4 s of statements while PostgreSQL is unreachable.
pub const QUEUE_CAPACITY: usize = 8192;

/// Most items stored in one statement.
pub const MAX_BATCH: usize = 512;

/// Longest [`WriteBehind::flush`] waits (PostgreSQL unreachable, say);
/// the reader then reads what is stored.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The name the writer reports under to its [`Supervisor`].
pub const TASK_NAME: &str = "bookkeeping writer";

/// One queued item.
#[derive(Debug)]
enum Item {
    /// An audit entry and when it was queued (seconds since the Unix epoch).
    Audit(Box<AuditEntry>, f64),
    /// A tenant's charge, on the UTC day (days since the Unix epoch).
    Charge(String, i64, UsageAmounts),
    /// Answered once every item before it is stored.
    Flush(oneshot::Sender<()>),
}

/// The SQL tool's queue to the writer. Cheap to clone (shared); the writer
/// ends once every clone is dropped and the queue is stored.
#[derive(Debug, Clone)]
pub struct WriteBehind {
    tx: mpsc::Sender<Item>,
    audit_enabled: bool,
}

impl WriteBehind {
    /// Starts the writer on the current Tokio runtime: it stores into
    /// `pool` (the database holding the `quarry` schema), runs under
    /// `supervisor` as [`TASK_NAME`] of `group` (restarted after a panic,
    /// its state in health and metrics) and records audit entries only
    /// while `audit.enabled`.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(pool: Pool, audit: &AuditConfig, supervisor: &Supervisor, group: &str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let rx = Arc::new(Mutex::new(rx));
        // never cancelled: the writer stores what is queued and ends when
        // the last sender is dropped
        supervisor.spawn(TASK_NAME, group, CancellationToken::new(), move |task| {
            write(Arc::clone(&rx), pool.clone(), task)
        });
        Self {
            tx,
            audit_enabled: audit.enabled,
        }
    }

    /// Queues `entry` (its `id` and `at` are set when it is stored; `at`
    /// is now). Does nothing while the audit is disabled.
    pub fn audit(&self, entry: AuditEntry) {
        if self.audit_enabled {
            self.offer(Item::Audit(Box::new(entry), unix_seconds()), "audit");
        }
    }

    /// Queues `amounts` for `tenant`'s current UTC day.
    pub fn charge(&self, tenant: &str, amounts: UsageAmounts) {
        let day = (unix_seconds() / 86_400.0).floor() as i64;
        self.offer(Item::Charge(tenant.to_owned(), day, amounts), "usage");
    }

    fn offer(&self, item: Item, kind: &'static str) {
        if let Err(error) = self.tx.try_send(item) {
            let why = match error {
                mpsc::error::TrySendError::Full(_) => "the queue is full",
                mpsc::error::TrySendError::Closed(_) => "the writer has stopped",
            };
            quarry_metrics::bookkeeping_dropped(kind);
            warn!(kind, why, "bookkeeping dropped");
        }
    }

    /// Waits until every item queued before this call is stored, at most
    /// [`FLUSH_TIMEOUT`]; `false` when that ran out (or the writer stopped)
    /// first.
    pub async fn flush(&self) -> bool {
        let (done, stored) = oneshot::channel();
        let wait = async { self.tx.send(Item::Flush(done)).await.is_ok() && stored.await.is_ok() };
        tokio::time::timeout(FLUSH_TIMEOUT, wait)
            .await
            .unwrap_or(false)
    }
}

/// Seconds since the Unix epoch, now.
fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One run of the writer: takes what is queued, stores it, answers the
/// flushes among it; until the queue closes. A batch that fails is retried
/// with backoff, reported through `task`.
async fn write(
    rx: Arc<Mutex<mpsc::Receiver<Item>>>,
    pool: Pool,
    task: TaskHandle,
) -> Result<(), Infallible> {
    // a restarted run waits here until the failed one's hold is released
    let mut rx = rx.lock().await;
    let mut items = Vec::with_capacity(MAX_BATCH);
    loop {
        if rx.recv_many(&mut items, MAX_BATCH).await == 0 {
            return Ok(());
        }
        quarry_metrics::bookkeeping_queued(rx.len());
        let (batch, flushes) = Batch::of(items.drain(..));
        if !batch.is_empty() {
            let mut delays = restart_delays();
            loop {
                match batch.store(&pool).await {
                    Ok(()) => {
                        task.running();
                        break;
                    }
                    Err(error) => {
                        let failures = task.failed(&error);
                        let delay = delays.next().unwrap_or(MAX_RESTART_DELAY);
                        warn!(
                            %error, failures, delay_ms = delay.as_millis() as u64,
                            audit_entries = batch.audit.len(), charges = batch.usage.len(),
                            "bookkeeping not stored; retrying"
                        );
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            quarry_metrics::bookkeeping_written("audit", batch.audit.len() as u64);
            quarry_metrics::bookkeeping_written("usage", batch.charges);
        }
        for flush in flushes {
            let _ = flush.send(());
        }
    }
}

/// What one statement stores: the audit entries in queue order, and the
/// charges added up per tenant and UTC day.
#[derive(Debug, Default)]
struct Batch {
    audit: Vec<(Box<AuditEntry>, f64)>,
    usage: BTreeMap<(String, i64), UsageAmounts>,
    /// Charges queued (before they were added up).
    charges: u64,
}

impl Batch {
    /// The batch of `items`, and the flushes among them.
    fn of(items: impl IntoIterator<Item = Item>) -> (Self, Vec<oneshot::Sender<()>>) {
        let mut batch = Self::default();
        let mut flushes = Vec::new();
        for item in items {
            match item {
                Item::Audit(entry, at) => batch.audit.push((entry, at)),
                Item::Charge(tenant, day, amounts) => {
                    batch.charges += 1;
                    *batch.usage.entry((tenant, day)).or_default() += &amounts;
                }
                Item::Flush(done) => flushes.push(done),
            }
        }
        (batch, flushes)
    }

    fn is_empty(&self) -> bool {
        self.audit.is_empty() && self.usage.is_empty()
    }

    /// Stores the batch in one statement ([`STORE`]): all of it or none.
    async fn store(&self, pool: &Pool) -> Result<(), String> {
        let client = pool.get().await.map_err(|e| crate::pool_error_text(&e))?;
        let statement = client
            .prepare_cached(&STORE)
            .await
            .map_err(|e| error_text(&e))?;
        let entries = || self.audit.iter().map(|(e, _)| e);
        let at: Vec<f64> = self.audit.iter().map(|(_, at)| *at).collect();
        let tenant: Vec<Cow<'_, str>> = entries().map(|e| storable(&e.tenant)).collect();
        let subject: Vec<Cow<'_, str>> = entries().map(|e| storable(&e.subject)).collect();
        let request_id: Vec<Cow<'_, str>> = entries().map(|e| storable(&e.request_id)).collect();
        let tool: Vec<Cow<'_, str>> = entries().map(|e| storable(&e.tool)).collect();
        let action: Vec<Cow<'_, str>> = entries().map(|e| storable(&e.action)).collect();
        let outcome: Vec<&str> = entries().map(|e| e.outcome.as_str()).collect();
        let sql: Vec<Option<Cow<'_, str>>> =
            entries().map(|e| e.sql.as_deref().map(storable)).collect();
        let rows: Vec<Option<i64>> = entries().map(|e| e.rows).collect();
        let bytes: Vec<Option<i64>> = entries().map(|e| e.bytes).collect();
        let duration: Vec<Option<f64>> = entries().map(|e| e.duration_ms).collect();
        let detail: Vec<Option<Cow<'_, str>>> = entries()
            .map(|e| e.detail.as_deref().map(storable))
            .collect();
        let sums = || self.usage.iter();
        let u_tenant: Vec<Cow<'_, str>> = sums().map(|((t, _), _)| storable(t)).collect();
        let u_day: Vec<i64> = sums().map(|((_, d), _)| *d).collect();
        let column =
            |f: fn(&UsageAmounts) -> i64| -> Vec<i64> { sums().map(|(_, a)| f(a)).collect() };
        let requests = column(|a| a.requests);
        let asks = column(|a| a.asks);
        let model_calls = column(|a| a.model_calls);
        let prompt = column(|a| a.prompt_tokens);
        let completion = column(|a| a.completion_tokens);
        let cost: Vec<f64> = sums().map(|(_, a)| a.cost_usd).collect();
        let u_rows = column(|a| a.rows);
        let u_bytes = column(|a| a.bytes);
        let cached = column(|a| a.cached_prompt_tokens);
        client
            .execute(
                &statement,
                &[
                    &at,
                    &tenant,
                    &subject,
                    &request_id,
                    &tool,
                    &action,
                    &outcome,
                    &sql,
                    &rows,
                    &bytes,
                    &duration,
                    &detail,
                    &u_tenant,
                    &u_day,
                    &requests,
                    &asks,
                    &model_calls,
                    &prompt,
                    &completion,
                    &cost,
                    &u_rows,
                    &u_bytes,
                    &cached,
                ],
            )
            .await
            .map_err(|e| error_text(&e))?;
        Ok(())
    }
}

/// `text` as PostgreSQL can store it in `text`: a NUL character (which
/// `text` cannot hold, SQLSTATE 22021) becomes U+FFFD. A client's SQL may
/// carry one; stored as sent, it would fail its batch on every retry and
/// hold back every entry queued behind it.
fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The batch's one statement: the audit entries inserted from arrays
/// (`$1`…`$12`, in a data-modifying `WITH`, which runs whether or not the
/// rest reads it, PostgreSQL 16 docs §7.8.4) and the charges upserted from
/// arrays (`$13` tenant, `$14` UTC day as days since 1970-01-01, `$15`…`$23`
/// the ledger's columns in order): one atomic statement, one commit.
static STORE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let columns = crate::usage::COLUMNS;
    let updates = crate::usage::increments();
    format!(
        "WITH audit AS (\
           INSERT INTO quarry.audit_log (at, tenant, subject, request_id, tool, action, outcome, \
             sql, rows, bytes, duration_ms, detail) \
           SELECT to_timestamp(e.at), e.tenant, e.subject, e.request_id, e.tool, e.action, \
             e.outcome, e.sql, e.rows, e.bytes, e.duration_ms, e.detail \
           FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::int8[], $10::int8[], $11::float8[], $12::text[]) \
             AS e(at, tenant, subject, request_id, tool, action, outcome, sql, rows, bytes, \
               duration_ms, detail)) \
         INSERT INTO quarry.usage_daily (tenant, day, {columns}) \
         SELECT u.tenant, DATE '1970-01-01' + u.day::int4, u.requests, u.asks, u.model_calls, \
           u.prompt_tokens, u.completion_tokens, u.cost_usd::numeric, u.rows, u.bytes, \
           u.cached_prompt_tokens \
         FROM unnest($13::text[], $14::int8[], $15::int8[], $16::int8[], $17::int8[], \
           $18::int8[], $19::int8[], $20::float8[], $21::int8[], $22::int8[], $23::int8[]) \
           AS u(tenant, day, requests, asks, model_calls, prompt_tokens, completion_tokens, \
             cost_usd, rows, bytes, cached_prompt_tokens) \
         ON CONFLICT (tenant, day) DO UPDATE SET {updates}"
    )
});

#[cfg(test)]
mod tests;
