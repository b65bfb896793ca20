//! Model access for Quarry: chat and tool calling over any OpenAI-compatible
//! endpoint (OpenAI, Ollama, vLLM, llama.cpp server).
//!
//! The orchestrator's agent loop and the SQL generator talk to a
//! [`ChatModel`]: a provider-neutral trait whose one method streams
//! [`ChatEvent`]s — text deltas as tokens arrive, complete tool calls, the
//! finish reason and token usage. [`OpenAiChatModel`] implements it on
//! async-openai, configured by a [`ModelConfig`] (endpoint, model, key
//! variable, whole-request timeout). Callers that want the whole answer at
//! once use [`collect`] or [`chat`]. A [`Price`] table in the model
//! settings (`[model.price]`, USD per 1M tokens) turns reported [`Usage`]
//! into a cost ([`Price::cost_usd`], [`ChatModel::price`]). Each [`Task`]
//! (routing and judging, SQL, answer writing) may use its own model:
//! [`ModelsConfig`] (`[models.<task>]`) overrides `[model]` key by key and
//! [`ModelsConfig::resolve`] gives each task's settings ([`TaskModels`]).
//!
//! ```no_run
//! # async fn demo() -> quarry_llm::Result<()> {
//! use quarry_llm::{ChatModel, ChatRequest, Message, ModelConfig, OpenAiChatModel};
//!
//! let model = OpenAiChatModel::new(ModelConfig::new("http://localhost:11434/v1", "qwen2.5"))?;
//! let answer = quarry_llm::chat(
//!     &model,
//!     ChatRequest::new(vec![Message::user("hello")], vec![]),
//! )
//! .await?;
//! println!("{}", answer.content);
//! # Ok(())
//! # }
//! ```
//!
//! [`embed`] turns text into vectors: [`embed::Embedder`] with a local
//! all-MiniLM-L6-v2 on the CPU (feature `local-embeddings`, on by default),
//! a remote OpenAI-compatible `/embeddings` endpoint, and a content-hash
//! cache in front of either.
//!
//! [`pii`] keeps personal data out of prompts: a per-request
//! [`pii::Pseudonymizer`] replaces e-mail addresses, phone numbers, card
//! numbers, IBANs and values of PII-tagged columns by placeholders
//! (`<EMAIL_1>`), and [`pii::Redacting`] wraps any [`ChatModel`] so that it
//! sends only pseudonymised text and restores the values in the answer for
//! a caller allowed to see them.
//!
//! With the `test-util` feature, [`testing::ScriptedServer`] is a scripted
//! OpenAI-compatible HTTP server for tests of anything that calls a model.

pub mod cache;
mod chat;
mod config;
pub mod embed;
mod error;
mod openai;
pub mod pii;
pub mod prompt;
#[cfg(feature = "test-util")]
pub mod testing;
mod usage;

pub use chat::{
    ChatEvent, ChatModel, ChatRequest, ChatResponse, FinishReason, Message, ResponseFormat,
    ToolCall, ToolSpec, chat, collect,
};
pub use config::{
    ModelConfig, ModelOverrides, ModelsConfig, TASK_ANSWER, TASK_JUDGE, TASK_ROUTING, TASK_SQL,
    Task, TaskModels,
};
pub use error::{LlmError, Result};
pub use openai::OpenAiChatModel;
pub use usage::{Price, Usage};
