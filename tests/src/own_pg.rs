//! A PostgreSQL server of a test's own, which the test may stop and start
//! (the fault test restarts PostgreSQL under load), without touching the
//! shared one on `QUARRY_TEST_DATABASE_URL`: `dev/pg.sh` with
//! `QUARRY_PG_BASE` pointing at a temporary folder and `QUARRY_PG_PORT` at
//! a free port, so it is installed and run exactly as the shared one is.

use std::process::Command;

use crate::{TempDir, repo_root};

/// A running PostgreSQL cluster in a temporary folder; stopped and removed
/// on drop.
#[derive(Debug)]
pub struct OwnPostgres {
    dir: TempDir,
    port: u16,
    url: String,
}

impl OwnPostgres {
    /// Initialises and starts a cluster on a free port of 127.0.0.1 (with
    /// database `quarry` and pgvector), via `dev/pg.sh start`.
    pub fn start() -> Self {
        let dir = TempDir::new("pg");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let mut pg = Self {
            dir,
            port,
            url: String::new(),
        };
        pg.url = pg.pg_sh("start");
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/quarry` (an admin URL:
    /// [`quarry_db::testing::TestDb::create_on`] makes databases there).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are terminated,
    /// as in an operator's restart).
    pub fn stop(&self) {
        self.pg_sh("stop");
    }

    /// Starts the stopped server again on the same port.
    pub fn start_again(&self) {
        self.pg_sh("start");
    }

    /// Runs `dev/pg.sh CMD` for this cluster; returns its last stdout line.
    fn pg_sh(&self, cmd: &str) -> String {
        let output = Command::new(repo_root().join("dev/pg.sh"))
            .arg(cmd)
            .env("QUARRY_PG_BASE", self.dir.path())
            .env("QUARRY_PG_PORT", self.port.to_string())
            .output()
            .unwrap_or_else(|e| panic!("dev/pg.sh {cmd}: {e}"));
        assert!(
            output.status.success(),
            "dev/pg.sh {cmd} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        // `dev/pg.sh stop` (fast shutdown); the folder goes with `dir`
        let _ = Command::new(repo_root().join("dev/pg.sh"))
            .arg("stop")
            .env("QUARRY_PG_BASE", self.dir.path())
            .output();
    }
}
