//! The caller context that travels with every domain call.

use std::time::{Duration, Instant};

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt as _};

use std::sync::Arc;

use crate::{Grant, Principal};

/// Metadata key of the request id (`x-request-id`, the de-facto header that
/// proxies such as nginx and Envoy set and forward).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id accepted from a client, in bytes; a longer or
/// non-printable one is replaced by a fresh UUID (it is only a log key).
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Who is calling and within what bounds: the verified [`Principal`], the
/// request id that ties log lines and spans of one request together across
/// processes, and the instant after which the work is no longer wanted.
///
/// Built once per RPC by the gRPC adapter ([`Caller::of`]) and passed by
/// reference into every domain call, so a tool's domain code always knows
/// whose request it serves (ARCHITECTURE.md, "the caller's context travels
/// with it into every domain call").
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The verified principal.
    pub principal: Principal,
    /// The request id: the client's `x-request-id` when it sent a usable one,
    /// else a fresh UUID v4.
    pub request_id: String,
    /// When the caller stops waiting: now + its `grpc-timeout`, if it set one.
    pub deadline: Option<Instant>,
    /// What the caller may do under the policy in force (resolved once per
    /// request by [`crate::PolicyLayer`]).
    pub grant: Arc<Grant>,
}

impl Caller {
    /// A caller for `principal` with a fresh request id, no deadline and a
    /// grant that allows nothing; give it one with [`Caller::with_grant`].
    pub fn new(principal: Principal) -> Self {
        Self {
            principal,
            request_id: uuid::Uuid::new_v4().to_string(),
            deadline: None,
            grant: Arc::new(Grant::none()),
        }
    }

    /// A caller for operator commands and background work of this process
    /// (`principal` names it in logs): [`Grant::unrestricted`]. Never for a
    /// request that arrived over the network.
    pub fn operator(principal: Principal) -> Self {
        Self::new(principal).with_grant(Arc::new(Grant::unrestricted()))
    }

    /// The same caller with `grant`.
    #[must_use]
    pub fn with_grant(mut self, grant: Arc<Grant>) -> Self {
        self.grant = grant;
        self
    }

    /// The same caller with `deadline`.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The caller of a request that passed [`crate::AuthLayer`]: its
    /// principal, its `x-request-id` (or a new one), and its `grpc-timeout`
    /// as a deadline counted from now.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when the request carries no principal (a service
    /// served without the auth layer); `INVALID_ARGUMENT` naming
    /// `grpc-timeout` when that header is malformed.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self, Status> {
        let principal = Principal::of(request)?;
        let metadata = request.metadata();
        let request_id = metadata
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= MAX_REQUEST_ID_BYTES
                    && v.bytes().all(|b| b.is_ascii_graphic())
            })
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let timeout = match metadata.get("grpc-timeout") {
            None => None,
            Some(value) => Some(value.to_str().ok().and_then(grpc_timeout).ok_or_else(|| {
                let description = "not a gRPC timeout such as 500m or 2S";
                Status::with_error_details(
                    tonic::Code::InvalidArgument,
                    format!("invalid grpc-timeout: {description}"),
                    ErrorDetails::with_bad_request_violation("grpc-timeout", description),
                )
            })?),
        };
        Ok(Self {
            principal,
            request_id,
            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
            grant: crate::policy::grant_of(request),
        })
    }

    /// [`Caller::of`], recorded on the current span as `tenant`, `subject`
    /// and `request_id` (declare them on the handler's `#[instrument]` with
    /// `fields(tenant, subject, request_id)`).
    ///
    /// # Errors
    /// As [`Caller::of`].
    pub fn of_traced<T>(request: &tonic::Request<T>) -> Result<Self, Status> {
        let caller = Self::of(request)?;
        let span = tracing::Span::current();
        span.record("tenant", caller.principal.tenant.as_str());
        span.record("subject", caller.principal.subject.as_str());
        span.record("request_id", caller.request_id.as_str());
        Ok(caller)
    }

    /// Time left before the deadline (zero once passed); `None` without one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// A `grpc-timeout` header value: up to 8 ASCII digits and a unit, `H`
/// hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n`
/// nanoseconds (gRPC over HTTP/2, "Requests": `Timeout`). `None` when
/// malformed.
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            tenant: "acme".to_owned(),
            subject: "alice".to_owned(),
            roles: vec![],
            scopes: vec![],
        }
    }

    #[test]
    fn request_id_and_deadline_come_from_metadata() {
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(principal());
        request
            .metadata_mut()
            .insert(REQUEST_ID_HEADER, "req-42".parse().unwrap());
        request
            .metadata_mut()
            .insert("grpc-timeout", "2S".parse().unwrap());
        let caller = Caller::of(&request).unwrap();
        assert_eq!(caller.request_id, "req-42");
        assert_eq!(caller.principal, principal());
        let left = caller.remaining().unwrap();
        assert!(left > Duration::from_millis(1500) && left <= Duration::from_secs(2));
    }

    #[test]
    fn unusable_request_ids_are_replaced_and_bad_timeouts_refused() {
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(principal());
        request
            .metadata_mut()
            .insert(REQUEST_ID_HEADER, "x".repeat(200).parse().unwrap());
        let caller = Caller::of(&request).unwrap();
        assert!(uuid::Uuid::parse_str(&caller.request_id).is_ok());
        assert_eq!(caller.deadline, None);
        request
            .metadata_mut()
            .insert("grpc-timeout", "soon".parse().unwrap());
        let err = Caller::of(&request).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn no_principal_is_unauthenticated() {
        let err = Caller::of(&tonic::Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn grpc_timeouts_parse_by_unit() {
        assert_eq!(grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("123456789S"), None);
        assert_eq!(grpc_timeout("S"), None);
        assert_eq!(grpc_timeout("5x"), None);
    }
}
