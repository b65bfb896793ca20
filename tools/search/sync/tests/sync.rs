#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The sync against a real PostgreSQL with pgvector: backfill, outbox,
//! crash recovery, recreated sources, embeddings and the run loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use quarry_db::testing::TestDb;
use quarry_llm::embed::Embedder;
use quarry_search::collection::{Collection, CollectionConfig, CollectionError};
use quarry_search_sync::{SyncConfig, SyncError, Syncer};
use tokio_postgres::{AsyncMessage, NoTls};

const SCHEMA: &str = "
    CREATE TABLE public.works (id int PRIMARY KEY, title text, note text, year int, tags text[], url text);
    CREATE TABLE public.artists (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE public.work_artists (work_id int NOT NULL, artist_id int NOT NULL, PRIMARY KEY (work_id, artist_id));
    INSERT INTO public.artists VALUES (1, 'Turner'), (2, 'Constable');
";

const COLLECTION: &str = r#"
    name = "works"
    source = "public.works"
    key = "id"
    text = [{ name = "title" }, { name = "note" }]
    filters = [
      { name = "year", type = "integer" },
      { name = "tags", type = "keywords" },
      { name = "artists", type = "keywords", sql = "ARRAY(SELECT a.name FROM public.work_artists wa JOIN public.artists a ON a.id = wa.artist_id WHERE wa.work_id = src.id ORDER BY a.name)" },
    ]
    stored = [{ name = "url" }]
    dependents = [{ table = "public.work_artists", key_column = "work_id" }]
"#;

fn collection(extra: &str) -> Arc<Collection> {
    let config: CollectionConfig = toml::from_str(&format!("{COLLECTION}{extra}")).unwrap();
    Arc::new(Collection::from_config(&config, "c").unwrap())
}

fn config(batch: usize) -> SyncConfig {
    SyncConfig {
        backfill_batch: batch,
        outbox_batch: batch,
        embed_batch: 4,
        poll_interval_ms: 50,
    }
}

async fn fresh_db(rows: i32) -> TestDb {
    let db = TestDb::create().await;
    let client = db.pool().get().await.unwrap();
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .execute(
            "INSERT INTO public.works SELECT i, 'work ' || i, CASE WHEN i % 3 = 0 THEN '   ' ELSE 'note ' || i END, \
             1800 + i, ARRAY['t' || (i % 4), NULL], 'https://x/' || i FROM generate_series(1, $1) AS i",
            &[&rows],
        )
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO public.work_artists VALUES (1, 1), (1, 2), (2, 2)")
        .await
        .unwrap();
    db
}

fn syncer(db: &TestDb, batch: usize, embedder: Option<Arc<dyn Embedder>>) -> Syncer {
    Syncer::new(
        db.pool().clone(),
        db.url(),
        collection(""),
        embedder,
        config(batch),
    )
}

#[derive(Debug, Clone, PartialEq)]
struct Doc {
    version: i64,
    deleted: bool,
    title: Option<String>,
    note: Option<String>,
    year: Option<i64>,
    tags: Option<Vec<String>>,
    artists: Option<Vec<String>>,
    stored: serde_json::Value,
    embedded: bool,
}

async fn docs(db: &TestDb) -> BTreeMap<String, Doc> {
    let client = db.pool().get().await.unwrap();
    client
        .query(
            "SELECT key, version, deleted, t_title, t_note, f_year, f_tags, f_artists, stored, embedded \
             FROM quarry.search_works",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.get(0),
                Doc {
                    version: r.get(1),
                    deleted: r.get(2),
                    title: r.get(3),
                    note: r.get(4),
                    year: r.get(5),
                    tags: r.get(6),
                    artists: r.get(7),
                    stored: r.get(8),
                    embedded: r.get(9),
                },
            )
        })
        .collect()
}

/// A document's content as the test compares it: title, note, year, tags,
/// artists, stored.
type Content = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Vec<String>,
    Vec<String>,
    serde_json::Value,
);

/// Live documents equal what the field definitions give for every source row
/// (whitespace-only text is NULL, keyword arrays hold no NULLs).
async fn assert_matches_source(db: &TestDb) {
    let client = db.pool().get().await.unwrap();
    let expected: BTreeMap<String, Content> = client
        .query(
            "SELECT id::text, \
               CASE WHEN title ~ '^[[:space:]]*$' THEN NULL ELSE title END, \
               CASE WHEN note ~ '^[[:space:]]*$' THEN NULL ELSE note END, \
               year::bigint, coalesce(array_remove(tags, NULL), '{}'), \
               ARRAY(SELECT a.name FROM public.work_artists wa JOIN public.artists a ON a.id = wa.artist_id \
                     WHERE wa.work_id = w.id ORDER BY a.name), \
               jsonb_build_object('url', url) FROM public.works w",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6))))
        .collect();
    let live: BTreeMap<String, Content> = docs(db)
        .await
        .into_iter()
        .filter(|(_, d)| !d.deleted)
        .map(|(k, d)| {
            let content = (
                d.title,
                d.note,
                d.year,
                d.tags.unwrap_or_default(),
                d.artists.unwrap_or_default(),
                d.stored,
            );
            (k, content)
        })
        .collect();
    assert_eq!(live, expected);
}

async fn exec(db: &TestDb, sql: &str) {
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
}

#[tokio::test]
async fn backfill_copies_the_source_in_key_order_batches() {
    let db = fresh_db(25).await;
    let s = syncer(&db, 10, None);
    s.install().await.unwrap();
    let mut seen = Vec::new();
    let report = s.backfill(|p| seen.push(p)).await.unwrap();
    assert_eq!(report.rows, 25);
    assert_eq!(report.batches, 3);
    assert_eq!(
        seen.iter()
            .map(|p| (p.done, p.finished))
            .collect::<Vec<_>>(),
        vec![(10, false), (20, false), (25, true)]
    );
    assert!(seen.iter().all(|p| p.total >= p.done));
    assert_matches_source(&db).await;
    let all = docs(&db).await;
    assert_eq!(all.len(), 25);
    // whitespace-only text is NULL; keyword arrays hold no NULLs
    assert_eq!(all["3"].note, None);
    assert_eq!(all["5"].tags, Some(vec!["t1".to_owned()]));
    assert_eq!(
        all["1"].artists,
        Some(vec!["Constable".to_owned(), "Turner".to_owned()])
    );
    assert_eq!(all["7"].stored, serde_json::json!({ "url": "https://x/7" }));
    // key order: versions grow with the (integer, not text) key across batches
    let mut by_key: Vec<(i32, i64)> = all
        .iter()
        .map(|(k, d)| (k.parse().unwrap(), d.version))
        .collect();
    by_key.sort();
    assert!(
        by_key
            .windows(2)
            .all(|w| w[0].1 < w[1].1 || w[0].0 / 10 == w[1].0 / 10),
        "{by_key:?}"
    );
    let status = s.status().await.unwrap();
    assert!(status.backfill_done);
    assert_eq!(status.backfill_checkpoint.as_deref(), Some("25"));
    assert_eq!(
        (status.docs, status.deleted, status.outbox_backlog),
        (25, 0, 0)
    );
    // done: a second call does nothing
    assert_eq!(s.backfill(|_| {}).await.unwrap().batches, 0);
}

#[tokio::test]
async fn dropped_backfill_resumes_without_losing_or_rewriting_rows() {
    let db = fresh_db(57).await;
    let s = syncer(&db, 10, None);
    s.install().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut stop = Some(stop);
    let mut batches = 0;
    let backfill = s.backfill(|_| {
        batches += 1;
        if batches == 2 {
            let _ = stop.take().unwrap().send(());
        }
    });
    tokio::select! {
        biased;
        _ = stopped => {}
        r = backfill => panic!("backfill finished before being dropped: {r:?}"),
    }
    let before = docs(&db).await;
    let checkpoint = s.status().await.unwrap().backfill_checkpoint;
    assert!((20..30).contains(&before.len()), "{}", before.len());
    assert_eq!(checkpoint, Some(before.len().to_string()));

    let report = s.backfill(|_| {}).await.unwrap();
    assert_eq!(report.resumed_after, checkpoint);
    assert_eq!(report.rows as usize, 57 - before.len());
    let after = docs(&db).await;
    assert_eq!(after.len(), 57);
    for (key, doc) in &before {
        assert_eq!(
            after[key].version, doc.version,
            "key {key} was copied twice"
        );
    }
    assert_matches_source(&db).await;
}

#[tokio::test]
async fn failed_backfill_batch_keeps_earlier_batches_and_resumes() {
    let db = fresh_db(30).await;
    exec(
        &db,
        "CREATE TABLE public.fail_at (id int);
         INSERT INTO public.fail_at VALUES (15);
         CREATE FUNCTION public.checked(id int, t text) RETURNS text LANGUAGE plpgsql AS $$
         BEGIN
           IF EXISTS (SELECT 1 FROM public.fail_at f WHERE f.id = checked.id) THEN RAISE EXCEPTION 'injected'; END IF;
           RETURN t;
         END $$;",
    )
    .await;
    let c = {
        let mut config: CollectionConfig = toml::from_str(COLLECTION).unwrap();
        config.text[0].sql = Some("public.checked(src.id, src.title)".into());
        Arc::new(Collection::from_config(&config, "c").unwrap())
    };
    let s = Syncer::new(db.pool().clone(), db.url(), c, None, config(10));
    s.install().await.unwrap();
    let error = s.backfill(|_| {}).await.unwrap_err();
    assert!(error.to_string().contains("injected"), "{error}");
    let before = docs(&db).await;
    assert_eq!(before.len(), 10);
    exec(&db, "DELETE FROM public.fail_at").await;
    let report = s.backfill(|_| {}).await.unwrap();
    assert_eq!(report.resumed_after.as_deref(), Some("10"));
    assert_eq!(report.rows, 20);
    let after = docs(&db).await;
    assert_eq!(after.len(), 30);
    assert!(before.iter().all(|(k, d)| after[k].version == d.version));
}

/// Notifications on `channel` of a fresh connection, as (channel, payload).
async fn listen(
    db: &TestDb,
    channels: &[&str],
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    let (client, mut connection) = tokio_postgres::connect(db.url(), NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    for channel in channels {
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .unwrap();
    }
    (client, rx)
}

async fn next_notification(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn changes_reach_the_sidecar_through_the_outbox_with_growing_versions() {
    let db = fresh_db(3).await;
    let s = syncer(&db, 100, None);
    s.install().await.unwrap();
    s.backfill(|_| {}).await.unwrap();
    let (_listener, mut notes) = listen(&db, &["quarry_search_outbox", "quarry_search_docs"]).await;
    let mut max_version = s.status().await.unwrap().max_version;
    // Applies the queue; checks the touched docs got versions above all before.
    async fn apply(
        s: &Syncer,
        db: &TestDb,
        max_version: &mut i64,
        touched: &[&str],
    ) -> BTreeMap<String, Doc> {
        s.drain_outbox().await.unwrap();
        let all = docs(db).await;
        for key in touched {
            assert!(
                all[*key].version > *max_version,
                "doc {key} kept version {}",
                all[*key].version
            );
        }
        for (key, doc) in &all {
            if !touched.contains(&key.as_str()) {
                assert!(doc.version <= *max_version, "doc {key} rewritten");
            }
        }
        *max_version = all.values().map(|d| d.version).max().unwrap();
        assert_eq!(s.status().await.unwrap().outbox_backlog, 0);
        all
    }

    exec(
        &db,
        "INSERT INTO public.works (id, title, year) VALUES (10, 'Rain, Steam and Speed', 1844)",
    )
    .await;
    assert_eq!(
        next_notification(&mut notes).await,
        ("quarry_search_outbox".into(), "works".into())
    );
    let all = apply(&s, &db, &mut max_version, &["10"]).await;
    assert_eq!(all["10"].title.as_deref(), Some("Rain, Steam and Speed"));
    assert_eq!(
        next_notification(&mut notes).await,
        ("quarry_search_docs".into(), "works".into())
    );

    exec(
        &db,
        "UPDATE public.works SET title = 'The Fighting Temeraire' WHERE id = 10",
    )
    .await;
    let all = apply(&s, &db, &mut max_version, &["10"]).await;
    assert_eq!(all["10"].title.as_deref(), Some("The Fighting Temeraire"));

    // an update that changes nothing the collection reads keeps the version
    exec(&db, "UPDATE public.works SET title = title WHERE id = 10").await;
    apply(&s, &db, &mut max_version, &[]).await;

    // a key change tombstones the old document and creates the new one
    exec(&db, "UPDATE public.works SET id = 11 WHERE id = 10").await;
    let all = apply(&s, &db, &mut max_version, &["10", "11"]).await;
    assert!(all["10"].deleted);
    assert_eq!((all["10"].title.clone(), all["10"].year), (None, None));
    assert_eq!(all["11"].title.as_deref(), Some("The Fighting Temeraire"));

    exec(&db, "DELETE FROM public.works WHERE id = 11").await;
    let all = apply(&s, &db, &mut max_version, &["11"]).await;
    assert!(all["11"].deleted);

    // a dependent table's change re-syncs the document it names
    exec(&db, "INSERT INTO public.work_artists VALUES (3, 1)").await;
    let all = apply(&s, &db, &mut max_version, &["3"]).await;
    assert_eq!(all["3"].artists, Some(vec!["Turner".to_owned()]));
    exec(
        &db,
        "DELETE FROM public.work_artists WHERE work_id = 1 AND artist_id = 1",
    )
    .await;
    let all = apply(&s, &db, &mut max_version, &["1"]).await;
    assert_eq!(all["1"].artists, Some(vec!["Constable".to_owned()]));

    // one statement over many rows; a transaction touching a key twice
    exec(&db, "BEGIN; UPDATE public.works SET year = year + 1; UPDATE public.works SET year = year + 1 WHERE id = 2; COMMIT").await;
    let all = apply(&s, &db, &mut max_version, &["1", "2", "3"]).await;
    assert_eq!(all["2"].year, Some(1804));
    // a resurrected key is live again
    exec(
        &db,
        "INSERT INTO public.works (id, title) VALUES (11, 'back')",
    )
    .await;
    let all = apply(&s, &db, &mut max_version, &["11"]).await;
    assert!(!all["11"].deleted);
    assert_matches_source(&db).await;
    let freshness = s.freshness();
    assert!(freshness.count >= 10, "{freshness:?}");
    assert!(freshness.p50 <= freshness.p99 && freshness.p99 <= freshness.max);
}

#[tokio::test]
async fn a_failure_before_commit_leaves_the_outbox_for_a_redo() {
    let db = fresh_db(3).await;
    let s = syncer(&db, 100, None);
    s.install().await.unwrap();
    s.backfill(|_| {}).await.unwrap();
    // fails at COMMIT, after the outbox was read and the documents written
    exec(
        &db,
        "CREATE TABLE public.crash (on_commit bool);
         INSERT INTO public.crash VALUES (true);
         CREATE FUNCTION public.crash() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF (SELECT on_commit FROM public.crash) THEN RAISE EXCEPTION 'crash at commit'; END IF;
           RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER crash AFTER INSERT OR UPDATE ON quarry.search_works
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.crash();
         UPDATE public.works SET title = 'changed' WHERE id = 2;
         DELETE FROM public.works WHERE id = 3;",
    )
    .await;
    let before = docs(&db).await;
    let error = s.process_outbox().await.unwrap_err();
    assert!(error.to_string().contains("crash at commit"), "{error}");
    assert_eq!(docs(&db).await, before);
    assert_eq!(s.status().await.unwrap().outbox_backlog, 2);

    exec(&db, "UPDATE public.crash SET on_commit = false").await;
    let report = s.process_outbox().await.unwrap();
    assert_eq!(
        (report.claimed, report.upserted, report.tombstoned),
        (2, 1, 1)
    );
    let after = docs(&db).await;
    assert_eq!(after["2"].title.as_deref(), Some("changed"));
    assert!(after["3"].deleted);
    assert_eq!(s.status().await.unwrap().outbox_backlog, 0);
    assert_matches_source(&db).await;
}

#[tokio::test]
async fn a_recreated_source_is_resynced_and_stale_documents_tombstoned() {
    let db = fresh_db(5).await;
    let s = syncer(&db, 2, None);
    s.install().await.unwrap();
    s.backfill(|_| {}).await.unwrap();
    let old_max = s.status().await.unwrap().max_version;
    // a re-ingest: dropped and recreated, rows 3..7 (a change still queued)
    exec(
        &db,
        "UPDATE public.works SET title = 'queued' WHERE id = 1;
         DROP TABLE public.works;
         CREATE TABLE public.works (id int PRIMARY KEY, title text, note text, year int, tags text[], url text);
         INSERT INTO public.works (id, title) SELECT i, 'new ' || i FROM generate_series(3, 7) AS i;",
    )
    .await;
    assert_eq!(s.status().await.unwrap().outbox_backlog, 1);
    s.install().await.unwrap();
    let status = s.status().await.unwrap();
    assert!(!status.backfill_done);
    assert_eq!(status.outbox_backlog, 0);
    let report = s.backfill(|_| {}).await.unwrap();
    assert_eq!((report.rows, report.tombstoned), (5, 2));
    let all = docs(&db).await;
    assert!(all["1"].deleted && all["2"].deleted);
    assert!(all.values().all(|d| d.version > old_max));
    assert_matches_source(&db).await;
    // the new table has triggers
    exec(&db, "UPDATE public.works SET title = 'again' WHERE id = 7").await;
    assert_eq!(s.drain_outbox().await.unwrap().upserted, 1);
    assert_eq!(docs(&db).await["7"].title.as_deref(), Some("again"));
}

#[tokio::test]
async fn truncate_restarts_the_backfill() {
    let db = fresh_db(6).await;
    let s = syncer(&db, 4, None);
    s.install().await.unwrap();
    s.backfill(|_| {}).await.unwrap();
    exec(
        &db,
        "TRUNCATE public.works; INSERT INTO public.works (id, title) VALUES (2, 'kept')",
    )
    .await;
    assert!(!s.status().await.unwrap().backfill_done);
    let report = s.backfill(|_| {}).await.unwrap();
    assert_eq!(report.tombstoned, 5);
    s.drain_outbox().await.unwrap();
    let status = s.status().await.unwrap();
    assert_eq!((status.docs, status.deleted), (1, 5));
    assert_matches_source(&db).await;
}

/// Embeds with `scripted_embedding`, recording every text it is asked for;
/// optionally runs a statement during its first call (a concurrent writer).
struct CountingEmbedder {
    model: &'static str,
    texts: Arc<Mutex<Vec<String>>>,
    during_first_call: Mutex<Option<(deadpool_postgres::Pool, String)>>,
}

impl CountingEmbedder {
    fn new(model: &'static str) -> Arc<CountingEmbedder> {
        Arc::new(CountingEmbedder {
            model,
            texts: Arc::default(),
            during_first_call: Mutex::new(None),
        })
    }
    fn take(&self) -> Vec<String> {
        let mut texts = std::mem::take(&mut *self.texts.lock().unwrap());
        texts.sort();
        texts
    }
}

const DIM: usize = 8;

impl Embedder for CountingEmbedder {
    fn model_id(&self) -> &str {
        self.model
    }
    fn dimension(&self) -> usize {
        DIM
    }
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, quarry_llm::Result<Vec<Vec<f32>>>> {
        self.texts.lock().unwrap().extend(texts.iter().cloned());
        let during = self.during_first_call.lock().unwrap().take();
        Box::pin(async move {
            if let Some((pool, sql)) = during {
                pool.get().await.unwrap().batch_execute(&sql).await.unwrap();
            }
            Ok(texts
                .iter()
                .map(|t| quarry_llm::testing::scripted_embedding(t, DIM))
                .collect())
        })
    }
}

async fn vector(db: &TestDb, key: &str, field: &str) -> Option<Vec<f32>> {
    let client = db.pool().get().await.unwrap();
    let row = client
        .query_one(
            &format!("SELECT v_{field} FROM quarry.search_works WHERE key = $1"),
            &[&key],
        )
        .await
        .unwrap();
    row.get::<_, Option<pgvector::Vector>>(0)
        .map(|v| v.to_vec())
}

#[tokio::test]
async fn embeddings_are_cached_by_content_hash() {
    let db = TestDb::create().await;
    exec(&db, SCHEMA).await;
    exec(
        &db,
        "INSERT INTO public.works (id, title, note) VALUES
           (1, 'sunset', 'sea'), (2, 'sunset', ''), (3, 'storm', 'sea'), (4, 'fog', NULL), (5, 'sea', 'x')",
    )
    .await;
    let embedder = CountingEmbedder::new("counting");
    let s = syncer(&db, 100, Some(embedder.clone()));
    s.install().await.unwrap();
    s.backfill(|_| {}).await.unwrap();
    let report = s.embed_pending().await.unwrap();
    // identical texts (also across fields) are embedded once
    assert_eq!(embedder.take(), vec!["fog", "sea", "storm", "sunset", "x"]);
    assert_eq!((report.docs, report.embedded_texts), (5, 5));
    let status = s.status().await.unwrap();
    assert_eq!(status.embedded, 5);
    assert_eq!(status.embedder, Some(("counting".to_owned(), DIM)));
    let scripted = |t: &str| Some(quarry_llm::testing::scripted_embedding(t, DIM));
    assert_eq!(vector(&db, "3", "title").await, scripted("storm"));
    assert_eq!(vector(&db, "1", "note").await, scripted("sea"));
    assert_eq!(vector(&db, "2", "note").await, None);

    // a change that leaves the text alone keeps the vectors
    exec(&db, "UPDATE public.works SET year = 1900").await;
    s.drain_outbox().await.unwrap();
    assert!(docs(&db).await.values().all(|d| d.embedded));
    assert_eq!(s.embed_pending().await.unwrap().docs, 0);
    assert!(embedder.take().is_empty());
    // text seen before costs no model call; new text costs one; cleared text clears the vector
    exec(&db, "UPDATE public.works SET title = 'storm' WHERE id = 4; UPDATE public.works SET title = 'calm', note = ' ' WHERE id = 5").await;
    s.drain_outbox().await.unwrap();
    let versions: BTreeMap<String, i64> = docs(&db)
        .await
        .into_iter()
        .map(|(k, d)| (k, d.version))
        .collect();
    let report = s.embed_pending().await.unwrap();
    assert_eq!(embedder.take(), vec!["calm"]);
    assert_eq!(
        (report.docs, report.embedded_texts, report.reused),
        (2, 1, 1)
    );
    assert_eq!(vector(&db, "4", "title").await, scripted("storm"));
    assert_eq!(vector(&db, "5", "note").await, None);
    let after: BTreeMap<String, i64> = docs(&db)
        .await
        .into_iter()
        .map(|(k, d)| (k, d.version))
        .collect();
    assert_eq!(after, versions, "writing vectors changed versions");
}

#[tokio::test]
async fn a_document_changed_while_embedding_keeps_the_change() {
    let db = TestDb::create().await;
    exec(&db, SCHEMA).await;
    exec(
        &db,
        "INSERT INTO public.works (id, title) VALUES (1, 'first'), (2, 'other')",
    )
    .await;
    let embedder = CountingEmbedder::new("counting");
    // what the document sync does when the title changes, while the model runs
    *embedder.during_first_call.lock().unwrap() = Some((
        db.pool().clone(),
        "UPDATE quarry.search_works SET t_title = 'second', embedded = false, \
         version = nextval('quarry.search_version') WHERE key = '1'"
            .into(),
    ));
    let s = syncer(&db, 100, Some(embedder.clone()));
    s.install().await.unwrap();
    s.backfill(|_| {}).await.unwrap();
    let report = s.embed_pending().await.unwrap();
    assert_eq!(report.superseded, 1, "{report:?}");
    assert_eq!(embedder.take(), vec!["first", "other", "second"]);
    let scripted = |t: &str| Some(quarry_llm::testing::scripted_embedding(t, DIM));
    assert_eq!(vector(&db, "1", "title").await, scripted("second"));
    assert_eq!(vector(&db, "2", "title").await, scripted("other"));
    assert!(docs(&db).await.values().all(|d| d.embedded));
}

#[tokio::test]
async fn a_different_embedder_is_refused() {
    let db = fresh_db(2).await;
    syncer(&db, 10, Some(CountingEmbedder::new("m1")))
        .install()
        .await
        .unwrap();
    let error = syncer(&db, 10, Some(CountingEmbedder::new("m2")))
        .install()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            SyncError::Collection(CollectionError::EmbedderMismatch { .. })
        ),
        "{error}"
    );
    // no embedder is fine: vectors stay as they are
    syncer(&db, 10, None).install().await.unwrap();
}

#[tokio::test]
async fn a_bad_field_expression_or_key_is_refused_at_install() {
    let db = fresh_db(1).await;
    let c = {
        let mut config: CollectionConfig = toml::from_str(COLLECTION).unwrap();
        config.text[0].sql = Some("src.no_such_column".into());
        Arc::new(Collection::from_config(&config, "c").unwrap())
    };
    let error = Syncer::new(db.pool().clone(), db.url(), c, None, config(10))
        .install()
        .await
        .unwrap_err();
    assert!(
        matches!(error, SyncError::Source { .. }) && error.to_string().contains("no_such_column"),
        "{error}"
    );
    let c = {
        let mut config: CollectionConfig = toml::from_str(COLLECTION).unwrap();
        config.key = "year".into();
        Arc::new(Collection::from_config(&config, "c").unwrap())
    };
    let error = Syncer::new(db.pool().clone(), db.url(), c, None, config(10))
        .install()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("unique"), "{error}");
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn run_syncs_and_embeds_until_shutdown_then_another_syncer_takes_over() {
    let db = fresh_db(20).await;
    let embedder = CountingEmbedder::new("counting");
    let a = syncer(&db, 8, Some(embedder.clone()));
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let run_a = tokio::spawn({
        let a = a.clone();
        async move {
            a.run(async {
                let _ = stopped_a.await;
            })
            .await
        }
    });
    wait_for("backfill and embeddings", async || {
        a.status()
            .await
            .is_ok_and(|s| s.backfill_done && s.docs == 20 && s.embedded == 20)
    })
    .await;
    // a second syncer waits for the leader lock
    let b = syncer(&db, 8, Some(embedder.clone()));
    let (stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
    let run_b = tokio::spawn({
        let b = b.clone();
        async move {
            b.run(async {
                let _ = stopped_b.await;
            })
            .await
        }
    });
    exec(
        &db,
        "INSERT INTO public.works (id, title) VALUES (100, 'live')",
    )
    .await;
    wait_for("the insert", async || {
        docs(&db).await.get("100").is_some_and(|d| d.embedded)
    })
    .await;
    stop_a.send(()).unwrap();
    run_a.await.unwrap().unwrap();
    exec(&db, "DELETE FROM public.works WHERE id = 100").await;
    wait_for("the delete, by the new leader", async || {
        docs(&db).await.get("100").is_some_and(|d| d.deleted)
    })
    .await;
    stop_b.send(()).unwrap();
    run_b.await.unwrap().unwrap();
    assert_matches_source(&db).await;
}
