//! Lean context (issue 16): agentic mode sends the schema context schema
//! linking chooses for the question, within `schema_context_tokens`, and a
//! `describe_tables` tool for the rest; what a policy hides never reaches
//! the model through either.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{AnswerStatus, ExecuteSqlRequest, tool_result::Outcome, value::Kind};
use quarry_tests::{
    Options, TestServer, ask, ask_all, authed, final_answer, int_cell, token, token_with_roles,
    tool_results,
};
use serde_json::Value as Json;

/// The system message of the model's `n`th request.
fn system(model: &ScriptedServer, n: usize) -> String {
    model.requests()[n]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The schema context: the system message after its schema heading; empty
/// when there is none.
fn schema_context(system: &str) -> &str {
    let Some(start) = system.find("\n\nSchema for this question") else {
        return "";
    };
    let body = &system[start + 2..];
    &body[body.find('\n').unwrap() + 1..]
}

/// The contents of the tool messages of the model's `n`th request.
fn tool_messages(model: &ScriptedServer, n: usize) -> Vec<String> {
    model.requests()[n]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect()
}

/// Bytes of each request body the model received.
fn request_bytes(model: &ScriptedServer) -> Vec<usize> {
    model
        .requests()
        .iter()
        .map(|r: &Json| serde_json::to_vec(r).unwrap().len())
        .collect()
}

#[tokio::test]
async fn a_table_left_out_of_the_context_is_looked_up_with_describe_tables_and_answered() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("describe_tables", r#"{"tables": ["tate.subjects"]}"#),
        ScriptedTurn::tool_call(
            "query_database",
            r#"{"sql": "SELECT count(*) AS subjects FROM tate.subjects"}"#,
        ),
        ScriptedTurn::text("The collection knows of that many subjects."),
    ])
    .await;
    let server = TestServer::with_model(&model, "").await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);

    // the first context is about artworks and leaves subjects out
    let first = system(&model, 0);
    let context = schema_context(&first);
    assert!(context.contains("tate.artworks("), "{context}");
    assert!(!context.contains("tate.subjects("), "{context}");
    // the second request holds what the model looked up
    let looked_up = tool_messages(&model, 1);
    assert_eq!(looked_up.len(), 1, "{looked_up:?}");
    assert!(
        looked_up[0].contains("tate.subjects(id int PK") && looked_up[0].contains(", name text"),
        "{looked_up:?}"
    );
    // and the count it then asked for is the database's
    let results = tool_results(&events);
    let Some(Outcome::Schema(described)) = &results[0].outcome else {
        panic!("a schema outcome: {:?}", results[0])
    };
    assert_eq!(described.tables.len(), 1);
    assert_eq!(described.tables[0].name, "subjects");
    let count = int_cell(&results[1]);
    let response = server
        .sql()
        .execute_sql(authed(
            ExecuteSqlRequest {
                sql: "SELECT count(*) FROM tate.subjects".into(),
                ..Default::default()
            },
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    let sql_count = match response.result.unwrap().rows[0].values[0].kind {
        Some(Kind::Int64Value(n)) => n,
        ref other => panic!("an integer count: {other:?}"),
    };
    assert_eq!(count, sql_count);
    assert!(count > 0, "the slice has subjects");
    println!("prompt bytes per call: {:?}", request_bytes(&model));
    println!(
        "FIRST {}",
        serde_json::to_string_pretty(&model.requests()[0]).unwrap()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_table_hidden_by_policy_is_never_in_the_context_nor_described() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call(
            "describe_tables",
            r#"{"tables": ["tate.movements", "tate.artists", "tate.artist_movements"]}"#,
        ),
        ScriptedTurn::text("I cannot see movements."),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        extra_toml: r#"
            [policy.roles.narrow]
            scopes = ["ask", "sql:query"]
            tables = ["tate.artists", "tate.artworks"]
            deny_columns = ["tate.artists.gender"]
        "#
        .into(),
        ..Options::default()
    })
    .await;
    let token = token_with_roles("t1", "ann", &["narrow"], &[]);
    // a question about the hidden table itself, by name
    let events = quarry_tests::ask_all_as(
        &server,
        ask("How many movements are there, and which artists belong to each movement?"),
        &token,
    )
    .await
    .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    let first = system(&model, 0);
    let context = schema_context(&first);
    assert!(context.contains("tate.artists("), "{context}");
    for hidden in [
        "tate.movements",
        "tate.artist_movements",
        "gender text",
        "tate.subjects",
    ] {
        assert!(
            !context.contains(hidden),
            "{hidden} in the context: {context}"
        );
    }
    let described = tool_messages(&model, 1);
    assert_eq!(described.len(), 1, "{described:?}");
    assert!(described[0].contains("tate.artists("), "{described:?}");
    assert!(!described[0].contains("tate.movements("), "{described:?}");
    assert!(!described[0].contains("gender text"), "{described:?}");
    assert!(
        described[0].contains("not found or not available: tate.movements, tate.artist_movements"),
        "{described:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_schema_context_respects_its_token_budget() {
    // one ask each with a generous budget, a tight one and none (whole schema)
    let mut contexts = Vec::new();
    for budget in [400usize, 40, 0] {
        let model = ScriptedServer::start(vec![ScriptedTurn::text("No query needed.")]).await;
        let server = TestServer::with_model(
            &model,
            &format!("[orchestrator]\nschema_context_tokens = {budget}\n"),
        )
        .await;
        let question = "How many artworks by Turner were acquired after 1900, by movement?";
        ask_all(&server, ask(question)).await.unwrap();
        let context = schema_context(&system(&model, 0)).to_string();
        let tokens = context.chars().count().div_ceil(4);
        if budget > 0 {
            assert!(tokens <= budget, "{tokens} tokens over {budget}: {context}");
        }
        println!(
            "budget {budget}: {tokens} tokens of context, request {} bytes",
            request_bytes(&model)[0]
        );
        contexts.push(context);
        server.stop().await;
    }
    let [linked, tight, whole] = &contexts[..] else {
        unreachable!()
    };
    // the linked context has the tables the question needs, not all of them
    assert!(linked.contains("tate.artworks("), "{linked}");
    assert!(linked.contains("tate.movements("), "{linked}");
    assert!(!linked.contains("tate.subjects("), "{linked}");
    assert!(linked.len() * 2 < whole.len(), "{linked}\n---\n{whole}");
    // the tight budget keeps less
    assert!(tight.len() < linked.len(), "{tight}");
    // no budget: every table of the caller, whole
    for table in [
        "artists",
        "artworks",
        "subjects",
        "movements",
        "artwork_contributors",
    ] {
        assert!(
            whole.contains(&format!("tate.{table}(")),
            "{table}: {whole}"
        );
    }
}

/// The request bytes of each model call for Tate's simple count: the model
/// counts with `query_database`, then answers.
async fn simple_count_bytes(extra_toml: &str) -> Vec<usize> {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call(
            "query_database",
            r#"{"sql": "SELECT count(*) AS artworks FROM tate.artworks"}"#,
        ),
        ScriptedTurn::text("There are 300 artworks."),
    ])
    .await;
    let server = TestServer::with_model(&model, extra_toml).await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    server.stop().await;
    request_bytes(&model)
}

#[tokio::test]
async fn a_simple_count_sends_a_fraction_of_the_whole_schema_prompt() {
    let lean = simple_count_bytes("").await;
    let whole = simple_count_bytes("[orchestrator]\nschema_context_tokens = 0\n").await;
    println!("simple count, request bytes per call: linked {lean:?}, whole schema {whole:?}");
    assert_eq!((lean.len(), whole.len()), (2, 2));
    for (lean, whole) in lean.iter().zip(&whole) {
        assert!(
            lean * 3 < *whole,
            "{lean} bytes against {whole} with the whole schema"
        );
    }
}
