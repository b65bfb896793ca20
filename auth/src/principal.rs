//! The authenticated caller.

use serde::{Deserialize, Serialize};

/// Who is calling: the tenant whose data and quotas apply, the subject
/// (user or service) inside it, and what it may do.
///
/// [`crate::AuthLayer`] inserts one into the request extensions of every
/// authenticated request; tonic handlers read it with
/// `request.extensions().get::<Principal>()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Tenant identifier; the key for rate limits and row-level security.
    pub tenant: String,
    /// The caller inside the tenant (JWT `sub`, RFC 7519 §4.1.2).
    pub subject: String,
    /// Roles, mapped by policy to grants, masks and a database role.
    pub roles: Vec<String>,
    /// Scopes the token carries. They only narrow what the caller's roles
    /// grant under the policy ([`crate::Policy::grant`]); check permissions
    /// on the [`crate::Grant`] of the request, never here.
    pub scopes: Vec<String>,
}

impl Principal {
    /// The principal [`crate::AuthLayer`] put on `request`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when there is none (a service served without the
    /// auth layer).
    pub fn of<T>(request: &tonic::Request<T>) -> std::result::Result<Principal, tonic::Status> {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| tonic::Status::unauthenticated("no principal on the request"))
    }
}
