//! The one error type of this crate.

use std::time::Duration;

/// Everything that can go wrong between a [`crate::ChatRequest`] and the end
/// of its stream, or while embedding text ([`crate::embed`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// The endpoint answered with a non-success HTTP status (after any
    /// retries). `message` is the server's error message when it sent one in
    /// a known shape, else the start of the body.
    #[error(
        "model endpoint answered http {status}: {message}{}",
        retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default()
    )]
    Http {
        /// HTTP status code, e.g. 429 or 500.
        status: u16,
        /// Error text from the response body.
        message: String,
        /// The server's `Retry-After` header in whole seconds, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The request did not finish within the configured whole-request
    /// deadline (`timeout_secs`); any answer streamed so far is incomplete.
    #[error("model request timed out after {}s", timeout.as_secs_f32())]
    Timeout {
        /// The deadline that was exceeded.
        timeout: Duration,
    },
    /// The endpoint could not be reached or the connection broke mid-answer.
    #[error("cannot reach model endpoint: {0}")]
    Transport(String),
    /// The endpoint sent something that is not a valid chat completion
    /// (unparseable chunk, tool call without a name, stream that ends without
    /// a finish reason).
    #[error("malformed model response: {0}")]
    Protocol(String),
    /// The model configuration is unusable (bad URL, missing API key variable).
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A local model could not be loaded (missing or unreadable file,
    /// weights that do not fit the config) or failed while running.
    #[error("local model: {0}")]
    LocalModel(String),
}

impl LlmError {
    /// Whether sending the same request again later may succeed: rate limits
    /// (429), server errors (5xx), timeouts and broken connections.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Http { status, .. } => *status == 429 || *status >= 500,
            LlmError::Timeout { .. } | LlmError::Transport(_) => true,
            LlmError::Protocol(_) | LlmError::Config(_) | LlmError::LocalModel(_) => false,
        }
    }
}

/// `Result` with [`LlmError`].
pub type Result<T, E = LlmError> = std::result::Result<T, E>;
