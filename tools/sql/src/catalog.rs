//! The schema catalog as stored in Quarry's own `quarry` schema: tables,
//! columns, keys and comments of the source schemas, column statistics from
//! `pg_stats`, and an embedding per table and per column description, keyed
//! by a hash of the live catalog so that a stale copy is detected (the tables
//! are created by `quarry migrate`).
//!
//! Column statistics come from the planner's `pg_stats` view (PostgreSQL 16
//! docs §54.27): `null_frac`, `n_distinct` (negative values are a fraction of
//! the row count) and `most_common_vals`, kept for text columns with at most
//! [`LOW_CARDINALITY`] distinct values.

use std::collections::HashMap;

use pgvector::Vector;
use tokio_postgres::GenericClient;

use crate::schema::{SchemaError, TableInfo};

/// Text columns with at most this many distinct values keep their most
/// common values in the catalog.
pub const LOW_CARDINALITY: f64 = 200.0;

/// A hash of the catalog of `schemas`: tables, columns, types, comments and
/// constraints. Changes whenever any of them changes.
pub const CATALOG_HASH_SQL: &str = "
SELECT md5(coalesce(string_agg(x, '|' ORDER BY x), '')) FROM (
  SELECT n.nspname || '.' || c.relname || '.' || a.attname || ':' || format_type(a.atttypid, a.atttypmod)
         || ':' || coalesce(col_description(c.oid, a.attnum), '') || ':' || coalesce(obj_description(c.oid, 'pg_class'), '') AS x
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  WHERE n.nspname::text = ANY($1::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  UNION ALL
  SELECT n.nspname || '.' || con.conname || ':' || pg_get_constraintdef(con.oid)
  FROM pg_catalog.pg_constraint con
  JOIN pg_catalog.pg_namespace n ON n.oid = con.connamespace
  WHERE n.nspname::text = ANY($1::text[])
) s";

/// The live catalog hash of `schemas` (32 hex digits).
///
/// # Errors
/// Query errors.
pub async fn catalog_hash<C: GenericClient + Sync>(
    client: &C,
    schemas: &[String],
) -> Result<String, SchemaError> {
    let row = client.query_one(CATALOG_HASH_SQL, &[&schemas]).await?;
    Ok(row.try_get(0)?)
}

/// `pg_stats` figures of one column.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ColumnStats {
    /// Fraction of NULLs, 0..=1.
    pub null_frac: Option<f32>,
    /// Distinct values: positive is a count, negative a fraction of the rows
    /// (PostgreSQL's convention).
    pub n_distinct: Option<f32>,
    /// Most common values, most common first; only for low-cardinality text
    /// columns.
    pub most_common_vals: Vec<String>,
}

/// Key of a column: `(schema, table, column)`.
pub type ColumnKey = (String, String, String);

/// Reads `pg_stats` for `schemas`; most common values only for text columns
/// with at most [`LOW_CARDINALITY`] distinct values. Empty for tables never
/// analysed.
///
/// # Errors
/// Query errors.
pub async fn column_stats<C: GenericClient + Sync>(
    client: &C,
    schemas: &[String],
) -> Result<HashMap<ColumnKey, ColumnStats>, SchemaError> {
    let rows = client
        .query(
            "SELECT s.schemaname::text, s.tablename::text, s.attname::text, s.null_frac, s.n_distinct,
                    CASE WHEN t.typcategory = 'S' THEN s.most_common_vals::text::text[] END,
                    c.reltuples::float8
             FROM pg_catalog.pg_stats s
             JOIN pg_catalog.pg_namespace n ON n.nspname = s.schemaname
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = s.attname
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
             WHERE s.schemaname::text = ANY($1::text[])",
            &[&schemas],
        )
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let n_distinct: Option<f32> = row.try_get(4)?;
        let reltuples: f64 = row.try_get(6)?;
        let distinct = n_distinct.map(|n| {
            if n < 0.0 {
                -f64::from(n) * reltuples.max(0.0)
            } else {
                f64::from(n)
            }
        });
        let mcv: Option<Vec<String>> = row.try_get(5)?;
        let most_common_vals = match (distinct, mcv) {
            (Some(d), Some(values)) if d <= LOW_CARDINALITY => values,
            _ => Vec::new(),
        };
        out.insert(
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
            ColumnStats {
                null_frac: row.try_get(3)?,
                n_distinct,
                most_common_vals,
            },
        );
    }
    Ok(out)
}

/// A catalog as stored: what it was built from and its embeddings.
#[derive(Debug, Clone)]
pub struct StoredCatalog {
    /// [`catalog_hash`] when it was built.
    pub hash: String,
    /// Model id of the embeddings, if any.
    pub embedding_model: Option<String>,
    /// The tables, in stored order.
    pub tables: Vec<TableInfo>,
    /// One embedding per table (same order), when embedded.
    pub table_embeddings: Option<Vec<Vec<f32>>>,
    /// Per table, one embedding per column (catalog order), when embedded.
    pub column_embeddings: Option<Vec<Vec<Vec<f32>>>>,
}

/// Errors storing or loading the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A database error (a missing `quarry` schema means `quarry migrate`
    /// has not run).
    #[error("catalog storage: {}", quarry_db::error_text(.0))]
    Database(#[from] tokio_postgres::Error),
    /// Reading the live catalog failed.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The stored table description is unreadable.
    #[error("stored catalog for {table} is unreadable: {source}")]
    Corrupt {
        /// `schema.table`.
        table: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// Replaces the stored catalog of `source` in one transaction.
///
/// # Errors
/// [`CatalogError`]; nothing is changed on error.
pub async fn store(
    client: &mut tokio_postgres::Client,
    source: &str,
    schemas: &[String],
    catalog: &StoredCatalog,
    stats: &HashMap<ColumnKey, ColumnStats>,
) -> Result<(), CatalogError> {
    let tx = client.transaction().await?;
    tx.execute(
        "DELETE FROM quarry.catalog_state WHERE source = $1",
        &[&source],
    )
    .await?;
    tx.execute(
        "INSERT INTO quarry.catalog_state (source, schemas, catalog_hash, embedding_model) VALUES ($1, $2, $3, $4)",
        &[&source, &schemas, &catalog.hash, &catalog.embedding_model],
    )
    .await?;
    let insert_table = tx
        .prepare(
            "INSERT INTO quarry.catalog_tables (source, schema_name, table_name, kind, comment, estimated_rows, info, embedding)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    let insert_column = tx
        .prepare(
            "INSERT INTO quarry.catalog_columns (source, schema_name, table_name, column_name, ordinal, data_type, comment,
                                                 null_frac, n_distinct, most_common_vals, embedding)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await?;
    for (ti, table) in catalog.tables.iter().enumerate() {
        let info = serde_json::to_value(table).map_err(|source| CatalogError::Corrupt {
            table: table.qualified_name(),
            source,
        })?;
        let kind = serde_json::to_value(table.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let estimated = table
            .estimated_rows
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let embedding = catalog
            .table_embeddings
            .as_ref()
            .and_then(|e| e.get(ti))
            .map(|v| Vector::from(v.clone()));
        tx.execute(
            &insert_table,
            &[
                &source,
                &table.schema,
                &table.name,
                &kind,
                &table.comment,
                &estimated,
                &info,
                &embedding,
            ],
        )
        .await?;
        for (ci, column) in table.columns.iter().enumerate() {
            let key = (
                table.schema.clone(),
                table.name.clone(),
                column.name.clone(),
            );
            let stat = stats.get(&key).cloned().unwrap_or_default();
            let embedding = catalog
                .column_embeddings
                .as_ref()
                .and_then(|e| e.get(ti))
                .and_then(|c| c.get(ci))
                .map(|v| Vector::from(v.clone()));
            let ordinal = i32::try_from(ci).unwrap_or(i32::MAX);
            tx.execute(
                &insert_column,
                &[
                    &source,
                    &table.schema,
                    &table.name,
                    &column.name,
                    &ordinal,
                    &column.data_type,
                    &column.comment,
                    &stat.null_frac,
                    &stat.n_distinct,
                    &stat.most_common_vals,
                    &embedding,
                ],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Loads the stored catalog of `source`, or `None` when none is stored.
///
/// # Errors
/// [`CatalogError`] (a missing `quarry` schema is an error: run `quarry migrate`).
pub async fn load<C: GenericClient + Sync>(
    client: &C,
    source: &str,
) -> Result<Option<StoredCatalog>, CatalogError> {
    let Some(state) = client
        .query_opt(
            "SELECT catalog_hash, embedding_model FROM quarry.catalog_state WHERE source = $1",
            &[&source],
        )
        .await?
    else {
        return Ok(None);
    };
    let hash: String = state.try_get(0)?;
    let embedding_model: Option<String> = state.try_get(1)?;
    let table_rows = client
        .query(
            "SELECT schema_name, table_name, info, embedding FROM quarry.catalog_tables
             WHERE source = $1 ORDER BY schema_name, table_name",
            &[&source],
        )
        .await?;
    let column_rows = client
        .query(
            "SELECT schema_name, table_name, embedding FROM quarry.catalog_columns
             WHERE source = $1 ORDER BY schema_name, table_name, ordinal",
            &[&source],
        )
        .await?;
    let mut tables = Vec::with_capacity(table_rows.len());
    let mut table_embeddings = Vec::with_capacity(table_rows.len());
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for row in &table_rows {
        let schema: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        let info: serde_json::Value = row.try_get(2)?;
        let table: TableInfo =
            serde_json::from_value(info).map_err(|source| CatalogError::Corrupt {
                table: format!("{schema}.{name}"),
                source,
            })?;
        let embedding: Option<Vector> = row.try_get(3)?;
        index.insert((schema, name), tables.len());
        tables.push(table);
        table_embeddings.push(embedding.map(|v| v.to_vec()));
    }
    let mut column_embeddings: Vec<Vec<Option<Vec<f32>>>> = vec![Vec::new(); tables.len()];
    for row in &column_rows {
        let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let embedding: Option<Vector> = row.try_get(2)?;
        if let Some(&i) = index.get(&key) {
            column_embeddings[i].push(embedding.map(|v| v.to_vec()));
        }
    }
    let all_tables: Option<Vec<Vec<f32>>> = table_embeddings.into_iter().collect();
    let all_columns: Option<Vec<Vec<Vec<f32>>>> = column_embeddings
        .into_iter()
        .map(|c| c.into_iter().collect::<Option<Vec<_>>>())
        .collect();
    let embedded = embedding_model.is_some();
    Ok(Some(StoredCatalog {
        hash,
        embedding_model,
        tables,
        table_embeddings: if embedded { all_tables } else { None },
        column_embeddings: if embedded { all_columns } else { None },
    }))
}
