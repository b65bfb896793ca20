use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

fn claims() -> Claims {
    let mut c = Claims::issued_now("acme", "alice", Duration::from_secs(300));
    c.roles = vec!["analyst".to_owned()];
    c.scopes = vec!["sql".to_owned(), "search".to_owned()];
    c
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

/// A token with an arbitrary header, signed with HMAC-SHA256 regardless of
/// what the header claims.
fn sign_raw(header: &serde_json::Value, payload: &serde_json::Value, secret: &[u8]) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let signer = (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.signer_factory)(
        &Algorithm::HS256,
        &EncodingKey::from_secret(secret),
    )
    .unwrap();
    let sig = signer.try_sign(message.as_bytes()).unwrap();
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn verify_ok_yields_principal() {
    let token = mint_hs256(SECRET, &claims()).unwrap();
    let principal = JwtVerifier::hs256(SECRET).verify(&token).await.unwrap();
    assert_eq!(
        principal,
        Principal {
            tenant: "acme".to_owned(),
            subject: "alice".to_owned(),
            roles: vec!["analyst".to_owned()],
            scopes: vec!["sql".to_owned(), "search".to_owned()],
        }
    );
}

#[tokio::test]
async fn scopes_and_roles_default_to_empty() {
    let payload = serde_json::json!({"sub": "svc", "tenant": "acme", "exp": unix_now() + 60});
    let token = sign_raw(
        &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        &payload,
        SECRET,
    );
    let p = JwtVerifier::hs256(SECRET).verify(&token).await.unwrap();
    assert!(p.scopes.is_empty() && p.roles.is_empty());
}

#[tokio::test]
async fn missing_exp_is_rejected() {
    let payload = serde_json::json!({"sub": "alice", "tenant": "acme", "roles": []});
    let token = sign_raw(&serde_json::json!({"alg": "HS256"}), &payload, SECRET);
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::MissingClaim("exp".to_owned()))
    );
}

#[tokio::test]
async fn expired_token_is_rejected_beyond_leeway() {
    let mut c = claims();
    c.exp = unix_now() - 120;
    let token = mint_hs256(SECRET, &c).unwrap();
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::Expired)
    );
    // within a generous leeway the same token is still accepted
    assert!(
        JwtVerifier::hs256(SECRET)
            .with_leeway(600)
            .verify(&token)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn bad_signature_is_rejected() {
    let token = mint_hs256(b"another-secret-another-secret-xx", &claims()).unwrap();
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::BadSignature)
    );

    // tampered payload under the right key
    let token = mint_hs256(SECRET, &claims()).unwrap();
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims();
    forged.tenant = "victim".to_owned();
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    parts[1] = &forged_payload;
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&parts.join(".")).await,
        Err(AuthError::BadSignature)
    );
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let header = b64(&serde_json::json!({"alg": "none", "typ": "JWT"}));
    let payload = b64(&serde_json::to_value(claims()).unwrap());
    let token = format!("{header}.{payload}.");
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::UnsupportedAlgorithm("none".to_owned()))
    );
}

#[tokio::test]
async fn rs256_header_with_hmac_secret_is_rejected() {
    // algorithm confusion: HMAC-signed with the shared secret but labelled RS256
    let token = sign_raw(
        &serde_json::json!({"alg": "RS256", "typ": "JWT"}),
        &serde_json::to_value(claims()).unwrap(),
        SECRET,
    );
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::UnsupportedAlgorithm("RS256".to_owned()))
    );
}

#[tokio::test]
async fn malformed_tokens_are_rejected() {
    let verifier = JwtVerifier::hs256(SECRET);
    for token in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.",
        "e30.e30.",
        "e30.e30.e30 ",
        &format!("{}.!!!.sig", b64(&serde_json::json!({"alg": "HS256"}))),
    ] {
        assert!(
            matches!(verifier.verify(token).await, Err(AuthError::Malformed(_))),
            "{token:?} gave {:?}",
            verifier.verify(token).await
        );
    }
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(matches!(
        verifier.verify(&huge).await,
        Err(AuthError::Malformed(_))
    ));
}

#[tokio::test]
async fn garbage_payload_under_valid_signature_is_malformed() {
    let header = b64(&serde_json::json!({"alg": "HS256"}));
    let message = format!("{header}.bm90LWpzb24");
    let signer = (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.signer_factory)(
        &Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let token = format!(
        "{message}.{}",
        URL_SAFE_NO_PAD.encode(signer.try_sign(message.as_bytes()).unwrap())
    );
    assert!(matches!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::Malformed(_))
    ));
}

#[tokio::test]
async fn claims_of_the_wrong_shape_are_malformed() {
    let payload = serde_json::json!({"sub": "alice", "exp": unix_now() + 60}); // no tenant
    let token = sign_raw(&serde_json::json!({"alg": "HS256"}), &payload, SECRET);
    assert!(matches!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::Malformed(_))
    ));
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let verifier = JwtVerifier::hs256(SECRET)
        .with_issuer("quarry-dev")
        .with_audience("quarry");
    let mut c = claims();
    c.aud = vec!["quarry".to_owned()];
    assert_eq!(
        verifier.verify(&mint_hs256(SECRET, &c).unwrap()).await,
        Err(AuthError::MissingClaim("iss".to_owned()))
    );
    c.iss = Some("quarry-dev".to_owned());
    c.aud = vec![];
    assert_eq!(
        verifier.verify(&mint_hs256(SECRET, &c).unwrap()).await,
        Err(AuthError::MissingClaim("aud".to_owned()))
    );
    c.iss = Some("someone-else".to_owned());
    c.aud = vec!["quarry".to_owned()];
    assert_eq!(
        verifier.verify(&mint_hs256(SECRET, &c).unwrap()).await,
        Err(AuthError::InvalidIssuer)
    );
    c.iss = Some("quarry-dev".to_owned());
    c.aud = vec!["other".to_owned()];
    assert_eq!(
        verifier.verify(&mint_hs256(SECRET, &c).unwrap()).await,
        Err(AuthError::InvalidAudience)
    );
    c.aud = vec!["other".to_owned(), "quarry".to_owned()];
    assert!(
        verifier
            .verify(&mint_hs256(SECRET, &c).unwrap())
            .await
            .is_ok()
    );
}

#[test]
fn aud_reads_string_or_array_and_writes_one_as_string() {
    let mut c = claims();
    c.aud = vec!["quarry".to_owned()];
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["aud"], serde_json::json!("quarry"));
    let back: Claims = serde_json::from_value(json).unwrap();
    assert_eq!(back.aud, vec!["quarry".to_owned()]);
}

#[test]
fn mint_refuses_short_secret() {
    assert!(matches!(
        mint_hs256(b"short", &claims()),
        Err(AuthError::Config(_))
    ));
}

proptest! {
    #[test]
    fn arbitrary_tokens_never_panic(token in ".{0,300}") {
        let _ = futures::executor::block_on(JwtVerifier::hs256(SECRET).verify(&token));
    }

    #[test]
    fn arbitrary_dotted_base64_never_panics(
        a in "[A-Za-z0-9_-]{0,80}",
        b in "[A-Za-z0-9_-]{0,80}",
        c in "[A-Za-z0-9_-]{0,80}",
    ) {
        let token = format!("{a}.{b}.{c}");
        prop_assert!(futures::executor::block_on(JwtVerifier::hs256(SECRET).verify(&token)).is_err());
    }
}
