//! The hybrid search tool: meaning-based search over free-text columns,
//! always inside structured filters.
//!
//! - [`collection`] declares what is searched (source table, text, filter and
//!   stored fields) and owns the sidecar table in PostgreSQL that holds each
//!   collection's documents and embeddings (written by `quarry-search-sync`);
//!   [`ddl`] creates that table (the fixed bookkeeping tables are
//!   migrations of `quarry-db`).
//! - [`filter`]: one typed filter, translated to parameterised SQL and to a
//!   tantivy query with identical meaning.
//! - [`index`]: a tantivy index per collection (BM25, English stemming),
//!   rebuilt from and kept in step with the sidecar (LISTEN/NOTIFY + polling).
//! - [`vector`]: pgvector k-NN, exact when the filter is selective, HNSW with
//!   a raised `ef_search` otherwise.
//! - [`fusion`]: weighted reciprocal rank fusion.
//! - [`service`]: [`SearchTool`], the domain service ([`SearchConfig`],
//!   validation, modes, rerank hook, field fetching); [`grpc`]: the
//!   `quarry.v1.SearchService` adapter. [`error`]: the crate's one error type.

pub mod collection;
pub mod ddl;
pub mod error;
pub mod filter;
pub mod fusion;
pub mod grpc;
pub mod index;
pub mod service;
pub mod vector;

pub use collection::{Collection, CollectionConfig, CollectionError, FilterType};
pub use ddl::ensure_sidecar;
pub use error::{Result, SearchError};
pub use filter::{CheckedFilter, Filter, FilterError, Value};
pub use grpc::SearchGrpc;
pub use service::{Mode, Reranker, SearchConfig, SearchRequest, SearchResponse, SearchTool};
