//! A source per tenant over real gRPC: tenants listed in
//! `[sql.sources.<name>]` query their own schema (in the shared database)
//! or their own database, through a pool of their own, and nothing else;
//! the other tenants query the shared source; with `sql.shared = false`
//! they are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::Duration;

use quarry_db::testing::TestDb;
use quarry_proto::v1::{
    AddGoldenPairRequest, DescribeSchemaRequest, ExecuteSqlRequest, GenerateSqlRequest,
    ListAuditEntriesRequest,
};
use quarry_tests::{Options, TestServer, authed, token_with_roles};
use tonic::Code;

use super::governance::rows;

/// Roles for these tests: the policy grants every schema involved, so only
/// the source decides what a tenant reaches.
const POLICY: &str = r#"
# one tenant may use its whole source pool here (the pool bound is tested)
[sql.exec]
tenant_share = 1.0
tenant_wait_ms = 5000
[policy.roles.shopper]
scopes = ["sql:query", "sql:explain", "schema:read", "golden:write", "audit:read"]
tables = ["acme_shop.*", "shop.*", "tate.*"]
"#;

async fn batch(url: &str, sql: &str) {
    let pool = quarry_db::pool(url, 1, Duration::from_secs(5)).unwrap();
    pool.get().await.unwrap().batch_execute(sql).await.unwrap();
}

/// A server whose tenant `acme` has schema `acme_shop` of the shared
/// database, tenant `globex` a database of its own (`globex`, returned),
/// and whose shared database also holds a decoy `shop.orders`.
async fn server(shared: bool) -> (TestServer, TestDb) {
    let globex = TestDb::create().await;
    batch(
        globex.url(),
        "CREATE SCHEMA shop;
         CREATE TABLE shop.orders (id int PRIMARY KEY, region text, amount int);
         INSERT INTO shop.orders VALUES (1, 'eu', 100), (2, 'us', 250);",
    )
    .await;
    let server = TestServer::start(Options {
        extra_toml: format!(
            r#"
            {POLICY}
            [sql.sources.acme]
            tenants = ["acme"]
            schemas = ["acme_shop"]
            pool_size = 2
            [sql.sources.globex]
            tenants = ["globex"]
            schemas = ["shop"]
            database_url = "{url}"
            pool_size = 2
            "#,
            url = globex.url()
        ),
        ..Options::default()
    })
    .await;
    batch(
        server.db.url(),
        "CREATE SCHEMA acme_shop;
         CREATE TABLE acme_shop.orders (id int PRIMARY KEY, amount int);
         INSERT INTO acme_shop.orders VALUES (1, 10), (2, 20), (3, 30);
         CREATE SCHEMA shop;
         CREATE TABLE shop.orders (id int PRIMARY KEY, decoy text, amount int);
         INSERT INTO shop.orders VALUES (1, 'not globex', 999999);",
    )
    .await;
    if !shared {
        // `shared` is read at start-up: restart with it off.
        server.stop().await;
        return (
            TestServer::start(Options {
                extra_toml: format!(
                    "{POLICY}\n[sql]\nshared = false\n[sql.sources.globex]\ntenants = [\"globex\"]\nschemas = [\"shop\"]\ndatabase_url = \"{}\"\n",
                    globex.url()
                ),
                ..Options::default()
            })
            .await,
            globex,
        );
    }
    (server, globex)
}

fn token(tenant: &str) -> String {
    token_with_roles(tenant, "sam", &["shopper"], &[])
}

async fn code_of(server: &TestServer, tenant: &str, sql: &str) -> Code {
    match rows(server, &token(tenant), sql).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn each_tenant_reaches_its_own_source_and_nothing_else() {
    let (server, globex) = server(true).await;
    // acme: its schema in the shared database, three orders.
    assert_eq!(
        rows(
            &server,
            &token("acme"),
            "SELECT count(*), sum(amount) FROM acme_shop.orders"
        )
        .await
        .unwrap(),
        [["3", "60"]]
    );
    // globex: its own database (the shared database's decoy `shop.orders`
    // has one row of 999999).
    assert_eq!(
        rows(
            &server,
            &token("globex"),
            "SELECT count(*), sum(amount) FROM shop.orders"
        )
        .await
        .unwrap(),
        [["2", "350"]]
    );
    // Another tenant: the shared source (Tate), under row-level security.
    let shared = rows(
        &server,
        &token("initech"),
        "SELECT count(*) FROM tate.artworks",
    )
    .await
    .unwrap();
    assert_ne!(shared[0][0], "0");
    // Every cross-source read is refused, though the policy grants the
    // schema: the source, not the role, decides.
    for (tenant, sql) in [
        ("acme", "SELECT * FROM shop.orders"),
        ("acme", "SELECT count(*) FROM tate.artworks"),
        ("globex", "SELECT * FROM acme_shop.orders"),
        ("globex", "SELECT count(*) FROM tate.artworks"),
        ("initech", "SELECT * FROM acme_shop.orders"),
        ("initech", "SELECT * FROM shop.orders"),
    ] {
        assert_eq!(
            code_of(&server, tenant, sql).await,
            Code::PermissionDenied,
            "{tenant}: {sql}"
        );
    }
    // DescribeSchema shows each tenant its source's tables only.
    for (tenant, expected) in [
        ("acme", vec!["acme_shop.orders"]),
        ("globex", vec!["shop.orders"]),
    ] {
        let described = server
            .sql()
            .describe_schema(authed(DescribeSchemaRequest::default(), &token(tenant)))
            .await
            .unwrap()
            .into_inner();
        let names: Vec<String> = described
            .tables
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect();
        assert_eq!(names, expected, "{tenant}");
        assert!(
            !described.compact.contains("decoy") && !described.compact.contains("tate."),
            "{tenant}: {}",
            described.compact
        );
    }
    server.stop().await;
    globex.drop_db().await;
}

#[tokio::test]
async fn golden_pairs_and_the_audit_trail_stay_with_the_tenant_in_quarrys_database() {
    let (server, globex) = server(true).await;
    let question = "How many orders are there?";
    let stored = server
        .sql()
        .add_golden_pair(authed(
            AddGoldenPairRequest {
                question: question.into(),
                sql: "SELECT count(*) FROM acme_shop.orders".into(),
            },
            &token("acme"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.row_count, 1);
    // Stored in Quarry's database under source `acme`.
    let pool = quarry_db::pool(server.db.url(), 1, Duration::from_secs(5)).unwrap();
    let client = pool.get().await.unwrap();
    let source: String = client
        .query_one(
            "SELECT source FROM quarry.golden_pairs WHERE question = $1",
            &[&question],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(source, "acme");
    // acme's pair answers acme; globex (another source) never sees it.
    let ask = |tenant: &'static str| {
        let mut sql = server.sql();
        async move {
            sql.generate_sql(authed(
                GenerateSqlRequest {
                    question: question.into(),
                    golden_only: true,
                    dry_run: true,
                    ..Default::default()
                },
                &token(tenant),
            ))
            .await
            .unwrap()
            .into_inner()
            .sql
        }
    };
    assert_eq!(ask("acme").await, "SELECT count(*) FROM acme_shop.orders");
    assert_eq!(ask("globex").await, "");
    // globex's statements are audited in Quarry's database; its own
    // database has no `quarry` schema at all.
    rows(&server, &token("globex"), "SELECT id FROM shop.orders")
        .await
        .unwrap();
    let audited = server
        .sql()
        .list_audit_entries(authed(ListAuditEntriesRequest::default(), &token("globex")))
        .await
        .unwrap()
        .into_inner();
    assert!(
        audited
            .entries
            .iter()
            .any(|e| e.tenant == "globex" && e.sql.contains("shop.orders")),
        "{:?}",
        audited.entries
    );
    let in_globex: bool = quarry_db::pool(globex.url(), 1, Duration::from_secs(5))
        .unwrap()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'quarry')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!in_globex);
    server.stop().await;
    globex.drop_db().await;
}

#[tokio::test]
async fn a_sources_pool_is_bounded() {
    let (server, globex) = server(true).await;
    let sql = "SELECT count(*) FROM generate_series(1, 3000000) g, shop.orders o WHERE o.id = 1";
    let queries: Vec<_> = (0..6)
        .map(|_| {
            let mut client = server.sql();
            let token = token("globex");
            tokio::spawn(async move {
                client
                    .execute_sql(authed(
                        ExecuteSqlRequest {
                            sql: sql.into(),
                            ..Default::default()
                        },
                        &token,
                    ))
                    .await
            })
        })
        .collect();
    // While they run, globex's database never runs more than its pool's
    // two statements from Quarry at once.
    let pool = quarry_db::pool(server.db.url(), 1, Duration::from_secs(5)).unwrap();
    let admin = pool.get().await.unwrap();
    let mut most = 0i64;
    while !queries.iter().all(tokio::task::JoinHandle::is_finished) {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active'
                 AND query LIKE '%generate_series(1, 3000000)%'",
                &[&globex.name()],
            )
            .await
            .unwrap()
            .get(0);
        most = most.max(n);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for query in queries {
        query.await.unwrap().unwrap();
    }
    assert!(
        (1..=2).contains(&most),
        "{most} connections to globex's database"
    );
    server.stop().await;
    globex.drop_db().await;
}

#[tokio::test]
async fn without_the_shared_source_a_tenant_without_one_is_refused() {
    let (server, globex) = server(false).await;
    assert_eq!(
        code_of(&server, "initech", "SELECT count(*) FROM tate.artworks").await,
        Code::PermissionDenied
    );
    let status = server
        .sql()
        .describe_schema(authed(DescribeSchemaRequest::default(), &token("initech")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("no data source"),
        "{}",
        status.message()
    );
    assert_eq!(
        rows(
            &server,
            &token("globex"),
            "SELECT count(*) FROM shop.orders"
        )
        .await
        .unwrap(),
        [["2"]]
    );
    server.stop().await;
    globex.drop_db().await;
}
