//! JSON Web Tokens: verification into a [`Principal`], and HS256 minting.
//!
//! A token is a JWS in compact serialization (RFC 7515 §7.1) whose payload
//! is a JWT claims set (RFC 7519 §4). A verifier either holds one HMAC
//! secret (`HS256`, RFC 7518 §3.2; development) or an identity provider's
//! key set ([`JwksOptions`]: `RS256`, `ES256`, `EdDSA` and the like). The
//! algorithm is pinned by the server's key, never taken from the token, so
//! `alg: none` (RFC 7518 §3.6) and algorithm confusion (an `RS256` header
//! presented to an HMAC key, or an `HS256` token presented to a key set) are
//! refused.

use std::fmt;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{AuthError, Result};
use crate::jwks::{JwksOptions, KeySet};
use crate::principal::Principal;

#[cfg(test)]
mod tests;

/// Default clock-skew allowance for `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// Smallest HS256 secret accepted by [`mint_hs256`] and [`crate::AuthConfig`],
/// in bytes: RFC 7518 §3.2 requires a key at least as long as the hash
/// output (256 bits for SHA-256).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Longest token the verifier will parse, in bytes; longer input is
/// rejected as malformed before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The JWT claims set Quarry issues and accepts (RFC 7519 §4).
///
/// Registered claims: `sub` (§4.1.2), `exp` (§4.1.4, required by Quarry
/// although optional in the RFC), `iat` (§4.1.6), `iss` (§4.1.1), `aud`
/// (§4.1.3). Private claims: `tenant`, `roles`, `scopes`. Times are
/// NumericDate: seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user or service calling.
    pub sub: String,
    /// Tenant the subject belongs to.
    pub tenant: String,
    /// Roles; absent means none.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes; absent means none.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Expiration time, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued-at time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience: RFC 7519 allows one string or an array; both are read,
    /// one value is written as a string. Empty means absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "one_or_many")]
    pub aud: Vec<String>,
}

impl Claims {
    /// Claims for `subject` in `tenant`, issued now and expiring after `ttl`.
    pub fn issued_now(
        tenant: impl Into<String>,
        subject: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        let now = unix_now();
        Claims {
            sub: subject.into(),
            tenant: tenant.into(),
            roles: Vec::new(),
            scopes: Vec::new(),
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            iss: None,
            aud: Vec::new(),
        }
    }

    /// The principal these claims describe.
    pub fn into_principal(self) -> Principal {
        Principal {
            tenant: self.tenant,
            subject: self.sub,
            roles: self.roles,
            scopes: self.scopes,
        }
    }
}

/// Verifies bearer tokens and turns them into [`Principal`]s.
///
/// Built either for one HS256 secret ([`JwtVerifier::hs256`], development)
/// or for an identity provider's JSON Web Key Set ([`JwtVerifier::jwks`]).
///
/// Checks, in order: size and shape (three base64url parts), the JOSE header
/// (RFC 7515 §4.1; a `crit` header is refused, §4.1.11), the algorithm,
/// the key, the signature, `exp` (required) and `nbf` (if present) with
/// [`DEFAULT_LEEWAY_SECS`] of skew unless changed, `iss` and `aud` when
/// configured (each then required). A token carrying `aud` is refused when
/// no audience is configured, as RFC 7519 §4.1.3 asks.
///
/// The algorithm: with a secret, `alg` must be `HS256`. With a key set,
/// `alg` must be one of the allowed algorithms ([`JwksOptions::algorithms`],
/// never HMAC or `none`), the header must name the key by `kid`
/// (RFC 7515 §4.1.4; a token without `kid` is refused, however many keys
/// the set holds), and the key must allow that `alg` (its JWK `alg`, or the
/// family of its `kty`/`crv`, RFC 7518 §6). Keys a token carries or points
/// to (`jwk`, `jku`, `x5u`, `x5c`) are ignored. Cheap to clone; clones share
/// the key cache.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Keys,
    validation: Validation,
}

/// Where a verifier's keys come from.
#[derive(Clone)]
enum Keys {
    /// One HMAC secret.
    Hs256(DecodingKey),
    /// A cached JWK Set.
    Jwks(Arc<KeySet>),
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("JwtVerifier");
        match &self.keys {
            Keys::Hs256(_) => debug.field("algorithm", &"HS256"),
            Keys::Jwks(set) => debug.field("jwks", set.options()),
        };
        debug
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway_secs", &self.validation.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for tokens signed with HMAC-SHA256 under `secret`.
    ///
    /// The secret should be at least [`MIN_HS256_SECRET_BYTES`] long
    /// (RFC 7518 §3.2); [`crate::AuthConfig`] enforces that.
    pub fn hs256(secret: &[u8]) -> Self {
        ensure_crypto_provider();
        JwtVerifier {
            keys: Keys::Hs256(DecodingKey::from_secret(secret)),
            validation: base_validation(Algorithm::HS256),
        }
    }

    /// A verifier for tokens signed with the keys of the JWK Set at
    /// `options.url` (RFC 7517 §5), fetched now and kept fresh as
    /// [`JwksOptions`] says (caching by `kid`, refetch rules).
    ///
    /// # Errors
    /// [`AuthError::Config`], naming `auth.jwks_url`, if the first fetch
    /// fails (transport, timeout, HTTP status, a document larger than
    /// [`crate::MAX_JWKS_BYTES`] or not a JWK Set) or yields no usable key,
    /// or if `options.algorithms` contains an HMAC algorithm.
    pub async fn jwks(options: JwksOptions) -> Result<Self> {
        ensure_crypto_provider();
        let keys = KeySet::load(options).await?;
        Ok(JwtVerifier {
            keys: Keys::Jwks(keys),
            // `algorithms` is set per token to the one the key allows
            validation: base_validation(Algorithm::RS256),
        })
    }

    /// The key set of a key-set verifier.
    #[cfg(test)]
    pub(crate) fn key_set(&self) -> Option<Arc<KeySet>> {
        match &self.keys {
            Keys::Jwks(set) => Some(Arc::clone(set)),
            Keys::Hs256(_) => None,
        }
    }

    /// Also require `iss` to equal `issuer`.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.validation.set_issuer(&[issuer.into()]);
        self.validation
            .required_spec_claims
            .insert("iss".to_owned());
        self
    }

    /// Also require `aud` to name `audience`.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.validation.set_audience(&[audience.into()]);
        self.validation
            .required_spec_claims
            .insert("aud".to_owned());
        self
    }

    /// Allow `secs` seconds of clock skew on `exp` and `nbf`.
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.validation.leeway = secs;
        self
    }

    /// Verify `token` (the part after `Bearer `) and return its principal.
    ///
    /// With a key set this may wait for one refetch of the set (an unknown
    /// `kid`, at most once per refresh floor); otherwise it does not wait.
    ///
    /// # Errors
    /// [`AuthError::Malformed`], [`AuthError::UnsupportedAlgorithm`],
    /// [`AuthError::UnknownKey`], [`AuthError::KeySetUnavailable`],
    /// [`AuthError::BadSignature`], [`AuthError::Expired`],
    /// [`AuthError::NotYetValid`], [`AuthError::MissingClaim`],
    /// [`AuthError::InvalidIssuer`], [`AuthError::InvalidAudience`].
    pub async fn verify(&self, token: &str) -> Result<Principal> {
        self.verify_claims(token).await.map(Claims::into_principal)
    }

    /// Verify `token` and return its full claims set.
    ///
    /// # Errors
    /// As [`JwtVerifier::verify`].
    pub async fn verify_claims(&self, token: &str) -> Result<Claims> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed(format!(
                "token longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "expected three dot-separated parts".to_owned(),
            ));
        };
        let is_b64url = |part: &str| {
            part.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if ![header, payload, signature].into_iter().all(is_b64url) {
            return Err(AuthError::Malformed("parts are not base64url".to_owned()));
        }
        let header = check_header(header)?;

        // Decode into a loose JSON value first so that jsonwebtoken's own
        // claim validation runs (and reports a missing `exp` as such) before
        // the claims are given Quarry's shape.
        let decoded = match &self.keys {
            Keys::Hs256(key) => {
                if header.alg != "HS256" {
                    return Err(AuthError::UnsupportedAlgorithm(header.alg));
                }
                jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation)
            }
            Keys::Jwks(set) => {
                // the allowed list first, so that no algorithm it refuses
                // (`none`, HMAC) costs a key look-up or a refetch
                let alg = Algorithm::from_str(&header.alg)
                    .ok()
                    .filter(|a| set.options().algorithms.contains(a))
                    .ok_or_else(|| AuthError::UnsupportedAlgorithm(header.alg.clone()))?;
                let kid = header.kid.ok_or_else(|| {
                    AuthError::Malformed(
                        "header lacks kid, which a key set needs (rfc 7515 section 4.1.4)"
                            .to_owned(),
                    )
                })?;
                let key = set.key(&kid).await?;
                if !key.algorithms.contains(&alg) {
                    return Err(AuthError::UnsupportedAlgorithm(header.alg));
                }
                let mut validation = self.validation.clone();
                validation.algorithms = vec![alg];
                jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation)
            }
        };
        let data = decoded.map_err(|e| map_jwt_error(&e))?;
        let claims: Claims = serde_json::from_value(data.claims)
            .map_err(|e| AuthError::Malformed(format!("claims: {e}")))?;
        if claims.tenant.is_empty() {
            return Err(AuthError::MissingClaim("tenant".to_owned()));
        }
        if claims.sub.is_empty() {
            return Err(AuthError::MissingClaim("sub".to_owned()));
        }
        Ok(claims)
    }
}

/// Sign `claims` as an HS256 JWT (RFC 7519 §7.1) with `secret`.
///
/// Used by the `quarry token` development command.
///
/// # Errors
/// [`AuthError::Config`] if `secret` is shorter than
/// [`MIN_HS256_SECRET_BYTES`] (RFC 7518 §3.2); [`AuthError::Signing`] if
/// encoding fails.
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(AuthError::Config(format!(
            "hs256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes (rfc 7518 section 3.2)"
        )));
    }
    ensure_crypto_provider();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Signing(e.to_string()))
}

/// Select jsonwebtoken's RustCrypto backend for this process.
///
/// Since jsonwebtoken 10 the crypto backend is a process-wide
/// `CryptoProvider`. It is inferred from the crate features only when
/// exactly one of `rust_crypto`/`aws_lc_rs` is enabled; if another crate in
/// the graph turns on the other one, every sign/verify panics unless a
/// provider was installed. Installing one explicitly avoids that; an `Err`
/// means a provider is already installed, which is fine.
fn ensure_crypto_provider() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

/// The JWT validation shared by both kinds of key: `exp` required, `exp`
/// and `nbf` checked with [`DEFAULT_LEEWAY_SECS`].
fn base_validation(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = DEFAULT_LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    validation
}

/// What the JOSE header says about the key to use.
struct JoseHeader {
    /// `alg` (RFC 7515 §4.1.1), not yet checked against anything.
    alg: String,
    /// `kid` (RFC 7515 §4.1.4), if present.
    kid: Option<String>,
}

/// Read the JOSE header (RFC 7515 §4) before anything else: `alg` must be
/// a string, `kid` a string if present, and no critical extensions are
/// understood.
fn check_header(encoded: &str) -> Result<JoseHeader> {
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| AuthError::Malformed("header is not base64url".to_owned()))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("header is not a json object".to_owned()))?;
    let alg = match header.get("alg") {
        Some(serde_json::Value::String(alg)) => alg.clone(),
        Some(other) => return Err(AuthError::UnsupportedAlgorithm(other.to_string())),
        None => return Err(AuthError::Malformed("header lacks alg".to_owned())),
    };
    let kid = match header.get("kid") {
        Some(serde_json::Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed("kid is not a string".to_owned())),
        None => None,
    };
    if header.contains_key("crit") {
        return Err(AuthError::Malformed(
            "critical header extensions are not supported".to_owned(),
        ));
    }
    Ok(JoseHeader { alg, kid })
}

fn map_jwt_error(err: &jsonwebtoken::errors::Error) -> AuthError {
    match err.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
        ErrorKind::InvalidAudience => AuthError::InvalidAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::UnsupportedAlgorithm("unknown".to_owned()),
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::Malformed(format!("claim {claim} has the wrong type"))
        }
        ErrorKind::Base64(_) => AuthError::Malformed("invalid base64url".to_owned()),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthError::Malformed("invalid json".to_owned()),
        // Key and signing problems, and kinds a later jsonwebtoken adds
        // (`ErrorKind` is non-exhaustive).
        ErrorKind::InvalidToken
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::RsaFailedSigning
        | ErrorKind::Signing(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidSubject
        | ErrorKind::Provider(_)
        | _ => AuthError::Malformed(err.to_string().to_lowercase()),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `aud` as one string or an array of strings (RFC 7519 §4.1.3).
mod one_or_many {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub(super) fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        match v {
            [one] => s.serialize_str(one),
            many => s.collect_seq(many),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        })
    }
}
