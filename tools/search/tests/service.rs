#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::wildcard_enum_match_arm
)]
//! The search tool end to end over a real PostgreSQL: modes, fusion, fields,
//! the rerank hook, the follower, and bad input.

use std::sync::Arc;

use futures::future::BoxFuture;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use quarry_auth::{Caller, Principal};
use quarry_db::testing::TestDb;
use quarry_llm::embed::Embedder;
use quarry_proto::v1 as pb;
use quarry_search::grpc::{request_from_proto, status_of};
use quarry_search::service::{FieldData, Hit};
use quarry_search::{
    CollectionConfig, Filter, Mode, Reranker, SearchConfig, SearchError, SearchRequest, SearchTool,
    Value,
};
use tonic_types::StatusExt;

const DIM: usize = 8;

struct Scripted;
impl Embedder for Scripted {
    fn model_id(&self) -> &str {
        "scripted"
    }
    fn dimension(&self) -> usize {
        DIM
    }
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, quarry_llm::Result<Vec<Vec<f32>>>> {
        Box::pin(async move { Ok(texts.iter().map(|t| unit(t)).collect()) })
    }
}

fn unit(text: &str) -> Vec<f32> {
    let v = quarry_llm::testing::scripted_embedding(text, DIM);
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn config(dir: &std::path::Path) -> SearchConfig {
    let collection: CollectionConfig = toml::from_str(
        r#"
        name = "docs"
        source = "public.src"
        key = "id"
        text = [{ name = "title" }, { name = "body" }]
        filters = [{ name = "tag", type = "keyword" }, { name = "year", type = "integer" }]
        stored = [{ name = "url" }]
        "#,
    )
    .unwrap();
    SearchConfig {
        index_dir: dir.to_owned(),
        collections: vec![collection],
        ..SearchConfig::default()
    }
}

const DOCS: &[(&str, &str, &str, &str, i64)] = &[
    ("1", "Dogs", "the dog runs in the park", "animals", 2001),
    ("2", "Cats", "a cat sleeps all day", "animals", 2005),
    (
        "3",
        "Rust",
        "memory safety without garbage collection",
        "tech",
        2015,
    ),
    ("4", "Parks", "green parks in the city", "places", 2010),
];

async fn insert(
    client: &tokio_postgres::Client,
    id: &str,
    title: &str,
    body: &str,
    tag: &str,
    year: i64,
) {
    let tv = pgvector::Vector::from(unit(title));
    let bv = pgvector::Vector::from(unit(body));
    let url = serde_json::json!({ "url": format!("https://example.org/{id}") });
    client
        .execute(
            "INSERT INTO quarry.search_docs (key, version, t_title, t_body, f_tag, f_year, stored, embedded, v_title, v_body) \
             VALUES ($1, nextval('quarry.search_version'), $2, $3, $4, $5, $6, true, $7, $8)",
            &[&id, &title, &body, &tag, &year, &url, &tv, &bv],
        )
        .await
        .unwrap();
}

async fn setup(embedder: bool) -> (TestDb, Arc<SearchTool>, std::path::PathBuf) {
    let db = TestDb::create().await;
    let client = db.pool().get().await.unwrap();
    client
        .batch_execute("CREATE TABLE public.src (id int PRIMARY KEY)")
        .await
        .unwrap();
    drop(client);
    let dir = std::env::temp_dir().join(format!("quarry-search-{}", uuid::Uuid::new_v4()));
    // The sidecar always gets vector columns, so the same rows serve both tools.
    let e: Arc<dyn Embedder> = Arc::new(Scripted);
    let first = SearchTool::open(
        db.pool().clone(),
        db.url().to_owned(),
        config(&dir),
        Some(e.clone()),
    )
    .await
    .unwrap();
    let client = db.pool().get().await.unwrap();
    for (id, title, body, tag, year) in DOCS {
        insert(&client, id, title, body, tag, *year).await;
    }
    let tool = if embedder {
        first
    } else {
        drop(first);
        SearchTool::open(db.pool().clone(), db.url().to_owned(), config(&dir), None)
            .await
            .unwrap()
    };
    tool.catch_up().await.unwrap();
    (db, Arc::new(tool), dir)
}

fn request(query: &str, mode: Mode) -> SearchRequest {
    SearchRequest {
        collection: "docs".into(),
        query: query.into(),
        mode,
        ..SearchRequest::default()
    }
}

fn field_of(e: SearchError) -> String {
    match e {
        SearchError::InvalidArgument { field, .. } => field,
        other => panic!("not invalid argument: {other}"),
    }
}

#[tokio::test]
async fn modes_fields_and_filters() {
    let (db, tool, dir) = setup(true).await;

    let r = tool
        .search(&caller(), request("running dogs", Mode::Bm25))
        .await
        .unwrap();
    assert_eq!(r.mode, Mode::Bm25);
    assert_eq!(r.hits[0].key, "1");
    assert_eq!(r.hits.len(), 1);
    assert_eq!(r.documents, 4);
    assert_eq!(r.embedded_documents, 4);
    assert_eq!(
        r.hits[0].fields.get("url"),
        Some(&FieldData::Text("https://example.org/1".into()))
    );

    // The text of a body, embedded, is nearest to that document.
    let r = tool
        .search(
            &caller(),
            request("memory safety without garbage collection", Mode::Vector),
        )
        .await
        .unwrap();
    assert_eq!(r.hits[0].key, "3");
    assert!((r.hits[0].score - 1.0).abs() < 1e-4, "{}", r.hits[0].score);
    assert!(r.exact_vector_search);
    assert_eq!(r.hits.len(), 4);

    let mut hybrid = request("the park", Mode::Hybrid);
    hybrid.filter = Some(Filter::Eq {
        field: "tag".into(),
        value: Value::Text("animals".into()),
    });
    hybrid.fields = vec!["year".into(), "title".into()];
    let r = tool.search(&caller(), hybrid).await.unwrap();
    assert_eq!(r.mode, Mode::Hybrid);
    let keys: Vec<&str> = r.hits.iter().map(|h| h.key.as_str()).collect();
    assert_eq!(keys, ["1", "2"]);
    let top = &r.hits[0];
    assert_eq!(top.bm25.unwrap().rank, 1);
    assert!(top.vector.is_some());
    assert!(top.score > r.hits[1].score);
    assert_eq!(top.fields.get("year"), Some(&FieldData::Int(2001)));
    assert_eq!(
        top.fields.get("title"),
        Some(&FieldData::Text("Dogs".into()))
    );
    assert!(!top.fields.contains_key("url"));

    // Bad input names the field.
    let mut r = request("dog", Mode::Bm25);
    r.collection = "nope".into();
    assert_eq!(
        field_of(tool.search(&caller(), r).await.unwrap_err()),
        "collection"
    );
    let mut r = request("dog", Mode::Bm25);
    r.k = 1001;
    assert_eq!(field_of(tool.search(&caller(), r).await.unwrap_err()), "k");
    let mut r = request("dog", Mode::Bm25);
    r.fields = vec!["title".into(), "nope".into()];
    assert_eq!(
        field_of(tool.search(&caller(), r).await.unwrap_err()),
        "fields[1]"
    );
    assert_eq!(
        field_of(
            tool.search(&caller(), request("the of and", Mode::Bm25))
                .await
                .unwrap_err()
        ),
        "query"
    );
    assert_eq!(
        field_of(
            tool.search(&caller(), request("  ", Mode::Hybrid))
                .await
                .unwrap_err()
        ),
        "query"
    );
    let mut r = request("dog", Mode::Bm25);
    r.filter = Some(Filter::Or(vec![Filter::Eq {
        field: "year".into(),
        value: Value::Text("2001".into()),
    }]));
    let e = tool.search(&caller(), r).await.unwrap_err();
    let status = status_of(&e);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "filter.or[0].eq.value");

    let count = tool
        .search(&caller(), request("dog", Mode::Bm25))
        .await
        .unwrap();
    assert_eq!(count.hits.len(), 1);
    drop(tool);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn without_an_embedder_vector_fails_and_hybrid_is_bm25() {
    let (db, tool, dir) = setup(false).await;
    let e = tool
        .search(&caller(), request("dog", Mode::Vector))
        .await
        .unwrap_err();
    assert!(matches!(e, SearchError::FailedPrecondition(_)), "{e}");
    assert_eq!(status_of(&e).code(), tonic::Code::FailedPrecondition);
    let r = tool
        .search(&caller(), request("dog", Mode::Hybrid))
        .await
        .unwrap();
    assert_eq!(r.mode, Mode::Bm25);
    assert_eq!(r.hits[0].key, "1");
    assert!(r.hits[0].vector.is_none());
    drop(tool);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_given_query_vector_is_used_instead_of_the_embedder() {
    // No embedder: the vector retriever runs only on the vector given.
    let (db, tool, dir) = setup(false).await;
    // The query text is about Rust; the vector is the title "Dogs".
    let text = "memory safety without garbage collection";
    let r = tool
        .search_with_query_vector(&caller(), request(text, Mode::Vector), unit("Dogs"))
        .await
        .unwrap();
    assert_eq!(r.mode, Mode::Vector);
    assert_eq!(r.hits[0].key, "1");
    assert!((r.hits[0].score - 1.0).abs() < 1e-4, "{}", r.hits[0].score);
    assert_eq!(r.embed_ms, 0.0);
    assert!(r.exact_vector_search);

    let r = tool
        .search_with_query_vector(&caller(), request(text, Mode::Hybrid), unit("Dogs"))
        .await
        .unwrap();
    assert_eq!(r.mode, Mode::Hybrid);
    let keys: Vec<&str> = r.hits.iter().map(|h| h.key.as_str()).collect();
    assert!(keys.contains(&"1") && keys.contains(&"3"), "{keys:?}");
    assert!(r.hits.iter().any(|h| h.bm25.is_some()));
    assert!(r.hits.iter().any(|h| h.vector.is_some()));

    // A wrong length or a non-finite component is INVALID_ARGUMENT on query_vector.
    let e = tool
        .search_with_query_vector(&caller(), request("dog", Mode::Vector), vec![0.5; DIM + 1])
        .await
        .unwrap_err();
    assert_eq!(status_of(&e).code(), tonic::Code::InvalidArgument);
    assert_eq!(field_of(e), "query_vector");
    let mut nan = unit("Dogs");
    nan[2] = f32::NAN;
    let e = tool
        .search_with_query_vector(&caller(), request("dog", Mode::Hybrid), nan)
        .await
        .unwrap_err();
    assert_eq!(field_of(e), "query_vector");
    drop(tool);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Puts hits in key order, descending, and says so in the score.
struct ReverseKeys;
impl Reranker for ReverseKeys {
    fn rerank(
        &self,
        query: String,
        mut hits: Vec<Hit>,
    ) -> BoxFuture<'static, quarry_search::Result<Vec<Hit>>> {
        Box::pin(async move {
            assert!(
                hits.iter().all(|h| h.fields.contains_key("body")),
                "{query}: text given"
            );
            hits.sort_by(|a, b| b.key.cmp(&a.key));
            for (i, h) in hits.iter_mut().enumerate() {
                h.score = -(i as f64);
            }
            Ok(hits)
        })
    }
}

#[tokio::test]
async fn reranker_reorders_the_fused_list() {
    let (db, tool, dir) = setup(true).await;
    let tool = Arc::into_inner(tool)
        .unwrap()
        .with_reranker(Arc::new(ReverseKeys));
    let mut r = request("dog park", Mode::Hybrid);
    r.k = 2;
    let r = tool.search(&caller(), r).await.unwrap();
    let keys: Vec<&str> = r.hits.iter().map(|h| h.key.as_str()).collect();
    assert_eq!(keys, ["4", "3"]);
    assert!(
        !r.hits[0].fields.contains_key("body"),
        "only requested fields return"
    );
    drop(tool);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_follower_picks_up_writes_and_tombstones() {
    let (db, tool, dir) = setup(true).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = tool.spawn_follower(async {
        let _ = stopped.await;
    });
    let client = db.pool().get().await.unwrap();
    insert(&client, "5", "Zebras", "a zebra gallops", "animals", 2020).await;
    client
        .batch_execute(
            "UPDATE quarry.search_docs SET deleted = true, version = nextval('quarry.search_version') WHERE key = '1'; \
             NOTIFY quarry_search_docs, 'docs'",
        )
        .await
        .unwrap();
    let mut seen = false;
    for _ in 0..200 {
        let zebra = tool
            .search(&caller(), request("zebra", Mode::Bm25))
            .await
            .unwrap();
        let dog = tool
            .search(&caller(), request("dog", Mode::Bm25))
            .await
            .unwrap();
        if zebra.hits.len() == 1 && dog.hits.is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen, "the follower never applied the writes");
    stop.send(()).unwrap();
    follower.await.unwrap();
    drop(tool);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hostile_query_text_never_fails_otherwise() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (db, tool, dir) = runtime.block_on(setup(false));
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    runner
        .run(
            &prop_oneof![
                any::<String>(),
                "[a-z:()\\[\\]{}\"'*?~^+\\-!&|/\\\\ ]{0,40}",
                Just("title:(dog AND \"cat".to_owned()),
                Just("*".repeat(100)),
            ],
            |query| {
                match runtime.block_on(tool.search(&caller(), request(&query, Mode::Hybrid))) {
                    Ok(r) => prop_assert!(r.hits.len() <= 10),
                    Err(SearchError::InvalidArgument { field, .. }) => {
                        prop_assert_eq!(field, "query")
                    }
                    Err(e) => prop_assert!(false, "{query:?}: {e}"),
                }
                Ok(())
            },
        )
        .unwrap();
    // The proto conversion of a deep filter is refused, not recursed without end.
    let mut f = pb::Filter {
        kind: Some(pb::filter::Kind::Eq(pb::FieldValue {
            field: "year".into(),
            value: None,
        })),
    };
    for _ in 0..100 {
        f = pb::Filter {
            kind: Some(pb::filter::Kind::Not(Box::new(f))),
        };
    }
    let e = request_from_proto(&pb::SearchRequest {
        filter: Some(f),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, SearchError::InvalidArgument { .. }));
    drop(tool);
    runtime.block_on(db.drop_db());
    let _ = std::fs::remove_dir_all(dir);
}

fn caller() -> Caller {
    Caller::operator(Principal {
        tenant: "t1".into(),
        subject: "tester".into(),
        roles: vec![],
        scopes: vec![],
    })
}

/// A tenant whose share of concurrent searches is taken is told to retry
/// (RESOURCE_EXHAUSTED with RetryInfo); another tenant searches as usual.
#[tokio::test]
async fn a_tenant_past_its_share_of_searches_is_told_to_retry() {
    let (db, tool, dir) = setup(false).await;
    let shares = tool.tenant_shares().clone();
    let mut held = Vec::new();
    for _ in 0..shares.limit() {
        held.push(shares.acquire("t1").await.unwrap());
    }
    let busy = tool
        .search(&caller(), request("dog", Mode::Bm25))
        .await
        .unwrap_err();
    assert!(matches!(busy, SearchError::Busy(_)), "{busy}");
    let status = quarry_proto::status_of(&busy);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let other = Caller::operator(Principal {
        tenant: "t2".into(),
        subject: "tester".into(),
        roles: vec![],
        scopes: vec![],
    });
    assert!(
        tool.search(&other, request("dog", Mode::Bm25))
            .await
            .is_ok()
    );
    drop(held);
    assert!(
        tool.search(&caller(), request("dog", Mode::Bm25))
            .await
            .is_ok()
    );
    drop(tool);
    db.drop_db().await;
    drop(dir);
}

#[tokio::test]
async fn a_partly_embedded_collection_ranks_bm25_hits_above_vector_only_ones() {
    // one of four documents embedded: the vector side speaks for a quarter
    // of the collection, so its weight is a quarter
    let (db, tool, dir) = setup(false).await;
    db.pool()
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE quarry.search_docs SET embedded = false, v_title = NULL, v_body = NULL \
             WHERE key <> '1'",
            &[],
        )
        .await
        .unwrap();
    // BM25 finds only "Rust" (3); the vector, the title "Dogs", finds only
    // the one embedded document (1), which shares no word with the query
    let text = "memory safety without garbage collection";
    let r = tool
        .search_with_query_vector(&caller(), request(text, Mode::Hybrid), unit("Dogs"))
        .await
        .unwrap();
    assert_eq!((r.documents, r.embedded_documents), (4, 1));
    let keys: Vec<&str> = r.hits.iter().map(|h| h.key.as_str()).collect();
    // at equal weights the two first ranks tie and "1" would win the tie
    assert_eq!(keys[..2], ["3", "1"], "{keys:?}");
    drop(tool);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The embedded count is refreshed after [`quarry_search::service::COUNT_TTL`]
/// whenever a write could have changed it, though the refresh skips the
/// full count when the sidecar's fingerprint is unchanged: embedding (or
/// un-embedding) rows keeps their versions but changes the pending rows,
/// and a deletion gives the row a new version but leaves the pending rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_count_follows_every_kind_of_write() {
    use quarry_search::service::COUNT_TTL;

    let (db, tool, dir) = setup(false).await;
    let text = "dog";
    let counts = || async {
        let r = tool
            .search_with_query_vector(&caller(), request(text, Mode::Hybrid), unit("Dogs"))
            .await
            .unwrap();
        (r.documents, r.embedded_documents)
    };
    // the next search after COUNT_TTL starts the refresh; poll until it shows
    let settles_at = |want: (u64, u64)| {
        let counts = &counts;
        async move {
            tokio::time::sleep(COUNT_TTL + std::time::Duration::from_millis(100)).await;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let got = counts().await;
                if got == want {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{got:?}, want {want:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(counts().await, (4, 4));
    let client = db.pool().get().await.unwrap();
    // un-embedded, versions kept: only the pending rows change
    client
        .execute(
            "UPDATE quarry.search_docs SET embedded = false, v_title = NULL, v_body = NULL \
             WHERE key IN ('2', '3')",
            &[],
        )
        .await
        .unwrap();
    settles_at((4, 2)).await;
    // an embedded row deleted with a new version: only the version changes
    client
        .execute(
            "UPDATE quarry.search_docs SET deleted = true, \
             version = nextval('quarry.search_version') WHERE key = '1'",
            &[],
        )
        .await
        .unwrap();
    tool.catch_up().await.unwrap();
    settles_at((3, 1)).await;
    drop(client);
    drop(tool);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
}
