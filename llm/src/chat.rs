//! Provider-neutral chat types and the [`ChatModel`] trait.

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::{LlmError, Result};
use crate::usage::{Price, Usage};

/// One message of a conversation, in the order the model should read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// Instructions from the application.
    System {
        /// Instruction text.
        content: String,
    },
    /// What the user said.
    User {
        /// The user's text.
        content: String,
    },
    /// An earlier model turn: text, tool calls, or both.
    Assistant {
        /// Text the model produced; `None` when it only called tools.
        content: Option<String>,
        /// Tool calls the model made in this turn, each of which must be
        /// answered by a [`Message::Tool`] with the same id.
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, sent back to the model.
    Tool {
        /// [`ToolCall::id`] of the call this answers.
        tool_call_id: String,
        /// The result as text (often JSON).
        content: String,
    },
}

impl Message {
    /// A [`Message::System`].
    pub fn system(content: impl Into<String>) -> Self {
        Message::System {
            content: content.into(),
        }
    }

    /// A [`Message::User`].
    pub fn user(content: impl Into<String>) -> Self {
        Message::User {
            content: content.into(),
        }
    }

    /// A [`Message::Tool`].
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message::Tool {
            tool_call_id: tool_call_id.into(),
            content: content.into(),
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Function name: `a-z`, `A-Z`, `0-9`, `_` and `-`, at most 64 characters.
    pub name: String,
    /// What the tool does and when to use it; the model reads this to choose.
    pub description: String,
    /// JSON Schema of the arguments object, e.g.
    /// `{"type":"object","properties":{"question":{"type":"string"}},"required":["question"]}`.
    pub parameters: serde_json::Value,
}

/// A complete tool call made by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Id chosen by the server (e.g. `call_abc123`); echo it in the
    /// [`Message::Tool`] answering this call.
    pub id: String,
    /// Name of the [`ToolSpec`] called.
    pub name: String,
    /// Arguments as the JSON text the model wrote, fully assembled. Not
    /// validated: models do produce invalid JSON, so parse it and tell the
    /// model when it does not fit the schema. An empty argument string is
    /// normalised to `{}`.
    pub arguments: String,
}

/// What to ask the model.
///
/// Build it with [`ChatRequest::new`] (plus [`ChatRequest::with_response_format`])
/// or with a struct literal ending in `..Default::default()`, so that fields
/// added later do not break callers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Tools the model may call; empty for plain chat.
    pub tools: Vec<ToolSpec>,
    /// Constrains the shape of the answer text; `None` (the default) leaves
    /// it free. See [`ResponseFormat`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// The tenant whose response cache this request may be answered from
    /// and stored in ([`crate::cache::ResponseCache`]); `None` (the
    /// default): never cached. Not sent to the model.
    #[serde(skip)]
    pub cache_scope: Option<String>,
}

impl ChatRequest {
    /// A request with these messages and tools and a free-form answer.
    pub fn new(messages: Vec<Message>, tools: Vec<ToolSpec>) -> Self {
        Self {
            messages,
            tools,
            response_format: None,
            cache_scope: None,
        }
    }

    /// Asks for an answer in `format`.
    pub fn with_response_format(mut self, format: ResponseFormat) -> Self {
        self.response_format = Some(format);
        self
    }

    /// This request, allowed to be served from and stored in `tenant`'s
    /// part of the model's response cache (where the model has one and
    /// samples deterministically).
    #[must_use]
    pub fn with_cache_scope(mut self, tenant: impl Into<String>) -> Self {
        self.cache_scope = Some(tenant.into());
        self
    }
}

/// The shape the answer text must have (OpenAI "structured outputs").
///
/// Sent as the request's `response_format`:
/// `{"type":"json_schema","json_schema":{"name","schema","strict"}}` or
/// `{"type":"json_object"}`. OpenAI, vLLM (guided decoding), llama.cpp server
/// and recent Ollama honour `json_schema`; servers that do not may ignore it
/// or answer HTTP 400, so parse and validate the answer either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// The answer is one JSON value matching `schema`.
    JsonSchema {
        /// Name of the format: `a-z`, `A-Z`, `0-9`, `_` and `-`, at most 64
        /// characters (OpenAI's rule).
        name: String,
        /// JSON Schema the answer must match, e.g.
        /// `{"type":"object","properties":{"sql":{"type":"string"}},"required":["sql"],"additionalProperties":false}`.
        schema: serde_json::Value,
        /// Whether the server must follow the schema exactly. On OpenAI,
        /// strict mode supports a subset of JSON Schema: every property listed
        /// in `required` and `additionalProperties: false` on every object.
        strict: bool,
    },
    /// The answer is some JSON object (older "JSON mode"); the prompt must
    /// still say which object.
    JsonObject,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Natural end of the answer or a stop sequence.
    Stop,
    /// Hit `max_tokens` or the context window; the answer is cut off.
    Length,
    /// The model wants tools called; see the [`ChatEvent::ToolCall`] events.
    ToolCalls,
    /// The provider's content filter removed output.
    ContentFilter,
    /// Any other reason a server reported (e.g. the deprecated `function_call`).
    Other(String),
}

/// One event of a streamed answer.
///
/// Order: any number of [`ChatEvent::ContentDelta`]s as tokens arrive, then
/// the [`ChatEvent::ToolCall`]s (each complete, in the model's order), then
/// one [`ChatEvent::Finished`], then [`ChatEvent::Usage`] if the server
/// reported it. A stream that yields an error yields nothing after it.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// The next piece of answer text.
    ContentDelta(String),
    /// A tool call whose argument fragments have all arrived.
    ToolCall(ToolCall),
    /// The model finished its turn.
    Finished {
        /// Why it stopped.
        finish_reason: FinishReason,
    },
    /// Token counts for the whole request.
    Usage(Usage),
}

/// A chat model that streams its answers.
///
/// Object safe: hold it as `Arc<dyn ChatModel>`.
pub trait ChatModel: Send + Sync {
    /// Sends `request` and streams the answer as it forms.
    ///
    /// Nothing is sent until the stream is first polled; dropping the stream
    /// cancels the request. Errors arrive as the stream's last item.
    fn chat_stream(&self, request: ChatRequest) -> BoxStream<'static, Result<ChatEvent>>;

    /// What this model's tokens cost, for pricing the [`Usage`] its streams
    /// report; `None` (the default) when no price is configured, so the cost
    /// is unknown.
    fn price(&self) -> Option<Price> {
        None
    }

    /// The model's name as configured (e.g. `gpt-4o-mini`), for usage
    /// reports; empty (the default) when unknown.
    fn name(&self) -> &str {
        ""
    }
}

/// A whole answer, for callers that do not stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// All text deltas concatenated; empty when the model only called tools.
    pub content: String,
    /// Complete tool calls, in the model's order.
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
    /// Token counts, if the server reported them.
    pub usage: Option<Usage>,
}

impl ChatResponse {
    /// This answer as the [`Message::Assistant`] to append to the
    /// conversation before sending tool results back.
    pub fn to_message(&self) -> Message {
        Message::Assistant {
            content: (!self.content.is_empty()).then(|| self.content.clone()),
            tool_calls: self.tool_calls.clone(),
        }
    }
}

/// Drains a [`ChatModel::chat_stream`] into one [`ChatResponse`].
///
/// # Errors
/// The stream's first error, or [`LlmError::Protocol`] if it ended without a
/// [`ChatEvent::Finished`].
pub async fn collect(mut stream: BoxStream<'static, Result<ChatEvent>>) -> Result<ChatResponse> {
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    let mut finish_reason = None;
    let mut usage = None;
    while let Some(event) = stream.next().await {
        match event? {
            ChatEvent::ContentDelta(delta) => content.push_str(&delta),
            ChatEvent::ToolCall(call) => tool_calls.push(call),
            ChatEvent::Finished { finish_reason: r } => finish_reason = Some(r),
            ChatEvent::Usage(u) => usage = Some(u),
        }
    }
    let finish_reason = finish_reason
        .ok_or_else(|| LlmError::Protocol("stream ended without a finish reason".into()))?;
    Ok(ChatResponse {
        content,
        tool_calls,
        finish_reason,
        usage,
    })
}

/// Sends `request` to `model` and waits for the whole answer; see [`collect`].
///
/// # Errors
/// As [`collect`].
pub async fn chat(model: &dyn ChatModel, request: ChatRequest) -> Result<ChatResponse> {
    collect(model.chat_stream(request)).await
}
