//! Quarry's own cache of model responses (issue 18 item 2): a request sent
//! again with the same body to the same endpoint and model, for the same
//! tenant, is answered by replaying the events of the first answer instead
//! of calling the model.
//!
//! Only where the answer is deterministic: the model's configured
//! `temperature` is exactly 0 (greedy decoding; `None` leaves the server's
//! default, 1.0 for OpenAI, so it is not cached), and only for requests
//! that name a tenant ([`crate::ChatRequest::with_cache_scope`]; default
//! deny). Only complete answers are stored: a stream that fails, or is
//! dropped before it finishes, stores nothing.
//!
//! The key is the tenant and the SHA-256 of the endpoint, the model and the
//! full wire request body (messages, tools, response format, sampling
//! settings) as JSON, so any change to the prompt is a different entry.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::chat::ChatEvent;
use crate::usage::Usage;

/// Key: the tenant and the SHA-256 of endpoint, model and body.
type Key = (String, [u8; 32]);

/// Replies by tenant and request, bounded by bytes, each kept at most a TTL.
#[derive(Clone)]
pub struct ResponseCache {
    cache: moka::sync::Cache<Key, Arc<Vec<ChatEvent>>>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

fn event_bytes(event: &ChatEvent) -> usize {
    64 + match event {
        ChatEvent::ContentDelta(text) => text.len(),
        ChatEvent::ToolCall(call) => call.id.len() + call.name.len() + call.arguments.len(),
        ChatEvent::Finished { .. } | ChatEvent::Usage(_) => 0,
    }
}

impl ResponseCache {
    /// A cache of at most `max_bytes` of replies (text and tool-call
    /// arguments, plus 64 bytes per event), each kept at most `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &Key, events: &Arc<Vec<ChatEvent>>| {
                let bytes: usize = events.iter().map(event_bytes).sum();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .time_to_live(ttl)
            .eviction_listener(|_key, _events, cause| {
                let cause = match cause {
                    moka::notification::RemovalCause::Expired => "expired",
                    moka::notification::RemovalCause::Explicit => "explicit",
                    moka::notification::RemovalCause::Replaced => "replaced",
                    moka::notification::RemovalCause::Size => "size",
                };
                quarry_metrics::cache_eviction("model", cause);
            })
            .build();
        Self { cache }
    }

    /// The key of `body` sent to `model` at `endpoint` for `tenant`.
    pub(crate) fn key(tenant: &str, endpoint: &str, model: &str, body: &[u8]) -> Key {
        let mut hash = Sha256::new();
        for part in [endpoint.as_bytes(), model.as_bytes()] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.update(body);
        (tenant.to_owned(), hash.finalize().into())
    }

    /// The stored events for `key`, with the usage replaced by one that
    /// says the reply came from the cache (no tokens spent).
    pub(crate) fn replay(&self, key: &Key) -> Option<Vec<ChatEvent>> {
        let events = self.cache.get(key)?;
        let cached = Usage {
            from_cache: true,
            ..Usage::default()
        };
        let mut replayed: Vec<ChatEvent> = events
            .iter()
            .filter(|event| !matches!(event, ChatEvent::Usage(_)))
            .cloned()
            .collect();
        replayed.push(ChatEvent::Usage(cached));
        Some(replayed)
    }

    /// Stores the events of a complete answer.
    pub(crate) fn store(&self, key: Key, events: Vec<ChatEvent>) {
        self.cache.insert(key, Arc::new(events));
    }

    /// Number of stored replies (moka applies inserts lazily; approximate).
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}
