//! [`AuthConfig`]: the `auth` section of Quarry's configuration.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::{Deserialize, Serialize};

use crate::error::{AuthError, Result};
use crate::jwks::{
    DEFAULT_JWKS_ALGORITHMS, DEFAULT_JWKS_MAX_AGE_SECS, DEFAULT_JWKS_REFRESH_FLOOR_SECS,
    DEFAULT_JWKS_TIMEOUT_SECS, JwksOptions,
};
use crate::jwt::{DEFAULT_LEEWAY_SECS, JwtVerifier, MIN_HS256_SECRET_BYTES};
use crate::rate_limit::{RateLimitConfig, TenantRateLimiter};

#[cfg(test)]
mod tests;

/// Environment variable read for the HS256 secret when neither
/// `jwt_secret_env` nor `jwt_secret` is configured.
pub const DEFAULT_JWT_SECRET_ENV: &str = "QUARRY_JWT_SECRET";

/// Authentication and admission settings.
///
/// Tokens are verified either against an identity provider's JSON Web Key
/// Set at `jwks_url` (RFC 7517 §5; `RS256`, `ES256`, `EdDSA` by default, see
/// [`JwtVerifier::jwks`]) or with an HS256 secret. Setting `jwks_url`
/// together with `jwt_secret_env` or `jwt_secret` is an error; without
/// `jwks_url` the HS256 secret is used.
///
/// The HS256 secret comes from the environment variable named by
/// `jwt_secret_env` (default [`DEFAULT_JWT_SECRET_ENV`]) or, for development
/// only, inline from `jwt_secret`; setting both is an error. The secret must
/// be at least [`MIN_HS256_SECRET_BYTES`] bytes (RFC 7518 §3.2). `Debug`
/// redacts the secret.
///
/// Outside development ([`AuthConfig::validate`] with `development` false)
/// `issuer` and `audience` are required and `jwt_secret` is refused.
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
    /// `https` URL of the identity provider's JWK Set (RFC 7517 §5), e.g.
    /// `https://idp.example/.well-known/jwks.json` (an OpenID provider's
    /// `jwks_uri`). Plain `http` is accepted in development only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Find the key set by OpenID Connect Discovery 1.0: fetch
    /// `{issuer}/.well-known/openid-configuration` at start-up and use its
    /// `jwks_uri` (the document's `issuer` must equal `issuer`). Needs
    /// `issuer`; excludes `jwks_url` and an HS256 secret. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oidc_discovery: bool,
    /// Algorithms accepted from the key set, RFC 7518 §3.1 names (default
    /// `["RS256", "ES256", "EdDSA"]`); HMAC algorithms are refused.
    #[serde(default = "default_jwks_algorithms")]
    pub jwks_algorithms: Vec<Algorithm>,
    /// Least time between two key-set fetches, seconds (default 60): a token
    /// with an unknown `kid` refetches the set only if the last fetch began
    /// at least this long ago.
    #[serde(default = "default_jwks_refresh_floor_secs")]
    pub jwks_refresh_floor_secs: u64,
    /// Age after which the cached key set is refetched, seconds (default
    /// 3600).
    #[serde(default = "default_jwks_max_age_secs")]
    pub jwks_max_age_secs: u64,
    /// Timeout of one key-set fetch, seconds (default 10).
    #[serde(default = "default_jwks_timeout_secs")]
    pub jwks_timeout_secs: u64,
    /// Per-tenant request quota.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

fn default_leeway_secs() -> u64 {
    DEFAULT_LEEWAY_SECS
}

fn default_jwks_algorithms() -> Vec<Algorithm> {
    DEFAULT_JWKS_ALGORITHMS.to_vec()
}

fn default_jwks_refresh_floor_secs() -> u64 {
    DEFAULT_JWKS_REFRESH_FLOOR_SECS
}

fn default_jwks_max_age_secs() -> u64 {
    DEFAULT_JWKS_MAX_AGE_SECS
}

fn default_jwks_timeout_secs() -> u64 {
    DEFAULT_JWKS_TIMEOUT_SECS
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret_env: None,
            jwt_secret: None,
            issuer: None,
            audience: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            jwks_url: None,
            oidc_discovery: false,
            jwks_algorithms: default_jwks_algorithms(),
            jwks_refresh_floor_secs: DEFAULT_JWKS_REFRESH_FLOOR_SECS,
            jwks_max_age_secs: DEFAULT_JWKS_MAX_AGE_SECS,
            jwks_timeout_secs: DEFAULT_JWKS_TIMEOUT_SECS,
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
            .field("jwks_url", &self.jwks_url)
            .field("oidc_discovery", &self.oidc_discovery)
            .field("jwks_algorithms", &self.jwks_algorithms)
            .field("jwks_refresh_floor_secs", &self.jwks_refresh_floor_secs)
            .field("jwks_max_age_secs", &self.jwks_max_age_secs)
            .field("jwks_timeout_secs", &self.jwks_timeout_secs)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl AuthConfig {
    /// Check the settings that need no network or environment.
    ///
    /// Always: `jwks_url` excludes `jwt_secret_env`/`jwt_secret`, must be an
    /// `http(s)` URL, and `jwks_algorithms` must be non-empty and free of
    /// HMAC algorithms (RFC 8725 §3.1: a public key used as an HMAC secret).
    /// Unless `development` (`server.development`): `issuer` and `audience`
    /// are required (RFC 7519 §4.1.1, §4.1.3; a token of another issuer or
    /// for another service must not pass), `jwt_secret` (inline) is refused,
    /// and `jwks_url` must be `https`.
    ///
    /// # Errors
    /// [`AuthError::Config`] naming the field, e.g. `auth.issuer is required
    /// outside development (server.development = false)`.
    pub fn validate(&self, development: bool) -> Result<()> {
        let config = |message: String| Err(AuthError::Config(message));
        if self.oidc_discovery {
            if self.jwks_url.is_some() {
                return config("set auth.oidc_discovery or auth.jwks_url, not both".to_owned());
            }
            if self.jwt_secret_env.is_some() || self.jwt_secret.is_some() {
                return config(
                    "set auth.oidc_discovery or an hs256 secret (auth.jwt_secret_env, auth.jwt_secret), not both"
                        .to_owned(),
                );
            }
            let Some(issuer) = self.issuer.as_deref().filter(|i| !i.is_empty()) else {
                return config("auth.oidc_discovery needs auth.issuer".to_owned());
            };
            match reqwest::Url::parse(issuer).map(|u| u.scheme().to_owned()) {
                Ok(scheme) if scheme == "https" || (scheme == "http" && development) => {}
                _ => {
                    return config(format!(
                        "auth.issuer must be an https url for auth.oidc_discovery{}",
                        if development {
                            " (or http in development)"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        if let Some(url) = &self.jwks_url {
            if self.jwt_secret_env.is_some() || self.jwt_secret.is_some() {
                return config(
                    "set auth.jwks_url or an hs256 secret (auth.jwt_secret_env, auth.jwt_secret), not both"
                        .to_owned(),
                );
            }
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| AuthError::Config(format!("auth.jwks_url is not a url: {e}")))?;
            match parsed.scheme() {
                "https" => {}
                "http" if development => {}
                "http" => {
                    return config(
                        "auth.jwks_url must be https outside development (server.development = false)"
                            .to_owned(),
                    );
                }
                other => return config(format!("auth.jwks_url must be an https url, not {other}")),
            }
            if self.jwks_algorithms.is_empty() {
                return config("auth.jwks_algorithms is empty".to_owned());
            }
            if let Some(hmac) = self
                .jwks_algorithms
                .iter()
                .find(|a| a.family() == AlgorithmFamily::Hmac)
            {
                return config(format!(
                    "auth.jwks_algorithms may not contain {hmac:?}: key set keys are public (algorithm confusion)"
                ));
            }
            if self.jwks_timeout_secs == 0 {
                return config("auth.jwks_timeout_secs must be positive".to_owned());
            }
        }
        if !development {
            if self.issuer.as_deref().is_none_or(str::is_empty) {
                return config(
                    "auth.issuer is required outside development (server.development = false)"
                        .to_owned(),
                );
            }
            if self.audience.as_deref().is_none_or(str::is_empty) {
                return config(
                    "auth.audience is required outside development (server.development = false)"
                        .to_owned(),
                );
            }
            if self.jwt_secret.is_some() {
                return config(
                    "auth.jwt_secret (an inline secret) is for development only (server.development = false); use auth.jwt_secret_env or auth.jwks_url"
                        .to_owned(),
                );
            }
        }
        Ok(())
    }

    /// The key-set options of `jwks_url` and the `jwks_*` settings, if
    /// `jwks_url` is set.
    pub fn jwks_options(&self) -> Option<JwksOptions> {
        Some(self.jwks_options_for(self.jwks_url.clone()?))
    }

    /// The `jwks_*` settings for the key set at `url`.
    fn jwks_options_for(&self, url: String) -> JwksOptions {
        JwksOptions {
            url,
            algorithms: self.jwks_algorithms.clone(),
            refresh_floor: Duration::from_secs(self.jwks_refresh_floor_secs),
            max_age: Duration::from_secs(self.jwks_max_age_secs),
            timeout: Duration::from_secs(self.jwks_timeout_secs),
        }
    }

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
    /// with `env`: [`AuthConfig::validate`]d for `development`, then for the
    /// key set at `jwks_url` (fetched now) if set, else for the HS256 secret.
    ///
    /// # Errors
    /// As [`AuthConfig::validate`], [`JwtVerifier::jwks`] (the first fetch
    /// failed) and [`AuthConfig::secret_with`].
    pub async fn verifier_with(
        &self,
        development: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<JwtVerifier> {
        self.validate(development)?;
        let mut options = self.jwks_options();
        if self.oidc_discovery
            && let Some(issuer) = &self.issuer
        {
            let timeout = Duration::from_secs(self.jwks_timeout_secs);
            let url = crate::jwks::discover_jwks_url(issuer, timeout, development).await?;
            tracing::info!(%issuer, jwks_uri = %url, "openid discovery");
            options = Some(self.jwks_options_for(url));
        }
        let verifier = match options {
            Some(options) => JwtVerifier::jwks(options).await?,
            None => JwtVerifier::hs256(&self.secret_with(env)?),
        };
        let mut verifier = verifier.with_leeway(self.leeway_secs);
        if let Some(issuer) = &self.issuer {
            verifier = verifier.with_issuer(issuer.clone());
        }
        if let Some(audience) = &self.audience {
            verifier = verifier.with_audience(audience.clone());
        }
        Ok(verifier)
    }

    /// A verifier for this configuration, secret from the process
    /// environment; `development` is `server.development`.
    ///
    /// # Errors
    /// As [`AuthConfig::verifier_with`].
    pub async fn verifier(&self, development: bool) -> Result<JwtVerifier> {
        self.verifier_with(development, |name| std::env::var(name).ok())
            .await
    }

    /// A per-tenant limiter with the configured quota.
    pub fn rate_limiter(&self) -> TenantRateLimiter {
        TenantRateLimiter::new(self.rate_limit)
    }
}
