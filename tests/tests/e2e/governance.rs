//! Governance over real gRPC: the policy decides which RPCs a token may call
//! (default deny), which tables, columns and rows its queries see, and how
//! masked columns look — whatever the query does with them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_proto::v1::{
    AddGoldenPairRequest, AskRequest, DescribeSchemaRequest, ExecuteSqlRequest, ExplainSqlRequest,
    GenerateSqlRequest, GetSummariesRequest, ListCollectionsRequest, ListConversationsRequest,
    ListSummaryKindsRequest, SearchRequest, SearchSummariesRequest, ValidateSqlRequest,
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
