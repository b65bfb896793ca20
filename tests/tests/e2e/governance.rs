//! Governance over real gRPC: the policy decides which RPCs a token may call
//! (default deny), which tables, columns and rows its queries see, and how
//! masked columns look — whatever the query does with them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_proto::v1::{
    AddGoldenPairRequest, AskRequest, DescribeSchemaRequest, ExecuteSqlRequest, ExplainSqlRequest,
    GenerateSqlRequest, GetSummariesRequest, ListAuditEntriesRequest, ListCollectionsRequest,
    ListConversationsRequest, ListSummaryKindsRequest, SearchRequest, SearchSummariesRequest,
    ValidateSqlRequest,
};
use quarry_tests::{Options, TestServer, authed, token_with_roles};
use tonic::{Code, Status};

/// Every Quarry RPC (but BuildSummaries, a stream checked below too) with
/// `token`: the codes, in a fixed order.
async fn call_every_rpc(server: &TestServer, token: &str) -> Vec<(&'static str, Status)> {
    let mut sql = server.sql();
    let mut search = server.search();
    let mut summaries = server.summaries();
    let mut assistant = server.assistant();
    let mut out = Vec::new();
    let mut push = |name, r: Result<(), Status>| {
        out.push((name, r.err().unwrap_or_else(|| Status::ok(""))));
    };
    let select = || "SELECT 1".to_owned();
    push(
        "ValidateSql",
        sql.validate_sql(authed(ValidateSqlRequest { sql: select() }, token))
            .await
            .map(drop),
    );
    push(
        "ExecuteSql",
        sql.execute_sql(authed(
            ExecuteSqlRequest {
                sql: select(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(drop),
    );
    push(
        "DescribeSchema",
        sql.describe_schema(authed(DescribeSchemaRequest::default(), token))
            .await
            .map(drop),
    );
    push(
        "GenerateSql",
        sql.generate_sql(authed(
            GenerateSqlRequest {
                question: "How many artworks are there?".into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(drop),
    );
    push(
        "ExplainSql",
        sql.explain_sql(authed(ExplainSqlRequest { sql: select() }, token))
            .await
            .map(drop),
    );
    push(
        "AddGoldenPair",
        sql.add_golden_pair(authed(
            AddGoldenPairRequest {
                question: "q".into(),
                sql: select(),
            },
            token,
        ))
        .await
        .map(drop),
    );
    push(
        "Search",
        search
            .search(authed(
                SearchRequest {
                    collection: "artworks".into(),
                    query: "sea".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
    );
    push(
        "ListCollections",
        search
            .list_collections(authed(ListCollectionsRequest {}, token))
            .await
            .map(drop),
    );
    push(
        "GetSummaries",
        summaries
            .get_summaries(authed(GetSummariesRequest::default(), token))
            .await
            .map(drop),
    );
    push(
        "SearchSummaries",
        summaries
            .search_summaries(authed(SearchSummariesRequest::default(), token))
            .await
            .map(drop),
    );
    push(
        "ListSummaryKinds",
        summaries
            .list_summary_kinds(authed(ListSummaryKindsRequest {}, token))
            .await
            .map(drop),
    );
    push(
        "Ask",
        assistant
            .ask(authed(
                AskRequest {
                    question: "How many artworks are there?".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
    );
    push(
        "ListConversations",
        assistant
            .list_conversations(authed(ListConversationsRequest::default(), token))
            .await
            .map(drop),
    );
    out
}

#[tokio::test]
async fn a_token_whose_roles_are_all_unknown_gets_nothing() {
    let server = TestServer::start(Options::default()).await;
    let nobody = token_with_roles("t1", "mallory", &["viewer", "admin", "root"], &[]);
    let no_roles = token_with_roles("t1", "mallory", &[], &["sql:query", "ask"]);
    for token in [&nobody, &no_roles] {
        for (rpc, status) in call_every_rpc(&server, token).await {
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{rpc}: {}",
                status.message()
            );
            assert!(
                status.message().contains("missing scope"),
                "{rpc}: {}",
                status.message()
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn each_rpc_needs_its_scope_and_the_refusal_names_it() {
    let extra = r#"
        [policy.roles.asker]
        scopes = ["ask"]
        tables = ["tate.*"]
    "#;
    let server = TestServer::start(Options {
        extra_toml: extra.into(),
        ..Options::default()
    })
    .await;
    let asker = token_with_roles("t1", "ann", &["asker"], &[]);
    let results = call_every_rpc(&server, &asker).await;
    let expected = [
        ("ValidateSql", "sql:query"),
        ("ExecuteSql", "sql:query"),
        ("DescribeSchema", "schema:read"),
        ("GenerateSql", "sql:query"),
        ("ExplainSql", "sql:explain"),
        ("AddGoldenPair", "golden:write"),
        ("Search", "search"),
        ("ListCollections", "search"),
        ("GetSummaries", "summaries"),
        ("SearchSummaries", "summaries"),
        ("ListSummaryKinds", "summaries"),
    ];
    for (rpc, scope) in expected {
        let (_, status) = results.iter().find(|(r, _)| *r == rpc).unwrap();
        assert_eq!(status.code(), Code::PermissionDenied, "{rpc}");
        assert_eq!(status.message(), format!("missing scope {scope}"), "{rpc}");
    }
    for rpc in ["Ask", "ListConversations"] {
        let (_, status) = results.iter().find(|(r, _)| *r == rpc).unwrap();
        assert_eq!(status.code(), Code::Ok, "{rpc}: {}", status.message());
    }
    // the token's own scopes narrow its roles' scopes, never widen them
    let narrowed = token_with_roles("t1", "ann", &["tester"], &["schema:read"]);
    let results = call_every_rpc(&server, &narrowed).await;
    let (_, status) = results.iter().find(|(r, _)| *r == "ExecuteSql").unwrap();
    assert_eq!(status.code(), Code::PermissionDenied);
    let (_, status) = results
        .iter()
        .find(|(r, _)| *r == "DescribeSchema")
        .unwrap();
    assert_eq!(status.code(), Code::Ok, "{}", status.message());
    server.stop().await;
}

/// A role that sees two tables, one column hidden, two masked, artworks
/// filtered to acquisitions since 1900.
const MASKED_POLICY: &str = r#"
    [policy.roles.masked]
    scopes = ["sql:query", "sql:explain", "schema:read", "golden:write"]
    tables = ["tate.artists", "tate.artworks"]
    deny_columns = ["tate.artists.gender"]
    masks = { "tate.artists.birth_place" = "redact", "tate.artists.name" = "hash" }
    row_filters = { "tate.artworks" = "acquisition_year >= 1900" }
"#;

async fn masked_server() -> TestServer {
    TestServer::start(Options {
        extra_toml: MASKED_POLICY.into(),
        ..Options::default()
    })
    .await
}

/// Rows of `sql` run through ExecuteSql with `token`, each cell as text.
pub(crate) async fn rows(
    server: &TestServer,
    token: &str,
    sql: &str,
) -> Result<Vec<Vec<String>>, Status> {
    use quarry_proto::v1::value::Kind;
    let response = server
        .sql()
        .execute_sql(authed(
            ExecuteSqlRequest {
                sql: sql.into(),
                ..Default::default()
            },
            token,
        ))
        .await?
        .into_inner();
    let result = response.result.unwrap_or_default();
    Ok(result
        .rows
        .iter()
        .map(|row| {
            row.values
                .iter()
                .map(|v| match &v.kind {
                    Some(Kind::TextValue(s) | Kind::DecimalValue(s)) => s.clone(),
                    Some(Kind::Int64Value(n)) => n.to_string(),
                    Some(Kind::NullValue(_)) | None => "NULL".to_owned(),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .collect())
}

/// The same query straight on the database, as the superuser: the raw
/// values the policy must keep from the caller.
async fn raw(server: &TestServer, sql: &str) -> Vec<tokio_postgres::Row> {
    let pool = quarry_db::pool(server.db.url(), 1, std::time::Duration::from_secs(5)).unwrap();
    let client = pool.get().await.unwrap();
    client.query(sql, &[]).await.unwrap()
}

#[tokio::test]
async fn masked_columns_reveal_nothing_to_predicates_aggregates_orderings_or_joins() {
    let server = masked_server().await;
    let t = token_with_roles("t1", "ann", &["masked"], &[]);
    // the raw data has what the probes look for
    let london: i64 = raw(
        &server,
        "SELECT count(*) FROM tate.artists WHERE birth_place LIKE 'London%'",
    )
    .await[0]
        .get(0);
    assert!(london > 0, "the test data has artists born in London");
    let with_place: i64 = raw(
        &server,
        "SELECT count(*) FROM tate.artists WHERE birth_place IS NOT NULL",
    )
    .await[0]
        .get(0);
    let probes = [
        // predicates
        (
            "SELECT count(*) FROM tate.artists WHERE birth_place LIKE 'London%'",
            vec![vec!["0"]],
        ),
        (
            "SELECT count(*) FROM tate.artists a WHERE a.birth_place ILIKE '%l%'",
            vec![vec!["0"]],
        ),
        // aggregates and functions
        (
            "SELECT min(birth_place), max(birth_place) FROM tate.artists",
            vec![vec!["[redacted]", "[redacted]"]],
        ),
        (
            "SELECT DISTINCT length(birth_place) FROM tate.artists WHERE birth_place IS NOT NULL",
            vec![vec!["10"]],
        ),
        // grouping: one group of redacted values (the nulls stay null)
        (
            "SELECT count(*) FROM (SELECT birth_place FROM tate.artists WHERE birth_place IS NOT NULL GROUP BY birth_place) g",
            vec![vec!["1"]],
        ),
        // joins on the raw value find nothing
        (
            "SELECT count(*) FROM tate.artists a JOIN (SELECT 'London, United Kingdom' AS p) v ON a.birth_place = v.p",
            vec![vec!["0"]],
        ),
        // a hash: equality with a raw name finds nothing, and prefixes are hex
        (
            "SELECT count(*) FROM tate.artists WHERE name LIKE 'J%' OR name = 'Blake, William'",
            vec![vec!["0"]],
        ),
    ];
    for (sql, expected) in probes {
        let got = rows(&server, &t, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert_eq!(got, expected, "{sql}");
    }
    // ordering: the first rows in raw order are not the first rows shown
    let ordered = rows(
        &server,
        &t,
        "SELECT birth_place FROM tate.artists WHERE birth_place IS NOT NULL ORDER BY birth_place LIMIT 5",
    )
    .await
    .unwrap();
    assert!(ordered.iter().all(|r| r[0] == "[redacted]"), "{ordered:?}");
    let counted = rows(&server, &t, "SELECT count(birth_place) FROM tate.artists")
        .await
        .unwrap();
    assert_eq!(counted, vec![vec![with_place.to_string()]]);
    // SELECT * shows masked values and never the hidden column
    let response = server
        .sql()
        .execute_sql(authed(
            ExecuteSqlRequest {
                sql: "SELECT * FROM tate.artists ORDER BY id LIMIT 3".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .unwrap()
        .into_inner();
    let columns: Vec<String> = response
        .result
        .unwrap()
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert!(columns.contains(&"birth_place".to_owned()), "{columns:?}");
    assert!(!columns.contains(&"gender".to_owned()), "{columns:?}");
    // the caller is shown its own SQL, not the policy's rewrite
    assert!(
        !response.executed_sql.contains("redacted"),
        "{}",
        response.executed_sql
    );
    server.stop().await;
}

#[tokio::test]
async fn hidden_tables_columns_and_rows_stay_hidden() {
    let server = masked_server().await;
    let t = token_with_roles("t1", "ann", &["masked"], &[]);
    for (sql, object) in [
        (
            "SELECT gender FROM tate.artists",
            "column tate.artists.gender",
        ),
        (
            "SELECT count(*) FROM tate.artists WHERE gender = 'Female'",
            "column tate.artists.gender",
        ),
        ("SELECT name FROM tate.movements", "table tate.movements"),
        (
            "SELECT 1 FROM tate.artworks w JOIN tate.artwork_subjects s ON s.artwork_id = w.id",
            "table tate.artwork_subjects",
        ),
    ] {
        let status = rows(&server, &t, sql).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{sql}: {}",
            status.message()
        );
        assert!(
            status.message().contains(object),
            "{sql}: {}",
            status.message()
        );
    }
    // row filter: the caller sees exactly the rows since 1900
    let direct: i64 = raw(
        &server,
        "SELECT count(*) FROM tate.artworks WHERE acquisition_year >= 1900",
    )
    .await[0]
        .get(0);
    let total: i64 = raw(&server, "SELECT count(*) FROM tate.artworks").await[0].get(0);
    assert!(total > direct, "the test data has older acquisitions");
    let seen = rows(
        &server,
        &t,
        "SELECT count(*), min(acquisition_year) >= 1900 FROM tate.artworks",
    )
    .await
    .unwrap();
    assert_eq!(seen[0][0], direct.to_string());
    assert_eq!(seen[0][1], "Some(BoolValue(true))");
    // the schema the caller is shown
    let schema = server
        .sql()
        .describe_schema(authed(DescribeSchemaRequest::default(), &t))
        .await
        .unwrap()
        .into_inner();
    let mut tables: Vec<String> = schema.tables.iter().map(|t| t.name.clone()).collect();
    tables.sort();
    assert_eq!(tables, vec!["artists", "artworks"]);
    let artists = schema.tables.iter().find(|t| t.name == "artists").unwrap();
    assert!(artists.columns.iter().all(|c| c.name != "gender"));
    server.stop().await;
}

#[tokio::test]
async fn golden_pairs_belong_to_their_tenant_and_shared_ones_cannot_be_overridden() {
    let server = masked_server().await;
    let a = token_with_roles("tenant-a", "ann", &["masked"], &[]);
    let b = token_with_roles("tenant-b", "bob", &["masked"], &[]);
    let mut sql = server.sql();
    let question = "How many artworks were acquired in 2010 exactly?";
    sql.add_golden_pair(authed(
        AddGoldenPairRequest {
            question: question.into(),
            sql: "SELECT count(*) AS poisoned FROM tate.artworks".into(),
        },
        &a,
    ))
    .await
    .unwrap();
    let generate = |token: &str| {
        authed(
            GenerateSqlRequest {
                question: question.into(),
                dry_run: true,
                ..Default::default()
            },
            token,
        )
    };
    let for_a = sql.generate_sql(generate(&a)).await.unwrap().into_inner();
    assert!(for_a.sql.contains("poisoned"), "{for_a:?}");
    let for_b = sql.generate_sql(generate(&b)).await.unwrap().into_inner();
    assert!(
        !for_b.sql.contains("poisoned"),
        "tenant b got tenant a's pair: {for_b:?}"
    );
    // a shared pair from the golden file cannot be overridden by a tenant
    let shared: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(quarry_tests::repo_root().join("demo/golden/tate.json")).unwrap(),
    )
    .unwrap();
    let shared_question = shared[0]["question"].as_str().unwrap();
    let refused = sql
        .add_golden_pair(authed(
            AddGoldenPairRequest {
                question: shared_question.into(),
                sql: "SELECT count(*) FROM tate.artworks".into(),
            },
            &a,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "{}",
        refused.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn quarry_refuses_a_database_role_that_bypasses_row_level_security() {
    let db = quarry_db::testing::TestDb::create().await;
    let config = |development: bool, db_role: &str| {
        quarry_server::Config::from_toml_layers(&[&format!(
            r#"
            [server]
            development = {development}
            [database]
            url = "{url}"
            [auth]
            jwt_secret = "{secret}"
            [policy.roles.reader]
            scopes = ["ask"]
            db_role = "{db_role}"
            "#,
            url = db.url(),
            secret = quarry_tests::SECRET,
        )])
        .unwrap()
    };
    let pools = quarry_db::Pools::new(std::time::Duration::from_secs(5));
    // the test database's login role is the pgserver superuser
    let refused = quarry_server::check_database_roles(&config(false, "pg_read_all_data"), &pools)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("database.url (login role)") && refused.contains("is a superuser"),
        "{refused}"
    );
    // a development setup is allowed it
    quarry_server::check_database_roles(&config(true, "pg_read_all_data"), &pools)
        .await
        .unwrap();
    // a policy role that does not exist is named
    let missing = quarry_server::check_database_roles(&config(true, "no_such_role_x"), &pools)
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("policy.roles.reader.db_role"), "{missing}");
    db.drop_db().await;
}

/// `sql.exec.temp_file_limit_kb` needs a login role that may set
/// `temp_file_limit`; Quarry says so at start-up instead of failing every
/// query.
#[tokio::test]
async fn quarry_refuses_a_login_that_cannot_set_temp_file_limit() {
    let db = quarry_db::testing::TestDb::create().await;
    let login = format!("quarry_login_{}", &db.name()[5..17]);
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {login} LOGIN NOSUPERUSER NOBYPASSRLS"
        ))
        .await
        .unwrap();
    let url = db
        .url()
        .replacen("postgres://postgres@", &format!("postgres://{login}@"), 1);
    assert_ne!(url, db.url(), "the test server's URL names user postgres");
    let config = |temp_file_limit_kb: u64| {
        quarry_server::Config::from_toml_layers(&[&format!(
            r#"
            [server]
            development = true
            [database]
            url = "{url}"
            [auth]
            jwt_secret = "{secret}"
            [sql.exec]
            temp_file_limit_kb = {temp_file_limit_kb}
            "#,
            secret = quarry_tests::SECRET,
        )])
        .unwrap()
    };
    let pools = quarry_db::Pools::new(std::time::Duration::from_secs(5));
    let refused = quarry_server::check_database_roles(&config(1024), &pools)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("may not set temp_file_limit")
            && refused.contains("GRANT SET ON PARAMETER"),
        "{refused}"
    );
    quarry_server::check_database_roles(&config(0), &pools)
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "GRANT SET ON PARAMETER temp_file_limit TO {login}"
        ))
        .await
        .unwrap();
    quarry_server::check_database_roles(&config(1024), &pools)
        .await
        .unwrap();
    // a tenant's own database is checked too: its superuser login is
    // refused outside development, though database.url's login is fine
    let mut with_source = config(1024);
    with_source.server.development = false;
    with_source.sql.sources.insert(
        "own".to_owned(),
        serde_json::from_value(serde_json::json!({
            "tenants": ["t"],
            "schemas": ["public"],
            "database_url": db.url(),
            "pool_size": 1,
        }))
        .unwrap(),
    );
    let refused = quarry_server::check_database_roles(&with_source, &pools)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("sql.sources.own.database_url (login role)")
            && refused.contains("is a superuser"),
        "{refused}"
    );
    pools.close();
    admin
        .batch_execute(&format!(
            "REVOKE SET ON PARAMETER temp_file_limit FROM {login}"
        ))
        .await
        .unwrap();
    drop(admin);
    db.drop_db().await;
    let admin = quarry_db::pool(
        &quarry_db::testing::server_url(),
        1,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    admin
        .get()
        .await
        .unwrap()
        .batch_execute(&format!("DROP ROLE {login}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn search_collections_are_granted_per_role() {
    let server = TestServer::start(Options {
        search: true,
        extra_toml: r#"
            [policy.roles.elsewhere]
            scopes = ["search"]
            collections = ["letters"]
        "#
        .into(),
        ..Options::default()
    })
    .await;
    let t = token_with_roles("t1", "ann", &["elsewhere"], &[]);
    let mut search = server.search();
    let listed = search
        .list_collections(authed(ListCollectionsRequest {}, &t))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.collections.is_empty(), "{listed:?}");
    let status = search
        .search(authed(
            SearchRequest {
                collection: "artworks".into(),
                query: "sea".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("artworks"),
        "{}",
        status.message()
    );
    // the tester role may: the same request succeeds
    let ok = search
        .list_collections(authed(
            ListCollectionsRequest {},
            &quarry_tests::token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.collections.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn statements_and_refusals_land_in_the_tenants_audit_log() {
    let server = TestServer::start(Options {
        extra_toml: format!("{MASKED_POLICY}\n[policy.roles.auditor]\nscopes = [\"audit:read\"]\n"),
        ..Options::default()
    })
    .await;
    let ann = token_with_roles("t1", "ann", &["masked"], &[]);
    let eve = token_with_roles("t2", "eve", &["masked"], &[]);
    let auditor = token_with_roles("t1", "aud", &["auditor"], &[]);
    let listed = |token: String| {
        let mut sql = server.sql();
        async move {
            sql.list_audit_entries(authed(ListAuditEntriesRequest::default(), &token))
                .await
                .map(|r| r.into_inner().entries)
        }
    };
    // the auditor may not run SQL, and ann may not read the audit log
    let status = listed(ann.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    rows(&server, &ann, "SELECT count(*) FROM tate.artworks")
        .await
        .unwrap();
    rows(&server, &ann, "SELECT name FROM tate.movements")
        .await
        .unwrap_err();
    rows(&server, &eve, "SELECT count(*) FROM tate.artists")
        .await
        .unwrap();
    // refusals of the policy layer are written on their own task
    let mut entries = Vec::new();
    for _ in 0..50 {
        entries = listed(auditor.clone()).await.unwrap();
        if entries.iter().any(|e| e.tool == "rpc") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(entries.iter().all(|e| e.tenant == "t1"), "{entries:?}");
    let executed = entries
        .iter()
        .find(|e| e.action == "execute" && e.outcome == "ok")
        .expect("the executed statement");
    assert_eq!(executed.subject, "ann");
    assert_eq!(executed.rows, 1);
    assert!(
        executed.sql.contains("acquisition_year >= 1900"),
        "the statement as executed, with the policy's filter: {}",
        executed.sql
    );
    assert!(!executed.request_id.is_empty());
    let refused = entries
        .iter()
        .find(|e| e.action == "execute" && e.outcome == "refused")
        .expect("the refused statement");
    assert!(
        refused.detail.contains("tate.movements"),
        "{}",
        refused.detail
    );
    let rpc = entries
        .iter()
        .find(|e| e.tool == "rpc")
        .expect("the refused call to ListAuditEntries");
    assert_eq!(rpc.action, "/quarry.v1.SqlService/ListAuditEntries");
    assert_eq!(rpc.outcome, "refused");
    server.stop().await;
}

/// A role whose queries run as the read-only role `quarry migrate` creates
/// (the test server's login role is a superuser, which row-level security
/// does not apply to).
const TENANTED_POLICY: &str = r#"
    [policy.roles.reader]
    scopes = ["sql:query"]
    tables = ["tate.*"]
    db_role = "quarry_reader"
"#;

/// `[count, ids in order]` of the artworks matching `filter`, straight on
/// the database as the superuser.
async fn artworks_where(server: &TestServer, filter: &str) -> Vec<String> {
    let row = &raw(
        server,
        &format!(
            "SELECT count(*), coalesce(string_agg(id::text, ',' ORDER BY id), '') \
             FROM tate.artworks WHERE {filter}"
        ),
    )
    .await[0];
    vec![row.get::<_, i64>(0).to_string(), row.get(1)]
}

#[tokio::test]
async fn row_level_security_shows_each_tenant_the_artworks_of_its_era() {
    let server = TestServer::start(Options {
        extra_toml: TENANTED_POLICY.into(),
        read_only_role: Some("quarry_reader".into()),
        ..Options::default()
    })
    .await;
    // eras are data: two that split the slice (acquired 1880–1929)
    raw(
        &server,
        "INSERT INTO tate.tenant_eras (tenant, from_year, to_year) \
         VALUES ('t-early', NULL, 1899), ('t-late', 1900, NULL)",
    )
    .await;
    let all = artworks_where(&server, "true").await;
    let before_1900 = artworks_where(&server, "acquisition_year <= 1899").await;
    let since_1900 = artworks_where(&server, "acquisition_year >= 1900").await;
    let since_1950 = artworks_where(&server, "acquisition_year >= 1950").await;
    let before_1950 = artworks_where(&server, "acquisition_year < 1950").await;
    assert!(
        before_1900[0] != "0" && since_1900[0] != "0",
        "the slice has works on both sides of 1900: {} and {}",
        before_1900[0],
        since_1900[0]
    );
    let nothing = vec!["0".to_owned(), String::new()];
    let seen = |tenant: &'static str| {
        let server = &server;
        async move {
            let token = token_with_roles(tenant, "ann", &["reader"], &[]);
            let got = rows(
                server,
                &token,
                "SELECT count(*), coalesce(string_agg(id::text, ',' ORDER BY id), '') \
                 FROM tate.artworks",
            )
            .await
            .unwrap_or_else(|e| panic!("{tenant}: {e:?}"));
            got.into_iter().next().unwrap()
        }
    };
    for (tenant, expected) in [
        ("t-early", &before_1900),
        ("t-late", &since_1900),
        ("modern", &since_1950),
        ("early", &before_1950),
        ("demo", &all),
        ("t-unknown", &nothing),
        ("t-early", &before_1900),
    ] {
        assert_eq!(&seen(tenant).await, expected, "tenant {tenant}");
    }
    // a tenant reads only its own row of the eras
    let t_early = token_with_roles("t-early", "ann", &["reader"], &[]);
    let eras = rows(&server, &t_early, "SELECT tenant FROM tate.tenant_eras")
        .await
        .unwrap();
    assert_eq!(eras, vec![vec!["t-early".to_owned()]]);
    // a query cannot change its tenant or role: set_config is refused, and
    // SET / RESET are not queries
    let unknown = token_with_roles("t-unknown", "mallory", &["reader"], &[]);
    for (sql, reason) in [
        (
            "SELECT set_config('quarry.tenant', 'demo', true), count(*) FROM tate.artworks",
            "function set_config is not allowed",
        ),
        (
            "SELECT count(*) FROM tate.artworks WHERE set_config('quarry.tenant', '', true) = ''",
            "function set_config is not allowed",
        ),
        ("SET ROLE postgres", "not_a_query"),
        ("RESET ROLE", "not_a_query"),
        ("SET quarry.tenant = 'demo'", "not_a_query"),
    ] {
        let status = rows(&server, &unknown, sql).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{sql}: {}",
            status.message()
        );
        assert!(
            status.message().contains(reason),
            "{sql}: {}",
            status.message()
        );
    }
    assert_eq!(seen("t-unknown").await, nothing);
    server.stop().await;
}

#[tokio::test]
async fn summary_kinds_are_granted_per_role() {
    let server = TestServer::start(Options {
        summaries: true,
        extra_toml: r#"
            [policy.roles.decades]
            scopes = ["summaries"]
            summary_kinds = ["decade"]
        "#
        .into(),
        ..Options::default()
    })
    .await;
    quarry_tests::wait_until_summaries_built(&server).await;
    let t = token_with_roles("t1", "ann", &["decades"], &[]);
    let mut summaries = server.summaries();
    let kinds = summaries
        .list_summary_kinds(authed(ListSummaryKindsRequest {}, &t))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = kinds.kinds.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["decade"]);
    let status = summaries
        .get_summaries(authed(
            GetSummariesRequest {
                kind: "artist".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert!(status.message().contains("artist"), "{}", status.message());
    let found = summaries
        .search_summaries(authed(
            SearchSummariesRequest {
                query: "Turner".into(),
                k: 20,
                ..Default::default()
            },
            &t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        found.summaries.iter().all(|s| s.kind == "decade"),
        "{:?}",
        found.summaries.iter().map(|s| &s.kind).collect::<Vec<_>>()
    );
    server.stop().await;
}

#[tokio::test]
async fn search_is_limited_to_the_callers_tenant_by_the_collections_tenant_filter() {
    // the artworks collection, each document tagged with the tenants whose
    // acquisition era holds it (the demo's tate.tenant_eras)
    let collection = r#"
[[search.collections]]
name = "artworks"
source = "tate.artworks"
key = "id"
text = [{ name = "title" }]
filters = [
  { name = "tenants", type = "keywords", sql = "ARRAY(SELECT e.tenant FROM tate.tenant_eras e WHERE int4range(e.from_year, e.to_year, '[]') @> src.acquisition_year ORDER BY e.tenant)" },
]
tenant_filter = "tenants"
"#;
    let server = TestServer::start(Options {
        search: true,
        search_collection: Some(collection.into()),
        extra_toml: r#"
            [policy.roles.finder]
            scopes = ["search"]
            collections = ["artworks"]
        "#
        .into(),
        ..Options::default()
    })
    .await;
    let mut search = server.search();
    let tester = quarry_tests::token("t1");
    for _ in 0..200 {
        let listed = search
            .list_collections(authed(ListCollectionsRequest {}, &tester))
            .await
            .unwrap()
            .into_inner();
        if listed
            .collections
            .first()
            .is_some_and(|c| c.documents == 300)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let hits = |tenant: &'static str| {
        let token = token_with_roles(tenant, "ann", &["finder"], &[]);
        let mut search = server.search();
        async move {
            search
                .search(authed(
                    SearchRequest {
                        collection: "artworks".into(),
                        query: "study".into(),
                        k: 100,
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner()
                .hits
                .len()
        }
    };
    // the slice's acquisitions are 1880–1929: `early` (to 1949) and `demo`
    // (every era) see the same hits, `modern` (1950 on) and an unknown
    // tenant none
    let early = hits("early").await;
    assert!(early > 0);
    assert_eq!(hits("demo").await, early);
    assert_eq!(hits("modern").await, 0);
    assert_eq!(hits("nobody").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn the_model_is_offered_only_the_tools_the_caller_may_use() {
    use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
    let model = ScriptedServer::start(vec![
        ScriptedTurn::text("Only summaries for you."),
        ScriptedTurn::text("Everything for you."),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        summaries: true,
        extra_toml: r#"
            [policy.roles.summaries_only]
            scopes = ["ask", "summaries"]
            summary_kinds = ["*"]
        "#
        .into(),
        ..Options::default()
    })
    .await;
    let offered = |n: usize| -> Vec<String> {
        model.requests()[n]["tools"]
            .as_array()
            .map(|tools| {
                tools
                    .iter()
                    .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let ask = |token: String| {
        let server = &server;
        async move {
            quarry_tests::ask_all_as(
                server,
                quarry_tests::ask("What do you know about Turner?"),
                &token,
            )
            .await
            .unwrap()
        }
    };
    ask(token_with_roles("t1", "ann", &["summaries_only"], &[])).await;
    assert_eq!(offered(0), ["get_summaries"]);
    let system = model.requests()[0]["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !system.contains("artworks("),
        "no schema for a caller who may not query: {system}"
    );
    ask(quarry_tests::token("t1")).await;
    let with_schema = model.requests()[1]["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(with_schema.contains("artworks("), "{with_schema}");
    let all = offered(1);
    assert!(
        all.contains(&"query_database".to_owned()) && all.contains(&"get_summaries".to_owned()),
        "{all:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_model_reaching_for_forbidden_tables_and_columns_is_refused() {
    use quarry_llm::testing::{ScriptedServer, ScriptedToolCall, ScriptedTurn};
    use quarry_proto::v1::tool_result::Outcome;
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new(
                "query_database",
                r#"{"sql": "SELECT gender, count(*) FROM tate.artists GROUP BY gender"}"#,
            )
            .with_id("call_column"),
            ScriptedToolCall::new("query_database", r#"{"sql": "SELECT name FROM tate.movements"}"#)
                .with_id("call_table"),
            ScriptedToolCall::new(
                "query_database",
                r#"{"sql": "SELECT birth_place FROM tate.artists WHERE birth_place LIKE 'London%'"}"#,
            )
            .with_id("call_mask"),
        ]),
        ScriptedTurn::text("I may not see that."),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        extra_toml: format!("{MASKED_POLICY}\n[policy.roles.asker]\nscopes = [\"ask\"]\n"),
        ..Options::default()
    })
    .await;
    let token = token_with_roles("t1", "ann", &["masked", "asker"], &[]);
    let events = quarry_tests::ask_all_as(
        &server,
        quarry_tests::ask("How many artists of each gender, and which movements?"),
        &token,
    )
    .await
    .unwrap();
    let results = quarry_tests::tool_results(&events);
    let outcome = |id: &str| {
        results
            .iter()
            .find(|r| r.call_id == id)
            .and_then(|r| r.outcome.clone())
            .unwrap_or_else(|| panic!("a result for {id}: {results:?}"))
    };
    for (id, object) in [
        ("call_column", "column tate.artists.gender"),
        ("call_table", "table tate.movements"),
    ] {
        let Outcome::Error(message) = outcome(id) else {
            panic!("{id} was not refused: {:?}", outcome(id))
        };
        assert!(message.contains(object), "{id}: {message}");
    }
    // the masked column runs, but its raw values never match
    let Outcome::Sql(sql) = outcome("call_mask") else {
        panic!("call_mask: {:?}", outcome("call_mask"))
    };
    assert!(
        sql.rows.is_none_or(|r| r.rows.is_empty()),
        "a raw value matched a masked column"
    );
    // and nothing the policy hides went to the model
    let bodies: Vec<String> = model.requests().iter().map(|r| r.to_string()).collect();
    assert!(
        bodies
            .iter()
            .all(|b| !b.contains("Female") && !b.contains("Male\"")),
        "a gender value reached the model"
    );
    server.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_policy_is_reloaded_on_sighup_and_a_broken_one_is_not_taken() {
    use tokio::signal::unix::{SignalKind, signal};
    // a SIGHUP handler of this process's own, installed first, so the
    // signal can never take the default action (terminate) in a race with
    // the server's
    let mut hangups = signal(SignalKind::hangup()).unwrap();
    let dir = quarry_tests::TempDir::new("policy-reload");
    let path = dir.path().join("quarry.toml");
    let server = TestServer::start(Options {
        config_file: Some(path.clone()),
        ..Options::default()
    })
    .await;
    let late = token_with_roles("t1", "ann", &["late"], &[]);
    let describe = |token: String| {
        let mut sql = server.sql();
        async move {
            sql.describe_schema(authed(DescribeSchemaRequest::default(), &token))
                .await
                .map(drop)
        }
    };
    let hup = || {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    let status = describe(late.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let original = std::fs::read_to_string(&path).unwrap();
    // a broken policy is logged and the one in force stays
    std::fs::write(
        &path,
        format!("{original}\n[policy.roles.late]\nscopes = [\"no:such:scope\"]\n"),
    )
    .unwrap();
    hup();
    hangups.recv().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        describe(quarry_tests::token("t1"))
            .await
            .map_err(|s| s.code()),
        Ok(())
    );
    assert_eq!(
        describe(late.clone()).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // a valid one is taken without a restart
    std::fs::write(
        &path,
        format!(
            "{original}\n[policy.roles.late]\nscopes = [\"schema:read\"]\ntables = [\"tate.*\"]\n"
        ),
    )
    .unwrap();
    hup();
    hangups.recv().await;
    let mut allowed = false;
    for _ in 0..50 {
        if describe(late.clone()).await.is_ok() {
            allowed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(allowed, "the reloaded policy was not taken");
    server.stop().await;
}

#[tokio::test]
async fn a_golden_pair_over_tables_the_caller_may_not_use_neither_answers_nor_teaches() {
    let server = masked_server().await;
    let masked = token_with_roles("t1", "ann", &["masked"], &[]);
    let mut sql = server.sql();
    let generate = |question: &str, token: &str| {
        authed(
            GenerateSqlRequest {
                question: question.into(),
                dry_run: true,
                ..Default::default()
            },
            token,
        )
    };
    // reads tate.movements, which the masked role is not granted
    let question = "Which art movements have the most artists?";
    let refused = sql
        .generate_sql(generate(question, &masked))
        .await
        .unwrap()
        .into_inner();
    assert!(refused.sql.is_empty(), "{refused:?}");
    let tester = sql
        .generate_sql(generate(question, &quarry_tests::token("t1")))
        .await
        .unwrap()
        .into_inner();
    assert!(tester.sql.contains("tate.movements"), "{tester:?}");
    // a pair over granted tables still answers
    let allowed = sql
        .generate_sql(generate(
            "How many artworks are in the Tate collection?",
            &masked,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(allowed.sql.contains("tate.artworks"), "{allowed:?}");
    server.stop().await;
}
