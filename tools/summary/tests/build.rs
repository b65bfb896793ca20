#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::wildcard_enum_match_arm
)]
//! The builder over a real PostgreSQL: skipping unchanged entities,
//! rebuilding changed ones, failures per entity, removal, the build lock,
//! determinism across databases, facts checked against independent SQL, and
//! definitions refused at start-up.

#[path = "support/fixture.rs"]
mod fixture;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fixture::{ENTITIES, Scripted};
use quarry_db::testing::{TestDb, pool_for};
use quarry_summary::{
    BUILD_LOCK_KEY, BuildOptions, BuildProgressEvent, BuildReport, GetRequest, SummaryError,
    SummaryTool,
};

async fn build(tool: &SummaryTool, options: BuildOptions) -> BuildReport {
    tool.build(options, &|_| {}).await.unwrap()
}

async fn get_key(tool: &SummaryTool, kind: &str, key: &str) -> quarry_summary::Summary {
    let mut response = tool
        .get(
            &fixture::caller(),
            GetRequest {
                kind: Some(kind.into()),
                entity: Some(key.into()),
                ..GetRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(response.matched, quarry_summary::MatchKind::Key);
    response.summaries.remove(0)
}

#[tokio::test]
async fn second_build_skips_unchanged_entities() {
    let db = fixture::database().await;
    let tool = fixture::open_embedded(&db).await;
    let events = Mutex::new(Vec::<BuildProgressEvent>::new());
    let first = tool
        .build(BuildOptions::all("test"), &|e| {
            events.lock().unwrap().push(e)
        })
        .await
        .unwrap();
    assert_eq!(
        (
            first.entities,
            first.built,
            first.unchanged,
            first.failed,
            first.removed
        ),
        (ENTITIES, ENTITIES, 0, 0, 0),
        "{first:?}"
    );
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    // progress: each kind starts at 0 and ends at its total, batches of 3
    let events = events.into_inner().unwrap();
    let artist: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == "artist")
        .map(|e| e.done)
        .collect();
    assert_eq!(artist, [0, 3, 6, 8]);
    assert!(
        events
            .iter()
            .filter(|e| e.kind != "embeddings")
            .all(|e| e.total == if e.kind == "artist" { 8 } else { 1 })
    );
    // texts first, then the embeddings phase over every new text
    if let Some(last) = events.last().filter(|e| e.kind == "embeddings") {
        assert_eq!((last.done, last.total), (ENTITIES, ENTITIES));
        assert_eq!(first.embedded, ENTITIES);
    }

    let before = fixture::stored(&db).await;
    let turner = get_key(&tool, "artist", "558").await;
    let second = build(&tool, BuildOptions::all("test")).await;
    assert_eq!(
        (
            second.entities,
            second.built,
            second.unchanged,
            second.failed
        ),
        (ENTITIES, 0, ENTITIES, 0),
        "{second:?}"
    );
    assert_eq!(fixture::stored(&db).await, before);
    let again = get_key(&tool, "artist", "558").await;
    assert_eq!(again.computed_at, turner.computed_at);
    assert!(again.checked_at > turner.checked_at);

    // every summary is embedded by the scripted model
    let client = db.pool().get().await.unwrap();
    let unembedded: i64 = client
        .query_one(
            "SELECT count(*) FROM quarry.summaries WHERE embedding IS NULL OR embedder <> 'scripted'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unembedded, 0);

    // the run is recorded, and the kinds report their counts
    let last = tool.last_build(&fixture::caller()).await.unwrap().unwrap();
    assert_eq!(last, second);
    let kinds = tool.kinds(&fixture::caller()).await.unwrap();
    assert_eq!(kinds.len(), 2);
    assert_eq!(
        (kinds[0].name.as_str(), kinds[0].summaries, kinds[0].failed),
        ("artist", 8, 0)
    );
    assert!(kinds[0].oldest_checked_at.is_some());
    assert_eq!(
        (kinds[1].name.as_str(), kinds[1].summaries),
        ("collection", 1)
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_changed_row_rebuilds_only_its_entity_and_force_rebuilds_all() {
    let db = fixture::database().await;
    let tool = fixture::open_embedded(&db).await;
    build(&tool, BuildOptions::all("test")).await;
    let hockney = get_key(&tool, "artist", "1293").await;
    assert!(
        hockney.text.contains("Etching (2; 66.7%)"),
        "{}",
        hockney.text
    );

    let client = db.pool().get().await.unwrap();
    client
        .execute(
            "UPDATE tate.artworks SET medium = 'Lithograph' WHERE id = 17",
            &[],
        )
        .await
        .unwrap();
    let report = build(&tool, BuildOptions::all("test")).await;
    assert_eq!(
        (report.built, report.unchanged, report.failed),
        (1, ENTITIES - 1, 0),
        "{report:?}"
    );
    let rebuilt = get_key(&tool, "artist", "1293").await;
    assert_ne!(rebuilt.text, hockney.text);
    assert_ne!(rebuilt.data_version, hockney.data_version);
    assert_eq!(
        rebuilt.text,
        "David Hockney: 3 works in the collection, acquired 1960s\u{2013}1990s, most in the 1960s \
         (1; 33.3%). Media: Acrylic paint on canvas (1; 33.3%), Etching (1; 33.3%) and 1 more."
    );
    assert!(rebuilt.computed_at > hockney.computed_at);

    let forced = build(
        &tool,
        BuildOptions {
            force: true,
            ..BuildOptions::all("test")
        },
    )
    .await;
    assert_eq!((forced.built, forced.unchanged), (ENTITIES, 0));

    // chosen entities of one kind; an unknown key is reported
    let chosen = build(
        &tool,
        BuildOptions {
            kinds: vec!["artist".into()],
            entity_keys: vec!["1293".into(), "404".into()],
            force: true,
            trigger: "test".into(),
        },
    )
    .await;
    assert_eq!(
        (chosen.entities, chosen.built, chosen.failed, chosen.removed),
        (2, 1, 1, 0)
    );
    assert_eq!(chosen.failures[0].entity_key, "404");
    assert!(
        chosen.failures[0]
            .error
            .contains("not an entity of kind artist")
    );

    let no_kind = tool
        .build(
            BuildOptions {
                entity_keys: vec!["1293".into()],
                ..BuildOptions::all("test")
            },
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(no_kind, SummaryError::InvalidArgument { ref field, .. } if field == "entity_keys")
    );
    let unknown = tool
        .build(
            BuildOptions {
                kinds: vec!["artist".into(), "painter".into()],
                ..BuildOptions::all("test")
            },
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, SummaryError::InvalidArgument { ref field, ref message } if field == "kinds[1]" && message.contains("artist, collection")),
        "{unknown}"
    );
    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn a_failing_entity_is_reported_and_the_rest_build() {
    let db = fixture::database().await;
    let good = fixture::open_embedded(&db).await;
    build(&good, BuildOptions::all("test")).await;
    let hepworth = get_key(&good, "artist", "11").await;

    // a figure that divides by zero for Barbara Hepworth (11) only
    let mut config = fixture::config();
    let mut check = config.kinds[0].figures[1].clone();
    check.name = "check".into();
    check.shape = quarry_summary::Shape::Values;
    check.top = None;
    check.sql = "SELECT 100 / (id - 11) AS x FROM tate.artists WHERE id = $1".into();
    config.kinds[0].figures.push(check);
    let bad = SummaryTool::open(db.pool().clone(), config, Some(Arc::new(Scripted)))
        .await
        .unwrap();
    let report = build(&bad, BuildOptions::all("test")).await;
    // the artist definition changed: every other artist is rebuilt
    assert_eq!(
        (report.built, report.unchanged, report.failed),
        (ENTITIES - 2, 1, 1),
        "{report:?}"
    );
    let failure = &report.failures[0];
    assert_eq!(
        (
            failure.kind.as_str(),
            failure.entity_key.as_str(),
            failure.entity_name.as_str()
        ),
        ("artist", "11", "Barbara Hepworth")
    );
    assert!(
        failure.error.contains("figure check: division by zero"),
        "{}",
        failure.error
    );
    assert!(
        !failure.unavailable,
        "a division by zero is the data's, not the database being away"
    );

    // the stored summary keeps its text and says the latest build failed
    let after = get_key(&bad, "artist", "11").await;
    assert_eq!(after.text, hepworth.text);
    assert_eq!(after.computed_at, hepworth.computed_at);
    assert!(
        after
            .last_error
            .as_deref()
            .unwrap()
            .contains("division by zero")
    );
    let kinds = bad.kinds(&fixture::caller()).await.unwrap();
    assert_eq!(kinds[0].failed, 1);
    // other entities were rebuilt with the new definition and have no error
    let riley = get_key(&bad, "artist", "10").await;
    assert_eq!(riley.last_error, None);
    assert_eq!(riley.facts["check"]["x"], serde_json::json!(-100));

    // the good definition again: the error clears
    let report = build(&good, BuildOptions::all("test")).await;
    assert_eq!(report.failed, 0);
    assert_eq!(get_key(&good, "artist", "11").await.last_error, None);
    db.drop_db().await;
}

#[tokio::test]
async fn an_entity_that_loses_its_connection_is_reported_unavailable() {
    let db = fixture::database().await;
    // a figure whose backend is terminated (SQLSTATE 57P01, as when
    // PostgreSQL shuts down) while building Barbara Hepworth (11) only
    let mut config = fixture::config();
    let mut check = config.kinds[0].figures[1].clone();
    check.name = "check".into();
    check.shape = quarry_summary::Shape::Values;
    check.top = None;
    check.sql = "SELECT CASE WHEN id = 11 THEN pg_terminate_backend(pg_backend_pid())::int \
                 ELSE 1 END AS x FROM tate.artists WHERE id = $1"
        .into();
    config.kinds[0].figures.push(check);
    let tool = SummaryTool::open(db.pool().clone(), config, Some(Arc::new(Scripted)))
        .await
        .unwrap();
    let report = build(&tool, BuildOptions::all("test")).await;
    assert_eq!(report.failed, 1, "{report:?}");
    let failure = &report.failures[0];
    assert_eq!(failure.entity_key, "11", "{failure:?}");
    assert!(failure.unavailable, "{failure:?}");
    assert!(failure.error.contains("57P01"), "{}", failure.error);
    db.drop_db().await;
}

#[tokio::test]
async fn embedder_failure_stores_texts_without_embeddings() {
    let db = fixture::database().await;
    let broken = fixture::open(&db, Some(Arc::new(fixture::Broken))).await;
    let report = build(&broken, BuildOptions::all("test")).await;
    assert_eq!((report.built, report.failed), (ENTITIES, 0));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("scripted outage")),
        "{:?}",
        report.warnings
    );
    let client = db.pool().get().await.unwrap();
    let embedded: i64 = client
        .query_one(
            "SELECT count(*) FROM quarry.summaries WHERE embedding IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(embedded, 0);
    // once the embedder works, the next build embeds them (same data version)
    let working = fixture::open_embedded(&db).await;
    let before = fixture::stored(&db).await;
    let report = build(&working, BuildOptions::all("test")).await;
    assert_eq!(
        (report.built, report.unchanged, report.embedded),
        (0, ENTITIES, ENTITIES),
        "texts unchanged, embeddings filled in: {report:?}"
    );
    assert_eq!(fixture::stored(&db).await, before);
    let embedded: i64 = client
        .query_one(
            "SELECT count(*) FROM quarry.summaries WHERE embedding IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(embedded as u64, ENTITIES);
    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn entities_that_disappear_are_removed() {
    let db = fixture::database().await;
    let tool = fixture::open(&db, None).await;
    build(&tool, BuildOptions::all("test")).await;
    let client = db.pool().get().await.unwrap();
    client
        .batch_execute(
            "DELETE FROM tate.artworks WHERE artist_id = 2566; DELETE FROM tate.artists WHERE id = 2566",
        )
        .await
        .unwrap();
    let report = build(&tool, BuildOptions::all("test")).await;
    // the collection's figures change too (one work fewer)
    assert_eq!(
        (report.entities, report.removed, report.built),
        (ENTITIES - 1, 1, 1),
        "{report:?}"
    );
    let gone = tool
        .get(
            &fixture::caller(),
            GetRequest {
                kind: Some("artist".into()),
                entity: Some("W. Turner".into()),
                ..GetRequest::default()
            },
        )
        .await
        .unwrap();
    // no exact name any more: the best fuzzy match is another Turner
    assert_eq!(gone.matched, quarry_summary::MatchKind::Fuzzy);
    assert_ne!(gone.summaries[0].entity_key, "2566");
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM quarry.summaries WHERE entity_key = '2566'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn a_held_lock_refuses_the_build() {
    let db = fixture::database().await;
    let tool = fixture::open(&db, None).await;
    let holder = pool_for(db.url(), 1);
    let client = holder.get().await.unwrap();
    client
        .execute("SELECT pg_advisory_lock($1)", &[&BUILD_LOCK_KEY])
        .await
        .unwrap();
    let error = tool
        .build(BuildOptions::all("test"), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(error, SummaryError::BuildRunning), "{error}");
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&BUILD_LOCK_KEY])
        .await
        .unwrap();
    let report = build(&tool, BuildOptions::all("test")).await;
    assert_eq!(report.built, ENTITIES);
    // the lock is free again after a build
    let taken: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&BUILD_LOCK_KEY])
        .await
        .unwrap()
        .get(0);
    assert!(taken);
    drop(client);
    holder.close();
    db.drop_db().await;
}

#[tokio::test]
async fn a_cancelled_build_does_not_leak_its_lock_into_the_pool() {
    let db = fixture::database().await;
    let (started_tx, mut started) = tokio::sync::mpsc::channel(1);
    let tool = Arc::new(fixture::open(&db, Some(Arc::new(fixture::Hanging(started_tx)))).await);
    let running = {
        let tool = Arc::clone(&tool);
        tokio::spawn(async move { tool.build(BuildOptions::all("test"), &|_| {}).await })
    };
    // the build holds the lock and waits in the embedder: cancel it there
    started.recv().await.unwrap();
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    // The lock's connection was detached and closed, so the server releases
    // the lock once that backend exits. Had it gone back to the pool it
    // would stay held for as long as the pool lives.
    assert!(
        fixture::lock_released(&db).await,
        "the build lock is still held after the build was cancelled"
    );
    // and the pool the tool uses is still good for a new build
    let plain = fixture::open(&db, None).await;
    assert_eq!(build(&plain, BuildOptions::all("test")).await.failed, 0);
    db.drop_db().await;
}

#[tokio::test]
async fn identical_data_gives_byte_identical_summaries_in_another_database() {
    let a = fixture::database().await;
    let b = TestDb::create().await;
    fixture::load(&b, true).await;
    let tool_a = fixture::open_embedded(&a).await;
    let tool_b = fixture::open_embedded(&b).await;
    build(&tool_a, BuildOptions::all("test")).await;
    build(&tool_b, BuildOptions::all("test")).await;
    let (stored_a, stored_b) = (fixture::stored(&a).await, fixture::stored(&b).await);
    assert_eq!(stored_a.len() as u64, ENTITIES);
    assert_eq!(stored_a, stored_b);
    a.drop_db().await;
    b.drop_db().await;
}

#[tokio::test]
async fn facts_agree_with_independent_sql() {
    let db = fixture::database().await;
    let tool = fixture::open(&db, None).await;
    build(&tool, BuildOptions::all("test")).await;
    let collection = get_key(&tool, "collection", "tate").await;
    let client = db.pool().get().await.unwrap();

    // share of works by women per decade since 1950, computed directly
    // (PostgreSQL's numeric round() is half away from zero too)
    let expected: Vec<(i64, f64)> = client
        .query(
            "SELECT (w.acquisition_year / 10 * 10)::int8,
                    round(100.0 * count(*) FILTER (WHERE a.gender = 'Female') / count(*), 1)::float8
             FROM tate.artworks w JOIN tate.artists a ON a.id = w.artist_id
             WHERE w.acquisition_year >= 1950 GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let shares = &collection.facts["gender"]["shares"];
    let got: Vec<(i64, f64)> = shares["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    assert_eq!(got, expected);
    assert!(expected.len() >= 5);
    let (first, last) = (expected[0], expected[expected.len() - 1]);
    assert!(
        collection.text.contains(&format!(
            "Works by women: {:.1}% in the {}s, {:.1}% in the {}s",
            first.1, first.0, last.1, last.0
        )),
        "{}",
        collection.text
    );

    let (total, women): (i64, i64) = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE a.gender = 'Female')
             FROM tate.artworks w JOIN tate.artists a ON a.id = w.artist_id
             WHERE w.acquisition_year >= 1950",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        collection.facts["gender"]["total"],
        serde_json::json!(total)
    );
    let female = collection.facts["gender"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["label"] == "Female")
        .unwrap();
    assert_eq!(female["value"], serde_json::json!(women));
    // the artist with no gender shows up as "unknown"? No: their work has
    // no acquisition year, so it is not in the series at all
    assert!(
        collection.facts["gender"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["label"] != "unknown")
    );
    assert_eq!(
        collection.facts["size"],
        serde_json::json!({"works": 25, "artists": 8})
    );

    // per artist: acquisitions total and media counts
    for (id, name, _, _) in fixture::ARTISTS {
        let summary = get_key(&tool, "artist", &id.to_string()).await;
        assert_eq!(&summary.entity_name, name);
        let acquired: i64 = client
            .query_one(
                "SELECT count(*) FROM tate.artworks WHERE artist_id = $1 AND acquisition_year IS NOT NULL",
                &[id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            summary.facts["acquisitions"]["total"],
            serde_json::json!(acquired),
            "{name}"
        );
        let works: i64 = client
            .query_one(
                "SELECT count(*) FROM tate.artworks WHERE artist_id = $1",
                &[id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            summary.facts["media"]["total"],
            serde_json::json!(works),
            "{name}"
        );
    }
    let turner = get_key(&tool, "artist", "558").await;
    assert_eq!(
        turner.text,
        "Joseph Mallord William Turner: 7 works in the collection, acquired 1850s\u{2013}1990s, \
         most in the 1850s (3; 42.9%). Media: Graphite on paper (3; 42.9%), Oil paint on canvas \
         (2; 28.6%) and 1 more."
    );
    let leger = get_key(&tool, "artist", "12").await;
    assert_eq!(
        leger.text,
        "Zoë Léger: 0 works in the collection. Media: unknown (1; 100.0%)."
    );
    drop(client);
    db.drop_db().await;
}

fn refused(error: SummaryError) -> quarry_summary::DefinitionError {
    match error {
        SummaryError::Definition(d) => d,
        other => panic!("expected a definition error, got {other}"),
    }
}

#[tokio::test]
async fn bad_definitions_are_refused_at_open_naming_the_definition() {
    let db = fixture::database().await;
    let open = |config: quarry_summary::SummaryConfig| {
        let pool = db.pool().clone();
        async move { SummaryTool::open(pool, config, None).await.unwrap_err() }
    };
    let media = |sql: &str| {
        let mut c = fixture::config();
        c.kinds[0].figures[1].sql = sql.into();
        c
    };

    let e = refused(open(media("SELECT mediumm AS label, count(*) AS value FROM tate.artworks WHERE artist_id = $1 GROUP BY 1")).await);
    assert_eq!(
        (e.kind.as_str(), e.figure.as_deref()),
        ("artist", Some("media"))
    );
    assert!(
        e.message.contains("column \"mediumm\" does not exist"),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("summary definition artist.media: "),
        "{e}"
    );

    let e = refused(
        open(media(
            "UPDATE tate.artworks SET medium = 'x' WHERE artist_id = $1",
        ))
        .await,
    );
    assert_eq!(e.figure.as_deref(), Some("media"));
    assert!(e.message.contains("only a query"), "{e}");

    let e = refused(open(media("SELECT 'a' AS label, 1 AS value; SELECT 2")).await);
    assert!(e.message.contains("exactly one statement"), "{e}");

    let e = refused(open(media("SELECT medium AS label, count(*) AS value FROM tate.artworks WHERE artist_id::text = $1::uuid::text GROUP BY 1")).await);
    assert!(e.message.contains("$1 has type uuid"), "{e}");

    let e = refused(
        open(media(
            "SELECT medium AS name, count(*) AS value FROM tate.artworks GROUP BY 1",
        ))
        .await,
    );
    assert!(e.message.contains("needs a column named label"), "{e}");

    let mut c = fixture::config();
    c.kinds[0].template = "{{ entity.name }} {{ acquisition.total }}".into();
    let e = refused(open(c).await);
    assert_eq!((e.kind.as_str(), e.figure.as_deref()), ("artist", None));
    assert!(e.message.contains("unknown variable acquisition;"), "{e}");

    let mut c = fixture::config();
    c.kinds[0].figures[0]
        .compute
        .push(quarry_summary::Computation::Groups);
    let e = refused(open(c).await);
    assert_eq!(e.figure.as_deref(), Some("acquisitions"));
    assert!(e.message.contains("needs a grouped series"), "{e}");

    let mut c = fixture::config();
    c.kinds[1].entities = "SELECT 'tate' AS id, 'Tate' AS name".into();
    let e = refused(open(c).await);
    assert_eq!(e.kind, "collection");
    assert!(
        e.message
            .starts_with("entities query: needs a column named key"),
        "{e}"
    );

    let mut c = fixture::config();
    c.role = Some("no_such_role".into());
    let e = open(c).await;
    assert!(
        matches!(e, SummaryError::Config(ref m) if m.contains("no_such_role")),
        "{e}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn the_scheduler_builds_at_start_and_stops_on_cancel() {
    let db = fixture::database().await;
    // build at start, no schedule: the task ends after the start-up build
    let mut config = fixture::config();
    config.build_on_start = true;
    config.refresh_interval_secs = 0;
    let tool = Arc::new(
        SummaryTool::open(db.pool().clone(), config, None)
            .await
            .unwrap(),
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    Arc::clone(&tool)
        .spawn_scheduler(cancel.clone())
        .await
        .unwrap();
    let last = tool.last_build(&fixture::caller()).await.unwrap().unwrap();
    assert_eq!((last.trigger.as_str(), last.built), ("startup", ENTITIES));

    // a schedule an hour apart: cancelling stops the task without a build
    let mut config = fixture::config();
    config.build_on_start = false;
    config.refresh_interval_secs = 3600;
    let tool = Arc::new(
        SummaryTool::open(db.pool().clone(), config, None)
            .await
            .unwrap(),
    );
    let handle = Arc::clone(&tool).spawn_scheduler(cancel.clone());
    cancel.cancel();
    handle.await.unwrap();
    assert_eq!(
        tool.last_build(&fixture::caller())
            .await
            .unwrap()
            .unwrap()
            .trigger,
        "startup"
    );
    db.drop_db().await;
}

/// Replicas build once per interval between them: a scheduled (here
/// start-up) build is skipped while a build by any replica started within
/// 9/10 of `refresh_interval_secs`, and runs once that one is older. The
/// test fails if the check is removed (a second row) or always skips (no
/// second row after the first is aged).
#[tokio::test]
async fn a_replica_skips_the_build_another_ran_within_the_interval() {
    let db = fixture::database().await;
    let first = fixture::open(&db, None).await;
    first
        .build(BuildOptions::all("test"), &|_| {})
        .await
        .unwrap();
    let builds = |db: &TestDb| {
        let pool = db.pool().clone();
        async move {
            let client = pool.get().await.unwrap();
            let row = client
                .query_one("SELECT count(*) FROM quarry.summary_builds", &[])
                .await
                .unwrap();
            row.get::<_, i64>(0)
        }
    };
    assert_eq!(builds(&db).await, 1);
    let mut config = fixture::config();
    config.refresh_interval_secs = 3600;
    config.build_on_start = true;
    let second = Arc::new(
        SummaryTool::open(db.pool().clone(), config, None)
            .await
            .unwrap(),
    );
    // the start-up build (or its skip), then the schedule waits an hour
    let start = |tool: Arc<SummaryTool>| {
        let cancel = tokio_util::sync::CancellationToken::new();
        (
            cancel.clone(),
            tokio::spawn(tool.run_schedule(cancel, None)),
        )
    };
    let (cancel, schedule) = start(Arc::clone(&second));
    // ample for the fixture's build (well under a second) had it run
    tokio::time::sleep(Duration::from_secs(3)).await;
    cancel.cancel();
    schedule.await.unwrap();
    assert_eq!(builds(&db).await, 1, "built again within the interval");
    // the other replica's build is now older than 9/10 of the interval
    db.pool()
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE quarry.summary_builds SET started_at = started_at - interval '55 minutes'",
            &[],
        )
        .await
        .unwrap();
    let (cancel, schedule) = start(second);
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while builds(&db).await < 2 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    schedule.await.unwrap();
    assert_eq!(
        builds(&db).await,
        2,
        "not built once the last build was old"
    );
    db.drop_db().await;
}

/// A scheduled build whose first attempt is interrupted (it cannot be
/// recorded) and whose retry then has a failed entity is retried once more
/// rather than kept as partial, so a clean build is recorded. The two
/// faults are injected through a sequence counting the builds' records: a
/// trigger refuses the first record, and the collection's entities query
/// fails while exactly one record was attempted. The test fails without
/// the retry of a partial build (only the partial one is recorded).
#[tokio::test]
async fn a_partial_retry_after_an_interrupted_scheduled_build_is_retried() {
    let db = fixture::database().await;
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE SEQUENCE public.records; \
             CREATE FUNCTION public.refuse_first_record() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF nextval('public.records') = 1 THEN \
               RAISE EXCEPTION 'the first record is refused'; END IF; RETURN NEW; END $$; \
             CREATE FUNCTION public.gate() RETURNS boolean LANGUAGE plpgsql AS $$ \
             DECLARE v bigint; c boolean; \
             BEGIN SELECT last_value, is_called INTO v, c FROM public.records; \
               IF c AND v = 1 THEN RAISE EXCEPTION 'failing the second attempt'; END IF; \
               RETURN true; END $$;",
        )
        .await
        .unwrap();
    let toml = fixture::KINDS
        .replace(
            "entities = \"SELECT 'tate' AS key, 'Tate collection' AS name\"",
            "entities = \"SELECT 'tate' AS key, 'Tate collection' AS name WHERE public.gate()\"",
        )
        .replace("build_on_start = false", "build_on_start = true");
    assert!(toml.contains("public.gate()"));
    let config: quarry_summary::SummaryConfig = toml::from_str(&toml).unwrap();
    let tool = Arc::new(
        SummaryTool::open(db.pool().clone(), config, None)
            .await
            .unwrap(),
    );
    // the tool's migrations have made quarry.summary_builds by now
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TRIGGER refuse_first BEFORE INSERT ON quarry.summary_builds \
             FOR EACH ROW EXECUTE FUNCTION public.refuse_first_record()",
        )
        .await
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    // no schedule after the start-up build: the call returns once it is done
    tokio::time::timeout(Duration::from_secs(60), tool.run_schedule(cancel, None))
        .await
        .expect("the start-up build settles");
    let client = db.pool().get().await.unwrap();
    let rows: Vec<(String, i64)> = client
        .query(
            "SELECT trigger, (report->>'failed')::bigint FROM quarry.summary_builds ORDER BY started_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [("startup".to_owned(), 1), ("startup".to_owned(), 0)],
        "the interrupted attempt is not recorded, the partial retry is, and so is the clean one"
    );
    drop(client);
    db.drop_db().await;
}
