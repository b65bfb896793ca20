//! The MCP endpoint end to end (issue 17): `quarry serve` over the Tate
//! slice, driven by the official MCP Python SDK (PyPI `mcp`, installed by
//! `dev/mcp.sh`; the client is `tests/mcp/client.py`) — tools listed with
//! their schemas, each called, progress during `ask`, refusals for a token
//! without a scope, 401 with `WWW-Authenticate` without a token — and by raw
//! JSON-RPC over HTTP, for what must hold by construction: a tool call
//! passes the gRPC policy layer (refused and audited without the scope) and
//! spends the tenant's rate limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::ListAuditEntriesRequest;
use quarry_tests::{
    Options, SLICE_LINES, TestServer, authed, token, token_with_roles, token_with_scopes,
};
use serde_json::{Value as Json, json};

const COUNT_SQL: &str = "SELECT count(*) AS artworks FROM tate.artworks";

/// A token of tenant `t1` whose only scope is `ask`.
fn ask_only_token() -> String {
    token_with_roles("t1", "narrow", &["tester"], &["ask"])
}

/// The interpreter with the MCP SDK, installed on first use by `dev/mcp.sh`.
fn python() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/mcp.sh");
    let out = Command::new(&script).output().unwrap();
    assert!(
        out.status.success(),
        "dev/mcp.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The number of artworks in the slice, as the database counts them.
async fn artworks(server: &TestServer) -> i64 {
    let (client, connection) = tokio_postgres::connect(server.db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query_one(COUNT_SQL, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
}

/// One JSON-RPC request to `/mcp` with `token` (none: no header): the HTTP
/// status, the `WWW-Authenticate` header, and the JSON-RPC response (from a
/// JSON body or the event stream's message with the request's id).
async fn rpc(server: &TestServer, token: Option<&str>, body: Json) -> (u16, String, Option<Json>) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/mcp", server.url()))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let event_stream = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    let message = if event_stream {
        text.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str::<Json>(data.trim()).ok())
            .find(|m| m.get("id") == body.get("id"))
    } else {
        serde_json::from_str(&text).ok()
    };
    (status, challenge, message)
}

fn call(id: u64, name: &str, arguments: Json) -> Json {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments}
    })
}

/// The text and `isError` of a `tools/call` result.
fn tool_result(message: &Option<Json>) -> (String, bool) {
    let message = message.as_ref().expect("a JSON-RPC response");
    let result = message
        .get("result")
        .unwrap_or_else(|| panic!("not a result: {message}"));
    let text = result["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    (text, result["isError"].as_bool().unwrap_or(false))
}

/// Waits (bounded) until the audit log holds a refusal of `subject` whose
/// path contains `rpc` and whose message contains `message` (the policy
/// layer records refusals on a task of their own).
async fn wait_for_refusal(server: &TestServer, subject: &str, rpc: &str, message: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entries = server
            .sql()
            .list_audit_entries(authed(
                ListAuditEntriesRequest {
                    limit: 100,
                    before_id: 0,
                },
                &token_with_scopes("t1", &["audit:read"]),
            ))
            .await
            .unwrap()
            .into_inner()
            .entries;
        if entries.iter().any(|e| {
            e.subject == subject
                && e.outcome == "refused"
                && e.action.contains(rpc)
                && e.detail.contains(message)
        }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no audited refusal of {subject} for {rpc}: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_python_sdk_lists_every_tool_calls_each_and_is_refused_without_the_scope() {
    let server = TestServer::start(Options {
        search: true,
        summaries: true,
        ..Default::default()
    })
    .await;
    quarry_tests::wait_until_summaries_built(&server).await;
    quarry_tests::wait_until_indexed(&server).await;
    let artworks = artworks(&server).await;
    let url = format!("{}/mcp", server.url());
    let (full, narrow) = (token("t1"), ask_only_token());
    let out = tokio::task::spawn_blocking(move || {
        let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/client.py");
        Command::new(python())
            .arg(client)
            .args(["--url", &url, "--token", &full, "--narrow-token", &narrow])
            .args(["--artworks", &artworks.to_string()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/mcp/client.py failed:\n{stderr}"
    );
    let report: Json = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(
        report["tools"],
        json!([
            "ask",
            "explain_sql",
            "get_summaries",
            "query_database",
            "search_documents"
        ])
    );
    // the schemas are the ones the orchestrator writes for models
    assert_eq!(
        report["schemas"]["query_database"]["properties"]["sql"]["description"],
        "One SELECT, tables schema-qualified."
    );
    assert_eq!(
        report["schemas"]["search_documents"]["properties"]["collection"]["enum"],
        json!(["artworks"])
    );
    let progress = report["progress"].as_array().unwrap();
    assert!(progress.len() >= 5, "{progress:?}");
    assert!(
        report["refusals"]["query_database"]
            .as_str()
            .unwrap()
            .contains("missing scope sql:query")
    );
    // the refusals went through the gRPC policy layer, which audits them
    wait_for_refusal(&server, "narrow", "ExecuteSql", "missing scope sql:query").await;
    wait_for_refusal(&server, "narrow", "ExplainSql", "missing scope sql:explain").await;
    server.stop().await;
}

/// The test that fails if MCP tool calls stop passing the gRPC policy
/// layer: the same call is answered for a token with `sql:query`, refused
/// (as a tool error naming the scope, not an HTTP error) for one without,
/// and the refusal is in the audit log; no token at all is HTTP 401.
#[tokio::test]
async fn an_mcp_tool_call_is_authorised_by_the_grpc_policy() {
    let server = TestServer::start(Options::default()).await;
    let (status, challenge, _) = rpc(&server, None, call(1, "query_database", json!({}))).await;
    assert_eq!(status, 401);
    assert!(
        challenge.starts_with("Bearer resource_metadata=\"http://")
            && challenge.ends_with("/.well-known/oauth-protected-resource/mcp\""),
        "{challenge}"
    );

    let arguments = json!({"sql": COUNT_SQL});
    let (status, _, message) = rpc(
        &server,
        Some(&token("t1")),
        call(2, "query_database", arguments.clone()),
    )
    .await;
    assert_eq!(status, 200, "{message:?}");
    let (text, is_error) = tool_result(&message);
    assert!(!is_error, "{text}");
    assert!(
        text.contains(&artworks(&server).await.to_string()),
        "{text}"
    );

    let (status, _, message) = rpc(
        &server,
        Some(&ask_only_token()),
        call(3, "query_database", arguments),
    )
    .await;
    assert_eq!(status, 200, "a refusal is a tool error, not HTTP {status}");
    let (text, is_error) = tool_result(&message);
    assert!(is_error, "{text}");
    assert_eq!(text, "query_database: missing scope sql:query");

    wait_for_refusal(&server, "narrow", "ExecuteSql", "missing scope sql:query").await;
    server.stop().await;
}

/// MCP tool calls spend the tenant's gRPC rate limit: with a burst of 2
/// and one request a second, calls in a row are soon refused with the
/// rate-limit message, as tool errors.
#[tokio::test]
async fn mcp_tool_calls_spend_the_tenants_rate_limit() {
    let server = TestServer::start(Options {
        rate_limit: Some((1, 2)),
        ..Default::default()
    })
    .await;
    let token = token("t1");
    let mut refused = None;
    for id in 0..50 {
        let (status, _, message) = rpc(
            &server,
            Some(&token),
            call(id, "query_database", json!({"sql": COUNT_SQL})),
        )
        .await;
        assert_eq!(status, 200);
        let (text, is_error) = tool_result(&message);
        if is_error {
            refused = Some((id, text));
            break;
        }
    }
    let (id, text) = refused.expect("50 calls in a row were all admitted");
    assert!(id >= 2, "refused at call {id}, within the burst: {text}");
    assert!(text.contains("rate limit exceeded for tenant t1"), "{text}");
    server.stop().await;
}

/// `ask` in agentic mode (the scripted model calls `query_database`, then
/// streams its answer in three pieces), with a progress token: the event
/// stream carries one progress notification per `Ask` event, in order —
/// the route, the tool call and its result, each answer piece — before the
/// result, which holds the whole answer and its citation.
#[tokio::test]
async fn ask_streams_the_agents_progress_before_its_answer() {
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("query_database", json!({"sql": COUNT_SQL}).to_string()),
        ScriptedTurn::text_chunks([
            "The collection ",
            "holds ",
            &format!("{SLICE_LINES} artworks."),
        ]),
    ])
    .await;
    let server = TestServer::with_model(&model, "").await;
    let mut request = call(7, "ask", json!({"question": "How big is the collection?"}));
    request["params"]["_meta"] = json!({"progressToken": "p7"});
    let response = reqwest::Client::new()
        .post(format!("{}/mcp", server.url()))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", format!("Bearer {}", token("t1")))
        .body(request.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let messages: Vec<Json> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect();
    let progress: Vec<&str> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .inspect(|m| assert_eq!(m["params"]["progressToken"], "p7"))
        .map(|m| m["params"]["message"].as_str().unwrap())
        .collect();
    let kinds: Vec<&str> = progress
        .iter()
        .map(|m| m.split([' ', ':']).next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "started",
            "route",
            "calling",
            "query_database",
            "answer",
            "answer",
            "answer",
            "answered",
            "usage"
        ],
        "{progress:#?}"
    );
    assert!(progress[1].starts_with("route: agent"), "{}", progress[1]);
    assert_eq!(
        progress[4..7],
        [
            "answer: The collection ",
            "answer: holds ",
            &format!("answer: {SLICE_LINES} artworks.")
        ]
    );
    // the result comes after every notification
    let last = messages.last().unwrap();
    assert_eq!(last["id"], 7, "{last}");
    let (answer, is_error) = tool_result(&Some(last.clone()));
    assert!(!is_error, "{answer}");
    assert!(
        answer.starts_with(&format!("The collection holds {SLICE_LINES} artworks.")),
        "{answer}"
    );
    assert_eq!(
        last["result"]["structuredContent"]["citations"][0]["kind"],
        "CITATION_KIND_SQL_ROWS"
    );
    server.stop().await;
}

/// DNS-rebinding protection: with a valid token, a request whose `Host` is
/// not an allowed name (default: loopback) is refused before any tool
/// runs; `[mcp] allowed_hosts` admits a name.
#[tokio::test]
async fn only_allowed_host_names_reach_the_tools() {
    let server = TestServer::start(Options {
        extra_toml: "[mcp]\nallowed_hosts = [\"127.0.0.1\", \"quarry.example.com\"]\n".into(),
        ..Default::default()
    })
    .await;
    let status = |host: &'static str| {
        let url = format!("{}/mcp", server.url());
        async move {
            reqwest::Client::new()
                .post(url)
                .header("host", host)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .header("mcp-protocol-version", "2025-06-18")
                .header("authorization", format!("Bearer {}", token("t1")))
                .body(call(1, "query_database", json!({"sql": COUNT_SQL})).to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("quarry.example.com").await, 200);
    let refused = status("attacker.example").await;
    assert!((400..500).contains(&refused), "HTTP {refused}");
    server.stop().await;
}
