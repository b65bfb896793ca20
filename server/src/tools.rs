//! Builds each tool's domain object from the configuration.

use std::sync::Arc;

use anyhow::Context as _;
use quarry_llm::ChatModel;
use quarry_llm::embed::Embedder;
use quarry_search::{Collection, SearchConfig, SearchTool};
use quarry_search_sync::Syncer;
use quarry_sql::service::{SqlModels, SqlTool};
use quarry_sql::sources::{Sources, validate_sources};
use quarry_summary::SummaryTool;
use tracing::info;

use quarry_db::{Pool, Pools};

use crate::Config;

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
    let pools = config.database.pools();
    let store = result_store(config);
    sql_tool_in(
        config,
        &pools,
        SqlModels::single(model),
        embedder,
        store.as_ref(),
    )
    .await
}

/// The process's result store when `[cache] enabled`.
fn result_store(config: &Config) -> Option<quarry_sql::cache::ResultStore> {
    config.cache.enabled.then(|| {
        quarry_sql::cache::ResultStore::new(
            config.cache.max_bytes,
            std::time::Duration::from_secs(config.cache.ttl_secs.max(1)),
        )
    })
}

/// [`sql_tool`] with per-job models and an embedder already loaded (so a
/// process that also searches loads the model once).
///
/// # Errors
/// Invalid configuration or golden pairs.
pub async fn sql_tool_with(
    config: &Config,
    pools: &Pools,
    models: SqlModels,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<Arc<SqlTool>> {
    let store = result_store(config);
    sql_tool_in(config, pools, models, embedder, store.as_ref()).await
}

async fn sql_tool_in(
    config: &Config,
    pools: &Pools,
    models: SqlModels,
    embedder: Option<Arc<dyn Embedder>>,
    store: Option<&quarry_sql::cache::ResultStore>,
) -> anyhow::Result<Arc<SqlTool>> {
    let pool = database_pool(config, pools)?;
    let mut tool = SqlTool::new(pool, config.sql.clone(), models, embedder).context("sql tool")?;
    tool.check_semantic().await.context("sql.semantic_path")?;
    if let Some(store) = store {
        tool = tool.with_result_cache(quarry_sql::cache::SourceCache::start(
            store.clone(),
            &config.database.url,
            &config.sql.schemas,
            &config.cache,
        ));
    }
    tool.load_stored_golden().await;
    Ok(Arc::new(tool))
}

/// The SQL tool of every source: the shared one ([`sql_tool_with`]) and one
/// per `[sql.sources.<name>]`, each with a pool of its own (`pool_size`
/// connections to its `database_url`, default `database.url`) and Quarry's
/// own tables in `database.url` ([`SqlTool::with_home`]).
///
/// # Errors
/// Invalid `[sql.sources]` (naming the field), invalid golden pairs, a URL
/// that does not parse.
pub async fn sql_sources_with(
    config: &Config,
    pools: &Pools,
    models: SqlModels,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<Arc<Sources>> {
    validate_sources(&config.sql).context("sql.sources")?;
    let store = result_store(config);
    let shared = sql_tool_in(
        config,
        pools,
        models.clone(),
        embedder.clone(),
        store.as_ref(),
    )
    .await?;
    let home = database_pool(config, pools)?;
    let wait = std::time::Duration::from_millis(config.database.pool_wait_ms);
    let mut own = std::collections::BTreeMap::new();
    for (name, source) in &config.sql.sources {
        let url = source
            .database_url
            .as_deref()
            .unwrap_or(&config.database.url);
        // Its own pool even on a URL another source uses: bounded per source.
        let pool = quarry_db::pool(url, source.pool_size, wait)
            .with_context(|| format!("sql.sources.{name}.database_url"))?;
        let mut tool = SqlTool::new(
            pool,
            source.tool_config(name, &config.sql),
            models.clone(),
            embedder.clone(),
        )
        .with_context(|| format!("sql.sources.{name}"))?
        .with_home(home.clone());
        tool.check_semantic()
            .await
            .with_context(|| format!("sql.sources.{name}.semantic_path"))?;
        if let Some(store) = &store {
            tool = tool.with_result_cache(quarry_sql::cache::SourceCache::start(
                store.clone(),
                url,
                &source.schemas,
                &config.cache,
            ));
        }
        tool.load_stored_golden().await;
        info!(source = %name, tenants = ?source.tenants, schemas = ?source.schemas, "sql source ready");
        own.insert(name.clone(), (Arc::new(tool), source.tenants.clone()));
    }
    Ok(Arc::new(Sources::new(shared, config.sql.shared, own)))
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
    pools: &Pools,
    search: SearchConfig,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<Arc<SearchTool>> {
    let pool = database_pool(config, pools)?;
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
    pools: &Pools,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<Option<Arc<SummaryTool>>> {
    let Some(mut summary) = config.summary.clone() else {
        return Ok(None);
    };
    summary
        .load_definitions(std::path::Path::new("."))
        .context("summary.definitions")?;
    let pool = database_pool(config, pools)?;
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
pub fn syncers(config: &Config, pools: &Pools, search: &SearchTool) -> anyhow::Result<Vec<Syncer>> {
    let pool = database_pool(config, pools)?;
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

/// The process's shared pool of `database.url` (`database.pool_size`
/// connections), from `pools`.
///
/// # Errors
/// The URL does not parse or the pool cannot be built.
pub fn database_pool(config: &Config, pools: &Pools) -> anyhow::Result<Pool> {
    pools
        .get(&config.database.url, config.database.pool_size)
        .context("database.url")
}

/// Refuses to serve source data through a database role that bypasses
/// row-level security: the login role of `database.url`, `sql.exec.role`,
/// `summary.role` and every policy role's `db_role` must be neither a
/// superuser nor `BYPASSRLS` (PostgreSQL 16 docs §5.8: both skip every row
/// security policy). A development setup (`server.development`) is allowed
/// them, with a warning. A role that does not exist is reported as such.
///
/// # Errors
/// The first offending role and why, or the database error.
pub async fn check_database_roles(config: &Config, pools: &Pools) -> anyhow::Result<()> {
    let pool = database_pool(config, pools)?;
    let client = pool.get().await.context("database.url")?;
    let mut roles: Vec<(String, String)> = vec![(
        "database.url (login role)".to_owned(),
        client
            .query_one("SELECT current_user::text", &[])
            .await
            .context("reading the login role")?
            .get(0),
    )];
    if let Some(role) = &config.sql.exec.role {
        roles.push(("sql.exec.role".to_owned(), role.clone()));
    }
    if let Some(role) = config.summary.as_ref().and_then(|s| s.role.clone()) {
        roles.push(("summary.role".to_owned(), role));
    }
    for (name, role) in &config.policy.roles {
        if let Some(db_role) = &role.db_role {
            roles.push((format!("policy.roles.{name}.db_role"), db_role.clone()));
        }
    }
    check_temp_file_limit(config, &client, "database.url").await?;
    for (name, source) in &config.sql.sources {
        let Some(url) = &source.database_url else {
            continue;
        };
        let key = format!("sql.sources.{name}.database_url");
        let wait = std::time::Duration::from_millis(config.database.pool_wait_ms);
        let other = quarry_db::pool(url, 1, wait).with_context(|| key.clone())?;
        let other = other.get().await.with_context(|| key.clone())?;
        // Roles are per cluster; a source on another cluster is checked here
        // for its login role, the others below.
        let row = other
            .query_one(
                "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_catalog.pg_roles \
                 WHERE rolname = current_user",
                &[],
            )
            .await
            .context("reading the login role")?;
        check_temp_file_limit(config, &other, &key).await?;
        check_role(
            &format!("{key} (login role)"),
            row.get(0),
            row.get(1),
            row.get(2),
            config.server.development,
        )?;
    }
    for (key, role) in roles {
        let row = client
            .query_opt(
                "SELECT rolsuper, rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .context("reading pg_roles")?;
        let Some(row) = row else {
            anyhow::bail!("{key}: database role {role:?} does not exist (run `quarry migrate`)");
        };
        check_role(
            &key,
            &role,
            row.get(0),
            row.get(1),
            config.server.development,
        )?;
    }
    Ok(())
}

/// Refuses to start when `sql.exec.temp_file_limit_kb` is set but the login
/// role of the connection (from config key `key`) may not set
/// `temp_file_limit`, a superuser-only setting unless granted (PostgreSQL 16
/// docs §20.4.2, `GRANT SET ON PARAMETER`, §5.7): every query would fail.
async fn check_temp_file_limit(
    config: &Config,
    client: &tokio_postgres::Client,
    key: &str,
) -> anyhow::Result<()> {
    if config.sql.exec.temp_file_limit_kb == 0 {
        return Ok(());
    }
    let row = client
        .query_one(
            "SELECT current_user::text, has_parameter_privilege('temp_file_limit', 'SET')",
            &[],
        )
        .await
        .context("reading the privilege to set temp_file_limit")?;
    let (login, allowed): (String, bool) = (row.get(0), row.get(1));
    if !allowed {
        anyhow::bail!(
            "{key}: login role {login:?} may not set temp_file_limit, which \
             sql.exec.temp_file_limit_kb needs; as a superuser run `GRANT SET ON PARAMETER \
             temp_file_limit TO \"{login}\"`, or set sql.exec.temp_file_limit_kb = 0"
        );
    }
    Ok(())
}

/// Refuses (or, in `development`, warns about) database role `role`, found
/// at config key `key`, when it is a superuser or has `BYPASSRLS`.
fn check_role(
    key: &str,
    role: &str,
    superuser: bool,
    bypass: bool,
    development: bool,
) -> anyhow::Result<()> {
    let why = match (superuser, bypass) {
        (true, _) => "is a superuser",
        (false, true) => "has BYPASSRLS",
        (false, false) => return Ok(()),
    };
    if development {
        tracing::warn!(
            key,
            role,
            "database role {why}: row-level security does not apply (accepted: server.development)"
        );
        Ok(())
    } else {
        anyhow::bail!(
            "{key}: database role {role:?} {why}, so PostgreSQL row-level security would not \
             apply; use a role without it, or set server.development = true for a \
             development setup"
        )
    }
}
