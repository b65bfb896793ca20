//! `SqlService` end to end: validation, read-only execution with caps, schema.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_proto::v1::{
    DescribeSchemaRequest, ExecuteSqlRequest, GenerateSqlRequest, RejectionKind, SqlSource,
    ValidateSqlRequest,
};
use quarry_tests::{Options, TestServer, authed, token};
use tonic::Code;

#[tokio::test]
async fn validate_refuses_writes_with_a_structured_reason() {
    let server = TestServer::start(Options::default()).await;
    let mut sql = server.sql();
    let t = token("t1");
    let cases = [
        (
            "UPDATE tate.artworks SET title = 'x'",
            RejectionKind::NotAQuery,
        ),
        (
            "SELECT 1; DROP TABLE tate.artworks",
            RejectionKind::MultipleStatements,
        ),
        (
            "SELECT * INTO t2 FROM tate.artworks",
            RejectionKind::SelectInto,
        ),
        (
            "WITH d AS (DELETE FROM tate.artworks RETURNING *) SELECT * FROM d",
            RejectionKind::DataModifyingCte,
        ),
        (
            "SELECT * FROM tate.artworks FOR UPDATE",
            RejectionKind::LockingClause,
        ),
        ("SELECT pg_sleep(5)", RejectionKind::ForbiddenFunction),
        (
            "SELECT * FROM pg_catalog.pg_authid",
            RejectionKind::ForbiddenRelation,
        ),
    ];
    for (text, kind) in cases {
        let response = sql
            .validate_sql(authed(ValidateSqlRequest { sql: text.into() }, &t))
            .await
            .unwrap()
            .into_inner();
        assert!(!response.valid, "{text} was accepted");
        let rejection = response.rejection.unwrap();
        assert_eq!(rejection.kind, kind as i32, "{text}: {}", rejection.message);
        assert!(!rejection.message.is_empty());
    }
    server.stop().await;
}

#[tokio::test]
async fn execute_caps_rows_and_says_it_truncated() {
    let server = TestServer::start(Options::default()).await;
    let mut sql = server.sql();
    let response = sql
        .execute_sql(authed(
            ExecuteSqlRequest {
                sql: "SELECT id, title, acquisition_year FROM tate.artworks ORDER BY id".into(),
                max_rows: 7,
            },
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    let rows = response.result.unwrap();
    assert_eq!(rows.rows.len(), 7);
    assert!(rows.truncated);
    assert_eq!(rows.columns.len(), 3);
    assert!(
        response.executed_sql.contains("LIMIT 8"),
        "{}",
        response.executed_sql
    );

    let status = sql
        .execute_sql(authed(
            ExecuteSqlRequest {
                sql: "DELETE FROM tate.artworks".into(),
                max_rows: 0,
            },
            &token("t1"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn describe_schema_reads_keys_and_comments() {
    let server = TestServer::start(Options::default()).await;
    let schema = server
        .sql()
        .describe_schema(authed(DescribeSchemaRequest::default(), &token("t1")))
        .await
        .unwrap()
        .into_inner();
    let artworks = schema
        .tables
        .iter()
        .find(|t| t.name == "artworks")
        .expect("artworks table");
    assert_eq!(artworks.primary_key, vec!["id".to_string()]);
    assert!(!artworks.comment.is_empty());
    assert!(artworks.columns.iter().all(|c| !c.comment.is_empty()));
    let contributors = schema
        .tables
        .iter()
        .find(|t| t.name == "artwork_contributors")
        .unwrap();
    assert!(
        contributors
            .foreign_keys
            .iter()
            .any(|fk| fk.referenced_table == "tate.artists")
    );
    assert!(schema.compact.contains("tate.artworks"));

    let status = server
        .sql()
        .describe_schema(authed(
            DescribeSchemaRequest {
                schemas: vec!["pg_catalog".into()],
                ..Default::default()
            },
            &token("t1"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn generate_sql_without_a_model_uses_golden_pairs_only() {
    let server = TestServer::start(Options::default()).await;
    let mut sql = server.sql();
    let hit = sql
        .generate_sql(authed(
            GenerateSqlRequest {
                question: "How many artworks are in the Tate collection?".into(),
                previous_sql: String::new(),
                ..Default::default()
            },
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hit.source, SqlSource::Golden as i32);
    assert!(hit.sql.contains("tate.artworks"));
    let miss = sql
        .generate_sql(authed(
            GenerateSqlRequest {
                question: "How many works by John Constable were acquired before 1900?".into(),
                previous_sql: String::new(),
                ..Default::default()
            },
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(miss.sql.is_empty(), "matched {:?}", miss.explanation);
    assert!(miss.explanation.contains("No language model"));
    server.stop().await;
}
