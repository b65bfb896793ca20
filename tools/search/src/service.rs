//! The search tool's domain service: configuration, request validation, the
//! retrievers, fusion, an optional rerank hook and field fetching.
//!
//! Modes:
//! - **bm25**: the collection's tantivy index ([`crate::index`]);
//! - **vector**: pgvector k-NN ([`crate::vector`]) of the embedded query;
//!   without an embedder it is refused ([`SearchError::FailedPrecondition`]);
//! - **hybrid** (the default): both, concurrently, fused by weighted RRF
//!   ([`crate::fusion`]). Without an embedder, hybrid degrades to bm25 and
//!   the response's `mode` says so; when the query has no searchable word for
//!   BM25 (only stop words) it runs the vector retriever alone.
//!
//! **Fields per role.** A caller sees only the fields of a collection its
//! policy shows ([`quarry_auth::Grant::collection_fields`],
//! `policy.roles.<r>.collection_fields`): hidden fields are left out of
//! hits (also of the default field list and of what a reranker reads), a
//! request that names one in `fields` or in its filter is refused
//! ([`SearchError::FieldForbidden`], `PERMISSION_DENIED`), and queries are
//! matched only against the visible text fields — BM25 queries only their
//! terms and vector search uses only their per-field embeddings (each text
//! field has its own vector, so no embedding of hidden text is consulted).
//! A caller who sees no text field of a collection cannot search it. The
//! collection's `tenant_filter` is applied whether or not its field is
//! visible. ListCollections lists only the visible fields.
//!
//! [`SearchTool::search_with_query_vector`] runs the same search with a query
//! vector computed by the caller (benchmarks that report query embedding
//! separately, callers that embed elsewhere): the embedder is not called, and
//! vector and hybrid modes work even when no embedder is configured, as long
//! as the collection has recorded vectors of that dimension.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use quarry_auth::{Access, Caller};
use quarry_db::quote_literal;
use quarry_llm::embed::Embedder;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::collection::{Collection, CollectionConfig, FilterType, filter_column, text_column};
use crate::ddl::ensure_sidecar;
use crate::error::{Result, SearchError};
use crate::filter::{CheckedFilter, Filter, MAX_DEPTH};
use crate::fusion::{
    DEFAULT_RRF_K, RetrieverScore, coverage_weight, fuse, keep_unembedded_in_place,
};
use crate::index::{CollectionIndex, MAX_QUERY_BYTES, analyse, follow};
use crate::vector::{self, Survivors, VectorOptions};
use quarry_db::quote_ident;

/// How long a collection's embedded-document count is reused.
pub const COUNT_TTL: Duration = Duration::from_secs(5);
/// `k` when a request asks for 0.
pub const DEFAULT_K: usize = 10;

/// `[search]` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// Directory of the tantivy indexes, one sub-directory per collection.
    #[serde(default = "default_index_dir")]
    pub index_dir: PathBuf,
    /// RRF constant (Cormack et al. 2009: 60).
    #[serde(default = "default_rrf_k")]
    pub rrf_k: f64,
    /// Weight of BM25 in RRF.
    #[serde(default = "one")]
    pub bm25_weight: f64,
    /// Weight of the vector retriever in RRF, scaled by the share of the
    /// collection embedded so far ([`crate::fusion::coverage_weight`]).
    #[serde(default = "one")]
    pub vector_weight: f64,
    /// Candidates each retriever contributes to hybrid fusion (at least `k`
    /// are used; a single-retriever mode fetches `k`). Default 50: on
    /// SciFact, hybrid nDCG@10 of a top-10 request is 0.711 / 0.714 / 0.711
    /// / 0.713 / 0.712 at 100 / 50 / 40 / 30 / 20 candidates (`quarry eval
    /// search --candidates N`), and 50 halves the HNSW `ef_search` a 10 %
    /// filter needs (README, "Search at 1M").
    #[serde(default = "default_candidates")]
    pub candidates: usize,
    /// Estimated matching rows below which vector search is exact
    /// ([`VectorOptions::exact_threshold`]).
    #[serde(default = "default_exact_threshold")]
    pub exact_threshold: u64,
    /// Hybrid search under a filter: the rows its vector side's HNSW scan
    /// should leave per hit asked for ([`Survivors::Fusion`]; vector mode
    /// keeps [`Survivors::Recall`]). Higher is closer to exact and slower.
    /// Default 5.
    #[serde(default = "default_hybrid_filter_margin")]
    pub hybrid_filter_margin: u32,
    /// Largest `k` a request may ask for.
    #[serde(default = "default_max_k")]
    pub max_k: usize,
    /// The collections.
    #[serde(default)]
    pub collections: Vec<CollectionConfig>,
    /// Searches one tenant may run at once, as a fraction of the pool's
    /// connections (rounded down, at least one); past it a search waits
    /// `tenant_wait_ms`, then is refused with `RESOURCE_EXHAUSTED` and
    /// `RetryInfo`. Default 0.5.
    #[serde(default = "default_tenant_share")]
    pub tenant_share: f64,
    /// See `tenant_share`, in milliseconds. Default 250.
    #[serde(default = "default_tenant_wait_ms")]
    pub tenant_wait_ms: u64,
}

fn default_tenant_share() -> f64 {
    0.5
}

fn default_tenant_wait_ms() -> u64 {
    250
}

fn default_index_dir() -> PathBuf {
    PathBuf::from("data/search")
}
fn default_rrf_k() -> f64 {
    DEFAULT_RRF_K
}
fn one() -> f64 {
    1.0
}
fn default_candidates() -> usize {
    50
}
fn default_exact_threshold() -> u64 {
    VectorOptions::default().exact_threshold
}
fn default_hybrid_filter_margin() -> u32 {
    5
}
fn default_max_k() -> usize {
    1000
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            index_dir: default_index_dir(),
            rrf_k: DEFAULT_RRF_K,
            bm25_weight: 1.0,
            vector_weight: 1.0,
            candidates: default_candidates(),
            exact_threshold: default_exact_threshold(),
            hybrid_filter_margin: default_hybrid_filter_margin(),
            max_k: default_max_k(),
            collections: Vec::new(),
            tenant_share: default_tenant_share(),
            tenant_wait_ms: default_tenant_wait_ms(),
        }
    }
}

/// Which retrievers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// BM25 only.
    Bm25,
    /// Vector k-NN only.
    Vector,
    /// Both, fused.
    #[default]
    Hybrid,
}

/// A search.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchRequest {
    /// Collection name.
    pub collection: String,
    /// Plain query text.
    pub query: String,
    /// Filter; `None` is every document.
    pub filter: Option<Filter>,
    /// Mode.
    pub mode: Mode,
    /// Hits wanted, `1..=max_k`; 0 means [`DEFAULT_K`].
    pub k: usize,
    /// Fields to return; empty means every stored field.
    pub fields: Vec<String>,
}

/// A returned field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldData {
    /// No value.
    Null,
    /// Text (text fields, keyword fields, JSON strings).
    Text(String),
    /// A keywords array.
    Texts(Vec<String>),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Any other JSON value of a stored field.
    Json(serde_json::Value),
}

/// A hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Source key.
    pub key: String,
    /// Fused RRF score (hybrid) or the retriever's score.
    pub score: f64,
    /// BM25 rank and score.
    pub bm25: Option<RetrieverScore>,
    /// Vector rank and cosine similarity (1 − distance).
    pub vector: Option<RetrieverScore>,
    /// Requested fields.
    pub fields: BTreeMap<String, FieldData>,
}

/// A search answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResponse {
    /// Hits, best first.
    pub hits: Vec<Hit>,
    /// The mode that ran (hybrid may degrade, see the module docs).
    pub mode: Mode,
    /// The vector retriever used exact distance.
    pub exact_vector_search: bool,
    /// Documents searchable by BM25.
    pub documents: u64,
    /// Documents whose embeddings are current.
    pub embedded_documents: u64,
    /// Milliseconds spent embedding the query.
    pub embed_ms: f64,
    /// Milliseconds in total.
    pub total_ms: f64,
}

/// A collection's description for ListCollections.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    /// The collection.
    pub collection: Arc<Collection>,
    /// Documents searchable by BM25.
    pub documents: u64,
    /// Documents with current embeddings.
    pub embedded_documents: u64,
    /// Embedding model of the vectors, if any.
    pub embedding_model: Option<String>,
}

/// Reorders the fused candidates (e.g. a cross-encoder). Gets the query and
/// the fused hits, best first, with the requested fields and every text
/// field filled in; returns them in a new order (it may drop hits, and set
/// `score`). Only the first `k` returned are kept.
pub trait Reranker: Send + Sync {
    /// Reranks `hits` for `query`.
    fn rerank(&self, query: String, hits: Vec<Hit>) -> BoxFuture<'static, Result<Vec<Hit>>>;
}

struct Entry {
    collection: Arc<Collection>,
    /// The collection's `tenant_filter` field, if any.
    tenant_filter: Option<String>,
    index: Arc<CollectionIndex>,
    embedding_model: Option<String>,
    embedding_dimension: Option<usize>,
    /// Last embedded-document count, when it was confirmed and what the
    /// sidecar looked like before it was taken.
    embedded: Arc<Mutex<Option<EmbeddedCount>>>,
    /// A background recount is running.
    recounting: Arc<std::sync::atomic::AtomicBool>,
}

/// A collection's embedded-document count.
#[derive(Debug, Clone, Copy)]
struct EmbeddedCount {
    /// When it was last taken or confirmed.
    at: Instant,
    /// Non-deleted rows with `embedded`.
    embedded: u64,
    /// The sidecar's [`Fingerprint`] read just before the count.
    fingerprint: Fingerprint,
}

/// What the embedded count depends on, cheap to read: the sidecar's highest
/// `version` (over the `_version` index) and its pending rows, non-deleted
/// and not embedded (over the `_pending` partial index). Every write that
/// can change the embedded count changes one of them: the sync gives each
/// inserted, changed or deleted row a new version (from one sequence), and
/// embedding a row, which keeps its version, takes it out of the pending
/// rows.
type Fingerprint = (i64, i64);

/// The embedded count of `table`, reusing `previous` when the sidecar's
/// fingerprint has not changed since it was taken (no full scan then).
/// The fingerprint is read before the count, so a write between the two
/// leaves a fingerprint older than the count, and the next call counts
/// again.
async fn count_embedded(
    pool: &Pool,
    table: &str,
    previous: Option<EmbeddedCount>,
) -> Result<EmbeddedCount> {
    let client = quarry_db::checkout(pool, "search").await?;
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT coalesce(max(version), 0) FROM {table}), \
                 (SELECT count(*) FROM {table} WHERE NOT embedded AND NOT deleted)"
            ),
            &[],
        )
        .await?;
    let fingerprint: Fingerprint = (row.try_get(0)?, row.try_get(1)?);
    let embedded = match previous {
        Some(previous) if previous.fingerprint == fingerprint => previous.embedded,
        _ => {
            let n: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE embedded AND NOT deleted"),
                    &[],
                )
                .await?
                .try_get(0)?;
            u64::try_from(n).unwrap_or(0)
        }
    };
    Ok(EmbeddedCount {
        at: Instant::now(),
        embedded,
        fingerprint,
    })
}

/// The search tool.
pub struct SearchTool {
    pool: Pool,
    database_url: String,
    config: SearchConfig,
    embedder: Option<Arc<dyn Embedder>>,
    reranker: Option<Arc<dyn Reranker>>,
    entries: Vec<Entry>,
    /// Each tenant's share of concurrent searches.
    shares: quarry_auth::shares::TenantShares,
}

impl std::fmt::Debug for SearchTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchTool")
            .field("collections", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl SearchTool {
    /// Validates the collections (errors name `search.collections[i]…`),
    /// prepares their sidecar tables ([`ensure_sidecar`], recording the
    /// embedder) and opens their indexes under `config.index_dir`. The
    /// indexes fill in once [`SearchTool::catch_up`] or
    /// [`SearchTool::spawn_follower`] runs.
    ///
    /// # Errors
    /// [`SearchError::Collection`] for an invalid definition or embedder
    /// mismatch, [`SearchError::InvalidArgument`] for bad settings, database
    /// and index errors.
    pub async fn open(
        pool: Pool,
        database_url: String,
        config: SearchConfig,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Result<SearchTool> {
        if !(config.rrf_k.is_finite() && config.rrf_k >= 0.0) {
            return Err(SearchError::invalid(
                "search.rrf_k",
                "must be a finite number ≥ 0",
            ));
        }
        for (name, w) in [
            ("bm25_weight", config.bm25_weight),
            ("vector_weight", config.vector_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(SearchError::invalid(
                    format!("search.{name}"),
                    "must be a finite number ≥ 0",
                ));
            }
        }
        if config.max_k == 0 {
            return Err(SearchError::invalid("search.max_k", "must be at least 1"));
        }
        let mut entries = Vec::new();
        let mut client = quarry_db::checkout(&pool, "search").await?;
        for (i, c) in config.collections.iter().enumerate() {
            let path = format!("search.collections[{i}]");
            let collection = Arc::new(Collection::from_config(c, &path)?);
            if entries
                .iter()
                .any(|e: &Entry| e.collection.name == collection.name)
            {
                return Err(SearchError::invalid(
                    format!("{path}.name"),
                    format!("duplicate collection {:?}", collection.name),
                ));
            }
            let state = ensure_sidecar(
                &mut client,
                &collection,
                embedder.as_ref().map(|e| (e.model_id(), e.dimension())),
            )
            .await?;
            let dir = config.index_dir.clone();
            let for_index = Arc::clone(&collection);
            let index = tokio::task::spawn_blocking(move || CollectionIndex::open(&dir, for_index))
                .await??;
            entries.push(Entry {
                collection,
                tenant_filter: c.tenant_filter.clone(),
                index: Arc::new(index),
                embedding_dimension: state.embedder.as_ref().map(|(_, d)| *d),
                embedding_model: state.embedder.map(|(m, _)| m),
                embedded: Arc::new(Mutex::new(None)),
                recounting: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            });
        }
        let shares = quarry_auth::shares::TenantShares::new(
            "concurrent searches",
            quarry_auth::shares::TenantShares::share_of(
                pool.status().max_size,
                config.tenant_share,
            ),
            std::time::Duration::from_millis(config.tenant_wait_ms),
        );
        Ok(SearchTool {
            pool,
            database_url,
            config,
            embedder,
            reranker: None,
            entries,
            shares,
        })
    }

    /// Each tenant's share of concurrent searches.
    pub fn tenant_shares(&self) -> &quarry_auth::shares::TenantShares {
        &self.shares
    }

    /// Sets the rerank hook.
    pub fn with_reranker(mut self, reranker: Arc<dyn Reranker>) -> Self {
        self.reranker = Some(reranker);
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &SearchConfig {
        &self.config
    }

    /// The embedder queries are embedded with (and the sync should embed
    /// documents with), if any.
    pub fn embedder(&self) -> Option<Arc<dyn Embedder>> {
        self.embedder.clone()
    }

    /// Brings every index up to date with its sidecar table now, and waits
    /// for the merge into one segment a bulk catch-up starts
    /// ([`CollectionIndex::consolidated`]).
    ///
    /// # Errors
    /// Database and index errors.
    pub async fn catch_up(&self) -> Result<()> {
        for entry in &self.entries {
            entry.index.catch_up(&self.pool).await?;
            entry.index.consolidated().await;
        }
        Ok(())
    }

    /// Follows the sidecar tables ([`crate::index::follow`]) until `shutdown`
    /// resolves.
    pub async fn follow(&self, shutdown: impl std::future::Future<Output = ()> + Send) {
        self.follow_reporting(shutdown, None).await;
    }

    /// [`SearchTool::follow`], reporting failed and successful catch-ups to
    /// `task` (see [`crate::index::follow`]).
    pub async fn follow_reporting(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send,
        task: Option<quarry_db::supervisor::TaskHandle>,
    ) {
        let indexes = self.entries.iter().map(|e| Arc::clone(&e.index)).collect();
        follow(
            indexes,
            self.pool.clone(),
            self.database_url.clone(),
            shutdown,
            task,
        )
        .await;
    }

    /// Spawns [`SearchTool::follow`] on the runtime.
    pub fn spawn_follower(
        self: &Arc<Self>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.follow(shutdown).await })
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries
            .iter()
            .find(|e| e.collection.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .entries
                    .iter()
                    .map(|e| e.collection.name.as_str())
                    .collect();
                SearchError::invalid(
                    "collection",
                    format!(
                        "unknown collection {name:?}; collections: {}",
                        known.join(", ")
                    ),
                )
            })
    }

    /// The keys of `hits` that have a vector now (one query on the
    /// collection's sidecar, by primary key).
    async fn embedded_keys(
        &self,
        entry: &Entry,
        hits: &[(String, f64)],
    ) -> Result<HashSet<String>> {
        let keys: Vec<&str> = hits.iter().map(|(key, _)| key.as_str()).collect();
        let client = quarry_db::checkout(&self.pool, "search").await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT key FROM {} WHERE key = ANY($1) AND embedded AND NOT deleted",
                entry.collection.docs_table()
            ))
            .await?;
        let rows = client.query(&statement, &[&keys]).await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Documents (the index's count) and embedded documents. The embedded
    /// count is a `count(*)` over the sidecar: taken synchronously only the
    /// first time; afterwards a stale value (older than [`COUNT_TTL`]) is
    /// returned at once while one background task refreshes it, so a search
    /// never waits on a full scan of a large collection. The refresh counts
    /// again only when the sidecar's fingerprint (highest version, pending
    /// rows; see [`count_embedded`]) changed: a collection nobody writes to
    /// is not scanned every [`COUNT_TTL`] (at 1M documents that scan took
    /// about 0.4 s of both cores). (Counting the pending rows alone reads far
    /// less, but subtracted from the index's count, a pending count taken
    /// before the sync has written the sidecar reads 0 and would report
    /// every document embedded for [`COUNT_TTL`].)
    async fn counts(&self, entry: &Entry) -> Result<(u64, u64)> {
        use std::sync::atomic::Ordering;
        let documents = entry.index.num_docs();
        if entry.embedding_model.is_none() {
            return Ok((documents, 0));
        }
        let cached = *entry
            .embedded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let table = entry.collection.docs_table();
        match cached {
            Some(c) if c.at.elapsed() < COUNT_TTL => Ok((documents, c.embedded)),
            Some(c) => {
                if !entry.recounting.swap(true, Ordering::AcqRel) {
                    let (pool, slot, flag) = (
                        self.pool.clone(),
                        Arc::clone(&entry.embedded),
                        Arc::clone(&entry.recounting),
                    );
                    tokio::spawn(async move {
                        if let Ok(n) = count_embedded(&pool, &table, Some(c)).await {
                            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(n);
                        }
                        flag.store(false, Ordering::Release);
                    });
                }
                Ok((documents, c.embedded))
            }
            None => {
                let n = count_embedded(&self.pool, &table, None).await?;
                *entry
                    .embedded
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(n);
                Ok((documents, n.embedded))
            }
        }
    }

    /// The collections served, with counts.
    ///
    /// # Errors
    /// Database errors while counting.
    #[instrument(level = "debug", skip_all, fields(tenant = %caller.principal.tenant, request_id = %caller.request_id))]
    /// Only the collections the caller's policy grants are listed, each with
    /// only the fields the caller sees.
    pub async fn collections(&self, caller: &Caller) -> Result<Vec<CollectionInfo>> {
        let mut out = Vec::new();
        for entry in &self.entries {
            let Some(visible) = caller.grant.collection_fields(&entry.collection.name) else {
                continue;
            };
            let (documents, embedded_documents) = self.counts(entry).await?;
            let collection = match visible {
                Access::All => Arc::clone(&entry.collection),
                Access::Only(_) => {
                    let mut shown = Collection::clone(&entry.collection);
                    shown.text.retain(|f| visible.allows(&f.name));
                    shown.filters.retain(|f| visible.allows(&f.name));
                    shown.stored.retain(|f| visible.allows(&f.name));
                    Arc::new(shown)
                }
            };
            out.push(CollectionInfo {
                collection,
                documents,
                embedded_documents,
                embedding_model: entry.embedding_model.clone(),
            });
        }
        Ok(out)
    }

    /// Runs a search (see the module docs for the modes).
    ///
    /// # Errors
    /// [`SearchError::InvalidArgument`] naming the field: `collection`
    /// (unknown), `query` (empty, too long, or nothing searchable in bm25
    /// mode), `k` (above `max_k`), `fields[i]` (unknown), `filter…`;
    /// [`SearchError::Forbidden`] for a collection the caller's policy does
    /// not grant and [`SearchError::FieldForbidden`] for a hidden field in
    /// `fields` or the filter, or when no text field is visible;
    /// [`SearchError::FailedPrecondition`] for vector mode without an
    /// embedder; [`SearchError::Unavailable`] when the database or embedder
    /// cannot be reached.
    #[instrument(level = "debug", skip_all, fields(tenant = %caller.principal.tenant, request_id = %caller.request_id))]
    pub async fn search(&self, caller: &Caller, request: SearchRequest) -> Result<SearchResponse> {
        let visible = self.visible(caller, &request)?;
        let request = self.tenanted(caller, request)?;
        let _share = self.shares.acquire(&caller.principal.tenant).await?;
        self.search_inner(request, None, &visible).await
    }

    /// Runs a search like [`SearchTool::search`] with `query_vector` as the
    /// query's embedding: the embedder is not called (the response's
    /// `embed_ms` is 0), and vector and hybrid modes run even without an
    /// embedder. `request.query` is still what BM25 (and a reranker) sees.
    ///
    /// # Errors
    /// As [`SearchTool::search`], and [`SearchError::InvalidArgument`] on
    /// `query_vector` when its length is not the collection's recorded
    /// embedding dimension (or the collection has no vectors), or when a
    /// component is not finite.
    #[instrument(level = "debug", skip_all, fields(tenant = %caller.principal.tenant, request_id = %caller.request_id))]
    pub async fn search_with_query_vector(
        &self,
        caller: &Caller,
        request: SearchRequest,
        query_vector: Vec<f32>,
    ) -> Result<SearchResponse> {
        let visible = self.visible(caller, &request)?;
        let request = self.tenanted(caller, request)?;
        let _share = self.shares.acquire(&caller.principal.tenant).await?;
        self.search_inner(request, Some(query_vector), &visible)
            .await
    }

    /// The fields of `request.collection` the caller sees, once the request
    /// is found to use no other (its `fields` and its own filter; the
    /// tenant filter is added later, by the server).
    fn visible(&self, caller: &Caller, request: &SearchRequest) -> Result<Access> {
        let Some(visible) = caller.grant.collection_fields(&request.collection) else {
            return Err(SearchError::Forbidden(request.collection.clone()));
        };
        if visible == Access::All {
            return Ok(visible);
        }
        let collection = &self.entry(&request.collection)?.collection;
        let has = |name: &str| {
            collection.text_field(name).is_some()
                || collection.filter_field(name).is_some()
                || collection.stored_field(name).is_some()
        };
        let hidden = |name: &str| has(name) && !visible.allows(name);
        let refuse = |at: String, name: &str| SearchError::FieldForbidden {
            at,
            message: format!(
                "field {name:?} of collection {} is not available to your roles",
                collection.name
            ),
        };
        if let Some((i, name)) = request.fields.iter().enumerate().find(|(_, n)| hidden(n)) {
            return Err(refuse(format!("fields[{i}]"), name));
        }
        if let Some(filter) = &request.filter
            && let Some((at, name)) = hidden_filter_field(filter, "filter", 1, &hidden)
        {
            return Err(refuse(at, &name));
        }
        Ok(visible)
    }

    /// `request` limited to the caller's tenant when its collection has a
    /// `tenant_filter` (the caller's own filter kept, and-ed with it).
    fn tenanted(&self, caller: &Caller, mut request: SearchRequest) -> Result<SearchRequest> {
        let entry = self.entry(&request.collection)?;
        if let Some(field) = &entry.tenant_filter
            && !caller.grant.is_unrestricted()
        {
            let tenant = Filter::Eq {
                field: field.clone(),
                value: crate::filter::Value::Text(caller.principal.tenant.clone()),
            };
            request.filter = Some(match request.filter.take() {
                Some(own) => Filter::And(vec![tenant, own]),
                None => tenant,
            });
        }
        Ok(request)
    }

    async fn search_inner(
        &self,
        request: SearchRequest,
        query_vector: Option<Vec<f32>>,
        visible: &Access,
    ) -> Result<SearchResponse> {
        let started = Instant::now();
        let entry = self.entry(&request.collection)?;
        let collection = &entry.collection;
        let searched: Vec<String> = collection
            .text
            .iter()
            .filter(|f| visible.allows(&f.name))
            .map(|f| f.name.clone())
            .collect();
        if searched.is_empty() {
            return Err(SearchError::FieldForbidden {
                at: "collection".into(),
                message: format!(
                    "no text field of collection {} is available to your roles",
                    collection.name
                ),
            });
        }
        if let Some(v) = &query_vector {
            match entry.embedding_dimension {
                None => {
                    return Err(SearchError::invalid(
                        "query_vector",
                        format!(
                            "collection {} has no recorded embedding dimension (no vectors)",
                            collection.name
                        ),
                    ));
                }
                Some(d) if d != v.len() => {
                    return Err(SearchError::invalid(
                        "query_vector",
                        format!(
                            "{} dimensions; collection {} has {d}",
                            v.len(),
                            collection.name
                        ),
                    ));
                }
                Some(_) => {}
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(SearchError::invalid(
                    "query_vector",
                    format!("component {i} is not a finite number"),
                ));
            }
        }
        let k = if request.k == 0 { DEFAULT_K } else { request.k };
        if k > self.config.max_k {
            return Err(SearchError::invalid(
                "k",
                format!("{k} is above the limit of {}", self.config.max_k),
            ));
        }
        let fields = self.requested_fields(collection, &request.fields, visible)?;
        let filter = match &request.filter {
            Some(f) => f.validate(collection)?,
            None => CheckedFilter::all(),
        };
        if request.query.trim().is_empty() {
            return Err(SearchError::invalid("query", "must not be empty"));
        }
        if request.query.len() > MAX_QUERY_BYTES {
            return Err(SearchError::invalid(
                "query",
                format!("{} bytes; at most {MAX_QUERY_BYTES}", request.query.len()),
            ));
        }
        let has_terms = !analyse(&request.query).is_empty();
        let can_vector = query_vector.is_some() || self.embedder.is_some();
        let mode = match (request.mode, can_vector) {
            (Mode::Vector, false) => {
                return Err(SearchError::FailedPrecondition(
                    "vector search needs an embedder; none is configured".into(),
                ));
            }
            (Mode::Hybrid, false) => Mode::Bm25,
            (Mode::Hybrid, true) if !has_terms => Mode::Vector,
            (mode, _) => mode,
        };
        if mode == Mode::Bm25 && !has_terms {
            return Err(SearchError::invalid(
                "query",
                "no searchable words (only stop words and punctuation); bm25 needs some",
            ));
        }
        // fusion wants each retriever's `candidates`; a single retriever's
        // own top k is already the answer
        let candidates = if mode == Mode::Hybrid {
            self.config.candidates.max(k)
        } else {
            k
        };
        let run_bm25 = matches!(mode, Mode::Bm25 | Mode::Hybrid);
        let run_vector = matches!(mode, Mode::Vector | Mode::Hybrid);

        let bm25 = async {
            if !run_bm25 {
                return Ok(Vec::new());
            }
            let index = Arc::clone(&entry.index);
            let query = request.query.clone();
            let filter = filter.clone();
            let searched = searched.clone();
            let hits = tokio::task::spawn_blocking(move || {
                index.search_bm25(&query, &filter, candidates, &searched)
            })
            .await??;
            Ok::<_, SearchError>(
                hits.into_iter()
                    .map(|h| (h.key, f64::from(h.score)))
                    .collect::<Vec<_>>(),
            )
        };
        let vector = async {
            if !run_vector {
                return Ok((Vec::new(), false, 0.0));
            }
            let (query_vector, embed_ms) = match (query_vector, self.embedder.as_ref()) {
                (Some(v), _) => (v, 0.0),
                (None, Some(embedder)) => {
                    let embed_started = Instant::now();
                    let mut vectors = embedder
                        .embed(vec![request.query.clone()])
                        .await
                        .map_err(|e| SearchError::Unavailable(format!("embedder: {e}")))?;
                    let embed_ms = embed_started.elapsed().as_secs_f64() * 1000.0;
                    let Some(v) = vectors.pop() else {
                        return Err(SearchError::Unavailable(
                            "embedder returned no vector".into(),
                        ));
                    };
                    (v, embed_ms)
                }
                // `can_vector` above: a vector mode has one or the other.
                (None, None) => return Ok((Vec::new(), false, 0.0)),
            };
            let options = VectorOptions {
                exact_threshold: self.config.exact_threshold,
                survivors: if mode == Mode::Hybrid {
                    Survivors::Fusion {
                        margin: self.config.hybrid_filter_margin,
                    }
                } else {
                    Survivors::Recall
                },
                ..VectorOptions::default()
            };
            let client = quarry_db::checkout(&self.pool, "search").await?;
            let result = vector::search(
                &client,
                collection,
                &pgvector::Vector::from(query_vector),
                &filter,
                candidates,
                k,
                &options,
                &searched,
            )
            .await?;
            let hits = result
                .hits
                .into_iter()
                .map(|h| (h.key, 1.0 - h.distance))
                .collect::<Vec<_>>();
            Ok::<_, SearchError>((hits, result.path.is_exact(), embed_ms))
        };
        let (bm25, vector) = futures::join!(bm25, vector);
        let bm25 = bm25?;
        let (vector, exact, embed_ms) = vector?;
        let (documents, embedded_documents) = self.counts(entry).await?;

        // the vector side speaks for the embedded share of the collection
        let vector_weight =
            coverage_weight(self.config.vector_weight, documents, embedded_documents);
        let mut fused = fuse(
            &bm25,
            &vector,
            self.config.bm25_weight,
            vector_weight,
            self.config.rrf_k,
        );
        // partly embedded: BM25 candidates without a vector keep their place
        if mode == Mode::Hybrid
            && embedded_documents < documents
            && !bm25.is_empty()
            && !vector.is_empty()
        {
            let embedded = self.embedded_keys(entry, &bm25).await?;
            fused = keep_unembedded_in_place(fused, &bm25, &embedded);
        }
        let mut hits: Vec<Hit> = fused
            .into_iter()
            .map(|h| Hit {
                score: match mode {
                    Mode::Hybrid => h.score,
                    Mode::Bm25 => h.bm25.map_or(0.0, |s| s.score),
                    Mode::Vector => h.vector.map_or(0.0, |s| s.score),
                },
                key: h.key,
                bm25: h.bm25,
                vector: h.vector,
                fields: BTreeMap::new(),
            })
            .collect();
        if let Some(reranker) = &self.reranker {
            let mut with_text = fields.clone();
            for name in &searched {
                if !with_text.contains(name) {
                    with_text.push(name.clone());
                }
            }
            self.fetch_fields(collection, &with_text, &mut hits).await?;
            hits = reranker.rerank(request.query.clone(), hits).await?;
            hits.truncate(k);
            for hit in &mut hits {
                hit.fields.retain(|name, _| fields.contains(name));
            }
        } else {
            hits.truncate(k);
            self.fetch_fields(collection, &fields, &mut hits).await?;
        }
        Ok(SearchResponse {
            hits,
            mode,
            exact_vector_search: run_vector && exact,
            documents,
            embedded_documents,
            embed_ms,
            total_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The fields to return: `fields`, or when empty every stored field
    /// `visible` shows (hidden fields named in `fields` were refused by
    /// [`SearchTool::visible`]).
    fn requested_fields(
        &self,
        collection: &Collection,
        fields: &[String],
        visible: &Access,
    ) -> Result<Vec<String>> {
        if fields.is_empty() {
            return Ok(collection
                .stored
                .iter()
                .filter(|f| visible.allows(&f.name))
                .map(|f| f.name.clone())
                .collect());
        }
        let mut out = Vec::new();
        for (i, name) in fields.iter().enumerate() {
            if collection.text_field(name).is_none()
                && collection.filter_field(name).is_none()
                && collection.stored_field(name).is_none()
            {
                return Err(SearchError::invalid(
                    format!("fields[{i}]"),
                    format!("unknown field {name:?} in collection {}", collection.name),
                ));
            }
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        Ok(out)
    }

    /// Fills `fields` of `hits` from the sidecar in one query.
    async fn fetch_fields(
        &self,
        collection: &Collection,
        fields: &[String],
        hits: &mut [Hit],
    ) -> Result<()> {
        if fields.is_empty() || hits.is_empty() {
            return Ok(());
        }
        let mut exprs = vec!["key".to_owned()];
        for name in fields {
            exprs.push(if collection.text_field(name).is_some() {
                quote_ident(&text_column(name))
            } else if collection.filter_field(name).is_some() {
                quote_ident(&filter_column(name))
            } else {
                format!("stored -> {}", quote_literal(name))
            });
        }
        let keys: Vec<&str> = hits.iter().map(|h| h.key.as_str()).collect();
        let client = quarry_db::checkout(&self.pool, "search").await?;
        // prepared once per connection (the text depends on the fields only)
        let statement = client
            .prepare_cached(&format!(
                "SELECT {} FROM {} WHERE key = ANY($1)",
                exprs.join(", "),
                collection.docs_table()
            ))
            .await?;
        let rows = client.query(&statement, &[&keys]).await?;
        let mut by_key = std::collections::HashMap::new();
        for row in &rows {
            let key: String = row.try_get(0)?;
            let mut values = BTreeMap::new();
            for (i, name) in fields.iter().enumerate() {
                let at = i + 1;
                let value = if collection.text_field(name).is_some() {
                    row.try_get::<_, Option<String>>(at)?
                        .map_or(FieldData::Null, FieldData::Text)
                } else if let Some(f) = collection.filter_field(name) {
                    match f.kind {
                        FilterType::Keyword => row
                            .try_get::<_, Option<String>>(at)?
                            .map_or(FieldData::Null, FieldData::Text),
                        FilterType::Keywords => row
                            .try_get::<_, Option<Vec<Option<String>>>>(at)?
                            .map_or(FieldData::Null, |v| {
                                FieldData::Texts(v.into_iter().flatten().collect())
                            }),
                        FilterType::Integer => row
                            .try_get::<_, Option<i64>>(at)?
                            .map_or(FieldData::Null, FieldData::Int),
                        FilterType::Float => row
                            .try_get::<_, Option<f64>>(at)?
                            .map_or(FieldData::Null, FieldData::Float),
                    }
                } else {
                    json_field(row.try_get::<_, Option<serde_json::Value>>(at)?)
                };
                values.insert(name.clone(), value);
            }
            by_key.insert(key, values);
        }
        for hit in hits {
            if let Some(values) = by_key.remove(&hit.key) {
                hit.fields.extend(values);
            }
        }
        Ok(())
    }
}

fn json_field(value: Option<serde_json::Value>) -> FieldData {
    match value {
        None | Some(serde_json::Value::Null) => FieldData::Null,
        Some(serde_json::Value::String(s)) => FieldData::Text(s),
        Some(serde_json::Value::Number(n)) => match n.as_i64() {
            Some(i) => FieldData::Int(i),
            None => n.as_f64().map_or(
                FieldData::Json(serde_json::Value::Number(n.clone())),
                FieldData::Float,
            ),
        },
        Some(other) => FieldData::Json(other),
    }
}

/// The path and name of the first field of `filter` (found at `path`)
/// that `hidden` says the caller may not use; paths as
/// [`Filter::validate`] names them (`filter.and[1].eq.field`). Nesting
/// beyond [`MAX_DEPTH`] is not walked: validation refuses it.
fn hidden_filter_field(
    filter: &Filter,
    path: &str,
    depth: usize,
    hidden: &dyn Fn(&str) -> bool,
) -> Option<(String, String)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (op, field) = match filter {
        Filter::Eq { field, .. } => ("eq", field),
        Filter::In { field, .. } => ("in", field),
        Filter::Range { field, .. } => ("range", field),
        Filter::Prefix { field, .. } => ("prefix", field),
        Filter::And(list) | Filter::Or(list) => {
            let op = if matches!(filter, Filter::And(_)) {
                "and"
            } else {
                "or"
            };
            return list.iter().enumerate().find_map(|(i, f)| {
                hidden_filter_field(f, &format!("{path}.{op}[{i}]"), depth + 1, hidden)
            });
        }
        Filter::Not(inner) => {
            return hidden_filter_field(inner, &format!("{path}.not"), depth + 1, hidden);
        }
    };
    hidden(field).then(|| (format!("{path}.{op}.field"), field.clone()))
}
