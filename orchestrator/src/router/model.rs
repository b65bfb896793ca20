//! Router mode's model-based classifier: one cheap call to the routing
//! model (`[models.routing]`) that chooses the pipelines for a question,
//! each with its own part of the question. The rules of [`super::classify`]
//! stay the fallback: any failure here (the call fails, the reply is not the
//! JSON asked for, names a pipeline that does not exist or is not available,
//! chooses nothing, or gives a pipeline nothing to look up) is a
//! [`ClassifyError`], never a panic, and the caller routes by rules instead.
//!
//! # The call
//!
//! One non-streaming-style request (the stream is collected): a system
//! message describing the available pipelines, the question as the user
//! message, and a JSON-schema response format (`name = "route"`, strict)
//! whose `pipeline` enum lists only the available pipelines. The expected
//! answer text:
//!
//! ```json
//! {"steps": [{"pipeline": "summaries", "query": "acquisitions", "entity": "Turner"},
//!            {"pipeline": "search", "query": "bequest credit line", "entity": ""},
//!            {"pipeline": "sql", "query": "How many works by Turner are there?", "entity": ""}],
//!  "reason": "trend question about Turner, plus a text search and a count"}
//! ```
//!
//! A reply wrapped in a ```` ```json ```` fence is accepted too (servers
//! that ignore `response_format`).
//!
//! # The result
//!
//! [`ModelRoute`]: the summaries and search steps as a [`Route`] (summaries
//! before search, `unavailable` empty since only available pipelines may be
//! chosen) plus, when the model chose `sql`, the sub-question for the SQL
//! tool in [`ModelRoute::sql`] ([`Pipeline`] has no SQL variant; the caller
//! maps it). Whatever the outcome, [`Classification::call`] accounts the
//! call (task [`TASK_ROUTING`], tokens, cost from the model's price, wall
//! time) so that a failed classification still shows in the usage report.

use std::time::Instant;

use quarry_llm::{ChatModel, ChatRequest, LlmError, Message, ResponseFormat, TASK_ROUTING};
use quarry_proto::v1::ModelCallUsage;
use serde::Deserialize;

use super::{Available, Pipeline, Route, Step};
use crate::usage::set_tokens;

/// The name of the SQL pipeline in the model's reply.
pub const SQL_PIPELINE: &str = "sql";

/// The routing model's choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoute {
    /// The summaries and search steps (summaries first), each with its query
    /// and, for summaries, the entity to look up first; `reason` is the
    /// model's, prefixed `routing model: `; `unavailable` is always empty.
    /// May have no steps when the model chose only `sql`.
    pub route: Route,
    /// The self-contained sub-question for the SQL tool (`GenerateSql`)
    /// when the model chose the `sql` pipeline; never empty when `Some`.
    pub sql: Option<String>,
}

impl ModelRoute {
    /// `sql`, `summaries`, `search` joined by `+` in that order (e.g.
    /// `sql+search`), for the route event.
    pub fn name(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        if self.sql.is_some() {
            names.push(SQL_PIPELINE);
        }
        names.extend(self.route.steps.iter().map(|s| s.pipeline.name()));
        names.join("+")
    }
}

/// Why the routing model's choice cannot be used; the caller falls back to
/// the rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClassifyError {
    /// No pipeline is available, so there is nothing to choose (no call is
    /// made).
    #[error("no pipeline is available to choose from")]
    NothingAvailable,
    /// The call failed (HTTP error, timeout, broken stream).
    #[error("routing model call failed: {0}")]
    Model(#[from] LlmError),
    /// The reply is not the JSON object asked for; holds the start of the
    /// reply.
    #[error("routing model reply is not the json asked for: {0:?}")]
    NotJson(String),
    /// The reply names a pipeline that does not exist.
    #[error("routing model chose unknown pipeline {0:?}")]
    UnknownPipeline(String),
    /// The reply names a pipeline that exists but is not available here.
    #[error("routing model chose {0}, which is not available")]
    Unavailable(String),
    /// The reply names the same pipeline twice.
    #[error("routing model chose {0} twice")]
    Duplicate(String),
    /// The reply chose no pipeline.
    #[error("routing model chose no pipeline")]
    Empty,
    /// The reply gives a pipeline nothing to look up (no query; for
    /// summaries, no entity either).
    #[error("routing model gave {0} nothing to look up")]
    NothingToLookUp(String),
}

/// The outcome of [`classify_with_model`]: the route (or why not) and the
/// accounting of the call, which is made and paid for whatever its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The routing model's choice, or why it cannot be used.
    pub route: Result<ModelRoute, ClassifyError>,
    /// The call: `task = "routing"`, `step = 1`, tokens as the server
    /// reported them (0 when it reported none or the call failed), cost from
    /// [`ChatModel::price`] (`cost_known` false without a price or tokens),
    /// the model's [`ChatModel::name`], wall time from sending to the end of
    /// the answer or the failure. `None` only for
    /// [`ClassifyError::NothingAvailable`], when no call is made.
    pub call: Option<ModelCallUsage>,
}

/// Asks `model` once which of the available pipelines — summaries and
/// search as `available` says, and `sql` when `sql_available` — should
/// answer `question`, with the part of the question each gets. See the
/// module documentation for the request and the reply.
///
/// Never fails as a function: every problem is a [`ClassifyError`] in
/// [`Classification::route`], for the caller to fall back on the rules.
pub async fn classify_with_model(
    model: &dyn ChatModel,
    question: &str,
    available: Available,
    sql_available: bool,
) -> Classification {
    let offered = offered(available, sql_available);
    if offered.is_empty() {
        return Classification {
            route: Err(ClassifyError::NothingAvailable),
            call: None,
        };
    }
    let request = ChatRequest::new(
        vec![
            Message::system(system_prompt(&offered)),
            Message::user(question),
        ],
        vec![],
    )
    .with_response_format(ResponseFormat::JsonSchema {
        name: "route".to_string(),
        schema: route_schema(&offered),
        strict: true,
    });
    let sent = Instant::now();
    let reply = quarry_llm::chat(model, request).await;
    let elapsed = sent.elapsed();
    let mut call = ModelCallUsage {
        step: 1,
        elapsed_ms: elapsed.as_millis() as u64,
        task: TASK_ROUTING.to_string(),
        model: model.name().to_string(),
        elapsed_us: elapsed.as_micros() as u64,
        ..ModelCallUsage::default()
    };
    set_tokens(
        &mut call,
        reply.as_ref().ok().and_then(|r| r.usage),
        model.price(),
    );
    let route = match reply {
        Ok(reply) => parse_reply(&reply.content, available, sql_available),
        Err(error) => Err(ClassifyError::Model(error)),
    };
    Classification {
        route,
        call: Some(call),
    }
}

/// The pipeline names the model may choose, in the order the prompt lists
/// them.
fn offered(available: Available, sql_available: bool) -> Vec<&'static str> {
    let mut names = Vec::new();
    if sql_available {
        names.push(SQL_PIPELINE);
    }
    if available.summaries {
        names.push(Pipeline::Summaries.name());
    }
    if available.search {
        names.push(Pipeline::Search.name());
    }
    names
}

fn describe(pipeline: &str) -> &'static str {
    match pipeline {
        SQL_PIPELINE => {
            "sql: precise look-ups over the structured data — counts, sums, averages, rankings, \
             filters on fields, lists of records. `query`: the part of the question it answers, \
             rewritten as a self-contained question in plain language (not SQL)."
        }
        "summaries" => {
            "summaries: stored narrative summaries of how things developed over time (trends, \
             histories, figures per decade) for named entities. `query`: the words to find \
             summaries by; `entity`: the name of the person, group or topic to look up first, \
             or \"\" when none is named."
        }
        _ => {
            "search: meaning-based search over the text of records (titles, descriptions, free \
             text), for questions that describe what to find. `query`: the words to search for."
        }
    }
}

fn system_prompt(offered: &[&str]) -> String {
    let mut prompt = String::from(
        "You route a question to the retrieval pipelines that can answer it. \
         Choose one or more of these pipelines, each at most once:\n",
    );
    for name in offered {
        prompt.push_str("- ");
        prompt.push_str(describe(name));
        prompt.push('\n');
    }
    prompt.push_str(
        "A question with several parts may go to several pipelines, each with its own part. \
         Use only the pipelines listed. Set `entity` to \"\" for every pipeline but summaries. \
         Reply with a JSON object {\"steps\": [{\"pipeline\": \"...\", \"query\": \"...\", \
         \"entity\": \"...\"}], \"reason\": \"one short sentence\"}.",
    );
    prompt
}

/// JSON schema of the reply, with `pipeline` limited to `offered`.
fn route_schema(offered: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "pipeline": {"type": "string", "enum": offered},
                        "query": {"type": "string"},
                        "entity": {"type": "string", "description": "summaries only; empty otherwise"}
                    },
                    "required": ["pipeline", "query", "entity"],
                    "additionalProperties": false
                }
            },
            "reason": {"type": "string"}
        },
        "required": ["steps", "reason"],
        "additionalProperties": false
    })
}

#[derive(Debug, Deserialize)]
struct Reply {
    steps: Vec<ReplyStep>,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
struct ReplyStep {
    pipeline: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    entity: Option<String>,
}

/// Longest piece of an unusable reply kept in [`ClassifyError::NotJson`], in
/// characters.
const MAX_REPLY_IN_ERROR: usize = 200;

/// Turns the reply text into a [`ModelRoute`], checking every pipeline
/// against what is available.
fn parse_reply(
    text: &str,
    available: Available,
    sql_available: bool,
) -> Result<ModelRoute, ClassifyError> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .map(|b| b.trim_end().trim_end_matches("```"))
        .unwrap_or(trimmed)
        .trim();
    let reply: Reply = serde_json::from_str(body)
        .map_err(|_| ClassifyError::NotJson(trimmed.chars().take(MAX_REPLY_IN_ERROR).collect()))?;
    if reply.steps.is_empty() {
        return Err(ClassifyError::Empty);
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut sql: Option<String> = None;
    for step in reply.steps {
        let name = step.pipeline.trim().to_lowercase();
        let query = step.query.trim().to_string();
        let (pipeline, is_available) = match name.as_str() {
            SQL_PIPELINE => {
                if !sql_available {
                    return Err(ClassifyError::Unavailable(name));
                }
                if sql.is_some() {
                    return Err(ClassifyError::Duplicate(name));
                }
                if query.is_empty() {
                    return Err(ClassifyError::NothingToLookUp(name));
                }
                sql = Some(query);
                continue;
            }
            "summaries" => (Pipeline::Summaries, available.summaries),
            "search" => (Pipeline::Search, available.search),
            _ => return Err(ClassifyError::UnknownPipeline(step.pipeline)),
        };
        if !is_available {
            return Err(ClassifyError::Unavailable(name));
        }
        if steps.iter().any(|s| s.pipeline == pipeline) {
            return Err(ClassifyError::Duplicate(name));
        }
        let entity = match pipeline {
            Pipeline::Summaries => step
                .entity
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty()),
            Pipeline::Search => None,
        };
        if query.is_empty() && entity.is_none() {
            return Err(ClassifyError::NothingToLookUp(name));
        }
        steps.push(Step {
            pipeline,
            query,
            entity,
        });
    }
    steps.sort_by_key(|s| s.pipeline);
    let reason = reply.reason.trim();
    Ok(ModelRoute {
        route: Route {
            steps,
            reason: if reason.is_empty() {
                "routing model: no reason given".to_string()
            } else {
                format!("routing model: {reason}")
            },
            unavailable: Vec::new(),
        },
        sql,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
    use quarry_llm::{ModelConfig, OpenAiChatModel, Price};

    use super::*;

    const BOTH: Available = Available {
        summaries: true,
        search: true,
    };

    fn model(server: &ScriptedServer, price: Option<Price>) -> OpenAiChatModel {
        let config = ModelConfig {
            timeout_secs: 10,
            max_retries: 0,
            price,
            ..ModelConfig::new(server.base_url(), "router-mini")
        };
        OpenAiChatModel::with_api_key(config, None).unwrap()
    }

    fn reply(steps: serde_json::Value) -> ScriptedTurn {
        ScriptedTurn::text(serde_json::json!({"steps": steps, "reason": "because"}).to_string())
    }

    #[tokio::test]
    async fn a_good_reply_becomes_steps_with_their_own_queries_and_the_call_is_priced() {
        let server = ScriptedServer::start(vec![
            reply(serde_json::json!([
                {"pipeline": "search", "query": "bequest credit line", "entity": "Ignored"},
                {"pipeline": "sql", "query": "How many works by Turner are there?", "entity": ""},
                {"pipeline": "summaries", "query": "acquisitions", "entity": " Turner "}
            ]))
            .with_usage(400, 40)
            .with_delay(Duration::from_millis(30)),
        ])
        .await;
        let price = Price {
            input_per_million: 0.15,
            output_per_million: 0.6,
        };
        let question = "Turner's acquisition history, how many works, and any bequests?";
        let out = classify_with_model(&model(&server, Some(price)), question, BOTH, true).await;

        let chosen = out.route.unwrap();
        assert_eq!(chosen.name(), "sql+summaries+search");
        assert_eq!(chosen.route.name(), "summaries+search", "summaries first");
        assert_eq!(
            chosen.route.steps,
            [
                Step {
                    pipeline: Pipeline::Summaries,
                    query: "acquisitions".into(),
                    entity: Some("Turner".into()),
                },
                Step {
                    pipeline: Pipeline::Search,
                    query: "bequest credit line".into(),
                    entity: None,
                },
            ]
        );
        assert_eq!(
            chosen.sql.as_deref(),
            Some("How many works by Turner are there?")
        );
        assert_eq!(chosen.route.reason, "routing model: because");
        assert!(chosen.route.unavailable.is_empty());

        let call = out.call.unwrap();
        assert_eq!(
            (
                call.task.as_str(),
                call.model.as_str(),
                call.step,
                call.prompt_tokens,
                call.completion_tokens,
                call.total_tokens
            ),
            ("routing", "router-mini", 1, 400, 40, 440)
        );
        // 400 × 0.15 / 1e6 + 40 × 0.6 / 1e6 = 0.00006 + 0.000024
        assert!(call.cost_known);
        assert!(
            (call.cost_usd - 0.000084).abs() < 1e-15,
            "{}",
            call.cost_usd
        );
        assert!(call.elapsed_ms >= 30, "{call:?}");
        assert!(call.elapsed_us >= call.elapsed_ms * 1000);

        let requests = server.requests();
        assert_eq!(requests.len(), 1, "exactly one call");
        let format = &requests[0]["response_format"];
        assert_eq!(format["type"], "json_schema");
        assert_eq!(
            format["json_schema"]["schema"]["properties"]["steps"]["items"]["properties"]["pipeline"]
                ["enum"],
            serde_json::json!(["sql", "summaries", "search"])
        );
        assert_eq!(requests[0]["messages"][1]["content"], question);
    }

    #[tokio::test]
    async fn only_available_pipelines_are_offered_and_an_unavailable_choice_is_an_error() {
        let server = ScriptedServer::start(vec![
            reply(serde_json::json!([
                {"pipeline": "summaries", "query": "women artists", "entity": ""}
            ]))
            .with_usage(100, 10),
            reply(serde_json::json!([
                {"pipeline": "sql", "query": "How many?", "entity": ""}
            ])),
        ])
        .await;
        let model = model(&server, None);
        let search_only = Available {
            summaries: false,
            search: true,
        };
        let out = classify_with_model(&model, "How has this changed?", search_only, false).await;
        assert_eq!(
            out.route,
            Err(ClassifyError::Unavailable("summaries".into()))
        );
        let call = out.call.unwrap();
        assert_eq!(call.total_tokens, 110, "a refused reply is still accounted");
        assert!(!call.cost_known, "no price: cost unknown");
        let requests = server.requests();
        let system = requests[0]["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("- search:"), "{system}");
        assert!(
            !system.contains("- summaries:") && !system.contains("- sql:"),
            "{system}"
        );
        assert_eq!(
            requests[0]["response_format"]["json_schema"]["schema"]["properties"]["steps"]["items"]
                ["properties"]["pipeline"]["enum"],
            serde_json::json!(["search"])
        );

        let out = classify_with_model(&model, "How many works?", BOTH, false).await;
        assert_eq!(out.route, Err(ClassifyError::Unavailable("sql".into())));
    }

    #[tokio::test]
    async fn garbage_replies_are_errors_not_panics() {
        let server = ScriptedServer::start(vec![
            ScriptedTurn::text("I would use search for this one."),
            reply(serde_json::json!([{"pipeline": "web", "query": "x", "entity": ""}])),
            reply(serde_json::json!([])),
            reply(serde_json::json!([{"pipeline": "search", "query": "  ", "entity": ""}])),
            reply(serde_json::json!([
                {"pipeline": "search", "query": "a", "entity": ""},
                {"pipeline": "search", "query": "b", "entity": ""}
            ])),
            ScriptedTurn::text("{\"steps\": \"search\"}"),
            ScriptedTurn::text(
                "```json\n{\"steps\": [{\"pipeline\": \"Search\", \"query\": \"storms at sea\", \"entity\": \"\"}], \"reason\": \"\"}\n```",
            ),
        ])
        .await;
        let model = model(&server, None);
        let mut outcomes = Vec::new();
        for _ in 0..7 {
            outcomes.push(
                classify_with_model(&model, "watercolours of storms", BOTH, true)
                    .await
                    .route,
            );
        }
        assert!(
            matches!(&outcomes[0], Err(ClassifyError::NotJson(text)) if text.starts_with("I would")),
            "{:?}",
            outcomes[0]
        );
        assert_eq!(
            outcomes[1],
            Err(ClassifyError::UnknownPipeline("web".into()))
        );
        assert_eq!(outcomes[2], Err(ClassifyError::Empty));
        assert_eq!(
            outcomes[3],
            Err(ClassifyError::NothingToLookUp("search".into()))
        );
        assert_eq!(outcomes[4], Err(ClassifyError::Duplicate("search".into())));
        assert!(
            matches!(outcomes[5], Err(ClassifyError::NotJson(_))),
            "{:?}",
            outcomes[5]
        );
        // a fenced reply from a server that ignores response_format is fine
        let fenced = outcomes[6].clone().unwrap();
        assert_eq!(fenced.name(), "search");
        assert_eq!(fenced.route.steps[0].query, "storms at sea");
        assert_eq!(fenced.route.reason, "routing model: no reason given");
    }

    #[tokio::test]
    async fn an_http_error_is_an_error_with_the_call_accounted() {
        let server = ScriptedServer::start(vec![ScriptedTurn::error(
            503,
            r#"{"error": {"message": "overloaded", "type": "server_error"}}"#,
        )])
        .await;
        let price = Price {
            input_per_million: 0.15,
            output_per_million: 0.6,
        };
        let out = classify_with_model(&model(&server, Some(price)), "anything", BOTH, true).await;
        assert!(
            matches!(
                &out.route,
                Err(ClassifyError::Model(LlmError::Http { status: 503, .. }))
            ),
            "{:?}",
            out.route
        );
        let call = out.call.unwrap();
        assert_eq!((call.total_tokens, call.cost_known), (0, false));
        assert_eq!(call.task, TASK_ROUTING);
    }

    #[tokio::test]
    async fn with_nothing_available_no_call_is_made() {
        let server = ScriptedServer::start(vec![]).await;
        let out = classify_with_model(
            &model(&server, None),
            "anything",
            Available::default(),
            false,
        )
        .await;
        assert_eq!(out.route, Err(ClassifyError::NothingAvailable));
        assert_eq!(out.call, None);
        assert!(server.requests().is_empty());
    }
}
