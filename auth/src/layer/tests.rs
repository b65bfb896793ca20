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
