//! `quarry eval peers`: the request bodies Quarry's agentic mode sends the
//! model next to those of two Python SQL agents, for the same questions,
//! with the same scripted model (issue 16: "on Tate, prompt bytes per call
//! no larger than the leanest of LangChain's SQL agent and LangGraph's
//! agent for the same question").
//!
//! - **Quarry** runs the questions as [`crate::tokens::run_token_eval`]
//!   does (an in-process server in agentic mode, the configured schema
//!   linking).
//! - **Peers** ([`Peer`]) are `eval/peers/agents.py` run by the Python of
//!   `dev/peers.sh install` (versions pinned in
//!   `eval/peers/requirements.txt`): LangChain's SQL agent
//!   (`create_sql_agent(..., agent_type="tool-calling")`) and LangGraph's
//!   tutorial SQL agent (`create_react_agent` with `SQLDatabaseToolkit`'s
//!   tools and the tutorial's system prompt), each with
//!   `ChatOpenAI(base_url=<scripted model>)` over
//!   `SQLDatabase.from_uri(<database>, schema=<set's schema>)`. One process
//!   per peer asks every question in order, each with a fresh agent.
//!
//! The scripted model is one script for everyone: to a request with no tool
//! result yet it calls the SQL tool the request offers — Quarry's
//! `query_database` with `{"sql": …}`, the peers' `sql_db_query` with
//! `{"query": …}` — with the question's gold SQL (the question is found in
//! the request's user messages); once a tool result is in, it answers in
//! plain text. Every question is so a two-call run for every agent, and
//! the figures compare what each framework wraps around the same exchange.
//!
//! Quarry's queries run as the configuration's login role, as the peers'
//! do ([`run_peers_eval`] leaves `sql.exec.role` out), so every agent's
//! tool result holds the same rows.
//!
//! **Bytes** of a call are the length of the request body the model server
//! received, re-serialised as compact JSON (`serde_json`'s
//! `Value::to_string`), exactly as `quarry eval tokens` counts them, so
//! formatting differences between HTTP clients do not count.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use quarry_bench::ask::ServerSections;
use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_sql::linking::estimate_tokens;
use serde_json::{Value, json};

use crate::tokens::{QuestionSet, run_token_eval};

/// Quarry's SQL tool (agentic mode).
const QUERY_DATABASE: &str = quarry_orchestrator::QUERY_DATABASE;

/// The SQL tool of LangChain's `SQLDatabaseToolkit` (both peers use it);
/// its argument is `query`.
const SQL_DB_QUERY: &str = "sql_db_query";

/// The scripted model's answer once a tool result is in (the same text
/// `quarry eval tokens` answers with).
const ANSWER_TEXT: &str = "The query result above answers the question.";

/// Label of Quarry's column in the report.
pub const QUARRY: &str = "Quarry";

/// A Python SQL agent of `eval/peers/agents.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// LangChain's SQL agent: `langchain_community.agent_toolkits.create_sql_agent`
    /// with `agent_type="tool-calling"`.
    LangChain,
    /// LangGraph's SQL agent of its tutorial "Build a SQL agent":
    /// `langgraph.prebuilt.create_react_agent` with `SQLDatabaseToolkit`'s tools.
    LangGraph,
}

impl Peer {
    /// Both peers, in report order.
    pub const ALL: [Peer; 2] = [Peer::LangChain, Peer::LangGraph];

    /// Label in the report.
    pub fn label(self) -> &'static str {
        match self {
            Peer::LangChain => "LangChain",
            Peer::LangGraph => "LangGraph",
        }
    }

    /// `agents.py`'s first argument, and the peer's dump folder.
    pub fn arg(self) -> &'static str {
        match self {
            Peer::LangChain => "langchain",
            Peer::LangGraph => "langgraph",
        }
    }
}

/// How to run the peers.
#[derive(Debug, Clone)]
pub struct PeerSetup {
    /// The Python with the peers installed (`dev/peers.sh install` prints it:
    /// `.dev/peers/bin/python`).
    pub python: PathBuf,
    /// `eval/peers/agents.py`.
    pub script: PathBuf,
    /// The database the peers read, as a PostgreSQL URL
    /// (`postgres://…`; see [`sqlalchemy_url`]).
    pub database_url: String,
    /// Longest a peer's process may run for all its questions.
    pub timeout: Duration,
}

/// One question's model calls by one agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuestionBytes {
    /// The question.
    pub question: String,
    /// Request body bytes of each model call, in order.
    pub calls: Vec<usize>,
    /// Why the agent did not answer, if it did not (the calls made still count).
    pub failure: Option<String>,
}

/// One agent's questions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentBytes {
    /// [`QUARRY`] or a [`Peer::label`].
    pub agent: String,
    /// Per question, in the set's order.
    pub questions: Vec<QuestionBytes>,
}

impl AgentBytes {
    /// Mean bytes per call over every call; 0 without calls.
    pub fn bytes_per_call(&self) -> f64 {
        let calls: Vec<usize> = self
            .questions
            .iter()
            .flat_map(|q| q.calls.clone())
            .collect();
        mean(&calls)
    }

    /// Mean bytes of the `n`th call (from 1) over the questions that made
    /// one; `None` when none did.
    pub fn bytes_of_call(&self, n: usize) -> Option<f64> {
        let calls: Vec<usize> = self
            .questions
            .iter()
            .filter_map(|q| q.calls.get(n.checked_sub(1)?).copied())
            .collect();
        (!calls.is_empty()).then(|| mean(&calls))
    }

    /// Questions that did not end with an answer.
    pub fn failures(&self) -> usize {
        self.questions
            .iter()
            .filter(|q| q.failure.is_some())
            .count()
    }

    fn calls(&self) -> usize {
        self.questions.iter().map(|q| q.calls.len()).sum()
    }
}

fn mean(values: &[usize]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<usize>() as f64 / values.len() as f64
    }
}

/// The side-by-side report of one question set: Quarry first, then the peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeersReport {
    /// The set's label (e.g. `tate`).
    pub set: String,
    /// [`QUARRY`]'s figures, then each peer's, in the order run.
    pub agents: Vec<AgentBytes>,
}

impl PeersReport {
    /// The fewest bytes any peer (every agent but the first) sent for the
    /// `question`th question's `call`th call (both from 0); `None` when no
    /// peer made that call.
    pub fn leanest_peer(&self, question: usize, call: usize) -> Option<usize> {
        self.agents
            .iter()
            .skip(1)
            .filter_map(|a| a.questions.get(question)?.calls.get(call).copied())
            .min()
    }

    fn max_calls(&self) -> usize {
        self.agents
            .iter()
            .flat_map(|a| a.questions.iter().map(|q| q.calls.len()))
            .max()
            .unwrap_or(0)
    }

    fn questions(&self) -> Vec<&str> {
        self.agents
            .first()
            .map(|a| a.questions.iter().map(|q| q.question.as_str()).collect())
            .unwrap_or_default()
    }

    /// Markdown: one summary row per agent (mean bytes per call, and per
    /// call number), then one row per question and call with each agent's
    /// bytes and whether Quarry's are at most the leanest peer's.
    pub fn table(&self) -> String {
        let max_calls = self.max_calls();
        let mut out = String::from("| agent | questions | calls | failed | bytes/call |");
        let mut rule = String::from("| --- | ---: | ---: | ---: | ---: |");
        for n in 1..=max_calls {
            let _ = write!(out, " call {n} bytes |");
            rule.push_str(" ---: |");
        }
        let _ = writeln!(out, "\n{rule}");
        for a in &self.agents {
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {:.0} |",
                a.agent,
                a.questions.len(),
                a.calls(),
                a.failures(),
                a.bytes_per_call()
            );
            for n in 1..=max_calls {
                let _ = write!(
                    out,
                    " {} |",
                    a.bytes_of_call(n)
                        .map_or_else(|| "–".to_owned(), |b| format!("{b:.0}"))
                );
            }
            out.push('\n');
        }
        out.push_str("\n| set | # | question | call |");
        let mut rule = String::from("| --- | ---: | --- | ---: |");
        for a in &self.agents {
            let _ = write!(out, " {} |", a.agent);
            rule.push_str(" ---: |");
        }
        let _ = writeln!(out, " {QUARRY} ≤ leanest peer |\n{rule} :---: |");
        for (i, question) in self.questions().into_iter().enumerate() {
            let short: String = question.chars().take(60).collect();
            let calls = self
                .agents
                .iter()
                .filter_map(|a| a.questions.get(i).map(|q| q.calls.len()))
                .max()
                .unwrap_or(0);
            for c in 0..calls {
                let _ = write!(
                    out,
                    "| {} | {} | {} | {} |",
                    self.set,
                    i + 1,
                    short.replace('|', "\\|"),
                    c + 1
                );
                for a in &self.agents {
                    let bytes = a.questions.get(i).and_then(|q| q.calls.get(c));
                    let _ = write!(
                        out,
                        " {} |",
                        bytes.map_or_else(|| "–".to_owned(), ToString::to_string)
                    );
                }
                let quarry = self
                    .agents
                    .first()
                    .and_then(|a| a.questions.get(i)?.calls.get(c).copied());
                let verdict = match (quarry, self.leanest_peer(i, c)) {
                    (Some(q), Some(p)) if q <= p => "yes",
                    (Some(_), Some(_)) => "no",
                    _ => "–",
                };
                let _ = writeln!(out, " {verdict} |");
            }
            for a in &self.agents {
                if let Some(failure) = a.questions.get(i).and_then(|q| q.failure.as_ref()) {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} failed: {} |",
                        self.set,
                        i + 1,
                        short.replace('|', "\\|"),
                        a.agent,
                        failure.replace(['|', '\n'], " ")
                    );
                }
            }
        }
        out
    }

    /// The report as JSON: per agent its means and every question's calls.
    pub fn to_json(&self) -> Value {
        let max_calls = self.max_calls();
        json!({
            "set": self.set,
            "method": {
                "bytes": "length of each request body the scripted model received, as compact JSON (serde_json), as quarry eval tokens counts",
                "script": "the SQL tool the request offers (query_database {sql} or sql_db_query {query}) with the question's gold SQL, then a fixed answer once a tool result is in",
            },
            "agents": self.agents.iter().map(|a| json!({
                "agent": a.agent,
                "questions": a.questions.len(),
                "calls": a.calls(),
                "failures": a.failures(),
                "bytes_per_call": (a.bytes_per_call() * 10.0).round() / 10.0,
                "bytes_per_call_number": (1..=max_calls)
                    .map(|n| a.bytes_of_call(n).map(|b| (b * 10.0).round() / 10.0))
                    .collect::<Vec<_>>(),
                "per_question": a.questions.iter().map(|q| json!({
                    "question": q.question,
                    "calls": q.calls,
                    "failure": q.failure,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// `url` (`postgres://` or `postgresql://…`) as a SQLAlchemy URL for
/// psycopg2 (`postgresql+psycopg2://…`, SQLAlchemy's "PostgreSQL /
/// psycopg2" dialect documentation).
///
/// # Errors
/// `url` is not a `postgres://` or `postgresql://` URL.
pub fn sqlalchemy_url(url: &str) -> anyhow::Result<String> {
    ["postgresql://", "postgres://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .map(|rest| format!("postgresql+psycopg2://{rest}"))
        .ok_or_else(|| anyhow::anyhow!("not a postgres:// or postgresql:// url: {url}"))
}

/// Runs `set` through Quarry (the configuration's sections, as
/// [`run_token_eval`]) and through each of `peers`, and reports the
/// request bytes side by side. With `dump_requests`, every request body is
/// written under it: `quarry/`, `langchain/`, `langgraph/`, one
/// pretty-printed JSON file a call (`<set>-<question>-<call>.json`).
///
/// # Errors
/// Quarry's evaluation fails to run (see [`run_token_eval`]), a peer's
/// process cannot be started or outlives [`PeerSetup::timeout`], or a dump
/// cannot be written. A question an agent does not answer is reported with
/// its failure instead.
pub async fn run_peers_eval(
    sections: &ServerSections,
    set: &QuestionSet,
    setup: &PeerSetup,
    peers: &[Peer],
    dump_requests: Option<&Path>,
    progress: bool,
) -> anyhow::Result<PeersReport> {
    let quarry_dump = dump_requests.map(|d| d.join("quarry"));
    // Quarry reads as the login role, as the peers do: under the read-only
    // role (`sql.exec.role`) row-level security would show the evaluation's
    // tenant other rows than the peers see (none at all of Tate's artworks,
    // whose policy knows only the demo tenants), and the second call's tool
    // result would not be the same data
    let mut sections = sections.clone();
    sections.sql.exec.role = None;
    let tokens = run_token_eval(
        &sections,
        std::slice::from_ref(set),
        quarry_dump.as_deref(),
        progress,
    )
    .await?;
    let quarry = AgentBytes {
        agent: QUARRY.to_owned(),
        questions: tokens
            .sets
            .iter()
            .flat_map(|s| s.questions.iter())
            .map(|q| QuestionBytes {
                question: q.question.clone(),
                calls: q.calls.iter().map(|c| c.prompt_bytes).collect(),
                failure: q.failure.clone(),
            })
            .collect(),
    };
    let mut report = PeersReport {
        set: set.name.clone(),
        agents: vec![quarry],
    };
    for &peer in peers {
        let figures = run_peer(peer, set, setup, dump_requests).await?;
        if progress {
            eprintln!(
                "{}: {} questions, {} failed, {:.0} bytes per call",
                figures.agent,
                figures.questions.len(),
                figures.failures(),
                figures.bytes_per_call()
            );
        }
        report.agents.push(figures);
    }
    Ok(report)
}

/// Runs `set`'s questions through one peer with the scripted model (see
/// the module docs); with `dump_requests`, writes the request bodies under
/// `<dump_requests>/<peer>/`.
///
/// # Errors
/// The scripted model cannot start, the peer's process cannot be started
/// or outlives [`PeerSetup::timeout`], or a dump cannot be written.
pub async fn run_peer(
    peer: Peer,
    set: &QuestionSet,
    setup: &PeerSetup,
    dump_requests: Option<&Path>,
) -> anyhow::Result<AgentBytes> {
    let gold: Arc<Vec<(String, String)>> = Arc::new(
        set.questions
            .iter()
            .map(|q| (q.question.clone(), q.sql.clone()))
            .collect(),
    );
    let model = ScriptedServer::try_start_responder(responder(Arc::clone(&gold)))
        .await
        .context("starting the scripted model")?;
    model.set_record_limit(usize::MAX);
    let questions: Vec<&str> = set.questions.iter().map(|q| q.question.as_str()).collect();
    let mut command = tokio::process::Command::new(&setup.python);
    command
        .arg(&setup.script)
        .arg(peer.arg())
        .arg("--base-url")
        .arg(model.base_url())
        .arg("--db-uri")
        .arg(sqlalchemy_url(&setup.database_url)?)
        .arg("--schema")
        .arg(&set.schema)
        .args(&questions)
        // no tracing to LangSmith, whatever the environment says
        .env("LANGCHAIN_TRACING_V2", "false")
        .env("LANGSMITH_TRACING", "false")
        .env("PYTHONWARNINGS", "ignore")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(setup.timeout, command.output())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{} ({}) did not finish within {} s",
                peer.label(),
                setup.script.display(),
                setup.timeout.as_secs()
            )
        })?
        .with_context(|| {
            format!(
                "running {} {} (install the peers with dev/peers.sh install)",
                setup.python.display(),
                setup.script.display()
            )
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr_tail: String = {
        let chars: Vec<char> = stderr.trim_end().chars().collect();
        chars[chars.len().saturating_sub(600)..].iter().collect()
    };
    // one JSON line per question: {"question", "answer"} or {"question", "error"}
    let mut errors: BTreeMap<String, Option<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(question) = value["question"].as_str() {
            errors.insert(
                question.to_owned(),
                value["error"].as_str().map(ToOwned::to_owned),
            );
        }
    }
    let mut by_question: Vec<Vec<Value>> = vec![Vec::new(); gold.len()];
    for request in model.requests() {
        if let Some(i) = question_of(&request, &gold) {
            by_question[i].push(request);
        }
    }
    let mut figures = AgentBytes {
        agent: peer.label().to_owned(),
        questions: Vec::new(),
    };
    for (i, ((question, _), requests)) in gold.iter().zip(by_question).enumerate() {
        if let Some(dir) = dump_requests {
            crate::tokens::dump(&dir.join(peer.arg()), &set.name, i + 1, &requests)?;
        }
        let failure = match errors.get(question) {
            None => Some(format!(
                "no answer from the agent (exit {}): {stderr_tail}",
                output.status
            )),
            Some(Some(error)) => Some(error.clone()),
            Some(None) if !requests.iter().any(has_tool_result) => {
                Some("the model never received a tool result".to_owned())
            }
            Some(None) => tool_error(&requests).map(|e| format!("the SQL tool failed: {e}")),
        };
        figures.questions.push(QuestionBytes {
            question: question.clone(),
            calls: requests.iter().map(|r| r.to_string().len()).collect(),
            failure,
        });
    }
    Ok(figures)
}

/// Whether a request's messages hold a tool result.
fn has_tool_result(request: &Value) -> bool {
    request["messages"]
        .as_array()
        .is_some_and(|messages| messages.iter().any(|m| m["role"] == "tool"))
}

/// The first tool result in `requests` that reports an error (the
/// toolkit's tools answer `Error: …` instead of raising), cut to 300
/// characters.
fn tool_error(requests: &[Value]) -> Option<String> {
    requests
        .iter()
        .filter_map(|r| r["messages"].as_array())
        .flatten()
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| m["content"].as_str())
        .find(|c| c.trim_start().starts_with("Error"))
        .map(|c| c.chars().take(300).collect())
}

/// Which of `gold`'s questions `request` is about: the first whose text is
/// a user message's content (or, failing that, inside one).
fn question_of(request: &Value, gold: &[(String, String)]) -> Option<usize> {
    let users: Vec<&str> = request["messages"]
        .as_array()?
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect();
    gold.iter()
        .position(|(q, _)| users.iter().any(|u| u.trim() == q))
        .or_else(|| {
            gold.iter()
                .position(|(q, _)| users.iter().any(|u| u.contains(q.as_str())))
        })
}

/// The scripted model's reply to `request`: the SQL tool call (name,
/// arguments JSON) the script makes, or `None` for the plain-text answer
/// (see the module docs).
fn scripted_call(request: &Value, gold: &[(String, String)]) -> Option<(&'static str, String)> {
    if has_tool_result(request) {
        return None;
    }
    let (_, sql) = gold.get(question_of(request, gold)?)?;
    let offers = |name: &str| {
        request["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|t| t["function"]["name"] == name))
    };
    Some(if offers(SQL_DB_QUERY) {
        (SQL_DB_QUERY, json!({ "query": sql }).to_string())
    } else {
        (QUERY_DATABASE, json!({ "sql": sql }).to_string())
    })
}

/// The scripted model for everyone ([`scripted_call`]); usage is estimated
/// as `quarry eval tokens` estimates it (⌈characters / 4⌉).
fn responder(
    gold: Arc<Vec<(String, String)>>,
) -> impl Fn(&Value) -> ScriptedTurn + Send + Sync + 'static {
    move |request: &Value| {
        let prompt = format!("{}{}", request["messages"], request["tools"]);
        let prompt_tokens = u32::try_from(estimate_tokens(&prompt)).unwrap_or(u32::MAX);
        let (turn, reply) = match scripted_call(request, &gold) {
            Some((name, arguments)) => {
                (ScriptedTurn::tool_call(name, arguments.clone()), arguments)
            }
            None => (ScriptedTurn::text(ANSWER_TEXT), ANSWER_TEXT.to_owned()),
        };
        let completion_tokens = u32::try_from(estimate_tokens(&reply)).unwrap_or(u32::MAX);
        turn.with_usage(prompt_tokens, completion_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gold() -> Vec<(String, String)> {
        vec![
            ("How many?".to_owned(), "SELECT 1".to_owned()),
            ("Which ones?".to_owned(), "SELECT 2".to_owned()),
        ]
    }

    #[test]
    fn the_question_is_found_in_the_user_messages() {
        let request = json!({"messages": [
            {"role": "system", "content": "How many? is not asked here"},
            {"role": "user", "content": "Which ones?"},
        ]});
        assert_eq!(question_of(&request, &gold()), Some(1));
        let wrapped = json!({"messages": [{"role": "user", "content": "Question: How many?\n"}]});
        assert_eq!(question_of(&wrapped, &gold()), Some(0));
        let none = json!({"messages": [{"role": "user", "content": "Something else"}]});
        assert_eq!(question_of(&none, &gold()), None);
    }

    #[test]
    fn the_script_calls_the_offered_sql_tool_then_answers() {
        let tools = |name: &str| json!([{"type": "function", "function": {"name": name}}]);
        let peer = json!({"tools": tools(SQL_DB_QUERY),
            "messages": [{"role": "user", "content": "Which ones?"}]});
        assert_eq!(
            scripted_call(&peer, &gold()),
            Some((SQL_DB_QUERY, r#"{"query":"SELECT 2"}"#.to_owned()))
        );
        let quarry = json!({"tools": tools(QUERY_DATABASE),
            "messages": [{"role": "user", "content": "How many?"}]});
        assert_eq!(
            scripted_call(&quarry, &gold()),
            Some((QUERY_DATABASE, r#"{"sql":"SELECT 1"}"#.to_owned()))
        );
        let answered = json!({"tools": tools(SQL_DB_QUERY), "messages": [
            {"role": "user", "content": "How many?"},
            {"role": "tool", "content": "[(1,)]"},
        ]});
        assert_eq!(scripted_call(&answered, &gold()), None);
    }

    #[test]
    fn sqlalchemy_urls_name_psycopg() {
        assert_eq!(
            sqlalchemy_url("postgres://u@h:1/d").unwrap(),
            "postgresql+psycopg2://u@h:1/d"
        );
        assert_eq!(
            sqlalchemy_url("postgresql://u@h/d?sslmode=disable").unwrap(),
            "postgresql+psycopg2://u@h/d?sslmode=disable"
        );
        assert!(sqlalchemy_url("mysql://u@h/d").is_err());
    }

    #[test]
    fn a_failed_tool_call_is_seen_in_the_tool_result() {
        let request = |result: &str| {
            json!({"messages": [
                {"role": "user", "content": "How many?"},
                {"role": "tool", "content": result},
            ]})
        };
        assert_eq!(tool_error(&[request("[(3,)]")]), None);
        assert_eq!(
            tool_error(&[request("Error: (psycopg.errors.SyntaxError) syntax error")]).as_deref(),
            Some("Error: (psycopg.errors.SyntaxError) syntax error")
        );
    }

    #[test]
    fn the_leanest_peer_and_means_are_per_call() {
        let agent = |name: &str, calls: &[&[usize]]| AgentBytes {
            agent: name.to_owned(),
            questions: calls
                .iter()
                .map(|c| QuestionBytes {
                    question: "q".to_owned(),
                    calls: c.to_vec(),
                    failure: None,
                })
                .collect(),
        };
        let report = PeersReport {
            set: "s".to_owned(),
            agents: vec![
                agent(QUARRY, &[&[100, 200], &[300]]),
                agent("A", &[&[150, 190], &[250, 400]]),
                agent("B", &[&[120, 210], &[]]),
            ],
        };
        assert_eq!(report.leanest_peer(0, 0), Some(120));
        assert_eq!(report.leanest_peer(0, 1), Some(190));
        assert_eq!(report.leanest_peer(1, 1), Some(400));
        assert_eq!(report.leanest_peer(2, 0), None);
        assert_eq!(report.agents[0].bytes_per_call(), 200.0);
        assert_eq!(report.agents[0].bytes_of_call(1), Some(200.0));
        assert_eq!(report.agents[0].bytes_of_call(2), Some(200.0));
        assert_eq!(report.agents[2].bytes_of_call(3), None);
        let table = report.table();
        assert!(
            table.contains("| s | 1 | q | 1 | 100 | 150 | 120 | yes |"),
            "{table}"
        );
        assert!(
            table.contains("| s | 1 | q | 2 | 200 | 190 | 210 | no |"),
            "{table}"
        );
    }
}
