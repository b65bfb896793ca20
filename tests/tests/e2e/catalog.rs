//! The stored schema catalog: `quarry catalog refresh` writes tables, columns,
//! `pg_stats` figures and embeddings to the `quarry` schema; an unchanged
//! catalog reuses the stored vectors, a changed one is re-embedded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_llm::testing::{SCRIPTED_EMBEDDING_DIMENSION, ScriptedServer};
use quarry_tests::{Options, TestServer};

#[tokio::test]
async fn the_catalog_is_stored_with_embeddings_and_refreshed_when_it_changes() {
    let embeddings = ScriptedServer::start(vec![]).await;
    let server = TestServer::start(Options::default()).await;
    let toml = format!(
        r#"
        [database]
        url = "{url}"
        [auth]
        jwt_secret = "{secret}"
        [sql]
        schemas = ["tate"]
        [embedding]
        kind = "openai"
        base_url = "{base}"
        model = "scripted-embedder"
        dimension = {dim}
        "#,
        url = server.db.url(),
        secret = quarry_tests::SECRET,
        base = embeddings.base_url(),
        dim = SCRIPTED_EMBEDDING_DIMENSION,
    );
    let config = quarry_server::Config::from_toml_layers(&[&toml]).unwrap();
    let tool = quarry_server::sql_tool(&config, None).await.unwrap();

    let first = tool.refresh_catalog().await.unwrap();
    assert!(first.stored && first.embedded && !first.reused, "{first:?}");
    assert_eq!(first.tables, 9, "the eight Tate tables and tenant_eras");
    let client = server.db.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), count(embedding) FROM quarry.catalog_columns WHERE table_name = 'artworks'",
            &[],
        )
        .await
        .unwrap();
    let (columns, embedded): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        columns > 10 && columns == embedded,
        "{columns} columns, {embedded} embedded"
    );
    let stats: i64 = client
        .query_one(
            "SELECT count(*) FROM quarry.catalog_columns WHERE null_frac IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stats > 0, "no pg_stats figures stored");
    let classification: Vec<String> = client
        .query_one(
            "SELECT most_common_vals FROM quarry.catalog_columns WHERE table_name = 'artworks' AND column_name = 'classification'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !classification.is_empty(),
        "low-cardinality text column lost its common values"
    );

    // a new process with the same catalog reuses the stored vectors
    let requests_before = embeddings.requests().len();
    let again = quarry_server::sql_tool(&config, None).await.unwrap();
    let index = again.schema_index().await.unwrap();
    assert!(index.embeddings().0.is_some());
    assert_eq!(
        embeddings.requests().len(),
        requests_before,
        "stored vectors were not reused"
    );

    // a changed catalog (a new comment) is detected by its hash and rebuilt
    let hash_before = first.hash.clone();
    client
        .batch_execute("COMMENT ON COLUMN tate.artworks.medium IS 'what the work is made of'")
        .await
        .unwrap();
    let third = quarry_server::sql_tool(&config, None).await.unwrap();
    third.schema_index().await.unwrap();
    assert!(
        embeddings.requests().len() > requests_before,
        "changed catalog was not re-embedded"
    );
    let stored_hash: String = client
        .query_one(
            "SELECT catalog_hash FROM quarry.catalog_state WHERE source = 'default'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(stored_hash, hash_before);
    server.stop().await;
}
