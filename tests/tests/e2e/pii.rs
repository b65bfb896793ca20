//! Personal data stays out of prompts (issue 13): PII-tagged columns and
//! detected e-mail addresses, phone numbers, cards and IBANs reach the model
//! only as per-request placeholders — in the question, the rows and the
//! digest — and the streamed answer shows the original values only to a
//! caller with `pii:read`. Over a real server and PostgreSQL, with the
//! scripted model answering with the placeholders it was sent. A
//! follow-up in a conversation sends the earlier turns (stored with the
//! original values for a `pii:read` caller) as placeholders too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::Duration;

use futures::StreamExt;
use quarry_llm::testing::{ScriptedServer, ScriptedToolCall, ScriptedTurn};
use quarry_proto::v1::{
    AskRequest, AskResponse, GetConversationRequest, tool_result::Outcome, value::Kind,
};
use quarry_tests::{
    TestServer, answer_deltas, ask, authed, conversation_id, final_answer, token_with_roles,
    tool_results,
};
use serde_json::Value as Json;

/// Two roles over `tate.*` tagging artist names as PII; only `pii_reader`
/// may see personal data.
const PII_ROLES: &str = r#"
[policy.roles.pii_reader]
scopes = ["ask", "sql:query", "schema:read", "search", "summaries", "pii:read"]
tables = ["tate.*"]
pii = ["tate.artists.name"]
[policy.roles.pii_blind]
scopes = ["ask", "sql:query", "schema:read", "search", "summaries"]
tables = ["tate.*"]
pii = ["tate.artists.name"]
"#;

const EMAIL: &str = "jane.doe@example.com";
const PHONE: &str = "+44 20 7946 0958";
const CARD: &str = "4111 1111 1111 1111";
const IBAN: &str = "GB82 WEST 1234 5698 7654 32";

/// The artists the scripted model asks for.
const ARTISTS_SQL: &str = "SELECT name, birth_place FROM tate.artists ORDER BY id LIMIT 3";

/// Every `<LABEL_N>` in `text`, in order of first appearance.
fn placeholders(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for (start, _) in text.match_indices('<') {
        let rest = &text[start + 1..];
        let Some(end) = rest.find('>') else { continue };
        let inner = &rest[..end];
        let shaped = inner.rsplit_once('_').is_some_and(|(label, n)| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
        });
        let placeholder = format!("<{inner}>");
        if shaped && !found.contains(&placeholder) {
            found.push(placeholder);
        }
    }
    found
}

/// How the scripted answer model asks for the artists.
#[derive(Debug, Clone, Copy)]
enum Query {
    /// `{"sql": ARTISTS_SQL}`: the rows come straight back.
    Sql,
    /// `{"question": "... <EMAIL_n> ..."}`: the SQL tool's own model writes
    /// SQL filtering on the placeholder, and its judge checks the rows.
    Question,
}

fn message_text(messages: &[Json], role: &str) -> String {
    messages
        .iter()
        .filter(|m| m["role"] == role)
        .filter_map(|m| m["content"].as_str())
        .collect()
}

/// The scripted models. The answer model first calls `query_database` as
/// `query` says, then answers repeating every placeholder it was sent in
/// the question and the tool result, cut into 3-character deltas (so
/// placeholders are split across deltas). The SQL tool's writer filters
/// birth places on the first placeholder of its question; its judge
/// accepts.
fn model_turn(body: &Json, query: Query) -> ScriptedTurn {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let system = message_text(&messages, "system");
    let user = message_text(&messages, "user");
    if system.starts_with("You translate questions") {
        let first = placeholders(&user).into_iter().next().unwrap_or_default();
        let sql = format!(
            "SELECT name, birth_place FROM tate.artists WHERE birth_place LIKE '%{first}%' ORDER BY id LIMIT 3"
        );
        return ScriptedTurn::text(
            serde_json::json!({ "sql": sql, "tables_used": ["tate.artists"], "assumptions": [] })
                .to_string(),
        );
    }
    if system.starts_with("You review SQL results") {
        return ScriptedTurn::text(r#"{"answers_question": true, "problem": ""}"#);
    }
    let tool = messages.iter().find(|m| m["role"] == "tool");
    let Some(tool) = tool else {
        let arguments = match query {
            Query::Sql => serde_json::json!({ "sql": ARTISTS_SQL }),
            Query::Question => {
                let email = placeholders(&user)
                    .into_iter()
                    .find(|p| p.starts_with("<EMAIL_"))
                    .unwrap_or_default();
                serde_json::json!({ "question": format!("Which artists were born near {email}?") })
            }
        };
        return ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new("query_database", arguments.to_string()).with_id("call_artists"),
        ]);
    };
    let result = tool["content"].as_str().unwrap_or_default();
    let answer = format!(
        "You wrote {}. The rows hold {}.",
        placeholders(&user).join(" "),
        placeholders(result).join(" ")
    );
    let chars: Vec<char> = answer.chars().collect();
    ScriptedTurn::text_chunks(chars.chunks(3).map(|c| c.iter().collect::<String>()))
}

async fn ask_as(server: &TestServer, role: &str, question: &str) -> Vec<AskResponse> {
    ask_request_as(server, role, ask(question)).await
}

async fn ask_request_as(server: &TestServer, role: &str, request: AskRequest) -> Vec<AskResponse> {
    let token = token_with_roles("t1", role, &[role], &[]);
    let mut stream = server
        .assistant()
        .ask(authed(request, &token))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("an event within 60 s")
    {
        events.push(event.unwrap());
    }
    events
}

/// Plants contact details in the first artist's birth place and returns the
/// names of the artists [`ARTISTS_SQL`] selects.
async fn plant(server: &TestServer) -> Vec<String> {
    let pool = quarry_db::pool(server.db.url(), 1, Duration::from_secs(5)).unwrap();
    let client = pool.get().await.unwrap();
    let place = format!("Contact: {EMAIL}, {PHONE}, card {CARD}, IBAN {IBAN}");
    client
        .execute(
            "UPDATE tate.artists SET birth_place = $1 WHERE id = (SELECT min(id) FROM tate.artists)",
            &[&place],
        )
        .await
        .unwrap();
    let rows = client.query(ARTISTS_SQL, &[]).await.unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

/// The text cells of the first SQL result streamed to the client.
fn streamed_cells(events: &[AskResponse]) -> Vec<String> {
    let results = tool_results(events);
    let Some(Outcome::Sql(sql)) = results.first().and_then(|r| r.outcome.clone()) else {
        panic!("a sql tool result: {results:?}")
    };
    let rows = sql.rows.unwrap_or_default();
    rows.rows
        .iter()
        .flat_map(|r| r.values.iter())
        .filter_map(|v| match &v.kind {
            Some(Kind::TextValue(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

const LABELS: [&str; 5] = ["<EMAIL_", "<PHONE_", "<CARD_", "<IBAN_", "<NAME_"];

/// Asks, as a caller with `pii:read` and as one without, a question holding
/// contact details, while the model queries artists one of whom has them as
/// birth place; checks that no planted value reached the model and that
/// the answer shows them only to the first caller. The bodies the model
/// got for each `Ask` are `requests` of them (2, or 4 with the SQL tool's
/// writer and judge).
async fn check(query: Query, requests: usize) {
    let model = ScriptedServer::start_responder(move |body| model_turn(body, query)).await;
    let server = TestServer::with_model(&model, PII_ROLES).await;
    let names = plant(&server).await;
    assert_eq!(names.len(), 3, "{names:?}");
    let question = format!(
        "Which artists were born near {EMAIL}? Call me on {PHONE}; my card is {CARD} and my IBAN {IBAN}."
    );
    let mut planted: Vec<&str> = vec![EMAIL, PHONE, CARD, IBAN];
    planted.extend(names.iter().map(String::as_str));

    for (role, reveals) in [("pii_reader", true), ("pii_blind", false)] {
        let before = model.requests().len();
        let events = ask_as(&server, role, &question).await;
        let bodies = &model.requests()[before..];
        assert_eq!(bodies.len(), requests, "{role}: {bodies:#?}");

        // nothing planted is in any body a model was sent
        for body in bodies {
            let body = body.to_string();
            for value in &planted {
                assert!(
                    !body.contains(value),
                    "{role}: {value:?} sent to the model: {body}"
                );
            }
        }
        let answer = final_answer(&events).text;
        assert_eq!(answer_deltas(&events).concat(), answer, "{role}");
        let cells = streamed_cells(&events);
        match (query, reveals) {
            (Query::Question, false) => {
                // the SQL tool was asked about a placeholder: it finds nothing
                assert!(cells.is_empty(), "{role}: {cells:?}");
                assert!(answer.contains("<EMAIL_"), "{role}: {answer}");
                for value in &planted {
                    assert!(
                        !answer.contains(value),
                        "{role}: {value:?} revealed in {answer}"
                    );
                }
                continue;
            }
            (Query::Question, true) => {
                // the placeholder went back to the SQL tool as the address
                assert!(cells.contains(&names[0]), "{role}: {cells:?}");
                assert!(
                    cells.iter().any(|c| c.contains(EMAIL)),
                    "{role}: the rows streamed are the caller's own data: {cells:?}"
                );
            }
            (Query::Sql, _) => {
                for name in &names {
                    assert!(cells.contains(name), "{role}: {name:?} not in {cells:?}");
                }
            }
        }
        // the last body held the data, as placeholders
        let sent = bodies[requests - 1].to_string();
        for label in LABELS {
            assert!(sent.contains(label), "{role}: no {label} in {sent}");
        }
        let shown: Vec<&str> = match query {
            Query::Sql => planted.clone(),
            Query::Question => vec![EMAIL, PHONE, CARD, IBAN, names[0].as_str()],
        };
        if reveals {
            for value in shown {
                assert!(
                    answer.contains(value),
                    "{role}: {value:?} not restored in {answer}"
                );
            }
            assert!(placeholders(&answer).is_empty(), "{role}: {answer}");
        } else {
            for value in &planted {
                assert!(
                    !answer.contains(value),
                    "{role}: {value:?} revealed in {answer}"
                );
            }
            for label in LABELS {
                assert!(answer.contains(label), "{role}: no {label} in {answer}");
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn pii_in_the_question_and_the_rows_never_reaches_the_model_and_comes_back_only_for_pii_read()
{
    check(Query::Sql, 2).await;
}

#[tokio::test]
async fn the_sql_tools_own_models_see_placeholders_and_its_sql_runs_with_the_value() {
    check(Query::Question, 4).await;
}

/// The scripted answer model over a conversation. A first question goes
/// as in [`model_turn`] (`query_database` with [`ARTISTS_SQL`], then an
/// answer repeating the placeholders). A follow-up (more than one user
/// message) queries the artists again, then answers `Earlier: <the
/// placeholders of the earlier answers>. Now: <those of the rows>.`
fn conversation_turn(body: &Json) -> ScriptedTurn {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    if messages.iter().filter(|m| m["role"] == "user").count() < 2 {
        return model_turn(body, Query::Sql);
    }
    let Some(tool) = messages.iter().find(|m| m["role"] == "tool") else {
        let arguments = serde_json::json!({ "sql": ARTISTS_SQL });
        return ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new("query_database", arguments.to_string()).with_id("call_again"),
        ]);
    };
    let earlier = message_text(&messages, "assistant");
    let result = tool["content"].as_str().unwrap_or_default();
    let answer = format!(
        "Earlier: {}. Now: {}.",
        placeholders(&earlier).join(" "),
        placeholders(result).join(" ")
    );
    let chars: Vec<char> = answer.chars().collect();
    ScriptedTurn::text_chunks(chars.chunks(3).map(|c| c.iter().collect::<String>()))
}

/// The `<NAME_n>` placeholders of `text`, sorted.
fn name_placeholders(text: &str) -> Vec<String> {
    let mut names: Vec<String> = placeholders(text)
        .into_iter()
        .filter(|p| p.starts_with("<NAME_"))
        .collect();
    names.sort();
    names
}

/// A conversation of two turns, as a caller with `pii:read` and as one
/// without: the first answer names the artists (restored for the first
/// caller, and stored so); the follow-up types one name, and its model
/// calls get the earlier question, answer and the new question with
/// placeholders only, the same placeholder for a name in the earlier answer
/// and in the follow-up's rows; its answer restores them only for the first
/// caller. GetConversation still returns the answers as streamed.
#[tokio::test]
async fn a_follow_up_sends_the_earlier_turns_personal_data_as_the_same_placeholders() {
    let model = ScriptedServer::start_responder(conversation_turn).await;
    let server = TestServer::with_model(&model, PII_ROLES).await;
    let names = plant(&server).await;
    assert_eq!(names.len(), 3, "{names:?}");
    let mut planted: Vec<&str> = vec![EMAIL, PHONE, CARD, IBAN];
    planted.extend(names.iter().map(String::as_str));

    for (role, reveals) in [("pii_reader", true), ("pii_blind", false)] {
        let first = ask_as(&server, role, "Which artists are there?").await;
        let first_answer = final_answer(&first).text;
        assert_eq!(
            names.iter().all(|n| first_answer.contains(n)),
            reveals,
            "{role}: {first_answer}"
        );
        let id = conversation_id(&first);

        let before = model.requests().len();
        let question = format!("Where was {} born?", names[0]);
        let request = AskRequest {
            conversation_id: id.clone(),
            ..ask(&question)
        };
        let second = ask_request_as(&server, role, request).await;
        assert_eq!(conversation_id(&second), id, "{role}");
        let bodies = &model.requests()[before..];
        assert_eq!(bodies.len(), 2, "{role}: {bodies:#?}");
        for body in bodies {
            let body = body.to_string();
            for value in &planted {
                assert!(
                    !body.contains(value),
                    "{role}: {value:?} of an earlier turn sent to the model: {body}"
                );
            }
        }

        // one placeholder per name, across the turns
        let messages = bodies[1]["messages"].as_array().cloned().unwrap();
        let earlier = message_text(&messages, "assistant");
        let rows = messages
            .iter()
            .find(|m| m["role"] == "tool")
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default();
        let in_rows = name_placeholders(rows);
        assert_eq!(in_rows.len(), 3, "{role}: {rows}");
        assert_eq!(name_placeholders(&earlier), in_rows, "{role}: {earlier}");
        let asked = message_text(&messages, "user");
        let typed = name_placeholders(&asked);
        assert!(
            typed.len() == 1 && in_rows.contains(&typed[0]),
            "{role}: {asked}"
        );

        let answer = final_answer(&second).text;
        assert!(answer.starts_with("Earlier: "), "{role}: {answer}");
        if reveals {
            for name in &names {
                assert!(
                    answer.contains(name),
                    "{role}: {name:?} not restored in {answer}"
                );
            }
            assert!(placeholders(&answer).is_empty(), "{role}: {answer}");
        } else {
            for value in &planted {
                assert!(
                    !answer.contains(value),
                    "{role}: {value:?} revealed in {answer}"
                );
            }
            assert_eq!(name_placeholders(&answer).len(), 3, "{role}: {answer}");
        }

        // the stored conversation is returned as it was streamed
        let token = token_with_roles("t1", role, &[role], &[]);
        let stored = server
            .assistant()
            .get_conversation(authed(
                GetConversationRequest {
                    conversation_id: id.clone(),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        let stored: Vec<(&str, &str)> = stored
            .turns
            .iter()
            .map(|t| (t.question.as_str(), t.answer.as_str()))
            .collect();
        assert_eq!(
            stored,
            [
                ("Which artists are there?", first_answer.as_str()),
                (question.as_str(), answer.as_str()),
            ],
            "{role}"
        );
    }
    server.stop().await;
}
