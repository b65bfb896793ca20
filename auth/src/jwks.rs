//! Verification keys from a JSON Web Key Set URL (RFC 7517 §5), as identity
//! providers publish them (e.g. an OpenID provider's `jwks_uri`).
//!
//! The set is fetched at start-up, cached in memory and looked up by `kid`
//! (RFC 7517 §4.5). A token whose `kid` is not cached triggers one refetch,
//! at most once per refresh floor, with concurrent misses sharing one fetch;
//! a set older than its maximum age is refetched in the background. A failed
//! fetch keeps the keys already cached. So an identity provider can rotate
//! keys without Quarry restarting.
//!
//! Each key fixes the algorithms it verifies (RFC 7518 §3.1): the JWK's
//! `alg` if present, else the one family its `kty`/`crv` allow, and always
//! within the configured list. Symmetric (`kty: oct`) keys are never used.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse, RSAKeyParameters,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

use crate::error::{AuthError, Result};

#[cfg(test)]
mod tests;

/// Default least time between two fetches of a key set, in seconds: a
/// token with an unknown `kid` triggers a refetch only if the last fetch
/// (of any kind) began at least this long ago.
pub const DEFAULT_JWKS_REFRESH_FLOOR_SECS: u64 = 60;

/// Default age, in seconds, after which a cached key set is refetched in
/// the background (on the next token that uses it).
pub const DEFAULT_JWKS_MAX_AGE_SECS: u64 = 3600;

/// Default timeout of one key-set fetch (connect, request and body), in
/// seconds.
pub const DEFAULT_JWKS_TIMEOUT_SECS: u64 = 10;

/// Algorithms accepted from a key set unless configured otherwise:
/// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3), ECDSA with P-256 and
/// SHA-256 (RFC 7518 §3.4) and EdDSA with Ed25519 (RFC 8037 §3.1).
pub const DEFAULT_JWKS_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// Largest key-set document read, in bytes; a longer one is a failed fetch.
pub const MAX_JWKS_BYTES: usize = 512 * 1024;

/// Smallest RSA modulus used, in bits (RFC 7518 §3.3 requires 2048).
const MIN_RSA_BITS: usize = 2048;

/// Where a key set is and how it is kept fresh; see [`crate::JwtVerifier::jwks`].
///
/// The set is fetched once when the verifier is built and cached in memory
/// by `kid` (RFC 7517 §4.5). A token whose `kid` is not cached refetches the
/// set if the last fetch began at least `refresh_floor` ago (else it is
/// refused without a fetch); concurrent misses share one fetch. A set older
/// than `max_age` is refetched in the background, also at most once per
/// `refresh_floor`. A failed fetch is logged and keeps the cached keys.
/// Keys whose `use` is not `sig`, whose `key_ops` lack `verify`, symmetric
/// (`oct`) keys, RSA keys under 2048 bits, curves other than P-256, P-384
/// and Ed25519, and keys without `kid` are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksOptions {
    /// The `http(s)` URL of the JWK Set document (RFC 7517 §5).
    pub url: String,
    /// Algorithms tokens may use (RFC 7518 §3.1 names); HMAC algorithms are
    /// refused by [`crate::JwtVerifier::jwks`], since a key set holds public keys.
    pub algorithms: Vec<Algorithm>,
    /// Least time between two fetches; an unknown `kid` within it is
    /// refused without a fetch.
    pub refresh_floor: Duration,
    /// Age after which the cached set is refetched in the background.
    pub max_age: Duration,
    /// Timeout of one fetch.
    pub timeout: Duration,
}

impl JwksOptions {
    /// Options for the key set at `url` with the defaults:
    /// [`DEFAULT_JWKS_ALGORITHMS`], [`DEFAULT_JWKS_REFRESH_FLOOR_SECS`],
    /// [`DEFAULT_JWKS_MAX_AGE_SECS`] and [`DEFAULT_JWKS_TIMEOUT_SECS`].
    pub fn new(url: impl Into<String>) -> Self {
        JwksOptions {
            url: url.into(),
            algorithms: DEFAULT_JWKS_ALGORITHMS.to_vec(),
            refresh_floor: Duration::from_secs(DEFAULT_JWKS_REFRESH_FLOOR_SECS),
            max_age: Duration::from_secs(DEFAULT_JWKS_MAX_AGE_SECS),
            timeout: Duration::from_secs(DEFAULT_JWKS_TIMEOUT_SECS),
        }
    }
}

/// A verification key of the set and the algorithms it may verify.
pub(crate) struct JwksKey {
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) key: DecodingKey,
}

/// The keys of one successful fetch, by `kid`.
struct Snapshot {
    keys: HashMap<String, Arc<JwksKey>>,
    fetched_at: Instant,
}

/// A cached, self-refreshing key set.
pub(crate) struct KeySet {
    options: JwksOptions,
    client: reqwest::Client,
    current: RwLock<Arc<Snapshot>>,
    /// When the last fetch began; held across a fetch, so concurrent
    /// misses wait for one fetch instead of starting their own.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    /// A background refresh is under way.
    refreshing: AtomicBool,
}

impl KeySet {
    /// Fetch the set once; the first fetch must succeed and yield a key.
    ///
    /// Errors name `auth.jwks_url`, the configuration key of the URL.
    pub(crate) async fn load(options: JwksOptions) -> Result<Arc<Self>> {
        if let Some(hmac) = options
            .algorithms
            .iter()
            .find(|a| a.family() == AlgorithmFamily::Hmac)
        {
            return Err(AuthError::Config(format!(
                "{hmac:?} cannot verify with a key set: its keys are public (algorithm confusion)"
            )));
        }
        // fetches are minutes apart: no idle connection is worth keeping
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| {
                AuthError::Config(format!("auth.jwks_url: no http client: {}", chain(&e)))
            })?;
        let started = Instant::now();
        let keys = fetch(&client, &options).await.map_err(|error| {
            AuthError::Config(format!(
                "auth.jwks_url: cannot fetch the key set from {}: {error}",
                options.url
            ))
        })?;
        if keys.is_empty() {
            return Err(AuthError::Config(format!(
                "auth.jwks_url: the key set at {} has no key usable with {:?}",
                options.url, options.algorithms
            )));
        }
        tracing::info!(url = %options.url, keys = keys.len(), "jwks loaded");
        Ok(Arc::new(KeySet {
            current: RwLock::new(Arc::new(Snapshot {
                keys,
                fetched_at: started,
            })),
            last_attempt: tokio::sync::Mutex::new(Some(started)),
            refreshing: AtomicBool::new(false),
            client,
            options,
        }))
    }

    pub(crate) fn options(&self) -> &JwksOptions {
        &self.options
    }

    /// The key for `kid`, refetching the set once if it is unknown and the
    /// refresh floor has passed.
    ///
    /// # Errors
    /// [`AuthError::UnknownKey`] if the key is not in the set (after a
    /// refetch, or without one within the floor);
    /// [`AuthError::KeySetUnavailable`] if the refetch this call made failed.
    pub(crate) async fn key(self: &Arc<Self>, kid: &str) -> Result<Arc<JwksKey>> {
        let snapshot = self.snapshot();
        if let Some(key) = snapshot.keys.get(kid) {
            if snapshot.fetched_at.elapsed() >= self.options.max_age {
                self.spawn_refresh();
            }
            return Ok(Arc::clone(key));
        }
        let mut last_attempt = self.last_attempt.lock().await;
        // a fetch that ended while this call waited may have brought the key
        if let Some(key) = self.snapshot().keys.get(kid) {
            return Ok(Arc::clone(key));
        }
        if last_attempt.is_some_and(|t| t.elapsed() < self.options.refresh_floor) {
            return Err(AuthError::UnknownKey(kid.to_owned()));
        }
        *last_attempt = Some(Instant::now());
        match self.refetch("unknown kid").await {
            Ok(()) => self
                .snapshot()
                .keys
                .get(kid)
                .cloned()
                .ok_or_else(|| AuthError::UnknownKey(kid.to_owned())),
            Err(()) => Err(AuthError::KeySetUnavailable),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Fetch and install the set; a failure is logged and keeps the keys.
    async fn refetch(&self, reason: &'static str) -> Result<(), ()> {
        let started = Instant::now();
        match fetch(&self.client, &self.options).await {
            Ok(keys) => {
                tracing::info!(url = %self.options.url, keys = keys.len(), reason, "jwks refreshed");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                    Arc::new(Snapshot {
                        keys,
                        fetched_at: started,
                    });
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    url = %self.options.url,
                    %error,
                    reason,
                    "jwks fetch failed, keeping the cached keys"
                );
                Err(())
            }
        }
    }

    /// Refresh a set past its maximum age off the request path, at most once
    /// per refresh floor.
    fn spawn_refresh(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        runtime.spawn(async move {
            {
                let mut last_attempt = this.last_attempt.lock().await;
                let stale = this.snapshot().fetched_at.elapsed() >= this.options.max_age;
                let floor_passed =
                    last_attempt.is_none_or(|t| t.elapsed() >= this.options.refresh_floor);
                if stale && floor_passed {
                    *last_attempt = Some(Instant::now());
                    let _ = this.refetch("max age").await;
                }
            }
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Let the next unknown `kid` refetch at once, as if the refresh floor
    /// had passed.
    #[cfg(test)]
    pub(crate) async fn expire_floor(&self) {
        *self.last_attempt.lock().await = None;
    }
}

/// GET the set and keep its usable keys.
async fn fetch(
    client: &reqwest::Client,
    options: &JwksOptions,
) -> std::result::Result<HashMap<String, Arc<JwksKey>>, String> {
    let mut response = client
        .get(&options.url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| chain(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("http status {status}"));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(format!("key set longer than {MAX_JWKS_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| chain(&e))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("key set longer than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    parse_key_set(&body, &options.algorithms)
}

/// The `jwks_uri` of the OpenID provider `issuer`, from its discovery
/// document at `{issuer}/.well-known/openid-configuration` (OpenID Connect
/// Discovery 1.0 §4). The document's `issuer` must equal `issuer` exactly
/// (§4.3: otherwise another provider's keys could be trusted), and its
/// `jwks_uri` must be `https` unless `development`. One fetch, at start-up,
/// with `timeout`.
///
/// # Errors
/// [`AuthError::Config`] naming `auth.issuer` when the document cannot be
/// fetched or parsed, names another issuer, or has no usable `jwks_uri`.
pub(crate) async fn discover_jwks_url(
    issuer: &str,
    timeout: Duration,
    development: bool,
) -> Result<String> {
    #[derive(Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: Option<String>,
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let error =
        |what: String| AuthError::Config(format!("auth.issuer: openid discovery at {url}: {what}"));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| error(chain(&e)))?;
    let response = client
        .get(&url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| error(chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(error(format!("http status {status}")));
    }
    let body = response.bytes().await.map_err(|e| error(chain(&e)))?;
    if body.len() > MAX_JWKS_BYTES {
        return Err(error(format!(
            "document longer than {MAX_JWKS_BYTES} bytes"
        )));
    }
    let document: Discovery = serde_json::from_slice(&body)
        .map_err(|e| error(format!("not a discovery document: {e}")))?;
    if document.issuer != issuer {
        return Err(error(format!(
            "the document names issuer {:?}, not {issuer:?}",
            document.issuer
        )));
    }
    let jwks_uri = document
        .jwks_uri
        .ok_or_else(|| error("no jwks_uri".to_owned()))?;
    let parsed = reqwest::Url::parse(&jwks_uri).map_err(|e| error(format!("jwks_uri: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if development => {}
        other => {
            return Err(error(format!(
                "jwks_uri must be https{}, not {other}",
                if development { " or http" } else { "" }
            )));
        }
    }
    Ok(jwks_uri)
}

/// The usable keys of a JWK Set document (RFC 7517 §5), by `kid`. Keys that
/// cannot be used are skipped (logged at debug), not fatal: a set may hold
/// encryption keys or key types this server does not use.
fn parse_key_set(
    body: &[u8],
    allowed: &[Algorithm],
) -> std::result::Result<HashMap<String, Arc<JwksKey>>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body)
        .map_err(|e| format!("not a jwk set (rfc 7517 section 5): {e}"))?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(error) => {
                tracing::debug!(%error, "jwks key skipped: not a jwk");
                continue;
            }
        };
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        match usable_key(&jwk, allowed) {
            Ok(key) if !kid.is_empty() => match keys.entry(kid) {
                Entry::Occupied(entry) => {
                    tracing::debug!(kid = entry.key(), "jwks key skipped: duplicate kid");
                }
                Entry::Vacant(entry) => {
                    entry.insert(Arc::new(key));
                }
            },
            Ok(_) => tracing::debug!("jwks key skipped: no kid"),
            Err(reason) => tracing::debug!(kid, reason, "jwks key skipped"),
        }
    }
    Ok(keys)
}

/// The key and its algorithms, or why it cannot verify tokens here.
fn usable_key(jwk: &Jwk, allowed: &[Algorithm]) -> std::result::Result<JwksKey, String> {
    // RFC 7517 §4.2 and §4.3: a key meant for something else is not used
    if let Some(key_use) = &jwk.common.public_key_use
        && !matches!(key_use, PublicKeyUse::Signature)
    {
        return Err("use is not sig".to_owned());
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.iter().any(|op| matches!(op, KeyOperations::Verify))
    {
        return Err("key_ops lacks verify".to_owned());
    }
    let family: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            check_rsa(rsa)?;
            &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (alg, len) = match ec.curve {
                EllipticCurve::P256 => (&[Algorithm::ES256], 32),
                EllipticCurve::P384 => (&[Algorithm::ES384], 48),
                EllipticCurve::P521 | EllipticCurve::Ed25519 | _ => {
                    return Err(format!("unsupported ec curve {:?}", ec.curve));
                }
            };
            check_len("x", &ec.x, len)?;
            check_len("y", &ec.y, len)?;
            alg
        }
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => {
                check_len("x", &okp.x, 32)?;
                &[Algorithm::EdDSA]
            }
            EllipticCurve::P256 | EllipticCurve::P384 | EllipticCurve::P521 | _ => {
                return Err(format!("unsupported okp curve {:?}", okp.curve));
            }
        },
        // a shared secret published with public keys would let anyone
        // holding the set sign tokens (RFC 8725 §3.1)
        AlgorithmParameters::OctetKey(_) => return Err("symmetric key".to_owned()),
        AlgorithmParameters::Other(_) | _ => return Err("unsupported kty".to_owned()),
    };
    let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
        Some(key_alg) => {
            let alg =
                Algorithm::try_from(key_alg).map_err(|_| format!("unsupported alg {key_alg}"))?;
            if !family.contains(&alg) {
                return Err(format!("alg {alg:?} does not fit the key type"));
            }
            vec![alg]
        }
        None => family.to_vec(),
    };
    let algorithms: Vec<Algorithm> = algorithms
        .into_iter()
        .filter(|a| allowed.contains(a))
        .collect();
    if algorithms.is_empty() {
        return Err("no allowed algorithm".to_owned());
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("invalid key: {e}"))?;
    Ok(JwksKey { algorithms, key })
}

fn check_rsa(rsa: &RSAKeyParameters) -> std::result::Result<(), String> {
    let n = URL_SAFE_NO_PAD
        .decode(&rsa.n)
        .map_err(|_| "n is not base64url".to_owned())?;
    let e = URL_SAFE_NO_PAD
        .decode(&rsa.e)
        .map_err(|_| "e is not base64url".to_owned())?;
    let leading_zeros = n.iter().take_while(|b| **b == 0).count();
    let significant = n.get(leading_zeros..).unwrap_or_default();
    let bits = match significant.first() {
        Some(first) => significant.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    };
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "rsa modulus shorter than {MIN_RSA_BITS} bits (rfc 7518 section 3.3)"
        ));
    }
    if e.iter().all(|b| *b == 0) {
        return Err("rsa exponent is zero".to_owned());
    }
    Ok(())
}

/// Whether base64url `value` decodes to exactly `len` bytes.
fn check_len(name: &str, value: &str, len: usize) -> std::result::Result<(), String> {
    match URL_SAFE_NO_PAD.decode(value) {
        Ok(bytes) if bytes.len() == len => Ok(()),
        Ok(bytes) => Err(format!("{name} is {} bytes, not {len}", bytes.len())),
        Err(_) => Err(format!("{name} is not base64url")),
    }
}

/// An error and its sources, `: `-separated (reqwest puts the cause, e.g.
/// connection refused, in the source).
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
