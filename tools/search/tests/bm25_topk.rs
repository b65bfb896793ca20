#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! BM25 with pruning (block-max WAND, the filter checked per candidate) gives
//! exactly the top k that scoring every matching document would: for
//! skewed word frequencies, several segments, deleted documents and filters
//! from 100 % to 1 %, the hits of a top-10 search are the first 10 of an
//! unpruned search (every document scored) restricted to the filter.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

use quarry_db::testing::TestDb;
use quarry_search::collection::{Collection, CollectionConfig};
use quarry_search::ddl::ensure_sidecar;
use quarry_search::filter::CheckedFilter;
use quarry_search::index::{Bm25Hit, CollectionIndex};
use quarry_search::{Filter, Value};

const DOCS: usize = 4000;
const VOCABULARY: usize = 300;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A skewed word index: the square of a uniform draw favours low indexes
    /// (long posting lists for common words, short for rare ones).
    fn word(&mut self) -> usize {
        let u = (self.next() % 10_000) as f64 / 10_000.0;
        ((u * u) * VOCABULARY as f64) as usize
    }
}

fn word(i: usize) -> String {
    // letters only, so the analyzer keeps each word whole
    let mut n = i;
    let mut w = String::from("w");
    loop {
        w.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    w
}

fn collection() -> Collection {
    let config: CollectionConfig = toml::from_str(
        r#"
        name = "topk"
        source = "public.src"
        key = "id"
        text = [{ name = "body" }]
        filters = [{ name = "bucket", type = "integer" }]
        "#,
    )
    .unwrap();
    Collection::from_config(&config, "c").unwrap()
}

fn bucket_below(c: &Collection, limit: i64) -> CheckedFilter {
    Filter::Range {
        field: "bucket".into(),
        lower: Bound::Unbounded,
        upper: Bound::Excluded(Value::Int(limit)),
    }
    .validate(c)
    .unwrap()
}

/// A test database with the source table `public.src` and `c`'s sidecar.
async fn sidecar_database(c: &Collection) -> TestDb {
    let db = TestDb::create().await;
    let mut client = db.pool().get().await.unwrap();
    client
        .batch_execute("CREATE TABLE public.src (id int PRIMARY KEY)")
        .await
        .unwrap();
    ensure_sidecar(&mut client, c, None).await.unwrap();
    db
}

/// Upserts sidecar rows from four arrays (key, deleted, body, bucket), each
/// row with a new version.
fn upsert_sql(c: &Collection) -> String {
    format!(
        "INSERT INTO {} (key, version, deleted, t_body, f_bucket) \
         SELECT k, nextval('quarry.search_version'), d, b, x \
         FROM unnest($1::text[], $2::bool[], $3::text[], $4::bigint[]) AS u(k, d, b, x) \
         ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, deleted = EXCLUDED.deleted, \
         t_body = EXCLUDED.t_body, f_bucket = EXCLUDED.f_bucket",
        c.docs_table()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_filtered_top_k_is_the_exhaustive_top_k() {
    let c = Arc::new(collection());
    let db = sidecar_database(&c).await;
    let client = db.pool().get().await.unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let bodies: Vec<String> = (0..DOCS)
        .map(|_| {
            let n = 3 + (rng.next() % 25) as usize;
            (0..n)
                .map(|_| word(rng.word()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let insert = upsert_sql(&c);
    let dir = std::env::temp_dir().join(format!("quarry-search-{}", uuid::Uuid::new_v4()));
    let index = Arc::new(CollectionIndex::open(&dir, Arc::clone(&c)).unwrap());
    // Three catch-ups (so several segments), the last one rewriting and
    // deleting documents of the first two (so deletes inside segments).
    for part in 0..2 {
        let range = (part * DOCS / 2)..((part + 1) * DOCS / 2);
        let keys: Vec<String> = range.clone().map(|i| format!("d{i}")).collect();
        let deleted: Vec<bool> = range.clone().map(|_| false).collect();
        let texts: Vec<String> = range.clone().map(|i| bodies[i].clone()).collect();
        let buckets: Vec<i64> = range.map(|i| (i % 100) as i64).collect();
        client
            .execute(&insert, &[&keys, &deleted, &texts, &buckets])
            .await
            .unwrap();
        index.catch_up(db.pool()).await.unwrap();
    }
    let changed: Vec<usize> = (0..DOCS).step_by(7).collect();
    let keys: Vec<String> = changed.iter().map(|i| format!("d{i}")).collect();
    let deleted: Vec<bool> = changed.iter().map(|i| i % 2 == 0).collect();
    let texts: Vec<String> = changed
        .iter()
        .map(|i| bodies[(i * 13) % DOCS].clone())
        .collect();
    let buckets: Vec<i64> = changed.iter().map(|i| ((i + 50) % 100) as i64).collect();
    client
        .execute(&insert, &[&keys, &deleted, &texts, &buckets])
        .await
        .unwrap();
    index.catch_up(db.pool()).await.unwrap();
    let live = DOCS - changed.iter().filter(|i| *i % 2 == 0).count();
    assert_eq!(usize::try_from(index.num_docs()).unwrap(), live);

    let searched = vec!["body".to_owned()];
    let filters = [
        ("all", CheckedFilter::all()),
        ("50%", bucket_below(&c, 50)),
        ("10%", bucket_below(&c, 10)),
        ("1%", bucket_below(&c, 1)),
    ];
    let allowed: Vec<HashSet<String>> = filters
        .iter()
        .map(|(_, f)| index.matching_keys(f).unwrap())
        .collect();
    let mut compared = 0;
    for q in 0..40 {
        // a common, a middling and a rare word
        let query = format!(
            "{} {} {}",
            word(q % 5),
            word(20 + q * 3),
            word(VOCABULARY - 1 - q)
        );
        // every matching document scored: the limit is never reached, so
        // nothing is pruned
        let everything = index.search_bm25(&query, &CheckedFilter::all(), DOCS * 2, &searched);
        let everything = everything.unwrap();
        for ((label, filter), allowed) in filters.iter().zip(&allowed) {
            let truth: Vec<_> = everything
                .iter()
                .filter(|h| allowed.contains(&h.key))
                .collect();
            let hits = index.search_bm25(&query, filter, 10, &searched).unwrap();
            let what = format!("query {query:?}, filter {label}");
            assert_eq!(hits.len(), truth.len().min(10), "{what}: hits");
            if hits.is_empty() {
                continue;
            }
            compared += 1;
            let kth = truth[hits.len() - 1].score;
            for (i, hit) in hits.iter().enumerate() {
                assert!(
                    (hit.score - truth[i].score).abs() < 1e-4,
                    "{what}: score {i}: {} vs {}",
                    hit.score,
                    truth[i].score
                );
                let own = truth.iter().find(|t| t.key == hit.key).unwrap_or_else(|| {
                    panic!("{what}: {} is deleted or outside the filter", hit.key)
                });
                assert!((own.score - hit.score).abs() < 1e-4, "{what}: {}", hit.key);
            }
            let keys: HashSet<&str> = hits.iter().map(|h| h.key.as_str()).collect();
            for t in &truth {
                if t.score > kth + 1e-4 {
                    assert!(keys.contains(t.key.as_str()), "{what}: missing {}", t.key);
                }
            }
        }
    }
    assert!(compared > 100, "only {compared} non-empty comparisons");
    drop(client);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A catch-up of a bulk of rows leaves the index in one segment once its
/// merge is collected, with every live document and none of the deleted
/// ones, answering as an index built afresh from the live rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_catch_up_merges_the_index_into_one_segment() {
    use quarry_search::index::CONSOLIDATE_AFTER_ROWS;

    let c = Arc::new(collection());
    let db = sidecar_database(&c).await;
    let client = db.pool().get().await.unwrap();
    let insert = upsert_sql(&c);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut write = |range: std::ops::Range<usize>, deleted: bool| {
        let keys: Vec<String> = range.clone().map(|i| format!("d{i}")).collect();
        let deleted: Vec<bool> = range.clone().map(|_| deleted).collect();
        let texts: Vec<String> = range
            .clone()
            .map(|_| {
                (0..8)
                    .map(|_| word(rng.word()))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let buckets: Vec<i64> = range.map(|i| (i % 100) as i64).collect();
        (keys, deleted, texts, buckets)
    };
    let dir = std::env::temp_dir().join(format!("quarry-search-{}", uuid::Uuid::new_v4()));
    let index = Arc::new(CollectionIndex::open(&dir, Arc::clone(&c)).unwrap());

    // A small catch-up: one segment, nothing to merge.
    let (k, d, t, b) = write(0..500, false);
    client.execute(&insert, &[&k, &d, &t, &b]).await.unwrap();
    assert_eq!(index.catch_up(db.pool()).await.unwrap().rows, 500);
    index.consolidated().await;
    assert_eq!(index.num_segments(), 1);
    let (k, d, t, b) = write(500..600, false);
    client.execute(&insert, &[&k, &d, &t, &b]).await.unwrap();
    index.catch_up(db.pool()).await.unwrap();
    index.consolidated().await;
    assert_eq!(index.num_segments(), 2, "a small catch-up is not merged");

    // A bulk: new documents, and tombstones for 100 of the first ones.
    let (k, d, t, b) = write(600..(600 + CONSOLIDATE_AFTER_ROWS), false);
    client.execute(&insert, &[&k, &d, &t, &b]).await.unwrap();
    let (k, d, t, b) = write(0..100, true);
    client.execute(&insert, &[&k, &d, &t, &b]).await.unwrap();
    index.catch_up(db.pool()).await.unwrap();
    index.consolidated().await;
    assert_eq!(index.num_segments(), 1, "a bulk catch-up is merged");
    let live = 600 + CONSOLIDATE_AFTER_ROWS - 100;
    assert_eq!(usize::try_from(index.num_docs()).unwrap(), live);
    assert_eq!(
        index.matching_keys(&CheckedFilter::all()).unwrap().len(),
        live
    );

    // The merged index answers as one built afresh from the live rows (the
    // deleted documents no longer count in the BM25 statistics either).
    let fresh_dir = std::env::temp_dir().join(format!("quarry-search-{}", uuid::Uuid::new_v4()));
    let fresh = Arc::new(CollectionIndex::open(&fresh_dir, Arc::clone(&c)).unwrap());
    fresh.catch_up(db.pool()).await.unwrap();
    fresh.consolidated().await;
    let searched = vec!["body".to_owned()];
    let filter = bucket_below(&c, 10);
    // Ties in score may change order with the document addresses: the same
    // scores, and the same documents above the 10th score.
    let same = |now: &[Bm25Hit], then: &[Bm25Hit], what: &str| {
        assert_eq!(now.len(), then.len(), "{what}");
        for (a, b) in now.iter().zip(then) {
            assert!((a.score - b.score).abs() < 1e-4, "{what}: {a:?} vs {b:?}");
        }
        let Some(kth) = then.last().map(|h| h.score) else {
            return;
        };
        let above = |hits: &[Bm25Hit]| -> HashSet<String> {
            hits.iter()
                .filter(|h| h.score > kth + 1e-4)
                .map(|h| h.key.clone())
                .collect()
        };
        assert_eq!(above(now), above(then), "{what}");
    };
    let mut compared = 0;
    for q in 0..20 {
        let q = format!("{} {}", word(q % 5), word(VOCABULARY - 1 - q * 7));
        let now = index
            .search_bm25(&q, &CheckedFilter::all(), 10, &searched)
            .unwrap();
        let then = fresh
            .search_bm25(&q, &CheckedFilter::all(), 10, &searched)
            .unwrap();
        same(&now, &then, &format!("query {q:?}, unfiltered"));
        let now = index.search_bm25(&q, &filter, 10, &searched).unwrap();
        let then = fresh.search_bm25(&q, &filter, 10, &searched).unwrap();
        same(&now, &then, &format!("query {q:?}, 10 %"));
        assert!(
            now.iter()
                .all(|h| h.key[1..].parse::<usize>().unwrap() >= 100)
        );
        compared += usize::from(!now.is_empty());
    }
    assert!(compared > 10, "only {compared} non-empty comparisons");
    // Later small catch-ups still apply on top of the merged segment.
    let (k, d, t, b) = write(100..200, true);
    client.execute(&insert, &[&k, &d, &t, &b]).await.unwrap();
    index.catch_up(db.pool()).await.unwrap();
    assert_eq!(usize::try_from(index.num_docs()).unwrap(), live - 100);
    drop(client);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&fresh_dir);
}
