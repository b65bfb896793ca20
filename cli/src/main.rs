//! `quarry`: parses the command line, sets up logging and dispatches to
//! one of [`quarry::commands`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use quarry::commands;
use quarry_server::{Config, Telemetry, TracingConfig};

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
    /// Serve the roles asked for (default all: Assistant, SQL, search,
    /// summaries, index sync), with health and reflection, until SIGTERM/SIGINT.
    Serve(commands::serve::Args),
    /// Ask a question and print the streamed answer.
    Ask(commands::ask::Args),
    /// Search a collection over gRPC and print the hits.
    Search(commands::search::Args),
    /// The search index: sync it by hand, show its state.
    Index(commands::index::Args),
    /// Stored conversations of the caller: list, show, delete (continue one
    /// with `quarry ask --conversation <id>`).
    Conversations(commands::conversations::Args),
    /// Trend summaries: build them by hand; show, search and list them from a server.
    Summaries(commands::summaries::Args),
    /// Load a data set into the database.
    Ingest(commands::ingest::Args),
    /// Mint a development JWT (HS256, secret from the auth config).
    Token(commands::token::Args),
    /// Create or upgrade Quarry's own `quarry` schema; with `sql.exec.role`
    /// set, also create that read-only role with SELECT on `sql.schemas`.
    Migrate(commands::migrate::Args),
    /// The stored schema catalog.
    Catalog(commands::catalog::Args),
    /// Golden question/SQL pairs.
    Golden(commands::golden::Args),
    /// Explain a SQL query: plain English, planner estimates, inefficiency hints.
    Explain(commands::explain::Args),
    /// The audit trail of the token's tenant: statements and refusals
    /// (needs the audit:read scope).
    Audit(commands::audit::Args),
    /// The token's tenant's usage per UTC day (requests, Asks, model calls,
    /// tokens, cost, rows, bytes) and its budgets (needs usage:read).
    Usage(commands::usage::Args),
    /// Evaluate a tool against a benchmark.
    #[cfg(feature = "dev-tools")]
    Eval(commands::eval::Args),
    /// Measure speed: search latency, indexing and embedding throughput,
    /// freshness, Ask overhead.
    #[cfg(feature = "dev-tools")]
    Bench(commands::bench::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    // `serve` exports spans as `[tracing]` says; the other commands only
    // log (a configuration that does not load is reported by the command)
    let tracing = if let Command::Serve(_) = &cli.command {
        Config::load(config).map(|c| c.tracing).unwrap_or_default()
    } else {
        TracingConfig::default()
    };
    let telemetry = Telemetry::init(&tracing)?;
    let result = run(cli.command, config).await;
    telemetry.shutdown().await;
    result
}

async fn run(command: Command, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => commands::serve::run(args, config).await,
        Command::Ask(args) => commands::ask::run(args, config).await,
        Command::Search(args) => commands::search::run(args, config).await,
        Command::Index(args) => commands::index::run(args, config).await,
        Command::Conversations(args) => commands::conversations::run(args, config).await,
        Command::Summaries(args) => commands::summaries::run(args, config).await,
        Command::Ingest(args) => commands::ingest::run(args, config).await,
        Command::Token(args) => commands::token::run(args, config).await,
        Command::Migrate(args) => commands::migrate::run(args, config).await,
        Command::Catalog(args) => commands::catalog::run(args, config).await,
        Command::Golden(args) => commands::golden::run(args, config).await,
        Command::Explain(args) => commands::explain::run(args, config).await,
        Command::Audit(args) => commands::audit::run(args, config).await,
        Command::Usage(args) => commands::usage::run(args, config).await,
        #[cfg(feature = "dev-tools")]
        Command::Eval(args) => commands::eval::run(args, config).await,
        #[cfg(feature = "dev-tools")]
        Command::Bench(args) => commands::bench::run(args, config).await,
    }
}
