//! The model-response cache against the scripted OpenAI-compatible server:
//! a second identical deterministic request never reaches the server.

// test helpers outside #[test] fns panic on purpose too
#![allow(clippy::unwrap_used)]
// an unexpected variant fails the test with its value
#![allow(clippy::wildcard_enum_match_arm)]

use std::time::Duration;

use futures::StreamExt;
use quarry_llm::cache::ResponseCache;
use quarry_llm::testing::{ScriptedServer, ScriptedToolCall, ScriptedTurn};
use quarry_llm::{
    ChatEvent, ChatModel, ChatRequest, FinishReason, Message, ModelConfig, OpenAiChatModel,
    ToolCall, Usage,
};

fn model(server: &ScriptedServer, temperature: Option<f32>) -> OpenAiChatModel {
    let mut config = ModelConfig::new(server.base_url(), "scripted-model");
    config.timeout_secs = 10;
    config.max_retries = 0;
    config.temperature = temperature;
    OpenAiChatModel::with_api_key(config, Some("sk-test".into()))
        .unwrap()
        .with_response_cache(ResponseCache::new(1 << 20, Duration::from_secs(60)))
}

fn ask(question: &str, tenant: Option<&str>) -> ChatRequest {
    let request = ChatRequest::new(
        vec![Message::system("you answer"), Message::user(question)],
        vec![],
    );
    match tenant {
        Some(tenant) => request.with_cache_scope(tenant),
        None => request,
    }
}

async fn events(model: &OpenAiChatModel, request: ChatRequest) -> Vec<ChatEvent> {
    model
        .chat_stream(request)
        .map(|event| event.unwrap())
        .collect()
        .await
}

fn text(events: &[ChatEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            ChatEvent::ContentDelta(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn without_usage(events: &[ChatEvent]) -> Vec<ChatEvent> {
    events
        .iter()
        .filter(|e| !matches!(e, ChatEvent::Usage(_)))
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_repeated_deterministic_request_is_replayed_without_calling_the_server() {
    let server = ScriptedServer::start(vec![
        ScriptedTurn::text_chunks(["Forty", "-two", "."]).with_usage(20, 3),
        ScriptedTurn::tool_calls(vec![ScriptedToolCall::new(
            "run_sql",
            r#"{"sql":"SELECT 1"}"#,
        )]),
        ScriptedTurn::text("other tenant"),
        ScriptedTurn::text("changed prompt"),
    ])
    .await;
    let model = model(&server, Some(0.0));

    let first = events(&model, ask("the answer?", Some("acme"))).await;
    assert_eq!(server.request_count(), 1);
    let again = events(&model, ask("the answer?", Some("acme"))).await;
    assert_eq!(
        server.request_count(),
        1,
        "the second call never reached the server"
    );
    // the same events in the same order: three deltas, then finished
    assert_eq!(without_usage(&again), without_usage(&first));
    assert_eq!(
        without_usage(&again),
        [
            ChatEvent::ContentDelta("Forty".into()),
            ChatEvent::ContentDelta("-two".into()),
            ChatEvent::ContentDelta(".".into()),
            ChatEvent::Finished {
                finish_reason: FinishReason::Stop
            },
        ]
    );
    assert!(first.contains(&ChatEvent::Usage(Usage {
        prompt_tokens: 20,
        completion_tokens: 3,
        total_tokens: 23,
        ..Usage::default()
    })));
    assert_eq!(
        again.last(),
        Some(&ChatEvent::Usage(Usage {
            from_cache: true,
            ..Usage::default()
        })),
        "a replay spends no tokens and says so"
    );

    // tool calls replay too
    let tools = events(&model, ask("run it", Some("acme"))).await;
    let replayed = events(&model, ask("run it", Some("acme"))).await;
    assert_eq!(server.request_count(), 2);
    assert_eq!(without_usage(&tools), without_usage(&replayed));
    assert!(
        replayed
            .iter()
            .any(|e| matches!(e, ChatEvent::ToolCall(ToolCall { name, .. }) if name == "run_sql"))
    );

    // another tenant, or another prompt, reaches the server
    let other = events(&model, ask("the answer?", Some("globex"))).await;
    assert_eq!(server.request_count(), 3);
    assert_eq!(text(&other), "other tenant");
    let changed = events(&model, ask("the answer? ", Some("acme"))).await;
    assert_eq!(server.request_count(), 4);
    assert_eq!(text(&changed), "changed prompt");
}

#[tokio::test]
async fn sampling_requests_and_requests_without_a_tenant_are_never_cached() {
    let server = ScriptedServer::start(vec![
        ScriptedTurn::text("one"),
        ScriptedTurn::text("two"),
        ScriptedTurn::text("three"),
        ScriptedTurn::text("four"),
        ScriptedTurn::text("five"),
        ScriptedTurn::text("six"),
    ])
    .await;
    for temperature in [Some(0.7), None] {
        let sampling = model(&server, temperature);
        let before = server.request_count();
        events(&sampling, ask("q", Some("acme"))).await;
        events(&sampling, ask("q", Some("acme"))).await;
        assert_eq!(
            server.request_count(),
            before + 2,
            "temperature {temperature:?}"
        );
    }
    let unscoped = model(&server, Some(0.0));
    events(&unscoped, ask("q", None)).await;
    events(&unscoped, ask("q", None)).await;
    assert_eq!(server.request_count(), 6, "no tenant: no cache");
}

#[tokio::test]
async fn a_failed_answer_is_not_stored() {
    let server = ScriptedServer::start(vec![
        ScriptedTurn::error(500, "boom"),
        ScriptedTurn::text("fine"),
        ScriptedTurn::text("unused"),
    ])
    .await;
    let model = model(&server, Some(0.0));
    let failed: Vec<_> = model.chat_stream(ask("q", Some("acme"))).collect().await;
    assert!(failed.last().unwrap().is_err());
    let ok = events(&model, ask("q", Some("acme"))).await;
    assert_eq!(text(&ok), "fine");
    let replay = events(&model, ask("q", Some("acme"))).await;
    assert_eq!(server.request_count(), 2, "the good answer is replayed");
    assert_eq!(without_usage(&replay), without_usage(&ok));
}
