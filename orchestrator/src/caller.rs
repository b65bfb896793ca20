//! Who is asking: the caller context of one `Ask` as the orchestrator needs
//! it — the [`quarry_auth::Caller`] (principal, request id, deadline) plus
//! the credentials forwarded to the tool services, so that every tool
//! enforces the caller's scopes itself and logs under the same request id.

use quarry_auth::{Caller, REQUEST_ID_HEADER};

use crate::transport::DependencyWatch;
use tonic::{
    Status,
    metadata::{Ascii, MetadataValue},
};

/// The caller of one `Ask`: who, under which request id, until when, and
/// with which credentials the tool services are called on their behalf.
#[derive(Debug, Clone)]
pub struct AskCaller {
    /// The verified principal, the request id (the client's `x-request-id`
    /// or a fresh UUID; also the `Ask`'s request id, in its `started` event
    /// and stored turn) and the caller's deadline (`grpc-timeout`): the run
    /// stops at the earlier of it and `orchestrator.deadline_secs`. tonic
    /// enforces `grpc-timeout` only until the response headers, which a
    /// streaming `Ask` sends at once, so the run enforces it itself.
    pub caller: Caller,
    /// The caller's `authorization` header, forwarded to tool services.
    pub authorization: Option<MetadataValue<Ascii>>,
    /// The caller's token as the auth layer verified it, so the tool
    /// services of this process take its principal instead of verifying the
    /// token again ([`quarry_auth::VerifiedToken`]); `None` when the request
    /// did not pass this process's auth layer.
    pub verified: Option<quarry_auth::VerifiedToken>,
    /// Set when a tool service was unavailable for this `Ask` (every
    /// request [`AskCaller::request`] makes carries it to the transport).
    pub dependencies: DependencyWatch,
}

impl AskCaller {
    /// The caller of a request that passed the auth layer: [`Caller::of`]
    /// plus its `authorization` header.
    ///
    /// # Errors
    /// As [`Caller::of`]: `UNAUTHENTICATED` without a principal,
    /// `INVALID_ARGUMENT` naming `grpc-timeout` when that header is malformed.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self, Status> {
        Ok(Self {
            caller: Caller::of(request)?,
            authorization: request.metadata().get("authorization").cloned(),
            verified: request
                .extensions()
                .get::<quarry_auth::VerifiedToken>()
                .cloned(),
            dependencies: DependencyWatch::default(),
        })
    }

    /// `message` as a request to a tool service on the caller's behalf: with
    /// the caller's `authorization` and `x-request-id`, and the time left
    /// before the caller's deadline as `grpc-timeout`, so the tool's own
    /// [`Caller`] has the same deadline; its extensions carry
    /// [`AskCaller::dependencies`].
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(self.dependencies.clone());
        if let Some(verified) = &self.verified {
            request.extensions_mut().insert(verified.clone());
        }
        if let Some(left) = self.caller.remaining() {
            request.set_timeout(left);
        }
        let metadata = request.metadata_mut();
        if let Some(auth) = &self.authorization {
            metadata.insert("authorization", auth.clone());
        }
        // the id is printable ASCII (checked by `Caller::of`, or a UUID)
        if let Ok(id) = self.caller.request_id.parse::<MetadataValue<Ascii>>() {
            metadata.insert(REQUEST_ID_HEADER, id);
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_auth::Principal;

    #[test]
    fn tool_requests_carry_the_authorization_and_the_request_id() {
        let mut incoming = tonic::Request::new(());
        incoming.extensions_mut().insert(Principal {
            tenant: "acme".to_owned(),
            subject: "alice".to_owned(),
            roles: vec![],
            scopes: vec![],
        });
        let metadata = incoming.metadata_mut();
        metadata.insert("authorization", "Bearer t0ken".parse().unwrap());
        metadata.insert(REQUEST_ID_HEADER, "req-7".parse().unwrap());
        let caller = AskCaller::of(&incoming).unwrap();
        assert_eq!(caller.caller.request_id, "req-7");
        let outgoing = caller.request(42);
        assert_eq!(
            outgoing.metadata().get("authorization").unwrap(),
            "Bearer t0ken"
        );
        assert_eq!(outgoing.metadata().get(REQUEST_ID_HEADER).unwrap(), "req-7");
        assert!(outgoing.metadata().get("grpc-timeout").is_none());
    }

    /// The token the auth layer verified for the Ask rides along, so the
    /// in-process tools do not verify it again; without one, nothing does.
    #[test]
    fn tool_requests_carry_the_verified_token_when_the_ask_had_one() {
        let principal = Principal {
            tenant: "acme".to_owned(),
            subject: "alice".to_owned(),
            roles: vec![],
            scopes: vec![],
        };
        let mut incoming = tonic::Request::new(());
        incoming.extensions_mut().insert(principal.clone());
        let caller = AskCaller::of(&incoming).unwrap();
        assert!(
            caller
                .request(())
                .extensions()
                .get::<quarry_auth::VerifiedToken>()
                .is_none()
        );
        incoming
            .extensions_mut()
            .insert(quarry_auth::VerifiedToken::new("t0ken", principal));
        let caller = AskCaller::of(&incoming).unwrap();
        let outgoing = caller.request(());
        let verified = outgoing
            .extensions()
            .get::<quarry_auth::VerifiedToken>()
            .unwrap();
        assert_eq!(verified.principal_for("t0ken").unwrap().tenant, "acme");
        assert!(verified.principal_for("other").is_none());
    }

    #[test]
    fn tool_requests_carry_the_time_left_before_the_deadline() {
        let mut incoming = tonic::Request::new(());
        incoming.extensions_mut().insert(Principal {
            tenant: "acme".to_owned(),
            subject: "alice".to_owned(),
            roles: vec![],
            scopes: vec![],
        });
        incoming
            .metadata_mut()
            .insert("grpc-timeout", "5S".parse().unwrap());
        let caller = AskCaller::of(&incoming).unwrap();
        let outgoing = caller.request(());
        let header = outgoing.metadata().get("grpc-timeout").unwrap();
        let left = quarry_auth::grpc_timeout(header.to_str().unwrap()).unwrap();
        assert!(
            left > std::time::Duration::from_secs(4) && left <= std::time::Duration::from_secs(5),
            "{left:?}"
        );
    }
}
