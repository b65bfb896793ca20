//! Where a chat model lives and how to call it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{LlmError, Result};
use crate::usage::Price;

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
    /// share the one `timeout_secs` deadline; a `Retry-After` that would end
    /// past it is not waited out (the response's error is returned at once).
    /// A stream that fails part-way is never retried. Default 2.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// What the model costs, for the cost reported with each answer
    /// ([`Price::cost_usd`]). `None` (the default) leaves the cost unknown.
    #[serde(default)]
    pub price: Option<Price>,
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

/// What a model call was for, as usage reports name it
/// (`ModelCallUsage.task`): agentic mode's loop ([`Task::Answer`]).
pub const TASK_ANSWER: &str = "answer";
/// Router mode's classification ([`Task::Routing`]).
pub const TASK_ROUTING: &str = "routing";
/// The SQL tool's generation and repair ([`Task::Sql`]).
pub const TASK_SQL: &str = "sql";
/// The SQL tool's check of a result against the question (served by the
/// [`Task::Routing`] model).
pub const TASK_JUDGE: &str = "judge";

/// The jobs Quarry gives a chat model, each of which may use its own model
/// (`[models.<task>]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// Router mode's classification (one cheap call per question) and the
    /// SQL tool's judge (does this result answer the question?).
    Routing,
    /// SQL generation and repair in the SQL tool.
    Sql,
    /// Agentic mode's tool-calling loop, which writes the answer.
    Answer,
}

impl Task {
    /// Every task, in the order they are listed in logs.
    pub const ALL: [Task; 3] = [Task::Answer, Task::Sql, Task::Routing];

    /// `routing`, `sql` or `answer`: the key under `[models]`.
    pub fn name(self) -> &'static str {
        match self {
            Task::Routing => TASK_ROUTING,
            Task::Sql => TASK_SQL,
            Task::Answer => TASK_ANSWER,
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One task's changes to `[model]` (`[models.routing]`, `[models.sql]`,
/// `[models.answer]`): every key of [`ModelConfig`], all optional. A key
/// that is set replaces `[model]`'s for this task; a key that is not set is
/// inherited from `[model]` (or takes [`ModelConfig`]'s default when there
/// is no `[model]`, in which case `base_url` and `model` must be set here).
///
/// ```toml
/// [model]                       # the answer and sql tasks
/// base_url = "https://api.openai.com/v1"
/// model = "gpt-4o"
/// api_key_env = "OPENAI_API_KEY"
/// [model.price]
/// input_per_million = 2.5
/// output_per_million = 10.0
///
/// [models.routing]              # routing and judging: a cheaper model,
/// model = "gpt-4o-mini"         # same endpoint and key
/// [models.routing.price]
/// input_per_million = 0.15
/// output_per_million = 0.60
/// ```
///
/// `api_key_env = ""` sends no key for this task even when `[model]` names
/// one (a local server next to a hosted one). The price is inherited like
/// every other key: a task that names another model should give its own
/// `[models.<task>.price]`, or its calls are priced at `[model]`'s rates
/// (start-up warns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOverrides {
    /// See [`ModelConfig::base_url`].
    #[serde(default)]
    pub base_url: Option<String>,
    /// See [`ModelConfig::model`].
    #[serde(default)]
    pub model: Option<String>,
    /// See [`ModelConfig::api_key_env`]; `""` means no key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// See [`ModelConfig::timeout_secs`] (seconds).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// See [`ModelConfig::max_tokens`] (completion tokens per request).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// See [`ModelConfig::temperature`].
    #[serde(default)]
    pub temperature: Option<f32>,
    /// See [`ModelConfig::max_retries`].
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// See [`ModelConfig::price`] (USD per 1M tokens).
    #[serde(default)]
    pub price: Option<Price>,
}

impl ModelOverrides {
    /// `base` with these overrides applied, or, without a `base`, a config
    /// made of these keys and the defaults. `task` names the table in errors.
    ///
    /// # Errors
    /// [`LlmError::Config`] naming `models.<task>.base_url` or
    /// `models.<task>.model` when there is no `base` and the key is unset.
    pub fn apply(&self, base: Option<&ModelConfig>, task: Task) -> Result<ModelConfig> {
        let required = |value: &Option<String>, inherited: Option<&String>, key: &str| {
            value.clone().or_else(|| inherited.cloned()).ok_or_else(|| {
                LlmError::Config(format!(
                    "models.{task}.{key} must be set: there is no [model] section to inherit it from"
                ))
            })
        };
        let base_url = required(&self.base_url, base.map(|b| &b.base_url), "base_url")?;
        let model = required(&self.model, base.map(|b| &b.model), "model")?;
        let mut config = match base {
            Some(base) => ModelConfig {
                base_url,
                model,
                ..base.clone()
            },
            None => ModelConfig::new(base_url, model),
        };
        if let Some(var) = &self.api_key_env {
            config.api_key_env = (!var.trim().is_empty()).then(|| var.clone());
        }
        if let Some(timeout_secs) = self.timeout_secs {
            config.timeout_secs = timeout_secs;
        }
        if self.max_tokens.is_some() {
            config.max_tokens = self.max_tokens;
        }
        if self.temperature.is_some() {
            config.temperature = self.temperature;
        }
        if let Some(max_retries) = self.max_retries {
            config.max_retries = max_retries;
        }
        if self.price.is_some() {
            config.price = self.price;
        }
        Ok(config)
    }
}

/// `[models]`: a model per task, each table changing `[model]` for its task
/// (see [`ModelOverrides`]). A task without a table uses `[model]` as it is;
/// without `[models]` every task does.
///
/// | task | used for |
/// | --- | --- |
/// | `routing` | router mode's classification, and the SQL tool's judge |
/// | `sql` | SQL generation and repair |
/// | `answer` | agentic mode's tool-calling loop (the answer) |
///
/// ```toml
/// [models.routing]
/// model = "gpt-4o-mini"
/// [models.routing.price]
/// input_per_million = 0.15
/// output_per_million = 0.60
///
/// [models.sql]                  # a local coder model for SQL
/// base_url = "http://localhost:11434/v1"
/// model = "qwen2.5-coder:7b"
/// api_key_env = ""              # no key, even if [model] names one
/// [models.sql.price]
/// input_per_million = 0.0
/// output_per_million = 0.0
/// ```
///
/// Environment overrides reach every key, e.g.
/// `QUARRY__MODELS__ROUTING__MODEL=gpt-4o-mini`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// `[models.routing]`: router classification and the SQL judge.
    #[serde(default)]
    pub routing: Option<ModelOverrides>,
    /// `[models.sql]`: SQL generation and repair.
    #[serde(default)]
    pub sql: Option<ModelOverrides>,
    /// `[models.answer]`: agentic mode's loop.
    #[serde(default)]
    pub answer: Option<ModelOverrides>,
}

/// The model settings of each task, resolved from `[model]` and `[models]`
/// ([`ModelsConfig::resolve`]); `None` where a task has no model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskModels {
    /// Router classification and the SQL judge.
    pub routing: Option<ModelConfig>,
    /// SQL generation and repair.
    pub sql: Option<ModelConfig>,
    /// Agentic mode's loop.
    pub answer: Option<ModelConfig>,
}

impl TaskModels {
    /// The settings of `task`.
    pub fn get(&self, task: Task) -> Option<&ModelConfig> {
        match task {
            Task::Routing => self.routing.as_ref(),
            Task::Sql => self.sql.as_ref(),
            Task::Answer => self.answer.as_ref(),
        }
    }
}

impl ModelsConfig {
    /// The table of `task`, if any.
    pub fn get(&self, task: Task) -> Option<&ModelOverrides> {
        match task {
            Task::Routing => self.routing.as_ref(),
            Task::Sql => self.sql.as_ref(),
            Task::Answer => self.answer.as_ref(),
        }
    }

    /// Each task's settings: its `[models.<task>]` table over `base`
    /// (`[model]`), `base` itself for a task without a table, `None` for a
    /// task with neither. Every resolved config is validated
    /// ([`ModelConfig::validate`]). Logs a warning for a task that names
    /// another model or endpoint than `base` but inherits `base`'s price.
    ///
    /// # Errors
    /// [`LlmError::Config`] whose message starts with the key at fault:
    /// `model.<key>` for `[model]` itself, `models.<task>.<key>` for a task
    /// table (e.g. `models.routing.base_url must be set: there is no [model]
    /// section to inherit it from`).
    pub fn resolve(&self, base: Option<&ModelConfig>) -> Result<TaskModels> {
        if let Some(base) = base {
            base.validate()
                .map_err(|e| prefix_config_error(e, "model."))?;
        }
        let mut resolved = TaskModels::default();
        for task in Task::ALL {
            let config = match self.get(task) {
                Some(overrides) => {
                    let config = overrides.apply(base, task)?;
                    config
                        .validate()
                        .map_err(|e| prefix_config_error(e, &format!("models.{task}.")))?;
                    if let Some(base) = base
                        && overrides.price.is_none()
                        && base.price.is_some()
                        && (config.model != base.model || config.api_base() != base.api_base())
                    {
                        tracing::warn!(
                            %task,
                            model = %config.model,
                            "models.{task} names another model than [model] but no price; \
                             its calls are priced at [model.price]"
                        );
                    }
                    Some(config)
                }
                None => base.cloned(),
            };
            match task {
                Task::Routing => resolved.routing = config,
                Task::Sql => resolved.sql = config,
                Task::Answer => resolved.answer = config,
            }
        }
        Ok(resolved)
    }
}

/// `error` with `prefix` before its message when it is a config error
/// (whose messages start with the key at fault).
fn prefix_config_error(error: LlmError, prefix: &str) -> LlmError {
    if let LlmError::Config(message) = error {
        LlmError::Config(format!("{prefix}{message}"))
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Usage;

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

    fn models(json: &str) -> ModelsConfig {
        serde_json::from_str(json).unwrap()
    }

    fn priced(base_url: &str, model: &str, input: f64, output: f64) -> ModelConfig {
        ModelConfig {
            api_key_env: Some("OPENAI_API_KEY".into()),
            temperature: Some(0.2),
            price: Some(Price {
                input_per_million: input,
                output_per_million: output,
            }),
            ..ModelConfig::new(base_url, model)
        }
    }

    #[test]
    fn without_models_every_task_uses_the_model_section_as_it_is() {
        let base = priced("https://api.openai.com/v1", "gpt-4o", 2.5, 10.0);
        let resolved = ModelsConfig::default().resolve(Some(&base)).unwrap();
        for task in Task::ALL {
            assert_eq!(resolved.get(task), Some(&base), "{task}");
        }
        let none = ModelsConfig::default().resolve(None).unwrap();
        assert_eq!(none, TaskModels::default());
    }

    #[test]
    fn a_task_table_overrides_its_keys_and_inherits_the_rest() {
        let base = priced("https://api.openai.com/v1", "gpt-4o", 2.5, 10.0);
        let config = models(
            r#"{"routing": {"model": "gpt-4o-mini",
                            "price": {"input_per_million": 0.15, "output_per_million": 0.6}},
                "sql": {"base_url": "http://localhost:11434/v1", "model": "qwen2.5-coder",
                        "api_key_env": "", "timeout_secs": 30, "max_tokens": 500,
                        "temperature": 0.0, "max_retries": 0}}"#,
        );
        let resolved = config.resolve(Some(&base)).unwrap();

        let routing = resolved.routing.unwrap();
        assert_eq!(routing.model, "gpt-4o-mini");
        assert_eq!(
            routing.price,
            Some(Price {
                input_per_million: 0.15,
                output_per_million: 0.6
            })
        );
        // inherited: endpoint, key, temperature, timeout, retries
        assert_eq!(routing.base_url, base.base_url);
        assert_eq!(routing.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
        assert_eq!(routing.temperature, Some(0.2));
        assert_eq!(
            (routing.timeout_secs, routing.max_retries),
            (base.timeout_secs, base.max_retries)
        );

        let sql = resolved.sql.unwrap();
        assert_eq!(sql.base_url, "http://localhost:11434/v1");
        assert_eq!(sql.model, "qwen2.5-coder");
        assert_eq!(sql.api_key_env, None, "an empty api_key_env sends no key");
        assert_eq!(
            (
                sql.timeout_secs,
                sql.max_tokens,
                sql.temperature,
                sql.max_retries
            ),
            (30, Some(500), Some(0.0), 0)
        );
        assert_eq!(sql.price, base.price, "the price is inherited too");

        assert_eq!(resolved.answer, Some(base), "no table: [model] as it is");
    }

    #[test]
    fn a_task_table_without_a_model_section_must_name_endpoint_and_model() {
        let config = models(r#"{"routing": {"model": "gpt-4o-mini"}}"#);
        let err = config.resolve(None).unwrap_err().to_string();
        assert!(err.contains("models.routing.base_url"), "{err}");

        let config = models(r#"{"sql": {"base_url": "http://h/v1"}}"#);
        let err = config.resolve(None).unwrap_err().to_string();
        assert!(err.contains("models.sql.model"), "{err}");

        // complete on its own: that task has a model, the others none
        let config = models(r#"{"answer": {"base_url": "http://h/v1", "model": "m"}}"#);
        let resolved = config.resolve(None).unwrap();
        let answer = resolved.answer.unwrap();
        assert_eq!(
            (answer.base_url.as_str(), answer.model.as_str()),
            ("http://h/v1", "m")
        );
        assert_eq!(answer.timeout_secs, 120, "defaults fill the rest");
        assert_eq!((resolved.routing, resolved.sql), (None, None));
    }

    #[test]
    fn resolved_configs_are_validated_and_errors_name_the_table() {
        let base = ModelConfig::new("http://h/v1", "m");
        let config = models(r#"{"routing": {"temperature": 5.0}}"#);
        let err = config.resolve(Some(&base)).unwrap_err().to_string();
        assert!(err.contains("models.routing.temperature"), "{err}");

        let config =
            models(r#"{"answer": {"price": {"input_per_million": -1, "output_per_million": 1}}}"#);
        let err = config.resolve(Some(&base)).unwrap_err().to_string();
        assert!(
            err.contains("models.answer.price.input_per_million"),
            "{err}"
        );

        let bad_base = ModelConfig::new("localhost/v1", "m");
        let err = ModelsConfig::default()
            .resolve(Some(&bad_base))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.base_url"), "{err}");
    }

    #[test]
    fn unknown_keys_and_tasks_are_refused() {
        let err = serde_json::from_str::<ModelsConfig>(r#"{"routing": {"modle": "x"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("modle"), "{err}");
        let err = serde_json::from_str::<ModelsConfig>(r#"{"judge": {"model": "x"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("judge"), "{err}");
    }

    fn usage(prompt_tokens: u32, completion_tokens: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            cached_prompt_tokens: 0,
            from_cache: false,
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
