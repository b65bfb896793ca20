//! The builder: figures → facts → paragraph → embedding → `quarry.summaries`.
//!
//! [`SummaryTool::build`] runs one build: for each kind asked for, the
//! entities query lists the entities (sorted by key); they are processed in
//! batches of `batch_size`, up to `concurrency` at a time. A tenant-scoped
//! kind (one with `tenants`, see [`crate::definition`] "Tenants") first
//! runs its tenants query, then does all of this once per tenant, its
//! entities query and figure queries seeing that tenant's rows only (its
//! stored summaries, data versions and removals are per tenant too). Per
//! entity:
//!
//! 1. every figure query runs in one `READ ONLY`, `REPEATABLE READ`
//!    transaction (one snapshot for all of the entity's figures) with
//!    `SET LOCAL statement_timeout`, when configured `SET LOCAL ROLE`, and
//!    for a tenant's build `quarry.tenant`/`quarry.subject` set with
//!    `set_config(…, true)` ([`quarry_db::Session`]);
//! 2. the **data version** is computed ([`data_version`]): the first 16 hex
//!    digits of SHA-256 over the kind's fingerprint (its definition and the
//!    analysis version [`ANALYSIS_VERSION`]),
//!    the entity's name and every figure's rows in canonical order
//!    ([`crate::analysis::canonical_rows`]);
//! 3. if the stored summary has that version and the build is not forced,
//!    only `checked_at` moves;
//! 4. otherwise facts are computed ([`crate::analysis`]) and the template
//!    rendered ([`crate::render`]).
//!
//! The batch is written in one transaction, new texts without embeddings. A
//! failing entity (SQL error, timeout, template error, …) is recorded in the
//! report and in `last_error` of its stored summary, and the rest carry on.
//!
//! Then, with an embedder, every stored summary without an embedding from
//! this embedder is embedded, `batch_size` texts per
//! [`quarry_llm::embed::Embedder::embed`] call (progress under the kind name
//! `embeddings`). Texts come first because embedding is the slow part
//! (MiniLM on two cores: a few to tens of texts a second): look-ups and
//! full-text search work as soon as the texts are written, and semantic
//! search covers summaries as they are embedded. An embedder failure stops
//! this phase and is recorded in the report's `warnings`; the next build
//! carries on where it stopped. After a full build of a kind
//! (no `entity_keys`), summaries of entities the entities query no longer
//! lists (for that tenant) are deleted, and so are the summaries of tenants
//! the tenants query no longer lists (for a shared kind: any stored under a
//! tenant; for a tenant-scoped one: any shared). A failing tenants query
//! fails the kind and deletes nothing. The run is recorded in
//! `quarry.summary_builds`.
//!
//! # Exclusion
//! One build at a time per database, across replicas: the build holds the
//! session-level advisory lock [`BUILD_LOCK_KEY`] on a dedicated pooled
//! connection (`pg_try_advisory_lock`; taken → [`SummaryError::BuildRunning`]).
//! It is released at the end; if the build is cancelled (its future
//! dropped), the connection is detached from the pool and closed, which
//! releases the lock, so a pooled connection never keeps it.

use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use deadpool_postgres::{Object, Pool};
use futures::StreamExt as _;
use quarry_db::lock;
use sha2::{Digest as _, Sha256};
use tokio_postgres::types::ToSql;

use crate::analysis::{self, BreakdownRow, FigureRows, SeriesRow};
use crate::definition::{BUILDER_SUBJECT, Shape};
use crate::error::{Result, SummaryError};
use crate::model::{BuildFailure, BuildOptions, BuildProgressEvent, BuildReport};
use crate::prepare::{KeyParam, PreparedFigure, PreparedKind, hex};
use crate::render::EntityRef;
use crate::service::SummaryTool;
use crate::store::{self, Existing, Touch, Upsert};

/// Key of the session-level advisory lock a build holds: the ASCII bytes
/// of `QUARRYSB` ("Quarry summary build") as a big-endian `i64`. Advisory
/// locks are per database, so builds against different databases do not
/// exclude each other.
pub const BUILD_LOCK_KEY: i64 = 0x5155_4152_5259_5342;

/// An entity as the entities query lists it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entity {
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) weight: Option<f64>,
}

/// PostgreSQL's message, detail and SQLSTATE ([`quarry_db::error_text`]).
fn db_message(e: &tokio_postgres::Error) -> String {
    quarry_db::error_text(e)
}

/// Why a step of a build failed: the message, and whether it was the
/// database being unreachable or going away ([`quarry_db::is_unavailable`],
/// or no pooled connection), which a retry later may get past.
#[derive(Debug)]
struct Failed {
    error: String,
    unavailable: bool,
}

impl From<String> for Failed {
    /// A failure of the definition or the data (a bad key, a figure that
    /// does not render): not a matter of availability.
    fn from(error: String) -> Self {
        Self {
            error,
            unavailable: false,
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

impl Failed {
    /// A statement's failure, unavailable when PostgreSQL was unreachable.
    fn db(e: &tokio_postgres::Error) -> Self {
        Self {
            error: db_message(e),
            unavailable: quarry_db::is_unavailable(e),
        }
    }

    /// No connection from the pool: unavailable.
    fn pool(e: &deadpool_postgres::PoolError) -> Self {
        Self {
            error: format!("database pool: {}", quarry_db::pool_error_text(e)),
            unavailable: true,
        }
    }

    /// The same failure with `context` before its message.
    fn within(self, context: &str) -> Self {
        Self {
            error: format!("{context}: {}", self.error),
            ..self
        }
    }
}

/// The data version of an entity: the first 16 hex digits of SHA-256 over
/// the kind's fingerprint, the entity's name and each figure's name and
/// canonical rows, NUL-separated.
pub fn data_version(fingerprint: &str, name: &str, figures: &[(&str, &FigureRows)]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(fingerprint.as_bytes());
    hasher.update([0]);
    hasher.update(name.as_bytes());
    hasher.update([0]);
    for (figure, rows) in figures {
        hasher.update(figure.as_bytes());
        hasher.update([0]);
        hasher.update(analysis::canonical_rows(rows));
        hasher.update([0]);
    }
    let mut h = hex(&hasher.finalize());
    h.truncate(16);
    h
}

/// A key converted for a figure's `$1`.
enum KeyValue<'a> {
    I16(i16),
    I32(i32),
    I64(i64),
    Text(&'a str),
}

fn key_value(param: KeyParam, key: &str) -> std::result::Result<Option<KeyValue<'_>>, String> {
    let bad = |t: &str| format!("entity key {key:?} is not an {t}");
    Ok(match param {
        KeyParam::None => None,
        KeyParam::Int2 => Some(KeyValue::I16(key.trim().parse().map_err(|_| bad("int2"))?)),
        KeyParam::Int4 => Some(KeyValue::I32(key.trim().parse().map_err(|_| bad("int4"))?)),
        KeyParam::Int8 => Some(KeyValue::I64(key.trim().parse().map_err(|_| bad("int8"))?)),
        KeyParam::Text => Some(KeyValue::Text(key)),
    })
}

/// What happened to one entity.
#[derive(Debug)]
enum Outcome {
    Unchanged(Touch),
    Changed(Upsert),
    Failed {
        key: String,
        name: String,
        error: String,
        unavailable: bool,
    },
}

/// Deletes the build lock's connection from the pool unless released.
struct BuildLock {
    conn: Option<Object>,
}

impl BuildLock {
    async fn acquire(pool: &Pool) -> Result<BuildLock> {
        let conn = pool.get().await?;
        if !lock::try_lock(&**conn, BUILD_LOCK_KEY).await? {
            // this session holds nothing: the connection goes back to the pool
            return Err(SummaryError::BuildRunning);
        }
        Ok(BuildLock { conn: Some(conn) })
    }

    /// Unlocks and returns the connection to the pool; if unlocking fails
    /// (or this future is dropped), `Drop` detaches and closes it instead.
    async fn release(mut self) {
        let unlocked = match &self.conn {
            Some(conn) => lock::unlock(&***conn, BUILD_LOCK_KEY)
                .await
                .unwrap_or(false),
            None => return,
        };
        if unlocked {
            // safe to reuse: the session no longer holds the lock
            drop(self.conn.take());
        }
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Detach from the pool; dropping the client closes the
            // connection and the server releases the session's lock.
            drop(Object::take(conn));
        }
    }
}

impl SummaryTool {
    /// Runs one build (see the module docs), calling `progress` as batches
    /// complete (and with `done = 0` when a kind starts; a tenant-scoped
    /// kind's `total` counts the entities of all its tenants). Takes no
    /// caller: builds are background work (the scheduler, `quarry summaries
    /// build`) whose results serve every caller (tenant-scoped kinds: each
    /// tenant its own); a build a client asks for goes through
    /// [`SummaryTool::refresh`], which records the caller.
    ///
    /// # Errors
    /// [`SummaryError::InvalidArgument`] for an unknown kind (`kinds[i]`)
    /// or `entity_keys` without exactly one kind (for a tenant-scoped kind,
    /// a key is built for every tenant whose entities query lists it, and a
    /// failure only when none does);
    /// [`SummaryError::BuildRunning`] when another build holds the lock;
    /// [`SummaryError::Unavailable`] when no connection can be had, and when
    /// the build was interrupted by the database going away: it cannot be
    /// recorded, or it has failures and PostgreSQL restarted while it ran.
    /// Other failures of single entities or kinds are not errors: they are
    /// in the report.
    ///
    /// Each call is counted in `quarry_summary_builds_total` by outcome
    /// (`ok`, `partial` with failures, `skipped` when another build runs,
    /// `error`), with its wall time and the summaries it wrote.
    pub async fn build(
        &self,
        opts: BuildOptions,
        progress: &(dyn Fn(BuildProgressEvent) + Send + Sync),
    ) -> Result<BuildReport> {
        use quarry_metrics::BuildOutcome;
        let started = std::time::Instant::now();
        let result = self.build_unmeasured(opts, progress).await;
        let (outcome, built) = match &result {
            Ok(report) if report.failed == 0 => (BuildOutcome::Ok, report.built),
            Ok(report) => (BuildOutcome::Partial, report.built),
            Err(error) => {
                if let SummaryError::BuildRunning = error {
                    (BuildOutcome::Skipped, 0)
                } else {
                    (BuildOutcome::Error, 0)
                }
            }
        };
        quarry_metrics::summary_build(outcome, started.elapsed(), built);
        result
    }

    async fn build_unmeasured(
        &self,
        opts: BuildOptions,
        progress: &(dyn Fn(BuildProgressEvent) + Send + Sync),
    ) -> Result<BuildReport> {
        let kinds = self.build_kinds(&opts)?;
        let lock = BuildLock::acquire(&self.pool).await?;
        let started_at = Utc::now();
        let mut report = BuildReport {
            started_at,
            finished_at: started_at,
            trigger: opts.trigger.clone(),
            entities: 0,
            built: 0,
            unchanged: 0,
            failed: 0,
            removed: 0,
            embedded: 0,
            failures: Vec::new(),
            warnings: Vec::new(),
        };
        for kind in kinds {
            self.build_kind(kind, &opts, progress, &mut report).await;
        }
        self.invalidate_names();
        tracing::info!(
            entities = report.entities,
            built = report.built,
            unchanged = report.unchanged,
            failed = report.failed,
            seconds = (Utc::now() - started_at).num_milliseconds() as f64 / 1e3,
            "summary texts written; embedding the new ones"
        );
        self.embed_pending(progress, &mut report).await;
        report.finished_at = Utc::now();
        let recorded = match self.pool.get().await {
            Ok(client) => store::record_build(&**client, &report)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(quarry_db::pool_error_text(&e)),
        };
        lock.release().await;
        // Interrupted by the database going away: an error, so that the
        // scheduler retries the build rather than waiting for the next one.
        if let Err(error) = recorded {
            tracing::warn!(%error, "cannot record the summary build");
            return Err(SummaryError::Unavailable(format!(
                "summary build interrupted after {} of {} entities: cannot record it: {error}",
                report.built + report.unchanged,
                report.entities
            )));
        }
        if report.failed > 0
            && let Some(restarted) = self.restarted_since(started_at).await
        {
            return Err(SummaryError::Unavailable(format!(
                "summary build interrupted: PostgreSQL restarted at {restarted} during it ({} failed)",
                report.failed
            )));
        }
        tracing::info!(
            trigger = %report.trigger,
            entities = report.entities,
            built = report.built,
            unchanged = report.unchanged,
            failed = report.failed,
            removed = report.removed,
            "summary build finished"
        );
        Ok(report)
    }

    /// When PostgreSQL (re)started after `since` (`pg_postmaster_start_time()`,
    /// PostgreSQL 16 docs §9.26): the time, as text; `None` otherwise or
    /// when that cannot be read.
    async fn restarted_since(&self, since: chrono::DateTime<Utc>) -> Option<String> {
        let client = self.pool.get().await.ok()?;
        let row = client
            .query_one("SELECT pg_postmaster_start_time()", &[])
            .await
            .ok()?;
        let started: chrono::DateTime<Utc> = row.try_get(0).ok()?;
        (started > since).then(|| started.to_rfc3339())
    }

    /// Embeds every stored summary that has no embedding from this
    /// embedder, in key order (keyset pagination, so a row that cannot be
    /// written is never fetched twice), `batch_size` texts per call. Stops at
    /// the first embedder or database failure, recorded in `warnings`.
    async fn embed_pending(
        &self,
        progress: &(dyn Fn(BuildProgressEvent) + Send + Sync),
        report: &mut BuildReport,
    ) {
        let Some(embedder) = &self.embedder else {
            return;
        };
        let model = embedder.model_id().to_owned();
        let total = match self.pool.get().await {
            Ok(client) => store::count_unembedded(&**client, &model).await,
            Err(e) => Err(e.into()),
        };
        let total = match total {
            Ok(n) => n,
            Err(e) => {
                report
                    .warnings
                    .push(format!("embedding summaries: cannot count them ({e})"));
                return;
            }
        };
        let mut after: Option<store::Unembedded> = None;
        while report.embedded < total {
            let step = async {
                let client = self.pool.get().await?;
                let batch = store::unembedded(
                    &**client,
                    &model,
                    after.as_ref(),
                    self.config.batch_size.max(1) as i64,
                )
                .await?;
                if batch.is_empty() {
                    return Ok::<_, SummaryError>(None);
                }
                let texts = batch.iter().map(|u| u.text.clone()).collect();
                let vectors = embedder
                    .embed_background(texts)
                    .await
                    .map_err(|e| SummaryError::Unavailable(format!("embedder: {e}")))?;
                if vectors.len() != batch.len() {
                    return Err(SummaryError::Internal(format!(
                        "the embedder returned {} vectors for {} texts",
                        vectors.len(),
                        batch.len()
                    )));
                }
                store::store_embeddings(&**client, &model, &batch, vectors).await?;
                let n = batch.len();
                Ok(batch.into_iter().next_back().map(|last| (last, n)))
            };
            match step.await {
                Ok(Some((last, n))) => {
                    after = Some(last);
                    report.embedded += n as u64;
                    progress(BuildProgressEvent {
                        kind: "embeddings".to_owned(),
                        done: report.embedded.min(total),
                        total,
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "embedding summaries failed; the next build carries on");
                    report.warnings.push(format!(
                        "embedding summaries stopped after {} of {total}: {e}; the next build carries on",
                        report.embedded
                    ));
                    break;
                }
            }
        }
    }

    /// The kinds `opts` selects, checked.
    fn build_kinds(&self, opts: &BuildOptions) -> Result<Vec<&PreparedKind>> {
        let mut selected: Vec<&PreparedKind> = Vec::new();
        for (i, name) in opts.kinds.iter().enumerate() {
            let kind = self.kind(name).map_err(|_| {
                SummaryError::invalid(
                    format!("kinds[{i}]"),
                    format!(
                        "unknown kind {name:?}; kinds: {}",
                        self.kind_names().join(", ")
                    ),
                )
            })?;
            if !selected.iter().any(|k| k.config.name == kind.config.name) {
                selected.push(kind);
            }
        }
        if !opts.entity_keys.is_empty() && selected.len() != 1 {
            return Err(SummaryError::invalid(
                "entity_keys",
                "building chosen entities needs exactly one kind in `kinds`",
            ));
        }
        if selected.is_empty() {
            selected = self.kinds.iter().collect();
        }
        Ok(selected)
    }

    /// Runs a tenant-scoped kind's wrapped `tenants` query (no tenant set)
    /// and returns the tenants, sorted and without repeats; NULL and empty
    /// tenants are dropped with a warning.
    async fn list_tenants(
        &self,
        kind: &PreparedKind,
        sql: &str,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<Vec<String>, Failed> {
        let mut client = self.pool.get().await.map_err(|e| Failed::pool(&e))?;
        let tx = self
            .read_only(&mut client, "")
            .await
            .map_err(|e| Failed::db(&e))?;
        let rows = tx.query(sql, &[]).await.map_err(|e| Failed::db(&e))?;
        tx.commit().await.map_err(|e| Failed::db(&e))?;
        let mut tenants = BTreeSet::new();
        let mut skipped = 0usize;
        for row in &rows {
            match row
                .try_get::<_, Option<String>>(0)
                .map_err(|e| Failed::from(e.to_string()))?
            {
                Some(tenant) if !tenant.is_empty() => {
                    tenants.insert(tenant);
                }
                _ => skipped += 1,
            }
        }
        if skipped > 0 {
            warnings.push(format!(
                "kind {}: {skipped} tenants-query rows are NULL or empty and were skipped",
                kind.config.name
            ));
        }
        Ok(tenants.into_iter().collect())
    }

    /// Lists a kind's entities as `tenant` sees them (`""`: no tenant set),
    /// sorted by key; rows without a key and repeated keys (all but the
    /// first by name) are dropped with a warning, a missing name is the key.
    async fn list_entities(
        &self,
        kind: &PreparedKind,
        tenant: &str,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<Vec<Entity>, Failed> {
        let mut client = self.pool.get().await.map_err(|e| Failed::pool(&e))?;
        let tx = self
            .read_only(&mut client, tenant)
            .await
            .map_err(|e| Failed::db(&e))?;
        let rows = tx
            .query(&kind.entities_sql, &[])
            .await
            .map_err(|e| Failed::db(&e))?;
        tx.commit().await.map_err(|e| Failed::db(&e))?;
        let mut entities = Vec::with_capacity(rows.len());
        let mut keyless = 0usize;
        for row in &rows {
            let column = |e: tokio_postgres::Error| Failed::from(db_message(&e));
            let key: Option<String> = row.try_get(0).map_err(column)?;
            let name: Option<String> = row.try_get(1).map_err(column)?;
            let weight: Option<f64> = if row.len() > 2 {
                row.try_get(2).map_err(column)?
            } else {
                None
            };
            let Some(key) = key else {
                keyless += 1;
                continue;
            };
            entities.push(Entity {
                name: name.unwrap_or_else(|| key.clone()),
                key,
                weight: weight.filter(|w| w.is_finite()),
            });
        }
        let scope = scope_label(&kind.config.name, tenant);
        if keyless > 0 {
            warnings.push(format!(
                "{scope}: {keyless} entities-query rows have a NULL key and were skipped"
            ));
        }
        // by key, then name, so which of two rows repeating a key is kept
        // does not depend on the query's row order
        entities.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.name.cmp(&b.name)));
        let before = entities.len();
        entities.dedup_by(|a, b| a.key == b.key);
        if entities.len() < before {
            warnings.push(format!(
                "{scope}: {} entities-query rows repeat a key; the first of each by name was kept",
                before - entities.len()
            ));
        }
        Ok(entities)
    }

    /// A `READ ONLY`, `REPEATABLE READ` transaction with the statement
    /// timeout and role applied ([`quarry_db::ReadOnly`]) and, for a
    /// non-empty `tenant`, `quarry.tenant` = `tenant` and `quarry.subject` =
    /// [`BUILDER_SUBJECT`] ([`quarry_db::Session`], no roles), so row-level
    /// security shows the queries that tenant's rows.
    async fn read_only<'a>(
        &self,
        client: &'a mut Object,
        tenant: &str,
    ) -> std::result::Result<deadpool_postgres::Transaction<'a>, tokio_postgres::Error> {
        let session = (!tenant.is_empty()).then_some(quarry_db::Session {
            tenant,
            subject: BUILDER_SUBJECT,
            roles: &[],
            hash_salt: None,
        });
        quarry_db::ReadOnly::new(self.config.statement_timeout_ms)
            .role(self.config.role.as_deref())
            .isolation(tokio_postgres::IsolationLevel::RepeatableRead)
            .session(session)
            .begin(client)
            .await
    }

    /// Builds one kind: once with no tenant for a shared kind, once per
    /// tenant its `tenants` query lists for a tenant-scoped one. Progress
    /// counts the entities of every tenant together, under the kind's name.
    async fn build_kind(
        &self,
        kind: &PreparedKind,
        opts: &BuildOptions,
        progress: &(dyn Fn(BuildProgressEvent) + Send + Sync),
        report: &mut BuildReport,
    ) {
        let name = kind.config.name.as_str();
        let kind_failure = |tenant: &str, failed: Failed| BuildFailure {
            kind: name.to_owned(),
            tenant: tenant.to_owned(),
            entity_key: String::new(),
            entity_name: String::new(),
            error: failed.error,
            unavailable: failed.unavailable,
        };
        let tenants: Vec<String> = match &kind.tenants_sql {
            None => vec![String::new()],
            Some(sql) => match self.list_tenants(kind, sql, &mut report.warnings).await {
                Ok(tenants) => tenants,
                Err(e) => {
                    tracing::warn!(kind = name, error = %e, "summary tenants query failed");
                    report.failed += 1;
                    report
                        .failures
                        .push(kind_failure("", e.within("tenants query")));
                    return;
                }
            },
        };
        let full = opts.entity_keys.is_empty();
        let wanted: BTreeSet<&str> = opts.entity_keys.iter().map(String::as_str).collect();
        // (tenant, every entity listed, the entities to build)
        let mut scopes: Vec<(&str, Vec<Entity>, Vec<Entity>)> = Vec::with_capacity(tenants.len());
        for tenant in &tenants {
            match self.list_entities(kind, tenant, &mut report.warnings).await {
                Ok(listed) => {
                    let chosen = listed
                        .iter()
                        .filter(|e| full || wanted.contains(e.key.as_str()))
                        .cloned()
                        .collect();
                    scopes.push((tenant, listed, chosen));
                }
                Err(e) => {
                    tracing::warn!(kind = name, tenant = %tenant, error = %e, "summary entities query failed");
                    report.failed += 1;
                    report
                        .failures
                        .push(kind_failure(tenant, e.within("entities query")));
                }
            }
        }
        if scopes.is_empty() && !tenants.is_empty() {
            return;
        }
        let mut failures: Vec<BuildFailure> = Vec::new();
        for key in &wanted {
            if !scopes
                .iter()
                .any(|(_, listed, _)| listed.iter().any(|e| e.key == *key))
            {
                failures.push(BuildFailure {
                    kind: name.to_owned(),
                    tenant: String::new(),
                    entity_key: (*key).to_owned(),
                    entity_name: String::new(),
                    error: format!(
                        "not an entity of kind {name}: the entities query does not list it"
                    ),
                    unavailable: false,
                });
            }
        }
        let total: u64 = scopes.iter().map(|(_, _, e)| e.len() as u64).sum();
        report.entities += total + failures.len() as u64;
        progress(BuildProgressEvent {
            kind: name.to_owned(),
            done: 0,
            total,
        });
        let mut done = 0u64;
        for (tenant, listed, entities) in &scopes {
            let existing = match self.pool.get().await {
                Ok(client) => store::existing(&**client, name, tenant).await,
                Err(e) => Err(e.into()),
            };
            let existing = match existing {
                Ok(existing) => existing,
                Err(e) => {
                    report.failed += 1;
                    report.failures.push(kind_failure(
                        tenant,
                        Failed {
                            error: format!("reading stored summaries: {e}"),
                            unavailable: e.is_unavailable(),
                        },
                    ));
                    continue;
                }
            };
            for batch in entities.chunks(self.config.batch_size.max(1)) {
                self.build_batch(
                    kind,
                    tenant,
                    batch,
                    &existing,
                    opts.force,
                    report,
                    &mut failures,
                )
                .await;
                done += batch.len() as u64;
                progress(BuildProgressEvent {
                    kind: name.to_owned(),
                    done,
                    total,
                });
            }
            if full {
                let keys: Vec<String> = listed.iter().map(|e| e.key.clone()).collect();
                let removed = match self.pool.get().await {
                    Ok(client) => store::delete_missing(&**client, name, tenant, &keys).await,
                    Err(e) => Err(e.into()),
                };
                match removed {
                    Ok(n) => report.removed += n,
                    Err(e) => report.warnings.push(format!(
                        "{}: cannot delete summaries of removed entities: {e}",
                        scope_label(name, tenant)
                    )),
                }
            }
        }
        if full {
            // tenants the query no longer lists (and the shared summaries of
            // a kind that became tenant-scoped, or the other way round)
            let removed = match self.pool.get().await {
                Ok(client) => store::delete_other_tenants(&**client, name, &tenants).await,
                Err(e) => Err(e.into()),
            };
            match removed {
                Ok(n) => report.removed += n,
                Err(e) => report.warnings.push(format!(
                    "kind {name}: cannot delete summaries of removed tenants: {e}"
                )),
            }
        }
        failures.sort_by(|a, b| (&a.tenant, &a.entity_key).cmp(&(&b.tenant, &b.entity_key)));
        report.failed += failures.len() as u64;
        report.failures.extend(failures);
    }

    #[allow(clippy::too_many_arguments)]
    async fn build_batch(
        &self,
        kind: &PreparedKind,
        tenant: &str,
        batch: &[Entity],
        existing: &HashMap<String, Existing>,
        force: bool,
        report: &mut BuildReport,
        failures: &mut Vec<BuildFailure>,
    ) {
        let name = kind.config.name.as_str();
        // futures made eagerly (not by a closure inside the stream), so the
        // build future stays `Send` for every lifetime
        let pending: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(i, entity)| {
                let outcome =
                    self.build_entity(kind, tenant, entity, existing.get(&entity.key), force);
                async move { (i, outcome.await) }
            })
            .collect();
        let mut outcomes: Vec<(usize, Outcome)> = futures::stream::iter(pending)
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        outcomes.sort_by_key(|(i, _)| *i);
        let mut upserts = Vec::new();
        let mut touches = Vec::new();
        let mut failed = Vec::new();
        for (_, outcome) in outcomes {
            match outcome {
                Outcome::Unchanged(t) => touches.push(t),
                Outcome::Changed(u) => upserts.push(u),
                Outcome::Failed {
                    key,
                    name: entity_name,
                    error,
                    unavailable,
                } => {
                    tracing::warn!(kind = name, key = %key, error = %error, "summary build failed for an entity");
                    failed.push((key.clone(), entity_name, error, unavailable));
                }
            }
        }
        let failed_rows: Vec<(String, String)> = failed
            .iter()
            .map(|(key, _, error, _)| (key.clone(), error.clone()))
            .collect();
        let written = match self.pool.get().await {
            Ok(mut client) => {
                store::write_batch(&mut client, name, tenant, &upserts, &touches, &failed_rows)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        match written {
            Ok(()) => {
                report.built += upserts.len() as u64;
                report.unchanged += touches.len() as u64;
                for (key, entity_name, error, unavailable) in failed {
                    failures.push(BuildFailure {
                        kind: name.to_owned(),
                        tenant: tenant.to_owned(),
                        entity_key: key,
                        entity_name,
                        error,
                        unavailable,
                    });
                }
            }
            Err(e) => {
                tracing::warn!(kind = name, error = %e, "writing a batch of summaries failed");
                let error = format!("writing the batch failed: {e}");
                let batch_unavailable = e.is_unavailable();
                for (key, entity_name, own, unavailable) in failed {
                    failures.push(BuildFailure {
                        kind: name.to_owned(),
                        tenant: tenant.to_owned(),
                        entity_key: key,
                        entity_name,
                        error: own,
                        unavailable,
                    });
                }
                for (key, entity_name) in upserts
                    .iter()
                    .map(|u| (&u.key, &u.name))
                    .chain(touches.iter().map(|t| (&t.key, &t.name)))
                {
                    failures.push(BuildFailure {
                        kind: name.to_owned(),
                        tenant: tenant.to_owned(),
                        entity_key: key.clone(),
                        entity_name: entity_name.clone(),
                        error: error.clone(),
                        unavailable: batch_unavailable,
                    });
                }
            }
        }
    }

    async fn build_entity(
        &self,
        kind: &PreparedKind,
        tenant: &str,
        entity: &Entity,
        existing: Option<&Existing>,
        force: bool,
    ) -> Outcome {
        match self
            .compute_entity(kind, tenant, entity, existing, force)
            .await
        {
            Ok(outcome) => outcome,
            Err(failed) => Outcome::Failed {
                key: entity.key.clone(),
                name: entity.name.clone(),
                error: failed.error,
                unavailable: failed.unavailable,
            },
        }
    }

    /// Fetches an entity's rows (one snapshot, as `tenant` sees them) and
    /// decides what to write.
    async fn compute_entity(
        &self,
        kind: &PreparedKind,
        tenant: &str,
        entity: &Entity,
        existing: Option<&Existing>,
        force: bool,
    ) -> std::result::Result<Outcome, Failed> {
        let rows = self.fetch_rows(kind, tenant, &entity.key).await?;
        let named: Vec<(&str, &FigureRows)> = kind
            .figures
            .iter()
            .zip(&rows)
            .map(|(f, r)| (f.config.name.as_str(), r))
            .collect();
        let version = data_version(&kind.fingerprint, &entity.name, &named);
        if !force && existing.is_some_and(|x| x.data_version == version) {
            return Ok(Outcome::Unchanged(Touch {
                key: entity.key.clone(),
                name: entity.name.clone(),
                weight: entity.weight,
            }));
        }
        let (text, facts) = render_entity(kind, entity, &rows)?;
        Ok(Outcome::Changed(Upsert {
            key: entity.key.clone(),
            name: entity.name.clone(),
            weight: entity.weight,
            text,
            facts,
            data_version: version,
        }))
    }

    /// Runs every figure of `kind` for `key` in one read-only snapshot, as
    /// `tenant` sees the rows (`""`: no tenant set).
    async fn fetch_rows(
        &self,
        kind: &PreparedKind,
        tenant: &str,
        key: &str,
    ) -> std::result::Result<Vec<FigureRows>, Failed> {
        let mut client = self.pool.get().await.map_err(|e| Failed::pool(&e))?;
        let tx = self
            .read_only(&mut client, tenant)
            .await
            .map_err(|e| Failed::db(&e))?;
        let mut all = Vec::with_capacity(kind.figures.len());
        for figure in &kind.figures {
            let context = format!("figure {}", figure.config.name);
            let at = |m: Failed| m.within(&context);
            let value = key_value(figure.param, key).map_err(|m| at(m.into()))?;
            let params: Vec<&(dyn ToSql + Sync)> = match &value {
                None => vec![],
                Some(KeyValue::I16(v)) => vec![v],
                Some(KeyValue::I32(v)) => vec![v],
                Some(KeyValue::I64(v)) => vec![v],
                Some(KeyValue::Text(v)) => vec![v],
            };
            let statement = tx
                .prepare_cached(&figure.sql)
                .await
                .map_err(|e| at(Failed::db(&e)))?;
            let rows = tx
                .query(&statement, &params)
                .await
                .map_err(|e| at(Failed::db(&e)))?;
            all.push(read_rows(figure, &rows).map_err(|m| at(m.into()))?);
        }
        tx.commit().await.map_err(|e| Failed::db(&e))?;
        Ok(all)
    }
}

/// `kind artist` for a shared kind, `kind artist (tenant modern)` for one
/// tenant's build of a tenant-scoped kind, in warnings.
fn scope_label(kind: &str, tenant: &str) -> String {
    if tenant.is_empty() {
        format!("kind {kind}")
    } else {
        format!("kind {kind} (tenant {tenant})")
    }
}

/// A figure's fetched rows in analysis form. Series rows with a NULL period
/// are left out; NULL values count as 0.
fn read_rows(
    figure: &PreparedFigure,
    rows: &[tokio_postgres::Row],
) -> std::result::Result<FigureRows, String> {
    let get = |e: tokio_postgres::Error| quarry_db::error_text(&e);
    match figure.config.shape {
        Shape::Values => {
            if rows.len() > 1 {
                return Err("a values figure must return at most one row".into());
            }
            let row = rows
                .first()
                .map(|r| r.try_get::<_, serde_json::Value>(0))
                .transpose()
                .map_err(get)?;
            Ok(FigureRows::Values(row))
        }
        Shape::Series => {
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let period: Option<i64> = row.try_get(0).map_err(get)?;
                let value: Option<f64> = row.try_get(1).map_err(get)?;
                let series: Option<String> = if figure.grouped {
                    Some(
                        row.try_get::<_, Option<String>>(2)
                            .map_err(get)?
                            .unwrap_or_else(|| "unknown".to_owned()),
                    )
                } else {
                    None
                };
                if let Some(period) = period {
                    out.push(SeriesRow {
                        period,
                        series,
                        value: value.unwrap_or(0.0),
                    });
                }
            }
            Ok(FigureRows::Series {
                grouped: figure.grouped,
                rows: out,
            })
        }
        Shape::Breakdown => {
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(BreakdownRow {
                    label: row.try_get(0).map_err(get)?,
                    value: row
                        .try_get::<_, Option<f64>>(1)
                        .map_err(get)?
                        .unwrap_or(0.0),
                });
            }
            Ok(FigureRows::Breakdown(out))
        }
    }
}

/// Facts and text of one entity from its rows.
pub(crate) fn render_entity(
    kind: &PreparedKind,
    entity: &Entity,
    rows: &[FigureRows],
) -> std::result::Result<(String, serde_json::Value), String> {
    let mut facts = serde_json::Map::new();
    for (figure, rows) in kind.figures.iter().zip(rows) {
        let value = analysis::figure_facts(&figure.config, rows)
            .map_err(|e| format!("figure {}: {e}", figure.config.name))?;
        facts.insert(figure.config.name.clone(), value);
    }
    let text = kind
        .template
        .render(
            &EntityRef {
                kind: &kind.config.name,
                key: &entity.key,
                name: &entity.name,
            },
            &facts,
        )
        .map_err(|e| format!("template: {e}"))?;
    Ok((text, serde_json::Value::Object(facts)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn keys_convert_to_the_parameter_type() {
        assert!(matches!(
            key_value(KeyParam::Int4, "558"),
            Ok(Some(KeyValue::I32(558)))
        ));
        assert!(key_value(KeyParam::Int2, "70000").is_err());
        assert!(matches!(key_value(KeyParam::Int8, "x"), Err(m) if m.contains("not an int8")));
        assert!(matches!(
            key_value(KeyParam::Text, "a b"),
            Ok(Some(KeyValue::Text("a b")))
        ));
        assert!(matches!(key_value(KeyParam::None, "x"), Ok(None)));
    }

    #[test]
    fn data_version_depends_on_rows_not_their_order() {
        let a = FigureRows::Breakdown(vec![
            BreakdownRow {
                label: Some("x".into()),
                value: 1.0,
            },
            BreakdownRow {
                label: Some("y".into()),
                value: 2.0,
            },
        ]);
        let b = FigureRows::Breakdown(vec![
            BreakdownRow {
                label: Some("y".into()),
                value: 2.0,
            },
            BreakdownRow {
                label: Some("x".into()),
                value: 1.0,
            },
        ]);
        let c = FigureRows::Breakdown(vec![
            BreakdownRow {
                label: Some("y".into()),
                value: 3.0,
            },
            BreakdownRow {
                label: Some("x".into()),
                value: 1.0,
            },
        ]);
        let v = |rows: &FigureRows| data_version("fp", "Name", &[("media", rows)]);
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
        assert_eq!(v(&a).len(), 16);
        assert_ne!(v(&a), data_version("fp2", "Name", &[("media", &a)]));
        assert_ne!(v(&a), data_version("fp", "Other", &[("media", &a)]));
    }

    #[test]
    fn lock_key_spells_quarrysb() {
        assert_eq!(&BUILD_LOCK_KEY.to_be_bytes(), b"QUARRYSB");
    }
}
