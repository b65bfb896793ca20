use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

fn env(name: &str) -> Option<String> {
    match name {
        "MY_SECRET" | DEFAULT_JWT_SECRET_ENV => Some(SECRET.to_owned()),
        "SHORT" => Some("short".to_owned()),
        _ => None,
    }
}

#[test]
fn secret_from_named_env_var() {
    let config: AuthConfig = serde_json::from_str(r#"{"jwt_secret_env": "MY_SECRET"}"#).unwrap();
    assert_eq!(config.secret_with(env).unwrap(), SECRET.as_bytes());
    assert_eq!(config.leeway_secs, 30);
}

#[test]
fn secret_defaults_to_quarry_jwt_secret() {
    assert_eq!(
        AuthConfig::default().secret_with(env).unwrap(),
        SECRET.as_bytes()
    );
}

#[test]
fn both_sources_missing_var_or_short_secret_are_errors() {
    let both = AuthConfig {
        jwt_secret_env: Some("MY_SECRET".to_owned()),
        jwt_secret: Some(SECRET.to_owned()),
        ..AuthConfig::default()
    };
    assert!(matches!(both.secret_with(env), Err(AuthError::Config(_))));
    let unset = AuthConfig {
        jwt_secret_env: Some("UNSET".to_owned()),
        ..AuthConfig::default()
    };
    assert!(matches!(unset.secret_with(env), Err(AuthError::Config(_))));
    let short = AuthConfig {
        jwt_secret_env: Some("SHORT".to_owned()),
        ..AuthConfig::default()
    };
    assert!(matches!(short.secret_with(env), Err(AuthError::Config(_))));
}

#[test]
fn unknown_fields_are_rejected() {
    assert!(serde_json::from_str::<AuthConfig>(r#"{"jwt_secrets": "x"}"#).is_err());
    assert!(
        serde_json::from_str::<AuthConfig>(r#"{"rate_limit": {"requests_per_sec": 1}}"#).is_err()
    );
}

#[test]
fn debug_redacts_inline_secret() {
    let config = AuthConfig {
        jwt_secret: Some(SECRET.to_owned()),
        ..AuthConfig::default()
    };
    assert!(!format!("{config:?}").contains(SECRET));
}

#[test]
fn verifier_applies_issuer_and_audience() {
    use crate::jwt::{Claims, mint_hs256};
    use std::time::Duration;

    let config: AuthConfig = serde_json::from_str(
        r#"{"jwt_secret": "0123456789abcdef0123456789abcdef-test", "issuer": "quarry", "audience": "api"}"#,
    )
    .unwrap();
    let verifier = config.verifier_with(|_| None).unwrap();
    let mut claims = Claims::issued_now("acme", "alice", Duration::from_secs(60));
    assert!(
        verifier
            .verify(&mint_hs256(SECRET.as_bytes(), &claims).unwrap())
            .is_err()
    );
    claims.iss = Some("quarry".to_owned());
    claims.aud = vec!["api".to_owned()];
    assert!(
        verifier
            .verify(&mint_hs256(SECRET.as_bytes(), &claims).unwrap())
            .is_ok()
    );
}
