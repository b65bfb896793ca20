//! Router mode's SQL pipelines: golden (or tool-written) SQL, the SQL the
//! SQL tool writes for the routing model's sub-question, and a follow-up
//! that narrows the previous turn's SQL; each runs as a `query_database`
//! call and its rows answer.

use quarry_proto::v1::{
    AnswerStatus, AskMode, DescribeSchemaRequest, GenerateSqlRequest, GenerateSqlResponse,
    SqlAttempt, SqlSource,
};
use tracing::warn;

use crate::{
    assistant::run::{Ending, Gone, Run},
    refine,
    render::{markdown_table, value_text},
    tools::sql::QUERY_DATABASE,
};

impl Run {
    /// Golden SQL matched (or, with a model behind the SQL tool, SQL was
    /// written): run it and answer from its rows.
    pub(super) async fn known_sql(
        &mut self,
        generated: GenerateSqlResponse,
        why: &str,
    ) -> Result<Ending, Gone> {
        let golden = generated.source == SqlSource::Golden as i32;
        let (route, reason) = if golden {
            (
                "golden_sql",
                format!(
                    "{why}; the question matches the golden question “{}”",
                    generated.explanation
                ),
            )
        } else {
            ("sql", format!("{why}; the SQL tool wrote a query"))
        };
        self.route(AskMode::Router, route, reason).await?;
        let intro = if golden {
            format!("Answer to the known question “{}”", generated.explanation)
        } else {
            "Result of the query the SQL tool wrote".to_string()
        };
        self.answer_from_sql(generated.sql, generated.attempts, &intro)
            .await
    }

    /// Router mode's SQL pipeline (chosen by the routing model): the SQL
    /// tool writes SQL for `sub_question` (dry run), which then runs and
    /// answers; returns whether rows came back. When no SQL could be
    /// written or it failed, says so in the answer.
    pub(super) async fn sql_pipeline(&mut self, sub_question: &str) -> Result<bool, Gone> {
        let mut sql = self.assistant.sql.clone();
        let generated = sql
            .generate_sql(self.caller.request(GenerateSqlRequest {
                question: sub_question.to_string(),
                previous_sql: String::new(),
                dry_run: true,
                max_rows: 0,
                golden_only: false,
            }))
            .await;
        match generated {
            Ok(response) => {
                let generated = response.into_inner();
                self.accounting.account_calls(generated.model_calls.clone());
                if generated.sql.is_empty() {
                    self.delta(&format!(
                        "The SQL tool could not write a query for “{sub_question}”: {}.",
                        generated.explanation
                    ))
                    .await?;
                    return Ok(false);
                }
                let intro = format!("Result of the query the SQL tool wrote for “{sub_question}”");
                let ending = self
                    .answer_from_sql(generated.sql, generated.attempts, &intro)
                    .await?;
                Ok(ending.status == AnswerStatus::Answered)
            }
            Err(status) => {
                warn!(error = %status.message(), "generate_sql failed");
                self.delta(&format!(
                    "The SQL tool failed for “{sub_question}”: {}.",
                    status.message()
                ))
                .await?;
                Ok(false)
            }
        }
    }

    /// Router mode, a follow-up: `refinement` applied to `previous` (the
    /// last turn's SQL) over the caller's schema; the narrowed query runs
    /// and its rows answer (route `refine_sql`). When it cannot be applied,
    /// says why (unanswered).
    pub(super) async fn refine_previous(
        &mut self,
        previous: String,
        refinement: refine::Refinement,
        why: &str,
    ) -> Result<Ending, Gone> {
        let described = refinement.describe();
        let reason =
            format!("{why}; a follow-up that narrows the previous turn's query ({described})");
        self.route(AskMode::Router, "refine_sql", reason).await?;
        let mut sql = self.assistant.sql.clone();
        let tables = match sql
            .describe_schema(self.caller.request(DescribeSchemaRequest::default()))
            .await
        {
            Ok(schema) => schema.into_inner().tables,
            Err(status) => {
                self.delta(&format!(
                    "I could not read the database schema to narrow the previous query: {}",
                    status.message()
                ))
                .await?;
                return Ok(Ending::with(AnswerStatus::Failed));
            }
        };
        match refine::apply(&previous, &refinement, &tables) {
            Ok(refined) => {
                let intro = format!("The previous result with {described}");
                self.answer_from_sql(refined, Vec::new(), &intro).await
            }
            Err(message) => {
                self.delta(&format!(
                    "This looks like a follow-up to the previous question ({described}), but I could not apply it to the previous query: {message}. Without a model, follow-ups can add a row limit (“top 10 only”) or a year filter (“only works acquired after 2000”)."
                ))
                .await?;
                Ok(Ending::with(AnswerStatus::Unanswered))
            }
        }
    }

    /// Runs `sql` as a `query_database` call (`call_1`) and answers from its
    /// rows, introduced by `intro`: one value inline, else a table of the
    /// preview rows. `attempts` are those that produced the SQL.
    async fn answer_from_sql(
        &mut self,
        sql: String,
        attempts: Vec<SqlAttempt>,
        intro: &str,
    ) -> Result<Ending, Gone> {
        let call = self.router_call(QUERY_DATABASE, &serde_json::json!({ "sql": sql }));
        let tool = self.assistant.sql_tool.clone();
        let started = self.tool_started(&call).await?;
        let answer = tool.query(&call.arguments, self.tool_context()).await;
        let (outcome, rows) = tool.outcome(&call.id, answer, attempts, self.tool_context());
        self.tool_finished(&call, outcome.result, outcome.model_calls, started)
            .await?;
        self.citations.extend(outcome.citations);
        let rows = match rows {
            Ok(rows) => rows,
            Err(message) => {
                self.delta(&format!(
                    "The query for this question failed ({message}), so I have no answer."
                ))
                .await?;
                return Ok(Ending::with(AnswerStatus::Failed));
            }
        };
        let mut lines = Vec::new();
        match (rows.rows.len(), rows.columns.len()) {
            (0, _) => lines.push(format!("{intro}: the query returned no rows.")),
            (1, 1) if !rows.rows[0].values.is_empty() => lines.push(format!(
                "{intro}: {} = {}.",
                rows.columns[0].name,
                value_text(&rows.rows[0].values[0])
            )),
            (n, _) => {
                let more = if rows.truncated {
                    " (more rows exist than shown)"
                } else {
                    ""
                };
                lines.push(format!("{intro} — {n} rows{more}:"));
                lines.push(String::new());
                lines.extend(markdown_table(
                    &rows,
                    self.preview_rows.max(1),
                    self.assistant.config.max_cell_chars,
                ));
                if n > self.preview_rows.max(1) {
                    lines.push(format!("… and {} more rows.", n - self.preview_rows.max(1)));
                }
            }
        }
        for (i, line) in lines.iter().enumerate() {
            let text = if i + 1 < lines.len() {
                format!("{line}\n")
            } else {
                line.clone()
            };
            self.delta(&text).await?;
        }
        Ok(Ending::with(AnswerStatus::Answered))
    }
}
