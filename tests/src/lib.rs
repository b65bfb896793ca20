//! Fixtures for Quarry's end-to-end tests: a real server on `127.0.0.1:0`
//! (the same [`quarry_server::serve`] the binary runs) over a fresh PostgreSQL
//! database holding a slice of the real Tate data, optionally wired to the
//! scripted OpenAI-compatible server of `quarry_llm::testing` — and helpers
//! that pick events out of the stream of an `Ask` ([`final_answer`],
//! [`route_decided`], [`usage_of`], [`tool_results`], …).
//!
//! The database server comes from `QUARRY_TEST_DATABASE_URL` (set by
//! `dev/test.sh`); without it the fixtures panic so that tests fail rather
//! than skip.

// Test support: failing loudly is the point.
// Picking one kind of event out of a stream names only that kind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::wildcard_enum_match_arm
)]

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use futures::StreamExt;
use quarry_db::testing::TestDb;
use quarry_llm::testing::ScriptedServer;
use quarry_proto::v1::{
    AskRequest, AskResponse, FinalAnswer, ListCollectionsRequest, ListSummaryKindsRequest,
    ListSummaryKindsResponse, ModelCallUsage, RouteDecided, SqlToolResult, ToolCallStarted,
    ToolResult, Usage, ask_response::Event, assistant_service_client::AssistantServiceClient,
    search_service_client::SearchServiceClient, sql_service_client::SqlServiceClient,
    summary_service_client::SummaryServiceClient, tool_result::Outcome, value::Kind,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Request, Status, transport::Channel};

mod own_pg;
pub use own_pg::OwnPostgres;

/// The HS256 secret the test servers use.
pub const SECRET: &str = "quarry-test-secret-0123456789abcdef";

/// Artworks (and artists) loaded into each test database: the first lines of
/// the real files.
pub const SLICE_LINES: usize = 300;

/// `../shared/data` next to the repository (override: `QUARRY_SHARED_DATA`).
pub fn shared_data() -> PathBuf {
    std::env::var_os("QUARRY_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn write_slice(from: &Path, to: &Path, lines: usize) {
    let reader = BufReader::new(GzDecoder::new(std::fs::File::open(from).unwrap()));
    let mut out = GzEncoder::new(std::fs::File::create(to).unwrap(), Compression::fast());
    for line in reader.lines().take(lines) {
        writeln!(out, "{}", line.unwrap()).unwrap();
    }
    out.finish().unwrap();
}

/// Writes the first `lines` lines of both Tate files into a new temporary folder.
pub fn tate_slice(lines: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "quarry-tate-slice-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let tate = shared_data().join("tate");
    for file in ["artworks.jsonl.gz", "artists.jsonl.gz"] {
        write_slice(&tate.join(file), &dir.join(file), lines);
    }
    dir
}

/// A folder under the system temporary directory, removed (with its
/// contents) on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `quarry-<prefix>-<uuid>`.
    pub fn new(prefix: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("quarry-{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `artworks` search collection over the Tate slice, as
/// `[[search.collections]]` TOML: text `title`, `medium`, `credit_line`;
/// filters `acquisition_year` (integer), `classification` (keyword),
/// `artist` (keywords, the contributors' names in order); stored `url`.
pub const ARTWORKS_COLLECTION: &str = r#"
[[search.collections]]
name = "artworks"
source = "tate.artworks"
key = "id"
text = [{ name = "title" }, { name = "medium" }, { name = "credit_line" }]
filters = [
  { name = "acquisition_year", type = "integer" },
  { name = "classification", type = "keyword" },
  { name = "artist", type = "keywords", sql = "ARRAY(SELECT a.name FROM tate.artwork_contributors c JOIN tate.artists a ON a.id = c.artist_id WHERE c.artwork_id = src.id ORDER BY c.position)" },
]
stored = [{ name = "url" }]
dependents = [{ table = "tate.artwork_contributors", key_column = "artwork_id" }]
"#;

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Base URL of an OpenAI-compatible server (the scripted one); `None`
    /// runs without a model.
    pub model_base_url: Option<String>,
    /// TOML merged over the generated configuration, key by key.
    pub extra_toml: String,
    /// Per-tenant rate limit `(requests_per_second, burst)`; default generous.
    pub rate_limit: Option<(u32, u32)>,
    /// Serve the [`ARTWORKS_COLLECTION`] search collection (index in a
    /// temporary folder the server removes when dropped; the sync polls
    /// every 100 ms besides listening for notifications).
    pub search: bool,
    /// `[[search.collections]]` TOML served instead of
    /// [`ARTWORKS_COLLECTION`] when [`Options::search`].
    pub search_collection: Option<String>,
    /// Also write the configuration (the generated TOML, then
    /// `extra_toml`, which must not repeat its tables) to this file and
    /// load it from there, so that the server reloads it on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// Serve the shipped Tate summary kinds (`demo/summaries/tate.toml`),
    /// built once at start-up, no schedule, no embedder (search over summary
    /// texts is then PostgreSQL full-text).
    pub summaries: bool,
    /// The roles the server plays ([`quarry_server::Roles`]); `None` is all.
    pub roles: Option<quarry_server::Roles>,
    /// Before serving, run `quarry migrate` with `sql.exec.role` set to this
    /// role: it creates the `NOLOGIN` read-only role if the cluster lacks it
    /// (roles are cluster-wide) and grants it `SELECT` on schema `tate`, so
    /// a policy role may name it as `db_role` — queries then run under
    /// row-level security, which the test server's superuser login bypasses.
    /// The server's own configuration does not set `sql.exec.role`.
    pub read_only_role: Option<String>,
    /// Serve Prometheus metrics on a free port ([`TestServer::metrics_addr`]).
    pub metrics: bool,
    /// Serve this database (from [`loaded_database`], or another
    /// server's [`TestServer::db`]) instead of a fresh one: replicas of one
    /// service share it.
    pub database: Option<Arc<TestDb>>,
    /// Make the test database on this server (an admin URL, e.g.
    /// [`OwnPostgres::url`]) instead of `QUARRY_TEST_DATABASE_URL`'s.
    pub database_url: Option<String>,
    /// SQL run in a transaction on a connection of the test's, after the
    /// data is loaded and migrated and before the server starts; the
    /// transaction stays open (its locks held) while the connection
    /// ([`TestServer::held`]) lives.
    pub hold: Option<String>,
}

/// A fresh database with a Tate slice in schema `tate` and the `quarry`
/// schema migrated, as [`TestServer::start`] serves.
pub async fn loaded_database() -> Arc<TestDb> {
    loaded_database_on(None).await
}

/// [`loaded_database`] made on the server of `admin_url` (e.g.
/// [`OwnPostgres::url`]) when given, else on `QUARRY_TEST_DATABASE_URL`'s.
pub async fn loaded_database_on(admin_url: Option<&str>) -> Arc<TestDb> {
    let db = match admin_url {
        Some(url) => TestDb::create_on(url).await,
        None => TestDb::create().await,
    };
    let slice = tate_slice(SLICE_LINES);
    {
        let (mut client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        quarry_demo::ingest_tate(&mut client, &slice, "tate", false)
            .await
            .unwrap();
        quarry_db::migrate_client(&mut client).await.unwrap();
        drop(client);
        let _ = connection.await;
    }
    let _ = std::fs::remove_dir_all(&slice);
    Arc::new(db)
}

/// A running Quarry server over its own database.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The database it reads (shared by replicas, see [`Options::database`]).
    pub db: Arc<TestDb>,
    /// Where its Prometheus endpoint listens, with [`Options::metrics`].
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    /// The server task; its error rendered as text.
    handle: Option<JoinHandle<Result<(), String>>>,
    /// The search index folder, when [`Options::search`]; declared last so
    /// it is removed after the server has stopped.
    index_dir: Option<TempDir>,
    /// The connection holding [`Options::hold`]'s transaction open.
    pub held: Option<tokio_postgres::Client>,
}

/// The log filter of the servers tests start: their warnings and the
/// state changes of their background work (a task restarting, a role down
/// or serving again), so that a failed test shows what the server saw.
/// `QUARRY_TEST_LOG` (an `EnvFilter` directive) replaces it.
pub const TEST_LOG: &str = "warn,quarry_server=info,quarry_db=info,quarry_summary=info,\
                            quarry_search_sync=info,quarry_search=info";

/// Installs, once per process, a log subscriber writing through the test
/// harness's capture: shown for a failed test, kept quiet for a passing one.
pub fn init_test_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let filter = std::env::var("QUARRY_TEST_LOG").unwrap_or_else(|_| TEST_LOG.to_owned());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .with_ansi(false)
            .try_init();
    });
}

impl TestServer {
    /// Creates a database, loads a Tate slice into schema `tate`, and serves.
    /// Its log goes to the test's captured output ([`init_test_logging`]).
    pub async fn start(options: Options) -> Self {
        init_test_logging();
        let db = match &options.database {
            Some(db) => Arc::clone(db),
            None => loaded_database_on(options.database_url.as_deref()).await,
        };
        if let Some(role) = &options.read_only_role {
            migrate_read_only_role(db.url(), role).await;
        }
        let held = match &options.hold {
            Some(sql) => {
                let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("BEGIN; {sql}"))
                    .await
                    .unwrap();
                Some(client)
            }
            None => None,
        };
        let (rps, burst) = options.rate_limit.unwrap_or((1000, 1000));
        let golden = repo_root().join("demo/golden/tate.json");
        let mut toml = format!(
            r#"
            [server]
            development = true
            [database]
            url = "{url}"
            pool_size = 4
            [auth]
            jwt_secret = "{SECRET}"
            [auth.rate_limit]
            requests_per_second = {rps}
            burst = {burst}
            [sql]
            schemas = ["tate"]
            golden_path = "{golden}"
            [policy.roles.tester]
            scopes = ["ask", "sql:query", "sql:explain", "schema:read", "search", "summaries"]
            tables = ["tate.*"]
            collections = ["*"]
            summary_kinds = ["*"]
            [policy.roles.curator]
            scopes = ["golden:write", "summaries:build", "audit:read", "usage:read"]
            "#,
            url = db.url(),
            golden = golden.display(),
        );
        if let Some(base_url) = &options.model_base_url {
            toml.push_str(&format!(
                "\n[model]\nbase_url = \"{base_url}\"\nmodel = \"scripted\"\ntimeout_secs = 10\nmax_retries = 0\n"
            ));
        }
        let index_dir = options.search.then(|| TempDir::new("search-index"));
        if let Some(dir) = &index_dir {
            toml.push_str(&format!(
                "\n[sync]\npoll_interval_ms = 100\n[search]\nindex_dir = \"{}\"\n{}",
                dir.path().display(),
                options
                    .search_collection
                    .as_deref()
                    .unwrap_or(ARTWORKS_COLLECTION)
            ));
        }
        if options.summaries {
            toml.push_str(&format!(
                "\n[summary]\nrefresh_interval_secs = 0\nbuild_on_start = true\ndefinitions = [\"{}\"]\n",
                repo_root().join("demo/summaries/tate.toml").display()
            ));
        }
        let mut config =
            quarry_server::Config::from_toml_layers(&[&toml, &options.extra_toml]).unwrap();
        if let Some(path) = &options.config_file {
            std::fs::write(path, format!("{toml}\n{}\n", options.extra_toml)).unwrap();
            config.source = Some(path.clone());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let roles = options.roles.clone().unwrap_or_default();
        let metrics = if options.metrics {
            Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        } else {
            None
        };
        let metrics_addr = metrics.as_ref().map(|l| l.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(async move {
            quarry_server::serve_with_metrics(listener, metrics, config, roles, async {
                let _ = rx.await;
            })
            .await
            .map_err(|e| format!("{e:#}"))
        });
        Self {
            addr,
            metrics_addr,
            db,
            shutdown: Some(tx),
            handle: Some(handle),
            index_dir,
            held,
        }
    }

    /// [`TestServer::start`] with the scripted `model` and `extra_toml`
    /// merged over the generated configuration.
    pub async fn with_model(model: &ScriptedServer, extra_toml: &str) -> Self {
        Self::start(Options {
            model_base_url: Some(model.base_url()),
            extra_toml: extra_toml.to_string(),
            ..Default::default()
        })
        .await
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A UsageService client.
    pub fn usage(&self) -> quarry_proto::v1::usage_service_client::UsageServiceClient<Channel> {
        quarry_proto::v1::usage_service_client::UsageServiceClient::new(self.channel())
    }

    /// A channel to the server (connects lazily).
    pub fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).unwrap().connect_lazy()
    }

    /// An Assistant client.
    pub fn assistant(&self) -> AssistantServiceClient<Channel> {
        AssistantServiceClient::new(self.channel())
    }

    /// A SqlService client.
    pub fn sql(&self) -> SqlServiceClient<Channel> {
        SqlServiceClient::new(self.channel())
    }

    /// A SearchService client.
    pub fn search(&self) -> SearchServiceClient<Channel> {
        SearchServiceClient::new(self.channel())
    }

    /// A SummaryService client.
    pub fn summaries(&self) -> SummaryServiceClient<Channel> {
        SummaryServiceClient::new(self.channel())
    }

    /// The search index folder, when [`Options::search`].
    pub fn index_dir(&self) -> Option<&Path> {
        self.index_dir.as_ref().map(TempDir::path)
    }

    /// Stops the server and waits for it; panics if it failed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let result = tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("server did not stop within 15 s")
                .expect("server task panicked");
            result.expect("server failed");
        }
    }
}

/// Runs `quarry migrate` on the database at `url` with `sql.exec.role =
/// role` and `sql.schemas = ["tate"]`. Tests in other databases of the
/// cluster may alter the same role at the same moment (PostgreSQL then
/// reports "tuple concurrently updated"), so a failure is retried a few
/// times.
pub async fn migrate_read_only_role(url: &str, role: &str) {
    let dir = TempDir::new("migrate");
    let path = dir.path().join("quarry.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndevelopment = true\n[database]\nurl = \"{url}\"\n\
             [auth]\njwt_secret = \"{SECRET}\"\n\
             [sql]\nschemas = [\"tate\"]\n[sql.exec]\nrole = \"{role}\"\n"
        ),
    )
    .unwrap();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match quarry::commands::migrate::run(quarry::commands::migrate::Args {}, Some(&path)).await
        {
            Ok(()) => return,
            Err(e) if attempt < 5 => {
                eprintln!("quarry migrate (attempt {attempt}): {e:#}");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => panic!("quarry migrate: {e:#}"),
        }
    }
}

/// A valid token for `tenant`, one hour, with the test policy's `tester`
/// role (every read scope over `tate.*`, no write scope).
pub fn token(tenant: &str) -> String {
    token_with_roles(tenant, "tester", &["tester"], &[])
}

/// A valid token for `tenant`, one hour, with the `tester` role's scopes
/// plus `scopes` (granted by the test policy's `curator` role).
pub fn token_with_scopes(tenant: &str, scopes: &[&str]) -> String {
    let mut all = vec![
        "ask",
        "sql:query",
        "sql:explain",
        "schema:read",
        "search",
        "summaries",
    ];
    all.extend_from_slice(scopes);
    token_with_roles(tenant, "tester", &["tester", "curator"], &all)
}

/// A valid token for `tenant` and `subject`, one hour, with `roles` and (if
/// not empty) `scopes`, which narrow what the roles grant.
pub fn token_with_roles(tenant: &str, subject: &str, roles: &[&str], scopes: &[&str]) -> String {
    let mut claims = quarry_auth::Claims::issued_now(tenant, subject, Duration::from_secs(3600));
    claims.roles = roles.iter().map(|s| s.to_string()).collect();
    claims.scopes = scopes.iter().map(|s| s.to_string()).collect();
    quarry_auth::mint_hs256(SECRET.as_bytes(), &claims).unwrap()
}

/// `message` with `authorization: Bearer token`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Asks `question` as tenant `t1` and collects every event.
///
/// # Errors
/// The status the Ask or its stream ended with.
pub async fn ask_all(server: &TestServer, request: AskRequest) -> Result<Vec<AskResponse>, Status> {
    ask_all_as(server, request, &token("t1")).await
}

/// [`ask_all`] with `token` instead of tenant `t1`'s tester token.
///
/// # Errors
/// The `Ask` call's status, or the first failed event's.
pub async fn ask_all_as(
    server: &TestServer,
    request: AskRequest,
    token: &str,
) -> Result<Vec<AskResponse>, Status> {
    let mut stream = server
        .assistant()
        .ask(authed(request, token))
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event?);
    }
    Ok(events)
}

/// An `AskRequest` for `question` with defaults.
pub fn ask(question: &str) -> AskRequest {
    AskRequest {
        question: question.to_string(),
        ..Default::default()
    }
}

/// How long a server's start-up summary build may take on a shared machine
/// (a bound on a wait, not a speed assertion).
pub const SUMMARIES_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Polls `ListSummaryKinds` until the start-up summary build has finished
/// (its report is listed), for a server started with [`Options::summaries`].
pub async fn wait_until_summaries_built(server: &TestServer) -> ListSummaryKindsResponse {
    let deadline = std::time::Instant::now() + SUMMARIES_READY_TIMEOUT;
    loop {
        let response = server
            .summaries()
            .list_summary_kinds(authed(ListSummaryKindsRequest {}, &token("t1")))
            .await;
        match response {
            Ok(r) if r.get_ref().last_build.is_some() => return r.into_inner(),
            other if std::time::Instant::now() > deadline => panic!(
                "the start-up build did not finish within {SUMMARIES_READY_TIMEOUT:?}: {other:?}"
            ),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Polls `ListCollections` until the search index holds every source row
/// ([`SLICE_LINES`]), for a server started with [`Options::search`]; at most
/// [`SUMMARIES_READY_TIMEOUT`] (a bound on a wait, not a speed assertion).
pub async fn wait_until_indexed(server: &TestServer) {
    let deadline = std::time::Instant::now() + SUMMARIES_READY_TIMEOUT;
    loop {
        let collections = server
            .search()
            .list_collections(authed(ListCollectionsRequest {}, &token("t1")))
            .await
            .unwrap()
            .into_inner()
            .collections;
        let documents = collections.first().map_or(0, |c| c.documents);
        if documents == SLICE_LINES as u64 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the index did not fill within {SUMMARIES_READY_TIMEOUT:?}: {documents} of {SLICE_LINES} documents"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The kinds of the events, in order, a run of answer deltas collapsed to one.
pub fn event_kinds(events: &[AskResponse]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for e in events {
        let k = match &e.event {
            Some(Event::Started(_)) => "started",
            Some(Event::Route(_)) => "route",
            Some(Event::ToolCallStarted(_)) => "tool_call_started",
            Some(Event::ToolResult(_)) => "tool_result",
            Some(Event::AnswerDelta(_)) => "answer_delta",
            Some(Event::FinalAnswer(_)) => "final_answer",
            Some(Event::Usage(_)) => "usage",
            None => "empty",
        };
        if !(k == "answer_delta" && out.last() == Some(&"answer_delta")) {
            out.push(k);
        }
    }
    out
}

// Events of an Ask stream (`Vec<AskResponse>`, as [`ask_all`] collects it).
// The helpers that return one event panic when it is missing, naming the
// kinds of the events the stream did hold.

/// What `pick` takes from each event, in stream order.
fn picked<T>(events: &[AskResponse], pick: impl FnMut(&Event) -> Option<T>) -> Vec<T> {
    events
        .iter()
        .filter_map(|e| e.event.as_ref())
        .filter_map(pick)
        .collect()
}

/// What `pick` takes from the first event it takes anything from; panics,
/// saying `what` was looked for, when it takes nothing.
fn first_picked<T>(events: &[AskResponse], what: &str, pick: impl FnMut(&Event) -> Option<T>) -> T {
    events
        .iter()
        .filter_map(|e| e.event.as_ref())
        .find_map(pick)
        .unwrap_or_else(|| {
            panic!(
                "no {what} in the Ask stream, whose events are {:?}",
                event_kinds(events)
            )
        })
}

/// The first `final_answer` event; panics if there is none.
pub fn final_answer(events: &[AskResponse]) -> FinalAnswer {
    first_picked(events, "final answer", |e| match e {
        Event::FinalAnswer(f) => Some(f.clone()),
        _ => None,
    })
}

/// The first `route` event; panics if there is none.
pub fn route_decided(events: &[AskResponse]) -> RouteDecided {
    first_picked(events, "route event", |e| match e {
        Event::Route(r) => Some(r.clone()),
        _ => None,
    })
}

/// The `usage` event, which must be the last event; panics if the stream is
/// empty or ends with anything else.
pub fn usage_of(events: &[AskResponse]) -> Usage {
    let last = events
        .last()
        .expect("an empty Ask stream has no usage event");
    match &last.event {
        Some(Event::Usage(u)) => u.clone(),
        other => panic!("the last event of the Ask stream is not usage: {other:?}"),
    }
}

/// The conversation id of the `started` event, which must be the first
/// event; panics if the stream is empty or starts with anything else.
pub fn conversation_id(events: &[AskResponse]) -> String {
    let first = events
        .first()
        .expect("an empty Ask stream has no started event");
    match &first.event {
        Some(Event::Started(s)) => s.conversation_id.clone(),
        other => panic!("the first event of the Ask stream is not started: {other:?}"),
    }
}

/// Every `tool_call_started` event, in order.
pub fn tool_calls_started(events: &[AskResponse]) -> Vec<ToolCallStarted> {
    picked(events, |e| match e {
        Event::ToolCallStarted(s) => Some(s.clone()),
        _ => None,
    })
}

/// Every `tool_result` event, in order.
pub fn tool_results(events: &[AskResponse]) -> Vec<ToolResult> {
    picked(events, |e| match e {
        Event::ToolResult(r) => Some(r.clone()),
        _ => None,
    })
}

/// The first `tool_result` event, whatever its outcome; panics if there is
/// none.
pub fn first_tool_result(events: &[AskResponse]) -> ToolResult {
    first_picked(events, "tool result", |e| match e {
        Event::ToolResult(r) => Some(r.clone()),
        _ => None,
    })
}

/// The SQL outcome of the first `tool_result` event that has one; panics if
/// none has.
pub fn sql_result(events: &[AskResponse]) -> SqlToolResult {
    first_picked(events, "tool result with a SQL outcome", |e| match e {
        Event::ToolResult(ToolResult {
            outcome: Some(Outcome::Sql(sql)),
            ..
        }) => Some(sql.clone()),
        _ => None,
    })
}

/// The text of every `answer_delta` event, in order.
pub fn answer_deltas(events: &[AskResponse]) -> Vec<String> {
    picked(events, |e| match e {
        Event::AnswerDelta(d) => Some(d.text.clone()),
        _ => None,
    })
}

/// The first cell of the first row of a tool result, which must be a SQL
/// outcome whose cell is an integer; panics otherwise.
pub fn int_cell(result: &ToolResult) -> i64 {
    let Some(Outcome::Sql(sql)) = &result.outcome else {
        panic!("a SQL outcome: {result:?}")
    };
    match &sql.rows.as_ref().unwrap().rows[0].values[0].kind {
        Some(Kind::Int64Value(n)) => *n,
        other => panic!("an integer cell: {other:?}"),
    }
}

/// `(step, prompt, completion, total)` tokens of each model call, in order.
pub fn call_tokens(calls: &[ModelCallUsage]) -> Vec<(u32, u64, u64, u64)> {
    calls
        .iter()
        .map(|c| (c.step, c.prompt_tokens, c.completion_tokens, c.total_tokens))
        .collect()
}

/// A real Prometheus server (Debian `prometheus`, started by
/// `dev/prometheus.sh`) scraping one target every second; stopped on drop.
pub struct Prometheus {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    dir: TempDir,
}

impl Prometheus {
    /// Installs Prometheus if missing and starts one scraping
    /// `http://{target}/metrics`.
    pub fn start(target: SocketAddr) -> Self {
        let dir = TempDir::new("prometheus");
        let output = std::process::Command::new(repo_root().join("dev/prometheus.sh"))
            .arg("start")
            .arg(target.to_string())
            .arg(dir.path())
            .arg("1s")
            .output()
            .expect("cannot run dev/prometheus.sh");
        assert!(
            output.status.success(),
            "dev/prometheus.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let url = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        Self { url, dir }
    }

    /// The result vector of the instant query `query` (`/api/v1/query`),
    /// as `(labels, value)` pairs.
    pub async fn query(&self, query: &str) -> Vec<(serde_json::Value, f64)> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", query)],
        )
        .unwrap();
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["status"], "success", "{text}");
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// Polls `query` every 500 ms for at most `within` until `accept` holds
    /// for its result; returns that result, or panics with the last one.
    pub async fn wait_for(
        &self,
        query: &str,
        within: Duration,
        accept: impl Fn(&[(serde_json::Value, f64)]) -> bool,
    ) -> Vec<(serde_json::Value, f64)> {
        let until = std::time::Instant::now() + within;
        loop {
            let result = self.query(query).await;
            if accept(&result) {
                return result;
            }
            if std::time::Instant::now() > until {
                let log = std::fs::read_to_string(self.dir.path().join("prometheus.log"))
                    .unwrap_or_default();
                panic!("{query}: {result:?} after {within:?}; prometheus log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo_root().join("dev/prometheus.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
