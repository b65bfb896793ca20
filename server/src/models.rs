//! The chat model of each task, built from `[model]` and `[models.<task>]`.

use std::sync::Arc;

use anyhow::Context as _;
use quarry_llm::{ChatModel, ModelConfig, OpenAiChatModel, Task};
use quarry_sql::service::SqlModels;
use tracing::info;

use crate::Config;

/// The chat model of each task (`[model]` and `[models.<task>]`), one client
/// per distinct configuration, so tasks that share settings share a client.
#[derive(Clone, Default)]
pub struct Models {
    /// Router mode's classification and the SQL tool's judge.
    pub routing: Option<Arc<dyn ChatModel>>,
    /// SQL generation and repair.
    pub sql: Option<Arc<dyn ChatModel>>,
    /// Agentic mode's loop.
    pub answer: Option<Arc<dyn ChatModel>>,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |m: &Option<Arc<dyn ChatModel>>| m.as_ref().map(|m| m.name().to_string());
        f.debug_struct("Models")
            .field("routing", &name(&self.routing))
            .field("sql", &name(&self.sql))
            .field("answer", &name(&self.answer))
            .finish()
    }
}

impl Models {
    /// Resolves each task's settings ([`Config::task_models`]) and builds
    /// the clients, logging which model serves which task.
    ///
    /// # Errors
    /// Invalid settings (the message names the key, e.g.
    /// `models.routing.base_url`), or an `api_key_env` variable that is not set.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let resolved = config.task_models().context("model settings")?;
        let mut built: Vec<(ModelConfig, Arc<dyn ChatModel>)> = Vec::new();
        let mut models = Self::default();
        // one response cache for every model (its key names the endpoint
        // and the model)
        let cache = config.cache.enabled.then(|| {
            quarry_llm::cache::ResponseCache::new(
                config.cache.model_max_bytes,
                std::time::Duration::from_secs(config.cache.ttl_secs.max(1)),
            )
        });
        for task in Task::ALL {
            let Some(settings) = resolved.get(task) else {
                info!(%task, "no model for this task");
                continue;
            };
            let model = match built.iter().find(|(c, _)| c == settings) {
                Some((_, model)) => Arc::clone(model),
                None => {
                    let mut built_model = OpenAiChatModel::new(settings.clone())
                        .with_context(|| format!("model for the {task} task"))?;
                    if let Some(cache) = &cache {
                        built_model = built_model.with_response_cache(cache.clone());
                    }
                    let model: Arc<dyn ChatModel> = Arc::new(built_model);
                    built.push((settings.clone(), Arc::clone(&model)));
                    model
                }
            };
            info!(
                %task,
                base_url = %settings.base_url,
                model = %settings.model,
                priced = settings.price.is_some(),
                "model configured"
            );
            match task {
                Task::Routing => models.routing = Some(model),
                Task::Sql => models.sql = Some(model),
                Task::Answer => models.answer = Some(model),
            }
        }
        Ok(models)
    }

    /// The SQL tool's models: the `sql` task's model writes SQL; the
    /// `routing` task's model judges (the `sql` model when no routing model
    /// resolves, i.e. only `[models.sql]` is configured).
    pub fn sql_models(&self) -> SqlModels {
        SqlModels {
            sql: self.sql.clone(),
            judge: self.routing.clone().or_else(|| self.sql.clone()),
        }
    }
}
