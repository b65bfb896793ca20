//! `quarry`: serve, ask, ingest, token. Parses arguments and configuration,
//! sets up logging, and calls the library.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use quarry::{Config, ask, bench, eval, ingest};
use quarry_proto::v1::{AnswerStatus, AskMode, AskRequest};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "quarry",
    version,
    about = "Answer questions over relational data, safely"
)]
struct Cli {
    /// Configuration file (TOML); `QUARRY__SECTION__KEY` variables override it.
    #[arg(long, short, global = true, env = "QUARRY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every role (Assistant, SQL tool, health, reflection) until SIGTERM/SIGINT.
    Serve {
        /// Overrides `server.listen`, e.g. 127.0.0.1:50051.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Ask a question and print the streamed answer.
    Ask {
        /// The question.
        question: String,
        /// Server URL.
        #[arg(long, default_value = "http://127.0.0.1:50051", env = "QUARRY_SERVER")]
        server: String,
        /// Bearer token (see `quarry token`).
        #[arg(long, env = "QUARRY_TOKEN", hide_env_values = true)]
        token: String,
        /// Continue this conversation.
        #[arg(long)]
        conversation: Option<String>,
        /// How the orchestrator chooses tools.
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
        /// Rows of each tool result to show.
        #[arg(long, default_value_t = 10)]
        preview_rows: u32,
    },
    /// Search a collection over gRPC and print the hits.
    Search {
        /// Query text.
        query: String,
        /// Collection name.
        #[arg(long, default_value = "artworks")]
        collection: String,
        /// Filter as JSON, e.g. '{"range": {"field": "acquisition_year", "gte": 1900}}'
        /// (operators eq, in, range with gte/gt/lte/lt, prefix, and, or, not).
        #[arg(long)]
        filter: Option<String>,
        /// Retrievers.
        #[arg(long, value_enum, default_value_t = EvalMode::Hybrid)]
        mode: EvalMode,
        /// Hits wanted.
        #[arg(long, default_value_t = 10)]
        k: u32,
        /// Fields to return (repeat); default every stored field.
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Server URL.
        #[arg(long, default_value = "http://127.0.0.1:50051", env = "QUARRY_SERVER")]
        server: String,
        /// Bearer token (see `quarry token`).
        #[arg(long, env = "QUARRY_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// The search index: sync it by hand, show its state.
    Index {
        #[command(subcommand)]
        action: IndexAction,
    },
    /// Stored conversations of the caller: list, show, delete (continue one
    /// with `quarry ask --conversation <id>`).
    Conversations {
        #[command(subcommand)]
        action: ConversationsAction,
    },
    /// Trend summaries: build them by hand; show, search and list them from a server.
    Summaries {
        #[command(subcommand)]
        action: SummariesAction,
    },
    /// Load a data set into the database.
    Ingest {
        #[command(subcommand)]
        dataset: Dataset,
    },
    /// Mint a development JWT (HS256, secret from the auth config).
    Token {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subject: String,
        /// Role; repeat for several.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Scope; repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Create or upgrade Quarry's own `quarry` schema; with `sql.exec.role`
    /// set, also create that read-only role with SELECT on `sql.schemas`.
    Migrate,
    /// The stored schema catalog.
    Catalog {
        #[command(subcommand)]
        action: CatalogAction,
    },
    /// Golden question/SQL pairs.
    Golden {
        #[command(subcommand)]
        action: GoldenAction,
    },
    /// Explain a SQL query: plain English, planner estimates, inefficiency hints.
    Explain {
        /// The SQL.
        sql: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Evaluate a tool against a benchmark.
    Eval {
        #[command(subcommand)]
        what: EvalWhat,
    },
    /// Measure speed: search latency, indexing and embedding throughput,
    /// freshness.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
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
        /// Modes to measure.
        #[arg(long, value_delimiter = ',', default_values = ["bm25", "vector", "hybrid"])]
        modes: Vec<EvalMode>,
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
        #[arg(long, default_value = bench::ask::DEFAULT_QUESTION)]
        question: String,
        /// The SQL the scripted model runs through `query_database`.
        #[arg(long, default_value = bench::ask::DEFAULT_SQL)]
        sql: String,
        /// Idle calibration calls of each internal RPC (DescribeSchema, ExecuteSql).
        #[arg(long, default_value_t = 200)]
        probes: usize,
        /// Overrides `database.pool_size` (connections per tool pool).
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
}

#[derive(Subcommand)]
enum ConversationsAction {
    /// The caller's conversations, most recently active first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        remote: Remote,
    },
    /// One conversation, turn by turn (question, tool calls and SQL, answer).
    Show {
        /// Conversation id (from `quarry ask` or `list`).
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a conversation and its turns.
    Delete {
        /// Conversation id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Where `quarry summaries show|search|status` reach the server.
#[derive(clap::Args)]
struct Remote {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "QUARRY_SERVER")]
    server: String,
    /// Bearer token (see `quarry token`).
    #[arg(long, env = "QUARRY_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand)]
enum SummariesAction {
    /// Build now, in this process (progress bar per kind): compute every
    /// entity's figures, skip those whose data version is unchanged, rewrite
    /// and re-embed the others.
    Build {
        /// Only this kind (repeat for several).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Only these entity keys (repeat; needs exactly one --kind).
        #[arg(long = "entity")]
        entity_keys: Vec<String>,
        /// Recompute unchanged entities too.
        #[arg(long)]
        force: bool,
    },
    /// Print the summary of an entity (key or name; fuzzy), or a kind's summaries.
    Show {
        /// Entity key or name, e.g. "turner", "1950s"; omit to list --kind.
        entity: Option<String>,
        /// Kind, e.g. artist, movement, decade, collection.
        #[arg(long)]
        kind: Option<String>,
        /// Summaries listed for a kind.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Print the facts JSON too.
        #[arg(long)]
        facts: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Summaries closest in meaning to a query.
    Search {
        /// Query text.
        query: String,
        /// Only this kind (repeat for several).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Summaries wanted.
        #[arg(long, default_value_t = 5)]
        k: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Summaries per kind, failures, freshness and the latest build.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum IndexAction {
    /// Install triggers, backfill (resumable, with a progress bar), apply
    /// pending changes, embed pending documents, update the tantivy index.
    Sync {
        /// Only this collection.
        #[arg(long)]
        collection: Option<String>,
        /// Skip embedding (BM25 works at once; `serve` embeds later).
        #[arg(long)]
        no_embed: bool,
    },
    /// Drop a collection's sidecar (documents, vectors, sync state); the next
    /// sync starts over with the embedder configured then.
    Reset {
        /// The collection.
        collection: String,
    },
    /// Documents, embeddings, backfill checkpoint and change backlog per collection.
    Status {
        /// Only this collection.
        #[arg(long)]
        collection: Option<String>,
    },
}

#[derive(Subcommand)]
enum EvalWhat {
    /// Text-to-SQL on a Spider-format folder: schema linking, validator false
    /// rejects on gold SQL, and gold SQL through the pipeline vs. run directly.
    Sql {
        /// Folder with tables.json, dev.json and optionally database/<db>/<db>.sqlite.
        #[arg(long)]
        dataset: PathBuf,
        /// SQL dialect of the gold queries.
        #[arg(long, value_enum, default_value_t = eval::GoldDialect::Sqlite)]
        gold_dialect: eval::GoldDialect,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Database to load into; default `database.url` from the configuration.
        #[arg(long)]
        database_url: Option<String>,
        /// Evaluate only the first N questions.
        #[arg(long)]
        limit: Option<usize>,
        /// Also rank schema elements by embedding similarity (local MiniLM).
        #[arg(long)]
        embeddings: bool,
    },
    /// Retrieval on a BEIR-format folder (corpus.jsonl, queries*.jsonl,
    /// qrels*.tsv): nDCG@10 and recall@100 per mode, through the real
    /// search stack (PostgreSQL sidecar + pgvector, tantivy).
    Search {
        /// BEIR folder.
        #[arg(long)]
        dataset: PathBuf,
        /// Split whose queries and judgements are used.
        #[arg(long, default_value = "test")]
        split: String,
        /// Modes to measure.
        #[arg(long, value_delimiter = ',', default_values = ["bm25", "vector", "hybrid"])]
        modes: Vec<EvalMode>,
        /// Print one JSON object keyed by mode instead of a table.
        #[arg(long)]
        json: bool,
        /// Database to load into; default `database.url` from the configuration.
        #[arg(long)]
        database_url: Option<String>,
        /// Where the tantivy index is kept.
        #[arg(long, default_value = ".dev/eval-index")]
        index_dir: PathBuf,
        /// Evaluate only the first N judged queries.
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// A search mode on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EvalMode {
    Bm25,
    Vector,
    Hybrid,
}

impl From<EvalMode> for quarry_search::Mode {
    fn from(mode: EvalMode) -> Self {
        match mode {
            EvalMode::Bm25 => quarry_search::Mode::Bm25,
            EvalMode::Vector => quarry_search::Mode::Vector,
            EvalMode::Hybrid => quarry_search::Mode::Hybrid,
        }
    }
}

#[derive(Subcommand)]
enum CatalogAction {
    /// Re-read the source schemas, embed their descriptions (with
    /// `[embedding]` configured) and store the catalog now.
    Refresh,
}

#[derive(Subcommand)]
enum GoldenAction {
    /// Store a pair on the server, after its SQL validates and returns rows.
    Add {
        #[arg(long)]
        question: String,
        #[arg(long)]
        sql: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Where the server is and who is calling.
#[derive(clap::Args)]
struct ClientArgs {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "QUARRY_SERVER")]
    server: String,
    /// Bearer token (see `quarry token`).
    #[arg(long, env = "QUARRY_TOKEN", hide_env_values = true)]
    token: String,
}

impl ClientArgs {
    async fn sql_client(
        &self,
    ) -> anyhow::Result<
        quarry_proto::v1::sql_service_client::SqlServiceClient<tonic::transport::Channel>,
    > {
        quarry_proto::v1::sql_service_client::SqlServiceClient::connect(self.server.clone())
            .await
            .with_context(|| format!("cannot connect to {}", self.server))
    }

    fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        quarry::bearer_request(message, &self.token)
    }
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", status.code(), status.message())
}

#[derive(Subcommand)]
enum Dataset {
    /// The Tate collection (artworks.jsonl.gz, artists.jsonl.gz).
    Tate {
        /// Folder holding the two files, e.g. ../shared/data/tate.
        #[arg(long = "from")]
        from: PathBuf,
        /// Target schema.
        #[arg(long, default_value = ingest::DEFAULT_SCHEMA)]
        schema: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Auto,
    Agentic,
    Router,
}

/// One connection to `url` for a command, with its connection task.
async fn connect(
    url: &str,
) -> anyhow::Result<(
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
)> {
    let pg: tokio_postgres::Config = url.parse().context("database.url")?;
    let (client, connection) = pg
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the database")?;
    Ok((client, tokio::spawn(connection)))
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("configuration: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { listen } => {
            let config = load(cli.config.as_deref())?;
            let addr = listen.unwrap_or(config.server.listen);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            quarry::serve(listener, config, quarry::shutdown_signal()).await
        }
        Command::Ask {
            question,
            server,
            token,
            conversation,
            mode,
            preview_rows,
        } => {
            let request = AskRequest {
                question,
                conversation_id: conversation.unwrap_or_default(),
                mode: match mode {
                    Mode::Auto => AskMode::Unspecified,
                    Mode::Agentic => AskMode::Agentic,
                    Mode::Router => AskMode::Router,
                } as i32,
                preview_rows,
            };
            let mut out = std::io::stdout();
            let status = ask::ask(&server, &token, request, &mut out).await?;
            if status == AnswerStatus::Failed {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Search {
            query,
            collection,
            filter,
            mode,
            k,
            fields,
            server,
            token,
        } => {
            let filter = match filter {
                None => None,
                Some(json) => {
                    // The same JSON filter syntax the model uses.
                    let arguments = serde_json::json!({
                        "collection": collection,
                        "query": query,
                        "filter": serde_json::from_str::<serde_json::Value>(&json)
                            .map_err(|e| anyhow::anyhow!("--filter is not JSON: {e}"))?,
                    });
                    quarry_orchestrator::search::request_from_arguments(&arguments.to_string())
                        .map_err(|e| anyhow::anyhow!("--filter: {e}"))?
                        .filter
                }
            };
            let request = quarry_proto::v1::SearchRequest {
                collection,
                query,
                filter,
                mode: match mode {
                    EvalMode::Bm25 => quarry_proto::v1::SearchMode::Bm25,
                    EvalMode::Vector => quarry_proto::v1::SearchMode::Vector,
                    EvalMode::Hybrid => quarry_proto::v1::SearchMode::Hybrid,
                } as i32,
                k,
                fields,
            };
            ask::search(&server, &token, request, &mut std::io::stdout()).await
        }
        Command::Index { action } => {
            let config = load(cli.config.as_deref())?;
            let statuses = match action {
                IndexAction::Sync {
                    collection,
                    no_embed,
                } => {
                    let options = quarry::index::SyncOptions {
                        collection,
                        no_embed,
                        progress: true,
                    };
                    quarry::index::sync(&config, &options).await?
                }
                IndexAction::Reset { collection } => {
                    quarry::index::reset(&config, &collection).await?;
                    println!("{collection}: reset; the next sync (or `quarry serve`) rebuilds it");
                    return Ok(());
                }
                IndexAction::Status { collection } => {
                    quarry::index::status(&config, collection.as_deref()).await?
                }
            };
            print!("{}", quarry::index::render(&statuses));
            Ok(())
        }
        Command::Conversations { action } => {
            let mut out = std::io::stdout();
            match action {
                ConversationsAction::List { limit, remote } => {
                    quarry::conversations::list(&remote.server, &remote.token, limit, &mut out)
                        .await
                }
                ConversationsAction::Show { id, remote } => {
                    quarry::conversations::show(&remote.server, &remote.token, &id, &mut out).await
                }
                ConversationsAction::Delete { id, remote } => {
                    quarry::conversations::delete(&remote.server, &remote.token, &id, &mut out)
                        .await
                }
            }
        }
        Command::Summaries { action } => {
            let mut out = std::io::stdout();
            match action {
                SummariesAction::Build {
                    kinds,
                    entity_keys,
                    force,
                } => {
                    let config = load(cli.config.as_deref())?;
                    let report =
                        quarry::summaries::build(&config, kinds, entity_keys, force, true).await?;
                    print!("{}", quarry::summaries::render_report(&report));
                    if report.failed > 0 {
                        anyhow::bail!("{} entities failed to build", report.failed);
                    }
                    Ok(())
                }
                SummariesAction::Show {
                    entity,
                    kind,
                    limit,
                    facts,
                    remote,
                } => {
                    quarry::summaries::show(
                        &remote.server,
                        &remote.token,
                        kind,
                        entity,
                        limit,
                        facts,
                        &mut out,
                    )
                    .await
                }
                SummariesAction::Search {
                    query,
                    kinds,
                    k,
                    remote,
                } => {
                    quarry::summaries::search(
                        &remote.server,
                        &remote.token,
                        query,
                        kinds,
                        k,
                        &mut out,
                    )
                    .await
                }
                SummariesAction::Status { remote } => {
                    quarry::summaries::status(&remote.server, &remote.token, &mut out).await
                }
            }
        }
        Command::Ingest {
            dataset: Dataset::Tate { from, schema },
        } => {
            let config = load(cli.config.as_deref())?;
            let (mut client, connection) = connect(&config.database.url).await?;
            let report = ingest::ingest_tate(&mut client, &from, &schema, true).await?;
            println!("{report}");
            drop(client);
            let _ = connection.await;
            Ok(())
        }
        Command::Migrate => {
            let config = load(cli.config.as_deref())?;
            let (mut client, connection) = connect(&config.database.url).await?;
            let applied = quarry::migrate::run(&mut client).await?;
            if applied.is_empty() {
                println!("schema quarry is up to date");
            }
            for name in applied {
                println!("applied {name}");
            }
            if let Some(role) = &config.sql.exec.role {
                quarry_sql::role::ensure_read_only_role(&client, role, &config.sql.schemas)
                    .await
                    .with_context(|| format!("creating read-only role {role}"))?;
                println!(
                    "read-only role {role}: SELECT on {}",
                    config.sql.schemas.join(", ")
                );
            }
            drop(client);
            let _ = connection.await;
            Ok(())
        }
        Command::Catalog {
            action: CatalogAction::Refresh,
        } => {
            let config = load(cli.config.as_deref())?;
            let tool = quarry::sql_tool(&config, None).await?;
            let report = tool.refresh_catalog().await?;
            println!(
                "catalog {}: {} tables, {} columns, embeddings {}, stored {} in {:.1}s",
                report.hash,
                report.tables,
                report.columns,
                if report.embedded {
                    "yes"
                } else {
                    "no ([embedding] not configured)"
                },
                if report.stored { "yes" } else { "no" },
                report.elapsed.as_secs_f64()
            );
            Ok(())
        }
        Command::Golden {
            action:
                GoldenAction::Add {
                    question,
                    sql,
                    client,
                },
        } => {
            let mut sql_client = client.sql_client().await?;
            let response = sql_client
                .add_golden_pair(
                    client.request(quarry_proto::v1::AddGoldenPairRequest { question, sql })?,
                )
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "stored: the sql returned {} rows; {} golden pairs now",
                response.row_count, response.pairs
            );
            Ok(())
        }
        Command::Explain { sql, client } => {
            let mut sql_client = client.sql_client().await?;
            let response = sql_client
                .explain_sql(client.request(quarry_proto::v1::ExplainSqlRequest { sql })?)
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", response.explanation);
            println!(
                "planner: total cost {:.1}, about {:.0} rows; plan: {}",
                response.total_cost,
                response.estimated_rows,
                response.node_types.join(" → ")
            );
            for hint in response.hints {
                println!("hint [{}]: {}", hint.kind, hint.message);
            }
            Ok(())
        }
        Command::Token {
            tenant,
            subject,
            roles,
            scopes,
            ttl_secs,
        } => {
            let config = load(cli.config.as_deref())?;
            let secret = config.auth.secret().context("auth secret")?;
            let mut claims =
                quarry_auth::Claims::issued_now(tenant, subject, Duration::from_secs(ttl_secs));
            claims.roles = roles;
            claims.scopes = scopes;
            claims.iss = config.auth.issuer.clone();
            claims.aud = config.auth.audience.iter().cloned().collect();
            println!("{}", quarry_auth::mint_hs256(&secret, &claims)?);
            Ok(())
        }
        Command::Eval {
            what:
                EvalWhat::Sql {
                    dataset,
                    gold_dialect,
                    json,
                    database_url,
                    limit,
                    embeddings,
                },
        } => {
            let database_url = match database_url {
                Some(url) => url,
                None => eval::configured_database_url(cli.config.as_deref())?,
            };
            let options = eval::EvalOptions {
                dataset,
                gold_dialect,
                database_url,
                limit,
                embeddings,
            };
            let report = eval::run_sql_eval(&options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Eval {
            what:
                EvalWhat::Search {
                    dataset,
                    split,
                    modes,
                    json,
                    database_url,
                    index_dir,
                    limit,
                },
        } => {
            let database_url = match database_url {
                Some(url) => url,
                None => eval::configured_database_url(cli.config.as_deref())?,
            };
            let modes: Vec<quarry_search::Mode> = modes.into_iter().map(Into::into).collect();
            let embedder = if modes.iter().any(|m| *m != quarry_search::Mode::Bm25) {
                let embedder = tokio::task::spawn_blocking(|| {
                    quarry_llm::embed::embedder_from_config(
                        &quarry_llm::embed::EmbeddingConfig::default(),
                    )
                })
                .await??;
                Some(embedder)
            } else {
                None
            };
            let options = eval::search::SearchEvalOptions {
                dataset,
                split,
                database_url,
                index_dir,
                modes,
                limit,
                embedder,
                search: quarry_search::SearchConfig::default(),
                progress: !json,
            };
            let report = eval::search::run_search_eval(&options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Search {
                    synthetic,
                    collection,
                    queries,
                    warmup,
                    k,
                    modes,
                    embed_seconds,
                    keep_index,
                    index_dir,
                    database_url,
                    json,
                },
        } => {
            let config = bench::BenchConfig::load(cli.config.as_deref())?;
            let database_url = database_url.unwrap_or(config.database.url.clone());
            let search = config.search.clone().unwrap_or_default();
            let (source, embedder) = match (synthetic, collection) {
                (Some(docs), _) => (bench::search::BenchSource::Synthetic { docs }, None),
                (None, Some(name)) => {
                    let found = search.collections.iter().find(|c| c.name == name).cloned();
                    let definition = match found {
                        Some(c) => c,
                        None if name == "artworks" => bench::search::tate_artworks_config()?,
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
                        bench::search::BenchSource::Collection { config: definition },
                        embedder,
                    )
                }
                (None, None) => anyhow::bail!("give --synthetic N or --collection NAME"),
            };
            let options = bench::search::SearchBenchOptions {
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
                modes: modes.into_iter().map(Into::into).collect(),
                progress: true,
            };
            let report = bench::search::run_search_bench(&options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Freshness {
                    changes,
                    rate,
                    seed_rows,
                    timeout_secs,
                    index_dir,
                    database_url,
                    json,
                },
        } => {
            let config = bench::BenchConfig::load(cli.config.as_deref())?;
            let options = bench::freshness::FreshnessOptions {
                database_url: database_url.unwrap_or(config.database.url.clone()),
                index_dir,
                changes,
                rate,
                seed_rows,
                timeout: Duration::from_secs(timeout_secs),
                sync: config.sync.clone(),
                progress: true,
            };
            let report = bench::freshness::run_freshness_bench(&options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Ask {
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
                },
        } => {
            let mut sections = bench::ask::ServerSections::load(cli.config.as_deref())?;
            if let Some(url) = database_url {
                sections.database.url = url;
            }
            if let Some(size) = pool_size {
                sections.database.pool_size = size;
            }
            let options = bench::ask::AskBenchOptions {
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
            let report = bench::ask::run_ask_bench(&options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
    }
}
