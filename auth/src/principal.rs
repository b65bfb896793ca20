//! The authenticated caller.

use serde::{Deserialize, Serialize};

use crate::error::{AuthError, Result};

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
    /// Tool scopes granted directly by the token.
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

    /// Whether the principal holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// `Ok` if the principal holds `scope`, else [`AuthError::MissingScope`]
    /// (`PERMISSION_DENIED`: the token is valid, the caller is not allowed).
    ///
    /// # Errors
    /// [`AuthError::MissingScope`] naming `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope.to_owned()))
        }
    }

    /// `Ok` if the principal holds `role`, else [`AuthError::MissingRole`]
    /// (`PERMISSION_DENIED`).
    ///
    /// # Errors
    /// [`AuthError::MissingRole`] naming `role`.
    pub fn require_role(&self, role: &str) -> Result<()> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(AuthError::MissingRole(role.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_scope_maps_to_permission_denied() {
        let p = Principal {
            tenant: "acme".to_owned(),
            subject: "alice".to_owned(),
            roles: vec!["analyst".to_owned()],
            scopes: vec!["sql".to_owned()],
        };
        assert!(p.require_scope("sql").is_ok());
        assert!(p.require_role("analyst").is_ok());
        let err = p.require_scope("search").unwrap_err();
        assert_eq!(err.to_string(), "missing scope search");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::PermissionDenied
        );
        let err = p.require_role("admin").unwrap_err();
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::PermissionDenied
        );
    }
}
