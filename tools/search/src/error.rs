//! The crate's one error type, [`SearchError`], and its kinds in the error
//! contract of `quarry-proto` ([`ServiceError`]); the gRPC adapter turns it
//! into a status in one place ([`crate::grpc::status_of`]).

use quarry_proto::{FieldViolation, ServiceError, ServiceErrorCode};
use tonic_types::ErrorDetails;

use crate::collection::CollectionError;
use crate::filter::FilterError;

/// Everything that can go wrong in the search tool.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The request is wrong; `field` names the request field at fault
    /// (`collection`, `query`, `k`, `fields[2]`, `filter.and[1].range.lower`).
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// Request field path.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request is fine but this server cannot serve it as configured
    /// (e.g. vector mode without an embedder).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A dependency (database, embedder) cannot be reached; retrying later
    /// may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Configuration or collection set-up failed (start-up only).
    #[error("collection: {0}")]
    Collection(#[from] CollectionError),
    /// PostgreSQL reported an error.
    #[error("database: {}", quarry_db::error_text(.0))]
    Database(#[from] tokio_postgres::Error),
    /// tantivy failed (I/O on the index directory, a corrupt index).
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// Anything else that is our fault.
    #[error("internal: {0}")]
    Internal(String),
    /// The caller's policy does not grant the collection
    /// (`PERMISSION_DENIED`).
    #[error("collection {0} is not available to your roles")]
    Forbidden(String),
    /// The caller's policy hides a field of the collection
    /// (`policy.roles.<r>.collection_fields`) that the request uses, or
    /// leaves it no text field to search (`PERMISSION_DENIED`).
    #[error("{at}: {message}")]
    FieldForbidden {
        /// Request field path, e.g. `filter.and[1].eq.field` or `fields[0]`.
        at: String,
        /// What is refused, naming the field.
        message: String,
    },
    /// The caller's tenant already runs its share of searches
    /// (`RESOURCE_EXHAUSTED` with `RetryInfo`).
    #[error(transparent)]
    Busy(#[from] quarry_auth::shares::ShareExhausted),
}

impl From<FilterError> for SearchError {
    fn from(e: FilterError) -> Self {
        SearchError::InvalidArgument {
            field: e.path,
            message: e.message,
        }
    }
}

impl From<deadpool_postgres::PoolError> for SearchError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        SearchError::Unavailable(format!("database pool: {}", quarry_db::pool_error_text(&e)))
    }
}

impl From<tokio::task::JoinError> for SearchError {
    fn from(e: tokio::task::JoinError) -> Self {
        SearchError::Internal(format!("blocking task failed: {e}"))
    }
}

impl SearchError {
    /// An [`SearchError::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SearchError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The caller's mistakes are `BadRequest` with a BadRequest detail naming
/// the field; a missing embedder is `FailedPrecondition`; an unreachable
/// database or embedder `Unavailable` (a database error on a broken
/// connection too); anything else `Internal`.
impl ServiceError for SearchError {
    fn error_code(&self) -> ServiceErrorCode {
        match self {
            Self::InvalidArgument { .. } => ServiceErrorCode::BadRequest,
            Self::FailedPrecondition(_) => ServiceErrorCode::FailedPrecondition,
            Self::Forbidden(_) | Self::FieldForbidden { .. } => ServiceErrorCode::PermissionDenied,
            Self::Unavailable(_) => ServiceErrorCode::Unavailable,
            Self::Busy(_) => ServiceErrorCode::ResourceExhausted,
            Self::Database(e) if quarry_db::is_unavailable(e) => ServiceErrorCode::Unavailable,
            Self::Database(_) | Self::Index(_) | Self::Collection(_) | Self::Internal(_) => {
                ServiceErrorCode::Internal
            }
        }
    }

    fn error_details(&self) -> Option<ErrorDetails> {
        match self {
            Self::InvalidArgument { field, message } => {
                Some(FieldViolation::new(field.clone(), message.clone()).details())
            }
            Self::Busy(busy) => Some(ErrorDetails::with_retry_info(Some(busy.retry_after))),
            Self::FailedPrecondition(_)
            | Self::Forbidden(_)
            | Self::FieldForbidden { .. }
            | Self::Unavailable(_)
            | Self::Collection(_)
            | Self::Database(_)
            | Self::Index(_)
            | Self::Internal(_) => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = SearchError> = std::result::Result<T, E>;
