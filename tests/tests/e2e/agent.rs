//! Agentic mode end to end (issue 6): parallel tool calls in one step,
//! chained calls across steps, recovery from a tool error, the step, token
//! and time limits, and a call of a tool that was not offered — over a real
//! server and PostgreSQL, with the scripted OpenAI-compatible model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::Duration;

use quarry_llm::testing::{ScriptedServer, ScriptedToolCall, ScriptedTurn};
use quarry_proto::v1::{
    AnswerStatus, AskResponse, Citation, CitationKind, ToolResult, tool_result::Outcome,
};
use quarry_tests::{
    Options, SLICE_LINES, TestServer, ask, ask_all, final_answer, int_cell, tool_calls_started,
    tool_results, usage_of,
};
use serde_json::Value as Json;

/// The tool result of `call_id`; panics unless there is exactly one.
fn result_of(events: &[AskResponse], call_id: &str) -> ToolResult {
    let found: Vec<ToolResult> = tool_results(events)
        .into_iter()
        .filter(|r| r.call_id == call_id)
        .collect();
    assert_eq!(found.len(), 1, "results of {call_id}: {found:?}");
    found.into_iter().next().unwrap()
}

fn error_of(result: &ToolResult) -> String {
    match &result.outcome {
        Some(Outcome::Error(message)) => message.clone(),
        other => panic!("an error outcome for {}: {other:?}", result.call_id),
    }
}

fn cited_calls(citations: &[Citation]) -> Vec<&str> {
    citations.iter().map(|c| c.call_id.as_str()).collect()
}

/// The messages of the model's `n`th request.
fn messages(model: &ScriptedServer, n: usize) -> Vec<Json> {
    model.requests()[n]["messages"].as_array().unwrap().clone()
}

/// `(tool_call_id, content)` of each tool message, in order.
fn tool_messages(messages: &[Json]) -> Vec<(String, String)> {
    messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Names of the tools offered in the model's first request.
fn offered(model: &ScriptedServer) -> Vec<String> {
    model.requests()[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn two_calls_in_one_step_both_run_and_come_back_in_call_order() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new(
                "query_database",
                r#"{"sql": "SELECT count(*) AS artworks FROM tate.artworks"}"#,
            )
            .with_id("call_sql"),
            ScriptedToolCall::new("get_summaries", r#"{"kind": "decade", "limit": 2}"#)
                .with_id("call_summaries"),
        ]),
        ScriptedTurn::text("The slice holds 300 artworks; two decades are summarised."),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        summaries: true,
        ..Default::default()
    })
    .await;
    quarry_tests::wait_until_summaries_built(&server).await;

    let events = ask_all(
        &server,
        ask("How many artworks, and what came in which decade?"),
    )
    .await
    .unwrap();

    let mut started: Vec<String> = tool_calls_started(&events)
        .into_iter()
        .map(|s| s.call_id)
        .collect();
    started.sort();
    assert_eq!(started, ["call_sql", "call_summaries"]);
    let sql = result_of(&events, "call_sql");
    assert_eq!(sql.tool_name, "query_database");
    assert_eq!(int_cell(&sql), SLICE_LINES as i64);
    let summaries = result_of(&events, "call_summaries");
    assert_eq!(summaries.tool_name, "get_summaries");
    let Some(Outcome::Summaries(found)) = &summaries.outcome else {
        panic!("a summaries outcome: {summaries:?}")
    };
    assert_eq!(found.summaries.len(), 2, "{found:?}");

    // the next step saw one tool message per call id, in the model's order,
    // right after the assistant message that made the calls
    let second = messages(&model, 1);
    let assistant = second
        .iter()
        .find(|m| m["role"] == "assistant")
        .expect("the assistant's tool calls sent back");
    let ids: Vec<&str> = assistant["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["call_sql", "call_summaries"]);
    let tools = tool_messages(&second);
    let tool_ids: Vec<&str> = tools.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(tool_ids, ["call_sql", "call_summaries"]);
    assert!(
        tools[0].1.contains("call_id=\"call_sql\"") && tools[0].1.contains("300"),
        "{}",
        tools[0].1
    );
    for s in &found.summaries {
        assert!(tools[1].1.contains(&s.id), "{} not in {}", s.id, tools[1].1);
    }

    // citations cover both calls, in call order
    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Answered as i32);
    assert_eq!(
        cited_calls(&answer.citations),
        ["call_sql", "call_summaries", "call_summaries"]
    );
    assert_eq!(answer.citations[0].kind, CitationKind::SqlRows as i32);
    let cited_summaries: Vec<&str> = answer.citations[1..]
        .iter()
        .map(|c| {
            assert_eq!(c.kind, CitationKind::Summary as i32);
            c.source_id.as_str()
        })
        .collect();
    let want: Vec<&str> = found.summaries.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(cited_summaries, want);
    assert_eq!(
        (usage_of(&events).model_calls, usage_of(&events).tool_calls),
        (2, 2)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_later_call_uses_an_earlier_result() {
    // the script is written once the data is known: the second call's
    // argument is the first call's answer
    let model = ScriptedServer::start(Vec::new()).await;
    let server = TestServer::with_model(&model, "").await;
    let client = server.db.pool().get().await.unwrap();
    let artist: i32 = client
        .query_one(
            "SELECT artist_id FROM tate.artwork_contributors
              GROUP BY artist_id ORDER BY count(*) DESC, artist_id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let works: i64 = client
        .query_one(
            "SELECT count(*) FROM tate.artwork_contributors WHERE artist_id = $1",
            &[&artist],
        )
        .await
        .unwrap()
        .get(0);
    drop(client);
    model.push(ScriptedTurn::tool_calls(vec![
        ScriptedToolCall::new(
            "query_database",
            r#"{"sql": "SELECT artist_id FROM tate.artwork_contributors GROUP BY artist_id ORDER BY count(*) DESC, artist_id LIMIT 1"}"#,
        )
        .with_id("call_top"),
    ]));
    model.push(ScriptedTurn::tool_calls(vec![
        ScriptedToolCall::new(
            "query_database",
            serde_json::json!({
                "sql": format!(
                    "SELECT count(*) AS works FROM tate.artwork_contributors WHERE artist_id = {artist}"
                )
            })
            .to_string(),
        )
        .with_id("call_count"),
    ]));
    model.push(ScriptedTurn::text(format!(
        "Artist {artist} has {works} works."
    )));

    let events = ask_all(&server, ask("How many works has the busiest artist?"))
        .await
        .unwrap();
    assert_eq!(int_cell(&result_of(&events, "call_top")), i64::from(artist));
    assert_eq!(int_cell(&result_of(&events, "call_count")), works);

    // step 2 saw step 1's result; step 3 saw both, in order
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    let second = tool_messages(&messages(&model, 1));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].0, "call_top");
    assert!(second[0].1.contains(&artist.to_string()), "{}", second[0].1);
    let third = tool_messages(&messages(&model, 2));
    let ids: Vec<&str> = third.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["call_top", "call_count"]);
    assert!(third[1].1.contains(&works.to_string()), "{}", third[1].1);

    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Answered as i32);
    assert_eq!(answer.text, format!("Artist {artist} has {works} works."));
    assert_eq!(cited_calls(&answer.citations), ["call_top", "call_count"]);
    server.stop().await;
}

#[tokio::test]
async fn a_tool_error_is_shown_to_the_model_which_recovers() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new("query_database", r#"{"sql": "DELETE FROM tate.artworks"}"#)
                .with_id("call_bad"),
        ]),
        ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new(
                "query_database",
                r#"{"sql": "SELECT count(*) AS artworks FROM tate.artworks"}"#,
            )
            .with_id("call_good"),
        ]),
        ScriptedTurn::text("There are 300 artworks."),
    ])
    .await;
    let server = TestServer::with_model(&model, "").await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();

    let error = error_of(&result_of(&events, "call_bad"));
    assert!(
        error.contains("not_a_query") || error.contains("refused"),
        "{error}"
    );
    assert_eq!(
        int_cell(&result_of(&events, "call_good")),
        SLICE_LINES as i64
    );
    let second = tool_messages(&messages(&model, 1));
    assert_eq!(second[0].0, "call_bad");
    assert!(second[0].1.contains("status=\"error\""), "{}", second[0].1);

    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Answered as i32);
    assert_eq!(answer.text, "There are 300 artworks.");
    assert_eq!(
        cited_calls(&answer.citations),
        ["call_good"],
        "a failed call is not cited"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_step_limit_stops_a_model_that_keeps_calling_tools() {
    let step = |n: usize| {
        ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new("query_database", r#"{"sql": "SELECT 1 AS one"}"#)
                .with_id(format!("call_{n}a")),
            ScriptedToolCall::new("query_database", r#"{"sql": "SELECT 2 AS two"}"#)
                .with_id(format!("call_{n}b")),
        ])
    };
    let model = ScriptedServer::start(vec![step(1), step(2), step(3)]).await;
    let server = TestServer::with_model(&model, "[orchestrator]\nmax_steps = 2\n").await;
    let events = ask_all(&server, ask("loop forever")).await.unwrap();

    let answer = final_answer(&events);
    assert_eq!(
        answer.status,
        AnswerStatus::LimitReached as i32,
        "{answer:?}"
    );
    assert!(
        answer.text.contains("limit of 2 model steps"),
        "{}",
        answer.text
    );
    assert_eq!(model.requests().len(), 2);
    assert_eq!(model.remaining(), 1);
    assert_eq!(
        (usage_of(&events).model_calls, usage_of(&events).tool_calls),
        (2, 4)
    );
    assert_eq!(
        cited_calls(&answer.citations),
        ["call_1a", "call_1b", "call_2a", "call_2b"]
    );
    server.stop().await;
}

#[tokio::test]
async fn the_token_limit_stops_the_loop_and_names_the_tokens_used() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("query_database", r#"{"sql": "SELECT 1 AS one"}"#)
            .with_usage(600, 100),
        ScriptedTurn::tool_call("query_database", r#"{"sql": "SELECT 2 AS two"}"#)
            .with_usage(900, 100),
        ScriptedTurn::text("never sent"),
    ])
    .await;
    let server = TestServer::with_model(&model, "[orchestrator]\nmax_tokens = 1000\n").await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();

    let answer = final_answer(&events);
    assert_eq!(
        answer.status,
        AnswerStatus::LimitReached as i32,
        "{answer:?}"
    );
    for part in ["token limit", "1700 tokens used", "limit of 1000 tokens"] {
        assert!(
            answer.text.contains(part),
            "{part:?} not in {}",
            answer.text
        );
    }
    // step 1 (700 tokens) ran its tool; step 2 went over and its call did not run
    assert_eq!(model.requests().len(), 2);
    assert_eq!(tool_calls_started(&events).len(), 1);
    let u = usage_of(&events);
    assert_eq!((u.model_calls, u.tool_calls, u.total_tokens), (2, 1, 1700));
    assert_eq!(answer.citations.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn the_time_limit_ends_with_limit_reached_and_keeps_what_was_found() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new(
                "query_database",
                r#"{"sql": "SELECT count(*) AS artworks FROM tate.artworks"}"#,
            )
            .with_id("call_count"),
        ]),
        // the model is too slow for the deadline; the test does not rely on
        // how long anything takes beyond that
        ScriptedTurn::text("too late").with_delay(Duration::from_secs(120)),
    ])
    .await;
    let server = TestServer::with_model(&model, "[orchestrator]\ndeadline_secs = 5\n").await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();

    let answer = final_answer(&events);
    assert_eq!(
        answer.status,
        AnswerStatus::LimitReached as i32,
        "{answer:?}"
    );
    assert!(
        answer.text.contains("time limit") && answer.text.contains("deadline of 5s"),
        "{}",
        answer.text
    );
    assert!(!answer.text.contains("too late"), "{}", answer.text);
    assert_eq!(
        int_cell(&result_of(&events, "call_count")),
        SLICE_LINES as i64
    );
    assert_eq!(cited_calls(&answer.citations), ["call_count"]);
    server.stop().await;
}

#[tokio::test]
async fn a_tool_that_was_not_offered_is_refused_and_the_model_recovers() {
    // no search or summary service: only the SQL tools are offered
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new("get_summaries", r#"{"entity": "Turner"}"#)
                .with_id("call_summaries"),
            ScriptedToolCall::new("drop_tables", r#"{"schema": "tate"}"#).with_id("call_drop"),
            ScriptedToolCall::new(
                "query_database",
                r#"{"sql": "SELECT count(*) AS artworks FROM tate.artworks"}"#,
            )
            .with_id("call_sql"),
        ]),
        ScriptedTurn::text("There are 300 artworks."),
    ])
    .await;
    let server = TestServer::with_model(&model, "").await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    assert_eq!(offered(&model), ["query_database", "describe_tables"]);

    for (call_id, tool) in [
        ("call_summaries", "get_summaries"),
        ("call_drop", "drop_tables"),
    ] {
        let result = result_of(&events, call_id);
        assert_eq!(result.tool_name, tool);
        let error = error_of(&result);
        assert!(
            error.contains(tool) && error.contains("not offered"),
            "{error}"
        );
        assert!(
            error.ends_with("the tools offered are: query_database, describe_tables"),
            "{error}"
        );
    }
    assert_eq!(
        int_cell(&result_of(&events, "call_sql")),
        SLICE_LINES as i64
    );

    // the model was told, one message per call, in its order
    let second = tool_messages(&messages(&model, 1));
    let ids: Vec<&str> = second.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["call_summaries", "call_drop", "call_sql"]);
    for (_, content) in &second[..2] {
        assert!(
            content.contains("status=\"error\"") && content.contains("query_database"),
            "{content}"
        );
    }
    // nothing was dropped
    let client = server.db.pool().get().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM tate.artworks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, SLICE_LINES as i64);

    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Answered as i32);
    assert_eq!(answer.text, "There are 300 artworks.");
    assert_eq!(cited_calls(&answer.citations), ["call_sql"]);
    server.stop().await;
}

#[tokio::test]
async fn numbers_no_tool_result_holds_are_flagged_in_the_final_answer() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call(
            "query_database",
            r#"{"sql": "SELECT count(*) AS works FROM tate.artworks"}"#,
        ),
        ScriptedTurn::text(format!(
            "The collection holds {SLICE_LINES} works in this slice, 4,321 of them paintings, since 1950."
        )),
    ])
    .await;
    let server = TestServer::with_model(&model, "").await;
    let events = ask_all(&server, ask("How many works are there since 1950?"))
        .await
        .unwrap();
    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Answered as i32, "{answer:?}");
    // 300 comes from the tool result and 1950 from the question; 4,321 from nowhere
    assert_eq!(answer.ungrounded_numbers, ["4,321"], "{}", answer.text);
    server.stop().await;
}

/// A model asking for more tool calls than a step or an Ask may run gets
/// error results for the rest (every call id answered), and only the
/// allowed calls reach the database.
#[tokio::test]
async fn tool_calls_past_the_per_step_and_per_ask_caps_are_not_run() {
    let step = |n: usize, count: usize| {
        ScriptedTurn::tool_calls(
            (0..count)
                .map(|i| {
                    ScriptedToolCall::new("query_database", r#"{"sql": "SELECT 1 AS one"}"#)
                        .with_id(format!("call_{n}_{i}"))
                })
                .collect(),
        )
    };
    let model =
        ScriptedServer::start(vec![step(1, 5), step(2, 3), ScriptedTurn::text("Done.")]).await;
    let server = TestServer::with_model(
        &model,
        "[orchestrator]\nmax_tool_calls_per_step = 3\nmax_tool_calls_per_ask = 4\n",
    )
    .await;
    let events = ask_all(&server, ask("Count everything, many times."))
        .await
        .unwrap();
    let results = tool_results(&events);
    assert_eq!(results.len(), 8, "every call id gets a result");
    let refused: Vec<String> = results
        .iter()
        .filter(|r| matches!(&r.outcome, Some(Outcome::Error(m)) if m.contains("not run")))
        .map(|r| r.call_id.clone())
        .collect();
    // step 1: calls 3 and 4 past the per-step cap; step 2: one more runs
    // (4 per Ask), the other two are past the per-Ask cap
    assert_eq!(refused, ["call_1_3", "call_1_4", "call_2_1", "call_2_2"]);
    assert!(error_of(&result_of(&events, "call_1_3")).contains("per step"));
    assert!(error_of(&result_of(&events, "call_2_2")).contains("for one question"));
    let second = tool_messages(&messages(&model, 1));
    assert_eq!(second.len(), 5, "the model hears back about every call");
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    server.stop().await;
}

/// One tenant's Asks in flight are capped; past the cap the next one is
/// refused up front with RESOURCE_EXHAUSTED and RetryInfo, while another
/// tenant asks as usual.
#[tokio::test]
async fn asks_in_flight_are_capped_per_tenant() {
    use tonic_types::StatusExt as _;
    let model = ScriptedServer::start(vec![
        ScriptedTurn::text("Slow answer.").with_delay(Duration::from_millis(800)),
        ScriptedTurn::text("Other tenant."),
    ])
    .await;
    let server = TestServer::with_model(
        &model,
        "[orchestrator]\nmax_asks_per_tenant = 1\ntenant_wait_ms = 50\n",
    )
    .await;
    let first = {
        let mut client = server.assistant();
        let token = quarry_tests::token("busy");
        tokio::spawn(async move {
            let mut stream = client
                .ask(quarry_tests::authed(ask("First?"), &token))
                .await
                .unwrap()
                .into_inner();
            while stream.message().await.unwrap().is_some() {}
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = server
        .assistant()
        .ask(quarry_tests::authed(
            ask("Second?"),
            &quarry_tests::token("busy"),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("asks in flight"), "{refused:?}");
    assert!(refused.get_details_retry_info().is_some());
    let other = quarry_tests::ask_all_as(&server, ask("Other?"), &quarry_tests::token("calm"))
        .await
        .unwrap();
    assert_eq!(final_answer(&other).status, AnswerStatus::Answered as i32);
    first.await.unwrap();
    server.stop().await;
}

/// A tenant's agentic tool calls in flight are capped over its Asks: a call
/// past the share gets an error result the model reads, and does not run.
#[tokio::test]
async fn tool_calls_in_flight_are_capped_per_tenant() {
    let slow = r#"{"sql": "SELECT count(*) AS n FROM generate_series(1, 3000000) AS g"}"#;
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new("query_database", slow).with_id("call_a"),
            ScriptedToolCall::new("query_database", slow).with_id("call_b"),
        ]),
        ScriptedTurn::text("Done."),
    ])
    .await;
    let server = TestServer::with_model(
        &model,
        "[orchestrator]\nmax_tool_calls_per_tenant = 1\ntenant_wait_ms = 10\n",
    )
    .await;
    let events = ask_all(&server, ask("Count twice.")).await.unwrap();
    let refused: Vec<String> = tool_results(&events)
        .iter()
        .filter(
            |r| matches!(&r.outcome, Some(Outcome::Error(m)) if m.contains("tool calls in flight")),
        )
        .map(|r| r.call_id.clone())
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", tool_results(&events));
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    server.stop().await;
}
