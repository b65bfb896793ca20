//! Where summaries live: two tables in the `quarry` schema, created by the
//! migrations `db/migrations/V3__summaries.sql` and
//! `V9__summaries_per_tenant.sql`, which the tool applies when it opens
//! ([`quarry_db::migrate`]).
//!
//! `quarry.summaries`, one row per (kind, tenant, entity):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `kind`, `tenant`, `entity_key` | `text`, primary key | the entity, and the tenant whose rows it was computed from (`''`: a shared kind, see [`crate::definition`] "Tenants") |
//! | `entity_name` | `text` | display name from the entities query |
//! | `name_folded` | `text` | [`crate::lookup::fold`] of the name (exact name lookup) |
//! | `weight` | `float8` NULL | the entities query's `weight`, fuzzy-match tie-breaker |
//! | `text` | `text` | the paragraph |
//! | `facts` | `jsonb` | the figures' facts, keyed by figure name |
//! | `data_version` | `text` | 16 hex digits of SHA-256 over the inputs ([`crate::builder`]) |
//! | `embedder` | `text` NULL | model id of `embedding` |
//! | `embedding` | `vector` NULL | embedding of `text`; no fixed dimension, searches filter on `embedder` |
//! | `computed_at` | `timestamptz` | when text and facts were last computed |
//! | `checked_at` | `timestamptz` | when a build last confirmed (or recomputed) them |
//! | `last_error` | `text` NULL | why the latest build of the entity failed, if it did |
//!
//! Indexes: `entity_key` (key lookup across kinds), `(kind, tenant,
//! name_folded)` (exact name lookup), and a GIN index on `to_tsvector('english', text)`
//! (full-text search). The `embedding` column has no index: a vector index
//! needs a fixed dimension, and a kind holds thousands of summaries, not
//! millions, so exact cosine search over the rows of one embedder is fast.
//!
//! `quarry.summary_builds`: one row per build (`started_at`, `finished_at`,
//! `trigger`, `report` as JSON, [`crate::builder::BuildReport`]); the newest
//! [`BUILDS_KEPT`] are kept.

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, GenericClient, Row};

use crate::error::Result;
use crate::model::{BuildReport, Summary};

/// Builds whose reports are kept in `quarry.summary_builds`.
pub const BUILDS_KEPT: i64 = 1000;

/// The columns [`summary_from_row`] reads, in order.
pub const SUMMARY_COLUMNS: &str = "kind, entity_key, entity_name, text, facts, data_version, \
     computed_at, checked_at, last_error";

/// The quoted schema of pgvector's `vector` type (for qualifying the type
/// and its operators): `extnamespace::regnamespace::text`, which is already
/// quoted when it needs to be, plain names quoted too; `"public"` when the
/// extension is missing (the migrations create it, so only a dropped
/// extension gets here).
///
/// # Errors
/// Database errors.
pub async fn vector_type_schema(client: &impl GenericClient) -> Result<String> {
    let schema = vector_schema(client)
        .await?
        .unwrap_or_else(|| "public".to_owned());
    Ok(if schema.starts_with('"') {
        schema
    } else {
        quarry_db::quote_ident(&schema)
    })
}

/// The schema pgvector is installed in, as `regnamespace` text (quoted
/// when it needs to be), `None` when it is not installed.
async fn vector_schema(client: &impl GenericClient) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'",
            &[],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// A [`Summary`] from a row of [`SUMMARY_COLUMNS`] (plus, at index 9, an
/// optional `float8` score); `now` sets `age_seconds`.
///
/// # Errors
/// Column type mismatches (a bug).
pub fn summary_from_row(row: &Row, now: DateTime<Utc>) -> Result<Summary> {
    let checked_at: DateTime<Utc> = row.try_get(7)?;
    let score: f64 = if row.len() > 9 {
        row.try_get::<_, Option<f64>>(9)?.unwrap_or(0.0)
    } else {
        0.0
    };
    Ok(Summary {
        kind: row.try_get(0)?,
        entity_key: row.try_get(1)?,
        entity_name: row.try_get(2)?,
        text: row.try_get(3)?,
        facts: row.try_get(4)?,
        data_version: row.try_get(5)?,
        computed_at: row.try_get(6)?,
        checked_at,
        age_seconds: u64::try_from((now - checked_at).num_seconds()).unwrap_or(0),
        last_error: row.try_get(8)?,
        score,
    })
}

/// What the builder needs to know of a stored summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// Its data version.
    pub data_version: String,
}

/// The stored summaries of `kind` for `tenant` (`''`: shared): key → [`Existing`].
///
/// # Errors
/// Database errors.
pub async fn existing(
    client: &impl GenericClient,
    kind: &str,
    tenant: &str,
) -> Result<std::collections::HashMap<String, Existing>> {
    let rows = client
        .query(
            "SELECT entity_key, data_version FROM quarry.summaries WHERE kind = $1 AND tenant = $2",
            &[&kind, &tenant],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0)?,
                Existing {
                    data_version: row.try_get(1)?,
                },
            ))
        })
        .collect()
}

/// A summary to insert or replace.
#[derive(Debug, Clone, PartialEq)]
pub struct Upsert {
    /// Entity key.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Weight, if the entities query has one.
    pub weight: Option<f64>,
    /// Paragraph.
    pub text: String,
    /// Facts.
    pub facts: serde_json::Value,
    /// Data version.
    pub data_version: String,
}

/// An unchanged summary whose `checked_at` moves (and name, weight follow
/// the entities query).
#[derive(Debug, Clone, PartialEq)]
pub struct Touch {
    /// Entity key.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Weight.
    pub weight: Option<f64>,
}

/// One batch's writes for `kind` and `tenant` (`''`: shared), in one
/// transaction: upserts (computed and checked
/// now, error cleared), touches (`checked_at` now, error cleared) and
/// failures (`last_error` set on rows that exist; nothing else changes).
///
/// # Errors
/// Database errors; nothing of the batch is written then.
pub async fn write_batch(
    client: &mut Client,
    kind: &str,
    tenant: &str,
    upserts: &[Upsert],
    touches: &[Touch],
    failures: &[(String, String)],
) -> Result<()> {
    let tx = client.transaction().await?;
    if !upserts.is_empty() {
        let upsert = tx
            .prepare(
                "INSERT INTO quarry.summaries (kind, tenant, entity_key, entity_name, name_folded, \
                   weight, text, facts, data_version, embedder, embedding, computed_at, checked_at, \
                   last_error) \
                 VALUES ($1, $9, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, now(), now(), NULL) \
                 ON CONFLICT (kind, tenant, entity_key) DO UPDATE SET entity_name = EXCLUDED.entity_name, \
                   name_folded = EXCLUDED.name_folded, weight = EXCLUDED.weight, text = EXCLUDED.text, \
                   facts = EXCLUDED.facts, data_version = EXCLUDED.data_version, \
                   embedder = EXCLUDED.embedder, embedding = EXCLUDED.embedding, \
                   computed_at = EXCLUDED.computed_at, checked_at = EXCLUDED.checked_at, last_error = NULL",
            )
            .await?;
        for u in upserts {
            let folded = crate::lookup::fold(&u.name);
            tx.execute(
                &upsert,
                &[
                    &kind,
                    &u.key,
                    &u.name,
                    &folded,
                    &u.weight,
                    &u.text,
                    &u.facts,
                    &u.data_version,
                    &tenant,
                ],
            )
            .await?;
        }
    }
    if !touches.is_empty() {
        let touch = tx
            .prepare(
                "UPDATE quarry.summaries SET checked_at = now(), last_error = NULL, \
                   entity_name = $3, name_folded = $4, weight = $5 \
                 WHERE kind = $1 AND entity_key = $2 AND tenant = $6",
            )
            .await?;
        for t in touches {
            let folded = crate::lookup::fold(&t.name);
            tx.execute(
                &touch,
                &[&kind, &t.key, &t.name, &folded, &t.weight, &tenant],
            )
            .await?;
        }
    }
    if !failures.is_empty() {
        let fail = tx
            .prepare(
                "UPDATE quarry.summaries SET last_error = $3 \
                 WHERE kind = $1 AND entity_key = $2 AND tenant = $4",
            )
            .await?;
        for (key, error) in failures {
            tx.execute(&fail, &[&kind, key, error, &tenant]).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// How many summaries have no embedding from `model`.
///
/// # Errors
/// Database errors.
pub async fn count_unembedded(client: &impl GenericClient, model: &str) -> Result<u64> {
    let row = client
        .query_one(
            "SELECT count(*) FROM quarry.summaries \
             WHERE embedding IS NULL OR embedder IS DISTINCT FROM $1",
            &[&model],
        )
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// A summary's text waiting for an embedding: its primary key and text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unembedded {
    /// Kind.
    pub kind: String,
    /// Tenant (`''`: shared).
    pub tenant: String,
    /// Entity key.
    pub key: String,
    /// The text to embed.
    pub text: String,
}

/// Up to `limit` summaries without an embedding from `model`, in `(kind,
/// tenant, entity_key)` order after `after`'s key (all from the start
/// without it).
///
/// # Errors
/// Database errors.
pub async fn unembedded(
    client: &impl GenericClient,
    model: &str,
    after: Option<&Unembedded>,
    limit: i64,
) -> Result<Vec<Unembedded>> {
    let start = after.is_none();
    let after = after.cloned().unwrap_or_default();
    let rows = client
        .query(
            "SELECT kind, tenant, entity_key, text FROM quarry.summaries \
             WHERE (embedding IS NULL OR embedder IS DISTINCT FROM $1) \
               AND ($2 OR (kind, tenant, entity_key) > ($3, $4, $5)) \
             ORDER BY kind, tenant, entity_key LIMIT $6",
            &[
                &model,
                &start,
                &after.kind,
                &after.tenant,
                &after.key,
                &limit,
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Unembedded {
                kind: r.try_get(0)?,
                tenant: r.try_get(1)?,
                key: r.try_get(2)?,
                text: r.try_get(3)?,
            })
        })
        .collect()
}

/// Stores `vectors` (one per row of `batch`, same order) as the embeddings of
/// `model`, where the text is still the one embedded.
///
/// # Errors
/// Database errors.
pub async fn store_embeddings(
    client: &impl GenericClient,
    model: &str,
    batch: &[Unembedded],
    vectors: Vec<Vec<f32>>,
) -> Result<()> {
    let update = client
        .prepare(
            "UPDATE quarry.summaries SET embedder = $1, embedding = $2 \
             WHERE kind = $3 AND tenant = $4 AND entity_key = $5 AND text = $6",
        )
        .await?;
    for (u, v) in batch.iter().zip(vectors) {
        let vector = pgvector::Vector::from(v);
        client
            .execute(
                &update,
                &[&model, &vector, &u.kind, &u.tenant, &u.key, &u.text],
            )
            .await?;
    }
    Ok(())
}

/// Deletes the summaries of `kind` for `tenant` whose key is not in
/// `keys`; returns how many.
///
/// # Errors
/// Database errors.
pub async fn delete_missing(
    client: &impl GenericClient,
    kind: &str,
    tenant: &str,
    keys: &[String],
) -> Result<u64> {
    Ok(client
        .execute(
            "DELETE FROM quarry.summaries \
             WHERE kind = $1 AND tenant = $2 AND NOT (entity_key = ANY($3))",
            &[&kind, &tenant, &keys],
        )
        .await?)
}

/// Deletes the summaries of `kind` whose tenant is not in `tenants` (`''`
/// is the shared scope: a kind that became tenant-scoped loses its shared
/// summaries, and the other way round); returns how many.
///
/// # Errors
/// Database errors.
pub async fn delete_other_tenants(
    client: &impl GenericClient,
    kind: &str,
    tenants: &[String],
) -> Result<u64> {
    Ok(client
        .execute(
            "DELETE FROM quarry.summaries WHERE kind = $1 AND NOT (tenant = ANY($2))",
            &[&kind, &tenants],
        )
        .await?)
}

/// Records a finished build and prunes all but the newest [`BUILDS_KEPT`].
///
/// # Errors
/// Database errors.
pub async fn record_build(client: &impl GenericClient, report: &BuildReport) -> Result<()> {
    let json = serde_json::to_value(report)
        .map_err(|e| crate::SummaryError::Internal(format!("build report as json: {e}")))?;
    client
        .execute(
            "INSERT INTO quarry.summary_builds (started_at, finished_at, trigger, report) \
             VALUES ($1, $2, $3, $4)",
            &[
                &report.started_at,
                &report.finished_at,
                &report.trigger,
                &json,
            ],
        )
        .await?;
    client
        .execute(
            "DELETE FROM quarry.summary_builds WHERE id <= (SELECT max(id) FROM quarry.summary_builds) - $1",
            &[&BUILDS_KEPT],
        )
        .await?;
    Ok(())
}

/// The latest recorded build, if any (a report that no longer parses is
/// skipped with a warning).
///
/// # Errors
/// Database errors.
pub async fn last_build(client: &impl GenericClient) -> Result<Option<BuildReport>> {
    let row = client
        .query_opt(
            "SELECT report FROM quarry.summary_builds ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let json: serde_json::Value = row.try_get(0)?;
    match serde_json::from_value(json) {
        Ok(report) => Ok(Some(report)),
        Err(e) => {
            tracing::warn!(error = %e, "latest summary build report does not parse");
            Ok(None)
        }
    }
}
