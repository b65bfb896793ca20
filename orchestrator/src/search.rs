//! The `search_documents` tool as the model sees it: its description (built
//! from the collections the search service declares), its JSON arguments
//! turned into a `SearchRequest`, and hits written as delimited data.

use quarry_llm::ToolSpec;
use quarry_proto::v1::{
    CollectionInfo, FieldRange, FieldValue, FieldValues, Filter, FilterList, SearchMode,
    SearchRequest, SearchToolResult, Value, filter, value::Kind,
};
use serde_json::{Map, Value as Json, json};

use crate::render::value_text;

/// Name of the search tool as the model sees it.
pub const SEARCH_DOCUMENTS: &str = "search_documents";

/// Hits a model may ask for in one call.
pub const MAX_MODEL_K: u32 = 50;

/// Deepest filter nesting accepted from a model.
const MAX_DEPTH: usize = 16;

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
        "<tool_result call_id=\"{call_id}\" status=\"ok\">\ncollection: {}\nhits: {}\n",
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
mod tests {
    use super::*;
    use quarry_proto::v1::FilterFieldInfo;

    #[test]
    fn arguments_become_a_request_with_a_typed_filter() {
        let request = request_from_arguments(
            r#"{"collection": "artworks", "query": "storm at sea",
                "filter": {"and": [{"eq": {"field": "classification", "value": "on paper, unique"}},
                                   {"range": {"field": "acquisition_year", "gte": 1900, "lt": 1950.5}},
                                   {"not": {"in": {"field": "artist", "values": ["A", "B"]}}}]},
                "k": 5}"#,
        )
        .unwrap();
        assert_eq!(request.k, 5);
        assert_eq!(request.mode, SearchMode::Hybrid as i32);
        let Some(filter::Kind::And(list)) = request.filter.unwrap().kind else {
            panic!()
        };
        let Some(filter::Kind::Range(range)) = &list.filters[1].kind else {
            panic!()
        };
        assert_eq!(
            range.lower.as_ref().unwrap().kind,
            Some(Kind::Int64Value(1900))
        );
        assert_eq!(
            range.upper.as_ref().unwrap().kind,
            Some(Kind::DoubleValue(1950.5))
        );
        assert!(range.upper_exclusive && !range.lower_exclusive);
        assert!(matches!(list.filters[2].kind, Some(filter::Kind::Not(_))));
    }

    #[test]
    fn bad_arguments_name_the_place() {
        let error = |args: &str| request_from_arguments(args).unwrap_err();
        assert!(error(r#"{"query": "x"}"#).contains("`collection`"));
        assert!(error(r#"{"collection": "a", "query": "x", "k": 500}"#).contains("`k`"));
        let e = error(
            r#"{"collection": "a", "query": "x", "filter": {"and": [{"eq": {"field": "f", "value": [1]}}]}}"#,
        );
        assert!(e.starts_with("filter.and[0].eq.value:"), "{e}");
        let e = error(
            r#"{"collection": "a", "query": "x", "filter": {"range": {"field": "f", "gt": 1, "gte": 2}}}"#,
        );
        assert!(e.starts_with("filter.range:"), "{e}");
        let e = error(r#"{"collection": "a", "query": "x", "filter": {"like": {}}}"#);
        assert!(e.contains("unknown operator `like`"), "{e}");
        let mut deep = String::from(r#"{"eq": {"field": "f", "value": 1}}"#);
        for _ in 0..40 {
            deep = format!(r#"{{"not": {deep}}}"#);
        }
        let e = error(&format!(
            r#"{{"collection": "a", "query": "x", "filter": {deep}}}"#
        ));
        assert!(e.contains("nested deeper"), "{e}");
    }

    #[test]
    fn spec_lists_collections_and_filter_types() {
        assert!(spec(&[]).is_none());
        let spec = spec(&[CollectionInfo {
            name: "artworks".into(),
            source: "tate.artworks".into(),
            text_fields: vec!["title".into()],
            filter_fields: vec![FilterFieldInfo {
                name: "artist".into(),
                r#type: "keywords".into(),
            }],
            stored_fields: vec!["url".into()],
            ..Default::default()
        }])
        .unwrap();
        assert!(spec.description.contains("`artworks` (from tate.artworks)"));
        assert!(spec.description.contains("artist (keywords)"));
        assert_eq!(
            spec.parameters["properties"]["collection"]["enum"][0],
            "artworks"
        );
    }

    #[test]
    fn the_coverage_note_appears_only_when_vectors_ran_over_a_partial_collection() {
        let found = |mode: SearchMode, embedded| SearchToolResult {
            collection: "artworks".into(),
            mode: mode as i32,
            hits: vec![quarry_proto::v1::SearchHit {
                key: "7".into(),
                score: 0.5,
                ..Default::default()
            }],
            documents: 300,
            embedded_documents: embedded,
            ..Default::default()
        };
        let text = |mode| hits_for_model("c1", &found(mode, 0), 50, str::to_owned);
        assert!(!text(SearchMode::Bm25).contains("note:"));
        assert!(text(SearchMode::Hybrid).contains("covers 0 of 300"));
        let full = hits_for_model("c1", &found(SearchMode::Vector, 300), 50, str::to_owned);
        assert!(!full.contains("note:"));
        assert!(full.contains("[1] key=7 score=0.5000"));
    }
}
