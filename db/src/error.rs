//! The crate's error type and the rendering of PostgreSQL errors.

use std::fmt;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database URL does not parse.
    #[error("database.url is not a valid PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("building the database pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    /// No connection could be taken from the pool.
    #[error("no database connection available: {}", crate::pool_error_text(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A migration failed; refinery's message names it and PostgreSQL's error.
    #[error("applying migrations: {0}")]
    Migrate(#[from] refinery::Error),
    /// PostgreSQL reported an error.
    #[error("database: {}", error_text(.0))]
    Database(#[from] tokio_postgres::Error),
}

/// Result alias of this crate.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// A driver error that displays as [`error_text`] does: PostgreSQL's message
/// and SQLSTATE rather than the driver's bare "db error". Wrap an error in it
/// where it is formatted (`PgError(&e)` or `PgError(e)`).
#[derive(Debug)]
pub struct PgError<E = tokio_postgres::Error>(pub E);

impl<E: std::borrow::Borrow<tokio_postgres::Error>> fmt::Display for PgError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = self.0.borrow();
        match error.as_db_error() {
            Some(db) => {
                f.write_str(db.message())?;
                if let Some(detail) = db.detail() {
                    write!(f, " ({detail})")?;
                }
                write!(f, " (SQLSTATE {})", db.code().code())
            }
            None => match std::error::Error::source(error) {
                // e.g. "error communicating with the server: connection refused"
                Some(source) => write!(f, "{error}: {source}"),
                None => write!(f, "{error}"),
            },
        }
    }
}

impl<E: std::borrow::Borrow<tokio_postgres::Error> + fmt::Debug> std::error::Error for PgError<E> {}

/// `error` as text: for an error PostgreSQL reported, its primary message,
/// its detail in parentheses when there is one, and its SQLSTATE, e.g.
/// `division by zero (SQLSTATE 22012)`; for other failures (connection,
/// protocol, decoding) the driver's message and its cause.
pub fn error_text(error: &tokio_postgres::Error) -> String {
    PgError(error).to_string()
}

/// Whether SQLSTATE `code` says the server cannot serve now rather than
/// that the statement is wrong: class 08 (connection exception), 57P01
/// `admin_shutdown`, 57P02 `crash_shutdown`, 57P03 `cannot_connect_now`
/// and 53300 `too_many_connections` (PostgreSQL 16 docs, Appendix A).
/// A retry later, on a new connection, may succeed.
pub fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// Whether `error` means the database is unreachable or going away (a
/// dependency that is down: gRPC `UNAVAILABLE`) rather than a statement
/// error: a closed connection, an I/O or protocol failure (no SQLSTATE), or
/// an [`unavailable_sqlstate`].
pub fn is_unavailable(error: &tokio_postgres::Error) -> bool {
    error.is_closed()
        || match error.code() {
            None => true,
            Some(code) => unavailable_sqlstate(code.code()),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_and_connection_sqlstates_are_unavailable_statement_errors_are_not() {
        for code in ["08006", "08001", "57P01", "57P02", "57P03", "53300"] {
            assert!(unavailable_sqlstate(code), "{code}");
        }
        for code in ["22012", "42P01", "57014", "53400", "40001"] {
            assert!(!unavailable_sqlstate(code), "{code}");
        }
    }
}
