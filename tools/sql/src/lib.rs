//! The text-to-SQL tool: turn a question into SQL, never run anything
//! unsafe, run it read-only with caps, and send the model only the schema it
//! needs.
//!
//! Quarry never executes raw model output (see "Safety" in
//! `ARCHITECTURE.md`). A query goes through three steps, each a module here:
//!
//! 1. [`validate()`] parses the SQL on its AST (sqlparser, PostgreSQL dialect)
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
//! a model prompt; [`catalog`] stores them (with `pg_stats` figures and
//! embeddings) in Quarry's own schema, keyed by a hash of the live catalog.
//! [`linking`] picks the tables and columns a question needs; [`golden`]
//! holds validated question→SQL pairs (offline answers and few-shots).
//!
//! [`service::SqlTool`] puts it together — generation loop (model →
//! validate → execute → judge → retry), [`digest`], [`explain`], [`chart`]
//! hints — with [`SqlError`] as the one error type; [`grpc`] maps
//! it to `quarry.v1`, and the other modules never see tonic types. The
//! read-only transaction, identifier quoting and the test fixture come from
//! `quarry-db`.

pub mod cache;
pub mod catalog;
pub mod chart;
pub mod digest;
pub mod error;
pub mod execute;
pub mod explain;
pub mod golden;
pub mod govern;
pub mod grpc;
pub mod linking;
pub mod role;
pub mod schema;
pub mod semantic;
pub mod service;
pub mod sources;
pub mod validate;

pub use error::SqlError;
pub use execute::{Cell, Column, ExecConfig, ExecError, Executor, QueryResult};
pub use schema::{
    ColumnInfo, ForeignKey, SchemaError, TableInfo, TableKind, compact_description, describe_schema,
};
pub use validate::{
    QuerySession, Rejection, RejectionKind, TableRef, ValidatedQuery, ValidationPolicy, validate,
};
