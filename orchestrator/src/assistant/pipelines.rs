//! Router mode: golden SQL first, else the routing model's or the rules'
//! pipelines (summaries, search; SQL in [`sql`]), whose findings make a
//! deterministic answer. Each pipeline's tool calls stream as tool events
//! with citations, as in agentic mode.

mod sql;

use quarry_llm::ToolCall;
use quarry_proto::v1::{
    AnswerStatus, AskMode, CollectionInfo, EntityMatchKind, GenerateSqlRequest, SearchMode,
    SearchRequest, tool_result::Outcome,
};
use tracing::{Instrument as _, info, warn};

use super::run::{Ending, Gone, Run};
use crate::{
    refine,
    router::{
        self, Available, Pipeline, Step,
        answer::{self, Findings, SummarySource},
    },
    tools::{ModelTool as _, ToolOutcome, search::SEARCH_DOCUMENTS, summaries::GET_SUMMARIES},
};

/// Summaries a router-mode summary search asks for.
const ROUTER_SUMMARIES: u32 = 3;

/// Hits a router-mode search asks for.
const ROUTER_HITS: u32 = 5;

impl Run {
    /// Router mode: golden SQL first (`GenerateSql`, dry run); when no pair
    /// matches, the classifier's pipelines ([`crate::router`]), whose
    /// findings make a deterministic answer.
    pub(super) async fn router(&mut self, question: &str, why: &str) -> Result<Ending, Gone> {
        if let Some(previous) = self.history.last().and_then(|t| t.sql.clone())
            && let Some(refinement) = refine::parse(question)
        {
            return self.refine_previous(previous, refinement, why).await;
        }
        // with a routing model, the look-up is golden pairs only: the
        // routing model decides whether the SQL tool should write SQL
        let routing = self
            .models
            .routing
            .clone()
            .filter(|_| self.assistant.config.route_with_model);
        // a tenant over budget is routed by rules, without a model call
        let routing = match routing {
            Some(model) => match self.budget_check().await {
                Ok(()) => Some(model),
                Err(over) => {
                    info!(%over, "budget spent; routing by rules");
                    None
                }
            },
            None => None,
        };
        let mut sql = self.assistant.sql.clone();
        let generated = sql
            .generate_sql(self.caller.request(GenerateSqlRequest {
                question: question.to_string(),
                previous_sql: String::new(),
                dry_run: true,
                max_rows: 0,
                golden_only: routing.is_some(),
            }))
            .await;
        let (golden, sql_error) = match generated {
            Ok(response) => {
                let generated = response.into_inner();
                self.accounting.account_calls(generated.model_calls.clone());
                if !generated.sql.is_empty() {
                    return self.known_sql(generated, why).await;
                }
                (generated.explanation, None)
            }
            Err(status) => {
                warn!(error = %status.message(), "generate_sql failed");
                (String::new(), Some(status.message().to_string()))
            }
        };

        let (available, collection) = self.router_tools(question).await;
        let (route, route_name, sql_question) = match routing {
            Some(model) => {
                let classified =
                    router::model::classify_with_model(model.as_ref(), question, available, true)
                        .await;
                self.accounting.account_calls(classified.call);
                match classified.route {
                    Ok(chosen) => {
                        let name = chosen.name();
                        (chosen.route, name, chosen.sql)
                    }
                    Err(error) => {
                        warn!(%error, "routing model's choice unusable; routing by rules");
                        let mut route = router::classify(question, available);
                        route.reason = format!(
                            "the routing model's choice could not be used ({error}), so by rules: {}",
                            route.reason
                        );
                        let name = route.name();
                        (route, name, None)
                    }
                }
            }
            None => {
                let route = router::classify(question, available);
                let name = route.name();
                (route, name, None)
            }
        };
        let looked_up = if sql_error.is_some() {
            "the golden question look-up failed"
        } else {
            "no golden question matched"
        };
        self.route(
            AskMode::Router,
            &route_name,
            format!("{why}; {looked_up}; {}", route.reason),
        )
        .await?;
        info!(route = %route_name, reason = %route.reason, "routed");

        let mut sql_answered = false;
        if let Some(sub_question) = &sql_question {
            sql_answered = self.sql_pipeline(sub_question).await?;
            if !route.steps.is_empty() {
                self.delta("\n\n").await?;
            }
        }
        if sql_answered && route.steps.is_empty() {
            return Ok(Ending::with(AnswerStatus::Answered));
        }

        let mut findings = Findings {
            unavailable: route.unavailable.clone(),
            model_configured: self.assistant.models.has_answer(),
            ..Findings::default()
        };
        for step in &route.steps {
            match step.pipeline {
                Pipeline::Summaries => self.summaries_pipeline(step, &mut findings).await?,
                Pipeline::Search => {
                    self.search_pipeline(step, collection.as_ref(), &mut findings)
                        .await?;
                }
            }
        }

        let max_chars = self.assistant.config.max_cell_chars;
        if findings.answered() || sql_answered {
            let mut text = if findings.answered() {
                answer::answer(&findings, max_chars)
            } else {
                answer::no_answer(&findings, true, &route.reason, "")
            };
            if let Some(message) = &sql_error {
                text.push_str(&format!(
                    "\n(The golden-question look-up failed: {message}.)"
                ));
            }
            self.delta(&text).await?;
            return Ok(Ending::with(AnswerStatus::Answered));
        }
        let text = answer::no_answer(&findings, !route.steps.is_empty(), &route.reason, &golden);
        match sql_error {
            Some(message) => {
                self.delta(&format!("I could not look up an answer: {message}. {text}"))
                    .await?;
                Ok(Ending::with(AnswerStatus::Failed))
            }
            None => {
                self.delta(&text).await?;
                Ok(Ending::with(AnswerStatus::Unanswered))
            }
        }
    }

    /// Which router pipelines can run for this caller, and the collection
    /// to search (named in the question, else the first). Listing failures
    /// are logged and make the pipeline unavailable.
    async fn router_tools(&self, question: &str) -> (Available, Option<CollectionInfo>) {
        let summaries = match &self.assistant.summaries {
            None => false,
            Some(tool) => tool
                .kinds(&self.caller)
                .await
                .is_some_and(|kinds| !kinds.is_empty()),
        };
        let collection = match &self.assistant.search {
            None => None,
            Some(tool) => tool.collections(&self.caller).await.and_then(|mut all| {
                let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
                router::pick_collection(question, &names).map(|i| all.swap_remove(i))
            }),
        };
        let available = Available {
            summaries,
            search: collection.is_some(),
        };
        (available, collection)
    }

    /// The next router-mode tool call: id `call_<n>`, JSON arguments.
    fn router_call(&mut self, name: &str, arguments: &serde_json::Value) -> ToolCall {
        self.router_calls += 1;
        self.accounting.tool_calls(1);
        ToolCall {
            id: format!("call_{}", self.router_calls),
            name: name.to_string(),
            arguments: arguments.to_string(),
        }
    }

    /// The summaries pipeline: the entity named in the question
    /// (`GetSummaries`), else summaries matching every query word, else any
    /// (`SearchSummaries`, 3 summaries); each try is a `get_summaries` call
    /// in the stream, and the first that finds something ends it.
    async fn summaries_pipeline(
        &mut self,
        step: &Step,
        findings: &mut Findings,
    ) -> Result<(), Gone> {
        let mut tries: Vec<(serde_json::Value, SummarySource, String)> = Vec::new();
        if let Some(entity) = &step.entity {
            tries.push((
                serde_json::json!({ "entity": entity }),
                SummarySource::Entity {
                    entity: entity.clone(),
                    fuzzy: false,
                },
                format!("looking up “{entity}”"),
            ));
        }
        if !step.query.is_empty() {
            let query = step.query.clone();
            tries.push((
                serde_json::json!({ "query": query, "limit": ROUTER_SUMMARIES }),
                SummarySource::AllWords {
                    query: query.clone(),
                },
                format!("searching them for “{query}”"),
            ));
            let words: Vec<&str> = query.split_whitespace().collect();
            if words.len() > 1 {
                tries.push((
                    serde_json::json!({ "query": words.join(" or "), "limit": ROUTER_SUMMARIES }),
                    SummarySource::SomeWords {
                        query: query.clone(),
                    },
                    format!("searching them for any of “{query}”"),
                ));
            }
        }
        for (arguments, mut source, what) in tries {
            let call = self.router_call(GET_SUMMARIES, &arguments);
            let started = self.tool_started(&call).await?;
            // the same call the model makes: the arguments are the tool's
            let outcome = match self.assistant.summaries.clone() {
                Some(tool) => {
                    tool.call(&call, self.tool_context())
                        .instrument(crate::tools::call_span(&call))
                        .await
                }
                None => ToolOutcome::failed(&call.id, "the summaries tool is not configured"),
            };
            self.tool_finished(&call, outcome.result.clone(), Vec::new(), started)
                .await?;
            self.citations.extend(outcome.citations);
            match outcome.result {
                Outcome::Summaries(found) if !found.summaries.is_empty() => {
                    if let SummarySource::Entity { fuzzy, .. } = &mut source {
                        *fuzzy = found.r#match == EntityMatchKind::Fuzzy as i32;
                    }
                    findings.summaries = Some((found, source));
                    return Ok(());
                }
                Outcome::Error(message) => findings
                    .misses
                    .push((Pipeline::Summaries, format!("{what} failed ({message})"))),
                Outcome::Summaries(_)
                | Outcome::Sql(_)
                | Outcome::Search(_)
                | Outcome::Schema(_)
                | Outcome::Explanation(_) => findings
                    .misses
                    .push((Pipeline::Summaries, format!("{what} found nothing"))),
            }
        }
        Ok(())
    }

    /// The search pipeline: one hybrid `search_documents` call over
    /// `collection` for the step's words, returning the collection's text
    /// and stored fields.
    async fn search_pipeline(
        &mut self,
        step: &Step,
        collection: Option<&CollectionInfo>,
        findings: &mut Findings,
    ) -> Result<(), Gone> {
        let (Some(info), Some(tool)) = (collection, self.assistant.search.clone()) else {
            findings.unavailable.push(Pipeline::Search);
            return Ok(());
        };
        let mut fields: Vec<String> = Vec::new();
        for field in info.text_fields.iter().chain(&info.stored_fields) {
            if !fields.contains(field) {
                fields.push(field.clone());
            }
        }
        let request = SearchRequest {
            collection: info.name.clone(),
            query: step.query.clone(),
            filter: None,
            mode: SearchMode::Hybrid as i32,
            k: ROUTER_HITS,
            fields: fields.clone(),
        };
        let arguments = serde_json::json!({
            "collection": info.name,
            "query": step.query,
            "k": ROUTER_HITS,
            "mode": "hybrid",
            "fields": fields,
        });
        let call = self.router_call(SEARCH_DOCUMENTS, &arguments);
        let what = format!("searching “{}” for “{}”", info.name, step.query);
        let started = self.tool_started(&call).await?;
        let result = tool.search(request, &self.caller).await;
        let outcome = tool.outcome(&call.id, result);
        self.tool_finished(&call, outcome.result.clone(), Vec::new(), started)
            .await?;
        self.citations.extend(outcome.citations);
        match outcome.result {
            Outcome::Search(found) if !found.hits.is_empty() => findings.hits = Some(found),
            Outcome::Error(message) => findings
                .misses
                .push((Pipeline::Search, format!("{what} failed ({message})"))),
            Outcome::Search(_)
            | Outcome::Sql(_)
            | Outcome::Summaries(_)
            | Outcome::Schema(_)
            | Outcome::Explanation(_) => findings
                .misses
                .push((Pipeline::Search, format!("{what} found nothing"))),
        }
        Ok(())
    }
}
