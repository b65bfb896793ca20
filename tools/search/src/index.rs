//! The tantivy index of a collection: BM25 over the text fields, with the
//! filter fields as fast fields, kept in step with the sidecar table.
//!
//! One index per collection lives in `<index_dir>/<collection>`. Its schema:
//!
//! | field | tantivy type | options |
//! |---|---|---|
//! | `key` | str | `STRING \| STORED \| FAST` (raw, the delete term) |
//! | `t_<field>` | text | analyzer [`ANALYZER`], frequencies (no positions) |
//! | `f_<field>` keyword(s) | str | raw tokenizer, indexed, fast; one value per array element |
//! | `f_<field>` integer | i64 | indexed, fast |
//! | `f_<field>` float | f64 | indexed, fast (`-0.0` stored as `0.0`) |
//!
//! PostgreSQL is the source of truth. Each commit carries a JSON payload
//! ([`CommitPayload`]): the collection's definition hash, the sidecar table's
//! OID and the cursor of the last sidecar row applied (`watermark` version,
//! `watermark_key`). A different definition hash wipes the directory and
//! rebuilds; a different sidecar OID (table recreated) deletes every document
//! and re-reads from version 0. [`CollectionIndex::catch_up`] reads rows with
//! `(version, key)` above the cursor in batches (a sync transaction may write
//! many rows under one version, so paging by version alone could skip some),
//! replaces each document (delete the key's term, add unless the row is a
//! tombstone), commits with the new cursor and reloads the reader. [`follow`]
//! runs catch-ups on `NOTIFY quarry_search_docs` and, as a fallback, every
//! [`POLL_INTERVAL`].
//!
//! A catch-up that applied at least [`CONSOLIDATE_AFTER_ROWS`] rows (a
//! rebuild or a bulk load) then merges every segment into one in the
//! background, as Lucene's `forceMerge` after bulk indexing: tantivy's log
//! merge policy leaves a bulk-built index in several segments (8 at 1M
//! documents), each searched in turn with its own term lookups, and the
//! merge purges deleted documents, which until then still count in BM25's
//! statistics. (Measured at 1M: BM25's latency barely moved, since the
//! top-k threshold already carries from segment to segment.) Searches keep
//! using the old segments until the merge is committed;
//! [`CollectionIndex::consolidated`] waits for it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt as _;
use quarry_db::supervisor::TaskHandle;
use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, DocSetCollector};
use tantivy::columnar::StrColumn;
use tantivy::query::{BooleanQuery, ConstScoreQuery, EnableScoring, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
    Value as _,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Score, TantivyDocument, Term,
};
use tokio_postgres::{AsyncMessage, NoTls};

use quarry_db::quote_ident;

use crate::collection::{Collection, FilterType, filter_column, text_column};
use crate::error::{Result, SearchError};
use crate::filter::{CheckedFilter, normalise_float};

/// Name under which the English analyzer is registered with each index.
pub const ANALYZER: &str = "quarry_en";
/// Tokens longer than this many bytes are dropped (tantivy's
/// `RemoveLongFilter` convention of 40, as in its default analyzer).
pub const MAX_TOKEN_BYTES: usize = 40;
/// Sidecar rows read per catch-up query.
pub const BATCH_ROWS: i64 = 1000;
/// Rows applied between commits during a long catch-up (a rebuild).
pub const COMMIT_EVERY_ROWS: usize = 20_000;
/// How often [`follow`] catches up without a notification.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The channel the sync notifies after writing sidecar rows; the payload is
/// the collection name.
pub const NOTIFY_CHANNEL: &str = "quarry_search_docs";
/// Longest query text accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// Writer memory budget, in bytes (tantivy needs at least 15 MB per thread).
const WRITER_MEMORY: usize = 50_000_000;
/// Rows one catch-up must apply for its index to be merged into one segment
/// afterwards (see the module docs): one commit's worth, so the follower's
/// trickle of small catch-ups is left to tantivy's log merge policy.
pub const CONSOLIDATE_AFTER_ROWS: usize = COMMIT_EVERY_ROWS;
/// Attempts at the merge into one segment: an attempt fails when a merge the
/// log merge policy started meanwhile replaced one of its segments, and is
/// retried after [`CONSOLIDATE_RETRY`] with the segments then committed.
const CONSOLIDATE_ATTEMPTS: u32 = 5;
/// Wait between attempts at the merge into one segment.
const CONSOLIDATE_RETRY: Duration = Duration::from_secs(1);

/// The analyzer of text fields and query text: `SimpleTokenizer` (splits on
/// non-alphanumeric characters) → `RemoveLongFilter` ([`MAX_TOKEN_BYTES`]) →
/// `LowerCaser` → English stop words (tantivy's list, from Lucene) → English
/// Snowball stemmer.
pub fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .dynamic();
    let builder = match StopWordFilter::new(Language::English) {
        Some(stop_words) => builder.filter_dynamic(stop_words),
        None => builder,
    };
    builder
        .filter_dynamic(Stemmer::new(Language::English))
        .build()
}

/// The distinct terms [`analyzer`] makes of `text`, in first-seen order.
pub fn analyse(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut seen = HashSet::new();
    let mut terms = Vec::new();
    while stream.advance() {
        let token = &stream.token().text;
        if seen.insert(token.clone()) {
            terms.push(token.clone());
        }
    }
    terms
}

/// The tantivy fields of a collection's index.
#[derive(Debug, Clone)]
pub struct IndexFields {
    /// `key`.
    pub key: Field,
    /// `t_<field>` per text field, in configuration order.
    pub text: Vec<Field>,
    /// `f_<field>` per filter field, in configuration order.
    pub filters: Vec<(Field, FilterType)>,
}

/// The schema of `collection`'s index (see the module docs).
pub fn schema_for(collection: &Collection) -> (Schema, IndexFields) {
    let mut builder = Schema::builder();
    let key = builder.add_text_field("key", STRING | STORED | FAST);
    let text_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let text = collection
        .text
        .iter()
        .map(|f| builder.add_text_field(&text_column(&f.name), text_options.clone()))
        .collect();
    let filters = collection
        .filters
        .iter()
        .map(|f| {
            let name = filter_column(&f.name);
            let field = match f.kind {
                FilterType::Keyword | FilterType::Keywords => {
                    builder.add_text_field(&name, STRING | FAST)
                }
                FilterType::Integer => {
                    builder.add_i64_field(&name, tantivy::schema::INDEXED | FAST)
                }
                FilterType::Float => builder.add_f64_field(&name, tantivy::schema::INDEXED | FAST),
            };
            (field, f.kind)
        })
        .collect();
    (builder.build(), IndexFields { key, text, filters })
}

/// A filter field's value in a sidecar row.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `NULL`.
    Null,
    /// A `keyword` value.
    Text(String),
    /// A `keywords` array (possibly empty).
    Texts(Vec<String>),
    /// An `integer` value.
    Int(i64),
    /// A `float` value.
    Float(f64),
}

/// One sidecar row as the index sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarRow {
    /// Source key, text form.
    pub key: String,
    /// Row version.
    pub version: i64,
    /// Tombstone.
    pub deleted: bool,
    /// Text per text field, in configuration order.
    pub text: Vec<Option<String>>,
    /// Value per filter field, in configuration order.
    pub filters: Vec<FieldValue>,
}

/// The tantivy document of a (non-deleted) row.
pub fn document(fields: &IndexFields, row: &SidecarRow) -> TantivyDocument {
    let mut doc = TantivyDocument::new();
    doc.add_text(fields.key, &row.key);
    for (field, text) in fields.text.iter().zip(&row.text) {
        if let Some(text) = text {
            doc.add_text(*field, text);
        }
    }
    for ((field, _), value) in fields.filters.iter().zip(&row.filters) {
        match value {
            FieldValue::Null => {}
            FieldValue::Text(s) => doc.add_text(*field, s),
            FieldValue::Texts(values) => {
                for s in values {
                    doc.add_text(*field, s);
                }
            }
            FieldValue::Int(i) => doc.add_i64(*field, *i),
            FieldValue::Float(f) => doc.add_f64(*field, normalise_float(*f)),
        }
    }
    doc
}

/// The JSON payload of every commit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitPayload {
    /// [`Collection::config_hash`] the index was built for.
    pub config_hash: String,
    /// OID of the sidecar table the rows came from (0 before the first catch-up).
    pub sidecar_oid: u32,
    /// Highest version applied.
    pub watermark: i64,
    /// Key of the last row applied at `watermark` (rows are read in
    /// `(version, key)` order).
    pub watermark_key: String,
}

/// What one [`CollectionIndex::catch_up`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Sidecar rows applied (documents added or replaced, plus tombstones).
    pub rows: usize,
    /// The sidecar table had been recreated, so the index was emptied first.
    pub reset: bool,
}

struct Writer {
    writer: IndexWriter,
    cursor: CommitPayload,
}

/// A collection's tantivy index: reader for searches, writer for the follower.
pub struct CollectionIndex {
    collection: Arc<Collection>,
    reader: IndexReader,
    fields: IndexFields,
    schema: Schema,
    writer: Mutex<Writer>,
    /// Serialises catch-ups (the follower and explicit calls).
    catching_up: tokio::sync::Mutex<()>,
    /// The merge into one segment started by the last bulk catch-up, until
    /// [`CollectionIndex::consolidated`] collects it.
    consolidating: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for CollectionIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionIndex")
            .field("collection", &self.collection.name)
            .finish_non_exhaustive()
    }
}

/// A BM25 hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Bm25Hit {
    /// Source key.
    pub key: String,
    /// BM25 score (tantivy: k1 = 1.2, b = 0.75), summed over text fields.
    pub score: f32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CollectionIndex {
    /// Opens (or creates) the index of `collection` in `<index_dir>/<name>`.
    /// An index built for another definition is wiped and recreated.
    /// Blocking (file I/O): call from `spawn_blocking` in async code.
    ///
    /// # Errors
    /// [`SearchError::Index`] when the directory cannot be created or read.
    pub fn open(index_dir: &Path, collection: Arc<Collection>) -> Result<CollectionIndex> {
        let dir: PathBuf = index_dir.join(&collection.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| SearchError::Internal(format!("create {}: {e}", dir.display())))?;
        let (schema, fields) = schema_for(&collection);
        let existing = if dir.join("meta.json").exists() {
            match Index::open_in_dir(&dir) {
                Ok(index) => {
                    let payload = index
                        .load_metas()
                        .ok()
                        .and_then(|m| m.payload)
                        .and_then(|p| serde_json::from_str::<CommitPayload>(&p).ok());
                    match payload {
                        Some(p)
                            if p.config_hash == collection.config_hash()
                                && index.schema() == schema =>
                        {
                            Some((index, p))
                        }
                        _ => None,
                    }
                }
                Err(e) => {
                    tracing::warn!(collection = %collection.name, error = %e, "unreadable index, rebuilding");
                    None
                }
            }
        } else {
            None
        };
        let (index, cursor) = match existing {
            Some(found) => found,
            None => {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| {
                        SearchError::Internal(format!("remove {}: {e}", dir.display()))
                    })?;
                }
                std::fs::create_dir_all(&dir)
                    .map_err(|e| SearchError::Internal(format!("create {}: {e}", dir.display())))?;
                let index = Index::create_in_dir(&dir, schema.clone())?;
                (
                    index,
                    CommitPayload {
                        config_hash: collection.config_hash().to_owned(),
                        ..CommitPayload::default()
                    },
                )
            }
        };
        index.tokenizers().register(ANALYZER, analyzer());
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(CollectionIndex {
            collection,
            reader,
            fields,
            schema,
            writer: Mutex::new(Writer { writer, cursor }),
            catching_up: tokio::sync::Mutex::new(()),
            consolidating: Mutex::new(None),
        })
    }

    /// The collection indexed.
    pub fn collection(&self) -> &Arc<Collection> {
        &self.collection
    }

    /// The index schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The cursor of the last commit.
    pub fn cursor(&self) -> CommitPayload {
        lock(&self.writer).cursor.clone()
    }

    /// Documents searchable now (tombstoned rows excluded).
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Segments searched now.
    pub fn num_segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    /// Waits until the merge into one segment that the last bulk catch-up
    /// started (if any) has been committed and the reader reloaded, or has
    /// given up (logged; the index stays correct, only in more segments).
    pub async fn consolidated(&self) {
        let pending = lock(&self.consolidating).take();
        if let Some(handle) = pending
            && let Err(e) = handle.await
        {
            tracing::warn!(collection = %self.collection.name, error = %e, "segment merge task failed");
        }
    }

    /// Starts merging every searchable segment into one, in the background
    /// (tantivy's merge threads; see the module docs).
    fn start_consolidation(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let handle = tokio::spawn(async move {
            for attempt in 1..=CONSOLIDATE_ATTEMPTS {
                match this.merge_all().await {
                    Ok(merged) => {
                        if merged {
                            tracing::debug!(collection = %this.collection.name, "index merged into one segment");
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(collection = %this.collection.name, attempt, error = %e, "merging the index into one segment failed");
                        tokio::time::sleep(CONSOLIDATE_RETRY).await;
                    }
                }
            }
        });
        // A merge still running from an earlier bulk carries on detached.
        *lock(&self.consolidating) = Some(handle);
    }

    /// Merges the committed segments into one and reloads the reader; false
    /// when there was at most one segment.
    async fn merge_all(self: &Arc<Self>) -> Result<bool> {
        let this = Arc::clone(self);
        let merging = tokio::task::spawn_blocking(move || {
            let ids: Vec<_> = this
                .reader
                .searcher()
                .segment_readers()
                .iter()
                .map(tantivy::SegmentReader::segment_id)
                .collect();
            (ids.len() > 1).then(|| lock(&this.writer).writer.merge(&ids))
        })
        .await?;
        let Some(merging) = merging else {
            return Ok(false);
        };
        merging.await?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.reader.reload()).await??;
        Ok(true)
    }

    /// Applies sidecar rows (blocking); does not commit.
    fn apply(&self, writer: &mut Writer, rows: &[SidecarRow]) -> Result<()> {
        for row in rows {
            writer
                .writer
                .delete_term(Term::from_field_text(self.fields.key, &row.key));
            if !row.deleted {
                writer.writer.add_document(document(&self.fields, row))?;
            }
            writer.cursor.watermark = row.version;
            writer.cursor.watermark_key.clone_from(&row.key);
        }
        Ok(())
    }

    fn commit(&self, writer: &mut Writer) -> Result<()> {
        let payload = serde_json::to_string(&writer.cursor)
            .map_err(|e| SearchError::Internal(format!("commit payload: {e}")))?;
        let mut prepared = writer.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// Brings the index up to date with the sidecar table: reads rows above
    /// the cursor in batches of [`BATCH_ROWS`], applies them, commits (every
    /// [`COMMIT_EVERY_ROWS`] rows and at the end) and reloads the reader, so
    /// that what was committed to the sidecar before the call is searchable
    /// when it returns. After [`CONSOLIDATE_AFTER_ROWS`] rows or more it
    /// starts merging the index into one segment, without waiting for it
    /// ([`CollectionIndex::consolidated`] does).
    ///
    /// # Errors
    /// Database errors (the cursor stays at the last commit) and index errors.
    pub async fn catch_up(self: &Arc<Self>, pool: &Pool) -> Result<CatchUp> {
        let _serial = self.catching_up.lock().await;
        let client = pool.get().await?;
        let table = self.collection.docs_table();
        let oid: Option<u32> = client
            .query_one("SELECT to_regclass($1)::oid", &[&table])
            .await?
            .get(0);
        let Some(oid) = oid else {
            return Err(SearchError::Unavailable(format!(
                "sidecar table {table} does not exist"
            )));
        };
        let mut result = CatchUp::default();
        let (mut watermark, mut watermark_key) = {
            let cursor = self.cursor();
            (cursor.watermark, cursor.watermark_key)
        };
        if self.cursor().sidecar_oid != oid {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || -> Result<()> {
                let mut writer = lock(&this.writer);
                writer.writer.delete_all_documents()?;
                writer.cursor = CommitPayload {
                    config_hash: this.collection.config_hash().to_owned(),
                    sidecar_oid: oid,
                    watermark: 0,
                    watermark_key: String::new(),
                };
                this.commit(&mut writer)
            })
            .await??;
            result.reset = true;
            watermark = 0;
            watermark_key = String::new();
        }
        let mut columns = vec!["key".to_owned(), "version".to_owned(), "deleted".to_owned()];
        columns.extend(
            self.collection
                .text
                .iter()
                .map(|f| quote_ident(&text_column(&f.name))),
        );
        columns.extend(
            self.collection
                .filters
                .iter()
                .map(|f| quote_ident(&filter_column(&f.name))),
        );
        let sql = format!(
            "SELECT {} FROM {table} WHERE (version, key) > ($1, $2) ORDER BY version, key LIMIT {BATCH_ROWS}",
            columns.join(", ")
        );
        let statement = client.prepare(&sql).await?;
        let n_text = self.collection.text.len();
        let kinds: Vec<FilterType> = self.collection.filters.iter().map(|f| f.kind).collect();
        let mut uncommitted = 0usize;
        loop {
            let rows = client
                .query(&statement, &[&watermark, &watermark_key])
                .await?;
            if rows.is_empty() {
                break;
            }
            let mut batch = Vec::with_capacity(rows.len());
            for row in &rows {
                let text = (0..n_text)
                    .map(|i| row.try_get::<_, Option<String>>(3 + i))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut filters = Vec::with_capacity(kinds.len());
                for (i, kind) in kinds.iter().enumerate() {
                    let at = 3 + n_text + i;
                    filters.push(match kind {
                        FilterType::Keyword => row
                            .try_get::<_, Option<String>>(at)?
                            .map_or(FieldValue::Null, FieldValue::Text),
                        FilterType::Keywords => row
                            .try_get::<_, Option<Vec<Option<String>>>>(at)?
                            .map_or(FieldValue::Null, |v| {
                                FieldValue::Texts(v.into_iter().flatten().collect())
                            }),
                        FilterType::Integer => row
                            .try_get::<_, Option<i64>>(at)?
                            .map_or(FieldValue::Null, FieldValue::Int),
                        FilterType::Float => row
                            .try_get::<_, Option<f64>>(at)?
                            .map_or(FieldValue::Null, FieldValue::Float),
                    });
                }
                batch.push(SidecarRow {
                    key: row.try_get(0)?,
                    version: row.try_get(1)?,
                    deleted: row.try_get(2)?,
                    text,
                    filters,
                });
            }
            if let Some(last) = batch.last() {
                watermark = last.version;
                watermark_key.clone_from(&last.key);
            }
            let n = batch.len();
            result.rows += n;
            uncommitted += n;
            let commit = uncommitted >= COMMIT_EVERY_ROWS;
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || -> Result<()> {
                let mut writer = lock(&this.writer);
                writer.cursor.sidecar_oid = oid;
                this.apply(&mut writer, &batch)?;
                if commit {
                    this.commit(&mut writer)?;
                }
                Ok(())
            })
            .await??;
            if commit {
                uncommitted = 0;
            }
            if n < usize::try_from(BATCH_ROWS).unwrap_or(usize::MAX) {
                break;
            }
        }
        if uncommitted > 0 {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || this.commit(&mut lock(&this.writer))).await??;
        }
        if result.rows >= CONSOLIDATE_AFTER_ROWS {
            self.start_consolidation();
        }
        Ok(result)
    }

    /// Top `limit` documents by BM25 for `query` within `filter` (blocking),
    /// matching the query against the text fields named in `searched` only
    /// (the fields the caller may see; others are not queried at all, so a
    /// term found only in them matches nothing).
    ///
    /// The query text goes through [`analyzer`]; each distinct term becomes a
    /// SHOULD clause per searched text field (no query syntax, so no text can
    /// fail to parse). Without a filter the union is scored with tantivy's
    /// block-max WAND (Ding & Suel 2011: blocks whose best possible score
    /// cannot enter the top `limit` are skipped); a filter is a non-scoring
    /// MUST clause. Either way the result is exactly the top `limit`
    /// matching documents by BM25.
    /// Ties in score are broken by document address (stable for a given
    /// reader). Keys are read from the `key` fast field.
    ///
    /// # Errors
    /// [`SearchError::InvalidArgument`] (`query`) when the text is longer
    /// than [`MAX_QUERY_BYTES`] or has no searchable term after analysis;
    /// [`SearchError::Internal`] when `searched` names no text field of the
    /// collection; index errors.
    pub fn search_bm25(
        &self,
        query: &str,
        filter: &CheckedFilter,
        limit: usize,
        searched: &[String],
    ) -> Result<Vec<Bm25Hit>> {
        if query.len() > MAX_QUERY_BYTES {
            return Err(SearchError::invalid(
                "query",
                format!("{} bytes; at most {MAX_QUERY_BYTES}", query.len()),
            ));
        }
        let terms = analyse(query);
        if terms.is_empty() {
            return Err(SearchError::invalid(
                "query",
                "no searchable words (empty, or only stop words and punctuation); bm25 needs some",
            ));
        }
        let fields: Vec<Field> = self
            .collection
            .text
            .iter()
            .zip(&self.fields.text)
            .filter(|(f, _)| searched.contains(&f.name))
            .map(|(_, field)| *field)
            .collect();
        if fields.is_empty() {
            return Err(SearchError::Internal(format!(
                "bm25 over collection {} without a text field to search",
                self.collection.name
            )));
        }
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for field in &fields {
            for term in &terms {
                should.push((
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(*field, term),
                        IndexRecordOption::WithFreqs,
                    )),
                ));
            }
        }
        // Without a filter, a pure union of term queries: tantivy scores it
        // with block-max WAND. With one, the filter is a non-scoring MUST
        // clause intersected with the union (no pruning, but the filter's
        // doc set drives: measured at 1M documents, checking the filter per
        // WAND candidate instead was 1.5-3x slower at 10 % and 1 %).
        let union = BooleanQuery::new(should);
        let query: Box<dyn Query> = if filter.is_all() {
            Box::new(union)
        } else {
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(union) as Box<dyn Query>),
                (
                    Occur::Must,
                    Box::new(ConstScoreQuery::new(filter.to_tantivy(&self.schema)?, 0.0)),
                ),
            ]))
        };
        let searcher = self.reader.searcher();
        let weight = query.weight(EnableScoring::enabled_from_searcher(&searcher))?;
        let mut top = TopHits::new(limit.max(1));
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let segment_ord = u32::try_from(ord)
                .map_err(|_| SearchError::Internal("more than 2^32 segments".into()))?;
            let alive = segment.alive_bitset();
            let mut threshold = top.threshold();
            weight.for_each_pruning(threshold, segment, &mut |doc, score| {
                if alive.is_some_and(|a| a.is_deleted(doc)) {
                    return threshold;
                }
                top.push(score, DocAddress::new(segment_ord, doc));
                threshold = top.threshold();
                threshold
            })?;
        }
        let top = top.into_sorted();
        // Keys from the `key` fast field (a column read, not a doc-store
        // block decompressed per hit).
        let mut columns: HashMap<u32, Option<StrColumn>> = HashMap::new();
        let mut hits = Vec::with_capacity(top.len());
        let mut key = String::new();
        for (score, address) in top {
            let column = match columns.entry(address.segment_ord) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    searcher
                        .segment_reader(address.segment_ord)
                        .fast_fields()
                        .str("key")?,
                ),
            };
            let Some(column) = column else {
                continue;
            };
            let Some(ord) = column.term_ords(address.doc_id).next() else {
                continue;
            };
            if column
                .ord_to_str(ord, &mut key)
                .map_err(|e| SearchError::Internal(format!("reading a key: {e}")))?
            {
                hits.push(Bm25Hit {
                    key: key.clone(),
                    score,
                });
            }
        }
        Ok(hits)
    }

    /// Keys of every document matching `filter` (blocking; for checks and
    /// tests, unbounded).
    ///
    /// # Errors
    /// Index errors.
    pub fn matching_keys(&self, filter: &CheckedFilter) -> Result<HashSet<String>> {
        let searcher = self.reader.searcher();
        let query = filter.to_tantivy(&self.schema)?;
        let addresses = searcher.search(query.as_ref(), &DocSetCollector)?;
        let mut keys = HashSet::with_capacity(addresses.len());
        for address in addresses {
            let doc: TantivyDocument = searcher.doc(address)?;
            if let Some(key) = doc.get_first(self.fields.key).and_then(|v| v.as_str()) {
                keys.insert(key.to_owned());
            }
        }
        Ok(keys)
    }

    /// Number of documents matching `filter` (blocking).
    ///
    /// # Errors
    /// Index errors.
    pub fn count(&self, filter: &CheckedFilter) -> Result<usize> {
        let query = filter.to_tantivy(&self.schema)?;
        Ok(self.reader.searcher().search(query.as_ref(), &Count)?)
    }
}

/// The best `limit` (score, address) pairs seen, highest score first, ties
/// by lower address; its threshold (the `limit`-th score once full) lets
/// block-max WAND skip blocks that cannot enter.
struct TopHits {
    limit: usize,
    /// Min-heap by (score, reversed address): the root is the entry to evict.
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Ranked>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Ranked {
    score: Score,
    address: DocAddress,
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    /// Better is greater: higher score, then lower address.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.address.cmp(&self.address))
    }
}

impl TopHits {
    fn new(limit: usize) -> TopHits {
        TopHits {
            limit,
            heap: std::collections::BinaryHeap::with_capacity(limit + 1),
        }
    }

    /// Scores at or below this cannot enter (`Score::MIN` until full).
    fn threshold(&self) -> Score {
        if self.heap.len() < self.limit {
            return Score::MIN;
        }
        self.heap.peek().map_or(Score::MIN, |r| r.0.score)
    }

    fn push(&mut self, score: Score, address: DocAddress) {
        self.heap.push(std::cmp::Reverse(Ranked { score, address }));
        if self.heap.len() > self.limit {
            self.heap.pop();
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<(Score, DocAddress)> {
        let mut out: Vec<Ranked> = self.heap.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out.into_iter().map(|r| (r.score, r.address)).collect()
    }
}

/// Keeps `indexes` in step with their sidecar tables until `shutdown`
/// resolves: catches every index up at start, then on each
/// `NOTIFY quarry_search_docs, '<collection>'` (received on a dedicated
/// connection to `database_url`, reconnected after a failure) and every
/// [`POLL_INTERVAL`] in case a notification was missed. Catch-up errors are
/// logged and retried on the next tick.
///
/// `task`, when given, hears of every failed catch-up
/// ([`TaskHandle::failed`]: the follower is down) and of every complete
/// round without failure ([`TaskHandle::running`]).
pub async fn follow(
    indexes: Vec<Arc<CollectionIndex>>,
    pool: Pool,
    database_url: String,
    shutdown: impl Future<Output = ()> + Send,
    task: Option<TaskHandle>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let listener = tokio::spawn(listen(database_url, tx));
    let by_name: HashMap<String, Arc<CollectionIndex>> = indexes
        .iter()
        .map(|i| (i.collection.name.clone(), Arc::clone(i)))
        .collect();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let due: Vec<Arc<CollectionIndex>> = tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => indexes.clone(),
            Some(name) = rx.recv() => {
                let mut names = HashSet::from([name]);
                while let Ok(more) = rx.try_recv() {
                    names.insert(more);
                }
                names.iter().filter_map(|n| by_name.get(n).cloned()).collect()
            }
        };
        let mut failed = false;
        for index in due {
            match index.catch_up(&pool).await {
                Ok(done) if done.rows > 0 || done.reset => {
                    tracing::debug!(collection = %index.collection.name, rows = done.rows, reset = done.reset, "index caught up");
                }
                Ok(_) => {}
                Err(e) => {
                    failed = true;
                    tracing::warn!(collection = %index.collection.name, error = %e, "index catch-up failed");
                    if let Some(task) = &task {
                        task.failed(&format_args!("collection {}: {e}", index.collection.name));
                    }
                }
            }
        }
        if !failed && let Some(task) = &task {
            task.running();
        }
    }
    listener.abort();
}

/// Forwards notification payloads on [`NOTIFY_CHANNEL`] to `tx`, reconnecting
/// after a second when the connection fails; returns when `tx` is closed.
async fn listen(database_url: String, tx: tokio::sync::mpsc::UnboundedSender<String>) {
    loop {
        match tokio_postgres::connect(&database_url, NoTls).await {
            Ok((client, mut connection)) => {
                let forward = tx.clone();
                let pump = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if forward.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                let e = quarry_db::PgError(e);
                                tracing::warn!(error = %e, "search notification connection failed");
                                return;
                            }
                        }
                    }
                });
                if let Err(e) = client
                    .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
                    .await
                {
                    tracing::warn!(error = %quarry_db::PgError(e), "LISTEN failed");
                    pump.abort();
                } else {
                    let _ = pump.await;
                }
                drop(client);
            }
            Err(e) => {
                tracing::warn!(error = %quarry_db::PgError(e), "cannot connect for search notifications");
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyzer_stems_lowercases_and_drops_stop_words() {
        assert_eq!(
            analyse("The Running dogs, and THE cats!"),
            vec!["run", "dog", "cat"]
        );
        assert!(analyse("the and of").is_empty());
        assert!(analyse("").is_empty());
        assert_eq!(analyse("Café déjà-vu"), vec!["café", "déjà", "vu"]);
    }
}
