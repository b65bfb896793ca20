//! `AssistantService.Ask` end to end: a real server, a real PostgreSQL with a
//! slice of the Tate data, and (for agentic mode) the scripted
//! OpenAI-compatible server streaming chat completions as the real API does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    AnswerStatus, AskMode, AskRequest, CitationKind, ask_response::Event, tool_result::Outcome,
    value::Kind,
};
use quarry_tests::{
    Options, SLICE_LINES, TestServer, answer_deltas, ask, ask_all, final_answer, usage_of,
};

#[tokio::test]
async fn agentic_tool_call_runs_sql_and_streams_the_answer() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call(
            "query_database",
            r#"{"sql": "SELECT count(*) AS artworks FROM tate.artworks"}"#,
        )
        .with_usage(120, 20),
        ScriptedTurn::text_chunks(["The collection ", "slice holds ", "300 artworks."])
            .with_usage(200, 8),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        ..Default::default()
    })
    .await;

    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    assert_eq!(
        quarry_tests::event_kinds(&events),
        [
            "started",
            "route",
            "tool_call_started",
            "tool_result",
            "answer_delta",
            "final_answer",
            "usage"
        ]
    );
    let Some(Event::Route(route)) = &events[1].event else {
        panic!()
    };
    assert_eq!(route.mode, AskMode::Agentic as i32);

    // the tool ran the model's SQL against the real data
    let Some(Event::ToolResult(result)) = &events[3].event else {
        panic!()
    };
    let Some(Outcome::Sql(sql)) = &result.outcome else {
        panic!("{result:?}")
    };
    assert!(sql.sql.contains("tate.artworks"), "{}", sql.sql);
    let rows = sql.rows.as_ref().unwrap();
    assert_eq!(rows.columns[0].name, "artworks");
    assert_eq!(
        rows.rows[0].values[0].kind,
        Some(Kind::Int64Value(SLICE_LINES as i64))
    );

    // the answer arrived as several deltas that make up the final text
    let parts = answer_deltas(&events);
    assert_eq!(parts.len(), 3, "{parts:?}");
    let answer = final_answer(&events);
    assert_eq!(parts.concat(), answer.text);
    assert_eq!(answer.text, "The collection slice holds 300 artworks.");
    assert_eq!(answer.status, AnswerStatus::Answered as i32);
    assert_eq!(answer.citations.len(), 1);
    assert_eq!(answer.citations[0].kind, CitationKind::SqlRows as i32);
    assert_eq!(answer.citations[0].call_id, result.call_id);

    let usage = usage_of(&events);
    assert_eq!((usage.model_calls, usage.tool_calls), (2, 1));
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (320, 28));

    // what the model saw: the tool and the schema first, then the rows
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0]["tools"][0]["function"]["name"],
        "query_database"
    );
    let system = requests[0]["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("tate.artworks"),
        "schema missing from prompt: {system}"
    );
    let tool_message = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("tool result sent back to the model");
    let content = tool_message["content"].as_str().unwrap();
    assert!(
        content.contains("<tool_result") && content.contains("300"),
        "{content}"
    );
    server.stop().await;
}

#[tokio::test]
async fn agentic_invalid_sql_is_refused_and_the_model_sees_why() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("query_database", r#"{"sql": "DELETE FROM tate.artworks"}"#),
        ScriptedTurn::text("I cannot modify data."),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        ..Default::default()
    })
    .await;
    let events = ask_all(&server, ask("Delete everything")).await.unwrap();
    let error = events
        .iter()
        .find_map(|e| match &e.event {
            Some(Event::ToolResult(r)) => match &r.outcome {
                Some(Outcome::Error(e)) => Some(e.clone()),
                _ => None,
            },
            _ => None,
        })
        .expect("a tool error");
    assert!(
        error.contains("not_a_query") || error.contains("refused"),
        "{error}"
    );
    let requests = model.requests();
    let sent_back = requests[1].to_string();
    assert!(sent_back.contains("status=\\\"error\\\""), "{sent_back}");
    // the data is intact
    let client = server.db.pool().get().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM tate.artworks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, SLICE_LINES as i64);
    let answer = final_answer(&events);
    assert!(
        answer.citations.is_empty(),
        "a failed call is not a citation"
    );
    server.stop().await;
}

#[tokio::test]
async fn agentic_step_limit_ends_with_limit_reached() {
    let call = || ScriptedTurn::tool_call("query_database", r#"{"sql": "SELECT 1 AS one"}"#);
    let model = ScriptedServer::start(vec![call(), call(), call(), call()]).await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        extra_toml: "\n[orchestrator]\nmax_steps = 2\ndeadline_secs = 20\n".into(),
        ..Default::default()
    })
    .await;
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
    server.stop().await;
}

#[tokio::test]
async fn model_error_ends_with_failed_status_not_an_invented_answer() {
    let model = ScriptedServer::start(vec![ScriptedTurn::error(500, "boom")]).await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        ..Default::default()
    })
    .await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Failed as i32);
    assert!(answer.text.contains("model call failed"), "{}", answer.text);
    server.stop().await;
}

#[tokio::test]
async fn router_mode_answers_a_golden_question_from_the_data() {
    let server = TestServer::start(Options::default()).await;
    let events = ask_all(&server, ask("how many artworks are in the tate collection"))
        .await
        .unwrap();
    assert_eq!(
        quarry_tests::event_kinds(&events),
        [
            "started",
            "route",
            "tool_call_started",
            "tool_result",
            "answer_delta",
            "final_answer",
            "usage"
        ]
    );
    let Some(Event::Route(route)) = &events[1].event else {
        panic!()
    };
    assert_eq!(route.mode, AskMode::Router as i32);
    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Answered as i32);
    assert!(
        answer.text.contains(&SLICE_LINES.to_string()),
        "{}",
        answer.text
    );
    assert_eq!(answer.citations.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn router_mode_says_plainly_when_it_cannot_answer() {
    let server = TestServer::start(Options::default()).await;
    let events = ask_all(
        &server,
        ask("Which painting would my grandmother like best?"),
    )
    .await
    .unwrap();
    assert_eq!(
        quarry_tests::event_kinds(&events),
        ["started", "route", "answer_delta", "final_answer", "usage"]
    );
    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Unanswered as i32);
    assert!(
        answer.text.contains("No language model is configured"),
        "{}",
        answer.text
    );
    assert!(answer.citations.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn ask_rejects_an_empty_question_naming_the_field() {
    let server = TestServer::start(Options::default()).await;
    let status = ask_all(&server, AskRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("question"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn deadline_ends_a_slow_answer_with_limit_reached() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::text("too late").with_delay(std::time::Duration::from_secs(5)),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        extra_toml: "\n[orchestrator]\ndeadline_secs = 1\n".into(),
        ..Default::default()
    })
    .await;
    let started = std::time::Instant::now();
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    let answer = final_answer(&events);
    assert_eq!(
        answer.status,
        AnswerStatus::LimitReached as i32,
        "{answer:?}"
    );
    assert!(answer.text.contains("deadline of 1s"), "{}", answer.text);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the deadline did not cut the wait"
    );
    server.stop().await;
}

#[tokio::test]
async fn quarry_ask_prints_the_event_stream_readably() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call(
            "query_database",
            r#"{"sql": "SELECT title FROM tate.artworks ORDER BY id LIMIT 3"}"#,
        ),
        ScriptedTurn::text_chunks(["Three ", "titles."]),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        ..Default::default()
    })
    .await;
    let mut out: Vec<u8> = Vec::new();
    let status = quarry::commands::ask::ask(
        &server.url(),
        &quarry_tests::token("t1"),
        ask("Name three works"),
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(status, AnswerStatus::Answered);
    let text = String::from_utf8(out).unwrap();
    for expected in [
        "» route: agent",
        "» tool call call_1_0 query_database",
        "SQL: SELECT title FROM tate.artworks",
        "| title |",
        "» answer:\nThree titles.\n",
        "» status: ANSWER_STATUS_ANSWERED",
        "» usage: 2 model calls, 1 tool calls",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    server.stop().await;
}
