//! The Kubernetes manifests' gRPC probes (k8s/) ask each role's server about
//! services it reports `SERVING`: for every Deployment, a server started with
//! the manifest's `quarry serve` arguments answers `grpc.health.v1` for the
//! whole server (`""`, the startup and liveness probes) and for the service
//! its readiness probe names — and not for a service of another role, so a
//! probe naming the wrong one would keep the pods unready.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::path::Path;

use quarry_server::{Role, Roles};
use quarry_tests::{Options, TestServer};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// `quarry serve`'s arguments and the readiness probe's service, read from a
/// manifest (the flow sequence `args: [...]` and `service: ...`).
fn probe_of(manifest: &str) -> (Vec<String>, Option<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../k8s")
        .join(manifest);
    let text = std::fs::read_to_string(&path).unwrap();
    let args = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("args: "))
        .unwrap_or_else(|| panic!("{manifest}: no args"));
    let args: Vec<String> = serde_json::from_str(args).unwrap();
    let service = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("service: "))
        .map(str::to_owned);
    (args, service)
}

fn roles_of(args: &[String]) -> Roles {
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{args:?}");
    Roles::of(
        args.windows(2)
            .filter(|w| w[0] == "--role")
            .map(|w| w[1].parse::<Role>().unwrap()),
    )
}

async fn status(server: &TestServer, service: &str) -> Result<i32, tonic::Code> {
    let mut health = HealthClient::new(server.channel());
    health
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

#[tokio::test]
async fn the_manifests_probes_ask_about_services_each_role_serves() {
    let serving = Ok(ServingStatus::Serving as i32);
    let all_services = [
        "quarry.v1.AssistantService",
        "quarry.v1.SqlService",
        "quarry.v1.SearchService",
        "quarry.v1.SummaryService",
    ];
    // The split assistant reaches this SQL role at server.sql_url.
    let sql_role = TestServer::start(Options {
        roles: Some(Roles::of([Role::Sql])),
        ..Options::default()
    })
    .await;
    for manifest in [
        "base/assistant.yaml",
        "base/sql.yaml",
        "base/search.yaml",
        "base/summary.yaml",
        "base/sync.yaml",
        "overlays/single/all-roles.yaml",
    ] {
        let (args, ready) = probe_of(manifest);
        let roles = roles_of(&args);
        let server = TestServer::start(Options {
            roles: Some(roles.clone()),
            search: roles.has(Role::Search) || roles.has(Role::Sync),
            summaries: roles.has(Role::Summary),
            extra_toml: if roles.has(Role::Sql) {
                String::new()
            } else {
                format!("[server]\nsql_url = \"{}\"\n", sql_role.url())
            },
            ..Options::default()
        })
        .await;
        assert_eq!(status(&server, "").await, serving, "{manifest}: \"\"");
        match &ready {
            Some(service) => {
                assert_eq!(
                    status(&server, service).await,
                    serving,
                    "{manifest}: {service}"
                );
            }
            // Only the sync role serves no RPC: its readiness is the server's.
            None => assert_eq!(roles, Roles::of([Role::Sync]), "{manifest}"),
        }
        // A service of a role not played here is unknown to health.
        for other in all_services {
            let played = match other {
                "quarry.v1.AssistantService" => roles.has(Role::Assistant),
                "quarry.v1.SqlService" => roles.has(Role::Sql),
                "quarry.v1.SearchService" => roles.has(Role::Search),
                _ => roles.has(Role::Summary),
            };
            if !played {
                assert_eq!(
                    status(&server, other).await,
                    Err(tonic::Code::NotFound),
                    "{manifest}: {other}"
                );
            }
        }
        server.stop().await;
    }
    sql_role.stop().await;
}
