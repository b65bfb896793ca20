//! k-NN over the sidecar's embeddings (pgvector), exact under selective
//! filters.
//!
//! A document's distance to the query is the smallest cosine distance
//! (`<=>`, in `[0, 2]`) over its text fields' vectors (`LEAST` ignores the
//! `NULL` of an empty field); only non-deleted documents with at least one
//! vector take part.
//!
//! HNSW with a filter is post-filtering: the index yields about
//! `hnsw.ef_search` nearest rows and the filter then drops those that do not
//! match, so a filter matching a fraction `s` of the rows leaves about
//! `s · ef_search` (pgvector README, "Filtering": a 10 % filter with the
//! default 40 leaves about 4). pgvector 0.6 has no iterative scans. So:
//!
//! 1. The planner estimates the rows matching the filter (`EXPLAIN (FORMAT
//!    JSON)`, "Plan Rows") and the rows with vectors; `s` is their ratio.
//! 2. **Exact** when the estimate is below [`VectorOptions::exact_threshold`]
//!    or when even [`VectorOptions::max_ef_search`] candidates would leave
//!    fewer than `5 · min_hits` expected matches (`max · s < 5 · min_hits`;
//!    `min_hits` is the request's k, `k` here the candidates wanted for
//!    fusion): distance over the filtered rows in a
//!    `MATERIALIZED` CTE (which the planner cannot answer from the index),
//!    ordered by distance then key.
//! 3. Otherwise **HNSW** in a transaction with
//!    `SET LOCAL hnsw.ef_search = min(ceil(base / s), max)`: about `base`
//!    rows are expected to survive the filter. [`Survivors`] chooses `base`:
//!    - [`Survivors::Recall`] (vector mode; the rule the recall test below
//!      and the README's recall@10 figures were measured with): `base =
//!      max(ef_search_base, k, 2 · min_hits)`, at least `5 · min_hits` when
//!      capped at `max`;
//!    - [`Survivors::Fusion`] (the vector side of hybrid search, whose `k`
//!      is the candidates fusion wants and `min_hits` the request's k):
//!      `base = max(k, margin · min_hits)`, `ef_search` at least
//!      `ef_search_base`; without a filter (`s = 1`) `base = k`.
//!
//!    One index-ordered subquery per text field (top `k` each),
//!    union, smallest distance per key, top `k` (a document in the overall
//!    top `k` is in the top `k` of the field that gives its distance).
//! 4. If HNSW returns fewer than `min_hits` rows, the exact query runs
//!    instead, so whenever at least `min_hits` rows match, that many come back.

use deadpool_postgres::ClientWrapper;
use pgvector::Vector;
use tokio_postgres::Statement;

use quarry_db::quote_ident;

use crate::collection::{Collection, vector_column};
use crate::error::{Result, SearchError};
use crate::filter::{CheckedFilter, SqlParams, param_refs};

/// Statements a pooled connection keeps prepared for vector search before
/// its cache is emptied (a new filter shape is a new statement).
pub const STATEMENT_CACHE_LIMIT: usize = 256;

/// When the exact path runs and how far HNSW is pushed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorOptions {
    /// Estimated matching rows below which distance is computed exactly.
    pub exact_threshold: u64,
    /// Smallest `hnsw.ef_search` used (pgvector's default is 40).
    pub ef_search_base: u32,
    /// Largest `hnsw.ef_search` used (pgvector accepts up to 1000).
    pub max_ef_search: u32,
    /// How many rows HNSW should leave after the filter.
    pub survivors: Survivors,
}

/// The rows the HNSW path aims to leave after a filter (module docs, 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survivors {
    /// `max(ef_search_base, k, 2 · min_hits)`: for vector-mode answers.
    Recall,
    /// `max(k, margin · min_hits)` (`k` without a filter): for fusion
    /// candidates. Measured at 1M documents with a 10 % filter, margin 5
    /// and 50 candidates (`ef_search` 500): hybrid p99 19.9-25.6 ms against
    /// 26.3-35.6 with 100 candidates (`ef_search` 1000), recall@10 against
    /// exact vector search 0.951 against 0.954 (README, "Search at 1M").
    Fusion {
        /// Rows per hit asked for (at least 1).
        margin: u32,
    },
}

impl Default for VectorOptions {
    /// `exact_threshold` 10,000 rows (distance over 10k rows of a few
    /// hundred dimensions takes tens of milliseconds), `ef_search_base` 100,
    /// `max_ef_search` 1000.
    fn default() -> Self {
        VectorOptions {
            exact_threshold: 10_000,
            ef_search_base: 100,
            max_ef_search: 1000,
            survivors: Survivors::Recall,
        }
    }
}

/// Which path answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorPath {
    /// Exact distance over the filtered rows (the estimate was small).
    Exact,
    /// HNSW with this `hnsw.ef_search`.
    Hnsw {
        /// The `ef_search` set.
        ef_search: u32,
    },
    /// HNSW returned fewer than `k` rows, so the exact query ran.
    HnswThenExact {
        /// The `ef_search` HNSW ran with.
        ef_search: u32,
    },
}

impl VectorPath {
    /// True when the hits come from exact distance.
    pub fn is_exact(self) -> bool {
        !matches!(self, VectorPath::Hnsw { .. })
    }
}

/// A vector hit.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    /// Source key.
    pub key: String,
    /// Smallest cosine distance over the document's fields, in `[0, 2]`.
    pub distance: f64,
}

/// A k-NN answer.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorResult {
    /// Hits, nearest first (ties by key).
    pub hits: Vec<VectorHit>,
    /// The path that produced them.
    pub path: VectorPath,
    /// The planner's estimate of rows matching the filter.
    pub estimated_rows: f64,
}

fn base_condition(searched: &[String]) -> String {
    let any_vector = searched
        .iter()
        .map(|f| format!("{} IS NOT NULL", quote_ident(&vector_column(f))))
        .collect::<Vec<_>>()
        .join(" OR ");
    format!("NOT deleted AND ({any_vector})")
}

async fn plan_rows(client: &ClientWrapper, sql: &str, params: &SqlParams) -> Result<f64> {
    let statement = cached(client, &format!("EXPLAIN (FORMAT JSON) {sql}")).await?;
    let row = client.query_one(&statement, &param_refs(params)).await?;
    let plan: serde_json::Value = row.try_get(0)?;
    plan.get(0)
        .and_then(|p| p.get("Plan"))
        .and_then(|p| p.get("Plan Rows"))
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| SearchError::Internal(format!("no Plan Rows in {plan}")))
}

/// A statement from the connection's cache (prepared once per connection:
/// no parse round trip afterwards). The cache is emptied when it holds more
/// than [`STATEMENT_CACHE_LIMIT`] statements, so filters of ever new shapes
/// cannot grow it without bound.
async fn cached(client: &ClientWrapper, sql: &str) -> Result<Statement> {
    if client.statement_cache.size() > STATEMENT_CACHE_LIMIT {
        client.statement_cache.clear();
    }
    Ok(client.prepare_cached(sql).await?)
}

/// Runs `statement` in a transaction that first runs `settings` (`SET
/// LOCAL …`), with a custom plan for each execution (the filter's values
/// decide between index and scan, as they would unprepared) and without JIT
/// (the planner's cost for a vector `ORDER BY` over a large table passes
/// `jit_above_cost`, and compiling then costs more than the query), pipelined: `BEGIN` and the settings, the query and `COMMIT`
/// are sent together and answered in one round trip. All three are sent at
/// the first poll, so a caller that drops the future midway still leaves the
/// connection outside any transaction (the server runs the `COMMIT`, or
/// turns it into a rollback after an error).
async fn query_in_transaction(
    client: &ClientWrapper,
    settings: &str,
    statement: &Statement,
    params: &SqlParams,
) -> Result<Vec<tokio_postgres::Row>> {
    let begin = format!(
        "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off; {settings}"
    );
    let params = param_refs(params);
    let (begun, rows, committed) = futures::join!(
        client.batch_execute(&begin),
        client.query(statement, &params),
        client.batch_execute("COMMIT"),
    );
    begun?;
    let rows = rows?;
    committed?;
    Ok(rows)
}

/// The `ef_search` for selectivity `s` when `k` candidates are wanted and
/// at least `min_hits` must survive the filter (see the module docs);
/// `None` means exact search.
pub fn ef_search_for(
    options: &VectorOptions,
    k: usize,
    min_hits: usize,
    selectivity: f64,
) -> Option<u32> {
    let selectivity = selectivity.clamp(1e-9, 1.0);
    let base = match options.survivors {
        Survivors::Recall => f64::from(options.ef_search_base)
            .max(k as f64)
            .max(2.0 * min_hits as f64),
        // without a filter every candidate survives
        Survivors::Fusion { .. } if selectivity >= 1.0 => k as f64,
        Survivors::Fusion { margin } => (k as f64).max(f64::from(margin.max(1)) * min_hits as f64),
    };
    let wanted = (base / selectivity)
        .ceil()
        .max(f64::from(options.ef_search_base));
    let max = f64::from(options.max_ef_search);
    if wanted > max {
        // Capped: still worth it while the capped candidate list is expected
        // to hold 5 × min_hits matching rows (the exact fallback covers a
        // shortfall, at the cost of both queries).
        (max * selectivity >= 5.0 * min_hits as f64).then_some(options.max_ef_search)
    } else {
        // In range: wanted ≤ max_ef_search ≤ u32::MAX.
        Some(wanted as u32)
    }
}

/// The `k` documents nearest to `query` among those matching `filter`,
/// by the vectors of the text fields named in `searched` only (the fields
/// the caller may see: a document's distance is the smallest over those,
/// and a document with vectors only in other fields takes no part).
///
/// # Errors
/// Database errors; [`SearchError::FailedPrecondition`] when the collection
/// has no vector columns; [`SearchError::Internal`] when `searched` names
/// no text field of the collection.
#[allow(clippy::too_many_arguments)] // the search's parts, each named
pub async fn search(
    client: &ClientWrapper,
    collection: &Collection,
    query: &Vector,
    filter: &CheckedFilter,
    k: usize,
    min_hits: usize,
    options: &VectorOptions,
    searched: &[String],
) -> Result<VectorResult> {
    let searched: Vec<String> = collection
        .text
        .iter()
        .filter(|f| searched.contains(&f.name))
        .map(|f| f.name.clone())
        .collect();
    if searched.is_empty() {
        return Err(SearchError::Internal(format!(
            "vector search over collection {} without a text field to search",
            collection.name
        )));
    }
    let min_hits = min_hits.clamp(1, k.max(1));
    let table = collection.docs_table();
    let base = base_condition(&searched);
    let mut params = SqlParams::new();
    let condition = format!("{base} AND {}", filter.to_sql(&mut params));
    let filtered_sql = format!("SELECT 1 FROM {table} WHERE {condition}");
    let (estimated_rows, total_rows) = if filter.is_all() {
        // Without a filter both estimates are the same query: plan it once.
        let rows = plan_rows(client, &filtered_sql, &params).await?;
        (rows, rows)
    } else {
        // Both plans in one round trip (pipelined).
        let all_sql = format!("SELECT 1 FROM {table} WHERE {base}");
        let none = SqlParams::new();
        let (filtered, all) = futures::join!(
            plan_rows(client, &filtered_sql, &params),
            plan_rows(client, &all_sql, &none),
        );
        (filtered?, all?)
    };
    let selectivity = if total_rows > 0.0 {
        (estimated_rows / total_rows).min(1.0)
    } else {
        1.0
    };
    let limit = i64::try_from(k).unwrap_or(i64::MAX);
    let query_param = params.len() + 1;
    let limit_param = params.len() + 2;
    params.push(Box::new(query.clone()));
    params.push(Box::new(limit));
    let distance = |field: &str| {
        format!(
            "({} <=> ${query_param})",
            quote_ident(&vector_column(field))
        )
    };
    let least = searched
        .iter()
        .map(|f| distance(f))
        .collect::<Vec<_>>()
        .join(", ");
    let vectors = searched
        .iter()
        .map(|f| quote_ident(&vector_column(f)))
        .collect::<Vec<_>>()
        .join(", ");
    let exact_sql = format!(
        "WITH c AS MATERIALIZED (SELECT key, {vectors} FROM {table} WHERE {condition}) \
         SELECT key, LEAST({least}) AS d FROM c ORDER BY d, key LIMIT ${limit_param}"
    );
    let ef_search = ef_search_for(options, k, min_hits, selectivity);
    let hnsw_ef = match ef_search {
        Some(ef) if estimated_rows >= options.exact_threshold as f64 => Some(ef),
        _ => None,
    };
    let rows_to_hits = |rows: Vec<tokio_postgres::Row>| -> Result<Vec<VectorHit>> {
        rows.iter()
            .map(|r| {
                Ok(VectorHit {
                    key: r.try_get(0)?,
                    distance: r.try_get(1)?,
                })
            })
            .collect()
    };
    let Some(ef) = hnsw_ef else {
        let exact = cached(client, &exact_sql).await?;
        let rows = query_in_transaction(client, "", &exact, &params).await?;
        return Ok(VectorResult {
            hits: rows_to_hits(rows)?,
            path: VectorPath::Exact,
            estimated_rows,
        });
    };
    let branches = searched
        .iter()
        .map(|f| {
            let column = quote_ident(&vector_column(f));
            let d = distance(f);
            format!(
                "(SELECT key, {d} AS d FROM {table} WHERE {condition} AND {column} IS NOT NULL \
                 ORDER BY {d} LIMIT ${limit_param})"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let hnsw_sql = format!(
        "SELECT key, min(d) AS d FROM ({branches}) u GROUP BY key ORDER BY d, key LIMIT ${limit_param}"
    );
    let hnsw = cached(client, &hnsw_sql).await?;
    let rows = query_in_transaction(
        client,
        &format!("SET LOCAL hnsw.ef_search = {ef}"),
        &hnsw,
        &params,
    )
    .await?;
    let hits = rows_to_hits(rows)?;
    if hits.len() >= min_hits {
        return Ok(VectorResult {
            hits,
            path: VectorPath::Hnsw { ef_search: ef },
            estimated_rows,
        });
    }
    let exact = cached(client, &exact_sql).await?;
    let rows = query_in_transaction(client, "", &exact, &params).await?;
    Ok(VectorResult {
        hits: rows_to_hits(rows)?,
        path: VectorPath::HnswThenExact { ef_search: ef },
        estimated_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ef_search_grows_as_the_filter_narrows() {
        let o = VectorOptions::default();
        assert_eq!(ef_search_for(&o, 10, 10, 1.0), Some(100));
        assert_eq!(ef_search_for(&o, 10, 10, 0.5), Some(200));
        assert_eq!(ef_search_for(&o, 10, 10, 0.1), Some(1000));
        // The planner's 9.98 % for a 10 % filter must not tip into exact search.
        assert_eq!(ef_search_for(&o, 10, 10, 0.0998), Some(1000));
        assert_eq!(ef_search_for(&o, 10, 10, 0.05), Some(1000));
        assert_eq!(ef_search_for(&o, 10, 10, 0.04), None);
        assert_eq!(ef_search_for(&o, 100, 10, 1.0), Some(100));
        // 100 candidates for fusion, k = 10: a 10 % filter stays on HNSW.
        assert_eq!(ef_search_for(&o, 100, 10, 0.1), Some(1000));
        assert_eq!(ef_search_for(&o, 200, 100, 1.0), Some(200));
        assert_eq!(ef_search_for(&o, 10, 10, 0.0), None);
    }

    #[test]
    fn fusion_candidates_aim_at_margin_times_the_hits() {
        let o = VectorOptions {
            survivors: Survivors::Fusion { margin: 5 },
            ..VectorOptions::default()
        };
        // without a filter: the candidates, at least ef_search_base
        assert_eq!(ef_search_for(&o, 50, 10, 1.0), Some(100));
        assert_eq!(ef_search_for(&o, 100, 100, 1.0), Some(100));
        assert_eq!(ef_search_for(&o, 200, 10, 1.0), Some(200));
        // 50 candidates or 5 × 10 hits expected to survive
        assert_eq!(ef_search_for(&o, 50, 10, 0.5), Some(100));
        assert_eq!(ef_search_for(&o, 50, 10, 0.2), Some(250));
        assert_eq!(ef_search_for(&o, 50, 10, 0.1), Some(500));
        assert_eq!(ef_search_for(&o, 30, 10, 0.1), Some(500));
        assert_eq!(ef_search_for(&o, 100, 10, 0.1), Some(1000));
        // capped: HNSW while 1000 still leaves 5 × min_hits, else exact
        assert_eq!(ef_search_for(&o, 50, 10, 0.05), Some(1000));
        assert_eq!(ef_search_for(&o, 50, 10, 0.04), None);
        assert_eq!(ef_search_for(&o, 200, 10, 0.1), Some(1000));
    }
}
