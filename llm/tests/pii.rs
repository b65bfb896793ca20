//! `pii::Redacting` around `OpenAiChatModel` against the scripted
//! OpenAI-compatible server: no planted personal value reaches the model,
//! and the answer restores them only for a caller allowed to see them.

// test helpers outside #[test] fns panic on purpose too
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use futures::StreamExt;
use quarry_llm::pii::{Pseudonymizer, Redacting, Reveal};
use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_llm::{
    ChatEvent, ChatModel, ChatRequest, Message, ModelConfig, OpenAiChatModel, ToolCall, ToolSpec,
};
use regex::Regex;
use serde_json::{Value, json};

const EMAIL: &str = "alice.smith@example.com";
const PHONE: &str = "+49 151 23456789";
const CARD: &str = "4111 1111 1111 1111";
const IBAN: &str = "DE89 3704 0044 0532 0130 00";
/// A value of a column the policy tags `name`: no detector finds it.
const NAME: &str = "Ada Lovelace";
const PLANTED: [&str; 5] = [EMAIL, PHONE, CARD, IBAN, NAME];

fn model(server: &ScriptedServer) -> Arc<dyn ChatModel> {
    let mut config = ModelConfig::new(server.base_url(), "scripted-model");
    config.timeout_secs = 10;
    config.max_retries = 0;
    Arc::new(OpenAiChatModel::with_api_key(config, Some("sk-test".into())).unwrap())
}

/// Placeholders in the messages of a request body, in order of first
/// appearance.
fn placeholders(body: &Value) -> Vec<String> {
    let shape = Regex::new(r"<[A-Z_]+_[0-9]+>").unwrap();
    let mut out: Vec<String> = Vec::new();
    let text = body["messages"].to_string();
    for found in shape.find_iter(&text) {
        if !out.iter().any(|p| p == found.as_str()) {
            out.push(found.as_str().to_owned());
        }
    }
    out
}

/// The placeholder with `label` in `body`.
fn placeholder(body: &Value, label: &str) -> String {
    let prefix = format!("<{label}_");
    placeholders(body)
        .into_iter()
        .find(|p| p.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}…> in {body}"))
}

/// The scripted model: asked a question, it looks the customer up by the
/// e-mail placeholder it was given; given the tool's result, it answers with
/// every placeholder it has seen.
fn respond(body: &Value) -> ScriptedTurn {
    let has_tool_result = body["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    if has_tool_result {
        ScriptedTurn::text(format!(
            "Customer {} ({}, {}) pays with card {} from {}.",
            placeholder(body, "NAME"),
            placeholder(body, "EMAIL"),
            placeholder(body, "PHONE"),
            placeholder(body, "CARD"),
            placeholder(body, "IBAN"),
        ))
    } else {
        ScriptedTurn::tool_call(
            "find_customer",
            json!({"email": placeholder(body, "EMAIL")}).to_string(),
        )
    }
}

fn question() -> Vec<Message> {
    vec![
        Message::system("You answer questions about customers."),
        Message::user(format!(
            "Who is {EMAIL}? They called from {PHONE} about card {CARD} and IBAN {IBAN}."
        )),
    ]
}

fn find_customer() -> ToolSpec {
    ToolSpec {
        name: "find_customer".into(),
        description: "find a customer by e-mail address".into(),
        parameters: json!({
            "type": "object",
            "properties": {"email": {"type": "string"}},
            "required": ["email"],
        }),
    }
}

/// The streamed text of one turn, and its tool calls.
async fn turn(model: &Redacting, messages: Vec<Message>) -> (String, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut stream = model.chat_stream(ChatRequest::new(messages, vec![find_customer()]));
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            ChatEvent::ContentDelta(delta) => text.push_str(&delta),
            ChatEvent::ToolCall(call) => calls.push(call),
            ChatEvent::Finished { .. } | ChatEvent::Usage(_) => {}
        }
    }
    (text, calls)
}

/// Runs the question, the tool call and the answer; returns the answer text
/// and the tool call's arguments as the caller saw them.
async fn ask(server: &ScriptedServer, reveal: Reveal) -> (String, Value) {
    let pii = Arc::new(Pseudonymizer::new());
    let model = Redacting::new(model(server), pii.clone(), reveal);

    let mut messages = question();
    let (_, calls) = turn(&model, messages.clone()).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = calls[0].clone();
    let arguments: Value = serde_json::from_str(&call.arguments).unwrap();

    // the tool reads a row whose `name` column is tagged PII; the
    // orchestrator registers the cell, and formats the row as it likes
    pii.redact_value("name", NAME);
    let row = json!({"name": NAME, "email": EMAIL, "phone": PHONE, "card": CARD, "iban": IBAN});
    messages.push(Message::Assistant {
        content: None,
        tool_calls: vec![call.clone()],
    });
    messages.push(Message::tool(call.id, row.to_string()));
    let (answer, calls) = turn(&model, messages).await;
    assert!(calls.is_empty(), "{calls:?}");
    (answer, arguments)
}

/// Asserts that no recorded request body holds a planted value, and that
/// each holds placeholders instead (so the requests did carry the data).
fn assert_no_planted_value_sent(server: &ScriptedServer) {
    let bodies = server.requests();
    assert_eq!(bodies.len(), 2);
    for body in &bodies {
        let sent = body.to_string();
        for planted in PLANTED {
            assert!(
                !sent.contains(planted),
                "{planted:?} sent to the model: {sent}"
            );
        }
        assert!(placeholders(body).len() >= 4, "{sent}");
    }
    // the second request carries all five, the tool result's name included
    assert_eq!(placeholders(&bodies[1]).len(), 5, "{}", bodies[1]);
}

#[tokio::test]
async fn planted_pii_never_reaches_the_model_and_the_answer_restores_it() {
    let server = ScriptedServer::start_responder(respond).await;
    let (answer, arguments) = ask(&server, Reveal::Originals).await;

    assert_no_planted_value_sent(&server);
    // the tool received the real address the model wrote as a placeholder
    assert_eq!(arguments, json!({"email": EMAIL}));
    // streamed in 4-character deltas, so placeholders were cut across them
    assert_eq!(
        answer,
        format!("Customer {NAME} ({EMAIL}, {PHONE}) pays with card {CARD} from {IBAN}.")
    );
}

#[tokio::test]
async fn a_caller_not_allowed_to_see_pii_gets_placeholders() {
    let server = ScriptedServer::start_responder(respond).await;
    let (answer, arguments) = ask(&server, Reveal::Placeholders).await;

    assert_no_planted_value_sent(&server);
    for planted in PLANTED {
        assert!(!answer.contains(planted), "{planted:?} in {answer}");
    }
    let email = arguments["email"].as_str().unwrap();
    assert!(email.starts_with("<EMAIL_"), "{arguments}");
    let expected = Regex::new(
        r"^Customer <NAME_\d+> \(<EMAIL_\d+>, <PHONE_\d+>\) pays with card <CARD_\d+> from <IBAN_\d+>\.$",
    )
    .unwrap();
    assert!(expected.is_match(&answer), "{answer}");
}
