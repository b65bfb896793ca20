//! `quarry`: serve, ask, ingest, token. Parses arguments and configuration,
//! sets up logging, and calls the library.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use quarry::{Config, ask, ingest};
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
        Command::Ingest {
            dataset: Dataset::Tate { from, schema },
        } => {
            let config = load(cli.config.as_deref())?;
            let pg: tokio_postgres::Config = config.database.url.parse().context("database.url")?;
            let (mut client, connection) = pg
                .connect(tokio_postgres::NoTls)
                .await
                .context("connecting to the database")?;
            let connection = tokio::spawn(connection);
            let report = ingest::ingest_tate(&mut client, &from, &schema, true).await?;
            println!("{report}");
            drop(client);
            let _ = connection.await;
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
    }
}
