#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Measures the sync on the server in `QUARRY_TEST_DATABASE_URL` (a fresh
//! database is created and dropped):
//!
//! 1. trigger overhead: a bulk `INSERT … SELECT` of N rows (default 70,000)
//!    into a table without and with the collection's triggers;
//! 2. backfill throughput over those rows;
//! 3. freshness: single-row autocommit updates at a steady rate while
//!    `Syncer::run` follows, reported as commit → sidecar latency.
//!
//! `cargo run -p quarry-bench --example sync_bench -- [rows] [changes]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use quarry_db::testing::TestDb;
use quarry_search::collection::{Collection, CollectionConfig};
use quarry_search_sync::{SyncConfig, Syncer};

const TABLE: &str = "(id int PRIMARY KEY, title text, body text, year int, tags text[])";
const FILL: &str = "SELECT i, 'title ' || i, repeat('body text ', 20) || i, 1800 + i % 200, \
                    ARRAY['t' || (i % 7), 't' || (i % 11)] FROM generate_series(1, $1) AS i";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rows: i32 = args.next().map_or(70_000, |a| a.parse().unwrap());
    let changes: usize = args.next().map_or(500, |a| a.parse().unwrap());
    let db = TestDb::create().await;
    let client = db.pool().get().await.unwrap();
    let config: CollectionConfig = toml::from_str(
        r#"
        name = "bench"
        source = "public.works"
        key = "id"
        text = [{ name = "title" }, { name = "body" }]
        filters = [{ name = "year", type = "integer" }, { name = "tags", type = "keywords" }]
        "#,
    )
    .unwrap();
    let collection = Arc::new(Collection::from_config(&config, "bench").unwrap());

    let mut plain = Vec::new();
    let mut with_triggers = Vec::new();
    for round in 0..3 {
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS public.works; CREATE TABLE public.works {TABLE}"
            ))
            .await
            .unwrap();
        let start = Instant::now();
        client
            .execute(&format!("INSERT INTO public.works {FILL}"), &[&rows])
            .await
            .unwrap();
        plain.push(start.elapsed());
        client
            .batch_execute(&format!(
                "DROP TABLE public.works; CREATE TABLE public.works {TABLE}"
            ))
            .await
            .unwrap();
        let syncer = Syncer::new(
            db.pool().clone(),
            db.url(),
            collection.clone(),
            None,
            SyncConfig::default(),
        );
        syncer.install().await.unwrap();
        client
            .batch_execute("DELETE FROM quarry.search_outbox")
            .await
            .unwrap();
        let start = Instant::now();
        client
            .execute(&format!("INSERT INTO public.works {FILL}"), &[&rows])
            .await
            .unwrap();
        with_triggers.push(start.elapsed());
        eprintln!(
            "round {round}: plain {:?}, with triggers {:?}",
            plain[round], with_triggers[round]
        );
    }
    plain.sort();
    with_triggers.sort();
    let (p, t) = (plain[1], with_triggers[1]);
    println!(
        "bulk INSERT of {rows} rows (median of 3): {p:?} without triggers, {t:?} with ({:+.0} %, {:.1} µs/row)",
        (t.as_secs_f64() / p.as_secs_f64() - 1.0) * 100.0,
        (t.as_secs_f64() - p.as_secs_f64()) * 1e6 / f64::from(rows)
    );

    let syncer = Syncer::new(
        db.pool().clone(),
        db.url(),
        collection.clone(),
        None,
        SyncConfig::default(),
    );
    client
        .batch_execute("DELETE FROM quarry.search_outbox")
        .await
        .unwrap();
    let start = Instant::now();
    let report = syncer.backfill(|_| {}).await.unwrap();
    let took = start.elapsed();
    println!(
        "backfill: {} rows in {took:?} ({:.0} rows/s, {} batches)",
        report.rows,
        report.rows as f64 / took.as_secs_f64(),
        report.batches
    );

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn({
        let syncer = syncer.clone();
        async move {
            syncer
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..changes {
        let id = i32::try_from(i % usize::try_from(rows).unwrap()).unwrap() + 1;
        client
            .execute(
                "UPDATE public.works SET title = $2 WHERE id = $1",
                &[&id, &format!("changed {i}")],
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    loop {
        if syncer.status().await.unwrap().outbox_backlog == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let f = syncer.freshness();
    println!(
        "freshness over {} single-row updates (commit -> sidecar): p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        f.count, f.p50, f.p90, f.p99, f.max
    );
    stop.send(()).unwrap();
    runner.await.unwrap().unwrap();
    drop(client);
    db.drop_db().await;
}
