//! gRPC adapter: `quarry.v1.SummaryService` over [`SummaryTool`].
//!
//! Converts protocol messages to domain values (errors name the request
//! field), requires the scope [`BUILD_SCOPE`] for BuildSummaries, calls the
//! domain, and maps [`SummaryError`] to `tonic::Status` in [`status_of`],
//! the one place that decides codes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use quarry_auth::Caller;
use quarry_proto::v1 as pb;
use quarry_proto::v1::summary_service_server::SummaryService;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::instrument;

pub use crate::error::{BUILD_RUNNING_RETRY, ERROR_DOMAIN};
use crate::error::{Candidate, SummaryError};
use crate::model::{BuildFailure, BuildOptions, BuildProgressEvent, BuildReport, Summary};
use crate::service::{GetRequest, KindStatus, MatchKind, SearchRequest, SummaryTool};

/// Scope a token needs to run BuildSummaries.
pub const BUILD_SCOPE: &str = "summaries:build";
/// Events buffered for a BuildSummaries stream; progress events that do not
/// fit (a slow reader) are dropped, the report never is.
const BUILD_EVENTS: usize = 64;

/// The tonic service implementation.
#[derive(Debug, Clone)]
pub struct SummaryGrpc {
    tool: Arc<SummaryTool>,
}

impl SummaryGrpc {
    /// Serves `tool`.
    pub fn new(tool: Arc<SummaryTool>) -> Self {
        Self { tool }
    }
}

/// A domain error as a status: the one mapping of `quarry-proto`
/// ([`quarry_proto::status_of`]) applied to [`SummaryError`]'s kinds and
/// details (see its [`ServiceError`](quarry_proto::ServiceError) impl).
pub fn status_of(error: &SummaryError) -> Status {
    quarry_proto::status_of(error)
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

impl From<Summary> for pb::Summary {
    fn from(s: Summary) -> Self {
        pb::Summary {
            id: s.id(),
            facts_json: s.facts.to_string(),
            kind: s.kind,
            entity_key: s.entity_key,
            entity_name: s.entity_name,
            text: s.text,
            data_version: s.data_version,
            computed_at: Some(timestamp(s.computed_at)),
            checked_at: Some(timestamp(s.checked_at)),
            age_seconds: s.age_seconds,
            last_error: s.last_error.unwrap_or_default(),
            score: s.score,
        }
    }
}

impl From<Candidate> for pb::EntityCandidate {
    fn from(c: Candidate) -> Self {
        pb::EntityCandidate {
            kind: c.kind,
            key: c.key,
            name: c.name,
            score: c.score,
        }
    }
}

impl From<MatchKind> for pb::EntityMatchKind {
    fn from(m: MatchKind) -> Self {
        match m {
            MatchKind::Key => pb::EntityMatchKind::Key,
            MatchKind::Name => pb::EntityMatchKind::Name,
            MatchKind::Fuzzy => pb::EntityMatchKind::Fuzzy,
            MatchKind::Listing => pb::EntityMatchKind::Listing,
        }
    }
}

impl From<KindStatus> for pb::SummaryKind {
    fn from(k: KindStatus) -> Self {
        pb::SummaryKind {
            name: k.name,
            entity: k.entity,
            description: k.description,
            summaries: k.summaries,
            failed: k.failed,
            oldest_checked_at: k.oldest_checked_at.map(timestamp),
        }
    }
}

impl From<BuildFailure> for pb::BuildFailure {
    fn from(f: BuildFailure) -> Self {
        pb::BuildFailure {
            kind: f.kind,
            entity_key: f.entity_key,
            entity_name: f.entity_name,
            error: f.error,
            tenant: f.tenant,
        }
    }
}

impl From<BuildReport> for pb::BuildReport {
    fn from(r: BuildReport) -> Self {
        pb::BuildReport {
            started_at: Some(timestamp(r.started_at)),
            finished_at: Some(timestamp(r.finished_at)),
            trigger: r.trigger,
            entities: r.entities,
            built: r.built,
            unchanged: r.unchanged,
            failed: r.failed,
            removed: r.removed,
            failures: r.failures.into_iter().map(Into::into).collect(),
            embedded: r.embedded,
            warnings: r.warnings,
        }
    }
}

impl From<BuildProgressEvent> for pb::BuildProgress {
    fn from(p: BuildProgressEvent) -> Self {
        pb::BuildProgress {
            kind: p.kind,
            done: p.done,
            total: p.total,
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// A protocol lookup as a domain request.
pub fn get_request_from_proto(request: &pb::GetSummariesRequest) -> GetRequest {
    GetRequest {
        kind: non_empty(&request.kind),
        entity: non_empty(&request.entity),
        limit: request.limit,
        offset: request.offset,
    }
}

/// A protocol build request as domain options (`trigger` `rpc`).
///
/// # Errors
/// [`SummaryError::InvalidArgument`] on `entity_keys` without exactly one
/// kind (unknown kinds are refused by the build itself).
pub fn build_options_from_proto(
    request: &pb::BuildSummariesRequest,
) -> Result<BuildOptions, SummaryError> {
    if !request.entity_keys.is_empty() && request.kinds.len() != 1 {
        return Err(SummaryError::invalid(
            "entity_keys",
            "building chosen entities needs exactly one kind in `kinds`",
        ));
    }
    Ok(BuildOptions {
        kinds: request.kinds.iter().map(|k| k.trim().to_owned()).collect(),
        entity_keys: request.entity_keys.clone(),
        force: request.force,
        trigger: "rpc".to_owned(),
    })
}

fn event(e: pb::build_summaries_response::Event) -> pb::BuildSummariesResponse {
    pb::BuildSummariesResponse { event: Some(e) }
}

#[tonic::async_trait]
impl SummaryService for SummaryGrpc {
    type BuildSummariesStream = ReceiverStream<Result<pb::BuildSummariesResponse, Status>>;

    #[instrument(
        skip(self, request),
        fields(kind = %request.get_ref().kind, tenant, subject, request_id)
    )]
    async fn get_summaries(
        &self,
        request: Request<pb::GetSummariesRequest>,
    ) -> Result<Response<pb::GetSummariesResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        let domain = get_request_from_proto(request.get_ref());
        let response = self
            .tool
            .get(&caller, domain)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::GetSummariesResponse {
            summaries: response.summaries.into_iter().map(Into::into).collect(),
            r#match: pb::EntityMatchKind::from(response.matched) as i32,
            alternatives: response.alternatives.into_iter().map(Into::into).collect(),
            total: response.total,
        }))
    }

    #[instrument(skip(self, request), fields(tenant, subject, request_id))]
    async fn search_summaries(
        &self,
        request: Request<pb::SearchSummariesRequest>,
    ) -> Result<Response<pb::SearchSummariesResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        let request = request.into_inner();
        let response = self
            .tool
            .search(
                &caller,
                SearchRequest {
                    query: request.query,
                    kinds: request.kinds,
                    k: request.k,
                },
            )
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::SearchSummariesResponse {
            summaries: response.summaries.into_iter().map(Into::into).collect(),
            retrieval: response.retrieval.as_str().to_owned(),
            searched: response.searched,
            covered: response.covered,
        }))
    }

    #[instrument(skip(self, request), fields(tenant, subject, request_id))]
    async fn list_summary_kinds(
        &self,
        request: Request<pb::ListSummaryKindsRequest>,
    ) -> Result<Response<pb::ListSummaryKindsResponse>, Status> {
        let caller = Caller::of_traced(&request)?;
        let kinds = self.tool.kinds(&caller).await.map_err(|e| status_of(&e))?;
        let last = self
            .tool
            .last_build(&caller)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::ListSummaryKindsResponse {
            kinds: kinds.into_iter().map(Into::into).collect(),
            last_build: last.map(Into::into),
        }))
    }

    /// Streams progress, then the report (or the build's error status).
    /// The build runs in its own task and is cancelled when the client goes
    /// away (the response stream is dropped).
    #[instrument(skip(self, request), fields(tenant, subject, request_id))]
    async fn build_summaries(
        &self,
        request: Request<pb::BuildSummariesRequest>,
    ) -> Result<Response<Self::BuildSummariesStream>, Status> {
        let caller = Caller::of_traced(&request)?;
        caller.grant.require(BUILD_SCOPE).map_err(Status::from)?;
        let options = build_options_from_proto(request.get_ref()).map_err(|e| status_of(&e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(BUILD_EVENTS);
        let tool = Arc::clone(&self.tool);
        tokio::spawn(async move {
            let progress_tx = tx.clone();
            let progress = move |p: BuildProgressEvent| {
                let _ = progress_tx.try_send(Ok(event(
                    pb::build_summaries_response::Event::Progress(p.into()),
                )));
            };
            let result = tokio::select! {
                () = tx.closed() => {
                    tracing::info!("summary build cancelled: the client went away");
                    return;
                }
                result = tool.refresh(&caller, options, &progress) => result,
            };
            let message = match result {
                Ok(report) => Ok(event(pb::build_summaries_response::Event::Report(
                    report.into(),
                ))),
                Err(e) => Err(status_of(&e)),
            };
            let _ = tx.send(message).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use tonic::Code;
    use tonic_types::StatusExt as _;

    use super::*;
    use crate::definition::DefinitionError;

    #[test]
    fn statuses_carry_codes_and_details() {
        let s = status_of(&SummaryError::invalid(
            "limit",
            "101 is above the limit of 100",
        ));
        assert_eq!(s.code(), Code::InvalidArgument);
        let details = s.get_error_details();
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "limit");

        let s = status_of(&SummaryError::NotFound {
            entity: "zzzz".into(),
            kind: Some("artist".into()),
            closest: vec![Candidate {
                kind: "artist".into(),
                key: "558".into(),
                name: "Joseph Mallord William Turner".into(),
                score: 0.0,
            }],
        });
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(
            s.message(),
            "no artist matching \"zzzz\"; closest: Joseph Mallord William Turner (artist 558)"
        );
        let info = s.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "ENTITY_NOT_FOUND");
        assert!(info.metadata["closest"].contains("Joseph Mallord William Turner"));

        let s = status_of(&SummaryError::BuildRunning);
        assert_eq!(s.code(), Code::Aborted);
        assert!(s.get_error_details().retry_info().is_some());

        let s = status_of(&SummaryError::Definition(DefinitionError::new(
            "artist",
            Some("media"),
            "bad",
        )));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("artist.media"));
        assert_eq!(
            status_of(&SummaryError::Unavailable("x".into())).code(),
            Code::Unavailable
        );
        assert_eq!(
            status_of(&SummaryError::Internal("x".into())).code(),
            Code::Internal
        );
    }

    #[test]
    fn build_requests_need_one_kind_for_entity_keys() {
        let request = pb::BuildSummariesRequest {
            kinds: vec![],
            entity_keys: vec!["1".into()],
            force: false,
        };
        let e = build_options_from_proto(&request).unwrap_err();
        assert!(
            matches!(e, SummaryError::InvalidArgument { ref field, .. } if field == "entity_keys")
        );
        let request = pb::BuildSummariesRequest {
            kinds: vec!["artist".into()],
            entity_keys: vec!["1".into()],
            force: true,
        };
        let options = build_options_from_proto(&request).unwrap();
        assert_eq!(options.trigger, "rpc");
        assert!(options.force);
    }

    #[test]
    fn empty_proto_strings_are_absent() {
        let r = get_request_from_proto(&pb::GetSummariesRequest {
            kind: " ".into(),
            entity: "turner".into(),
            limit: 0,
            offset: 0,
        });
        assert_eq!(r.kind, None);
        assert_eq!(r.entity.as_deref(), Some("turner"));
    }
}
