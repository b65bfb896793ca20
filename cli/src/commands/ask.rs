//! `quarry ask`: sends one question and prints the event stream readably —
//! route, tool calls with their SQL, a table preview of each result, the
//! answer text as it arrives, citations and usage.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use futures::StreamExt;
use quarry_orchestrator::render::{self, markdown_table};
use quarry_proto::v1::{
    AnswerStatus, AskMode, AskRequest, AttemptStage, ask_response::Event,
    assistant_service_client::AssistantServiceClient, tool_result::Outcome,
};

/// Arguments of `quarry ask`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The question.
    pub question: String,
    /// Continue this conversation.
    #[arg(long)]
    pub conversation: Option<String>,
    /// How the orchestrator chooses tools.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Rows of each tool result to show.
    #[arg(long, default_value_t = 10)]
    pub preview_rows: u32,
    #[command(flatten)]
    pub remote: super::Remote,
}

/// How the orchestrator chooses tools.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    /// Agentic with a model, router without.
    Auto,
    /// The model chooses and chains tools.
    Agentic,
    /// Rules (and optionally one routing call) pick fixed pipelines.
    Router,
}

/// Asks and prints the stream; exits with status 2 when the answer failed.
///
/// # Errors
/// As [`ask`].
pub async fn run(args: Args, _config: Option<&Path>) -> anyhow::Result<()> {
    let request = AskRequest {
        question: args.question,
        conversation_id: args.conversation.unwrap_or_default(),
        mode: match args.mode {
            Mode::Auto => AskMode::Unspecified,
            Mode::Agentic => AskMode::Agentic,
            Mode::Router => AskMode::Router,
        } as i32,
        preview_rows: args.preview_rows,
    };
    let mut out = std::io::stdout();
    let status = ask(&args.remote.server, &args.remote.token, request, &mut out).await?;
    if status == AnswerStatus::Failed {
        std::process::exit(2);
    }
    Ok(())
}

/// Characters per cell in printed tables.
const CELL_CHARS: usize = 60;

/// Connects to `server`, asks, and writes the stream to `out` as it arrives.
/// Returns the final answer's status.
///
/// # Errors
/// Connection failures and error statuses (unauthenticated, invalid request,
/// rate limited, …), with the server's message.
pub async fn ask(
    server: &str,
    token: &str,
    request: AskRequest,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<AnswerStatus> {
    let mut client = AssistantServiceClient::connect(server.to_string())
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    let call = quarry_server::client::bearer_request(request, token)?;
    let mut stream = client
        .ask(call)
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let mut status = AnswerStatus::Unspecified;
    let mut in_answer = false;
    while let Some(message) = stream.next().await {
        let message = message.map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?;
        let Some(event) = message.event else { continue };
        if in_answer && !matches!(event, Event::AnswerDelta(_)) {
            writeln!(out)?;
            in_answer = false;
        }
        match event {
            Event::Started(s) => writeln!(out, "» conversation {}", s.conversation_id)?,
            Event::Route(r) => {
                let mode = AskMode::try_from(r.mode).unwrap_or(AskMode::Unspecified);
                writeln!(
                    out,
                    "» route: {} ({}) — {}",
                    r.route,
                    mode.as_str_name(),
                    r.reason
                )?;
            }
            Event::ToolCallStarted(t) => {
                writeln!(
                    out,
                    "» tool call {} {}: {}",
                    t.call_id, t.tool_name, t.arguments_json
                )?;
            }
            Event::ToolResult(t) => match t.outcome {
                Some(Outcome::Schema(described)) => {
                    writeln!(
                        out,
                        "» tool result {} ({} ms): {} tables described",
                        t.call_id,
                        t.elapsed_ms,
                        described.tables.len()
                    )?;
                }
                Some(Outcome::Explanation(explained)) => {
                    writeln!(
                        out,
                        "» tool result {} ({} ms): explained (cost {:.1}, {:.0} rows estimated)",
                        t.call_id, t.elapsed_ms, explained.total_cost, explained.estimated_rows
                    )?;
                    writeln!(out, "  {}", explained.explanation)?;
                }
                Some(Outcome::Summaries(found)) => {
                    writeln!(
                        out,
                        "» tool result {} ({} ms): {} summaries",
                        t.call_id,
                        t.elapsed_ms,
                        found.summaries.len()
                    )?;
                    for s in &found.summaries {
                        writeln!(
                            out,
                            "  {} {} (checked {} s ago): {}",
                            s.id, s.entity_name, s.age_seconds, s.text
                        )?;
                    }
                }
                Some(Outcome::Search(found)) => {
                    writeln!(
                        out,
                        "» tool result {} ({} ms): {} hits in {}",
                        t.call_id,
                        t.elapsed_ms,
                        found.hits.len(),
                        found.collection
                    )?;
                    for hit in &found.hits {
                        let title = hit
                            .fields
                            .get("title")
                            .map(render::value_text)
                            .unwrap_or_default();
                        writeln!(out, "  {} ({:.4}) {title}", hit.key, hit.score)?;
                    }
                }
                Some(Outcome::Sql(sql)) => {
                    writeln!(
                        out,
                        "» tool result {} ({} ms): {} rows",
                        t.call_id, t.elapsed_ms, sql.row_count
                    )?;
                    for (i, a) in sql.attempts.iter().enumerate() {
                        let stage =
                            AttemptStage::try_from(a.stage).unwrap_or(AttemptStage::Unspecified);
                        let outcome = if a.error.is_empty() {
                            "accepted"
                        } else {
                            a.error.as_str()
                        };
                        writeln!(
                            out,
                            "  attempt {} [{}]: {} → {outcome}",
                            i + 1,
                            stage.as_str_name(),
                            a.sql
                        )?;
                    }
                    writeln!(out, "  SQL: {}", sql.sql)?;
                    if let Some(digest) = &sql.digest
                        && sql.rows.as_ref().is_some_and(|r| r.truncated)
                    {
                        let exact = if digest.row_count_exact {
                            ""
                        } else {
                            " or more"
                        };
                        writeln!(
                            out,
                            "  result: {} rows{exact} in all; digest:",
                            digest.row_count
                        )?;
                        for line in digest.text.lines() {
                            writeln!(out, "    {line}")?;
                        }
                    }
                    if !sql.chart_spec_json.is_empty() {
                        writeln!(
                            out,
                            "  chart: Vega-Lite spec available ({} bytes)",
                            sql.chart_spec_json.len()
                        )?;
                    }
                    if let Some(rows) = &sql.rows {
                        for line in markdown_table(rows, rows.rows.len(), CELL_CHARS) {
                            writeln!(out, "  {line}")?;
                        }
                        if rows.truncated {
                            writeln!(out, "  (preview; more rows exist)")?;
                        }
                    }
                }
                Some(Outcome::Error(error)) => {
                    writeln!(
                        out,
                        "» tool error {} ({} ms): {error}",
                        t.call_id, t.elapsed_ms
                    )?;
                }
                None => writeln!(out, "» tool result {} (empty)", t.call_id)?,
            },
            Event::AnswerDelta(d) => {
                if !in_answer {
                    writeln!(out, "» answer:")?;
                    in_answer = true;
                }
                write!(out, "{}", d.text)?;
                out.flush()?;
            }
            Event::FinalAnswer(f) => {
                status = AnswerStatus::try_from(f.status).unwrap_or(AnswerStatus::Unspecified);
                writeln!(out, "» status: {}", status.as_str_name())?;
                if !f.ungrounded_numbers.is_empty() {
                    writeln!(
                        out,
                        "» numbers in no tool result: {}",
                        f.ungrounded_numbers.join(", ")
                    )?;
                }
                for c in &f.citations {
                    let what = if c.sql.is_empty() {
                        &c.source_id
                    } else {
                        &c.sql
                    };
                    writeln!(out, "  cites {}: {what}", c.call_id)?;
                }
            }
            Event::Usage(u) => writeln!(
                out,
                "» usage: {} model calls, {} tool calls, {} tokens ({} prompt{} + {} completion), {}, {} ms",
                u.model_calls,
                u.tool_calls,
                u.total_tokens,
                u.prompt_tokens,
                if u.cached_prompt_tokens > 0 {
                    format!(", {} of them cached", u.cached_prompt_tokens)
                } else {
                    String::new()
                },
                u.completion_tokens,
                if u.cost_known {
                    format!("${:.6}", u.cost_usd)
                } else {
                    "cost unknown (no [model.price])".to_string()
                },
                u.elapsed_ms
            )?,
        }
    }
    Ok(status)
}
