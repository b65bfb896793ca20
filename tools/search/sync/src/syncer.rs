//! The [`Syncer`]: install, backfill, incremental sync, status and the
//! long-running [`Syncer::run`] loop.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt as _;
use quarry_llm::embed::Embedder;
use quarry_search::collection::Collection;
use quarry_search::ddl::ensure_sidecar;
use tokio::sync::Notify;
use tokio_postgres::types::Kind;
use tokio_postgres::{AsyncMessage, GenericClient, NoTls};
use tracing::{debug, info, warn};

use crate::config::SyncConfig;
use crate::freshness::{Freshness, Window};
use crate::sql::{
    self, DOCS_CHANNEL, OUTBOX_CHANNEL, SourceShape, Statements, TRIGGER_FUNCTIONS,
    TRIGGER_SUFFIXES,
};
use quarry_db::error_text as db_message;

use crate::{Result, SyncError};

/// Backfill progress, reported after every committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Source rows copied so far, counting those before a resumed checkpoint.
    pub done: u64,
    /// Estimated source rows: `pg_class.reltuples`, or `count(*)` when the
    /// table was never analysed; never below `done`.
    pub total: u64,
    /// The backfill is complete.
    pub finished: bool,
}

/// What [`Syncer::backfill`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackfillReport {
    /// Transactions committed.
    pub batches: u64,
    /// Source rows copied by this call.
    pub rows: u64,
    /// Documents tombstoned by the final sweep (rows the source no longer has).
    pub tombstoned: u64,
    /// Checkpoint (last key copied, text form) this call resumed after.
    pub resumed_after: Option<String>,
}

/// What one [`Syncer::process_outbox`] call did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutboxReport {
    /// Outbox entries claimed and deleted.
    pub claimed: usize,
    /// Distinct keys among them.
    pub keys: usize,
    /// Keys whose source row exists.
    pub found: u64,
    /// Documents inserted or changed (unchanged ones keep their version).
    pub upserted: u64,
    /// Documents tombstoned (source row gone).
    pub tombstoned: u64,
    /// Per claimed entry, time from its `enqueued_at` to this transaction's
    /// last statement (server clock).
    pub latencies: Vec<Duration>,
}

/// A collection's sync state, for `quarry index status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Collection name.
    pub collection: String,
    /// Live documents.
    pub docs: u64,
    /// Tombstones.
    pub deleted: u64,
    /// Live documents whose vectors are current.
    pub embedded: u64,
    /// Highest document version (0 when empty).
    pub max_version: i64,
    /// Outbox entries waiting.
    pub outbox_backlog: u64,
    /// Age of the oldest waiting entry.
    pub outbox_oldest: Option<Duration>,
    /// The backfill is complete.
    pub backfill_done: bool,
    /// Last key the backfill copied (text form), `None` before the first batch.
    pub backfill_checkpoint: Option<String>,
    /// Embedder recorded for the vectors, `(model_id, dimension)`.
    pub embedder: Option<(String, usize)>,
}

/// Keeps one collection's sidecar in step with its source (see the crate
/// docs). Cheap to clone: clones share the pool, the collection and the
/// freshness window.
#[derive(Clone)]
pub struct Syncer {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("collection", &self.inner.collection.name)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    database_url: String,
    pub(crate) collection: Arc<Collection>,
    pub(crate) embedder: Option<Arc<dyn Embedder>>,
    pub(crate) config: SyncConfig,
    statements: Mutex<Option<Arc<Statements>>>,
    freshness: Mutex<Window>,
}

/// Two-key advisory locks ([`quarry_db::lock::try_lock_pair`],
/// `pg_advisory_lock(int, int)`): the first key
/// names the purpose, the second the collection. They live in a different
/// key space from `ensure_sidecar`'s one-key lock.
const LEADER_LOCK: &str = "quarry.search.leader";
const WRITE_LOCK: &str = "quarry.search.write";

/// Collection bookkeeping read under the write lock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BackfillState {
    after: Option<String>,
    done: bool,
    from_version: Option<i64>,
}

impl Syncer {
    /// A syncer for `collection` on the database behind `pool`.
    /// `database_url` is the same database: [`Syncer::run`] opens one
    /// dedicated connection with it for the leader lock and `LISTEN`.
    /// `embedder`, when given, is recorded for the collection (and checked
    /// against the recorded one) by [`Syncer::install`].
    pub fn new(
        pool: Pool,
        database_url: impl Into<String>,
        collection: Arc<Collection>,
        embedder: Option<Arc<dyn Embedder>>,
        config: SyncConfig,
    ) -> Syncer {
        Syncer {
            inner: Arc::new(Inner {
                pool,
                database_url: database_url.into(),
                collection,
                embedder,
                config,
                statements: Mutex::new(None),
                freshness: Mutex::new(Window::default()),
            }),
        }
    }

    /// The collection this syncer keeps.
    pub fn collection(&self) -> &Collection {
        &self.inner.collection
    }

    /// Freshness over the last 10,000 changes [`Syncer::process_outbox`]
    /// applied through this syncer (or its clones).
    pub fn freshness(&self) -> Freshness {
        self.inner
            .freshness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .summary()
    }

    fn name(&self) -> &str {
        &self.inner.collection.name
    }

    fn source_error(&self, message: impl Into<String>) -> SyncError {
        SyncError::Source {
            collection: self.name().to_owned(),
            message: message.into(),
        }
    }

    /// Prepares the collection: creates or checks the sidecar (recording the
    /// embedder's model id and dimension), checks that the key column is
    /// unique and that every field expression compiles against the source,
    /// creates the trigger functions and (re)creates the triggers on the
    /// source and dependent tables. Restarts the backfill when the source
    /// table's OID differs from the recorded one (the table was recreated),
    /// or when triggers were missing from a table after the backfill had
    /// begun (changes may have gone unrecorded); a restart also clears the
    /// collection's queued outbox entries, which the new backfill covers.
    /// Idempotent.
    ///
    /// # Errors
    /// [`SyncError::Collection`] from `ensure_sidecar` (missing source,
    /// embedder mismatch); [`SyncError::Source`] for a non-unique key or a
    /// failing field expression; database errors.
    pub async fn install(&self) -> Result<()> {
        let collection = &self.inner.collection;
        let embedder = self
            .inner
            .embedder
            .as_ref()
            .map(|e| (e.model_id(), e.dimension()));
        let mut client = self.inner.pool.get().await?;
        ensure_sidecar(&mut client, collection, embedder).await?;
        let statements = Arc::new(self.probe(&**client).await?);

        let tx = client.transaction().await?;
        quarry_db::lock::xact_lock(&*tx, quarry_search::ddl::SEARCH_LOCK).await?;
        for statement in TRIGGER_FUNCTIONS {
            tx.batch_execute(statement).await?;
        }
        self.lock_writes(&*tx).await?;
        let oid: Option<u32> = tx
            .query_one(
                "SELECT to_regclass($1)::oid",
                &[&collection.source.quoted()],
            )
            .await?
            .get(0);
        let Some(oid) = oid else {
            return Err(self.source_error(format!(
                "source table {} not found",
                collection.source.quoted()
            )));
        };
        let complete = self.triggers_complete(&*tx).await?;
        let row = tx
            .query_one(
                "SELECT source_oid, backfill_after, backfill_done FROM quarry.search_collections WHERE name = $1",
                &[&collection.name],
            )
            .await?;
        let recorded: Option<u32> = row.get(0);
        let started = row.get::<_, Option<String>>(1).is_some() || row.get::<_, bool>(2);
        let recreated = recorded.is_some_and(|r| r != oid);
        let restart = recreated || (!complete && started);
        for dependent in std::iter::once((&collection.source, collection.key.as_str())).chain(
            collection
                .dependents
                .iter()
                .map(|d| (&d.table, d.key_column.as_str())),
        ) {
            for statement in sql::trigger_ddl(&collection.name, dependent.0, dependent.1) {
                tx.batch_execute(&statement).await?;
            }
        }
        if restart {
            info!(
                collection = %collection.name,
                recreated, "source changed outside the triggers; restarting the backfill"
            );
            tx.execute(
                "UPDATE quarry.search_collections SET source_oid = $2, backfill_after = NULL, \
                 backfill_done = false, backfill_from_version = NULL, updated_at = now() WHERE name = $1",
                &[&collection.name, &oid],
            )
            .await?;
            // The new backfill reads every row as it is now, so queued
            // entries are redundant; they may also name keys of the old
            // table that no longer cast to the new key type.
            tx.execute(
                "DELETE FROM quarry.search_outbox WHERE collection = $1",
                &[&collection.name],
            )
            .await?;
        } else {
            tx.execute(
                "UPDATE quarry.search_collections SET source_oid = $2, updated_at = now() WHERE name = $1",
                &[&collection.name, &oid],
            )
            .await?;
        }
        tx.commit().await?;
        *self
            .inner
            .statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(statements);
        Ok(())
    }

    /// Reads the source's shape (key type, which keyword filters are
    /// arrays), checks the key is unique, and compiles every statement.
    async fn probe(&self, client: &impl GenericClient) -> Result<Statements> {
        let collection = &self.inner.collection;
        let row = client
            .query_opt(
                "SELECT format_type(a.atttypid, a.atttypmod), EXISTS (\
                   SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisunique \
                   AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum AND i.indpred IS NULL) \
                 FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attname = $2 \
                 AND NOT a.attisdropped AND a.attnum > 0",
                &[&collection.source.quoted(), &collection.key],
            )
            .await?;
        let Some(row) = row else {
            return Err(self.source_error(format!(
                "source table {} with key column {:?} not found",
                collection.source.quoted(),
                collection.key
            )));
        };
        let key_type: String = row.get(0);
        if !row.get::<_, bool>(1) {
            return Err(self.source_error(format!(
                "key column {:?} of {} has no unique index of its own (declare it the primary key)",
                collection.key,
                collection.source.quoted()
            )));
        }
        let mut filter_is_array = Vec::new();
        if !collection.filters.is_empty() {
            let select = collection
                .filters
                .iter()
                .map(|f| f.source.select_expr())
                .collect::<Vec<_>>()
                .join(", ");
            let probe = client
                .prepare(&format!(
                    "SELECT {select} FROM {} AS src",
                    collection.source.quoted()
                ))
                .await
                .map_err(|e| {
                    self.source_error(format!("filter expressions: {}", db_message(&e)))
                })?;
            filter_is_array = probe
                .columns()
                .iter()
                .map(|c| matches!(c.type_().kind(), Kind::Array(_)))
                .collect();
        }
        let statements = Statements::new(
            collection,
            &SourceShape {
                key_type,
                filter_is_array,
            },
        );
        for (what, text) in [
            ("backfill", &statements.backfill_next),
            ("incremental sync", &statements.sync_keys),
        ] {
            client
                .prepare(text)
                .await
                .map_err(|e| self.source_error(format!("{what} statement: {}", db_message(&e))))?;
        }
        Ok(statements)
    }

    /// Whether all four triggers exist on the source and every dependent.
    async fn triggers_complete(&self, client: &impl GenericClient) -> Result<bool> {
        let collection = &self.inner.collection;
        let names: Vec<String> = TRIGGER_SUFFIXES
            .iter()
            .map(|s| sql::trigger_name(&collection.name, s))
            .collect();
        let tables: Vec<String> = std::iter::once(collection.source.quoted())
            .chain(collection.dependents.iter().map(|d| d.table.quoted()))
            .collect();
        let found: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_trigger t WHERE t.tgname = ANY($1) \
                 AND t.tgrelid IN (SELECT to_regclass(x) FROM unnest($2::text[]) AS x)",
                &[&names, &tables],
            )
            .await?
            .get(0);
        let expected = names.len() * tables.len();
        Ok(usize::try_from(found).is_ok_and(|n| n == expected))
    }

    /// Whether [`Syncer::install`] must run again: the source was recreated
    /// (OID changed) or a trigger is missing.
    async fn needs_install(&self) -> Result<bool> {
        let client = self.inner.pool.get().await?;
        let collection = &self.inner.collection;
        let row = client
            .query_one(
                "SELECT to_regclass($1)::oid IS DISTINCT FROM \
                   (SELECT source_oid FROM quarry.search_collections WHERE name = $2)",
                &[&collection.source.quoted(), &collection.name],
            )
            .await?;
        if row.get::<_, bool>(0) {
            return Ok(true);
        }
        Ok(!self.triggers_complete(&**client).await?)
    }

    pub(crate) async fn statements(&self) -> Result<Arc<Statements>> {
        if let Some(s) = self
            .inner
            .statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(s.clone());
        }
        let client = self.inner.pool.get().await?;
        let statements = Arc::new(self.probe(&**client).await?);
        *self
            .inner
            .statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(statements.clone());
        Ok(statements)
    }

    /// Serialises this collection's document writers until the transaction ends.
    async fn lock_writes(&self, tx: &impl GenericClient) -> Result<()> {
        quarry_db::lock::xact_lock_pair(tx, WRITE_LOCK, self.name()).await?;
        Ok(())
    }

    async fn notify_docs(&self, tx: &impl GenericClient) -> Result<()> {
        tx.execute("SELECT pg_notify($1, $2)", &[&DOCS_CHANNEL, &self.name()])
            .await?;
        Ok(())
    }

    async fn backfill_state(&self, client: &impl GenericClient) -> Result<BackfillState> {
        let row = client
            .query_opt(
                "SELECT backfill_after, backfill_done, backfill_from_version \
                 FROM quarry.search_collections WHERE name = $1",
                &[&self.name()],
            )
            .await?;
        let Some(row) = row else {
            return Err(self.source_error("not installed (run install first)"));
        };
        Ok(BackfillState {
            after: row.get(0),
            done: row.get(1),
            from_version: row.get(2),
        })
    }

    /// Copies the source into the sidecar in primary-key order, resuming
    /// after the recorded checkpoint, until done; calls `progress` after
    /// every committed batch. Each batch (at most
    /// [`SyncConfig::backfill_batch`] rows) upserts its documents with new
    /// versions and advances the checkpoint in one transaction. The last
    /// batch also tombstones every live document older than the backfill's
    /// start mark (rows gone from a recreated or truncated source) and marks
    /// the backfill done. Returns at once when it is already done.
    ///
    /// Cancellation-safe: dropping the future rolls back the open batch.
    ///
    /// # Errors
    /// [`SyncError::Source`] when the collection is not installed; database
    /// errors (including a field expression failing on some row).
    pub async fn backfill(&self, mut progress: impl FnMut(Progress)) -> Result<BackfillReport> {
        let statements = self.statements().await?;
        let limit = SyncConfig::limit(self.inner.config.backfill_batch);
        let source = self.inner.collection.source.quoted();
        let key = format!("src.{}", quarry_db::quote_ident(&self.inner.collection.key));
        let mut report = BackfillReport::default();
        let mut client = self.inner.pool.get().await?;
        let state = self.backfill_state(&**client).await?;
        if state.done {
            return Ok(report);
        }
        report.resumed_after = state.after.clone();
        let estimate: i64 = client
            .query_one(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)",
                &[&source],
            )
            .await?
            .get(0);
        let estimate = if estimate >= 0 {
            estimate
        } else {
            client
                .query_one(&format!("SELECT count(*) FROM {source} AS src"), &[])
                .await?
                .get(0)
        };
        let mut done = match &state.after {
            Some(after) => self.rows_up_to(&**client, &key, after).await?,
            None => 0,
        };
        loop {
            let tx = client.transaction().await?;
            self.lock_writes(&*tx).await?;
            let state = self.backfill_state(&*tx).await?;
            if state.done {
                tx.commit().await?;
                break;
            }
            if state.after.is_none() {
                done = 0;
            }
            // The start mark: every document older than the backfill's first
            // batch that the backfill does not rewrite is gone from the source.
            let from_version = match (state.from_version, &state.after) {
                (Some(v), _) => Some(v),
                (None, None) => Some(
                    tx.query_one(
                        &format!(
                            "SELECT coalesce(max(version), 0) FROM {}",
                            self.inner.collection.docs_table()
                        ),
                        &[],
                    )
                    .await?
                    .get::<_, i64>(0),
                ),
                (None, Some(_)) => None,
            };
            let row = match &state.after {
                None => tx.query_one(&statements.backfill_first, &[&limit]).await?,
                Some(after) => {
                    tx.query_one(&statements.backfill_next, &[&limit, after])
                        .await?
                }
            };
            let rows: i64 = row.get(0);
            let last: Option<String> = row.get(1);
            let finished = rows < limit;
            let after = last.or_else(|| state.after.clone());
            let mut tombstoned = 0;
            if finished && let Some(mark) = from_version {
                tombstoned = tx
                    .query_one(&statements.sweep, &[&mark])
                    .await?
                    .get::<_, i64>(0);
            }
            let updated = tx
                .execute(
                    "UPDATE quarry.search_collections SET backfill_after = $2, \
                       backfill_from_version = $3, backfill_done = $4, updated_at = now() \
                     WHERE name = $1 AND NOT backfill_done \
                       AND backfill_after IS NOT DISTINCT FROM $5 \
                       AND backfill_from_version IS NOT DISTINCT FROM $6",
                    &[
                        &self.name(),
                        &after,
                        &from_version,
                        &finished,
                        &state.after,
                        &state.from_version,
                    ],
                )
                .await?;
            if updated == 0 {
                // A TRUNCATE trigger reset the backfill meanwhile: start over.
                drop(tx);
                debug!(collection = %self.name(), "backfill reset concurrently; re-reading");
                continue;
            }
            if rows > 0 || tombstoned > 0 {
                self.notify_docs(&*tx).await?;
            }
            tx.commit().await?;
            let rows = u64::try_from(rows).unwrap_or(0);
            done += rows;
            report.batches += 1;
            report.rows += rows;
            report.tombstoned += u64::try_from(tombstoned).unwrap_or(0);
            progress(Progress {
                done,
                total: u64::try_from(estimate).unwrap_or(0).max(done),
                finished,
            });
            if finished {
                break;
            }
        }
        Ok(report)
    }

    /// Source rows with a key up to `after` (what a resumed backfill has done).
    async fn rows_up_to(&self, client: &impl GenericClient, key: &str, after: &str) -> Result<u64> {
        let statements = self.statements().await?;
        let n: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} AS src WHERE {key} <= $1::text::{}",
                    self.inner.collection.source.quoted(),
                    statements.key_type
                ),
                &[&after],
            )
            .await?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Applies one batch of queued changes: claims up to
    /// [`SyncConfig::outbox_batch`] outbox entries of this collection in
    /// `seq` order, reads the current source rows of their distinct keys,
    /// upserts the documents of those found (a new version only when
    /// something changed), tombstones those not found, and deletes the
    /// claimed entries, all in one transaction. A crash or a dropped future
    /// before the commit leaves the entries queued, and applying them again
    /// gives the same documents. Records the latencies for
    /// [`Syncer::freshness`]. `claimed == 0` means the queue was empty.
    ///
    /// # Errors
    /// Database errors (the transaction is rolled back).
    pub async fn process_outbox(&self) -> Result<OutboxReport> {
        let statements = self.statements().await?;
        let mut client = self.inner.pool.get().await?;
        let tx = client.transaction().await?;
        self.lock_writes(&*tx).await?;
        let claimed = tx
            .query(
                "SELECT seq, key FROM quarry.search_outbox WHERE collection = $1 \
                 ORDER BY seq LIMIT $2 FOR UPDATE",
                &[
                    &self.name(),
                    &SyncConfig::limit(self.inner.config.outbox_batch),
                ],
            )
            .await?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(OutboxReport::default());
        }
        let mut seqs = Vec::with_capacity(claimed.len());
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        for row in &claimed {
            seqs.push(row.get::<_, i64>(0));
            let key: String = row.get(1);
            if seen.insert(key.clone()) {
                keys.push(key);
            }
        }
        let row = tx.query_one(&statements.sync_keys, &[&keys]).await?;
        let found: i64 = row.get(0);
        let upserted: i64 = row.get(1);
        let tombstoned: i64 = row.get(2);
        let latencies = tx
            .query(
                "DELETE FROM quarry.search_outbox WHERE seq = ANY($1) \
                 RETURNING extract(epoch FROM clock_timestamp() - enqueued_at)::float8",
                &[&seqs],
            )
            .await?
            .iter()
            .filter_map(|r| Duration::try_from_secs_f64(r.get::<_, f64>(0).max(0.0)).ok())
            .collect::<Vec<_>>();
        if upserted > 0 || tombstoned > 0 {
            self.notify_docs(&*tx).await?;
        }
        tx.commit().await?;
        quarry_metrics::sync_applied(self.name(), &latencies);
        self.inner
            .freshness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(&latencies);
        Ok(OutboxReport {
            claimed: claimed.len(),
            keys: keys.len(),
            found: u64::try_from(found).unwrap_or(0),
            upserted: u64::try_from(upserted).unwrap_or(0),
            tombstoned: u64::try_from(tombstoned).unwrap_or(0),
            latencies,
        })
    }

    /// Applies queued changes until the outbox holds none of this
    /// collection's entries; returns the batches' reports merged.
    ///
    /// # Errors
    /// As [`Syncer::process_outbox`]; batches committed before an error stay.
    pub async fn drain_outbox(&self) -> Result<OutboxReport> {
        let mut total = OutboxReport::default();
        loop {
            let report = self.process_outbox().await?;
            if report.claimed == 0 {
                return Ok(total);
            }
            total.claimed += report.claimed;
            total.keys += report.keys;
            total.found += report.found;
            total.upserted += report.upserted;
            total.tombstoned += report.tombstoned;
            total.latencies.extend(report.latencies);
        }
    }

    /// Outbox entries of this collection waiting, and the age of the
    /// oldest (server clock).
    ///
    /// # Errors
    /// Database errors.
    pub async fn outbox_backlog(&self) -> Result<(u64, Option<Duration>)> {
        let client = self.inner.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*), extract(epoch FROM clock_timestamp() - min(enqueued_at))::float8 \
                 FROM quarry.search_outbox WHERE collection = $1",
                &[&self.name()],
            )
            .await?;
        Ok((
            u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            row.get::<_, Option<f64>>(1)
                .and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()),
        ))
    }

    /// Live documents whose vectors are not current (`NOT embedded AND NOT
    /// deleted`, the partial index the embedder reads by).
    ///
    /// # Errors
    /// Database errors.
    pub async fn embedding_backlog(&self) -> Result<u64> {
        let client = self.inner.pool.get().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE NOT embedded AND NOT deleted",
                    self.inner.collection.docs_table()
                ),
                &[],
            )
            .await?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// Counts for the CLI (see [`Status`]).
    ///
    /// # Errors
    /// [`SyncError::Source`] when the collection is not installed; database errors.
    pub async fn status(&self) -> Result<Status> {
        let client = self.inner.pool.get().await?;
        let docs = client
            .query_one(
                &format!(
                    "SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE deleted), \
                       count(*) FILTER (WHERE embedded AND NOT deleted), coalesce(max(version), 0) \
                     FROM {}",
                    self.inner.collection.docs_table()
                ),
                &[],
            )
            .await?;
        let outbox = client
            .query_one(
                "SELECT count(*), extract(epoch FROM clock_timestamp() - min(enqueued_at))::float8 \
                 FROM quarry.search_outbox WHERE collection = $1",
                &[&self.name()],
            )
            .await?;
        let meta = client
            .query_opt(
                "SELECT backfill_done, backfill_after, model_id, dimension \
                 FROM quarry.search_collections WHERE name = $1",
                &[&self.name()],
            )
            .await?;
        let Some(meta) = meta else {
            return Err(self.source_error("not installed (run install first)"));
        };
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        let model: Option<String> = meta.get(2);
        let dimension: Option<i32> = meta.get(3);
        Ok(Status {
            collection: self.name().to_owned(),
            docs: count(docs.get(0)),
            deleted: count(docs.get(1)),
            embedded: count(docs.get(2)),
            max_version: docs.get(3),
            outbox_backlog: count(outbox.get(0)),
            outbox_oldest: outbox
                .get::<_, Option<f64>>(1)
                .and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()),
            backfill_done: meta.get(0),
            backfill_checkpoint: meta.get(1),
            embedder: model.zip(dimension.and_then(|d| usize::try_from(d).ok())),
        })
    }

    /// The sync job: waits to become the collection's only syncer (a
    /// session-level advisory lock on a dedicated connection, retried every
    /// poll interval), `LISTEN`s on [`OUTBOX_CHANNEL`], installs, backfills,
    /// then applies queued changes whenever a notification arrives or the
    /// poll interval passes. Embedding runs as a separate task, woken after
    /// each round, so slow embedding never holds documents back. A recreated
    /// source table (or missing triggers) is noticed at the poll interval
    /// and triggers a re-install and a new backfill. Errors after start-up
    /// are logged and retried at the poll interval.
    ///
    /// Returns `Ok(())` once `shutdown` resolves. Cancellation-safe: every
    /// write is a transaction that a dropped future rolls back, and the
    /// leader lock goes with its connection.
    ///
    /// # Errors
    /// Start-up failures ([`Syncer::install`]'s), and
    /// [`SyncError::LostLeadership`] when the dedicated connection closes.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::select! {
            biased;
            () = shutdown => Ok(()),
            result = self.lead(None) => result,
        }
    }

    /// [`Syncer::run`] under a [`quarry_db::supervisor::Supervisor`], which
    /// stops it and restarts it after an error: `task` hears of every failed
    /// round (the task is down until the next round succeeds) and of every
    /// successful one. Never returns `Ok`.
    ///
    /// # Errors
    /// As [`Syncer::run`]: start-up failures, and
    /// [`SyncError::LostLeadership`] when the dedicated connection closes
    /// (e.g. PostgreSQL restarted).
    pub async fn run_supervised(&self, task: quarry_db::supervisor::TaskHandle) -> Result<()> {
        self.lead(Some(&task)).await
    }

    async fn lead(&self, task: Option<&quarry_db::supervisor::TaskHandle>) -> Result<()> {
        let name = self.name().to_owned();
        let poll = self.inner.config.poll_interval();
        let (client, mut connection) =
            tokio_postgres::connect(&self.inner.database_url, NoTls).await?;
        let wake = Arc::new(Notify::new());
        let driver = {
            let wake = wake.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(AsyncMessage::Notification(n))
                            if n.channel() == OUTBOX_CHANNEL && n.payload() == name =>
                        {
                            wake.notify_one();
                        }
                        Ok(_) => {}
                        Err(error) => {
                            let error = quarry_db::PgError(error);
                            warn!(collection = %name, %error, "leader connection failed");
                            break;
                        }
                    }
                }
            })
        };
        let _driver = AbortOnDrop(driver);
        loop {
            if quarry_db::lock::try_lock_pair(&client, LEADER_LOCK, &name).await? {
                break;
            }
            debug!(collection = %name, "another syncer leads; waiting");
            tokio::time::sleep(poll).await;
        }
        info!(collection = %name, "leading the sync");
        client
            .batch_execute(&format!("LISTEN {OUTBOX_CHANNEL}"))
            .await?;
        self.install().await?;

        let embed_wake = Arc::new(Notify::new());
        let _embedder = self.inner.embedder.is_some().then(|| {
            AbortOnDrop(tokio::spawn(
                self.clone().embed_loop(embed_wake.clone(), poll),
            ))
        });
        let mut check_install = false;
        loop {
            if client.is_closed() {
                return Err(SyncError::LostLeadership(name));
            }
            match self.sync_round(check_install).await {
                Ok(()) => {
                    if let Some(task) = task {
                        task.running();
                    }
                }
                Err(error) => {
                    warn!(collection = %name, %error, "sync round failed; retrying");
                    if let Some(task) = task {
                        task.failed(&error);
                    }
                }
            }
            embed_wake.notify_one();
            check_install = tokio::select! {
                () = wake.notified() => false,
                () = tokio::time::sleep(poll) => true,
            };
        }
    }

    /// One round of [`Syncer::run`]: re-install when needed, finish the
    /// backfill, drain the outbox.
    async fn sync_round(&self, check_install: bool) -> Result<()> {
        if check_install && self.needs_install().await? {
            self.install().await?;
        }
        let name = self.name().to_owned();
        let mut last_logged = 0;
        let report = self
            .backfill(|p| {
                if p.finished || p.done >= last_logged + 10_000 {
                    last_logged = p.done;
                    info!(collection = %name, done = p.done, total = p.total, "backfill");
                }
            })
            .await?;
        if report.batches > 0 {
            info!(collection = %name, rows = report.rows, tombstoned = report.tombstoned, "backfill done");
        }
        let report = self.drain_outbox().await?;
        // what arrived while draining: the backlog the next round starts with
        let (backlog, oldest) = self.outbox_backlog().await?;
        quarry_metrics::sync_outbox(&name, backlog, oldest);
        if report.claimed > 0 {
            let f = Freshness::from_latencies(report.latencies.iter().copied());
            debug!(
                collection = %name, changes = report.claimed, upserted = report.upserted,
                tombstoned = report.tombstoned, p99_ms = f.p99.as_millis(), "applied changes"
            );
        }
        Ok(())
    }

    async fn embed_loop(self, wake: Arc<Notify>, poll: Duration) {
        loop {
            match self.embed_pending().await {
                Ok(report) if report.docs > 0 => {
                    quarry_metrics::documents_embedded(self.name(), report.docs);
                    debug!(
                        collection = %self.name(), docs = report.docs, embedded = report.embedded_texts,
                        reused = report.reused, "embedded"
                    )
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(collection = %self.name(), %error, "embedding failed; retrying")
                }
            }
            match self.embedding_backlog().await {
                Ok(pending) => quarry_metrics::embedding_backlog(self.name(), pending),
                Err(error) => {
                    debug!(collection = %self.name(), %error, "cannot count the embedding backlog")
                }
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// Aborts a spawned task when dropped, so a dropped [`Syncer::run`] leaves
/// nothing running.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
