//! The events of one `Ask` as they are streamed to the client: route,
//! answer deltas, and each tool call's start and result (timed, logged in
//! the turn, accounted).

use std::time::{Duration, Instant};

use quarry_llm::ToolCall;
use quarry_proto::v1::{
    AnswerDelta, AskMode, AskResponse, ModelCallUsage, RouteDecided, ToolCallStarted, ToolResult,
    TurnToolCall, ask_response::Event, tool_result::Outcome,
};

use super::run::{Gone, Run};

impl Run {
    /// Streams `event`; `Gone` when the client stopped listening.
    pub(super) async fn emit(&self, event: Event) -> Result<(), Gone> {
        self.tx
            .send(Ok(AskResponse { event: Some(event) }))
            .await
            .map_err(|_| Gone)
    }

    /// Streams `text` as the next piece of the answer (nothing when empty).
    pub(super) async fn delta(&mut self, text: &str) -> Result<(), Gone> {
        if text.is_empty() {
            return Ok(());
        }
        self.answer.push_str(text);
        self.emit(Event::AnswerDelta(AnswerDelta {
            text: text.to_string(),
        }))
        .await
    }

    /// Emits the route event (once per request).
    pub(super) async fn route(
        &mut self,
        mode: AskMode,
        route: &str,
        reason: String,
    ) -> Result<(), Gone> {
        if !self.routed {
            quarry_metrics::ask_stage(quarry_metrics::AskStage::Route, self.started.elapsed());
        }
        self.routed = true;
        {
            let mut turn = self.log();
            turn.mode = mode;
            turn.route = route.to_string();
        }
        self.emit(Event::Route(RouteDecided {
            mode: mode as i32,
            route: route.to_string(),
            reason,
        }))
        .await
    }

    /// Emits `tool_call_started` for `call` and starts its clock: the
    /// returned instant is the call's start.
    pub(super) async fn tool_started(&self, call: &ToolCall) -> Result<Instant, Gone> {
        self.emit(Event::ToolCallStarted(ToolCallStarted {
            call_id: call.id.clone(),
            tool_name: call.name.clone(),
            arguments_json: call.arguments.clone(),
        }))
        .await?;
        self.log().tool_calls.push(TurnToolCall {
            call_id: call.id.clone(),
            tool_name: call.name.clone(),
            arguments_json: call.arguments.clone(),
            ..TurnToolCall::default()
        });
        Ok(self.clock().begin())
    }

    /// Stops the clock of the call that started at `started`, keeps the
    /// `model_calls` the tool made for the usage, and emits its
    /// `tool_result`.
    pub(super) async fn tool_finished(
        &self,
        call: &ToolCall,
        outcome: Outcome,
        model_calls: Vec<ModelCallUsage>,
        started: Instant,
    ) -> Result<(), Gone> {
        let elapsed = {
            let mut clock = self.clock();
            clock.tool_model_calls(model_calls);
            if let Outcome::Sql(sql) = &outcome {
                clock.database += Duration::from_micros(sql.database_us);
                match sql.result_cache() {
                    quarry_proto::v1::ResultCache::Hit => clock.result_cache_hits += 1,
                    quarry_proto::v1::ResultCache::Miss => clock.result_cache_misses += 1,
                    quarry_proto::v1::ResultCache::Unspecified => {}
                }
            }
            clock.end(started)
        };
        {
            let mut log = self.log();
            if let Outcome::Sql(sql) = &outcome
                && !sql.sql.is_empty()
            {
                log.last_sql = Some(sql.sql.clone());
            }
            if let Some(logged) = log.tool_calls.iter_mut().find(|c| c.call_id == call.id) {
                match &outcome {
                    Outcome::Sql(sql) => {
                        logged.sql = sql.sql.clone();
                        logged.result_count = sql.row_count;
                    }
                    Outcome::Search(found) => logged.result_count = found.hits.len() as u64,
                    Outcome::Summaries(found) => {
                        logged.result_count = found.summaries.len() as u64;
                    }
                    Outcome::Schema(described) => {
                        logged.result_count = described.tables.len() as u64;
                    }
                    Outcome::Explanation(_) => logged.result_count = 1,
                    Outcome::Error(message) => logged.error = message.clone(),
                }
            }
        }
        self.emit(Event::ToolResult(ToolResult {
            call_id: call.id.clone(),
            tool_name: call.name.clone(),
            outcome: Some(outcome),
            elapsed_ms: elapsed.as_millis() as u64,
            elapsed_us: elapsed.as_micros() as u64,
        }))
        .await
    }
}
