//! Model failures end to end (issue 6, item 7): a rate limit answered after
//! the `Retry-After` wait, a server error on every attempt, a model that
//! never answers within `[model] timeout_secs`, a stream that breaks
//! part-way, and a server error on the step after a tool call — over a real
//! server and PostgreSQL, with the scripted OpenAI-compatible model.
//!
//! What the user sees is asserted from the event stream: the route, the tool
//! events, the answer deltas, the final answer's status, text and citations,
//! and the usage event. Times are only ever lower bounds (a wait that must
//! have happened); where a test needs the stream to end, the wait for it is
//! bounded by [`WAIT`], far shorter than the scripted model would take if
//! the timeout under test did not cut it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::{Duration, Instant};

use quarry_llm::testing::{ScriptedServer, ScriptedToolCall, ScriptedTurn};
use quarry_proto::v1::{AnswerStatus, AskMode, AskResponse, FinalAnswer};
use quarry_tests::{
    SLICE_LINES, TestServer, answer_deltas, ask, ask_all, call_tokens, event_kinds, final_answer,
    int_cell, route_decided, tool_results, usage_of,
};
use serde_json::json;

/// Bound on waiting for an `Ask` whose model is scripted to stall for
/// [`STALL`]: a bound on a wait, not a speed assertion.
const WAIT: Duration = Duration::from_secs(30);

/// How long a stalled scripted model would take, far beyond [`WAIT`].
const STALL: Duration = Duration::from_secs(300);

/// The SQL the scripted model asks for; its single cell is [`SLICE_LINES`].
const COUNT_SQL: &str = r#"{"sql": "SELECT count(*) AS artworks FROM tate.artworks"}"#;

/// Asks `question`, at most [`WAIT`]; returns the events and the wall time.
async fn ask_timed(server: &TestServer, question: &str) -> (Vec<AskResponse>, Duration) {
    let started = Instant::now();
    let events = tokio::time::timeout(WAIT, ask_all(server, ask(question)))
        .await
        .unwrap_or_else(|_| panic!("the ask did not end within {WAIT:?}"))
        .expect("the ask stream ends without a gRPC error");
    (events, started.elapsed())
}

/// What every `Ask` here shares, whatever failed: agentic route, the final
/// answer's text is exactly what was streamed, Quarry's own failure note is
/// not checked for ungrounded numbers (it quotes status codes and seconds),
/// and usage comes last. Returns the final answer.
fn common_checks(events: &[AskResponse]) -> FinalAnswer {
    let route = route_decided(events);
    assert_eq!(route.mode, AskMode::Agentic as i32, "{route:?}");
    assert_eq!(route.route, "agent");
    let answer = final_answer(events);
    assert_eq!(
        answer.text,
        answer_deltas(events).concat(),
        "the final text is the deltas"
    );
    assert!(
        answer.ungrounded_numbers.is_empty(),
        "{:?} in {}",
        answer.ungrounded_numbers,
        answer.text
    );
    usage_of(events);
    answer
}

/// The note the run appends when the model call fails with `error` (the
/// `LlmError` display).
fn failure_note(error: &str) -> String {
    format!("(The model call failed: {error}.)")
}

/// A streamed chunk in OpenAI's shape carrying `delta`.
fn chunk(delta: serde_json::Value, finish_reason: Option<&str>) -> String {
    json!({
        "id": "chatcmpl-raw",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
    })
    .to_string()
}

#[tokio::test]
async fn a_rate_limit_is_waited_out_and_the_question_answered() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::rate_limited(1),
        ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new("query_database", COUNT_SQL).with_id("call_count"),
        ])
        .with_usage(1000, 20),
        ScriptedTurn::text("There are 300 artworks.").with_usage(1500, 6),
    ])
    .await;
    let server = TestServer::with_model(&model, "[model]\nmax_retries = 2\n").await;
    let (events, elapsed) = ask_timed(&server, "How many artworks are there?").await;

    assert_eq!(
        event_kinds(&events),
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
    let answer = common_checks(&events);
    assert_eq!(answer.status, AnswerStatus::Answered as i32, "{answer:?}");
    assert_eq!(answer.text, "There are 300 artworks.");
    let results = tool_results(&events);
    assert_eq!(results.len(), 1);
    assert_eq!(int_cell(&results[0]), SLICE_LINES as i64);
    let cited: Vec<&str> = answer
        .citations
        .iter()
        .map(|c| c.call_id.as_str())
        .collect();
    assert_eq!(cited, ["call_count"]);

    // the refused request was sent again, unchanged, after Retry-After
    let requests = model.requests();
    assert_eq!(requests.len(), 3, "429, its retry, step 2");
    assert_eq!(requests[0], requests[1], "the retry is the same request");
    assert!(
        elapsed >= Duration::from_secs(1),
        "the retry did not wait for Retry-After: the ask took {elapsed:?}"
    );

    // the retry belongs to step 1's model call: two calls, not three, and
    // step 1's wall time covers the Retry-After wait
    let u = usage_of(&events);
    assert_eq!((u.model_calls, u.tool_calls), (2, 1), "{u:?}");
    assert_eq!(
        call_tokens(&u.calls),
        [(1, 1000, 20, 1020), (2, 1500, 6, 1506)]
    );
    assert_eq!(u.total_tokens, 2526);
    assert!(
        u.calls[0].elapsed_ms >= 1000,
        "step 1 took {} ms, less than the Retry-After wait",
        u.calls[0].elapsed_ms
    );
    server.stop().await;
}

#[tokio::test]
async fn a_server_error_on_every_attempt_fails_cleanly_after_the_retries() {
    let overloaded = || {
        ScriptedTurn::error(
            503,
            r#"{"error": {"message": "the model is overloaded", "type": "server_error"}}"#,
        )
    };
    let model = ScriptedServer::start(vec![
        overloaded(),
        overloaded(),
        overloaded(),
        ScriptedTurn::text("Recovered."),
    ])
    .await;
    let server = TestServer::with_model(&model, "[model]\nmax_retries = 2\n").await;
    let (events, elapsed) = ask_timed(&server, "How many artworks are there?").await;

    assert_eq!(
        event_kinds(&events),
        ["started", "route", "answer_delta", "final_answer", "usage"]
    );
    let answer = common_checks(&events);
    assert_eq!(answer.status, AnswerStatus::Failed as i32, "{answer:?}");
    assert!(
        answer.text.contains(&failure_note(
            "model endpoint answered http 503: the model is overloaded"
        )),
        "{}",
        answer.text
    );
    assert!(answer.citations.is_empty(), "{answer:?}");

    // one request and max_retries = 2 retries, with backoff 100 ms then 200 ms
    let requests = model.requests();
    assert_eq!(requests.len(), 3, "max_retries + 1 attempts");
    assert!(requests.iter().all(|r| *r == requests[0]), "same request");
    assert_eq!(
        model.remaining(),
        1,
        "the answer after the errors was not asked for"
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "the retries did not back off: the ask took {elapsed:?}"
    );
    let u = usage_of(&events);
    assert_eq!((u.model_calls, u.tool_calls), (1, 0), "{u:?}");
    assert_eq!(
        call_tokens(&u.calls),
        [(1, 0, 0, 0)],
        "a failed call reports no tokens"
    );
    assert!(u.calls[0].elapsed_ms >= 300, "{u:?}");

    // the server is fine: the next question gets the next turn
    let (events, _) = ask_timed(&server, "How many artworks are there?").await;
    let answer = common_checks(&events);
    assert_eq!(answer.status, AnswerStatus::Answered as i32, "{answer:?}");
    assert_eq!(answer.text, "Recovered.");
    assert_eq!(model.requests().len(), 4);
    server.stop().await;
}

#[tokio::test]
async fn a_model_that_never_answers_fails_at_the_model_timeout() {
    let model = ScriptedServer::start(vec![ScriptedTurn::text("too late").with_delay(STALL)]).await;
    // the per-question deadline (60 s) is far away: the model's own timeout
    // ends the wait, so the status is FAILED, not LIMIT_REACHED
    let server =
        TestServer::with_model(&model, "[model]\ntimeout_secs = 1\nmax_retries = 2\n").await;
    let (events, elapsed) = ask_timed(&server, "How many artworks are there?").await;

    assert_eq!(
        event_kinds(&events),
        ["started", "route", "answer_delta", "final_answer", "usage"]
    );
    let answer = common_checks(&events);
    assert_eq!(answer.status, AnswerStatus::Failed as i32, "{answer:?}");
    assert!(
        answer
            .text
            .contains(&failure_note("model request timed out after 1s")),
        "{}",
        answer.text
    );
    assert!(!answer.text.contains("too late"), "{}", answer.text);
    assert!(
        elapsed >= Duration::from_secs(1),
        "ended before the timeout: {elapsed:?}"
    );
    // a timeout is not retried: the deadline covers the retries too
    assert_eq!(model.requests().len(), 1);
    let u = usage_of(&events);
    assert_eq!(call_tokens(&u.calls), [(1, 0, 0, 0)], "{u:?}");
    assert!(u.calls[0].elapsed_ms >= 1000, "{u:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_retry_after_beyond_the_timeout_fails_at_once_with_the_rate_limit() {
    // the one deadline covers the wait between attempts: a Retry-After far
    // beyond it is not waited out, and the answer says the model was rate
    // limited (and for how long), not that it timed out
    let model = ScriptedServer::start(vec![
        ScriptedTurn::rate_limited(STALL.as_secs()),
        ScriptedTurn::text("too late"),
    ])
    .await;
    let server =
        TestServer::with_model(&model, "[model]\ntimeout_secs = 1\nmax_retries = 2\n").await;
    let (events, _) = ask_timed(&server, "How many artworks are there?").await;

    let answer = common_checks(&events);
    assert_eq!(answer.status, AnswerStatus::Failed as i32, "{answer:?}");
    assert!(
        answer.text.contains(&failure_note(&format!(
            "model endpoint answered http 429: rate limit reached for requests (retry after {}s)",
            STALL.as_secs()
        ))),
        "{}",
        answer.text
    );
    assert_eq!(model.requests().len(), 1, "the retry was never sent");
    assert_eq!(model.remaining(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_chunk_keeps_what_was_streamed_and_is_not_retried() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::raw_events([
            chunk(
                json!({"role": "assistant", "content": "The collection holds "}),
                None,
            ),
            r#"{"id": "chatcmpl-raw", "choices": [{"delta": "#.to_string(),
            chunk(json!({"content": "never shown"}), None),
            chunk(json!({}), Some("stop")),
            "[DONE]".to_string(),
        ]),
        ScriptedTurn::text("never asked for"),
    ])
    .await;
    let server = TestServer::with_model(&model, "[model]\nmax_retries = 2\n").await;
    let (events, _) = ask_timed(&server, "How many artworks are there?").await;

    assert_eq!(
        event_kinds(&events),
        ["started", "route", "answer_delta", "final_answer", "usage"]
    );
    let answer = common_checks(&events);
    assert_eq!(answer.status, AnswerStatus::Failed as i32, "{answer:?}");
    // the delta already streamed stays, followed by the note
    assert!(
        answer.text.starts_with("The collection holds \n\n"),
        "{}",
        answer.text
    );
    assert!(
        answer
            .text
            .contains("(The model call failed: malformed model response: cannot parse "),
        "{}",
        answer.text
    );
    assert!(!answer.text.contains("never shown"), "{}", answer.text);
    assert_eq!(model.requests().len(), 1, "a broken stream is not retried");
    assert_eq!(model.remaining(), 1);
    assert_eq!(usage_of(&events).model_calls, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_stream_that_stalls_part_way_keeps_what_was_streamed_and_is_not_retried() {
    // the first chunk (with content) comes at once, the next after STALL
    let model = ScriptedServer::start(vec![
        ScriptedTurn::raw_events([
            chunk(
                json!({"role": "assistant", "content": "The collection holds "}),
                None,
            ),
            chunk(json!({"content": "never shown"}), None),
            chunk(json!({}), Some("stop")),
            "[DONE]".to_string(),
        ])
        .with_chunk_delay(STALL),
        ScriptedTurn::text("never asked for"),
    ])
    .await;
    let server =
        TestServer::with_model(&model, "[model]\ntimeout_secs = 1\nmax_retries = 2\n").await;
    let (events, elapsed) = ask_timed(&server, "How many artworks are there?").await;

    assert_eq!(
        event_kinds(&events),
        ["started", "route", "answer_delta", "final_answer", "usage"]
    );
    let answer = common_checks(&events);
    assert_eq!(answer.status, AnswerStatus::Failed as i32, "{answer:?}");
    assert_eq!(
        answer.text,
        format!(
            "The collection holds \n\n{}",
            failure_note("model request timed out after 1s")
        )
    );
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(model.requests().len(), 1, "a broken stream is not retried");
    assert_eq!(model.remaining(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_server_error_after_a_tool_call_fails_and_keeps_the_tool_result() {
    let internal = || {
        ScriptedTurn::error(
            500,
            r#"{"error": {"message": "internal failure", "type": "server_error"}}"#,
        )
    };
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new("query_database", COUNT_SQL).with_id("call_count"),
        ])
        .with_usage(1000, 20),
        internal(),
        internal(),
        ScriptedTurn::text("never asked for"),
    ])
    .await;
    let server = TestServer::with_model(&model, "[model]\nmax_retries = 1\n").await;
    let (events, _) = ask_timed(&server, "How many artworks are there?").await;

    assert_eq!(
        event_kinds(&events),
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
    let answer = common_checks(&events);
    assert_eq!(answer.status, AnswerStatus::Failed as i32, "{answer:?}");
    assert_eq!(
        answer.text,
        format!(
            "\n\n{}",
            failure_note("model endpoint answered http 500: internal failure")
        )
    );
    // the tool result reached the client before the failure
    let results = tool_results(&events);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].call_id, "call_count");
    assert_eq!(int_cell(&results[0]), SLICE_LINES as i64);
    // Step 1's citation stays on the failed answer. That is right: a citation
    // says which tool call produced data the client was shown, and that call
    // ran and its result was streamed; a client showing the failure can still
    // point at the rows fetched. It is what the time limit does too (agent.rs).
    let cited: Vec<&str> = answer
        .citations
        .iter()
        .map(|c| c.call_id.as_str())
        .collect();
    assert_eq!(cited, ["call_count"]);

    // step 2 was sent with the tool result, retried once, unchanged
    let requests = model.requests();
    assert_eq!(requests.len(), 3, "step 1, step 2 and its one retry");
    assert_eq!(requests[1], requests[2]);
    let tool_messages: Vec<&serde_json::Value> = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tool_messages.len(), 1);
    assert_eq!(tool_messages[0]["tool_call_id"], "call_count");
    assert_eq!(model.remaining(), 1);

    let u = usage_of(&events);
    assert_eq!((u.model_calls, u.tool_calls), (2, 1), "{u:?}");
    assert_eq!(call_tokens(&u.calls), [(1, 1000, 20, 1020), (2, 0, 0, 0)]);
    assert_eq!(u.total_tokens, 1020);
    // step 2's one call covers its retry and the 100 ms backoff before it
    assert!(u.calls[1].elapsed_ms >= 100, "{u:?}");
    server.stop().await;
}
