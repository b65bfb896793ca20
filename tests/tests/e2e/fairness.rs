//! Fair share over real gRPC: one tenant's slow queries hold at most its
//! share of the pool; past it the tenant is told to retry, and another
//! tenant's queries run as if alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_proto::v1::ExecuteSqlRequest;
use quarry_tests::{Options, TestServer, authed, token};
use tonic::Code;
use tonic_types::StatusExt as _;

/// Runs about a second on the test server.
const SLOW: &str = "SELECT count(*) FROM generate_series(1, 6000000) AS g";

#[tokio::test]
async fn a_tenant_holds_at_most_its_share_of_the_pool() {
    // pool_size 4 (the test config), share 0.5: two connections per tenant
    let server = TestServer::start(Options {
        extra_toml: "[sql.exec]\ntenant_share = 0.5\ntenant_wait_ms = 100\n".into(),
        ..Options::default()
    })
    .await;
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let mut sql = server.sql();
            let token = token("flood");
            tokio::spawn(async move {
                sql.execute_sql(authed(
                    ExecuteSqlRequest {
                        sql: SLOW.into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // the calm tenant is served while the flood holds its share
    let calm = server
        .sql()
        .execute_sql(authed(
            ExecuteSqlRequest {
                sql: "SELECT 1".into(),
                ..Default::default()
            },
            &token("calm"),
        ))
        .await;
    assert!(calm.is_ok(), "{calm:?}");
    let mut refused = 0;
    let mut served = 0;
    for query in slow {
        match query.await.unwrap() {
            Ok(_) => served += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("share of database connections"),
                    "{status:?}"
                );
                assert!(status.get_details_retry_info().is_some());
                refused += 1;
            }
        }
    }
    assert_eq!((served, refused), (2, 2));
    server.stop().await;
}
