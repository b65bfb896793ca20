//! The search tool's run-time DDL: each collection's sidecar table
//! `quarry."search_<name>"` (its columns follow the collection's definition,
//! so it cannot be a fixed migration; see [`crate::collection`] for its
//! shape) and [`ensure_sidecar`], which creates, recreates or extends it.
//! The fixed bookkeeping tables (`quarry.search_version`,
//! `quarry.search_collections`, `quarry.search_outbox`) are the migration
//! `db/migrations/V4__search.sql` of `quarry-db`.

use std::fmt::Write as _;

use quarry_db::quote_ident;
use tokio_postgres::Client;

use crate::collection::{
    Collection, CollectionError, FilterType, Result, filter_column, hash_column, text_column,
    vector_column,
};

/// Transaction-level advisory lock that serialises sidecar DDL across
/// processes (also taken by the sync's set-up).
pub const SEARCH_LOCK: &str = "quarry.search";

impl Collection {
    /// `CREATE TABLE` and `CREATE INDEX` statements of the sidecar table;
    /// with `dimension`, the `h_`/`v_` columns and their indexes too. HNSW
    /// uses pgvector's defaults (`m = 16`, `ef_construction = 64`) with
    /// `vector_cosine_ops`.
    pub fn sidecar_ddl(&self, dimension: Option<usize>) -> Vec<String> {
        let table = self.docs_table();
        let mut create = format!(
            "CREATE TABLE {table} (\n  key text PRIMARY KEY,\n  version bigint NOT NULL,\n  deleted boolean NOT NULL DEFAULT false"
        );
        for field in &self.text {
            let _ = write!(create, ",\n  {} text", text_column(&field.name));
        }
        for field in &self.filters {
            let _ = write!(
                create,
                ",\n  {} {}",
                filter_column(&field.name),
                field.kind.sql_type()
            );
        }
        create.push_str(",\n  stored jsonb NOT NULL DEFAULT '{}'::jsonb,\n  embedded boolean NOT NULL DEFAULT false\n)");
        let mut statements = vec![create];
        let prefix = format!("search_{}", self.name);
        statements.push(format!(
            "CREATE INDEX {} ON {table} (version)",
            quote_ident(&format!("{prefix}_version"))
        ));
        statements.push(format!(
            "CREATE INDEX {} ON {table} (version) WHERE NOT embedded AND NOT deleted",
            quote_ident(&format!("{prefix}_pending"))
        ));
        for (i, field) in self.filters.iter().enumerate() {
            let method = if field.kind == FilterType::Keywords {
                "gin"
            } else {
                "btree"
            };
            statements.push(format!(
                "CREATE INDEX {} ON {table} USING {method} ({})",
                quote_ident(&format!("{prefix}_f{i}")),
                filter_column(&field.name)
            ));
        }
        if let Some(dimension) = dimension {
            statements.extend(self.vector_ddl(dimension));
        }
        statements
    }

    /// Statements adding the `h_`/`v_` columns and their indexes.
    pub fn vector_ddl(&self, dimension: usize) -> Vec<String> {
        let table = self.docs_table();
        let prefix = format!("search_{}", self.name);
        let mut statements = Vec::new();
        for (i, field) in self.text.iter().enumerate() {
            statements.push(format!(
                "ALTER TABLE {table} ADD COLUMN {} bytea, ADD COLUMN {} vector({dimension})",
                hash_column(&field.name),
                vector_column(&field.name)
            ));
            statements.push(format!(
                "CREATE INDEX {} ON {table} ({})",
                quote_ident(&format!("{prefix}_h{i}")),
                hash_column(&field.name)
            ));
            statements.push(format!(
                "CREATE INDEX {} ON {table} USING hnsw ({} vector_cosine_ops)",
                quote_ident(&format!("{prefix}_v{i}")),
                vector_column(&field.name)
            ));
        }
        statements
    }
}

/// What [`ensure_sidecar`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarState {
    /// The sidecar table was (re)created just now: it is empty.
    pub created: bool,
    /// Embedder recorded for the collection's vectors, `(model_id, dimension)`.
    pub embedder: Option<(String, usize)>,
}

/// Applies the `quarry` schema's migrations ([`quarry_db::migrate_client`],
/// which hold the bookkeeping tables) and creates `collection`'s sidecar when missing;
/// recreates the sidecar when the definition changed (resetting the sync's
/// checkpoint); records `embedder` (`(model_id, dimension)`) on first use and
/// adds the vector columns then. Serialised across processes by a
/// transaction-level advisory lock.
///
/// # Errors
/// [`CollectionError::EmbedderMismatch`] when another embedder wrote the
/// vectors; [`CollectionError::Source`] when the source table or key column
/// is missing; database errors.
pub async fn ensure_sidecar(
    client: &mut Client,
    collection: &Collection,
    embedder: Option<(&str, usize)>,
) -> Result<SidecarState> {
    quarry_db::migrate_client(client).await?;
    let tx = client.transaction().await?;
    quarry_db::lock::xact_lock(&tx, SEARCH_LOCK).await?;
    let key_type: Option<String> = tx
        .query_opt(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped AND a.attnum > 0",
            &[&collection.source.quoted(), &collection.key],
        )
        .await?
        .map(|row| row.get(0));
    if key_type.is_none() {
        return Err(CollectionError::Source {
            collection: collection.name.clone(),
            message: format!(
                "source table {} with key column {:?} not found",
                collection.source.quoted(),
                collection.key
            ),
        });
    }
    let row = tx
        .query_opt(
            "SELECT config_hash, model_id, dimension FROM quarry.search_collections WHERE name = $1",
            &[&collection.name],
        )
        .await?;
    let table_exists: bool = tx
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&collection.docs_table()],
        )
        .await?
        .get(0);
    let recorded: Option<(String, usize)> = row.as_ref().and_then(|r| {
        let model: Option<String> = r.get(1);
        let dimension: Option<i32> = r.get(2);
        Some((model?, usize::try_from(dimension?).ok()?))
    });
    if let (Some((recorded_model, recorded_dimension)), Some((given_model, given_dimension))) =
        (&recorded, embedder)
        && (recorded_model != given_model || *recorded_dimension != given_dimension)
    {
        return Err(CollectionError::EmbedderMismatch {
            collection: collection.name.clone(),
            recorded_model: recorded_model.clone(),
            recorded_dimension: *recorded_dimension,
            given_model: given_model.to_owned(),
            given_dimension,
        });
    }
    let same_definition = row
        .as_ref()
        .is_some_and(|r| r.get::<_, String>(0) == collection.config_hash());
    let mut created = false;
    let mut state_embedder = recorded.clone();
    if !(same_definition && table_exists) {
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", collection.docs_table()))
            .await?;
        // Vectors are recomputed for the new definition, by the embedder given now.
        let dimension = embedder
            .map(|(_, d)| d)
            .or(recorded.as_ref().map(|(_, d)| *d));
        for statement in collection.sidecar_ddl(dimension) {
            tx.batch_execute(&statement).await?;
        }
        let model = embedder
            .map(|(m, _)| m.to_owned())
            .or(recorded.as_ref().map(|(m, _)| m.clone()));
        let dim = dimension.and_then(|d| i32::try_from(d).ok());
        tx.execute(
            "INSERT INTO quarry.search_collections (name, config_hash, model_id, dimension) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET config_hash = EXCLUDED.config_hash, \
               model_id = EXCLUDED.model_id, dimension = EXCLUDED.dimension, source_oid = NULL, \
               backfill_after = NULL, backfill_done = false, backfill_from_version = NULL, updated_at = now()",
            &[&collection.name, &collection.config_hash(), &model, &dim],
        )
        .await?;
        created = true;
        state_embedder = model.zip(dimension);
    } else if recorded.is_none()
        && let Some((model, dimension)) = embedder
    {
        for statement in collection.vector_ddl(dimension) {
            tx.batch_execute(&statement).await?;
        }
        let dim = i32::try_from(dimension).ok();
        tx.execute(
            "UPDATE quarry.search_collections SET model_id = $2, dimension = $3, updated_at = now() WHERE name = $1",
            &[&collection.name, &model, &dim],
        )
        .await?;
        state_embedder = Some((model.to_owned(), dimension));
    }
    tx.commit().await?;
    Ok(SidecarState {
        created,
        embedder: state_embedder,
    })
}
