//! gRPC adapter: `quarry.v1.SearchService` over [`SearchTool`].
//!
//! Builds the [`Caller`] of each request (the auth layer's principal,
//! request id, deadline), converts protocol messages to domain values
//! (errors name the request field, e.g. `filter.and[1].range.lower`),
//! calls the domain with the caller, and maps
//! [`SearchError`] to `tonic::Status` in [`status_of`], through the error
//! contract of `quarry-proto`.

use std::sync::Arc;

use quarry_auth::Caller;
use quarry_proto::v1 as pb;
use quarry_proto::v1::search_service_server::SearchService;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::error::SearchError;
use crate::filter::{Filter, Value};
use crate::service::{FieldData, Mode, SearchRequest, SearchTool};

/// Deepest proto filter nesting converted (deeper is refused before
/// recursion; validation applies the tighter [`crate::filter::MAX_DEPTH`]).
const MAX_PROTO_DEPTH: usize = 64;

/// The tonic service implementation.
#[derive(Debug, Clone)]
pub struct SearchGrpc {
    tool: Arc<SearchTool>,
}

impl SearchGrpc {
    /// Serves `tool`.
    pub fn new(tool: Arc<SearchTool>) -> Self {
        Self { tool }
    }
}

/// A domain error as a status: the one mapping of `quarry-proto`
/// ([`quarry_proto::status_of`]) applied to [`SearchError`]'s kinds (see its
/// [`ServiceError`](quarry_proto::ServiceError) impl).
pub fn status_of(error: &SearchError) -> Status {
    quarry_proto::status_of(error)
}

fn value_from_proto(value: Option<&pb::Value>, path: &str) -> Result<Value, SearchError> {
    use pb::value::Kind;
    match value.and_then(|v| v.kind.as_ref()) {
        Some(Kind::TextValue(s)) => Ok(Value::Text(s.clone())),
        Some(Kind::Int64Value(i)) => Ok(Value::Int(*i)),
        Some(Kind::DoubleValue(f)) => Ok(Value::Float(*f)),
        None => Err(SearchError::invalid(path, "a value is required")),
        Some(_) => Err(SearchError::invalid(
            path,
            "filter values are text_value, int64_value or double_value",
        )),
    }
}

fn bound_from_proto(
    value: Option<&pb::Value>,
    exclusive: bool,
    path: &str,
) -> Result<std::ops::Bound<Value>, SearchError> {
    if value.is_none() {
        return Ok(std::ops::Bound::Unbounded);
    }
    let v = value_from_proto(value, path)?;
    Ok(if exclusive {
        std::ops::Bound::Excluded(v)
    } else {
        std::ops::Bound::Included(v)
    })
}

/// A protocol filter as a domain filter; errors name the path under `path`.
///
/// # Errors
/// [`SearchError::InvalidArgument`] for an empty filter message, a value of
/// an unsupported kind, or nesting deeper than 64.
pub fn filter_from_proto(filter: &pb::Filter, path: &str) -> Result<Filter, SearchError> {
    convert(filter, path, 1)
}

fn convert(filter: &pb::Filter, path: &str, depth: usize) -> Result<Filter, SearchError> {
    use pb::filter::Kind;
    if depth > MAX_PROTO_DEPTH {
        return Err(SearchError::invalid(path, "filter nests too deep"));
    }
    let list = |l: &pb::FilterList, name: &str| {
        l.filters
            .iter()
            .enumerate()
            .map(|(i, f)| convert(f, &format!("{path}.{name}[{i}]"), depth + 1))
            .collect::<Result<Vec<_>, _>>()
    };
    match filter.kind.as_ref() {
        None => Err(SearchError::invalid(
            path,
            "empty filter: set one of eq, in, range, prefix, and, or, not",
        )),
        Some(Kind::Eq(fv)) => Ok(Filter::Eq {
            field: fv.field.clone(),
            value: value_from_proto(fv.value.as_ref(), &format!("{path}.eq.value"))?,
        }),
        Some(Kind::Prefix(fv)) => Ok(Filter::Prefix {
            field: fv.field.clone(),
            value: value_from_proto(fv.value.as_ref(), &format!("{path}.prefix.value"))?,
        }),
        Some(Kind::In(fvs)) => Ok(Filter::In {
            field: fvs.field.clone(),
            values: fvs
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| value_from_proto(Some(v), &format!("{path}.in.values[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
        }),
        Some(Kind::Range(r)) => Ok(Filter::Range {
            field: r.field.clone(),
            lower: bound_from_proto(
                r.lower.as_ref(),
                r.lower_exclusive,
                &format!("{path}.range.lower"),
            )?,
            upper: bound_from_proto(
                r.upper.as_ref(),
                r.upper_exclusive,
                &format!("{path}.range.upper"),
            )?,
        }),
        Some(Kind::And(l)) => Ok(Filter::And(list(l, "and")?)),
        Some(Kind::Or(l)) => Ok(Filter::Or(list(l, "or")?)),
        Some(Kind::Not(inner)) => Ok(Filter::Not(Box::new(convert(
            inner,
            &format!("{path}.not"),
            depth + 1,
        )?))),
    }
}

fn mode_to_proto(mode: Mode) -> pb::SearchMode {
    match mode {
        Mode::Bm25 => pb::SearchMode::Bm25,
        Mode::Vector => pb::SearchMode::Vector,
        Mode::Hybrid => pb::SearchMode::Hybrid,
    }
}

fn field_to_proto(data: &FieldData) -> pb::Value {
    use pb::value::Kind;
    let kind = match data {
        FieldData::Null => Kind::NullValue(0),
        FieldData::Text(s) => Kind::TextValue(s.clone()),
        FieldData::Int(i) => Kind::Int64Value(*i),
        FieldData::Float(f) => Kind::DoubleValue(*f),
        FieldData::Texts(v) => Kind::JsonValue(serde_json::Value::from(v.clone()).to_string()),
        FieldData::Json(v) => Kind::JsonValue(v.to_string()),
    };
    pb::Value { kind: Some(kind) }
}

/// A protocol request as a domain request.
///
/// # Errors
/// [`SearchError::InvalidArgument`] naming the field (`mode`, `filter…`).
pub fn request_from_proto(request: &pb::SearchRequest) -> Result<SearchRequest, SearchError> {
    let mode = match pb::SearchMode::try_from(request.mode) {
        Ok(pb::SearchMode::Unspecified | pb::SearchMode::Hybrid) => Mode::Hybrid,
        Ok(pb::SearchMode::Bm25) => Mode::Bm25,
        Ok(pb::SearchMode::Vector) => Mode::Vector,
        Err(_) => {
            return Err(SearchError::invalid(
                "mode",
                format!("unknown mode {}", request.mode),
            ));
        }
    };
    Ok(SearchRequest {
        collection: request.collection.clone(),
        query: request.query.clone(),
        filter: request
            .filter
            .as_ref()
            .map(|f| filter_from_proto(f, "filter"))
            .transpose()?,
        mode,
        k: usize::try_from(request.k).unwrap_or(usize::MAX),
        fields: request.fields.clone(),
    })
}

#[tonic::async_trait]
impl SearchService for SearchGrpc {
    #[instrument(
        skip(self, request),
        fields(collection = %request.get_ref().collection, tenant, subject, request_id)
    )]
    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        let domain = request_from_proto(request.get_ref()).map_err(|e| status_of(&e))?;
        let response = self
            .tool
            .search(&caller, domain)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::SearchResponse {
            hits: response
                .hits
                .iter()
                .map(|h| pb::SearchHit {
                    key: h.key.clone(),
                    score: h.score,
                    bm25: h.bm25.map(|s| pb::RetrieverScore {
                        rank: s.rank,
                        score: s.score,
                    }),
                    vector: h.vector.map(|s| pb::RetrieverScore {
                        rank: s.rank,
                        score: s.score,
                    }),
                    fields: h
                        .fields
                        .iter()
                        .map(|(k, v)| (k.clone(), field_to_proto(v)))
                        .collect(),
                })
                .collect(),
            mode: mode_to_proto(response.mode) as i32,
            exact_vector_search: response.exact_vector_search,
            documents: response.documents,
            embedded_documents: response.embedded_documents,
            embed_ms: response.embed_ms,
            total_ms: response.total_ms,
        }))
    }

    #[instrument(skip(self, request), fields(tenant, subject, request_id))]
    async fn list_collections(
        &self,
        request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        let collections = self
            .tool
            .collections(&caller)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::ListCollectionsResponse {
            collections: collections
                .iter()
                .map(|info| {
                    let c = &info.collection;
                    pb::CollectionInfo {
                        name: c.name.clone(),
                        source: format!("{}.{}", c.source.schema, c.source.table),
                        text_fields: c.text.iter().map(|f| f.name.clone()).collect(),
                        filter_fields: c
                            .filters
                            .iter()
                            .map(|f| pb::FilterFieldInfo {
                                name: f.name.clone(),
                                r#type: f.kind.as_str().to_owned(),
                            })
                            .collect(),
                        stored_fields: c.stored.iter().map(|f| f.name.clone()).collect(),
                        documents: info.documents,
                        embedded_documents: info.embedded_documents,
                        embedding_model: info.embedding_model.clone().unwrap_or_default(),
                    }
                })
                .collect(),
        }))
    }
}
