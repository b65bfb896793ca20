//! `quarry bench ask`: the orchestrator's own overhead under concurrent load.
//!
//! One process runs everything on `127.0.0.1:0`:
//! - a scripted OpenAI-compatible model ([`ScriptedServer::start_responder`])
//!   that answers every request after a fixed latency (`model_latency`,
//!   before the response headers; the body then streams at once): a request
//!   whose conversation holds no tool result yet gets a `query_database`
//!   call with [`AskBenchOptions::sql`], one that does gets a final answer
//!   quoting the query's first value — so every Ask is a realistic two-step
//!   agentic run (DescribeSchema, model, ExecuteSql, model, streamed answer);
//! - a Quarry server ([`quarry_server::serve`], agentic mode, the SQL tool over the
//!   configured database with its `[sql]` settings, no search, summaries
//!   only with [`AskBenchOptions::summaries`]), with the auth layer and the
//!   rate limiter in place (the limit set out of reach);
//! - `streams` clients, each sending Ask after Ask (a closed loop) over
//!   `connections` HTTP/2 connections (tonic channels; streams share them
//!   round-robin, multiplexed), for a warm-up and then for `duration` (or
//!   until `requests` Asks have been timed).
//!
//! Per Ask the client measures the end-to-end time (request sent → `usage`
//! event, the stream's last event) and the time to the first event, and
//! reads the server's accounting from the `usage` event and the SQL tool's
//! own database time from the `tool_result` events
//! (`SqlToolResult.database_us`, "SQL database time" below). Derived:
//! - **overhead** (client view) = end-to-end − `Usage.model_us` −
//!   `Usage.database_us`: everything that is neither waiting for the model
//!   nor database time the server accounts for (the SQL statement, with its
//!   transaction and pool wait, and storing the conversation turn) — the
//!   orchestrator's loop, prompt and message building, the DescribeSchema
//!   call (whose three catalog queries are database time *not* in
//!   `database_us`), the call into the SQL tool (its gRPC service, in
//!   process: no socket) and its validation, rewrite and result encoding,
//!   grounding, event streaming, the auth layer (on the Ask and on each
//!   internal call), the rate limiter (on the Ask), and the client's own
//!   gRPC work;
//! - **server overhead** = `Usage.elapsed_us` − `model_us` −
//!   `database_us`: the same without the client ↔ server transport and the
//!   client (`elapsed_us` runs to the usage event, so it includes storing
//!   the turn), split into the SQL tool hop (`tool_us` − SQL database time)
//!   and the time outside model and tool calls (`elapsed_us` − `model_us` −
//!   `tool_us` − conversation store: DescribeSchema, prompt building,
//!   streaming);
//! - **conversation store** = `database_us` − SQL database time;
//! - **transport** = end-to-end − `elapsed_us` (client and gRPC to and from
//!   the server); overhead = server overhead + transport;
//! - **model excess** = `model_us` − model calls × latency: the HTTP client
//!   (request encoding, SSE parsing) and the scripted server's own work,
//!   counted as model time above, so not in the overhead.
//!
//! The model's time is `model_us` as the orchestrator measured it, from
//! sending each model request to its last streamed event.
//!
//! Everything shares the machine's cores: the client, the scripted model and
//! PostgreSQL compete with the orchestrator for CPU, so the figures are an
//! upper bound on the orchestrator's cost. Process CPU time per Ask
//! (`/proc/self/stat`, the orchestrator + client + scripted model, not
//! PostgreSQL) says how much of the machine one Ask takes. Memory is the
//! process's (`VmRSS`, and `VmHWM`, the peak, reset before each level
//! through `/proc/self/clear_refs` where the kernel allows it): server,
//! scripted model and clients together.
//!
//! Before the load, a calibration probes the internal calls one at a time,
//! idle: an empty RPC (the health service's Check: the cost of any gRPC
//! round trip here, against which the overhead can be read),
//! DescribeSchema, ExecuteSql of the benchmark SQL (wall time and the
//! database time it reports), and ListSummaryKinds with summaries.
//!
//! The server's runtime has one worker thread per core, as `quarry serve`
//! has; `TOKIO_WORKER_THREADS` sets another count, as it does for `quarry
//! serve` (tokio reads it for `#[tokio::main]`).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use figment::Figment;
use quarry_llm::ModelConfig;
use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_orchestrator::{OrchestratorConfig, QUERY_DATABASE};
use quarry_proto::v1::{
    AnswerStatus, AskMode, AskRequest, DescribeSchemaRequest, ExecuteSqlRequest,
    ListSummaryKindsRequest, Usage, ask_response::Event,
    assistant_service_client::AssistantServiceClient, sql_service_client::SqlServiceClient,
    summary_service_client::SummaryServiceClient, tool_result::Outcome,
};
use quarry_sql::service::SqlToolConfig;
use quarry_summary::SummaryConfig;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use super::{Latencies, LatencySummary, progress, round3};
use quarry_server::client::status_error;
use quarry_server::config::DatabaseConfig;

/// The question every Ask sends (the scripted model ignores it; the
/// orchestrator validates it, puts it in the prompt and checks the answer's
/// numbers against it).
pub const DEFAULT_QUESTION: &str = "How many artworks has Tate acquired since 2000?";

/// The SQL the scripted model passes to `query_database`: small, over the
/// Tate data (one aggregate row).
pub const DEFAULT_SQL: &str =
    "SELECT count(*) AS artworks FROM tate.artworks WHERE acquisition_year >= 2000";

/// HS256 secret of the in-process server and the benchmark's token (the
/// server lives only for the run, on 127.0.0.1).
const BENCH_SECRET: &str = "quarry-bench-ask-secret-0123456789abcdef";

/// Tokens the scripted model reports per call: (prompt, completion) of the
/// tool-calling step and of the answering step.
const TOOL_STEP_USAGE: (u32, u32) = (1_200, 30);
const ANSWER_STEP_USAGE: (u32, u32) = (1_450, 40);

/// Pause after a failed Ask before the stream sends the next (so that an
/// instant failure does not spin).
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// How long the server may take to come up (pools, golden pairs).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`.
const USER_HZ: f64 = 100.0;

/// The parts of the configuration the server of the benchmark takes from
/// the configuration file and `QUARRY__…` variables; the rest (`[auth]`,
/// `[model]`, `[search]`, `[embedding]`) the benchmark sets itself.
#[derive(Debug, Clone)]
pub struct ServerSections {
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[sql]`; without one, schema `tate` with the default limits.
    pub sql: SqlToolConfig,
    /// `[orchestrator]`.
    pub orchestrator: OrchestratorConfig,
    /// `[summary]`, if configured (used with [`AskBenchOptions::summaries`]).
    pub summary: Option<SummaryConfig>,
    /// `[embedding]`, if configured. [`server_config`] leaves it out (the
    /// Ask benchmark measures the orchestrator, not MiniLM); callers that
    /// need schema linking as `quarry serve` links (`quarry eval tokens`)
    /// set it on the configuration themselves.
    pub embedding: Option<quarry_llm::embed::EmbeddingConfig>,
    /// `[cache]`. With `enabled = true` the scripted model is also set to
    /// temperature 0, so a repeated Ask is answered from the result cache
    /// and the model-response cache (`QUARRY__CACHE__ENABLED=true`).
    pub cache: quarry_sql::cache::CacheConfig,
}

impl ServerSections {
    /// Reads `path` (if any) and the environment as `quarry serve` does.
    ///
    /// # Errors
    /// An unreadable file or invalid values in these sections.
    pub fn load(path: Option<&Path>) -> anyhow::Result<ServerSections> {
        let figment = super::figment(path);
        Ok(ServerSections {
            database: section(&figment, "database")?,
            sql: optional(&figment, "sql")?.unwrap_or_else(|| SqlToolConfig {
                schemas: vec!["tate".to_owned()],
                ..SqlToolConfig::default()
            }),
            orchestrator: optional(&figment, "orchestrator")?.unwrap_or_default(),
            summary: optional(&figment, "summary")?,
            embedding: optional(&figment, "embedding")?,
            cache: optional(&figment, "cache")?.unwrap_or_default(),
        })
    }
}

/// The configuration's `[name]` section.
fn section<T: DeserializeOwned>(figment: &Figment, name: &str) -> anyhow::Result<T> {
    figment
        .extract_inner(name)
        .map_err(|e| anyhow::anyhow!("configuration [{name}]: {e}"))
}

/// The configuration's `[name]` section, if present.
fn optional<T: DeserializeOwned>(figment: &Figment, name: &str) -> anyhow::Result<Option<T>> {
    if figment.contains(name) {
        section(figment, name).map(Some)
    } else {
        Ok(None)
    }
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct AskBenchOptions {
    /// Server configuration sections (database, SQL tool, orchestrator, summaries).
    pub sections: ServerSections,
    /// Concurrent Ask streams, one measured level per entry, in order.
    pub streams: Vec<usize>,
    /// HTTP/2 connections the streams share (at most one per stream).
    pub connections: usize,
    /// The scripted model's latency per call (before its response headers).
    pub model_latency: Duration,
    /// Untimed Asks for this long before each level's measurement.
    pub warmup: Duration,
    /// Measured time per level (ignored when `requests` is set).
    pub duration: Duration,
    /// Timed Asks per level instead of a duration.
    pub requests: Option<u64>,
    /// The question asked.
    pub question: String,
    /// The SQL the scripted model runs through `query_database`.
    pub sql: String,
    /// Calibration calls of each internal RPC (0: none; the answer value is
    /// still looked up once).
    pub probes: usize,
    /// Serve `[summary]` too, so each Ask also lists summary kinds and the
    /// model is offered `get_summaries` (nothing is built).
    pub summaries: bool,
    /// Progress messages on stderr.
    pub progress: bool,
}

/// Internal calls measured one at a time on the idle server.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    /// `grpc.health.v1.Health/Check` for the whole server (unary, served
    /// without authentication, no database): the client wall time of a
    /// gRPC call that does nothing, the floor any RPC on this machine and
    /// connection pays (client and server tonic/hyper, HTTP/2 over
    /// loopback TCP, task wake-ups).
    pub empty_rpc: LatencySummary,
    /// DescribeSchema (every Ask's first internal call), client wall time.
    pub describe_schema: LatencySummary,
    /// Characters of the compact schema text in the system prompt.
    pub schema_chars: usize,
    /// ExecuteSql of the benchmark SQL, client wall time.
    pub execute_sql: LatencySummary,
    /// The database time ExecuteSql reported (`elapsed_us`).
    pub execute_sql_database: LatencySummary,
    /// ListSummaryKinds, client wall time (with summaries only).
    pub list_summary_kinds: Option<LatencySummary>,
    /// The first value of the SQL's result, which the scripted answer quotes.
    pub answer_value: String,
}

/// Memory of the whole process (server, scripted model and clients), KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Memory {
    /// `VmRSS` before the level's clients start.
    pub rss_before_kib: u64,
    /// `VmRSS` after they have stopped.
    pub rss_after_kib: u64,
    /// `VmHWM`: peak resident set size.
    pub peak_kib: u64,
    /// Whether the peak was reset before the level (else it is the
    /// process's peak since it started).
    pub peak_is_per_level: bool,
}

/// One measured level of concurrency.
#[derive(Debug, Clone, Default)]
pub struct LevelReport {
    /// Concurrent Ask streams.
    pub streams: usize,
    /// HTTP/2 connections they shared.
    pub connections: usize,
    /// Asks that completed with an `ANSWERED` answer and a usage event.
    pub asks: u64,
    /// Asks that failed: an error status, a broken stream, an answer status
    /// other than `ANSWERED`, a tool error, or no usage event.
    pub errors: u64,
    /// The first error's message.
    pub first_error: Option<String>,
    /// Measured window, seconds.
    pub seconds: f64,
    /// Request sent → `usage` event.
    pub end_to_end: LatencySummary,
    /// Request sent → first event (`started`).
    pub first_event: LatencySummary,
    /// End-to-end − `model_us` − `database_us`.
    pub overhead: LatencySummary,
    /// `elapsed_us` − `model_us` − `database_us`.
    pub server_overhead: LatencySummary,
    /// `tool_us` − SQL database time: the SQL tool hop around the database.
    pub sql_tool_hop: LatencySummary,
    /// `elapsed_us` − `model_us` − `tool_us` − conversation store.
    pub outside_calls: LatencySummary,
    /// End-to-end − `elapsed_us`.
    pub transport: LatencySummary,
    /// `model_us` − model calls × latency.
    pub model_excess: LatencySummary,
    /// SQL database time (`SqlToolResult.database_us`, summed).
    pub database: LatencySummary,
    /// `database_us` − SQL database time: storing the conversation turn.
    pub conversation_store: LatencySummary,
    /// `Usage.elapsed_us`: the server's time per Ask, request to usage
    /// event.
    pub server_time: LatencySummary,
    /// SQL results served from the result cache, summed over the Asks.
    pub result_cache_hits: u64,
    /// SQL results looked up in the result cache and executed.
    pub result_cache_misses: u64,
    /// Model calls answered from the model-response cache.
    pub model_cache_hits: u64,
    /// Mean model calls per Ask.
    pub model_calls_per_ask: f64,
    /// Mean tool calls per Ask.
    pub tool_calls_per_ask: f64,
    /// Process CPU time (user + system) per completed Ask, ms.
    pub cpu_ms_per_ask: Option<f64>,
    /// CPU time (user + system) of the server's own threads
    /// ([`SERVER_THREAD`]: its runtime's workers and blocking threads) per
    /// completed Ask, ms — the load generator and the scripted model run on
    /// other threads and are not counted.
    pub server_cpu_ms_per_ask: Option<f64>,
    /// CPU time (user + system) of the PostgreSQL backends connected to the
    /// benchmark's database per completed Ask, ms (the server's pooled
    /// connections: the SQL statements, DescribeSchema's catalog reads and
    /// the conversation store; PostgreSQL's background processes are not
    /// counted). Run on a database of its own: other clients' backends on
    /// it would be counted too.
    pub postgres_cpu_ms_per_ask: Option<f64>,
    /// Share of the machine's CPU time (all cores, every process —
    /// PostgreSQL and anything else running included) that was busy during
    /// the measured window, in `[0, 1]`.
    pub machine_cpu_busy: Option<f64>,
    /// Process memory.
    pub memory: Memory,
}

impl LevelReport {
    /// A report with counts and empty distributions, before [`summarise`].
    fn new(streams: usize, connections: usize) -> Self {
        LevelReport {
            streams,
            connections,
            ..Self::default()
        }
    }

    /// Completed Asks per second.
    pub fn throughput(&self) -> f64 {
        if self.seconds > 0.0 {
            self.asks as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The results of a run.
#[derive(Debug, Clone)]
pub struct AskBenchReport {
    /// The scripted model's latency per call.
    pub model_latency: Duration,
    /// The question asked.
    pub question: String,
    /// The SQL run per Ask.
    pub sql: String,
    /// Database pool size of each tool.
    pub pool_size: usize,
    /// Whether summaries were served.
    pub summaries: bool,
    /// The idle calibration.
    pub calibration: Calibration,
    /// One per level, in order.
    pub levels: Vec<LevelReport>,
}

/// The in-process Quarry server and how to stop it.
pub struct RunningServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    /// The task has been awaited to its end already.
    exited: bool,
    /// The server's own runtime ([`SERVER_THREAD`] threads).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // dropping a runtime blocks, which an async context does not allow
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl RunningServer {
    /// Stops the server and waits (at most 30 s) for it to end.
    ///
    /// # Errors
    /// The server failed or did not stop in time.
    pub async fn shut_down(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if self.exited {
            return Ok(());
        }
        match tokio::time::timeout(Duration::from_secs(30), &mut self.task).await {
            Ok(joined) => joined.context("server task")?,
            Err(_) => {
                self.task.abort();
                anyhow::bail!("the server did not stop within 30 s")
            }
        }
    }
}

/// The benchmark tenant's share of asks and tool calls in flight: more than
/// any level's streams.
const BENCH_SHARE_OUT_OF_REACH: usize = 1 << 20;

/// The policy role the benchmark's token carries.
const BENCH_ROLE: &str = "bench";

/// The server configuration: the sections given, the scripted model at
/// `model_url`, a fixed secret and a rate limit out of reach, no
/// background work, one role (the token's, [`token_for`]) reading every
/// schema of `sections.sql`.
///
/// # Errors
/// The configuration does not build, or `summaries` without a `[summary]`.
pub fn server_config(
    sections: &ServerSections,
    summaries: bool,
    model_url: &str,
) -> anyhow::Result<quarry_server::Config> {
    let toml = format!(
        r#"
        [server]
        development = true
        run_sync = false
        run_summary_builder = false
        [auth]
        jwt_secret = "{BENCH_SECRET}"
        [auth.rate_limit]
        requests_per_second = 1000000000
        burst = 1000000000
        "#
    );
    let mut config = quarry_server::Config::from_toml_layers(&[&toml])
        .map_err(|e| anyhow::anyhow!("benchmark server configuration: {e}"))?;
    config.database = sections.database.clone();
    config.sql = sections.sql.clone();
    // One role that reads every configured schema with every read scope.
    let role = quarry_auth::RoleConfig {
        scopes: [
            "ask",
            "sql:query",
            "sql:explain",
            "schema:read",
            "search",
            "summaries",
        ]
        .map(str::to_owned)
        .to_vec(),
        tables: config
            .sql
            .schemas
            .iter()
            .map(|s| format!("{s}.*"))
            .collect(),
        collections: vec!["*".to_owned()],
        summary_kinds: vec!["*".to_owned()],
        ..quarry_auth::RoleConfig::default()
    };
    config.policy.roles.insert(BENCH_ROLE.to_owned(), role);
    config.orchestrator = sections.orchestrator.clone();
    if summaries {
        config.summary = Some(
            sections
                .summary
                .clone()
                .context("--summaries needs a [summary] section in the configuration")?,
        );
    }
    let mut model = ModelConfig::new(model_url, "scripted");
    model.max_retries = 0;
    model.timeout_secs = 120;
    config.cache = sections.cache.clone();
    if config.cache.enabled {
        // deterministic, so identical model requests may be replayed
        model.temperature = Some(0.0);
    }
    config.model = Some(model);
    Ok(config)
}

/// The scripted model: a `query_database` call first, the answer once a
/// tool result is in the conversation, each after `latency`.
fn responder(
    sql: &str,
    answer: Arc<OnceLock<String>>,
    latency: Duration,
) -> impl Fn(&Value) -> ScriptedTurn + Send + Sync + 'static {
    let arguments = serde_json::json!({ "sql": sql }).to_string();
    move |request: &Value| {
        let has_tool_result = request["messages"]
            .as_array()
            .is_some_and(|messages| messages.iter().any(|m| m["role"] == "tool"));
        let turn = if has_tool_result {
            let value = answer.get().map_or("unknown", String::as_str);
            ScriptedTurn::text(format!(
                "According to the database the answer is {value}; the figure comes straight \
                 from the query result, which is cited below."
            ))
            .with_usage(ANSWER_STEP_USAGE.0, ANSWER_STEP_USAGE.1)
        } else {
            ScriptedTurn::tool_call(QUERY_DATABASE, arguments.clone())
                .with_usage(TOOL_STEP_USAGE.0, TOOL_STEP_USAGE.1)
        };
        turn.with_delay(latency)
    }
}

/// A one-day token for tenant `bench`.
fn token() -> anyhow::Result<String> {
    token_for("bench", "bench-ask")
}

/// A one-day token of the benchmark's role for `tenant`.
///
/// # Errors
/// The token cannot be signed.
pub fn token_for(tenant: &str, subject: &str) -> anyhow::Result<String> {
    let mut claims =
        quarry_auth::Claims::issued_now(tenant, subject, Duration::from_secs(24 * 3600));
    claims.roles = vec![BENCH_ROLE.to_owned()];
    quarry_auth::mint_hs256(BENCH_SECRET.as_bytes(), &claims).context("minting the token")
}

/// Binds `127.0.0.1:0` as `quarry serve` does and serves `config` there
/// until [`RunningServer::shut_down`].
///
/// # Errors
/// The address cannot be bound.
pub async fn start_server(config: quarry_server::Config) -> anyhow::Result<RunningServer> {
    // bound as `quarry serve` is (which sets TCP_NODELAY on accepted sockets)
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // a runtime of its own, so that the server's CPU time is its threads'
    // (`SERVER_THREAD`), apart from the clients' and the scripted model's
    // tokio's default: one worker per core, or `TOKIO_WORKER_THREADS`
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SERVER_THREAD)
        // blocking threads that exit would take their CPU time with them
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .enable_all()
        .build()
        .context("building the server's runtime")?;
    let listener = listener.into_std()?;
    let task = runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        quarry_server::serve(listener, config, quarry_server::Roles::all(), async {
            let _ = stopped.await;
        })
        .await
    });
    Ok(RunningServer {
        url,
        stop: Some(stop),
        task,
        exited: false,
        runtime: Some(runtime),
    })
}

/// Name of the in-process server's runtime threads (Linux shows the first
/// 15 bytes in `/proc/self/task/<tid>/comm`).
pub const SERVER_THREAD: &str = "quarry-server";

/// Starts the scripted model and the server, calibrates, measures each
/// level, and stops both.
///
/// # Errors
/// The server cannot start (configuration, database), the benchmark SQL
/// fails, or a connection cannot be made. Failed Asks are counted, not errors.
pub async fn run_ask_bench(options: &AskBenchOptions) -> anyhow::Result<AskBenchReport> {
    anyhow::ensure!(
        !options.streams.is_empty() && options.streams.iter().all(|&n| n > 0),
        "--streams needs one or more counts above 0"
    );
    let answer = Arc::new(OnceLock::new());
    let model = ScriptedServer::try_start_responder(responder(
        &options.sql,
        Arc::clone(&answer),
        options.model_latency,
    ))
    .await
    .context("starting the scripted model")?;
    model.set_record_limit(0);
    let mut config = server_config(&options.sections, options.summaries, &model.base_url())?;
    // one tenant, the benchmark's: its fair shares out of reach, as its rate
    // limit is (`quarry bench fairness` measures them)
    config.orchestrator.max_asks_per_tenant = BENCH_SHARE_OUT_OF_REACH;
    config.orchestrator.max_tool_calls_per_tenant = BENCH_SHARE_OUT_OF_REACH;
    config.sql.exec.tenant_share = 1.0;
    let pool_size = config.database.pool_size;
    let mut server = start_server(config).await?;
    progress(
        options.progress,
        format!(
            "server on {}, scripted model on {} ({} ms per call)",
            server.url,
            model.base_url(),
            options.model_latency.as_millis()
        ),
    );
    let token = token()?;
    let result = async {
        let channel = wait_ready(&mut server, &token).await?;
        let calibration = calibrate(options, &channel, &token).await?;
        let _ = answer.set(calibration.answer_value.clone());
        let mut levels = Vec::new();
        for &streams in &options.streams {
            levels.push(run_level(options, &server.url, &token, streams).await?);
        }
        anyhow::Ok((calibration, levels))
    }
    .await;
    let stopped = server.shut_down().await;
    let (calibration, levels) = result?;
    stopped?;
    Ok(AskBenchReport {
        model_latency: options.model_latency,
        question: options.question.clone(),
        sql: options.sql.clone(),
        pool_size,
        summaries: options.summaries,
        calibration,
        levels,
    })
}

/// Waits until the server answers DescribeSchema (it binds at once but
/// builds its pools first); fails early if the server stops.
///
/// # Errors
/// The server stopped, or was not ready within a minute.
pub async fn wait_ready(server: &mut RunningServer, token: &str) -> anyhow::Result<Channel> {
    let channel = Endpoint::from_shared(server.url.clone())?.connect_lazy();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut client = SqlServiceClient::new(channel.clone());
        let request =
            quarry_server::client::bearer_request(DescribeSchemaRequest::default(), token)?;
        let last = tokio::select! {
            joined = &mut server.task => {
                server.exited = true;
                match joined.context("server task")? {
                    Ok(()) => anyhow::bail!("the server stopped before it was ready"),
                    Err(e) => anyhow::bail!("the server stopped before it was ready: {e:#}"),
                }
            }
            response = client.describe_schema(request) => match response {
                Ok(_) => return Ok(channel),
                Err(status) => format!("{}: {}", status.code(), status.message()),
            },
        };
        if Instant::now() > deadline {
            anyhow::bail!("the server was not ready within {READY_TIMEOUT:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Times the internal calls one at a time; looks up the answer value.
async fn calibrate(
    options: &AskBenchOptions,
    channel: &Channel,
    token: &str,
) -> anyhow::Result<Calibration> {
    let mut sql = SqlServiceClient::new(channel.clone());
    let execute = |sql_text: String| {
        quarry_server::client::bearer_request(
            ExecuteSqlRequest {
                sql: sql_text,
                max_rows: 0,
            },
            token,
        )
    };
    let first = sql
        .execute_sql(execute(options.sql.clone())?)
        .await
        .map_err(|s| anyhow::anyhow!("the benchmark SQL fails: {}", status_error(s)))?
        .into_inner();
    let answer_value = first
        .result
        .as_ref()
        .and_then(|r| r.rows.first())
        .and_then(|row| row.values.first())
        .map_or_else(
            || "no rows".to_owned(),
            quarry_orchestrator::render::value_text,
        );
    let mut calibration = Calibration {
        answer_value,
        ..Calibration::default()
    };
    if options.probes == 0 {
        return Ok(calibration);
    }
    progress(
        options.progress,
        format!("calibration: {} calls of each internal RPC", options.probes),
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut empty = Latencies::new()?;
    for _ in 0..options.probes {
        let started = Instant::now();
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map_err(|s| anyhow::anyhow!("Health/Check: {}", status_error(s)))?;
        empty.record(started.elapsed());
    }
    calibration.empty_rpc = empty.summary();
    let mut describe = Latencies::new()?;
    let mut execute_wall = Latencies::new()?;
    let mut execute_db = Latencies::new()?;
    for _ in 0..options.probes {
        let request =
            quarry_server::client::bearer_request(DescribeSchemaRequest::default(), token)?;
        let started = Instant::now();
        let response = sql
            .describe_schema(request)
            .await
            .map_err(|s| anyhow::anyhow!("DescribeSchema: {}", status_error(s)))?;
        describe.record(started.elapsed());
        calibration.schema_chars = response.get_ref().compact.chars().count();

        let request = execute(options.sql.clone())?;
        let started = Instant::now();
        let response = sql
            .execute_sql(request)
            .await
            .map_err(|s| anyhow::anyhow!("ExecuteSql: {}", status_error(s)))?;
        execute_wall.record(started.elapsed());
        execute_db.record(Duration::from_micros(response.get_ref().elapsed_us));
    }
    calibration.describe_schema = describe.summary();
    calibration.execute_sql = execute_wall.summary();
    calibration.execute_sql_database = execute_db.summary();
    if options.summaries {
        let mut summaries = SummaryServiceClient::new(channel.clone());
        let mut list = Latencies::new()?;
        for _ in 0..options.probes {
            let request = quarry_server::client::bearer_request(ListSummaryKindsRequest {}, token)?;
            let started = Instant::now();
            summaries
                .list_summary_kinds(request)
                .await
                .map_err(|s| anyhow::anyhow!("ListSummaryKinds: {}", status_error(s)))?;
            list.record(started.elapsed());
        }
        calibration.list_summary_kinds = Some(list.summary());
    }
    Ok(calibration)
}

/// One successful Ask as the client saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) end_to_end: Duration,
    first_event: Duration,
    elapsed: Duration,
    pub(crate) model: Duration,
    tool: Duration,
    /// `Usage.database_us`: the SQL tool's and the conversation store's.
    database: Duration,
    /// The SQL tool's, from the tool results.
    pub(crate) sql_database: Duration,
    model_calls: u32,
    tool_calls: u32,
    /// `Usage.result_cache_hits`, `result_cache_misses`, `model_cache_hits`.
    cache: [u32; 3],
}

impl Sample {
    fn from_usage(
        end_to_end: Duration,
        first_event: Duration,
        usage: &Usage,
        sql_database: Duration,
    ) -> Self {
        Sample {
            end_to_end,
            first_event,
            elapsed: Duration::from_micros(usage.elapsed_us),
            model: Duration::from_micros(usage.model_us),
            tool: Duration::from_micros(usage.tool_us),
            database: Duration::from_micros(usage.database_us),
            sql_database,
            model_calls: usage.model_calls,
            tool_calls: usage.tool_calls,
            cache: [
                usage.result_cache_hits,
                usage.result_cache_misses,
                usage.model_cache_hits,
            ],
        }
    }
}

/// Sends one Ask and reads its whole stream.
pub(crate) async fn one_ask(
    client: &mut AssistantServiceClient<Channel>,
    token: &str,
    question: &str,
) -> Result<Sample, String> {
    let request = quarry_server::client::bearer_request(
        AskRequest {
            question: question.to_owned(),
            mode: AskMode::Agentic as i32,
            ..AskRequest::default()
        },
        token,
    )
    .map_err(|e| e.to_string())?;
    let sent = Instant::now();
    let mut stream = client
        .ask(request)
        .await
        .map_err(|s| status_error(s).to_string())?
        .into_inner();
    let mut first_event = None;
    let mut answered = None;
    let mut tool_error = None;
    let mut sql_database = Duration::ZERO;
    let mut done = None;
    while let Some(message) = stream
        .message()
        .await
        .map_err(|s| status_error(s).to_string())?
    {
        let now = sent.elapsed();
        first_event.get_or_insert(now);
        match message.event {
            Some(Event::ToolResult(result)) => match result.outcome {
                Some(Outcome::Error(error)) => {
                    tool_error.get_or_insert(format!("tool {} failed: {error}", result.tool_name));
                }
                Some(Outcome::Sql(sql)) => sql_database += Duration::from_micros(sql.database_us),
                _ => {}
            },
            Some(Event::FinalAnswer(answer)) => {
                answered = Some((answer.status, answer.text));
            }
            Some(Event::Usage(usage)) => done = Some((now, usage)),
            _ => {}
        }
    }
    if let Some(error) = tool_error {
        return Err(error);
    }
    match answered {
        Some((status, _)) if status == AnswerStatus::Answered as i32 => {}
        Some((status, text)) => {
            let name = AnswerStatus::try_from(status)
                .map_or_else(|_| status.to_string(), |s| s.as_str_name().to_owned());
            let text: String = text.chars().take(300).collect();
            return Err(format!("answer status {name}: {text}"));
        }
        None => return Err("the stream ended without a final answer".to_owned()),
    }
    let (end_to_end, usage) = done.ok_or("the stream ended without a usage event")?;
    Ok(Sample::from_usage(
        end_to_end,
        first_event.unwrap_or(end_to_end),
        &usage,
        sql_database,
    ))
}

/// What one stream collected.
#[derive(Default)]
struct Collected {
    samples: Vec<Sample>,
    errors: u64,
    first_error: Option<(Instant, String)>,
    /// When the last timed Ask finished.
    last_end: Option<Instant>,
}

/// Runs `streams` closed-loop clients: warm-up, then the measured window.
async fn run_level(
    options: &AskBenchOptions,
    url: &str,
    token: &str,
    streams: usize,
) -> anyhow::Result<LevelReport> {
    let connections = options.connections.clamp(1, streams);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        channels.push(channel);
    }
    progress(
        options.progress,
        format!(
            "{streams} streams over {connections} connection(s): warm-up {:.0} s, then {}",
            options.warmup.as_secs_f64(),
            match options.requests {
                Some(n) => format!("{n} timed Asks"),
                None => format!("{:.0} s", options.duration.as_secs_f64()),
            }
        ),
    );
    let peak_is_per_level = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before_kib = proc_status_kib("VmRSS").unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(AtomicU64::new(0));
    let budget_done = Arc::new(tokio::sync::Notify::new());
    let measure_from = Instant::now() + options.warmup;
    let collected = Arc::new(Mutex::new(Vec::<Collected>::with_capacity(streams)));
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let mut client = AssistantServiceClient::new(channels[i % connections].clone());
        let stop = Arc::clone(&stop);
        let budget = Arc::clone(&budget);
        let budget_done = Arc::clone(&budget_done);
        let collected = Arc::clone(&collected);
        let token = token.to_owned();
        let question = options.question.clone();
        let requests = options.requests;
        tasks.push(tokio::spawn(async move {
            let mut mine = Collected::default();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let timed = started >= measure_from;
                if timed
                    && let Some(limit) = requests
                    && budget.fetch_add(1, Ordering::Relaxed) >= limit
                {
                    budget_done.notify_one();
                    break;
                }
                let outcome = one_ask(&mut client, &token, &question).await;
                if !timed {
                    if outcome.is_err() {
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                    continue;
                }
                mine.last_end = Some(Instant::now());
                match outcome {
                    Ok(sample) => mine.samples.push(sample),
                    Err(message) => {
                        mine.errors += 1;
                        mine.first_error.get_or_insert((started, message));
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            collected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(mine);
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let postgres = postgres_backends(&options.sections.database.url).await;
    let postgres_from = postgres.as_ref().map(|pids| processes_cpu(pids));
    let server_from = threads_cpu(SERVER_THREAD);
    let cpu_from = cpu_time();
    let machine_from = machine_cpu();
    let window_end = match options.requests {
        None => {
            tokio::time::sleep(options.duration).await;
            stop.store(true, Ordering::Relaxed);
            Some(Instant::now())
        }
        Some(_) => {
            budget_done.notified().await;
            stop.store(true, Ordering::Relaxed);
            None
        }
    };
    for task in tasks {
        task.await.context("a client task failed")?;
    }
    let cpu_to = cpu_time();
    let server_to = threads_cpu(SERVER_THREAD);
    let postgres_to = postgres.as_ref().map(|pids| processes_cpu(pids));
    let machine_to = machine_cpu();
    let rss_after_kib = proc_status_kib("VmRSS").unwrap_or(0);
    let peak_kib = proc_status_kib("VmHWM").unwrap_or(0);
    let collected = std::mem::take(&mut *collected.lock().unwrap_or_else(PoisonError::into_inner));
    let last_end = collected.iter().filter_map(|c| c.last_end).max();
    let window_end = window_end.or(last_end).unwrap_or(measure_from);
    let seconds = window_end
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let errors: u64 = collected.iter().map(|c| c.errors).sum();
    let first_error = collected
        .iter()
        .filter_map(|c| c.first_error.as_ref())
        .min_by_key(|(at, _)| *at)
        .map(|(_, message)| message.clone());
    let samples: Vec<Sample> = collected.into_iter().flat_map(|c| c.samples).collect();
    let asks = samples.len() as u64;
    let cpu_ms_per_ask = match (cpu_from, cpu_to) {
        (Some(from), Some(to)) if asks > 0 => {
            Some(to.saturating_sub(from).as_secs_f64() * 1000.0 / asks as f64)
        }
        _ => None,
    };
    let per_ask = |from: Option<Duration>, to: Option<Duration>| match (from, to) {
        (Some(from), Some(to)) if asks > 0 => {
            Some(to.saturating_sub(from).as_secs_f64() * 1000.0 / asks as f64)
        }
        _ => None,
    };
    let server_cpu_ms_per_ask = per_ask(server_from, server_to);
    let postgres_cpu_ms_per_ask = per_ask(postgres_from.flatten(), postgres_to.flatten());
    let machine_cpu_busy = match (machine_from, machine_to) {
        (Some((busy_from, total_from)), Some((busy_to, total_to))) if total_to > total_from => {
            Some(busy_to.saturating_sub(busy_from) as f64 / (total_to - total_from) as f64)
        }
        _ => None,
    };
    let report = summarise(
        &samples,
        options.model_latency,
        LevelReport {
            asks,
            errors,
            first_error,
            seconds,
            cpu_ms_per_ask,
            server_cpu_ms_per_ask,
            postgres_cpu_ms_per_ask,
            machine_cpu_busy,
            memory: Memory {
                rss_before_kib,
                rss_after_kib,
                peak_kib,
                peak_is_per_level,
            },
            ..LevelReport::new(streams, connections)
        },
    )?;
    progress(
        options.progress,
        format!(
            "{streams} streams: {} Asks, {:.1}/s, {} errors, overhead p99 {:.3} ms",
            report.asks,
            report.throughput(),
            report.errors,
            report.overhead.p99_ms
        ),
    );
    Ok(report)
}

/// Fills the distributions of `report` from `samples`.
fn summarise(
    samples: &[Sample],
    model_latency: Duration,
    mut report: LevelReport,
) -> anyhow::Result<LevelReport> {
    let mut end_to_end = Latencies::new()?;
    let mut first_event = Latencies::new()?;
    let mut overhead = Latencies::new()?;
    let mut server_overhead = Latencies::new()?;
    let mut sql_tool_hop = Latencies::new()?;
    let mut outside_calls = Latencies::new()?;
    let mut transport = Latencies::new()?;
    let mut model_excess = Latencies::new()?;
    let mut database = Latencies::new()?;
    let mut conversation_store = Latencies::new()?;
    let mut server_time = Latencies::new()?;
    let (mut model_calls, mut tool_calls) = (0u64, 0u64);
    for s in samples {
        server_time.record(s.elapsed);
        report.result_cache_hits += u64::from(s.cache[0]);
        report.result_cache_misses += u64::from(s.cache[1]);
        report.model_cache_hits += u64::from(s.cache[2]);
        end_to_end.record(s.end_to_end);
        first_event.record(s.first_event);
        overhead.record(
            s.end_to_end
                .saturating_sub(s.model)
                .saturating_sub(s.database),
        );
        let store = s.database.saturating_sub(s.sql_database);
        server_overhead.record(s.elapsed.saturating_sub(s.model).saturating_sub(s.database));
        sql_tool_hop.record(s.tool.saturating_sub(s.sql_database));
        outside_calls.record(
            s.elapsed
                .saturating_sub(s.model)
                .saturating_sub(s.tool)
                .saturating_sub(store),
        );
        transport.record(s.end_to_end.saturating_sub(s.elapsed));
        model_excess.record(s.model.saturating_sub(model_latency * s.model_calls));
        database.record(s.sql_database);
        conversation_store.record(store);
        model_calls += u64::from(s.model_calls);
        tool_calls += u64::from(s.tool_calls);
    }
    report.end_to_end = end_to_end.summary();
    report.first_event = first_event.summary();
    report.overhead = overhead.summary();
    report.server_overhead = server_overhead.summary();
    report.sql_tool_hop = sql_tool_hop.summary();
    report.outside_calls = outside_calls.summary();
    report.transport = transport.summary();
    report.model_excess = model_excess.summary();
    report.database = database.summary();
    report.conversation_store = conversation_store.summary();
    report.server_time = server_time.summary();
    if !samples.is_empty() {
        report.model_calls_per_ask = model_calls as f64 / samples.len() as f64;
        report.tool_calls_per_ask = tool_calls as f64 / samples.len() as f64;
    }
    Ok(report)
}

/// A `kB` field of `/proc/self/status` (e.g. `VmRSS`, `VmHWM`), in KiB;
/// `None` off Linux.
pub(crate) fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kib(&status, field)
}

pub(crate) fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User + system CPU time of the whole process so far (all threads), from
/// `/proc/self/stat` (in `USER_HZ` ticks, 10 ms); `None` off Linux.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat_cpu(&stat)
}

/// CPU time so far of this process's threads whose name starts with
/// `prefix` (`/proc/self/task/<tid>/comm`): the sum of their
/// `/proc/self/task/<tid>/schedstat` run times (nanoseconds), or of `stat`'s
/// utime + stime where schedstat is missing; `None` off Linux.
fn threads_cpu(prefix: &str) -> Option<Duration> {
    // comm holds at most 15 bytes of the name
    let prefix = &prefix[..prefix.len().min(15)];
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(task) = task else { continue };
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim_end().starts_with(prefix) {
            total += task_cpu(&path).unwrap_or_default();
        }
    }
    Some(total)
}

/// CPU time so far of a process or thread directory under `/proc`.
fn task_cpu(path: &Path) -> Option<Duration> {
    if let Ok(schedstat) = std::fs::read_to_string(path.join("schedstat"))
        && let Some(ns) = schedstat
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
    {
        return Some(Duration::from_nanos(ns));
    }
    parse_stat_cpu(&std::fs::read_to_string(path.join("stat")).ok()?)
}

/// CPU time so far of the processes `pids` (those that have exited count
/// nothing); `None` when none can be read (PostgreSQL on another machine).
fn processes_cpu(pids: &[i32]) -> Option<Duration> {
    let times: Vec<Duration> = pids
        .iter()
        .filter_map(|pid| task_cpu(Path::new(&format!("/proc/{pid}"))))
        .collect();
    (!times.is_empty()).then(|| times.into_iter().sum())
}

/// The PostgreSQL backends connected to `url`'s database, but this
/// lookup's own; `None` when it cannot be read.
async fn postgres_backends(url: &str) -> Option<Vec<i32>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    let connection = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND backend_type = 'client backend'",
            &[],
        )
        .await
        .ok();
    drop(client);
    let _ = connection.await;
    Some(rows?.iter().map(|row| row.get::<_, i32>(0)).collect())
}

fn parse_stat_cpu(stat: &str) -> Option<Duration> {
    // fields after the command name (in parentheses, may hold spaces):
    // state(3) … utime(14) stime(15)
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// The machine's busy and total CPU time so far, in ticks, from the
/// `cpu` line of `/proc/stat` (busy = total − idle − iowait); `None` off Linux.
pub(crate) fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_cpu(&stat)
}

fn parse_machine_cpu(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user and nice)
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total.saturating_sub(idle), total))
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl AskBenchReport {
    /// Plain-text report: settings, calibration, one block per level, then
    /// a one-line-per-level summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let latency_ms = self.model_latency.as_secs_f64() * 1000.0;
        let _ = writeln!(
            out,
            "quarry bench ask: agentic Asks, scripted model {latency_ms:.0} ms per call \
             (tool call, then answer), SQL tool pool {} connections{}",
            self.pool_size,
            if self.summaries {
                ", summaries served"
            } else {
                ""
            },
        );
        let _ = writeln!(out, "question: {}", self.question);
        let _ = writeln!(out, "sql: {}", self.sql);
        let c = &self.calibration;
        if c.describe_schema.count > 0 {
            let _ = writeln!(
                out,
                "calibration (idle, one call at a time, {} each): an empty RPC (health Check, \
                 no auth, no database) p50 {:.3} ms p99 {:.3} ms; DescribeSchema p50 {:.3} ms \
                 p99 {:.3} ms ({} schema characters in the prompt); ExecuteSql p50 {:.3} ms \
                 p99 {:.3} ms, of which database p50 {:.3} ms",
                c.describe_schema.count,
                c.empty_rpc.p50_ms,
                c.empty_rpc.p99_ms,
                c.describe_schema.p50_ms,
                c.describe_schema.p99_ms,
                c.schema_chars,
                c.execute_sql.p50_ms,
                c.execute_sql.p99_ms,
                c.execute_sql_database.p50_ms,
            );
            if let Some(list) = &c.list_summary_kinds {
                let _ = writeln!(
                    out,
                    "calibration: ListSummaryKinds p50 {:.3} ms p99 {:.3} ms",
                    list.p50_ms, list.p99_ms
                );
            }
        }
        let _ = writeln!(
            out,
            "overhead = end-to-end − model time (Usage.model_us) − database time \
             (Usage.database_us: the SQL statement and the conversation store): orchestrator, \
             DescribeSchema, SQL tool hop (in-process gRPC service, validation), streaming, auth, and the client's \
             gRPC; server overhead = Usage.elapsed_us − model − database time"
        );
        for level in &self.levels {
            out.push('\n');
            let _ = writeln!(
                out,
                "{} streams over {} connection(s): {} Asks in {:.1} s = {:.1} Asks/s, {} errors; \
                 {:.2} model and {:.2} tool calls per Ask",
                level.streams,
                level.connections,
                level.asks,
                level.seconds,
                level.throughput(),
                level.errors,
                level.model_calls_per_ask,
                level.tool_calls_per_ask,
            );
            if let Some(error) = &level.first_error {
                let _ = writeln!(out, "  first error: {error}");
            }
            let _ = writeln!(
                out,
                "  cache: {} SQL results from the result cache, {} executed after a miss; \
                 {} model calls from the model-response cache",
                level.result_cache_hits, level.result_cache_misses, level.model_cache_hits,
            );
            let _ = writeln!(
                out,
                "  {:<34} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "ms", "p50", "p90", "p99", "max", "mean"
            );
            for (label, s) in [
                ("end-to-end", &level.end_to_end),
                ("server time (Usage.elapsed_us)", &level.server_time),
                ("first event", &level.first_event),
                ("overhead (client view)", &level.overhead),
                ("overhead (server view)", &level.server_overhead),
                ("  SQL tool hop (tool − database)", &level.sql_tool_hop),
                ("  outside model and tool calls", &level.outside_calls),
                ("transport (client ↔ server gRPC)", &level.transport),
                ("database: SQL statement", &level.database),
                ("database: conversation store", &level.conversation_store),
                ("model calls beyond the latency", &level.model_excess),
            ] {
                let _ = writeln!(
                    out,
                    "  {:<34} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                    label, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.mean_ms
                );
            }
            let m = &level.memory;
            let _ = writeln!(
                out,
                "  memory (whole process: server, scripted model, clients): RSS {:.1} MiB \
                 before, {:.1} MiB after, peak {:.1} MiB{}",
                mib(m.rss_before_kib),
                mib(m.rss_after_kib),
                mib(m.peak_kib),
                if m.peak_is_per_level {
                    " (VmHWM during this level)"
                } else {
                    " (VmHWM since the process started)"
                }
            );
            if let Some(cpu) = level.cpu_ms_per_ask {
                let _ = writeln!(
                    out,
                    "  process CPU per Ask: {cpu:.2} ms (server + scripted model + client; \
                     PostgreSQL not included)"
                );
            }
            if let Some(cpu) = level.server_cpu_ms_per_ask {
                let _ = writeln!(
                    out,
                    "  Quarry server CPU per Ask: {cpu:.3} ms (its runtime's threads only)"
                );
            }
            if let Some(cpu) = level.postgres_cpu_ms_per_ask {
                let _ = writeln!(
                    out,
                    "  PostgreSQL CPU per Ask: {cpu:.3} ms (backends connected to the database)"
                );
            }
            if let Some(busy) = level.machine_cpu_busy {
                let _ = writeln!(
                    out,
                    "  machine CPU busy: {:.0} % of {} cores (every process, PostgreSQL included)",
                    busy * 100.0,
                    std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
                );
            }
        }
        if self.levels.len() > 1 {
            out.push('\n');
            let _ = writeln!(
                out,
                "{:>7} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>7} {:>8}",
                "streams",
                "Asks/s",
                "e2e p50",
                "e2e p99",
                "ovh p50",
                "ovh p99",
                "srv p99",
                "errors",
                "peak MiB"
            );
            for l in &self.levels {
                let _ = writeln!(
                    out,
                    "{:>7} {:>9.1} {:>9.3} {:>9.3} {:>10.3} {:>10.3} {:>10.3} {:>7} {:>8.1}",
                    l.streams,
                    l.throughput(),
                    l.end_to_end.p50_ms,
                    l.end_to_end.p99_ms,
                    l.overhead.p50_ms,
                    l.overhead.p99_ms,
                    l.server_overhead.p99_ms,
                    l.errors,
                    mib(l.memory.peak_kib)
                );
            }
        }
        out
    }

    /// The report as one JSON object (times in ms, memory in KiB).
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.calibration;
        serde_json::json!({
            "model_latency_ms": round3(self.model_latency.as_secs_f64() * 1000.0),
            "question": self.question,
            "sql": self.sql,
            "pool_size": self.pool_size,
            "summaries": self.summaries,
            "calibration": {
                "empty_rpc": c.empty_rpc.to_json(),
                "describe_schema": c.describe_schema.to_json(),
                "schema_chars": c.schema_chars,
                "execute_sql": c.execute_sql.to_json(),
                "execute_sql_database": c.execute_sql_database.to_json(),
                "list_summary_kinds": c.list_summary_kinds.map(|s| s.to_json()),
                "answer_value": c.answer_value,
            },
            "levels": self.levels.iter().map(|l| serde_json::json!({
                "streams": l.streams,
                "connections": l.connections,
                "asks": l.asks,
                "errors": l.errors,
                "first_error": l.first_error,
                "seconds": round3(l.seconds),
                "asks_per_second": round3(l.throughput()),
                "model_calls_per_ask": round3(l.model_calls_per_ask),
                "tool_calls_per_ask": round3(l.tool_calls_per_ask),
                "end_to_end": l.end_to_end.to_json(),
                "server_time": l.server_time.to_json(),
                "cache": {
                    "result_hits": l.result_cache_hits,
                    "result_misses": l.result_cache_misses,
                    "model_hits": l.model_cache_hits,
                },
                "first_event": l.first_event.to_json(),
                "overhead": l.overhead.to_json(),
                "server_overhead": l.server_overhead.to_json(),
                "sql_tool_hop": l.sql_tool_hop.to_json(),
                "outside_calls": l.outside_calls.to_json(),
                "transport": l.transport.to_json(),
                "database": l.database.to_json(),
                "conversation_store": l.conversation_store.to_json(),
                "model_excess": l.model_excess.to_json(),
                "cpu_ms_per_ask": l.cpu_ms_per_ask.map(round3),
                "server_cpu_ms_per_ask": l.server_cpu_ms_per_ask.map(round3),
                "postgres_cpu_ms_per_ask": l.postgres_cpu_ms_per_ask.map(round3),
                "machine_cpu_busy": l.machine_cpu_busy.map(round3),
                "memory_kib": {
                    "rss_before": l.memory.rss_before_kib,
                    "rss_after": l.memory.rss_after_kib,
                    "peak": l.memory.peak_kib,
                    "peak_is_per_level": l.memory.peak_is_per_level,
                },
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_parse() {
        let status = "Name:\tquarry\nVmHWM:\t  123456 kB\nVmRSS:\t   65432 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(123_456));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(65_432));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        // utime 250 ticks, stime 50 ticks; a command name with spaces and ')'
        let stat = "42 (tokio (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0";
        assert_eq!(parse_stat_cpu(stat), Some(Duration::from_secs(3)));
        let machine = "cpu  100 5 20 800 10 1 2 0 0 0\ncpu0 50 2 10 400 5 0 1 0 0 0\n";
        assert_eq!(parse_machine_cpu(machine), Some((128, 938)));
    }

    #[test]
    fn the_scripted_model_calls_the_tool_first_and_answers_after_its_result() {
        let answer = Arc::new(OnceLock::new());
        let respond = responder("SELECT 1", Arc::clone(&answer), Duration::ZERO);
        let first = serde_json::json!({"messages": [
            {"role": "system", "content": "schema"},
            {"role": "user", "content": "how many?"},
        ]});
        let turn = format!("{:?}", respond(&first));
        assert!(
            turn.contains(QUERY_DATABASE) && turn.contains("SELECT 1"),
            "{turn}"
        );
        answer.set("6637".to_owned()).unwrap();
        let second = serde_json::json!({"messages": [
            {"role": "user", "content": "how many?"},
            {"role": "assistant", "tool_calls": []},
            {"role": "tool", "tool_call_id": "call_1", "content": "rows"},
        ]});
        // the text's pieces joined
        let turn = format!("{:?}", respond(&second)).replace("\", \"", "");
        assert!(
            turn.contains("6637") && !turn.contains(QUERY_DATABASE),
            "{turn}"
        );
    }

    #[test]
    fn overheads_subtract_model_and_database_time() {
        let ms = Duration::from_millis;
        let sample = Sample {
            end_to_end: ms(110),
            first_event: ms(1),
            elapsed: ms(109),
            model: ms(100),
            tool: ms(5),
            database: ms(3),
            sql_database: ms(2),
            model_calls: 2,
            tool_calls: 1,
            cache: [1, 0, 2],
        };
        // 1 ms of the database time is the conversation store, inside elapsed
        let r = summarise(&[sample], ms(45), LevelReport::new(1, 1)).unwrap();
        assert!((r.overhead.p50_ms - 7.0).abs() < 0.01, "{:?}", r.overhead);
        assert!((r.server_overhead.p50_ms - 6.0).abs() < 0.01);
        assert!((r.sql_tool_hop.p50_ms - 3.0).abs() < 0.01);
        assert!((r.outside_calls.p50_ms - 3.0).abs() < 0.01);
        assert!((r.transport.p50_ms - 1.0).abs() < 0.01);
        assert!((r.conversation_store.p50_ms - 1.0).abs() < 0.01);
        assert!((r.database.p50_ms - 2.0).abs() < 0.01);
        assert!((r.model_excess.p50_ms - 10.0).abs() < 0.01);
        // 3 significant digits of the histogram at 109 ms
        assert!(
            (r.server_time.p50_ms - 109.0).abs() < 0.1,
            "{:?}",
            r.server_time
        );
        assert_eq!(
            (
                r.result_cache_hits,
                r.result_cache_misses,
                r.model_cache_hits
            ),
            (1, 0, 2)
        );
        assert!((r.model_calls_per_ask - 2.0).abs() < f64::EPSILON);
    }
}
