//! `quarry catalog`: the stored schema catalog.

use std::path::Path;

/// Arguments of `quarry catalog`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Re-read the source schemas, embed their descriptions (with
    /// `[embedding]` configured) and store the catalog now.
    Refresh,
}

/// Refreshes the catalog of every source (the shared one and each
/// `[sql.sources.<name>]`) in this process and prints what was stored.
///
/// # Errors
/// Configuration, embedding or database errors.
pub async fn run(args: Args, config: Option<&Path>) -> anyhow::Result<()> {
    let Action::Refresh = args.action;
    let config = super::load(config)?;
    let embedder = quarry_server::embedder(&config).await?;
    let pools = config.database.pools();
    let sources = quarry_server::sql_sources_with(
        &config,
        &pools,
        quarry_sql::service::SqlModels::default(),
        embedder,
    )
    .await?;
    for (name, tool) in sources.all() {
        let report = tool.refresh_catalog().await?;
        println!(
            "source {name}: catalog {}: {} tables, {} columns, embeddings {}, stored {} in {:.1}s",
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
    }
    Ok(())
}
