//! `quarry explain`: explain a SQL query.

use std::path::Path;

use quarry_server::client::status_error;

use super::Remote;

/// Arguments of `quarry explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SQL.
    pub sql: String,
    #[command(flatten)]
    pub client: Remote,
}

/// Prints the server's plain-English explanation, planner estimates and hints.
///
/// # Errors
/// The server refuses the SQL or cannot be reached.
pub async fn run(args: Args, _config: Option<&Path>) -> anyhow::Result<()> {
    let Args { sql, client } = args;
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
