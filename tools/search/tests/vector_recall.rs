#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Vector search under filters of every selectivity returns k hits whenever
//! k documents match, every hit inside the filter, over a synthetic
//! collection of clustered, normalised Gaussian vectors: exact k-NN (recall
//! 1.0) on the exact path, and recall@k ≥ 0.9 on the HNSW path. HNSW is an
//! approximate index and pgvector builds it with a per-backend random level
//! generator (and parallel workers), so one true neighbour in ten may be
//! missed on some builds; the run that exposed this missed 1 of 10 at
//! selectivity 1 with `ef_search` 100.

use std::ops::Bound;

use pgvector::Vector;
use quarry_db::testing::TestDb;
use quarry_search::collection::{Collection, CollectionConfig};
use quarry_search::ddl::ensure_sidecar;
use quarry_search::filter::CheckedFilter;
use quarry_search::vector::{VectorOptions, VectorPath, search};
use quarry_search::{Filter, Value};

const N: usize = 30_000;
const DIM: usize = 16;
const CLUSTERS: usize = 20;
const K: usize = 10;

/// xorshift64* (Vigna 2016) with Box–Muller normals: deterministic, no crate.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next_f64(), self.next_f64());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn normalised(v: Vec<f64>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| (x / norm) as f32).collect()
}

fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    1.0 - dot / (na * nb)
}

fn collection() -> Collection {
    let config: CollectionConfig = toml::from_str(
        r#"
        name = "vec"
        source = "public.src"
        key = "id"
        text = [{ name = "body" }]
        filters = [{ name = "r", type = "integer" }, { name = "cluster", type = "integer" }]
        "#,
    )
    .unwrap();
    Collection::from_config(&config, "c").unwrap()
}

struct Doc {
    key: String,
    r: i64,
    cluster: i64,
    vector: Vec<f32>,
}

/// Exact answer: the distance of the k-th nearest matching document, and
/// the distance of every matching document.
fn exact(docs: &[Doc], query: &[f32], matches: impl Fn(&Doc) -> bool) -> Vec<(f64, String)> {
    let mut all: Vec<(f64, String)> = docs
        .iter()
        .filter(|d| matches(d))
        .map(|d| (cosine_distance(&d.vector, query), d.key.clone()))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_search_is_exact_at_every_selectivity() {
    let db = TestDb::create().await;
    let mut client = db.pool().get().await.unwrap();
    client
        .batch_execute("CREATE TABLE public.src (id int PRIMARY KEY)")
        .await
        .unwrap();
    let c = collection();
    ensure_sidecar(&mut client, &c, Some(("synthetic", DIM)))
        .await
        .unwrap();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let centres: Vec<Vec<f64>> = (0..CLUSTERS)
        .map(|_| (0..DIM).map(|_| rng.normal()).collect())
        .collect();
    // r is a permutation of 0..N, independent of the vectors: `r < N·s`
    // selects a fraction s.
    let mut r: Vec<i64> = (0..N as i64).collect();
    for i in (1..N).rev() {
        let j = (rng.next_f64() * (i + 1) as f64) as usize;
        r.swap(i, j.min(i));
    }
    let docs: Vec<Doc> = (0..N)
        .map(|i| {
            let cluster = i % CLUSTERS;
            let v = centres[cluster]
                .iter()
                .map(|c| c + 0.35 * rng.normal())
                .collect();
            Doc {
                key: format!("d{i}"),
                r: r[i],
                cluster: cluster as i64,
                vector: normalised(v),
            }
        })
        .collect();

    // Load without the HNSW index, then build it once.
    let table = c.docs_table();
    client
        .batch_execute(r#"DROP INDEX quarry."search_vec_v0""#)
        .await
        .unwrap();
    for chunk in docs.chunks(5000) {
        let keys: Vec<&str> = chunk.iter().map(|d| d.key.as_str()).collect();
        let rs: Vec<i64> = chunk.iter().map(|d| d.r).collect();
        let clusters: Vec<i64> = chunk.iter().map(|d| d.cluster).collect();
        let vectors: Vec<String> = chunk.iter().map(|d| format!("{:?}", d.vector)).collect();
        client
            .execute(
                &format!(
                    "INSERT INTO {table} (key, version, t_body, f_r, f_cluster, v_body, embedded) \
                     SELECT k, nextval('quarry.search_version'), 'x', r, c, v::vector, true \
                     FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) AS u(k, r, c, v)"
                ),
                &[&keys, &rs, &clusters, &vectors],
            )
            .await
            .unwrap();
    }
    for statement in c.vector_ddl(DIM) {
        if statement.contains("USING hnsw") {
            client.batch_execute(&statement).await.unwrap();
        }
    }
    client
        .batch_execute(&format!("ANALYZE {table}"))
        .await
        .unwrap();

    // ef_search 400 on the broad path: at pgvector's HNSW graph (random
    // levels, so a new graph each run) ef_search 100 missed 5 of the top 10
    // for one clustered query in 2 of about 10 runs, which this test's one
    // allowed miss does not cover; the test is about the paths and the
    // exactness of the exact ones, not HNSW recall at the default
    let options = VectorOptions {
        exact_threshold: 200,
        ef_search_base: 400,
        ..VectorOptions::default()
    };
    let queries: Vec<Vec<f32>> = (0..4)
        .map(|q| {
            normalised(
                centres[q * 3]
                    .iter()
                    .map(|c| c + 0.35 * rng.normal())
                    .collect(),
            )
        })
        .collect();
    let mut paths = Vec::new();
    for s in [1.0, 0.1, 0.01, 0.001, 0.0001] {
        let limit = (N as f64 * s).round() as i64;
        let filter = if s == 1.0 {
            CheckedFilter::all()
        } else {
            Filter::Range {
                field: "r".into(),
                lower: Bound::Unbounded,
                upper: Bound::Excluded(Value::Int(limit)),
            }
            .validate(&c)
            .unwrap()
        };
        for query in &queries {
            let result = search(
                &client,
                &c,
                &Vector::from(query.clone()),
                &filter,
                K,
                K,
                &options,
                &every_text_field(&c),
            )
            .await
            .unwrap();
            let truth = exact(&docs, query, |d| d.r < limit);
            let approximate = matches!(result.path, VectorPath::Hnsw { .. });
            check(
                &result.hits,
                &truth,
                &format!("selectivity {s} ({:?})", result.path),
                if approximate { 1 } else { 0 },
            );
            paths.push((s, result.path));
        }
    }
    // Both paths ran: HNSW for the broad filters, exact for the narrow ones.
    assert!(
        paths
            .iter()
            .any(|(s, p)| *s == 1.0 && matches!(p, VectorPath::Hnsw { ef_search: 400 })),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|(s, p)| *s == 0.1 && matches!(p, VectorPath::Hnsw { ef_search: 1000 })),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .filter(|(s, _)| *s <= 0.01)
            .all(|(_, p)| *p == VectorPath::Exact),
        "{paths:?}"
    );

    // A filter the planner thinks broad (one cluster in 20, 5 %) but far
    // from the query: HNSW finds nothing, the exact fallback answers.
    let fallback = VectorOptions {
        exact_threshold: 0,
        ef_search_base: 40,
        ..VectorOptions::default()
    };
    let far = Filter::Eq {
        field: "cluster".into(),
        value: Value::Int(1),
    }
    .validate(&c)
    .unwrap();
    let query = &queries[0];
    let result = search(
        &client,
        &c,
        &Vector::from(query.clone()),
        &far,
        K,
        K,
        &fallback,
        &every_text_field(&c),
    )
    .await
    .unwrap();
    check(
        &result.hits,
        &exact(&docs, query, |d| d.cluster == 1),
        "far cluster",
        0,
    );
    assert_eq!(result.path, VectorPath::HnswThenExact { ef_search: 800 });
    drop(client);
    db.drop_db().await;
}

/// The hits match the filter, carry their true distance, and all but at
/// most `misses` of them are in the exact top k (up to float ties at the
/// k-th distance).
fn check(
    hits: &[quarry_search::vector::VectorHit],
    truth: &[(f64, String)],
    what: &str,
    misses: usize,
) {
    let want = truth.len().min(K);
    assert_eq!(hits.len(), want, "{what}: hits");
    if want == 0 {
        return;
    }
    let kth = truth[want - 1].0;
    let mut seen = std::collections::HashSet::new();
    let mut outside = Vec::new();
    for hit in hits {
        assert!(seen.insert(&hit.key), "{what}: duplicate {}", hit.key);
        let d = truth
            .iter()
            .find(|(_, k)| *k == hit.key)
            .unwrap_or_else(|| panic!("{what}: {} does not match the filter", hit.key))
            .0;
        if d > kth + 1e-5 {
            outside.push(format!("{} at {d}", hit.key));
        }
        assert!(
            (d - hit.distance).abs() < 1e-4,
            "{what}: distance {d} vs {}",
            hit.distance
        );
    }
    assert!(
        outside.len() <= misses,
        "{what}: not in the top {K} (k-th distance {kth}): {outside:?}"
    );
}

/// The names of `collection`'s text fields: search all their vectors.
fn every_text_field(collection: &Collection) -> Vec<String> {
    collection.text.iter().map(|f| f.name.clone()).collect()
}
