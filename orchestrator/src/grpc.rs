//! gRPC adapter: `quarry.v1.AssistantService` over [`Assistant`].
//!
//! Validates the request, takes the caller (the principal the auth layer put
//! into the request extensions, the request id, the deadline, the
//! credentials to forward) and hands over to the domain.

use quarry_proto::status::bad_request;
use std::sync::Arc;

use quarry_auth::Principal;
use quarry_proto::v1::{
    AskMode, AskRequest, DeleteConversationRequest, DeleteConversationResponse,
    GetConversationRequest, GetConversationResponse, ListConversationsRequest,
    ListConversationsResponse, assistant_service_server::AssistantService,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::{
    assistant::{AskStream, Assistant},
    caller::AskCaller,
    conversation::{ConversationStore, MAX_PAGE_SIZE},
};

/// Longest question accepted, in characters.
pub const MAX_QUESTION_CHARS: usize = 4_000;

/// The tonic service implementation.
#[derive(Debug, Clone)]
pub struct AssistantGrpc {
    assistant: Arc<Assistant>,
}

impl AssistantGrpc {
    /// Serves `assistant`.
    pub fn new(assistant: Arc<Assistant>) -> Self {
        Self { assistant }
    }
}

impl AssistantGrpc {
    fn store(&self) -> Result<&ConversationStore, Status> {
        self.assistant
            .conversations()
            .ok_or_else(|| Status::failed_precondition("this server does not keep conversations"))
    }
}

/// A required `conversation_id` field.
fn conversation_id(text: &str) -> Result<uuid::Uuid, Status> {
    if text.is_empty() {
        return Err(bad_request("conversation_id", "must not be empty"));
    }
    uuid::Uuid::parse_str(text).map_err(|_| bad_request("conversation_id", "must be a UUID"))
}

/// Checks an `AskRequest`; errors name the field at fault.
///
/// # Errors
/// `INVALID_ARGUMENT` with a `BadRequest` violation naming the field: an
/// empty or too long question, a conversation id that is not a UUID, an
/// unknown mode, or more preview rows than `max_preview_rows`.
pub fn validate_ask(request: &AskRequest, max_preview_rows: u32) -> Result<(), Status> {
    if request.question.trim().is_empty() {
        return Err(bad_request("question", "must not be empty"));
    }
    let chars = request.question.chars().count();
    if chars > MAX_QUESTION_CHARS {
        return Err(bad_request(
            "question",
            format!("is {chars} characters long; the limit is {MAX_QUESTION_CHARS}"),
        ));
    }
    if !request.conversation_id.is_empty()
        && uuid::Uuid::parse_str(&request.conversation_id).is_err()
    {
        return Err(bad_request("conversation_id", "must be empty or a UUID"));
    }
    if AskMode::try_from(request.mode).is_err() {
        return Err(bad_request(
            "mode",
            format!("unknown mode {}", request.mode),
        ));
    }
    if request.preview_rows > max_preview_rows {
        return Err(bad_request(
            "preview_rows",
            format!("must be at most {max_preview_rows}"),
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl AssistantService for AssistantGrpc {
    type AskStream = AskStream;

    #[instrument(skip(self, request))]
    async fn ask(&self, request: Request<AskRequest>) -> Result<Response<AskStream>, Status> {
        let caller = AskCaller::of(&request)?;
        let ask = request.into_inner();
        validate_ask(&ask, self.assistant.config().max_preview_rows)?;
        Ok(Response::new(self.assistant.ask(ask, caller).await?))
    }

    #[instrument(skip(self, request))]
    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        if request.page_size > MAX_PAGE_SIZE {
            return Err(bad_request(
                "page_size",
                format!("must be at most {MAX_PAGE_SIZE}"),
            ));
        }
        let (conversations, next_page_token) = self
            .store()?
            .list(&principal, request.page_size, &request.page_token)
            .await?;
        Ok(Response::new(ListConversationsResponse {
            conversations,
            next_page_token,
        }))
    }

    #[instrument(skip(self, request))]
    async fn get_conversation(
        &self,
        request: Request<GetConversationRequest>,
    ) -> Result<Response<GetConversationResponse>, Status> {
        let principal = Principal::of(&request)?;
        let id = conversation_id(&request.get_ref().conversation_id)?;
        let conversation = self.store()?.get(id, &principal).await?;
        Ok(Response::new(conversation))
    }

    #[instrument(skip(self, request))]
    async fn delete_conversation(
        &self,
        request: Request<DeleteConversationRequest>,
    ) -> Result<Response<DeleteConversationResponse>, Status> {
        let principal = Principal::of(&request)?;
        let id = conversation_id(&request.get_ref().conversation_id)?;
        let turns_deleted = self.store()?.delete(id, &principal).await?;
        Ok(Response::new(DeleteConversationResponse { turns_deleted }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tonic::Code;
    use tonic_types::StatusExt as _;

    fn ask(question: &str) -> AskRequest {
        AskRequest {
            question: question.into(),
            ..Default::default()
        }
    }

    fn field_of(status: &Status) -> String {
        let details = status.get_error_details();
        details
            .bad_request()
            .expect("bad request details")
            .field_violations[0]
            .field
            .clone()
    }

    #[test]
    fn rejects_each_bad_field_by_name() {
        let cases = [
            (ask("  "), "question"),
            (ask(&"x".repeat(MAX_QUESTION_CHARS + 1)), "question"),
            (
                AskRequest {
                    conversation_id: "nope".into(),
                    ..ask("q")
                },
                "conversation_id",
            ),
            (
                AskRequest {
                    mode: 42,
                    ..ask("q")
                },
                "mode",
            ),
            (
                AskRequest {
                    preview_rows: 101,
                    ..ask("q")
                },
                "preview_rows",
            ),
        ];
        for (request, field) in cases {
            let status = validate_ask(&request, 100).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(field_of(&status), field);
        }
        validate_ask(&ask("how many artworks?"), 100).unwrap();
    }
}
