//! Quarry's database layer, shared by the tools, the orchestrator and the
//! server: everything that talks to PostgreSQL the same way everywhere.
//!
//! - [`pool()`] builds a connection pool; [`Pools`] hands out one shared pool
//!   per database URL, so the tools of one process share connections.
//! - [`ReadOnly`] is the one guarded read-only transaction (`READ ONLY`,
//!   `statement_timeout`, `standard_conforming_strings`, optional
//!   `search_path` and `ROLE`) every query on source data runs in.
//! - [`quote_ident`] and [`quote_literal`] quote identifiers and literals.
//! - [`PgError`] / [`error_text`] render a driver error with PostgreSQL's
//!   SQLSTATE and message (the driver's own text says only "db error").
//! - [`lock`]: advisory locks (session try-lock/unlock, transaction locks).
//! - [`supervisor`]: background tasks restarted with backoff after a
//!   failure, and their state for health and metrics.
//! - [`migrate()`] applies the migrations of the `quarry` schema
//!   (`db/migrations/V*__*.sql`, refinery), idempotently and serialised
//!   across processes, so a tool can run it when it opens.
//! - [`audit`]: the audit trail of statements and refusals
//!   (`quarry.audit_log`).
//! - [`usage`]: usage per tenant and UTC day (`quarry.usage_daily`), for
//!   budgets and reports, and the budget holds of Asks in flight.
//! - [`rate_limit`]: request rate limits (GCRA) shared by every replica.
//! - [`write_behind`]: the SQL tool's audit entries and usage charges,
//!   stored in batches by a background writer, off the statement's path.
//! - With the `test-util` feature, `testing::TestDb` creates a throw-away
//!   database per test.

pub mod audit;
mod error;
mod ident;
pub mod lock;
mod migrate;
mod pool;
pub mod rate_limit;
mod read_only;
pub mod supervisor;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod usage;
pub mod write_behind;

pub use error::{DbError, PgError, Result, error_text, is_unavailable, unavailable_sqlstate};
pub use ident::{quote_ident, quote_literal};
pub use migrate::{migrate, migrate_client};
pub use pool::{Pools, checkout, pool, pool_error_text, reachable};
pub use read_only::{ReadOnly, Session, TraceTag};

/// The pool type every Quarry crate uses (deadpool-postgres).
pub use deadpool_postgres::Pool;
