//! The Assistant service: answers a question by choosing and running tools,
//! streaming each step to the client as it happens.
//!
//! - [`assistant`]: the domain — agentic tool-calling loop (a model chooses
//!   tools) and router mode (golden question→SQL pairs, then fixed
//!   pipelines, no model needed);
//! - [`router`]: router mode's deterministic classifier (rules over the
//!   question's words → summaries, search, both or none) and its answer text;
//! - [`grpc`]: the `quarry.v1.AssistantService` adapter;
//! - [`search`]: the `search_documents` tool: its spec from the declared
//!   collections, model arguments → `SearchRequest`, hits for the model;
//! - [`summary`]: the `get_summaries` tool: its spec from the declared
//!   kinds, model arguments → look-up or search, summaries for the model;
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
//! forwarded so that every tool enforces the caller's scopes itself.

pub mod assistant;
pub mod config;
pub mod conversation;
pub mod grounding;
pub mod grpc;
pub mod refine;
pub mod render;
pub mod router;
pub mod search;
pub mod summary;
pub mod transport;

pub use assistant::{AskStream, Assistant, Caller, QUERY_DATABASE};
pub use config::OrchestratorConfig;
pub use grpc::AssistantGrpc;
pub use transport::ToolChannel;
