//! `GenerateSql` end to end with the scripted model: schema linking,
//! structured output, validation, execution, the judge, and retries with a
//! scratchpad; `ExplainSql` and `AddGoldenPair`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    AddGoldenPairRequest, AnswerStatus, AskMode, AttemptStage, ExplainSqlRequest,
    ExplanationSource, GenerateSqlRequest, SqlSource, ask_response::Event, tool_result::Outcome,
    value::Kind,
};
use quarry_tests::{
    Options, SLICE_LINES, TestServer, ask, ask_all, authed, first_tool_result, token,
};
use tonic::Code;

fn sql_reply(sql: &str) -> ScriptedTurn {
    ScriptedTurn::text(
        serde_json::json!({"sql": sql, "tables_used": ["tate.artworks"], "assumptions": ["counts every artwork"]})
            .to_string(),
    )
}

fn verdict(ok: bool, problem: &str) -> ScriptedTurn {
    ScriptedTurn::text(serde_json::json!({"answers_question": ok, "problem": problem}).to_string())
}

fn generate(question: &str) -> GenerateSqlRequest {
    GenerateSqlRequest {
        question: question.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_refused_query_is_retried_with_the_scratchpad_until_it_validates() {
    let model = ScriptedServer::start(vec![
        sql_reply("DELETE FROM tate.artworks"),
        sql_reply("SELECT count(*) AS artworks FROM tate.artworks"),
        verdict(true, ""),
    ])
    .await;
    let server = TestServer::with_model(&model, "").await;
    let response = server
        .sql()
        .generate_sql(authed(
            generate("How many artworks are there?"),
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.source, SqlSource::Model as i32);
    let stages: Vec<i32> = response.attempts.iter().map(|a| a.stage).collect();
    assert_eq!(
        stages,
        [AttemptStage::Validate as i32, AttemptStage::Accepted as i32]
    );
    assert!(
        response.attempts[0].error.contains("refused"),
        "{:?}",
        response.attempts[0]
    );
    assert_eq!(
        response.sql,
        "SELECT count(*) AS artworks FROM tate.artworks"
    );
    let rows = response.result.unwrap();
    assert_eq!(
        rows.rows[0].values[0].kind,
        Some(Kind::Int64Value(SLICE_LINES as i64))
    );
    assert_eq!(response.assumptions, ["counts every artwork"]);
    assert!(response.digest.is_some());
    let linking = response.linking.unwrap();
    assert!(
        linking.tables.iter().any(|t| t == "tate.artworks"),
        "{:?}",
        linking.tables
    );

    let requests = model.requests();
    assert_eq!(requests.len(), 3, "generate, generate again, judge");
    assert_eq!(requests[0]["response_format"]["type"], "json_schema");
    let system = requests[0]["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("tate.artworks"),
        "linked schema missing: {system}"
    );
    assert!(
        system.contains("Examples of questions"),
        "few-shot golden pairs missing: {system}"
    );
    let retry = requests[1]["messages"][1]["content"].as_str().unwrap();
    assert!(
        retry.contains("Scratchpad") && retry.contains("DELETE FROM tate.artworks"),
        "{retry}"
    );
    let judge = requests[2]["messages"][1]["content"].as_str().unwrap();
    assert!(
        judge.contains("How many artworks are there?") && judge.contains("300"),
        "{judge}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_judge_sends_an_empty_result_back_for_another_attempt() {
    let model = ScriptedServer::start(vec![
        sql_reply("SELECT title FROM tate.artworks WHERE acquisition_year < 0"),
        verdict(
            false,
            "the result is empty; works were acquired in positive years",
        ),
        sql_reply("SELECT title FROM tate.artworks ORDER BY acquisition_year LIMIT 5"),
        verdict(true, ""),
    ])
    .await;
    let server = TestServer::with_model(&model, "").await;
    let response = server
        .sql()
        .generate_sql(authed(
            generate("Which works were acquired first?"),
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    let stages: Vec<i32> = response.attempts.iter().map(|a| a.stage).collect();
    assert_eq!(
        stages,
        [AttemptStage::Judge as i32, AttemptStage::Accepted as i32]
    );
    assert_eq!(response.attempts[0].row_count, 0);
    assert!(response.attempts[0].error.contains("empty"));
    assert_eq!(response.result.unwrap().rows.len(), 5);
    let scratchpad = model.requests()[2]["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        scratchpad.contains("judge") && scratchpad.contains("acquisition_year < 0"),
        "{scratchpad}"
    );
    server.stop().await;
}

#[tokio::test]
async fn without_structured_output_sql_is_extracted_from_text_and_still_validated() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::text("Sure:\n```sql\nDROP TABLE tate.artworks;\n```"),
        ScriptedTurn::text("Here you go:\n```sql\nSELECT count(*) FROM tate.artists;\n```"),
    ])
    .await;
    let server =
        TestServer::with_model(&model, "[sql]\nstructured_output = false\njudge = false\n").await;
    let response = server
        .sql()
        .generate_sql(authed(generate("How many artists?"), &token("t1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.attempts.len(), 2);
    assert_eq!(response.attempts[0].stage, AttemptStage::Validate as i32);
    assert_eq!(response.sql, "SELECT count(*) FROM tate.artists");
    let requests = model.requests();
    assert!(
        requests[0].get("response_format").is_none(),
        "{}",
        requests[0]
    );
    // the table survived
    let client = server.db.pool().get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM tate.artworks", &[])
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn attempts_run_out_and_say_so() {
    let model = ScriptedServer::start(vec![
        sql_reply("SELECT nope FROM tate.artworks"),
        sql_reply("SELECT still_nope FROM tate.artworks"),
    ])
    .await;
    let server = TestServer::with_model(&model, "[sql]\nmax_attempts = 2\n").await;
    let response = server
        .sql()
        .generate_sql(authed(generate("How many artworks?"), &token("t1")))
        .await
        .unwrap()
        .into_inner();
    assert!(response.sql.is_empty());
    assert!(
        response.explanation.contains("2 attempts"),
        "{}",
        response.explanation
    );
    assert!(
        response
            .attempts
            .iter()
            .all(|a| a.stage == AttemptStage::Execute as i32)
    );
    assert!(
        response.attempts[0].error.contains("nope"),
        "{:?}",
        response.attempts[0]
    );
    server.stop().await;
}

#[tokio::test]
async fn agentic_question_goes_through_generate_sql_and_the_trail_is_streamed() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("query_database", r#"{"question": "number of artworks"}"#),
        sql_reply("SELECT count(*) AS artworks FROM tate.artworks"),
        verdict(true, ""),
        ScriptedTurn::text("There are 300 artworks."),
    ])
    .await;
    let server = TestServer::with_model(&model, "").await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    let result = first_tool_result(&events);
    let Some(Outcome::Sql(sql)) = result.outcome else {
        panic!("{result:?}")
    };
    assert_eq!(sql.attempts.len(), 1);
    assert_eq!(sql.attempts[0].stage, AttemptStage::Accepted as i32);
    assert!(sql.digest.is_some());
    let last = events.iter().rev().find_map(|e| match &e.event {
        Some(Event::FinalAnswer(f)) => Some(f.clone()),
        _ => None,
    });
    assert_eq!(last.unwrap().status, AnswerStatus::Answered as i32);
    let Some(Event::Route(route)) = &events[1].event else {
        panic!()
    };
    assert_eq!(route.mode, AskMode::Agentic as i32);
    server.stop().await;
}

#[tokio::test]
async fn explain_without_a_model_describes_the_query_from_its_syntax_tree() {
    let server = TestServer::start(Options::default()).await;
    let response = server
        .sql()
        .explain_sql(authed(
            ExplainSqlRequest {
                sql: "SELECT a.name, count(*) FROM tate.artists a JOIN tate.artwork_contributors c ON c.artist_id = a.id \
                      GROUP BY a.name ORDER BY count(*) DESC"
                    .into(),
            },
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.source, ExplanationSource::SyntaxTree as i32);
    assert!(
        response.explanation.contains("artists"),
        "{}",
        response.explanation
    );
    assert!(response.total_cost > 0.0);
    assert!(!response.node_types.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_golden_pair_is_stored_only_when_it_validates_and_returns_rows() {
    let server = TestServer::start(Options::default()).await;
    let mut sql = server.sql();
    let t = quarry_tests::token_with_scopes("t1", &["golden:write"]);
    let add = |question: &str, sql: &str| AddGoldenPairRequest {
        question: question.into(),
        sql: sql.into(),
    };
    let no_scope = sql
        .add_golden_pair(authed(
            add("How many artworks?", "SELECT count(*) FROM tate.artworks"),
            &token("t1"),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        no_scope.code(),
        Code::PermissionDenied,
        "{}",
        no_scope.message()
    );
    let refused = sql
        .add_golden_pair(authed(add("Drop it", "DROP TABLE tate.artworks"), &t))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let empty = sql
        .add_golden_pair(authed(
            add(
                "Works from year minus one",
                "SELECT id FROM tate.artworks WHERE acquisition_year = -1",
            ),
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("no rows"), "{}", empty.message());
    let stored = sql
        .add_golden_pair(authed(
            add(
                "How many distinct mediums are recorded?",
                "SELECT count(DISTINCT medium) AS mediums FROM tate.artworks",
            ),
            &t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.row_count, 1);
    // router mode answers it from now on
    let events = ask_all(&server, ask("how many distinct mediums are recorded"))
        .await
        .unwrap();
    let answered = events.iter().any(|e| matches!(&e.event, Some(Event::FinalAnswer(f)) if f.status == AnswerStatus::Answered as i32));
    assert!(answered, "{events:?}");
    server.stop().await;
}
