//! The `get_summaries` tool: stored summaries (`SummaryService`) as the model
//! sees it — its description (built from the kinds the summary service
//! declares), its JSON arguments turned into a look-up or a search, and
//! summaries written as delimited data (text, then the facts JSON the text
//! was written from, then how fresh it is), each cited.

use futures::future::BoxFuture;
use quarry_llm::{ToolCall, ToolSpec};
use quarry_proto::v1::{
    Citation, CitationKind, EntityMatchKind, GetSummariesRequest, ListSummaryKindsRequest,
    SearchSummariesRequest, SummaryKind, SummaryToolResult,
    summary_service_client::SummaryServiceClient, tool_result::Outcome,
};
use serde_json::{Value as Json, json};
use tracing::warn;

use super::{ModelTool, ToolContext, ToolOutcome, sanitize};
use crate::{caller::AskCaller, transport::ToolChannel};

/// Name of the summaries tool as the model sees it.
pub const GET_SUMMARIES: &str = "get_summaries";

/// Summaries a model may ask for in one call.
pub const MAX_MODEL_LIMIT: u32 = 20;

/// Characters of facts JSON shown to the model per summary; longer facts are
/// cut (the text, which is always shown whole, states the main figures).
pub const MAX_FACTS_CHARS: usize = 4_000;

/// What a `get_summaries` call asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SummaryCall {
    /// One entity by key or name (exact, then fuzzy), optionally within a kind;
    /// or, with no entity, a listing of one kind.
    Get(GetSummariesRequest),
    /// Summaries closest in meaning to a query.
    Search(SearchSummariesRequest),
}

/// The summaries tool, reached through its gRPC client.
#[derive(Debug, Clone)]
pub struct SummariesTool {
    client: SummaryServiceClient<ToolChannel>,
}

impl SummariesTool {
    /// The tool over `client`.
    pub fn new(client: SummaryServiceClient<ToolChannel>) -> Self {
        Self { client }
    }

    /// The summary kinds the summary service lists for `caller`; `None`
    /// when listing fails (logged).
    pub async fn kinds(&self, caller: &AskCaller) -> Option<Vec<SummaryKind>> {
        let mut client = self.client.clone();
        match client
            .list_summary_kinds(caller.request(ListSummaryKindsRequest {}))
            .await
        {
            Ok(response) => Some(response.into_inner().kinds),
            Err(status) => {
                warn!(error = %status.message(), "listing summary kinds failed");
                None
            }
        }
    }

    /// Looks up or searches as `call` says, for `caller`; the summaries
    /// found, or the error message for the model (for an unknown entity it
    /// names the closest ones).
    ///
    /// # Errors
    /// The summary service's status, as a message the model can read.
    pub async fn lookup(
        &self,
        call: SummaryCall,
        caller: &AskCaller,
    ) -> Result<SummaryToolResult, String> {
        let mut client = self.client.clone();
        match call {
            SummaryCall::Get(request) => client
                .get_summaries(caller.request(request))
                .await
                .map(|r| {
                    let r = r.into_inner();
                    SummaryToolResult {
                        summaries: r.summaries,
                        r#match: r.r#match,
                        alternatives: r.alternatives,
                        retrieval: String::new(),
                    }
                })
                .map_err(|status| status.message().to_string()),
            SummaryCall::Search(request) => client
                .search_summaries(caller.request(request))
                .await
                .map(|r| {
                    let r = r.into_inner();
                    SummaryToolResult {
                        summaries: r.summaries,
                        r#match: 0,
                        alternatives: Vec::new(),
                        retrieval: r.retrieval,
                    }
                })
                .map_err(|status| status.message().to_string()),
        }
    }

    /// Shapes `result` to call `call_id`: the summaries for the client and,
    /// as delimited data, for the model; one summary citation each.
    pub fn outcome(call_id: &str, result: Result<SummaryToolResult, String>) -> ToolOutcome {
        let found = match result {
            Ok(found) => found,
            Err(message) => return ToolOutcome::failed(call_id, message),
        };
        let citations = found
            .summaries
            .iter()
            .map(|s| Citation {
                kind: CitationKind::Summary as i32,
                call_id: call_id.to_string(),
                sql: String::new(),
                source_id: s.id.clone(),
            })
            .collect();
        ToolOutcome {
            for_model: summaries_for_model(call_id, &found, sanitize),
            result: Outcome::Summaries(found),
            citations,
            model_calls: Vec::new(),
        }
    }
}

impl ModelTool for SummariesTool {
    fn name(&self) -> &str {
        GET_SUMMARIES
    }

    fn scope(&self) -> Option<&'static str> {
        Some(quarry_auth::scopes::SUMMARIES)
    }

    /// Offered when the summary service lists kinds for the caller.
    fn spec<'a>(&'a self, caller: &'a AskCaller) -> BoxFuture<'a, Option<ToolSpec>> {
        Box::pin(async move { spec(&self.kinds(caller).await?) })
    }

    fn guidance(&self) -> Option<String> {
        Some(format!(
            "For trend and \"how has X changed\" questions, first try `{GET_SUMMARIES}`: pre-computed \
             summaries with the exact figures they rest on; cite a summary by its id and take numbers \
             from its facts.\n"
        ))
    }

    fn call<'a>(&'a self, call: &'a ToolCall, cx: ToolContext<'a>) -> BoxFuture<'a, ToolOutcome> {
        Box::pin(async move {
            let result = match call_from_arguments(&call.arguments) {
                Ok(lookup) => self.lookup(lookup, cx.caller).await,
                Err(message) => Err(message),
            };
            Self::outcome(&call.id, result)
        })
    }
}

/// The tool spec, describing every kind so the model can pick one; `None`
/// with no kind.
pub fn spec(kinds: &[SummaryKind]) -> Option<ToolSpec> {
    if kinds.is_empty() {
        return None;
    }
    let mut described = String::new();
    for k in kinds {
        described.push_str(&format!(
            "\n- `{}` (one per {}; {} stored): {}",
            k.name, k.entity, k.summaries, k.description
        ));
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.name.as_str()).collect();
    Some(ToolSpec {
        name: GET_SUMMARIES.to_string(),
        description: format!(
            "Get pre-computed summaries for trend and \"how has X changed\" questions: each is a short \
             paragraph plus the exact figures (facts JSON) it was computed from, deterministically, \
             over the whole data set. Prefer it to the database tool for trends, shares over time, \
             peaks and decade-by-decade histories; quote figures from the facts. Pass `entity` (a name \
             such as \"turner\" or a key; fuzzy names work, and close alternatives are listed) and \
             optionally `kind`; or `kind` alone to list that kind (e.g. every decade); or `query` to \
             find summaries by meaning. Kinds:{described}"
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "entity": { "type": "string", "description": "Entity name or key, e.g. \"J. M. W. Turner\", \"1950s\"." },
                "kind": { "type": "string", "enum": names, "description": "Restrict to one kind; alone, lists the kind." },
                "query": { "type": "string", "description": "Find summaries by meaning instead, e.g. \"works by women since 1950\"." },
                "limit": { "type": "integer", "minimum": 1, "maximum": MAX_MODEL_LIMIT, "description": "Summaries wanted for a listing or search (default 5)." }
            },
            "additionalProperties": false
        }),
    })
}

/// Turns the model's JSON arguments into a call.
///
/// # Errors
/// A message for the model naming the argument at fault.
pub fn call_from_arguments(arguments: &str) -> Result<SummaryCall, String> {
    let args: Json = serde_json::from_str(arguments)
        .map_err(|e| format!("arguments must be a JSON object: {e}"))?;
    let object = args.as_object().ok_or("arguments must be a JSON object")?;
    for key in object.keys() {
        if !matches!(key.as_str(), "entity" | "kind" | "query" | "limit") {
            return Err(format!(
                "unknown argument `{key}`; use entity, kind, query, limit"
            ));
        }
    }
    let text = |name: &str| -> Result<Option<String>, String> {
        match object.get(name) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(format!("`{name}` must be a string")),
        }
    };
    let (entity, kind, query) = (text("entity")?, text("kind")?, text("query")?);
    let limit = match object.get("limit") {
        None | Some(Json::Null) => 5,
        Some(l) => l
            .as_u64()
            .filter(|l| (1..=u64::from(MAX_MODEL_LIMIT)).contains(l))
            .ok_or(format!(
                "`limit` must be an integer from 1 to {MAX_MODEL_LIMIT}"
            ))? as u32,
    };
    match (entity, kind, query) {
        (Some(_), _, Some(_)) => Err("give `entity` or `query`, not both".to_string()),
        (None, kind, Some(query)) => Ok(SummaryCall::Search(SearchSummariesRequest {
            query,
            kinds: kind.into_iter().collect(),
            k: limit,
        })),
        (Some(entity), kind, None) => Ok(SummaryCall::Get(GetSummariesRequest {
            kind: kind.unwrap_or_default(),
            entity,
            limit: 1,
            offset: 0,
        })),
        (None, Some(kind), None) => Ok(SummaryCall::Get(GetSummariesRequest {
            kind,
            entity: String::new(),
            limit,
            offset: 0,
        })),
        (None, None, None) => Err("give `entity`, `kind` or `query`".to_string()),
    }
}

/// Summaries as delimited data for the model: per summary its citation id,
/// entity, freshness, text and facts JSON; then close alternatives.
pub fn summaries_for_model(
    call_id: &str,
    found: &SummaryToolResult,
    sanitize: impl Fn(&str) -> String,
) -> String {
    let mut out = format!(
        "{}\nsummaries: {}\n",
        super::open_tag(call_id, "ok"),
        found.summaries.len()
    );
    let matched = EntityMatchKind::try_from(found.r#match).unwrap_or(EntityMatchKind::Unspecified);
    if matched == EntityMatchKind::Fuzzy
        && let Some(first) = found.summaries.first()
    {
        out.push_str(&format!(
            "note: no exact name matched; this is the closest entity, {:?}. Say so if it may not be the one meant.\n",
            sanitize(&first.entity_name)
        ));
    }
    for (i, s) in found.summaries.iter().enumerate() {
        out.push_str(&format!(
            "[{}] id={} kind={} entity={} (key {}); computed {}; data last checked {} ago{}\n",
            i + 1,
            sanitize(&s.id),
            sanitize(&s.kind),
            sanitize(&s.entity_name),
            sanitize(&s.entity_key),
            s.computed_at
                .as_ref()
                .map_or_else(|| "at an unknown time".to_string(), timestamp_text),
            age_text(s.age_seconds),
            if s.last_error.is_empty() {
                String::new()
            } else {
                format!(
                    "; the latest refresh failed ({}), so this may be stale",
                    sanitize(&s.last_error)
                )
            }
        ));
        out.push_str(&format!("  text: {}\n", sanitize(&s.text)));
        let facts: String = s.facts_json.chars().take(MAX_FACTS_CHARS).collect();
        let cut = if facts.len() < s.facts_json.len() {
            " (cut)"
        } else {
            ""
        };
        out.push_str(&format!("  facts{cut}: {}\n", sanitize(&facts)));
    }
    if !found.alternatives.is_empty() {
        let names: Vec<String> = found
            .alternatives
            .iter()
            .map(|c| {
                format!(
                    "{} ({} {})",
                    sanitize(&c.name),
                    sanitize(&c.kind),
                    sanitize(&c.key)
                )
            })
            .collect();
        out.push_str(&format!("other close matches: {}\n", names.join("; ")));
    }
    out.push_str("</tool_result>");
    out
}

fn timestamp_text(t: &prost_types::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.seconds, 0).map_or_else(
        || "at an unknown time".to_string(),
        |d| d.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// `90` → `1 min`, `7200` → `2 h`, `200000` → `2 d`.
fn age_text(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3_600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests;
