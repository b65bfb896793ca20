//! Read-only execution of validated queries with row, byte and time caps.
//!
//! [`Executor::execute`] takes a connection from the pool and, for each query:
//!
//! 1. opens a `READ ONLY` transaction (`BEGIN READ ONLY`), so PostgreSQL
//!    itself refuses any write the validator might have missed;
//! 2. `SET LOCAL statement_timeout` to [`ExecConfig::statement_timeout_ms`]
//!    and, when the query was validated against a schema restriction,
//!    `SET LOCAL search_path` to `pg_catalog`, those schemas, then `pg_temp`;
//!    both end with the transaction;
//! 3. prepares [`ValidatedQuery::rewritten_sql`] with a limit of
//!    `max_rows + 1`, binds it to a portal and fetches
//!    [`ExecConfig::fetch_batch`] rows at a time, stopping after `max_rows`
//!    rows (then [`QueryResult::truncated`] is set) or when the cumulative cell
//!    size passes [`ExecConfig::max_bytes`] — the whole result is never held
//!    beyond the caps. When every column is of a fixed-size type and
//!    `max_rows + 1` rows of the largest such size fit the byte cap, the
//!    result cannot pass the caps, and it is fetched at once instead (Bind
//!    and Execute in one round trip, no portal);
//! 4. rolls back, without waiting for the answer (the connection serves its
//!    next user after the rollback).
//!
//! PostgreSQL applies `statement_timeout` to each protocol `Execute` message
//! (one per batch), so the executor also enforces the same budget on the
//! whole call and cancels the server-side query when it runs out.
//!
//! With [`ExecConfig::max_estimated_cost`] set, the query is first planned
//! with `EXPLAIN (FORMAT JSON)` in the same transaction (after the settings
//! above, so names resolve the same way) and refused with
//! [`ExecError::TooExpensive`] when the planner's total cost exceeds the
//! ceiling; nothing runs then.
//!
//! Values are decoded from PostgreSQL's binary format into [`Cell`]s. Columns
//! of types without a native mapping (`timetz`, ranges, network addresses,
//! composite types, arrays of those, …) are cast to `text` by the server: the
//! statement is prepared once, and if such a column exists it is prepared
//! again as `SELECT c1, c2::text, … FROM (<query>) AS quarry_r(c1, c2, …)`.

use std::time::{Duration, Instant};

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use deadpool_postgres::{Pool, PoolError};
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Kind, Type};
use tokio_postgres::{NoTls, Row};

use crate::validate::{QuerySession, ValidatedQuery};

/// Limits for one query execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// Server-side `statement_timeout`, in milliseconds; also the budget for
    /// the whole call. Must be positive (0 would disable PostgreSQL's timeout).
    pub statement_timeout_ms: u64,
    /// Most rows returned; one more is fetched to detect truncation.
    pub max_rows: u64,
    /// Most bytes of cell data (approximate: the size of each value in
    /// PostgreSQL's binary format, 0 for NULL) before [`ExecError::TooLarge`].
    pub max_bytes: usize,
    /// Rows fetched from the portal per round trip.
    pub fetch_batch: u32,
    /// Role to run queries as (`SET LOCAL ROLE`, inside the transaction);
    /// `None` keeps the pool's login role. Create it with
    /// [`crate::role::read_only_role_sql`]; the login role must be a member.
    pub role: Option<String>,
    /// When the result is truncated at the row cap, also run
    /// `SELECT count(*) FROM (<query>)` in the same transaction (within what
    /// is left of the time budget) so [`QueryResult::total_rows`] is exact.
    pub count_when_truncated: bool,
    /// Ceiling on the planner's estimated total cost of the query, in
    /// PostgreSQL's arbitrary cost units (by default `seq_page_cost = 1.0` is
    /// one sequential page fetch; PostgreSQL 16 docs §14.1 "Using EXPLAIN"
    /// and §20.7.2 "Planner Cost Constants"). The SQL that runs (with the
    /// row cap applied) is planned with `EXPLAIN (FORMAT JSON)` before it is
    /// executed; above the ceiling it is refused with
    /// [`ExecError::TooExpensive`]. The optional `count(*)` of a truncated
    /// result is skipped when its own estimate is above the ceiling. `None`
    /// (the default) plans nothing extra.
    pub max_estimated_cost: Option<f64>,
    /// The fraction of the pool's connections one tenant's queries may hold
    /// at once (rounded down, at least one): a tenant with many slow queries
    /// in flight leaves the rest to the others. Default 0.5.
    pub tenant_share: f64,
    /// How long a query waits for a slot of its tenant's share before it is
    /// refused with `RESOURCE_EXHAUSTED` and `RetryInfo`, in milliseconds.
    /// Default 250.
    pub tenant_wait_ms: u64,
    /// `work_mem` of each query, in kB: memory one sort or hash may use
    /// before it spills to temporary files (PostgreSQL 16 docs §20.4.1).
    /// Default 4,096 (PostgreSQL's own default, set explicitly so a database
    /// or role setting cannot raise it); 0 keeps the session's.
    pub work_mem_kb: u64,
    /// `temp_file_limit` of each query, in kB: the most temporary-file space
    /// it may use; past it the query fails with SQLSTATE `53400` (PostgreSQL
    /// 16 docs §20.4.2). Default 262,144 (256 MB); 0 keeps the session's.
    /// Setting it needs a superuser login or `GRANT SET ON PARAMETER
    /// temp_file_limit TO <login role>` (checked at start-up).
    pub temp_file_limit_kb: u64,
    /// `max_parallel_workers_per_gather` of each query: the most parallel
    /// worker processes one Gather node may start (PostgreSQL 16 docs
    /// §20.4.6). Default 0: a query runs in its own backend only, so one
    /// tenant's query takes at most one core and no worker slots
    /// (`max_worker_processes`, shared by the whole cluster) from the others.
    pub max_parallel_workers_per_gather: u32,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            statement_timeout_ms: 10_000,
            max_rows: 1_000,
            max_bytes: 4 * 1024 * 1024,
            fetch_batch: 256,
            role: None,
            count_when_truncated: true,
            max_estimated_cost: None,
            work_mem_kb: 4_096,
            temp_file_limit_kb: 262_144,
            max_parallel_workers_per_gather: 0,
            tenant_share: 0.5,
            tenant_wait_ms: 250,
        }
    }
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name as PostgreSQL reports it (`?column?` for unnamed ones).
    pub name: String,
    /// PostgreSQL type name, e.g. `int4`, `varchar`, `timestamptz`, `interval`.
    pub type_name: String,
    /// Whether the column carries personal data under the caller's policy
    /// (see [`QuerySession::pii_columns`]): its values must be replaced by
    /// placeholders before they reach a model.
    #[serde(default)]
    pub pii: bool,
}

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// `bool`.
    Bool(bool),
    /// `int2`, `int4`, `int8`, `oid`.
    Int(i64),
    /// `float4`, `float8`.
    Float(f64),
    /// `numeric`, exactly as PostgreSQL prints it (`"12.50"`, `"NaN"`, `"Infinity"`).
    Decimal(String),
    /// Text types (`text`, `varchar`, `bpchar`, `name`, `citext`, enums, `"char"`),
    /// `uuid`, infinite dates and timestamps, and the text form of any type
    /// without its own variant.
    Text(String),
    /// `bytea`.
    Bytes(Vec<u8>),
    /// `date`.
    Date(NaiveDate),
    /// `timestamp` (without time zone).
    Timestamp(NaiveDateTime),
    /// `timestamptz`, in UTC.
    TimestampTz(DateTime<Utc>),
    /// `time` (without time zone), microsecond precision. PostgreSQL's
    /// `24:00:00`, which [`NaiveTime`] cannot hold, comes as
    /// [`Cell::Text`]`("24:00:00")`; `timetz` is [`Cell::Text`].
    Time(NaiveTime),
    /// `interval`, as PostgreSQL stores it: the three fields are kept apart
    /// because a month has no fixed number of days and a day no fixed number
    /// of hours across daylight-saving changes. Infinite intervals
    /// (PostgreSQL 17) come as [`Cell::Text`]`("infinity")`/`("-infinity")`;
    /// so does, from PostgreSQL 16 or older, the one finite interval with
    /// all three fields at their minimum (or maximum), which PostgreSQL 17
    /// reserves for them.
    Interval {
        /// Months (years are 12 months).
        months: i32,
        /// Days.
        days: i32,
        /// Time part, in microseconds.
        microseconds: i64,
    },
    /// An array whose elements are `int2`/`int4`/`int8`, `float4`/`float8`,
    /// `numeric`, text types, `bool`, `date`, `time`, `timestamp(tz)`,
    /// `interval`, `uuid`, `json`/`jsonb` or `bytea`, each decoded as its own
    /// cell ([`Cell::Null`] for NULL elements). A multi-dimensional array
    /// nests: `'{{1,2},{3,4}}'::int[]` is `Array([Array([1, 2]), Array([3, 4])])`.
    /// Lower bounds other than 1 (`'[0:1]={1,2}'`) are not kept.
    Array(Vec<Cell>),
    /// `json`, `jsonb`.
    Json(serde_json::Value),
}

impl Cell {
    /// The value as JSON, for prompts and digests: numbers stay numbers
    /// (decimals as strings to keep precision), bytes become `\x…` hex,
    /// timestamps RFC 3339, times `HH:MM:SS[.ffffff]` and intervals the way
    /// PostgreSQL prints them (see [`time_text`], [`interval_text`]), arrays
    /// JSON arrays of their elements' JSON.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Int(i) => Value::from(*i),
            Cell::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(f.to_string())),
            Cell::Decimal(s) | Cell::Text(s) => Value::String(s.clone()),
            Cell::Bytes(b) => {
                let mut hex = String::with_capacity(2 + 2 * b.len());
                hex.push_str("\\x");
                for byte in b {
                    hex.push_str(&format!("{byte:02x}"));
                }
                Value::String(hex)
            }
            Cell::Date(d) => Value::String(d.to_string()),
            Cell::Timestamp(t) => Value::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            Cell::TimestampTz(t) => Value::String(t.to_rfc3339()),
            Cell::Time(t) => Value::String(time_text(t)),
            Cell::Interval {
                months,
                days,
                microseconds,
            } => Value::String(interval_text(*months, *days, *microseconds)),
            Cell::Array(cells) => Value::Array(cells.iter().map(Cell::to_json).collect()),
            Cell::Json(v) => v.clone(),
        }
    }
}

/// Microseconds per second, minute, hour, day.
const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
const USECS_PER_DAY: i64 = 24 * USECS_PER_HOUR;

/// `seconds` zero-padded to two digits, then `.` and the microseconds
/// without trailing zeros when there are any, as PostgreSQL's
/// `AppendSeconds` (`src/backend/utils/adt/datetime.c`) writes them.
fn push_seconds(out: &mut String, seconds: u64, micros: u64) {
    let _ = write!(out, "{seconds:02}");
    if micros != 0 {
        let fraction = format!("{micros:06}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
}

/// A `time` as PostgreSQL prints it: `HH:MM:SS`, plus `.` and up to six
/// fractional digits without trailing zeros (`04:05:06.5`); ISO 8601.
pub fn time_text(time: &NaiveTime) -> String {
    let mut out = format!("{:02}:{:02}:", time.hour(), time.minute());
    // sub-microsecond digits cannot come from PostgreSQL; a leap second
    // (nanosecond >= 1e9) is folded into the last second
    let micros = u64::from(time.nanosecond().min(999_999_999) / 1_000);
    push_seconds(&mut out, u64::from(time.second()), micros);
    out
}

/// An interval as PostgreSQL's `interval_out` prints it under the default
/// `IntervalStyle = postgres` (`EncodeInterval`, `INTSTYLE_POSTGRES` in
/// `src/backend/utils/adt/datetime.c`): years and months from `months`
/// (`1 year 2 mons`), then `N days`, then the time part `[-]HH:MM:SS[.ffffff]`
/// when it is non-zero or everything else is zero (`00:00:00`). Each field
/// takes the sign of its own value, and a positive field after a negative
/// one is written with `+` (`-1 days +02:00:00`).
pub fn interval_text(months: i32, days: i32, microseconds: i64) -> String {
    let mut out = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |out: &mut String, value: i64, unit: &str| {
        if value == 0 {
            return;
        }
        let _ = write!(
            out,
            "{}{}{value} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            if value == 1 { "" } else { "s" },
        );
        is_before = value < 0;
        is_zero = false;
    };
    part(&mut out, i64::from(months / 12), "year");
    part(&mut out, i64::from(months % 12), "mon");
    part(&mut out, i64::from(days), "day");
    let hours = microseconds / USECS_PER_HOUR;
    let rest = microseconds - hours * USECS_PER_HOUR;
    let minutes = rest / USECS_PER_MINUTE;
    let rest = rest - minutes * USECS_PER_MINUTE;
    let seconds = rest / USECS_PER_SEC;
    let fraction = rest - seconds * USECS_PER_SEC;
    if is_zero || microseconds != 0 {
        let minus = microseconds < 0;
        let _ = write!(
            out,
            "{}{}{:02}:{:02}:",
            if is_zero { "" } else { " " },
            if minus {
                "-"
            } else if is_before {
                "+"
            } else {
                ""
            },
            hours.unsigned_abs(),
            minutes.unsigned_abs(),
        );
        push_seconds(&mut out, seconds.unsigned_abs(), fraction.unsigned_abs());
    }
    out
}

/// Rows of one executed query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// Result columns, in order.
    pub columns: Vec<Column>,
    /// At most [`ExecConfig::max_rows`] rows, each with one cell per column.
    pub rows: Vec<Vec<Cell>>,
    /// True when the query had more rows than returned.
    pub truncated: bool,
    /// Exact number of rows the query produces: `rows.len()` when not
    /// truncated; the `count(*)` of the un-capped query when truncated and
    /// [`ExecConfig::count_when_truncated`] is on and the count finished in
    /// time; `None` otherwise (then the total is "more than `rows.len()`").
    pub total_rows: Option<u64>,
    /// Approximate size of the returned cells, in bytes (see [`ExecConfig::max_bytes`]).
    pub bytes: usize,
    /// Wall time of the execution, connection checkout included.
    pub elapsed: Duration,
    /// The statement as executed: the validated query rendered with the row
    /// limit ([`ValidatedQuery::rewritten_sql`]); for a governed query, the
    /// caller's own query with the limit ([`ValidatedQuery::shown_rewritten_sql`]),
    /// since the rewrite holds the policy's masks and filters.
    pub sql: String,
    /// Whether it came from the result cache ([`crate::cache`]).
    pub cache: crate::cache::CacheStatus,
}

impl QueryResult {
    /// Number of rows returned (not counting any beyond the cap).
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }
}

/// Why an execution failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No connection could be taken from the pool.
    #[error("no database connection available: {}", quarry_db::pool_error_text(.0))]
    Pool(#[from] PoolError),
    /// The caller's tenant already holds its share of the pool.
    #[error(transparent)]
    Busy(#[from] quarry_auth::shares::ShareExhausted),
    /// `statement_timeout` fired (SQLSTATE 57014) or the call's budget ran out.
    #[error("query exceeded the time limit of {timeout_ms} ms")]
    Timeout {
        /// The configured limit, in milliseconds.
        timeout_ms: u64,
    },
    /// PostgreSQL refused or failed the query.
    #[error("database error {code}: {message}")]
    Database {
        /// SQLSTATE, e.g. `42703` (undefined column), `25006` (read-only transaction).
        code: String,
        /// PostgreSQL's primary message.
        message: String,
        /// 1-based character offset into the executed SQL, when reported.
        position: Option<u32>,
        /// PostgreSQL's detail line, if any.
        detail: Option<String>,
        /// PostgreSQL's hint, if any.
        hint: Option<String>,
    },
    /// The planner's estimated total cost is above
    /// [`ExecConfig::max_estimated_cost`]; the query was not run.
    #[error(
        "query is too expensive: the planner estimates a cost of {estimated:.2}, the limit is \
         {limit:.2} (postgresql cost units, see postgresql docs §14.1 \"using explain\"); \
         add filters or a limit, or aggregate less data"
    )]
    TooExpensive {
        /// The top plan node's `Total Cost` from `EXPLAIN (FORMAT JSON)`.
        estimated: f64,
        /// The configured ceiling.
        limit: f64,
    },
    /// The cells passed [`ExecConfig::max_bytes`].
    #[error("result is larger than the limit of {max_bytes} bytes")]
    TooLarge {
        /// The configured limit.
        max_bytes: usize,
    },
    /// A value could not be decoded.
    #[error("cannot decode column {column} ({type_name}): {reason}")]
    Decode {
        /// Column name.
        column: String,
        /// PostgreSQL type name.
        type_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection failed or the protocol broke (not a database error).
    #[error("database connection error: {}", quarry_db::error_text(.0))]
    Connection(#[source] tokio_postgres::Error),
}

impl ExecError {
    pub(crate) fn from_pg(error: tokio_postgres::Error, timeout_ms: u64) -> Self {
        match error.as_db_error() {
            Some(db) if *db.code() == SqlState::QUERY_CANCELED => Self::Timeout { timeout_ms },
            Some(db) => Self::Database {
                code: db.code().code().to_owned(),
                message: db.message().to_owned(),
                position: match db.position() {
                    Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p),
                    _ => None,
                },
                detail: db.detail().map(str::to_owned),
                hint: db.hint().map(str::to_owned),
            },
            None => Self::Connection(error),
        }
    }

    /// SQLSTATE of a database error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Database { code, .. } => Some(code),
            Self::Timeout { .. } => Some(SqlState::QUERY_CANCELED.code()),
            Self::Pool(_)
            | Self::Busy(_)
            | Self::TooExpensive { .. }
            | Self::TooLarge { .. }
            | Self::Decode { .. }
            | Self::Connection(_) => None,
        }
    }
}

/// Runs validated queries on a pool of connections to the source database.
#[derive(Clone)]
pub struct Executor {
    pool: Pool,
    config: ExecConfig,
    /// Each tenant's share of the pool's connections (governed queries).
    shares: quarry_auth::shares::TenantShares,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor over `pool` with the given limits.
    /// Each tenant may hold [`ExecConfig::tenant_share`] of the pool's
    /// connections at once.
    pub fn new(pool: Pool, config: ExecConfig) -> Self {
        let shares = quarry_auth::shares::TenantShares::new(
            "database connections",
            quarry_auth::shares::TenantShares::share_of(
                pool.status().max_size,
                config.tenant_share,
            ),
            Duration::from_millis(config.tenant_wait_ms),
        );
        Self {
            pool,
            config,
            shares,
        }
    }

    /// Each tenant's share of the pool's connections.
    pub fn tenant_shares(&self) -> &quarry_auth::shares::TenantShares {
        &self.shares
    }

    /// The limits in force.
    pub fn config(&self) -> &ExecConfig {
        &self.config
    }

    /// The connection pool (for planning with [`crate::explain`]).
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Run `query` read-only with the configured caps. The row cap is the
    /// smaller of [`ExecConfig::max_rows`] and [`ValidatedQuery::max_rows`].
    ///
    /// # Errors
    /// [`ExecError::Pool`] when no connection can be had in time;
    /// [`ExecError::Timeout`] when `statement_timeout` fires or the call's
    /// budget runs out (the server-side query is cancelled);
    /// [`ExecError::Database`] with PostgreSQL's SQLSTATE, message, position,
    /// detail and hint when it refuses or fails the query (e.g. `42703`
    /// undefined column, `25006` a write in the read-only transaction);
    /// [`ExecError::TooExpensive`] when the planner's estimate is above
    /// [`ExecConfig::max_estimated_cost`] (nothing runs then);
    /// [`ExecError::TooLarge`] past [`ExecConfig::max_bytes`];
    /// [`ExecError::Decode`] for a value that cannot be decoded;
    /// [`ExecError::Connection`] when the connection breaks.
    ///
    /// # Traces
    /// Runs in an `info` span `sql.statement` (`db.system.name`,
    /// `db.response.returned_rows`; the transaction's `application_name`
    /// carries its trace, see [`quarry_db::ReadOnly`]). The SQL text is not
    /// recorded: it may hold values of the caller's data.
    #[tracing::instrument(
        name = "sql.statement",
        skip_all,
        fields(
            otel.kind = "client",
            db.system.name = "postgresql",
            db.response.returned_rows = tracing::field::Empty,
        )
    )]
    pub async fn execute(&self, query: &ValidatedQuery) -> Result<QueryResult, ExecError> {
        let max_rows = self.config.max_rows.min(query.max_rows());
        let sql = query.rewritten_sql(max_rows);
        let count_sql = self
            .config
            .count_when_truncated
            .then(|| format!("SELECT count(*) FROM ({}) AS quarry_c", query.sql()));
        let started = Instant::now();
        let run = self
            .run(
                &sql,
                true,
                count_sql.as_deref(),
                query.allowed_schemas(),
                query.session(),
                max_rows,
            )
            .await;
        quarry_metrics::sql_statement(
            query.session().map(|s| s.tenant.as_str()),
            run.as_ref()
                .ok()
                .map(|r| (r.row_count() as u64, r.bytes as u64)),
            started.elapsed(),
        );
        let mut result = run?;
        if let Some(session) = query.session() {
            result.sql = query.shown_rewritten_sql(max_rows);
            for column in &mut result.columns {
                column.pii = session.pii_columns.binary_search(&column.name).is_ok();
            }
        }
        tracing::Span::current().record("db.response.returned_rows", result.row_count());
        Ok(result)
    }

    /// Run `sql` as given inside the guarded transaction. Not public: SQL
    /// reaches the database only through [`validate`](crate::validate);
    /// tests use it to show that the transaction holds on its own.
    #[cfg(test)]
    pub(crate) async fn run_sql(
        &self,
        sql: &str,
        search_path: Option<&[String]>,
        max_rows: u64,
    ) -> Result<QueryResult, ExecError> {
        self.run(sql, false, None, search_path, None, max_rows)
            .await
    }

    /// Cancel-safe: if this future is dropped before it completes (the
    /// client went away, or the budget ran out), a [`CancelOnDrop`] guard
    /// sends PostgreSQL a cancel request for the running statement and
    /// detaches the connection from the pool, so the server stops working
    /// and no later query can be hit by the late cancel.
    async fn run(
        &self,
        sql: &str,
        limited: bool,
        count_sql: Option<&str>,
        search_path: Option<&[String]>,
        session: Option<&QuerySession>,
        max_rows: u64,
    ) -> Result<QueryResult, ExecError> {
        let started = Instant::now();
        let timeout_ms = self.config.statement_timeout_ms.max(1);
        let budget = Duration::from_millis(timeout_ms);
        // a governed query counts against its tenant's share of the pool
        let _share = match session {
            Some(session) => Some(self.shares.acquire(&session.tenant).await?),
            None => None,
        };
        let client = quarry_db::checkout(&self.pool, "sql").await?;
        let mut guard = CancelOnDrop::new(client);
        let Some(client) = guard.client.as_mut() else {
            return Err(ExecError::Timeout { timeout_ms });
        };
        let plan = Plan {
            sql,
            limited,
            count_sql,
            search_path,
            session,
            max_rows,
            deadline: started + budget,
        };
        let run = run_in_transaction(client, &plan, &self.config);
        match tokio::time::timeout(budget, run).await {
            Ok(Ok(mut result)) => {
                guard.disarm();
                result.elapsed = started.elapsed();
                Ok(result)
            }
            Ok(Err(error)) => {
                guard.disarm();
                Err(error)
            }
            // the guard cancels the statement when it drops
            Err(_elapsed) => Err(ExecError::Timeout { timeout_ms }),
        }
    }
}

/// Holds the pooled connection while a query runs. Dropped while armed
/// (the future was dropped or timed out mid-query), it detaches the
/// connection from the pool and spawns a cancel request (PostgreSQL 16 docs
/// §55.2.8 "Canceling Requests in Progress") on the current Tokio runtime.
struct CancelOnDrop {
    client: Option<deadpool_postgres::Object>,
    armed: bool,
}

impl CancelOnDrop {
    fn new(client: deadpool_postgres::Object) -> Self {
        Self {
            client: Some(client),
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(client) = self.client.take() else {
            return;
        };
        let token = client.cancel_token();
        // never hand this connection to another query: a late cancel could
        // hit that query instead
        drop(deadpool_postgres::Object::take(client));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(error) = token.cancel_query(NoTls).await {
                        let error = quarry_db::PgError(error);
                        tracing::warn!(%error, "failed to cancel an abandoned query");
                    }
                });
            }
            Err(_) => tracing::warn!("no runtime to cancel an abandoned query"),
        }
    }
}

/// What [`run_in_transaction`] runs.
struct Plan<'a> {
    sql: &'a str,
    /// `sql` returns at most `max_rows + 1` rows by its own text
    /// ([`crate::ValidatedQuery::rewritten_sql`]).
    limited: bool,
    count_sql: Option<&'a str>,
    search_path: Option<&'a [String]>,
    session: Option<&'a QuerySession>,
    max_rows: u64,
    deadline: Instant,
}

/// Whether values of `ty` are decoded natively (else they are cast to text).
fn decodes_natively(ty: &Type) -> bool {
    match ty.kind() {
        Kind::Array(element) => decodes_as_element(element),
        Kind::Simple
        | Kind::Enum(_)
        | Kind::Pseudo
        | Kind::Range(_)
        | Kind::Multirange(_)
        | Kind::Domain(_)
        | Kind::Composite(_)
        | _ => decodes_as_element(ty),
    }
}

/// Whether values of the scalar type `ty` are decoded natively, on their own
/// or as array elements.
fn decodes_as_element(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::BOOL
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::NUMERIC
            | Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::UNKNOWN
            | Type::CHAR
            | Type::DATE
            | Type::TIMESTAMP
            | Type::TIMESTAMPTZ
            | Type::TIME
            | Type::INTERVAL
            | Type::JSON
            | Type::JSONB
            | Type::BYTEA
            | Type::UUID
    ) || matches!(ty.kind(), Kind::Enum(_))
        || ty.name() == "citext"
}

/// The guarded read-only transaction every query of the tool runs in (query
/// execution, the truncation count, `EXPLAIN`; see [`quarry_db::ReadOnly`]):
/// `statement_timeout` from [`ExecConfig::statement_timeout_ms`] (at least
/// 1 ms: 0 would disable it), `standard_conforming_strings = on`, the
/// schema restriction as `search_path`, and [`ExecConfig::role`].
pub(crate) fn guard<'a>(
    config: &'a ExecConfig,
    search_path: Option<&'a [String]>,
    session: Option<&'a QuerySession>,
) -> quarry_db::ReadOnly<'a> {
    let role = session
        .and_then(|s| s.db_role.as_deref())
        .or(config.role.as_deref());
    quarry_db::ReadOnly::new(config.statement_timeout_ms.max(1))
        .limits(
            (config.work_mem_kb > 0).then_some(config.work_mem_kb),
            (config.temp_file_limit_kb > 0).then_some(config.temp_file_limit_kb),
        )
        .parallel_workers(Some(config.max_parallel_workers_per_gather))
        .search_path(search_path)
        .role(role)
        .session(session.map(|s| quarry_db::Session {
            tenant: &s.tenant,
            subject: &s.subject,
            roles: &s.roles,
            hash_salt: Some(&s.hash_salt),
        }))
}

async fn run_in_transaction(
    client: &mut deadpool_postgres::Object,
    plan: &Plan<'_>,
    config: &ExecConfig,
) -> Result<QueryResult, ExecError> {
    let Plan {
        sql,
        search_path,
        session,
        max_rows,
        ..
    } = *plan;
    let timeout_ms = config.statement_timeout_ms.max(1);
    let pg = |e| ExecError::from_pg(e, timeout_ms);
    let guard = guard(config, search_path, session);
    let (tx, statement) = match config.max_estimated_cost {
        // the cost is checked before the statement is prepared
        Some(limit) => {
            let tx = guard.begin(client).await.map_err(pg)?;
            let estimated = estimated_cost(&tx, sql).await.map_err(pg)??;
            if estimated > limit {
                return Err(ExecError::TooExpensive { estimated, limit });
            }
            let statement = tx.prepare(sql).await.map_err(pg)?;
            (tx, statement)
        }
        None => guard.begin_and_prepare(client, sql).await.map_err(pg)?,
    };
    let columns: Vec<Column> = statement
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            type_name: c.type_().name().to_owned(),
            pii: false,
        })
        .collect();
    // the row-size guard's error is the byte cap's
    let pg_or_too_large = |e: tokio_postgres::Error| {
        if is_row_too_large(&e) {
            ExecError::TooLarge {
                max_bytes: config.max_bytes,
            }
        } else {
            pg(e)
        }
    };
    let statement = match guarded_select(sql, statement.columns(), config.max_bytes) {
        None => statement,
        Some(wrapped) => tx.prepare(&wrapped).await.map_err(pg_or_too_large)?,
    };

    let mut rows = Vec::new();
    let mut bytes = 0usize;
    // a row of fixed-size values only is at most FIXED_VALUE_BYTES a
    // value, known before any row is seen: the first fetch need not be a
    // single row (a one-row result then takes one fetch, not two)
    let fixed_width = statement
        .columns()
        .iter()
        .all(|c| !variable_length(c.type_()));
    let mut largest_row = if fixed_width {
        FIXED_VALUE_BYTES * statement.columns().len().max(1)
    } else {
        0
    };
    let mut truncated = false;
    // Adds fetched rows until the row cap; false once it is passed.
    let take = |fetched: &[tokio_postgres::Row],
                rows: &mut Vec<Vec<Cell>>,
                bytes: &mut usize,
                largest_row: &mut usize|
     -> Result<bool, ExecError> {
        for row in fetched {
            if rows.len() as u64 >= max_rows {
                return Ok(false);
            }
            let (cells, size) = decode_row(row, &columns)?;
            *bytes += size;
            *largest_row = (*largest_row).max(size);
            if *bytes > config.max_bytes {
                return Err(ExecError::TooLarge {
                    max_bytes: config.max_bytes,
                });
            }
            rows.push(cells);
        }
        Ok(true)
    };
    let whole_result_fits = plan.limited
        && fixed_width
        && usize::try_from(max_rows.saturating_add(1))
            .ok()
            .and_then(|n| n.checked_mul(largest_row))
            .is_some_and(|most| most <= config.max_bytes);
    if whole_result_fits {
        // At most `max_rows + 1` rows (the SQL says so) of at most
        // `largest_row` bytes each: the whole result is within the byte
        // cap, so it is fetched at once, Bind and Execute in one round
        // trip, instead of binding a portal first and fetching from it.
        let fetched = tx.query(&statement, &[]).await.map_err(pg_or_too_large)?;
        truncated = !take(&fetched, &mut rows, &mut bytes, &mut largest_row)?;
    } else {
        let portal = tx.bind(&statement, &[]).await.map_err(pg)?;
        let batch = config.fetch_batch.max(1);
        let mut first = !fixed_width;
        loop {
            // never ask for more than one row past the cap, nor (once a row
            // has been seen) for more rows than the byte cap has room for:
            // held rows stay within about the cap, whatever the batch size
            let wanted = max_rows.saturating_add(1).saturating_sub(rows.len() as u64);
            let ask = next_fetch(batch, wanted, config.max_bytes, bytes, largest_row, first);
            first = false;
            let fetched = tx
                .query_portal(&portal, ask)
                .await
                .map_err(pg_or_too_large)?;
            let exhausted = fetched.len() < usize::try_from(ask).unwrap_or(usize::MAX);
            if !take(&fetched, &mut rows, &mut bytes, &mut largest_row)? {
                truncated = true;
            }
            if truncated || exhausted {
                break;
            }
        }
        drop(portal);
    }
    let total_rows = if !truncated {
        Some(rows.len() as u64)
    } else {
        match plan.count_sql {
            Some(count_sql) => {
                count_rows(&tx, count_sql, plan.deadline, config.max_estimated_cost).await
            }
            None => None,
        }
    };
    // Dropping the transaction sends its ROLLBACK without waiting for the
    // answer (tokio-postgres' `Transaction` drop): the connection answers
    // requests in order, so whoever uses it next starts after the rollback,
    // and this statement's caller does not wait a round trip for it.
    drop(tx);
    Ok(QueryResult {
        columns,
        rows,
        truncated,
        total_rows,
        bytes,
        elapsed: Duration::ZERO,
        sql: sql.to_owned(),
        cache: crate::cache::CacheStatus::Bypassed,
    })
}

/// How many rows to ask the portal for next: at most `batch`, at most
/// `wanted`, and — so that held rows stay within about the byte cap
/// whatever the batch size — one row on the `first` fetch (nothing is known
/// of row sizes yet), then as many rows of the largest size seen so far as
/// the `max_bytes - bytes` left have room for (at least one).
fn next_fetch(
    batch: u32,
    wanted: u64,
    max_bytes: usize,
    bytes: usize,
    largest_row: usize,
    first: bool,
) -> i32 {
    let room = if first {
        1
    } else {
        (max_bytes.saturating_sub(bytes) / largest_row.max(1)).max(1)
    };
    let ask = u64::from(batch.max(1))
        .min(wanted.max(1))
        .min(u64::try_from(room).unwrap_or(u64::MAX));
    i32::try_from(ask).unwrap_or(i32::MAX)
}

/// Marker of the error the row-size guard raises (see [`guarded_select`]).
const ROW_TOO_LARGE: &str = "quarry: result row over the byte cap";

/// Whether `error` is the row-size guard's.
fn is_row_too_large(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| db.code().code() == "22P02" && db.message().contains(ROW_TOO_LARGE))
}

/// The largest binary size of a value of a type that is not
/// [`variable_length`]: `interval` and `uuid`, 16 bytes (PostgreSQL 16 docs
/// §8.5 and §8.12); the others are at most 8.
const FIXED_VALUE_BYTES: usize = 16;

/// Whether values of `ty` can be large (variable length: text, bytes, JSON,
/// arrays, and whatever is sent as text).
fn variable_length(ty: &Type) -> bool {
    !matches!(
        *ty,
        Type::BOOL
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::CHAR
            | Type::DATE
            | Type::TIMESTAMP
            | Type::TIMESTAMPTZ
            | Type::TIME
            | Type::INTERVAL
            | Type::UUID
    )
}

/// `sql` wrapped so that it returns what Quarry decodes, and so that
/// PostgreSQL itself refuses a row larger than `max_bytes` before sending
/// it: `SELECT c1, c2::text, … FROM (sql) AS quarry_r(c1, c2, …) WHERE
/// CASE WHEN <row bytes> > max_bytes THEN ('<marker> ' || …)::int = 0 ELSE
/// true END`. The row's bytes are the sum of `octet_length` of its
/// variable-length values (their size as text, uncompressed; fixed-size
/// values are small and left out). The guard's error is a failed cast
/// (SQLSTATE `22P02`) whose text holds [`ROW_TOO_LARGE`]; it depends on the
/// row, so the planner cannot fold it into an error at plan time
/// (PostgreSQL 16 docs §4.2.14). `None` when nothing needs wrapping: every
/// column decodes natively and none can be large.
fn guarded_select(
    sql: &str,
    columns: &[tokio_postgres::Column],
    max_bytes: usize,
) -> Option<String> {
    let natively = columns.iter().all(|c| decodes_natively(c.type_()));
    let sizes: Vec<String> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| variable_length(c.type_()))
        .map(|(i, c)| {
            let alias = format!("c{}", i + 1);
            let text = if matches!(
                *c.type_(),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::BYTEA
            ) {
                alias
            } else {
                format!("{alias}::text")
            };
            format!("coalesce(octet_length({text}), 0)::int8")
        })
        .collect();
    if natively && sizes.is_empty() {
        return None;
    }
    let aliases: Vec<String> = (1..=columns.len()).map(|i| format!("c{i}")).collect();
    let select: Vec<String> = columns
        .iter()
        .zip(&aliases)
        .map(|(c, alias)| {
            if decodes_natively(c.type_()) {
                alias.clone()
            } else {
                format!("{alias}::text")
            }
        })
        .collect();
    let guard = if sizes.is_empty() {
        String::new()
    } else {
        let size = sizes.join(" + ");
        format!(
            " WHERE CASE WHEN {size} > {max_bytes} THEN ('{ROW_TOO_LARGE}: ' || ({size}))::int = 0 ELSE true END"
        )
    };
    Some(format!(
        "SELECT {} FROM ({sql}) AS quarry_r({}){guard}",
        select.join(", "),
        aliases.join(", ")
    ))
}

/// The planner's estimated total cost of `sql`: the top plan node's
/// `Total Cost` from `EXPLAIN (FORMAT JSON)` (planned, not run). The outer
/// error is the database's; the inner one a plan without a cost.
async fn estimated_cost(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
) -> Result<Result<f64, ExecError>, tokio_postgres::Error> {
    let row = tx
        .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), &[])
        .await?;
    let plan: tokio_postgres::types::Json<serde_json::Value> = row.try_get(0)?;
    Ok(plan.0[0]["Plan"]["Total Cost"]
        .as_f64()
        .ok_or_else(|| ExecError::Decode {
            column: "QUERY PLAN".into(),
            type_name: "json".into(),
            reason: "the plan has no total cost".into(),
        }))
}

/// `count_sql` run with what is left of the time budget (less a margin so
/// the call's own budget does not fire first); `None` when time is short,
/// the count's estimated cost is above `max_cost`, or the count fails (the
/// rows already fetched stay valid).
async fn count_rows(
    tx: &tokio_postgres::Transaction<'_>,
    count_sql: &str,
    deadline: Instant,
    max_cost: Option<f64>,
) -> Option<u64> {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX) * 8 / 10;
    if ms < 10 {
        return None;
    }
    let counted = async {
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {ms}"))
            .await?;
        if let Some(limit) = max_cost
            && let Ok(estimated) = estimated_cost(tx, count_sql).await?
            && estimated > limit
        {
            tracing::debug!(estimated, limit, "not counting: too expensive");
            return Ok(None);
        }
        let row = tx.query_one(count_sql, &[]).await?;
        row.try_get::<_, i64>(0).map(Some)
    }
    .await;
    match counted {
        Ok(n) => n.and_then(|n| u64::try_from(n).ok()),
        Err(error) => {
            tracing::debug!(%error, "counting the rows of a truncated result failed");
            None
        }
    }
}

fn decode_row(row: &Row, columns: &[Column]) -> Result<(Vec<Cell>, usize), ExecError> {
    let mut cells = Vec::with_capacity(row.len());
    let mut size = 0;
    for i in 0..row.len() {
        match row.try_get::<_, Decoded>(i) {
            Ok(Decoded(cell, n)) => {
                size += n;
                cells.push(cell);
            }
            Err(error) => {
                let column = columns.get(i);
                return Err(ExecError::Decode {
                    column: column.map(|c| c.name.clone()).unwrap_or_default(),
                    type_name: column.map(|c| c.type_name.clone()).unwrap_or_default(),
                    reason: error.to_string(),
                });
            }
        }
    }
    Ok((cells, size))
}

/// A decoded cell and the size of its binary form.
struct Decoded(Cell, usize);

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl<'a> FromSql<'a> for Decoded {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Decoded(decode(ty, raw)?, raw.len()))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Decoded(Cell::Null, 0))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A `real` as the `f64` nearest the decimal PostgreSQL prints for it: the
/// shortest decimal that reads back as the same `f32` (PostgreSQL 12+ with
/// the default `extra_float_digits = 1`, docs §8.1.3; Rust's `f32` `Display`
/// prints the same shortest round-trip form). Widening with `f64::from`
/// would keep the binary value and print `4.6999998092651367` for `4.7`.
fn float4_as_printed(value: f32) -> f64 {
    value
        .to_string()
        .parse::<f64>()
        .unwrap_or_else(|_| f64::from(value))
}

fn decode(ty: &Type, raw: &[u8]) -> Result<Cell, BoxError> {
    Ok(match *ty {
        Type::BOOL => Cell::Bool(bool::from_sql(ty, raw)?),
        Type::INT2 => Cell::Int(i16::from_sql(ty, raw)?.into()),
        Type::INT4 => Cell::Int(i32::from_sql(ty, raw)?.into()),
        Type::INT8 => Cell::Int(i64::from_sql(ty, raw)?),
        Type::OID => Cell::Int(u32::from_sql(ty, raw)?.into()),
        Type::FLOAT4 => Cell::Float(float4_as_printed(f32::from_sql(ty, raw)?)),
        Type::FLOAT8 => Cell::Float(f64::from_sql(ty, raw)?),
        Type::NUMERIC => Cell::Decimal(decode_numeric(raw)?),
        Type::CHAR => Cell::Text(char::from(i8::from_sql(ty, raw)?.to_ne_bytes()[0]).to_string()),
        Type::DATE => decode_date(raw)?,
        Type::TIMESTAMP => match decode_micros(raw)? {
            Micros::Finite(t) => Cell::Timestamp(t),
            Micros::Infinite(s) => Cell::Text(s.into()),
        },
        Type::TIMESTAMPTZ => match decode_micros(raw)? {
            Micros::Finite(t) => Cell::TimestampTz(t.and_utc()),
            Micros::Infinite(s) => Cell::Text(s.into()),
        },
        Type::JSON | Type::JSONB => {
            Cell::Json(tokio_postgres::types::Json::<serde_json::Value>::from_sql(ty, raw)?.0)
        }
        Type::BYTEA => Cell::Bytes(raw.to_vec()),
        Type::UUID => Cell::Text(uuid::Uuid::from_sql(ty, raw)?.to_string()),
        Type::TIME => decode_time(raw)?,
        Type::INTERVAL => decode_interval(raw)?,
        _ if matches!(ty.kind(), Kind::Array(_)) => decode_array(ty, raw)?,
        // text-like types, enum labels and everything the server cast to text
        // arrive as UTF-8 text in binary format
        _ => Cell::Text(std::str::from_utf8(raw)?.to_owned()),
    })
}

/// PostgreSQL's binary `numeric`: ndigits, weight, sign, dscale (all 16-bit),
/// then `ndigits` base-10000 digits; rendered the way `numeric_out` does.
fn decode_numeric(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(2 * i..2 * i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        other => return Err(format!("bad numeric sign {other:#x}").into()),
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let d = word(4 + i)?;
        if d >= 10_000 {
            return Err("bad numeric digit".into());
        }
        digits.push(d);
    }
    let digit = |i: i64| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&digit(0).to_string());
        for i in 1..=weight {
            out.push_str(&format!("{:04}", digit(i)));
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut fraction = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        fraction.truncate(dscale);
        out.push_str(&fraction);
    }
    Ok(out)
}

fn pg_epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

fn decode_date(raw: &[u8]) -> Result<Cell, BoxError> {
    let days = i32::from_sql(&Type::INT4, raw)?;
    Ok(match days {
        i32::MAX => Cell::Text("infinity".into()),
        i32::MIN => Cell::Text("-infinity".into()),
        _ => match pg_epoch()
            .date()
            .checked_add_signed(chrono::Duration::days(days.into()))
        {
            Some(date) => Cell::Date(date),
            None => return Err(format!("date {days} days after 2000-01-01 is out of range").into()),
        },
    })
}

/// PostgreSQL's binary `time`: microseconds since midnight (i64), where
/// `24:00:00` (86 400 000 000) is valid.
fn decode_time(raw: &[u8]) -> Result<Cell, BoxError> {
    let micros = i64::from_sql(&Type::INT8, raw)?;
    if micros == USECS_PER_DAY {
        return Ok(Cell::Text("24:00:00".into()));
    }
    let seconds = u32::try_from(micros / USECS_PER_SEC).map_err(|_| "time out of range")?;
    let nanos = u32::try_from(micros % USECS_PER_SEC).map_err(|_| "time out of range")? * 1_000;
    NaiveTime::from_num_seconds_from_midnight_opt(seconds, nanos)
        .map(Cell::Time)
        .ok_or_else(|| format!("time of {micros} microseconds is out of range").into())
}

/// PostgreSQL's binary `interval` (`interval_send`): microseconds (i64),
/// days (i32), months (i32), big-endian. PostgreSQL 17 writes infinity as
/// all three at their maximum and -infinity as all three at their minimum.
fn decode_interval(raw: &[u8]) -> Result<Cell, BoxError> {
    let (Some(micros), Some(days), Some(months), 16) =
        (raw.get(0..8), raw.get(8..12), raw.get(12..16), raw.len())
    else {
        return Err(format!("interval of {} bytes, expected 16", raw.len()).into());
    };
    let microseconds = i64::from_sql(&Type::INT8, micros)?;
    let days = i32::from_sql(&Type::INT4, days)?;
    let months = i32::from_sql(&Type::INT4, months)?;
    Ok(match (months, days, microseconds) {
        (i32::MAX, i32::MAX, i64::MAX) => Cell::Text("infinity".into()),
        (i32::MIN, i32::MIN, i64::MIN) => Cell::Text("-infinity".into()),
        _ => Cell::Interval {
            months,
            days,
            microseconds,
        },
    })
}

/// Most dimensions of a PostgreSQL array (`MAXDIM`).
const MAX_ARRAY_DIMS: usize = 6;

/// PostgreSQL's binary array (`array_send`): number of dimensions (i32), a
/// has-nulls flag (i32), the element type's OID (u32), then per dimension
/// its length and lower bound (i32 each), then the elements in row-major
/// order, each as a length (i32, -1 for NULL) and that many bytes.
fn decode_array(ty: &Type, raw: &[u8]) -> Result<Cell, BoxError> {
    let Kind::Array(element) = ty.kind() else {
        return Err(format!("{} is not an array type", ty.name()).into());
    };
    let mut reader = ArrayReader { raw, at: 0 };
    let ndim = usize::try_from(reader.i32()?).map_err(|_| "negative array dimensions")?;
    if ndim > MAX_ARRAY_DIMS {
        return Err(format!("array with {ndim} dimensions").into());
    }
    let _has_nulls = reader.i32()?;
    let oid = reader.u32()?;
    if oid != element.oid() {
        return Err(format!("array element oid {oid}, expected {}", element.oid()).into());
    }
    let mut dims = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        let len = usize::try_from(reader.i32()?).map_err(|_| "negative array length")?;
        let _lower_bound = reader.i32()?;
        dims.push(len);
    }
    let cells = if dims.is_empty() {
        Vec::new()
    } else {
        reader.elements(element, &dims)?
    };
    if reader.at != raw.len() {
        return Err("trailing bytes after the array elements".into());
    }
    Ok(Cell::Array(cells))
}

struct ArrayReader<'a> {
    raw: &'a [u8],
    at: usize,
}

impl ArrayReader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], BoxError> {
        let end = self.at.checked_add(n).ok_or("truncated array")?;
        let bytes = self.raw.get(self.at..end).ok_or("truncated array")?;
        self.at = end;
        Ok(bytes)
    }

    fn i32(&mut self) -> Result<i32, BoxError> {
        i32::from_sql(&Type::INT4, self.take(4)?)
    }

    fn u32(&mut self) -> Result<u32, BoxError> {
        u32::from_sql(&Type::OID, self.take(4)?)
    }

    /// The elements of an array with dimension lengths `dims` (non-empty),
    /// nested one [`Cell::Array`] per dimension after the first.
    fn elements(&mut self, element: &Type, dims: &[usize]) -> Result<Vec<Cell>, BoxError> {
        let Some((&len, inner)) = dims.split_first() else {
            return Ok(Vec::new());
        };
        // every element takes at least its 4-byte length, so a length the
        // data cannot hold is refused before allocating for it
        if len > self.raw.len().saturating_sub(self.at) / 4 + 1 {
            return Err("array dimension longer than its data".into());
        }
        let mut cells = Vec::with_capacity(len);
        for _ in 0..len {
            let cell = if inner.is_empty() {
                match self.i32()? {
                    -1 => Cell::Null,
                    n => {
                        let n = usize::try_from(n).map_err(|_| "bad array element length")?;
                        decode(element, self.take(n)?)?
                    }
                }
            } else {
                Cell::Array(self.elements(element, inner)?)
            };
            cells.push(cell);
        }
        Ok(cells)
    }
}

enum Micros {
    Finite(NaiveDateTime),
    Infinite(&'static str),
}

fn decode_micros(raw: &[u8]) -> Result<Micros, BoxError> {
    let micros = i64::from_sql(&Type::INT8, raw)?;
    Ok(match micros {
        i64::MAX => Micros::Infinite("infinity"),
        i64::MIN => Micros::Infinite("-infinity"),
        _ => Micros::Finite(
            pg_epoch()
                .checked_add_signed(chrono::Duration::microseconds(micros))
                .ok_or("timestamp out of range")?,
        ),
    })
}

#[cfg(test)]
mod tests;
