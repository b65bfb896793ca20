//! `quarry bench search`: search latency per mode (bm25, vector, hybrid) ×
//! filter (none, about 10 %, about 1 %), k = 10, queries run one after the
//! other through [`SearchTool`] exactly as the gRPC service runs them.
//!
//! Query embedding is excluded from the search latencies: query vectors are
//! computed first (timed apart, per query, with the collection's embedder)
//! and passed with [`SearchTool::search_with_query_vector`]. A synthetic
//! collection has no model: its query vectors are generated.
//!
//! Also measured: BM25 indexing (the tantivy index rebuilt from the sidecar,
//! documents per second) and, for a configured collection, document
//! embedding throughput (the sync's [`Syncer::embed_pending`] for a bounded
//! time; vector and hybrid latencies then cover the documents embedded so
//! far, reported as coverage).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use quarry_llm::embed::Embedder;
use quarry_search::collection::{Collection, CollectionConfig};
use quarry_search::filter::{CheckedFilter, Filter};
use quarry_search::index::analyse;
use quarry_search::vector::VectorOptions;
use quarry_search::{Mode, SearchConfig, SearchError, SearchRequest, SearchTool, Value};
use quarry_search_sync::{SyncConfig, Syncer};
use std::ops::Bound;

use super::synthetic::{self, Generator, LoadTimings, SyntheticSpec};
use super::{Latencies, LatencySummary, progress, round3};

/// What to search.
#[derive(Debug, Clone)]
pub enum BenchSource {
    /// The synthetic collection of this many documents
    /// ([`synthetic::load`]; reused when loaded before).
    Synthetic {
        /// Documents.
        docs: u64,
    },
    /// A configured collection over a real source table, synced (backfilled
    /// and partly embedded) first.
    Collection {
        /// Its definition.
        config: CollectionConfig,
    },
}

/// Settings of a run.
#[derive(Clone)]
pub struct SearchBenchOptions {
    /// The database.
    pub database_url: String,
    /// Where the benchmark's tantivy indexes are kept.
    pub index_dir: PathBuf,
    /// Rebuild the tantivy index from scratch (and report BM25 indexing
    /// throughput); otherwise an up-to-date index is reused.
    pub reindex: bool,
    /// What to search.
    pub source: BenchSource,
    /// Search settings (RRF, candidates, exact threshold); the collections
    /// and index directory are replaced.
    pub search: SearchConfig,
    /// Sync settings for a configured collection.
    pub sync: SyncConfig,
    /// Embedder of a configured collection (documents and queries).
    pub embedder: Option<Arc<dyn Embedder>>,
    /// How long to embed pending documents of a configured collection
    /// before measuring (0: not at all).
    pub embed_for: Duration,
    /// Timed queries per mode and filter.
    pub queries: usize,
    /// Untimed queries run first per mode and filter.
    pub warmup: usize,
    /// Hits per query.
    pub k: usize,
    /// Timed vector- and hybrid-mode queries also answered with exact
    /// vector search for recall@k (the first this many; 0: no recall
    /// figure).
    pub recall_queries: usize,
    /// Modes measured.
    pub modes: Vec<Mode>,
    /// Progress messages on stderr.
    pub progress: bool,
}

impl std::fmt::Debug for SearchBenchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchBenchOptions")
            .field("source", &self.source)
            .field("queries", &self.queries)
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

/// A filter measured, with the share of documents it keeps.
#[derive(Debug, Clone)]
pub struct BenchFilter {
    /// Short label, e.g. `10%` or `none`.
    pub label: String,
    /// Human description, e.g. `bucket < 1000`.
    pub description: String,
    /// The filter (`None`: every document).
    pub filter: Option<Filter>,
    /// The same condition over the sidecar's columns, to measure selectivity.
    sql: String,
}

/// Throughput of a bulk step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throughput {
    /// Documents processed.
    pub docs: u64,
    /// Seconds taken.
    pub seconds: f64,
}

impl Throughput {
    /// Documents per second (0 when nothing was timed).
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.docs as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "docs": self.docs,
            "seconds": round3(self.seconds),
            "docs_per_second": round3(self.per_second()),
        })
    }
}

/// One measured mode × filter.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// Mode.
    pub mode: Mode,
    /// Filter label.
    pub filter: String,
    /// Share of documents the filter keeps, in `[0, 1]`.
    pub selectivity: f64,
    /// Latency of [`SearchTool::search_with_query_vector`], wall clock,
    /// query embedding excluded.
    pub latency: LatencySummary,
    /// Queries whose vector retriever ran exactly (the rest used HNSW).
    pub exact: u64,
    /// Queries refused because BM25 found no searchable word (not timed).
    pub skipped: u64,
    /// Mean hits returned.
    pub mean_hits: f64,
    /// Vector and hybrid modes: recall@k against the answer with exact
    /// vector search (see [`recall_at_k`]), mean over the first
    /// [`SearchBenchOptions::recall_queries`] timed queries (`None`
    /// otherwise).
    pub recall: Option<f64>,
}

/// The results of a run.
#[derive(Debug, Clone)]
pub struct SearchBenchReport {
    /// Collection searched.
    pub collection: String,
    /// Documents searchable by BM25.
    pub documents: u64,
    /// Documents with current vectors.
    pub embedded_documents: u64,
    /// The synthetic load (`None` for a configured collection).
    pub load: Option<LoadTimings>,
    /// Source → sidecar backfill of a configured collection (text only).
    pub backfill: Option<Throughput>,
    /// BM25 index build from the sidecar (`None` when an index was reused).
    pub bm25_indexing: Option<Throughput>,
    /// Document embedding through the sync (`None` when nothing was embedded).
    pub embedding: Option<Throughput>,
    /// Model of the query vectors (`synthetic-…` for generated ones).
    pub query_vector_model: Option<String>,
    /// Query embedding latency, one query per call (`None` for synthetic).
    pub query_embedding: Option<LatencySummary>,
    /// Query embedding latency measured while the sync embedded documents
    /// (see [`embed_while_probing_queries`]; `None` when nothing was
    /// pending or no embedding was asked for).
    pub query_embedding_while_syncing: Option<LatencySummary>,
    /// Filters measured.
    pub filters: Vec<BenchFilter>,
    /// Results per mode × filter.
    pub rows: Vec<BenchRow>,
    /// Hits per query.
    pub k: usize,
}

/// A query: text and, when available, its vector.
struct BenchQuery {
    text: String,
    vector: Option<Vec<f32>>,
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Bm25 => "bm25",
        Mode::Vector => "vector",
        Mode::Hybrid => "hybrid",
    }
}

fn int_range(field: &str, lower: Option<i64>, upper_excl: Option<i64>) -> Filter {
    Filter::Range {
        field: field.to_owned(),
        lower: lower.map_or(Bound::Unbounded, |v| Bound::Included(Value::Int(v))),
        upper: upper_excl.map_or(Bound::Unbounded, |v| Bound::Excluded(Value::Int(v))),
    }
}

fn no_filter() -> BenchFilter {
    BenchFilter {
        label: "none".into(),
        description: "every document".into(),
        filter: None,
        sql: "true".into(),
    }
}

/// The synthetic collection's filters: `bucket < 1000` (10 %), `bucket <
/// 100` (1 %).
pub fn synthetic_filters() -> Vec<BenchFilter> {
    vec![
        no_filter(),
        BenchFilter {
            label: "10%".into(),
            description: "bucket < 1000".into(),
            filter: Some(int_range("bucket", None, Some(1000))),
            sql: "f_bucket < 1000".into(),
        },
        BenchFilter {
            label: "1%".into(),
            description: "bucket < 100".into(),
            filter: Some(int_range("bucket", None, Some(100))),
            sql: "f_bucket < 100".into(),
        },
    ]
}

/// Filters for a configured collection: Tate's `artworks` (fields
/// `acquisition_year` and `classification`) gets acquisition in the 1970s
/// (about 9 %) and classification `installation` (about 0.8 %); any other
/// collection is measured without a filter only.
pub fn collection_filters(collection: &Collection) -> Vec<BenchFilter> {
    let mut out = vec![no_filter()];
    if collection.filter_field("acquisition_year").is_some() {
        out.push(BenchFilter {
            label: "10%".into(),
            description: "acquisition_year in 1970..=1979".into(),
            filter: Some(int_range("acquisition_year", Some(1970), Some(1980))),
            sql: "f_acquisition_year >= 1970 AND f_acquisition_year < 1980".into(),
        });
    }
    if collection.filter_field("classification").is_some() {
        out.push(BenchFilter {
            label: "1%".into(),
            description: "classification = installation".into(),
            filter: Some(Filter::Eq {
                field: "classification".into(),
                value: Value::Text("installation".into()),
            }),
            sql: "f_classification = 'installation'".into(),
        });
    }
    out
}

/// Tate's `artworks` collection as the issue defines it: text `title`,
/// `medium`, `credit_line`, `inscription`; filters `acquisition_year`
/// (integer), `classification` (keyword) and `artist` (keywords, the
/// contributors' names in order).
///
/// # Errors
/// Never in practice (the definition is fixed).
pub fn tate_artworks_config() -> anyhow::Result<CollectionConfig> {
    Ok(serde_json::from_value(serde_json::json!({
        "name": "artworks",
        "source": "tate.artworks",
        "key": "id",
        "text": [
            { "name": "title" },
            { "name": "medium" },
            { "name": "credit_line" },
            { "name": "inscription" },
        ],
        "filters": [
            { "name": "acquisition_year", "type": "integer" },
            { "name": "classification", "type": "keyword" },
            {
                "name": "artist",
                "type": "keywords",
                "sql": "ARRAY(SELECT a.name FROM tate.artwork_contributors c JOIN tate.artists a ON a.id = c.artist_id WHERE c.artwork_id = src.id ORDER BY c.position)",
            },
        ],
        "dependents": [
            { "table": "tate.artwork_contributors", "key_column": "artwork_id" },
        ],
    }))?)
}

/// Runs the benchmark.
///
/// # Errors
/// Database, sync, index and embedder errors; a search failing other than
/// for a query without searchable words.
pub async fn run_search_bench(options: &SearchBenchOptions) -> anyhow::Result<SearchBenchReport> {
    let pool = quarry_db::pool(&options.database_url, 4, Duration::from_secs(60))?;
    let mut report = SearchBenchReport {
        collection: String::new(),
        documents: 0,
        embedded_documents: 0,
        load: None,
        backfill: None,
        bm25_indexing: None,
        embedding: None,
        query_vector_model: None,
        query_embedding: None,
        query_embedding_while_syncing: None,
        filters: Vec::new(),
        rows: Vec::new(),
        k: options.k,
    };
    let wanted = options.warmup + options.queries;
    let (config, embedder, queries) = match &options.source {
        BenchSource::Synthetic { docs } => {
            let generator = Arc::new(Generator::new(SyntheticSpec::new(*docs)));
            let (mut client, connection) =
                tokio_postgres::connect(&options.database_url, tokio_postgres::NoTls)
                    .await
                    .context("connecting to the database")?;
            let connection = tokio::spawn(connection);
            progress(
                options.progress,
                format!("loading synthetic_{docs} (reused when complete)"),
            );
            let on = options.progress;
            let mut last = Instant::now();
            let timings = synthetic::load(&mut client, Arc::clone(&generator), |done| {
                if on && last.elapsed() > Duration::from_secs(10) {
                    last = Instant::now();
                    eprintln!("bench: {done}/{docs} documents written");
                }
            })
            .await
            .context("loading the synthetic collection")?;
            drop(client);
            let _ = connection.await;
            progress(
                options.progress,
                format!(
                    "load: reused {}, copy {:.1}s, HNSW build {:.1}s",
                    timings.reused,
                    timings.copy.as_secs_f64(),
                    timings.hnsw.as_secs_f64()
                ),
            );
            report.load = Some(timings);
            report.filters = synthetic_filters();
            report.query_vector_model = Some(synthetic::SYNTHETIC_MODEL.to_owned());
            let g = Arc::clone(&generator);
            let queries = tokio::task::spawn_blocking(move || {
                (0..wanted as u64)
                    .map(|n| {
                        let q = g.query(n);
                        BenchQuery {
                            text: q.text,
                            vector: Some(q.vector),
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
            (generator.spec().collection_config()?, None, queries)
        }
        BenchSource::Collection { config } => {
            let collection = Arc::new(Collection::from_config(config, "collection")?);
            report.filters = collection_filters(&collection);
            let syncer = Syncer::new(
                pool.clone(),
                options.database_url.clone(),
                Arc::clone(&collection),
                options.embedder.clone(),
                options.sync.clone(),
            );
            syncer.install().await.context("sync install")?;
            let before = syncer.status().await.context("sync status")?;
            if !before.backfill_done {
                progress(options.progress, "backfilling the sidecar (text only)");
                let started = Instant::now();
                let backfill = syncer.backfill(|_| {}).await.context("backfill")?;
                report.backfill = Some(Throughput {
                    docs: backfill.rows,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            syncer.drain_outbox().await.context("sync outbox")?;
            let mut queries = sample_queries(&pool, &collection, wanted).await?;
            if let Some(embedder) = options
                .embedder
                .as_ref()
                .filter(|_| !options.embed_for.is_zero())
            {
                let (embedding, while_syncing) = embed_while_probing_queries(
                    &syncer,
                    embedder.as_ref(),
                    &queries,
                    options.embed_for,
                    options.progress,
                )
                .await?;
                report.embedding = embedding;
                report.query_embedding_while_syncing = while_syncing;
            }
            if let Some(embedder) = &options.embedder {
                progress(
                    options.progress,
                    format!("embedding {} query texts, one per call", queries.len()),
                );
                let mut latencies = Latencies::new()?;
                for q in &mut queries {
                    let started = Instant::now();
                    let mut v = embedder
                        .embed(vec![q.text.clone()])
                        .await
                        .map_err(|e| anyhow::anyhow!("embedding a query: {e}"))?;
                    latencies.record(started.elapsed());
                    q.vector = v.pop();
                }
                report.query_embedding = Some(latencies.summary());
                report.query_vector_model = Some(embedder.model_id().to_owned());
            }
            (config.clone(), options.embedder.clone(), queries)
        }
    };
    report.collection = config.name.clone();

    if options.reindex {
        let dir = options.index_dir.join(&config.name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let search = SearchConfig {
        index_dir: options.index_dir.clone(),
        collections: vec![config.clone()],
        ..options.search.clone()
    };
    let tool = SearchTool::open(pool.clone(), options.database_url.clone(), search, embedder)
        .await
        .context("opening the search tool")?;
    let before = collection_counts(&tool).await?.0;
    progress(options.progress, "catching up the tantivy index");
    let started = Instant::now();
    tool.catch_up().await.context("indexing")?;
    let seconds = started.elapsed().as_secs_f64();
    let (documents, embedded_documents) = collection_counts(&tool).await?;
    if documents > before {
        report.bm25_indexing = Some(Throughput {
            docs: documents - before,
            seconds,
        });
    }
    report.documents = documents;
    report.embedded_documents = embedded_documents;

    let collection = Collection::from_config(&config, "collection")?;
    let client = pool.get().await?;
    let docs_table = collection.docs_table();
    let filters = std::mem::take(&mut report.filters);
    let mut selectivities = Vec::new();
    for f in &filters {
        let share: f64 = client
            .query_one(
                &format!(
                    "SELECT coalesce((count(*) FILTER (WHERE {}))::float8 / nullif(count(*), 0), 0) FROM {docs_table} WHERE NOT deleted",
                    f.sql
                ),
                &[],
            )
            .await?
            .get(0);
        selectivities.push(share);
    }
    drop(client);

    let has_vectors = embedded_documents > 0 && queries.iter().all(|q| q.vector.is_some());
    for &mode in &options.modes {
        if mode != Mode::Bm25 && !has_vectors {
            progress(
                options.progress,
                format!("skipping {}: no vectors", mode_name(mode)),
            );
            continue;
        }
        for (f, &selectivity) in filters.iter().zip(&selectivities) {
            progress(
                options.progress,
                format!("{} × filter {}", mode_name(mode), f.label),
            );
            let row = measure(&tool, &pool, &collection, mode, f, &queries, options).await?;
            report.rows.push(BenchRow { selectivity, ..row });
        }
    }
    report.filters = filters;
    Ok(report)
}

async fn collection_counts(tool: &SearchTool) -> anyhow::Result<(u64, u64)> {
    let info = tool
        .collections(&crate::local_caller("quarry bench search"))
        .await?;
    Ok(info
        .first()
        .map_or((0, 0), |c| (c.documents, c.embedded_documents)))
}

/// `n` query texts: the first text field of documents in a fixed
/// pseudo-random order (`md5(key)`), keeping only texts with a searchable
/// word; cycled when the collection has fewer.
/// Pause between two probe questions in [`embed_while_probing_queries`]:
/// questions arrive now and then, not back to back (which would leave the
/// documents no CPU at all). Quarry's choice.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// Runs the sync's [`Syncer::embed_pending`] for at most `embed_for` and,
/// meanwhile, embeds one query text per call ([`Embedder::embed`], the
/// question lane) every [`PROBE_INTERVAL`], timing each call: how long a
/// question waits for its vector while documents are being embedded
/// (issue 18 item 4: p99 ≤ 50 ms). Probes start once the first documents
/// are being embedded and stop when the sync does; each probe text is made
/// unique (a counter appended) so an embedding cache cannot answer it.
///
/// Returns document throughput (`None` when nothing was embedded) and the
/// probe latencies (`None` when no probe ran).
///
/// # Errors
/// Sync status, embedding and probe failures.
async fn embed_while_probing_queries(
    syncer: &Syncer,
    embedder: &dyn Embedder,
    queries: &[BenchQuery],
    embed_for: Duration,
    show: bool,
) -> anyhow::Result<(Option<Throughput>, Option<LatencySummary>)> {
    let before = syncer.status().await.context("sync status")?;
    let pending = before.docs.saturating_sub(before.embedded);
    if pending == 0 || queries.is_empty() {
        return Ok((None, None));
    }
    progress(
        show,
        format!(
            "embedding pending documents for at most {}s ({pending} pending), \
             embedding a query every {} ms meanwhile",
            embed_for.as_secs(),
            PROBE_INTERVAL.as_millis()
        ),
    );
    let done = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let sync = async {
        // Cancellation-safe: each round is a transaction.
        let result = tokio::time::timeout(embed_for, syncer.embed_pending()).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(result) => result.map(|_| ()).context("embedding"),
            Err(_elapsed) => Ok(()),
        }
    };
    let probe = async {
        let mut latencies = Latencies::new()?;
        // let the sync read its first round and start its forward passes
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut n = 0_usize;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let text = format!("{} {n}", queries[n % queries.len()].text);
            let asked = Instant::now();
            embedder
                .embed(vec![text])
                .await
                .map_err(|e| anyhow::anyhow!("embedding a query: {e}"))?;
            latencies.record(asked.elapsed());
            n += 1;
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        anyhow::Ok((n > 0).then(|| latencies.summary()))
    };
    let (synced, probed) = tokio::join!(sync, probe);
    synced?;
    let probed = probed?;
    let seconds = started.elapsed().as_secs_f64();
    let after = syncer.status().await.context("sync status")?;
    let docs = after.embedded.saturating_sub(before.embedded);
    Ok(((docs > 0).then_some(Throughput { docs, seconds }), probed))
}

async fn sample_queries(
    pool: &deadpool_postgres::Pool,
    collection: &Collection,
    n: usize,
) -> anyhow::Result<Vec<BenchQuery>> {
    let Some(field) = collection.text.first() else {
        anyhow::bail!("collection {} has no text field", collection.name);
    };
    let column = quarry_db::quote_ident(&quarry_search::collection::text_column(&field.name));
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {column} FROM {} WHERE NOT deleted AND {column} IS NOT NULL ORDER BY md5(key) LIMIT $1",
                collection.docs_table()
            ),
            &[&i64::try_from(n.saturating_mul(2)).unwrap_or(i64::MAX)],
        )
        .await?;
    let texts: Vec<String> = rows
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .filter(|t| !analyse(t).is_empty())
        .collect();
    if texts.is_empty() {
        anyhow::bail!(
            "collection {} has no document text to query with",
            collection.name
        );
    }
    Ok((0..n)
        .map(|i| BenchQuery {
            text: texts[i % texts.len()].clone(),
            vector: None,
        })
        .collect())
}

async fn measure(
    tool: &SearchTool,
    pool: &deadpool_postgres::Pool,
    collection: &Collection,
    mode: Mode,
    filter: &BenchFilter,
    queries: &[BenchQuery],
    options: &SearchBenchOptions,
) -> anyhow::Result<BenchRow> {
    let mut latencies = Latencies::new()?;
    let mut exact = 0;
    let mut skipped = 0;
    let mut hits = 0usize;
    // (query, keys returned) for recall@k
    let mut to_check = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let timed = i >= options.warmup;
        let request = SearchRequest {
            collection: collection.name.clone(),
            query: q.text.clone(),
            filter: filter.filter.clone(),
            mode,
            k: options.k,
            fields: Vec::new(),
        };
        let started = Instant::now();
        let result = match (&q.vector, mode) {
            (Some(v), Mode::Vector | Mode::Hybrid) => {
                tool.search_with_query_vector(
                    &crate::local_caller("quarry bench search"),
                    request,
                    v.clone(),
                )
                .await
            }
            _ => {
                tool.search(&crate::local_caller("quarry bench search"), request)
                    .await
            }
        };
        let elapsed = started.elapsed();
        match result {
            Ok(response) => {
                if timed {
                    latencies.record(elapsed);
                    hits += response.hits.len();
                    if response.exact_vector_search {
                        exact += 1;
                    }
                    if mode != Mode::Bm25 && to_check.len() < options.recall_queries {
                        let keys: Vec<String> = response.hits.into_iter().map(|h| h.key).collect();
                        to_check.push((q, keys));
                    }
                }
            }
            Err(SearchError::InvalidArgument { field, .. }) if field == "query" => {
                if timed {
                    skipped += 1;
                }
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "{} search {:?} with filter {}: {e}",
                    mode_name(mode),
                    q.text,
                    filter.label
                ));
            }
        }
    }
    let latency = latencies.summary();
    let recall = if to_check.is_empty() {
        None
    } else {
        recall_at_k(tool, pool, collection, mode, filter, &to_check, options.k).await?
    };
    Ok(BenchRow {
        mode,
        filter: filter.label.clone(),
        selectivity: 0.0,
        latency,
        exact,
        skipped,
        mean_hits: if latency.count > 0 {
            hits as f64 / latency.count as f64
        } else {
            0.0
        },
        recall,
    })
}

/// Mean recall@k against the answer exact vector search would give:
/// vector mode against exact k-NN over the same filtered rows
/// ([`quarry_search::vector::search`] with an exact threshold no estimate
/// reaches, over every text field); hybrid mode against the fusion of the
/// same BM25 candidates with exact k-NN candidates (weights, RRF constant
/// and candidates from the tool's configuration; `None` unless every
/// document is embedded, as the fusion of a partly embedded collection
/// also keeps unembedded BM25 hits in place). The share of the reference
/// top k that came back.
async fn recall_at_k(
    tool: &SearchTool,
    pool: &deadpool_postgres::Pool,
    collection: &Collection,
    mode: Mode,
    filter: &BenchFilter,
    answers: &[(&BenchQuery, Vec<String>)],
    k: usize,
) -> anyhow::Result<Option<f64>> {
    let config = tool.config();
    let (documents, embedded) = if mode == Mode::Hybrid {
        collection_counts(tool).await?
    } else {
        (0, 0)
    };
    if embedded < documents {
        return Ok(None);
    }
    let client = pool.get().await?;
    let checked = match &filter.filter {
        Some(f) => f.validate(collection)?,
        None => CheckedFilter::all(),
    };
    let exact_only = VectorOptions {
        exact_threshold: u64::MAX,
        ..VectorOptions::default()
    };
    let fields: Vec<String> = collection.text.iter().map(|f| f.name.clone()).collect();
    let depth = if mode == Mode::Hybrid {
        config.candidates.max(k)
    } else {
        k
    };
    let mut sum = 0.0;
    for (q, keys) in answers {
        let Some(v) = &q.vector else {
            anyhow::bail!("recall@k needs query vectors");
        };
        let exact = quarry_search::vector::search(
            &client,
            collection,
            &pgvector::Vector::from(v.clone()),
            &checked,
            depth,
            depth,
            &exact_only,
            &fields,
        )
        .await?;
        let truth: Vec<String> = if mode == Mode::Hybrid {
            let bm25 = match tool
                .search(
                    &crate::local_caller("quarry bench search"),
                    SearchRequest {
                        collection: collection.name.clone(),
                        query: q.text.clone(),
                        filter: filter.filter.clone(),
                        mode: Mode::Bm25,
                        k: depth,
                        fields: Vec::new(),
                    },
                )
                .await
            {
                Ok(r) => r
                    .hits
                    .into_iter()
                    .map(|h| (h.key, h.score))
                    .collect::<Vec<_>>(),
                Err(SearchError::InvalidArgument { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            let vector: Vec<(String, f64)> = exact
                .hits
                .into_iter()
                .map(|h| (h.key, 1.0 - h.distance))
                .collect();
            quarry_search::fusion::fuse(
                &bm25,
                &vector,
                config.bm25_weight,
                quarry_search::fusion::coverage_weight(config.vector_weight, documents, embedded),
                config.rrf_k,
            )
            .into_iter()
            .take(k)
            .map(|h| h.key)
            .collect()
        } else {
            exact.hits.into_iter().map(|h| h.key).collect()
        };
        let found = truth.iter().filter(|key| keys.contains(key)).count();
        sum += if truth.is_empty() {
            1.0
        } else {
            found as f64 / truth.len() as f64
        };
    }
    Ok(Some(sum / answers.len() as f64))
}

impl BenchRow {
    /// Which vector path ran: `-` (bm25), `exact`, `hnsw` or `mixed (n exact)`.
    pub fn vector_path(&self) -> String {
        if self.mode == Mode::Bm25 {
            "-".into()
        } else if self.exact == 0 {
            "hnsw".into()
        } else if self.exact == self.latency.count {
            "exact".into()
        } else {
            format!("mixed ({} exact)", self.exact)
        }
    }
}

impl SearchBenchReport {
    /// A plain-text table with the bulk figures above it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "collection {}: {} documents, {} with vectors ({:.1} %), k = {}",
            self.collection,
            self.documents,
            self.embedded_documents,
            if self.documents > 0 {
                100.0 * self.embedded_documents as f64 / self.documents as f64
            } else {
                0.0
            },
            self.k
        );
        if let Some(load) = &self.load {
            if load.reused {
                let _ = writeln!(out, "synthetic load: reused an earlier complete load");
            } else {
                let _ = writeln!(
                    out,
                    "synthetic load: copy {:.1} s, HNSW build {:.1} s",
                    load.copy.as_secs_f64(),
                    load.hnsw.as_secs_f64()
                );
            }
        }
        for (what, t) in [
            ("backfill (source → sidecar, text)", &self.backfill),
            ("BM25 indexing (sidecar → tantivy)", &self.bm25_indexing),
            ("document embedding (sync)", &self.embedding),
        ] {
            if let Some(t) = t {
                let _ = writeln!(
                    out,
                    "{what}: {} docs in {:.1} s = {:.0} docs/s",
                    t.docs,
                    t.seconds,
                    t.per_second()
                );
            }
        }
        if let Some(q) = &self.query_embedding_while_syncing {
            let _ = writeln!(
                out,
                "query embedding while the sync embeds documents: {} queries, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                q.count, q.p50_ms, q.p99_ms, q.max_ms
            );
        }
        if let Some(q) = &self.query_embedding {
            let _ = writeln!(
                out,
                "query embedding ({}): p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms per query (excluded below)",
                self.query_vector_model.as_deref().unwrap_or("?"),
                q.p50_ms,
                q.p99_ms,
                q.mean_ms
            );
        }
        for f in &self.filters {
            let _ = writeln!(out, "filter {}: {}", f.label, f.description);
        }
        let _ = writeln!(
            out,
            "{:<7} {:<7} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8}  vector path",
            "mode",
            "filter",
            "kept",
            "n",
            "p50 ms",
            "p99 ms",
            "mean ms",
            "max ms",
            "hits",
            "recall"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<7} {:<7} {:>7.2}% {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>6.1} {:>8}  {}",
                mode_name(r.mode),
                r.filter,
                100.0 * r.selectivity,
                r.latency.count,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.latency.mean_ms,
                r.latency.max_ms,
                r.mean_hits,
                r.recall
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.3}")),
                r.vector_path()
            );
        }
        out
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "collection": self.collection,
            "documents": self.documents,
            "embedded_documents": self.embedded_documents,
            "k": self.k,
            "load": self.load.as_ref().map(|l| serde_json::json!({
                "reused": l.reused,
                "copy_seconds": round3(l.copy.as_secs_f64()),
                "hnsw_build_seconds": round3(l.hnsw.as_secs_f64()),
            })),
            "backfill": self.backfill.map(Throughput::to_json),
            "bm25_indexing": self.bm25_indexing.map(Throughput::to_json),
            "embedding": self.embedding.map(Throughput::to_json),
            "query_vector_model": self.query_vector_model,
            "query_embedding": self.query_embedding.map(|q| q.to_json()),
            "query_embedding_while_syncing": self.query_embedding_while_syncing.map(|q| q.to_json()),
            "filters": self.filters.iter().map(|f| serde_json::json!({
                "label": f.label,
                "description": f.description,
            })).collect::<Vec<_>>(),
            "rows": self.rows.iter().map(|r| serde_json::json!({
                "mode": mode_name(r.mode),
                "filter": r.filter,
                "selectivity": r.selectivity,
                "latency": r.latency.to_json(),
                "exact_vector_queries": r.exact,
                "vector_path": r.vector_path(),
                "skipped": r.skipped,
                "mean_hits": round3(r.mean_hits),
                "recall_at_k": r.recall.map(round3),
            })).collect::<Vec<_>>(),
        })
    }
}
