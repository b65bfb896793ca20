//! `quarry ingest`: load a data set into the database.

use std::path::{Path, PathBuf};

/// Arguments of `quarry ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    dataset: Dataset,
}

#[derive(Debug, clap::Subcommand)]
enum Dataset {
    /// The Tate collection (artworks.jsonl.gz, artists.jsonl.gz).
    Tate {
        /// Folder holding the two files, e.g. ../shared/data/tate.
        #[arg(long = "from")]
        from: PathBuf,
        /// Target schema.
        #[arg(long, default_value = quarry_demo::DEFAULT_SCHEMA)]
        schema: String,
    },
}

/// Loads the data set into `database.url` (idempotent; one transaction).
///
/// # Errors
/// Missing or malformed files, database errors.
pub async fn run(args: Args, config: Option<&Path>) -> anyhow::Result<()> {
    let Dataset::Tate { from, schema } = args.dataset;
    let config = super::load(config)?;
    let (mut client, connection) = super::connect(&config.database.url).await?;
    let report = quarry_demo::ingest_tate(&mut client, &from, &schema, true).await?;
    println!("{report}");
    drop(client);
    let _ = connection.await;
    Ok(())
}
