//! Change data capture for search collections: keeps each collection's
//! sidecar table (see `quarry_search::collection`) in step with its source.
//!
//! A [`Syncer`] owns one collection. [`Syncer::run`] is the long-running
//! job; its steps are public so the CLI and tests can drive them one by one:
//!
//! 1. [`Syncer::install`]: creates or checks the sidecar
//!    ([`quarry_search::ensure_sidecar`], with the embedder's model and
//!    dimension) and installs statement-level `AFTER INSERT/UPDATE/DELETE`
//!    triggers (over transition tables) on the source and on every
//!    dependent table; they append the touched keys to
//!    `quarry.search_outbox` and notify [`OUTBOX_CHANNEL`]. A `TRUNCATE`
//!    trigger restarts the backfill. A source table that was dropped and
//!    recreated (its OID changed) restarts the backfill too.
//! 2. [`Syncer::backfill`]: copies the source in primary-key order, in
//!    batches; each batch and its checkpoint commit together, so a crash
//!    resumes exactly where the last commit left off. A restarted backfill
//!    tombstones, at its end, every document it did not rewrite (mark and
//!    sweep over `backfill_from_version`).
//! 3. [`Syncer::process_outbox`]: claims queued keys, re-reads those source
//!    rows, upserts or tombstones their documents and deletes the queue
//!    entries, in one transaction (a crash redoes the batch; re-applying it
//!    is idempotent).
//! 4. [`Syncer::embed_pending`]: fills the vector columns of documents whose
//!    text changed, reusing any vector already computed for the same text
//!    (SHA-256 content hash); runs beside the document sync so BM25 serves
//!    new text at once and vectors follow.
//!
//! # Versions and followers
//!
//! Every transaction that writes documents takes their `version` from
//! `nextval('quarry.search_version')` while holding a per-collection
//! transaction-level advisory lock, and notifies [`DOCS_CHANNEL`] (payload:
//! the collection name) on commit. Writers of one collection are thus
//! serialised, so a follower (the tantivy index) reading `version >
//! watermark` in version order never misses a row. Writing vectors does not
//! take a version. [`Syncer::run`] additionally holds a session-level
//! advisory lock so only one syncer per collection works at a time.

mod config;
mod embed;
mod freshness;
mod sql;
mod syncer;

pub use config::SyncConfig;
pub use embed::EmbedReport;
pub use freshness::Freshness;
pub use sql::{DOCS_CHANNEL, OUTBOX_CHANNEL};
pub use syncer::{BackfillReport, OutboxReport, Progress, Status, Syncer};

use quarry_search::CollectionError;

/// Errors of the sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Preparing the collection failed: invalid source, or the configured
    /// embedder differs from the one that wrote the vectors
    /// ([`CollectionError::EmbedderMismatch`]).
    #[error(transparent)]
    Collection(#[from] CollectionError),
    /// The source does not suit the collection (key column not unique, a
    /// field expression that does not compile, …).
    #[error("collection {collection}: {message}")]
    Source {
        /// Collection name.
        collection: String,
        /// What is wrong.
        message: String,
    },
    /// The embedder failed.
    #[error("embedding: {0}")]
    Embedding(#[from] quarry_llm::LlmError),
    /// The embedder returned the wrong number or length of vectors.
    #[error("embedding: expected {expected} vectors of {dimension} dims, got {got}")]
    EmbeddingShape {
        /// Vectors asked for.
        expected: usize,
        /// Dimension the embedder declares.
        dimension: usize,
        /// What came back (count, or the first wrong length).
        got: String,
    },
    /// The dedicated connection that holds the leader lock closed; the
    /// syncer stopped so that another one can take over.
    #[error("lost the leader connection of collection {0}")]
    LostLeadership(String),
    /// Getting a pooled connection failed.
    #[error("connection pool: {}", quarry_db::pool_error_text(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// PostgreSQL failed; the message includes the server's.
    #[error("database: {}", quarry_db::error_text(.0))]
    Database(#[from] tokio_postgres::Error),
}

/// Result alias of this crate.
pub type Result<T, E = SyncError> = std::result::Result<T, E>;
