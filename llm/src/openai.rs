//! [`ChatModel`] over any OpenAI-compatible `/chat/completions` endpoint
//! (OpenAI, Ollama, vLLM, llama.cpp server), through async-openai.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::{OpenAIError, StreamError};
use async_openai::middleware::retry::SimpleRetryPolicy;
use async_openai::middleware::{HttpRequestFactory, ReqwestService};
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionResponseStream,
    ChatCompletionStreamOptions, ChatCompletionTool, ChatCompletionTools, CompletionUsage,
    CreateChatCompletionRequest, CreateChatCompletionStreamResponse, FinishReason as WireFinish,
    FunctionCall, FunctionObject, ResponseFormat as WireResponseFormat, ResponseFormatJsonSchema,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::Instrument as _;

use crate::chat::{
    ChatEvent, ChatModel, ChatRequest, FinishReason, Message, ResponseFormat, ToolCall,
};
use crate::config::ModelConfig;
use crate::error::{LlmError, Result};
use crate::usage::{Price, Usage};

/// Longest piece of a server's error body kept in an error message, in bytes.
const MAX_ERROR_BODY: usize = 2_000;

/// Longest time spent establishing a TCP/TLS connection, whatever the
/// whole-request deadline.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A chat model behind an OpenAI-compatible HTTP API.
///
/// Every request streams (`stream: true`) and asks for usage
/// (`stream_options.include_usage: true`); tool-call fragments are assembled
/// here, so callers only ever see complete [`ToolCall`]s. Cheap to clone.
#[derive(Clone)]
pub struct OpenAiChatModel {
    client: Client<OpenAIConfig>,
    config: Arc<ModelConfig>,
    /// Replies of deterministic requests ([`crate::cache`]); `None`: off.
    cache: Option<crate::cache::ResponseCache>,
}

impl std::fmt::Debug for OpenAiChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the client's config holds the API key; show ours, which names only the variable
        f.debug_struct("OpenAiChatModel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpenAiChatModel {
    /// Builds a model from `config`, reading the API key from the environment
    /// variable named by `api_key_env` (if any).
    ///
    /// # Errors
    /// [`LlmError::Config`] if the config is invalid or the named variable is
    /// unset or not a usable header value.
    pub fn new(config: ModelConfig) -> Result<Self> {
        let api_key = match &config.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                LlmError::Config(format!(
                    "environment variable {var} (api_key_env) is not set"
                ))
            })?),
            None => None,
        };
        Self::with_api_key(config, api_key)
    }

    /// Builds a model from `config` with an explicit API key, ignoring
    /// `api_key_env` (for tests and callers with their own secret store).
    /// `None` sends no key.
    ///
    /// # Errors
    /// [`LlmError::Config`] if the config is invalid or the key contains
    /// characters an HTTP header cannot carry.
    pub fn with_api_key(config: ModelConfig, api_key: Option<String>) -> Result<Self> {
        config.validate()?;
        let api_key = api_key.map(|k| k.trim().to_owned()).unwrap_or_default();
        // async-openai panics building the Authorization header from a key
        // with control characters (a stray newline from a secrets file)
        if api_key.chars().any(char::is_control) {
            return Err(LlmError::Config(
                "api key contains control characters".into(),
            ));
        }
        // set every field explicitly: OpenAIConfig::new() would otherwise pick
        // up OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_ORG_ID from the process
        let openai_config = OpenAIConfig::new()
            .with_api_base(config.api_base())
            .with_api_key(api_key)
            .with_org_id("")
            .with_project_id("");
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout().min(MAX_CONNECT_TIMEOUT))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build http client: {e}")))?;
        let service = http_service(http.clone(), config.max_retries, config.timeout());
        let client = Client::build(http, openai_config).with_http_service(service);
        Ok(Self {
            client,
            config: Arc::new(config),
            cache: None,
        })
    }

    /// This model with its deterministic replies cached in `cache`: used
    /// only when the configured temperature is exactly 0, and only for
    /// requests with a [`ChatRequest::cache_scope`] (see [`crate::cache`]).
    #[must_use]
    pub fn with_response_cache(mut self, cache: crate::cache::ResponseCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The cache key of `wire` for `request`'s tenant, when this model may
    /// answer it from the cache.
    fn cache_key(
        &self,
        scope: Option<&str>,
        wire: &CreateChatCompletionRequest,
    ) -> Option<(crate::cache::ResponseCache, (String, [u8; 32]))> {
        let cache = self.cache.as_ref()?;
        if self.config.temperature != Some(0.0) {
            quarry_metrics::cache_lookup("model", "bypass");
            return None;
        }
        let Some(tenant) = scope else {
            quarry_metrics::cache_lookup("model", "bypass");
            return None;
        };
        let body = serde_json::to_vec(wire).ok()?;
        let key = crate::cache::ResponseCache::key(
            tenant,
            self.config.api_base(),
            &self.config.model,
            &body,
        );
        Some((cache.clone(), key))
    }

    /// The configuration this model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
}

impl ChatModel for OpenAiChatModel {
    fn chat_stream(&self, request: ChatRequest) -> BoxStream<'static, Result<ChatEvent>> {
        let scope = request.cache_scope.clone();
        let wire = build_request(&self.config, request);
        let cached = self.cache_key(scope.as_deref(), &wire);
        if let Some((cache, key)) = &cached
            && let Some(events) = cache.replay(key)
        {
            quarry_metrics::cache_lookup("model", "hit");
            return futures::stream::iter(events.into_iter().map(Ok)).boxed();
        }
        if cached.is_some() {
            quarry_metrics::cache_lookup("model", "miss");
        }
        let live = self.stream_wire(wire);
        match cached {
            Some((cache, key)) => record(live, cache, key),
            None => live,
        }
    }

    /// The configured `[model.price]`.
    fn price(&self) -> Option<Price> {
        self.config.price
    }

    /// The configured `model`.
    fn name(&self) -> &str {
        &self.config.model
    }
}

/// `live`'s events, passed on as they come and stored in `cache` under
/// `key` once the stream ends having finished without an error.
fn record(
    live: BoxStream<'static, Result<ChatEvent>>,
    cache: crate::cache::ResponseCache,
    key: (String, [u8; 32]),
) -> BoxStream<'static, Result<ChatEvent>> {
    struct Recorder {
        events: Vec<ChatEvent>,
        failed: bool,
        finished: bool,
        cache: crate::cache::ResponseCache,
        key: Option<(String, [u8; 32])>,
    }
    let recorder = Recorder {
        events: Vec::new(),
        failed: false,
        finished: false,
        cache,
        key: Some(key),
    };
    futures::stream::unfold((live, recorder), |(mut live, mut recorder)| async move {
        match live.next().await {
            Some(event) => {
                match &event {
                    Ok(event) => {
                        recorder.finished |= matches!(event, ChatEvent::Finished { .. });
                        recorder.events.push(event.clone());
                    }
                    Err(_) => recorder.failed = true,
                }
                Some((event, (live, recorder)))
            }
            None => {
                if !recorder.failed
                    && recorder.finished
                    && let Some(key) = recorder.key.take()
                {
                    recorder
                        .cache
                        .store(key, std::mem::take(&mut recorder.events));
                }
                None
            }
        }
    })
    .boxed()
}

impl OpenAiChatModel {
    /// Sends `wire` and streams the answer.
    fn stream_wire(
        &self,
        wire: CreateChatCompletionRequest,
    ) -> BoxStream<'static, Result<ChatEvent>> {
        let state = StreamState {
            client: self.client.clone(),
            request: Some(wire),
            timeout: self.config.timeout(),
            deadline: None,
            inner: None,
            assembler: Assembler::default(),
            pending: VecDeque::new(),
            done: false,
        };
        // one span per call, a child of the span the call is made in; it
        // ends when the stream is dropped
        let span = tracing::info_span!(
            "model.call",
            otel.kind = "client",
            gen_ai.operation.name = "chat",
            gen_ai.request.model = %self.config.model,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
        );
        futures::stream::unfold((state, span), |(mut state, span)| async move {
            loop {
                if let Some(event) = state.pending.pop_front() {
                    if let Ok(ChatEvent::Usage(usage)) = &event {
                        span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
                        span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
                    }
                    return Some((event, (state, span)));
                }
                if state.done {
                    return None;
                }
                state.step().instrument(span.clone()).await;
            }
        })
        .boxed()
    }
}

/// Turns our provider-neutral request into the wire request.
#[allow(deprecated)] // `max_tokens` is deprecated upstream but it is the field local servers read
fn build_request(config: &ModelConfig, request: ChatRequest) -> CreateChatCompletionRequest {
    let messages = request.messages.into_iter().map(wire_message).collect();
    let tools: Vec<ChatCompletionTools> = request
        .tools
        .into_iter()
        .map(|tool| {
            ChatCompletionTools::Function(ChatCompletionTool {
                function: FunctionObject {
                    name: tool.name,
                    description: Some(tool.description),
                    parameters: Some(tool.parameters),
                    strict: None,
                },
            })
        })
        .collect();
    let mut wire = CreateChatCompletionRequest {
        model: config.model.clone(),
        messages,
        stream: Some(true),
        stream_options: Some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        }),
        temperature: config.temperature,
        tools: (!tools.is_empty()).then_some(tools),
        response_format: request.response_format.map(wire_response_format),
        ..Default::default()
    };
    if let Some(max) = config.max_tokens {
        if config.is_openai() {
            wire.max_completion_tokens = Some(max);
        } else {
            wire.max_tokens = Some(max);
        }
    }
    wire
}

fn wire_response_format(format: ResponseFormat) -> WireResponseFormat {
    match format {
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => WireResponseFormat::JsonSchema {
            json_schema: ResponseFormatJsonSchema {
                description: None,
                name,
                schema,
                strict: Some(strict),
            },
        },
        ResponseFormat::JsonObject => WireResponseFormat::JsonObject,
    }
}

fn wire_message(message: Message) -> ChatCompletionRequestMessage {
    match message {
        Message::System { content } => {
            ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                content: ChatCompletionRequestSystemMessageContent::Text(content),
                name: None,
            })
        }
        Message::User { content } => {
            ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
                content: ChatCompletionRequestUserMessageContent::Text(content),
                name: None,
            })
        }
        Message::Assistant {
            content,
            tool_calls,
        } => {
            // the API wants content unless there are tool calls
            let content = match content {
                None if tool_calls.is_empty() => Some(String::new()),
                other => other,
            };
            let tool_calls = tool_calls
                .into_iter()
                .map(|call| {
                    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                        id: call.id,
                        function: FunctionCall {
                            name: call.name,
                            arguments: call.arguments,
                        },
                    })
                })
                .collect::<Vec<_>>();
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content: content.map(ChatCompletionRequestAssistantMessageContent::Text),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                ..Default::default()
            })
        }
        Message::Tool {
            tool_call_id,
            content,
        } => ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
            content: ChatCompletionRequestToolMessageContent::Text(content),
            tool_call_id,
        }),
    }
}

/// State of one streamed request, driven by `futures::stream::unfold`.
struct StreamState {
    client: Client<OpenAIConfig>,
    /// Taken when the request is sent.
    request: Option<CreateChatCompletionRequest>,
    timeout: Duration,
    /// Set when the request is sent (first poll), so the deadline covers the
    /// request rather than the time the caller took to poll.
    deadline: Option<Instant>,
    inner: Option<ChatCompletionResponseStream>,
    assembler: Assembler,
    pending: VecDeque<Result<ChatEvent>>,
    done: bool,
}

impl StreamState {
    /// Advances by one server interaction, pushing events to `pending`.
    async fn step(&mut self) {
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Instant::now() + self.timeout);
        let outcome = match (&mut self.inner, self.request.take()) {
            (None, Some(request)) => {
                tracing::debug!(
                    model = %request.model,
                    messages = request.messages.len(),
                    "sending chat request"
                );
                let chat = self.client.chat();
                match tokio::time::timeout_at(deadline, chat.create_stream(request)).await {
                    Ok(Ok(stream)) => {
                        self.inner = Some(stream);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(map_error(e)),
                    Err(_) => Err(LlmError::Timeout {
                        timeout: self.timeout,
                    }),
                }
            }
            (Some(inner), _) => match tokio::time::timeout_at(deadline, inner.next()).await {
                Ok(Some(Ok(chunk))) => self.assembler.on_chunk(chunk, &mut self.pending),
                Ok(Some(Err(e))) => Err(map_error(e)),
                Ok(None) => {
                    self.done = true;
                    self.assembler.on_end(&mut self.pending)
                }
                Err(_) => Err(LlmError::Timeout {
                    timeout: self.timeout,
                }),
            },
            (None, None) => Err(LlmError::Protocol(
                "chat stream polled after its end".into(),
            )),
        };
        if let Err(error) = outcome {
            tracing::debug!(%error, "chat stream failed");
            self.pending.push_back(Err(error));
            self.done = true;
            // stop reading the response at once
            self.inner = None;
        }
    }
}

/// Assembles streamed chunks into [`ChatEvent`]s.
#[derive(Default)]
struct Assembler {
    /// Tool calls under construction, by their `index` in the stream.
    calls: BTreeMap<u32, PartialCall>,
    finished: bool,
    usage: Option<Usage>,
}

#[derive(Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

impl Assembler {
    fn on_chunk(
        &mut self,
        chunk: CreateChatCompletionStreamResponse,
        out: &mut VecDeque<Result<ChatEvent>>,
    ) -> Result<()> {
        if let Some(usage) = chunk.usage {
            // some servers (vLLM with continuous usage stats) repeat it on
            // every chunk; the last one covers the whole request
            self.usage = Some(wire_usage(&usage));
        }
        // we never ask for n > 1; ignore other choices if a server sends them
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if self.finished {
                continue;
            }
            let delta = choice.delta;
            if let Some(text) = delta.content
                && !text.is_empty()
            {
                out.push_back(Ok(ChatEvent::ContentDelta(text)));
            }
            for fragment in delta.tool_calls.unwrap_or_default() {
                let call = self.calls.entry(fragment.index).or_default();
                if let Some(id) = fragment.id.filter(|id| !id.is_empty()) {
                    call.id.get_or_insert(id);
                }
                if let Some(function) = fragment.function {
                    if let Some(name) = function.name
                        && call.name.is_empty()
                    {
                        call.name = name;
                    }
                    if let Some(arguments) = function.arguments {
                        call.arguments.push_str(&arguments);
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish(reason, out)?;
            }
        }
        Ok(())
    }

    /// Emits the assembled tool calls and [`ChatEvent::Finished`].
    fn finish(&mut self, reason: WireFinish, out: &mut VecDeque<Result<ChatEvent>>) -> Result<()> {
        self.finished = true;
        let has_calls = !self.calls.is_empty();
        for (index, call) in std::mem::take(&mut self.calls) {
            if call.name.is_empty() {
                return Err(LlmError::Protocol(format!(
                    "tool call at index {index} has no function name"
                )));
            }
            let arguments = if call.arguments.trim().is_empty() {
                "{}".to_owned()
            } else {
                call.arguments
            };
            out.push_back(Ok(ChatEvent::ToolCall(ToolCall {
                // some local servers omit the id; any unique id works as long
                // as the tool result echoes it
                id: call.id.unwrap_or_else(|| format!("call_{index}")),
                name: call.name,
                arguments,
            })));
        }
        let finish_reason = match reason {
            // some servers (older Ollama) report `stop` after tool calls
            WireFinish::Stop if has_calls => FinishReason::ToolCalls,
            WireFinish::Stop => FinishReason::Stop,
            WireFinish::Length => FinishReason::Length,
            WireFinish::ToolCalls => FinishReason::ToolCalls,
            WireFinish::ContentFilter => FinishReason::ContentFilter,
            WireFinish::FunctionCall => FinishReason::Other("function_call".into()),
        };
        out.push_back(Ok(ChatEvent::Finished { finish_reason }));
        Ok(())
    }

    /// Called when the server ends the stream (`data: [DONE]` or EOF).
    fn on_end(&mut self, out: &mut VecDeque<Result<ChatEvent>>) -> Result<()> {
        if !self.finished {
            return Err(LlmError::Protocol(
                "stream ended before a finish reason".into(),
            ));
        }
        if let Some(usage) = self.usage.take() {
            out.push_back(Ok(ChatEvent::Usage(usage)));
        }
        Ok(())
    }
}

fn wire_usage(usage: &CompletionUsage) -> Usage {
    Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens,
        cached_prompt_tokens: usage
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0),
        from_cache: false,
    }
}

/// The HTTP stack under the async-openai client: retries (429, 5xx, refused
/// connections) per `max_retries`, then turns any remaining non-success
/// response into an [`HttpStatusError`] that keeps the status, whatever
/// shape the body has.
fn http_service(
    http: reqwest::Client,
    max_retries: u32,
    timeout: Duration,
) -> impl tower::Service<
    HttpRequestFactory,
    Response = reqwest::Response,
    Error = OpenAIError,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let retrying = tower::ServiceBuilder::new()
        .retry(DeadlineRetry::new(max_retries, timeout))
        .service(ReqwestService::new(http));
    tower::service_fn(move |request: HttpRequestFactory| {
        let retrying = retrying.clone();
        async move {
            let response = retrying.oneshot(request).await?;
            if response.status().is_success() {
                Ok(response)
            } else {
                let error = HttpStatusError::read(response).await;
                Err(OpenAIError::Boxed(Box::new(error)))
            }
        }
    })
}

/// async-openai's [`SimpleRetryPolicy`] — retry 429, 5xx and refused
/// connections up to `max_retries` times, after the response's
/// `Retry-After` (whole seconds, RFC 9110 §10.2.3) or else an exponential
/// backoff from 100 ms capped at 8 s — except that a `Retry-After` that ends
/// at or after the request's deadline (`timeout`, counted from the first
/// attempt, as the stream's own deadline is) is not waited out: that
/// response is returned at once, so the caller is told it was rate limited
/// and for how long instead of, `timeout` later, that it timed out.
#[derive(Clone, Debug)]
struct DeadlineRetry {
    inner: SimpleRetryPolicy,
    timeout: Duration,
    /// When the first attempt was sent (set by `clone_request`, which tower
    /// calls before it).
    started: Option<Instant>,
}

impl DeadlineRetry {
    fn new(max_retries: u32, timeout: Duration) -> Self {
        Self {
            inner: SimpleRetryPolicy::new(max_retries as usize),
            timeout,
            started: None,
        }
    }
}

impl tower::retry::Policy<HttpRequestFactory, reqwest::Response, OpenAIError> for DeadlineRetry {
    type Future = <SimpleRetryPolicy as tower::retry::Policy<
        HttpRequestFactory,
        reqwest::Response,
        OpenAIError,
    >>::Future;

    fn retry(
        &mut self,
        request: &mut HttpRequestFactory,
        result: &mut std::result::Result<reqwest::Response, OpenAIError>,
    ) -> Option<Self::Future> {
        if let Ok(response) = result.as_ref()
            && let Some(wait) = retry_after(response.headers())
        {
            let elapsed = self.started.map_or(Duration::ZERO, |s| s.elapsed());
            if elapsed.saturating_add(wait) >= self.timeout {
                return None;
            }
        }
        self.inner.retry(request, result)
    }

    fn clone_request(&mut self, request: &HttpRequestFactory) -> Option<HttpRequestFactory> {
        self.started.get_or_insert_with(Instant::now);
        self.inner.clone_request(request)
    }
}

/// A response's `Retry-After` in whole seconds (the HTTP-date form is not
/// read, as async-openai's policy does not read it either).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A non-success HTTP response, carried through async-openai as
/// `OpenAIError::Boxed` and turned into [`LlmError::Http`].
#[derive(Debug, thiserror::Error)]
#[error("http {status}: {message}")]
struct HttpStatusError {
    status: u16,
    message: String,
    retry_after: Option<Duration>,
}

impl HttpStatusError {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let message = match response.bytes().await {
            Ok(body) => error_message(&body),
            Err(e) => format!("error body unreadable: {e}"),
        };
        Self {
            status,
            message,
            retry_after,
        }
    }
}

/// The error text from a response body: `error.message` (OpenAI, vLLM
/// wrapped), `error` as a string (Ollama), `message` (vLLM), else the body.
pub(crate) fn error_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let found = json
            .pointer("/error/message")
            .or_else(|| json.get("error").filter(|e| e.is_string()))
            .or_else(|| json.get("message"))
            .and_then(|m| m.as_str());
        if let Some(message) = found {
            return truncate(message.to_owned());
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_owned();
    if text.is_empty() {
        "empty body".to_owned()
    } else {
        truncate(text)
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_ERROR_BODY {
        let mut end = MAX_ERROR_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Error text with its `source()` chain, which is where reqwest keeps the
/// useful part ("connection refused").
pub(crate) fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn map_error(error: OpenAIError) -> LlmError {
    match error {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpStatusError>() {
            Ok(http) => LlmError::Http {
                status: http.status,
                message: http.message,
                retry_after: http.retry_after,
            },
            Err(other) => LlmError::Transport(with_sources(other.as_ref())),
        },
        OpenAIError::ApiError(api) => LlmError::Http {
            status: api.status_code.as_u16(),
            message: api.api_error.message,
            retry_after: None,
        },
        OpenAIError::Reqwest(e) => LlmError::Transport(with_sources(&e)),
        OpenAIError::JSONDeserialize(e, data) => {
            LlmError::Protocol(format!("cannot parse {:?}: {e}", truncate(data)))
        }
        OpenAIError::StreamError(stream) => match *stream {
            // eventsource-stream's wording for a failed body read
            StreamError::EventStream(text) if text.starts_with("Transport error") => {
                LlmError::Transport(text)
            }
            StreamError::EventStream(text) => LlmError::Protocol(text),
            StreamError::UnknownEvent(event) => {
                LlmError::Protocol(format!("unexpected event {:?}", event.event))
            }
        },
        OpenAIError::InvalidArgument(text) => LlmError::Config(text),
        other @ (OpenAIError::FileSaveError(_) | OpenAIError::FileReadError(_)) => {
            LlmError::Transport(other.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_reads_the_shapes_servers_use() {
        assert_eq!(
            error_message(br#"{"error":{"message":"rate limited","type":"x"}}"#),
            "rate limited"
        );
        assert_eq!(
            error_message(br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(
            error_message(br#"{"object":"error","message":"bad","code":400}"#),
            "bad"
        );
        assert_eq!(error_message(b"upstream down\n"), "upstream down");
        assert_eq!(error_message(b""), "empty body");
        assert!(error_message(&[b'x'; 5_000]).len() <= MAX_ERROR_BODY + 3);
    }

    #[test]
    #[allow(deprecated)]
    fn max_tokens_goes_where_the_endpoint_reads_it() {
        let mut cfg = ModelConfig::new("https://api.openai.com/v1", "gpt");
        cfg.max_tokens = Some(64);
        let wire = build_request(&cfg, ChatRequest::default());
        assert_eq!(wire.max_completion_tokens, Some(64));
        assert_eq!(wire.max_tokens, None);

        cfg.base_url = "http://localhost:11434/v1".into();
        let wire = build_request(&cfg, ChatRequest::default());
        assert_eq!(wire.max_tokens, Some(64));
        assert_eq!(wire.max_completion_tokens, None);
    }

    #[test]
    fn key_with_a_newline_is_a_config_error_not_a_panic() {
        let cfg = ModelConfig::new("http://localhost:1/v1", "m");
        let err = OpenAiChatModel::with_api_key(cfg, Some("sk-a\nb".into())).unwrap_err();
        assert!(matches!(err, LlmError::Config(_)), "{err}");
    }

    #[test]
    fn missing_key_variable_is_a_config_error() {
        let mut cfg = ModelConfig::new("http://localhost:1/v1", "m");
        cfg.api_key_env = Some("QUARRY_LLM_TEST_SURELY_UNSET_VARIABLE".into());
        let err = OpenAiChatModel::new(cfg).unwrap_err();
        assert!(matches!(err, LlmError::Config(_)), "{err}");
    }

    #[test]
    fn the_model_reports_its_configured_price() {
        let cfg = ModelConfig::new("http://localhost:1/v1", "m");
        assert_eq!(OpenAiChatModel::new(cfg.clone()).unwrap().price(), None);
        let price = Price {
            input_per_million: 0.15,
            output_per_million: 0.6,
        };
        let model = OpenAiChatModel::new(ModelConfig {
            price: Some(price),
            ..cfg
        })
        .unwrap();
        assert_eq!(model.price(), Some(price));
    }
}
