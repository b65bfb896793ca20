//! The result cache end to end (issue 18 item 2): a repeated golden
//! question is answered from the cache with the same rows, and a committed
//! change to a table the SQL reads invalidates it within a bounded wait —
//! the next answer has the new rows, never the old ones.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::{Duration, Instant};

use quarry_proto::v1::{AskResponse, ResultCache, RowSet};
use quarry_tests::{Options, TestServer, ask, ask_all, sql_result, usage_of};

const QUESTION: &str = "How many artworks are in the Tate collection?";
/// The freshness bound the test allows (README "Caching": notices arrive
/// within milliseconds; this is only a bounded wait).
const WAIT: Duration = Duration::from_secs(10);

async fn asked(server: &TestServer) -> (Vec<AskResponse>, RowSet, ResultCache) {
    let events = ask_all(server, ask(QUESTION)).await.unwrap();
    let sql = sql_result(&events);
    let cache = sql.result_cache();
    (events, sql.rows.expect("rows"), cache)
}

#[tokio::test]
async fn a_repeated_golden_question_is_served_from_the_cache_until_its_table_changes() {
    let server = TestServer::start(Options {
        extra_toml: "[cache]\nenabled = true\nrescan_secs = 1\n".to_owned(),
        ..Default::default()
    })
    .await;

    // the cache is used once its listener is connected (bounded wait)
    let started = Instant::now();
    let (events, first_rows) = loop {
        let (events, rows, cache) = asked(&server).await;
        if cache == ResultCache::Miss {
            break (events, rows);
        }
        assert_eq!(cache, ResultCache::Unspecified, "the first ask cannot hit");
        assert!(started.elapsed() < WAIT, "the result cache never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let usage = usage_of(&events);
    assert_eq!((usage.result_cache_hits, usage.result_cache_misses), (0, 1));

    // asked again: a hit, the same rows
    let (events, rows, cache) = asked(&server).await;
    assert_eq!(cache, ResultCache::Hit);
    assert_eq!(rows, first_rows);
    let usage = usage_of(&events);
    assert_eq!((usage.result_cache_hits, usage.result_cache_misses), (1, 0));

    // a committed change to the table read
    server
        .db
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO tate.artworks (id, accession_number, title) \
             VALUES (2000000001, 'CACHE1', 'cache test')",
        )
        .await
        .unwrap();
    let changed = Instant::now();
    let new_rows = loop {
        let (_, rows, cache) = asked(&server).await;
        if rows != first_rows {
            assert_eq!(cache, ResultCache::Miss, "new rows come from the database");
            break rows;
        }
        assert_eq!(
            cache,
            ResultCache::Hit,
            "old rows only from before the notice"
        );
        assert!(
            changed.elapsed() < WAIT,
            "the change was not seen within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // once seen, never the old rows again
    for _ in 0..3 {
        let (_, rows, cache) = asked(&server).await;
        assert_eq!(rows, new_rows);
        assert_eq!(cache, ResultCache::Hit);
    }
    server.stop().await;
}
