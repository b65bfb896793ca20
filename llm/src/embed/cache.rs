//! An embedding cache keyed by model and content hash.

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use super::Embedder;
use crate::error::{LlmError, Result};

/// Cache key: the model id and the SHA-256 of the text's UTF-8 bytes.
type Key = (Arc<str>, [u8; 32]);

/// Wraps an [`Embedder`] so that text it has embedded before is answered from
/// memory.
///
/// Entries are keyed by ([`Embedder::model_id`], SHA-256 of the text), so a
/// changed text misses and an unchanged one hits whatever row or column it
/// came from. Only texts not in the cache go to the inner embedder, each
/// distinct text once per call, in one call. Bounded by entry count (moka's
/// TinyLFU admission and LRU eviction); each entry holds `dimension` `f32`s
/// (1.5 KB for 384 dimensions) plus about 100 bytes. Cheap to clone; clones
/// share the cache.
#[derive(Clone)]
pub struct ContentHashCache {
    inner: Arc<dyn Embedder>,
    model_id: Arc<str>,
    cache: Cache<Key, Arc<[f32]>>,
}

impl std::fmt::Debug for ContentHashCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentHashCache")
            .field("model_id", &self.model_id)
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl ContentHashCache {
    /// Caches up to `max_entries` vectors of `inner`.
    pub fn new(inner: Arc<dyn Embedder>, max_entries: u64) -> Self {
        let model_id: Arc<str> = Arc::from(inner.model_id());
        Self {
            inner,
            model_id,
            cache: Cache::new(max_entries),
        }
    }

    /// The wrapped embedder.
    pub fn inner(&self) -> &Arc<dyn Embedder> {
        &self.inner
    }

    /// Approximate number of cached vectors (moka applies inserts and
    /// evictions lazily).
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    fn key(&self, text: &str) -> Key {
        (
            self.model_id.clone(),
            Sha256::digest(text.as_bytes()).into(),
        )
    }
}

impl Embedder for ContentHashCache {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.inner.dimension()
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>>> {
        self.embed_as(texts, false)
    }

    fn embed_background(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>>> {
        self.embed_as(texts, true)
    }
}

impl ContentHashCache {
    /// [`Embedder::embed`] or, with `background`, [`Embedder::embed_background`]
    /// of the missing texts on the wrapped embedder.
    fn embed_as(
        &self,
        texts: Vec<String>,
        background: bool,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>>> {
        let this = self.clone();
        async move {
            let keys: Vec<Key> = texts.iter().map(|t| this.key(t)).collect();
            let mut found: Vec<Option<Arc<[f32]>>> =
                keys.iter().map(|k| this.cache.get(k)).collect();

            // distinct missing texts, in first-seen order
            let mut slot_of: HashMap<&[u8; 32], usize> = HashMap::new();
            let mut missing_texts = Vec::new();
            let mut missing_keys = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                if found[i].is_none() && !slot_of.contains_key(&key.1) {
                    slot_of.insert(&key.1, missing_texts.len());
                    missing_texts.push(texts[i].clone());
                    missing_keys.push(key.clone());
                }
            }
            if !missing_texts.is_empty() {
                let wanted = missing_texts.len();
                let vectors = if background {
                    this.inner.embed_background(missing_texts).await?
                } else {
                    this.inner.embed(missing_texts).await?
                };
                if vectors.len() != wanted {
                    return Err(LlmError::Protocol(format!(
                        "embedder returned {} vectors for {wanted} texts",
                        vectors.len()
                    )));
                }
                let vectors: Vec<Arc<[f32]>> = vectors.into_iter().map(Arc::from).collect();
                for (key, vector) in missing_keys.into_iter().zip(&vectors) {
                    this.cache.insert(key, vector.clone());
                }
                for (i, key) in keys.iter().enumerate() {
                    if found[i].is_none()
                        && let Some(&slot) = slot_of.get(&key.1)
                    {
                        found[i] = Some(vectors[slot].clone());
                    }
                }
            }
            found
                .into_iter()
                .map(|v| {
                    v.map(|v| v.to_vec())
                        .ok_or_else(|| LlmError::Protocol("embedding cache lost a vector".into()))
                })
                .collect()
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Returns `[len, first byte]` per text and records every call.
    #[derive(Default)]
    struct Counting {
        calls: Mutex<Vec<Vec<String>>>,
    }

    impl Embedder for Counting {
        fn model_id(&self) -> &str {
            "counting"
        }

        fn dimension(&self) -> usize {
            2
        }

        fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>>> {
            self.calls.lock().unwrap().push(texts.clone());
            let vectors = texts
                .iter()
                .map(|t| vec![t.len() as f32, f32::from(t.bytes().next().unwrap_or(0))])
                .collect();
            futures::future::ready(Ok(vectors)).boxed()
        }
    }

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn only_unseen_texts_reach_the_inner_embedder() {
        let counting = Arc::new(Counting::default());
        let cache = ContentHashCache::new(counting.clone(), 100);

        let first = cache.embed(texts(&["alpha", "be", "alpha"])).await.unwrap();
        assert_eq!(
            first,
            vec![vec![5.0, 97.0], vec![2.0, 98.0], vec![5.0, 97.0]]
        );

        let second = cache.embed(texts(&["be", "gamma", "alpha"])).await.unwrap();
        assert_eq!(
            second,
            vec![vec![2.0, 98.0], vec![5.0, 103.0], vec![5.0, 97.0]]
        );

        let third = cache.embed(texts(&["gamma", "be"])).await.unwrap();
        assert_eq!(third, vec![vec![5.0, 103.0], vec![2.0, 98.0]]);

        // duplicates within a call are embedded once; fully cached calls
        // never reach the inner embedder
        assert_eq!(
            *counting.calls.lock().unwrap(),
            vec![texts(&["alpha", "be"]), texts(&["gamma"])]
        );
        assert_eq!(cache.entry_count(), 3);
        assert_eq!(cache.model_id(), "counting");
        assert_eq!(cache.dimension(), 2);
    }

    #[tokio::test]
    async fn a_changed_text_misses_and_errors_are_not_cached() {
        struct Failing;
        impl Embedder for Failing {
            fn model_id(&self) -> &str {
                "failing"
            }
            fn dimension(&self) -> usize {
                2
            }
            fn embed(&self, _: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>>> {
                futures::future::ready(Err(LlmError::Transport("down".into()))).boxed()
            }
        }
        let cache = ContentHashCache::new(Arc::new(Failing), 10);
        assert!(cache.embed(texts(&["x"])).await.is_err());
        assert_eq!(cache.entry_count(), 0);

        let counting = Arc::new(Counting::default());
        let cache = ContentHashCache::new(counting.clone(), 10);
        cache.embed(texts(&["row 1: red"])).await.unwrap();
        cache.embed(texts(&["row 1: blue"])).await.unwrap();
        assert_eq!(counting.calls.lock().unwrap().len(), 2);
        assert!(cache.embed(Vec::new()).await.unwrap().is_empty());
        assert_eq!(counting.calls.lock().unwrap().len(), 2);
    }
}
