//! The models of the assistant, and the only way an `Ask` reaches them:
//! [`Models::for_ask`] wraps each in [`Redacting`] over the request's one
//! [`Pseudonymizer`], so that no model call of an `Ask` sends personal data
//! (the fields holding the configured models are private to this module).

use std::sync::Arc;

use quarry_auth::{Caller, scopes::PII_READ};
use quarry_llm::{
    ChatModel,
    pii::{Pseudonymizer, Redacting, Reveal},
};

/// The configured models, as the assistant holds them.
#[derive(Default)]
pub(super) struct Models {
    /// The answer model (agentic mode).
    answer: Option<Arc<dyn ChatModel>>,
    /// The model for router mode's classification (`[models.routing]`).
    routing: Option<Arc<dyn ChatModel>>,
}

/// The models of one `Ask`, each behind [`Redacting`] over [`AskModels::pii`].
pub(super) struct AskModels {
    /// The answer model, if one is configured.
    pub(super) answer: Option<Arc<dyn ChatModel>>,
    /// The routing model, if one is configured.
    pub(super) routing: Option<Arc<dyn ChatModel>>,
    /// The request's pseudonymizer, shared by both models and by the tools
    /// that format results for them.
    pub(super) pii: Arc<Pseudonymizer>,
}

impl Models {
    pub(super) fn new(answer: Option<Arc<dyn ChatModel>>) -> Self {
        Self {
            answer,
            routing: None,
        }
    }

    pub(super) fn set_routing(&mut self, routing: Arc<dyn ChatModel>) {
        self.routing = Some(routing);
    }

    /// Whether an answer model is configured.
    pub(super) fn has_answer(&self) -> bool {
        self.answer.is_some()
    }

    /// The models as `caller`'s `Ask` uses them: behind [`Redacting`] over
    /// one fresh [`Pseudonymizer`]; answers restored
    /// ([`Reveal::Originals`]) when the caller holds `pii:read`, else
    /// placeholders stay ([`Reveal::Placeholders`]).
    pub(super) fn for_ask(&self, caller: &Caller) -> AskModels {
        let pii = Arc::new(Pseudonymizer::new());
        let reveal = reveal_for(caller);
        let wrap = |model: &Arc<dyn ChatModel>| -> Arc<dyn ChatModel> {
            Arc::new(Redacting::new(Arc::clone(model), Arc::clone(&pii), reveal))
        };
        AskModels {
            answer: self.answer.as_ref().map(wrap),
            routing: self.routing.as_ref().map(wrap),
            pii: Arc::clone(&pii),
        }
    }
}

/// What `caller` gets back from a model: the original values only with
/// `pii:read`.
fn reveal_for(caller: &Caller) -> Reveal {
    if caller.grant.has_scope(PII_READ) {
        Reveal::Originals
    } else {
        Reveal::Placeholders
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use quarry_auth::Principal;
    use quarry_llm::{ChatEvent, ChatRequest, Message, Result as LlmResult};
    use std::sync::Mutex;

    /// Records what it is sent and answers with the first placeholder it saw.
    #[derive(Default)]
    struct Echo {
        seen: Mutex<Vec<String>>,
    }

    impl ChatModel for Echo {
        fn chat_stream(
            &self,
            request: ChatRequest,
        ) -> futures::stream::BoxStream<'static, LlmResult<ChatEvent>> {
            let text: String = request
                .messages
                .iter()
                .filter_map(|m| match m {
                    Message::User { content } => Some(content.clone()),
                    Message::System { .. } | Message::Assistant { .. } | Message::Tool { .. } => {
                        None
                    }
                })
                .collect();
            self.seen.lock().unwrap().push(text.clone());
            futures::stream::iter(vec![Ok(ChatEvent::ContentDelta(format!("re: {text}")))]).boxed()
        }

        fn name(&self) -> &str {
            "echo"
        }
    }

    /// A caller with every scope (`pii:read` among them) or with none.
    fn caller(pii_read: bool) -> Caller {
        let principal = Principal {
            tenant: "t".to_owned(),
            subject: "s".to_owned(),
            roles: vec![],
            scopes: vec![],
        };
        let grant = if pii_read {
            quarry_auth::Grant::unrestricted()
        } else {
            quarry_auth::Grant::none()
        };
        Caller::new(principal).with_grant(Arc::new(grant))
    }

    async fn answer(model: &Arc<dyn ChatModel>) -> String {
        let mut stream = model.chat_stream(ChatRequest::new(
            vec![Message::user("mail ada@example.com")],
            vec![],
        ));
        let mut out = String::new();
        while let Some(Ok(ChatEvent::ContentDelta(text))) = stream.next().await {
            out.push_str(&text);
        }
        out
    }

    #[tokio::test]
    async fn every_model_of_an_ask_is_sent_placeholders_and_restores_only_for_pii_read() {
        let answer_model = Arc::new(Echo::default());
        let routing_model = Arc::new(Echo::default());
        let mut models = Models::new(Some(answer_model.clone()));
        models.set_routing(routing_model.clone());

        let reader = models.for_ask(&caller(true));
        let shown = answer(reader.answer.as_ref().unwrap()).await;
        assert_eq!(shown, "re: mail ada@example.com");
        answer(reader.routing.as_ref().unwrap()).await;
        assert_eq!(reader.pii.value_count(), 1, "one pseudonymizer for both");

        let other = models.for_ask(&caller(false));
        let shown = answer(other.answer.as_ref().unwrap()).await;
        assert_eq!(shown, "re: mail <EMAIL_1>");

        for model in [&answer_model, &routing_model] {
            for sent in model.seen.lock().unwrap().iter() {
                assert!(!sent.contains("ada@example.com"), "{sent}");
            }
        }
    }
}
