//! The SQL tool as one object: validation policy, executor, schema catalog and
//! SQL generation, configured once per process. The gRPC adapter
//! ([`crate::grpc`]) is a thin layer over this.

use std::{path::PathBuf, sync::Arc};

use deadpool_postgres::Pool;
use quarry_llm::{ChatModel, ChatRequest, Message};
use serde::Deserialize;
use tracing::{info, warn};

use crate::{
    ExecConfig, Executor, QueryResult, Rejection, TableInfo, ValidatedQuery, ValidationPolicy,
    compact_description, describe_schema,
    golden::{GoldenError, GoldenSet},
    validate,
};

/// Settings of the SQL tool.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SqlToolConfig {
    /// Schemas of the source database that callers may query and that
    /// `DescribeSchema` shows. Default `["public"]`.
    pub schemas: Vec<String>,
    /// Execution limits (timeout, row and byte caps).
    pub exec: ExecConfig,
    /// Golden question→SQL pairs (JSON array of `{question, sql}`); every
    /// pair's SQL is validated at start-up.
    pub golden_path: Option<PathBuf>,
    /// Minimum match score for a golden pair; see [`GoldenSet`]. Default 0.7.
    pub golden_threshold: f64,
    /// Model attempts per `GenerateSql` call before giving up. Default 3.
    pub max_attempts: u32,
}

impl Default for SqlToolConfig {
    fn default() -> Self {
        Self {
            schemas: vec!["public".to_string()],
            exec: ExecConfig::default(),
            golden_path: None,
            golden_threshold: GoldenSet::DEFAULT_THRESHOLD,
            max_attempts: 3,
        }
    }
}

/// Why the SQL tool could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The golden file could not be loaded.
    #[error(transparent)]
    Golden(#[from] GoldenError),
    /// A golden pair's SQL does not validate.
    #[error("golden pair {index} ({question:?}) is refused by the validator: {rejection}")]
    InvalidGolden {
        /// 0-based index in the golden file.
        index: usize,
        /// The pair's question.
        question: String,
        /// Why it was refused.
        rejection: Rejection,
    },
    /// The configuration is unusable.
    #[error("invalid sql tool config: {0}")]
    Config(String),
}

/// Where generated SQL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlSource {
    /// The configured model wrote it.
    Model,
    /// A golden pair supplied it.
    Golden,
}

/// One try at producing SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The SQL tried (empty if the model returned none).
    pub sql: String,
    /// Why it was not accepted; `None` when it validated.
    pub error: Option<String>,
}

/// The outcome of [`SqlTool::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Validated SQL, or `None` when none could be produced.
    pub sql: Option<String>,
    /// Where it came from.
    pub source: SqlSource,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
    /// The matched golden question, or why nothing was produced.
    pub explanation: String,
}

/// Errors of the tool's operations (beyond a rejection of the SQL itself).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The SQL was refused.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Execution failed.
    #[error(transparent)]
    Exec(#[from] crate::ExecError),
    /// The catalog could not be read.
    #[error(transparent)]
    Schema(#[from] crate::SchemaError),
    /// No connection for a catalog read.
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A requested schema is not one callers may see.
    #[error("schema {0:?} is not available; available: {1}")]
    UnknownSchema(String, String),
    /// The model failed.
    #[error("model error: {0}")]
    Model(#[from] quarry_llm::LlmError),
}

/// The SQL tool.
pub struct SqlTool {
    pool: Pool,
    executor: Executor,
    policy: ValidationPolicy,
    golden: GoldenSet,
    model: Option<Arc<dyn ChatModel>>,
    config: SqlToolConfig,
}

impl std::fmt::Debug for SqlTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlTool")
            .field("config", &self.config)
            .field("golden_pairs", &self.golden.len())
            .field("model", &self.model.as_ref().map(|_| "configured"))
            .finish_non_exhaustive()
    }
}

impl SqlTool {
    /// Builds the tool; loads and validates the golden pairs.
    ///
    /// # Errors
    /// [`StartError`] naming the golden file or the failing pair.
    pub fn new(
        pool: Pool,
        config: SqlToolConfig,
        model: Option<Arc<dyn ChatModel>>,
    ) -> Result<Self, StartError> {
        if config.schemas.is_empty() {
            return Err(StartError::Config(
                "schemas must name at least one schema".into(),
            ));
        }
        if config.exec.statement_timeout_ms == 0 {
            return Err(StartError::Config(
                "exec.statement_timeout_ms must be positive".into(),
            ));
        }
        let policy = ValidationPolicy {
            allowed_schemas: Some(config.schemas.clone()),
            max_rows: config.exec.max_rows,
            ..ValidationPolicy::default()
        };
        let golden = match &config.golden_path {
            Some(path) => GoldenSet::load(path)?,
            None => GoldenSet::default(),
        };
        for (index, pair) in golden.pairs().iter().enumerate() {
            validate(&pair.sql, &policy).map_err(|rejection| StartError::InvalidGolden {
                index,
                question: pair.question.clone(),
                rejection,
            })?;
        }
        info!(golden_pairs = golden.len(), schemas = ?config.schemas, "sql tool ready");
        let executor = Executor::new(pool.clone(), config.exec.clone());
        Ok(Self {
            pool,
            executor,
            policy,
            golden,
            model,
            config,
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &SqlToolConfig {
        &self.config
    }

    /// Validates `sql` against the tool's policy.
    ///
    /// # Errors
    /// The [`Rejection`] saying why it is refused.
    pub fn validate(&self, sql: &str) -> Result<ValidatedQuery, Rejection> {
        validate(sql, &self.policy)
    }

    /// Validates and executes `sql`, capped at `max_rows` (0: the configured
    /// cap; never above it). Returns the SQL as executed and its rows.
    ///
    /// # Errors
    /// [`ToolError::Rejected`] for refused SQL, [`ToolError::Exec`] when the
    /// database fails or a cap or the timeout is hit.
    pub async fn execute(
        &self,
        sql: &str,
        max_rows: u64,
    ) -> Result<(String, QueryResult), ToolError> {
        let mut policy = self.policy.clone();
        if max_rows > 0 {
            policy.max_rows = max_rows.min(self.config.exec.max_rows);
        }
        let query = validate(sql, &policy)?;
        let executed = query.rewritten_sql(self.config.exec.max_rows.min(query.max_rows()));
        let result = self.executor.execute(&query).await?;
        Ok((executed, result))
    }

    /// Tables of `schemas` (empty: all configured schemas) and their compact
    /// text form for prompts.
    ///
    /// # Errors
    /// [`ToolError::UnknownSchema`] for a schema outside the configured set;
    /// catalog errors.
    pub async fn describe(
        &self,
        schemas: &[String],
    ) -> Result<(Vec<TableInfo>, String), ToolError> {
        let schemas: Vec<String> = if schemas.is_empty() {
            self.config.schemas.clone()
        } else {
            for schema in schemas {
                if !self.config.schemas.contains(schema) {
                    return Err(ToolError::UnknownSchema(
                        schema.clone(),
                        self.config.schemas.join(", "),
                    ));
                }
            }
            schemas.to_vec()
        };
        let client = self.pool.get().await?;
        let tables = describe_schema(&**client, &schemas).await?;
        let compact = compact_description(&tables);
        Ok((tables, compact))
    }

    /// Turns `question` into validated SQL: with a model, a prompt with the
    /// schema, retried with the validator's error up to `max_attempts` times;
    /// without one, the best golden pair above the threshold. Never returns
    /// SQL that did not validate.
    ///
    /// # Errors
    /// Catalog errors; model transport errors are reported as a failed attempt.
    pub async fn generate(
        &self,
        question: &str,
        previous_sql: &str,
    ) -> Result<Generated, ToolError> {
        match &self.model {
            Some(model) => {
                self.generate_with_model(model.as_ref(), question, previous_sql)
                    .await
            }
            None => Ok(self.generate_from_golden(question)),
        }
    }

    fn generate_from_golden(&self, question: &str) -> Generated {
        let threshold = self.config.golden_threshold;
        let closest = self.golden.closest(question);
        match closest {
            Some(m) if m.score >= threshold => Generated {
                sql: Some(m.pair.sql.clone()),
                source: SqlSource::Golden,
                attempts: vec![Attempt {
                    sql: m.pair.sql.clone(),
                    error: None,
                }],
                explanation: m.pair.question.clone(),
            },
            other => {
                let closest = match other {
                    Some(m) => format!(
                        " The closest known question is “{}” (match {:.2}, below the {:.2} needed).",
                        m.pair.question, m.score, threshold
                    ),
                    None => String::new(),
                };
                Generated {
                    sql: None,
                    source: SqlSource::Golden,
                    attempts: vec![],
                    explanation: format!(
                        "No language model is configured, and the question matches none of the {} \
                         questions this server can answer without one.{closest} Configure a model \
                         to answer free-form questions.",
                        self.golden.len()
                    ),
                }
            }
        }
    }

    async fn generate_with_model(
        &self,
        model: &dyn ChatModel,
        question: &str,
        previous_sql: &str,
    ) -> Result<Generated, ToolError> {
        let (_, schema) = self.describe(&[]).await?;
        let mut prompt = format!(
            "You write one PostgreSQL SELECT statement that answers the user's question.\n\
             Use only these tables and columns (qualify tables with their schema):\n{schema}\n\
             Reply with the SQL only, in a ```sql code block. No INSERT/UPDATE/DELETE/DDL."
        );
        if let Some(m) = self.golden.closest(question) {
            prompt.push_str(&format!(
                "\n\nExample:\nQuestion: {}\nSQL: {}",
                m.pair.question, m.pair.sql
            ));
        }
        if !previous_sql.is_empty() {
            prompt.push_str(&format!(
                "\n\nThe question refines this earlier query; modify it:\n{previous_sql}"
            ));
        }
        let mut messages = vec![Message::system(prompt), Message::user(question)];
        let mut attempts = Vec::new();
        for _ in 0..self.config.max_attempts.max(1) {
            let response = match quarry_llm::chat(
                model,
                ChatRequest {
                    messages: messages.clone(),
                    tools: vec![],
                },
            )
            .await
            {
                Ok(response) => response,
                Err(error) => {
                    warn!(%error, "model call failed during sql generation");
                    attempts.push(Attempt {
                        sql: String::new(),
                        error: Some(format!("model error: {error}")),
                    });
                    break;
                }
            };
            let sql = extract_sql(&response.content);
            match self.validate(&sql) {
                Ok(_) => {
                    attempts.push(Attempt {
                        sql: sql.clone(),
                        error: None,
                    });
                    return Ok(Generated {
                        sql: Some(sql),
                        source: SqlSource::Model,
                        attempts,
                        explanation: String::new(),
                    });
                }
                Err(rejection) => {
                    attempts.push(Attempt {
                        sql: sql.clone(),
                        error: Some(rejection.message.clone()),
                    });
                    messages.push(Message::Assistant {
                        content: Some(response.content),
                        tool_calls: vec![],
                    });
                    messages.push(Message::user(format!(
                        "That SQL was refused ({}): {}. Write a corrected query.",
                        rejection.kind, rejection.message
                    )));
                }
            }
        }
        Ok(Generated {
            sql: None,
            source: SqlSource::Model,
            explanation: format!("no valid SQL after {} attempts", attempts.len()),
            attempts,
        })
    }
}

/// The SQL in a model reply: the first fenced code block if there is one
/// (```sql … ``` or ``` … ```), otherwise the whole reply, trimmed, with a
/// trailing `;` removed. The result is only ever used after validation.
pub fn extract_sql(reply: &str) -> String {
    let body = match reply.find("```") {
        Some(start) => {
            let after = &reply[start + 3..];
            let after = after
                .strip_prefix("sql")
                .or_else(|| after.strip_prefix("SQL"))
                .unwrap_or(after);
            match after.find("```") {
                Some(end) => &after[..end],
                None => after,
            }
        }
        None => reply,
    };
    body.trim().trim_end_matches(';').trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::extract_sql;

    #[test]
    fn extracts_fenced_or_bare_sql() {
        assert_eq!(
            extract_sql("Here:\n```sql\nSELECT 1;\n```\nDone"),
            "SELECT 1"
        );
        assert_eq!(extract_sql("```\nselect 2\n```"), "select 2");
        assert_eq!(extract_sql("  SELECT 3;  "), "SELECT 3");
        assert_eq!(extract_sql("```sql\nSELECT 4"), "SELECT 4");
    }
}
