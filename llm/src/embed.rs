//! Text embeddings: one unit vector per text, for semantic search and schema
//! linking.
//!
//! Everything that turns text into vectors implements [`Embedder`] (object
//! safe: hold it as `Arc<dyn Embedder>`):
//!
//! - [`LocalMiniLm`] (feature `local-embeddings`, on by default):
//!   sentence-transformers/all-MiniLM-L6-v2 run on the CPU through candle,
//!   384 dimensions, from the files `dev/model.sh` installs. No network.
//! - [`OpenAiEmbedder`]: any OpenAI-compatible `POST /embeddings` endpoint
//!   (OpenAI, Ollama, vLLM, llama.cpp server).
//! - [`ContentHashCache`]: wraps either, so text embedded before (same model,
//!   same bytes) costs a hash and a lookup.
//!
//! [`EmbeddingConfig`] chooses one from configuration and
//! [`embedder_from_config`] builds it:
//!
//! ```toml
//! [embedding]
//! kind = "local"            # or "openai"
//! batch_size = 64
//! ```
//!
//! Every embedder returns vectors of L2 norm 1, so cosine similarity is the
//! dot product ([`cosine`]).

mod cache;
mod config;
#[cfg(feature = "local-embeddings")]
mod local;
mod remote;

use futures::future::BoxFuture;

pub use cache::ContentHashCache;
pub use config::{
    DEFAULT_MODEL_DIR, EmbeddingConfig, LocalEmbeddingConfig, MODEL_DIR_ENV, OpenAiEmbeddingConfig,
    embedder_from_config,
};
#[cfg(feature = "local-embeddings")]
pub use local::{
    BACKGROUND_NICE, LocalMiniLm, LocalMiniLmOptions, MINILM_DIMENSION, MINILM_MODEL_ID,
};
pub use remote::OpenAiEmbedder;

use crate::error::Result;

/// Something that turns texts into vectors.
///
/// Object safe: hold it as `Arc<dyn Embedder>`.
pub trait Embedder: Send + Sync {
    /// Identifies the model, and so the vector space: vectors from different
    /// ids must not be compared. E.g. `sentence-transformers/all-MiniLM-L6-v2`
    /// or `text-embedding-3-small`. Part of [`ContentHashCache`]'s key.
    fn model_id(&self) -> &str;

    /// Length of every vector this embedder returns (384 for all-MiniLM-L6-v2).
    fn dimension(&self) -> usize;

    /// Embeds `texts`.
    ///
    /// Resolves to a `Vec<Vec<f32>>` with one vector per input text, in input
    /// order, each of length [`Embedder::dimension`] and L2 norm 1 (up to
    /// float rounding). An empty input gives an empty output. The future does
    /// not block the async runtime (CPU-bound work runs on blocking threads);
    /// dropping it cancels the work still queued.
    ///
    /// # Errors
    /// [`crate::LlmError`]: `LocalModel` if a local model fails, the HTTP
    /// variants for remote endpoints, `Protocol` if an endpoint returns the
    /// wrong number or length of vectors.
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>>>;

    /// [`Embedder::embed`] for background work (documents of a collection,
    /// summaries, schema elements): an embedder that shares one model must
    /// not make an `embed` call (a question someone waits for) queue behind
    /// it — `LocalMiniLm` runs it in a lower-priority thread pool of its
    /// own. The default runs [`Embedder::embed`].
    ///
    /// # Errors
    /// As [`Embedder::embed`].
    fn embed_background(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>>> {
        self.embed(texts)
    }
}

/// Cosine similarity of two vectors of the same length: their dot product
/// divided by the product of their L2 norms, in `[-1, 1]`; 0 if either is
/// all zeros or the lengths differ. For [`Embedder`] output (unit vectors)
/// this equals the dot product.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut aa, mut bb) = (0.0_f32, 0.0_f32, 0.0_f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    let norms = (aa * bb).sqrt();
    if norms == 0.0 { 0.0 } else { dot / norms }
}

/// Scales `v` in place to L2 norm 1; leaves an all-zero vector as it is.
pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x /= norm;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_parallel_orthogonal_and_mismatched_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-6);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn normalize_gives_unit_length() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0; 3];
        normalize(&mut zero);
        assert_eq!(zero, vec![0.0; 3]);
    }
}
