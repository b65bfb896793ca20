//! Traces (issue 15): the spans of an Ask reach an OTLP collector (an
//! in-test OTLP/gRPC `TraceService`) as one tree under the client's
//! `traceparent` — RPC → Ask step → model call / tool call → the SQL role's
//! RPC in another server → SQL statement — and the statement ran with the
//! trace in `application_name`. A malformed `traceparent` starts a new trace.
//!
//! The test installs the process's global subscriber, so it needs a process
//! of its own (nextest runs each test in one).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::Span,
};

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{AnswerStatus, AskResponse, tool_result::Outcome, value::Kind};
use quarry_server::{Role, Roles, Telemetry, TracingConfig};
use quarry_tests::{Options, TestServer, ask, authed, final_answer, first_tool_result, token};
use tokio_stream::StreamExt as _;

/// The client's span: W3C Trace Context's example ids.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/gRPC collector keeping every span it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on a free port; returns its `http://` URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        url
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Flushes `telemetry` until a span satisfies `done` (the Ask's RPC
    /// span ends only after its work, which may outlive the stream by a
    /// moment); bounded wait.
    async fn wait_for(&self, telemetry: &Telemetry, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            telemetry.flush().await;
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "spans never arrived: {:#?}",
                names(&spans)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

fn is_ask_rpc(span: &Span) -> bool {
    span.name == "quarry.v1.AssistantService/Ask"
}

/// The span's string or integer attribute `key`, as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(_)
            | Value::DoubleValue(_)
            | Value::ArrayValue(_)
            | Value::KvlistValue(_)
            | Value::BytesValue(_)
            | Value::StringValueStrindex(_) => format!("{value:?}"),
        })
}

/// The names of `span` and its ancestors, innermost first.
fn lineage<'a>(span: &'a Span, by_id: &HashMap<Vec<u8>, &'a Span>) -> Vec<&'a str> {
    let mut names = vec![span.name.as_str()];
    let mut current = span;
    while let Some(parent) = by_id.get(&current.parent_span_id) {
        names.push(parent.name.as_str());
        current = parent;
    }
    names
}

async fn ask_with_traceparent(server: &TestServer, traceparent: &str) -> Vec<AskResponse> {
    let mut request = authed(ask("What is the application name?"), &token("t1"));
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
        .metadata_mut()
        .insert("tracestate", "quarry=test".parse().unwrap());
    let mut stream = server.assistant().ask(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.unwrap());
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asks_spans_form_one_tree_under_the_clients_traceparent() {
    let collector = Collector::default();
    let telemetry = Telemetry::init(&TracingConfig {
        otlp_endpoint: Some(collector.start().await),
        batch_delay_ms: 100,
        ..TracingConfig::default()
    })
    .unwrap();
    assert!(telemetry.exporting());

    // the SQL role in one server, the assistant in another
    let sql_role = TestServer::start(Options {
        roles: Some(Roles::of([Role::Sql])),
        ..Options::default()
    })
    .await;
    create_probe(&sql_role).await;
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call(
            "query_database",
            r#"{"sql": "SELECT app FROM tate.trace_probe"}"#,
        ),
        ScriptedTurn::text("Read it."),
        ScriptedTurn::text("Hello."),
    ])
    .await;
    let assistant_role = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        extra_toml: format!("[server]\nsql_url = \"{}\"\n", sql_role.url()),
        roles: Some(Roles::of([Role::Assistant])),
        ..Options::default()
    })
    .await;

    let events = ask_with_traceparent(
        &assistant_role,
        &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
    )
    .await;
    let application_name = text_cell(&events);

    let spans = collector
        .wait_for(&telemetry, |spans| {
            spans
                .iter()
                .any(|s| is_ask_rpc(s) && hex(&s.trace_id) == CLIENT_TRACE)
        })
        .await;
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == CLIENT_TRACE)
        .collect();
    let by_id: HashMap<Vec<u8>, &Span> = trace.iter().map(|s| (s.span_id.clone(), *s)).collect();

    // the RPC span is the child of the client's span, in the client's trace
    let rpc = trace.iter().find(|s| is_ask_rpc(s)).unwrap();
    assert_eq!(hex(&rpc.parent_span_id), CLIENT_SPAN);
    assert_eq!(rpc.trace_state, "quarry=test");
    assert_eq!(attribute(rpc, "rpc.system").as_deref(), Some("grpc"));

    // model call and tool call under an Ask step under the RPC
    let one =
        |name: &str| -> Vec<&Span> { trace.iter().copied().filter(|s| s.name == name).collect() };
    let steps = one("ask.step");
    assert_eq!(steps.len(), 2, "{:#?}", names(&spans));
    for step in &steps {
        let chain = lineage(step, &by_id);
        assert_eq!(chain.last(), Some(&rpc.name.as_str()), "{chain:?}");
    }
    let model_calls = one("model.call");
    assert_eq!(model_calls.len(), 2);
    for call in &model_calls {
        assert_eq!(by_id[&call.parent_span_id].name, "ask.step");
        assert_eq!(
            attribute(call, "gen_ai.request.model").as_deref(),
            Some("scripted")
        );
    }
    let tool_calls = one("tool.call");
    assert_eq!(tool_calls.len(), 1);
    assert_eq!(by_id[&tool_calls[0].parent_span_id].name, "ask.step");
    assert_eq!(
        attribute(tool_calls[0], "gen_ai.tool.name").as_deref(),
        Some("query_database")
    );

    // the SQL role's RPC (another server) continues the trace under the
    // tool call, and the statement runs under it
    let statements = one("sql.statement");
    assert_eq!(statements.len(), 1, "{:#?}", names(&spans));
    let statement = statements[0];
    let chain = lineage(statement, &by_id);
    let remote = chain
        .iter()
        .position(|n| n.starts_with("quarry.v1.SqlService/"))
        .unwrap_or_else(|| panic!("the SQL role's RPC in {chain:?}"));
    assert_eq!(chain[remote + 1], "tool.call", "{chain:?}");
    let tool = chain.iter().position(|n| *n == "tool.call").unwrap();
    assert_eq!(chain[tool + 1], "ask.step", "{chain:?}");
    assert_eq!(chain.last(), Some(&rpc.name.as_str()), "{chain:?}");
    assert_eq!(
        attribute(statement, "db.response.returned_rows").as_deref(),
        Some("1")
    );

    // the statement ran tagged with the trace and its own span
    assert_eq!(
        application_name,
        format!("quarry 00-{CLIENT_TRACE}-{}-01", hex(&statement.span_id))
    );

    // a malformed traceparent (one the SDK's lenient parser would read as
    // trace 0xabc) is ignored: the Ask succeeds in a trace of its own
    collector.spans.lock().unwrap().clear();
    let events = ask_with_traceparent(&assistant_role, "00-abc-def-01").await;
    assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
    let spans = collector
        .wait_for(&telemetry, |spans| spans.iter().any(is_ask_rpc))
        .await;
    let rpc = spans.iter().find(|s| is_ask_rpc(s)).unwrap();
    assert!(rpc.parent_span_id.is_empty(), "a root span: {rpc:?}");
    assert_ne!(hex(&rpc.trace_id), format!("{:032x}", 0xabc));
    assert_eq!(rpc.trace_state, "");

    assistant_role.stop().await;
    sql_role.stop().await;

    // one server with every role: the SQL tool is called in process, and
    // its statement is still a child of the tool call, in the same trace
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call(
            "query_database",
            r#"{"sql": "SELECT app FROM tate.trace_probe"}"#,
        ),
        ScriptedTurn::text("Read it."),
    ])
    .await;
    let single = TestServer::with_model(&model, "").await;
    create_probe(&single).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let events = ask_with_traceparent(&single, &format!("00-{trace}-b7ad6b7169203331-01")).await;
    let application_name = text_cell(&events);
    let spans = collector
        .wait_for(&telemetry, |spans| {
            spans
                .iter()
                .any(|s| is_ask_rpc(s) && hex(&s.trace_id) == trace)
        })
        .await;
    let by_id: HashMap<Vec<u8>, &Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace)
        .map(|s| (s.span_id.clone(), s))
        .collect();
    let statement = by_id
        .values()
        .find(|s| s.name == "sql.statement")
        .unwrap_or_else(|| panic!("a statement in {:#?}", names(&spans)));
    let chain = lineage(statement, &by_id);
    let tool = chain
        .iter()
        .position(|n| *n == "tool.call")
        .unwrap_or_else(|| panic!("a tool call in {chain:?}"));
    assert_eq!(chain[tool + 1], "ask.step", "{chain:?}");
    assert_eq!(
        chain.last(),
        Some(&"quarry.v1.AssistantService/Ask"),
        "{chain:?}"
    );
    assert_eq!(
        application_name,
        format!("quarry 00-{trace}-{}-01", hex(&statement.span_id))
    );
    single.stop().await;
    telemetry.shutdown().await;
}

/// A view in `server`'s database that shows the statement's own
/// `application_name` (the SQL tool's allowlist has no `current_setting`;
/// a view's body is PostgreSQL's business).
async fn create_probe(server: &TestServer) {
    let (client, connection) = tokio_postgres::connect(server.db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE VIEW tate.trace_probe AS SELECT current_setting('application_name') AS app",
        )
        .await
        .unwrap();
}

/// The text cell of the Ask's first SQL tool result.
fn text_cell(events: &[AskResponse]) -> String {
    assert_eq!(final_answer(events).status, AnswerStatus::Answered as i32);
    let Some(Outcome::Sql(sql)) = first_tool_result(events).outcome else {
        panic!("a SQL outcome: {events:?}");
    };
    let Some(Kind::TextValue(text)) = sql.rows.unwrap().rows[0].values[0].kind.clone() else {
        panic!("a text cell");
    };
    text
}
