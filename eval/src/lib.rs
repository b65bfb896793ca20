//! `quarry eval sql`: the text-to-SQL tool measured on a folder in Spider's
//! format (Yu et al., "Spider: A Large-Scale Human-Labeled Dataset for
//! Complex and Cross-Domain Semantic Parsing and Text-to-SQL Task", EMNLP
//! 2018).
//!
//! [`run_sql_eval`] loads every database the questions use into PostgreSQL
//! (schema `spider_<db_id>`, see [`dataset`]), converts the gold SQL from
//! SQLite to PostgreSQL (see [`convert`]) unless it is PostgreSQL already, and
//! measures, per question:
//!
//! - **schema linking**: the tables and columns the gold query reads (aliases
//!   resolved on the AST, subqueries included, `*` naming no column) against
//!   those [`SchemaIndex::link`] chooses for the question;
//! - **validator false rejects**: gold SQL that [`quarry_sql::validate`]
//!   refuses under a policy allowing exactly the database's schema (gold SQL
//!   is read-only and legitimate, so every refusal is a false reject);
//! - **oracle pipeline check** (databases with data only): the gold query run
//!   directly (read-only transaction, `search_path` set to the schema, as the
//!   executor does) against the same query through validate →
//!   [`ValidatedQuery::rewritten_sql`](quarry_sql::ValidatedQuery::rewritten_sql)
//!   → [`Executor::execute`] with a cap of [`ORACLE_MAX_ROWS`] rows; results
//!   are compared by [`compare::compare`].
//!
//! The figures ([`SqlEvalReport`]) are defined there, field by field.
//!
//! `quarry eval search` lives in [`search`]; `quarry eval tokens` (what
//! agentic mode sends the model, per call) in [`tokens`]; `quarry eval
//! peers` (those request bodies next to Python SQL agents') in [`peers`].

pub mod beir;
pub mod compare;
pub mod convert;
pub mod dataset;
pub mod loo;
pub mod peers;
pub mod search;
pub mod tokens;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quarry_llm::embed::{Embedder, EmbeddingConfig, embedder_from_config};
use quarry_sql::linking::{LinkingConfig, SchemaIndex, ValueIndex};
use quarry_sql::{ExecConfig, Executor, ValidationPolicy, describe_schema, validate};
use serde_json::json;
use tokio_postgres::SimpleQueryMessage;
use tracing::info;

use compare::{Comparison, Value};
use dataset::{Dataset, LoadReport, schema_name};

/// Rows the pipeline may return in the oracle check; a larger result is
/// declared truncated and left out of the match rate.
pub const ORACLE_MAX_ROWS: u64 = 10_000;

/// `statement_timeout` of both runs of a gold query, in milliseconds.
pub const ORACLE_TIMEOUT_MS: u64 = 30_000;

/// Most distinct values per text column in the linking value index.
pub const VALUE_INDEX_MAX_DISTINCT: usize = 50;

/// The SQL dialect of a dataset's gold queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GoldDialect {
    /// Spider's own: SQLite; converted before use.
    Sqlite,
    /// PostgreSQL already; used as is.
    Postgres,
}

/// What to evaluate and where.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Folder with `tables.json`, `dev.json`, optionally `database/`.
    pub dataset: PathBuf,
    /// Dialect of the gold SQL.
    pub gold_dialect: GoldDialect,
    /// PostgreSQL to load into and query (needs `CREATE` on the database).
    pub database_url: String,
    /// Only the first this many questions (and the databases they use).
    pub limit: Option<usize>,
    /// Rank schema elements by embedding similarity too (local MiniLM, model
    /// directory from `QUARRY_MODEL_DIR` or `dev/model.sh`'s default).
    pub embeddings: bool,
}

/// Why the evaluation could not run (per-question failures are figures, not
/// errors).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A dataset file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The dataset is malformed (message names the file and entry).
    #[error("{0}")]
    Dataset(String),
    /// PostgreSQL refused a load or catalog step.
    #[error("{context}: {}", quarry_db::error_text(source))]
    Database {
        /// What was being done, naming the database.
        context: String,
        /// The error.
        source: tokio_postgres::Error,
    },
    /// Reading a loaded schema failed.
    #[error("database {db_id}: cannot describe schema: {source}")]
    Schema {
        /// The Spider database.
        db_id: String,
        /// The error.
        source: quarry_sql::SchemaError,
    },
    /// The embedding model failed.
    #[error("embeddings: {0}")]
    Embedding(String),
    /// Configuration (database URL, pool).
    #[error("{0}")]
    Config(String),
    /// A blocking task panicked or was cancelled.
    #[error("eval worker failed: {0}")]
    Worker(String),
}

/// Result with [`EvalError`].
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// `database.url` from the configuration file and `QUARRY__DATABASE__URL`,
/// without requiring the rest of the configuration (no auth section needed
/// to evaluate).
///
/// # Errors
/// The file or environment does not parse.
pub fn configured_database_url(path: Option<&std::path::Path>) -> anyhow::Result<String> {
    let database: quarry_server::config::DatabaseConfig = quarry_server::Config::figment(
        path,
        figment::providers::Env::prefixed(quarry_server::config::ENV_PREFIX).split("__"),
    )
    .extract_inner("database")
    .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    Ok(database.url)
}

/// A gold query the validator refused.
#[derive(Debug, Clone, PartialEq)]
pub struct FalseReject {
    /// Index of the question in `dev.json`.
    pub index: usize,
    /// Its database.
    pub db_id: String,
    /// The SQL that was validated (after conversion).
    pub sql: String,
    /// The rejection kind (`parse`, `denied_function`, …).
    pub kind: String,
    /// The validator's message.
    pub message: String,
}

/// A question whose gold query failed somewhere, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Index of the question in `dev.json`.
    pub index: usize,
    /// Its database.
    pub db_id: String,
    /// The SQL concerned (after conversion).
    pub sql: String,
    /// What went wrong.
    pub reason: String,
}

/// Figures for one database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbFigures {
    /// Spider `db_id`.
    pub db_id: String,
    /// Whether rows were loaded from a SQLite file.
    pub with_data: bool,
    /// Questions on this database.
    pub questions: usize,
    /// Sum of per-question table recall (over `table_recall_n` questions).
    table_recall_sum: f64,
    table_recall_n: usize,
    column_recall_sum: f64,
    column_recall_n: usize,
    token_share_sum: f64,
    token_share_n: usize,
    /// Gold queries the validator refused.
    pub false_rejects: usize,
    /// Gold queries PostgreSQL refused when run directly.
    pub gold_not_executable: usize,
    /// Gold queries run both ways and compared (truncated ones excluded).
    pub oracle_executed: usize,
    /// Of those, equal results.
    pub oracle_matches: usize,
    /// Pipeline results declared truncated at [`ORACLE_MAX_ROWS`].
    pub truncated: usize,
    /// Load details.
    pub load: LoadReport,
}

fn mean(sum: f64, n: usize) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

impl DbFigures {
    /// Mean table recall on this database.
    pub fn table_recall(&self) -> Option<f64> {
        mean(self.table_recall_sum, self.table_recall_n)
    }
    /// Mean column recall on this database.
    pub fn column_recall(&self) -> Option<f64> {
        mean(self.column_recall_sum, self.column_recall_n)
    }
    /// Mean context token share on this database.
    pub fn context_token_share(&self) -> Option<f64> {
        mean(self.token_share_sum, self.token_share_n)
    }
    /// Oracle match rate on this database.
    pub fn oracle_match_rate(&self) -> Option<f64> {
        (self.with_data && self.oracle_executed > 0)
            .then(|| self.oracle_matches as f64 / self.oracle_executed as f64)
    }
}

/// The figures of one evaluation run.
///
/// Linking figures are macro averages over questions (each question weighs
/// the same, whatever its database):
/// - `table_recall` = mean over questions of |gold tables ∩ linked tables| /
///   |gold tables|;
/// - `column_recall` = mean over questions whose gold query names at least
///   one column of |gold columns ∩ linked columns| / |gold columns|
///   (`SELECT count(*) FROM t` names none and is left out);
/// - `context_token_share` = mean over questions of the linked context's
///   tokens / the whole schema description's tokens (both by
///   [`quarry_sql::linking::estimate_tokens`]); 1.0 when the schema went in
///   whole.
///
/// `false_rejects` counts gold queries refused by the validator, over all
/// questions. `oracle_match_rate` = matches / compared, where compared are the
/// gold queries that PostgreSQL executes directly, on databases with data, and
/// whose pipeline result was not declared truncated; a pipeline refusal or
/// error counts as a mismatch. `None` when no database had data.
#[derive(Debug, Clone, Default)]
pub struct SqlEvalReport {
    /// Questions evaluated.
    pub questions: usize,
    /// See the type's docs.
    pub table_recall: Option<f64>,
    /// See the type's docs.
    pub column_recall: Option<f64>,
    /// Questions in the column recall average.
    pub column_recall_questions: usize,
    /// See the type's docs.
    pub context_token_share: Option<f64>,
    /// Questions linked with the whole schema (small schema or nothing matched).
    pub whole_schema: usize,
    /// Gold queries the validator refused.
    pub false_rejects: Vec<FalseReject>,
    /// See the type's docs.
    pub oracle_match_rate: Option<f64>,
    /// Gold queries compared in the oracle check.
    pub oracle_executed: usize,
    /// Of those, equal.
    pub oracle_matches: usize,
    /// Gold queries whose pipeline result was declared truncated.
    pub truncated: usize,
    /// Compared gold queries whose results differed, with how.
    pub mismatches: Vec<Failure>,
    /// Gold queries PostgreSQL refused when run directly.
    pub gold_not_executable: Vec<Failure>,
    /// Gold queries the SQLite → PostgreSQL conversion could not parse (used
    /// unconverted).
    pub conversion_failures: Vec<Failure>,
    /// How many gold queries each conversion rule changed.
    pub conversions: BTreeMap<&'static str, usize>,
    /// Gold queries whose tables and columns could not be read (left out of
    /// the linking averages).
    pub refs_failures: Vec<Failure>,
    /// Whether embeddings took part in linking.
    pub embeddings: bool,
    /// Per database, in `tables.json` order.
    pub per_db: Vec<DbFigures>,
    /// Wall time of the whole run, load included.
    pub elapsed: Duration,
}

fn round4(x: Option<f64>) -> serde_json::Value {
    match x {
        Some(x) => json!((x * 10_000.0).round() / 10_000.0),
        None => serde_json::Value::Null,
    }
}

impl SqlEvalReport {
    /// The figures as one JSON object: `table_recall`, `column_recall`,
    /// `context_token_share`, `false_rejects` (a count), `oracle_match_rate`
    /// (`null` without data), `questions`, plus detail keys.
    pub fn to_json(&self) -> serde_json::Value {
        let failures = |list: &[Failure]| {
            list.iter()
                .map(|f| json!({"index": f.index, "db_id": f.db_id, "sql": f.sql, "reason": f.reason}))
                .collect::<Vec<_>>()
        };
        json!({
            "table_recall": round4(self.table_recall),
            "column_recall": round4(self.column_recall),
            "context_token_share": round4(self.context_token_share),
            "false_rejects": self.false_rejects.len(),
            "oracle_match_rate": round4(self.oracle_match_rate),
            "questions": self.questions,
            "column_recall_questions": self.column_recall_questions,
            "whole_schema": self.whole_schema,
            "oracle_executed": self.oracle_executed,
            "oracle_matches": self.oracle_matches,
            "truncated": self.truncated,
            "gold_not_executable": self.gold_not_executable.len(),
            "conversions": self.conversions,
            "embeddings": self.embeddings,
            "elapsed_secs": (self.elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "false_reject_details": self.false_rejects.iter().map(|r| json!({
                "index": r.index, "db_id": r.db_id, "sql": r.sql, "kind": r.kind, "message": r.message,
            })).collect::<Vec<_>>(),
            "mismatch_details": failures(&self.mismatches),
            "gold_not_executable_details": failures(&self.gold_not_executable),
            "conversion_failures": failures(&self.conversion_failures),
            "per_db": self.per_db.iter().map(|d| json!({
                "db_id": d.db_id,
                "with_data": d.with_data,
                "questions": d.questions,
                "table_recall": round4(d.table_recall()),
                "column_recall": round4(d.column_recall()),
                "context_token_share": round4(d.context_token_share()),
                "false_rejects": d.false_rejects,
                "gold_not_executable": d.gold_not_executable,
                "oracle_match_rate": round4(d.oracle_match_rate()),
                "truncated": d.truncated,
                "rows_loaded": d.load.rows,
                "skipped_primary_keys": d.load.skipped_primary_keys,
                "skipped_foreign_keys": d.load.skipped_foreign_keys,
            })).collect::<Vec<_>>(),
        })
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0))
}

impl fmt::Display for SqlEvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "quarry eval sql: {} questions, {} databases, {:.1} s{}",
            self.questions,
            self.per_db.len(),
            self.elapsed.as_secs_f64(),
            if self.embeddings {
                ", with embeddings"
            } else {
                ""
            }
        )?;
        writeln!(f)?;
        writeln!(f, "| figure | value |")?;
        writeln!(f, "| --- | --- |")?;
        writeln!(f, "| table recall | {} |", pct(self.table_recall))?;
        writeln!(
            f,
            "| column recall | {} (over {} questions naming columns) |",
            pct(self.column_recall),
            self.column_recall_questions
        )?;
        writeln!(
            f,
            "| context tokens / full schema | {} ({} questions got the whole schema) |",
            pct(self.context_token_share),
            self.whole_schema
        )?;
        writeln!(
            f,
            "| validator false rejects | {} |",
            self.false_rejects.len()
        )?;
        writeln!(
            f,
            "| oracle match rate | {} ({} of {} compared; {} truncated at {} rows) |",
            pct(self.oracle_match_rate),
            self.oracle_matches,
            self.oracle_executed,
            self.truncated,
            ORACLE_MAX_ROWS
        )?;
        writeln!(
            f,
            "| gold not executable on PostgreSQL | {} |",
            self.gold_not_executable.len()
        )?;
        let conversions: Vec<String> = self
            .conversions
            .iter()
            .map(|(rule, n)| format!("{rule} {n}"))
            .collect();
        writeln!(
            f,
            "| gold conversions | {} |",
            if conversions.is_empty() {
                "none".to_owned()
            } else {
                conversions.join(", ")
            }
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| database | questions | tables | columns | context | false rejects | not executable | oracle |"
        )?;
        writeln!(f, "| --- | --- | --- | --- | --- | --- | --- | --- |")?;
        for d in &self.per_db {
            writeln!(
                f,
                "| {}{} | {} | {} | {} | {} | {} | {} | {} |",
                d.db_id,
                if d.with_data { "" } else { " (no data)" },
                d.questions,
                pct(d.table_recall()),
                pct(d.column_recall()),
                pct(d.context_token_share()),
                d.false_rejects,
                d.gold_not_executable,
                pct(d.oracle_match_rate()),
            )?;
        }
        let section = |f: &mut fmt::Formatter<'_>, title: &str, list: &[Failure]| -> fmt::Result {
            if list.is_empty() {
                return Ok(());
            }
            writeln!(f, "\n{title} ({}):", list.len())?;
            for x in list {
                writeln!(f, "- #{} {}: {}\n    {}", x.index, x.db_id, x.reason, x.sql)?;
            }
            Ok(())
        };
        if !self.false_rejects.is_empty() {
            writeln!(
                f,
                "\nvalidator false rejects ({}):",
                self.false_rejects.len()
            )?;
            for r in &self.false_rejects {
                writeln!(
                    f,
                    "- #{} {}: {} ({})\n    {}",
                    r.index, r.db_id, r.message, r.kind, r.sql
                )?;
            }
        }
        section(f, "oracle mismatches", &self.mismatches)?;
        section(
            f,
            "gold not executable on PostgreSQL",
            &self.gold_not_executable,
        )?;
        section(
            f,
            "gold SQL the converter could not parse",
            &self.conversion_failures,
        )?;
        section(
            f,
            "gold SQL whose references could not be read",
            &self.refs_failures,
        )?;
        for d in &self.per_db {
            for key in &d.load.skipped_primary_keys {
                writeln!(f, "note: {}: primary key not added: {key}", d.db_id)?;
            }
            for key in &d.load.skipped_foreign_keys {
                writeln!(f, "note: {}: foreign key not added: {key}", d.db_id)?;
            }
        }
        Ok(())
    }
}

/// A loaded database, ready for questions.
struct LoadedDb {
    schema: String,
    /// Lower-case column names of all tables (the converter's identifier test).
    column_names: HashSet<String>,
    /// Lower-case table → columns.
    tables: BTreeMap<String, Vec<String>>,
    index: SchemaIndex,
    with_data: bool,
    figures: DbFigures,
}

/// Runs the evaluation described in the module docs.
///
/// # Errors
/// Unreadable dataset, unreachable database, a load PostgreSQL refuses, or
/// an embedding model that cannot be loaded; failures of single questions
/// are counted in the report instead.
pub async fn run_sql_eval(options: &EvalOptions) -> Result<SqlEvalReport> {
    let started = Instant::now();
    let root = options.dataset.clone();
    let dataset = tokio::task::spawn_blocking(move || Dataset::read(&root))
        .await
        .map_err(|e| EvalError::Worker(e.to_string()))??;
    let questions: Vec<(usize, dataset::Question)> = dataset
        .questions
        .iter()
        .cloned()
        .enumerate()
        .take(options.limit.unwrap_or(usize::MAX))
        .collect();
    let used: HashSet<&str> = questions.iter().map(|(_, q)| q.db_id.as_str()).collect();

    let pg: tokio_postgres::Config = options
        .database_url
        .parse()
        .map_err(|e| EvalError::Config(format!("database url does not parse: {e}")))?;
    let (mut client, connection) =
        pg.connect(tokio_postgres::NoTls)
            .await
            .map_err(|source| EvalError::Database {
                context: "cannot connect to the database".to_owned(),
                source,
            })?;
    let connection = tokio::spawn(connection);

    let embedder: Option<Arc<dyn Embedder>> = if options.embeddings {
        let embedder =
            tokio::task::spawn_blocking(|| embedder_from_config(&EmbeddingConfig::default()))
                .await
                .map_err(|e| EvalError::Worker(e.to_string()))?
                .map_err(|e| EvalError::Embedding(e.to_string()))?;
        Some(embedder)
    } else {
        None
    };

    let mut dbs: HashMap<String, LoadedDb> = HashMap::new();
    let mut order = Vec::new();
    for spec in dataset
        .databases
        .iter()
        .filter(|d| used.contains(d.db_id.as_str()))
    {
        let sqlite = dataset.sqlite_path(&spec.db_id);
        let load = dataset::load_database(&mut client, spec, sqlite).await?;
        info!(
            db_id = %spec.db_id,
            rows = load.rows,
            with_data = load.with_data,
            "loaded spider database"
        );
        let schema = schema_name(&spec.db_id);
        let schema_err = |source| EvalError::Schema {
            db_id: spec.db_id.clone(),
            source,
        };
        let tables = describe_schema(&client, std::slice::from_ref(&schema))
            .await
            .map_err(schema_err)?;
        let values = ValueIndex::load(&client, &tables, VALUE_INDEX_MAX_DISTINCT)
            .await
            .map_err(schema_err)?;
        let mut index = SchemaIndex::new(tables, values, LinkingConfig::default());
        if let Some(embedder) = &embedder {
            embed_index(&mut index, embedder.as_ref()).await?;
        }
        let tables = spec.lowercase_columns();
        let column_names = tables.values().flatten().cloned().collect();
        order.push(spec.db_id.clone());
        dbs.insert(
            spec.db_id.clone(),
            LoadedDb {
                schema,
                column_names,
                tables,
                index,
                with_data: load.with_data,
                figures: DbFigures {
                    db_id: spec.db_id.clone(),
                    with_data: load.with_data,
                    load,
                    ..DbFigures::default()
                },
            },
        );
    }
    drop(client);
    let _ = connection.await;

    let question_embeddings: Vec<Option<Vec<f32>>> = match &embedder {
        Some(embedder) => embedder
            .embed(questions.iter().map(|(_, q)| q.question.clone()).collect())
            .await
            .map_err(|e| EvalError::Embedding(e.to_string()))?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None; questions.len()],
    };

    let pool = quarry_db::pool(&options.database_url, 2, std::time::Duration::from_secs(30))
        .map_err(|e| EvalError::Config(format!("{e:#}")))?;
    let executor = Executor::new(
        pool.clone(),
        ExecConfig {
            statement_timeout_ms: ORACLE_TIMEOUT_MS,
            max_rows: ORACLE_MAX_ROWS,
            max_bytes: 256 * 1024 * 1024,
            fetch_batch: 1_000,
            count_when_truncated: false,
            ..ExecConfig::default()
        },
    );

    let mut report = SqlEvalReport {
        questions: questions.len(),
        embeddings: embedder.is_some(),
        ..SqlEvalReport::default()
    };
    let (mut table_sum, mut table_n) = (0.0, 0usize);
    let (mut column_sum, mut column_n) = (0.0, 0usize);
    let (mut share_sum, mut share_n) = (0.0, 0usize);

    for ((index, question), embedding) in questions.iter().zip(&question_embeddings) {
        let index = *index;
        let Some(db) = dbs.get_mut(&question.db_id) else {
            continue;
        };
        db.figures.questions += 1;
        let failure = |sql: &str, reason: String| Failure {
            index,
            db_id: question.db_id.clone(),
            sql: sql.to_owned(),
            reason,
        };

        // 1. the gold SQL in PostgreSQL's dialect
        let sql = match options.gold_dialect {
            GoldDialect::Postgres => question.query.clone(),
            GoldDialect::Sqlite => {
                match convert::sqlite_to_postgres(&question.query, &db.column_names) {
                    Ok(conversion) => {
                        for rule in conversion.rules {
                            *report.conversions.entry(rule.as_str()).or_default() += 1;
                        }
                        conversion.sql
                    }
                    Err(reason) => {
                        report
                            .conversion_failures
                            .push(failure(&question.query, reason));
                        question.query.clone()
                    }
                }
            }
        };

        // 2. schema linking
        match convert::gold_refs(&sql, &db.tables) {
            Ok(refs) => {
                let linked = db.index.link(&question.question, embedding.as_deref());
                let qualify = |t: &str| format!("{}.{t}", db.schema);
                let linked_tables: HashSet<&str> =
                    linked.tables.iter().map(String::as_str).collect();
                let linked_columns: HashSet<(&str, &str)> = linked
                    .columns
                    .iter()
                    .map(|(t, c)| (t.as_str(), c.as_str()))
                    .collect();
                if !refs.tables.is_empty() {
                    let hit = refs
                        .tables
                        .iter()
                        .filter(|t| linked_tables.contains(qualify(t).as_str()))
                        .count();
                    let recall = hit as f64 / refs.tables.len() as f64;
                    table_sum += recall;
                    table_n += 1;
                    db.figures.table_recall_sum += recall;
                    db.figures.table_recall_n += 1;
                }
                if !refs.columns.is_empty() {
                    let hit = refs
                        .columns
                        .iter()
                        .filter(|(t, c)| {
                            linked_columns.contains(&(qualify(t).as_str(), c.as_str()))
                        })
                        .count();
                    let recall = hit as f64 / refs.columns.len() as f64;
                    if recall < 1.0 {
                        let missed: Vec<String> = refs
                            .columns
                            .iter()
                            .filter(|(t, c)| {
                                !linked_columns.contains(&(qualify(t).as_str(), c.as_str()))
                            })
                            .map(|(t, c)| format!("{t}.{c}"))
                            .collect();
                        tracing::debug!(question = %question.question, ?missed, linked = ?linked.tables, "columns missed by schema linking");
                    }
                    column_sum += recall;
                    column_n += 1;
                    db.figures.column_recall_sum += recall;
                    db.figures.column_recall_n += 1;
                }
                if linked.full_tokens > 0 {
                    let share = linked.context_tokens as f64 / linked.full_tokens as f64;
                    share_sum += share;
                    share_n += 1;
                    db.figures.token_share_sum += share;
                    db.figures.token_share_n += 1;
                }
                if linked.whole_schema {
                    report.whole_schema += 1;
                }
            }
            Err(reason) => report.refs_failures.push(failure(&sql, reason)),
        }

        // 3. the validator
        let policy = ValidationPolicy {
            allowed_schemas: Some(vec![db.schema.clone()]),
            max_rows: ORACLE_MAX_ROWS,
            ..ValidationPolicy::default()
        };
        let validated = validate(&sql, &policy);
        if let Err(rejection) = &validated {
            db.figures.false_rejects += 1;
            report.false_rejects.push(FalseReject {
                index,
                db_id: question.db_id.clone(),
                sql: sql.clone(),
                kind: rejection.kind.as_str().to_owned(),
                message: rejection.message.clone(),
            });
        }

        // 4. the oracle check
        if !db.with_data {
            continue;
        }
        let direct = match run_direct(&pool, &db.schema, &sql).await {
            Ok(direct) => direct,
            Err(reason) => {
                db.figures.gold_not_executable += 1;
                report.gold_not_executable.push(failure(&sql, reason));
                continue;
            }
        };
        let outcome = match &validated {
            Err(rejection) => Err(format!("validator refused: {rejection}")),
            Ok(query) => match executor.execute(query).await {
                Err(error) => Err(format!("pipeline failed: {error}")),
                Ok(result) if result.truncated => Ok(None),
                Ok(result) => {
                    let rows: Vec<Vec<Value>> = result
                        .rows
                        .iter()
                        .map(|row| row.iter().map(Value::from_cell).collect())
                        .collect();
                    let ordered = convert::is_ordered(&sql);
                    match compare::compare(
                        direct.columns,
                        &direct.rows,
                        result.columns.len(),
                        &rows,
                        ordered,
                    ) {
                        Comparison::Equal => Ok(Some(())),
                        other @ (Comparison::ColumnCount
                        | Comparison::RowCount
                        | Comparison::Order
                        | Comparison::Rows) => Err(format!(
                            "results differ ({other:?}): direct {} rows, pipeline {} rows",
                            direct.rows.len(),
                            rows.len()
                        )),
                    }
                }
            },
        };
        match outcome {
            Ok(None) => {
                report.truncated += 1;
                db.figures.truncated += 1;
            }
            Ok(Some(())) => {
                report.oracle_executed += 1;
                report.oracle_matches += 1;
                db.figures.oracle_executed += 1;
                db.figures.oracle_matches += 1;
            }
            Err(reason) => {
                report.oracle_executed += 1;
                db.figures.oracle_executed += 1;
                report.mismatches.push(failure(&sql, reason));
            }
        }
    }
    pool.close();

    report.table_recall = mean(table_sum, table_n);
    report.column_recall = mean(column_sum, column_n);
    report.column_recall_questions = column_n;
    report.context_token_share = mean(share_sum, share_n);
    let any_data = dbs.values().any(|d| d.with_data);
    report.oracle_match_rate = if any_data && report.oracle_executed > 0 {
        Some(report.oracle_matches as f64 / report.oracle_executed as f64)
    } else {
        None
    };
    report.per_db = order
        .iter()
        .filter_map(|id| dbs.remove(id).map(|d| d.figures))
        .collect();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Embeds the index's table and column descriptions.
async fn embed_index(index: &mut SchemaIndex, embedder: &dyn Embedder) -> Result<()> {
    let (tables, columns) = index.element_texts();
    let sizes: Vec<usize> = columns.iter().map(Vec::len).collect();
    let mut texts = tables.clone();
    texts.extend(columns.into_iter().flatten());
    let mut vectors = embedder
        .embed(texts)
        .await
        .map_err(|e| EvalError::Embedding(e.to_string()))?
        .into_iter();
    let table_vectors: Vec<Vec<f32>> = vectors.by_ref().take(tables.len()).collect();
    let column_vectors: Vec<Vec<Vec<f32>>> = sizes
        .iter()
        .map(|&n| vectors.by_ref().take(n).collect())
        .collect();
    index.set_embeddings(table_vectors, column_vectors);
    Ok(())
}

/// A gold query's result from the direct run.
struct DirectResult {
    columns: usize,
    rows: Vec<Vec<Value>>,
}

/// Runs `sql` as given, read-only, with `search_path` set to `schema` (then
/// `pg_catalog`, `pg_temp`, as the executor sets it) and the oracle's
/// timeout; values are PostgreSQL's text output parsed by column type.
/// Written out here rather than through `quarry_db::ReadOnly`, so the
/// oracle does not share the code path of the pipeline it checks.
async fn run_direct(
    pool: &deadpool_postgres::Pool,
    schema: &str,
    sql: &str,
) -> std::result::Result<DirectResult, String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(|e| quarry_db::error_text(&e))?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {ORACLE_TIMEOUT_MS}; \
         SET LOCAL search_path = {}, pg_catalog, pg_temp",
        quarry_db::quote_ident(schema)
    ))
    .await
    .map_err(|e| quarry_db::error_text(&e))?;
    let statement = tx
        .prepare(sql)
        .await
        .map_err(|e| quarry_db::error_text(&e))?;
    let types: Vec<_> = statement
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    let messages = tx
        .simple_query(sql)
        .await
        .map_err(|e| quarry_db::error_text(&e))?;
    let mut rows = Vec::new();
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            rows.push(
                types
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| Value::from_pg_text(row.get(i), ty))
                    .collect(),
            );
        }
    }
    let _ = tx.rollback().await;
    Ok(DirectResult {
        columns: types.len(),
        rows,
    })
}
