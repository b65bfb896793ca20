//! The crate's one error type, [`SummaryError`], and its kinds and details
//! in the error contract of `quarry-proto` ([`ServiceError`]); the gRPC
//! adapter turns it into a status in one place ([`crate::grpc::status_of`]).

use std::collections::HashMap;
use std::time::Duration;

use quarry_proto::{FieldViolation, ServiceError, ServiceErrorCode};
use tonic_types::ErrorDetails;

use crate::definition::DefinitionError;

/// `google.rpc.ErrorInfo.domain` of this service's errors.
pub const ERROR_DOMAIN: &str = "quarry.summaries";
/// Retry delay suggested when a build is already running.
pub const BUILD_RUNNING_RETRY: Duration = Duration::from_secs(30);

/// An entity that might be the one meant, with its name similarity.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    /// Kind name, e.g. `artist`.
    pub kind: String,
    /// Entity key (text form), e.g. `558`.
    pub key: String,
    /// Display name, e.g. `Joseph Mallord William Turner`.
    pub name: String,
    /// Fuzzy name score in `[0, 1]` ([`crate::lookup::fuzzy_score`]); 1 for
    /// exact key or name matches.
    pub score: f64,
}

/// Everything that can go wrong in the summaries tool.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The request is wrong; `field` names the request field at fault
    /// (`kind`, `entity`, `limit`, `query`, `k`, `kinds[1]`, `entity_keys`).
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// Request field path.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// No entity matches `entity` well enough; `closest` holds the best
    /// candidates anyway (up to 5, best first).
    #[error("{}", not_found_message(entity, kind.as_deref(), closest))]
    NotFound {
        /// The entity text asked for.
        entity: String,
        /// The kind searched, `None` for every kind.
        kind: Option<String>,
        /// The closest entities, best first.
        closest: Vec<Candidate>,
    },
    /// Another build (in this process or another replica) holds the build
    /// lock; try again later.
    #[error("a summary build is already running")]
    BuildRunning,
    /// A summary definition cannot be used (start-up only); names the kind
    /// and figure.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// Settings outside the definitions are unusable (e.g. `role` names a
    /// role that does not exist).
    #[error("summary configuration: {0}")]
    Config(String),
    /// A dependency (database, embedder) cannot be reached; retrying later
    /// may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// PostgreSQL reported an error.
    #[error("database: {}", quarry_db::error_text(.0))]
    Database(#[from] tokio_postgres::Error),
    /// Anything else that is our fault.
    #[error("internal: {0}")]
    Internal(String),
    /// The caller's policy does not grant this summary kind
    /// (`PERMISSION_DENIED`).
    #[error("summary kind {0} is not available to your roles")]
    Forbidden(String),
    /// The caller's tenant already runs its share of summary reads
    /// (`RESOURCE_EXHAUSTED` with `RetryInfo`).
    #[error(transparent)]
    Busy(#[from] quarry_auth::shares::ShareExhausted),
}

impl SummaryError {
    /// Whether this is the database (or another dependency) being
    /// unreachable, which a retry later may get past: [`Self::Unavailable`],
    /// or a [`Self::Database`] error that [`quarry_db::is_unavailable`] says
    /// is one.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Database(e) => quarry_db::is_unavailable(e),
            Self::InvalidArgument { .. }
            | Self::NotFound { .. }
            | Self::BuildRunning
            | Self::Definition(_)
            | Self::Config(_)
            | Self::Internal(_)
            | Self::Forbidden(_)
            | Self::Busy(_) => false,
        }
    }
}

/// `no artist matching "zzzz"; closest: Joseph Mallord William Turner (artist 558), …`
fn not_found_message(entity: &str, kind: Option<&str>, closest: &[Candidate]) -> String {
    let what = kind.unwrap_or("entity");
    let mut message = format!("no {what} matching {entity:?}");
    if !closest.is_empty() {
        let names: Vec<String> = closest
            .iter()
            .map(|c| format!("{} ({} {})", c.name, c.kind, c.key))
            .collect();
        message.push_str("; closest: ");
        message.push_str(&names.join(", "));
    }
    message
}

impl From<deadpool_postgres::PoolError> for SummaryError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        SummaryError::Unavailable(format!("database pool: {}", quarry_db::pool_error_text(&e)))
    }
}

impl From<quarry_db::DbError> for SummaryError {
    fn from(e: quarry_db::DbError) -> Self {
        match e {
            quarry_db::DbError::Database(e) => SummaryError::Database(e),
            quarry_db::DbError::Pool(e) => SummaryError::from(e),
            other @ quarry_db::DbError::Url(_)
            | other @ quarry_db::DbError::Build(_)
            | other @ quarry_db::DbError::Migrate(_) => SummaryError::Internal(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for SummaryError {
    fn from(e: tokio::task::JoinError) -> Self {
        SummaryError::Internal(format!("blocking task failed: {e}"))
    }
}

impl SummaryError {
    /// An [`SummaryError::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SummaryError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The caller's mistakes are `BadRequest` with a BadRequest detail naming
/// the field; an unknown entity is `NotFound` naming the closest entities,
/// with an ErrorInfo (reason `ENTITY_NOT_FOUND`, metadata `entity`, `kind`
/// and `closest`, a JSON array of `{kind, key, name, score}`); a build
/// already running is `Aborted` with RetryInfo; a tenant past its share of
/// summary reads `ResourceExhausted` with RetryInfo; a definition or
/// configuration problem `FailedPrecondition`; an unreachable database or
/// embedder `Unavailable` (a database error on a broken connection too);
/// anything else `Internal`.
impl ServiceError for SummaryError {
    fn error_code(&self) -> ServiceErrorCode {
        match self {
            Self::InvalidArgument { .. } => ServiceErrorCode::BadRequest,
            Self::NotFound { .. } => ServiceErrorCode::NotFound,
            Self::BuildRunning => ServiceErrorCode::Aborted,
            Self::Definition(_) | Self::Config(_) => ServiceErrorCode::FailedPrecondition,
            Self::Unavailable(_) => ServiceErrorCode::Unavailable,
            Self::Forbidden(_) => ServiceErrorCode::PermissionDenied,
            Self::Busy(_) => ServiceErrorCode::ResourceExhausted,
            Self::Database(e) if quarry_db::is_unavailable(e) => ServiceErrorCode::Unavailable,
            Self::Database(_) | Self::Internal(_) => ServiceErrorCode::Internal,
        }
    }

    fn error_details(&self) -> Option<ErrorDetails> {
        match self {
            Self::InvalidArgument { field, message } => {
                Some(FieldViolation::new(field.clone(), message.clone()).details())
            }
            Self::NotFound {
                entity,
                kind,
                closest,
            } => {
                let mut metadata = HashMap::new();
                metadata.insert("entity".to_owned(), entity.clone());
                metadata.insert("kind".to_owned(), kind.clone().unwrap_or_default());
                metadata.insert(
                    "closest".to_owned(),
                    serde_json::to_string(closest).unwrap_or_default(),
                );
                Some(ErrorDetails::with_error_info(
                    "ENTITY_NOT_FOUND",
                    ERROR_DOMAIN,
                    metadata,
                ))
            }
            Self::BuildRunning => Some(ErrorDetails::with_retry_info(Some(BUILD_RUNNING_RETRY))),
            Self::Busy(busy) => Some(ErrorDetails::with_retry_info(Some(busy.retry_after))),
            Self::Definition(_)
            | Self::Config(_)
            | Self::Unavailable(_)
            | Self::Forbidden(_)
            | Self::Database(_)
            | Self::Internal(_) => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = SummaryError> = std::result::Result<T, E>;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_the_closest() {
        let e = SummaryError::NotFound {
            entity: "zzzz".into(),
            kind: Some("artist".into()),
            closest: vec![
                Candidate {
                    kind: "artist".into(),
                    key: "558".into(),
                    name: "Joseph Mallord William Turner".into(),
                    score: 0.1,
                },
                Candidate {
                    kind: "artist".into(),
                    key: "1293".into(),
                    name: "David Hockney".into(),
                    score: 0.0,
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "no artist matching \"zzzz\"; closest: Joseph Mallord William Turner (artist 558), \
             David Hockney (artist 1293)"
        );
        let none = SummaryError::NotFound {
            entity: "x".into(),
            kind: None,
            closest: vec![],
        };
        assert_eq!(none.to_string(), "no entity matching \"x\"");
    }
}
