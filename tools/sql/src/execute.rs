//! Read-only execution of validated queries with row, byte and time caps.
//!
//! [`Executor::execute`] takes a connection from the pool and, for each query:
//!
//! 1. opens a `READ ONLY` transaction (`BEGIN READ ONLY`), so PostgreSQL
//!    itself refuses any write the validator might have missed;
//! 2. `SET LOCAL statement_timeout` to [`ExecConfig::statement_timeout_ms`]
//!    and, when the query was validated against a schema restriction,
//!    `SET LOCAL search_path` to those schemas (then `pg_catalog`, `pg_temp`);
//!    both end with the transaction;
//! 3. prepares [`ValidatedQuery::rewritten_sql`] with a limit of
//!    `max_rows + 1`, binds it to a portal and fetches
//!    [`ExecConfig::fetch_batch`] rows at a time, stopping after `max_rows`
//!    rows (then [`QueryResult::truncated`] is set) or when the cumulative cell
//!    size passes [`ExecConfig::max_bytes`] — the whole result is never held
//!    beyond the caps;
//! 4. rolls back.
//!
//! PostgreSQL applies `statement_timeout` to each protocol `Execute` message
//! (one per batch), so the executor also enforces the same budget on the
//! whole call and cancels the server-side query when it runs out.
//!
//! Values are decoded from PostgreSQL's binary format into [`Cell`]s. Columns
//! of types without a native mapping (intervals, arrays, ranges, network
//! addresses, composite types, …) are cast to `text` by the server: the
//! statement is prepared once, and if such a column exists it is prepared
//! again as `SELECT c1, c2::text, … FROM (<query>) AS quarry_r(c1, c2, …)`.

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use deadpool_postgres::{Pool, PoolError};
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Kind, Type};
use tokio_postgres::{NoTls, Row};

use crate::validate::ValidatedQuery;

/// Limits for one query execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            statement_timeout_ms: 10_000,
            max_rows: 1_000,
            max_bytes: 4 * 1024 * 1024,
            fetch_batch: 256,
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
    /// `json`, `jsonb`.
    Json(serde_json::Value),
}

impl Cell {
    /// The value as JSON, for prompts and digests: numbers stay numbers
    /// (decimals as strings to keep precision), bytes become `\x…` hex,
    /// timestamps RFC 3339.
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
            Cell::Json(v) => v.clone(),
        }
    }
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
    /// Approximate size of the returned cells, in bytes (see [`ExecConfig::max_bytes`]).
    pub bytes: usize,
    /// Wall time of the execution, connection checkout included.
    pub elapsed: Duration,
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
    #[error("no database connection available: {0}")]
    Pool(#[from] PoolError),
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
    #[error("database connection error: {0}")]
    Connection(#[source] tokio_postgres::Error),
}

impl ExecError {
    fn from_pg(error: tokio_postgres::Error, timeout_ms: u64) -> Self {
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
            _ => None,
        }
    }
}

/// Runs validated queries on a pool of connections to the source database.
#[derive(Clone)]
pub struct Executor {
    pool: Pool,
    config: ExecConfig,
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
    pub fn new(pool: Pool, config: ExecConfig) -> Self {
        Self { pool, config }
    }

    /// The limits in force.
    pub fn config(&self) -> &ExecConfig {
        &self.config
    }

    /// Run `query` read-only with the configured caps. The row cap is the
    /// smaller of [`ExecConfig::max_rows`] and [`ValidatedQuery::max_rows`].
    pub async fn execute(&self, query: &ValidatedQuery) -> Result<QueryResult, ExecError> {
        let max_rows = self.config.max_rows.min(query.max_rows());
        let sql = query.rewritten_sql(max_rows);
        self.run_sql(&sql, query.allowed_schemas(), max_rows).await
    }

    /// Run `sql` as given inside the guarded transaction. Not public: SQL
    /// reaches the database only through [`validate`](crate::validate);
    /// tests use it to show that the transaction holds on its own.
    pub(crate) async fn run_sql(
        &self,
        sql: &str,
        search_path: Option<&[String]>,
        max_rows: u64,
    ) -> Result<QueryResult, ExecError> {
        let started = Instant::now();
        let timeout_ms = self.config.statement_timeout_ms.max(1);
        let budget = Duration::from_millis(timeout_ms);
        let mut client = self.pool.get().await?;
        let cancel = client.cancel_token();
        let run = run_in_transaction(&mut client, sql, search_path, max_rows, &self.config);
        match tokio::time::timeout(budget, run).await {
            Ok(Ok(mut result)) => {
                result.elapsed = started.elapsed();
                Ok(result)
            }
            Ok(Err(error)) => Err(error),
            Err(_elapsed) => {
                // the transaction was dropped mid-flight; stop the server
                // work so the connection is usable again (best effort)
                tokio::spawn(async move {
                    if let Err(error) = cancel.cancel_query(NoTls).await {
                        tracing::warn!(%error, "failed to cancel timed-out query");
                    }
                });
                Err(ExecError::Timeout { timeout_ms })
            }
        }
    }
}

/// Whether values of `ty` are decoded natively (else they are cast to text).
fn decodes_natively(ty: &Type) -> bool {
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
            | Type::JSON
            | Type::JSONB
            | Type::BYTEA
            | Type::UUID
    ) || matches!(ty.kind(), Kind::Enum(_))
        || ty.name() == "citext"
}

/// `"name"` quoted as a PostgreSQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn run_in_transaction(
    client: &mut deadpool_postgres::Object,
    sql: &str,
    search_path: Option<&[String]>,
    max_rows: u64,
    config: &ExecConfig,
) -> Result<QueryResult, ExecError> {
    let timeout_ms = config.statement_timeout_ms.max(1);
    let pg = |e| ExecError::from_pg(e, timeout_ms);
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(pg)?;
    let mut settings = format!("SET LOCAL statement_timeout = {timeout_ms}");
    if let Some(schemas) = search_path {
        let mut path: Vec<String> = schemas.iter().map(|s| quote_ident(s)).collect();
        path.push("pg_catalog".into());
        path.push("pg_temp".into());
        settings.push_str(&format!("; SET LOCAL search_path = {}", path.join(", ")));
    }
    tx.batch_execute(&settings).await.map_err(pg)?;

    let statement = tx.prepare(sql).await.map_err(pg)?;
    let columns: Vec<Column> = statement
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            type_name: c.type_().name().to_owned(),
        })
        .collect();
    let statement = if statement
        .columns()
        .iter()
        .all(|c| decodes_natively(c.type_()))
    {
        statement
    } else {
        let aliases: Vec<String> = (1..=columns.len()).map(|i| format!("c{i}")).collect();
        let select: Vec<String> = statement
            .columns()
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
        let wrapped = format!(
            "SELECT {} FROM ({sql}) AS quarry_r({})",
            select.join(", "),
            aliases.join(", ")
        );
        tx.prepare(&wrapped).await.map_err(pg)?
    };

    let portal = tx.bind(&statement, &[]).await.map_err(pg)?;
    let batch = i32::try_from(config.fetch_batch.max(1)).unwrap_or(i32::MAX);
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut truncated = false;
    loop {
        // never ask for more than one row past the cap
        let wanted = max_rows.saturating_add(1).saturating_sub(rows.len() as u64);
        let ask = i32::try_from(wanted).unwrap_or(i32::MAX).min(batch);
        let fetched = tx.query_portal(&portal, ask).await.map_err(pg)?;
        let exhausted = fetched.len() < usize::try_from(ask).unwrap_or(usize::MAX);
        for row in &fetched {
            if rows.len() as u64 >= max_rows {
                truncated = true;
                break;
            }
            let (cells, size) = decode_row(row, &columns)?;
            bytes += size;
            if bytes > config.max_bytes {
                return Err(ExecError::TooLarge {
                    max_bytes: config.max_bytes,
                });
            }
            rows.push(cells);
        }
        if truncated || exhausted {
            break;
        }
    }
    tx.rollback().await.map_err(pg)?;
    Ok(QueryResult {
        columns,
        rows,
        truncated,
        bytes,
        elapsed: Duration::ZERO,
    })
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

fn decode(ty: &Type, raw: &[u8]) -> Result<Cell, BoxError> {
    Ok(match *ty {
        Type::BOOL => Cell::Bool(bool::from_sql(ty, raw)?),
        Type::INT2 => Cell::Int(i16::from_sql(ty, raw)?.into()),
        Type::INT4 => Cell::Int(i32::from_sql(ty, raw)?.into()),
        Type::INT8 => Cell::Int(i64::from_sql(ty, raw)?),
        Type::OID => Cell::Int(u32::from_sql(ty, raw)?.into()),
        Type::FLOAT4 => Cell::Float(f32::from_sql(ty, raw)?.into()),
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
