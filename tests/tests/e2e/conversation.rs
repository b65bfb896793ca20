//! Conversations end to end (issue 6, item 5): every Ask is a stored turn;
//! a follow-up with the same conversation id is read with the earlier turns
//! — by the scripted model in agentic mode (it is shown the earlier
//! questions, answers and SQL), by rules in router mode ("now only works
//! acquired after 2000", "top 5 only" rewrite the previous SQL); list, get
//! and delete; ownership by tenant and subject; retention.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::Duration;

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    AnswerStatus, AskMode, AskRequest, DeleteConversationRequest, GetConversationRequest,
    ListConversationsRequest, SqlToolResult, ask_response::Event, value::Kind,
};
use quarry_tests::{
    Options, TestServer, ask, ask_all, authed, conversation_id, final_answer, route_decided,
    sql_result, token,
};
use serde_json::Value as Json;
use tonic::Code;

fn token_for(tenant: &str, subject: &str) -> String {
    quarry_tests::token_with_roles(tenant, subject, &["tester"], &[])
}

fn follow_up(question: &str, conversation_id: &str) -> AskRequest {
    AskRequest {
        conversation_id: conversation_id.to_string(),
        ..ask(question)
    }
}

/// The `content` of every message of a model request, by role.
fn messages(request: &Json) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_string(),
                m["content"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Independent count of each medium's works, as `(medium, works)` in the
/// order of the golden query (most works first), for artworks matching `filter`.
async fn medium_counts(server: &TestServer, filter: &str, limit: u32) -> Vec<i64> {
    let rows = server
        .db
        .pool()
        .get()
        .await
        .unwrap()
        .query(
            &format!(
                "SELECT medium, count(*) AS works FROM tate.artworks WHERE medium IS NOT NULL AND {filter} GROUP BY medium ORDER BY works DESC LIMIT {limit}"
            ),
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get::<_, i64>(1)).collect()
}

fn counts_column(result: &SqlToolResult, column: usize) -> Vec<i64> {
    result
        .rows
        .as_ref()
        .unwrap()
        .rows
        .iter()
        .map(|r| match &r.values[column].kind {
            Some(Kind::Int64Value(n)) => *n,
            other => panic!("an integer count: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_three_turn_conversation_with_the_model_refines_the_previous_sql() {
    let first_sql = "SELECT title, acquisition_year FROM tate.artworks WHERE acquisition_year IS NOT NULL ORDER BY acquisition_year DESC, id LIMIT 50";
    let second_sql = "SELECT title, acquisition_year FROM tate.artworks WHERE acquisition_year IS NOT NULL AND acquisition_year > 2000 ORDER BY acquisition_year DESC, id LIMIT 50";
    let third_sql = "SELECT title, acquisition_year FROM tate.artworks WHERE acquisition_year IS NOT NULL AND acquisition_year > 2000 ORDER BY acquisition_year DESC, id LIMIT 10";
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call(
            "query_database",
            serde_json::json!({ "sql": first_sql }).to_string(),
        ),
        ScriptedTurn::text("Here are the most recent acquisitions."),
        ScriptedTurn::tool_call(
            "query_database",
            serde_json::json!({ "sql": second_sql }).to_string(),
        ),
        ScriptedTurn::text("These were acquired after 2000."),
        ScriptedTurn::tool_call(
            "query_database",
            serde_json::json!({ "sql": third_sql }).to_string(),
        ),
        ScriptedTurn::text("The ten most recent."),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        ..Default::default()
    })
    .await;

    let first = ask_all(&server, ask("Which works did Tate acquire most recently?"))
        .await
        .unwrap();
    assert_eq!(final_answer(&first).status, AnswerStatus::Answered as i32);
    let id = conversation_id(&first);
    let second = ask_all(
        &server,
        follow_up("now only works acquired after 2000", &id),
    )
    .await
    .unwrap();
    assert_eq!(conversation_id(&second), id, "the follow-up continues it");
    let third = ask_all(&server, follow_up("top 10 only", &id))
        .await
        .unwrap();
    assert_eq!(final_answer(&third).status, AnswerStatus::Answered as i32);
    let rows = sql_result(&third).rows.unwrap();
    assert!(rows.rows.len() <= 10, "{}", rows.rows.len());

    // what the model was shown: turn 1 alone; turn 2 after turn 1's question,
    // answer and SQL; turn 3 after both earlier turns
    let requests = model.requests();
    assert_eq!(requests.len(), 6);
    let first_request = messages(&requests[0]);
    assert_eq!(
        first_request.len(),
        2,
        "system and the question: {first_request:?}"
    );
    let second_request = messages(&requests[2]);
    let roles: Vec<&str> = second_request.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(
        second_request[1].1,
        "Which works did Tate acquire most recently?"
    );
    assert!(
        second_request[2]
            .1
            .contains("Here are the most recent acquisitions.")
    );
    assert!(
        second_request[2].1.contains(first_sql),
        "the earlier answer carries its SQL: {}",
        second_request[2].1
    );
    assert_eq!(second_request[3].1, "now only works acquired after 2000");
    assert!(second_request[0].1.contains("continues a conversation"));
    let third_request = messages(&requests[4]);
    let roles: Vec<&str> = third_request.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "user", "assistant", "user"]
    );
    assert!(third_request[4].1.contains(second_sql));
    assert_eq!(third_request[5].1, "top 10 only");

    // stored: three turns with their questions, tool calls, SQL, answers, usage
    let stored = server
        .assistant()
        .get_conversation(authed(
            GetConversationRequest {
                conversation_id: id.clone(),
            },
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    let summary = stored.conversation.unwrap();
    assert_eq!(summary.turn_count, 3);
    assert_eq!(summary.title, "Which works did Tate acquire most recently?");
    let turns = stored.turns;
    assert_eq!(turns.iter().map(|t| t.turn).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(turns[1].question, "now only works acquired after 2000");
    assert_eq!(turns[0].route, "agent");
    assert_eq!(turns[0].mode, AskMode::Agentic as i32);
    for (turn, sql) in turns.iter().zip([first_sql, second_sql, third_sql]) {
        assert_eq!(turn.tool_calls.len(), 1);
        assert_eq!(turn.tool_calls[0].tool_name, "query_database");
        assert_eq!(turn.tool_calls[0].sql, turn.sql);
        assert!(turn.tool_calls[0].error.is_empty());
        assert!(
            turn.sql.contains(&sql[sql.find("WHERE").unwrap()..]),
            "{} vs {sql}",
            turn.sql
        );
        assert_eq!(turn.status, AnswerStatus::Answered as i32);
        assert_eq!(turn.citations.len(), 1);
        let usage = turn.usage.as_ref().unwrap();
        assert_eq!(usage.model_calls, 2);
        assert_eq!(usage.tool_calls, 1);
    }
    assert_eq!(turns[2].answer, "The ten most recent.");
    assert_eq!(
        turns[2].tool_calls[0].result_count,
        u64::try_from(rows.rows.len()).unwrap()
    );
    server.stop().await;
}

#[tokio::test]
async fn router_mode_narrows_the_previous_sql_without_a_model() {
    let server = TestServer::start(Options::default()).await;
    let first = ask_all(&server, ask("What are the 10 most common mediums?"))
        .await
        .unwrap();
    assert_eq!(route_decided(&first).route, "golden_sql");
    let id = conversation_id(&first);

    let second = ask_all(
        &server,
        follow_up("Now only works acquired after 2000", &id),
    )
    .await
    .unwrap();
    assert_eq!(route_decided(&second).route, "refine_sql");
    assert_eq!(final_answer(&second).status, AnswerStatus::Answered as i32);
    let narrowed = sql_result(&second);
    assert!(
        narrowed.sql.contains("acquisition_year > 2000") && narrowed.sql.contains("LIMIT 10"),
        "{}",
        narrowed.sql
    );
    assert_eq!(
        counts_column(&narrowed, 1),
        medium_counts(&server, "acquisition_year > 2000", 10).await
    );

    let third = ask_all(&server, follow_up("top 5 only", &id))
        .await
        .unwrap();
    assert_eq!(route_decided(&third).route, "refine_sql");
    let top = sql_result(&third);
    assert!(
        top.sql.contains("acquisition_year > 2000") && top.sql.contains("LIMIT 5"),
        "the third turn narrows the second's SQL: {}",
        top.sql
    );
    assert_eq!(
        counts_column(&top, 1),
        medium_counts(&server, "acquisition_year > 2000", 5).await
    );

    // a follow-up the rules cannot apply says so and runs nothing:
    // tate.artworks has two creation-year columns
    let vague = ask_all(&server, follow_up("only those made after 1900", &id))
        .await
        .unwrap();
    assert_eq!(route_decided(&vague).route, "refine_sql");
    let answer = final_answer(&vague);
    assert_eq!(answer.status, AnswerStatus::Unanswered as i32);
    assert!(
        answer.text.contains("year_made") && answer.text.contains("year_made_end"),
        "{}",
        answer.text
    );
    assert!(
        !vague
            .iter()
            .any(|e| matches!(e.event, Some(Event::ToolCallStarted(_)))),
        "nothing ran"
    );

    let stored = server
        .assistant()
        .get_conversation(authed(
            GetConversationRequest {
                conversation_id: id.clone(),
            },
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    let routes: Vec<&str> = stored.turns.iter().map(|t| t.route.as_str()).collect();
    assert_eq!(
        routes,
        ["golden_sql", "refine_sql", "refine_sql", "refine_sql"]
    );
    assert_eq!(stored.turns[2].sql, top.sql);
    assert_eq!(stored.turns[0].mode, AskMode::Router as i32);
    server.stop().await;
}

#[tokio::test]
async fn conversations_belong_to_their_principal_and_can_be_listed_and_deleted() {
    let server = TestServer::start(Options::default()).await;
    let mut client = server.assistant();
    let owner = token("t1");
    let mut ids = Vec::new();
    for question in [
        "How many artworks are in the Tate collection?",
        "What are the 10 most common mediums?",
        "How many works did Tate acquire in each decade?",
    ] {
        ids.push(conversation_id(
            &ask_all(&server, ask(question)).await.unwrap(),
        ));
    }

    // list, most recent first, two pages
    let page = client
        .list_conversations(authed(
            ListConversationsRequest {
                page_size: 2,
                page_token: String::new(),
            },
            &owner,
        ))
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<&str> = page
        .conversations
        .iter()
        .map(|c| c.conversation_id.as_str())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);
    assert!(!page.next_page_token.is_empty());
    let rest = client
        .list_conversations(authed(
            ListConversationsRequest {
                page_size: 2,
                page_token: page.next_page_token,
            },
            &owner,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.conversations.len(), 1);
    assert_eq!(rest.conversations[0].conversation_id, ids[0]);
    assert_eq!(
        rest.conversations[0].title,
        "How many artworks are in the Tate collection?"
    );
    assert!(rest.next_page_token.is_empty());

    // someone else — another tenant, or another subject of the same tenant —
    // sees nothing and can neither read, continue nor delete it
    for stranger in [token("t2"), token_for("t1", "someone-else")] {
        let listed = client
            .list_conversations(authed(ListConversationsRequest::default(), &stranger))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.conversations.is_empty());
        let get = client
            .get_conversation(authed(
                GetConversationRequest {
                    conversation_id: ids[0].clone(),
                },
                &stranger,
            ))
            .await
            .unwrap_err();
        assert_eq!(get.code(), Code::NotFound, "{get:?}");
        let delete = client
            .delete_conversation(authed(
                DeleteConversationRequest {
                    conversation_id: ids[0].clone(),
                },
                &stranger,
            ))
            .await
            .unwrap_err();
        assert_eq!(delete.code(), Code::NotFound);
        let continued = client
            .ask(authed(follow_up("top 5 only", &ids[0]), &stranger))
            .await
            .unwrap_err();
        assert_eq!(continued.code(), Code::NotFound);
    }

    // bad ids are refused by field
    let bad = client
        .get_conversation(authed(
            GetConversationRequest {
                conversation_id: "nope".into(),
            },
            &owner,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad_token = client
        .list_conversations(authed(
            ListConversationsRequest {
                page_size: 0,
                page_token: "garbage".into(),
            },
            &owner,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    let unknown = ask_all(
        &server,
        follow_up("top 5 only", &uuid::Uuid::new_v4().to_string()),
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("leave conversation_id empty"));

    // delete: gone for reading and for follow-ups
    let deleted = client
        .delete_conversation(authed(
            DeleteConversationRequest {
                conversation_id: ids[0].clone(),
            },
            &owner,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.turns_deleted, 1);
    let gone = client
        .get_conversation(authed(
            GetConversationRequest {
                conversation_id: ids[0].clone(),
            },
            &owner,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let gone = ask_all(&server, follow_up("top 5 only", &ids[0]))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn expired_conversations_are_invisible_and_purged() {
    let server = TestServer::start(Options {
        extra_toml: "[orchestrator]\nconversation_retention_days = 7\n".into(),
        ..Default::default()
    })
    .await;
    let old = conversation_id(
        &ask_all(
            &server,
            ask("How many artworks are in the Tate collection?"),
        )
        .await
        .unwrap(),
    );
    let fresh = conversation_id(
        &ask_all(&server, ask("What are the 10 most common mediums?"))
            .await
            .unwrap(),
    );
    let db = server.db.pool().get().await.unwrap();
    db.execute(
        "UPDATE quarry.conversations SET updated_at = now() - interval '8 days' WHERE id = $1::text::uuid",
        &[&old],
    )
    .await
    .unwrap();

    let mut client = server.assistant();
    let listed = client
        .list_conversations(authed(ListConversationsRequest::default(), &token("t1")))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed
        .conversations
        .iter()
        .map(|c| c.conversation_id.as_str())
        .collect();
    assert_eq!(ids, [fresh.as_str()]);
    let expired = ask_all(&server, follow_up("top 5 only", &old))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::NotFound);

    // the purge deletes it (and its turns) but keeps the fresh one
    let pool = quarry_db::pool(server.db.url(), 2, Duration::from_secs(5)).unwrap();
    let store = quarry_orchestrator::conversation::ConversationStore::new(pool, 7);
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    let left: i64 = db
        .query_one("SELECT count(*) FROM quarry.conversation_turns", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "only the fresh conversation's turn is left");
    server.stop().await;
}
