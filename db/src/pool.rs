//! Connection pools: [`pool()`] builds one, [`Pools`] shares one per URL.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};

use crate::error::{DbError, Result, error_text};

/// A connection pool for `url` of at most `size` connections (at least 1);
/// a request waits at most `wait` for one (no TLS: the development server
/// has none; put TLS termination in front for remote databases until TLS
/// lands). Unless the URL sets `options`, sessions run with
/// `client_min_messages = warning`, so idempotent DDL does not log a NOTICE
/// per statement.
///
/// # Errors
/// [`DbError::Url`] when the URL does not parse, [`DbError::Build`] when the
/// pool cannot be built.
pub fn pool(url: &str, size: usize, wait: Duration) -> Result<Pool> {
    let mut pg: tokio_postgres::Config = url.parse().map_err(DbError::Url)?;
    if pg.get_options().is_none() {
        pg.options("-c client_min_messages=warning");
    }
    let manager = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size.max(1))
        .wait_timeout(Some(wait))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?)
}

/// A connection from `pool`, recording the wait in
/// `quarry_db_pool_wait_seconds{use = usage}` (a fixed name per caller:
/// `sql`, `conversations`, `search`, `summaries`), failed waits included.
///
/// # Errors
/// As [`Pool::get`]: the wait timed out, the pool is closed, or a new
/// connection failed.
pub async fn checkout(pool: &Pool, usage: &'static str) -> std::result::Result<Object, PoolError> {
    let started = Instant::now();
    let got = pool.get().await;
    quarry_metrics::pool_wait(usage, started.elapsed());
    got
}

/// One shared pool per database URL for the whole process, so the tools
/// (SQL, search, summaries) and the orchestrator of one server hold one set
/// of connections per database instead of one pool each.
///
/// Rule for the size: a pool is as large as the largest `size` any caller
/// asked for; a later, larger request grows the shared pool
/// ([`Pool::resize`]), a smaller one gets the existing pool unchanged. The
/// wait timeout is the one given to [`Pools::new`]. URLs are compared as
/// given (after trimming), so spell one database the same way everywhere.
///
/// ```no_run
/// # fn example() -> quarry_db::Result<()> {
/// let pools = quarry_db::Pools::new(std::time::Duration::from_secs(5));
/// let sql = pools.get("postgres://quarry@db/app", 8)?;
/// let summaries = pools.get("postgres://quarry@db/app", 4)?; // the same pool, still 8
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pools {
    wait: Duration,
    /// By URL: the pool and its `database` label (the database name only,
    /// never the URL's user or password).
    pools: Mutex<HashMap<String, (Pool, String)>>,
}

impl Pools {
    /// An empty registry whose pools wait at most `wait` for a connection.
    pub fn new(wait: Duration) -> Self {
        Self {
            wait,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The shared pool of `url`, built on first use with `size` connections
    /// and grown to `size` when it is smaller (see the type's docs).
    ///
    /// # Errors
    /// As [`pool()`], on first use of `url`.
    pub fn get(&self, url: &str, size: usize) -> Result<Pool> {
        let key = url.trim();
        let size = size.max(1);
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((pool, _)) = pools.get(key) {
            if pool.status().max_size < size {
                pool.resize(size);
            }
            return Ok(pool.clone());
        }
        let built = pool(key, size, self.wait)?;
        let database = key
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|c| c.get_dbname().map(str::to_owned))
            .unwrap_or_default();
        pools.insert(key.to_owned(), (built.clone(), database));
        Ok(built)
    }

    /// Sets the pool gauges (`quarry_db_pool_connections`,
    /// `quarry_db_pool_waiting`) of every pool from its current status.
    pub fn record_metrics(&self) {
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        for (pool, database) in pools.values() {
            let status = pool.status();
            quarry_metrics::pool_status(
                database,
                status.max_size,
                status.size,
                status.available,
                status.waiting,
            );
        }
    }

    /// Every pool built so far (for health checks, [`reachable`]).
    pub fn all(&self) -> Vec<Pool> {
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.values().map(|(pool, _)| pool.clone()).collect()
    }

    /// Closes every pool (at shutdown): waiting and later requests fail,
    /// connections close as they are returned.
    pub fn close(&self) {
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        for (pool, _) in pools.values() {
            pool.close();
        }
    }
}

/// Whether `pool`'s database answers: a connection from the pool runs
/// `SELECT 1` within `timeout`.
///
/// # Errors
/// Why not, as text: the pool's error (connection refused, …), PostgreSQL's
/// ([`error_text`]), or the timeout.
pub async fn reachable(pool: &Pool, timeout: Duration) -> std::result::Result<(), String> {
    let probe = async {
        let client = pool.get().await.map_err(|e| pool_error_text(&e))?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| error_text(&e))?;
        Ok(())
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// A pool error as text, with PostgreSQL's SQLSTATE and message when the
/// database refused the connection (deadpool's own text says "db error").
pub fn pool_error_text(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(e) => {
            format!("creating a connection: {}", error_text(e))
        }
        other @ (deadpool_postgres::PoolError::Timeout(_)
        | deadpool_postgres::PoolError::Closed
        | deadpool_postgres::PoolError::NoRuntimeSpecified
        | deadpool_postgres::PoolError::PostCreateHook(_)) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pool_per_url_as_large_as_the_largest_request() {
        let pools = Pools::new(Duration::from_secs(1));
        let a = pools.get("postgres://u@127.0.0.1:1/a", 2).unwrap();
        let b = pools.get(" postgres://u@127.0.0.1:1/a", 6).unwrap();
        let c = pools.get("postgres://u@127.0.0.1:1/a", 3).unwrap();
        assert_eq!(a.status().max_size, 6);
        assert_eq!(b.status().max_size, 6);
        assert_eq!(c.status().max_size, 6);
        let other = pools.get("postgres://u@127.0.0.1:1/b", 1).unwrap();
        assert_eq!(other.status().max_size, 1);
        assert!(matches!(
            pools.get("postgres://u@h:notaport/x", 1),
            Err(DbError::Url(_))
        ));
    }
}
