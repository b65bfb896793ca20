//! The `query_database` tool: questions or SQL for the SQL tool
//! (`SqlService`). `{"question": "..."}` goes to `GenerateSql` (schema
//! linking, generation, validation, execution, judge), `{"sql": "..."}` to
//! `ExecuteSql`; the rows come back to the model as delimited data with a
//! digest of the whole result, and to the client cut to the preview. Cells
//! of columns the policy tags as PII (`Column.pii`) reach the model only as
//! placeholders, in the rows and in the digest.

use futures::future::BoxFuture;
use quarry_llm::{ToolCall, ToolSpec, pii::Pseudonymizer};
use quarry_proto::v1::{
    Citation, CitationKind, Column, ColumnDigest, ExecuteSqlRequest, GenerateSqlRequest,
    ModelCallUsage, ResultDigest, RowSet, SqlAttempt, SqlToolResult, Value,
    sql_service_client::SqlServiceClient, tool_result::Outcome, value::Kind,
};

use super::{ModelTool, ToolContext, ToolOutcome, sanitize};
use crate::{caller::AskCaller, render::value_text, transport::ToolChannel};

/// Name of the SQL tool as the model sees it.
pub const QUERY_DATABASE: &str = "query_database";

/// The SQL tool, reached through its gRPC client.
#[derive(Debug, Clone)]
pub struct SqlTool {
    client: SqlServiceClient<ToolChannel>,
    /// Rows of a result shown to the model.
    model_rows: usize,
    /// Characters per cell shown to the model.
    max_cell_chars: usize,
    /// Estimated tokens of rows shown to the model; 0 means no bound.
    result_tokens: usize,
}

/// What the SQL tool answered to one call: the full result (rows not yet
/// cut to the preview) or the error message for the model, and the model
/// calls the SQL tool made for it (also when it failed).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlAnswer {
    /// The result, or why there is none.
    pub result: Result<SqlToolResult, String>,
    /// The SQL tool's generation and judge calls.
    pub model_calls: Vec<ModelCallUsage>,
}

impl SqlTool {
    /// The tool over `client`, showing the model at most `model_rows` rows
    /// of a result and `max_cell_chars` characters of a cell.
    pub fn new(
        client: SqlServiceClient<ToolChannel>,
        model_rows: u32,
        max_cell_chars: usize,
    ) -> Self {
        Self {
            client,
            model_rows: model_rows as usize,
            max_cell_chars,
            result_tokens: 0,
        }
    }

    /// Bounds the rows of a result shown to the model to `tokens` estimated
    /// tokens (four characters a token; 0 means no bound): rows past it are
    /// left out, and the digest of the whole result stands for them.
    #[must_use]
    pub fn with_result_tokens(mut self, tokens: usize) -> Self {
        self.result_tokens = tokens;
        self
    }

    /// Runs one call's `arguments`: `{"question": "..."}` through
    /// `GenerateSql` (with `refines_previous`, starting from
    /// `cx.previous_sql`), `{"sql": "..."}` through `ExecuteSql`.
    pub async fn query(&self, arguments: &str, cx: ToolContext<'_>) -> SqlAnswer {
        let mut model_calls = Vec::new();
        let result = self.run(arguments, cx, &mut model_calls).await;
        SqlAnswer {
            result,
            model_calls,
        }
    }

    async fn run(
        &self,
        arguments: &str,
        cx: ToolContext<'_>,
        model_calls: &mut Vec<ModelCallUsage>,
    ) -> Result<SqlToolResult, String> {
        #[derive(serde::Deserialize)]
        struct Args {
            #[serde(default)]
            question: Option<String>,
            #[serde(default)]
            sql: Option<String>,
            #[serde(default)]
            refines_previous: bool,
        }
        let args: Args = serde_json::from_str(arguments).map_err(|e| {
            format!("arguments must be a JSON object {{\"question\": \"...\"}} or {{\"sql\": \"<one SELECT>\"}}: {e}")
        })?;
        let mut client = self.client.clone();
        let caller: &AskCaller = cx.caller;
        match (args.question, args.sql) {
            (_, Some(sql)) if !sql.trim().is_empty() => {
                let response = client
                    .execute_sql(caller.request(ExecuteSqlRequest { sql, max_rows: 0 }))
                    .await
                    .map_err(|status| status.message().to_string())?
                    .into_inner();
                let row_count = response.result.as_ref().map_or(0, |r| r.rows.len() as u64);
                Ok(SqlToolResult {
                    sql: response.executed_sql,
                    rows: response.result,
                    row_count,
                    attempts: vec![],
                    digest: response.digest,
                    chart_spec_json: response.chart_spec_json,
                    database_us: response.elapsed_us,
                    result_cache: response.result_cache,
                })
            }
            (Some(question), _) if !question.trim().is_empty() => {
                let response = client
                    .generate_sql(caller.request(GenerateSqlRequest {
                        question,
                        previous_sql: if args.refines_previous {
                            cx.previous_sql.unwrap_or_default().to_string()
                        } else {
                            String::new()
                        },
                        dry_run: false,
                        max_rows: 0,
                        golden_only: false,
                    }))
                    .await
                    .map_err(|status| status.message().to_string())?
                    .into_inner();
                model_calls.extend(response.model_calls.iter().cloned());
                if response.sql.is_empty() {
                    let trail: Vec<String> = response
                        .attempts
                        .iter()
                        .map(|a| format!("{} → {}", a.sql, a.error))
                        .collect();
                    return Err(format!(
                        "no sql could be produced: {}{}",
                        response.explanation,
                        if trail.is_empty() {
                            String::new()
                        } else {
                            format!("; attempts: {}", trail.join("; "))
                        }
                    ));
                }
                let row_count = response.result.as_ref().map_or(0, |r| r.rows.len() as u64);
                Ok(SqlToolResult {
                    sql: response.executed_sql,
                    rows: response.result,
                    row_count,
                    attempts: response.attempts,
                    digest: response.digest,
                    chart_spec_json: response.chart_spec_json,
                    database_us: response.database_us,
                    result_cache: response.result_cache,
                })
            }
            _ => Err("give either a non-empty `question` or a non-empty `sql`".to_string()),
        }
    }

    /// Shapes `answer` to call `call_id`: for the client, the result with
    /// its rows cut to `cx.preview_rows` (and `earlier_attempts`, those that
    /// produced the SQL beforehand in router mode, when it has none of its
    /// own), values as they are; for the model, the rows and digest as
    /// delimited data, cells of PII columns as `cx.pii`'s placeholders; one
    /// SQL citation on success. Also returns the full rows, or the error
    /// message.
    pub fn outcome(
        &self,
        call_id: &str,
        answer: SqlAnswer,
        earlier_attempts: Vec<SqlAttempt>,
        cx: ToolContext<'_>,
    ) -> (ToolOutcome, Result<RowSet, String>) {
        let preview_rows = cx.preview_rows;
        let mut sql_result = match answer.result {
            Ok(sql_result) => sql_result,
            Err(message) => {
                let mut outcome = ToolOutcome::failed(call_id, message.clone());
                outcome.model_calls = answer.model_calls;
                return (outcome, Err(message));
            }
        };
        if sql_result.attempts.is_empty() {
            sql_result.attempts = earlier_attempts;
        }
        let citation = Citation {
            kind: CitationKind::SqlRows as i32,
            call_id: call_id.to_string(),
            sql: sql_result.sql.clone(),
            source_id: String::new(),
        };
        let rows = sql_result.rows.clone().unwrap_or_default();
        if let Some(preview) = sql_result.rows.as_mut()
            && preview.rows.len() > preview_rows
        {
            preview.rows.truncate(preview_rows);
            preview.truncated = true;
        }
        let for_model = rows_for_model(
            call_id,
            &rows,
            sql_result.digest.as_ref(),
            RowBounds {
                rows: self.model_rows,
                cell_chars: self.max_cell_chars,
                tokens: self.result_tokens,
            },
            cx.pii,
        );
        let outcome = ToolOutcome {
            result: Outcome::Sql(sql_result),
            for_model,
            citations: vec![citation],
            model_calls: answer.model_calls,
        };
        (outcome, Ok(rows))
    }
}

impl ModelTool for SqlTool {
    fn name(&self) -> &str {
        QUERY_DATABASE
    }

    fn scope(&self) -> Option<&'static str> {
        Some(quarry_auth::scopes::SQL_QUERY)
    }

    fn spec<'a>(&'a self, _caller: &'a AskCaller) -> BoxFuture<'a, Option<ToolSpec>> {
        Box::pin(async move { Some(query_database_spec(self.model_rows)) })
    }

    fn call<'a>(&'a self, call: &'a ToolCall, cx: ToolContext<'a>) -> BoxFuture<'a, ToolOutcome> {
        Box::pin(async move {
            let answer = self.query(&call.arguments, cx).await;
            self.outcome(&call.id, answer, Vec::new(), cx).0
        })
    }
}

/// The `query_database` tool as offered to the model.
fn query_database_spec(model_rows: usize) -> ToolSpec {
    ToolSpec {
        name: QUERY_DATABASE.to_string(),
        description: format!(
            "Facts from the PostgreSQL database. Pass `question` (the SQL tool writes, checks and \
             runs the SQL) or `sql` (one read-only SELECT you wrote), not both. You see at most \
             {model_rows} rows and, past them, a digest of the whole result, so aggregate."
        ),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {
                "question": {
                    "type": "string",
                    "description": "A self-contained question in plain words."
                },
                "sql": {
                    "type": "string",
                    "description": "One SELECT, tables schema-qualified."
                },
                "refines_previous": {
                    "type": "boolean",
                    "description": "With `question`: it changes the previous turn's query, so start from its SQL."
                }
            },
            "additionalProperties": false
        }),
    }
}

/// How much of a result the model is shown.
#[derive(Debug, Clone, Copy)]
struct RowBounds {
    /// Rows at most.
    rows: usize,
    /// Characters per cell.
    cell_chars: usize,
    /// Estimated tokens (four characters a token) of the rows shown; 0
    /// means no bound.
    tokens: usize,
}

/// A SQL result as delimited data for the model: header with row count and
/// truncation, then one `|`-separated line per row, then the digest. Cells
/// of `pii` columns are `pii`'s placeholders (whole, never cut; `NULL`
/// stays), as are the digest's min, max and top values of those columns.
/// Rows go in while they fit `bounds`; the digest goes in when rows were
/// left out, standing for them (issue 16: rows beyond the budget become the
/// digest; a complete result's digest would only repeat what the model
/// reads — a count's was 90 of the 460 bytes of its tool result).
fn rows_for_model(
    call_id: &str,
    rows: &RowSet,
    digest: Option<&ResultDigest>,
    bounds: RowBounds,
    pii: &Pseudonymizer,
) -> String {
    let mut lines = Vec::new();
    let mut chars = 0usize;
    for row in rows.rows.iter().take(bounds.rows) {
        let cells: Vec<String> = row
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| match rows.columns.get(i).filter(|c| c.pii) {
                Some(column) => placeholder(pii, &column.name, v),
                None => {
                    let text = value_text(v);
                    let cut: String = text.chars().take(bounds.cell_chars).collect();
                    sanitize(&cut.replace('\n', " "))
                }
            })
            .collect();
        let line = cells.join(" | ");
        chars += line.chars().count() + 1;
        if bounds.tokens > 0 && chars.div_ceil(4) > bounds.tokens {
            break;
        }
        lines.push(line);
    }
    let shown = lines.len();
    let more = rows.truncated || rows.rows.len() > shown;
    let mut out = format!(
        "{}\nrows: {shown}{}\ncolumns: {}\n",
        super::open_tag(call_id, "ok"),
        if more {
            " shown; the result has more rows (truncated)"
        } else {
            " (all)"
        },
        rows.columns
            .iter()
            .map(|c| format!("{} ({})", sanitize(&c.name), sanitize(&c.type_name)))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    // a complete result is its own digest: the model reads every value
    if let Some(digest) = digest
        && !digest.text.is_empty()
        && more
    {
        out.push_str("digest of the whole result:\n");
        out.push_str(&digest_for_model(digest, &rows.columns, pii));
        out.push('\n');
    }
    out.push_str("</tool_result>");
    out
}

/// The placeholder of cell `value` of PII column `column`; `NULL` for a
/// null (nothing to hide, and `NULL` must not become a value searched for).
fn placeholder(pii: &Pseudonymizer, column: &str, value: &Value) -> String {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => "NULL".to_string(),
        Some(_) => {
            let text = value_text(value);
            let replaced = pii.redact_value(column, &text);
            // blank values come back as they are
            if replaced == text {
                sanitize(&replaced)
            } else {
                replaced
            }
        }
    }
}

/// The digest's text for the model, [`sanitize`]d. Without PII columns,
/// the SQL tool's text; with some, the same lines rebuilt from the
/// structured digest, with the min, max and top values of PII columns (by
/// position or name in `columns`) as placeholders.
fn digest_for_model(digest: &ResultDigest, columns: &[Column], pii: &Pseudonymizer) -> String {
    let tagged = |i: usize, c: &ColumnDigest| {
        columns.get(i).is_some_and(|col| col.pii)
            || columns.iter().any(|col| col.pii && col.name == c.name)
    };
    if !digest.columns.iter().enumerate().any(|(i, c)| tagged(i, c)) {
        return sanitize(&digest.text);
    }
    // the first line (row count) names no value
    let header = digest.text.split('\n').next().unwrap_or_default();
    let mut out = sanitize(header);
    out.push('\n');
    for (i, c) in digest.columns.iter().enumerate() {
        let is_pii = tagged(i, c);
        let shown = |v: &Value| {
            if is_pii {
                placeholder(pii, &c.name, v)
            } else {
                sanitize(&value_text(v))
            }
        };
        out.push_str(&sanitize(&format!(
            "- {} {}: nulls {}, distinct {}",
            c.name, c.type_name, c.null_count, c.distinct_count
        )));
        if let (Some(min), Some(max)) = (&c.min, &c.max) {
            out.push_str(&format!(", min {}, max {}", shown(min), shown(max)));
        }
        let top: Vec<String> = c
            .top_values
            .iter()
            .filter_map(|t| Some(format!("{}×{}", shown(t.value.as_ref()?), t.count)))
            .collect();
        if !top.is_empty() {
            out.push_str(&format!(", top {}", top.join(", ")));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_proto::v1::{Row, ValueCount};

    fn text(s: &str) -> Value {
        Value {
            kind: Some(Kind::TextValue(s.to_string())),
        }
    }

    fn bounds(rows: usize, cell_chars: usize, tokens: usize) -> RowBounds {
        RowBounds {
            rows,
            cell_chars,
            tokens,
        }
    }

    #[test]
    fn rows_past_the_token_bound_are_left_out_and_the_digest_stays() {
        let rows = RowSet {
            columns: vec![column("title", false)],
            // 20 rows of 39 characters and a newline: 10 tokens each
            rows: (0..20)
                .map(|i| Row {
                    values: vec![text(&format!("{i:0>39}"))],
                })
                .collect(),
            truncated: false,
        };
        let digest = ResultDigest {
            row_count: 20,
            row_count_exact: true,
            columns: vec![],
            text: "rows: 20 (exact)\n".into(),
        };
        let pii = Pseudonymizer::new();
        let bounded = rows_for_model("c1", &rows, Some(&digest), bounds(50, 100, 35), &pii);
        assert!(
            bounded.contains("rows: 3 shown; the result has more rows"),
            "{bounded}"
        );
        assert!(bounded.contains(&format!("{:0>39}", 2)), "{bounded}");
        assert!(!bounded.contains(&format!("{:0>39}", 3)), "{bounded}");
        assert!(
            bounded.contains("digest of the whole result:\nrows: 20 (exact)"),
            "{bounded}"
        );
        let unbounded = rows_for_model("c1", &rows, Some(&digest), bounds(50, 100, 0), &pii);
        assert!(unbounded.contains("rows: 20 (all)"), "{unbounded}");
    }

    fn column(name: &str, pii: bool) -> Column {
        Column {
            name: name.into(),
            type_name: "text".into(),
            pii,
        }
    }

    fn column_digest(name: &str, min: &str, max: &str, top: &str) -> ColumnDigest {
        ColumnDigest {
            name: name.into(),
            type_name: "text".into(),
            null_count: 0,
            distinct_count: 2,
            min: Some(text(min)),
            max: Some(text(max)),
            top_values: vec![ValueCount {
                value: Some(text(top)),
                count: 2,
            }],
        }
    }

    #[test]
    fn cells_and_digest_values_of_pii_columns_reach_the_model_as_placeholders() {
        let rows = RowSet {
            columns: vec![column("name", true), column("place", false)],
            rows: vec![
                Row {
                    values: vec![text("Blake, William"), text("London")],
                },
                Row {
                    values: vec![
                        Value {
                            kind: Some(Kind::NullValue(0)),
                        },
                        text("Paris"),
                    ],
                },
            ],
            // the digest covers rows past the two shown (Turner's)
            truncated: true,
        };
        let digest = ResultDigest {
            row_count: 3,
            row_count_exact: true,
            columns: vec![
                column_digest("name", "Blake, William", "Turner, J. M. W.", "Blake, William"),
                column_digest("place", "London", "Paris", "London"),
            ],
            text: "rows: 3 (exact)\n- name text: nulls 0, distinct 2, min Blake, William, max Turner, J. M. W., top Blake, William×2\n- place text: nulls 0, distinct 2, min London, max Paris, top London×2\n".into(),
        };
        let pii = Pseudonymizer::new();
        let text = rows_for_model("c1", &rows, Some(&digest), bounds(10, 100, 0), &pii);
        assert!(
            !text.contains("Blake") && !text.contains("Turner"),
            "{text}"
        );
        assert!(text.contains("<NAME_1> | London\nNULL | Paris\n"), "{text}");
        assert!(
            text.contains(
                "- name text: nulls 0, distinct 2, min <NAME_1>, max <NAME_2>, top <NAME_1>×2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "- place text: nulls 0, distinct 2, min London, max Paris, top London×2\n"
            ),
            "{text}"
        );
        assert_eq!(pii.restore("<NAME_2>"), "Turner, J. M. W.");

        // without PII columns the text is the SQL tool's
        let mut plain = rows.clone();
        plain.columns[0].pii = false;
        let text = rows_for_model(
            "c1",
            &plain,
            Some(&digest),
            bounds(10, 100, 0),
            &Pseudonymizer::new(),
        );
        assert!(text.contains("Blake, William | London"), "{text}");
        assert!(text.contains(&digest.text), "{text}");
    }

    #[test]
    fn a_complete_result_goes_without_its_digest() {
        let result = |n: usize, truncated: bool| RowSet {
            columns: vec![column("n", false)],
            rows: (0..n)
                .map(|i| Row {
                    values: vec![text(&i.to_string())],
                })
                .collect(),
            truncated,
        };
        let digest = ResultDigest {
            row_count: 1,
            row_count_exact: true,
            columns: vec![column_digest("n", "0", "0", "0")],
            text: "rows: 1 (exact)\n- n text: nulls 0, distinct 1, min 0, max 0\n".into(),
        };
        let pii = Pseudonymizer::new();
        let model_text =
            |rows: &RowSet| rows_for_model("c1", rows, Some(&digest), bounds(50, 100, 0), &pii);
        // complete: the rows say it all
        let complete = model_text(&result(50, false));
        assert!(
            !complete.contains("digest of the whole result"),
            "{complete}"
        );
        // rows left out (past the row bound, or by the SQL tool): the digest
        // stands for them
        let cut = model_text(&result(51, false));
        assert!(cut.contains("digest of the whole result"), "{cut}");
        let truncated = model_text(&result(1, true));
        assert!(
            truncated.contains("digest of the whole result"),
            "{truncated}"
        );
    }
}
