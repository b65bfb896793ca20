//! `quarry migrate`: creates and upgrades Quarry's own `quarry` schema
//! (stored catalog, golden pairs) with refinery, and optionally the
//! read-only database role the SQL tool runs queries as.

use anyhow::Context as _;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Applies pending migrations (`cli/migrations/V*__*.sql`, each in its own
/// transaction, recorded in `refinery_schema_history`) and returns the names
/// of those applied now.
///
/// # Errors
/// The failing migration and PostgreSQL's error.
pub async fn run(client: &mut tokio_postgres::Client) -> anyhow::Result<Vec<String>> {
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(client)
        .await
        .context("applying migrations")?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect())
}
