//! Router mode end to end, without a model: a real server with the Tate
//! summary kinds (built at start-up) and the `artworks` search collection
//! over the Tate slice. Golden SQL first; otherwise the classifier's route
//! (summaries, search, both or none) is the one route event, each pipeline's
//! calls stream as tool events, and the answer quotes what they found with
//! citations — or says why there is none. With a model behind the SQL tool,
//! router mode runs the SQL it writes (route `sql`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    AnswerStatus, AskMode, AskRequest, AskResponse, CitationKind, GetSummariesRequest,
    RouteDecided, SearchToolResult, SummaryToolResult, ToolResult, tool_result::Outcome,
    value::Kind,
};
use quarry_tests::{
    Options, SLICE_LINES, TestServer, ask, ask_all, authed, event_kinds, final_answer,
    route_decided, token, tool_calls_started, tool_results, usage_of,
};

/// A server with summaries and search, both ready.
async fn start() -> TestServer {
    let server = TestServer::start(Options {
        search: true,
        summaries: true,
        ..Default::default()
    })
    .await;
    quarry_tests::wait_until_summaries_built(&server).await;
    quarry_tests::wait_until_indexed(&server).await;
    server
}

/// The one route event, which must be in router mode.
fn router_route(events: &[AskResponse]) -> RouteDecided {
    let kinds = event_kinds(events);
    let routes = kinds.iter().filter(|k| **k == "route").count();
    assert_eq!(routes, 1, "one route event: {kinds:?}");
    let route = route_decided(events);
    assert_eq!(route.mode, AskMode::Router as i32, "{route:?}");
    route
}

/// The arguments of the tool call `call_id`, as JSON.
fn arguments(events: &[AskResponse], call_id: &str) -> serde_json::Value {
    let call = tool_calls_started(events)
        .into_iter()
        .find(|s| s.call_id == call_id)
        .unwrap_or_else(|| panic!("a tool call {call_id}"));
    serde_json::from_str(&call.arguments_json).unwrap()
}

fn summaries_of(result: &ToolResult) -> &SummaryToolResult {
    assert_eq!(result.tool_name, "get_summaries", "{result:?}");
    match &result.outcome {
        Some(Outcome::Summaries(found)) => found,
        other => panic!("a summaries outcome: {other:?}"),
    }
}

fn hits_of(result: &ToolResult) -> &SearchToolResult {
    assert_eq!(result.tool_name, "search_documents", "{result:?}");
    match &result.outcome {
        Some(Outcome::Search(found)) => found,
        other => panic!("a search outcome: {other:?}"),
    }
}

/// The stored text of the collection's summary, read independently.
async fn collection_summary_text(server: &TestServer) -> String {
    server
        .summaries()
        .get_summaries(authed(
            GetSummariesRequest {
                kind: "collection".into(),
                entity: "tate".into(),
                limit: 1,
                offset: 0,
            },
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner()
        .summaries
        .remove(0)
        .text
}

/// The text of every field of a hit, lowercased.
fn hit_text(hit: &quarry_proto::v1::SearchHit) -> String {
    hit.fields
        .values()
        .filter_map(|v| match &v.kind {
            Some(Kind::TextValue(s)) => Some(s.to_lowercase()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

const OFFLINE: &str = "Without a language model I can only return stored summaries and search hits";

#[tokio::test]
async fn a_trend_question_is_answered_from_summaries() {
    let server = start().await;

    // the collection named: looked up as an entity
    let events = ask_all(
        &server,
        ask("How has the share of works by women in the Tate collection changed over time?"),
    )
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
    let decided = router_route(&events);
    assert_eq!(decided.route, "summaries", "{decided:?}");
    for cue in [
        "no model is configured",
        "no golden question matched",
        "“how has”",
        "“changed”",
    ] {
        assert!(decided.reason.contains(cue), "{cue} in {}", decided.reason);
    }
    assert_eq!(
        arguments(&events, "call_1"),
        serde_json::json!({ "entity": "Tate" })
    );
    let results = tool_results(&events);
    let found = summaries_of(&results[0]);
    assert_eq!(found.summaries[0].id, "summary:collection:tate");
    let answer = final_answer(&events);
    assert_eq!(
        answer.status,
        AnswerStatus::Answered as i32,
        "{}",
        answer.text
    );
    assert!(
        answer
            .citations
            .iter()
            .any(|c| c.kind == CitationKind::Summary as i32
                && c.source_id == "summary:collection:tate"
                && c.call_id == "call_1"),
        "{:?}",
        answer.citations
    );
    let stored = collection_summary_text(&server).await;
    assert!(
        answer.text.contains(stored.trim()),
        "the summary verbatim:\n{}\n---\n{stored}",
        answer.text
    );
    assert!(
        answer
            .text
            .starts_with("From the stored summary of Tate collection (summary:collection:tate)"),
        "{}",
        answer.text
    );
    assert!(answer.text.contains(OFFLINE), "{}", answer.text);
    let used = usage_of(&events);
    assert_eq!((used.model_calls, used.tool_calls), (0, 1));

    // no name in the question: summaries searched by its words
    let events = ask_all(
        &server,
        ask("How have acquisitions by women changed over time?"),
    )
    .await
    .unwrap();
    assert_eq!(router_route(&events).route, "summaries");
    assert_eq!(
        arguments(&events, "call_1"),
        serde_json::json!({ "query": "acquisitions women", "limit": 3 })
    );
    let results = tool_results(&events);
    let found = summaries_of(results.last().unwrap());
    assert!(!found.summaries.is_empty(), "{results:?}");
    let answer = final_answer(&events);
    assert_eq!(
        answer.status,
        AnswerStatus::Answered as i32,
        "{}",
        answer.text
    );
    assert!(
        answer.text.contains(found.summaries[0].text.trim()),
        "{}",
        answer.text
    );
    let cited: Vec<&str> = answer
        .citations
        .iter()
        .map(|c| c.source_id.as_str())
        .collect();
    let returned: Vec<&str> = found.summaries.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(cited, returned, "every summary returned is cited");
    server.stop().await;
}

#[tokio::test]
async fn a_descriptive_question_is_answered_from_search() {
    let server = start().await;
    let events = ask_all(
        &server,
        ask("Show me works whose credit line mentions a widow"),
    )
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
    let decided = router_route(&events);
    assert_eq!(decided.route, "search", "{decided:?}");
    assert!(
        decided.reason.contains("“credit line mentions”"),
        "{}",
        decided.reason
    );
    let args = arguments(&events, "call_1");
    assert_eq!(args["collection"], "artworks");
    assert_eq!(
        args["query"], "widow",
        "cue words and generic nouns stripped"
    );
    let results = tool_results(&events);
    let found = hits_of(&results[0]);
    assert_eq!(found.hits.len(), 5, "{found:?}");
    for hit in &found.hits {
        assert!(
            hit_text(hit).contains("widow"),
            "hit {}: {}",
            hit.key,
            hit_text(hit)
        );
    }
    let answer = final_answer(&events);
    assert_eq!(
        answer.status,
        AnswerStatus::Answered as i32,
        "{}",
        answer.text
    );
    let documents: Vec<&str> = answer
        .citations
        .iter()
        .filter(|c| c.kind == CitationKind::Document as i32)
        .map(|c| c.source_id.as_str())
        .collect();
    let keys: Vec<String> = found
        .hits
        .iter()
        .map(|h| format!("artworks/{}", h.key))
        .collect();
    assert_eq!(documents, keys);
    assert!(
        answer
            .text
            .starts_with("Search hits in “artworks” for “widow”:"),
        "{}",
        answer.text
    );
    // each hit listed with its title, as the source has it
    let client = server.db.pool().get().await.unwrap();
    for hit in &found.hits {
        let title: String = client
            .query_one(
                "SELECT title FROM tate.artworks WHERE id = $1",
                &[&hit.key.parse::<i32>().unwrap()],
            )
            .await
            .unwrap()
            .get(0);
        let line = format!(
            "- {}: {}",
            hit.key,
            title.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        let shown: String = line.chars().take(200).collect();
        assert!(answer.text.contains(&shown), "{shown} in\n{}", answer.text);
    }
    assert!(answer.text.contains(OFFLINE), "{}", answer.text);
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn a_compound_question_runs_both_pipelines() {
    let server = start().await;
    let events = ask_all(
        &server,
        ask("William Blake's acquisition history, and any works whose credit line mentions a widow?"),
    )
    .await
    .unwrap();
    assert_eq!(
        quarry_tests::event_kinds(&events),
        [
            "started",
            "route",
            "tool_call_started",
            "tool_result",
            "tool_call_started",
            "tool_result",
            "answer_delta",
            "final_answer",
            "usage"
        ]
    );
    let decided = router_route(&events);
    assert_eq!(decided.route, "summaries+search", "{decided:?}");
    assert!(
        decided.reason.contains("“acquisition history”"),
        "{}",
        decided.reason
    );
    assert_eq!(
        arguments(&events, "call_1"),
        serde_json::json!({ "entity": "William Blake" })
    );
    assert_eq!(arguments(&events, "call_2")["query"], "widow");
    let results = tool_results(&events);
    let blake = &summaries_of(&results[0]).summaries[0];
    assert_eq!(blake.entity_name, "William Blake");
    let found = hits_of(&results[1]);
    assert!(!found.hits.is_empty());
    let answer = final_answer(&events);
    assert_eq!(
        answer.status,
        AnswerStatus::Answered as i32,
        "{}",
        answer.text
    );
    assert!(answer.text.contains(blake.text.trim()), "{}", answer.text);
    assert!(
        answer.text.contains("Search hits in “artworks”"),
        "{}",
        answer.text
    );
    let kinds_cited: Vec<(i32, &str)> = answer
        .citations
        .iter()
        .map(|c| (c.kind, c.call_id.as_str()))
        .collect();
    assert!(
        kinds_cited.contains(&(CitationKind::Summary as i32, "call_1")),
        "{kinds_cited:?}"
    );
    assert!(
        kinds_cited.contains(&(CitationKind::Document as i32, "call_2")),
        "{kinds_cited:?}"
    );
    assert_eq!(usage_of(&events).tool_calls, 2);
    server.stop().await;
}

#[tokio::test]
async fn a_golden_question_still_routes_to_golden_sql() {
    let server = start().await;
    let events = ask_all(
        &server,
        ask("How many artworks are in the Tate collection?"),
    )
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
    let decided = router_route(&events);
    assert_eq!(decided.route, "golden_sql", "{decided:?}");
    assert!(
        decided
            .reason
            .contains("How many artworks are in the Tate collection?"),
        "{}",
        decided.reason
    );
    let results = tool_results(&events);
    assert_eq!(results[0].tool_name, "query_database");
    assert!(
        matches!(results[0].outcome, Some(Outcome::Sql(_))),
        "{results:?}"
    );
    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Answered as i32);
    assert!(
        answer.text.contains(&SLICE_LINES.to_string()),
        "{}",
        answer.text
    );
    assert_eq!(answer.citations.len(), 1);
    assert_eq!(answer.citations[0].kind, CitationKind::SqlRows as i32);
    server.stop().await;
}

#[tokio::test]
async fn small_talk_is_unanswered_with_the_reason() {
    let server = start().await;
    let events = ask_all(&server, ask("hello there")).await.unwrap();
    assert_eq!(
        quarry_tests::event_kinds(&events),
        ["started", "route", "answer_delta", "final_answer", "usage"]
    );
    let decided = router_route(&events);
    assert_eq!(decided.route, "none", "{decided:?}");
    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Unanswered as i32);
    assert!(answer.citations.is_empty());
    for part in [
        "I can't answer this offline: no trend or descriptive cue, and no words to look up.",
        "No language model is configured",
        "The closest known question is",
    ] {
        assert!(answer.text.contains(part), "{part} in {}", answer.text);
    }

    // pipelines that ran and found nothing are named
    let events = ask_all(&server, ask("Show me works about zqxjv"))
        .await
        .unwrap();
    assert_eq!(router_route(&events).route, "search");
    let answer = final_answer(&events);
    assert_eq!(
        answer.status,
        AnswerStatus::Unanswered as i32,
        "{}",
        answer.text
    );
    assert!(
        answer
            .text
            .contains("Search: searching “artworks” for “zqxjv” found nothing."),
        "{}",
        answer.text
    );
    assert!(answer.citations.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn router_mode_with_a_model_runs_the_query_the_sql_tool_writes() {
    // with a model, the routing model (here the same `[model]`) chooses the
    // SQL pipeline for a sub-question, GenerateSql writes SQL for it; router
    // mode runs it, and names the route for what it is
    let model = ScriptedServer::start(vec![
        ScriptedTurn::text(
            serde_json::json!({
                "steps": [{"pipeline": "sql", "query": "How many artworks are there?", "entity": ""}],
                "reason": "a count"
            })
            .to_string(),
        ),
        ScriptedTurn::text(
        serde_json::json!({
            "sql": "SELECT count(*) AS artworks FROM tate.artworks",
            "tables_used": ["tate.artworks"],
            "assumptions": []
        })
        .to_string(),
        ),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        ..Default::default()
    })
    .await;
    let events = ask_all(
        &server,
        AskRequest {
            question: "Count the artworks".into(),
            mode: AskMode::Router as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let decided = router_route(&events);
    assert_eq!(decided.route, "sql", "{decided:?}");
    assert!(
        decided.reason.starts_with("router mode requested"),
        "{}",
        decided.reason
    );
    let answer = final_answer(&events);
    assert_eq!(
        answer.status,
        AnswerStatus::Answered as i32,
        "{}",
        answer.text
    );
    assert_eq!(
        answer.text,
        format!(
            "Result of the query the SQL tool wrote for “How many artworks are there?”: artworks = {SLICE_LINES}."
        )
    );
    let tasks: Vec<String> = usage_of(&events)
        .calls
        .into_iter()
        .map(|c| c.task)
        .collect();
    assert_eq!(
        tasks,
        ["routing", "sql"],
        "the routing call, then the SQL tool's"
    );
    assert_eq!(
        model.requests().len(),
        2,
        "one routing call, one generation, no judge on a dry run"
    );
    server.stop().await;
}

#[tokio::test]
async fn router_mode_can_stay_rules_only_with_a_model() {
    // `orchestrator.route_with_model = false`: no routing call; GenerateSql
    // (not golden-only) lets the SQL tool write SQL for the whole question
    let model = ScriptedServer::start(vec![ScriptedTurn::text(
        serde_json::json!({
            "sql": "SELECT count(*) AS artworks FROM tate.artworks",
            "tables_used": ["tate.artworks"],
            "assumptions": []
        })
        .to_string(),
    )])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        extra_toml: "[orchestrator]\nroute_with_model = false\n".into(),
        ..Default::default()
    })
    .await;
    let events = ask_all(
        &server,
        AskRequest {
            question: "Count the artworks".into(),
            mode: AskMode::Router as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(router_route(&events).route, "sql");
    assert_eq!(
        final_answer(&events).text,
        format!("Result of the query the SQL tool wrote: artworks = {SLICE_LINES}.")
    );
    let tasks: Vec<String> = usage_of(&events)
        .calls
        .into_iter()
        .map(|c| c.task)
        .collect();
    assert_eq!(tasks, ["sql"], "only the SQL tool's generation");
    assert_eq!(model.requests().len(), 1);
    server.stop().await;
}
