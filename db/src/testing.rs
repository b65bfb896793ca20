//! Test fixtures (feature `test-util`): a fresh PostgreSQL database per test.
//!
//! ```no_run
//! # async fn example() {
//! let db = quarry_db::testing::TestDb::create().await;
//! let client = db.pool().get().await.unwrap();
//! client.batch_execute("CREATE TABLE t (id int)").await.unwrap();
//! db.drop_db().await; // or let it drop: best effort, on a helper thread
//! # }
//! ```
//!
//! The server comes from `QUARRY_TEST_DATABASE_URL` (`dev/test.sh` sets it
//! from `dev/pg.sh url`); without it the fixture panics, so tests fail rather
//! than silently skip. Each [`TestDb`] is a new database `test_<uuid>` created
//! from the server's default template, so tests can run in parallel.

// Test support: failing loudly is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// Environment variable with the URL of a PostgreSQL server tests may use.
pub const DATABASE_URL_ENV: &str = "QUARRY_TEST_DATABASE_URL";

/// A throw-away database, dropped (best effort) when the value is dropped.
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
    pool: Pool,
    dropped: bool,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The URL of the test server, or a panic saying how to get one.
pub fn server_url() -> String {
    std::env::var(DATABASE_URL_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| panic!("set {DATABASE_URL_ENV} (dev/test.sh does)"))
}

/// `url` with its database replaced by `dbname`. Handles URL form
/// (`postgres://user@host:port/db?opts`) and key-value form (`host=… dbname=…`).
pub fn with_database(url: &str, dbname: &str) -> String {
    match url.find("://") {
        Some(scheme_end) => {
            let after = scheme_end + 3;
            let query_start = url[after..].find('?').map_or(url.len(), |i| after + i);
            let path_start = url[after..query_start]
                .find('/')
                .map_or(query_start, |i| after + i);
            format!("{}/{dbname}{}", &url[..path_start], &url[query_start..])
        }
        None => format!("{url} dbname={dbname}"),
    }
}

/// A small pool to the database at `url`.
pub fn pool_for(url: &str, max_size: usize) -> Pool {
    let config: tokio_postgres::Config = url
        .parse()
        .unwrap_or_else(|e| panic!("bad database url {url:?}: {e}"));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .build()
        .expect("build test pool")
}

async fn admin_connect(admin_url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {admin_url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

impl TestDb {
    /// Create a fresh database on the server named by
    /// `QUARRY_TEST_DATABASE_URL`. Panics when that is unset or the server is
    /// unreachable.
    pub async fn create() -> TestDb {
        Self::create_on(&server_url()).await
    }

    /// Create a fresh database on the server of `admin_url` (a URL whose
    /// role may create databases). Panics when the server is unreachable.
    pub async fn create_on(admin_url: &str) -> TestDb {
        let admin_url = admin_url.to_owned();
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_connect(&admin_url).await;
        let create = format!("CREATE DATABASE \"{name}\"");
        // CREATE DATABASE fails while another session uses the template;
        // concurrent test start-up can hit that briefly
        let mut attempt = 0;
        loop {
            match admin.batch_execute(&create).await {
                Ok(()) => break,
                Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) && attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("create test database {name}: {e}"),
            }
        }
        let url = with_database(&admin_url, &name);
        let pool = pool_for(&url, 4);
        TestDb {
            name,
            url,
            admin_url,
            pool,
            dropped: false,
        }
    }

    /// Database name (`test_<uuid>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool (up to 4 connections) to the test database.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Drop the database now, waiting for it.
    pub async fn drop_db(mut self) {
        self.dropped = true;
        self.pool.close();
        let admin = admin_connect(&self.admin_url).await;
        admin
            .batch_execute(&drop_sql(&self.name))
            .await
            .unwrap_or_else(|e| panic!("drop test database {}: {e}", self.name));
    }
}

fn drop_sql(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        self.pool.close();
        let admin_url = self.admin_url.clone();
        let sql = drop_sql(&self.name);
        // Drop cannot await; run the statement on a thread with its own
        // runtime, and wait so that the process does not exit first.
        let handle = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok((client, connection)) = tokio_postgres::connect(&admin_url, NoTls).await {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    let _ = client.batch_execute(&sql).await;
                }
            });
        });
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:54329/quarry", "t1"),
            "postgres://postgres@127.0.0.1:54329/t1"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "t1"),
            "postgresql://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "t1"), "postgres://h:1/t1");
        assert_eq!(
            with_database("host=h user=u", "t1"),
            "host=h user=u dbname=t1"
        );
    }
}
