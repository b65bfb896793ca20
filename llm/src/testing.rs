//! A scripted OpenAI-compatible HTTP server for tests (feature `test-util`).
//!
//! [`ScriptedServer`] binds `127.0.0.1:0` and answers
//! `POST /v1/chat/completions` (and `/chat/completions`) from a queue of
//! [`ScriptedTurn`]s, one per request, streaming `text/event-stream` the way
//! the real API does: a first chunk with `delta.role = "assistant"`, content
//! in small deltas, each tool call's `id`/`type`/`function.name` in its first
//! delta and `function.arguments` spread over several later ones, a chunk with
//! the `finish_reason`, a `choices: []` chunk with `usage` when the request set
//! `stream_options.include_usage`, then `data: [DONE]`. Requests without
//! `stream: true` get one `chat.completion` JSON object. Every request body is
//! recorded for assertions. Connections have `TCP_NODELAY` set, so streamed
//! chunks are not held back by Nagle's algorithm.
//!
//! For load tests, where many requests are in flight at once and a FIFO
//! queue cannot say which answer belongs to which request, a server started
//! with [`ScriptedServer::start_responder`] asks a function for each
//! request's turn instead: it sees the request body (the `messages`, the
//! `tools`, …) and returns the [`ScriptedTurn`] to play, delay included (the
//! delay is applied per request, so concurrent requests wait concurrently).
//! Turns queued with [`ScriptedServer::push`] are still served first, in
//! order (e.g. to inject an error). A responder server keeps only the first
//! [`RESPONDER_RECORD_LIMIT`] request bodies, so a long benchmark does not
//! grow without bound; [`ScriptedServer::set_record_limit`] changes that and
//! [`ScriptedServer::request_count`] counts every request.
//!
//! It also answers `POST /v1/embeddings` (and `/embeddings`): each input text
//! gets [`scripted_embedding`] of the requested `dimensions` (default
//! [`SCRIPTED_EMBEDDING_DIMENSION`]), with the `data` items in reverse order
//! to check that clients sort by `index`. If the next scripted turn is an
//! error ([`ScriptedTurn::error`], [`ScriptedTurn::rate_limited`]), an
//! embeddings request consumes it and gets that error instead.
//!
//! ```no_run
//! # async fn demo() {
//! use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
//!
//! let server = ScriptedServer::start(vec![
//!     ScriptedTurn::tool_call("run_sql", r#"{"sql":"select 1"}"#),
//!     ScriptedTurn::text("There is one row."),
//! ])
//! .await;
//! let config = quarry_llm::ModelConfig::new(server.base_url(), "scripted");
//! // ... run the code under test, then:
//! assert_eq!(server.requests().len(), 2);
//!
//! // One turn per request, decided from the request: a tool call first, the
//! // answer once the tool's result is in the conversation; 50 ms each.
//! let server = ScriptedServer::start_responder(|request: &serde_json::Value| {
//!     let has_tool_result = request["messages"]
//!         .as_array()
//!         .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
//!     let turn = if has_tool_result {
//!         ScriptedTurn::text("There is one row.")
//!     } else {
//!         ScriptedTurn::tool_call("run_sql", r#"{"sql":"select 1"}"#)
//!     };
//!     turn.with_delay(std::time::Duration::from_millis(50))
//! })
//! .await;
//! server.set_record_limit(0); // count requests, keep no bodies
//! # }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt as _;
use serde_json::{Value, json};

/// Size of the pieces text and tool arguments are cut into, in characters.
const PIECE_CHARS: usize = 4;

/// `created` timestamp on every scripted response (fixed, so runs compare).
const CREATED: u64 = 1_700_000_000;

/// Vector length of scripted embeddings when the request names no `dimensions`.
pub const SCRIPTED_EMBEDDING_DIMENSION: usize = 8;

/// Request bodies a server started with [`ScriptedServer::start_responder`]
/// keeps (the first ones); later requests are counted, not stored. A
/// FIFO-scripted server keeps every body.
pub const RESPONDER_RECORD_LIMIT: usize = 1_000;

/// The vector the scripted server returns for `text`: `dimension` values in
/// `1.0..=256.0` derived from the text's bytes (FNV-1a), not unit length, so
/// clients' normalisation shows.
pub fn scripted_embedding(text: &str, dimension: usize) -> Vec<f32> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (0..dimension)
        .map(|i| {
            hash ^= i as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
            f32::from(u8::try_from(hash >> 56).unwrap_or(0)) + 1.0
        })
        .collect()
}

/// One scripted answer: what the server does for one request.
#[derive(Debug, Clone)]
pub struct ScriptedTurn {
    reply: Reply,
    delay: Duration,
    chunk_delay: Duration,
    usage: Option<(u32, u32)>,
    /// `usage.prompt_tokens_details.cached_tokens`, when set.
    cached_tokens: Option<u32>,
}

#[derive(Debug, Clone)]
enum Reply {
    Assistant {
        content: Vec<String>,
        tool_calls: Vec<ScriptedToolCall>,
        finish_reason: Option<String>,
    },
    Error {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    Raw(Vec<String>),
}

/// A tool call the scripted model makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedToolCall {
    /// Call id; empty means the server assigns `call_<request>_<index>`.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments JSON text, streamed in pieces of a few characters.
    pub arguments: String,
}

impl ScriptedToolCall {
    /// A call of `name` with `arguments` (JSON text) and a server-assigned id.
    pub fn new(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self {
            id: String::new(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    /// Sets the call id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }
}

impl ScriptedTurn {
    fn assistant(content: Vec<String>, tool_calls: Vec<ScriptedToolCall>) -> Self {
        Self {
            reply: Reply::Assistant {
                content,
                tool_calls,
                finish_reason: None,
            },
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            usage: None,
            cached_tokens: None,
        }
    }

    /// An assistant text reply, streamed in deltas of a few characters;
    /// finish reason `stop`.
    pub fn text(text: impl AsRef<str>) -> Self {
        Self::assistant(pieces(text.as_ref()), Vec::new())
    }

    /// An assistant text reply streamed in exactly these deltas.
    pub fn text_chunks<S: Into<String>>(chunks: impl IntoIterator<Item = S>) -> Self {
        Self::assistant(chunks.into_iter().map(Into::into).collect(), Vec::new())
    }

    /// One tool call of `name` with `arguments` (JSON text); finish reason
    /// `tool_calls`.
    pub fn tool_call(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self::tool_calls(vec![ScriptedToolCall::new(name, arguments)])
    }

    /// Several tool calls in one turn (`index` 0, 1, …), streamed one after
    /// the other; finish reason `tool_calls`.
    pub fn tool_calls(calls: Vec<ScriptedToolCall>) -> Self {
        Self::assistant(Vec::new(), calls)
    }

    /// An HTTP error: `status` with `body` (sent as JSON if it parses as JSON,
    /// else as text).
    pub fn error(status: u16, body: impl Into<String>) -> Self {
        Self {
            reply: Reply::Error {
                status,
                body: body.into(),
                headers: Vec::new(),
            },
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            usage: None,
            cached_tokens: None,
        }
    }

    /// A 429 in OpenAI's shape with `Retry-After: retry_after_secs`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::error(
            429,
            json!({"error": {
                "message": "rate limit reached for requests",
                "type": "requests",
                "param": null,
                "code": "rate_limit_exceeded"
            }})
            .to_string(),
        )
        .with_header("retry-after", retry_after_secs.to_string())
    }

    /// A 200 `text/event-stream` whose events carry exactly these `data:`
    /// payloads (no automatic `[DONE]`), for malformed-stream tests.
    pub fn raw_events<S: Into<String>>(data: impl IntoIterator<Item = S>) -> Self {
        Self {
            reply: Reply::Raw(data.into_iter().map(Into::into).collect()),
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            usage: None,
            cached_tokens: None,
        }
    }

    /// Text streamed before this turn's tool calls (or instead of the text
    /// set so far), in deltas of a few characters.
    pub fn with_content(mut self, text: impl AsRef<str>) -> Self {
        if let Reply::Assistant { content, .. } = &mut self.reply {
            *content = pieces(text.as_ref());
        }
        self
    }

    /// Overrides the finish reason (e.g. `length`, `content_filter`).
    pub fn with_finish_reason(mut self, reason: impl Into<String>) -> Self {
        if let Reply::Assistant { finish_reason, .. } = &mut self.reply {
            *finish_reason = Some(reason.into());
        }
        self
    }

    /// Adds a response header (for error turns).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let Reply::Error { headers, .. } = &mut self.reply {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// Waits this long before sending the response headers.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Waits this long before each streamed chunk after the first.
    pub fn with_chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Reported usage; by default 10 prompt tokens and one completion token
    /// per streamed piece.
    pub fn with_usage(mut self, prompt_tokens: u32, completion_tokens: u32) -> Self {
        self.usage = Some((prompt_tokens, completion_tokens));
        self
    }

    /// Reports `cached` of the prompt tokens as served from the provider's
    /// prompt cache: the usage gains `prompt_tokens_details.cached_tokens`,
    /// as OpenAI's does (without it the usage has no `prompt_tokens_details`).
    pub fn with_cached_tokens(mut self, cached: u32) -> Self {
        self.cached_tokens = Some(cached);
        self
    }
}

/// Cuts `text` into pieces of [`PIECE_CHARS`] characters.
fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(PIECE_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}

/// Decides the turn for one request from its JSON body.
type Responder = dyn Fn(&Value) -> ScriptedTurn + Send + Sync;

struct Shared {
    script: Mutex<VecDeque<ScriptedTurn>>,
    /// Recorded request bodies (at most `record_limit`).
    requests: Mutex<Vec<Value>>,
    /// Requests received (chat and embeddings), recorded or not; updated
    /// under the `requests` lock so that numbers follow recording order.
    received: AtomicUsize,
    /// Most request bodies kept.
    record_limit: AtomicUsize,
    /// Decides the turn when the script queue is empty.
    responder: Option<Arc<Responder>>,
}

impl Shared {
    fn new(responder: Option<Arc<Responder>>, record_limit: usize) -> Self {
        Self {
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            received: AtomicUsize::new(0),
            record_limit: AtomicUsize::new(record_limit),
            responder,
        }
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, Vec<Value>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request and keeps its body while under the record limit
    /// (unparseable bodies as a JSON string); returns its number, from 1.
    fn record(&self, parsed: &Result<Value, serde_json::Error>, body: &Bytes) -> usize {
        let mut requests = self.requests();
        let number = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        if requests.len() < self.record_limit.load(Ordering::Relaxed) {
            requests.push(match parsed {
                Ok(value) => value.clone(),
                Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
            });
        }
        number
    }

    fn script(&self) -> std::sync::MutexGuard<'_, VecDeque<ScriptedTurn>> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running scripted server; stops when dropped.
#[derive(Debug)]
pub struct ScriptedServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("remaining", &self.script().len())
            .field("requests", &self.requests().len())
            .field("received", &self.received.load(Ordering::Relaxed))
            .field("responder", &self.responder.is_some())
            .finish()
    }
}

impl ScriptedServer {
    /// Binds `127.0.0.1:0` and serves `turns` in order, one per request.
    ///
    /// # Panics
    /// If no local port can be bound (use [`ScriptedServer::try_start`] to
    /// handle that).
    pub async fn start(turns: Vec<ScriptedTurn>) -> Self {
        match Self::try_start(turns).await {
            Ok(server) => server,
            Err(e) => panic!("scripted server cannot bind 127.0.0.1:0: {e}"),
        }
    }

    /// As [`ScriptedServer::start`], returning the bind error.
    ///
    /// # Errors
    /// The I/O error from binding the listener.
    pub async fn try_start(turns: Vec<ScriptedTurn>) -> std::io::Result<Self> {
        let shared = Shared::new(None, usize::MAX);
        shared.script().extend(turns);
        Self::serve(shared).await
    }

    /// Binds `127.0.0.1:0` and answers each chat request with the turn
    /// `responder` returns for its JSON body (after any turns queued with
    /// [`ScriptedServer::push`], which go first). Each turn's
    /// [`ScriptedTurn::with_delay`] is waited per request, concurrently with
    /// other requests' waits, so a fixed model latency is
    /// `responder`'s turns `.with_delay(latency)`. The responder runs on the
    /// server's task for every request, so it should be quick, and must not
    /// panic (a panic drops that request's connection). Unparseable bodies
    /// get a 400 without reaching it. Keeps the first
    /// [`RESPONDER_RECORD_LIMIT`] request bodies (see
    /// [`ScriptedServer::set_record_limit`]).
    ///
    /// # Panics
    /// If no local port can be bound (use
    /// [`ScriptedServer::try_start_responder`] to handle that).
    pub async fn start_responder<F>(responder: F) -> Self
    where
        F: Fn(&Value) -> ScriptedTurn + Send + Sync + 'static,
    {
        match Self::try_start_responder(responder).await {
            Ok(server) => server,
            Err(e) => panic!("scripted server cannot bind 127.0.0.1:0: {e}"),
        }
    }

    /// As [`ScriptedServer::start_responder`], returning the bind error.
    ///
    /// # Errors
    /// The I/O error from binding the listener.
    pub async fn try_start_responder<F>(responder: F) -> std::io::Result<Self>
    where
        F: Fn(&Value) -> ScriptedTurn + Send + Sync + 'static,
    {
        Self::serve(Shared::new(
            Some(Arc::new(responder)),
            RESPONDER_RECORD_LIMIT,
        ))
        .await
    }

    async fn serve(shared: Shared) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Without TCP_NODELAY a streamed response's later small writes wait
        // for the client's delayed ACK (about 40 ms on Linux) under Nagle's
        // algorithm, which would add to every request's latency.
        let listener = listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "scripted server cannot set TCP_NODELAY");
            }
        });
        let shared = Arc::new(shared);
        let router = Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/chat/completions", post(handle))
            .route("/v1/embeddings", post(handle_embeddings))
            .route("/embeddings", post(handle_embeddings))
            .fallback(not_found)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "scripted server stopped");
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>/v1`, for [`crate::ModelConfig::base_url`].
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request body received so far, in order (unparseable bodies as a
    /// JSON string); only the first ones up to the record limit (unlimited
    /// for [`ScriptedServer::start`], [`RESPONDER_RECORD_LIMIT`] for
    /// [`ScriptedServer::start_responder`]).
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests().clone()
    }

    /// Requests received so far (chat completions and embeddings), whether
    /// their bodies were recorded or not.
    pub fn request_count(&self) -> usize {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Keeps at most `limit` request bodies from now on (0: none; bodies
    /// already kept stay). Requests are still counted
    /// ([`ScriptedServer::request_count`]).
    pub fn set_record_limit(&self, limit: usize) {
        self.shared.record_limit.store(limit, Ordering::Relaxed);
    }

    /// Appends turns to the script.
    pub fn push(&self, turn: ScriptedTurn) {
        self.shared.script().push_back(turn);
    }

    /// How many scripted turns have not been served yet.
    pub fn remaining(&self) -> usize {
        self.shared.script().len()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "scripted server serves only POST /v1/chat/completions, /chat/completions, \
         /v1/embeddings and /embeddings",
    )
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"message": message, "type": "scripted_server_error", "param": null, "code": null}})
            .to_string(),
    )
        .into_response()
}

async fn handle_embeddings(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    shared.record(&parsed, &body);
    let request = match parsed {
        Ok(value) => value,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("request body is not json: {e}"),
            );
        }
    };
    let error_turn = {
        let mut script = shared.script();
        if matches!(script.front().map(|t| &t.reply), Some(Reply::Error { .. })) {
            script.pop_front()
        } else {
            None
        }
    };
    if let Some(turn) = error_turn {
        if !turn.delay.is_zero() {
            tokio::time::sleep(turn.delay).await;
        }
        if let Reply::Error {
            status,
            body,
            headers,
        } = turn.reply
        {
            return error_reply(status, body, headers);
        }
    }
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "input must be a string or an array of strings",
            );
        }
    };
    let dimension = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(SCRIPTED_EMBEDDING_DIMENSION);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("scripted")
        .to_owned();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(index, text)| {
            json!({
                "object": "embedding",
                "index": index,
                "embedding": scripted_embedding(text, dimension),
            })
        })
        .collect();
    let tokens: usize = inputs
        .iter()
        .map(|t| t.split_whitespace().count() + 1)
        .sum();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })
        .to_string(),
    )
        .into_response()
}

fn error_reply(status: u16, body: String, headers: Vec<(String, String)>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut map = HeaderMap::new();
    let content_type = if serde_json::from_str::<Value>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    map.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in headers {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(name), Ok(value)) => {
                map.insert(name, value);
            }
            _ => tracing::warn!(%name, %value, "scripted server skips invalid header"),
        }
    }
    (status, map, body).into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let request_no = shared.record(&parsed, &body);
    let request = match parsed {
        Ok(value) => value,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("request body is not json: {e}"),
            );
        }
    };
    let queued = shared.script().pop_front();
    let turn = match (queued, &shared.responder) {
        (Some(turn), _) => turn,
        (None, Some(responder)) => responder(&request),
        (None, None) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "scripted server: script exhausted, no turn left for request {request_no}"
                ),
            );
        }
    };
    if !turn.delay.is_zero() {
        tokio::time::sleep(turn.delay).await;
    }
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("scripted")
        .to_owned();
    let streamed = request.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let id = format!("chatcmpl-scripted-{request_no}");

    match turn.reply {
        Reply::Error {
            status,
            body,
            headers,
        } => error_reply(status, body, headers),
        Reply::Raw(events) => sse_response(
            events
                .into_iter()
                .map(|data| format!("data: {data}\n\n"))
                .collect(),
            turn.chunk_delay,
        ),
        Reply::Assistant {
            content,
            tool_calls,
            finish_reason,
        } => {
            let tool_calls: Vec<ScriptedToolCall> = tool_calls
                .into_iter()
                .enumerate()
                .map(|(i, mut call)| {
                    if call.id.is_empty() {
                        call.id = format!("call_{request_no}_{i}");
                    }
                    call
                })
                .collect();
            let finish_reason = finish_reason.unwrap_or_else(|| {
                if tool_calls.is_empty() {
                    "stop".to_owned()
                } else {
                    "tool_calls".to_owned()
                }
            });
            let pieces_sent = content.len()
                + tool_calls
                    .iter()
                    .map(|c| 1 + pieces(&c.arguments).len())
                    .sum::<usize>();
            let (prompt, completion) = turn
                .usage
                .unwrap_or((10, u32::try_from(pieces_sent).unwrap_or(u32::MAX)));
            let mut usage = json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt.saturating_add(completion),
            });
            if let Some(cached) = turn.cached_tokens {
                usage["prompt_tokens_details"] = json!({"cached_tokens": cached});
            }
            let answer = Answer {
                id,
                model,
                content,
                tool_calls,
                finish_reason,
                usage,
            };
            if streamed {
                sse_response(answer.chunks(include_usage), turn.chunk_delay)
            } else {
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    answer.completion().to_string(),
                )
                    .into_response()
            }
        }
    }
}

struct Answer {
    id: String,
    model: String,
    content: Vec<String>,
    tool_calls: Vec<ScriptedToolCall>,
    finish_reason: String,
    usage: Value,
}

impl Answer {
    fn chunk(&self, choices: Value, include_usage: bool) -> String {
        // The envelope is written directly (only `choices` goes through a
        // `Value`): a load test streams tens of chunks per request, and the
        // server shares the machine with the code it measures.
        let usage = if include_usage { ",\"usage\":null" } else { "" };
        format!(
            "data: {{\"id\":{id},\"object\":\"chat.completion.chunk\",\"created\":{CREATED},\
             \"model\":{model},\"system_fingerprint\":\"fp_scripted\",\"choices\":{choices}{usage}}}\n\n",
            id = Value::from(self.id.as_str()),
            model = Value::from(self.model.as_str()),
        )
    }

    fn delta(&self, delta: Value, include_usage: bool) -> String {
        self.chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]),
            include_usage,
        )
    }

    /// The whole SSE body, one string per event.
    fn chunks(&self, include_usage: bool) -> Vec<String> {
        let mut out = Vec::new();
        let first_content = if self.tool_calls.is_empty() || !self.content.is_empty() {
            json!("")
        } else {
            Value::Null
        };
        out.push(self.delta(
            json!({"role": "assistant", "content": first_content, "refusal": null}),
            include_usage,
        ));
        for piece in &self.content {
            out.push(self.delta(json!({"content": piece}), include_usage));
        }
        for (index, call) in self.tool_calls.iter().enumerate() {
            out.push(self.delta(
                json!({"tool_calls": [{
                    "index": index,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }]}),
                include_usage,
            ));
            for piece in pieces(&call.arguments) {
                out.push(self.delta(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    include_usage,
                ));
            }
        }
        out.push(self.chunk(
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": self.finish_reason}]),
            include_usage,
        ));
        if include_usage {
            let usage_chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": self.model,
                "system_fingerprint": "fp_scripted",
                "choices": [],
                "usage": self.usage,
            });
            out.push(format!("data: {usage_chunk}\n\n"));
        }
        out.push("data: [DONE]\n\n".to_owned());
        out
    }

    /// The non-streamed `chat.completion` object.
    fn completion(&self) -> Value {
        let content = self.content.concat();
        let mut message = json!({
            "role": "assistant",
            "content": if content.is_empty() && !self.tool_calls.is_empty() { Value::Null } else { json!(content) },
            "refusal": null,
        });
        if !self.tool_calls.is_empty()
            && let Some(obj) = message.as_object_mut()
        {
            let calls = self
                .tool_calls
                .iter()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    })
                })
                .collect::<Vec<_>>();
            obj.insert("tool_calls".into(), Value::Array(calls));
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model,
            "system_fingerprint": "fp_scripted",
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": self.finish_reason,
            }],
            "usage": self.usage,
        })
    }
}

fn sse_response(events: Vec<String>, chunk_delay: Duration) -> Response {
    let stream = futures::stream::unfold(
        (VecDeque::from(events), true),
        move |(mut events, first)| async move {
            let event = events.pop_front()?;
            if !first && !chunk_delay.is_zero() {
                tokio::time::sleep(chunk_delay).await;
            }
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(event)),
                (events, false),
            ))
        },
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{ChatEvent, ChatModel, ChatRequest, Message, ModelConfig, OpenAiChatModel};
    use futures::StreamExt;

    fn model(server: &ScriptedServer) -> OpenAiChatModel {
        let mut config = ModelConfig::new(server.base_url(), "scripted");
        config.timeout_secs = 10;
        config.max_retries = 0;
        OpenAiChatModel::new(config).unwrap()
    }

    /// The streamed answer text to `question`.
    async fn answer(model: &OpenAiChatModel, question: &str) -> String {
        let mut text = String::new();
        let mut stream = model.chat_stream(ChatRequest::new(vec![Message::user(question)], vec![]));
        while let Some(event) = stream.next().await {
            if let ChatEvent::ContentDelta(delta) = event.unwrap() {
                text.push_str(&delta);
            }
        }
        text
    }

    /// The content of the request's last user message.
    fn question(request: &Value) -> String {
        request["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn responder_answers_interleaved_requests_each_from_its_own_body() {
        let server = ScriptedServer::start_responder(|request| {
            let question = question(request);
            let delay = if question == "slow" {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            };
            ScriptedTurn::text(format!("answer to {question}")).with_delay(delay)
        })
        .await;
        let model = model(&server);
        let slow = tokio::spawn({
            let model = model.clone();
            async move { answer(&model, "slow").await }
        });
        // the slow request arrives (and waits) before the fast one is sent
        while server.request_count() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(answer(&model, "fast").await, "answer to fast");
        assert!(
            !slow.is_finished(),
            "the later request was answered while the earlier one still waited"
        );
        assert_eq!(slow.await.unwrap(), "answer to slow");
        assert_eq!(server.request_count(), 2);
        let recorded: Vec<String> = server.requests().iter().map(question).collect();
        assert_eq!(recorded, ["slow", "fast"]);
    }

    #[tokio::test]
    async fn responder_serves_queued_turns_first_and_records_only_up_to_the_limit() {
        let server =
            ScriptedServer::start_responder(|request| ScriptedTurn::text(question(request))).await;
        server.push(ScriptedTurn::text("queued"));
        server.set_record_limit(2);
        let model = model(&server);
        let mut answers = Vec::new();
        for q in ["a", "b", "c", "d"] {
            answers.push(answer(&model, q).await);
        }
        assert_eq!(answers, ["queued", "b", "c", "d"]);
        assert_eq!(server.remaining(), 0);
        assert_eq!(server.request_count(), 4);
        let recorded: Vec<String> = server.requests().iter().map(question).collect();
        assert_eq!(recorded, ["a", "b"]);
        server.set_record_limit(0);
        assert_eq!(answer(&model, "e").await, "e");
        assert_eq!(server.request_count(), 5);
        assert_eq!(server.requests().len(), 2, "bodies kept before stay");
    }
}
