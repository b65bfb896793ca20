//! `quarry migrate`: creates and upgrades Quarry's own `quarry` schema
//! (the migrations live in `quarry-db`), and optionally the read-only
//! database role the SQL tool runs queries as.

/// Applies pending migrations ([`quarry_db::migrate_client`]) and returns the
/// names of those applied now.
///
/// # Errors
/// The failing migration and PostgreSQL's error.
pub async fn run(client: &mut tokio_postgres::Client) -> anyhow::Result<Vec<String>> {
    Ok(quarry_db::migrate_client(client).await?)
}
