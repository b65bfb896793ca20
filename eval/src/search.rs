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
    let name = format!("beir_{digest}");
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
    /// Median and 99th-percentile search latency (query embedding included), ms.
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

/// Runs the evaluation (see the module docs).
///
/// # Errors
/// Dataset, database, sync and search failures.
pub async fn run_search_eval(options: &SearchEvalOptions) -> Result<SearchEvalReport> {
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

    let mut modes = Vec::new();
    for &mode in &options.modes {
        let bar =
            quarry_server::progress::bar(options.progress, queries.len() as u64, mode_name(mode));
        let mut runs = Runs::new();
        let mut latencies =
            quarry_bench::Latencies::new().map_err(|e| EvalError::Config(e.to_string()))?;
        for query in &queries {
            let started = Instant::now();
            let response = tool
                .search(
                    &quarry_bench::local_caller("quarry eval search"),
                    SearchRequest {
                        collection: corpus.collection.name.clone(),
                        query: query.text.clone(),
                        filter: None,
                        mode,
                        k: 100,
                        fields: Vec::new(),
                    },
                )
                .await;
            latencies.record(started.elapsed());
            let ranked = match response {
                Ok(r) => r.hits.into_iter().map(|h| h.key).collect(),
                // A query with no searchable term in bm25 mode ranks nothing.
                Err(quarry_search::SearchError::InvalidArgument { .. }) => Vec::new(),
                Err(e) => return Err(EvalError::Config(format!("search: {e}"))),
            };
            runs.insert(query.id.clone(), ranked);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let latency = latencies.summary();
        modes.push(ModeFigures {
            mode,
            figures: beir::figures(&runs, &qrels),
            p50_ms: latency.p50_ms,
            p99_ms: latency.p99_ms,
        });
    }
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
