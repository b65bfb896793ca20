//! Composes a Quarry node: the services of the roles it plays, behind one
//! auth and rate-limit stack, with health and reflection, until shutdown.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use quarry_auth::{AuthLayer, Policy, PolicyLayer, PolicyStore, RateLimitLayer};
use quarry_db::supervisor::Supervisor;
use quarry_orchestrator::{
    Assistant, AssistantGrpc, Budgets, ToolChannel, UsageGrpc, conversation::ConversationStore,
    transport,
};
use quarry_proto::v1::{
    assistant_service_server::AssistantServiceServer, search_service_client::SearchServiceClient,
    search_service_server::SearchServiceServer, sql_service_client::SqlServiceClient,
    sql_service_server::SqlServiceServer, summary_service_client::SummaryServiceClient,
    summary_service_server::SummaryServiceServer, usage_service_server::UsageServiceServer,
};
use quarry_search::SearchGrpc;
use quarry_sql::grpc::SqlGrpc;
use quarry_summary::SummaryGrpc;
use tokio::net::TcpListener;
use tonic::server::NamedService as _;
use tonic::transport::{Endpoint, Server, server::TcpIncoming};
use tower::{Layer as _, ServiceBuilder};
use tracing::{info, warn};

use crate::{
    Config, Models, Role, Roles, database_pool, embedder, search_tool, sql_sources_with,
    summary_tool, syncers,
};

/// How often `serve` deletes conversations past their retention.
pub const CONVERSATION_PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Serves `roles` ([`Role`]) on `listener` until `shutdown` resolves, then
/// lets in-flight requests finish for at most `server.shutdown_grace_secs`.
/// Health and reflection are served whatever the roles; the health service
/// reports each gRPC service this process serves as `SERVING` while the
/// databases answer and its role's background work runs, `NOT_SERVING`
/// otherwise ([`crate::health`]). Background work (index sync, search
/// follower, summary schedule, purges) is restarted with backoff after any
/// failure ([`quarry_db::supervisor`]).
///
/// The assistant role reaches each tool in this process when that tool's
/// role runs here (in process, behind the same auth layer, no socket), or at
/// `server.sql_url` / `search_url` / `summary_url` (which win when set).
///
/// # Errors
/// Invalid configuration (`server.web.cors_origins`, auth secret, issuer
/// or audience outside `server.development`, an unreachable `auth.jwks_url`, golden pairs, model
/// settings, an assistant role with neither the sql role nor
/// `server.sql_url`) or a transport failure.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    roles: Roles,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = config
        .metrics
        .bind()
        .await
        .context("metrics.listen: cannot bind")?;
    serve_with_metrics(listener, metrics, config, roles, shutdown).await
}

/// [`serve`] with the Prometheus endpoint on `metrics` (bound by the
/// caller, e.g. on port 0 by a test that needs its address) instead of
/// `[metrics] listen`; `None` serves no metrics.
///
/// # Errors
/// As [`serve`]; the Prometheus recorder cannot be installed (another one
/// is).
pub async fn serve_with_metrics(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    config: Config,
    roles: Roles,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    // installed before any work, so that start-up (the first summary
    // build, the sync's backfill) is recorded too
    let recorder = match &metrics {
        Some(_) => {
            quarry_metrics::set_max_tenant_labels(config.metrics.max_tenant_labels);
            Some(crate::metrics::recorder()?)
        }
        None => None,
    };
    let server_config = &config.server;
    let cors = server_config.web.cors_layer()?;
    if roles.has(Role::Assistant) && !roles.has(Role::Sql) && server_config.sql_url.is_none() {
        anyhow::bail!(
            "the assistant role needs the sql role in the same process or server.sql_url"
        );
    }
    let models = Models::from_config(&config)?;
    // After the checks that need no network: with a key set this fetches it.
    let verifier = config
        .auth
        .verifier(server_config.development)
        .await
        .context("auth")?;
    let policy = Arc::new(PolicyStore::new(
        Policy::new(&config.policy).context("policy")?,
    ));
    if config.policy.roles.is_empty() {
        warn!("no [policy] roles: every request will be refused (default deny)");
    }
    if roles.has(Role::Assistant) && models.answer.is_none() {
        info!(
            "no answer model configured: router mode (golden question/SQL pairs, then summaries and search by rules)"
        );
    }
    // Loaded once for schema linking, search, summaries and the sync.
    let needs_embedder = [Role::Sql, Role::Search, Role::Summary, Role::Sync]
        .into_iter()
        .any(|r| roles.has(r));
    let embedder = if needs_embedder {
        embedder(&config).await?
    } else {
        None
    };
    if let Some(embedder) = &embedder {
        // Warm up (lazy weights, first-call allocations) here rather than in
        // the first search: the demo's first query took 7 s to embed without this.
        if let Err(error) = embedder.embed(vec!["warm-up".to_owned()]).await {
            warn!(%error, "embedder warm-up failed");
        }
    }
    let background = tokio_util::sync::CancellationToken::new();
    let _stop_background = background.clone().drop_guard();
    // Background work restarts itself after a failure; health reads its state.
    let supervisor = Supervisor::new();
    // One pool per database URL for everything this process runs.
    let pools = Arc::new(config.database.pools());
    let mut limiter = config.auth.rate_limiter();
    if config.auth.rate_limit.shared {
        // the quota holds across every replica on this database
        limiter = limiter.with_shared(Arc::new(crate::limits::PgRateStore::new(database_pool(
            &config, &pools,
        )?)));
    }

    if [Role::Sql, Role::Search, Role::Summary, Role::Sync]
        .into_iter()
        .any(|r| roles.has(r))
    {
        crate::check_database_roles(&config, &pools).await?;
    }
    // The SQL tool's audit entries and usage charges: queued, and stored
    // in batches by one supervised writer in Quarry's database (group
    // `sql`: while it cannot store, health shows it down and the entries
    // wait); the usage report stores what is queued before it reads.
    let bookkeeping = if roles.has(Role::Sql) {
        Some(quarry_db::write_behind::WriteBehind::start(
            database_pool(&config, &pools)?,
            &config.sql.audit,
            &supervisor,
            Role::Sql.as_str(),
        ))
    } else {
        None
    };
    // Budgets: kept where model calls are made (Asks, GenerateSql), in
    // Quarry's database, so that every replica sees the same spend.
    let budgets = if roles.has(Role::Assistant) || roles.has(Role::Sql) {
        let mut ledger = quarry_db::usage::UsageLedger::new(database_pool(&config, &pools)?);
        if let Some(bookkeeping) = &bookkeeping {
            ledger = ledger.with_write_behind(bookkeeping.clone());
        }
        Some(Arc::new(Budgets::new(config.budgets.clone(), ledger)))
    } else {
        None
    };
    let sql_service = if roles.has(Role::Sql) {
        let sources =
            sql_sources_with(&config, &pools, models.sql_models(), embedder.clone()).await?;
        if let Some(bookkeeping) = &bookkeeping {
            sources.use_write_behind(bookkeeping);
        }
        // each result cache's change-notice listener restarts itself; its
        // state shows in the background-task metrics (group `cache`: while
        // it is down the cache is bypassed and SQL still serves)
        for (name, tool) in sources.all() {
            if let Some(cache) = tool.result_cache() {
                cache.versions().report_to(
                    supervisor.register(&format!("result-cache-listener-{name}"), "cache"),
                );
            }
        }
        let mut grpc = SqlGrpc::with_sources(sources);
        if let Some(budgets) = &budgets {
            grpc = grpc.with_budget(Arc::new(crate::limits::SqlBudgets(Arc::clone(budgets))));
        }
        Some(SqlServiceServer::new(grpc))
    } else {
        None
    };
    // The sync writes the sidecars the search tool prepares, so it opens
    // the tool too (without serving or following it).
    let search = match &config.search {
        Some(search) if roles.has(Role::Search) || roles.has(Role::Sync) => {
            Some(search_tool(&config, &pools, search.clone(), embedder.clone()).await?)
        }
        _ => None,
    };
    if let Some(search) = &search {
        if roles.has(Role::Search) {
            let search = Arc::clone(search);
            supervisor.spawn(
                "search follower",
                Role::Search.as_str(),
                background.clone(),
                move |task| {
                    let search = Arc::clone(&search);
                    async move {
                        search
                            .follow_reporting(std::future::pending(), Some(task))
                            .await;
                        Ok::<(), Infallible>(())
                    }
                },
            );
        }
        if roles.has(Role::Sync) && server_config.run_sync {
            for syncer in syncers(&config, &pools, search)? {
                let name = format!("sync {}", syncer.collection().name);
                supervisor.spawn(
                    &name,
                    Role::Sync.as_str(),
                    background.clone(),
                    move |task| {
                        let syncer = syncer.clone();
                        async move { syncer.run_supervised(task).await }
                    },
                );
            }
        }
    }
    let search_service = search
        .filter(|_| roles.has(Role::Search))
        .map(|tool| SearchServiceServer::new(SearchGrpc::new(tool)));
    let summaries = if roles.has(Role::Summary) {
        summary_tool(&config, &pools, embedder).await?
    } else {
        None
    };
    if let Some(summaries) = &summaries
        && server_config.run_summary_builder
    {
        let summaries = Arc::clone(summaries);
        let stop = background.clone();
        supervisor.spawn(
            "summary schedule",
            Role::Summary.as_str(),
            background.clone(),
            move |task| {
                let summaries = Arc::clone(&summaries);
                let stop = stop.clone();
                async move {
                    summaries.run_schedule(stop, Some(task)).await;
                    Ok::<(), Infallible>(())
                }
            },
        );
    }
    let summary_service = summaries.map(|tool| SummaryServiceServer::new(SummaryGrpc::new(tool)));

    // The audit trail: statements (written by the SQL tool) and refusals
    // (written here for the policy layer); purged hourly past retention
    // (a failed purge is retried with backoff).
    let audit =
        quarry_db::audit::AuditLog::new(database_pool(&config, &pools)?, config.sql.audit.clone());
    {
        let audit = audit.clone();
        supervisor.spawn::<_, _, String>(
            "audit purge",
            crate::health::SHARED_GROUP,
            background.clone(),
            move |task| {
                let audit = audit.clone();
                async move {
                    loop {
                        match audit.purge().await? {
                            0 => {}
                            n => info!(deleted = n, "audit entries past retention deleted"),
                        }
                        task.running();
                        tokio::time::sleep(CONVERSATION_PURGE_INTERVAL).await;
                    }
                }
            },
        );
    }
    // the MCP surface verifies its bearer tokens with the same verifier
    let mcp_verifier = verifier.clone();
    let auth = Guard {
        auth: AuthLayer::new(verifier),
        policy: PolicyLayer::new(Arc::clone(&policy), crate::rpc_scope)
            .with_refusal_hook(audit_refusals(audit)),
    };
    if let Some(path) = config.source.clone() {
        spawn_policy_reload(path, Arc::clone(&policy), background.clone());
    }
    let assistant_service =
        if let Some(budgets) = budgets.as_ref().filter(|_| roles.has(Role::Assistant)) {
            let assistant = assistant(
                &config,
                &pools,
                &models,
                &auth,
                &supervisor,
                &background,
                sql_service.as_ref(),
                search_service.as_ref(),
                summary_service.as_ref(),
            )
            .await?
            .with_budgets(Arc::clone(budgets));
            Some(AssistantServiceServer::new(AssistantGrpc::new(Arc::new(
                assistant,
            ))))
        } else {
            None
        };
    // the usage report: served where Asks run
    let usage_service = budgets
        .filter(|_| roles.has(Role::Assistant))
        .map(|b| UsageServiceServer::new(UsageGrpc::new(b)));

    let (health, health_service) = tonic_health::server::health_reporter();
    let mut served: Vec<(&'static str, Role)> = Vec::new();
    if sql_service.is_some() {
        health.set_serving::<SqlServiceServer<SqlGrpc>>().await;
        served.push((SqlServiceServer::<SqlGrpc>::NAME, Role::Sql));
    }
    if assistant_service.is_some() {
        health
            .set_serving::<AssistantServiceServer<AssistantGrpc>>()
            .await;
        served.push((
            AssistantServiceServer::<AssistantGrpc>::NAME,
            Role::Assistant,
        ));
    }
    if usage_service.is_some() {
        health.set_serving::<UsageServiceServer<UsageGrpc>>().await;
        served.push((UsageServiceServer::<UsageGrpc>::NAME, Role::Assistant));
    }
    if search_service.is_some() {
        health
            .set_serving::<SearchServiceServer<SearchGrpc>>()
            .await;
        served.push((SearchServiceServer::<SearchGrpc>::NAME, Role::Search));
    }
    if summary_service.is_some() {
        health
            .set_serving::<SummaryServiceServer<SummaryGrpc>>()
            .await;
        served.push((SummaryServiceServer::<SummaryGrpc>::NAME, Role::Summary));
    }
    crate::health::spawn(
        crate::health::Watch {
            reporter: health.clone(),
            services: served,
            roles: Role::ALL.into_iter().filter(|r| roles.has(*r)).collect(),
            pools: pools.all(),
            supervisor: supervisor.clone(),
        },
        background.clone(),
    );
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let rpc_metrics = if recorder.is_some() {
        crate::metrics::RpcMetricsLayer::for_quarry()
    } else {
        crate::metrics::RpcMetricsLayer::off()
    };
    if let (Some(listener), Some(handle)) = (metrics, recorder) {
        let pools = Arc::clone(&pools);
        crate::metrics::spawn_endpoint(
            listener,
            handle,
            Arc::new(move || pools.record_metrics()),
            background.clone(),
        );
    }
    // the RPC span is the parent of everything, metrics measured inside
    // it (refusals by auth and limits included); the same stack serves
    // the network and the MCP surface's in-process calls
    let grpc_layers = ServiceBuilder::new()
        .layer(crate::TraceContextLayer)
        .layer(rpc_metrics)
        .layer(auth.auth.clone())
        .layer(RateLimitLayer::new(limiter))
        .layer(auth.policy.clone());
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let has_assistant = assistant_service.is_some();
    let (has_sql, has_search, has_summary) = (
        sql_service.is_some(),
        search_service.is_some(),
        summary_service.is_some(),
    );
    add_if_some(&mut routes, sql_service);
    add_if_some(&mut routes, assistant_service);
    add_if_some(&mut routes, search_service);
    add_if_some(&mut routes, summary_service);
    add_if_some(&mut routes, usage_service);
    let routes = routes.routes();
    // the HTTP surfaces beside gRPC (console, MCP)
    let mut surfaces =
        crate::surfaces::Surfaces::default().mount(&["/", "/console"], crate::console::router());
    if has_assistant && config.mcp.enabled {
        let local = in_process_stack(grpc_layers.clone().service(routes.clone()));
        let reach = |url: Option<&str>, here: bool| match url {
            Some(url) => Endpoint::from_shared(url.to_owned())
                .map(|e| Some(transport::remote(e.connect_lazy())))
                .with_context(|| format!("{url:?} is not a valid URL")),
            None => Ok(here.then(|| local.clone())),
        };
        let channels = crate::mcp::McpChannels {
            assistant: local.clone(),
            sql: reach(server_config.sql_url.as_deref(), has_sql)?,
            search: reach(server_config.search_url.as_deref(), has_search)?,
            summaries: reach(server_config.summary_url.as_deref(), has_summary)?,
        };
        surfaces = surfaces.mount(
            crate::mcp::PATHS,
            crate::mcp::router(
                &config.mcp,
                config.auth.issuer.as_deref(),
                mcp_verifier,
                Arc::clone(&policy),
                &config.orchestrator,
                channels,
                background.clone(),
            ),
        );
    }
    let layers = ServiceBuilder::new()
        // outermost: non-gRPC surfaces leave here, before gRPC auth
        .layer(crate::surfaces::SurfacesLayer::new(surfaces))
        // browsers: CORS preflights answered before auth, then grpc-web
        // translated to gRPC for the same layers as any call ([`crate::web`])
        .layer(cors)
        // an HTTP/1.1 request refused on its head has its body read after
        // (a little of it), so that its connection carries the next request
        .layer(crate::web::DrainRefusedHttp1Layer)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(grpc_layers);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        // HTTP/1.1 for browsers (grpc-web, the console) beside HTTP/2
        .accept_http1(true)
        .layer(layers)
        .add_routes(routes)
        // TCP_NODELAY: without it Nagle's algorithm and delayed ACKs held
        // small streamed events back ≈ 40 ms (`quarry bench ask`); tonic's
        // own `tcp_nodelay` applies only to listeners it binds itself
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop_rx.await;
            },
        );
    info!(%local, %roles, "quarry serving");
    let mut server = std::pin::pin!(server);
    tokio::select! {
        result = &mut server => return result.context("server"),
        () = shutdown => {}
    }
    info!("shutting down: no new connections; draining in-flight requests");
    let _ = stop_tx.send(());
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let served = match tokio::time::timeout(grace, server).await {
        Ok(result) => result.context("server"),
        Err(_) => {
            warn!(
                grace_secs = grace.as_secs(),
                "requests still running after the grace period; stopping them"
            );
            Ok(())
        }
    };
    // the statements that ran are audited and charged before the process ends
    if let Some(bookkeeping) = &bookkeeping
        && !bookkeeping.flush().await
    {
        warn!("audit entries and usage charges still queued at shutdown were not stored");
    }
    served
}

/// The reflection service's descriptors: `quarry.v1`, `grpc.health.v1`, and
/// the `google.rpc` error details (`google.rpc.Status`, `BadRequest`,
/// `RetryInfo`, … from googleapis' `status.proto` and `error_details.proto`,
/// as shipped by `tonic-types`), so that generic clients such as
/// `grpcurl -format-error` decode the details Quarry puts in its errors.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(quarry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// The orchestrator with a channel to each tool it can reach, its
/// conversation store, and the hourly purge of expired conversations
/// (stopped with `background`).
#[allow(clippy::too_many_arguments)] // the node's parts, each named
async fn assistant(
    config: &Config,
    pools: &quarry_db::Pools,
    models: &Models,
    auth: &Guard,
    supervisor: &Supervisor,
    background: &tokio_util::sync::CancellationToken,
    sql: Option<&SqlServiceServer<SqlGrpc>>,
    search: Option<&SearchServiceServer<SearchGrpc>>,
    summaries: Option<&SummaryServiceServer<SummaryGrpc>>,
) -> anyhow::Result<Assistant> {
    let server_config = &config.server;
    let sql_channel = tool_channel(
        auth,
        "server.sql_url",
        server_config.sql_url.as_deref(),
        sql,
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
    let search_url = server_config.search_url.as_deref();
    if let Some(channel) = tool_channel(auth, "server.search_url", search_url, search)? {
        assistant = assistant.with_search(SearchServiceClient::new(channel));
    }
    let summary_url = server_config.summary_url.as_deref();
    if let Some(channel) = tool_channel(auth, "server.summary_url", summary_url, summaries)? {
        assistant = assistant.with_summaries(SummaryServiceClient::new(channel));
    }
    // Conversations: every Ask is a stored turn; expired ones are purged
    // hourly (a failed purge is retried with backoff).
    let conversations = ConversationStore::new(
        database_pool(config, pools)?,
        config.orchestrator.conversation_retention_days,
    );
    {
        let store = conversations.clone();
        supervisor.spawn::<_, _, quarry_orchestrator::conversation::ConversationError>(
            "conversation purge",
            Role::Assistant.as_str(),
            background.clone(),
            move |task| {
                let store = store.clone();
                async move {
                    loop {
                        let deleted = store.purge_expired().await?;
                        if deleted > 0 {
                            info!(deleted, "expired conversations purged");
                        }
                        task.running();
                        tokio::time::sleep(CONVERSATION_PURGE_INTERVAL).await;
                    }
                }
            },
        );
    }
    Ok(assistant.with_conversations(conversations))
}

/// How the orchestrator reaches one tool: over the network to `url` (the
/// value of `key`, connected on first use) when one is configured, else
/// `local`, this process's own gRPC service of the tool, in process behind
/// `auth`; `None` when neither exists.
fn tool_channel<S>(
    auth: &Guard,
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
    Ok(local
        .map(|service| transport::in_process(auth.auth.layer(auth.policy.layer(service.clone())))))
}

/// `service` (the node's gRPC routes behind its whole layer stack) as a
/// channel for calls made in this process.
fn in_process_stack<S, B>(service: S) -> ToolChannel
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    transport::in_process(
        tower::ServiceExt::<http::Request<tonic::body::Body>>::map_response(
            service,
            |r: http::Response<B>| r.map(tonic::body::Body::new),
        ),
    )
}

/// Adds `service`, when there is one, to `routes`.
fn add_if_some<S>(routes: &mut tonic::service::RoutesBuilder, service: Option<S>)
where
    S: tower::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    if let Some(service) = service {
        routes.add_service(service);
    }
}

/// A [`quarry_auth::RefusalHook`] that records each refused call in the
/// audit log (on its own task, so the refusal is not delayed).
fn audit_refusals(audit: quarry_db::audit::AuditLog) -> quarry_auth::RefusalHook {
    Arc::new(move |principal, path, message, request_id| {
        let audit = audit.clone();
        let entry = quarry_db::audit::AuditEntry {
            detail: Some(message.to_owned()),
            ..quarry_db::audit::AuditEntry::new(
                &principal.tenant,
                &principal.subject,
                request_id.unwrap_or_default(),
                "rpc",
                path,
                quarry_db::audit::Outcome::Refused,
            )
        };
        tokio::spawn(async move { audit.record(entry).await });
    })
}

/// The layers every request passes before a service sees it: the token
/// ([`AuthLayer`]) and the policy ([`PolicyLayer`]); in-process tool calls
/// pass both too.
struct Guard {
    auth: AuthLayer,
    policy: PolicyLayer,
}

/// Reloads `[policy]` from `path` on every SIGHUP until `stop`: a policy
/// that fails validation is logged and the one in force stays.
fn spawn_policy_reload(
    path: std::path::PathBuf,
    store: Arc<PolicyStore>,
    stop: tokio_util::sync::CancellationToken,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(error) => {
                warn!(%error, "cannot listen for SIGHUP; policy reload disabled");
                return;
            }
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            match Config::load(Some(&path)) {
                Ok(config) => match store.reload(&config.policy) {
                    Ok(version) => info!(version, path = %path.display(), "policy reloaded"),
                    Err(error) => warn!(%error, "policy not reloaded; the old one stays"),
                },
                Err(error) => warn!(%error, "configuration not reloaded; the old policy stays"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (path, store, stop);
}
