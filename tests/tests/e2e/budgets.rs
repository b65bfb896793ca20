//! Token and cost budgets per tenant and the usage report (issue 14): every
//! Ask is charged to `quarry.usage_daily`, `UsageService.GetUsage` reports
//! it, and a tenant that has spent a budget is refused — over a real server
//! and PostgreSQL, with the scripted OpenAI-compatible model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::Duration;

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{AnswerStatus, GetUsageRequest, GetUsageResponse};
use quarry_tests::{
    TestServer, ask, ask_all_as, authed, final_answer, token, token_with_scopes, usage_of,
};
use tonic::Code;
use tonic_types::StatusExt as _;

/// gpt-4o-mini's list price, USD per 1M tokens.
const PRICE_TOML: &str = "[model.price]\ninput_per_million = 0.15\noutput_per_million = 0.6\n";

async fn usage(server: &TestServer, tenant: &str) -> GetUsageResponse {
    server
        .usage()
        .get_usage(authed(
            GetUsageRequest { days: 7 },
            &token_with_scopes(tenant, &["usage:read"]),
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn an_asks_tokens_cost_and_rows_are_charged_and_reported_per_tenant() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("query_database", r#"{"sql": "SELECT 1 AS one"}"#)
            .with_usage(1000, 200),
        ScriptedTurn::text("One.").with_usage(500, 50),
    ])
    .await;
    let server = TestServer::with_model(&model, PRICE_TOML).await;
    let events = ask_all_as(&server, ask("How many?"), &token("t1"))
        .await
        .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    let spent = usage_of(&events);

    let report = usage(&server, "t1").await;
    assert_eq!(report.tenant, "t1");
    assert_eq!(report.days.len(), 1, "{report:?}");
    let day = &report.days[0];
    assert_eq!(day.asks, 1);
    assert_eq!(day.requests, 2, "the Ask and the SQL statement it ran");
    assert_eq!(day.model_calls, 2);
    assert_eq!((day.prompt_tokens, day.completion_tokens), (1500, 250));
    // 1500 × 0.15 + 250 × 0.6 = 375 USD per 1M → $0.000375
    assert!((day.cost_usd - 0.000375).abs() < 1e-12, "{day:?}");
    assert!((day.cost_usd - spent.cost_usd).abs() < 1e-12);
    assert_eq!(day.rows, 1);
    assert!(day.bytes > 0, "{day:?}");
    assert_eq!(report.month_tokens, 1750);
    assert_eq!(
        report.budgets.unwrap().tokens_per_day,
        0,
        "no limit by default"
    );
    // another tenant's usage is its own
    assert!(usage(&server, "t2").await.days.is_empty());
    // the report needs usage:read; audit:read is not enough
    for token in [token("t1"), token_with_scopes("t1", &["audit:read"])] {
        let refused = server
            .usage()
            .get_usage(authed(GetUsageRequest { days: 7 }, &token))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
    server.stop().await;
}

/// Asks as `tenant` and expects a refusal naming `budget`, with a retry
/// delay no longer than `window`.
async fn assert_refused(server: &TestServer, tenant: &str, budget: &str, window: Duration) {
    let status = ask_all_as(server, ask("And now?"), &token(tenant))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(budget), "{}", status.message());
    let retry = status
        .get_error_details()
        .retry_info()
        .expect("RetryInfo")
        .retry_delay
        .expect("a retry delay");
    assert!(
        retry > Duration::ZERO && retry <= window,
        "{retry:?} is not within {window:?}"
    );
}

#[tokio::test]
async fn the_ask_that_spends_the_daily_tokens_finishes_and_the_next_is_refused() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::text("First.").with_usage(900, 200),
        ScriptedTurn::text("Other tenant.").with_usage(900, 200),
    ])
    .await;
    let server = TestServer::with_model(
        &model,
        "[budgets]\ntokens_per_day = 1000\n[budgets.tenants.t3]\ntokens_per_day = 0\n",
    )
    .await;
    let first = ask_all_as(&server, ask("How many?"), &token("t1"))
        .await
        .unwrap();
    assert_eq!(final_answer(&first).status, AnswerStatus::Answered as i32);

    assert_refused(
        &server,
        "t1",
        "the tenant's daily token budget of 1000 is spent; it resets at 00:00 UTC",
        Duration::from_secs(86_400),
    )
    .await;
    assert_eq!(model.request_count(), 1, "the refused Ask called no model");
    // another tenant still asks (t3 has no daily limit at all)
    let other = ask_all_as(&server, ask("How many?"), &token("t3"))
        .await
        .unwrap();
    assert_eq!(final_answer(&other).status, AnswerStatus::Answered as i32);
    let report = usage(&server, "t1").await;
    assert_eq!(report.days[0].asks, 1, "a refused Ask is not charged");
    assert_eq!(report.budgets.unwrap().tokens_per_day, 1000);
    assert_eq!(
        usage(&server, "t3").await.budgets.unwrap().tokens_per_day,
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn a_model_step_past_the_budget_is_not_taken() {
    // the first step spends the budget; the check before the second stops the Ask
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("query_database", r#"{"sql": "SELECT 1 AS one"}"#)
            .with_usage(1000, 200),
        ScriptedTurn::text("Never sent.").with_usage(10, 10),
    ])
    .await;
    let server = TestServer::with_model(&model, "[budgets]\ntokens_per_day = 1000\n").await;
    let events = ask_all_as(&server, ask("How many?"), &token("t1"))
        .await
        .unwrap();
    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::LimitReached as i32);
    assert!(
        answer
            .text
            .contains("the tenant's daily token budget of 1000 is spent"),
        "{}",
        answer.text
    );
    assert_eq!(model.request_count(), 1, "the second step was not sent");
    assert_eq!(usage(&server, "t1").await.days[0].prompt_tokens, 1000);
    server.stop().await;
}

#[tokio::test]
async fn a_daily_usd_budget_is_spent_at_the_configured_price() {
    let model =
        ScriptedServer::start(vec![ScriptedTurn::text("First.").with_usage(1000, 200)]).await;
    // the Ask costs 1000 × 0.15 + 200 × 0.6 = 270 USD per 1M → $0.00027
    let server = TestServer::with_model(
        &model,
        &format!("{PRICE_TOML}[budgets]\nusd_per_day = 0.0002\n"),
    )
    .await;
    let first = ask_all_as(&server, ask("How many?"), &token("t1"))
        .await
        .unwrap();
    assert_eq!(final_answer(&first).status, AnswerStatus::Answered as i32);
    assert_refused(
        &server,
        "t1",
        "the tenant's daily USD budget of 0.0002 is spent",
        Duration::from_secs(86_400),
    )
    .await;
    server.stop().await;
}

/// Issue 14's leftover: `GenerateSql` called directly — here on a server
/// playing only the SQL role — is checked against the tenant's budgets
/// before its model calls and charged after them.
#[tokio::test]
async fn generate_sql_called_directly_is_checked_and_charged() {
    use quarry_proto::v1::GenerateSqlRequest;
    use quarry_server::{Role, Roles};

    let sql_reply =
        serde_json::json!({"sql": "SELECT count(*) AS n FROM tate.artworks"}).to_string();
    let model = ScriptedServer::start(vec![
        ScriptedTurn::text(sql_reply).with_usage(900, 200),
        ScriptedTurn::text(r#"{"answers_question": true, "problem": ""}"#),
    ])
    .await;
    let server = quarry_tests::TestServer::start(quarry_tests::Options {
        model_base_url: Some(model.base_url()),
        roles: Some(Roles::of([Role::Sql])),
        extra_toml: "[budgets]\ntokens_per_day = 1000\n".to_owned(),
        ..quarry_tests::Options::default()
    })
    .await;
    let generate = || {
        authed(
            GenerateSqlRequest {
                question: "How many artworks are there?".to_owned(),
                ..GenerateSqlRequest::default()
            },
            &token("t1"),
        )
    };
    let first = server
        .sql()
        .generate_sql(generate())
        .await
        .unwrap()
        .into_inner();
    assert!(first.sql.contains("count(*)"), "{first:?}");
    let calls = model.request_count();
    let client = server.db.pool().get().await.unwrap();
    let charged: i64 = client
        .query_one(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint \
             FROM quarry.usage_daily WHERE tenant = 't1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let reported: u64 = first.model_calls.iter().map(|c| c.total_tokens).sum();
    assert!(reported >= 1100, "{:?}", first.model_calls);
    assert_eq!(
        charged as u64, reported,
        "the model calls of GenerateSql are charged"
    );
    let refused = server.sql().generate_sql(generate()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("daily token budget of 1000"),
        "{}",
        refused.message()
    );
    assert!(refused.get_error_details().retry_info().is_some());
    assert_eq!(
        model.request_count(),
        calls,
        "no model call over the budget"
    );
    server.stop().await;
}
