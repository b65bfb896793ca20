//! `quarry bench fairness`: does one tenant's flood move another tenant's
//! latency?
//!
//! One process runs a scripted model and a Quarry server as
//! [`crate::ask`] does, but with the configured fair-share limits in force:
//! `[auth.rate_limit]` (from the configuration, else its default), `[sql]`
//! (`exec.tenant_share`, `work_mem`, `temp_file_limit`) and `[orchestrator]`
//! (`max_asks_per_tenant`, `max_tool_calls_per_*`, `tenant_wait_ms`). Two
//! tenants call it:
//! - **calm** sends agentic Asks at a steady rate (an open loop: one every
//!   `1 / calm_rate` seconds, whatever the previous one is doing); its model
//!   asks for one `query_database` call of a cheap query, then answers;
//! - **flood** sends `flood_rate` requests per second (an open loop, by
//!   default ten times the rate limit), half ExecuteSql of a slow query, half
//!   Asks whose model asks for `flood_tool_calls` calls of that slow query in
//!   one step; at most `flood_in_flight` of its requests are open at once
//!   (ticks beyond that are counted, not sent).
//!
//! The scripted model tells the tenants apart by the question (the flood's
//! carries [`FLOOD_MARK`]).
//!
//! Phase **alone**: the calm load only, for `duration`. Phase **flood**: the
//! flood starts, and after `ramp` the same calm load runs for `duration`
//! beside it. The calm tenant's end-to-end latency (request sent → usage
//! event) and errors are reported per phase; the flood's outcomes by status
//! code. Memory is sampled every 100 ms: this process's `VmRSS` (server,
//! scripted model and clients; `VmHWM` reset per phase where the kernel
//! allows), and PostgreSQL's — the postmaster and its children found through
//! `pg_backend_pid()` and `/proc` (so only when the server runs on this
//! machine), counted as the sum of each process's private memory (`RssAnon`)
//! plus the largest shared mapping (`RssShmem`, shared buffers counted once).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use quarry_auth::RateLimitConfig;
use quarry_llm::testing::{ScriptedServer, ScriptedToolCall, ScriptedTurn};
use quarry_orchestrator::QUERY_DATABASE;
use quarry_proto::v1::{
    AnswerStatus, AskMode, AskRequest, ExecuteSqlRequest, ask_response::Event,
    assistant_service_client::AssistantServiceClient, sql_service_client::SqlServiceClient,
    tool_result::Outcome,
};
use quarry_server::client::{bearer_request, status_error};
use serde_json::Value;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use super::ask::{self, ServerSections};
use super::{Latencies, LatencySummary, progress, round3};

/// The calm tenant's question.
pub const CALM_QUESTION: &str = ask::DEFAULT_QUESTION;

/// The calm tenant's query: one aggregate row.
pub const CALM_SQL: &str = ask::DEFAULT_SQL;

/// What the flooding tenant's questions carry, so the scripted model knows them.
pub const FLOOD_MARK: &str = "FLOOD";

/// The flooding tenant's question.
pub const FLOOD_QUESTION: &str = "FLOOD: how many pairs of artworks differ in size?";

/// The flood's slow query: a nested loop over the artworks (about a second
/// on a 2-core machine when alone; no sort or hash, so no temporary files).
pub const FLOOD_SQL: &str = "SELECT count(*) AS pairs FROM tate.artworks a, tate.artworks b \
                             WHERE a.id < 160 AND b.width_mm > a.height_mm";

/// Tenants of the two loads: two of the demo's tenants that see every era
/// of the Tate data under its row-level security (a tenant without a row in
/// `tate.tenant_eras` sees nothing, which would make the flood's query free).
const CALM_TENANT: &str = "acme";
const FLOOD_TENANT: &str = "demo";

/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// How long the flood's requests in flight may take to finish after it stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The calm tenant's p99 may grow by at most this share under the flood.
pub const P99_TARGET: f64 = 0.10;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct FairnessOptions {
    /// Server configuration sections (database, SQL tool, orchestrator).
    pub sections: ServerSections,
    /// `[auth.rate_limit]`, per tenant.
    pub rate_limit: RateLimitConfig,
    /// The scripted model's latency per call.
    pub model_latency: Duration,
    /// The calm tenant's Asks per second.
    pub calm_rate: f64,
    /// The flood's requests per second (ExecuteSql and Ask alternately).
    pub flood_rate: f64,
    /// The flood's requests open at once, at most.
    pub flood_in_flight: usize,
    /// Tool calls the flood's model asks for in one step.
    pub flood_tool_calls: usize,
    /// HTTP/2 connections of the flood.
    pub flood_connections: usize,
    /// The flood's slow SQL.
    pub flood_sql: String,
    /// Untimed calm Asks before the first phase.
    pub warmup: Duration,
    /// Flood before the calm load is timed in the flood phase.
    pub ramp: Duration,
    /// Measured time of each phase.
    pub duration: Duration,
    /// Ceiling on this process's peak memory, KiB.
    pub quarry_ceiling_kib: u64,
    /// Ceiling on PostgreSQL's peak memory, KiB.
    pub postgres_ceiling_kib: u64,
    /// Progress messages on stderr.
    pub progress: bool,
}

/// The calm tenant's Asks in one phase.
#[derive(Debug, Clone, Default)]
pub struct CalmStats {
    /// Asks sent in the measured window.
    pub sent: u64,
    /// Asks answered (`ANSWERED`, usage event, no tool error).
    pub answered: u64,
    /// Everything else.
    pub errors: u64,
    /// The first error's message.
    pub first_error: Option<String>,
    /// End-to-end latency of the answered Asks.
    pub latency: LatencySummary,
    /// Of which the SQL statement's database time (`SqlToolResult.database_us`).
    pub database: LatencySummary,
    /// Of which waiting for the model (`Usage.model_us`, two calls).
    pub model: LatencySummary,
}

/// The flooding tenant's requests by outcome.
#[derive(Debug, Clone, Default)]
pub struct FloodStats {
    /// Seconds the flood ran.
    pub seconds: f64,
    /// ExecuteSql calls sent.
    pub sql_sent: u64,
    /// ExecuteSql calls that returned rows.
    pub sql_ok: u64,
    /// ExecuteSql refusals and failures by status code.
    pub sql_failed: BTreeMap<String, u64>,
    /// Asks sent.
    pub asks_sent: u64,
    /// Asks that streamed to their end with `ANSWERED`.
    pub asks_answered: u64,
    /// Asks that streamed to their end with another status.
    pub asks_other_status: u64,
    /// Asks refused or broken, by status code.
    pub asks_failed: BTreeMap<String, u64>,
    /// Tool calls of the flood's Asks that ran.
    pub tool_calls_run: u64,
    /// Tool calls of the flood's Asks answered with an error result (over
    /// the per-step, per-Ask or per-tenant cap, or the pool share).
    pub tool_calls_refused: u64,
    /// Ticks not sent because `flood_in_flight` requests were open.
    pub capped: u64,
    /// The first failure whose code is not `RESOURCE_EXHAUSTED`.
    pub first_unexpected: Option<String>,
}

impl FloodStats {
    /// Requests per second the flood sent.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            (self.sql_sent + self.asks_sent) as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Peak memory during one phase, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseMemory {
    /// This process's `VmHWM` at the end of the phase.
    pub quarry_hwm_kib: u64,
    /// Whether `VmHWM` was reset at the phase's start.
    pub quarry_hwm_per_phase: bool,
    /// Largest sampled `VmRSS` of this process.
    pub quarry_rss_kib: u64,
    /// Largest sampled PostgreSQL memory (private + shared once); `None`
    /// when its processes cannot be read.
    pub postgres_kib: Option<u64>,
    /// Largest sampled sum of the PostgreSQL processes' `VmRSS` (shared
    /// pages counted once per process that touched them).
    pub postgres_rss_sum_kib: Option<u64>,
    /// Most PostgreSQL processes seen at once.
    pub postgres_processes: usize,
}

/// One phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseReport {
    /// `alone` or `flood`.
    pub name: String,
    /// Measured window, seconds.
    pub seconds: f64,
    /// The calm tenant.
    pub calm: CalmStats,
    /// The flood (flood phase only).
    pub flood: Option<FloodStats>,
    /// Share of the machine's CPU time busy during the window, `[0, 1]`.
    pub machine_cpu_busy: Option<f64>,
    /// Peak memory.
    pub memory: PhaseMemory,
}

/// The results of a run.
#[derive(Debug, Clone)]
pub struct FairnessReport {
    /// The settings that shape the numbers.
    pub rate_limit: RateLimitConfig,
    /// `database.pool_size`.
    pub pool_size: usize,
    /// `[sql.exec] tenant_share`.
    pub tenant_share: f64,
    /// `[orchestrator]` limits: asks, tool calls per tenant, per step, per Ask.
    pub orchestrator_limits: (usize, usize, usize, usize),
    /// The scripted model's latency per call.
    pub model_latency: Duration,
    /// Calm Asks per second.
    pub calm_rate: f64,
    /// Flood requests per second asked for.
    pub flood_rate: f64,
    /// Flood requests open at once, at most.
    pub flood_in_flight: usize,
    /// Tool calls per flood model step.
    pub flood_tool_calls: usize,
    /// The flood's SQL.
    pub flood_sql: String,
    /// The flood's SQL alone, wall time of one call before the phases.
    pub flood_sql_alone_ms: f64,
    /// Memory ceilings, KiB: (Quarry, PostgreSQL).
    pub ceilings_kib: (u64, u64),
    /// `alone`, then `flood`.
    pub phases: Vec<PhaseReport>,
}

impl FairnessReport {
    fn phase(&self, name: &str) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// Relative change of the calm p50 and p99 under the flood.
    pub fn deltas(&self) -> Option<(f64, f64)> {
        let alone = &self.phase("alone")?.calm.latency;
        let flood = &self.phase("flood")?.calm.latency;
        let rel = |a: f64, b: f64| if a > 0.0 { (b - a) / a } else { 0.0 };
        Some((
            rel(alone.p50_ms, flood.p50_ms),
            rel(alone.p99_ms, flood.p99_ms),
        ))
    }

    /// Whether both processes stayed under their ceilings in every phase
    /// (PostgreSQL's only where it could be read).
    pub fn memory_within(&self) -> bool {
        self.phases.iter().all(|p| {
            p.memory.quarry_hwm_kib.max(p.memory.quarry_rss_kib) <= self.ceilings_kib.0
                && p.memory
                    .postgres_kib
                    .is_none_or(|k| k <= self.ceilings_kib.1)
        })
    }

    /// The target: calm p99 within [`P99_TARGET`], no calm errors in either
    /// phase, memory under the ceilings.
    pub fn target_met(&self) -> bool {
        self.deltas().is_some_and(|(_, p99)| p99 <= P99_TARGET)
            && self.phases.iter().all(|p| p.calm.errors == 0)
            && self.memory_within()
    }
}

/// `[auth.rate_limit]` from `path` (if any) and the environment, else its
/// default.
///
/// # Errors
/// An unreadable file or invalid values.
pub fn rate_limit(path: Option<&std::path::Path>) -> anyhow::Result<RateLimitConfig> {
    let figment = super::figment(path);
    if figment.contains("auth.rate_limit") {
        figment
            .extract_inner("auth.rate_limit")
            .map_err(|e| anyhow::anyhow!("configuration [auth.rate_limit]: {e}"))
    } else {
        Ok(RateLimitConfig::default())
    }
}

/// The scripted model: calm questions get one cheap `query_database` call,
/// flood questions `flood_calls` slow ones in one step; once a tool result
/// is in the conversation, an answer.
fn responder(
    flood_sql: &str,
    flood_calls: usize,
    answer: Arc<OnceLock<String>>,
    latency: Duration,
) -> impl Fn(&Value) -> ScriptedTurn + Send + Sync + 'static {
    let calm_arguments = serde_json::json!({ "sql": CALM_SQL }).to_string();
    let flood_arguments = serde_json::json!({ "sql": flood_sql }).to_string();
    move |request: &Value| {
        let messages = request["messages"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let has_tool_result = messages.iter().any(|m| m["role"] == "tool");
        let flood = messages
            .iter()
            .any(|m| m["role"] == "user" && m["content"].to_string().contains(FLOOD_MARK));
        let turn = match (flood, has_tool_result) {
            (false, false) => ScriptedTurn::tool_call(QUERY_DATABASE, calm_arguments.clone()),
            (false, true) => {
                let value = answer.get().map_or("unknown", String::as_str);
                ScriptedTurn::text(format!(
                    "According to the database the answer is {value}; the figure comes \
                     straight from the query result, which is cited below."
                ))
            }
            (true, false) => ScriptedTurn::tool_calls(vec![
                ScriptedToolCall::new(
                    QUERY_DATABASE,
                    flood_arguments.clone()
                );
                flood_calls
            ]),
            (true, true) => ScriptedTurn::text("The comparison ran; see the results below."),
        };
        turn.with_delay(latency)
    }
}

/// Starts the scripted model and the server, runs both phases, stops both.
///
/// # Errors
/// The server cannot start, the calm SQL fails, a connection cannot be
/// made. Failed requests are counted, not errors.
pub async fn run_fairness_bench(options: &FairnessOptions) -> anyhow::Result<FairnessReport> {
    anyhow::ensure!(
        options.calm_rate > 0.0 && options.flood_rate > 0.0,
        "--calm-rate and --flood-rate must be above 0"
    );
    let answer = Arc::new(OnceLock::new());
    let model = ScriptedServer::try_start_responder(responder(
        &options.flood_sql,
        options.flood_tool_calls,
        Arc::clone(&answer),
        options.model_latency,
    ))
    .await
    .context("starting the scripted model")?;
    model.set_record_limit(0);
    let mut config = ask::server_config(&options.sections, false, &model.base_url())?;
    config.auth.rate_limit = options.rate_limit;
    let pool_size = config.database.pool_size;
    let mut server = ask::start_server(config).await?;
    progress(
        options.progress,
        format!(
            "server on {}, scripted model on {}",
            server.url,
            model.base_url()
        ),
    );
    let calm_token = ask::token_for(CALM_TENANT, "bench-fairness")?;
    let flood_token = ask::token_for(FLOOD_TENANT, "bench-fairness")?;
    let result = async {
        let channel = ask::wait_ready(&mut server, &calm_token).await?;
        let (value, _) = execute(&channel, &calm_token, CALM_SQL).await?;
        let _ = answer.set(value);
        // the flood's query once, alone, with the flood's token
        let (_, flood_sql_alone) = execute(&channel, &flood_token, &options.flood_sql).await?;
        let postmaster = postmaster_pid(&options.sections.database.url).await;
        let mut flood_channels = Vec::new();
        for _ in 0..options.flood_connections.max(1) {
            flood_channels.push(Endpoint::from_shared(server.url.clone())?.connect().await?);
        }
        let tokens = Tokens {
            calm: calm_token.clone(),
            flood: flood_token.clone(),
        };
        progress(
            options.progress,
            format!(
                "warm-up {:.0} s; flood SQL alone {:.0} ms",
                options.warmup.as_secs_f64(),
                flood_sql_alone.as_secs_f64() * 1000.0
            ),
        );
        calm_load(options, &channel, &tokens.calm, options.warmup).await?;
        let mut phases = Vec::new();
        for flood in [false, true] {
            let phase = run_phase(
                options,
                &channel,
                &flood_channels,
                &tokens,
                flood,
                postmaster,
            )
            .await?;
            progress(
                options.progress,
                format!(
                    "{}: calm {} Asks, {} errors, p50 {:.1} ms, p99 {:.1} ms",
                    phase.name,
                    phase.calm.answered,
                    phase.calm.errors,
                    phase.calm.latency.p50_ms,
                    phase.calm.latency.p99_ms
                ),
            );
            phases.push(phase);
        }
        anyhow::Ok((phases, flood_sql_alone))
    }
    .await;
    let stopped = server.shut_down().await;
    let (phases, flood_sql_alone) = result?;
    stopped?;
    let o = &options.sections.orchestrator;
    Ok(FairnessReport {
        rate_limit: options.rate_limit,
        pool_size,
        tenant_share: options.sections.sql.exec.tenant_share,
        orchestrator_limits: (
            o.max_asks_per_tenant,
            o.max_tool_calls_per_tenant,
            o.max_tool_calls_per_step,
            o.max_tool_calls_per_ask,
        ),
        model_latency: options.model_latency,
        calm_rate: options.calm_rate,
        flood_rate: options.flood_rate,
        flood_in_flight: options.flood_in_flight,
        flood_tool_calls: options.flood_tool_calls,
        flood_sql: options.flood_sql.clone(),
        flood_sql_alone_ms: flood_sql_alone.as_secs_f64() * 1000.0,
        ceilings_kib: (options.quarry_ceiling_kib, options.postgres_ceiling_kib),
        phases,
    })
}

struct Tokens {
    calm: String,
    flood: String,
}

/// ExecuteSql once: the first value of the result and the wall time.
async fn execute(channel: &Channel, token: &str, sql: &str) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let response = SqlServiceClient::new(channel.clone())
        .execute_sql(bearer_request(
            ExecuteSqlRequest {
                sql: sql.to_owned(),
                max_rows: 0,
            },
            token,
        )?)
        .await
        .map_err(|s| anyhow::anyhow!("{sql}: {}", status_error(s)))?
        .into_inner();
    let value = response
        .result
        .as_ref()
        .and_then(|r| r.rows.first())
        .and_then(|row| row.values.first())
        .map_or_else(
            || "no rows".to_owned(),
            quarry_orchestrator::render::value_text,
        );
    Ok((value, started.elapsed()))
}

/// One phase: the flood (if `flood`) and, after the ramp, the timed calm load.
async fn run_phase(
    options: &FairnessOptions,
    calm_channel: &Channel,
    flood_channels: &[Channel],
    tokens: &Tokens,
    flood: bool,
    postmaster: Option<u32>,
) -> anyhow::Result<PhaseReport> {
    let name = if flood { "flood" } else { "alone" };
    progress(
        options.progress,
        format!(
            "phase {name}: calm {:.1} Asks/s for {:.0} s{}",
            options.calm_rate,
            options.duration.as_secs_f64(),
            if flood {
                format!(
                    ", flood {:.0} requests/s ({:.0} s ramp first)",
                    options.flood_rate,
                    options.ramp.as_secs_f64()
                )
            } else {
                String::new()
            }
        ),
    );
    let quarry_hwm_per_phase = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_memory(postmaster, Arc::clone(&sampling)));
    let stop_flood = Arc::new(AtomicBool::new(false));
    let flood_task = flood.then(|| {
        tokio::spawn(flood_load(
            options.clone(),
            flood_channels.to_vec(),
            tokens.flood.clone(),
            Arc::clone(&stop_flood),
        ))
    });
    if flood {
        tokio::time::sleep(options.ramp).await;
    }
    let machine_from = ask::machine_cpu();
    let started = Instant::now();
    let calm = calm_load(options, calm_channel, &tokens.calm, options.duration).await?;
    let seconds = started.elapsed().as_secs_f64();
    let machine_to = ask::machine_cpu();
    stop_flood.store(true, Ordering::Relaxed);
    let flood = match flood_task {
        Some(task) => Some(task.await.context("the flood task failed")?),
        None => None,
    };
    sampling.store(false, Ordering::Relaxed);
    let mut memory = sampler.await.context("the memory sampler failed")?;
    memory.quarry_hwm_kib = ask::proc_status_kib("VmHWM").unwrap_or(0);
    memory.quarry_hwm_per_phase = quarry_hwm_per_phase;
    let machine_cpu_busy = match (machine_from, machine_to) {
        (Some((busy_from, total_from)), Some((busy_to, total_to))) if total_to > total_from => {
            Some(busy_to.saturating_sub(busy_from) as f64 / (total_to - total_from) as f64)
        }
        _ => None,
    };
    Ok(PhaseReport {
        name: name.to_owned(),
        seconds,
        calm,
        flood,
        machine_cpu_busy,
        memory,
    })
}

/// The calm tenant's open loop for `duration`; waits for every Ask sent.
async fn calm_load(
    options: &FairnessOptions,
    channel: &Channel,
    token: &str,
    duration: Duration,
) -> anyhow::Result<CalmStats> {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / options.calm_rate));
    let end = Instant::now() + duration;
    let mut asks = JoinSet::new();
    while Instant::now() < end {
        ticks.tick().await;
        let mut client = AssistantServiceClient::new(channel.clone());
        let token = token.to_owned();
        asks.spawn(async move { ask::one_ask(&mut client, &token, CALM_QUESTION).await });
    }
    let mut stats = CalmStats::default();
    let mut latency = Latencies::new()?;
    let mut database = Latencies::new()?;
    let mut model = Latencies::new()?;
    while let Some(outcome) = asks.join_next().await {
        stats.sent += 1;
        match outcome.context("a calm Ask panicked")? {
            Ok(sample) => {
                stats.answered += 1;
                latency.record(sample.end_to_end);
                database.record(sample.sql_database);
                model.record(sample.model);
            }
            Err(message) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(message);
            }
        }
    }
    stats.latency = latency.summary();
    stats.database = database.summary();
    stats.model = model.summary();
    Ok(stats)
}

/// The flood's open loop until `stop`; then waits for its requests in flight.
async fn flood_load(
    options: FairnessOptions,
    channels: Vec<Channel>,
    token: String,
    stop: Arc<AtomicBool>,
) -> FloodStats {
    let stats = Arc::new(Mutex::new(FloodStats::default()));
    let open = Arc::new(tokio::sync::Semaphore::new(options.flood_in_flight.max(1)));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / options.flood_rate));
    // missed ticks are sent late, in a burst: the flood keeps its rate even
    // when this process is short of CPU
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = JoinSet::new();
    let started = Instant::now();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            lock(&stats).capped += 1;
            continue;
        };
        n += 1;
        let channel = channels[n % channels.len()].clone();
        let token = token.clone();
        let sql = options.flood_sql.clone();
        let stats = Arc::clone(&stats);
        requests.spawn(async move {
            if n.is_multiple_of(2) {
                flood_sql(channel, &token, sql, &stats).await;
            } else {
                flood_ask(channel, &token, &stats).await;
            }
            drop(permit);
        });
        while requests.try_join_next().is_some() {}
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while requests.join_next().await.is_some() {}
    })
    .await;
    requests.abort_all();
    let mut stats = lock(&stats).clone();
    stats.seconds = seconds;
    stats
}

fn lock(stats: &Mutex<FloodStats>) -> std::sync::MutexGuard<'_, FloodStats> {
    stats.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a failure under its code; keeps the first unexpected one.
fn failed(stats: &mut FloodStats, sql: bool, status: &tonic::Status) {
    let code = format!("{:?}", status.code());
    let by_code = if sql {
        &mut stats.sql_failed
    } else {
        &mut stats.asks_failed
    };
    *by_code.entry(code).or_default() += 1;
    if status.code() != tonic::Code::ResourceExhausted {
        stats
            .first_unexpected
            .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
    }
}

async fn flood_sql(channel: Channel, token: &str, sql: String, stats: &Mutex<FloodStats>) {
    lock(stats).sql_sent += 1;
    let request = match bearer_request(ExecuteSqlRequest { sql, max_rows: 0 }, token) {
        Ok(r) => r,
        Err(e) => {
            return failed(
                &mut lock(stats),
                true,
                &tonic::Status::internal(e.to_string()),
            );
        }
    };
    match SqlServiceClient::new(channel).execute_sql(request).await {
        Ok(_) => lock(stats).sql_ok += 1,
        Err(status) => failed(&mut lock(stats), true, &status),
    }
}

async fn flood_ask(channel: Channel, token: &str, stats: &Mutex<FloodStats>) {
    lock(stats).asks_sent += 1;
    match flood_ask_stream(channel, token).await {
        Ok((answered, run, refused)) => {
            let mut s = lock(stats);
            s.tool_calls_run += run;
            s.tool_calls_refused += refused;
            if answered {
                s.asks_answered += 1;
            } else {
                s.asks_other_status += 1;
            }
        }
        Err(status) => failed(&mut lock(stats), false, &status),
    }
}

/// One flood Ask read to its end: (answered, tool calls run, refused).
async fn flood_ask_stream(
    channel: Channel,
    token: &str,
) -> Result<(bool, u64, u64), tonic::Status> {
    let request = bearer_request(
        AskRequest {
            question: FLOOD_QUESTION.to_owned(),
            mode: AskMode::Agentic as i32,
            ..AskRequest::default()
        },
        token,
    )
    .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let mut stream = AssistantServiceClient::new(channel)
        .ask(request)
        .await?
        .into_inner();
    let (mut answered, mut run, mut refused) = (false, 0, 0);
    while let Some(message) = stream.message().await? {
        match message.event {
            Some(Event::ToolResult(result)) => match result.outcome {
                Some(Outcome::Error(_)) => refused += 1,
                Some(_) => run += 1,
                None => {}
            },
            Some(Event::FinalAnswer(answer)) => {
                answered = answer.status == AnswerStatus::Answered as i32;
            }
            _ => {}
        }
    }
    Ok((answered, run, refused))
}

/// The postmaster's process id: the parent of this connection's backend
/// (`None` when PostgreSQL is not on this machine or cannot be read).
async fn postmaster_pid(url: &str) -> Option<u32> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    let driver = tokio::spawn(connection);
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ok()?
        .get(0);
    drop(client);
    let _ = driver.await;
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat")).ok()?;
    parent_pid(&stat)
}

/// The parent pid in a `/proc/<pid>/stat` line.
fn parent_pid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// PostgreSQL's memory now: (private + largest shared, sum of `VmRSS`,
/// processes), KiB.
fn postgres_memory(postmaster: u32) -> Option<(u64, u64, usize)> {
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parent_pid(&s));
        if parent == Some(postmaster) {
            pids.push(pid);
        }
    }
    let (mut private, mut shared, mut rss, mut seen) = (0, 0, 0, 0);
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        seen += 1;
        private += ask::parse_status_kib(&status, "RssAnon").unwrap_or(0);
        shared = shared.max(ask::parse_status_kib(&status, "RssShmem").unwrap_or(0));
        rss += ask::parse_status_kib(&status, "VmRSS").unwrap_or(0);
    }
    (seen > 0).then_some((private + shared, rss, seen))
}

/// Samples memory every [`SAMPLE_EVERY`] while `on`; returns the peaks.
async fn sample_memory(postmaster: Option<u32>, on: Arc<AtomicBool>) -> PhaseMemory {
    let mut peak = PhaseMemory::default();
    while on.load(Ordering::Relaxed) {
        peak.quarry_rss_kib = peak
            .quarry_rss_kib
            .max(ask::proc_status_kib("VmRSS").unwrap_or(0));
        if let Some(pid) = postmaster {
            let sample = tokio::task::spawn_blocking(move || postgres_memory(pid))
                .await
                .ok()
                .flatten();
            if let Some((memory, rss, processes)) = sample {
                peak.postgres_kib = Some(peak.postgres_kib.unwrap_or(0).max(memory));
                peak.postgres_rss_sum_kib = Some(peak.postgres_rss_sum_kib.unwrap_or(0).max(rss));
                peak.postgres_processes = peak.postgres_processes.max(processes);
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    peak
}

fn pct(x: f64) -> String {
    format!("{:+.1} %", x * 100.0)
}

fn codes(by_code: &BTreeMap<String, u64>) -> String {
    if by_code.is_empty() {
        return "none".to_owned();
    }
    by_code
        .iter()
        .map(|(code, n)| format!("{n} {code}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl FairnessReport {
    /// Plain-text report: settings, one block per phase, the verdict.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let (asks, tools, per_step, per_ask) = self.orchestrator_limits;
        let _ = writeln!(
            out,
            "quarry bench fairness: calm tenant {:.1} Asks/s (1 cheap query each) alone, then \
             beside a flood of {:.0} requests/s (ExecuteSql and Asks of {} tool calls, at most \
             {} open); scripted model {:.0} ms per call",
            self.calm_rate,
            self.flood_rate,
            self.flood_tool_calls,
            self.flood_in_flight,
            self.model_latency.as_secs_f64() * 1000.0,
        );
        let _ = writeln!(
            out,
            "limits per tenant: {} requests/s (burst {}); {:.2} of the {}-connection pool; {} Asks \
             and {} tool calls in flight; {} tool calls per step, {} per Ask",
            self.rate_limit.requests_per_second,
            self.rate_limit.burst,
            self.tenant_share,
            self.pool_size,
            asks,
            tools,
            per_step,
            per_ask,
        );
        let _ = writeln!(
            out,
            "flood sql ({:.0} ms alone): {}",
            self.flood_sql_alone_ms, self.flood_sql
        );
        for p in &self.phases {
            out.push('\n');
            let c = &p.calm;
            let _ = writeln!(
                out,
                "phase {} ({:.1} s): calm {} sent, {} answered, {} errors; end-to-end ms p50 \
                 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
                p.name,
                p.seconds,
                c.sent,
                c.answered,
                c.errors,
                c.latency.p50_ms,
                c.latency.p90_ms,
                c.latency.p99_ms,
                c.latency.max_ms,
            );
            let _ = writeln!(
                out,
                "  of which SQL database time p50 {:.1} p99 {:.1}, model time p50 {:.1} p99 {:.1}",
                c.database.p50_ms, c.database.p99_ms, c.model.p50_ms, c.model.p99_ms,
            );
            if let Some(error) = &c.first_error {
                let _ = writeln!(out, "  calm first error: {error}");
            }
            if let Some(f) = &p.flood {
                let _ = writeln!(
                    out,
                    "  flood ({:.1} requests/s sent, {} ticks over the open cap): ExecuteSql {} \
                     sent, {} ran, refused/failed: {}; Asks {} sent, {} answered, {} other \
                     status, refused/failed: {}; their tool calls {} ran, {} refused",
                    f.rate(),
                    f.capped,
                    f.sql_sent,
                    f.sql_ok,
                    codes(&f.sql_failed),
                    f.asks_sent,
                    f.asks_answered,
                    f.asks_other_status,
                    codes(&f.asks_failed),
                    f.tool_calls_run,
                    f.tool_calls_refused,
                );
                if let Some(e) = &f.first_unexpected {
                    let _ = writeln!(
                        out,
                        "  flood first failure other than RESOURCE_EXHAUSTED: {e}"
                    );
                }
            }
            let m = &p.memory;
            let _ = writeln!(
                out,
                "  memory peak: Quarry process {:.1} MiB (VmHWM{}; sampled VmRSS {:.1} MiB); \
                 PostgreSQL {} ({} processes; VmRSS summed {})",
                ask::mib(m.quarry_hwm_kib),
                if m.quarry_hwm_per_phase {
                    " this phase"
                } else {
                    " since start"
                },
                ask::mib(m.quarry_rss_kib),
                m.postgres_kib
                    .map_or("not readable".to_owned(), |k| format!(
                        "{:.1} MiB",
                        ask::mib(k)
                    )),
                m.postgres_processes,
                m.postgres_rss_sum_kib
                    .map_or("-".to_owned(), |k| format!("{:.1} MiB", ask::mib(k))),
            );
            if let Some(busy) = p.machine_cpu_busy {
                let _ = writeln!(
                    out,
                    "  machine CPU busy: {:.0} % of {} cores",
                    busy * 100.0,
                    std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
                );
            }
        }
        out.push('\n');
        if let Some((p50, p99)) = self.deltas() {
            let _ = writeln!(
                out,
                "calm tenant under the flood: p50 {}, p99 {} (target: p99 at most {}, zero \
                 errors); memory under the ceilings (Quarry {:.0} MiB, PostgreSQL {:.0} MiB): {}",
                pct(p50),
                pct(p99),
                pct(P99_TARGET),
                ask::mib(self.ceilings_kib.0),
                ask::mib(self.ceilings_kib.1),
                if self.memory_within() { "yes" } else { "NO" },
            );
        }
        let _ = writeln!(
            out,
            "target {}",
            if self.target_met() { "met" } else { "NOT met" }
        );
        out
    }

    /// The report as one JSON object (times in ms, memory in KiB).
    pub fn to_json(&self) -> Value {
        let (asks, tools, per_step, per_ask) = self.orchestrator_limits;
        let deltas = self.deltas();
        serde_json::json!({
            "rate_limit": {
                "requests_per_second": self.rate_limit.requests_per_second.get(),
                "burst": self.rate_limit.burst.get(),
            },
            "pool_size": self.pool_size,
            "tenant_share": self.tenant_share,
            "max_asks_per_tenant": asks,
            "max_tool_calls_per_tenant": tools,
            "max_tool_calls_per_step": per_step,
            "max_tool_calls_per_ask": per_ask,
            "model_latency_ms": round3(self.model_latency.as_secs_f64() * 1000.0),
            "calm_rate": self.calm_rate,
            "flood_rate": self.flood_rate,
            "flood_in_flight": self.flood_in_flight,
            "flood_tool_calls": self.flood_tool_calls,
            "flood_sql": self.flood_sql,
            "flood_sql_alone_ms": round3(self.flood_sql_alone_ms),
            "ceilings_kib": { "quarry": self.ceilings_kib.0, "postgres": self.ceilings_kib.1 },
            "phases": self.phases.iter().map(|p| serde_json::json!({
                "name": p.name,
                "seconds": round3(p.seconds),
                "calm": {
                    "sent": p.calm.sent,
                    "answered": p.calm.answered,
                    "errors": p.calm.errors,
                    "first_error": p.calm.first_error,
                    "end_to_end": p.calm.latency.to_json(),
                    "sql_database": p.calm.database.to_json(),
                    "model": p.calm.model.to_json(),
                },
                "flood": p.flood.as_ref().map(|f| serde_json::json!({
                    "seconds": round3(f.seconds),
                    "requests_per_second": round3(f.rate()),
                    "capped": f.capped,
                    "sql_sent": f.sql_sent,
                    "sql_ok": f.sql_ok,
                    "sql_failed": f.sql_failed,
                    "asks_sent": f.asks_sent,
                    "asks_answered": f.asks_answered,
                    "asks_other_status": f.asks_other_status,
                    "asks_failed": f.asks_failed,
                    "tool_calls_run": f.tool_calls_run,
                    "tool_calls_refused": f.tool_calls_refused,
                    "first_unexpected": f.first_unexpected,
                })),
                "machine_cpu_busy": p.machine_cpu_busy.map(round3),
                "memory_kib": {
                    "quarry_hwm": p.memory.quarry_hwm_kib,
                    "quarry_hwm_per_phase": p.memory.quarry_hwm_per_phase,
                    "quarry_rss_max": p.memory.quarry_rss_kib,
                    "postgres": p.memory.postgres_kib,
                    "postgres_rss_sum": p.memory.postgres_rss_sum_kib,
                    "postgres_processes": p.memory.postgres_processes,
                },
            })).collect::<Vec<_>>(),
            "calm_p50_delta": deltas.map(|d| round3(d.0)),
            "calm_p99_delta": deltas.map(|d| round3(d.1)),
            "memory_within_ceilings": self.memory_within(),
            "target_met": self.target_met(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_scripted_model_tells_the_tenants_apart() {
        let answer = Arc::new(OnceLock::new());
        answer.set("6637".to_owned()).unwrap();
        let respond = responder("SELECT 2", 20, answer, Duration::ZERO);
        let calm = serde_json::json!({"messages": [{"role": "user", "content": CALM_QUESTION}]});
        let turn = format!("{:?}", respond(&calm));
        assert_eq!(turn.matches(QUERY_DATABASE).count(), 1, "{turn}");
        let flood = serde_json::json!({"messages": [{"role": "user", "content": FLOOD_QUESTION}]});
        let turn = format!("{:?}", respond(&flood));
        assert_eq!(turn.matches("SELECT 2").count(), 20, "{turn}");
        let answered = serde_json::json!({"messages": [
            {"role": "user", "content": CALM_QUESTION},
            {"role": "tool", "tool_call_id": "call_1", "content": "rows"},
        ]});
        let turn = format!("{:?}", respond(&answered)).replace("\", \"", "");
        assert!(
            turn.contains("6637") && !turn.contains(QUERY_DATABASE),
            "{turn}"
        );
    }

    #[test]
    fn the_postmaster_is_the_parent_and_deltas_are_relative() {
        let stat = "4242 (postgres: calm (x)) S 1717 4242 4242 0 -1 4194560";
        assert_eq!(parent_pid(stat), Some(1717));
        let phase = |name: &str, p50, p99| PhaseReport {
            name: name.to_owned(),
            calm: CalmStats {
                latency: LatencySummary {
                    p50_ms: p50,
                    p99_ms: p99,
                    ..LatencySummary::default()
                },
                ..CalmStats::default()
            },
            ..PhaseReport::default()
        };
        let mut report = FairnessReport {
            rate_limit: RateLimitConfig::default(),
            pool_size: 16,
            tenant_share: 0.5,
            orchestrator_limits: (8, 8, 8, 24),
            model_latency: Duration::from_millis(50),
            calm_rate: 5.0,
            flood_rate: 200.0,
            flood_in_flight: 256,
            flood_tool_calls: 20,
            flood_sql: FLOOD_SQL.to_owned(),
            flood_sql_alone_ms: 1000.0,
            ceilings_kib: (1 << 20, 1 << 20),
            phases: vec![phase("alone", 100.0, 200.0), phase("flood", 110.0, 215.0)],
        };
        let (p50, p99) = report.deltas().unwrap();
        assert!((p50 - 0.10).abs() < 1e-9 && (p99 - 0.075).abs() < 1e-9);
        assert!(report.target_met());
        report.phases[1].calm.errors = 1;
        assert!(!report.target_met(), "a calm error fails the target");
        report.phases[1].calm.errors = 0;
        report.phases[1].memory.postgres_kib = Some(2 << 20);
        assert!(!report.target_met(), "memory over the ceiling fails it");
    }
}
