//! The browser surfaces: grpc-web and CORS in front of the same auth, rate
//! limit and policy layers as gRPC, the console's assets, and the console
//! driven in a real headless Chromium (Debian's, through playwright-core:
//! `console/tests/browser.mjs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use prost::Message as _;
use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    AskMode, AskRequest, AskResponse, GetConversationRequest, ListConversationsRequest,
    ask_response::Event,
};
use quarry_tests::{Options, TestServer, authed, repo_root, token, token_with_roles};

const GRPC_WEB: &str = "application/grpc-web+proto";
const ASK: &str = "/quarry.v1.AssistantService/Ask";
const LIST: &str = "/quarry.v1.AssistantService/ListConversations";

/// A grpc-web call's outcome: its grpc-status, the messages it carried, and
/// whether it had `grpc-status-details-bin`.
#[derive(Debug)]
struct WebCall {
    http: u16,
    status: Option<u32>,
    messages: Vec<Vec<u8>>,
    details: bool,
}

/// POSTs `message` to `path` over grpc-web (HTTP/1.1, binary frames) with
/// `token` (if any) and `origin` (if any) and reads the whole response.
async fn grpc_web(
    server: &TestServer,
    path: &str,
    message: &impl prost::Message,
    token: Option<&str>,
    origin: Option<&str>,
) -> WebCall {
    let payload = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&payload);
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.url()))
        .header("content-type", GRPC_WEB)
        .header("x-grpc-web", "1")
        .body(body);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    let http = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let mut status = header("grpc-status").map(|s| s.parse().unwrap());
    let mut details = header("grpc-status-details-bin").is_some();
    let bytes = response.bytes().await.unwrap();
    let mut messages = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let frame = &rest[5..5 + len];
        if flag & 0x80 == 0 {
            messages.push(frame.to_vec());
        } else {
            // the trailers frame: HTTP/1 header lines
            for line in String::from_utf8_lossy(frame).split("\r\n") {
                if let Some((name, value)) = line.split_once(':') {
                    match name.trim().to_ascii_lowercase().as_str() {
                        "grpc-status" => status = Some(value.trim().parse().unwrap()),
                        "grpc-status-details-bin" => details = true,
                        _ => {}
                    }
                }
            }
        }
        rest = &rest[5 + len..];
    }
    WebCall {
        http,
        status,
        messages,
        details,
    }
}

fn ask(question: &str) -> AskRequest {
    AskRequest {
        question: question.into(),
        mode: AskMode::Router as i32,
        ..Default::default()
    }
}

/// A token for `tenant` whose scopes leave out `ask`.
fn token_without_ask(tenant: &str) -> String {
    token_with_roles(tenant, "viewer", &["tester"], &["sql:query", "schema:read"])
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_calls_meet_the_same_auth_limits_and_policy_as_grpc() {
    let server = TestServer::start(Options {
        rate_limit: Some((1, 2)),
        extra_toml: "[server.web]\ncors_origins = [\"https://app.example\"]\n".into(),
        ..Default::default()
    })
    .await;
    let question = ask("How many artworks are in the Tate collection?");

    // no token: refused by the auth layer, grpc-web or not
    let call = grpc_web(&server, ASK, &question, None, None).await;
    assert_eq!(call.status, Some(16), "UNAUTHENTICATED: {call:?}");
    assert!(call.messages.is_empty(), "{call:?}");
    // from an allowed origin too: CORS lets the browser read, not skip auth
    let call = grpc_web(&server, ASK, &question, None, Some("https://app.example")).await;
    assert_eq!(call.status, Some(16), "UNAUTHENTICATED: {call:?}");
    // a valid token without the `ask` scope: refused by the policy layer
    let call = grpc_web(
        &server,
        ASK,
        &question,
        Some(&token_without_ask("t-denied")),
        None,
    )
    .await;
    assert_eq!(call.status, Some(7), "PERMISSION_DENIED: {call:?}");

    // with the scope: the whole stream, ending OK
    let call = grpc_web(&server, ASK, &question, Some(&token("t-ok")), None).await;
    assert_eq!((call.http, call.status), (200, Some(0)), "{call:?}");
    let events: Vec<Event> = call
        .messages
        .iter()
        .map(|m| AskResponse::decode(&m[..]).unwrap().event.unwrap())
        .collect();
    assert!(
        matches!(events.first(), Some(Event::Started(_))),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::FinalAnswer(a) if !a.text.is_empty())),
        "{events:?}"
    );

    // the tenant's rate limit (1/s, burst 2) holds for grpc-web calls:
    // refused within a few quick calls, with RetryInfo in the details
    let limited = token("t-limited");
    let mut refused = None;
    for _ in 0..10 {
        let call = grpc_web(
            &server,
            LIST,
            &ListConversationsRequest::default(),
            Some(&limited),
            None,
        )
        .await;
        if call.status != Some(0) {
            refused = Some(call);
            break;
        }
    }
    let refused = refused.expect("the rate limit refuses a grpc-web call");
    assert_eq!(refused.status, Some(8), "RESOURCE_EXHAUSTED: {refused:?}");
    assert!(
        refused.details,
        "RetryInfo travels in grpc-status-details-bin"
    );

    // CORS: a preflight from the configured origin is answered before auth
    // (no token) and allows the grpc-web headers; another origin is not
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{}{ASK}", server.url()))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web,x-user-agent",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert!(allowed.status().is_success(), "{allowed:?}");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for name in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "grpc-timeout",
    ] {
        assert!(headers.contains(name), "{name} in {headers}");
    }
    let other = preflight("https://evil.example").await.unwrap();
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "{other:?}"
    );
    // an actual call from the allowed origin exposes the grpc-status header
    let response = client
        .post(format!("{}{LIST}", server.url()))
        .header("content-type", GRPC_WEB)
        .header("origin", "https://app.example")
        .body(vec![0, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(exposed.contains("grpc-status"), "{exposed}");
    server.stop().await;
}

/// Sends one HTTP/1.1 request on `stream` (its head, then after a pause its
/// body, so that a server answering on the head alone answers before the
/// body arrives) and reads its whole answer. Returns the status line and
/// the `grpc-status` header or trailer, or `None` when the server closed
/// the connection instead of answering.
async fn exchange_on(
    stream: &mut tokio::net::TcpStream,
    head: &str,
    body: &[u8],
) -> Option<(String, Option<String>)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(head.as_bytes()).await.ok()?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(body).await.ok()?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = text[..end].to_ascii_lowercase();
        let complete = if head.contains("transfer-encoding: chunked") {
            text[end..].contains("\r\n0\r\n\r\n")
        } else {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0);
            answer.len() >= end + 4 + length
        };
        if complete {
            let status = text.lines().next()?.to_owned();
            let grpc_status = text
                .to_ascii_lowercase()
                .split("grpc-status:")
                .nth(1)
                .and_then(|rest| rest.split(['\r', '\n']).next())
                .map(|s| s.trim().to_owned());
            return Some((status, grpc_status));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_grpc_web_call_leaves_the_http1_connection_usable() {
    let server = TestServer::start(Options::default()).await;
    let address = server.url().trim_start_matches("http://").to_owned();
    let payload = ListConversationsRequest::default().encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&payload);
    let valid = token("t-web-conn");
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    // refused by the auth layer on the head alone (no token, then a bad
    // one), then a valid call, all on one connection: each refused call's
    // body is read, so the connection carries the next call
    for (authorization, expected) in [
        (String::new(), "16"),
        ("authorization: Bearer not.a.jwt\r\n".to_owned(), "16"),
        (format!("authorization: Bearer {valid}\r\n"), "0"),
    ] {
        let head = format!(
            "POST {LIST} HTTP/1.1\r\nhost: {address}\r\ncontent-type: {GRPC_WEB}\r\n\
             x-grpc-web: 1\r\n{authorization}content-length: {}\r\n\r\n",
            body.len()
        );
        let answer = exchange_on(&mut stream, &head, &body).await;
        let (status, grpc_status) = answer
            .unwrap_or_else(|| panic!("connection closed instead of answering {authorization:?}"));
        assert_eq!(status, "HTTP/1.1 200 OK", "{authorization:?}");
        assert_eq!(grpc_status.as_deref(), Some(expected), "{authorization:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let server = TestServer::start(Options::default()).await;
    let client = reqwest::Client::new();
    let page = client.get(server.url()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/console/app.js"), "{html}");
    let script = client
        .get(format!("{}/console/app.js", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(script.headers()["content-type"], "text/javascript");
    // the console is not behind gRPC auth, but gRPC still is
    let call = grpc_web(
        &server,
        LIST,
        &ListConversationsRequest::default(),
        None,
        None,
    )
    .await;
    assert_eq!(call.status, Some(16), "{call:?}");
    server.stop().await;
}

/// Runs a `dev/` script with `arg`, panicking with its output on failure.
fn dev(script: &str, arg: &str) {
    let output = Command::new(repo_root().join("dev").join(script))
        .arg(arg)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "dev/{script} {arg}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `console/tests/browser.mjs` in Debian's chromium with `env` (after
/// installing chromium and the console's pinned npm packages, from nothing)
/// and returns what it saw (its last line of output, JSON).
async fn browser(env: Vec<(&'static str, String)>) -> serde_json::Value {
    dev("chromium.sh", "install");
    dev("console.sh", "install");
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(repo_root().join("console/tests/browser.mjs"))
            .current_dir(repo_root().join("console"))
            .env("QUARRY_SHOTS", shots())
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser run failed:\n{stdout}\n{stderr}"
    );
    eprintln!(
        "browser run: {:.1} s, screenshots in {}\n{stdout}",
        started.elapsed().as_secs_f64(),
        shots().display()
    );
    serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap()
}

/// Where the browser runs save their screenshots (test artefacts).
fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_answers_in_a_real_browser() {
    let server = TestServer::start(Options::default()).await;
    // the same data behind a low rate limit, for the "wait N s" message
    let limited = TestServer::start(Options {
        database: Some(std::sync::Arc::clone(&server.db)),
        rate_limit: Some((1, 2)),
        ..Default::default()
    })
    .await;
    let mut expired =
        quarry_auth::Claims::issued_now("t-console", "visitor", Duration::from_secs(1));
    expired.exp = 1;
    expired.roles = vec!["tester".into()];
    let expired = quarry_auth::mint_hs256(quarry_tests::SECRET.as_bytes(), &expired).unwrap();
    let seen = browser(vec![
        ("QUARRY_URL", server.url()),
        ("QUARRY_TOKEN", token("t-console")),
        ("QUARRY_TOKEN_NO_ASK", token_without_ask("t-console")),
        ("QUARRY_TOKEN_EXPIRED", expired),
        ("QUARRY_URL_LIMITED", limited.url()),
        // its own tenant: the quota is shared by servers on one database
        ("QUARRY_TOKEN_LIMITED", token("t-busy")),
    ])
    .await;
    for shot in ["console-desktop.png", "console-phone.png"] {
        let bytes = std::fs::read(shots().join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
    // what the browser showed is what the server stored: the conversation
    // it continued holds both turns
    let id = seen["conversation"].as_str().unwrap().to_owned();
    let stored = server
        .assistant()
        .get_conversation(authed(
            GetConversationRequest {
                conversation_id: id.clone(),
            },
            &token("t-console"),
        ))
        .await
        .unwrap()
        .into_inner();
    let questions: Vec<&str> = stored.turns.iter().map(|t| t.question.as_str()).collect();
    assert_eq!(
        questions,
        [
            "What are the 10 most common mediums?",
            "How many artworks are in the Tate collection?"
        ],
        "{id}"
    );
    assert!(seen["limited"].as_str().unwrap().contains("Wait"), "{seen}");
    limited.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_lists_search_hits_and_summaries_in_a_real_browser() {
    let server = TestServer::start(Options {
        search: true,
        summaries: true,
        ..Default::default()
    })
    .await;
    quarry_tests::wait_until_summaries_built(&server).await;
    quarry_tests::wait_until_indexed(&server).await;
    let seen = browser(vec![
        ("QUARRY_SCENARIO", "retrieval".into()),
        ("QUARRY_URL", server.url()),
        ("QUARRY_TOKEN", token("t-retrieval")),
        (
            "QUARRY_QUESTION",
            "William Blake's acquisition history, and any works whose credit line mentions a widow?"
                .into(),
        ),
    ])
    .await;
    assert!(
        seen["route"].as_str().unwrap().contains("summaries+search"),
        "{seen}"
    );
    assert!(seen["hits"].as_u64().unwrap() > 0, "{seen}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_the_answer_while_it_streams_in_a_real_browser() {
    // the model calls the SQL tool, then streams its answer in four parts
    // 700 ms apart: the page must show the table and the first part while
    // the stream is still open
    let chunks = [
        "The most common medium in the slice ",
        "is graphite on paper, ",
        "ahead of ink on paper ",
        "and line engraving.",
    ];
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call(
            "query_database",
            r#"{"sql": "SELECT medium, count(*) AS works FROM tate.artworks WHERE medium IS NOT NULL GROUP BY medium ORDER BY works DESC LIMIT 10"}"#,
        )
        .with_usage(120, 30),
        ScriptedTurn::text_chunks(chunks)
            .with_chunk_delay(Duration::from_millis(700))
            .with_usage(300, 20),
    ])
    .await;
    let server = TestServer::with_model(&model, "").await;
    let seen = browser(vec![
        ("QUARRY_SCENARIO", "streaming".into()),
        ("QUARRY_URL", server.url()),
        ("QUARRY_TOKEN", token("t-stream")),
        ("QUARRY_QUESTION", "Which mediums are most common?".into()),
        ("QUARRY_FIRST_CHUNK", chunks[0].trim_end().into()),
        ("QUARRY_ANSWER", chunks.concat()),
    ])
    .await;
    assert!(
        seen["doneWhileStreaming"].is_null(),
        "the turn was still open: {seen}"
    );
    assert_eq!(model.request_count(), 2, "{seen}");
    server.stop().await;
}
