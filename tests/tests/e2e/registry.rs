//! The tool registry end to end (issue 12): a tool defined here, outside the
//! orchestrator crate, registered with `Assistant::with_tool`, offered to
//! the scripted model and called by it over a real Assistant gRPC server
//! (behind the auth layer) whose SQL tool is a real server over PostgreSQL.
//! The tool runs for the caller of the `Ask` (principal from the token,
//! request id from `x-request-id`), its result reaches the model and the
//! client; calls of tools not offered are refused as before.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::sync::{Arc, Mutex};

use futures::{StreamExt as _, future::BoxFuture};
use quarry_auth::{AuthLayer, JwtVerifier, Principal};
use quarry_llm::testing::{ScriptedServer, ScriptedToolCall, ScriptedTurn};
use quarry_llm::{ChatModel, ModelConfig, OpenAiChatModel, ToolCall, ToolSpec};
use quarry_orchestrator::{
    AskCaller, Assistant, AssistantGrpc, ModelTool, OrchestratorConfig, ToolContext, ToolOutcome,
    tools::sanitize, transport,
};
use quarry_proto::v1::{
    AnswerStatus, AskResponse, Column, Row, RowSet, SqlToolResult, Value, ask_response::Event,
    assistant_service_client::AssistantServiceClient,
    assistant_service_server::AssistantServiceServer, sql_service_client::SqlServiceClient,
    tool_result::Outcome, value::Kind,
};
use quarry_tests::{
    Options, SECRET, TestServer, ask, authed, event_kinds, final_answer, token, tool_results,
    usage_of,
};
use serde_json::Value as Json;
use tonic::transport::{Channel, Server, server::TcpIncoming};

const WHO_AM_I: &str = "who_am_i";
const REQUEST_ID: &str = "req-registry-1";

/// A tool from outside the orchestrator: tells the model whom it answers,
/// and remembers the callers it ran for.
#[derive(Default)]
struct WhoAmI {
    seen: Mutex<Vec<(Principal, String)>>,
}

impl ModelTool for WhoAmI {
    fn name(&self) -> &str {
        WHO_AM_I
    }

    fn scope(&self) -> Option<&'static str> {
        None
    }

    fn spec<'a>(&'a self, _caller: &'a AskCaller) -> BoxFuture<'a, Option<ToolSpec>> {
        Box::pin(async {
            Some(ToolSpec {
                name: WHO_AM_I.to_string(),
                description: "Says which tenant and user are asking.".to_string(),
                parameters: serde_json::json!({"type": "object", "properties": {}}),
            })
        })
    }

    fn guidance(&self) -> Option<String> {
        Some(format!("Call `{WHO_AM_I}` to learn who is asking.\n"))
    }

    fn call<'a>(&'a self, call: &'a ToolCall, cx: ToolContext<'a>) -> BoxFuture<'a, ToolOutcome> {
        Box::pin(async move {
            let caller = &cx.caller.caller;
            self.seen
                .lock()
                .unwrap()
                .push((caller.principal.clone(), caller.request_id.clone()));
            let text = |s: &str| Value {
                kind: Some(Kind::TextValue(s.to_string())),
            };
            let rows = RowSet {
                columns: vec![
                    Column {
                        name: "tenant".into(),
                        type_name: "text".into(),
                        pii: false,
                    },
                    Column {
                        name: "subject".into(),
                        type_name: "text".into(),
                        pii: false,
                    },
                ],
                rows: vec![Row {
                    values: vec![
                        text(&caller.principal.tenant),
                        text(&caller.principal.subject),
                    ],
                }],
                truncated: false,
            };
            ToolOutcome {
                result: Outcome::Sql(SqlToolResult {
                    rows: Some(rows),
                    row_count: 1,
                    ..Default::default()
                }),
                for_model: format!(
                    "<tool_result call_id=\"{}\" status=\"ok\">\ntenant: {} subject: {}\n</tool_result>",
                    call.id,
                    sanitize(&caller.principal.tenant),
                    sanitize(&caller.principal.subject)
                ),
                citations: Vec::new(),
                model_calls: Vec::new(),
            }
        })
    }
}

/// A registered tool that is never available, so never offered.
struct Unavailable;

impl ModelTool for Unavailable {
    fn name(&self) -> &str {
        "unavailable_tool"
    }

    fn scope(&self) -> Option<&'static str> {
        None
    }

    fn spec<'a>(&'a self, _caller: &'a AskCaller) -> BoxFuture<'a, Option<ToolSpec>> {
        Box::pin(async { None })
    }

    fn call<'a>(&'a self, call: &'a ToolCall, _cx: ToolContext<'a>) -> BoxFuture<'a, ToolOutcome> {
        panic!("a tool that was not offered was called: {call:?}")
    }
}

/// Serves `assistant` behind the auth layer on a free port; returns a
/// client and the server's shutdown trigger.
async fn serve(
    assistant: Assistant,
) -> (
    AssistantServiceClient<Channel>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let auth = AuthLayer::new(JwtVerifier::hs256(SECRET.as_bytes()));
    // the test policy's `tester` role, which `token` carries
    let tester = quarry_auth::RoleConfig {
        scopes: ["ask", "sql:query", "schema:read"]
            .map(str::to_owned)
            .to_vec(),
        tables: vec!["tate.*".to_owned()],
        ..quarry_auth::RoleConfig::default()
    };
    let policy = quarry_auth::Policy::new(&quarry_auth::PolicyConfig {
        hash_salt: String::new(),
        roles: [("tester".to_owned(), tester)].into(),
    })
    .unwrap();
    let policy = quarry_auth::PolicyLayer::new(
        Arc::new(quarry_auth::PolicyStore::new(policy)),
        quarry_server::rpc_scope,
    );
    tokio::spawn(
        Server::builder()
            .layer(auth)
            .layer(policy)
            .add_service(AssistantServiceServer::new(AssistantGrpc::new(Arc::new(
                assistant,
            ))))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    (AssistantServiceClient::new(channel), stop)
}

/// `(tool_call_id, content)` of each tool message of a model request.
fn tool_messages(request: &Json) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_tool_registered_from_outside_runs_for_the_caller_and_others_are_refused() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_calls(vec![
            ScriptedToolCall::new(WHO_AM_I, "{}").with_id("call_who"),
            ScriptedToolCall::new("unavailable_tool", "{}").with_id("call_off"),
            ScriptedToolCall::new("drop_everything", "{}").with_id("call_unknown"),
        ]),
        ScriptedTurn::text("You are tester, of tenant t1."),
    ])
    .await;
    // the SQL tool (and the database) of a real server; no model there
    let tools = TestServer::start(Options::default()).await;
    let chat: Arc<dyn ChatModel> = Arc::new(
        OpenAiChatModel::with_api_key(
            ModelConfig {
                timeout_secs: 10,
                max_retries: 0,
                ..ModelConfig::new(model.base_url(), "scripted")
            },
            None,
        )
        .unwrap(),
    );
    let who = Arc::new(WhoAmI::default());
    let assistant = Assistant::new(
        Some(chat),
        SqlServiceClient::new(transport::remote(tools.channel())),
        OrchestratorConfig::default(),
    )
    .with_tool(who.clone())
    .with_tool(Arc::new(Unavailable));
    assert_eq!(
        assistant.tools().names(),
        [
            "query_database",
            "describe_tables",
            WHO_AM_I,
            "unavailable_tool"
        ]
    );
    let (mut client, stop) = serve(assistant).await;

    let mut request = authed(ask("Who am I?"), &token("t1"));
    request
        .metadata_mut()
        .insert("x-request-id", REQUEST_ID.parse().unwrap());
    let mut stream = client.ask(request).await.unwrap().into_inner();
    let mut events: Vec<AskResponse> = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.unwrap());
    }

    // the tool ran once, for the caller of the Ask, under its request id
    let seen = who.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (principal, request_id) = &seen[0];
    assert_eq!(
        (principal.tenant.as_str(), principal.subject.as_str()),
        ("t1", "tester")
    );
    assert_eq!(request_id, REQUEST_ID);
    let Some(Event::Started(started)) = &events[0].event else {
        panic!("the first event is started: {events:?}")
    };
    assert_eq!(started.request_id, REQUEST_ID);

    // the model was offered the available tools only, and the tool's guidance
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["query_database", "describe_tables", WHO_AM_I]);
    let system = requests[0]["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("Call `who_am_i` to learn who is asking."),
        "{system}"
    );

    // the events were streamed: three calls started and finished, an answer
    let kinds = event_kinds(&events);
    assert_eq!(kinds[..2], ["started", "route"], "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "tool_call_started").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["final_answer", "usage"],
        "{kinds:?}"
    );
    let results = tool_results(&events);
    assert_eq!(results.len(), 3, "{results:?}");
    let mine = results.iter().find(|r| r.call_id == "call_who").unwrap();
    assert_eq!(mine.tool_name, WHO_AM_I);
    let Some(Outcome::Sql(rows)) = &mine.outcome else {
        panic!("the tool's rows: {mine:?}")
    };
    assert_eq!(rows.row_count, 1);
    let expected_refusal = |name: &str| {
        format!(
            "tool \"{name}\" is not offered; the tools offered are: query_database, describe_tables, who_am_i"
        )
    };
    for (id, name) in [
        ("call_off", "unavailable_tool"),
        ("call_unknown", "drop_everything"),
    ] {
        let refused = results.iter().find(|r| r.call_id == id).unwrap();
        assert_eq!(
            refused.outcome,
            Some(Outcome::Error(expected_refusal(name))),
            "{refused:?}"
        );
    }

    // the tool's result reached the model, in call order, as did the refusals
    let tool_msgs = tool_messages(&requests[1]);
    let ids: Vec<&str> = tool_msgs.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["call_who", "call_off", "call_unknown"]);
    assert!(
        tool_msgs[0]
            .1
            .contains("<tool_result call_id=\"call_who\" status=\"ok\">")
            && tool_msgs[0].1.contains("tenant: t1 subject: tester"),
        "{}",
        tool_msgs[0].1
    );
    assert!(
        tool_msgs[1].1.contains("status=\"error\"") && tool_msgs[1].1.contains("is not offered"),
        "{}",
        tool_msgs[1].1
    );

    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Answered as i32);
    assert_eq!(answer.text, "You are tester, of tenant t1.");
    assert_eq!(usage_of(&events).tool_calls, 3);

    let _ = stop.send(());
    tools.stop().await;
}
