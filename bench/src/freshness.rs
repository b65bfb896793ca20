//! `quarry bench freshness`: commit → searchable latency.
//!
//! A source table of its own, `quarry_bench.fresh` (recreated each run,
//! seeded with [`FreshnessOptions::seed_rows`] rows), and a collection over
//! it, `bench_fresh` (BM25 only: no embedder). In this process:
//! [`Syncer::run`] follows the source (triggers → outbox → sidecar) and
//! [`SearchTool::follow`] follows the sidecar into the tantivy index, as in
//! `quarry serve`. A writer commits single-row changes at a steady rate,
//! alternating an `INSERT` of a new row and an `UPDATE` of a seeded row's
//! title, each carrying a word no other row has; a poller searches (bm25,
//! k = 1) every pending word every [`POLL_INTERVAL`] until it is found.
//!
//! Latency = first search that finds the word − the moment the autocommit
//! statement returned (the commit acknowledged), so it includes everything
//! a client would see: trigger, outbox, `NOTIFY`, the sync's transaction,
//! the follower's catch-up and reader reload, with at most
//! [`POLL_INTERVAL`] plus one search of polling granularity.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use quarry_search::collection::{Collection, CollectionConfig};
use quarry_search::{Mode, SearchConfig, SearchRequest, SearchTool};
use quarry_search_sync::{Freshness, SyncConfig, Syncer};
use tokio_util::sync::CancellationToken;

use super::{Latencies, LatencySummary, progress, round3};

/// Pause between polling rounds.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Collection name of the benchmark.
pub const COLLECTION: &str = "bench_fresh";

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct FreshnessOptions {
    /// The database.
    pub database_url: String,
    /// Where the benchmark's tantivy index is kept (rebuilt each run).
    pub index_dir: PathBuf,
    /// Changes committed.
    pub changes: usize,
    /// Changes per second.
    pub rate: f64,
    /// Rows in the table before the changes start.
    pub seed_rows: i64,
    /// A change not searchable after this long counts as timed out.
    pub timeout: Duration,
    /// Sync settings (poll interval, batches).
    pub sync: SyncConfig,
    /// Progress messages on stderr.
    pub progress: bool,
}

/// The results of a run.
#[derive(Debug, Clone)]
pub struct FreshnessReport {
    /// Changes committed.
    pub changes: usize,
    /// Changes per second asked for.
    pub rate: f64,
    /// Commit → found by a bm25 search, for the changes found.
    pub commit_to_searchable: LatencySummary,
    /// Changes never found within the timeout.
    pub timed_out: usize,
    /// The sync's own part: statement → sidecar commit (server clock).
    pub sidecar: Freshness,
}

fn collection_config() -> anyhow::Result<CollectionConfig> {
    Ok(serde_json::from_value(serde_json::json!({
        "name": COLLECTION,
        "source": "quarry_bench.fresh",
        "key": "id",
        "text": [{ "name": "title" }, { "name": "body" }],
        "filters": [{ "name": "year", "type": "integer" }],
    }))?)
}

/// Runs the benchmark.
///
/// # Errors
/// Database, sync and index errors; the backfill not finishing in time.
pub async fn run_freshness_bench(options: &FreshnessOptions) -> anyhow::Result<FreshnessReport> {
    let pool = quarry_db::pool(&options.database_url, 6, Duration::from_secs(60))?;
    let config = collection_config()?;
    let collection = Arc::new(Collection::from_config(&config, "bench")?);
    {
        let client = pool.get().await?;
        client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS quarry_bench;
                 DROP TABLE IF EXISTS quarry_bench.fresh;
                 CREATE TABLE quarry_bench.fresh (id bigint PRIMARY KEY, title text, body text, year int)",
            )
            .await?;
        client
            .execute(
                "INSERT INTO quarry_bench.fresh \
                 SELECT i, 'seed title ' || i, 'seed body text of row ' || i, 1900 + i % 125 \
                 FROM generate_series(1, $1::bigint) AS i",
                &[&options.seed_rows],
            )
            .await?;
    }
    let dir = options.index_dir.join(COLLECTION);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let syncer = Syncer::new(
        pool.clone(),
        options.database_url.clone(),
        Arc::clone(&collection),
        None,
        options.sync.clone(),
    );
    syncer.install().await.context("sync install")?;
    let tool = Arc::new(
        SearchTool::open(
            pool.clone(),
            options.database_url.clone(),
            SearchConfig {
                index_dir: options.index_dir.clone(),
                collections: vec![config],
                ..SearchConfig::default()
            },
            None,
        )
        .await
        .context("opening the search tool")?,
    );
    let stop = CancellationToken::new();
    let sync_task = {
        let syncer = syncer.clone();
        let stop = stop.clone();
        tokio::spawn(async move { syncer.run(stop.cancelled_owned()).await })
    };
    let follower = tool.spawn_follower(stop.clone().cancelled_owned());
    let result = measure(options, &syncer, &tool).await;
    stop.cancel();
    let _ = follower.await;
    match sync_task.await {
        Ok(Err(e)) if result.is_ok() => return Err(anyhow::anyhow!("sync: {e}")),
        _ => {}
    }
    result
}

async fn measure(
    options: &FreshnessOptions,
    syncer: &Syncer,
    tool: &SearchTool,
) -> anyhow::Result<FreshnessReport> {
    progress(options.progress, "waiting for the backfill and the index");
    let started = Instant::now();
    let seed = u64::try_from(options.seed_rows).unwrap_or(0);
    loop {
        let status = syncer.status().await?;
        let documents = tool
            .collections(&crate::local_caller("quarry bench freshness"))
            .await?
            .first()
            .map_or(0, |c| c.documents);
        if status.backfill_done && documents >= seed {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!(
                "backfill not searchable after 300 s ({documents} of {seed} documents indexed)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress(
        options.progress,
        format!(
            "seeded and indexed in {:.1}s; committing {} changes at {}/s",
            started.elapsed().as_secs_f64(),
            options.changes,
            options.rate
        ),
    );

    let (writer, connection) =
        tokio_postgres::connect(&options.database_url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let insert = writer
        .prepare("INSERT INTO quarry_bench.fresh (id, title, body, year) VALUES ($1, $2, 'fresh body', 2000)")
        .await?;
    let update = writer
        .prepare("UPDATE quarry_bench.fresh SET title = $2 WHERE id = $1")
        .await?;
    // A run tag keeps words unique across runs.
    let run = std::process::id();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let changes = options.changes;
    let seed_rows = options.seed_rows.max(1);
    let period = Duration::from_secs_f64(1.0 / options.rate.max(0.001));
    let writer_task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for i in 0..changes {
            ticks.tick().await;
            let word = format!("fresh{run}n{i}");
            let n = i64::try_from(i).unwrap_or(i64::MAX);
            if i % 2 == 0 {
                writer
                    .execute(&insert, &[&(seed_rows + 1 + n), &format!("new {word}")])
                    .await?;
            } else {
                writer
                    .execute(&update, &[&(1 + n % seed_rows), &format!("updated {word}")])
                    .await?;
            }
            if sender.send((word, Instant::now())).is_err() {
                break;
            }
        }
        Ok::<_, tokio_postgres::Error>(())
    });

    let mut latencies = Latencies::new()?;
    let mut timed_out = 0;
    let mut pending: Vec<(String, Instant)> = Vec::new();
    let mut open = true;
    while open || !pending.is_empty() {
        loop {
            match receiver.try_recv() {
                Ok(change) => pending.push(change),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let mut still = Vec::with_capacity(pending.len());
        for (word, committed) in pending.drain(..) {
            let response = tool
                .search(
                    &crate::local_caller("quarry bench freshness"),
                    SearchRequest {
                        collection: COLLECTION.to_owned(),
                        query: word.clone(),
                        filter: None,
                        mode: Mode::Bm25,
                        k: 1,
                        fields: vec!["year".into()],
                    },
                )
                .await?;
            if !response.hits.is_empty() {
                latencies.record(committed.elapsed());
            } else if committed.elapsed() > options.timeout {
                timed_out += 1;
            } else {
                still.push((word, committed));
            }
        }
        pending = still;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    writer_task.await?.context("committing a change")?;
    let _ = connection.await;
    Ok(FreshnessReport {
        changes,
        rate: options.rate,
        commit_to_searchable: latencies.summary(),
        timed_out,
        sidecar: syncer.freshness(),
    })
}

impl FreshnessReport {
    /// A plain-text summary.
    pub fn table(&self) -> String {
        let l = &self.commit_to_searchable;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "{} single-row changes at {}/s (half INSERT, half UPDATE), bm25-searchable: {} (timed out: {})\n\
             commit → searchable: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms\n\
             of which statement → sidecar (sync, server clock, {} changes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
            self.changes,
            self.rate,
            l.count,
            self.timed_out,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms,
            l.mean_ms,
            self.sidecar.count,
            ms(self.sidecar.p50),
            ms(self.sidecar.p99),
            ms(self.sidecar.max),
        )
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| round3(d.as_secs_f64() * 1000.0);
        serde_json::json!({
            "changes": self.changes,
            "rate_per_second": self.rate,
            "timed_out": self.timed_out,
            "commit_to_searchable": self.commit_to_searchable.to_json(),
            "statement_to_sidecar": {
                "count": self.sidecar.count,
                "p50_ms": ms(self.sidecar.p50),
                "p90_ms": ms(self.sidecar.p90),
                "p99_ms": ms(self.sidecar.p99),
                "max_ms": ms(self.sidecar.max),
            },
        })
    }
}
