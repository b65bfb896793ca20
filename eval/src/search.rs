//! `quarry eval search`: the search tool measured on a BEIR-format folder
//! (see [`super::beir`]) through the real stack — corpus loaded into
//! PostgreSQL, synced into a collection's sidecar by `quarry-search-sync`
//! (embeddings included), followed into a tantivy index, and queried per
//! mode through `SearchTool` exactly as the gRPC service does.
//!
//! The corpus table, sidecar and vectors are kept between runs (keyed by a
//! hash of `corpus.jsonl`), so a second run embeds nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::pin_mut;
use quarry_llm::embed::Embedder;
use quarry_search::collection::{Collection, CollectionConfig};
use quarry_search::{Mode, SearchConfig, SearchRequest, SearchTool};
use quarry_search_sync::{SyncConfig, Syncer};
use sha2::{Digest as _, Sha256};
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::beir::{self, BeirFiles, Document};
use super::{EvalError, Result};

/// Schema holding loaded corpora.
pub const EVAL_SCHEMA: &str = "quarry_eval";

/// A loaded corpus: its source table and the collection over it.
#[derive(Debug, Clone)]
pub struct LoadedCorpus {
    /// The collection (one text field, `body` = title and text).
    pub collection: Arc<Collection>,
    /// Documents in the corpus.
    pub documents: u64,
    /// Loaded just now (false: reused from an earlier run).
    pub loaded: bool,
    /// Time spent loading.
    pub elapsed: Duration,
}

/// Short hex digest of a file's bytes, streamed.
///
/// # Errors
/// I/O errors.
pub fn file_digest(path: &Path) -> Result<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|source| EvalError::Io {
            path: path.to_owned(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The collection over `quarry_eval.beir_<digest>`: `body` is the title and
/// the text joined by a space, as BEIR's dense retrievers encode a document
/// and close to BM25 over both fields.
///
/// # Errors
/// Never for a hex digest; the collection's validation error otherwise.
pub fn corpus_collection(digest: &str) -> Result<Collection> {
    Collection::from_config(&corpus_config(digest)?, "eval")
        .map_err(|e| EvalError::Config(e.to_string()))
}

/// The configuration of [`corpus_collection`].
///
/// # Errors
/// Never in practice (a fixed JSON shape).
pub fn corpus_config(digest: &str) -> Result<CollectionConfig> {
    named_config(&format!("beir_{digest}"))
}

/// [`corpus_config`] under another name (and source table of that name).
fn named_config(name: &str) -> Result<CollectionConfig> {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "source": format!("{EVAL_SCHEMA}.{name}"),
        "key": "id",
        "text": [{ "name": "body", "sql": "concat_ws(' ', NULLIF(src.title, ''), NULLIF(src.text, ''))" }],
        "stored": [{ "name": "title" }],
    }))
    .map_err(|e| EvalError::Config(e.to_string()))
}

/// Loads `corpus.jsonl` into `quarry_eval.beir_<digest>` by binary COPY,
/// streaming (the file is never held whole), unless a complete load is
/// there already (the table's comment records the document count).
///
/// # Errors
/// I/O, dataset and database errors.
pub async fn load_corpus(client: &mut Client, files: &BeirFiles) -> Result<LoadedCorpus> {
    let started = Instant::now();
    let corpus = files.corpus.clone();
    let digest = tokio::task::spawn_blocking(move || file_digest(&corpus))
        .await
        .map_err(|e| EvalError::Worker(e.to_string()))??;
    let collection = Arc::new(corpus_collection(&digest)?);
    let table = collection.source.quoted();
    let db = |context: &str| {
        let context = context.to_owned();
        move |source| EvalError::Database { context, source }
    };
    let comment: Option<String> = client
        .query_one(
            "SELECT obj_description(to_regclass($1), 'pg_class')",
            &[&table],
        )
        .await
        .map_err(db("reading the corpus table"))?
        .get(0);
    if let Some(n) = comment.and_then(|c| {
        c.strip_prefix("complete ")
            .and_then(|n| n.parse::<u64>().ok())
    }) {
        return Ok(LoadedCorpus {
            collection,
            documents: n,
            loaded: false,
            elapsed: started.elapsed(),
        });
    }
    let tx = client
        .transaction()
        .await
        .map_err(db("starting the corpus load"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {EVAL_SCHEMA};
         DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (id text PRIMARY KEY, title text NOT NULL, text text NOT NULL)"
    ))
    .await
    .map_err(db("creating the corpus table"))?;
    let sink = tx
        .copy_in(&format!("COPY {table} (id, title, text) FROM STDIN BINARY"))
        .await
        .map_err(db("copying the corpus"))?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::TEXT, Type::TEXT]);
    pin_mut!(writer);
    // Read in a blocking task, hand documents over a bounded channel.
    let (tx_docs, mut rx_docs) = tokio::sync::mpsc::channel::<Document>(1024);
    let path = files.corpus.clone();
    let reader = tokio::task::spawn_blocking(move || {
        beir::for_each_jsonl::<Document>(&path, |doc| {
            tx_docs
                .blocking_send(doc)
                .map_err(|_| EvalError::Worker("corpus writer stopped".into()))
        })
    });
    let mut documents = 0u64;
    while let Some(doc) = rx_docs.recv().await {
        writer
            .as_mut()
            .write(&[&doc.id as &(dyn ToSql + Sync), &doc.title, &doc.text])
            .await
            .map_err(db("copying the corpus"))?;
        documents += 1;
    }
    reader
        .await
        .map_err(|e| EvalError::Worker(e.to_string()))??;
    writer.finish().await.map_err(db("copying the corpus"))?;
    tx.batch_execute(&format!(
        "COMMENT ON TABLE {table} IS 'complete {documents}'; ANALYZE {table}"
    ))
    .await
    .map_err(db("finishing the corpus load"))?;
    tx.commit()
        .await
        .map_err(db("committing the corpus load"))?;
    Ok(LoadedCorpus {
        collection,
        documents,
        loaded: true,
        elapsed: started.elapsed(),
    })
}

/// Where the eval keeps its tantivy indexes by default.
pub fn default_index_dir() -> PathBuf {
    PathBuf::from(".dev").join("eval-index")
}

/// Queries of the split that have judgements, in file order.
///
/// # Errors
/// I/O and dataset errors.
pub fn judged_queries(files: &BeirFiles, qrels: &beir::Qrels) -> Result<Vec<beir::Query>> {
    let mut queries = Vec::new();
    beir::for_each_jsonl::<beir::Query>(&files.queries, |q| {
        if qrels.contains_key(&q.id) {
            queries.push(q);
        }
        Ok(())
    })?;
    Ok(queries)
}

/// Rankings per query id, best first.
pub type Runs = HashMap<String, Vec<String>>;

/// What `quarry eval search` runs.
#[derive(Clone)]
pub struct SearchEvalOptions {
    /// BEIR folder.
    pub dataset: PathBuf,
    /// Split (`test`).
    pub split: String,
    /// PostgreSQL with pgvector (needs `CREATE` on the database).
    pub database_url: String,
    /// Where the tantivy index is kept.
    pub index_dir: PathBuf,
    /// Modes to measure.
    pub modes: Vec<Mode>,
    /// Only the first this many judged queries.
    pub limit: Option<usize>,
    /// Embedder for vector and hybrid modes (`None`: bm25 only).
    pub embedder: Option<Arc<dyn Embedder>>,
    /// Fusion and retrieval settings (collections are set by the eval).
    pub search: SearchConfig,
    /// Show progress bars on stderr.
    pub progress: bool,
}

impl std::fmt::Debug for SearchEvalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchEvalOptions")
            .field("dataset", &self.dataset)
            .field("split", &self.split)
            .field("modes", &self.modes)
            .field(
                "embedder",
                &self.embedder.as_ref().map(|e| e.model_id().to_owned()),
            )
            .finish_non_exhaustive()
    }
}

/// Figures of one mode.
#[derive(Debug, Clone)]
pub struct ModeFigures {
    /// The mode.
    pub mode: Mode,
    /// nDCG@10, recall@100, queries.
    pub figures: beir::RetrievalFigures,
    /// Median and 99th-percentile latency of a top-10 search (query
    /// embedding included), ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
}

/// The report of `quarry eval search`.
#[derive(Debug, Clone)]
pub struct SearchEvalReport {
    /// Documents in the corpus.
    pub documents: u64,
    /// Judged queries evaluated.
    pub queries: usize,
    /// Per mode, in the order asked.
    pub modes: Vec<ModeFigures>,
    /// Corpus load time (zero when reused).
    pub load: Duration,
    /// Sync (backfill) and embedding time (embedding only for new texts).
    pub sync: Duration,
    /// Texts embedded by this run.
    pub embedded_texts: u64,
    /// Index catch-up time.
    pub index: Duration,
}

/// Name of a mode as the CLI and JSON write it.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Bm25 => "bm25",
        Mode::Vector => "vector",
        Mode::Hybrid => "hybrid",
    }
}

impl SearchEvalReport {
    /// `{"bm25": {"ndcg_at_10": …, "recall_at_100": …}, "vector": …, "hybrid": …}`
    /// plus a `details` key (queries, documents, latencies).
    pub fn to_json(&self) -> serde_json::Value {
        let round = |x: f64| (x * 10_000.0).round() / 10_000.0;
        let mut out = serde_json::Map::new();
        for m in &self.modes {
            out.insert(
                mode_name(m.mode).to_owned(),
                serde_json::json!({
                    "ndcg_at_10": round(m.figures.ndcg_at_10),
                    "recall_at_100": round(m.figures.recall_at_100),
                    "p50_ms": round(m.p50_ms),
                    "p99_ms": round(m.p99_ms),
                }),
            );
        }
        out.insert(
            "details".to_owned(),
            serde_json::json!({
                "documents": self.documents,
                "queries": self.queries,
                "embedded_texts": self.embedded_texts,
                "load_secs": round(self.load.as_secs_f64()),
                "sync_secs": round(self.sync.as_secs_f64()),
                "index_secs": round(self.index.as_secs_f64()),
            }),
        );
        serde_json::Value::Object(out)
    }

    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} documents, {} judged queries\nmode     nDCG@10  recall@100  p50 ms  p99 ms\n",
            self.documents, self.queries
        );
        for m in &self.modes {
            out.push_str(&format!(
                "{:<8} {:>7.4}  {:>10.4}  {:>6.1}  {:>6.1}\n",
                mode_name(m.mode),
                m.figures.ndcg_at_10,
                m.figures.recall_at_100,
                m.p50_ms,
                m.p99_ms
            ));
        }
        out
    }
}

/// The judged queries of `options` (at most `limit`) and their judgements.
///
/// # Errors
/// Dataset errors; no judged query.
async fn judged(options: &SearchEvalOptions) -> Result<(Vec<beir::Query>, beir::Qrels)> {
    let files = BeirFiles::find(&options.dataset, &options.split)?;
    let qrels_path = files.qrels.clone();
    let qrels = tokio::task::spawn_blocking(move || beir::read_qrels(&qrels_path))
        .await
        .map_err(|e| EvalError::Worker(e.to_string()))??;
    let mut queries = judged_queries(&files, &qrels)?;
    if let Some(limit) = options.limit {
        queries.truncate(limit);
    }
    if queries.is_empty() {
        return Err(EvalError::Dataset(format!(
            "{}: no query has relevance judgements",
            options.dataset.display()
        )));
    }
    let wanted: std::collections::HashSet<&str> = queries.iter().map(|q| q.id.as_str()).collect();
    let qrels: beir::Qrels = qrels
        .into_iter()
        .filter(|(q, _)| wanted.contains(q.as_str()))
        .collect();
    Ok((queries, qrels))
}

/// Runs every judged query once per mode of `options` through `tool`
/// against `collection` (k = 100) and scores the rankings.
///
/// # Errors
/// Search failures other than a query with no searchable word.
async fn measure_modes(
    tool: &SearchTool,
    collection: &str,
    queries: &[beir::Query],
    qrels: &beir::Qrels,
    options: &SearchEvalOptions,
) -> Result<Vec<ModeFigures>> {
    let mut modes = Vec::new();
    for &mode in &options.modes {
        let bar =
            quarry_server::progress::bar(options.progress, queries.len() as u64, mode_name(mode));
        // nDCG@10 from the top 10 a caller asking for 10 gets (hybrid fuses
        // `[search] candidates` per retriever for it), recall@100 from a
        // request for 100
        let mut top10 = Runs::new();
        let mut top100 = Runs::new();
        let mut latencies =
            quarry_bench::Latencies::new().map_err(|e| EvalError::Config(e.to_string()))?;
        for query in queries {
            for (k, runs) in [(10, &mut top10), (100, &mut top100)] {
                let started = Instant::now();
                let response = tool
                    .search(
                        &quarry_bench::local_caller("quarry eval search"),
                        SearchRequest {
                            collection: collection.to_owned(),
                            query: query.text.clone(),
                            filter: None,
                            mode,
                            k,
                            fields: Vec::new(),
                        },
                    )
                    .await;
                if k == 10 {
                    latencies.record(started.elapsed());
                }
                let ranked = match response {
                    Ok(r) => r.hits.into_iter().map(|h| h.key).collect(),
                    // A query with no searchable term in bm25 mode ranks nothing.
                    Err(quarry_search::SearchError::InvalidArgument { .. }) => Vec::new(),
                    Err(e) => return Err(EvalError::Config(format!("search: {e}"))),
                };
                runs.insert(query.id.clone(), ranked);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let latency = latencies.summary();
        modes.push(ModeFigures {
            mode,
            figures: beir::RetrievalFigures {
                recall_at_100: beir::figures(&top100, qrels).recall_at_100,
                ..beir::figures(&top10, qrels)
            },
            p50_ms: latency.p50_ms,
            p99_ms: latency.p99_ms,
        });
    }
    Ok(modes)
}

/// Runs the evaluation (see the module docs).
///
/// # Errors
/// Dataset, database, sync and search failures.
pub async fn run_search_eval(options: &SearchEvalOptions) -> Result<SearchEvalReport> {
    let files = BeirFiles::find(&options.dataset, &options.split)?;
    let (queries, qrels) = judged(options).await?;
    let needs_vectors = options.modes.iter().any(|m| *m != Mode::Bm25);
    if needs_vectors && options.embedder.is_none() {
        return Err(EvalError::Config(
            "vector and hybrid modes need an embedder".into(),
        ));
    }

    let pool = quarry_db::pool(&options.database_url, 4, Duration::from_secs(30))
        .map_err(|e| EvalError::Config(e.to_string()))?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| EvalError::Config(format!("database: {e}")))?;
    let corpus = load_corpus(&mut client, &files).await?;
    drop(client);
    let load = if corpus.loaded {
        corpus.elapsed
    } else {
        Duration::ZERO
    };
    let digest = corpus
        .collection
        .name
        .trim_start_matches("beir_")
        .to_owned();

    let started = Instant::now();
    let syncer = Syncer::new(
        pool.clone(),
        options.database_url.clone(),
        Arc::clone(&corpus.collection),
        if needs_vectors {
            options.embedder.clone()
        } else {
            None
        },
        SyncConfig::default(),
    );
    let sync_error = |e: quarry_search_sync::SyncError| EvalError::Config(format!("sync: {e}"));
    syncer.install().await.map_err(sync_error)?;
    let bar = quarry_server::progress::bar(options.progress, corpus.documents, "backfill");
    syncer
        .backfill(|p| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        })
        .await
        .map_err(sync_error)?;
    bar.finish_and_clear();
    let mut embedded_texts = 0;
    if needs_vectors {
        let report =
            quarry_server::progress::embed_with_progress(&syncer, options.progress, "corpus")
                .await
                .map_err(|e| EvalError::Config(format!("sync: {e:#}")))?;
        embedded_texts = report.embedded_texts;
    }
    let sync = started.elapsed();

    let mut search = options.search.clone();
    search.index_dir = options.index_dir.clone();
    search.collections = vec![corpus_config(&digest)?];
    let tool = SearchTool::open(
        pool.clone(),
        options.database_url.clone(),
        search,
        options.embedder.clone(),
    )
    .await
    .map_err(|e| EvalError::Config(format!("search: {e}")))?;
    let started = Instant::now();
    tool.catch_up()
        .await
        .map_err(|e| EvalError::Config(format!("index: {e}")))?;
    let index = started.elapsed();

    let modes = measure_modes(&tool, &corpus.collection.name, &queries, &qrels, options).await?;
    Ok(SearchEvalReport {
        documents: corpus.documents,
        queries: queries.len(),
        modes,
        load,
        sync,
        embedded_texts,
        index,
    })
}

/// Name of the collection a coverage run uses: its own copy of the corpus
/// table and its own sidecar, so that partial vectors never mix with the
/// full collection's kept ones.
fn partial_name(digest: &str) -> String {
    format!("beir_{digest}_partial")
}

/// The collection of a coverage run (see [`run_coverage_eval`]).
///
/// # Errors
/// Never for a hex digest; the collection's validation error otherwise.
pub fn partial_config(digest: &str) -> Result<CollectionConfig> {
    named_config(&partial_name(digest))
}

/// Texts per sync round in a coverage run: the embedded count grows in
/// steps of this many documents, so a coverage target is met to within it
/// (8 of SciFact's 5,183 documents is 0.15 %). Quarry's choice.
const COVERAGE_ROUND: usize = 8;

/// An [`Embedder`] that embeds at most a budget of texts, then fails: the
/// sync's rounds finished before stay written, so the collection is left
/// with that many documents embedded (to within [`COVERAGE_ROUND`]).
struct BudgetEmbedder {
    inner: Arc<dyn Embedder>,
    remaining: Arc<std::sync::atomic::AtomicUsize>,
}

/// The message [`BudgetEmbedder`] fails with.
const BUDGET_SPENT: &str = "coverage budget spent";

impl BudgetEmbedder {
    fn take(&self, texts: &[String]) -> bool {
        use std::sync::atomic::Ordering;
        self.remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(texts.len())
            })
            .is_ok()
    }
}

impl Embedder for BudgetEmbedder {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn dimension(&self) -> usize {
        self.inner.dimension()
    }

    fn embed(
        &self,
        texts: Vec<String>,
    ) -> futures::future::BoxFuture<'static, quarry_llm::Result<Vec<Vec<f32>>>> {
        if self.take(&texts) {
            self.inner.embed(texts)
        } else {
            Box::pin(async { Err(quarry_llm::LlmError::LocalModel(BUDGET_SPENT.into())) })
        }
    }

    fn embed_background(
        &self,
        texts: Vec<String>,
    ) -> futures::future::BoxFuture<'static, quarry_llm::Result<Vec<Vec<f32>>>> {
        if self.take(&texts) {
            self.inner.embed_background(texts)
        } else {
            Box::pin(async { Err(quarry_llm::LlmError::LocalModel(BUDGET_SPENT.into())) })
        }
    }
}

/// One row of a coverage run: the modes measured with this share of the
/// collection embedded.
#[derive(Debug, Clone)]
pub struct CoverageRow {
    /// The share asked for, in `(0, 1]`.
    pub target: f64,
    /// Documents embedded when measured.
    pub embedded: u64,
    /// Per mode, in the order asked.
    pub modes: Vec<ModeFigures>,
}

impl CoverageRow {
    /// `embedded ÷ documents`.
    #[allow(clippy::cast_precision_loss)] // document counts far below 2^52
    pub fn coverage(&self, documents: u64) -> f64 {
        if documents == 0 {
            0.0
        } else {
            self.embedded as f64 / documents as f64
        }
    }

    fn ndcg(&self, mode: Mode) -> Option<f64> {
        self.modes
            .iter()
            .find(|m| m.mode == mode)
            .map(|m| m.figures.ndcg_at_10)
    }
}

/// The report of `quarry eval search --coverage`.
#[derive(Debug, Clone)]
pub struct CoverageReport {
    /// Documents in the corpus.
    pub documents: u64,
    /// Judged queries evaluated.
    pub queries: usize,
    /// One row per coverage, ascending.
    pub rows: Vec<CoverageRow>,
    /// Texts embedded by this run.
    pub embedded_texts: u64,
    /// Time spent embedding.
    pub embedding: Duration,
}

impl CoverageReport {
    /// `{"documents", "queries", "rows": [{"target", "embedded",
    /// "coverage", "bm25": {…}, "hybrid": {…}, "hybrid_minus_bm25"}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let round = |x: f64| (x * 10_000.0).round() / 10_000.0;
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut out = serde_json::Map::new();
                out.insert("target".into(), serde_json::json!(row.target));
                out.insert("embedded".into(), serde_json::json!(row.embedded));
                out.insert(
                    "coverage".into(),
                    serde_json::json!(round(row.coverage(self.documents))),
                );
                for m in &row.modes {
                    out.insert(
                        mode_name(m.mode).to_owned(),
                        serde_json::json!({
                            "ndcg_at_10": round(m.figures.ndcg_at_10),
                            "recall_at_100": round(m.figures.recall_at_100),
                        }),
                    );
                }
                if let (Some(h), Some(b)) = (row.ndcg(Mode::Hybrid), row.ndcg(Mode::Bm25)) {
                    out.insert("hybrid_minus_bm25".into(), serde_json::json!(round(h - b)));
                }
                serde_json::Value::Object(out)
            })
            .collect();
        serde_json::json!({
            "documents": self.documents,
            "queries": self.queries,
            "embedded_texts": self.embedded_texts,
            "embedding_secs": round(self.embedding.as_secs_f64()),
            "rows": rows,
        })
    }

    /// A plain-text table: nDCG@10 per mode and coverage.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} documents, {} judged queries; nDCG@10 with part of the collection embedded\n\
             coverage  embedded",
            self.documents, self.queries
        );
        let modes: Vec<Mode> = self
            .rows
            .first()
            .map(|r| r.modes.iter().map(|m| m.mode).collect())
            .unwrap_or_default();
        for mode in &modes {
            out.push_str(&format!("  {:>7}", mode_name(*mode)));
        }
        out.push_str("  hybrid-bm25\n");
        for row in &self.rows {
            out.push_str(&format!(
                "{:>7.2}%  {:>8}",
                100.0 * row.coverage(self.documents),
                row.embedded
            ));
            for m in &row.modes {
                out.push_str(&format!("  {:>7.4}", m.figures.ndcg_at_10));
            }
            match (row.ndcg(Mode::Hybrid), row.ndcg(Mode::Bm25)) {
                (Some(h), Some(b)) => out.push_str(&format!("  {:>+11.4}\n", h - b)),
                _ => out.push('\n'),
            }
        }
        out
    }
}

/// nDCG@10 with only part of the collection embedded (issue 18 item 4:
/// hybrid search on a partly embedded collection must not rank below BM25
/// alone). The corpus is copied to `quarry_eval.beir_<digest>_partial` (its
/// own collection and sidecar), every vector of that collection is cleared,
/// and for each share in `coverages` (ascending) the real sync embeds
/// documents — in its own order, by version — until that share is embedded
/// (to within [`COVERAGE_ROUND`] documents; reported exactly), then every
/// mode of `options` is measured through `SearchTool`, whose hybrid fusion
/// weights the vector side by the embedded share. Embeds
/// `max(coverages) × documents` texts each run.
///
/// # Errors
/// Coverages outside `(0, 1]`; no embedder; dataset, database, sync and
/// search failures.
pub async fn run_coverage_eval(
    options: &SearchEvalOptions,
    coverages: &[f64],
) -> Result<CoverageReport> {
    let mut coverages = coverages.to_vec();
    if coverages.is_empty()
        || coverages
            .iter()
            .any(|c| c.is_nan() || *c <= 0.0 || *c > 1.0)
    {
        return Err(EvalError::Config(
            "coverages must be between 0 (excluded) and 1".into(),
        ));
    }
    coverages.sort_by(f64::total_cmp);
    let Some(embedder) = options.embedder.clone() else {
        return Err(EvalError::Config("a coverage run needs an embedder".into()));
    };
    let (queries, qrels) = judged(options).await?;

    let pool = quarry_db::pool(&options.database_url, 4, Duration::from_secs(30))
        .map_err(|e| EvalError::Config(e.to_string()))?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| EvalError::Config(format!("database: {e}")))?;
    let files = BeirFiles::find(&options.dataset, &options.split)?;
    let corpus = load_corpus(&mut client, &files).await?;
    let digest = corpus
        .collection
        .name
        .trim_start_matches("beir_")
        .to_owned();
    let config = partial_config(&digest)?;
    let collection = Arc::new(
        Collection::from_config(&config, "eval").map_err(|e| EvalError::Config(e.to_string()))?,
    );
    let db = |context: &'static str| {
        move |source| EvalError::Database {
            context: context.to_owned(),
            source,
        }
    };
    // the copy, made once (kept like the corpus table)
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&collection.source.quoted()],
        )
        .await
        .map_err(db("reading the partial corpus table"))?
        .get(0);
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE TABLE {partial} (LIKE {full} INCLUDING ALL);
                 INSERT INTO {partial} SELECT * FROM {full}",
                partial = collection.source.quoted(),
                full = corpus.collection.source.quoted(),
            ))
            .await
            .map_err(db("copying the corpus"))?;
    }

    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let budgeted: Arc<dyn Embedder> = Arc::new(BudgetEmbedder {
        inner: Arc::clone(&embedder),
        remaining: Arc::clone(&remaining),
    });
    let syncer = Syncer::new(
        pool.clone(),
        options.database_url.clone(),
        Arc::clone(&collection),
        Some(budgeted),
        SyncConfig {
            embed_batch: COVERAGE_ROUND,
            ..SyncConfig::default()
        },
    );
    let sync_error = |e: quarry_search_sync::SyncError| EvalError::Config(format!("sync: {e}"));
    syncer.install().await.map_err(sync_error)?;
    syncer.backfill(|_| {}).await.map_err(sync_error)?;
    // start from no vectors at all
    let field = collection
        .text
        .first()
        .ok_or_else(|| EvalError::Config("the corpus collection has no text field".into()))?;
    client
        .execute(
            &format!(
                "UPDATE {} SET embedded = false, {} = NULL, {} = NULL",
                collection.docs_table(),
                quarry_db::quote_ident(&quarry_search::collection::hash_column(&field.name)),
                quarry_db::quote_ident(&quarry_search::collection::vector_column(&field.name)),
            ),
            &[],
        )
        .await
        .map_err(db("clearing the partial collection's vectors"))?;
    drop(client);

    let mut rows = Vec::new();
    let mut embedding = Duration::ZERO;
    let mut embedded_texts = 0;
    for &target in &coverages {
        let status = syncer.status().await.map_err(sync_error)?;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let wanted = (target * status.docs as f64).round() as u64;
        let budget = usize::try_from(wanted.saturating_sub(status.embedded)).unwrap_or(usize::MAX);
        remaining.store(budget, std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        let result = if options.progress {
            quarry_server::progress::embed_with_progress(&syncer, true, "corpus")
                .await
                .map(|r| r.embedded_texts)
                .map_err(|e| format!("{e:#}"))
        } else {
            syncer
                .embed_pending()
                .await
                .map(|r| r.embedded_texts)
                .map_err(|e| e.to_string())
        };
        embedding += started.elapsed();
        match result {
            // the budget ran out: the rounds before it are written
            Err(e) if !e.contains(BUDGET_SPENT) => {
                return Err(EvalError::Config(format!("sync: {e}")));
            }
            Ok(_) | Err(_) => {}
        }
        let after = syncer.status().await.map_err(sync_error)?;
        // every vector was cleared first: all were embedded by this run
        embedded_texts = after.embedded;

        let mut search = options.search.clone();
        search.index_dir = options.index_dir.clone();
        search.collections = vec![config.clone()];
        // a fresh tool per row: its document counts are current
        let tool = SearchTool::open(
            pool.clone(),
            options.database_url.clone(),
            search,
            Some(Arc::clone(&embedder)),
        )
        .await
        .map_err(|e| EvalError::Config(format!("search: {e}")))?;
        tool.catch_up()
            .await
            .map_err(|e| EvalError::Config(format!("index: {e}")))?;
        let modes = measure_modes(&tool, &collection.name, &queries, &qrels, options).await?;
        if options.progress {
            let figures: Vec<String> = modes
                .iter()
                .map(|m| format!("{} {:.4}", mode_name(m.mode), m.figures.ndcg_at_10))
                .collect();
            eprintln!(
                "eval: {} of {} documents embedded: nDCG@10 {}",
                after.embedded,
                after.docs,
                figures.join(", ")
            );
        }
        rows.push(CoverageRow {
            target,
            embedded: after.embedded,
            modes,
        });
    }
    Ok(CoverageReport {
        documents: corpus.documents,
        queries: queries.len(),
        rows,
        embedded_texts,
        embedding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the texts it is asked to embed; every vector is `[1, 0]`.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl Embedder for Counting {
        fn model_id(&self) -> &str {
            "counting"
        }

        fn dimension(&self) -> usize {
            2
        }

        fn embed(
            &self,
            texts: Vec<String>,
        ) -> futures::future::BoxFuture<'static, quarry_llm::Result<Vec<Vec<f32>>>> {
            self.0
                .fetch_add(texts.len(), std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect()) })
        }
    }

    #[tokio::test]
    async fn the_budget_embedder_stops_before_a_batch_that_would_overspend() {
        let counting = Arc::new(Counting(std::sync::atomic::AtomicUsize::new(0)));
        let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(20));
        let budgeted = BudgetEmbedder {
            inner: Arc::clone(&counting) as Arc<dyn Embedder>,
            remaining: Arc::clone(&remaining),
        };
        let batch = |n: usize| (0..n).map(|i| format!("text {i}")).collect::<Vec<_>>();
        assert_eq!(budgeted.embed_background(batch(8)).await.unwrap().len(), 8);
        assert_eq!(budgeted.embed(batch(8)).await.unwrap().len(), 8);
        let err = budgeted.embed_background(batch(8)).await.unwrap_err();
        assert!(err.to_string().contains(BUDGET_SPENT), "{err}");
        // the refused batch was not embedded, and the budget is intact
        assert_eq!(counting.0.load(std::sync::atomic::Ordering::SeqCst), 16);
        assert_eq!(budgeted.embed(batch(4)).await.unwrap().len(), 4);
        assert!(budgeted.embed(batch(1)).await.is_err());
    }

    #[test]
    fn the_partial_collection_has_its_own_name_and_source() {
        let full = corpus_config("abc123").unwrap();
        let partial = partial_config("abc123").unwrap();
        assert_ne!(full.name, partial.name);
        assert_ne!(full.source, partial.source);
        assert_eq!(partial.name, "beir_abc123_partial");
    }
}
