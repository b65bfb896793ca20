//! Where a chat model lives and how to call it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chat::Usage;
use crate::error::{LlmError, Result};

/// How to reach one chat model on an OpenAI-compatible endpoint.
///
/// ```toml
/// base_url = "http://localhost:11434/v1"   # Ollama
/// model = "qwen2.5:7b-instruct"
/// timeout_secs = 120
///
/// [model.price]                            # optional, USD per 1M tokens
/// input_per_million = 0.15
/// output_per_million = 0.60
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Base URL of the OpenAI-compatible API, up to and including the version
    /// segment, without a trailing `/chat/completions`: e.g.
    /// `https://api.openai.com/v1`, `http://localhost:11434/v1` (Ollama),
    /// `http://localhost:8000/v1` (vLLM), `http://localhost:8080/v1`
    /// (llama.cpp server). A trailing `/` is ignored.
    pub base_url: String,
    /// Model name as the endpoint knows it (`gpt-4o-mini`, `qwen2.5:7b-instruct`).
    pub model: String,
    /// Name of the environment variable holding the API key (e.g.
    /// `OPENAI_API_KEY`), not the key itself. `None` sends no key, which is
    /// what local servers expect. If set, the variable must exist at start-up.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Deadline for one whole request in seconds: connecting, retries, the
    /// time to the first token and the entire streamed answer. A stream still
    /// running at the deadline ends with [`LlmError::Timeout`].
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Upper bound on generated tokens per request (the completion only, not
    /// the prompt). `None` leaves it to the server. Sent as
    /// `max_completion_tokens` to api.openai.com (which rejects `max_tokens`
    /// for reasoning models) and as `max_tokens` to every other endpoint.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0.0 (near-deterministic) to 2.0. `None` leaves
    /// it to the server (1.0 on OpenAI).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// How many times a request that failed before any answer arrived (HTTP
    /// 429 or 5xx, or a refused connection) is sent again, with exponential
    /// backoff from 100 ms or the server's `Retry-After` seconds. All attempts
    /// share the one `timeout_secs` deadline. A stream that fails part-way is
    /// never retried. Default 2.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// What the model costs, for the cost reported with each answer
    /// ([`Price::cost_usd`]). `None` (the default) leaves the cost unknown.
    #[serde(default)]
    pub price: Option<Price>,
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

fn default_timeout_secs() -> u64 {
    120
}

fn default_max_retries() -> u32 {
    2
}

impl ModelConfig {
    /// A config with the defaults for everything but the endpoint and model.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: None,
            timeout_secs: default_timeout_secs(),
            max_tokens: None,
            temperature: None,
            max_retries: default_max_retries(),
            price: None,
        }
    }

    /// The whole-request deadline as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Checks what serde cannot: a usable URL, a model name, a non-zero
    /// timeout, a temperature in range and sensible prices.
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
        if base.trim_end_matches('/').ends_with("/chat/completions") {
            return Err(LlmError::Config(format!(
                "base_url must not include /chat/completions, got {:?}",
                self.base_url
            )));
        }
        if self.model.trim().is_empty() {
            return Err(LlmError::Config("model must not be empty".into()));
        }
        if self.timeout_secs == 0 {
            return Err(LlmError::Config("timeout_secs must be at least 1".into()));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(LlmError::Config(format!(
                "temperature must be between 0.0 and 2.0, got {t}"
            )));
        }
        if self.max_tokens == Some(0) {
            return Err(LlmError::Config("max_tokens must be at least 1".into()));
        }
        if let Some(var) = &self.api_key_env
            && var.trim().is_empty()
        {
            return Err(LlmError::Config(
                "api_key_env must name an environment variable".into(),
            ));
        }
        if let Some(price) = &self.price {
            price.validate()?;
        }
        Ok(())
    }

    /// `base_url` without a trailing `/`.
    pub(crate) fn api_base(&self) -> &str {
        self.base_url.trim().trim_end_matches('/')
    }

    /// Whether the endpoint is OpenAI's own API (which wants
    /// `max_completion_tokens`, not `max_tokens`).
    pub(crate) fn is_openai(&self) -> bool {
        let rest = self
            .api_base()
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let host = rest.split(['/', ':']).next().unwrap_or_default();
        host.eq_ignore_ascii_case("api.openai.com")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_optional_fields_and_unknown_fields_are_refused() {
        let cfg: ModelConfig =
            serde_json::from_str(r#"{"base_url":"http://localhost:11434/v1","model":"m"}"#)
                .unwrap();
        assert_eq!(cfg.timeout_secs, 120);
        assert_eq!(cfg.api_key_env, None);
        assert_eq!(cfg.max_retries, 2);
        assert_eq!(cfg.price, None);
        cfg.validate().unwrap();

        let err = serde_json::from_str::<ModelConfig>(
            r#"{"base_url":"http://x/v1","model":"m","api_key":"sk-oops"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn validate_refuses_unusable_values() {
        let ok = ModelConfig::new("http://localhost:8000/v1/", "m");
        ok.validate().unwrap();
        assert_eq!(ok.api_base(), "http://localhost:8000/v1");

        for bad in [
            ModelConfig::new("localhost:8000/v1", "m"),
            ModelConfig::new("http://localhost:8000/v1/chat/completions", "m"),
            ModelConfig::new("http://localhost:8000/v1", " "),
            ModelConfig {
                timeout_secs: 0,
                ..ModelConfig::new("http://h/v1", "m")
            },
            ModelConfig {
                temperature: Some(3.0),
                ..ModelConfig::new("http://h/v1", "m")
            },
            ModelConfig {
                price: Some(Price {
                    input_per_million: -0.1,
                    output_per_million: 0.6,
                }),
                ..ModelConfig::new("http://h/v1", "m")
            },
            ModelConfig {
                price: Some(Price {
                    input_per_million: 0.15,
                    output_per_million: f64::NAN,
                }),
                ..ModelConfig::new("http://h/v1", "m")
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(LlmError::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_openai_itself_is_treated_as_openai() {
        assert!(ModelConfig::new("https://api.openai.com/v1", "m").is_openai());
        assert!(!ModelConfig::new("http://localhost:11434/v1", "m").is_openai());
        assert!(!ModelConfig::new("https://api.openai.com.evil/v1", "m").is_openai());
    }

    #[test]
    fn price_parses_from_the_model_section_and_refuses_unknown_keys() {
        let cfg: ModelConfig = serde_json::from_str(
            r#"{"base_url":"http://h/v1","model":"m",
                "price":{"input_per_million":0.15,"output_per_million":0.6}}"#,
        )
        .unwrap();
        assert_eq!(
            cfg.price,
            Some(Price {
                input_per_million: 0.15,
                output_per_million: 0.6
            })
        );
        cfg.validate().unwrap();

        let err = serde_json::from_str::<ModelConfig>(
            r#"{"base_url":"http://h/v1","model":"m",
                "price":{"input_per_million":0.15,"output_per_million":0.6,"per_request":1}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = serde_json::from_str::<ModelConfig>(
            r#"{"base_url":"http://h/v1","model":"m","price":{"input_per_million":0.15}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("output_per_million"), "{err}");
    }

    fn usage(prompt_tokens: u32, completion_tokens: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }

    #[test]
    fn cost_is_tokens_times_price_per_million() {
        let price = Price {
            input_per_million: 0.15,
            output_per_million: 0.6,
        };
        // 1000 × 0.15 / 1e6 + 500 × 0.6 / 1e6 = 0.00015 + 0.0003
        let cost = price.cost_usd(usage(1000, 500));
        assert!((cost - 0.00045).abs() < 1e-15, "{cost}");
        // a million of each costs exactly the two list prices
        let cost = price.cost_usd(usage(1_000_000, 1_000_000));
        assert!((cost - 0.75).abs() < 1e-12, "{cost}");
        // input and output are priced separately: 2M output at $10/M = $20
        let price = Price {
            input_per_million: 2.5,
            output_per_million: 10.0,
        };
        let cost = price.cost_usd(usage(0, 2_000_000));
        assert!((cost - 20.0).abs() < 1e-12, "{cost}");
        let cost = price.cost_usd(usage(400_000, 0));
        assert!((cost - 1.0).abs() < 1e-12, "{cost}");
        assert_eq!(price.cost_usd(Usage::default()), 0.0);
        // the largest counts a server can report do not overflow
        let cost = price.cost_usd(usage(u32::MAX, 0));
        assert!((cost - f64::from(u32::MAX) * 2.5e-6).abs() < 1e-6, "{cost}");
    }
}
