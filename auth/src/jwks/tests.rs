//! Key-set verification against a local JWKS server whose keys the tests
//! rotate, counting the fetches it answers.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use rand_core::OsRng;
use serde_json::json;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tower::{Layer as _, ServiceExt as _, service_fn};

use super::*;
use crate::config::AuthConfig;
use crate::jwt::{Claims, JwtVerifier, mint_hs256};
use crate::layer::AuthLayer;
use crate::principal::Principal;

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "quarry";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key of the identity provider and its public JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

impl TestKey {
    /// RSA 2048 (RS256). Generated once per test run: RSA key generation is
    /// slow in a debug build.
    fn rsa(kid: &str) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::traits::PublicKeyParts as _;

        static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
        let key = KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap());
        TestKey {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes()),
            jwk: json!({
                "kty": "RSA",
                "kid": kid,
                "use": "sig",
                "n": b64(&key.n().to_bytes_be()),
                "e": b64(&key.e().to_bytes_be()),
            }),
        }
    }

    /// P-256 (ES256).
    fn p256(kid: &str) -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        use p256::pkcs8::EncodePrivateKey as _;

        let key = p256::SecretKey::random(&mut OsRng);
        let point = key.public_key().to_encoded_point(false);
        TestKey {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(key.to_pkcs8_der().unwrap().as_bytes()),
            jwk: json!({
                "kty": "EC",
                "crv": "P-256",
                "kid": kid,
                "alg": "ES256",
                "x": b64(point.x().unwrap()),
                "y": b64(point.y().unwrap()),
            }),
        }
    }

    /// Ed25519 (EdDSA).
    fn ed25519(kid: &str) -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;

        let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
        TestKey {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(key.to_pkcs8_der().unwrap().as_bytes()),
            jwk: json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": kid,
                "x": b64(key.verifying_key().as_bytes()),
            }),
        }
    }

    /// A token for `claims` signed with this key, `kid` in the header.
    fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with(header, claims)
    }

    fn sign_with(&self, header: Header, claims: &Claims) -> String {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// Claims the test identity provider issues: its issuer, Quarry's audience.
fn claims(tenant: &str) -> Claims {
    let mut claims = Claims::issued_now(tenant, "alice", Duration::from_secs(300));
    claims.iss = Some(ISSUER.to_owned());
    claims.aud = vec![AUDIENCE.to_owned()];
    claims
}

fn key_set(keys: &[&TestKey]) -> serde_json::Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// What the JWKS server serves and how often it was asked.
struct Served {
    set: Mutex<serde_json::Value>,
    fetches: AtomicUsize,
    down: AtomicBool,
    /// Milliseconds to wait before answering.
    delay_ms: AtomicU64,
}

/// A JWKS endpoint on 127.0.0.1 whose set can change at run time.
struct JwksServer {
    url: String,
    served: Arc<Served>,
    task: JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: &[&TestKey]) -> Self {
        Self::start_with(key_set(keys)).await
    }

    async fn start_with(set: serde_json::Value) -> Self {
        async fn handler(State(served): State<Arc<Served>>) -> Response {
            served.fetches.fetch_add(1, SeqCst);
            let delay = served.delay_ms.load(SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if served.down.load(SeqCst) {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            let set = served.set.lock().unwrap().clone();
            axum::Json(set).into_response()
        }
        let served = Arc::new(Served {
            set: Mutex::new(set),
            fetches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(handler))
            .with_state(Arc::clone(&served));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        JwksServer { url, served, task }
    }

    /// Serve `keys` from now on (a rotation).
    fn publish(&self, keys: &[&TestKey]) {
        *self.served.set.lock().unwrap() = key_set(keys);
    }

    /// Stop listening: later fetches find the port closed.
    async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    fn fetches(&self) -> usize {
        self.served.fetches.load(SeqCst)
    }

    fn set_down(&self, down: bool) {
        self.served.down.store(down, SeqCst);
    }

    fn options(&self) -> JwksOptions {
        JwksOptions::new(self.url.clone())
    }

    /// A verifier for this server's set with the default options.
    async fn verifier(&self) -> JwtVerifier {
        self.verifier_with(self.options()).await
    }

    async fn verifier_with(&self, options: JwksOptions) -> JwtVerifier {
        JwtVerifier::jwks(options)
            .await
            .unwrap()
            .with_issuer(ISSUER)
            .with_audience(AUDIENCE)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The cached key set of a key-set verifier.
fn key_set_of(verifier: &JwtVerifier) -> Arc<KeySet> {
    verifier.key_set().unwrap()
}

/// Wait (at most 5 s) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_verify() {
    let (rsa, ec, ed) = (
        TestKey::rsa("rsa-1"),
        TestKey::p256("ec-1"),
        TestKey::ed25519("ed-1"),
    );
    let server = JwksServer::start(&[&rsa, &ec, &ed]).await;
    let verifier = server.verifier().await;
    for (key, tenant) in [(&rsa, "t-rsa"), (&ec, "t-ec"), (&ed, "t-ed")] {
        let principal = verifier.verify(&key.sign(&claims(tenant))).await;
        assert_eq!(
            principal,
            Ok(Principal {
                tenant: tenant.to_owned(),
                subject: "alice".to_owned(),
                roles: vec![],
                scopes: vec![],
            }),
            "{:?}",
            key.alg
        );
    }
    assert_eq!(server.fetches(), 1, "known keys are served from the cache");
}

#[tokio::test]
async fn a_signature_by_another_key_under_a_known_kid_is_refused() {
    let (published, impostor) = (TestKey::p256("ec-1"), TestKey::p256("ec-1"));
    let server = JwksServer::start(&[&published]).await;
    let verifier = server.verifier().await;
    assert_eq!(
        verifier.verify(&impostor.sign(&claims("acme"))).await,
        Err(AuthError::BadSignature)
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_and_then_verifies_the_rotated_key() {
    let (old, new) = (TestKey::ed25519("2024"), TestKey::ed25519("2025"));
    let server = JwksServer::start(&[&old]).await;
    let verifier = server.verifier().await;
    server.publish(&[&old, &new]);
    let token = new.sign(&claims("acme"));

    // the start-up fetch was less than the floor (60 s) ago: no refetch yet
    assert_eq!(
        verifier.verify(&token).await,
        Err(AuthError::UnknownKey("2025".to_owned()))
    );
    assert_eq!(server.fetches(), 1);

    // once the floor has passed, the unknown kid refetches exactly once
    key_set_of(&verifier).expire_floor().await;
    assert!(verifier.verify(&token).await.is_ok());
    assert_eq!(server.fetches(), 2);
    assert!(verifier.verify(&token).await.is_ok());
    assert!(verifier.verify(&old.sign(&claims("acme"))).await.is_ok());
    assert_eq!(server.fetches(), 2, "the new key is cached");
}

#[tokio::test]
async fn a_second_unknown_kid_within_the_floor_does_not_refetch() {
    let (a, b, c) = (TestKey::p256("a"), TestKey::p256("b"), TestKey::p256("c"));
    let server = JwksServer::start(&[&a]).await;
    let verifier = server.verifier().await;
    server.publish(&[&a, &b]);
    key_set_of(&verifier).expire_floor().await;
    assert!(verifier.verify(&b.sign(&claims("acme"))).await.is_ok());
    assert_eq!(server.fetches(), 2);

    // `c` is published too, but the last fetch is within the floor
    server.publish(&[&a, &b, &c]);
    for _ in 0..3 {
        assert_eq!(
            verifier.verify(&c.sign(&claims("acme"))).await,
            Err(AuthError::UnknownKey("c".to_owned()))
        );
    }
    assert_eq!(server.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kids_share_one_fetch() {
    let (a, b) = (TestKey::ed25519("a"), TestKey::ed25519("b"));
    let server = JwksServer::start(&[&a]).await;
    let verifier = server.verifier().await;
    server.publish(&[&a, &b]);
    key_set_of(&verifier).expire_floor().await;
    // a slow answer, so the misses certainly overlap the fetch
    server.served.delay_ms.store(200, SeqCst);
    let token = b.sign(&claims("acme"));
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (verifier, token) = (verifier.clone(), token.clone());
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().is_ok());
    }
    assert_eq!(server.fetches(), 2, "16 misses, one fetch");
}

#[tokio::test]
async fn a_rotated_out_key_is_refused_after_the_refetch() {
    let (old, new) = (TestKey::p256("old"), TestKey::p256("new"));
    let server = JwksServer::start(&[&old]).await;
    let verifier = server.verifier().await;
    let old_token = old.sign(&claims("acme"));
    assert!(verifier.verify(&old_token).await.is_ok());

    server.publish(&[&new]);
    key_set_of(&verifier).expire_floor().await;
    assert!(verifier.verify(&new.sign(&claims("acme"))).await.is_ok());
    assert_eq!(server.fetches(), 2);
    assert_eq!(
        verifier.verify(&old_token).await,
        Err(AuthError::UnknownKey("old".to_owned()))
    );
}

#[tokio::test]
async fn a_set_past_its_max_age_is_refetched_in_the_background() {
    let (old, new) = (TestKey::ed25519("old"), TestKey::ed25519("new"));
    let server = JwksServer::start(&[&old]).await;
    let verifier = server
        .verifier_with(JwksOptions {
            max_age: Duration::ZERO,
            ..server.options()
        })
        .await;
    let old_token = old.sign(&claims("acme"));
    server.publish(&[&new]);
    key_set_of(&verifier).expire_floor().await;

    // served from the cache; the stale set is refetched off the request path
    assert!(verifier.verify(&old_token).await.is_ok());
    let set = key_set_of(&verifier);
    eventually("the refreshed set drops the old key", || {
        !set.snapshot().keys.contains_key("old")
    })
    .await;
    assert_eq!(server.fetches(), 2);
    assert_eq!(
        verifier.verify(&old_token).await,
        Err(AuthError::UnknownKey("old".to_owned()))
    );
    // the floor bounds background refreshes as well
    assert!(verifier.verify(&new.sign(&claims("acme"))).await.is_ok());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn a_key_set_server_down_at_refresh_keeps_the_old_keys() {
    let (a, b) = (TestKey::p256("a"), TestKey::p256("b"));
    let server = JwksServer::start(&[&a]).await;
    let verifier = server
        .verifier_with(JwksOptions {
            max_age: Duration::ZERO,
            ..server.options()
        })
        .await;
    let set = key_set_of(&verifier);
    server.set_down(true);

    // a refetch for an unknown kid fails: UNAVAILABLE, keys kept
    set.expire_floor().await;
    let err = verifier.verify(&b.sign(&claims("acme"))).await.unwrap_err();
    assert_eq!(err, AuthError::KeySetUnavailable);
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(server.fetches(), 2);
    assert!(verifier.verify(&a.sign(&claims("acme"))).await.is_ok());

    // a failed background refresh keeps them too
    set.expire_floor().await;
    assert!(verifier.verify(&a.sign(&claims("acme"))).await.is_ok());
    eventually("the background refresh has run", || {
        server.fetches() == 3 && !set.refreshing.load(SeqCst)
    })
    .await;
    assert!(verifier.verify(&a.sign(&claims("acme"))).await.is_ok());

    // and a server gone entirely (connection refused) as well
    let url = server.url.clone();
    server.stop().await;
    set.expire_floor().await;
    assert_eq!(
        verifier.verify(&b.sign(&claims("acme"))).await,
        Err(AuthError::KeySetUnavailable),
        "{url} still answers"
    );
    assert!(verifier.verify(&a.sign(&claims("acme"))).await.is_ok());
}

#[tokio::test]
async fn an_hs256_token_is_refused_by_a_key_set() {
    let rsa = TestKey::rsa("rsa-1");
    let server = JwksServer::start(&[&rsa]).await;
    let verifier = server.verifier().await;

    // algorithm confusion: HMAC keyed with the published public key
    let public_key = serde_json::to_vec(&rsa.jwk).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".to_owned());
    let forged = jsonwebtoken::encode(
        &header,
        &claims("acme"),
        &EncodingKey::from_secret(&public_key),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(&forged).await,
        Err(AuthError::UnsupportedAlgorithm("HS256".to_owned()))
    );
    // nor does a development token pass
    let dev = mint_hs256(SECRET, &claims("acme")).unwrap();
    assert_eq!(
        verifier.verify(&dev).await,
        Err(AuthError::UnsupportedAlgorithm("HS256".to_owned()))
    );
    assert_eq!(server.fetches(), 1, "a refused algorithm costs no fetch");

    // and a key set cannot be configured to accept HMAC
    let err = JwtVerifier::jwks(JwksOptions {
        algorithms: vec![Algorithm::RS256, Algorithm::HS256],
        ..server.options()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, AuthError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn alg_none_is_refused_by_a_key_set() {
    let ec = TestKey::p256("ec-1");
    let server = JwksServer::start(&[&ec]).await;
    let verifier = server.verifier().await;
    let header = b64(br#"{"alg":"none","kid":"ec-1","typ":"JWT"}"#);
    let payload = b64(&serde_json::to_vec(&claims("acme")).unwrap());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.e30"),
    ] {
        assert_eq!(
            verifier.verify(&token).await,
            Err(AuthError::UnsupportedAlgorithm("none".to_owned()))
        );
    }
}

#[tokio::test]
async fn algorithms_are_pinned_by_the_key_and_the_allowed_list() {
    let rsa = TestKey::rsa("rsa-1");
    let mut pinned = TestKey::rsa("rsa-pinned");
    pinned.jwk["alg"] = json!("RS256");
    let server = JwksServer::start(&[&rsa, &pinned]).await;
    let rs384 = |key: &TestKey| {
        let mut header = Header::new(Algorithm::RS384);
        header.kid = Some(key.kid.clone());
        key.sign_with(header, &claims("acme"))
    };

    // RS384 is not in the default list, whichever key signs
    let verifier = server.verifier().await;
    assert_eq!(
        verifier.verify(&rs384(&rsa)).await,
        Err(AuthError::UnsupportedAlgorithm("RS384".to_owned()))
    );
    // allowed, an RSA key without `alg` verifies it; one whose JWK says
    // RS256 does not
    let verifier = server
        .verifier_with(JwksOptions {
            algorithms: vec![Algorithm::RS256, Algorithm::RS384, Algorithm::ES256],
            ..server.options()
        })
        .await;
    assert!(verifier.verify(&rs384(&rsa)).await.is_ok());
    assert_eq!(
        verifier.verify(&rs384(&pinned)).await,
        Err(AuthError::UnsupportedAlgorithm("RS384".to_owned()))
    );
    assert!(verifier.verify(&pinned.sign(&claims("acme"))).await.is_ok());

    // an EC key under an RSA algorithm: the key's type decides
    let ec = TestKey::p256("ec-1");
    server.publish(&[&rsa, &ec]);
    key_set_of(&verifier).expire_floor().await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("ec-1".to_owned());
    let token = rsa.sign_with(header, &claims("acme"));
    assert_eq!(
        verifier.verify(&token).await,
        Err(AuthError::UnsupportedAlgorithm("RS256".to_owned()))
    );
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_refused() {
    let ed = TestKey::ed25519("ed-1");
    let server = JwksServer::start(&[&ed]).await;
    let verifier = server.verifier().await;

    let mut other_issuer = claims("acme");
    other_issuer.iss = Some("https://evil.test".to_owned());
    assert_eq!(
        verifier.verify(&ed.sign(&other_issuer)).await,
        Err(AuthError::InvalidIssuer)
    );
    let mut other_audience = claims("acme");
    other_audience.aud = vec!["another-service".to_owned()];
    assert_eq!(
        verifier.verify(&ed.sign(&other_audience)).await,
        Err(AuthError::InvalidAudience)
    );
    let mut no_issuer = claims("acme");
    no_issuer.iss = None;
    assert_eq!(
        verifier.verify(&ed.sign(&no_issuer)).await,
        Err(AuthError::MissingClaim("iss".to_owned()))
    );
    let mut no_audience = claims("acme");
    no_audience.aud = vec![];
    assert_eq!(
        verifier.verify(&ed.sign(&no_audience)).await,
        Err(AuthError::MissingClaim("aud".to_owned()))
    );
}

/// A token without `kid` is refused even when the set holds exactly one
/// key: which key signs is the identity provider's to say.
#[tokio::test]
async fn a_token_without_kid_is_refused_even_with_one_key() {
    let ec = TestKey::p256("only");
    let server = JwksServer::start(&[&ec]).await;
    let verifier = server.verifier().await;
    let token = ec.sign_with(Header::new(Algorithm::ES256), &claims("acme"));
    assert!(
        matches!(verifier.verify(&token).await, Err(AuthError::Malformed(ref m)) if m.contains("kid")),
        "{:?}",
        verifier.verify(&token).await
    );
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn start_up_fails_naming_jwks_url_when_the_set_cannot_be_had() {
    let ec = TestKey::p256("ec-1");
    let server = JwksServer::start(&[&ec]).await;
    let config_error = |err: AuthError| {
        if let AuthError::Config(message) = err {
            message
        } else {
            panic!("expected a config error, got {err:?}")
        }
    };

    server.set_down(true);
    let message = config_error(JwtVerifier::jwks(server.options()).await.unwrap_err());
    assert!(message.starts_with("auth.jwks_url:"), "{message}");
    assert!(message.contains("503"), "{message}");

    // keys, but none usable with the allowed algorithms
    server.set_down(false);
    let message = config_error(
        JwtVerifier::jwks(JwksOptions {
            algorithms: vec![Algorithm::EdDSA],
            ..server.options()
        })
        .await
        .unwrap_err(),
    );
    assert!(message.contains("auth.jwks_url"), "{message}");

    // not a key set
    *server.served.set.lock().unwrap() = json!({"issuer": ISSUER});
    let message = config_error(JwtVerifier::jwks(server.options()).await.unwrap_err());
    assert!(message.contains("auth.jwks_url"), "{message}");

    // nothing listening
    let url = server.url.clone();
    server.stop().await;
    let message = config_error(JwtVerifier::jwks(JwksOptions::new(url)).await.unwrap_err());
    assert!(message.contains("auth.jwks_url"), "{message}");
}

#[test]
fn keys_that_cannot_verify_here_are_skipped_not_fatal() {
    let ed = TestKey::ed25519("ed-ok");
    let ec = TestKey::p256("ec-ok");
    let mut no_kid = TestKey::p256("x").jwk;
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut short_x = ed.jwk.clone();
    short_x["kid"] = json!("ed-short");
    short_x["x"] = json!(b64(&[7; 16]));
    let mut short_y = ec.jwk.clone();
    short_y["kid"] = json!("ec-short");
    short_y["y"] = json!(b64(&[7; 31]));
    let mut encryption = ec.jwk.clone();
    encryption["kid"] = json!("ec-enc");
    encryption["use"] = json!("enc");
    let mut wrong_alg = ec.jwk.clone();
    wrong_alg["kid"] = json!("ec-rs256");
    wrong_alg["alg"] = json!("RS256");
    let body = serde_json::to_vec(&json!({"keys": [
        ed.jwk,
        ec.jwk,
        no_kid,
        short_x,
        short_y,
        encryption,
        wrong_alg,
        {"kty": "oct", "kid": "hmac", "k": b64(SECRET)},
        {"kty": "RSA", "kid": "rsa-1024", "n": b64(&[0xc1; 128]), "e": "AQAB"},
        {"kty": "EC", "crv": "P-521", "kid": "p521", "x": b64(&[1; 66]), "y": b64(&[1; 66])},
        {"kty": "XYZ", "kid": "future"},
        "not an object",
    ]}))
    .unwrap();
    let keys = parse_key_set(&body, &DEFAULT_JWKS_ALGORITHMS).unwrap();
    let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
    kids.sort_unstable();
    assert_eq!(kids, ["ec-ok", "ed-ok"]);
    assert!(parse_key_set(b"{\"keys\": 3}", &DEFAULT_JWKS_ALGORITHMS).is_err());
    assert!(parse_key_set(b"<html>", &DEFAULT_JWKS_ALGORITHMS).is_err());
}

#[tokio::test]
async fn config_with_jwks_url_verifies_and_refuses_the_hs256_secret() {
    let ec = TestKey::p256("ec-1");
    let server = JwksServer::start(&[&ec]).await;
    let config: AuthConfig = serde_json::from_value(json!({
        "jwks_url": server.url,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_refresh_floor_secs": 5,
    }))
    .unwrap();
    let env = |_: &str| Some(String::from_utf8(SECRET.to_vec()).unwrap());
    // plain http is a development setting
    let err = config.verifier_with(false, env).await.unwrap_err();
    assert!(err.to_string().contains("auth.jwks_url"), "{err}");

    let verifier = config.verifier_with(true, env).await.unwrap();
    assert!(verifier.verify(&ec.sign(&claims("acme"))).await.is_ok());
    let dev = mint_hs256(SECRET, &claims("acme")).unwrap();
    assert_eq!(
        verifier.verify(&dev).await,
        Err(AuthError::UnsupportedAlgorithm("HS256".to_owned()))
    );
    assert_eq!(
        key_set_of(&verifier).options().refresh_floor,
        Duration::from_secs(5)
    );
}

/// Echoes the tenant of the principal it was given.
async fn echo(req: http::Request<Body>) -> Result<http::Response<Body>, Infallible> {
    let mut response = http::Response::new(Body::default());
    if let Some(p) = req.extensions().get::<Principal>() {
        response
            .headers_mut()
            .insert("x-tenant", p.tenant.parse().unwrap());
    }
    Ok(response)
}

#[tokio::test]
async fn the_auth_layer_waits_for_a_refetch_and_answers_unavailable_when_it_fails() {
    let (a, b, c) = (
        TestKey::ed25519("a"),
        TestKey::ed25519("b"),
        TestKey::ed25519("c"),
    );
    let server = JwksServer::start(&[&a]).await;
    let verifier = server.verifier().await;
    let set = key_set_of(&verifier);
    let svc = AuthLayer::new(verifier).layer(service_fn(echo));
    let call = |token: String| {
        let request = http::Request::builder()
            .uri("http://localhost/quarry.v1.SqlService/ExecuteSql")
            .header("content-type", "application/grpc")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::default())
            .unwrap();
        svc.clone().oneshot(request)
    };

    server.publish(&[&a, &b]);
    set.expire_floor().await;
    let response = call(b.sign(&claims("acme"))).await.unwrap();
    assert_eq!(response.headers()["x-tenant"], "acme");
    assert_eq!(server.fetches(), 2);

    server.set_down(true);
    set.expire_floor().await;
    let response = call(c.sign(&claims("acme"))).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "14");
    assert!(response.headers().get("x-tenant").is_none());
}

/// An OpenID provider's discovery endpoint on 127.0.0.1 serving `document`
/// (with `{base}` replaced by its own base URL); returns the base URL.
async fn discovery_server(document: serde_json::Value) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let body = document.to_string().replace("{base}", &base);
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, task)
}

fn discovery_config(issuer: &str) -> AuthConfig {
    serde_json::from_value(json!({
        "oidc_discovery": true,
        "issuer": issuer,
        "audience": AUDIENCE,
    }))
    .unwrap()
}

#[tokio::test]
async fn oidc_discovery_finds_the_key_set_of_exactly_the_configured_issuer() {
    let ec = TestKey::p256("ec-1");
    let keys = JwksServer::start(&[&ec]).await;
    let (issuer, task) = discovery_server(json!({"issuer": "{base}", "jwks_uri": keys.url})).await;
    let env = |_: &str| None;
    let verifier = discovery_config(&issuer)
        .verifier_with(true, env)
        .await
        .unwrap();
    let mut from_issuer = claims("acme");
    from_issuer.iss = Some(issuer.clone());
    assert!(verifier.verify(&ec.sign(&from_issuer)).await.is_ok());
    // the issuer is enforced too: the key set alone is not enough
    assert!(verifier.verify(&ec.sign(&claims("acme"))).await.is_err());
    assert_eq!(key_set_of(&verifier).options().url, keys.url);
    // plain http discovery is a development setting
    let err = discovery_config(&issuer)
        .verifier_with(false, env)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("auth.issuer"), "{err}");
    task.abort();

    // a document naming another issuer is refused (OIDC Discovery §4.3)
    let (other, task) =
        discovery_server(json!({"issuer": "https://evil.example", "jwks_uri": keys.url})).await;
    let err = discovery_config(&other)
        .verifier_with(true, env)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("names issuer"), "{err}");
    task.abort();
    // no jwks_uri
    let (bare, task) = discovery_server(json!({"issuer": "{base}"})).await;
    let err = discovery_config(&bare)
        .verifier_with(true, env)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("jwks_uri"), "{err}");
    task.abort();
    // exclusive with jwks_url, and needs an issuer
    let mut both = discovery_config(&issuer);
    both.jwks_url = Some(keys.url.clone());
    assert!(both.validate(true).is_err());
    let mut no_issuer = discovery_config(&issuer);
    no_issuer.issuer = None;
    assert!(
        no_issuer
            .validate(true)
            .unwrap_err()
            .to_string()
            .contains("needs auth.issuer")
    );
}
