//! `quarry migrate`: create or upgrade Quarry's own `quarry` schema.

use std::path::Path;

use anyhow::Context as _;

/// Arguments of `quarry migrate` (none).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Applies pending migrations; with `sql.exec.role` set, also creates that
/// read-only role with SELECT on `sql.schemas`.
///
/// # Errors
/// Database errors, or a failing migration.
pub async fn run(_args: Args, config: Option<&Path>) -> anyhow::Result<()> {
    let config = super::load(config)?;
    let (mut client, connection) = super::connect(&config.database.url).await?;
    let applied = quarry_db::migrate_client(&mut client).await?;
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
