//! The one error contract of Quarry's services: every service error says
//! what kind of failure it is ([`ServiceErrorCode`]), and this module alone
//! decides which `tonic::Code` each kind becomes ([`ServiceErrorCode::grpc_code`],
//! [`status_of`]), so the same failure has the same code in every service
//! (after quickwit's `quickwit-proto/src/error.rs`).
//!
//! A tool's error enum (`SqlError`, `SearchError`, `SummaryError`)
//! implements [`ServiceError`]; its gRPC adapter turns an error into a
//! status with [`status_of`] in one place. Errors that help a client act
//! carry google.rpc details ([`ServiceError::error_details`]): `BadRequest`
//! field violations, `RetryInfo`, `ErrorInfo`.

use std::fmt;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// What kind of failure an error is, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceErrorCode {
    /// The request is wrong and retrying it unchanged will fail again
    /// (`INVALID_ARGUMENT`).
    BadRequest,
    /// What the request names does not exist (`NOT_FOUND`).
    NotFound,
    /// The request is valid but the service is not in a state (or not
    /// configured) to serve it (`FAILED_PRECONDITION`).
    FailedPrecondition,
    /// The caller is known but not allowed (`PERMISSION_DENIED`).
    PermissionDenied,
    /// The caller is not known: no or a bad credential (`UNAUTHENTICATED`).
    Unauthenticated,
    /// A quota, rate or size limit refused the request (`RESOURCE_EXHAUSTED`).
    ResourceExhausted,
    /// A conflicting operation is running; retry later (`ABORTED`).
    Aborted,
    /// A dependency (database, model, embedder) cannot be reached right now;
    /// retrying may succeed (`UNAVAILABLE`).
    Unavailable,
    /// The work did not finish within its time limit (`DEADLINE_EXCEEDED`).
    Timeout,
    /// The caller cancelled the request (`CANCELLED`).
    Cancelled,
    /// A bug or an unexpected failure on our side (`INTERNAL`).
    Internal,
}

impl ServiceErrorCode {
    /// The gRPC status code of this kind of failure (the one mapping).
    pub fn grpc_code(self) -> Code {
        match self {
            Self::BadRequest => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::Aborted => Code::Aborted,
            Self::Unavailable => Code::Unavailable,
            Self::Timeout => Code::DeadlineExceeded,
            Self::Cancelled => Code::Cancelled,
            Self::Internal => Code::Internal,
        }
    }

    /// Whether the same request may succeed later (a dependency down, a
    /// running build, a timeout), as opposed to a request that is wrong.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Unavailable | Self::Aborted | Self::Timeout)
    }
}

impl fmt::Display for ServiceErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.grpc_code())
    }
}

/// An error a service returns to its clients.
pub trait ServiceError: fmt::Display {
    /// What kind of failure this is.
    fn error_code(&self) -> ServiceErrorCode;

    /// google.rpc details the status carries (field violations, retry
    /// delay, error info); none by default.
    fn error_details(&self) -> Option<ErrorDetails> {
        None
    }

    /// The status message; the error's `Display` text by default.
    fn status_message(&self) -> String {
        self.to_string()
    }
}

/// `error` as a `tonic::Status`: the code of its [`ServiceErrorCode`], its
/// [`ServiceError::status_message`], and its details when it has any.
pub fn status_of<E: ServiceError + ?Sized>(error: &E) -> Status {
    let code = error.error_code().grpc_code();
    let message = error.status_message();
    match error.error_details() {
        Some(details) => Status::with_error_details(code, message, details),
        None => Status::new(code, message),
    }
}

/// A request field at fault: `INVALID_ARGUMENT` reading
/// `invalid <field>: <description>` with a google.rpc `BadRequest` field
/// violation naming `field`. [`crate::status::bad_request`] is this as a
/// status; tool errors use it to build theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Request field path, e.g. `filter.and[1].range.lower`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The `BadRequest` detail naming the field.
    pub fn details(&self) -> ErrorDetails {
        ErrorDetails::with_bad_request_violation(&self.field, &self.description)
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.description)
    }
}

impl ServiceError for FieldViolation {
    fn error_code(&self) -> ServiceErrorCode {
        ServiceErrorCode::BadRequest
    }

    fn error_details(&self) -> Option<ErrorDetails> {
        Some(self.details())
    }
}

impl From<FieldViolation> for Status {
    fn from(violation: FieldViolation) -> Self {
        status_of(&violation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code() {
        let codes = [
            (ServiceErrorCode::BadRequest, Code::InvalidArgument),
            (ServiceErrorCode::NotFound, Code::NotFound),
            (
                ServiceErrorCode::FailedPrecondition,
                Code::FailedPrecondition,
            ),
            (ServiceErrorCode::PermissionDenied, Code::PermissionDenied),
            (ServiceErrorCode::Unauthenticated, Code::Unauthenticated),
            (ServiceErrorCode::ResourceExhausted, Code::ResourceExhausted),
            (ServiceErrorCode::Aborted, Code::Aborted),
            (ServiceErrorCode::Unavailable, Code::Unavailable),
            (ServiceErrorCode::Timeout, Code::DeadlineExceeded),
            (ServiceErrorCode::Cancelled, Code::Cancelled),
            (ServiceErrorCode::Internal, Code::Internal),
        ];
        for (kind, code) in codes {
            assert_eq!(kind.grpc_code(), code, "{kind:?}");
        }
        assert!(ServiceErrorCode::Unavailable.is_retryable());
        assert!(!ServiceErrorCode::BadRequest.is_retryable());
    }

    #[test]
    fn a_field_violation_keeps_its_detail() {
        let status = status_of(&FieldViolation::new("k", "must be positive"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "invalid k: must be positive");
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "k"
        );
    }

    #[test]
    fn an_error_without_details_is_a_plain_status() {
        struct Down;
        impl fmt::Display for Down {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("unavailable: database pool: timed out")
            }
        }
        impl ServiceError for Down {
            fn error_code(&self) -> ServiceErrorCode {
                ServiceErrorCode::Unavailable
            }
        }
        let status = status_of(&Down);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "unavailable: database pool: timed out");
        assert!(status.details().is_empty());
    }
}
