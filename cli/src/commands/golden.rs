//! `quarry golden`: golden question/SQL pairs.

use std::path::Path;

use quarry_server::client::status_error;

use super::Remote;

/// Arguments of `quarry golden`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Store a pair on the server, after its SQL validates and returns rows.
    Add {
        #[arg(long)]
        question: String,
        #[arg(long)]
        sql: String,
        #[command(flatten)]
        client: Remote,
    },
}

/// Stores the pair through `AddGoldenPair`.
///
/// # Errors
/// The server refuses the pair or cannot be reached.
pub async fn run(args: Args, _config: Option<&Path>) -> anyhow::Result<()> {
    let Action::Add {
        question,
        sql,
        client,
    } = args.action;
    let mut sql_client = client.sql_client().await?;
    let response = sql_client
        .add_golden_pair(client.request(quarry_proto::v1::AddGoldenPairRequest { question, sql })?)
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "stored: the sql returned {} rows; {} golden pairs now",
        response.row_count, response.pairs
    );
    Ok(())
}
