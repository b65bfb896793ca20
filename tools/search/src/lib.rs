//! The hybrid search tool: meaning-based search over free-text columns,
//! always inside structured filters.
//!
//! [`collection`] declares what is searched (source table, text, filter and
//! stored fields) and owns the sidecar table in PostgreSQL that holds each
//! collection's documents and embeddings.

pub mod collection;

pub use collection::{Collection, CollectionConfig, CollectionError, FilterType, ensure_sidecar};
