//! Tools in another process: with `server.sql_url` set, the orchestrator
//! sends its SQL tool calls over the network to that server (which checks
//! the forwarded token itself) instead of calling the SQL tool of its own
//! process, as one Deployment per role runs on Kubernetes; without it the
//! calls stay in process. Either way the model sees the same results.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::AnswerStatus;
use quarry_tests::{
    Options, TestServer, answer_deltas, ask, ask_all, authed, event_kinds, final_answer,
    first_tool_result, int_cell, token,
};

const COUNT_SQL: &str = "SELECT count(*) AS n FROM tate.artworks";

async fn count_artworks(server: &TestServer) -> i64 {
    let db = server.db.pool().get().await.unwrap();
    db.query_one(COUNT_SQL, &[]).await.unwrap().get(0)
}

/// Empties `server`'s own artworks, to tell its database from another's.
async fn empty_artworks(server: &TestServer) {
    let db = server.db.pool().get().await.unwrap();
    db.batch_execute("TRUNCATE tate.artworks CASCADE")
        .await
        .unwrap();
}

fn count_then_answer() -> Vec<ScriptedTurn> {
    vec![
        ScriptedTurn::tool_call("query_database", format!(r#"{{"sql": "{COUNT_SQL}"}}"#)),
        ScriptedTurn::text("Counted."),
    ]
}

#[tokio::test]
async fn sql_url_sends_sql_tool_calls_to_that_server() {
    let sql_role = TestServer::start(Options::default()).await;
    let model = ScriptedServer::start(count_then_answer()).await;
    let orchestrator = TestServer::with_model(
        &model,
        &format!("[server]\nsql_url = \"{}\"\n", sql_role.url()),
    )
    .await;
    // Tell the two databases apart: the orchestrator's own has no artworks.
    empty_artworks(&orchestrator).await;
    let remote_count = count_artworks(&sql_role).await;
    assert!(remote_count > 0);

    let events = ask_all(&orchestrator, ask("How many artworks are there?"))
        .await
        .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    assert_eq!(
        int_cell(&first_tool_result(&events)),
        remote_count,
        "the count comes from the SQL role's database"
    );
}

#[tokio::test]
async fn without_sql_url_the_sql_tool_of_this_process_answers() {
    let model = ScriptedServer::start(count_then_answer()).await;
    let server = TestServer::with_model(&model, "").await;
    let expected = count_artworks(&server).await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    assert_eq!(int_cell(&first_tool_result(&events)), expected);
}

#[tokio::test]
async fn an_unreachable_sql_role_ends_the_ask_unavailable_saying_why() {
    // Port 9 (discard) on loopback: nothing listens, connections are refused.
    let model = ScriptedServer::start(count_then_answer()).await;
    let orchestrator =
        TestServer::with_model(&model, "[server]\nsql_url = \"http://127.0.0.1:9\"\n").await;
    let mut stream = orchestrator
        .assistant()
        .ask(authed(ask("How many artworks are there?"), &token("t1")))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    let status = loop {
        match stream.message().await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => panic!("the ask ended OK: {events:?}"),
            Err(status) => break status,
        }
    };
    // a dependency that is down: UNAVAILABLE (retryable), not OK with a
    // failed answer; what was streamed before stays streamed
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("SqlService"), "{status:?}");
    let text = answer_deltas(&events).concat();
    assert!(
        text.contains("could not read the database schema") && text.contains("connect"),
        "{text}"
    );
    assert!(
        !event_kinds(&events).contains(&"final_answer"),
        "{events:?}"
    );
    assert_eq!(model.request_count(), 0, "no model call without a schema");
}

#[tokio::test]
async fn the_rate_limit_counts_the_callers_requests_not_the_asks_tool_calls() {
    // One request per second, no burst: the Ask takes the tenant's one cell;
    // its DescribeSchema and ExecuteSql calls to the tool in this process
    // must not be refused for it.
    let model = ScriptedServer::start(count_then_answer()).await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        rate_limit: Some((1, 1)),
        ..Options::default()
    })
    .await;
    let events = ask_all(&server, ask("How many artworks are there?"))
        .await
        .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    assert!(int_cell(&first_tool_result(&events)) > 0);
}

/// `quarry serve --role sql` in one server and `--role assistant` in
/// another (with `server.sql_url`): the split ARCHITECTURE.md promises. Each
/// serves only its own role's service, and an Ask on the assistant is
/// answered from the SQL role's database.
#[tokio::test]
async fn an_assistant_role_and_a_sql_role_in_two_servers_answer_an_ask() {
    use quarry_proto::v1::{AskRequest, DescribeSchemaRequest};
    use quarry_server::{Role, Roles};
    use quarry_tests::{authed, token};

    let sql_role = TestServer::start(Options {
        roles: Some(Roles::of([Role::Sql])),
        ..Options::default()
    })
    .await;
    let model = ScriptedServer::start(count_then_answer()).await;
    let assistant_role = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        extra_toml: format!("[server]\nsql_url = \"{}\"\n", sql_role.url()),
        roles: Some(Roles::of([Role::Assistant])),
        ..Options::default()
    })
    .await;
    empty_artworks(&assistant_role).await;
    let remote_count = count_artworks(&sql_role).await;
    assert!(remote_count > 0);

    let events = ask_all(&assistant_role, ask("How many artworks are there?"))
        .await
        .unwrap();
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    assert_eq!(int_cell(&first_tool_result(&events)), remote_count);

    // Each process serves its own role only.
    let err = assistant_role
        .sql()
        .describe_schema(authed(DescribeSchemaRequest::default(), &token("t1")))
        .await
        .expect_err("the assistant role serves no SqlService");
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    let err = sql_role
        .assistant()
        .ask(authed(
            AskRequest {
                question: "How many artworks are there?".to_owned(),
                ..AskRequest::default()
            },
            &token("t1"),
        ))
        .await
        .expect_err("the sql role serves no AssistantService");
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    assistant_role.stop().await;
    sql_role.stop().await;
}

/// An assistant role with neither the sql role beside it nor
/// `server.sql_url` has no way to answer: start-up fails saying so.
#[tokio::test]
async fn an_assistant_role_without_a_sql_role_or_url_does_not_start() {
    use quarry_server::{Role, Roles};

    let config = quarry_server::Config::from_toml_layers(&[&format!(
        "[auth]\njwt_secret = \"{}\"\n",
        quarry_tests::SECRET
    )])
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = quarry_server::serve(
        listener,
        config,
        Roles::of([Role::Assistant]),
        std::future::pending(),
    )
    .await
    .expect_err("start-up must fail");
    let err = format!("{err:#}");
    assert!(err.contains("server.sql_url"), "{err}");
}
