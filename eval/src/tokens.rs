//! `quarry eval tokens`: what agentic mode sends the model, per question and
//! per model call, on a fixed question set.
//!
//! One process runs a Quarry server ([`quarry_bench::ask::start_server`],
//! agentic mode, the SQL tool over one schema) and a scripted
//! OpenAI-compatible model ([`ScriptedServer::start_responder`]). Each
//! question is asked once, in order; the scripted model calls
//! `query_database` with the question's gold SQL first and answers in
//! plain text once a tool result is in the conversation, so every question
//! is a two-call agentic run whose prompts are exactly what a real model
//! would receive. Per model call the report gives:
//!
//! - **prompt bytes**: the length of the request body the model received
//!   (JSON: messages, tools, settings);
//! - **prompt tokens**: an *estimate*, not a tokenizer count — the scripted
//!   model reports ⌈characters / 4⌉ of the request's `messages` and `tools`
//!   JSON ([`quarry_sql::linking::estimate_tokens`], the rule of thumb the
//!   SQL tool's linking budgets with) as the call's `usage.prompt_tokens`,
//!   and the figure is read back from the Ask's `usage` event, so it passes
//!   through the orchestrator's own accounting; **completion tokens** are
//!   estimated the same way from the reply (the tool call's arguments JSON,
//!   or the answer text);
//! - **schema bytes**: bytes of the schema lines in the messages the model
//!   received, and of the semantic layer's hint lines (`-- term …`,
//!   `-- metric …`, `-- join …`). No delimiter marks the schema in the prompt, so a line counts
//!   as a schema line when — after leading spaces, an optional `- `/`* `
//!   bullet and an optional `view `/`materialized view ` — it starts with
//!   the schema-qualified name of a table the caller may read (from
//!   `DescribeSchema`) followed by `(`, `:`, a space, `,` or the line's end.
//!   This is the shape of `DescribeSchema`'s compact text, one table per
//!   line, and of a one-line catalogue entry;
//! - **share of full schema**: schema bytes ÷ bytes of the full compact
//!   schema of the caller (`DescribeSchema.compact`, what agentic mode sent
//!   whole before issue 16) — the full-schema baseline, reported next to it;
//!   **share of prompt**: schema bytes ÷ prompt bytes;
//! - **table and column recall** of the context the model saw: the gold
//!   SQL's tables and `(table, column)` references
//!   ([`crate::convert::gold_refs`], sqlparser) that have a schema line in
//!   the call's messages, and for columns whose table's line names the
//!   column as a whole word.
//!
//! A question's recall is that of its first call (the context the model
//! chose its SQL from, before any look-up); the dataset's recall is the mean
//! over questions whose gold SQL names tables (columns).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use quarry_bench::ask::{ServerSections, server_config, start_server, token_for, wait_ready};
use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    AnswerStatus, AskMode, AskRequest, DescribeSchemaRequest, TableInfo, Usage,
    ask_response::Event, assistant_service_client::AssistantServiceClient,
    sql_service_client::SqlServiceClient,
};
use quarry_sql::linking::estimate_tokens;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::convert::{gold_refs, sqlite_to_postgres};
use crate::dataset::{Dataset, schema_name};

/// The tool the scripted model calls (agentic mode's SQL tool).
const QUERY_DATABASE: &str = quarry_orchestrator::QUERY_DATABASE;

/// The scripted model's answer once the tool result is in (no numbers, so
/// the grounding check has nothing to flag).
const ANSWER_TEXT: &str = "The query result above answers the question.";

/// One question with its gold SQL (PostgreSQL dialect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenQuestion {
    /// The question as asked.
    pub question: String,
    /// The gold SQL: what the scripted model runs and where recall's gold
    /// tables and columns come from.
    pub sql: String,
}

/// Questions over one schema, asked of one server.
#[derive(Debug, Clone)]
pub struct QuestionSet {
    /// Label in the report (e.g. `tate`, `spider/concert_singer`).
    pub name: String,
    /// The PostgreSQL schema the SQL tool serves (`[sql] schemas`).
    pub schema: String,
    /// The questions, asked in order.
    pub questions: Vec<TokenQuestion>,
}

/// One model call of a question.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallTokens {
    /// Step of the agentic loop, from 1.
    pub step: u32,
    /// Bytes of the request body the model received.
    pub prompt_bytes: usize,
    /// Prompt tokens from the Ask's usage (the scripted model's estimate).
    pub prompt_tokens: u64,
    /// Completion tokens from the Ask's usage.
    pub completion_tokens: u64,
    /// Bytes of schema lines in the call's messages.
    pub schema_bytes: usize,
    /// Gold tables with a schema line ÷ gold tables; `None` without gold tables.
    pub table_recall: Option<f64>,
    /// Gold columns named in their table's line ÷ gold columns; `None`
    /// without gold columns.
    pub column_recall: Option<f64>,
}

/// One question's calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuestionTokens {
    /// The question.
    pub question: String,
    /// Its model calls, in order.
    pub calls: Vec<CallTokens>,
    /// Why the Ask did not end with an answer, if it did not (figures are
    /// still those of the calls made).
    pub failure: Option<String>,
}

impl QuestionTokens {
    /// Prompt tokens over the question's calls.
    pub fn prompt_tokens(&self) -> u64 {
        self.calls.iter().map(|c| c.prompt_tokens).sum()
    }

    /// Completion tokens over the question's calls.
    pub fn completion_tokens(&self) -> u64 {
        self.calls.iter().map(|c| c.completion_tokens).sum()
    }
}

/// The figures of one [`QuestionSet`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetTokens {
    /// The set's label.
    pub name: String,
    /// Tables the caller may read.
    pub tables: usize,
    /// Bytes of the full compact schema (`DescribeSchema.compact`): the baseline.
    pub full_schema_bytes: usize,
    /// Its estimated tokens (⌈characters / 4⌉).
    pub full_schema_tokens: usize,
    /// Per question, in order.
    pub questions: Vec<QuestionTokens>,
}

/// The report: one entry per question set, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenEvalReport {
    /// Each set's figures.
    pub sets: Vec<SetTokens>,
}

/// Means of a group of sets (a dataset).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenSummary {
    /// Questions.
    pub questions: usize,
    /// Model calls.
    pub calls: usize,
    /// Questions that did not end with an answer.
    pub failures: usize,
    /// Mean request body bytes per call.
    pub prompt_bytes_per_call: f64,
    /// Mean prompt tokens per call.
    pub prompt_tokens_per_call: f64,
    /// Mean completion tokens per call.
    pub completion_tokens_per_call: f64,
    /// Mean prompt + completion tokens per question.
    pub tokens_per_question: f64,
    /// Mean schema bytes per call.
    pub schema_bytes_per_call: f64,
    /// Mean full-schema bytes per call (the baseline).
    pub full_schema_bytes_per_call: f64,
    /// Mean over calls of schema bytes ÷ full-schema bytes.
    pub share_of_full_schema: f64,
    /// Mean over calls of schema bytes ÷ prompt bytes.
    pub share_of_prompt: f64,
    /// Mean first-call table recall over questions with gold tables.
    pub table_recall: Option<f64>,
    /// Mean first-call column recall over questions with gold columns.
    pub column_recall: Option<f64>,
}

fn mean(sum: f64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { sum / n as f64 }
}

impl TokenEvalReport {
    /// The means over the sets whose name is `prefix` or starts with
    /// `prefix/` (all sets for an empty prefix).
    pub fn summary(&self, prefix: &str) -> TokenSummary {
        let sets: Vec<&SetTokens> = self
            .sets
            .iter()
            .filter(|s| {
                prefix.is_empty() || s.name == prefix || s.name.starts_with(&format!("{prefix}/"))
            })
            .collect();
        let mut out = TokenSummary::default();
        let (mut bytes, mut prompt, mut completion, mut schema, mut full) =
            (0.0, 0.0, 0.0, 0.0, 0.0);
        let (mut share_full, mut share_prompt, mut tokens) = (0.0, 0.0, 0.0);
        let (mut table, mut table_n, mut column, mut column_n) = (0.0, 0, 0.0, 0);
        for set in sets {
            for q in &set.questions {
                out.questions += 1;
                out.failures += usize::from(q.failure.is_some());
                tokens += (q.prompt_tokens() + q.completion_tokens()) as f64;
                if let Some(first) = q.calls.first() {
                    if let Some(r) = first.table_recall {
                        table += r;
                        table_n += 1;
                    }
                    if let Some(r) = first.column_recall {
                        column += r;
                        column_n += 1;
                    }
                }
                for c in &q.calls {
                    out.calls += 1;
                    bytes += c.prompt_bytes as f64;
                    prompt += c.prompt_tokens as f64;
                    completion += c.completion_tokens as f64;
                    schema += c.schema_bytes as f64;
                    full += set.full_schema_bytes as f64;
                    if set.full_schema_bytes > 0 {
                        share_full += c.schema_bytes as f64 / set.full_schema_bytes as f64;
                    }
                    if c.prompt_bytes > 0 {
                        share_prompt += c.schema_bytes as f64 / c.prompt_bytes as f64;
                    }
                }
            }
        }
        out.prompt_bytes_per_call = mean(bytes, out.calls);
        out.prompt_tokens_per_call = mean(prompt, out.calls);
        out.completion_tokens_per_call = mean(completion, out.calls);
        out.tokens_per_question = mean(tokens, out.questions);
        out.schema_bytes_per_call = mean(schema, out.calls);
        out.full_schema_bytes_per_call = mean(full, out.calls);
        out.share_of_full_schema = mean(share_full, out.calls);
        out.share_of_prompt = mean(share_prompt, out.calls);
        out.table_recall = (table_n > 0).then(|| table / table_n as f64);
        out.column_recall = (column_n > 0).then(|| column / column_n as f64);
        out
    }

    /// The datasets of the report: the part of each set's name before `/`.
    fn datasets(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for set in &self.sets {
            let name = set.name.split('/').next().unwrap_or_default().to_owned();
            if !seen.contains(&name) {
                seen.push(name);
            }
        }
        seen
    }

    /// Markdown: one summary row per dataset, then one row per model call.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| dataset | questions | calls | prompt bytes/call | full schema bytes | schema bytes/call | schema ÷ full | schema ÷ prompt | prompt tokens/call | completion tokens/call | tokens/question | table recall | column recall | failed |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for name in self.datasets() {
            let s = self.summary(&name);
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} % | {:.1} % | {:.0} | {:.1} | {:.0} | {} | {} | {} |",
                s.questions,
                s.calls,
                s.prompt_bytes_per_call,
                s.full_schema_bytes_per_call,
                s.schema_bytes_per_call,
                s.share_of_full_schema * 100.0,
                s.share_of_prompt * 100.0,
                s.prompt_tokens_per_call,
                s.completion_tokens_per_call,
                s.tokens_per_question,
                pct(s.table_recall),
                pct(s.column_recall),
                s.failures,
            );
        }
        out.push_str(
            "\n| set | question | call | prompt bytes | prompt tokens | completion tokens | schema bytes | schema ÷ full | table recall | column recall |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for set in &self.sets {
            for q in &set.questions {
                let question: String = q.question.chars().take(60).collect();
                for c in &q.calls {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} | {} | {:.1} % | {} | {} |",
                        set.name,
                        question.replace('|', "\\|"),
                        c.step,
                        c.prompt_bytes,
                        c.prompt_tokens,
                        c.completion_tokens,
                        c.schema_bytes,
                        share(c.schema_bytes, set.full_schema_bytes) * 100.0,
                        pct(c.table_recall),
                        pct(c.column_recall),
                    );
                }
                if let Some(failure) = &q.failure {
                    let _ = writeln!(
                        out,
                        "| {} | {} | failed: {} | | | | | | | |",
                        set.name,
                        question.replace('|', "\\|"),
                        failure.replace('|', "\\|")
                    );
                }
            }
        }
        out
    }

    /// The report as JSON: `summary` per dataset, and every set with its
    /// baseline, questions and calls.
    pub fn to_json(&self) -> Value {
        let summary: serde_json::Map<String, Value> = self
            .datasets()
            .into_iter()
            .map(|name| {
                let s = self.summary(&name);
                (
                    name,
                    json!({
                        "questions": s.questions,
                        "calls": s.calls,
                        "failures": s.failures,
                        "prompt_bytes_per_call": round1(s.prompt_bytes_per_call),
                        "prompt_tokens_per_call": round1(s.prompt_tokens_per_call),
                        "completion_tokens_per_call": round1(s.completion_tokens_per_call),
                        "tokens_per_question": round1(s.tokens_per_question),
                        "schema_bytes_per_call": round1(s.schema_bytes_per_call),
                        "full_schema_bytes_per_call": round1(s.full_schema_bytes_per_call),
                        "share_of_full_schema": round4(s.share_of_full_schema),
                        "share_of_prompt": round4(s.share_of_prompt),
                        "table_recall": s.table_recall.map(round4),
                        "column_recall": s.column_recall.map(round4),
                    }),
                )
            })
            .collect();
        let sets: Vec<Value> = self
            .sets
            .iter()
            .map(|set| {
                json!({
                    "name": set.name,
                    "tables": set.tables,
                    "full_schema_bytes": set.full_schema_bytes,
                    "full_schema_tokens": set.full_schema_tokens,
                    "questions": set.questions.iter().map(|q| json!({
                        "question": q.question,
                        "prompt_tokens": q.prompt_tokens(),
                        "completion_tokens": q.completion_tokens(),
                        "failure": q.failure,
                        "calls": q.calls.iter().map(|c| json!({
                            "step": c.step,
                            "prompt_bytes": c.prompt_bytes,
                            "prompt_tokens": c.prompt_tokens,
                            "completion_tokens": c.completion_tokens,
                            "schema_bytes": c.schema_bytes,
                            "share_of_full_schema": round4(share(c.schema_bytes, set.full_schema_bytes)),
                            "share_of_prompt": round4(share(c.schema_bytes, c.prompt_bytes)),
                            "table_recall": c.table_recall.map(round4),
                            "column_recall": c.column_recall.map(round4),
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "method": {
                "prompt_tokens": "estimate: ceil(chars / 4) of the request's messages and tools JSON, reported by the scripted model and read from the Ask's usage event",
                "schema_bytes": "bytes of message lines that start with a schema-qualified table name of DescribeSchema followed by '(', ':', ' ', ',' or the end",
                "full_schema": "DescribeSchema.compact of the caller",
                "recall": "gold tables (columns) of the gold SQL with a schema line (named in their table's line); a question's recall is its first call's",
            },
            "summary": summary,
            "sets": sets,
        })
    }
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_owned(), |x| format!("{:.1} %", x * 100.0))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// A table the caller may read, as the schema context names it.
#[derive(Debug, Clone)]
struct CatalogTable {
    /// `schema.table`, lower-cased.
    qualified: String,
    /// `table`, lower-cased (what [`gold_refs`] names).
    name: String,
}

/// Bytes of schema lines in `messages` and, per lower-case table name, the
/// lower-cased text of its lines.
fn schema_lines(messages: &[Value], catalog: &[CatalogTable]) -> (usize, BTreeMap<String, String>) {
    let mut bytes = 0;
    let mut lines: BTreeMap<String, String> = BTreeMap::new();
    for message in messages {
        let Some(content) = message.get("content").and_then(Value::as_str) else {
            continue;
        };
        for line in content.lines() {
            // the semantic layer's hints are schema context too
            if ["-- term ", "-- metric ", "-- join "]
                .iter()
                .any(|p| line.starts_with(p))
            {
                bytes += line.len() + 1;
                continue;
            }
            if let Some(table) = schema_line_table(line, catalog) {
                bytes += line.len() + 1;
                let entry = lines.entry(table.name.clone()).or_default();
                entry.push_str(&line.to_lowercase());
                entry.push('\n');
            }
        }
    }
    (bytes, lines)
}

/// The catalog table `line` describes, if it is a schema line (see the
/// module docs).
fn schema_line_table<'c>(line: &str, catalog: &'c [CatalogTable]) -> Option<&'c CatalogTable> {
    let mut rest = line.trim_start().to_lowercase();
    for prefix in ["- ", "* "] {
        if let Some(stripped) = rest.strip_prefix(prefix) {
            rest = stripped.trim_start().to_owned();
        }
    }
    for prefix in ["materialized view ", "view "] {
        if let Some(stripped) = rest.strip_prefix(prefix) {
            rest = stripped.to_owned();
        }
    }
    catalog
        .iter()
        .filter(|t| {
            rest.strip_prefix(t.qualified.as_str())
                .is_some_and(|after| after.is_empty() || after.starts_with(['(', ':', ' ', ',']))
        })
        // the longest name wins (`s.a` vs `s.a_b` cannot both match, but be safe)
        .max_by_key(|t| t.qualified.len())
}

/// Whether `word` occurs in `text` with no identifier character on either side.
fn has_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        !text[..at].chars().next_back().is_some_and(ident)
            && !text[at + word.len()..].chars().next().is_some_and(ident)
    })
}

/// Table and column recall of `lines` against the gold references.
fn recall(
    lines: &BTreeMap<String, String>,
    gold: Option<&crate::convert::GoldRefs>,
) -> (Option<f64>, Option<f64>) {
    let Some(gold) = gold else {
        return (None, None);
    };
    let tables = (!gold.tables.is_empty()).then(|| {
        let hit = gold
            .tables
            .iter()
            .filter(|t| lines.contains_key(*t))
            .count();
        hit as f64 / gold.tables.len() as f64
    });
    let columns = (!gold.columns.is_empty()).then(|| {
        let hit = gold
            .columns
            .iter()
            .filter(|(t, c)| lines.get(t).is_some_and(|text| has_word(text, c)))
            .count();
        hit as f64 / gold.columns.len() as f64
    });
    (tables, columns)
}

/// The scripted model: `query_database` with the current question's gold
/// SQL first, [`ANSWER_TEXT`] once a tool result is in; prompt tokens
/// estimated from the request (see the module docs).
fn responder(sql: Arc<Mutex<String>>) -> impl Fn(&Value) -> ScriptedTurn + Send + Sync + 'static {
    move |request: &Value| {
        let prompt = format!("{}{}", request["messages"], request["tools"]);
        let prompt_tokens = u32::try_from(estimate_tokens(&prompt)).unwrap_or(u32::MAX);
        let has_tool_result = request["messages"]
            .as_array()
            .is_some_and(|messages| messages.iter().any(|m| m["role"] == "tool"));
        let (turn, reply) = if has_tool_result {
            (ScriptedTurn::text(ANSWER_TEXT), ANSWER_TEXT.to_owned())
        } else {
            let sql = sql.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let arguments = json!({ "sql": sql }).to_string();
            (
                ScriptedTurn::tool_call(QUERY_DATABASE, arguments.clone()),
                arguments,
            )
        };
        let completion_tokens = u32::try_from(estimate_tokens(&reply)).unwrap_or(u32::MAX);
        turn.with_usage(prompt_tokens, completion_tokens)
    }
}

/// Runs each set of questions against its own in-process server (the
/// configuration's `[database]`, `[sql]` with the set's schema, and
/// `[orchestrator]`), with the scripted model. For a schema `[sql]` does
/// not list (a Spider database), its golden pairs and sources are left
/// out: they belong to the configured schemas. Queries run as the login
/// role (`sql.exec.role` left out), as `quarry eval peers` runs them, so
/// that row-level security does not hide the rows from the evaluation's
/// tenant.
///
/// # Errors
/// The scripted model or a server cannot start, or `DescribeSchema` fails.
/// A question whose Ask fails is reported with its failure instead.
pub async fn run_token_eval(
    sections: &ServerSections,
    sets: &[QuestionSet],
    dump_requests: Option<&Path>,
    progress: bool,
) -> anyhow::Result<TokenEvalReport> {
    let sql = Arc::new(Mutex::new(String::new()));
    let model = ScriptedServer::try_start_responder(responder(Arc::clone(&sql)))
        .await
        .context("starting the scripted model")?;
    model.set_record_limit(usize::MAX);
    let mut report = TokenEvalReport::default();
    for set in sets {
        let mut sections = sections.clone();
        if !sections.sql.schemas.contains(&set.schema) {
            // a schema the configuration does not serve (a Spider database):
            // its golden pairs and sources are for others
            sections.sql.golden_path = None;
            sections.sql.semantic_path = None;
            sections.sql.sources.clear();
        }
        // the login role reads: under the read-only role row-level security
        // would show the evaluation's tenant no rows (a count of 0), and the
        // tool results the model reads would not be the data's
        sections.sql.exec.role = None;
        sections.sql.schemas = vec![set.schema.clone()];
        let mut config = server_config(&sections, false, &model.base_url())?;
        // schema linking as `quarry serve` links: with the configured
        // embedder (MiniLM in dev/quarry.toml) when there is one
        config.embedding = sections.embedding.clone();
        let mut server = start_server(config).await?;
        let token = token_for("eval", "eval-tokens")?;
        let result = async {
            let channel = wait_ready(&mut server, &token).await?;
            run_set(set, &channel, &token, &model, &sql, dump_requests).await
        }
        .await;
        let stopped = server.shut_down().await;
        let figures = result?;
        stopped?;
        if progress {
            eprintln!(
                "{}: {} questions, full schema {} bytes",
                figures.name,
                figures.questions.len(),
                figures.full_schema_bytes
            );
        }
        report.sets.push(figures);
    }
    Ok(report)
}

async fn run_set(
    set: &QuestionSet,
    channel: &Channel,
    token: &str,
    model: &ScriptedServer,
    sql: &Mutex<String>,
    dump_requests: Option<&Path>,
) -> anyhow::Result<SetTokens> {
    let schema = SqlServiceClient::new(channel.clone())
        .describe_schema(quarry_server::client::bearer_request(
            DescribeSchemaRequest::default(),
            token,
        )?)
        .await
        .map_err(|s| anyhow::anyhow!("DescribeSchema: {}", quarry_server::client::status_error(s)))?
        .into_inner();
    let catalog: Vec<CatalogTable> = schema.tables.iter().map(catalog_table).collect();
    let gold_schema: BTreeMap<String, Vec<String>> = schema
        .tables
        .iter()
        .map(|t: &TableInfo| {
            (
                t.name.to_lowercase(),
                t.columns.iter().map(|c| c.name.to_lowercase()).collect(),
            )
        })
        .collect();
    let mut figures = SetTokens {
        name: set.name.clone(),
        tables: schema.tables.len(),
        full_schema_bytes: schema.compact.len(),
        full_schema_tokens: estimate_tokens(&schema.compact),
        questions: Vec::new(),
    };
    let mut client = AssistantServiceClient::new(channel.clone());
    for q in &set.questions {
        *sql.lock().unwrap_or_else(PoisonError::into_inner) = q.sql.clone();
        let before = model.request_count();
        let outcome = ask(&mut client, token, &q.question).await;
        let requests: Vec<Value> = model.requests().into_iter().skip(before).collect();
        if let Some(dir) = dump_requests {
            dump(dir, &set.name, figures.questions.len() + 1, &requests)?;
        }
        let gold = gold_refs(&q.sql, &gold_schema).ok();
        let (usage, failure) = match outcome {
            Ok((usage, failure)) => (Some(usage), failure),
            Err(e) => (None, Some(e)),
        };
        let answer_calls: Vec<_> = usage
            .iter()
            .flat_map(|u| u.calls.iter())
            .filter(|c| c.task == quarry_llm::TASK_ANSWER)
            .collect();
        let calls = requests
            .iter()
            .enumerate()
            .map(|(i, request)| {
                let messages = request["messages"].as_array().cloned().unwrap_or_default();
                let (schema_bytes, lines) = schema_lines(&messages, &catalog);
                let (table_recall, column_recall) = recall(&lines, gold.as_ref());
                let reported = answer_calls.get(i);
                CallTokens {
                    step: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    prompt_bytes: request.to_string().len(),
                    prompt_tokens: reported.map_or(0, |c| c.prompt_tokens),
                    completion_tokens: reported.map_or(0, |c| c.completion_tokens),
                    schema_bytes,
                    table_recall,
                    column_recall,
                }
            })
            .collect();
        figures.questions.push(QuestionTokens {
            question: q.question.clone(),
            calls,
            failure,
        });
    }
    Ok(figures)
}

/// Writes `requests` to `dir` as `<set>-<question>-<call>.json` (pretty
/// JSON; `/` in the set's name becomes `_`).
pub(crate) fn dump(
    dir: &Path,
    set: &str,
    question: usize,
    requests: &[Value],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, request) in requests.iter().enumerate() {
        let path = dir.join(format!(
            "{}-{question:03}-{}.json",
            set.replace('/', "_"),
            i + 1
        ));
        std::fs::write(&path, serde_json::to_vec_pretty(request)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn catalog_table(t: &TableInfo) -> CatalogTable {
    CatalogTable {
        qualified: format!("{}.{}", t.schema, t.name).to_lowercase(),
        name: t.name.to_lowercase(),
    }
}

/// Asks `question` in agentic mode; the usage event and why the Ask did not
/// end with an answer, if it did not.
async fn ask(
    client: &mut AssistantServiceClient<Channel>,
    token: &str,
    question: &str,
) -> Result<(Usage, Option<String>), String> {
    let request = quarry_server::client::bearer_request(
        AskRequest {
            question: question.to_owned(),
            mode: AskMode::Agentic as i32,
            ..AskRequest::default()
        },
        token,
    )
    .map_err(|e| e.to_string())?;
    let status = |s| quarry_server::client::status_error(s).to_string();
    let mut stream = client.ask(request).await.map_err(status)?.into_inner();
    let mut answered = None;
    let mut usage = None;
    while let Some(message) = stream.message().await.map_err(status)? {
        if let Some(Event::FinalAnswer(answer)) = &message.event {
            answered = Some(answer.status);
        }
        if let Some(Event::Usage(u)) = message.event {
            usage = Some(u);
        }
    }
    let usage = usage.ok_or("the stream ended without a usage event")?;
    let failure = match answered {
        Some(s) if s == AnswerStatus::Answered as i32 => None,
        Some(s) => Some(format!(
            "answer status {}",
            AnswerStatus::try_from(s)
                .map_or_else(|_| s.to_string(), |s| s.as_str_name().to_owned())
        )),
        None => Some("no final answer".to_owned()),
    };
    Ok((usage, failure))
}

/// Tate's demo questions: `demo/golden/tate.json` (`[{question, sql}]`),
/// over schema `tate`.
///
/// # Errors
/// The file cannot be read or is not such an array.
pub fn tate_set(golden: &Path) -> anyhow::Result<QuestionSet> {
    #[derive(serde::Deserialize)]
    struct Pair {
        question: String,
        sql: String,
    }
    let text =
        std::fs::read_to_string(golden).with_context(|| format!("reading {}", golden.display()))?;
    let pairs: Vec<Pair> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", golden.display()))?;
    Ok(QuestionSet {
        name: "tate".to_owned(),
        schema: "tate".to_owned(),
        questions: pairs
            .into_iter()
            .map(|p| TokenQuestion {
                question: p.question,
                sql: p.sql,
            })
            .collect(),
    })
}

/// Spider questions from a Spider folder, loaded into PostgreSQL as
/// `quarry eval sql` loads them ([`crate::dataset::load_database`], schema
/// `spider_<db>`): at most `per_db` questions of each database (all without
/// it), then at most `limit` in all, in `dev.json` order; one set per
/// database. Gold SQL is converted from SQLite ([`sqlite_to_postgres`]);
/// a query that does not convert is kept as written.
///
/// # Errors
/// Unreadable dataset, unreachable database, or a load PostgreSQL refuses.
pub async fn spider_sets(
    root: &Path,
    database_url: &str,
    per_db: Option<usize>,
    limit: Option<usize>,
) -> anyhow::Result<Vec<QuestionSet>> {
    let root = root.to_owned();
    let dataset = tokio::task::spawn_blocking(move || Dataset::read(&root)).await??;
    let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
    let mut chosen = Vec::new();
    for q in &dataset.questions {
        let n = taken.entry(q.db_id.as_str()).or_default();
        if per_db.is_some_and(|max| *n >= max) {
            continue;
        }
        *n += 1;
        chosen.push(q);
        if limit.is_some_and(|max| chosen.len() >= max) {
            break;
        }
    }
    let used: BTreeSet<&str> = chosen.iter().map(|q| q.db_id.as_str()).collect();
    let pg: tokio_postgres::Config = database_url.parse().context("database url")?;
    let (mut client, connection) = pg.connect(tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let mut sets: Vec<QuestionSet> = Vec::new();
    for spec in dataset
        .databases
        .iter()
        .filter(|d| used.contains(d.db_id.as_str()))
    {
        let sqlite = dataset.sqlite_path(&spec.db_id);
        crate::dataset::load_database(&mut client, spec, sqlite).await?;
        let columns: HashSet<String> = spec.lowercase_columns().into_values().flatten().collect();
        sets.push(QuestionSet {
            name: format!("spider/{}", spec.db_id),
            schema: schema_name(&spec.db_id),
            questions: chosen
                .iter()
                .filter(|q| q.db_id == spec.db_id)
                .map(|q| TokenQuestion {
                    question: q.question.clone(),
                    sql: sqlite_to_postgres(&q.query, &columns)
                        .map_or_else(|_| q.query.clone(), |c| c.sql),
                })
                .collect(),
        });
    }
    drop(client);
    let _ = connection.await;
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<CatalogTable> {
        ["s.artists", "s.artworks", "s.art"]
            .iter()
            .map(|q| CatalogTable {
                qualified: (*q).to_owned(),
                name: q.trim_start_matches("s.").to_owned(),
            })
            .collect()
    }

    #[test]
    fn schema_lines_are_those_naming_a_catalog_table() {
        let prompt = "Schema:\ns.artists(id integer PK, name text)\n\
                      s.artworks(id integer PK, artist_id integer -> s.artists.id, title text)\n\
                      - s.art: one-line catalogue entry\n\
                      Rules: query s.artists with care\n\
                      s.artistsx(not a table)";
        let messages = vec![json!({"role": "system", "content": prompt})];
        let (bytes, lines) = schema_lines(&messages, &catalog());
        let expected = [
            "s.artists(id integer PK, name text)",
            "s.artworks(id integer PK, artist_id integer -> s.artists.id, title text)",
            "- s.art: one-line catalogue entry",
        ]
        .iter()
        .map(|l| l.len() + 1)
        .sum::<usize>();
        assert_eq!(bytes, expected);
        assert_eq!(
            lines.keys().map(String::as_str).collect::<Vec<_>>(),
            ["art", "artists", "artworks"]
        );
    }

    #[test]
    fn recall_counts_gold_tables_with_a_line_and_columns_named_in_it() {
        let messages = vec![json!({"role": "system", "content":
            "s.artworks(id integer PK, artist_id integer, title text)"})];
        let (_, lines) = schema_lines(&messages, &catalog());
        let schema: BTreeMap<String, Vec<String>> = [
            (
                "artworks".to_owned(),
                vec![
                    "id".to_owned(),
                    "artist_id".to_owned(),
                    "title".to_owned(),
                    "year".to_owned(),
                ],
            ),
            (
                "artists".to_owned(),
                vec!["id".to_owned(), "name".to_owned()],
            ),
        ]
        .into_iter()
        .collect();
        let gold = gold_refs(
            "SELECT a.name, w.title FROM s.artworks w JOIN s.artists a ON a.id = w.artist_id",
            &schema,
        )
        .unwrap();
        let (tables, columns) = recall(&lines, Some(&gold));
        assert_eq!(tables, Some(0.5));
        // artworks.title, artworks.artist_id in; artists.name, artists.id out
        assert_eq!(columns, Some(0.5));
        // `id` inside `artist_id` is not the column `id`
        assert!(!has_word("artist_id integer", "id"));
        assert!(has_word("(id integer", "id"));
    }
}
