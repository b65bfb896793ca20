//! Several replicas behave as one service (issue 15): two assistant
//! replicas behind nginx (`grpc_pass`, dev/nginx.sh) and the tool roles each
//! in a server of its own (two for the roles that elect a leader), all on one
//! PostgreSQL database. Asks succeed through the balancer and both replicas
//! serve some; the index sync and the summary build each run once; a
//! tenant's request rate and token budget hold across the replicas within
//! 10 %.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::{
    net::TcpListener,
    process::Stdio,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    AnswerStatus, AskResponse, GetUsageRequest, assistant_service_client::AssistantServiceClient,
    usage_service_client::UsageServiceClient,
};
use quarry_server::{Role, Roles};
use quarry_tests::{
    Options, TempDir, TestServer, ask, authed, final_answer, loaded_database, repo_root, token,
    token_with_scopes, usage_of,
};
use tonic::{Code, Status, transport::Channel};

/// The quota of every tenant in this test: requests per second, burst (9:
/// each replica takes 2 cells ahead while the bucket is under half drawn,
/// `quarry_auth::cells_ahead`).
const RATE: u32 = 10;
const BURST: u32 = 9;
/// Every tenant's daily token budget, and what one Ask spends (one model
/// call of 60 + 40 tokens).
const DAILY_TOKENS: i64 = 1_000;
const ASK_TOKENS: (u32, u32) = (60, 40);

/// nginx balancing gRPC over `upstreams`, on a free port; killed when
/// dropped.
struct Nginx {
    child: std::process::Child,
    port: u16,
    _dir: TempDir,
}

impl Nginx {
    async fn start(upstreams: &[String]) -> Nginx {
        let dir = TempDir::new("nginx");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(repo_root().join("dev/nginx.sh"))
            .arg("run")
            .arg(dir.path())
            .arg(port.to_string())
            .args(upstreams)
            .stdin(Stdio::null())
            .spawn()
            .expect("dev/nginx.sh run (installs the Debian package nginx when missing)");
        let deadline = Instant::now() + Duration::from_secs(300);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .unwrap()
            .connect_lazy()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // one process (`master_process off`): nothing survives it
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ask_via(
    channel: &Channel,
    question: &str,
    tenant: &str,
) -> Result<Vec<AskResponse>, Status> {
    let mut stream = AssistantServiceClient::new(channel.clone())
        .ask(authed(ask(question), &token(tenant)))
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event?);
    }
    Ok(events)
}

/// A server playing `roles` on `db`, with `extra` TOML.
async fn replica(
    db: &std::sync::Arc<quarry_db::testing::TestDb>,
    roles: &[Role],
    model: Option<&ScriptedServer>,
    extra: String,
    search: bool,
    summaries: bool,
) -> TestServer {
    TestServer::start(Options {
        database: Some(db.clone()),
        roles: Some(Roles::of(roles.iter().copied())),
        model_base_url: model.map(ScriptedServer::base_url),
        rate_limit: Some((RATE, BURST)),
        extra_toml: format!("[budgets]\ntokens_per_day = {DAILY_TOKENS}\n{extra}"),
        search,
        summaries,
        ..Options::default()
    })
    .await
}

/// Sessions holding the index sync's leader lock of collection `artworks`
/// (`quarry_search_sync`'s two-key advisory lock `quarry.search.leader`).
async fn sync_leaders(server: &TestServer) -> i64 {
    let client = server.db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND objsubid = 2 AND classid = hashtext('quarry.search.leader')::oid \
             AND objid = hashtext('artworks')::oid",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn summary_builds(server: &TestServer) -> i64 {
    let client = server.db.pool().get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM quarry.summary_builds", &[])
        .await
        .unwrap()
        .get(0)
}

async fn charged_tokens(server: &TestServer, tenant: &str) -> i64 {
    let client = server.db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint \
             FROM quarry.usage_daily WHERE tenant = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn two_assistant_replicas_behind_nginx_behave_as_one_service() {
    let model = ScriptedServer::start_responder(|_| {
        ScriptedTurn::text("Answered.").with_usage(ASK_TOKENS.0, ASK_TOKENS.1)
    })
    .await;
    let db = loaded_database().await;
    // the tool roles; the roles that elect a leader twice
    let sql = replica(&db, &[Role::Sql], None, String::new(), false, false).await;
    let search = replica(&db, &[Role::Search], None, String::new(), true, false).await;
    let (summary_a, summary_b) = tokio::join!(
        replica(&db, &[Role::Summary], None, String::new(), false, true),
        replica(&db, &[Role::Summary], None, String::new(), false, true),
    );
    let (sync_a, sync_b) = tokio::join!(
        replica(&db, &[Role::Sync], None, String::new(), true, false),
        replica(&db, &[Role::Sync], None, String::new(), true, false),
    );
    // two assistant replicas, told apart by the model name they report
    let tools = format!(
        "[server]\nsql_url = \"{}\"\nsearch_url = \"{}\"\nsummary_url = \"{}\"\n",
        sql.url(),
        search.url(),
        summary_a.url()
    );
    let assistant_a = replica(
        &db,
        &[Role::Assistant],
        Some(&model),
        format!("{tools}[model]\nmodel = \"replica-a\"\n"),
        false,
        false,
    )
    .await;
    let assistant_b = replica(
        &db,
        &[Role::Assistant],
        Some(&model),
        format!("{tools}[model]\nmodel = \"replica-b\"\n"),
        false,
        false,
    )
    .await;
    let nginx = Nginx::start(&[assistant_a.addr.to_string(), assistant_b.addr.to_string()]).await;
    let balancer = nginx.channel();

    // Asks succeed through the balancer, and both replicas serve some
    // (one tenant each, so the rate limit does not refuse them)
    let asks = (0..8).map(|i| {
        let balancer = balancer.clone();
        async move {
            ask_via(
                &balancer,
                "How many artworks are there?",
                &format!("ask-{i}"),
            )
            .await
        }
    });
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for events in futures::future::join_all(asks).await {
        let events = events.unwrap();
        assert_eq!(final_answer(&events).status, AnswerStatus::Answered as i32);
        let model = usage_of(&events).calls[0].model.clone();
        *served.entry(model).or_default() += 1;
    }
    assert_eq!(served.len(), 2, "both replicas serve Asks: {served:?}");

    // the index sync runs once: one of the two sync replicas leads
    let deadline = Instant::now() + Duration::from_secs(60);
    while sync_leaders(&sync_a).await == 0 {
        assert!(Instant::now() < deadline, "no index sync leads");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        sync_leaders(&sync_a).await,
        1,
        "exactly one sync replica leads"
    );
    // the summary build runs once: both replicas built at start-up or skipped
    quarry_tests::wait_until_summaries_built(&summary_a).await;
    quarry_tests::wait_until_summaries_built(&summary_b).await;
    assert_eq!(
        summary_builds(&summary_a).await,
        1,
        "one start-up build for the fleet"
    );

    // the request rate holds across both replicas: offered far above the
    // quota for a few seconds, the fleet admits about RATE per second
    // (per-process limits would admit about twice as many)
    let usage_token = token_with_scopes("rate", &["usage:read"]);
    let started = Instant::now();
    let window = Duration::from_secs(5);
    let callers = (0..4).map(|_| {
        let client = UsageServiceClient::new(balancer.clone());
        let usage_token = usage_token.clone();
        async move {
            let (mut admitted, mut refused) = (0u32, 0u32);
            while started.elapsed() < window {
                match client
                    .clone()
                    .get_usage(authed(GetUsageRequest { days: 1 }, &usage_token))
                    .await
                {
                    Ok(_) => admitted += 1,
                    Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
                    Err(status) => panic!("{status:?}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (admitted, refused)
        }
    });
    let counts = futures::future::join_all(callers).await;
    let elapsed = started.elapsed().as_secs_f64();
    let admitted: u32 = counts.iter().map(|c| c.0).sum();
    let refused: u32 = counts.iter().map(|c| c.1).sum();
    let expected = f64::from(RATE) * elapsed + f64::from(BURST);
    let error = (f64::from(admitted) - expected).abs() / expected;
    eprintln!(
        "rate limit across 2 replicas: admitted {admitted}, refused {refused} in {elapsed:.2} s; \
         quota {RATE}/s burst {BURST} → {expected:.1} expected, error {:.1} %",
        error * 100.0
    );
    assert!(refused > admitted, "the load was above the quota");
    assert!(error <= 0.10, "admitted {admitted}, expected {expected:.1}");

    // the token budget holds across both replicas: Asks of one tenant, four
    // at a time through the balancer, paced under the rate limit, until the
    // budget refuses them
    let mut answered = 0;
    let mut stopped = 0;
    for _ in 0..8 {
        let round = (0..4).map(|_| ask_via(&balancer, "How many artworks are there?", "budget"));
        for result in futures::future::join_all(round).await {
            match result {
                Ok(events) if final_answer(&events).status == AnswerStatus::Answered as i32 => {
                    answered += 1
                }
                Ok(_) => stopped += 1,
                Err(status)
                    if status.code() == Code::ResourceExhausted
                        && status.message().contains("budget") =>
                {
                    stopped += 1
                }
                Err(status) => panic!("{status:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let spent = charged_tokens(&sql, "budget").await;
    eprintln!(
        "token budget across 2 replicas: {answered} Asks answered, {stopped} stopped; \
         {spent} tokens charged of a {DAILY_TOKENS} budget"
    );
    assert!(stopped > 0, "the budget stopped some Asks");
    assert!(spent >= DAILY_TOKENS, "the budget was spent: {spent}");
    assert!(
        spent as f64 <= DAILY_TOKENS as f64 * 1.10,
        "{spent} tokens charged exceed the budget of {DAILY_TOKENS} by more than 10 %"
    );

    drop(nginx);
    for server in [
        assistant_a,
        assistant_b,
        sql,
        search,
        summary_a,
        summary_b,
        sync_a,
        sync_b,
    ] {
        server.stop().await;
    }
}
