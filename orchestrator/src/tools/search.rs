//! The `search_documents` tool: hybrid search (`SearchService`) as the model
//! sees it — its description (built from the collections the search service
//! declares for the caller), its JSON arguments turned into a
//! `SearchRequest`, and hits written as delimited data, each cited.

use futures::future::BoxFuture;
use quarry_llm::{ToolCall, ToolSpec};
use quarry_proto::v1::{
    Citation, CitationKind, CollectionInfo, FieldRange, FieldValue, FieldValues, Filter,
    FilterList, ListCollectionsRequest, SearchMode, SearchRequest, SearchToolResult, Value, filter,
    search_service_client::SearchServiceClient, tool_result::Outcome, value::Kind,
};
use serde_json::{Map, Value as Json, json};
use tracing::warn;

use super::{ModelTool, ToolContext, ToolOutcome, sanitize};
use crate::{caller::AskCaller, render::value_text, transport::ToolChannel};

/// Name of the search tool as the model sees it.
pub const SEARCH_DOCUMENTS: &str = "search_documents";

/// Hits a model may ask for in one call.
pub const MAX_MODEL_K: u32 = 50;

/// Deepest filter nesting accepted from a model.
const MAX_DEPTH: usize = 16;

/// The search tool, reached through its gRPC client.
#[derive(Debug, Clone)]
pub struct SearchTool {
    client: SearchServiceClient<ToolChannel>,
    /// Characters per field shown to the model.
    max_cell_chars: usize,
}

impl SearchTool {
    /// The tool over `client`, showing the model at most `max_cell_chars`
    /// characters of a field.
    pub fn new(client: SearchServiceClient<ToolChannel>, max_cell_chars: usize) -> Self {
        Self {
            client,
            max_cell_chars,
        }
    }

    /// The collections the search service lists for `caller`; `None` when
    /// listing fails (logged).
    pub async fn collections(&self, caller: &AskCaller) -> Option<Vec<CollectionInfo>> {
        let mut client = self.client.clone();
        match client
            .list_collections(caller.request(ListCollectionsRequest {}))
            .await
        {
            Ok(response) => Some(response.into_inner().collections),
            Err(status) => {
                warn!(error = %status.message(), "listing search collections failed");
                None
            }
        }
    }

    /// Runs `request` for `caller`; the hits, or the error message for the
    /// model.
    ///
    /// # Errors
    /// The search service's status, as a message the model can read.
    pub async fn search(
        &self,
        request: SearchRequest,
        caller: &AskCaller,
    ) -> Result<SearchToolResult, String> {
        let mut client = self.client.clone();
        let (collection, query, mode) = (
            request.collection.clone(),
            request.query.clone(),
            request.mode,
        );
        client
            .search(caller.request(request))
            .await
            .map(|r| {
                let r = r.into_inner();
                SearchToolResult {
                    collection,
                    query,
                    mode: if r.mode == 0 { mode } else { r.mode },
                    hits: r.hits,
                    exact_vector_search: r.exact_vector_search,
                    documents: r.documents,
                    embedded_documents: r.embedded_documents,
                }
            })
            .map_err(|status| status.message().to_string())
    }

    /// Shapes `result` to call `call_id`: the hits for the client and, as
    /// delimited data, for the model; one document citation per hit.
    pub fn outcome(&self, call_id: &str, result: Result<SearchToolResult, String>) -> ToolOutcome {
        let found = match result {
            Ok(found) => found,
            Err(message) => return ToolOutcome::failed(call_id, message),
        };
        let citations = found
            .hits
            .iter()
            .map(|hit| Citation {
                kind: CitationKind::Document as i32,
                call_id: call_id.to_string(),
                sql: String::new(),
                source_id: format!("{}/{}", found.collection, hit.key),
            })
            .collect();
        ToolOutcome {
            for_model: hits_for_model(call_id, &found, self.max_cell_chars, sanitize),
            result: Outcome::Search(found),
            citations,
            model_calls: Vec::new(),
        }
    }
}

impl ModelTool for SearchTool {
    fn name(&self) -> &str {
        SEARCH_DOCUMENTS
    }

    fn scope(&self) -> Option<&'static str> {
        Some(quarry_auth::scopes::SEARCH)
    }

    /// Offered when the search service lists collections for the caller.
    fn spec<'a>(&'a self, caller: &'a AskCaller) -> BoxFuture<'a, Option<ToolSpec>> {
        Box::pin(async move { spec(&self.collections(caller).await?) })
    }

    fn guidance(&self) -> Option<String> {
        Some(format!(
            "You can also find documents by meaning with `{SEARCH_DOCUMENTS}` (free-text fields, \
             with structured filters); cite hits by their key.\n"
        ))
    }

    fn call<'a>(&'a self, call: &'a ToolCall, cx: ToolContext<'a>) -> BoxFuture<'a, ToolOutcome> {
        Box::pin(async move {
            let result = match request_from_arguments(&call.arguments) {
                Ok(request) => self.search(request, cx.caller).await,
                Err(message) => Err(message),
            };
            self.outcome(&call.id, result)
        })
    }
}

/// The tool spec, describing every collection (fields and filter types) so
/// the model can choose one and write a filter; `None` with no collection.
pub fn spec(collections: &[CollectionInfo]) -> Option<ToolSpec> {
    if collections.is_empty() {
        return None;
    }
    let mut described = String::new();
    for c in collections {
        let filters: Vec<String> = c
            .filter_fields
            .iter()
            .map(|f| format!("{} ({})", f.name, f.r#type))
            .collect();
        described.push_str(&format!(
            "\n- `{}` (from {}): searched text: {}; filters: {}; returned fields: {}",
            c.name,
            c.source,
            c.text_fields.join(", "),
            if filters.is_empty() {
                "none".into()
            } else {
                filters.join(", ")
            },
            c.stored_fields.join(", "),
        ));
    }
    let names: Vec<&str> = collections.iter().map(|c| c.name.as_str()).collect();
    Some(ToolSpec {
        name: SEARCH_DOCUMENTS.to_string(),
        description: format!(
            "Find documents by meaning in free-text fields (hybrid BM25 + semantic search), always \
             inside structured filters. Use it for descriptive questions (\"watercolours of storms at \
             sea\"); use the database tool for counts and exact lookups. Collections:{described}\n\
             Filter syntax (JSON): {{\"eq\": {{\"field\": f, \"value\": v}}}}, {{\"in\": {{\"field\": f, \
             \"values\": [..]}}}}, {{\"range\": {{\"field\": f, \"gte\"|\"gt\": a, \"lte\"|\"lt\": b}}}}, \
             {{\"prefix\": {{\"field\": f, \"value\": \"text\"}}}}, {{\"and\": [..]}}, {{\"or\": [..]}}, \
             {{\"not\": filter}}. keyword values match exactly (case-sensitive); a keywords field \
             matches when any of its values does."
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "collection": { "type": "string", "enum": names },
                "query": { "type": "string", "description": "What to look for, in plain words." },
                "filter": { "type": "object", "description": "Optional structured filter (syntax above)." },
                "k": { "type": "integer", "minimum": 1, "maximum": MAX_MODEL_K, "description": "Hits wanted (default 10)." }
            },
            "required": ["collection", "query"],
            "additionalProperties": false
        }),
    })
}

/// Turns the model's JSON arguments into a hybrid-mode `SearchRequest`.
///
/// # Errors
/// A message for the model naming the argument at fault (e.g.
/// `filter.and[1].range: …`).
pub fn request_from_arguments(arguments: &str) -> Result<SearchRequest, String> {
    let args: Json = serde_json::from_str(arguments)
        .map_err(|e| format!("arguments must be a JSON object: {e}"))?;
    let object = args.as_object().ok_or("arguments must be a JSON object")?;
    for key in object.keys() {
        if !matches!(key.as_str(), "collection" | "query" | "filter" | "k") {
            return Err(format!(
                "unknown argument `{key}`; use collection, query, filter, k"
            ));
        }
    }
    let collection = object
        .get("collection")
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("`collection` is required (a string)")?
        .to_string();
    let query = object
        .get("query")
        .and_then(Json::as_str)
        .ok_or("`query` is required (a string)")?
        .to_string();
    let k = match object.get("k") {
        None | Some(Json::Null) => 10,
        Some(k) => k
            .as_u64()
            .filter(|k| (1..=u64::from(MAX_MODEL_K)).contains(k))
            .ok_or(format!("`k` must be an integer from 1 to {MAX_MODEL_K}"))?
            as u32,
    };
    let filter = match object.get("filter") {
        None | Some(Json::Null) => None,
        Some(f) => Some(filter_from_json(f, "filter", 0)?),
    };
    Ok(SearchRequest {
        collection,
        query,
        filter,
        mode: SearchMode::Hybrid as i32,
        k,
        fields: Vec::new(),
    })
}

fn filter_from_json(json: &Json, path: &str, depth: usize) -> Result<Filter, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{path}: nested deeper than {MAX_DEPTH}"));
    }
    let object = json.as_object().filter(|o| o.len() == 1).ok_or(format!(
        "{path}: must be an object with exactly one of eq, in, range, prefix, and, or, not"
    ))?;
    let Some((op, body)) = object.iter().next() else {
        return Err(format!("{path}: empty filter"));
    };
    let at = format!("{path}.{op}");
    let kind = match op.as_str() {
        "eq" | "prefix" => {
            let body = fields_of(body, &at, &["field", "value"])?;
            let value = FieldValue {
                field: field_name(&body, &at)?,
                value: Some(scalar(body.get("value"), &format!("{at}.value"))?),
            };
            if op == "eq" {
                filter::Kind::Eq(value)
            } else {
                filter::Kind::Prefix(value)
            }
        }
        "in" => {
            let body = fields_of(body, &at, &["field", "values"])?;
            let values = body
                .get("values")
                .and_then(Json::as_array)
                .ok_or(format!("{at}.values: must be an array"))?
                .iter()
                .enumerate()
                .map(|(i, v)| scalar(Some(v), &format!("{at}.values[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            filter::Kind::In(FieldValues {
                field: field_name(&body, &at)?,
                values,
            })
        }
        "range" => {
            let body = fields_of(body, &at, &["field", "gte", "gt", "lte", "lt"])?;
            let bound =
                |inclusive: &str, exclusive: &str| -> Result<(Option<Value>, bool), String> {
                    match (body.get(inclusive), body.get(exclusive)) {
                        (Some(_), Some(_)) => Err(format!(
                            "{at}: give `{inclusive}` or `{exclusive}`, not both"
                        )),
                        (Some(v), None) => {
                            Ok((Some(scalar(Some(v), &format!("{at}.{inclusive}"))?), false))
                        }
                        (None, Some(v)) => {
                            Ok((Some(scalar(Some(v), &format!("{at}.{exclusive}"))?), true))
                        }
                        (None, None) => Ok((None, false)),
                    }
                };
            let (lower, lower_exclusive) = bound("gte", "gt")?;
            let (upper, upper_exclusive) = bound("lte", "lt")?;
            if lower.is_none() && upper.is_none() {
                return Err(format!(
                    "{at}: give a lower (gte/gt) or upper (lte/lt) bound"
                ));
            }
            filter::Kind::Range(FieldRange {
                field: field_name(&body, &at)?,
                lower,
                upper,
                lower_exclusive,
                upper_exclusive,
            })
        }
        "and" | "or" => {
            let filters = body
                .as_array()
                .ok_or(format!("{at}: must be an array of filters"))?
                .iter()
                .enumerate()
                .map(|(i, f)| filter_from_json(f, &format!("{at}[{i}]"), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            let list = FilterList { filters };
            if op == "and" {
                filter::Kind::And(list)
            } else {
                filter::Kind::Or(list)
            }
        }
        "not" => filter::Kind::Not(Box::new(filter_from_json(body, &at, depth + 1)?)),
        other => {
            return Err(format!(
                "{path}: unknown operator `{other}`; use eq, in, range, prefix, and, or, not"
            ));
        }
    };
    Ok(Filter { kind: Some(kind) })
}

fn fields_of(body: &Json, at: &str, allowed: &[&str]) -> Result<Map<String, Json>, String> {
    let object = body.as_object().ok_or(format!("{at}: must be an object"))?;
    if let Some(key) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "{at}: unknown key `{key}`; allowed: {}",
            allowed.join(", ")
        ));
    }
    Ok(object.clone())
}

fn field_name(body: &Map<String, Json>, at: &str) -> Result<String, String> {
    body.get("field")
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or(format!("{at}.field: required (a field name)"))
}

fn scalar(value: Option<&Json>, at: &str) -> Result<Value, String> {
    let kind = match value {
        Some(Json::String(s)) => Kind::TextValue(s.clone()),
        Some(Json::Number(n)) => match n.as_i64() {
            Some(i) => Kind::Int64Value(i),
            None => Kind::DoubleValue(n.as_f64().ok_or(format!("{at}: number out of range"))?),
        },
        Some(Json::Bool(b)) => Kind::BoolValue(*b),
        Some(_) | None => return Err(format!("{at}: must be a string or a number")),
    };
    Ok(Value { kind: Some(kind) })
}

/// Hits as delimited data for the model: one block per hit with its key,
/// score and returned fields (each cut to `max_chars` characters); when the
/// vector retriever ran (`mode` is not bm25) over a partly embedded
/// collection, a note says how much of it semantic search covered.
/// `sanitize` escapes markup in data.
pub fn hits_for_model(
    call_id: &str,
    found: &SearchToolResult,
    max_chars: usize,
    sanitize: impl Fn(&str) -> String,
) -> String {
    let (hits, documents, embedded) = (&found.hits, found.documents, found.embedded_documents);
    let mode = SearchMode::try_from(found.mode).unwrap_or(SearchMode::Hybrid);
    let mut out = format!(
        "{}\ncollection: {}\nhits: {}\n",
        super::open_tag(call_id, "ok"),
        sanitize(&found.collection),
        hits.len()
    );
    if mode != SearchMode::Bm25 && embedded < documents {
        out.push_str(&format!(
            "note: semantic search covers {embedded} of {documents} documents so far (embeddings are still being computed); keyword search covers all\n"
        ));
    }
    for (i, hit) in hits.iter().enumerate() {
        out.push_str(&format!(
            "[{}] key={} score={:.4}\n",
            i + 1,
            sanitize(&hit.key),
            hit.score
        ));
        let mut fields: Vec<_> = hit.fields.iter().collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (name, value) in fields {
            let text = value_text(value);
            if text.is_empty() {
                continue;
            }
            let cut: String = text.chars().take(max_chars).collect();
            out.push_str(&format!(
                "  {}: {}\n",
                sanitize(name),
                sanitize(&cut.replace('\n', " "))
            ));
        }
    }
    out.push_str("</tool_result>");
    out
}

#[cfg(test)]
mod tests;
