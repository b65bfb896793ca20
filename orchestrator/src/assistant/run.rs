//! The lifecycle of one `Ask`: [`Assistant::ask`], the run's state, its
//! start (`started` event, mode, deadline, the client going away), its end
//! (final answer, usage) and the stored turn.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use quarry_db::usage::UsageAmounts;
use quarry_llm::ChatModel;
use quarry_proto::v1::{
    AnswerStatus, AskMode, AskRequest, AskResponse, Citation, FinalAnswer, Started, TurnToolCall,
    Usage, ask_response::Event,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{Instrument, info, info_span, warn};

use super::{AskStream, Assistant, models::AskModels};
use crate::{
    budget::OverBudget,
    caller::AskCaller,
    conversation::{PriorTurn, TurnRecord, referenced_pii},
    tools::ToolContext,
    usage::{Accounting, ToolClock},
};

impl Assistant {
    /// Starts answering `request` (already validated by the caller) for
    /// `caller` and returns the event stream once the conversation it
    /// continues (if any) has been read. The request's id is the caller's
    /// (`x-request-id`, else a fresh UUID). The work runs on its own task
    /// and stops when the receiver is dropped (the client went away).
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` (with `RetryInfo`) when the caller's tenant has
    /// spent one of its budgets (the message names it; the delay is the time
    /// until its window resets) or has `max_asks_per_tenant` Asks in flight; `NOT_FOUND` when
    /// `conversation_id` names no live conversation of the caller; `FAILED_PRECONDITION` when it names one but conversations are
    /// not kept; `UNAVAILABLE` when the conversation store fails.
    pub async fn ask(
        self: &Arc<Self>,
        request: AskRequest,
        caller: AskCaller,
    ) -> Result<AskStream, Status> {
        if let Some(budgets) = &self.budgets {
            budgets
                .check(&caller.caller.principal.tenant)
                .await
                .map_err(Status::from)?;
        }
        // held until the work ends, on the work's task
        let slot = self
            .asks
            .acquire(&caller.caller.principal.tenant)
            .await
            .map_err(Status::from)?;
        let (conversation_id, history) = if request.conversation_id.is_empty() {
            (uuid::Uuid::new_v4(), Vec::new())
        } else {
            let id = uuid::Uuid::parse_str(&request.conversation_id).map_err(|_| {
                quarry_proto::status::bad_request("conversation_id", "must be empty or a UUID")
            })?;
            let Some(store) = &self.conversations else {
                return Err(Status::failed_precondition(
                    "conversation_id: this server does not keep conversations; leave it empty",
                ));
            };
            let history = store
                .history(id, &caller.caller.principal, self.config.conversation_turns)
                .await?;
            (id, history)
        };
        let (tx, rx) = mpsc::channel(self.config.event_buffer.max(1));
        let span = info_span!(
            "ask",
            request_id = %caller.caller.request_id,
            tenant = %caller.caller.principal.tenant,
            subject = %caller.caller.principal.subject,
        );
        let this = Arc::clone(self);
        tokio::spawn(
            async move {
                let mut run = Run::new(this, caller, tx);
                run.conversation_id = conversation_id;
                run.set_history(history);
                run.execute(request).await;
                drop(slot);
            }
            .instrument(span),
        );
        Ok(ReceiverStream::new(rx))
    }
}

/// The client stopped listening; stop working.
#[derive(Debug)]
pub(super) struct Gone;

/// How a run ended, before the final event is written.
pub(super) struct Ending {
    pub(super) status: AnswerStatus,
    /// Text appended to the streamed answer (also streamed) — e.g. why it stopped.
    pub(super) note: Option<String>,
}

impl Ending {
    /// An ending with no note.
    pub(super) fn with(status: AnswerStatus) -> Self {
        Self { status, note: None }
    }
}

/// One `Ask` being answered.
pub(super) struct Run {
    pub(super) assistant: Arc<Assistant>,
    pub(super) caller: AskCaller,
    /// This request's models, behind its pseudonymizer: every model call of
    /// the run goes through them.
    pub(super) models: AskModels,
    pub(super) tx: mpsc::Sender<Result<AskResponse, Status>>,
    pub(super) started: Instant,
    /// The answer text streamed so far.
    pub(super) answer: String,
    pub(super) citations: Vec<Citation>,
    pub(super) accounting: Accounting,
    pub(super) preview_rows: usize,
    /// Whether the route event has been emitted.
    pub(super) routed: bool,
    /// Tool calls router mode has made (its call ids are `call_1`, `call_2`, …).
    pub(super) router_calls: u32,
    /// What a model-written answer may take numbers from: the question and
    /// every tool result as the model was shown it; `None` in router mode.
    pub(super) evidence: Option<Vec<String>>,
    /// Time spent in tool calls and in the database, for the usage event.
    tools_clock: Mutex<ToolClock>,
    /// The conversation this request is a turn of.
    pub(super) conversation_id: uuid::Uuid,
    /// Its earlier turns (the most recent `conversation_turns`), oldest first.
    pub(super) history: Vec<PriorTurn>,
    /// What is stored as this turn: the request, mode, route, tool calls and
    /// the last SQL that ran.
    turn: Mutex<TurnLog>,
    /// This run's hold on its tenant's budgets (`quarry.budget_holds`),
    /// released when the run is charged.
    budget_hold: uuid::Uuid,
}

/// The parts of a turn gathered while it runs.
#[derive(Debug, Default)]
pub(super) struct TurnLog {
    request_id: String,
    question: String,
    pub(super) mode: AskMode,
    pub(super) route: String,
    /// In the order the calls started; results filled in as they finish.
    pub(super) tool_calls: Vec<TurnToolCall>,
    pub(super) last_sql: Option<String>,
}

impl Run {
    pub(super) fn new(
        assistant: Arc<Assistant>,
        caller: AskCaller,
        tx: mpsc::Sender<Result<AskResponse, Status>>,
    ) -> Self {
        let preview_rows = assistant.config.preview_rows as usize;
        let models = assistant.models.for_ask(&caller.caller);
        Self {
            assistant,
            caller,
            models,
            tx,
            started: Instant::now(),
            answer: String::new(),
            citations: Vec::new(),
            accounting: Accounting::default(),
            preview_rows,
            routed: false,
            router_calls: 0,
            evidence: None,
            tools_clock: Mutex::new(ToolClock::default()),
            conversation_id: uuid::Uuid::nil(),
            history: Vec::new(),
            turn: Mutex::new(TurnLog::default()),
            budget_hold: uuid::Uuid::new_v4(),
        }
    }

    /// Makes `history` (oldest first) the earlier turns of this run and
    /// seeds its pseudonymizer with their personal data, newest turn first,
    /// before any model call: the earlier questions, answers and SQL are
    /// sent to a model as placeholders (the answers of a `pii:read` caller
    /// were stored restored), each value with the placeholder its turn gave
    /// it where that is still free, and one seen again in this request's
    /// rows gets that same placeholder.
    pub(super) fn set_history(&mut self, history: Vec<PriorTurn>) {
        for turn in history.iter().rev() {
            for known in &turn.pii {
                self.models.pii.seed(&known.placeholder, &known.value);
            }
        }
        self.history = history;
    }

    /// What a tool call of this request is made in.
    pub(super) fn tool_context(&self) -> ToolContext<'_> {
        ToolContext {
            caller: &self.caller,
            pii: &self.models.pii,
            preview_rows: self.preview_rows,
            previous_sql: self.history.iter().rev().find_map(|t| t.sql.as_deref()),
        }
    }

    pub(super) async fn execute(&mut self, request: AskRequest) {
        let config = &self.assistant.config;
        if request.preview_rows > 0 {
            self.preview_rows = request.preview_rows.min(config.max_preview_rows) as usize;
        }
        let configured = Duration::from_secs(config.deadline_secs);
        let deadline = match self.caller.caller.remaining() {
            Some(d) if d < configured => d,
            _ => configured,
        };
        let request_id = self.caller.caller.request_id.clone();
        {
            let mut turn = self.log();
            turn.request_id = request_id.clone();
            turn.question = request.question.clone();
        }
        let started = Started {
            conversation_id: self.conversation_id.to_string(),
            request_id,
        };
        if self.emit(Event::Started(started)).await.is_err() {
            self.charge_unfinished().await;
            return;
        }
        // Let the response stream send `started` now. What follows (route,
        // schema context, prompt, the model request) mostly runs without an
        // await that is not already ready until the model request goes out;
        // meanwhile the stream's task, woken by the send, waits in tokio's
        // LIFO slot on this worker, which other workers cannot steal.
        // `quarry bench ask`, one stream: first event 0.77–0.82 ms p50
        // without this yield, 0.44–0.49 ms with it.
        tokio::task::yield_now().await;
        let closed = self.tx.clone();
        let work = async {
            match self.choose_mode(&request) {
                (Some(model), why) => {
                    self.route(AskMode::Agentic, "agent", why).await?;
                    self.agentic(model, &request.question).await
                }
                (None, why) => {
                    let step = info_span!("ask.step", step = 1, mode = "router");
                    self.router(&request.question, &why).instrument(step).await
                }
            }
        };
        // The client going away must stop the work even while nothing is
        // being emitted (a tool call running, a model not yet streaming):
        // dropping `work` drops the in-flight tool RPC, which cancels its
        // database query, and the model's HTTP stream.
        let timed = tokio::select! {
            timed = tokio::time::timeout(deadline, work) => timed,
            () = closed.closed() => {
                info!("client went away; stopping");
                self.charge_unfinished().await;
                return;
            }
        };
        let outcome = match timed {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(Gone)) => {
                info!("client went away; stopping");
                self.charge_unfinished().await;
                return;
            }
            Err(_elapsed) => Ending {
                status: AnswerStatus::LimitReached,
                note: Some(if deadline < configured {
                    format!(
                        "\n\n(Stopped: the time limit was reached: the caller's deadline of {} ms ran out before an answer was complete.)",
                        deadline.as_millis()
                    )
                } else {
                    format!(
                        "\n\n(Stopped: the time limit was reached: the deadline of {}s for one question ran out before an answer was complete.)",
                        deadline.as_secs()
                    )
                }),
            },
        };
        if !self.routed {
            // router mode chooses after the golden look-up, which the deadline cut
            let reason = "the deadline was reached before a route was chosen".to_string();
            if self.route(AskMode::Router, "none", reason).await.is_err() {
                self.charge_unfinished().await;
                return;
            }
        }
        let _ = self.finish(outcome).await;
    }

    async fn finish(&mut self, outcome: Ending) -> Result<(), Gone> {
        // A dependency that was down made the run fail: the stream ends
        // with UNAVAILABLE (retryable, visible to clients and balancers)
        // rather than OK with a failed answer; events sent stay sent, and no
        // turn is stored (the client retries the question).
        if matches!(
            outcome.status,
            AnswerStatus::Failed | AnswerStatus::Unanswered
        ) && let Some(why) = self.caller.dependencies.unavailable()
        {
            warn!(status = ?outcome.status, reason = %why, "ask failed: a dependency is unavailable");
            self.charge_unfinished().await;
            let status = Status::unavailable(format!("a dependency is unavailable: {why}"));
            return self.tx.send(Err(status)).await.map_err(|_| Gone);
        }
        // the model's text only: Quarry's own note (limits, failures) is not checked
        let ungrounded_numbers = match &self.evidence {
            Some(evidence) => crate::grounding::ungrounded(&self.answer, evidence),
            None => Vec::new(),
        };
        if let Some(note) = outcome.note {
            self.delta(&note).await?;
        }
        if !ungrounded_numbers.is_empty() {
            warn!(numbers = ?ungrounded_numbers, "answer states numbers no tool result holds");
        }
        let citations = std::mem::take(&mut self.citations);
        let final_answer = FinalAnswer {
            text: self.answer.clone(),
            citations: citations.clone(),
            status: outcome.status as i32,
            ungrounded_numbers,
        };
        self.emit(Event::FinalAnswer(final_answer)).await?;
        let mut usage = {
            let mut clock = self
                .tools_clock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.accounting.total(&mut clock, self.started.elapsed())
        };
        info!(
            status = ?outcome.status,
            model_calls = usage.model_calls,
            tool_calls = usage.tool_calls,
            total_tokens = usage.total_tokens,
            cost_usd = usage.cost_known.then_some(usage.cost_usd),
            elapsed_ms = usage.elapsed_ms,
            "ask finished"
        );
        // Charged before the last event, so that once the stream has ended
        // the tenant's usage and budgets include this Ask (a tenant without
        // limits: queued, stored within milliseconds, and included in a
        // usage report of this server, see `Budgets::charge`); stored before the
        // last event, so that once the stream has ended a follow-up finds
        // this turn. Independent writes (the ledger's rows and the turn's),
        // so made at once: two commits in parallel, not one after the other.
        let ((), stored) = tokio::join!(
            self.charge(&usage),
            self.store_turn(outcome.status, citations, &usage)
        );
        let stored = match stored {
            Ok(took) => took,
            Err(error) => {
                // The client holds this turn's conversation id (from the
                // started event): the stream fails so that it does not
                // take the turn for stored.
                let status = Status::unavailable(format!(
                    "the answer was not stored in conversation {}: {error}",
                    self.conversation_id
                ));
                return self.tx.send(Err(status)).await.map_err(|_| Gone);
            }
        };
        {
            use quarry_metrics::{AskStage, ask_stage};
            ask_stage(AskStage::Model, Duration::from_micros(usage.model_us));
            ask_stage(AskStage::Tool, Duration::from_micros(usage.tool_us));
            ask_stage(AskStage::Database, Duration::from_micros(usage.database_us));
            ask_stage(AskStage::Store, stored);
        }
        usage.database_us += stored.as_micros() as u64;
        // the emitted wall time includes storing, like `database_us`
        let elapsed = self.started.elapsed();
        quarry_metrics::ask_stage(quarry_metrics::AskStage::Total, elapsed);
        usage.elapsed_ms = elapsed.as_millis() as u64;
        usage.elapsed_us = elapsed.as_micros() as u64;
        self.emit(Event::Usage(usage)).await
    }

    /// Admits this run's next model call against its tenant's budgets,
    /// holding what the run has spent so far plus the call's reservation
    /// (visible to every replica); call before each model call.
    ///
    /// # Errors
    /// [`OverBudget`] naming the budget the tenant has spent.
    pub(super) async fn budget_check(&mut self) -> Result<(), OverBudget> {
        let Some(budgets) = self.assistant.budgets.clone() else {
            return Ok(());
        };
        let (tokens, usd) = self.accounting.charged_by_the_ask();
        let so_far = quarry_db::usage::Held { tokens, usd };
        budgets
            .admit(
                &self.caller.caller.principal.tenant,
                self.budget_hold,
                so_far,
            )
            .await
    }

    /// Charges this run's `usage` (one request, one Ask, its model calls,
    /// tokens and cost, but not the SQL tool's, which `GenerateSql`
    /// charges) to its tenant and releases its hold, when budgets are kept,
    /// and records its model calls' metrics.
    async fn charge(&self, usage: &Usage) {
        // the metrics of the model calls, with or without budgets
        for call in &usage.calls {
            quarry_metrics::model_call(
                &self.caller.caller.principal.tenant,
                &call.model,
                &call.task,
                call.prompt_tokens,
                call.completion_tokens,
                call.cost_known.then_some(call.cost_usd),
            );
        }
        let Some(budgets) = self.assistant.budgets.clone() else {
            return;
        };
        // the SQL tool's model calls are charged by GenerateSql itself
        let calls = || usage.calls.iter().filter(|c| crate::usage::ask_charges(c));
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let amounts = UsageAmounts {
            requests: 1,
            asks: 1,
            model_calls: count(calls().count() as u64),
            prompt_tokens: count(calls().map(|c| c.prompt_tokens).sum()),
            completion_tokens: count(calls().map(|c| c.completion_tokens).sum()),
            cached_prompt_tokens: count(calls().map(|c| c.cached_prompt_tokens).sum()),
            cost_usd: calls().map(|c| c.cost_usd).sum(),
            ..UsageAmounts::default()
        };
        budgets
            .charge(
                &self.caller.caller.principal.tenant,
                &amounts,
                Some(self.budget_hold),
            )
            .await;
    }

    /// Charges a run that ends without a final answer (the client went
    /// away): what its model calls spent is spent all the same.
    async fn charge_unfinished(&mut self) {
        let usage = {
            let mut clock = self
                .tools_clock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.accounting.total(&mut clock, self.started.elapsed())
        };
        self.charge(&usage).await;
    }

    /// The turn log (never poisoned in practice: nothing panics holding it).
    pub(super) fn log(&self) -> MutexGuard<'_, TurnLog> {
        self.turn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The request's tool clock (never poisoned in practice: nothing panics
    /// while holding it).
    pub(super) fn clock(&self) -> MutexGuard<'_, ToolClock> {
        self.tools_clock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Accounts the model calls tools made so far.
    pub(super) fn account_tool_model_calls(&mut self) {
        let calls = self.clock().take_model_calls();
        self.accounting.account_calls(calls);
    }

    /// Stores this request as the next turn of its conversation, when
    /// conversations are kept; returns the time it took.
    ///
    /// # Errors
    /// The store's error (logged here).
    async fn store_turn(
        &self,
        status: AnswerStatus,
        citations: Vec<Citation>,
        usage: &Usage,
    ) -> Result<Duration, crate::conversation::ConversationError> {
        let Some(store) = &self.assistant.conversations else {
            return Ok(Duration::ZERO);
        };
        let started = Instant::now();
        let record = {
            let mut log = self.log();
            let mut record = TurnRecord {
                request_id: std::mem::take(&mut log.request_id),
                question: std::mem::take(&mut log.question),
                mode: log.mode,
                route: std::mem::take(&mut log.route),
                tool_calls: std::mem::take(&mut log.tool_calls),
                sql: log.last_sql.take(),
                answer: self.answer.clone(),
                status,
                citations,
                usage: usage.clone(),
                pii: Vec::new(),
            };
            // what a follow-up sends to a model again: the question, the
            // answer and the SQL
            let sent_again = [
                record.question.as_str(),
                record.answer.as_str(),
                record.sql.as_deref().unwrap_or_default(),
            ];
            record.pii = referenced_pii(self.models.pii.known(), &sent_again);
            record
        };
        match store
            .append(self.conversation_id, &self.caller.caller.principal, &record)
            .await
        {
            Ok(turn) => {
                info!(conversation_id = %self.conversation_id, turn, "turn stored");
                Ok(started.elapsed())
            }
            Err(error) => {
                warn!(conversation_id = %self.conversation_id, %error, "storing the turn failed");
                Err(error)
            }
        }
    }

    /// The model for agentic mode, or `None` for router mode, with the
    /// reason for the choice. Router mode emits its route event once it has
    /// chosen its pipelines; agentic mode at once.
    fn choose_mode(&self, request: &AskRequest) -> (Option<Arc<dyn ChatModel>>, String) {
        let asked = AskMode::try_from(request.mode).unwrap_or(AskMode::Unspecified);
        match (asked, self.models.answer.clone()) {
            (AskMode::Router, _) => (None, "router mode requested".to_string()),
            (_, Some(model)) => (
                Some(model),
                "a model is configured; it chooses the tools".to_string(),
            ),
            (AskMode::Agentic, None) => (
                None,
                "agentic mode needs a model and none is configured".to_string(),
            ),
            (_, None) => (None, "no model is configured".to_string()),
        }
    }
}
