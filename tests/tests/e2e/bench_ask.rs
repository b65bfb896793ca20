//! `quarry bench ask`, the command behind the README's "Orchestrator
//! overhead" figures, end to end on a Tate slice: a short run of two levels
//! completes every Ask without an error and reports each figure it prints.
//! Counts and presence only: speed is measured by running the benchmark,
//! never asserted in a test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::Duration;

use quarry_bench::ask::{AskBenchOptions, ServerSections, run_ask_bench};
use quarry_tests::{loaded_database, migrate_read_only_role, repo_root};

const SQL: &str = "SELECT count(*) AS artworks FROM tate.artworks WHERE acquisition_year >= 2000";

#[tokio::test]
async fn a_short_ask_benchmark_completes_every_ask_and_reports_each_figure() {
    let db = loaded_database().await;
    let expected: i64 = {
        let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        let count = client.query_one(SQL, &[]).await.unwrap().get(0);
        drop(client);
        let _ = connection.await;
        count
    };
    // `dev/quarry.toml` runs queries as `quarry_reader`, which `quarry
    // migrate` creates and grants
    migrate_read_only_role(db.url(), "quarry_reader").await;
    let mut sections = ServerSections::load(Some(&repo_root().join("dev/quarry.toml"))).unwrap();
    sections.database.url = db.url().to_owned();
    // the configuration's paths are relative to the repository root
    sections.sql.golden_path = Some(repo_root().join("demo/golden/tate.json"));
    sections.sql.semantic_path = Some(repo_root().join("demo/semantic/tate.toml"));
    let options = AskBenchOptions {
        sections,
        streams: vec![1, 4],
        connections: 1,
        model_latency: Duration::from_millis(2),
        warmup: Duration::ZERO,
        duration: Duration::from_secs(60),
        requests: Some(12),
        question: "How many artworks has Tate acquired since 2000?".to_owned(),
        sql: SQL.to_owned(),
        probes: 3,
        summaries: false,
        progress: false,
    };
    let report = run_ask_bench(&options).await.unwrap();
    let table = report.table();

    // the calibration: every probe ran, and the scripted answer quotes the
    // SQL's value as the database gives it
    let c = &report.calibration;
    assert_eq!(c.empty_rpc.count, 3, "{table}");
    assert_eq!(c.describe_schema.count, 3, "{table}");
    assert_eq!(c.execute_sql.count, 3, "{table}");
    assert!(c.empty_rpc.p50_ms > 0.0, "{table}");
    assert!(c.schema_chars > 0, "{table}");
    assert_eq!(c.answer_value, expected.to_string(), "{table}");
    assert!(table.contains("an empty RPC (health Check"), "{table}");

    let levels: Vec<usize> = report.levels.iter().map(|l| l.streams).collect();
    assert_eq!(levels, [1, 4], "{table}");
    for level in &report.levels {
        assert_eq!(level.errors, 0, "{:?}\n{table}", level.first_error);
        assert!(level.asks >= 12, "{table}");
        assert_eq!(level.end_to_end.count, level.asks, "{table}");
        // every Ask is the two-step agentic run: a tool call, then the answer
        assert!((level.model_calls_per_ask - 2.0).abs() < 1e-9, "{table}");
        assert!((level.tool_calls_per_ask - 1.0).abs() < 1e-9, "{table}");
        assert!(level.end_to_end.p50_ms > 0.0, "{table}");
        assert!(level.first_event.p50_ms > 0.0, "{table}");
        assert!(level.conversation_store.count > 0, "{table}");
        if cfg!(target_os = "linux") {
            assert!(
                level.server_cpu_ms_per_ask.is_some_and(|ms| ms > 0.0),
                "{table}"
            );
            assert!(
                level.postgres_cpu_ms_per_ask.is_some_and(|ms| ms > 0.0),
                "{table}"
            );
        }
    }
    let json = report.to_json();
    assert_eq!(json["calibration"]["empty_rpc"]["count"], 3, "{json}");
    assert_eq!(json["levels"].as_array().map(Vec::len), Some(2), "{json}");
}
