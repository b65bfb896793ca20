//! [`Redacting`]: a [`ChatModel`] that pseudonymises what it sends.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;

use super::{Pseudonymizer, StreamRestorer};
use crate::chat::{ChatEvent, ChatModel, ChatRequest};
use crate::error::Result;
use crate::usage::Price;

/// What the caller gets back from a [`Redacting`] model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    /// Placeholders in the streamed text and in tool-call arguments are
    /// replaced by the original values: for a caller allowed to see the
    /// personal data. A tool the model calls with `<EMAIL_1>` in an argument
    /// receives the real address, and runs with it inside the caller's own
    /// permissions, as if the caller had typed it.
    Originals,
    /// Nothing is restored: the text and the tool-call arguments keep the
    /// placeholders, for a caller not allowed to see the personal data
    /// (tools then see placeholders too, and find nothing by them).
    Placeholders,
}

/// A [`ChatModel`] that sends `inner` only pseudonymised text.
///
/// Every message content (system, user, assistant, tool result) and every
/// earlier tool call's arguments go through
/// [`Pseudonymizer::redact_request`] before `inner` sees them. On the way
/// back, with [`Reveal::Originals`], text deltas are restored through a
/// [`StreamRestorer`] (a placeholder cut across deltas comes out whole; text
/// held back is released before the next non-text event, or at the end of
/// the stream, before an error) and tool calls through
/// [`Pseudonymizer::restore_tool_call`]. With [`Reveal::Placeholders`] the
/// answer passes unchanged. Events other than text and tool calls (finish,
/// usage, errors) pass unchanged; a delta whose text is all held back is
/// not sent.
///
/// Share one [`Pseudonymizer`] among all the models and tools of a request,
/// so that a value has the same placeholder everywhere. Cheap to clone.
#[derive(Clone)]
pub struct Redacting {
    inner: Arc<dyn ChatModel>,
    pseudonymizer: Arc<Pseudonymizer>,
    reveal: Reveal,
}

impl std::fmt::Debug for Redacting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redacting")
            .field("inner", &self.inner.name())
            .field("pseudonymizer", &self.pseudonymizer)
            .field("reveal", &self.reveal)
            .finish()
    }
}

impl Redacting {
    /// Wraps `inner`; answers come back as `reveal` says.
    pub fn new(
        inner: Arc<dyn ChatModel>,
        pseudonymizer: Arc<Pseudonymizer>,
        reveal: Reveal,
    ) -> Self {
        Self {
            inner,
            pseudonymizer,
            reveal,
        }
    }

    /// The request's pseudonymizer, e.g. to redact rows before formatting
    /// them.
    pub fn pseudonymizer(&self) -> &Arc<Pseudonymizer> {
        &self.pseudonymizer
    }
}

impl ChatModel for Redacting {
    fn chat_stream(&self, request: ChatRequest) -> BoxStream<'static, Result<ChatEvent>> {
        let request = self.pseudonymizer.redact_request(request);
        let stream = self.inner.chat_stream(request);
        match self.reveal {
            Reveal::Placeholders => stream,
            Reveal::Originals => restoring(stream, Arc::clone(&self.pseudonymizer)),
        }
    }

    fn price(&self) -> Option<Price> {
        self.inner.price()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}

struct Restoring {
    inner: BoxStream<'static, Result<ChatEvent>>,
    pseudonymizer: Arc<Pseudonymizer>,
    /// `None` once the inner stream has ended.
    restorer: Option<StreamRestorer>,
    ready: VecDeque<Result<ChatEvent>>,
}

impl Restoring {
    /// Releases the text held back so far, as one delta.
    fn flush(&mut self, next: StreamRestorer) {
        let held = self.restorer.replace(next);
        self.queue_text(held.map(StreamRestorer::finish));
    }

    fn queue_text(&mut self, text: Option<String>) {
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            self.ready.push_back(Ok(ChatEvent::ContentDelta(text)));
        }
    }

    /// Turns one inner item into what the caller sees.
    fn take(&mut self, item: Result<ChatEvent>) {
        match item {
            Ok(ChatEvent::ContentDelta(delta)) => {
                let text = self.restorer.as_mut().map(|r| r.push(&delta));
                self.queue_text(text);
            }
            Ok(ChatEvent::ToolCall(call)) => {
                self.flush(self.pseudonymizer.stream_restorer());
                let call = self.pseudonymizer.restore_tool_call(call);
                self.ready.push_back(Ok(ChatEvent::ToolCall(call)));
            }
            Ok(event @ (ChatEvent::Finished { .. } | ChatEvent::Usage(_))) => {
                self.flush(self.pseudonymizer.stream_restorer());
                self.ready.push_back(Ok(event));
            }
            Err(e) => {
                self.flush(self.pseudonymizer.stream_restorer());
                self.ready.push_back(Err(e));
            }
        }
    }
}

fn restoring(
    inner: BoxStream<'static, Result<ChatEvent>>,
    pseudonymizer: Arc<Pseudonymizer>,
) -> BoxStream<'static, Result<ChatEvent>> {
    let state = Restoring {
        inner,
        restorer: Some(pseudonymizer.stream_restorer()),
        pseudonymizer,
        ready: VecDeque::new(),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.ready.pop_front() {
                return Some((event, state));
            }
            state.restorer.as_ref()?;
            match state.inner.next().await {
                Some(item) => state.take(item),
                None => {
                    let held = state.restorer.take();
                    state.queue_text(held.map(StreamRestorer::finish));
                }
            }
        }
    })
    .boxed()
}
