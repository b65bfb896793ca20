//! [`QuarryMcp`]: the MCP server handler — `tools/list` and `tools/call`
//! over the orchestrator's [`ModelTool`]s and `AssistantService.Ask`.

use std::sync::Arc;

use futures::StreamExt as _;
use quarry_auth::{
    Caller, PolicyStore, Principal,
    scopes::{ASK as ASK_SCOPE, PII_READ},
};
use quarry_llm::{ToolCall, pii::Pseudonymizer};
use quarry_orchestrator::{
    AskCaller, ModelTool, OrchestratorConfig, ToolContext,
    tools::{explain::ExplainSqlTool, search::SearchTool, sql::SqlTool, summaries::SummariesTool},
    transport::DependencyWatch,
};
use quarry_proto::v1::{
    AnswerStatus, AskRequest, AskResponse, CitationKind, FinalAnswer, ask_response::Event,
    assistant_service_client::AssistantServiceClient, search_service_client::SearchServiceClient,
    sql_service_client::SqlServiceClient, summary_service_client::SummaryServiceClient,
    tool_result::Outcome,
};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
        ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
};
use serde_json::{Value as Json, json};
use tonic::metadata::{Ascii, MetadataValue};

use super::McpChannels;

/// Name of the tool that runs the whole orchestrator.
pub const ASK: &str = "ask";

/// Longest question `ask` accepts, in characters (`AskRequest.question`).
const MAX_QUESTION_CHARS: usize = 4_000;

/// The MCP server handler; one per node, cloned per HTTP request (cheap:
/// shared parts).
#[derive(Clone)]
pub struct QuarryMcp {
    inner: Arc<Inner>,
}

struct Inner {
    assistant: AssistantServiceClient<quarry_orchestrator::ToolChannel>,
    /// The model tools, in the order they are listed.
    tools: Vec<Arc<dyn ModelTool>>,
    policy: Arc<PolicyStore>,
    preview_rows: usize,
}

impl QuarryMcp {
    /// The handler over `channels` (see [`McpChannels`]), with the tools'
    /// settings from `orchestrator` (rows and characters shown, as for a
    /// model). `policy` decides what a caller is listed and whether it sees
    /// personal data restored in results (`pii:read`); every call is
    /// authorised by the services' own policy layer.
    pub fn new(
        channels: McpChannels,
        policy: Arc<PolicyStore>,
        orchestrator: &OrchestratorConfig,
    ) -> Self {
        let mut tools: Vec<Arc<dyn ModelTool>> = Vec::new();
        if let Some(sql) = &channels.sql {
            let client = SqlServiceClient::new(sql.clone());
            tools.push(Arc::new(
                SqlTool::new(
                    client.clone(),
                    orchestrator.model_rows,
                    orchestrator.max_cell_chars,
                )
                .with_result_tokens(orchestrator.tool_result_tokens),
            ));
            tools.push(Arc::new(ExplainSqlTool::new(client)));
        }
        if let Some(search) = &channels.search {
            tools.push(Arc::new(SearchTool::new(
                SearchServiceClient::new(search.clone()),
                orchestrator.max_cell_chars,
            )));
        }
        if let Some(summaries) = &channels.summaries {
            tools.push(Arc::new(SummariesTool::new(SummaryServiceClient::new(
                summaries.clone(),
            ))));
        }
        Self {
            inner: Arc::new(Inner {
                assistant: AssistantServiceClient::new(channels.assistant),
                tools,
                policy,
                preview_rows: orchestrator.preview_rows as usize,
            }),
        }
    }

    /// The caller of one MCP request: the principal the bearer check put in
    /// the HTTP request's extensions, its grant under the policy in force
    /// (which decides what is listed and whether personal data is
    /// restored; each call is authorised again by the gRPC policy layer),
    /// and its `authorization` header, forwarded with every gRPC call.
    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<AskCaller, ErrorData> {
        let parts = context
            .extensions
            .get::<http::request::Parts>()
            .ok_or_else(|| ErrorData::internal_error("mcp request without http parts", None))?;
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("mcp request without a principal", None))?;
        let authorization = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<MetadataValue<Ascii>>().ok());
        let grant = Arc::new(self.inner.policy.current().grant(&principal));
        Ok(AskCaller {
            caller: Caller::new(principal).with_grant(grant),
            authorization,
            verified: parts
                .extensions
                .get::<quarry_auth::VerifiedToken>()
                .cloned(),
            dependencies: DependencyWatch::default(),
        })
    }

    /// Whether `caller` may see personal data restored (`pii:read`).
    fn reveals_pii(caller: &AskCaller) -> bool {
        caller.caller.grant.has_scope(PII_READ)
    }

    /// Runs model tool `tool` with `arguments` for `caller`: its result as
    /// the model would read it (delimited data; personal data restored for
    /// a caller with `pii:read`), or a tool error with the message.
    async fn call_model_tool(
        &self,
        tool: &dyn ModelTool,
        arguments: String,
        caller: &AskCaller,
        call_id: String,
    ) -> CallToolResult {
        let pii = Pseudonymizer::new();
        let call = ToolCall {
            id: call_id,
            name: tool.name().to_owned(),
            arguments,
        };
        let outcome = tool
            .call(
                &call,
                ToolContext {
                    caller,
                    pii: &pii,
                    preview_rows: self.inner.preview_rows,
                    previous_sql: None,
                },
            )
            .await;
        if let Outcome::Error(message) = outcome.result {
            return CallToolResult::error(vec![ContentBlock::text(format!(
                "{}: {message}",
                tool.name()
            ))]);
        }
        let text = if Self::reveals_pii(caller) {
            pii.restore(&outcome.for_model)
        } else {
            outcome.for_model
        };
        let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
        if !outcome.citations.is_empty() {
            result.structured_content = Some(json!({
                "citations": outcome.citations.iter().map(citation_json).collect::<Vec<_>>(),
            }));
        }
        result
    }

    /// Runs `ask`: the orchestrator's `Ask`, each event sent as a progress
    /// notification (when the client asked for them with a progress
    /// token), the final answer and its citations as the result.
    async fn ask(
        &self,
        arguments: &JsonObject,
        caller: &AskCaller,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResult {
        let request = match ask_request(arguments) {
            Ok(request) => request,
            Err(message) => {
                return CallToolResult::error(vec![ContentBlock::text(format!(
                    "{ASK}: {message}"
                ))]);
            }
        };
        let mut client = self.inner.assistant.clone();
        let mut stream = match client.ask(caller.request(request)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return status_error(&status),
        };
        let progress_token = context.meta.get_progress_token();
        let mut progress = 0.0;
        let mut conversation_id = String::new();
        let mut answer: Option<FinalAnswer> = None;
        loop {
            let next = tokio::select! {
                () = context.ct.cancelled() => {
                    return CallToolResult::error(vec![ContentBlock::text(format!(
                        "{ASK}: cancelled by the client"
                    ))]);
                }
                next = stream.next() => next,
            };
            let event = match next {
                None => break,
                Some(Ok(AskResponse { event: Some(event) })) => event,
                Some(Ok(AskResponse { event: None })) => continue,
                Some(Err(status)) => return status_error(&status),
            };
            if let Event::Started(started) = &event {
                conversation_id.clone_from(&started.conversation_id);
            }
            if let Some(token) = &progress_token {
                progress += 1.0;
                let note = ProgressNotificationParam::new(token.clone(), progress)
                    .with_message(describe(&event));
                if let Err(error) = context.peer.notify_progress(note).await {
                    tracing::debug!(%error, "mcp progress notification not sent");
                }
            }
            if let Event::FinalAnswer(done) = event {
                answer = Some(done);
            }
        }
        let Some(answer) = answer else {
            return CallToolResult::error(vec![ContentBlock::text(format!(
                "{ASK}: the answer stream ended without an answer"
            ))]);
        };
        let status = AnswerStatus::try_from(answer.status).unwrap_or(AnswerStatus::Unspecified);
        let citations: Vec<Json> = answer.citations.iter().map(citation_json).collect();
        let mut text = answer.text.clone();
        if !answer.citations.is_empty() {
            text.push_str("\n\nCitations:");
            for c in &answer.citations {
                text.push_str(&format!("\n- {}", citation_line(c)));
            }
        }
        let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
        result.structured_content = Some(json!({
            "answer": answer.text,
            "status": status.as_str_name(),
            "citations": citations,
            "ungrounded_numbers": answer.ungrounded_numbers,
            "conversation_id": conversation_id,
        }));
        result
    }
}

impl ServerHandler for QuarryMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("quarry", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Quarry answers questions over relational data. `ask` runs the whole \
                 orchestrator (it chooses and chains the other tools, and cites its sources); \
                 the other tools are the ones it uses, for direct use.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self.caller(&context)?;
        let grant = &caller.caller.grant;
        let mut tools = Vec::new();
        if grant.has_scope(ASK_SCOPE) {
            let spec = ask_spec();
            tools.push(to_tool(ASK, &spec.description, spec.parameters));
        }
        // each tool as offered to this caller were it a model's: only with
        // its scope, and only when its service lists something for the
        // caller (as `ToolRegistry::offer`)
        for tool in &self.inner.tools {
            if tool.scope().is_some_and(|scope| !grant.has_scope(scope)) {
                continue;
            }
            if let Some(spec) = tool.spec(&caller).await {
                tools.push(to_tool(tool.name(), &spec.description, spec.parameters));
            }
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // a tool the caller is not listed is still called: the gRPC policy
        // layer refuses it, audited, as it would for a gRPC client
        let caller = self.caller(&context)?;
        let arguments = request.arguments.unwrap_or_default();
        if request.name == ASK {
            return Ok(self.ask(&arguments, &caller, &context).await.into());
        }
        let Some(tool) = self.inner.tools.iter().find(|t| t.name() == request.name) else {
            let names: Vec<&str> = std::iter::once(ASK)
                .chain(self.inner.tools.iter().map(|t| t.name()))
                .collect();
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool `{}`; tools: {}",
                    request.name,
                    names.join(", ")
                ),
                None,
            ));
        };
        let arguments = Json::Object(arguments).to_string();
        let call_id = format!("mcp_{}", caller.caller.request_id);
        Ok(self
            .call_model_tool(tool.as_ref(), arguments, &caller, call_id)
            .await
            .into())
    }
}

/// The `ask` tool as offered to a host: the question and, to continue a
/// conversation, the id an earlier `ask` returned (the fields of
/// `AskRequest` a host sets; mode and preview rows stay the server's).
pub fn ask_spec() -> quarry_llm::ToolSpec {
    quarry_llm::ToolSpec {
        name: ASK.to_string(),
        description: "Answer a question about the data: Quarry chooses and chains its tools \
                      (SQL over the database, search over documents, stored summaries), \
                      streams progress (route, each tool call, the answer as it is written) \
                      and returns the answer with citations to the rows, documents and \
                      summaries it rests on. Pass `conversation_id` from an earlier answer to \
                      ask a follow-up (\"now only 2024\")."
            .to_string(),
        parameters: json!({
            "type": "object",
            "properties": {
                "question": {
                    "type": "string",
                    "maxLength": MAX_QUESTION_CHARS,
                    "description": "The question, in plain words."
                },
                "conversation_id": {
                    "type": "string",
                    "description": "The conversation_id of an earlier answer, to continue that conversation."
                }
            },
            "required": ["question"],
            "additionalProperties": false
        }),
    }
}

/// `arguments` of an `ask` call as an `AskRequest`.
///
/// # Errors
/// A message naming the argument at fault.
fn ask_request(arguments: &JsonObject) -> Result<AskRequest, String> {
    for key in arguments.keys() {
        if !matches!(key.as_str(), "question" | "conversation_id") {
            return Err(format!(
                "unknown argument `{key}`; use question, conversation_id"
            ));
        }
    }
    let question = match arguments.get("question") {
        Some(Json::String(q)) if !q.trim().is_empty() => q.clone(),
        Some(Json::String(_)) | None | Some(Json::Null) => {
            return Err("`question` is required (a non-empty string)".to_string());
        }
        Some(_) => return Err("`question` must be a string".to_string()),
    };
    if question.chars().count() > MAX_QUESTION_CHARS {
        return Err(format!(
            "`question` is longer than {MAX_QUESTION_CHARS} characters"
        ));
    }
    let conversation_id = match arguments.get("conversation_id") {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(id)) => id.trim().to_owned(),
        Some(_) => return Err("`conversation_id` must be a string".to_string()),
    };
    Ok(AskRequest {
        question,
        conversation_id,
        mode: 0,
        preview_rows: 0,
    })
}

/// A tool as MCP lists it.
fn to_tool(name: &str, description: &str, parameters: Json) -> Tool {
    let schema = match parameters {
        Json::Object(object) => object,
        other @ (Json::Null
        | Json::Bool(_)
        | Json::Number(_)
        | Json::String(_)
        | Json::Array(_)) => {
            let mut object = JsonObject::new();
            object.insert("type".into(), json!("object"));
            tracing::warn!(tool = name, schema = %other, "tool schema is not an object");
            object
        }
    };
    Tool::new(name.to_owned(), description.to_owned(), Arc::new(schema))
}

/// A refused or failed `Ask` as a tool error: the gRPC code in words and
/// the message (e.g. "permission denied: missing scope ask").
fn status_error(status: &tonic::Status) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!(
        "{ASK}: {}: {}",
        code_words(status.code()),
        status.message()
    ))])
}

/// A gRPC code as words a reader of a tool error understands.
fn code_words(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unauthenticated => "not authenticated",
        tonic::Code::ResourceExhausted => "limit reached",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::NotFound => "not found",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "deadline exceeded",
        tonic::Code::Cancelled => "cancelled",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::Ok
        | tonic::Code::Unknown
        | tonic::Code::AlreadyExists
        | tonic::Code::Aborted
        | tonic::Code::OutOfRange
        | tonic::Code::Unimplemented
        | tonic::Code::Internal
        | tonic::Code::DataLoss => "failed",
    }
}

/// One progress message per `Ask` event.
fn describe(event: &Event) -> String {
    match event {
        Event::Started(s) => format!("started (conversation {})", s.conversation_id),
        Event::Route(r) => format!("route: {} ({})", r.route, r.reason),
        Event::ToolCallStarted(t) => format!("calling {} {}", t.tool_name, t.arguments_json),
        Event::ToolResult(t) => match &t.outcome {
            Some(Outcome::Sql(sql)) => format!(
                "{} returned {} rows: {}",
                t.tool_name, sql.row_count, sql.sql
            ),
            Some(Outcome::Search(found)) => {
                format!("{} found {} documents", t.tool_name, found.hits.len())
            }
            Some(Outcome::Summaries(found)) => {
                format!("{} found {} summaries", t.tool_name, found.summaries.len())
            }
            Some(Outcome::Schema(described)) => {
                format!(
                    "{} described {} tables",
                    t.tool_name,
                    described.tables.len()
                )
            }
            Some(Outcome::Explanation(explained)) => {
                format!("{} explained: {}", t.tool_name, explained.explanation)
            }
            Some(Outcome::Error(message)) => format!("{} failed: {message}", t.tool_name),
            None => format!("{} finished", t.tool_name),
        },
        Event::AnswerDelta(delta) => format!("answer: {}", delta.text),
        Event::FinalAnswer(answer) => format!("answered ({} citations)", answer.citations.len()),
        Event::Usage(usage) => format!(
            "usage: {} tokens in {} model calls",
            usage.total_tokens, usage.model_calls
        ),
    }
}

/// A citation as structured content.
fn citation_json(c: &quarry_proto::v1::Citation) -> Json {
    let kind = CitationKind::try_from(c.kind).unwrap_or(CitationKind::Unspecified);
    json!({
        "kind": kind.as_str_name(),
        "call_id": c.call_id,
        "sql": c.sql,
        "source_id": c.source_id,
    })
}

/// A citation as a line of text.
fn citation_line(c: &quarry_proto::v1::Citation) -> String {
    let kind = CitationKind::try_from(c.kind).unwrap_or(CitationKind::Unspecified);
    match kind {
        CitationKind::SqlRows => format!("rows of {} (call {})", c.sql, c.call_id),
        CitationKind::Document => format!("document {} (call {})", c.source_id, c.call_id),
        CitationKind::Summary => format!("summary {} (call {})", c.source_id, c.call_id),
        CitationKind::Unspecified => format!("call {}", c.call_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Json) -> JsonObject {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn ask_arguments_name_the_field_at_fault() {
        let request = ask_request(&object(json!({"question": "How many artworks?"}))).unwrap();
        assert_eq!(request.question, "How many artworks?");
        assert_eq!(request.conversation_id, "");
        assert_eq!(
            ask_request(&object(json!({}))).unwrap_err(),
            "`question` is required (a non-empty string)"
        );
        assert_eq!(
            ask_request(&object(json!({"question": 7}))).unwrap_err(),
            "`question` must be a string"
        );
        assert!(
            ask_request(&object(json!({"question": "q", "mode": "agent"})))
                .unwrap_err()
                .starts_with("unknown argument `mode`")
        );
        assert_eq!(
            ask_request(&object(json!({"question": "q", "conversation_id": 3}))).unwrap_err(),
            "`conversation_id` must be a string"
        );
    }

    #[test]
    fn the_ask_schema_requires_the_question() {
        let spec = ask_spec();
        assert_eq!(spec.parameters["required"], json!(["question"]));
        let tool = to_tool(ASK, &spec.description, spec.parameters);
        assert_eq!(tool.input_schema["type"], "object");
    }
}
