//! `OpenAiChatModel` against the scripted OpenAI-compatible server.

// test helpers outside #[test] fns panic on purpose too
#![allow(clippy::unwrap_used)]
// an unexpected variant fails the test with its value
#![allow(clippy::wildcard_enum_match_arm)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use quarry_llm::embed::{ContentHashCache, Embedder, OpenAiEmbedder, OpenAiEmbeddingConfig};
use quarry_llm::testing::{
    SCRIPTED_EMBEDDING_DIMENSION, ScriptedServer, ScriptedToolCall, ScriptedTurn,
    scripted_embedding,
};
use quarry_llm::{
    ChatEvent, ChatModel, ChatRequest, FinishReason, LlmError, Message, ModelConfig,
    OpenAiChatModel, ResponseFormat, ToolCall, ToolSpec, Usage,
};
use serde_json::{Value, json};

fn model(server: &ScriptedServer) -> OpenAiChatModel {
    model_with(server, |_| {})
}

fn model_with(server: &ScriptedServer, tweak: impl FnOnce(&mut ModelConfig)) -> OpenAiChatModel {
    let mut config = ModelConfig::new(server.base_url(), "scripted-model");
    config.timeout_secs = 10;
    config.max_retries = 0;
    tweak(&mut config);
    OpenAiChatModel::with_api_key(config, Some("sk-test".into())).unwrap()
}

fn ask(question: &str) -> ChatRequest {
    ChatRequest::new(
        vec![
            Message::system("you answer questions"),
            Message::user(question),
        ],
        vec![],
    )
}

fn sql_tool() -> ToolSpec {
    ToolSpec {
        name: "run_sql".into(),
        description: "run a read-only sql query".into(),
        parameters: json!({
            "type": "object",
            "properties": {"sql": {"type": "string"}},
            "required": ["sql"],
        }),
    }
}

fn search_tool() -> ToolSpec {
    ToolSpec {
        name: "search".into(),
        description: "search free-text columns".into(),
        parameters: json!({
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        }),
    }
}

/// All events of a stream, errors included.
async fn events(model: &OpenAiChatModel, request: ChatRequest) -> Vec<Result<ChatEvent, LlmError>> {
    model.chat_stream(request).collect().await
}

fn last_error(events: &[Result<ChatEvent, LlmError>]) -> LlmError {
    match events.last() {
        Some(Err(e)) => e.clone(),
        other => panic!("expected the stream to end in an error, got {other:?}"),
    }
}

#[tokio::test]
async fn streamed_text_arrives_as_several_deltas_that_concatenate() {
    let text = "Revenue grew 12% in 2024, led by the north region.";
    let server = ScriptedServer::start(vec![ScriptedTurn::text(text)]).await;

    let events = events(&model(&server), ask("how did revenue change?")).await;
    let deltas: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Ok(ChatEvent::ContentDelta(d)) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert!(
        deltas.len() >= 5,
        "expected many small deltas, got {deltas:?}"
    );
    assert_eq!(deltas.concat(), text);
    assert!(
        events.iter().all(Result::is_ok),
        "no errors expected: {events:?}"
    );
    // order: deltas, then finished, then usage
    let tail: Vec<&ChatEvent> = events
        .iter()
        .filter_map(|e| e.as_ref().ok())
        .skip(deltas.len())
        .collect();
    assert!(matches!(
        tail.as_slice(),
        [
            ChatEvent::Finished {
                finish_reason: FinishReason::Stop
            },
            ChatEvent::Usage(_)
        ]
    ));

    let sent = &server.requests()[0];
    assert_eq!(sent["model"], "scripted-model");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["messages"][1]["content"], "how did revenue change?");
    assert!(sent.get("tools").is_none(), "no tools offered: {sent}");
}

#[tokio::test]
async fn tool_call_arguments_split_over_many_deltas_are_assembled() {
    let arguments = r#"{"sql":"select count(*) from orders where status = 'open'"}"#;
    let server = ScriptedServer::start(vec![ScriptedTurn::tool_call("run_sql", arguments)]).await;
    let mut request = ask("how many open orders?");
    request.tools = vec![sql_tool()];

    let response = quarry_llm::chat(&model(&server), request).await.unwrap();

    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(response.content, "");
    assert_eq!(response.tool_calls.len(), 1);
    let call = &response.tool_calls[0];
    assert_eq!(call.name, "run_sql");
    assert!(!call.id.is_empty());
    assert_eq!(call.arguments, arguments);
    let parsed: Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(
        parsed["sql"],
        "select count(*) from orders where status = 'open'"
    );
}

/// Data payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn scripted_server_streams_tool_calls_the_way_the_real_api_does() {
    let arguments = r#"{"sql":"select count(*) from orders"}"#;
    let server = ScriptedServer::start(vec![ScriptedTurn::tool_call("run_sql", arguments)]).await;

    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .header("content-type", "application/json")
        .body(
            json!({
                "model": "m",
                "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "q"}],
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let data = sse_data(&response.text().await.unwrap());

    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let call_deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(call_deltas[0]["index"], 0);
    assert_eq!(call_deltas[0]["type"], "function");
    assert_eq!(call_deltas[0]["function"]["name"], "run_sql");
    assert!(call_deltas[0]["id"].as_str().unwrap().starts_with("call_"));
    let argument_pieces: Vec<&str> = call_deltas[1..]
        .iter()
        .map(|d| {
            assert!(d.get("id").is_none() && d["function"].get("name").is_none());
            d["function"]["arguments"].as_str().unwrap()
        })
        .collect();
    assert!(argument_pieces.len() >= 4, "{argument_pieces:?}");
    assert_eq!(argument_pieces.concat(), arguments);
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert!(chunks[n - 1]["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn two_parallel_tool_calls_are_both_assembled_in_order() {
    let server = ScriptedServer::start(vec![ScriptedTurn::tool_calls(vec![
        ScriptedToolCall::new("run_sql", r#"{"sql":"select sum(amount) from sales"}"#)
            .with_id("call_sql"),
        ScriptedToolCall::new("search", r#"{"query":"late delivery complaints"}"#)
            .with_id("call_search"),
    ])])
    .await;
    let mut request = ask("sales total and complaints about delivery");
    request.tools = vec![sql_tool(), search_tool()];

    let events = events(&model(&server), request).await;
    let calls: Vec<ToolCall> = events
        .iter()
        .filter_map(|e| match e {
            Ok(ChatEvent::ToolCall(c)) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ToolCall {
                id: "call_sql".into(),
                name: "run_sql".into(),
                arguments: r#"{"sql":"select sum(amount) from sales"}"#.into(),
            },
            ToolCall {
                id: "call_search".into(),
                name: "search".into(),
                arguments: r#"{"query":"late delivery complaints"}"#.into(),
            },
        ]
    );
    assert!(events.contains(&Ok(ChatEvent::Finished {
        finish_reason: FinishReason::ToolCalls
    })));
}

#[tokio::test]
async fn usage_from_the_final_empty_choices_chunk_is_reported() {
    let server =
        ScriptedServer::start(vec![ScriptedTurn::text("one row").with_usage(123, 45)]).await;

    let response = quarry_llm::chat(&model(&server), ask("q")).await.unwrap();

    assert_eq!(
        response.usage,
        Some(Usage {
            prompt_tokens: 123,
            completion_tokens: 45,
            total_tokens: 168,
            cached_prompt_tokens: 0,
            from_cache: false,
        })
    );
    assert_eq!(
        server.requests()[0]["stream_options"]["include_usage"],
        true
    );
}

#[tokio::test]
async fn cached_prompt_tokens_from_prompt_tokens_details_are_reported() {
    let server = ScriptedServer::start(vec![
        ScriptedTurn::text("one row")
            .with_usage(2048, 5)
            .with_cached_tokens(1024),
    ])
    .await;

    let response = quarry_llm::chat(&model(&server), ask("q")).await.unwrap();

    assert_eq!(
        response.usage,
        Some(Usage {
            prompt_tokens: 2048,
            completion_tokens: 5,
            total_tokens: 2053,
            cached_prompt_tokens: 1024,
            from_cache: false,
        })
    );
}

#[tokio::test]
async fn server_error_is_an_http_error_with_its_status() {
    let server =
        ScriptedServer::start(vec![ScriptedTurn::error(500, "upstream model crashed")]).await;

    let err = quarry_llm::chat(&model(&server), ask("q"))
        .await
        .unwrap_err();

    match &err {
        LlmError::Http {
            status, message, ..
        } => {
            assert_eq!(*status, 500);
            assert_eq!(message, "upstream model crashed");
        }
        other => panic!("expected http error, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(server.requests().len(), 1, "max_retries 0 sends once");
}

#[tokio::test]
async fn rate_limit_keeps_status_message_and_retry_after() {
    let server = ScriptedServer::start(vec![ScriptedTurn::rate_limited(7)]).await;

    let err = quarry_llm::chat(&model(&server), ask("q"))
        .await
        .unwrap_err();

    assert_eq!(
        err,
        LlmError::Http {
            status: 429,
            message: "rate limit reached for requests".into(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
}

#[tokio::test]
async fn a_retry_after_past_the_deadline_is_returned_not_waited_out() {
    // Retry-After 30 s, deadline 10 s: waiting would only end in a timeout
    let server = ScriptedServer::start(vec![
        ScriptedTurn::rate_limited(30),
        ScriptedTurn::text("too late"),
    ])
    .await;
    let model = model_with(&server, |c| c.max_retries = 2);

    let err = quarry_llm::chat(&model, ask("q")).await.unwrap_err();

    assert_eq!(
        err,
        LlmError::Http {
            status: 429,
            message: "rate limit reached for requests".into(),
            retry_after: Some(Duration::from_secs(30)),
        }
    );
    assert_eq!(
        err.to_string(),
        "model endpoint answered http 429: rate limit reached for requests (retry after 30s)"
    );
    assert_eq!(server.requests().len(), 1, "the retry was never sent");
    assert_eq!(server.remaining(), 1);
}

#[tokio::test]
async fn client_error_with_a_non_openai_body_keeps_its_status() {
    // vLLM's error shape; async-openai alone would report a json parse error
    let server = ScriptedServer::start(vec![ScriptedTurn::error(
        400,
        r#"{"object":"error","message":"model 'x' does not exist","type":"NotFoundError","code":404}"#,
    )])
    .await;

    let err = quarry_llm::chat(&model(&server), ask("q"))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, LlmError::Http { status: 400, message, .. } if message == "model 'x' does not exist"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn server_error_is_retried_up_to_max_retries() {
    let server = ScriptedServer::start(vec![
        ScriptedTurn::error(503, "overloaded"),
        ScriptedTurn::text("fine now"),
    ])
    .await;

    let response = quarry_llm::chat(&model_with(&server, |c| c.max_retries = 1), ask("q"))
        .await
        .unwrap();

    assert_eq!(response.content, "fine now");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn response_slower_than_the_timeout_is_a_timeout() {
    let server = ScriptedServer::start(vec![
        ScriptedTurn::text("too late").with_delay(Duration::from_secs(5)),
    ])
    .await;
    let model = model_with(&server, |c| c.timeout_secs = 1);

    let started = Instant::now();
    let err = quarry_llm::chat(&model, ask("q")).await.unwrap_err();

    assert_eq!(
        err,
        LlmError::Timeout {
            timeout: Duration::from_secs(1)
        }
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn the_deadline_covers_the_whole_stream_not_just_the_first_byte() {
    // headers arrive at once, but 10 chunks 300 ms apart outlast a 1 s deadline
    let server = ScriptedServer::start(vec![
        ScriptedTurn::text_chunks(["a"; 10]).with_chunk_delay(Duration::from_millis(300)),
    ])
    .await;
    let model = model_with(&server, |c| c.timeout_secs = 1);

    let events = events(&model, ask("q")).await;

    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ok(ChatEvent::ContentDelta(_)))),
        "some text streamed before the deadline: {events:?}"
    );
    assert!(matches!(last_error(&events), LlmError::Timeout { .. }));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Ok(ChatEvent::Finished { .. }))),
        "a cut-off answer must not look finished"
    );
}

#[tokio::test]
async fn second_turn_sends_offered_tools_and_the_tool_result_back() {
    let server = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("run_sql", r#"{"sql":"select count(*) from orders"}"#)
            .with_content("Let me check."),
        ScriptedTurn::text("There are 42 orders."),
    ])
    .await;
    let model = model(&server);
    let tools = vec![sql_tool(), search_tool()];

    let mut messages = vec![Message::user("how many orders?")];
    let first = quarry_llm::chat(&model, ChatRequest::new(messages.clone(), tools.clone()))
        .await
        .unwrap();
    assert_eq!(first.content, "Let me check.");
    assert_eq!(first.tool_calls.len(), 1);
    let call = first.tool_calls[0].clone();
    messages.push(first.to_message());
    messages.push(Message::tool(call.id.clone(), r#"{"rows":[[42]]}"#));
    let second = quarry_llm::chat(&model, ChatRequest::new(messages, tools))
        .await
        .unwrap();
    assert_eq!(second.content, "There are 42 orders.");
    assert_eq!(second.finish_reason, FinishReason::Stop);

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["type"], "function");
            t["function"]["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(offered, ["run_sql", "search"]);
    assert_eq!(
        requests[0]["tools"][0]["function"]["parameters"],
        sql_tool().parameters
    );

    let sent = requests[1]["messages"].as_array().unwrap();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[1]["role"], "assistant");
    assert_eq!(sent[1]["content"], "Let me check.");
    assert_eq!(sent[1]["tool_calls"][0]["id"], call.id.as_str());
    assert_eq!(sent[1]["tool_calls"][0]["type"], "function");
    assert_eq!(sent[1]["tool_calls"][0]["function"]["name"], "run_sql");
    assert_eq!(
        sent[1]["tool_calls"][0]["function"]["arguments"],
        r#"{"sql":"select count(*) from orders"}"#
    );
    assert_eq!(sent[2]["role"], "tool");
    assert_eq!(sent[2]["tool_call_id"], call.id.as_str());
    assert_eq!(sent[2]["content"], r#"{"rows":[[42]]}"#);
}

#[tokio::test]
async fn malformed_chunk_is_a_protocol_error_not_a_panic() {
    let server = ScriptedServer::start(vec![ScriptedTurn::raw_events([
        r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"par"},"finish_reason":null}]}"#,
        r#"{"this is": not json"#,
        "[DONE]",
    ])])
    .await;

    let events = events(&model(&server), ask("q")).await;

    assert_eq!(events[0], Ok(ChatEvent::ContentDelta("par".into())));
    assert!(
        matches!(last_error(&events), LlmError::Protocol(_)),
        "{events:?}"
    );
}

#[tokio::test]
async fn stream_without_finish_reason_is_a_protocol_error() {
    let server = ScriptedServer::start(vec![ScriptedTurn::raw_events([
        r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"cut"},"finish_reason":null}]}"#,
        "[DONE]",
    ])])
    .await;

    let err = quarry_llm::chat(&model(&server), ask("q"))
        .await
        .unwrap_err();

    assert!(matches!(err, LlmError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn tool_call_without_a_name_is_a_protocol_error() {
    let server = ScriptedServer::start(vec![ScriptedTurn::raw_events([
        r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"finish_reason":null}]}"#,
        r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        "[DONE]",
    ])])
    .await;

    let err = quarry_llm::chat(&model(&server), ask("q"))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, LlmError::Protocol(m) if m.contains("no function name")),
        "{err:?}"
    );
}

#[tokio::test]
async fn exhausted_script_answers_500_with_a_clear_message() {
    let server = ScriptedServer::start(vec![]).await;

    let err = quarry_llm::chat(&model(&server), ask("q"))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, LlmError::Http { status: 500, message, .. } if message.contains("script exhausted")),
        "{err:?}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error() {
    let server = ScriptedServer::start(vec![]).await;
    let model = model(&server);
    drop(server);

    let err = quarry_llm::chat(&model, ask("q")).await.unwrap_err();

    assert!(matches!(err, LlmError::Transport(_)), "{err:?}");
}

#[tokio::test]
async fn non_streaming_request_gets_a_chat_completion_object() {
    let server = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("run_sql", r#"{"sql":"select 1"}"#).with_content("checking"),
    ])
    .await;

    let body = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .header("content-type", "application/json")
        .body(json!({"model": "m", "messages": [{"role": "user", "content": "q"}]}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();

    assert_eq!(body["object"], "chat.completion");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "checking");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"sql":"select 1"}"#
    );
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn response_format_json_schema_is_sent_as_openai_structured_output() {
    let server = ScriptedServer::start(vec![
        ScriptedTurn::text(r#"{"sql":"select 1"}"#),
        ScriptedTurn::text("{}"),
        ScriptedTurn::text("free"),
    ])
    .await;
    let model = model(&server);
    let schema = json!({
        "type": "object",
        "properties": {"sql": {"type": "string"}},
        "required": ["sql"],
        "additionalProperties": false,
    });
    let answer = quarry_llm::chat(
        &model,
        ask("write sql").with_response_format(ResponseFormat::JsonSchema {
            name: "sql_answer".into(),
            schema: schema.clone(),
            strict: true,
        }),
    )
    .await
    .unwrap();
    assert_eq!(answer.content, r#"{"sql":"select 1"}"#);
    quarry_llm::chat(
        &model,
        ask("any json").with_response_format(ResponseFormat::JsonObject),
    )
    .await
    .unwrap();
    quarry_llm::chat(&model, ask("free text")).await.unwrap();

    let requests = server.requests();
    assert_eq!(
        requests[0]["response_format"],
        json!({
            "type": "json_schema",
            "json_schema": {"name": "sql_answer", "schema": schema, "strict": true},
        })
    );
    assert_eq!(
        requests[1]["response_format"],
        json!({"type": "json_object"})
    );
    assert!(
        requests[2].get("response_format").is_none(),
        "{}",
        requests[2]
    );
}

fn embedder(
    server: &ScriptedServer,
    tweak: impl FnOnce(&mut OpenAiEmbeddingConfig),
) -> OpenAiEmbedder {
    let mut config = OpenAiEmbeddingConfig::new(
        server.base_url(),
        "scripted-embed",
        SCRIPTED_EMBEDDING_DIMENSION,
    );
    config.timeout_secs = 10;
    tweak(&mut config);
    OpenAiEmbedder::with_api_key(config, Some("sk-test".into())).unwrap()
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[tokio::test]
async fn openai_embedder_batches_keeps_order_and_normalises() {
    let server = ScriptedServer::start(vec![]).await;
    let embedder = embedder(&server, |c| c.batch_size = 2);
    let texts: Vec<String> = ["alpha", "beta", "gamma", "delta", "epsilon"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let vectors = embedder.embed(texts.clone()).await.unwrap();

    assert_eq!(vectors.len(), 5);
    for (text, vector) in texts.iter().zip(&vectors) {
        let expected = unit(scripted_embedding(text, SCRIPTED_EMBEDDING_DIMENSION));
        for (a, b) in vector.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-6, "{text}: {vector:?} vs {expected:?}");
        }
    }
    let requests = server.requests();
    let inputs: Vec<Value> = requests.iter().map(|r| r["input"].clone()).collect();
    assert_eq!(
        inputs,
        vec![
            json!(["alpha", "beta"]),
            json!(["gamma", "delta"]),
            json!(["epsilon"])
        ]
    );
    assert_eq!(requests[0]["model"], "scripted-embed");
    assert_eq!(requests[0]["encoding_format"], "float");
    assert!(requests[0].get("dimensions").is_none());
    assert_eq!(embedder.model_id(), "scripted-embed");
    assert_eq!(embedder.dimension(), SCRIPTED_EMBEDDING_DIMENSION);
}

#[tokio::test]
async fn openai_embedder_retries_rate_limits_and_checks_dimension() {
    let server = ScriptedServer::start(vec![ScriptedTurn::rate_limited(0)]).await;
    let embedder = embedder(&server, |c| c.max_retries = 1);
    let vectors = embedder.embed(vec!["x".into()]).await.unwrap();
    assert_eq!(vectors.len(), 1);
    assert_eq!(server.requests().len(), 2, "one 429, then success");

    server.push(ScriptedTurn::error(500, r#"{"error":{"message":"boom"}}"#));
    let no_retry = self::embedder(&server, |c| c.max_retries = 0);
    let err = no_retry.embed(vec!["x".into()]).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Http { status: 500, message, .. } if message == "boom"),
        "{err}"
    );

    // the server answers 16 dimensions where 8 were configured
    let wrong = self::embedder(&server, |c| {
        c.dimension = 16;
        c.send_dimension = false;
    });
    let err = wrong.embed(vec!["x".into()]).await.unwrap_err();
    assert!(matches!(err, LlmError::Protocol(_)), "{err}");

    let asks = self::embedder(&server, |c| {
        c.dimension = 16;
        c.send_dimension = true;
    });
    assert_eq!(asks.embed(vec!["x".into()]).await.unwrap()[0].len(), 16);
    assert_eq!(server.requests().last().unwrap()["dimensions"], 16);
}

#[tokio::test]
async fn openai_embedder_behind_the_cache_sends_only_new_texts() {
    let server = ScriptedServer::start(vec![]).await;
    let cached = ContentHashCache::new(Arc::new(embedder(&server, |_| {})), 100);
    let first = cached.embed(vec!["a".into(), "b".into()]).await.unwrap();
    let second = cached
        .embed(vec!["b".into(), "c".into(), "a".into()])
        .await
        .unwrap();
    assert_eq!(second[0], first[1]);
    assert_eq!(second[2], first[0]);
    let inputs: Vec<Value> = server
        .requests()
        .iter()
        .map(|r| r["input"].clone())
        .collect();
    assert_eq!(inputs, vec![json!(["a", "b"]), json!(["c"])]);
}
