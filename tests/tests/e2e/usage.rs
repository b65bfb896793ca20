//! Token and cost accounting of `Ask` (issue 6): the final `usage` event
//! lists each model call with its tokens, wall time and cost priced from the
//! `[model.price]` table, and totals that are their sums — over a real server
//! and PostgreSQL, with the scripted OpenAI-compatible model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::Duration;

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{AnswerStatus, GetUsageRequest};
use quarry_tests::{
    Options, TestServer, ask, ask_all, ask_all_as, authed, call_tokens, final_answer, token,
    token_with_scopes, usage_of,
};

/// The price table of the tests: gpt-4o-mini's list price, USD per 1M tokens.
const PRICE_TOML: &str = "[model.price]\ninput_per_million = 0.15\noutput_per_million = 0.6\n";

/// How long the last scripted turn waits before answering.
const ANSWER_DELAY: Duration = Duration::from_millis(300);

/// Two tool-calling steps and an answer, each reporting its own usage; the
/// answer comes after [`ANSWER_DELAY`].
async fn three_step_model() -> ScriptedServer {
    ScriptedServer::start(vec![
        ScriptedTurn::tool_call("query_database", r#"{"sql": "SELECT 1 AS one"}"#)
            .with_usage(1000, 200),
        ScriptedTurn::tool_call("query_database", r#"{"sql": "SELECT 2 AS two"}"#)
            .with_usage(3000, 400),
        ScriptedTurn::text("Done.")
            .with_usage(5000, 50)
            .with_delay(ANSWER_DELAY),
    ])
    .await
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-12,
        "{what}: {actual} is not {expected}"
    );
}

#[tokio::test]
async fn each_model_call_is_priced_and_the_request_costs_their_sum() {
    let model = three_step_model().await;
    let server = TestServer::with_model(&model, PRICE_TOML).await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    let u = usage_of(&events);

    assert_eq!(u.model_calls, 3);
    assert_eq!(u.tool_calls, 2);
    assert_eq!(
        call_tokens(&u.calls),
        [
            (1, 1000, 200, 1200),
            (2, 3000, 400, 3400),
            (3, 5000, 50, 5050)
        ]
    );
    // by hand: tokens × USD per 1M tokens / 1M
    // 1000 × 0.15 + 200 × 0.6 = 270  → $0.00027
    // 3000 × 0.15 + 400 × 0.6 = 690  → $0.00069
    // 5000 × 0.15 +  50 × 0.6 = 780  → $0.00078
    for (call, expected) in u.calls.iter().zip([0.00027, 0.00069, 0.00078]) {
        assert!(call.cost_known, "{call:?}");
        assert_close(
            call.cost_usd,
            expected,
            &format!("cost of step {}", call.step),
        );
    }
    assert!(u.cost_known, "{u:?}");
    assert_close(u.cost_usd, 0.00174, "cost of the request");
    let sum: f64 = u.calls.iter().map(|c| c.cost_usd).sum();
    assert_eq!(u.cost_usd, sum, "the request costs the sum of its calls");
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (9000, 650, 9650),
        "token totals are the sums of the calls"
    );

    // each call's wall time covers its own wait, and all fit in the request's
    let last = &u.calls[2];
    assert!(
        last.elapsed_ms >= ANSWER_DELAY.as_millis() as u64,
        "the delayed answer took {} ms",
        last.elapsed_ms
    );
    let calls_ms: u64 = u.calls.iter().map(|c| c.elapsed_ms).sum();
    assert!(calls_ms <= u.elapsed_ms, "{calls_ms} ms of calls in {u:?}");
    server.stop().await;
}

#[tokio::test]
async fn without_a_price_table_tokens_are_counted_and_the_cost_is_unknown() {
    let model = three_step_model().await;
    let server = TestServer::with_model(&model, "").await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    let u = usage_of(&events);

    assert_eq!(
        call_tokens(&u.calls),
        [
            (1, 1000, 200, 1200),
            (2, 3000, 400, 3400),
            (3, 5000, 50, 5050)
        ]
    );
    assert_eq!(u.total_tokens, 9650);
    for call in &u.calls {
        assert!(!call.cost_known, "{call:?}");
        assert_eq!(call.cost_usd, 0.0, "{call:?}");
    }
    assert!(!u.cost_known, "no price table, so no known cost: {u:?}");
    assert_eq!(u.cost_usd, 0.0);
    server.stop().await;
}

#[tokio::test]
async fn a_zero_price_is_a_known_cost_of_nothing() {
    // a local model priced at 0 costs nothing, and says so
    let model = ScriptedServer::start(vec![ScriptedTurn::text("Done.").with_usage(700, 30)]).await;
    let server = TestServer::with_model(
        &model,
        "[model.price]\ninput_per_million = 0.0\noutput_per_million = 0.0\n",
    )
    .await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    let u = usage_of(&events);
    assert_eq!(call_tokens(&u.calls), [(1, 700, 30, 730)]);
    assert!(u.cost_known && u.calls[0].cost_known, "{u:?}");
    assert_eq!(u.cost_usd, 0.0);
    server.stop().await;
}

#[tokio::test]
async fn router_mode_calls_no_model_and_costs_nothing() {
    let server = TestServer::start(Options::default()).await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    let u = usage_of(&events);
    assert_eq!(u.model_calls, 0, "{u:?}");
    assert!(u.calls.is_empty(), "{u:?}");
    assert_eq!(u.total_tokens, 0);
    assert!(
        u.cost_known,
        "no model call, so the cost is exactly 0: {u:?}"
    );
    assert_eq!(u.cost_usd, 0.0);
    server.stop().await;
}

#[tokio::test]
async fn cached_prompt_tokens_the_provider_reports_appear_per_call_and_in_total() {
    // OpenAI reports the prompt tokens it served from its prompt cache in
    // `usage.prompt_tokens_details.cached_tokens`; the second call repeats the
    // first's prefix, so a provider would serve part of it from its cache
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("query_database", r#"{"sql": "SELECT 1 AS one"}"#)
            .with_usage(1000, 200),
        ScriptedTurn::tool_call("query_database", r#"{"sql": "SELECT 2 AS two"}"#)
            .with_usage(3000, 400)
            .with_cached_tokens(1024),
        ScriptedTurn::text("Done.")
            .with_usage(5000, 50)
            .with_cached_tokens(2944),
    ])
    .await;
    let server = TestServer::with_model(&model, PRICE_TOML).await;
    let events = ask_all_as(&server, ask("How many artworks are there?"), &token("t1"))
        .await
        .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    let u = usage_of(&events);

    let cached: Vec<u64> = u.calls.iter().map(|c| c.cached_prompt_tokens).collect();
    assert_eq!(cached, [0, 1024, 2944], "per call, as each call reported");
    assert_eq!(u.cached_prompt_tokens, 3968, "the request's total");
    // cached tokens are part of the prompt tokens, not added to them
    assert_eq!((u.prompt_tokens, u.total_tokens), (9000, 9650));

    // and in the tenant's usage ledger (`quarry.usage_daily`, GetUsage)
    let report = server
        .usage()
        .get_usage(authed(
            GetUsageRequest { days: 1 },
            &token_with_scopes("t1", &["usage:read"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.days.len(), 1, "{report:?}");
    assert_eq!(report.days[0].cached_prompt_tokens, 3968, "{report:?}");
    assert_eq!(report.days[0].prompt_tokens, 9000, "{report:?}");
    server.stop().await;
}
