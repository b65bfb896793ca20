#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `ensure_sidecar` against a real PostgreSQL with pgvector.

use quarry_db::testing::TestDb;
use quarry_search::collection::{Collection, CollectionConfig, CollectionError};
use quarry_search::ddl::ensure_sidecar;

fn collection(extra_stored: bool) -> Collection {
    let mut config: CollectionConfig = toml::from_str(
        r#"
        name = "docs"
        source = "public.src"
        key = "id"
        text = [{ name = "body" }]
        filters = [{ name = "tag", type = "keyword" }]
        "#,
    )
    .unwrap();
    if extra_stored {
        config.stored.push(quarry_search::collection::FieldConfig {
            name: "tag_copy".into(),
            column: Some("tag".into()),
            sql: None,
        });
    }
    Collection::from_config(&config, "c").unwrap()
}

#[tokio::test]
async fn records_the_embedder_and_refuses_another() {
    let db = TestDb::create().await;
    let mut client = db.pool().get().await.unwrap();
    client
        .batch_execute("CREATE TABLE public.src (id int PRIMARY KEY, body text, tag text)")
        .await
        .unwrap();
    let c = collection(false);

    let state = ensure_sidecar(&mut client, &c, None).await.unwrap();
    assert!(state.created);
    assert_eq!(state.embedder, None);
    // Same definition again: nothing recreated; an embedder given now is recorded.
    let state = ensure_sidecar(&mut client, &c, Some(("m1", 8)))
        .await
        .unwrap();
    assert!(!state.created);
    assert_eq!(state.embedder, Some(("m1".into(), 8)));
    client
        .execute(
            "INSERT INTO quarry.search_docs (key, version, t_body, v_body) VALUES ('1', 1, 'x', '[1,0,0,0,0,0,0,0]')",
            &[],
        )
        .await
        .unwrap();

    let error = ensure_sidecar(&mut client, &c, Some(("m2", 8)))
        .await
        .unwrap_err();
    assert!(
        matches!(error, CollectionError::EmbedderMismatch { .. }),
        "{error}"
    );
    let error = ensure_sidecar(&mut client, &c, Some(("m1", 16)))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("m1 (8 dims)"), "{error}");

    // A changed definition recreates the (now empty) sidecar, keeping the embedder.
    let state = ensure_sidecar(&mut client, &collection(true), None)
        .await
        .unwrap();
    assert!(state.created);
    assert_eq!(state.embedder, Some(("m1".into(), 8)));
    let n: i64 = client
        .query_one("SELECT count(*) FROM quarry.search_docs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_missing_source_is_an_error() {
    let db = TestDb::create().await;
    let mut client = db.pool().get().await.unwrap();
    let error = ensure_sidecar(&mut client, &collection(false), None)
        .await
        .unwrap_err();
    assert!(matches!(error, CollectionError::Source { .. }), "{error}");
}
