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

#[tokio::test]
async fn verifier_applies_issuer_and_audience() {
    use crate::jwt::{Claims, mint_hs256};
    use std::time::Duration;

    let config: AuthConfig = serde_json::from_str(
        r#"{"jwt_secret": "0123456789abcdef0123456789abcdef-test", "issuer": "quarry", "audience": "api"}"#,
    )
    .unwrap();
    let verifier = config.verifier_with(true, |_| None).await.unwrap();
    let mut claims = Claims::issued_now("acme", "alice", Duration::from_secs(60));
    assert!(
        verifier
            .verify(&mint_hs256(SECRET.as_bytes(), &claims).unwrap())
            .await
            .is_err()
    );
    claims.iss = Some("quarry".to_owned());
    claims.aud = vec!["api".to_owned()];
    assert!(
        verifier
            .verify(&mint_hs256(SECRET.as_bytes(), &claims).unwrap())
            .await
            .is_ok()
    );
}

/// A config with everything production needs: issuer, audience and the
/// secret from the environment.
fn production() -> AuthConfig {
    AuthConfig {
        jwt_secret_env: Some("MY_SECRET".to_owned()),
        issuer: Some("https://idp.example".to_owned()),
        audience: Some("quarry".to_owned()),
        ..AuthConfig::default()
    }
}

fn config_error(result: Result<()>) -> String {
    if let Err(AuthError::Config(message)) = result {
        message
    } else {
        panic!("expected a config error, got {result:?}")
    }
}

#[test]
fn outside_development_issuer_and_audience_are_required() {
    assert_eq!(production().validate(false), Ok(()));

    let no_issuer = AuthConfig {
        issuer: None,
        ..production()
    };
    assert_eq!(
        config_error(no_issuer.validate(false)),
        "auth.issuer is required outside development (server.development = false)"
    );
    let empty_issuer = AuthConfig {
        issuer: Some(String::new()),
        ..production()
    };
    assert!(config_error(empty_issuer.validate(false)).starts_with("auth.issuer "));
    let no_audience = AuthConfig {
        audience: None,
        ..production()
    };
    assert_eq!(
        config_error(no_audience.validate(false)),
        "auth.audience is required outside development (server.development = false)"
    );
    // development allows both to be absent
    assert_eq!(no_issuer.validate(true), Ok(()));
    assert_eq!(no_audience.validate(true), Ok(()));
    assert_eq!(AuthConfig::default().validate(true), Ok(()));
}

#[test]
fn an_inline_secret_is_for_development_only() {
    let inline = AuthConfig {
        jwt_secret_env: None,
        jwt_secret: Some(SECRET.to_owned()),
        ..production()
    };
    let message = config_error(inline.validate(false));
    assert!(message.starts_with("auth.jwt_secret "), "{message}");
    assert_eq!(inline.validate(true), Ok(()));
}

#[tokio::test]
async fn the_verifier_is_refused_for_a_non_development_config_without_issuer() {
    let config = AuthConfig {
        issuer: None,
        ..production()
    };
    let err = config.verifier_with(false, env).await.unwrap_err();
    assert!(err.to_string().contains("auth.issuer"), "{err}");
    assert!(config.verifier_with(true, env).await.is_ok());
    assert!(production().verifier_with(false, env).await.is_ok());
}

#[test]
fn jwks_settings_parse_with_defaults() {
    let config: AuthConfig =
        serde_json::from_str(r#"{"jwks_url": "https://idp.example/.well-known/jwks.json"}"#)
            .unwrap();
    let options = config.jwks_options().unwrap();
    assert_eq!(options.url, "https://idp.example/.well-known/jwks.json");
    assert_eq!(
        options.algorithms,
        [
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::Algorithm::EdDSA
        ]
    );
    assert_eq!(options.refresh_floor.as_secs(), 60);
    assert_eq!(options.max_age.as_secs(), 3600);
    assert_eq!(options.timeout.as_secs(), 10);
    assert!(AuthConfig::default().jwks_options().is_none());

    let config: AuthConfig = serde_json::from_str(
        r#"{"jwks_url": "https://idp.example/jwks", "jwks_algorithms": ["PS256", "ES384"],
            "jwks_refresh_floor_secs": 30, "jwks_max_age_secs": 600, "jwks_timeout_secs": 2}"#,
    )
    .unwrap();
    let options = config.jwks_options().unwrap();
    assert_eq!(
        options.algorithms,
        [
            jsonwebtoken::Algorithm::PS256,
            jsonwebtoken::Algorithm::ES384
        ]
    );
    assert_eq!(
        (
            options.refresh_floor.as_secs(),
            options.max_age.as_secs(),
            options.timeout.as_secs()
        ),
        (30, 600, 2)
    );
    assert!(serde_json::from_str::<AuthConfig>(r#"{"jwks_algorithms": ["XS256"]}"#).is_err());
}

#[test]
fn jwks_url_excludes_a_secret_and_hmac_and_needs_https_outside_development() {
    let jwks = AuthConfig {
        jwt_secret_env: None,
        jwks_url: Some("https://idp.example/.well-known/jwks.json".to_owned()),
        ..production()
    };
    assert_eq!(jwks.validate(false), Ok(()));

    let with_secret = AuthConfig {
        jwt_secret_env: Some("MY_SECRET".to_owned()),
        ..jwks.clone()
    };
    assert!(config_error(with_secret.validate(true)).contains("auth.jwks_url"));
    let with_inline = AuthConfig {
        jwt_secret: Some(SECRET.to_owned()),
        ..jwks.clone()
    };
    assert!(config_error(with_inline.validate(true)).contains("auth.jwks_url"));

    let hmac = AuthConfig {
        jwks_algorithms: vec![
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::HS256,
        ],
        ..jwks.clone()
    };
    assert!(config_error(hmac.validate(true)).starts_with("auth.jwks_algorithms "));
    let none = AuthConfig {
        jwks_algorithms: vec![],
        ..jwks.clone()
    };
    assert!(config_error(none.validate(true)).starts_with("auth.jwks_algorithms "));

    let http = AuthConfig {
        jwks_url: Some("http://idp.example/jwks".to_owned()),
        ..jwks.clone()
    };
    assert!(config_error(http.validate(false)).starts_with("auth.jwks_url must be https"));
    assert_eq!(http.validate(true), Ok(()));
    for url in ["idp.example/jwks", "ftp://idp.example/jwks"] {
        let bad = AuthConfig {
            jwks_url: Some(url.to_owned()),
            ..jwks.clone()
        };
        assert!(
            config_error(bad.validate(true)).starts_with("auth.jwks_url "),
            "{url}"
        );
    }
}
