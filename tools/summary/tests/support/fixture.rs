//! A small Tate-like fixture shared by the integration tests: a few artists
//! (with Tate's Turners and their real work counts as weights), artworks
//! with acquisition years and media, two summary kinds, and a scripted
//! embedder.

#![allow(dead_code)]

use std::sync::Arc;

use futures::future::BoxFuture;
use quarry_db::testing::TestDb;
use quarry_llm::embed::Embedder;
use quarry_summary::{SummaryConfig, SummaryTool};

/// Vector length of [`Scripted`].
pub(crate) const DIM: usize = 8;

/// Unit vectors derived from the text's bytes
/// ([`quarry_llm::testing::scripted_embedding`]): equal texts, equal vectors.
pub(crate) struct Scripted;

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

/// The scripted embedding of `text`, normalised.
pub(crate) fn unit(text: &str) -> Vec<f32> {
    let v = quarry_llm::testing::scripted_embedding(text, DIM);
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// An embedder that always fails.
pub(crate) struct Broken;

impl Embedder for Broken {
    fn model_id(&self) -> &str {
        "scripted"
    }
    fn dimension(&self) -> usize {
        DIM
    }
    fn embed(&self, _texts: Vec<String>) -> BoxFuture<'static, quarry_llm::Result<Vec<Vec<f32>>>> {
        Box::pin(async { Err(quarry_llm::LlmError::Transport("scripted outage".into())) })
    }
}

/// Embeds nothing, ever: tells the test it was called, then hangs.
pub(crate) struct Hanging(pub tokio::sync::mpsc::Sender<()>);

impl Embedder for Hanging {
    fn model_id(&self) -> &str {
        "hanging"
    }
    fn dimension(&self) -> usize {
        DIM
    }
    fn embed(&self, _texts: Vec<String>) -> BoxFuture<'static, quarry_llm::Result<Vec<Vec<f32>>>> {
        let started = self.0.clone();
        Box::pin(async move {
            let _ = started.send(()).await;
            futures::future::pending().await
        })
    }
}

/// Whether the build lock becomes free: polls `pg_try_advisory_lock` from a
/// connection of its own (the server releases a closed session's locks
/// when its backend exits, shortly after the close), giving up after 400
/// tries 25 ms apart.
pub(crate) async fn lock_released(db: &TestDb) -> bool {
    let pool = quarry_db::testing::pool_for(db.url(), 1);
    let client = pool.get().await.unwrap();
    for _ in 0..400 {
        let taken: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1)",
                &[&quarry_summary::BUILD_LOCK_KEY],
            )
            .await
            .unwrap()
            .get(0);
        if taken {
            client
                .execute(
                    "SELECT pg_advisory_unlock($1)",
                    &[&quarry_summary::BUILD_LOCK_KEY],
                )
                .await
                .unwrap();
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
}

pub(crate) const SCHEMA: &str = "
    CREATE SCHEMA tate;
    CREATE TABLE tate.artists (
        id int PRIMARY KEY, name text NOT NULL, gender text, total_works int
    );
    CREATE TABLE tate.artworks (
        id int PRIMARY KEY, artist_id int NOT NULL REFERENCES tate.artists,
        acquisition_year int, medium text
    );
";

/// (id, name, gender, total works at Tate).
pub(crate) const ARTISTS: &[(i32, &str, Option<&str>, i32)] = &[
    (558, "Joseph Mallord William Turner", Some("Male"), 41_861),
    (2076, "Alfred Turner", Some("Male"), 2),
    (559, "William Turner of Oxford", Some("Male"), 4),
    (2566, "W. Turner", Some("Male"), 1),
    (1293, "David Hockney", Some("Male"), 111),
    (10, "Bridget Riley", Some("Female"), 3),
    (11, "Barbara Hepworth", Some("Female"), 4),
    (12, "Zoë Léger", None, 1),
];

/// (id, artist, acquisition year, medium).
pub(crate) const ARTWORKS: &[(i32, i32, Option<i32>, Option<&str>)] = &[
    (1, 558, Some(1856), Some("Oil paint on canvas")),
    (2, 558, Some(1856), Some("Graphite on paper")),
    (3, 558, Some(1856), Some("Graphite on paper")),
    (4, 558, Some(1950), Some("Watercolour on paper")),
    (5, 558, Some(1986), Some("Watercolour on paper")),
    (6, 558, Some(1986), Some("Graphite on paper")),
    (7, 558, Some(1999), Some("Oil paint on canvas")),
    (8, 2076, Some(1960), Some("Bronze")),
    (9, 2076, Some(1975), Some("Plaster")),
    (10, 559, Some(1920), Some("Watercolour on paper")),
    (11, 559, Some(1955), Some("Watercolour on paper")),
    (12, 559, Some(1958), Some("Graphite on paper")),
    (13, 559, Some(1985), Some("Watercolour on paper")),
    (14, 2566, Some(1950), Some("Etching")),
    (15, 1293, Some(1962), Some("Acrylic paint on canvas")),
    (16, 1293, Some(1971), Some("Etching")),
    (17, 1293, Some(1995), Some("Etching")),
    (18, 10, Some(1963), Some("Emulsion on board")),
    (19, 10, Some(1972), Some("Acrylic paint on canvas")),
    (20, 10, Some(1996), Some("Screenprint")),
    (21, 11, Some(1955), Some("Bronze")),
    (22, 11, Some(1964), Some("Slate")),
    (23, 11, Some(1964), Some("Bronze")),
    (24, 11, Some(2001), Some("Bronze")),
    (25, 12, None, None),
];

/// The summary kinds under test: `artist` (acquisitions by decade, media)
/// and `collection` (one entity: works by gender since 1950, size).
pub(crate) const KINDS: &str = r#"
batch_size = 3
concurrency = 2
statement_timeout_ms = 10000
refresh_interval_secs = 0
build_on_start = false

[[kinds]]
name = "artist"
entity = "artist"
description = "One artist's works in the collection: acquisitions by decade and media"
entities = "SELECT id AS key, name, total_works AS weight FROM tate.artists"
template = """
{{ entity.name }}: {{ acquisitions.total | count }} works in the collection
{%- if acquisitions.range %}, acquired {{ acquisitions.range | decades }}
{%- if acquisitions.peak %}, most in the {{ acquisitions.peak.period | decade }}
({{ acquisitions.peak.value | count }}; {{ acquisitions.peak.share_pct | pct }}){% endif %}{% endif %}.
{% if media.top.items %}Media: {{ media.top.items | listing }}{% if media.top.other %} and
{{ media.top.other.labels }} more{% endif %}.{% endif %}
"""

[[kinds.figures]]
name = "acquisitions"
shape = "series"
step = 10
compute = ["total", "range", "peak", "slope", "changes"]
sql = """
SELECT acquisition_year / 10 * 10 AS period, count(*) AS value
FROM tate.artworks WHERE artist_id = $1 AND acquisition_year IS NOT NULL
GROUP BY 1
"""

[[kinds.figures]]
name = "media"
shape = "breakdown"
top = 2
sql = "SELECT medium AS label, count(*) AS value FROM tate.artworks WHERE artist_id = $1 GROUP BY 1"

[[kinds]]
name = "collection"
entity = "collection"
description = "The whole collection since 1950: acquisitions by decade, by the artist's gender"
entities = "SELECT 'tate' AS key, 'Tate collection' AS name"
template = """
Since 1950 the collection acquired {{ gender.total | count }} works by {{ size.artists | count }} artists.
Works by women: {{ gender.shares.first.share_pct | pct }} in the {{ gender.shares.first.period | decade }},
{{ gender.shares.last.share_pct | pct }} in the {{ gender.shares.last.period | decade }}
({{ gender.shares.change_pp | pp }}{% if gender.shares.slope %}, {{ gender.shares.slope.direction }}{% endif %}).
By gender: {{ gender.groups | listing }}.
"""

[[kinds.figures]]
name = "gender"
shape = "series"
step = 10
focus = "Female"
compute = ["total", "groups", "shares"]
sql = """
SELECT w.acquisition_year / 10 * 10 AS period, a.gender AS series, count(*) AS value
FROM tate.artworks w JOIN tate.artists a ON a.id = w.artist_id
WHERE w.acquisition_year >= 1950
GROUP BY 1, 2
"""

[[kinds.figures]]
name = "size"
shape = "values"
sql = "SELECT count(*) AS works, count(DISTINCT artist_id) AS artists FROM tate.artworks"
"#;

/// Entities in the fixture: every artist plus the collection.
pub(crate) const ENTITIES: u64 = ARTISTS.len() as u64 + 1;

/// The fixture's kinds.
pub(crate) fn config() -> SummaryConfig {
    toml::from_str(KINDS).unwrap()
}

/// Creates the fixture's tables and rows; `reversed` inserts them in the
/// opposite order (so the database returns rows in another order).
pub(crate) async fn load(db: &TestDb, reversed: bool) {
    let client = db.pool().get().await.unwrap();
    client.batch_execute(SCHEMA).await.unwrap();
    let mut artists: Vec<_> = ARTISTS.to_vec();
    let mut artworks: Vec<_> = ARTWORKS.to_vec();
    if reversed {
        artists.reverse();
        artworks.reverse();
    }
    for (id, name, gender, total) in artists {
        client
            .execute(
                "INSERT INTO tate.artists (id, name, gender, total_works) VALUES ($1, $2, $3, $4)",
                &[&id, &name, &gender, &total],
            )
            .await
            .unwrap();
    }
    for (id, artist, year, medium) in artworks {
        client
            .execute(
                "INSERT INTO tate.artworks (id, artist_id, acquisition_year, medium) VALUES ($1, $2, $3, $4)",
                &[&id, &artist, &year, &medium],
            )
            .await
            .unwrap();
    }
}

/// A fresh database with the fixture.
pub(crate) async fn database() -> TestDb {
    let db = TestDb::create().await;
    load(&db, false).await;
    db
}

/// Opens the tool over `db` with the fixture's kinds.
pub(crate) async fn open(db: &TestDb, embedder: Option<Arc<dyn Embedder>>) -> SummaryTool {
    SummaryTool::open(db.pool().clone(), config(), embedder)
        .await
        .unwrap()
}

/// Opens the tool with the scripted embedder.
pub(crate) async fn open_embedded(db: &TestDb) -> SummaryTool {
    open(db, Some(Arc::new(Scripted))).await
}

/// Every stored summary as `(kind, key, text, facts::text, data_version)`.
pub(crate) async fn stored(db: &TestDb) -> Vec<(String, String, String, String, String)> {
    let client = db.pool().get().await.unwrap();
    client
        .query(
            "SELECT kind, entity_key, text, facts::text, data_version FROM quarry.summaries ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// A caller for domain calls in tests.
pub(crate) fn caller() -> quarry_auth::Caller {
    quarry_auth::Caller::operator(quarry_auth::Principal {
        tenant: "t1".into(),
        subject: "tester".into(),
        roles: vec![],
        scopes: vec![],
    })
}
