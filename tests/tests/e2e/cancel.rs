//! Cancellation end to end (issue 6, item 4): when the client of an `Ask`
//! cancels or its deadline passes, the database query the model asked for
//! stops on the PostgreSQL server (checked in `pg_stat_activity`) and the
//! model's stream is abandoned (checked with a TCP tap between Quarry and the
//! scripted model, which sees Quarry hang up before the stream's end).
//!
//! Every limit that could stop the work on its own is raised far above the
//! bounded waits here (statement timeout, the per-question deadline, the
//! model timeout), so what stops it can only be the client going away. No
//! assertion is about speed: each wait is bounded generously, and the work
//! waited on would run several times longer than that bound if nothing
//! cancelled it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    AnswerStatus, AskResponse, ExecuteSqlRequest, ValidateSqlRequest, ask_response::Event,
};
use quarry_tests::{Options, SLICE_LINES, TestServer, ask, ask_all, authed, final_answer, token};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::{Code, Streaming};

/// A read-only query the validator accepts that runs for minutes over the
/// 300-row slice: a four-way cross join counts 300⁴ = 8.1·10⁹ rows in a
/// nested loop (no parallel plan for tables this small). The alias marks it
/// in `pg_stat_activity`.
const SLOW_SQL: &str = "SELECT count(*) AS quarry_cancel_probe \
     FROM tate.artworks a, tate.artworks b, tate.artworks c, tate.artworks d";

/// The same join one table short (300³ rows): it takes about a second, and
/// [`SLOW_SQL`] does [`SLICE_LINES`] times its work.
const PROBE_SQL: &str = "SELECT count(*) FROM tate.artworks a, tate.artworks b, tate.artworks c";

/// Bound on each wait for something the test expects to happen (the query
/// to appear or disappear, the stream to end, the tap to see a hang-up).
const WAIT: Duration = Duration::from_secs(30);

/// Limits far above [`WAIT`] and the slow work, so that none of them ends
/// the work instead of the cancellation under test: the statement timeout
/// (default 10 s), the per-question deadline (default 60 s) and the model
/// stream's deadline (10 s in the fixture).
const NO_LIMITS: &str = "
[sql.exec]
statement_timeout_ms = 900000
[orchestrator]
deadline_secs = 900
[model]
timeout_secs = 900
";

async fn start(model_base_url: String) -> TestServer {
    TestServer::start(Options {
        model_base_url: Some(model_base_url),
        extra_toml: NO_LIMITS.to_string(),
        ..Default::default()
    })
    .await
}

/// Checks that [`SLOW_SQL`] is accepted and would run for much longer than
/// [`WAIT`]: times [`PROBE_SQL`] (a [`SLICE_LINES`]th of the work) directly
/// on the test database and returns the estimate for the slow query.
async fn slow_query_estimate(server: &TestServer) -> Duration {
    let validated = server
        .sql()
        .validate_sql(authed(
            ValidateSqlRequest {
                sql: SLOW_SQL.into(),
            },
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        validated.valid,
        "the validator refuses the slow query: {validated:?}"
    );
    let client = server.db.pool().get().await.unwrap();
    let started = Instant::now();
    client.query_one(PROBE_SQL, &[]).await.unwrap();
    let estimate = started.elapsed() * SLICE_LINES as u32;
    assert!(
        estimate > WAIT * 3,
        "the slow query would take only about {estimate:?}, too little to tell a cancel from \
         completion within {WAIT:?}; add a join"
    );
    estimate
}

/// Backends of the test database other than this one running [`SLOW_SQL`].
async fn running_slow_queries(server: &TestServer) -> i64 {
    let client = server.db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND state = 'active' AND query LIKE '%quarry_cancel_probe%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Polls every 100 ms until [`running_slow_queries`] is `want`, at most [`WAIT`].
async fn wait_for_running(server: &TestServer, want: i64, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let running = running_slow_queries(server).await;
        if running == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {running} slow queries active after {WAIT:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads events until one matches `wanted`, at most [`WAIT`]; returns the
/// events read.
async fn read_until(
    stream: &mut Streaming<AskResponse>,
    wanted: impl Fn(&Event) -> bool,
    what: &str,
) -> Vec<AskResponse> {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(WAIT, async {
        while let Some(event) = stream.next().await {
            let event = event.unwrap_or_else(|status| panic!("{what}: error {status:?}"));
            let done = event.event.as_ref().is_some_and(&wanted);
            seen.push(event);
            if done {
                return;
            }
        }
        panic!("{what}: the stream ended first: {seen:?}");
    })
    .await;
    assert!(result.is_ok(), "{what}: not within {WAIT:?}");
    seen
}

/// A model whose first turn runs [`SLOW_SQL`]; the answer it would give
/// after the result is never asked for.
async fn slow_sql_model() -> ScriptedServer {
    let arguments = serde_json::json!({ "sql": SLOW_SQL }).to_string();
    ScriptedServer::start(vec![
        ScriptedTurn::tool_call("query_database", arguments),
        ScriptedTurn::text("There are many combinations."),
    ])
    .await
}

#[tokio::test]
async fn client_cancel_stops_the_running_database_query() {
    let model = slow_sql_model().await;
    let server = start(model.base_url()).await;
    let estimate = slow_query_estimate(&server).await;

    let mut stream = server
        .assistant()
        .ask(authed(
            ask("How many four-artwork combinations are there?"),
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    read_until(
        &mut stream,
        |e| matches!(e, Event::ToolCallStarted(_)),
        "tool_call_started",
    )
    .await;
    wait_for_running(&server, 1, "the slow query never started").await;

    // the client cancels: dropping the response stream resets the HTTP/2 stream
    drop(stream);
    wait_for_running(
        &server,
        0,
        &format!(
            "the query still runs after the client cancelled (uncancelled it would run about {estimate:?})"
        ),
    )
    .await;
    assert_eq!(
        model.requests().len(),
        1,
        "the model was asked again after the cancel"
    );

    server.stop().await;
}

#[tokio::test]
async fn client_deadline_stops_the_running_database_query() {
    let model = slow_sql_model().await;
    let server = start(model.base_url()).await;
    let estimate = slow_query_estimate(&server).await;

    let mut request = authed(
        ask("How many four-artwork combinations are there?"),
        &token("t1"),
    );
    request.set_timeout(Duration::from_secs(2));
    let mut stream = server.assistant().ask(request).await.unwrap().into_inner();
    // the deadline (sent as `grpc-timeout`) passes while the query runs; the
    // stream must end, with DEADLINE_EXCEEDED or an answer cut short
    let mut events = Vec::new();
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => events.push(event),
                Err(status) => return Some(status),
            }
        }
        None
    })
    .await;
    let Ok(ended) = ended else {
        panic!(
            "the stream did not end within {WAIT:?} of a 2 s deadline (uncancelled the query \
             would run about {estimate:?}); events: {events:?}"
        )
    };
    match ended {
        Some(status) => assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        ),
        None => {
            let last = events
                .iter()
                .rev()
                .find_map(|e| match &e.event {
                    Some(Event::FinalAnswer(f)) => Some(f.status),
                    _ => None,
                })
                .expect("a stream that ends normally ends with a final answer");
            assert_ne!(last, AnswerStatus::Answered as i32, "{events:?}");
        }
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, Some(Event::ToolCallStarted(_)))),
        "the query was never started: {events:?}"
    );
    wait_for_running(
        &server,
        0,
        &format!(
            "the query still runs after the client's deadline (uncancelled it would run about {estimate:?})"
        ),
    )
    .await;
    assert_eq!(
        model.requests().len(),
        1,
        "the model was asked again after the deadline"
    );

    server.stop().await;
}

/// The layer under the Assistant on its own: a cancelled `ExecuteSql` call
/// stops its query (the executor cancels it on the server when the call is
/// dropped). Separates a fault in the SQL tool from one in the Assistant.
#[tokio::test]
async fn client_cancel_of_execute_sql_stops_the_query() {
    let server = TestServer::start(Options {
        extra_toml: "[sql.exec]\nstatement_timeout_ms = 900000\n".to_string(),
        ..Default::default()
    })
    .await;
    let estimate = slow_query_estimate(&server).await;

    let mut sql = server.sql();
    let mut call = Box::pin(sql.execute_sql(authed(
        ExecuteSqlRequest {
            sql: SLOW_SQL.into(),
            max_rows: 0,
        },
        &token("t1"),
    )));
    tokio::select! {
        result = &mut call => panic!("the slow query finished: {result:?}"),
        () = wait_for_running(&server, 1, "the slow query never started") => {}
    }
    drop(call);
    wait_for_running(
        &server,
        0,
        &format!(
            "the query still runs after the ExecuteSql call was cancelled (uncancelled it would run about {estimate:?})"
        ),
    )
    .await;

    server.stop().await;
}

/// What a [`Tap`] saw on one connection from Quarry to the model.
#[derive(Debug, Default)]
struct TapConnection {
    /// Bytes the model sent towards Quarry.
    to_quarry: Vec<u8>,
    /// Quarry closed its side of the connection.
    quarry_hung_up: bool,
    /// `to_quarry` held the stream's `data: [DONE]` when Quarry hung up.
    done_when_hung_up: bool,
}

/// A TCP relay in front of the scripted model that records, per
/// connection, what the model sent and whether Quarry hung up — the one
/// way to see that Quarry abandoned a model stream without changing the
/// scripted server.
struct Tap {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<TapConnection>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<TapConnection>>> = Arc::default();
        let shared = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((quarry, _)) = listener.accept().await else {
                    return;
                };
                let Ok(model) = TcpStream::connect(upstream).await else {
                    return;
                };
                let index = {
                    let mut all = shared.lock().unwrap();
                    all.push(TapConnection::default());
                    all.len() - 1
                };
                let (mut quarry_read, mut quarry_write) = quarry.into_split();
                let (mut model_read, mut model_write) = model.into_split();
                let seen = shared.clone();
                tokio::spawn(async move {
                    // EOF or an error: Quarry closed the connection
                    let _ = tokio::io::copy(&mut quarry_read, &mut model_write).await;
                    let mut all = seen.lock().unwrap();
                    let connection = &mut all[index];
                    connection.quarry_hung_up = true;
                    connection.done_when_hung_up = contains(&connection.to_quarry, b"[DONE]");
                });
                let seen = shared.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 8192];
                    loop {
                        let n = match model_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        seen.lock().unwrap()[index]
                            .to_quarry
                            .extend_from_slice(&buffer[..n]);
                        if quarry_write.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Whether Quarry hung up a connection on which the model had started
    /// streaming but had not sent `[DONE]`.
    fn hung_up_mid_stream(&self) -> bool {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.quarry_hung_up && !c.done_when_hung_up && contains(&c.to_quarry, b"data: "))
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn client_cancel_stops_the_model_stream() {
    // 2,000 characters in 4-character deltas every 200 ms: 100 s to stream
    let long = "All work and no play makes a slow model. ".repeat(50);
    let model = ScriptedServer::start(vec![
        ScriptedTurn::text(&long).with_chunk_delay(Duration::from_millis(200)),
        ScriptedTurn::text("The second answer."),
    ])
    .await;
    let tap = Tap::start(model.addr()).await;
    let server = start(tap.base_url()).await;

    let mut stream = server
        .assistant()
        .ask(authed(ask("Tell me a long story."), &token("t1")))
        .await
        .unwrap()
        .into_inner();
    read_until(
        &mut stream,
        |e| matches!(e, Event::AnswerDelta(_)),
        "answer_delta",
    )
    .await;
    assert!(
        !tap.hung_up_mid_stream(),
        "hung up before the client cancelled"
    );

    drop(stream);
    let deadline = Instant::now() + WAIT;
    while !tap.hung_up_mid_stream() {
        assert!(
            Instant::now() < deadline,
            "Quarry still reads the model stream {WAIT:?} after the client cancelled \
             (the whole stream takes about 100 s): {:?}",
            tap.connections
                .lock()
                .unwrap()
                .iter()
                .map(|c| (c.quarry_hung_up, c.to_quarry.len()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // the server is still healthy: the next question gets the next turn
    let events = ask_all(&server, ask("And a short one?")).await.unwrap();
    let answer = final_answer(&events);
    assert_eq!(answer.status, AnswerStatus::Answered as i32, "{events:?}");
    assert_eq!(answer.text, "The second answer.");
    assert_eq!(model.requests().len(), 2);

    server.stop().await;
}
