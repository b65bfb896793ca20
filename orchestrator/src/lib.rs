//! The Assistant service: answers a question by choosing and running tools,
//! streaming each step to the client as it happens.
//!
//! - [`assistant`]: the domain — one `Ask`'s lifecycle, the agentic
//!   tool-calling loop (a model chooses tools) and router mode (golden
//!   question→SQL pairs, then fixed pipelines, no model needed);
//! - [`tools`]: the tools the model can call, one [`ModelTool`] each
//!   (`query_database`, `search_documents`, `get_summaries`), and the
//!   [`ToolRegistry`] the agent loop offers and calls them through;
//! - [`caller`]: who asks ([`AskCaller`]: the `quarry_auth::Caller` plus
//!   the credentials forwarded to tool services);
//! - [`budget`]: token and cost budgets per tenant and UTC day and month,
//!   checked before model calls and charged after each `Ask`, and the
//!   `quarry.v1.UsageService` report;
//! - `usage`: tokens, cost and time accounting of one `Ask`;
//! - [`router`]: router mode's deterministic classifier (rules over the
//!   question's words → summaries, search, both or none) and its answer text;
//! - [`grpc`]: the `quarry.v1.AssistantService` adapter;
//! - [`conversation`]: stored conversations (turns in the `quarry` schema),
//!   owned by a principal, with retention; follow-ups read earlier turns;
//! - [`refine`]: router mode's rules for follow-ups that narrow the previous
//!   turn's SQL ("top 10 only", "now only works acquired after 2000");
//! - [`grounding`]: numbers in a model's answer that no tool result holds;
//! - [`render`]: text rendering of typed rows for answers, the model and the CLI;
//! - [`transport`]: how a tool is reached — a network channel, or the tool's
//!   gRPC service called in process.
//!
//! Tools are reached through their generated gRPC clients whether they run in
//! the same process or in another Deployment, with the caller's credentials
//! forwarded (`authorization`, `x-request-id`) so that every tool enforces
//! the caller's scopes itself and logs under the request's id.

pub mod assistant;
pub mod budget;
pub mod caller;
pub mod config;
pub mod conversation;
pub mod grounding;
pub mod grpc;
pub mod refine;
pub mod render;
pub mod router;
pub mod tools;
pub mod transport;
mod usage;

pub use assistant::{AskStream, Assistant};
pub use budget::{BudgetConfig, Budgets, grpc::UsageGrpc};
pub use caller::AskCaller;
pub use config::OrchestratorConfig;
pub use grpc::AssistantGrpc;
/// The search tool's argument parsing, at its former path
/// (`quarry_orchestrator::search::request_from_arguments`).
pub use tools::search;
pub use tools::{ModelTool, ToolContext, ToolOutcome, ToolRegistry, sql::QUERY_DATABASE};
pub use transport::ToolChannel;
