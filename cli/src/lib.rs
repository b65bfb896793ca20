//! The `quarry` binary's library: configuration, the server composition
//! ([`serve`]) and the commands. `main.rs` only parses arguments, sets up
//! logging, binds and calls in here, so tests run the very same server on
//! `127.0.0.1:0`.

pub mod ask;
pub mod bench;
pub mod config;
pub mod conversations;
pub mod eval;
pub mod index;
pub mod ingest;
pub mod migrate;
pub mod summaries;

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use deadpool_postgres::Pool;
use quarry_auth::{AuthLayer, RateLimitLayer};
use quarry_llm::embed::Embedder;
use quarry_llm::{ChatModel, ModelConfig, OpenAiChatModel, Task};
use quarry_orchestrator::{
    Assistant, AssistantGrpc, ToolChannel, conversation::ConversationStore, transport,
};
use quarry_proto::v1::{
    assistant_service_server::AssistantServiceServer, sql_service_client::SqlServiceClient,
    sql_service_server::SqlServiceServer,
};
use quarry_proto::v1::{
    search_service_client::SearchServiceClient, search_service_server::SearchServiceServer,
};
use quarry_proto::v1::{
    summary_service_client::SummaryServiceClient, summary_service_server::SummaryServiceServer,
};
use quarry_search::{Collection, SearchConfig, SearchGrpc, SearchTool};
use quarry_search_sync::Syncer;
use quarry_sql::{
    grpc::SqlGrpc,
    service::{SqlModels, SqlTool},
};
use quarry_summary::{SummaryGrpc, SummaryTool};
use tokio::net::TcpListener;
use tonic::transport::{Endpoint, Server, server::TcpIncoming};
use tower::{Layer as _, ServiceBuilder};
use tracing::{info, warn};

pub use config::Config;

/// `message` as a gRPC request carrying `authorization: Bearer <token>`.
///
/// # Errors
/// The token holds characters a header may not.
pub fn bearer_request<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token contains characters not allowed in a header")?,
    );
    Ok(request)
}

/// A connection pool for `url` ([`quarry_db::pool`], kept here for the
/// commands that call it).
///
/// # Errors
/// When the URL does not parse or the pool cannot be built.
pub fn pool(url: &str, size: usize, wait: Duration) -> anyhow::Result<Pool> {
    Ok(quarry_db::pool(url, size, wait)?)
}

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
        for task in Task::ALL {
            let Some(settings) = resolved.get(task) else {
                info!(%task, "no model for this task");
                continue;
            };
            let model = match built.iter().find(|(c, _)| c == settings) {
                Some((_, model)) => Arc::clone(model),
                None => {
                    let model: Arc<dyn ChatModel> = Arc::new(
                        OpenAiChatModel::new(settings.clone())
                            .with_context(|| format!("model for the {task} task"))?,
                    );
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

/// How often `serve` deletes conversations past their retention.
pub const CONVERSATION_PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Serves every role (Assistant, SQL tool, health, reflection) on `listener`
/// until `shutdown` resolves, then lets in-flight requests finish for at most
/// `server.shutdown_grace_secs`.
///
/// # Errors
/// Invalid configuration (auth secret, golden pairs, model settings) or a
/// transport failure.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let verifier = config.auth.verifier().context("auth")?;
    let limiter = config.auth.rate_limiter();
    let models = Models::from_config(&config)?;
    if models.answer.is_none() {
        info!(
            "no answer model configured: router mode (golden question/SQL pairs, then summaries and search by rules)"
        );
    }
    // Loaded once for schema linking and search.
    let embedder = embedder(&config).await?;
    if let Some(embedder) = &embedder {
        // Warm up (lazy weights, first-call allocations) here rather than in
        // the first search: the demo's first query took 7 s to embed without this.
        if let Err(error) = embedder.embed(vec!["warm-up".to_owned()]).await {
            warn!(%error, "embedder warm-up failed");
        }
    }
    let tool = sql_tool_with(&config, models.sql_models(), embedder.clone()).await?;
    let background = tokio_util::sync::CancellationToken::new();
    let search = match &config.search {
        Some(search) => Some(search_tool(&config, search.clone(), embedder.clone()).await?),
        None => None,
    };
    let summaries = summary_tool(&config, embedder).await?;
    if let Some(summaries) = &summaries
        && config.server.run_summary_builder
    {
        summaries.clone().spawn_scheduler(background.clone());
    }
    if let Some(search) = &search {
        search.spawn_follower(background.clone().cancelled_owned());
        if config.server.run_sync {
            for syncer in syncers(&config, search)? {
                let stop = background.clone().cancelled_owned();
                tokio::spawn(async move {
                    let name = syncer.collection().name.clone();
                    if let Err(error) = syncer.run(stop).await {
                        warn!(collection = %name, %error, "index sync stopped");
                    }
                });
            }
        }
    }
    let _stop_background = background.clone().drop_guard();
    // Tools this process serves are called in process (their gRPC services
    // behind the same authentication layer, no socket); a `server.*_url`
    // sends the calls to another Deployment instead.
    let auth = AuthLayer::new(verifier);
    let server_config = &config.server;
    let sql_service = SqlServiceServer::new(SqlGrpc::new(tool));
    let sql_channel = tool_channel(
        &auth,
        "server.sql_url",
        server_config.sql_url.as_deref(),
        Some(&sql_service),
    )?
    .context("no SQL tool")?;
    let mut assistant = Assistant::new(
        models.answer.clone(),
        SqlServiceClient::new(sql_channel),
        config.orchestrator.clone(),
    );
    if let Some(routing) = models.routing.clone() {
        assistant = assistant.with_routing_model(routing);
    }
    let search_service = search.map(|tool| SearchServiceServer::new(SearchGrpc::new(tool)));
    let search_url = server_config.search_url.as_deref();
    if let Some(channel) = tool_channel(
        &auth,
        "server.search_url",
        search_url,
        search_service.as_ref(),
    )? {
        assistant = assistant.with_search(SearchServiceClient::new(channel));
    }
    let summary_service = summaries.map(|tool| SummaryServiceServer::new(SummaryGrpc::new(tool)));
    let summary_url = server_config.summary_url.as_deref();
    if let Some(channel) = tool_channel(
        &auth,
        "server.summary_url",
        summary_url,
        summary_service.as_ref(),
    )? {
        assistant = assistant.with_summaries(SummaryServiceClient::new(channel));
    }
    // Conversations: every Ask is a stored turn; expired ones are purged hourly.
    let conversations = ConversationStore::new(
        pool(
            &config.database.url,
            config.database.pool_size,
            Duration::from_millis(config.database.pool_wait_ms),
        )?,
        config.orchestrator.conversation_retention_days,
    );
    {
        let store = conversations.clone();
        let stop = background.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = store.purge_every(CONVERSATION_PURGE_INTERVAL) => {}
            }
        });
    }
    let assistant = Arc::new(assistant.with_conversations(conversations));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SqlServiceServer<SqlGrpc>>().await;
    health
        .set_serving::<AssistantServiceServer<AssistantGrpc>>()
        .await;
    if search_service.is_some() {
        health
            .set_serving::<SearchServiceServer<SearchGrpc>>()
            .await;
    }
    if summary_service.is_some() {
        health
            .set_serving::<SummaryServiceServer<SummaryGrpc>>()
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(quarry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(quarry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let layers = ServiceBuilder::new()
        .layer(auth)
        .layer(RateLimitLayer::new(limiter));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .layer(layers)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(sql_service)
        .add_service(AssistantServiceServer::new(AssistantGrpc::new(assistant)))
        .add_optional_service(search_service)
        .add_optional_service(summary_service)
        // TCP_NODELAY: without it Nagle's algorithm and delayed ACKs held
        // small streamed events back ≈ 40 ms (`quarry bench ask`); tonic's
        // own `tcp_nodelay` applies only to listeners it binds itself
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop_rx.await;
            },
        );
    info!(%local, "quarry serving");
    let mut server = std::pin::pin!(server);
    tokio::select! {
        result = &mut server => return result.context("server"),
        () = shutdown => {}
    }
    info!("shutting down: no new connections; draining in-flight requests");
    let _ = stop_tx.send(());
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.context("server"),
        Err(_) => {
            warn!(
                grace_secs = grace.as_secs(),
                "requests still running after the grace period; stopping them"
            );
            Ok(())
        }
    }
}

/// How the orchestrator reaches one tool: over the network to `url` (the
/// value of `key`, connected on first use) when one is configured, else
/// `local`, this process's own gRPC service of the tool, in process behind
/// `auth`; `None` when neither exists.
fn tool_channel<S>(
    auth: &AuthLayer,
    key: &str,
    url: Option<&str>,
    local: Option<&S>,
) -> anyhow::Result<Option<ToolChannel>>
where
    S: tower::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    if let Some(url) = url {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("{key} {url:?} is not a valid URL"))?;
        return Ok(Some(transport::remote(endpoint.connect_lazy())));
    }
    Ok(local.map(|service| transport::in_process(auth.layer(service.clone()))))
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("received ctrl-c"),
        () = term => info!("received sigterm"),
    }
}
