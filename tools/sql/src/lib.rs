//! The text-to-SQL tool's database side: validate model-written SQL, run it
//! read-only with caps, and describe a schema for prompts.
//!
//! Quarry never executes raw model output (see "Safety" in
//! `ARCHITECTURE.md`). A query goes through three steps, each a module here:
//!
//! 1. [`validate`] parses the SQL on its AST (sqlparser, PostgreSQL dialect)
//!    and accepts exactly one read-only query allowed by a
//!    [`ValidationPolicy`]; it yields a [`ValidatedQuery`] or a [`Rejection`]
//!    whose [`RejectionKind`] says why.
//! 2. [`ValidatedQuery::rewritten_sql`] renders the checked AST back to SQL
//!    with a row limit of `max_rows + 1`.
//! 3. [`Executor::execute`] runs it in a `READ ONLY` transaction with
//!    `statement_timeout`, fetching through a portal in batches and stopping
//!    at the row and byte caps, then rolls back; rows come back as typed
//!    [`Cell`]s.
//!
//! [`describe_schema`] reads tables, columns, keys and comments from the
//! catalog, and [`compact_description`] turns them into a token-lean text for
//! a model prompt.
//!
//! The gRPC adapter (`grpc`) maps these domain types to `quarry.v1`; the
//! modules here never see tonic types. With the `test-util` feature,
//! [`testing::TestDb`] creates a throw-away database for tests.

pub mod catalog;
pub mod chart;
pub mod digest;
pub mod execute;
pub mod explain;
pub mod golden;
pub mod grpc;
pub mod linking;
pub mod role;
pub mod schema;
pub mod service;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod validate;

pub use execute::{Cell, Column, ExecConfig, ExecError, Executor, QueryResult};
pub use schema::{
    ColumnInfo, ForeignKey, SchemaError, TableInfo, TableKind, compact_description, describe_schema,
};
pub use validate::{
    Rejection, RejectionKind, TableRef, ValidatedQuery, ValidationPolicy, validate,
};

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL was refused by the validator.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Running the query failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Reading the catalog failed.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
