use super::*;
use quarry_db::testing::TestDb;

#[tokio::test]
async fn describes_keys_and_comments() {
    let db = TestDb::create().await;
    let client = db.pool().get().await.unwrap();
    client
        .batch_execute(
            "CREATE SCHEMA tate;
             CREATE TABLE tate.artists (
                 id int PRIMARY KEY,
                 name text NOT NULL
             );
             CREATE TABLE tate.artworks (
                 id int PRIMARY KEY,
                 title varchar(200),
                 artist_id int REFERENCES tate.artists (id),
                 acquired timestamptz,
                 dropped int
             );
             ALTER TABLE tate.artworks DROP COLUMN dropped;
             CREATE TABLE tate.tags (
                 artwork_id int, tag text, weight double precision,
                 PRIMARY KEY (artwork_id, tag)
             );
             CREATE TABLE tate.tag_votes (
                 artwork_id int, tag text, votes bigint,
                 FOREIGN KEY (artwork_id, tag) REFERENCES tate.tags (artwork_id, tag)
             );
             CREATE VIEW tate.titles AS SELECT title FROM tate.artworks;
             CREATE TABLE public.other (id int);
             COMMENT ON TABLE tate.artworks IS 'works in the
                 collection';
             COMMENT ON COLUMN tate.artworks.title IS 'title of the work';
             INSERT INTO tate.artists SELECT g, 'artist ' || g FROM generate_series(1, 1500) g;
             ANALYZE tate.artists;",
        )
        .await
        .unwrap();

    let tables = describe_schema(&**client, &["tate".to_string()])
        .await
        .unwrap();
    let names: Vec<String> = tables.iter().map(TableInfo::qualified_name).collect();
    assert_eq!(
        names,
        [
            "tate.artists",
            "tate.artworks",
            "tate.tag_votes",
            "tate.tags",
            "tate.titles"
        ]
    );
    let artists = &tables[0];
    assert_eq!(artists.primary_key, ["id"]);
    assert_eq!(artists.estimated_rows, Some(1500));
    assert!(!artists.columns[1].nullable);

    let artworks = &tables[1];
    assert_eq!(artworks.kind, TableKind::Table);
    assert_eq!(artworks.primary_key, ["id"]);
    assert_eq!(
        artworks.comment.as_deref(),
        Some("works in the\n                 collection")
    );
    assert_eq!(
        artworks
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.data_type.as_str()))
            .collect::<Vec<_>>(),
        [
            ("id", "integer"),
            ("title", "character varying(200)"),
            ("artist_id", "integer"),
            ("acquired", "timestamp with time zone"),
        ]
    );
    assert_eq!(
        artworks.columns[1].comment.as_deref(),
        Some("title of the work")
    );
    assert!(artworks.columns[1].nullable);
    assert_eq!(
        artworks.foreign_keys,
        [ForeignKey {
            name: "artworks_artist_id_fkey".into(),
            columns: vec!["artist_id".into()],
            referenced_schema: "tate".into(),
            referenced_table: "artists".into(),
            referenced_columns: vec!["id".into()],
        }]
    );
    let tags = &tables[3];
    assert_eq!(tags.primary_key, ["artwork_id", "tag"]);
    let votes = &tables[2];
    assert_eq!(votes.foreign_keys[0].columns, ["artwork_id", "tag"]);
    assert_eq!(
        votes.foreign_keys[0].referenced_columns,
        ["artwork_id", "tag"]
    );
    let view = &tables[4];
    assert_eq!(view.kind, TableKind::View);
    assert_eq!(view.estimated_rows, None);

    let text = compact_description(&tables);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "tate.artists(id int PK, name text) -- 1,500 rows",
            "tate.artworks(id int PK, title varchar(200) -- title of the work, \
             artist_id int -> tate.artists.id, acquired timestamptz) -- works in the collection",
            "tate.tag_votes(artwork_id int, tag text, votes int8, \
             FK(artwork_id, tag) -> tate.tags(artwork_id, tag))",
            "tate.tags(artwork_id int, tag text, weight float8, PK(artwork_id, tag))",
            "view tate.titles(title varchar(200))",
        ]
    );
    drop(client);
    db.drop_db().await;
}

#[test]
fn formats_numbers_and_types() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(69_202), "69,202");
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(short_type("timestamp(3) with time zone"), "timestamptz(3)");
    assert_eq!(short_type("timestamp(3) without time zone"), "timestamp(3)");
    assert_eq!(short_type("character varying[]"), "varchar[]");
    assert_eq!(short_type("numeric(10,2)"), "numeric(10,2)");
}
