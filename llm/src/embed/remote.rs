//! [`Embedder`] over an OpenAI-compatible `POST /embeddings` endpoint.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::{Embedder, OpenAiEmbeddingConfig, normalize};
use crate::error::{LlmError, Result};
use crate::openai::{error_message, with_sources};

/// Longest time spent establishing a TCP/TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// First retry delay; doubles per attempt unless the server sends `Retry-After`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Longest computed retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Texts embedded by a remote OpenAI-compatible API (OpenAI, Ollama, vLLM,
/// llama.cpp server).
///
/// Sends `{"model", "input": [texts], "encoding_format": "float"}` (plus
/// `dimensions` if configured) in requests of at most `batch_size` texts, one
/// request at a time, and puts the answers back in input order by their
/// `index`. Vectors are scaled to unit length (OpenAI's already are; some
/// local models' are not). Cheap to clone.
#[derive(Clone)]
pub struct OpenAiEmbedder {
    http: reqwest::Client,
    config: Arc<OpenAiEmbeddingConfig>,
    api_key: Option<Arc<str>>,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// Builds an embedder from `config`, reading the API key from the
    /// variable named by `api_key_env` (if any).
    ///
    /// # Errors
    /// [`LlmError::Config`] if the config is invalid or the variable unset.
    pub fn new(config: OpenAiEmbeddingConfig) -> Result<Self> {
        let api_key = match &config.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                LlmError::Config(format!(
                    "environment variable {var} (api_key_env) is not set"
                ))
            })?),
            None => None,
        };
        Self::with_api_key(config, api_key)
    }

    /// As [`OpenAiEmbedder::new`] with an explicit key (`None`: no key),
    /// ignoring `api_key_env`.
    ///
    /// # Errors
    /// [`LlmError::Config`] if the config is invalid or the key has control
    /// characters.
    pub fn with_api_key(config: OpenAiEmbeddingConfig, api_key: Option<String>) -> Result<Self> {
        config.validate()?;
        let api_key = api_key
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty());
        if api_key
            .as_deref()
            .is_some_and(|k| k.chars().any(char::is_control))
        {
            return Err(LlmError::Config(
                "api key contains control characters".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build http client: {e}")))?;
        Ok(Self {
            http,
            config: Arc::new(config),
            api_key: api_key.map(Arc::from),
        })
    }

    /// The configuration this embedder was built from.
    pub fn config(&self) -> &OpenAiEmbeddingConfig {
        &self.config
    }

    /// One request with retries, under the per-request deadline.
    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let timeout = Duration::from_secs(self.config.timeout_secs);
        match tokio::time::timeout(timeout, self.embed_batch_retrying(texts)).await {
            Ok(result) => result,
            Err(_) => Err(LlmError::Timeout { timeout }),
        }
    }

    async fn embed_batch_retrying(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut body = json!({
            "model": self.config.model,
            "input": texts,
            "encoding_format": "float",
        });
        if self.config.send_dimension
            && let Some(obj) = body.as_object_mut()
        {
            obj.insert("dimensions".into(), json!(self.config.dimension));
        }
        let url = format!(
            "{}/embeddings",
            self.config.base_url.trim().trim_end_matches('/')
        );
        let mut attempt = 0;
        loop {
            let error = match self.send(&url, &body).await {
                Ok(vectors) => return self.check(vectors, texts.len()),
                Err(error) => error,
            };
            if attempt >= self.config.max_retries || !retryable(&error) {
                return Err(error);
            }
            let delay = if let LlmError::Http {
                retry_after: Some(after),
                ..
            } = &error
            {
                *after
            } else {
                (FIRST_BACKOFF * 2_u32.saturating_pow(attempt)).min(MAX_BACKOFF)
            };
            tracing::debug!(%error, attempt, ?delay, "retrying embeddings request");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn send(&self, url: &str, body: &serde_json::Value) -> Result<Vec<EmbeddingItem>> {
        let mut request = self.http.post(url).json(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| LlmError::Transport(with_sources(&e)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| LlmError::Transport(with_sources(&e)))?;
        if !status.is_success() {
            return Err(LlmError::Http {
                status: status.as_u16(),
                message: error_message(&bytes),
                retry_after,
            });
        }
        let parsed: EmbeddingsResponse = serde_json::from_slice(&bytes)
            .map_err(|e| LlmError::Protocol(format!("cannot parse embeddings response: {e}")))?;
        Ok(parsed.data)
    }

    /// Puts the items in input order and checks count and length.
    fn check(&self, mut items: Vec<EmbeddingItem>, wanted: usize) -> Result<Vec<Vec<f32>>> {
        items.sort_by_key(|item| item.index);
        let in_order = items.iter().enumerate().all(|(i, item)| item.index == i);
        if items.len() != wanted || !in_order {
            return Err(LlmError::Protocol(format!(
                "embeddings response has {} vectors (indices not 0..{wanted}) for {wanted} texts",
                items.len()
            )));
        }
        items
            .into_iter()
            .map(|item| {
                if item.embedding.len() == self.config.dimension {
                    let mut vector = item.embedding;
                    normalize(&mut vector);
                    Ok(vector)
                } else {
                    Err(LlmError::Protocol(format!(
                        "embedding of length {} where dimension is {}",
                        item.embedding.len(),
                        self.config.dimension
                    )))
                }
            })
            .collect()
    }
}

/// Rate limits, server errors and connection failures.
fn retryable(error: &LlmError) -> bool {
    match error {
        LlmError::Http { status, .. } => *status == 429 || *status >= 500,
        LlmError::Transport(_) => true,
        LlmError::Timeout { .. }
        | LlmError::Protocol(_)
        | LlmError::Config(_)
        | LlmError::LocalModel(_) => false,
    }
}

impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.config.model
    }

    fn dimension(&self) -> usize {
        self.config.dimension
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>>> {
        let this = self.clone();
        async move {
            let mut out = Vec::with_capacity(texts.len());
            for batch in texts.chunks(this.config.batch_size) {
                out.extend(this.embed_batch(batch).await?);
            }
            Ok(out)
        }
        .boxed()
    }
}
