//! `quarry bench` (feature `dev-tools`): measure speed with `quarry-bench`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::SearchMode;

/// Arguments of `quarry bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Search latency p50/p99 per mode × filter (none, ~10 %, ~1 %), k = 10,
    /// query embedding excluded (reported apart); BM25 indexing docs/s;
    /// embedding docs/s.
    Search {
        /// A synthetic collection of this many documents (generated vectors,
        /// no model), loaded into `quarry_bench` once and reused.
        #[arg(
            long,
            conflicts_with = "collection",
            required_unless_present = "collection"
        )]
        synthetic: Option<u64>,
        /// A configured collection (`[[search.collections]]`); `artworks`
        /// without configuration is Tate's artworks.
        #[arg(long)]
        collection: Option<String>,
        /// Timed queries per mode and filter.
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        /// Untimed warm-up queries per mode and filter.
        #[arg(long, default_value_t = 100)]
        warmup: usize,
        /// Hits per query.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Of the timed vector and hybrid queries, how many are also
        /// answered with exact k-NN over the filtered rows to report
        /// recall@k against that answer (0: none; exact search over 1M
        /// unfiltered rows takes about a second per query).
        #[arg(long, default_value_t = 0)]
        recall_queries: usize,
        /// Modes to measure.
        #[arg(long, value_delimiter = ',', default_values = ["bm25", "vector", "hybrid"])]
        modes: Vec<SearchMode>,
        /// Seconds to spend embedding pending documents of a configured
        /// collection first (its vector/hybrid latency covers what is embedded).
        #[arg(long, default_value_t = 0)]
        embed_seconds: u64,
        /// Keep an up-to-date tantivy index instead of rebuilding it (then no
        /// BM25 indexing figure).
        #[arg(long)]
        keep_index: bool,
        /// Where the benchmark's tantivy indexes are kept.
        #[arg(long, default_value = ".dev/bench-index")]
        index_dir: PathBuf,
        /// Database; default `database.url` from the configuration.
        #[arg(long)]
        database_url: Option<String>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Commit → searchable latency with the sync and the index follower
    /// running in-process, on a table of its own (`quarry_bench.fresh`).
    Freshness {
        /// Single-row changes committed.
        #[arg(long, default_value_t = 300)]
        changes: usize,
        /// Changes per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Rows in the table before the changes.
        #[arg(long, default_value_t = 10_000)]
        seed_rows: i64,
        /// Seconds after which an unseen change counts as timed out.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// Where the benchmark's tantivy index is kept.
        #[arg(long, default_value = ".dev/bench-index")]
        index_dir: PathBuf,
        /// Database; default `database.url` from the configuration.
        #[arg(long)]
        database_url: Option<String>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Orchestrator overhead: N concurrent agentic Ask streams against an
    /// in-process server and a scripted model with a fixed latency;
    /// end-to-end and overhead (end-to-end − model − database time)
    /// p50/p90/p99/max, Asks/s, errors, process memory. Needs the `tate`
    /// schema in the database.
    Ask {
        /// Concurrent Ask streams; several (e.g. 1,8,64) measure one level each.
        #[arg(long, value_delimiter = ',', default_values_t = [64])]
        streams: Vec<usize>,
        /// The scripted model's latency per call, in milliseconds.
        #[arg(long, default_value_t = 50)]
        model_latency_ms: u64,
        /// Measured seconds per level.
        #[arg(long, default_value_t = 30)]
        duration_secs: u64,
        /// Timed Asks per level instead of --duration-secs.
        #[arg(long)]
        requests: Option<u64>,
        /// Untimed seconds of load before each level's measurement.
        #[arg(long, default_value_t = 5)]
        warmup_secs: u64,
        /// HTTP/2 connections the streams share (multiplexed).
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// The question asked.
        #[arg(long, default_value = quarry_bench::ask::DEFAULT_QUESTION)]
        question: String,
        /// The SQL the scripted model runs through `query_database`.
        #[arg(long, default_value = quarry_bench::ask::DEFAULT_SQL)]
        sql: String,
        /// Idle calibration calls of each internal RPC (DescribeSchema, ExecuteSql).
        #[arg(long, default_value_t = 200)]
        probes: usize,
        /// Overrides `database.pool_size` (the server's one shared pool).
        #[arg(long)]
        pool_size: Option<usize>,
        /// Serve `[summary]` too: each Ask then also lists summary kinds.
        #[arg(long)]
        summaries: bool,
        /// Database; default `database.url` from the configuration.
        #[arg(long)]
        database_url: Option<String>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Fairness: a calm tenant's Ask latency alone, then beside a flooding
    /// tenant (slow ExecuteSql and Asks of many tool calls, by default ten
    /// times the rate limit) with the configured fair-share limits in force;
    /// p50/p99 change, errors, the flood's refusals by code, peak memory of
    /// Quarry and PostgreSQL. Needs the `tate` schema in the database.
    Fairness {
        /// The calm tenant's Asks per second (an open loop).
        #[arg(long, default_value_t = 5.0)]
        calm_rate: f64,
        /// The flood's requests per second; default ten times
        /// `auth.rate_limit.requests_per_second`.
        #[arg(long)]
        flood_rate: Option<f64>,
        /// The flood's requests open at once, at most.
        #[arg(long, default_value_t = 256)]
        flood_in_flight: usize,
        /// Tool calls the flood's model asks for in one step.
        #[arg(long, default_value_t = 20)]
        flood_tool_calls: usize,
        /// HTTP/2 connections of the flood.
        #[arg(long, default_value_t = 4)]
        flood_connections: usize,
        /// The flood's slow SQL.
        #[arg(long, default_value = quarry_bench::fairness::FLOOD_SQL)]
        flood_sql: String,
        /// The scripted model's latency per call, in milliseconds.
        #[arg(long, default_value_t = 50)]
        model_latency_ms: u64,
        /// Measured seconds of each phase.
        #[arg(long, default_value_t = 20)]
        duration_secs: u64,
        /// Untimed seconds of calm load before the first phase.
        #[arg(long, default_value_t = 3)]
        warmup_secs: u64,
        /// Seconds of flood before the calm load is timed beside it.
        #[arg(long, default_value_t = 2)]
        ramp_secs: u64,
        /// Ceiling on the Quarry process's peak memory, MiB.
        #[arg(long, default_value_t = 1024)]
        quarry_ceiling_mib: u64,
        /// Ceiling on PostgreSQL's peak memory (private memory of its
        /// processes plus shared memory once), MiB.
        #[arg(long, default_value_t = 1024)]
        postgres_ceiling_mib: u64,
        /// Database; default `database.url` from the configuration.
        #[arg(long)]
        database_url: Option<String>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the benchmark and prints its report (a table, or JSON).
///
/// # Errors
/// Configuration and database errors, a failing benchmark run.
pub async fn run(args: Args, config: Option<&Path>) -> anyhow::Result<()> {
    match args.what {
        What::Search {
            synthetic,
            collection,
            queries,
            warmup,
            k,
            recall_queries,
            modes,
            embed_seconds,
            keep_index,
            index_dir,
            database_url,
            json,
        } => {
            let config = quarry_bench::BenchConfig::load(config)?;
            let database_url = database_url.unwrap_or(config.database.url.clone());
            let search = config.search.clone().unwrap_or_default();
            let (source, embedder) = match (synthetic, collection) {
                (Some(docs), _) => (quarry_bench::search::BenchSource::Synthetic { docs }, None),
                (None, Some(name)) => {
                    let found = search.collections.iter().find(|c| c.name == name).cloned();
                    let definition = match found {
                        Some(c) => c,
                        None if name == "artworks" => quarry_bench::search::tate_artworks_config()?,
                        None => anyhow::bail!(
                            "no collection {name:?} in [search] (only `artworks` has a built-in definition)"
                        ),
                    };
                    // The configured embedder, else the local MiniLM; none if it cannot load.
                    let embedding = config.embedding.clone().unwrap_or_default();
                    let embedder = tokio::task::spawn_blocking(move || {
                        quarry_llm::embed::embedder_from_config(&embedding)
                    })
                    .await?;
                    let embedder = match embedder {
                        Ok(e) => Some(e),
                        Err(e) => {
                            tracing::warn!(error = %e, "no embedder: bm25 only");
                            None
                        }
                    };
                    (
                        quarry_bench::search::BenchSource::Collection { config: definition },
                        embedder,
                    )
                }
                (None, None) => anyhow::bail!("give --synthetic N or --collection NAME"),
            };
            let options = quarry_bench::search::SearchBenchOptions {
                database_url,
                index_dir,
                reindex: !keep_index,
                source,
                search,
                sync: config.sync.clone(),
                embedder,
                embed_for: Duration::from_secs(embed_seconds),
                queries,
                warmup,
                k,
                recall_queries,
                modes: modes.into_iter().map(Into::into).collect(),
                progress: true,
            };
            let report = quarry_bench::search::run_search_bench(&options).await?;
            super::print_report(json, || report.to_json(), || report.table())
        }
        What::Freshness {
            changes,
            rate,
            seed_rows,
            timeout_secs,
            index_dir,
            database_url,
            json,
        } => {
            let config = quarry_bench::BenchConfig::load(config)?;
            let options = quarry_bench::freshness::FreshnessOptions {
                database_url: database_url.unwrap_or(config.database.url.clone()),
                index_dir,
                changes,
                rate,
                seed_rows,
                timeout: Duration::from_secs(timeout_secs),
                sync: config.sync.clone(),
                progress: true,
            };
            let report = quarry_bench::freshness::run_freshness_bench(&options).await?;
            super::print_report(json, || report.to_json(), || report.table())
        }
        What::Ask {
            streams,
            model_latency_ms,
            duration_secs,
            requests,
            warmup_secs,
            connections,
            question,
            sql,
            probes,
            pool_size,
            summaries,
            database_url,
            json,
        } => {
            let mut sections = quarry_bench::ask::ServerSections::load(config)?;
            if let Some(url) = database_url {
                sections.database.url = url;
            }
            if let Some(size) = pool_size {
                sections.database.pool_size = size;
            }
            let options = quarry_bench::ask::AskBenchOptions {
                sections,
                streams,
                connections,
                model_latency: Duration::from_millis(model_latency_ms),
                warmup: Duration::from_secs(warmup_secs),
                duration: Duration::from_secs(duration_secs),
                requests,
                question,
                sql,
                probes,
                summaries,
                progress: true,
            };
            let report = quarry_bench::ask::run_ask_bench(&options).await?;
            super::print_report(json, || report.to_json(), || report.table())
        }
        What::Fairness {
            calm_rate,
            flood_rate,
            flood_in_flight,
            flood_tool_calls,
            flood_connections,
            flood_sql,
            model_latency_ms,
            duration_secs,
            warmup_secs,
            ramp_secs,
            quarry_ceiling_mib,
            postgres_ceiling_mib,
            database_url,
            json,
        } => {
            let mut sections = quarry_bench::ask::ServerSections::load(config)?;
            if let Some(url) = database_url {
                sections.database.url = url;
            }
            let rate_limit = quarry_bench::fairness::rate_limit(config)?;
            let options = quarry_bench::fairness::FairnessOptions {
                sections,
                rate_limit,
                model_latency: Duration::from_millis(model_latency_ms),
                calm_rate,
                flood_rate: flood_rate
                    .unwrap_or(10.0 * f64::from(rate_limit.requests_per_second.get())),
                flood_in_flight,
                flood_tool_calls,
                flood_connections,
                flood_sql,
                warmup: Duration::from_secs(warmup_secs),
                ramp: Duration::from_secs(ramp_secs),
                duration: Duration::from_secs(duration_secs),
                quarry_ceiling_kib: quarry_ceiling_mib * 1024,
                postgres_ceiling_kib: postgres_ceiling_mib * 1024,
                progress: true,
            };
            let report = quarry_bench::fairness::run_fairness_bench(&options).await?;
            super::print_report(json, || report.to_json(), || report.table())
        }
    }
}
