//! `quarry-server`: a Quarry node. Owns the configuration ([`Config`]), the
//! wiring of each tool from it, and [`serve`], which serves the [`Roles`]
//! asked for on a listener until shutdown. The `quarry` binary only parses
//! arguments and calls in here, so tests run the very same server on
//! `127.0.0.1:0`.
//!
//! A question flows protocol → auth ([`quarry_auth`]) → orchestrator
//! ([`quarry_orchestrator`]) → tool (`quarry-sql`, `quarry-search`,
//! `quarry-summary`) → database; this crate only composes them.

pub mod client;
pub mod config;
pub mod console;
pub mod health;
pub mod limits;
pub mod mcp;
pub mod metrics;
mod models;
pub mod progress;
mod role;
mod scopes;
mod serve;
mod shutdown;
pub mod surfaces;
pub mod telemetry;
mod tools;
mod trace_context;
pub mod web;

pub use config::Config;
pub use models::Models;
pub use role::{Role, Roles, UnknownRole};
pub use scopes::rpc_scope;
pub use serve::{CONVERSATION_PURGE_INTERVAL, serve, serve_with_metrics};
pub use shutdown::shutdown_signal;
pub use telemetry::{Telemetry, TracingConfig};
pub use tools::{
    check_database_roles, database_pool, embedder, search_tool, sql_sources_with, sql_tool,
    sql_tool_with, summary_tool, syncers,
};
pub use trace_context::{TraceContext, TraceContextLayer, valid_traceparent};
