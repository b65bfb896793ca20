//! [`AuthConfig`]: the `auth` section of Quarry's configuration.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{AuthError, Result};
use crate::jwt::{DEFAULT_LEEWAY_SECS, JwtVerifier, MIN_HS256_SECRET_BYTES};
use crate::rate_limit::{RateLimitConfig, TenantRateLimiter};

#[cfg(test)]
mod tests;

/// Environment variable read for the HS256 secret when neither
/// `jwt_secret_env` nor `jwt_secret` is configured.
pub const DEFAULT_JWT_SECRET_ENV: &str = "QUARRY_JWT_SECRET";

/// Authentication and admission settings.
///
/// The HS256 secret comes from the environment variable named by
/// `jwt_secret_env` (default [`DEFAULT_JWT_SECRET_ENV`]) or, for development
/// only, inline from `jwt_secret`; setting both is an error. The secret must
/// be at least [`MIN_HS256_SECRET_BYTES`] bytes (RFC 7518 §3.2). `Debug`
/// redacts the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Name of the environment variable holding the HS256 secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_env: Option<String>,
    /// The HS256 secret itself; development only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,
    /// Required `iss` of accepted tokens, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Audience accepted tokens must name in `aud`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, seconds (default 30).
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Per-tenant request quota.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

fn default_leeway_secs() -> u64 {
    DEFAULT_LEEWAY_SECS
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret_env: None,
            jwt_secret: None,
            issuer: None,
            audience: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            rate_limit: RateLimitConfig::default(),
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret_env", &self.jwt_secret_env)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl AuthConfig {
    /// The HS256 secret, looking environment variables up with `env`
    /// (tests pass a closure; [`AuthConfig::secret`] uses the process
    /// environment).
    ///
    /// # Errors
    /// [`AuthError::Config`] if both or no usable source is set, or the
    /// secret is shorter than [`MIN_HS256_SECRET_BYTES`].
    pub fn secret_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<Vec<u8>> {
        let secret = match (&self.jwt_secret_env, &self.jwt_secret) {
            (Some(_), Some(_)) => {
                return Err(AuthError::Config(
                    "set jwt_secret_env or jwt_secret, not both".to_owned(),
                ));
            }
            (None, Some(inline)) => inline.clone(),
            (name, None) => {
                let name = name.as_deref().unwrap_or(DEFAULT_JWT_SECRET_ENV);
                env(name).ok_or_else(|| {
                    AuthError::Config(format!("environment variable {name} is not set"))
                })?
            }
        };
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(AuthError::Config(format!(
                "hs256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes (rfc 7518 section 3.2)"
            )));
        }
        Ok(secret.into_bytes())
    }

    /// The HS256 secret from the process environment; see
    /// [`AuthConfig::secret_with`].
    ///
    /// # Errors
    /// As [`AuthConfig::secret_with`].
    pub fn secret(&self) -> Result<Vec<u8>> {
        self.secret_with(|name| std::env::var(name).ok())
    }

    /// A verifier for this configuration, looking environment variables up
    /// with `env`.
    ///
    /// # Errors
    /// As [`AuthConfig::secret_with`].
    pub fn verifier_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<JwtVerifier> {
        let mut verifier =
            JwtVerifier::hs256(&self.secret_with(env)?).with_leeway(self.leeway_secs);
        if let Some(issuer) = &self.issuer {
            verifier = verifier.with_issuer(issuer.clone());
        }
        if let Some(audience) = &self.audience {
            verifier = verifier.with_audience(audience.clone());
        }
        Ok(verifier)
    }

    /// A verifier for this configuration, secret from the process
    /// environment.
    ///
    /// # Errors
    /// As [`AuthConfig::secret_with`].
    pub fn verifier(&self) -> Result<JwtVerifier> {
        self.verifier_with(|name| std::env::var(name).ok())
    }

    /// A per-tenant limiter with the configured quota.
    pub fn rate_limiter(&self) -> TenantRateLimiter {
        TenantRateLimiter::new(self.rate_limit)
    }
}
