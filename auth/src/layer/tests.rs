use std::convert::Infallible;
use std::time::Duration;

use tonic::body::Body;
use tower::{ServiceBuilder, ServiceExt as _, service_fn};

use super::*;
use crate::Principal;
use crate::jwt::{Claims, mint_hs256};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

/// Echoes the principal it was given in an `x-tenant` response header.
async fn echo(req: http::Request<Body>) -> Result<http::Response<Body>, Infallible> {
    let mut response = http::Response::new(Body::default());
    if let Some(p) = req.extensions().get::<Principal>() {
        response
            .headers_mut()
            .insert("x-tenant", p.tenant.parse().unwrap());
        response
            .headers_mut()
            .insert("x-subject", p.subject.parse().unwrap());
    }
    Ok(response)
}

fn request(path: &str, authorization: Option<&str>) -> http::Request<Body> {
    let mut builder = http::Request::builder()
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc");
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    builder.body(Body::default()).unwrap()
}

fn grpc_status(response: &http::Response<Body>) -> Option<tonic::Code> {
    Status::from_header_map(response.headers()).map(|s| s.code())
}

fn token(tenant: &str) -> String {
    mint_hs256(
        SECRET,
        &Claims::issued_now(tenant, "alice", Duration::from_secs(60)),
    )
    .unwrap()
}

#[tokio::test]
async fn missing_header_is_unauthenticated() {
    let svc = AuthLayer::new(JwtVerifier::hs256(SECRET)).layer(service_fn(echo));
    let response = svc
        .oneshot(request("/quarry.v1.AssistantService/Ask", None))
        .await
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "16");
    assert_eq!(grpc_status(&response), Some(tonic::Code::Unauthenticated));
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert!(response.headers().get("x-tenant").is_none());
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let svc = AuthLayer::new(JwtVerifier::hs256(SECRET)).layer(service_fn(echo));
    for auth in [
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer not.a.jwt",
        "Bearer",
    ] {
        let response = svc
            .clone()
            .oneshot(request("/quarry.v1.SqlService/ExecuteSql", Some(auth)))
            .await
            .unwrap();
        assert_eq!(
            grpc_status(&response),
            Some(tonic::Code::Unauthenticated),
            "{auth}"
        );
    }
}

#[tokio::test]
async fn a_second_authorization_header_is_refused_not_ignored() {
    let svc = AuthLayer::new(JwtVerifier::hs256(SECRET)).layer(service_fn(echo));
    let mut req = request(
        "/quarry.v1.SqlService/ExecuteSql",
        Some(&format!("Bearer {}", token("acme"))),
    );
    req.headers_mut().append(
        "authorization",
        format!("Bearer {}", token("other")).parse().unwrap(),
    );
    let response = svc.oneshot(req).await.unwrap();
    assert_eq!(grpc_status(&response), Some(tonic::Code::Unauthenticated));
    assert!(
        response.headers().get("x-tenant").is_none(),
        "the inner service ran for one of the two tokens"
    );
    let status = Status::from_header_map(response.headers()).unwrap();
    assert_eq!(status.message(), "more than one authorization header");
}

#[tokio::test]
async fn health_and_reflection_pass_without_token() {
    let svc = AuthLayer::new(JwtVerifier::hs256(SECRET)).layer(service_fn(echo));
    for path in [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        let response = svc.clone().oneshot(request(path, None)).await.unwrap();
        assert_eq!(grpc_status(&response), None, "{path}");
    }
}

#[tokio::test]
async fn valid_token_gives_inner_service_the_principal() {
    let svc = AuthLayer::new(JwtVerifier::hs256(SECRET)).layer(service_fn(echo));
    let auth = format!("bearer {}", token("acme"));
    let response = svc
        .oneshot(request("/quarry.v1.AssistantService/Ask", Some(&auth)))
        .await
        .unwrap();
    assert_eq!(grpc_status(&response), None);
    assert_eq!(response.headers()["x-tenant"], "acme");
    assert_eq!(response.headers()["x-subject"], "alice");
}

#[tokio::test]
async fn auth_then_rate_limit_compose_in_service_builder() {
    use crate::rate_limit::{RateLimitConfig, RateLimitLayer, TenantRateLimiter};
    use std::num::NonZeroU32;

    let limiter = TenantRateLimiter::new(RateLimitConfig {
        requests_per_second: NonZeroU32::new(1).unwrap(),
        burst: NonZeroU32::new(1).unwrap(),
        shared: false,
    });
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(JwtVerifier::hs256(SECRET)))
        .layer(RateLimitLayer::new(limiter))
        .service(service_fn(echo));
    let auth = format!("Bearer {}", token("acme"));
    let path = "/quarry.v1.AssistantService/Ask";

    let first = svc
        .clone()
        .oneshot(request(path, Some(&auth)))
        .await
        .unwrap();
    assert_eq!(first.headers()["x-tenant"], "acme");
    let second = svc
        .clone()
        .oneshot(request(path, Some(&auth)))
        .await
        .unwrap();
    assert_eq!(grpc_status(&second), Some(tonic::Code::ResourceExhausted));
    // health is neither authenticated nor limited
    for _ in 0..3 {
        let health = svc
            .clone()
            .oneshot(request("/grpc.health.v1.Health/Check", None))
            .await
            .unwrap();
        assert_eq!(grpc_status(&health), None);
    }
}

/// Echoes the principal (as [`echo`]) and, as `x-verified-tenant`, the
/// tenant of the verified token the layer recorded for the request's token.
async fn echo_verified(req: http::Request<Body>) -> Result<http::Response<Body>, Infallible> {
    let verified = req.extensions().get::<VerifiedToken>().and_then(|v| {
        let token = bearer_token(req.headers()).ok()?;
        v.principal_for(token).map(|p| p.tenant.clone())
    });
    let mut response = echo(req).await?;
    if let Some(tenant) = verified {
        response
            .headers_mut()
            .insert("x-verified-tenant", tenant.parse().unwrap());
    }
    Ok(response)
}

fn principal(tenant: &str) -> Principal {
    Principal {
        tenant: tenant.to_owned(),
        subject: "alice".to_owned(),
        roles: vec![],
        scopes: vec![],
    }
}

/// A request the layer authenticated carries its token as verified, for the
/// in-process calls made on the caller's behalf.
#[tokio::test]
async fn an_authenticated_request_carries_its_verified_token() {
    let svc = AuthLayer::new(JwtVerifier::hs256(SECRET)).layer(service_fn(echo_verified));
    let auth = format!("Bearer {}", token("acme"));
    let response = svc
        .oneshot(request("/quarry.v1.AssistantService/Ask", Some(&auth)))
        .await
        .unwrap();
    assert_eq!(response.headers()["x-verified-tenant"], "acme");
}

/// An in-process call with the verified token of its own bearer token is
/// not verified again: the recorded principal is used (here the token
/// itself would not verify, which shows that no verification ran).
#[tokio::test]
async fn a_verified_token_is_taken_for_the_same_token_without_verifying_again() {
    let svc = AuthLayer::new(JwtVerifier::hs256(SECRET)).layer(service_fn(echo));
    let mut req = request("/quarry.v1.SqlService/ExecuteSql", Some("Bearer not-a-jwt"));
    req.extensions_mut()
        .insert(VerifiedToken::new("not-a-jwt", principal("acme")));
    let response = svc.oneshot(req).await.unwrap();
    assert_eq!(grpc_status(&response), None);
    assert_eq!(response.headers()["x-tenant"], "acme");
}

/// The bypass: a verified token recorded for another token is ignored, so
/// the request's own token is verified — an invalid one is refused, and a
/// valid one gets its own principal, never the recorded one.
#[tokio::test]
async fn a_verified_token_of_another_token_does_not_authenticate() {
    let svc = AuthLayer::new(JwtVerifier::hs256(SECRET)).layer(service_fn(echo));
    let mut req = request("/quarry.v1.SqlService/ExecuteSql", Some("Bearer not-a-jwt"));
    req.extensions_mut()
        .insert(VerifiedToken::new(&token("acme"), principal("acme")));
    let response = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(grpc_status(&response), Some(tonic::Code::Unauthenticated));

    let mut req = request(
        "/quarry.v1.SqlService/ExecuteSql",
        Some(&format!("Bearer {}", token("globex"))),
    );
    req.extensions_mut()
        .insert(VerifiedToken::new(&token("acme"), principal("acme")));
    let response = svc.oneshot(req).await.unwrap();
    assert_eq!(grpc_status(&response), None);
    assert_eq!(response.headers()["x-tenant"], "globex");
}
