//! Token counts ([`Usage`]) and what they cost ([`Price`]): the values
//! both the chat types and the model configuration speak of, kept apart so
//! that neither module imports the other.

use serde::{Deserialize, Serialize};

use crate::error::{LlmError, Result};

/// Token counts for one request, as reported by the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt (messages and tool definitions).
    pub prompt_tokens: u32,
    /// Tokens generated (text, tool calls and any hidden reasoning).
    pub completion_tokens: u32,
    /// `prompt_tokens + completion_tokens`.
    pub total_tokens: u32,
    /// Of `prompt_tokens`, those the provider served from its prompt cache
    /// (OpenAI's `usage.prompt_tokens_details.cached_tokens`, see
    /// <https://platform.openai.com/docs/guides/prompt-caching>); 0 when the
    /// server reports none. Priced like other prompt tokens by [`Price`].
    #[serde(default)]
    pub cached_prompt_tokens: u32,
    /// The reply was replayed from Quarry's own response cache
    /// ([`crate::cache::ResponseCache`]): no model was called and no token
    /// spent, so every count is 0.
    #[serde(default)]
    pub from_cache: bool,
}

/// A model's token prices in US dollars per million tokens, the unit
/// provider price lists quote them in (e.g. OpenAI lists gpt-4o-mini at
/// $0.15 per 1M input tokens and $0.60 per 1M output tokens). Copy the
/// numbers from the provider's price list; a local model costs what you
/// decide (0 is allowed).
///
/// ```toml
/// [model.price]
/// input_per_million = 0.15    # prompt tokens
/// output_per_million = 0.60   # completion tokens
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per 1,000,000 prompt (input) tokens.
    pub input_per_million: f64,
    /// USD per 1,000,000 completion (output) tokens, hidden reasoning tokens
    /// included (the server counts them as completion tokens).
    pub output_per_million: f64,
}

impl Price {
    /// The cost of `usage` in US dollars:
    /// `(prompt_tokens × input_per_million + completion_tokens × output_per_million) / 1e6`.
    /// `total_tokens` is not used (it is the sum of the two).
    pub fn cost_usd(&self, usage: Usage) -> f64 {
        (f64::from(usage.prompt_tokens) * self.input_per_million
            + f64::from(usage.completion_tokens) * self.output_per_million)
            / 1_000_000.0
    }

    /// Checks that both prices are finite and not negative.
    ///
    /// # Errors
    /// [`LlmError::Config`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("input_per_million", self.input_per_million),
            ("output_per_million", self.output_per_million),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(LlmError::Config(format!(
                    "price.{name} must be a finite number of US dollars, 0 or more, got {value}"
                )));
            }
        }
        Ok(())
    }
}
