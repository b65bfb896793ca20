//! The SQL tool's one error type, [`SqlError`], and its place in the error
//! contract of `quarry-proto` ([`ServiceError`]): the kind of each failure
//! is decided here, the gRPC code in `quarry_proto::error` alone.

use quarry_proto::{FieldViolation, ServiceError, ServiceErrorCode};
use tonic_types::ErrorDetails;

use crate::catalog::CatalogError;
use crate::execute::ExecError;
use crate::schema::SchemaError;
use crate::validate::{Rejection, RejectionKind};

/// Everything that can go wrong in the SQL tool (a [`Rejection`] of the SQL
/// included).
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The SQL was refused.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Execution failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The catalog could not be read.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// No connection for a catalog read.
    #[error("database unavailable: {}", quarry_db::pool_error_text(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A requested schema is not one callers may see.
    #[error("schema {0:?} is not available; available: {1}")]
    UnknownSchema(String, String),
    /// The model failed.
    #[error("model error: {0}")]
    Model(#[from] quarry_llm::LlmError),
    /// The stored catalog or golden pairs could not be read or written.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A golden pair's SQL returned no rows, so it is not stored.
    #[error("the sql returned no rows; a golden pair must answer its question")]
    EmptyGolden,
    /// A shared golden pair (from the golden file) answers this question;
    /// a tenant cannot override it.
    #[error("a shared golden pair answers this question; shared pairs cannot be overridden")]
    SharedGolden,
    /// The tenant has no data source of its own and the shared source is
    /// not served to tenants without one (`sql.shared = false`).
    #[error("tenant {0:?} has no data source")]
    NoSource(String),
}

/// Result alias of this crate.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

impl SqlError {
    /// Whether this is a lack of capacity (the tenant's share of the pool
    /// is taken, or no connection could be had), not a fault of the SQL:
    /// retrying later helps, rewriting the query does not.
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            Self::Pool(_) | Self::Exec(ExecError::Busy(_) | ExecError::Pool(_))
        )
    }

    /// The request field at fault, for the errors that are the caller's:
    /// refused SQL and a golden pair without rows (`sql`), an unknown schema
    /// (`schemas`).
    fn violation(&self) -> Option<FieldViolation> {
        match self {
            Self::Rejected(rejection) => Some(FieldViolation::new(
                "sql",
                format!("refused ({}): {}", rejection.kind, rejection.message),
            )),
            Self::UnknownSchema(..) => Some(FieldViolation::new("schemas", self.to_string())),
            Self::EmptyGolden => Some(FieldViolation::new("sql", self.to_string())),
            Self::SharedGolden => Some(FieldViolation::new("question", self.to_string())),
            Self::Exec(_)
            | Self::Schema(_)
            | Self::Pool(_)
            | Self::Model(_)
            | Self::Catalog(_)
            | Self::NoSource(_) => None,
        }
    }
}

/// A timeout is [`ServiceErrorCode::Timeout`]; a cap is
/// `ResourceExhausted` (the byte cap, and the cost ceiling: like a quota,
/// the query asks for more than this caller may spend, and a cheaper query
/// can succeed; the message names the estimate and the limit); an error the
/// database reports for the query is `BadRequest` (the SQL is wrong for this
/// schema); an unreachable database is `Unavailable`; a value that cannot be
/// decoded is `Internal`.
impl ServiceError for ExecError {
    fn error_code(&self) -> ServiceErrorCode {
        match self {
            Self::Timeout { .. } => ServiceErrorCode::Timeout,
            Self::Pool(_) | Self::Connection(_) => ServiceErrorCode::Unavailable,
            Self::Busy(_) => ServiceErrorCode::ResourceExhausted,
            // the server is shutting down, starting or refusing connections
            Self::Database { code, .. } if quarry_db::unavailable_sqlstate(code) => {
                ServiceErrorCode::Unavailable
            }
            // class 53 insufficient resources (53400: temp_file_limit) and
            // 54 program limit exceeded (PostgreSQL 16 docs, Appendix A):
            // the query asks for more than it may use
            Self::Database { code, .. } if code.starts_with("53") || code.starts_with("54") => {
                ServiceErrorCode::ResourceExhausted
            }
            Self::Database { .. } => ServiceErrorCode::BadRequest,
            Self::TooLarge { .. } | Self::TooExpensive { .. } => {
                ServiceErrorCode::ResourceExhausted
            }
            Self::Decode { .. } => ServiceErrorCode::Internal,
        }
    }
}

/// SQL reading a table, column or schema the caller may not read, and a
/// tenant without a source, are `PermissionDenied`. Other refused SQL, an
/// unknown schema and a golden pair without rows are
/// `BadRequest` with a BadRequest detail naming the field (`invalid sql: …`,
/// `invalid schemas: …`); execution errors as [`ExecError`] says; an
/// unreadable catalog, no connection or a failing model `Unavailable`;
/// a stored catalog that cannot be used `FailedPrecondition`.
impl ServiceError for SqlError {
    fn error_code(&self) -> ServiceErrorCode {
        match self {
            Self::Rejected(rejection)
                if matches!(
                    rejection.kind,
                    RejectionKind::Forbidden | RejectionKind::SchemaNotAllowed
                ) =>
            {
                ServiceErrorCode::PermissionDenied
            }
            Self::NoSource(_) => ServiceErrorCode::PermissionDenied,
            Self::Rejected(_) | Self::UnknownSchema(..) | Self::EmptyGolden => {
                ServiceErrorCode::BadRequest
            }
            Self::SharedGolden => ServiceErrorCode::FailedPrecondition,
            Self::Exec(exec) => exec.error_code(),
            Self::Schema(_) | Self::Pool(_) | Self::Model(_) => ServiceErrorCode::Unavailable,
            Self::Catalog(_) => ServiceErrorCode::FailedPrecondition,
        }
    }

    fn error_details(&self) -> Option<ErrorDetails> {
        if let Self::Exec(ExecError::Busy(busy)) = self {
            return Some(ErrorDetails::with_retry_info(Some(busy.retry_after)));
        }
        self.violation().map(|v| v.details())
    }

    fn status_message(&self) -> String {
        self.violation()
            .map_or_else(|| self.to_string(), |v| v.to_string())
    }
}
