//! A model per task end to end (issue 6): `[models.routing]` serves the SQL
//! tool's judge while `[model]` writes the SQL; `GenerateSql.model_calls`
//! lists every call with its task, model, tokens and a cost priced from the
//! table of the model that served it; `golden_only` never calls a model;
//! a task table that cannot stand on its own stops start-up naming the key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    AskResponse, GenerateSqlRequest, ModelCallUsage, SqlSource, Usage, value::Kind,
};
use quarry_tests::{
    SECRET, SLICE_LINES, TestServer, authed, final_answer, route_decided, token, usage_of,
};

/// A golden question of `demo/golden/tate.json`.
const GOLDEN_QUESTION: &str = "How many artworks are in the Tate collection?";

/// `[model]`'s price table: gpt-4o's list price, USD per 1M tokens.
const MODEL_PRICE: &str = "[model.price]\ninput_per_million = 2.5\noutput_per_million = 10.0\n";

fn sql_reply(sql: &str) -> ScriptedTurn {
    ScriptedTurn::text(
        serde_json::json!({"sql": sql, "tables_used": ["tate.artworks"], "assumptions": []})
            .to_string(),
    )
}

fn verdict(ok: bool) -> ScriptedTurn {
    ScriptedTurn::text(serde_json::json!({"answers_question": ok, "problem": ""}).to_string())
}

fn generate(question: &str, golden_only: bool) -> GenerateSqlRequest {
    GenerateSqlRequest {
        question: question.into(),
        golden_only,
        ..Default::default()
    }
}

/// `(step, task, model, prompt, completion, total)` of each call.
fn calls(calls: &[ModelCallUsage]) -> Vec<(u32, &str, &str, u64, u64, u64)> {
    calls
        .iter()
        .map(|c| {
            (
                c.step,
                c.task.as_str(),
                c.model.as_str(),
                c.prompt_tokens,
                c.completion_tokens,
                c.total_tokens,
            )
        })
        .collect()
}

fn assert_cost(call: &ModelCallUsage, expected: f64) {
    assert!(call.cost_known, "{call:?}");
    assert!(
        (call.cost_usd - expected).abs() < 1e-12,
        "{} call costs {}, not {expected}",
        call.task,
        call.cost_usd
    );
}

#[tokio::test]
async fn the_judge_runs_on_the_routing_model_and_each_call_is_priced_by_its_own_table() {
    let writer = ScriptedServer::start(vec![
        sql_reply("SELECT count(*) AS artworks FROM tate.artworks").with_usage(1000, 100),
    ])
    .await;
    let judge = ScriptedServer::start(vec![verdict(true).with_usage(500, 10)]).await;
    let server = TestServer::with_model(
        &writer,
        &format!(
            "{MODEL_PRICE}\n[models.routing]\nbase_url = \"{}\"\nmodel = \"judge-mini\"\n\
             [models.routing.price]\ninput_per_million = 0.15\noutput_per_million = 0.6\n",
            judge.base_url()
        ),
    )
    .await;

    let response = server
        .sql()
        .generate_sql(authed(
            generate("How many artworks are there?", false),
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.source, SqlSource::Model as i32);
    assert_eq!(
        response.result.unwrap().rows[0].values[0].kind,
        Some(Kind::Int64Value(SLICE_LINES as i64))
    );

    // generation went to [model], the judge to [models.routing]
    let written = writer.requests();
    assert_eq!(written.len(), 1, "one generation, no judging: {written:?}");
    assert_eq!(written[0]["model"], "scripted");
    assert_eq!(
        written[0]["response_format"]["json_schema"]["name"],
        "sql_query"
    );
    let judged = judge.requests();
    assert_eq!(judged.len(), 1, "one judge call");
    assert_eq!(judged[0]["model"], "judge-mini");
    assert_eq!(
        judged[0]["response_format"]["json_schema"]["name"],
        "verdict"
    );

    assert_eq!(
        calls(&response.model_calls),
        [
            (1, "sql", "scripted", 1000, 100, 1100),
            (2, "judge", "judge-mini", 500, 10, 510),
        ]
    );
    // by hand, each at its own model's rates (USD per 1M tokens / 1M):
    // sql:   1000 × 2.5  + 100 × 10  = 3500 → $0.0035
    // judge:  500 × 0.15 +  10 × 0.6 =   81 → $0.000081
    assert_cost(&response.model_calls[0], 0.0035);
    assert_cost(&response.model_calls[1], 0.000081);
    for call in &response.model_calls {
        assert_eq!(call.elapsed_ms, call.elapsed_us / 1000, "{call:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_routing_table_inherits_endpoint_and_price_from_the_model_section() {
    // one endpoint serves both; only the model name differs for routing
    let model = ScriptedServer::start(vec![
        sql_reply("SELECT count(*) AS artworks FROM tate.artworks").with_usage(1000, 100),
        verdict(true).with_usage(500, 10),
    ])
    .await;
    let server = TestServer::with_model(
        &model,
        &format!("{MODEL_PRICE}\n[models.routing]\nmodel = \"judge-mini\"\n"),
    )
    .await;
    let response = server
        .sql()
        .generate_sql(authed(
            generate("How many artworks are there?", false),
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = model
        .requests()
        .iter()
        .map(|r| r["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["scripted", "judge-mini"]);
    assert_eq!(
        calls(&response.model_calls),
        [
            (1, "sql", "scripted", 1000, 100, 1100),
            (2, "judge", "judge-mini", 500, 10, 510),
        ]
    );
    // the inherited [model.price]: 500 × 2.5 + 10 × 10 = 1350 → $0.00135
    assert_cost(&response.model_calls[1], 0.00135);
    server.stop().await;
}

#[tokio::test]
async fn golden_only_never_calls_a_model_even_when_one_is_configured() {
    let model = ScriptedServer::start(vec![]).await;
    let server = TestServer::with_model(&model, "").await;
    let mut sql = server.sql();

    let hit = sql
        .generate_sql(authed(generate(GOLDEN_QUESTION, true), &token("t1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hit.source, SqlSource::Golden as i32);
    assert_eq!(hit.sql, "SELECT count(*) AS artworks FROM tate.artworks");
    assert_eq!(
        hit.result.unwrap().rows[0].values[0].kind,
        Some(Kind::Int64Value(SLICE_LINES as i64))
    );
    assert!(hit.model_calls.is_empty(), "{:?}", hit.model_calls);

    let miss = sql
        .generate_sql(authed(
            generate("Which artist painted the most storms at sea?", true),
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(miss.sql, "");
    assert!(miss.result.is_none());
    assert!(
        miss.explanation.contains("golden_only"),
        "{}",
        miss.explanation
    );
    assert!(miss.model_calls.is_empty());
    assert!(
        model.requests().is_empty(),
        "golden_only called the model: {:?}",
        model.requests()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_task_table_without_an_endpoint_anywhere_stops_start_up_naming_the_key() {
    let config = quarry_server::Config::from_toml_layers(&[&format!(
        "[auth]\njwt_secret = \"{SECRET}\"\n[models.routing]\nmodel = \"gpt-4o-mini\"\n"
    )])
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = quarry_server::serve(
        listener,
        config,
        quarry_server::Roles::all(),
        std::future::pending(),
    )
    .await
    .expect_err("start-up must fail");
    let err = format!("{err:#}");
    assert!(err.contains("models.routing.base_url"), "{err}");
}

fn route_choice(steps: serde_json::Value) -> ScriptedTurn {
    ScriptedTurn::text(serde_json::json!({ "steps": steps, "reason": "a count" }).to_string())
}

/// The route, the final answer's text and the usage of an Ask stream.
fn ask_events(events: &[AskResponse]) -> (String, String, Usage) {
    (
        route_decided(events).route,
        final_answer(events).text,
        usage_of(events),
    )
}

#[tokio::test]
async fn in_router_mode_the_routing_model_picks_the_sql_pipeline_and_every_call_is_in_the_usage() {
    let writer = ScriptedServer::start(vec![
        sql_reply("SELECT count(*) AS works FROM tate.artworks WHERE acquisition_year > 2000")
            .with_usage(1000, 100),
    ])
    .await;
    let router = ScriptedServer::start(vec![
        route_choice(serde_json::json!([
            {"pipeline": "sql", "query": "How many works were acquired after 2000?", "entity": ""}
        ]))
        .with_usage(200, 20),
    ])
    .await;
    let server = TestServer::with_model(
        &writer,
        &format!(
            "{MODEL_PRICE}\n[models.routing]\nbase_url = \"{}\"\nmodel = \"router-mini\"\n\
             [models.routing.price]\ninput_per_million = 0.15\noutput_per_million = 0.6\n",
            router.base_url()
        ),
    )
    .await;
    let events = quarry_tests::ask_all(
        &server,
        quarry_proto::v1::AskRequest {
            mode: quarry_proto::v1::AskMode::Router as i32,
            ..quarry_tests::ask("Tell me about acquisitions after 2000")
        },
    )
    .await
    .unwrap();
    let (route, answer, usage) = ask_events(&events);
    assert_eq!(route, "sql");
    let expected: i64 = {
        let db = server.db.pool().get().await.unwrap();
        db.query_one(
            "SELECT count(*) FROM tate.artworks WHERE acquisition_year > 2000",
            &[],
        )
        .await
        .unwrap()
        .get(0)
    };
    assert!(answer.contains(&format!("works = {expected}")), "{answer}");
    // the golden look-up was golden-only: the writer saw only the sub-question
    let written = writer.requests();
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(
        written[0]
            .to_string()
            .contains("How many works were acquired after 2000?"),
        "the SQL tool was asked the routing model's sub-question"
    );
    assert_eq!(router.requests()[0]["model"], "router-mini");
    // usage: the routing call, then the SQL tool's generation, each priced by its own table
    assert_eq!(
        calls(&usage.calls),
        [
            (1, "routing", "router-mini", 200, 20, 220),
            (1, "sql", "scripted", 1000, 100, 1100),
        ]
    );
    assert_eq!(usage.model_calls, 2);
    assert_eq!(usage.total_tokens, 1320);
    assert_cost(&usage.calls[0], (200.0 * 0.15 + 20.0 * 0.6) / 1e6);
    assert_cost(&usage.calls[1], (1000.0 * 2.5 + 100.0 * 10.0) / 1e6);
    assert!(usage.cost_known);
    assert!((usage.cost_usd - (usage.calls[0].cost_usd + usage.calls[1].cost_usd)).abs() < 1e-12);
    server.stop().await;
}

#[tokio::test]
async fn an_unusable_routing_choice_falls_back_to_the_rules() {
    let writer = ScriptedServer::start(vec![]).await;
    let router =
        ScriptedServer::start(vec![ScriptedTurn::text("I think you should search!")]).await;
    let server = TestServer::with_model(
        &writer,
        &format!(
            "[models.routing]\nbase_url = \"{}\"\nmodel = \"router-mini\"\n",
            router.base_url()
        ),
    )
    .await;
    let events = quarry_tests::ask_all(
        &server,
        quarry_proto::v1::AskRequest {
            mode: quarry_proto::v1::AskMode::Router as i32,
            ..quarry_tests::ask("How has the weather changed?")
        },
    )
    .await
    .unwrap();
    let reason = route_decided(&events).reason;
    assert!(
        reason.contains("the routing model's choice could not be used")
            && reason.contains("by rules"),
        "{reason}"
    );
    let (_, _, usage) = ask_events(&events);
    assert_eq!(
        usage.model_calls, 1,
        "the failed classification is still accounted"
    );
    assert_eq!(usage.calls[0].task, "routing");
    assert!(
        writer.requests().is_empty(),
        "golden-only look-up, no SQL written"
    );
    server.stop().await;
}

#[tokio::test]
async fn in_agentic_mode_the_sql_tools_model_calls_are_in_the_ask_usage() {
    // one server plays both the answer model and the SQL writer, in order:
    // the agent's step 1 (a question for the SQL tool), the SQL tool's
    // generation, its judge, then the agent's answer
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call(
            "query_database",
            r#"{"question": "How many artworks are there?"}"#,
        )
        .with_usage(300, 30),
        sql_reply("SELECT count(*) AS artworks FROM tate.artworks").with_usage(1000, 100),
        verdict(true).with_usage(500, 10),
        ScriptedTurn::text(format!("There are {SLICE_LINES} artworks.")).with_usage(400, 40),
    ])
    .await;
    let server = TestServer::with_model(&model, MODEL_PRICE).await;
    let events = quarry_tests::ask_all(&server, quarry_tests::ask("How many artworks are there?"))
        .await
        .unwrap();
    let (route, _, usage) = ask_events(&events);
    assert_eq!(route, "agent");
    assert_eq!(
        calls(&usage.calls),
        [
            (1, "answer", "scripted", 300, 30, 330),
            (1, "sql", "scripted", 1000, 100, 1100),
            (2, "judge", "scripted", 500, 10, 510),
            (2, "answer", "scripted", 400, 40, 440),
        ]
    );
    assert_eq!(usage.model_calls, 4);
    assert_eq!(usage.total_tokens, 330 + 1100 + 510 + 440);
    // model time counts the agent's own calls; the SQL tool's run inside tool time
    let agent_us: u64 = usage
        .calls
        .iter()
        .filter(|c| c.task == "answer")
        .map(|c| c.elapsed_us)
        .sum();
    assert_eq!(usage.model_us, agent_us);
    assert!(usage.tool_us > 0 && usage.database_us > 0, "{usage:?}");
    server.stop().await;
}
