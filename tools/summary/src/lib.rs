//! The summaries tool: trend questions ("how has the Tate's collecting of
//! works by women changed since 1950?") answered from pre-computed
//! paragraphs rather than thousands of rows.
//!
//! Each declared kind of entity (an artist, an acquisition decade, the whole
//! collection) has parameterised SQL figures; the builder runs them per
//! entity, computes the facts deterministically in Rust (counts, shares,
//! period-over-period change, least-squares trend, peaks, top-k), writes
//! them out as a short paragraph through a template, embeds it, and stores
//! text, facts, data version and embedding in `quarry.summaries`. Lookups
//! find an entity by key, exact or fuzzy name, list a kind, or search the
//! texts by meaning; every answer says how fresh it is.
//!
//! - [`definition`]: kinds, figures, computations and templates as declared
//!   in configuration, and their static validation.
//! - [`analysis`]: rows → facts (pure, order-independent).
//! - [`render`]: facts → paragraph (MiniJinja with number-formatting filters).
//! - [`builder`]: the build job (batches, concurrency, data versions,
//!   failures per entity, advisory lock across replicas).
//! - [`store`]: the `quarry.summaries` and `quarry.summary_builds` tables.
//! - [`lookup`]: name folding and fuzzy name scoring.
//! - [`model`]: the shared values (a stored [`Summary`], build options,
//!   progress and reports); [`prepare`]: the kinds prepared against the
//!   database at start-up.
//! - [`service`]: [`SummaryTool`], the domain service (open, get, search,
//!   kinds, scheduler); [`grpc`]: the `quarry.v1.SummaryService` adapter.
//!   [`error`]: the crate's one error type.

pub mod analysis;
pub mod builder;
pub mod definition;
pub mod error;
pub mod grpc;
pub mod lookup;
pub mod model;
pub mod prepare;
pub mod render;
pub mod service;
pub mod store;
mod validation;

pub use builder::BUILD_LOCK_KEY;
pub use definition::{
    Computation, DefinitionError, DefinitionsFile, FigureConfig, KindConfig, Shape, SummaryConfig,
};
pub use error::{Candidate, Result, SummaryError};
pub use grpc::{BUILD_SCOPE, SummaryGrpc, status_of};
pub use model::{BuildFailure, BuildOptions, BuildProgressEvent, BuildReport, Summary};
pub use service::{
    GetRequest, GetResponse, KindStatus, MatchKind, Retrieval, SearchRequest, SearchResponse,
    SummaryTool,
};
