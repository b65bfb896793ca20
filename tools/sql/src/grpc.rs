//! gRPC adapter: `quarry.v1.SqlService` over [`SqlTool`].
//!
//! Validates requests, builds the [`Caller`] (principal, request id,
//! deadline) from a request that passed the auth layer and passes it into
//! every domain call, calls the domain, and maps domain values and errors to
//! `quarry.v1` messages and `tonic::Status` (in [`status_of`], through the
//! error contract of `quarry-proto`).

use quarry_proto::status::bad_request;
use std::sync::Arc;

use chrono::{Datelike, Timelike};
use futures::future::BoxFuture;
use quarry_auth::Caller;
use quarry_proto::v1 as pb;
use quarry_proto::v1::sql_service_server::SqlService;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::{
    Cell, QueryResult, Rejection, RejectionKind, TableInfo, TableKind,
    chart::chart_hint,
    digest::{Digest, digest},
    error::SqlError,
    service::{ModelCall, SqlSource, SqlTool, Stage},
    sources::Sources,
};

/// Longest SQL text accepted over the wire, in bytes.
pub const MAX_SQL_BYTES: usize = 64 * 1024;
/// Longest question accepted, in characters.
pub const MAX_QUESTION_CHARS: usize = 4_000;
/// Scope a token needs to store golden pairs: a stored pair answers every
/// caller's matching questions and appears in prompts as an example.
pub const GOLDEN_WRITE_SCOPE: &str = "golden:write";

/// The tenant's token and cost budgets as the SQL tool sees them: a
/// `GenerateSql` is checked before its model calls and charged after them,
/// whether a client called it directly or an Ask did (the Ask leaves the
/// SQL tool's model calls to it). Implemented by the server over the
/// orchestrator's budgets, so this crate does not depend on them.
pub trait SqlBudget: std::fmt::Debug + Send + Sync {
    /// Checks `tenant`'s spend against its budgets.
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` with `RetryInfo` naming the budget spent.
    fn check<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<(), Status>>;

    /// Charges `amounts` (model calls, tokens, cost) to `tenant`; a
    /// failure is the implementation's to log.
    fn charge<'a>(
        &'a self,
        tenant: &'a str,
        amounts: quarry_db::usage::UsageAmounts,
    ) -> BoxFuture<'a, ()>;
}

/// The tonic service implementation.
#[derive(Debug, Clone)]
pub struct SqlGrpc {
    sources: Arc<Sources>,
    budget: Option<Arc<dyn SqlBudget>>,
}

impl SqlGrpc {
    /// Serves `tool` to every tenant (one shared source).
    pub fn new(tool: Arc<SqlTool>) -> Self {
        Self::with_sources(Arc::new(Sources::single(tool)))
    }

    /// Serves each tenant its source ([`Sources::for_caller`]).
    pub fn with_sources(sources: Arc<Sources>) -> Self {
        Self {
            sources,
            budget: None,
        }
    }

    /// Checks and charges every `GenerateSql`'s model calls against the
    /// caller's tenant's `budget`.
    pub fn with_budget(mut self, budget: Arc<dyn SqlBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    fn tool(&self, caller: &Caller) -> Result<&Arc<SqlTool>, Status> {
        self.sources.for_caller(caller).map_err(|e| status_of(&e))
    }
}

fn check_sql(sql: &str) -> Result<(), Status> {
    if sql.trim().is_empty() {
        return Err(bad_request("sql", "must not be empty"));
    }
    if sql.len() > MAX_SQL_BYTES {
        return Err(bad_request(
            "sql",
            format!("is {} bytes; the limit is {MAX_SQL_BYTES}", sql.len()),
        ));
    }
    Ok(())
}

fn rejection_kind(kind: RejectionKind) -> pb::RejectionKind {
    match kind {
        RejectionKind::Parse => pb::RejectionKind::ParseError,
        RejectionKind::Empty => pb::RejectionKind::Empty,
        RejectionKind::MultipleStatements => pb::RejectionKind::MultipleStatements,
        RejectionKind::NotAQuery => pb::RejectionKind::NotAQuery,
        RejectionKind::SelectInto => pb::RejectionKind::SelectInto,
        RejectionKind::DataModifyingCte => pb::RejectionKind::DataModifyingCte,
        RejectionKind::LockingClause => pb::RejectionKind::LockingClause,
        RejectionKind::DeniedFunction => pb::RejectionKind::ForbiddenFunction,
        RejectionKind::SchemaNotAllowed | RejectionKind::Forbidden => {
            pb::RejectionKind::ForbiddenRelation
        }
        RejectionKind::Ambiguous => pb::RejectionKind::Other,
        RejectionKind::TooLong | RejectionKind::TooComplex | RejectionKind::Unsupported => {
            pb::RejectionKind::Other
        }
    }
}

/// A rejection as its protocol message.
pub fn rejection_to_proto(rejection: &Rejection) -> pb::Rejection {
    let (line, column) = rejection.position.unwrap_or((0, 0));
    pb::Rejection {
        kind: rejection_kind(rejection.kind) as i32,
        message: rejection.message.clone(),
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    }
}

/// A domain error as a status: the one mapping of `quarry-proto`
/// ([`quarry_proto::status_of`]) applied to [`SqlError`]'s kinds and field
/// violations (see its [`ServiceError`](quarry_proto::ServiceError) impl).
pub fn status_of(error: &SqlError) -> Status {
    quarry_proto::status_of(error)
}

fn cell_to_value(cell: &Cell) -> pb::Value {
    use pb::value::Kind;
    let kind = match cell {
        Cell::Null => Kind::NullValue(0),
        Cell::Bool(b) => Kind::BoolValue(*b),
        Cell::Int(i) => Kind::Int64Value(*i),
        Cell::Float(f) => Kind::DoubleValue(*f),
        Cell::Decimal(s) => Kind::DecimalValue(s.clone()),
        Cell::Text(s) => Kind::TextValue(s.clone()),
        Cell::Bytes(b) => Kind::BytesValue(b.clone()),
        Cell::Date(d) => Kind::DateValue(pb::Date {
            year: d.year(),
            month: d.month() as i32,
            day: d.day() as i32,
        }),
        Cell::Timestamp(t) => Kind::TimestampValue(prost_types::Timestamp {
            seconds: t.and_utc().timestamp(),
            nanos: t.nanosecond().min(999_999_999) as i32,
        }),
        Cell::TimestampTz(t) => Kind::TimestampValue(prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.nanosecond().min(999_999_999) as i32,
        }),
        Cell::Time(t) => Kind::TextValue(crate::execute::time_text(t)),
        Cell::Interval {
            months,
            days,
            microseconds,
        } => Kind::TextValue(crate::execute::interval_text(*months, *days, *microseconds)),
        Cell::Array(_) => Kind::JsonValue(cell.to_json().to_string()),
        Cell::Json(v) => Kind::JsonValue(v.to_string()),
    };
    pb::Value { kind: Some(kind) }
}

/// A query result as its protocol message.
pub fn result_to_proto(result: &QueryResult) -> pb::RowSet {
    pb::RowSet {
        columns: result
            .columns
            .iter()
            .map(|c| pb::Column {
                name: c.name.clone(),
                type_name: c.type_name.clone(),
                pii: c.pii,
            })
            .collect(),
        rows: result
            .rows
            .iter()
            .map(|row| pb::Row {
                values: row.iter().map(cell_to_value).collect(),
            })
            .collect(),
        truncated: result.truncated,
    }
}

fn text_value(text: &str) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::TextValue(text.to_string())),
    }
}

/// A digest as its protocol message (min, max and top values as text).
pub fn digest_to_proto(d: &Digest) -> pb::ResultDigest {
    pb::ResultDigest {
        row_count: d.row_count,
        row_count_exact: d.row_count_exact,
        columns: d
            .columns
            .iter()
            .map(|c| pb::ColumnDigest {
                name: c.name.clone(),
                type_name: c.type_name.clone(),
                null_count: c.nulls,
                distinct_count: c.distinct,
                min: c.min.as_deref().map(text_value),
                max: c.max.as_deref().map(text_value),
                top_values: c
                    .top
                    .iter()
                    .map(|t| pb::ValueCount {
                        value: Some(text_value(&t.value)),
                        count: t.count,
                    })
                    .collect(),
            })
            .collect(),
        text: d.to_text(),
    }
}

/// Digest and chart spec of a result.
pub fn digest_and_chart(result: &QueryResult) -> (pb::ResultDigest, String) {
    let d = digest(result, result.total_rows);
    let chart = chart_hint(&result.columns, &result.rows)
        .map(|spec| spec.to_string())
        .unwrap_or_default();
    (digest_to_proto(&d), chart)
}

/// What `calls` spent, as charged to the tenant: model calls, tokens, cost.
pub fn model_call_amounts(calls: &[ModelCall]) -> quarry_db::usage::UsageAmounts {
    let tokens = |f: fn(&quarry_llm::Usage) -> u32| {
        calls
            .iter()
            .map(|c| i64::from(c.usage.as_ref().map_or(0, f)))
            .sum()
    };
    quarry_db::usage::UsageAmounts {
        model_calls: i64::try_from(calls.len()).unwrap_or(i64::MAX),
        prompt_tokens: tokens(|u| u.prompt_tokens),
        completion_tokens: tokens(|u| u.completion_tokens),
        cached_prompt_tokens: tokens(|u| u.cached_prompt_tokens),
        cost_usd: calls.iter().filter_map(|c| c.cost_usd).sum(),
        ..quarry_db::usage::UsageAmounts::default()
    }
}

/// The proto form of a result's [`CacheStatus`](crate::cache::CacheStatus).
pub fn result_cache_to_proto(status: crate::cache::CacheStatus) -> pb::ResultCache {
    match status {
        crate::cache::CacheStatus::Bypassed => pb::ResultCache::Unspecified,
        crate::cache::CacheStatus::Hit => pb::ResultCache::Hit,
        crate::cache::CacheStatus::Miss => pb::ResultCache::Miss,
    }
}

/// The model calls of one `GenerateSql`, numbered from 1 in order.
pub fn model_calls_to_proto(calls: &[ModelCall]) -> Vec<pb::ModelCallUsage> {
    calls
        .iter()
        .zip(1u32..)
        .map(|(call, step)| {
            let usage = call.usage.unwrap_or_default();
            pb::ModelCallUsage {
                step,
                prompt_tokens: u64::from(usage.prompt_tokens),
                completion_tokens: u64::from(usage.completion_tokens),
                total_tokens: u64::from(usage.total_tokens),
                cached_prompt_tokens: u64::from(usage.cached_prompt_tokens),
                cost_usd: call.cost_usd.unwrap_or(0.0),
                cost_known: call.cost_usd.is_some(),
                elapsed_ms: call.elapsed.as_millis() as u64,
                task: call.task.to_string(),
                model: call.model.clone(),
                elapsed_us: call.elapsed.as_micros() as u64,
                from_cache: usage.from_cache,
            }
        })
        .collect()
}

fn stage_to_proto(stage: Stage) -> pb::AttemptStage {
    match stage {
        Stage::Generate => pb::AttemptStage::Generate,
        Stage::Validate => pb::AttemptStage::Validate,
        Stage::Execute => pb::AttemptStage::Execute,
        Stage::Judge => pb::AttemptStage::Judge,
        Stage::Accepted => pb::AttemptStage::Accepted,
    }
}

fn table_to_proto(table: &TableInfo) -> pb::TableInfo {
    pb::TableInfo {
        schema: table.schema.clone(),
        name: table.name.clone(),
        kind: match table.kind {
            TableKind::Table | TableKind::PartitionedTable => "table",
            TableKind::View => "view",
            TableKind::MaterializedView => "materialized view",
            TableKind::ForeignTable => "foreign table",
        }
        .to_string(),
        comment: table.comment.clone().unwrap_or_default(),
        columns: table
            .columns
            .iter()
            .map(|c| pb::ColumnInfo {
                name: c.name.clone(),
                data_type: c.data_type.clone(),
                nullable: c.nullable,
                comment: c.comment.clone().unwrap_or_default(),
            })
            .collect(),
        primary_key: table.primary_key.clone(),
        foreign_keys: table
            .foreign_keys
            .iter()
            .map(|fk| pb::ForeignKey {
                columns: fk.columns.clone(),
                referenced_table: format!("{}.{}", fk.referenced_schema, fk.referenced_table),
                referenced_columns: fk.referenced_columns.clone(),
            })
            .collect(),
        estimated_rows: table
            .estimated_rows
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
    }
}

#[tonic::async_trait]
impl SqlService for SqlGrpc {
    #[instrument(skip(self, request), fields(tenant, subject, request_id))]
    async fn validate_sql(
        &self,
        request: Request<pb::ValidateSqlRequest>,
    ) -> Result<Response<pb::ValidateSqlResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        let sql = request.into_inner().sql;
        check_sql(&sql)?;
        let response = match self.tool(&caller)?.validate_async(&caller, &sql).await {
            Ok(query) => pb::ValidateSqlResponse {
                valid: true,
                rejection: None,
                rewritten_sql: query.shown_rewritten_sql(query.max_rows()),
            },
            Err(SqlError::Rejected(rejection)) => pb::ValidateSqlResponse {
                valid: false,
                rejection: Some(rejection_to_proto(&rejection)),
                rewritten_sql: String::new(),
            },
            Err(error) => return Err(status_of(&error)),
        };
        Ok(Response::new(response))
    }

    #[instrument(skip(self, request), fields(tenant, subject, request_id))]
    async fn execute_sql(
        &self,
        request: Request<pb::ExecuteSqlRequest>,
    ) -> Result<Response<pb::ExecuteSqlResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        let request = request.into_inner();
        check_sql(&request.sql)?;
        let result = self
            .tool(&caller)?
            .execute(&caller, &request.sql, u64::from(request.max_rows))
            .await
            .map_err(|e| status_of(&e))?;
        let (digest, chart_spec_json) = digest_and_chart(&result);
        Ok(Response::new(pb::ExecuteSqlResponse {
            result: Some(result_to_proto(&result)),
            elapsed_ms: result.elapsed.as_millis() as u64,
            elapsed_us: result.elapsed.as_micros() as u64,
            executed_sql: result.sql,
            digest: Some(digest),
            chart_spec_json,
            result_cache: result_cache_to_proto(result.cache) as i32,
        }))
    }

    #[instrument(skip(self, request), fields(tenant, subject, request_id))]
    async fn describe_schema(
        &self,
        request: Request<pb::DescribeSchemaRequest>,
    ) -> Result<Response<pb::DescribeSchemaResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        let request = request.into_inner();
        if request.question.chars().count() > MAX_QUESTION_CHARS {
            return Err(bad_request(
                "question",
                format!("is longer than {MAX_QUESTION_CHARS} characters"),
            ));
        }
        let tool = self.tool(&caller)?;
        if !request.question.trim().is_empty() {
            let (compact, full_tokens) = tool
                .schema_context(&caller, &request.question, request.max_tokens as usize)
                .await
                .map_err(|e| status_of(&e))?;
            return Ok(Response::new(pb::DescribeSchemaResponse {
                tables: Vec::new(),
                compact,
                full_tokens: u32::try_from(full_tokens).unwrap_or(u32::MAX),
            }));
        }
        let description = tool
            .describe(&caller, &request.schemas)
            .await
            .map_err(|e| status_of(&e))?;
        let (tables, compact) = description.as_ref();
        if request.tables.is_empty() {
            return Ok(Response::new(pb::DescribeSchemaResponse {
                tables: tables.iter().map(table_to_proto).collect(),
                compact: compact.clone(),
                full_tokens: 0,
            }));
        }
        // only the tables asked for, among those the caller may query
        let chosen: Vec<TableInfo> = tables
            .iter()
            .filter(|t| request.tables.contains(&t.qualified_name()))
            .cloned()
            .collect();
        Ok(Response::new(pb::DescribeSchemaResponse {
            tables: chosen.iter().map(table_to_proto).collect(),
            compact: crate::compact_description(&chosen),
            full_tokens: 0,
        }))
    }

    #[instrument(skip(self, request), fields(tenant, subject, request_id))]
    async fn generate_sql(
        &self,
        request: Request<pb::GenerateSqlRequest>,
    ) -> Result<Response<pb::GenerateSqlResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        let request = request.into_inner();
        if request.question.trim().is_empty() {
            return Err(bad_request("question", "must not be empty"));
        }
        if request.question.chars().count() > MAX_QUESTION_CHARS {
            return Err(bad_request(
                "question",
                format!("is longer than {MAX_QUESTION_CHARS} characters"),
            ));
        }
        if request.previous_sql.len() > MAX_SQL_BYTES {
            return Err(bad_request(
                "previous_sql",
                format!("is longer than {MAX_SQL_BYTES} bytes"),
            ));
        }
        let tool = self.tool(&caller)?;
        let tenant = &caller.principal.tenant;
        if let Some(budget) = &self.budget {
            budget.check(tenant).await?;
        }
        let generated = tool
            .generate(
                &caller,
                &request.question,
                &request.previous_sql,
                request.dry_run,
                u64::from(request.max_rows),
                request.golden_only,
            )
            .await
            .map_err(|e| status_of(&e))?;
        if let Some(budget) = &self.budget
            && !generated.model_calls.is_empty()
        {
            budget
                .charge(tenant, model_call_amounts(&generated.model_calls))
                .await;
        }
        let result_cache = generated
            .result
            .as_ref()
            .map_or(pb::ResultCache::Unspecified, |r| {
                result_cache_to_proto(r.cache)
            });
        let (result, digest, chart_spec_json, executed_sql, database_us) = match &generated.result {
            Some(rows) => {
                let (digest, chart) = digest_and_chart(rows);
                (
                    Some(result_to_proto(rows)),
                    Some(digest),
                    chart,
                    rows.sql.clone(),
                    rows.elapsed.as_micros() as u64,
                )
            }
            None => (None, None, String::new(), String::new(), 0),
        };
        Ok(Response::new(pb::GenerateSqlResponse {
            sql: generated.sql.unwrap_or_default(),
            source: match generated.source {
                SqlSource::Model => pb::SqlSource::Model,
                SqlSource::Golden => pb::SqlSource::Golden,
            } as i32,
            attempts: generated
                .attempts
                .into_iter()
                .map(|a| pb::SqlAttempt {
                    sql: a.sql,
                    error: a.error.unwrap_or_default(),
                    stage: stage_to_proto(a.stage) as i32,
                    row_count: a.row_count.unwrap_or(0),
                })
                .collect(),
            explanation: generated.explanation,
            assumptions: generated.assumptions,
            tables_used: generated.tables_used,
            result,
            digest,
            chart_spec_json,
            linking: generated.linking.map(|l| pb::SchemaLinking {
                tables: l.tables,
                context_tokens: u32::try_from(l.context_tokens).unwrap_or(u32::MAX),
                full_tokens: u32::try_from(l.full_tokens).unwrap_or(u32::MAX),
            }),
            executed_sql,
            model_calls: model_calls_to_proto(&generated.model_calls),
            database_us,
            result_cache: result_cache as i32,
        }))
    }

    #[instrument(skip(self, request), fields(tenant, subject, request_id))]
    async fn explain_sql(
        &self,
        request: Request<pb::ExplainSqlRequest>,
    ) -> Result<Response<pb::ExplainSqlResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        let sql = request.into_inner().sql;
        check_sql(&sql)?;
        let explained = self
            .tool(&caller)?
            .explain(&caller, &sql)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::ExplainSqlResponse {
            explanation: explained.text,
            source: if explained.by_model {
                pb::ExplanationSource::Model
            } else {
                pb::ExplanationSource::SyntaxTree
            } as i32,
            total_cost: explained.plan.total_cost,
            estimated_rows: explained.plan.estimated_rows,
            hints: explained
                .plan
                .hints
                .iter()
                .map(|h| pb::PlanHint {
                    kind: serde_json::to_value(h.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    message: h.message.clone(),
                })
                .collect(),
            node_types: explained.plan.node_types,
        }))
    }

    #[instrument(skip(self, request), fields(tenant, subject, request_id))]
    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        caller
            .grant
            .require(quarry_auth::scopes::AUDIT_READ)
            .map_err(Status::from)?;
        let request = request.into_inner();
        let limit = match request.limit {
            0 => 100,
            n => i64::from(n.min(1000)),
        };
        // this server's statements are listed as soon as they have run
        if !self.sources.flush_bookkeeping().await {
            tracing::warn!("audit entries still queued are missing from this listing");
        }
        let entries = self
            .sources
            .audit_log()
            .list(&caller.principal.tenant, limit, request.before_id)
            .await
            .map_err(Status::unavailable)?;
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    id: e.id,
                    at: e.at,
                    tenant: e.tenant,
                    subject: e.subject,
                    request_id: e.request_id,
                    tool: e.tool,
                    action: e.action,
                    outcome: e.outcome.as_str().to_owned(),
                    sql: e.sql.unwrap_or_default(),
                    rows: e.rows.unwrap_or_default(),
                    bytes: e.bytes.unwrap_or_default(),
                    duration_ms: e.duration_ms.unwrap_or_default(),
                    detail: e.detail.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    #[instrument(skip(self, request), fields(tenant, subject, request_id))]
    async fn add_golden_pair(
        &self,
        request: Request<pb::AddGoldenPairRequest>,
    ) -> Result<Response<pb::AddGoldenPairResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        caller
            .grant
            .require(GOLDEN_WRITE_SCOPE)
            .map_err(tonic::Status::from)?;
        let request = request.into_inner();
        if request.question.trim().is_empty() {
            return Err(bad_request("question", "must not be empty"));
        }
        if request.question.chars().count() > MAX_QUESTION_CHARS {
            return Err(bad_request(
                "question",
                format!("is longer than {MAX_QUESTION_CHARS} characters"),
            ));
        }
        check_sql(&request.sql)?;
        let (row_count, pairs) = self
            .tool(&caller)?
            .add_golden(&caller, request.question.trim(), &request.sql)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::AddGoldenPairResponse {
            row_count,
            pairs: u32::try_from(pairs).unwrap_or(u32::MAX),
        }))
    }
}
