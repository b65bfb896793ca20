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
//!
//! Beside it, the SQL result cache's invalidation (issue 18 item 2): a
//! [`DataVersions`] listener on the same database, as `quarry serve` runs
//! one per source with `[cache] enabled`; for each change, statement sent
//! → the table's data version bumped (the moment no cached result that
//! read it can be served again), woken by the listener itself, no polling.
//! The notice can arrive before the writer sees its commit acknowledged,
//! so this is timed from the send: an upper bound of commit → invalidated.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use quarry_search::collection::{Collection, CollectionConfig};
use quarry_search::{Mode, SearchConfig, SearchRequest, SearchTool};
use quarry_search_sync::{Freshness, SyncConfig, Syncer};
use quarry_sql::cache::{CacheConfig, DataVersions};
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
    /// Statement sent → the result cache's data version of the table
    /// bumped (an upper bound of commit → invalidated).
    pub sent_to_cache_invalidated: LatencySummary,
    /// Changes whose invalidation was not seen within the timeout.
    pub cache_timed_out: usize,
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
    // the result cache's change-notice listener, as `quarry serve` runs it
    let versions = DataVersions::new(
        &options.database_url,
        &["quarry_bench".to_owned()],
        &CacheConfig {
            enabled: true,
            ..CacheConfig::default()
        },
    );
    let listener = tokio::spawn(Arc::clone(&versions).run());
    let result = if versions
        .wait_until(Duration::from_secs(30), |v| {
            v.is_live() && v.version_of("quarry_bench", "fresh").is_some()
        })
        .await
    {
        measure(options, &syncer, &tool, &versions).await
    } else {
        Err(anyhow::anyhow!(
            "the result cache's listener did not cover quarry_bench.fresh within 30 s \
             (is migration V14 applied? run `quarry migrate`)"
        ))
    };
    listener.abort();
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
    versions: &Arc<DataVersions>,
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
    let versions = Arc::clone(versions);
    let timeout = options.timeout;
    let writer_task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut invalidated = Latencies::new()?;
        let mut invalidation_timed_out = 0usize;
        for i in 0..changes {
            ticks.tick().await;
            let word = format!("fresh{run}n{i}");
            let n = i64::try_from(i).unwrap_or(i64::MAX);
            let before = versions.version_of("quarry_bench", "fresh");
            // the notice can reach the listener before the writer sees its
            // commit acknowledged: timed from the statement's send, an
            // upper bound of commit → invalidated
            let sent = Instant::now();
            if i % 2 == 0 {
                writer
                    .execute(&insert, &[&(seed_rows + 1 + n), &format!("new {word}")])
                    .await?;
            } else {
                writer
                    .execute(&update, &[&(1 + n % seed_rows), &format!("updated {word}")])
                    .await?;
            }
            let committed = Instant::now();
            if sender.send((word, committed)).is_err() {
                break;
            }
            let bumped = versions
                .wait_until(timeout, |v| v.version_of("quarry_bench", "fresh") > before)
                .await;
            if bumped {
                invalidated.record(sent.elapsed());
            } else {
                invalidation_timed_out += 1;
            }
        }
        anyhow::Ok((invalidated.summary(), invalidation_timed_out))
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
    let (sent_to_cache_invalidated, cache_timed_out) =
        writer_task.await?.context("committing a change")?;
    let _ = connection.await;
    Ok(FreshnessReport {
        changes,
        rate: options.rate,
        commit_to_searchable: latencies.summary(),
        timed_out,
        sidecar: syncer.freshness(),
        sent_to_cache_invalidated,
        cache_timed_out,
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
             of which statement → sidecar (sync, server clock, {} changes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
             statement sent → SQL result cache invalidated ({} changes, timed out: {}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
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
            self.sent_to_cache_invalidated.count,
            self.cache_timed_out,
            self.sent_to_cache_invalidated.p50_ms,
            self.sent_to_cache_invalidated.p99_ms,
            self.sent_to_cache_invalidated.max_ms,
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
            "sent_to_cache_invalidated": self.sent_to_cache_invalidated.to_json(),
            "cache_timed_out": self.cache_timed_out,
        })
    }
}
