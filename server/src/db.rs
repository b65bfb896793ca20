//! Database connection pools.

use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

/// A connection pool for `url` of at most `size` connections; a request
/// waits at most `wait` for one (no TLS: the development server has none;
/// put TLS termination in front for remote databases until TLS lands).
///
/// # Errors
/// When the URL does not parse or the pool cannot be built.
pub fn pool(url: &str, size: usize, wait: Duration) -> anyhow::Result<Pool> {
    let mut pg: tokio_postgres::Config = url
        .parse()
        .with_context(|| "database.url is not a valid PostgreSQL URL".to_string())?;
    if pg.get_options().is_none() {
        // Idempotent DDL (`IF NOT EXISTS`) would otherwise log a NOTICE per statement.
        pg.options("-c client_min_messages=warning");
    }
    let manager = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .wait_timeout(Some(wait))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .context("building the database pool")
}
