//! One `Ask`: choose a mode, run tools, stream events.
//!
//! Agentic mode (`agent`) is a bounded tool-calling loop: the model sees
//! the caller's schema and the tools the [`ToolRegistry`] offers this caller
//! — `query_database` always, `search_documents` and `get_summaries` when
//! their services declare collections or kinds, and any tool registered with
//! [`Assistant::with_tool`] — each with a JSON schema written for the model
//! to read. Each tool call is executed by its [`ModelTool`] with the
//! caller's credentials. The calls of one model step run concurrently, each
//! streaming its `tool_call_started` when it starts and its `tool_result` as
//! soon as it finishes (in any order); their results go back to the model as
//! delimited data in the model's call order, one tool message per call id,
//! and the citations follow the same order. A call of a tool that was not
//! offered is refused with an error result naming the tools offered, and
//! the loop goes on. The loop ends when the model answers without calling a
//! tool, or with `LIMIT_REACHED` and a note naming the limit at the step
//! limit (`max_steps`), the token limit (`max_tokens`) or the deadline
//! (`deadline_secs`).
//!
//! Router mode (`pipelines`; no model configured, or `ASK_MODE_ROUTER`)
//! first asks `SqlService.GenerateSql` for a dry run (golden question→SQL
//! pairs when no model is configured, golden pairs only when a routing model
//! is); SQL found is executed and the rows answer (route `golden_sql`).
//! Otherwise the routing model (`[models.routing]`,
//! [`crate::router::model`]) picks the pipelines — SQL written by the SQL
//! tool for a sub-question, summaries, search — or, without one or when its
//! reply is unusable, the [`crate::router`] rules pick summaries, search,
//! both or none; each pipeline's calls stream as tool events with citations,
//! as in agentic mode, and [`crate::router::answer`] writes the answer from
//! what they found, stating what could not be done — or says plainly that it
//! cannot answer. The route event comes once per request, before any tool
//! event: at once in agentic mode, after the golden look-up in router mode.
//!
//! Conversations ([`crate::conversation`]): a request naming a
//! `conversation_id` is read with its last `conversation_turns` turns. In
//! agentic mode the model sees them as earlier user/assistant messages, each
//! answer followed by the SQL behind it, and `query_database` may pass the
//! previous SQL to the SQL tool (`refines_previous`); in router mode a short
//! follow-up that narrows the previous turn's result (a row limit, a year
//! filter) rewrites that turn's SQL ([`crate::refine`], route `refine_sql`).
//! Every finished request — answered or not — is stored as the next turn,
//! before the last event, so that a follow-up sent after the stream ended
//! finds it.
//!
//! Personal data: an `Ask` reaches its models (answer and routing) only
//! through `models`, which puts each behind
//! [`quarry_llm::pii::Redacting`] over one
//! [`quarry_llm::pii::Pseudonymizer`] per request: every message is sent
//! with personal data as placeholders (`<EMAIL_1>`), tools write the cells
//! of PII-tagged columns as placeholders ([`crate::tools::ToolContext::pii`]),
//! and the streamed answer (and the model's tool-call arguments) get the
//! original values back only when the caller holds `pii:read`.
//!
//! The last event, `usage`, accounts for the request (`crate::usage`).
//!
//! Budgets ([`crate::budget`]): with [`Assistant::with_budgets`], an `Ask`
//! of a tenant that has spent a budget is refused up front
//! (`RESOURCE_EXHAUSTED` with `RetryInfo`); each agentic step and the
//! routing call are admitted first, holding a reservation every replica
//! sees (over a budget: `LIMIT_REACHED` with a note naming it; router mode
//! routes by rules instead), and every Ask is charged when it ends, whether
//! it finished or the client went away.
//!
//! This module builds the assistant; the other jobs have a module each, and
//! none imports from a module that imports from it: `run` the request's
//! lifecycle ([`Assistant::ask`], start, deadline, final answer, stored
//! turn), `models` the request's models, `agent` the agent loop, `pipelines` router mode's pipelines,
//! `events` the events streamed to the client; usage accounting is
//! `crate::usage`'s.

mod agent;
mod events;
mod models;
mod pipelines;
mod run;

use std::sync::Arc;

use quarry_auth::shares::TenantShares;

use quarry_llm::ChatModel;
use quarry_proto::v1::{
    AskResponse, search_service_client::SearchServiceClient, sql_service_client::SqlServiceClient,
    summary_service_client::SummaryServiceClient,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::{
    budget::Budgets,
    config::OrchestratorConfig,
    conversation::ConversationStore,
    tools::{
        ModelTool, ToolRegistry, schema::DescribeTablesTool, search::SearchTool, sql::SqlTool,
        summaries::SummariesTool,
    },
    transport::ToolChannel,
};

/// The stream of events of one `Ask`.
pub type AskStream = ReceiverStream<Result<AskResponse, Status>>;

/// The Assistant: a model (optional) plus the tools it can offer.
pub struct Assistant {
    /// The answer model and the routing model, reached by an `Ask` only
    /// through [`models::Models::for_ask`] (behind the request's
    /// pseudonymizer).
    models: models::Models,
    /// The SQL tool's client, for what is not a tool call: the schema the
    /// model is shown and router mode's golden look-up and dry runs.
    sql: SqlServiceClient<ToolChannel>,
    /// Router mode's pipelines' tools (also in `tools`).
    sql_tool: Arc<SqlTool>,
    search: Option<Arc<SearchTool>>,
    summaries: Option<Arc<SummariesTool>>,
    /// Every tool the model can be offered.
    tools: ToolRegistry,
    conversations: Option<ConversationStore>,
    config: OrchestratorConfig,
    /// Each tenant's share of Asks in flight.
    asks: TenantShares,
    /// Each tenant's share of agentic tool calls running.
    tool_calls: TenantShares,
    /// Token and cost budgets per tenant, and where Asks are charged.
    budgets: Option<Arc<Budgets>>,
}

impl std::fmt::Debug for Assistant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assistant")
            .field("model", &self.models.has_answer().then_some("configured"))
            .field("tools", &self.tools)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Assistant {
    /// An assistant that reaches the SQL tool through `sql` and, when `model`
    /// is set, answers in agentic mode by default.
    pub fn new(
        model: Option<Arc<dyn ChatModel>>,
        sql: SqlServiceClient<ToolChannel>,
        config: OrchestratorConfig,
    ) -> Self {
        let sql_tool = Arc::new(
            SqlTool::new(sql.clone(), config.model_rows, config.max_cell_chars)
                .with_result_tokens(config.tool_result_tokens),
        );
        let tools = ToolRegistry::new()
            .with(sql_tool.clone())
            .with(Arc::new(DescribeTablesTool::new(sql.clone())));
        let wait = std::time::Duration::from_millis(config.tenant_wait_ms);
        Self {
            models: models::Models::new(model),
            sql,
            sql_tool,
            search: None,
            summaries: None,
            tools,
            conversations: None,
            asks: TenantShares::new("asks in flight", config.max_asks_per_tenant, wait),
            tool_calls: TenantShares::new(
                "tool calls in flight",
                config.max_tool_calls_per_tenant,
                wait,
            ),
            config,
            budgets: None,
        }
    }

    /// Checks every `Ask`'s tenant against `budgets` before it starts and
    /// before each model call, and charges each `Ask` to it when it ends.
    #[must_use]
    pub fn with_budgets(mut self, budgets: Arc<Budgets>) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// Offers the search tool (`search_documents`) to the model too, over the
    /// collections `search` declares.
    #[must_use]
    pub fn with_search(mut self, search: SearchServiceClient<ToolChannel>) -> Self {
        let tool = Arc::new(SearchTool::new(search, self.config.max_cell_chars));
        self.tools.register(tool.clone());
        self.search = Some(tool);
        self
    }

    /// Offers the summaries tool (`get_summaries`) to the model too, over the
    /// kinds `summaries` declares.
    #[must_use]
    pub fn with_summaries(mut self, summaries: SummaryServiceClient<ToolChannel>) -> Self {
        let tool = Arc::new(SummariesTool::new(summaries));
        self.tools.register(tool.clone());
        self.summaries = Some(tool);
        self
    }

    /// Offers `tool` to the model too, after the tools registered before it
    /// (tools are offered in registration order: `query_database`,
    /// `describe_tables`, then as the builder calls came). A tool with the
    /// name of one registered before replaces it in what the model is
    /// offered (router mode keeps its built-in pipelines).
    #[must_use]
    pub fn with_tool(mut self, tool: Arc<dyn ModelTool>) -> Self {
        self.tools.register(tool);
        self
    }

    /// The tools the model can be offered.
    pub fn tools(&self) -> &ToolRegistry {
        &self.tools
    }

    /// Stores every `Ask` as a turn of a conversation in `store`, and reads
    /// a follow-up (a request with a `conversation_id`) with the earlier
    /// turns. Without it, a request naming a conversation is refused.
    #[must_use]
    pub fn with_conversations(mut self, store: ConversationStore) -> Self {
        self.conversations = Some(store);
        self
    }

    /// The conversation store, if conversations are kept.
    pub fn conversations(&self) -> Option<&ConversationStore> {
        self.conversations.as_ref()
    }

    /// Lets router mode classify questions with one call to `model` (the
    /// `routing` task's model) before falling back to rules.
    #[must_use]
    pub fn with_routing_model(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.models.set_routing(model);
        self
    }

    /// The settings in force.
    pub fn config(&self) -> &OrchestratorConfig {
        &self.config
    }
}
