//! Prometheus metrics (issue 15, item 3): a server with `[metrics]` serves
//! the text exposition on its own port, and a real Prometheus server
//! (Debian `prometheus`, `dev/prometheus.sh`) scrapes it and answers
//! queries over the series — RPCs by method and code, SQL rows by tenant,
//! model tokens and cost, Ask stages, the index sync, summary builds, pools.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::Duration;

use quarry_llm::testing::{SCRIPTED_EMBEDDING_DIMENSION, ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{AnswerStatus, ExecuteSqlRequest};
use quarry_tests::{Options, Prometheus, TestServer, ask, ask_all, authed, final_answer, token};

/// gpt-4o-mini's list price, USD per 1M tokens.
const PRICE_TOML: &str = "[model.price]\ninput_per_million = 0.15\noutput_per_million = 0.6\n";

/// How long the Ask's last model turn waits before answering: the Ask's
/// RPC lasts at least this long, though its response headers go out at once.
const ANSWER_DELAY: Duration = Duration::from_millis(400);

/// How long a series may take to show up in Prometheus (scraped every 1 s).
const WITHIN: Duration = Duration::from_secs(30);

/// A server with metrics, a priced scripted model, the scripted embedder,
/// search and summaries; then one ExecuteSql of tenant `metrics-a` (5
/// rows), one refused ExecuteSql, one call without a token, one Ask of
/// tenant `t1` (a tool call returning 3 rows, two model calls), and one
/// source change for the index sync.
async fn busy_server() -> (TestServer, ScriptedServer, ScriptedServer) {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call(
            "query_database",
            r#"{"sql": "SELECT id FROM tate.artworks ORDER BY id LIMIT 3"}"#,
        )
        .with_usage(1000, 200),
        ScriptedTurn::text("Three of them.")
            .with_usage(2000, 50)
            .with_delay(ANSWER_DELAY),
    ])
    .await;
    let embedder = ScriptedServer::start(vec![]).await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        extra_toml: format!(
            "{PRICE_TOML}[embedding]\nkind = \"openai\"\nbase_url = \"{}\"\n\
             model = \"scripted-embedding\"\ndimension = {SCRIPTED_EMBEDDING_DIMENSION}\n\
             max_retries = 0\n",
            embedder.base_url()
        ),
        search: true,
        summaries: true,
        metrics: true,
        ..Default::default()
    })
    .await;
    let mut sql = server.sql();
    let rows = sql
        .execute_sql(authed(
            ExecuteSqlRequest {
                sql: "SELECT id FROM tate.artworks ORDER BY id".into(),
                max_rows: 5,
            },
            &token("metrics-a"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rows.result.unwrap().rows.len(), 5);
    let refused = sql
        .execute_sql(authed(
            ExecuteSqlRequest {
                sql: "UPDATE tate.artworks SET title = 'x'".into(),
                max_rows: 5,
            },
            &token("metrics-a"),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let anonymous = sql
        .execute_sql(ExecuteSqlRequest {
            sql: "SELECT 1".into(),
            max_rows: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);

    let events = ask_all(&server, ask("Which are the first three artworks?"))
        .await
        .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);

    let client = server.db.pool().get().await.unwrap();
    client
        .batch_execute(
            "UPDATE tate.artworks SET title = title || ' (metrics)' \
             WHERE id = (SELECT min(id) FROM tate.artworks)",
        )
        .await
        .unwrap();
    (server, model, embedder)
}

/// The single value of `result`, panicking on any other shape.
fn only(result: &[(serde_json::Value, f64)]) -> f64 {
    assert_eq!(result.len(), 1, "{result:?}");
    result[0].1
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_server_and_answers_queries_over_its_series() {
    let (server, _model, _embedder) = busy_server().await;
    let prometheus = Prometheus::start(server.metrics_addr.unwrap());
    let is = |expected: f64| {
        move |r: &[(serde_json::Value, f64)]| r.len() == 1 && (r[0].1 - expected).abs() < 1e-9
    };

    // RPCs by method and code: the code of a trailers-only error (before the
    // handler, or from it) and of a stream's trailers
    prometheus
        .wait_for(
            r#"quarry_rpc_requests_total{service="quarry.v1.SqlService",method="ExecuteSql",code="OK"}"#,
            WITHIN,
            is(1.0),
        )
        .await;
    for code in ["INVALID_ARGUMENT", "UNAUTHENTICATED"] {
        prometheus
            .wait_for(
                &format!(r#"quarry_rpc_requests_total{{method="ExecuteSql",code="{code}"}}"#),
                WITHIN,
                is(1.0),
            )
            .await;
    }
    prometheus
        .wait_for(
            r#"quarry_rpc_requests_total{method="Ask",code="OK"}"#,
            WITHIN,
            is(1.0),
        )
        .await;
    // a streaming Ask is measured until its stream ends, not its headers
    let ask_seconds = only(
        &prometheus
            .query(r#"quarry_rpc_duration_seconds_sum{method="Ask",code="OK"}"#)
            .await,
    );
    assert!(
        ask_seconds >= ANSWER_DELAY.as_secs_f64(),
        "the Ask lasted {ask_seconds} s"
    );
    // nothing is left in flight
    let in_flight = prometheus
        .query(r#"sum(quarry_rpc_in_flight{service="quarry.v1.AssistantService"})"#)
        .await;
    assert_eq!(only(&in_flight), 0.0);

    // SQL rows by tenant: the ExecuteSql's 5, the Ask's tool call's 3
    prometheus
        .wait_for(
            r#"quarry_sql_rows_total{tenant="metrics-a"}"#,
            WITHIN,
            is(5.0),
        )
        .await;
    prometheus
        .wait_for(r#"quarry_sql_rows_total{tenant="t1"}"#, WITHIN, is(3.0))
        .await;
    prometheus
        .wait_for(
            r#"quarry_sql_duration_seconds_count{tenant="metrics-a",outcome="ok"}"#,
            WITHIN,
            is(1.0),
        )
        .await;

    // model calls: tokens and cost by tenant and model
    prometheus
        .wait_for(
            r#"quarry_model_prompt_tokens_total{tenant="t1",model="scripted"}"#,
            WITHIN,
            is(3000.0),
        )
        .await;
    prometheus
        .wait_for(
            r#"quarry_model_completion_tokens_total{tenant="t1",model="scripted"}"#,
            WITHIN,
            is(250.0),
        )
        .await;
    // by hand: (1000 + 2000) × 0.15 + (200 + 50) × 0.6 = 600 USD per 1M → $0.0006
    let cost = only(
        &prometheus
            .query(r#"quarry_model_call_cost_usd_sum{tenant="t1",model="scripted"}"#)
            .await,
    );
    assert!((cost - 0.0006).abs() < 1e-12, "cost {cost}");

    // the Ask's stages
    for stage in ["route", "model", "tool", "store", "total"] {
        prometheus
            .wait_for(
                &format!(r#"quarry_ask_stage_duration_seconds_count{{stage="{stage}"}}"#),
                WITHIN,
                is(1.0),
            )
            .await;
    }

    // the index sync applied the change; its backlogs are reported
    prometheus
        .wait_for(
            r#"quarry_sync_changes_total{collection="artworks"}"#,
            WITHIN,
            |r| r.len() == 1 && r[0].1 >= 1.0,
        )
        .await;
    prometheus
        .wait_for(
            r#"quarry_sync_outbox_backlog{collection="artworks"}"#,
            WITHIN,
            |r| r.len() == 1,
        )
        .await;
    prometheus
        .wait_for(
            r#"quarry_sync_embedding_backlog{collection="artworks"}"#,
            WITHIN,
            is(0.0),
        )
        .await;

    // the start-up summary build wrote summaries
    prometheus
        .wait_for(r#"sum(quarry_summary_builds_total)"#, WITHIN, |r| {
            r.len() == 1 && r[0].1 >= 1.0
        })
        .await;
    prometheus
        .wait_for(r#"quarry_summaries_built_total"#, WITHIN, |r| {
            r.len() == 1 && r[0].1 > 0.0
        })
        .await;

    // supervised background work: the index sync runs
    prometheus
        .wait_for(r#"quarry_background_task_up{group="sync"}"#, WITHIN, |r| {
            !r.is_empty() && r.iter().all(|(_, v)| *v == 1.0)
        })
        .await;

    // pools: connection waits by use, size by database
    prometheus
        .wait_for(
            r#"quarry_db_pool_wait_seconds_count{use="sql"}"#,
            WITHIN,
            |r| r.len() == 1 && r[0].1 >= 2.0,
        )
        .await;
    prometheus
        .wait_for(
            &format!(
                r#"quarry_db_pool_connections{{database="{}",state="max"}}"#,
                server.db.name()
            ),
            WITHIN,
            is(4.0),
        )
        .await;
    drop(prometheus);
    server.stop().await;
}

#[tokio::test]
async fn the_metrics_endpoint_serves_every_family_in_the_text_format() {
    let (server, _model, _embedder) = busy_server().await;
    let url = format!("http://{}/metrics", server.metrics_addr.unwrap());
    // the sync and the embedder run behind: wait for their series
    let mut text = String::new();
    for _ in 0..60 {
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        text = response.text().await.unwrap();
        if text.contains("quarry_sync_lag_seconds")
            && text.contains("quarry_sync_embedding_backlog")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (family, kind) in [
        ("quarry_rpc_requests_total", "counter"),
        ("quarry_rpc_in_flight", "gauge"),
        ("quarry_rpc_duration_seconds", "histogram"),
        ("quarry_ask_stage_duration_seconds", "histogram"),
        ("quarry_model_calls_total", "counter"),
        ("quarry_model_prompt_tokens_total", "counter"),
        ("quarry_model_completion_tokens_total", "counter"),
        ("quarry_model_call_cost_usd", "histogram"),
        ("quarry_sql_duration_seconds", "histogram"),
        ("quarry_sql_rows_total", "counter"),
        ("quarry_sql_result_bytes_total", "counter"),
        ("quarry_db_pool_wait_seconds", "histogram"),
        ("quarry_db_pool_connections", "gauge"),
        ("quarry_db_pool_waiting", "gauge"),
        ("quarry_sync_lag_seconds", "histogram"),
        ("quarry_sync_changes_total", "counter"),
        ("quarry_sync_outbox_backlog", "gauge"),
        ("quarry_sync_outbox_oldest_seconds", "gauge"),
        ("quarry_sync_embedding_backlog", "gauge"),
        ("quarry_sync_documents_embedded_total", "counter"),
        ("quarry_summary_builds_total", "counter"),
        ("quarry_summary_build_duration_seconds", "histogram"),
        ("quarry_summaries_built_total", "counter"),
        ("quarry_background_task_up", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "no {kind} {family} in:\n{text}"
        );
    }
    // histograms have the documented buckets, as Prometheus histograms
    assert!(
        text.contains(r#"quarry_rpc_duration_seconds_bucket{service="quarry.v1.SqlService",method="ExecuteSql",code="OK",le="0.005"}"#),
        "{text}"
    );
    // the model call's cost is in its own buckets (USD, not seconds)
    assert!(
        text.contains(
            r#"quarry_model_call_cost_usd_bucket{tenant="t1",model="scripted",le="0.001"}"#
        ),
        "{text}"
    );
    // a made-up path does not make a series of its own
    let channel = server.channel();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let made_up: Result<tonic::Response<()>, tonic::Status> = grpc
        .unary(
            tonic::Request::new(()),
            http::uri::PathAndQuery::from_static("/made.Up/Nothing"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await;
    assert!(made_up.is_err());
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(!text.contains("made.Up"), "{text}");
    assert!(
        text.contains(r#"quarry_rpc_requests_total{service="other",method="other""#),
        "{text}"
    );
    server.stop().await;
}
