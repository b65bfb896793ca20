//! Builds each tool's domain object from the configuration.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use quarry_llm::ChatModel;
use quarry_llm::embed::Embedder;
use quarry_search::{Collection, SearchConfig, SearchTool};
use quarry_search_sync::Syncer;
use quarry_sql::service::{SqlModels, SqlTool};
use quarry_summary::SummaryTool;
use tracing::info;

use crate::{Config, pool};

/// Builds the SQL tool from `config` (pool, the `[embedding]` embedder,
/// golden pairs from the file and from `quarry.golden_pairs`) with `model`
/// for both SQL generation and judging ([`SqlModels::single`]).
///
/// # Errors
/// Invalid configuration or golden pairs; the embedder cannot be loaded.
pub async fn sql_tool(
    config: &Config,
    model: Option<Arc<dyn ChatModel>>,
) -> anyhow::Result<Arc<SqlTool>> {
    let embedder = embedder(config).await?;
    sql_tool_with(config, SqlModels::single(model), embedder).await
}

/// [`sql_tool`] with per-job models and an embedder already loaded (so a
/// process that also searches loads the model once).
///
/// # Errors
/// Invalid configuration or golden pairs.
pub async fn sql_tool_with(
    config: &Config,
    models: SqlModels,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<Arc<SqlTool>> {
    let pool = pool(
        &config.database.url,
        config.database.pool_size,
        Duration::from_millis(config.database.pool_wait_ms),
    )?;
    let tool = SqlTool::new(pool, config.sql.clone(), models, embedder).context("sql tool")?;
    tool.load_stored_golden().await;
    Ok(Arc::new(tool))
}

/// The embedder `[embedding]` configures, if any.
///
/// # Errors
/// The model files cannot be loaded or the settings are invalid.
pub async fn embedder(config: &Config) -> anyhow::Result<Option<Arc<dyn Embedder>>> {
    let Some(embedding) = config.embedding.clone() else {
        return Ok(None);
    };
    let embedder =
        tokio::task::spawn_blocking(move || quarry_llm::embed::embedder_from_config(&embedding))
            .await?
            .context("embedding")?;
    info!(
        model = embedder.model_id(),
        dimension = embedder.dimension(),
        "embedder ready"
    );
    Ok(Some(embedder))
}

/// Opens the search tool over `search`'s collections with `embedder`
/// (sidecars prepared, indexes opened; they fill in once followed).
///
/// # Errors
/// Invalid collections, an embedder mismatch, database or index errors.
pub async fn search_tool(
    config: &Config,
    search: SearchConfig,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<Arc<SearchTool>> {
    let pool = pool(
        &config.database.url,
        config.database.pool_size,
        Duration::from_millis(config.database.pool_wait_ms),
    )?;
    let tool = SearchTool::open(pool, config.database.url.clone(), search, embedder)
        .await
        .context("search")?;
    Ok(Arc::new(tool))
}

/// Opens the summaries tool over `[summary]`'s kinds (inline and from the
/// `definitions` files, relative to the working directory) with `embedder`:
/// every definition validated (parsed, then prepared against the database),
/// storage ensured. `None` without a `[summary]` section.
///
/// # Errors
/// A definition that fails validation (the error names it), database errors.
pub async fn summary_tool(
    config: &Config,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<Option<Arc<SummaryTool>>> {
    let Some(mut summary) = config.summary.clone() else {
        return Ok(None);
    };
    summary
        .load_definitions(std::path::Path::new("."))
        .context("summary.definitions")?;
    let pool = pool(
        &config.database.url,
        config.database.pool_size,
        Duration::from_millis(config.database.pool_wait_ms),
    )?;
    let tool = SummaryTool::open(pool, summary, embedder)
        .await
        .context("summary")?;
    Ok(Some(Arc::new(tool)))
}

/// One syncer per configured collection, sharing the search tool's
/// embedder settings.
///
/// # Errors
/// Invalid collections, the embedder cannot be loaded, or the pool cannot be built.
pub fn syncers(config: &Config, search: &SearchTool) -> anyhow::Result<Vec<Syncer>> {
    let pool = pool(
        &config.database.url,
        4,
        Duration::from_millis(config.database.pool_wait_ms),
    )?;
    let mut out = Vec::new();
    for (i, c) in search.config().collections.iter().enumerate() {
        let collection = Collection::from_config(c, &format!("search.collections[{i}]"))?;
        out.push(Syncer::new(
            pool.clone(),
            config.database.url.clone(),
            Arc::new(collection),
            search.embedder(),
            config.sync.clone(),
        ));
    }
    Ok(out)
}
