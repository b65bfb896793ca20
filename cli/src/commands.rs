//! One module per `quarry` command, each with its clap arguments (`Args`)
//! and `run`; and what several commands share: the configuration file,
//! where the server is and who is calling, a database connection.

pub mod ask;
pub mod audit;
#[cfg(feature = "dev-tools")]
pub mod bench;
pub mod catalog;
pub mod conversations;
#[cfg(feature = "dev-tools")]
pub mod eval;
pub mod explain;
pub mod golden;
pub mod index;
pub mod ingest;
pub mod migrate;
pub mod search;
pub mod serve;
pub mod summaries;
pub mod token;
pub mod usage;

use std::path::Path;

use anyhow::Context as _;
use clap::ValueEnum;
use quarry_server::Config;

/// The configuration file (or none) with `QUARRY__SECTION__KEY` overrides.
///
/// # Errors
/// The file cannot be read or a value is invalid.
pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("configuration: {e}"))
}

/// Where the server is and who is calling.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "QUARRY_SERVER")]
    pub server: String,
    /// Bearer token (see `quarry token`).
    #[arg(long, env = "QUARRY_TOKEN", hide_env_values = true)]
    pub token: String,
}

impl Remote {
    /// A client of the SQL service at [`Remote::server`].
    ///
    /// # Errors
    /// The server cannot be reached.
    pub async fn sql_client(
        &self,
    ) -> anyhow::Result<
        quarry_proto::v1::sql_service_client::SqlServiceClient<tonic::transport::Channel>,
    > {
        quarry_proto::v1::sql_service_client::SqlServiceClient::connect(self.server.clone())
            .await
            .with_context(|| format!("cannot connect to {}", self.server))
    }

    /// `message` with this caller's bearer token.
    ///
    /// # Errors
    /// The token holds characters a header may not.
    pub fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        quarry_server::client::bearer_request(message, &self.token)
    }
}

/// A search mode on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SearchMode {
    /// tantivy BM25 only.
    Bm25,
    /// pgvector k-NN only.
    Vector,
    /// Both, fused by reciprocal rank fusion.
    Hybrid,
}

impl From<SearchMode> for quarry_search::Mode {
    fn from(mode: SearchMode) -> Self {
        match mode {
            SearchMode::Bm25 => quarry_search::Mode::Bm25,
            SearchMode::Vector => quarry_search::Mode::Vector,
            SearchMode::Hybrid => quarry_search::Mode::Hybrid,
        }
    }
}

impl From<SearchMode> for quarry_proto::v1::SearchMode {
    fn from(mode: SearchMode) -> Self {
        match mode {
            SearchMode::Bm25 => quarry_proto::v1::SearchMode::Bm25,
            SearchMode::Vector => quarry_proto::v1::SearchMode::Vector,
            SearchMode::Hybrid => quarry_proto::v1::SearchMode::Hybrid,
        }
    }
}

/// Prints a report: one pretty JSON object with `json`, else its text.
///
/// # Errors
/// The JSON cannot be rendered.
#[cfg(feature = "dev-tools")]
pub fn print_report(
    json: bool,
    as_json: impl FnOnce() -> serde_json::Value,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&as_json())?);
    } else {
        print!("{}", text());
    }
    Ok(())
}

/// One connection to `url` for a command, with its connection task.
///
/// # Errors
/// The URL does not parse or the database cannot be reached.
pub async fn connect(
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
