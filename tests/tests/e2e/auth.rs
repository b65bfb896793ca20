//! Authentication and per-tenant rate limits over real gRPC: every RPC but
//! health and reflection needs a valid HS256 JWT.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use quarry_proto::v1::ValidateSqlRequest;
use quarry_tests::{Options, SECRET, TestServer, authed, token};
use tonic::Code;
use tonic_types::StatusExt;

fn validate() -> ValidateSqlRequest {
    ValidateSqlRequest {
        sql: "SELECT 1".into(),
    }
}

/// An unsigned token (`alg: none`, empty signature) as an attacker would send it.
fn unsigned(header: &str, claims: &serde_json::Value) -> String {
    let head = URL_SAFE_NO_PAD.encode(header);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{head}.{body}.")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn tokens_are_checked_on_every_rpc() {
    let server = TestServer::start(Options::default()).await;
    let mut sql = server.sql();

    // no token
    let status = sql.validate_sql(validate()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // not a JWT
    let status = sql
        .validate_sql(authed(validate(), "garbage"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // signed with another secret
    let claims =
        quarry_auth::Claims::issued_now("t1", "mallory", std::time::Duration::from_secs(600));
    let bad = quarry_auth::mint_hs256(b"another-secret-0123456789abcdef-xyz", &claims).unwrap();
    let status = sql
        .validate_sql(authed(validate(), &bad))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // expired (well past the leeway)
    let mut expired = quarry_auth::Claims::issued_now("t1", "a", std::time::Duration::from_secs(1));
    expired.exp = now() - 3600;
    let token_expired = quarry_auth::mint_hs256(SECRET.as_bytes(), &expired).unwrap();
    let status = sql
        .validate_sql(authed(validate(), &token_expired))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{}", status.message());

    // alg: none
    let claims = serde_json::json!({"sub": "a", "tenant": "t1", "exp": now() + 3600});
    let none = unsigned(r#"{"alg":"none","typ":"JWT"}"#, &claims);
    let status = sql
        .validate_sql(authed(validate(), &none))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // and a good one passes
    let ok = sql
        .validate_sql(authed(validate(), &token("t1")))
        .await
        .unwrap();
    assert!(ok.into_inner().valid);
    server.stop().await;
}

#[tokio::test]
async fn health_needs_no_token() {
    let server = TestServer::start(Options::default()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel());
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "quarry.v1.AssistantService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.stop().await;
}

#[tokio::test]
async fn rate_limit_refuses_one_tenant_with_retry_info_and_spares_another() {
    let server = TestServer::start(Options {
        rate_limit: Some((1, 2)),
        ..Default::default()
    })
    .await;
    let mut sql = server.sql();
    let a = token("tenant-a");
    for _ in 0..2 {
        sql.validate_sql(authed(validate(), &a)).await.unwrap();
    }
    let status = sql.validate_sql(authed(validate(), &a)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = status.get_details_retry_info().expect("RetryInfo detail");
    assert!(retry.retry_delay.is_some());
    // another tenant is unaffected
    sql.validate_sql(authed(validate(), &token("tenant-b")))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn reflection_needs_no_token_and_lists_the_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start(Options::default()).await;
    let mut client = ServerReflectionClient::new(server.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "quarry.v1.AssistantService",
        "quarry.v1.SqlService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    server.stop().await;
}
