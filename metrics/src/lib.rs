//! Every Prometheus series Quarry emits, in one place: names, units, labels,
//! and the functions the crates call to record them.
//!
//! Crates record through the [`metrics`] facade (the functions below), which
//! costs nothing until a recorder is installed; only `quarry-server`
//! installs one (the Prometheus exporter, `[metrics] listen`). Names follow
//! the Prometheus naming conventions (<https://prometheus.io/docs/practices/naming/>):
//! the `quarry_` prefix, base units in the name (`_seconds`, `_bytes`,
//! `_usd`), `_total` on counters.
//!
//! | series | type | labels | what |
//! |---|---|---|---|
//! | `quarry_rpc_requests_total` | counter | `service`, `method`, `code` | gRPC calls finished, by status code (`OK`, `INVALID_ARGUMENT`, …) |
//! | `quarry_rpc_in_flight` | gauge | `service`, `method` | gRPC calls running (a streaming call until its stream ends) |
//! | `quarry_rpc_duration_seconds` | histogram | `service`, `method`, `code` | from the request's headers to the end of the response stream |
//! | `quarry_ask_stage_duration_seconds` | histogram | `stage` | time one finished Ask spent in each stage ([`AskStage`]) |
//! | `quarry_model_calls_total` | counter | `tenant`, `model`, `task` | model calls of Asks (agentic steps, routing, SQL generation, judge) |
//! | `quarry_model_prompt_tokens_total` | counter | `tenant`, `model` | prompt tokens the model reported |
//! | `quarry_model_completion_tokens_total` | counter | `tenant`, `model` | completion tokens the model reported |
//! | `quarry_model_call_cost_usd` | histogram | `tenant`, `model` | cost of each priced call in USD; `_sum` is the spend |
//! | `quarry_sql_duration_seconds` | histogram | `tenant`, `outcome` | SQL tool statements, pool wait included (`ok` / `error`) |
//! | `quarry_sql_rows_total` | counter | `tenant` | rows returned by the SQL tool |
//! | `quarry_sql_result_bytes_total` | counter | `tenant` | approximate cell bytes returned by the SQL tool |
//! | `quarry_db_pool_wait_seconds` | histogram | `use` | time to get a pooled connection (`sql`, `conversations`, `search`, `summaries`) |
//! | `quarry_db_pool_connections` | gauge | `database`, `state` | per pool: `max`, `open` and `idle` connections (sampled at scrape) |
//! | `quarry_db_pool_waiting` | gauge | `database` | requests waiting for a connection (sampled at scrape) |
//! | `quarry_sync_lag_seconds` | histogram | `collection` | source change (outbox entry) to the sidecar commit that applied it, server clock |
//! | `quarry_sync_changes_total` | counter | `collection` | outbox entries applied |
//! | `quarry_sync_outbox_backlog` | gauge | `collection` | outbox entries waiting at the start of the last sync round |
//! | `quarry_sync_outbox_oldest_seconds` | gauge | `collection` | age of the oldest of them (0 when none) |
//! | `quarry_sync_embedding_backlog` | gauge | `collection` | live documents whose vectors are not current |
//! | `quarry_sync_documents_embedded_total` | counter | `collection` | documents whose vectors the sync brought up to date |
//! | `quarry_summary_builds_total` | counter | `outcome` | summary builds (`ok`, `partial`, `skipped`, `error`) |
//! | `quarry_summary_build_duration_seconds` | histogram | `outcome` | their wall time |
//! | `quarry_summaries_built_total` | counter | — | summaries written by builds |
//! | `quarry_background_task_up` | gauge | `task`, `group` | 1 while a supervised background task runs, 0 while it waits to restart or has finished |
//! | `quarry_background_task_restarts_total` | counter | `task`, `group` | failures a supervised background task restarted after |
//!
//! Label cardinality: `service`/`method` are the served gRPC methods (any
//! other path is `method="other"`), `code` the 17 gRPC codes, `model`,
//! `task`, `collection` and `database` come from the configuration.
//! `tenant` comes from verified tokens, so it is bounded by the tenants an
//! issuer mints; to keep one misbehaving issuer from growing the series
//! without bound, the first [`set_max_tenant_labels`] tenants (default
//! [`DEFAULT_MAX_TENANT_LABELS`]) seen by a process keep their own label
//! and the rest share `tenant="other"` (per-tenant accounting without a cap
//! is the usage ledger's job: `UsageService`).

use std::{
    collections::HashSet,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// Series names (see the crate docs for types and labels).
pub mod names {
    /// gRPC calls finished.
    pub const RPC_REQUESTS: &str = "quarry_rpc_requests_total";
    /// gRPC calls running.
    pub const RPC_IN_FLIGHT: &str = "quarry_rpc_in_flight";
    /// gRPC call latency.
    pub const RPC_DURATION: &str = "quarry_rpc_duration_seconds";
    /// Ask stage times.
    pub const ASK_STAGE_DURATION: &str = "quarry_ask_stage_duration_seconds";
    /// Model calls.
    pub const MODEL_CALLS: &str = "quarry_model_calls_total";
    /// Prompt tokens.
    pub const MODEL_PROMPT_TOKENS: &str = "quarry_model_prompt_tokens_total";
    /// Completion tokens.
    pub const MODEL_COMPLETION_TOKENS: &str = "quarry_model_completion_tokens_total";
    /// Cost per priced call.
    pub const MODEL_CALL_COST: &str = "quarry_model_call_cost_usd";
    /// SQL tool statement time.
    pub const SQL_DURATION: &str = "quarry_sql_duration_seconds";
    /// SQL tool rows.
    pub const SQL_ROWS: &str = "quarry_sql_rows_total";
    /// Cache lookups (result and model caches) by outcome.
    pub const CACHE_LOOKUPS: &str = "quarry_cache_lookups_total";
    /// Cache entries evicted (size, TTL or invalidation).
    pub const CACHE_EVICTIONS: &str = "quarry_cache_evictions_total";
    /// SQL tool result bytes.
    pub const SQL_RESULT_BYTES: &str = "quarry_sql_result_bytes_total";
    /// Pool checkout wait.
    pub const POOL_WAIT: &str = "quarry_db_pool_wait_seconds";
    /// Pool connections by state.
    pub const POOL_CONNECTIONS: &str = "quarry_db_pool_connections";
    /// Requests waiting for a connection.
    pub const POOL_WAITING: &str = "quarry_db_pool_waiting";
    /// Sync lag.
    pub const SYNC_LAG: &str = "quarry_sync_lag_seconds";
    /// Outbox entries applied.
    pub const SYNC_CHANGES: &str = "quarry_sync_changes_total";
    /// Outbox backlog.
    pub const SYNC_OUTBOX_BACKLOG: &str = "quarry_sync_outbox_backlog";
    /// Oldest outbox entry.
    pub const SYNC_OUTBOX_OLDEST: &str = "quarry_sync_outbox_oldest_seconds";
    /// Documents waiting for vectors.
    pub const SYNC_EMBEDDING_BACKLOG: &str = "quarry_sync_embedding_backlog";
    /// Documents embedded.
    pub const SYNC_DOCUMENTS_EMBEDDED: &str = "quarry_sync_documents_embedded_total";
    /// Summary builds.
    pub const SUMMARY_BUILDS: &str = "quarry_summary_builds_total";
    /// Summary build time.
    pub const SUMMARY_BUILD_DURATION: &str = "quarry_summary_build_duration_seconds";
    /// Summaries written.
    pub const SUMMARIES_BUILT: &str = "quarry_summaries_built_total";
    /// Background task running.
    pub const BACKGROUND_TASK_UP: &str = "quarry_background_task_up";
    /// Background task restarts.
    pub const BACKGROUND_TASK_RESTARTS: &str = "quarry_background_task_restarts_total";
    /// Gauge: audit entries and usage charges queued for the write-behind.
    pub const BOOKKEEPING_QUEUED: &str = "quarry_bookkeeping_queued";
    /// Counter: audit entries and usage charges the write-behind stored, by
    /// `kind` (`audit`, `usage`).
    pub const BOOKKEEPING_WRITTEN: &str = "quarry_bookkeeping_written_total";
    /// Counter: audit entries and usage charges dropped because the
    /// write-behind's queue was full, by `kind`.
    pub const BOOKKEEPING_DROPPED: &str = "quarry_bookkeeping_dropped_total";
}

/// Bucket upper bounds in seconds for every `_seconds` histogram: 1 ms to
/// 1 h (the default Prometheus client buckets, 5 ms to 10 s, widened at both
/// ends for pool waits and for Asks and summary builds).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// Bucket upper bounds in USD for [`names::MODEL_CALL_COST`].
pub const USD_BUCKETS: &[f64] = &[0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0];

/// Tenants with their own label per process unless
/// [`set_max_tenant_labels`] says otherwise.
pub const DEFAULT_MAX_TENANT_LABELS: usize = 1000;

/// The label of tenants past the cap.
pub const OTHER_TENANT: &str = "other";

static MAX_TENANTS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_TENANT_LABELS);
static TENANTS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Sets how many tenants keep their own `tenant` label in this process
/// (see the crate docs); tenants already labelled keep theirs.
pub fn set_max_tenant_labels(max: usize) {
    MAX_TENANTS.store(max, Ordering::Relaxed);
}

/// The `tenant` label of `tenant`: itself while fewer than the cap have
/// been seen (or it was seen before), else [`OTHER_TENANT`].
pub fn tenant_label(tenant: &str) -> String {
    let mut seen = TENANTS.lock().unwrap_or_else(PoisonError::into_inner);
    let seen = seen.get_or_insert_with(HashSet::new);
    if seen.contains(tenant) {
        return tenant.to_owned();
    }
    if seen.len() < MAX_TENANTS.load(Ordering::Relaxed) {
        seen.insert(tenant.to_owned());
        return tenant.to_owned();
    }
    OTHER_TENANT.to_owned()
}

/// Registers each series' help text and unit with the installed recorder
/// (call once, after installing it).
pub fn describe() {
    use metrics::Unit;
    use names::*;
    describe_counter!(RPC_REQUESTS, "gRPC calls finished, by status code");
    describe_gauge!(RPC_IN_FLIGHT, "gRPC calls running");
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "gRPC call latency, until the response stream ends"
    );
    describe_histogram!(
        ASK_STAGE_DURATION,
        Unit::Seconds,
        "time a finished Ask spent in each stage"
    );
    describe_counter!(MODEL_CALLS, "model calls of Asks");
    describe_counter!(MODEL_PROMPT_TOKENS, "prompt tokens of model calls");
    describe_counter!(MODEL_COMPLETION_TOKENS, "completion tokens of model calls");
    describe_histogram!(MODEL_CALL_COST, "cost in USD of each priced model call");
    describe_histogram!(SQL_DURATION, Unit::Seconds, "SQL tool statement time");
    describe_counter!(SQL_ROWS, "rows returned by the SQL tool");
    describe_counter!(
        CACHE_LOOKUPS,
        "cache lookups by cache (result, model) and outcome (hit, miss, bypass)"
    );
    describe_counter!(
        CACHE_EVICTIONS,
        "cache entries removed by cache and cause (size, expired, replaced, explicit)"
    );
    describe_counter!(
        SQL_RESULT_BYTES,
        Unit::Bytes,
        "approximate cell bytes returned by the SQL tool"
    );
    describe_histogram!(POOL_WAIT, Unit::Seconds, "time to get a pooled connection");
    describe_gauge!(POOL_CONNECTIONS, "pooled connections by state");
    describe_gauge!(POOL_WAITING, "requests waiting for a pooled connection");
    describe_histogram!(
        SYNC_LAG,
        Unit::Seconds,
        "time from a source change to the sidecar commit that applied it"
    );
    describe_counter!(SYNC_CHANGES, "outbox entries applied by the index sync");
    describe_gauge!(SYNC_OUTBOX_BACKLOG, "outbox entries waiting");
    describe_gauge!(
        SYNC_OUTBOX_OLDEST,
        Unit::Seconds,
        "age of the oldest waiting outbox entry"
    );
    describe_gauge!(
        SYNC_EMBEDDING_BACKLOG,
        "live documents whose vectors are not current"
    );
    describe_counter!(SYNC_DOCUMENTS_EMBEDDED, "documents embedded by the sync");
    describe_counter!(SUMMARY_BUILDS, "summary builds by outcome");
    describe_histogram!(
        SUMMARY_BUILD_DURATION,
        Unit::Seconds,
        "summary build wall time"
    );
    describe_counter!(SUMMARIES_BUILT, "summaries written by builds");
    describe_gauge!(
        BACKGROUND_TASK_UP,
        "1 while a supervised background task runs, 0 while it waits to restart or has finished"
    );
    describe_counter!(
        BACKGROUND_TASK_RESTARTS,
        "failures a supervised background task restarted after"
    );
    describe_gauge!(
        BOOKKEEPING_QUEUED,
        "audit entries and usage charges waiting in the write-behind queue"
    );
    describe_counter!(
        BOOKKEEPING_WRITTEN,
        "audit entries and usage charges the write-behind stored, by kind"
    );
    describe_counter!(
        BOOKKEEPING_DROPPED,
        "audit entries and usage charges dropped because the write-behind queue was full, by kind"
    );
}

/// A gRPC call began.
pub fn rpc_started(service: &str, method: &str) {
    gauge!(names::RPC_IN_FLIGHT, "service" => service.to_owned(), "method" => method.to_owned())
        .increment(1.0);
}

/// A gRPC call that [`rpc_started`] ended with `code` (its canonical name,
/// e.g. `OK`) after `elapsed`.
pub fn rpc_finished(service: &str, method: &str, code: &'static str, elapsed: Duration) {
    gauge!(names::RPC_IN_FLIGHT, "service" => service.to_owned(), "method" => method.to_owned())
        .decrement(1.0);
    let labels = [
        ("service", service.to_owned()),
        ("method", method.to_owned()),
        ("code", code.to_owned()),
    ];
    counter!(names::RPC_REQUESTS, &labels).increment(1);
    histogram!(names::RPC_DURATION, &labels).record(elapsed.as_secs_f64());
}

/// A stage of an Ask, the `stage` label of
/// [`names::ASK_STAGE_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskStage {
    /// From the request to the route decision (mode chosen, conversation
    /// read, golden look-up in router mode).
    Route,
    /// The orchestrator's own model calls (agentic steps, routing).
    Model,
    /// Tool calls (concurrent calls counted once).
    Tool,
    /// Database time the tools reported.
    Database,
    /// Storing the turn.
    Store,
    /// The whole Ask.
    Total,
}

impl AskStage {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            AskStage::Route => "route",
            AskStage::Model => "model",
            AskStage::Tool => "tool",
            AskStage::Database => "database",
            AskStage::Store => "store",
            AskStage::Total => "total",
        }
    }
}

/// An Ask spent `elapsed` in `stage`.
pub fn ask_stage(stage: AskStage, elapsed: Duration) {
    histogram!(names::ASK_STAGE_DURATION, "stage" => stage.name()).record(elapsed.as_secs_f64());
}

/// One model call of `tenant`'s Ask: `model`, `task` (`answer`, `routing`,
/// `sql`, `judge`), its tokens, and its cost in USD when priced.
pub fn model_call(
    tenant: &str,
    model: &str,
    task: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: Option<f64>,
) {
    let tenant = tenant_label(tenant);
    counter!(names::MODEL_CALLS, "tenant" => tenant.clone(), "model" => model.to_owned(), "task" => task.to_owned())
        .increment(1);
    let labels = [("tenant", tenant), ("model", model.to_owned())];
    counter!(names::MODEL_PROMPT_TOKENS, &labels).increment(prompt_tokens);
    counter!(names::MODEL_COMPLETION_TOKENS, &labels).increment(completion_tokens);
    if let Some(cost) = cost_usd {
        histogram!(names::MODEL_CALL_COST, &labels).record(cost);
    }
}

/// One statement of the SQL tool for `tenant` (`none` for a call without
/// a governed session) that returned `Some((rows, bytes))`, or `None` when
/// it failed, after `elapsed`.
pub fn sql_statement(tenant: Option<&str>, result: Option<(u64, u64)>, elapsed: Duration) {
    let tenant = tenant.map_or_else(|| "none".to_owned(), tenant_label);
    let outcome = if result.is_some() { "ok" } else { "error" };
    histogram!(names::SQL_DURATION, "tenant" => tenant.clone(), "outcome" => outcome)
        .record(elapsed.as_secs_f64());
    if let Some((rows, bytes)) = result {
        counter!(names::SQL_ROWS, "tenant" => tenant.clone()).increment(rows);
        counter!(names::SQL_RESULT_BYTES, "tenant" => tenant).increment(bytes);
    }
}

/// A lookup in `cache` (`"result"` or `"model"`, fixed names) with
/// `outcome` (`"hit"`, `"miss"` or `"bypass"`: the cache could not be used
/// for this request).
pub fn cache_lookup(cache: &'static str, outcome: &'static str) {
    counter!(names::CACHE_LOOKUPS, "cache" => cache, "outcome" => outcome).increment(1);
}

/// An entry of `cache` was removed for `cause` (moka's removal causes:
/// `"size"`, `"expired"`, `"replaced"`, `"explicit"`).
pub fn cache_eviction(cache: &'static str, cause: &'static str) {
    counter!(names::CACHE_EVICTIONS, "cache" => cache, "cause" => cause).increment(1);
}

/// Getting a pooled connection for `usage` (a fixed name) took `waited`.
pub fn pool_wait(usage: &'static str, waited: Duration) {
    histogram!(names::POOL_WAIT, "use" => usage).record(waited.as_secs_f64());
}

/// The state of the pool of `database`: its `max` size, `open`
/// connections, `idle` ones and requests `waiting`.
pub fn pool_status(database: &str, max: usize, open: usize, idle: usize, waiting: usize) {
    for (state, value) in [("max", max), ("open", open), ("idle", idle)] {
        gauge!(names::POOL_CONNECTIONS, "database" => database.to_owned(), "state" => state)
            .set(value as f64);
    }
    gauge!(names::POOL_WAITING, "database" => database.to_owned()).set(waiting as f64);
}

/// The sync applied outbox entries of `collection`, each `latencies` after
/// its source change.
pub fn sync_applied(collection: &str, latencies: &[Duration]) {
    counter!(names::SYNC_CHANGES, "collection" => collection.to_owned())
        .increment(latencies.len() as u64);
    let lag = histogram!(names::SYNC_LAG, "collection" => collection.to_owned());
    for latency in latencies {
        lag.record(latency.as_secs_f64());
    }
}

/// `backlog` outbox entries of `collection` wait, the oldest for `oldest`.
pub fn sync_outbox(collection: &str, backlog: u64, oldest: Option<Duration>) {
    gauge!(names::SYNC_OUTBOX_BACKLOG, "collection" => collection.to_owned()).set(backlog as f64);
    gauge!(names::SYNC_OUTBOX_OLDEST, "collection" => collection.to_owned())
        .set(oldest.map_or(0.0, |d| d.as_secs_f64()));
}

/// `pending` live documents of `collection` wait for vectors.
pub fn embedding_backlog(collection: &str, pending: u64) {
    gauge!(names::SYNC_EMBEDDING_BACKLOG, "collection" => collection.to_owned())
        .set(pending as f64);
}

/// The sync brought the vectors of `docs` documents of `collection` up to
/// date.
pub fn documents_embedded(collection: &str, docs: u64) {
    counter!(names::SYNC_DOCUMENTS_EMBEDDED, "collection" => collection.to_owned()).increment(docs);
}

/// How a summary build ended, the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildOutcome {
    /// Every entity built.
    Ok,
    /// Finished with failed entities or kinds.
    Partial,
    /// Not run: another build held the lock.
    Skipped,
    /// Stopped by an error.
    Error,
}

impl BuildOutcome {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            BuildOutcome::Ok => "ok",
            BuildOutcome::Partial => "partial",
            BuildOutcome::Skipped => "skipped",
            BuildOutcome::Error => "error",
        }
    }
}

/// A summary build ended with `outcome` after `elapsed`, having written
/// `built` summaries.
pub fn summary_build(outcome: BuildOutcome, elapsed: Duration, built: u64) {
    counter!(names::SUMMARY_BUILDS, "outcome" => outcome.name()).increment(1);
    histogram!(names::SUMMARY_BUILD_DURATION, "outcome" => outcome.name())
        .record(elapsed.as_secs_f64());
    counter!(names::SUMMARIES_BUILT).increment(built);
}

/// Supervised background task `task` of `group` (e.g. the index sync of a
/// collection, group `sync`) is now running (`up`) or not.
pub fn background_task(task: &str, group: &str, up: bool) {
    gauge!(names::BACKGROUND_TASK_UP, "task" => task.to_owned(), "group" => group.to_owned())
        .set(if up { 1.0 } else { 0.0 });
}

/// The write-behind's queue now holds `queued` items.
pub fn bookkeeping_queued(queued: usize) {
    gauge!(names::BOOKKEEPING_QUEUED).set(queued as f64);
}

/// The write-behind stored `count` items of `kind` (`audit`, `usage`).
pub fn bookkeeping_written(kind: &'static str, count: u64) {
    counter!(names::BOOKKEEPING_WRITTEN, "kind" => kind).increment(count);
}

/// The write-behind dropped an item of `kind`: its queue was full.
pub fn bookkeeping_dropped(kind: &'static str) {
    counter!(names::BOOKKEEPING_DROPPED, "kind" => kind).increment(1);
}

/// Supervised background task `task` of `group` failed and will restart.
pub fn background_task_restarted(task: &str, group: &str) {
    counter!(names::BACKGROUND_TASK_RESTARTS, "task" => task.to_owned(), "group" => group.to_owned())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_past_the_cap_share_one_label() {
        set_max_tenant_labels(2);
        assert_eq!(tenant_label("a"), "a");
        assert_eq!(tenant_label("b"), "b");
        assert_eq!(tenant_label("c"), OTHER_TENANT);
        // seen before the cap was reached: keeps its label
        assert_eq!(tenant_label("a"), "a");
    }
}
