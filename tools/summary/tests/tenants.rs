#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::wildcard_enum_match_arm
)]
//! Tenant-scoped kinds over a real PostgreSQL with row-level security: the
//! fixture's `artist` kind declares `tenants`, `tate.artworks` has the
//! demo's era policy, and figure queries run as a role without `BYPASSRLS`.
//! Each tenant's summaries are computed from its own rows only, no read
//! path returns another tenant's summary, a tenant the query does not list
//! gets nothing, and removing a tenant removes its summaries.

#[path = "support/fixture.rs"]
mod fixture;

use std::collections::BTreeSet;
use std::sync::Arc;

use quarry_db::testing::TestDb;
use quarry_summary::{
    BuildOptions, GetRequest, MatchKind, SearchRequest, SummaryConfig, SummaryError, SummaryTool,
};

/// A `NOLOGIN` role without `BYPASSRLS` the figure queries run as (roles
/// are cluster-wide: created once, granted per test database).
const ROLE: &str = "quarry_summary_tenant_test";

/// Eras as in the demo (`tate.tenant_eras`): `early` sees works acquired
/// before 1950, `modern` from 1950; a transaction without a tenant sees
/// every row, a tenant reads only its own era row.
const TENANCY: &str = "
    CREATE TABLE tate.tenant_eras (tenant text PRIMARY KEY, from_year int, to_year int);
    INSERT INTO tate.tenant_eras VALUES ('early', NULL, 1949), ('modern', 1950, NULL);
    ALTER TABLE tate.tenant_eras ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_eras_own ON tate.tenant_eras
        USING (coalesce(current_setting('quarry.tenant', true), '') IN ('', tenant));
    ALTER TABLE tate.artworks ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_era ON tate.artworks USING (
        coalesce(current_setting('quarry.tenant', true), '') = ''
        OR (SELECT int4range(e.from_year, e.to_year, '[]') FROM tate.tenant_eras e
             WHERE e.tenant = current_setting('quarry.tenant', true)) @> artworks.acquisition_year
    );
";

/// Artists with works acquired before 1950 (what `early` sees).
const EARLY_ARTISTS: &[&str] = &["558", "559"];
/// Artists with works acquired from 1950 (what `modern` sees).
const MODERN_ARTISTS: &[&str] = &["10", "11", "1293", "2076", "2566", "558", "559"];

async fn ensure_role(db: &TestDb) {
    let client = db.pool().get().await.unwrap();
    let create = format!(
        "DO $$ BEGIN CREATE ROLE {ROLE} NOLOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    );
    for attempt in 0.. {
        match client.batch_execute(&create).await {
            Ok(()) => break,
            // other test databases create the same role at the same moment
            Err(e) if attempt < 10 => {
                eprintln!("create role (attempt {attempt}): {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("create role: {e}"),
        }
    }
    let row = client
        .query_one(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1",
            &[&ROLE],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, bool>(1)),
        (false, false),
        "row-level security must apply to {ROLE}"
    );
    client
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA tate TO {ROLE}; GRANT SELECT ON ALL TABLES IN SCHEMA tate TO {ROLE}"
        ))
        .await
        .unwrap();
}

/// The fixture's database with the eras, their policies and the role.
async fn database() -> TestDb {
    let db = fixture::database().await;
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(TENANCY)
        .await
        .unwrap();
    ensure_role(&db).await;
    db
}

/// The fixture's kinds run as [`ROLE`], `artist` built per tenant of
/// `tate.tenant_eras` and listing the artists with works the tenant sees;
/// `collection` stays shared.
fn config() -> SummaryConfig {
    let mut config = fixture::config();
    config.role = Some(ROLE.into());
    let artist = &mut config.kinds[0];
    assert_eq!(artist.name, "artist");
    artist.tenants = Some("SELECT tenant FROM tate.tenant_eras".into());
    artist.entities = "SELECT DISTINCT a.id AS key, a.name, a.total_works AS weight \
         FROM tate.artists a JOIN tate.artworks w ON w.artist_id = a.id"
        .into();
    config
}

async fn open(db: &TestDb, embedded: bool) -> SummaryTool {
    let embedder: Option<Arc<dyn quarry_llm::embed::Embedder>> =
        embedded.then(|| Arc::new(fixture::Scripted) as _);
    SummaryTool::open(db.pool().clone(), config(), embedder)
        .await
        .unwrap()
}

fn caller(tenant: &str) -> quarry_auth::Caller {
    quarry_auth::Caller::operator(quarry_auth::Principal {
        tenant: tenant.into(),
        subject: "tester".into(),
        roles: vec![],
        scopes: vec![],
    })
}

async fn get(
    tool: &SummaryTool,
    tenant: &str,
    kind: Option<&str>,
    entity: Option<&str>,
) -> Result<quarry_summary::GetResponse, SummaryError> {
    tool.get(
        &caller(tenant),
        GetRequest {
            kind: kind.map(Into::into),
            entity: entity.map(Into::into),
            limit: 100,
            offset: 0,
        },
    )
    .await
}

/// `sql`'s single integer as `tenant` sees the rows: as [`ROLE`] with
/// `quarry.tenant` set, the way the builder runs figure queries.
async fn count_as(db: &TestDb, tenant: &str, sql: &str) -> i64 {
    let mut client = db.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(&format!("SET LOCAL ROLE {ROLE}"))
        .await
        .unwrap();
    tx.execute("SELECT set_config('quarry.tenant', $1, true)", &[&tenant])
        .await
        .unwrap();
    tx.query_one(sql, &[]).await.unwrap().get(0)
}

fn keys(summaries: &[quarry_summary::Summary]) -> BTreeSet<(String, String)> {
    summaries
        .iter()
        .map(|s| (s.kind.clone(), s.entity_key.clone()))
        .collect()
}

/// `(kind, key)` of `tenant`'s artists plus the shared collection.
fn visible(artists: &[&str]) -> BTreeSet<(String, String)> {
    artists
        .iter()
        .map(|k| ("artist".to_owned(), (*k).to_owned()))
        .chain([("collection".to_owned(), "tate".to_owned())])
        .collect()
}

#[tokio::test]
async fn each_tenant_gets_figures_computed_from_its_own_rows() {
    let db = database().await;
    let tool = open(&db, true).await;
    let report = tool
        .build(BuildOptions::all("test"), &|_| {})
        .await
        .unwrap();
    let expected = (EARLY_ARTISTS.len() + MODERN_ARTISTS.len() + 1) as u64;
    assert_eq!(
        (report.entities, report.built, report.failed),
        (expected, expected, 0),
        "{report:?}"
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // Turner: 3 works acquired before 1950, 4 since; each tenant's summary
    // holds its own count, equal to the count under that tenant's security
    let mut totals = Vec::new();
    for tenant in ["early", "modern"] {
        let found = get(&tool, tenant, Some("artist"), Some("558"))
            .await
            .unwrap();
        assert_eq!(found.matched, MatchKind::Key);
        assert_eq!(found.summaries.len(), 1, "{tenant}: {:?}", found.summaries);
        let facts = &found.summaries[0].facts;
        let total = facts["acquisitions"]["total"].as_i64().unwrap();
        let direct = count_as(
            &db,
            tenant,
            "SELECT count(*) FROM tate.artworks WHERE artist_id = 558 AND acquisition_year IS NOT NULL",
        )
        .await;
        assert_eq!(total, direct, "{tenant}");
        let media = facts["media"]["total"].as_i64().unwrap();
        let direct = count_as(
            &db,
            tenant,
            "SELECT count(*) FROM tate.artworks WHERE artist_id = 558",
        )
        .await;
        assert_eq!(media, direct, "{tenant}");
        assert!(
            found.summaries[0]
                .text
                .starts_with(&format!("Joseph Mallord William Turner: {total} works")),
            "{}",
            found.summaries[0].text
        );
        totals.push(total);
    }
    assert_eq!(totals, [3, 4]);

    // the shared kind is built once, with no tenant: every row, the same
    // summary for both
    let early = get(&tool, "early", Some("collection"), Some("tate"))
        .await
        .unwrap();
    let modern = get(&tool, "modern", Some("collection"), Some("tate"))
        .await
        .unwrap();
    assert_eq!(early.summaries[0].facts, modern.summaries[0].facts);
    assert_eq!(
        early.summaries[0].facts["size"]["works"],
        serde_json::json!(fixture::ARTWORKS.len())
    );
    db.drop_db().await;
}

/// The bypass test: every read path, for every tenant, returns exactly the
/// shared summaries and the tenant's own. Fails if any read stops filtering
/// by tenant.
#[tokio::test]
async fn reads_never_return_another_tenants_summary() {
    let db = database().await;
    let embedded = open(&db, true).await;
    embedded
        .build(BuildOptions::all("test"), &|_| {})
        .await
        .unwrap();
    // the same summaries, searched by full text instead of vectors
    let full_text = open(&db, false).await;

    for (tenant, artists) in [
        ("early", EARLY_ARTISTS),
        ("modern", MODERN_ARTISTS),
        ("acme", &[][..]),
    ] {
        let own = visible(artists);
        for tool in [&embedded, &full_text] {
            // listing and its total
            let listed = get(tool, tenant, Some("artist"), None).await.unwrap();
            assert_eq!(listed.total, artists.len() as u64, "{tenant}");
            let listed_keys: BTreeSet<&str> = listed
                .summaries
                .iter()
                .map(|s| s.entity_key.as_str())
                .collect();
            assert_eq!(listed_keys, artists.iter().copied().collect(), "{tenant}");

            // search: ranked among, and counted over, the tenant's own only
            let found = tool
                .search(
                    &caller(tenant),
                    SearchRequest {
                        query: "Turner works acquired media".into(),
                        kinds: vec![],
                        k: 100,
                    },
                )
                .await
                .unwrap();
            assert!(keys(&found.summaries).is_subset(&own), "{tenant}");
            assert_eq!(found.searched, own.len() as u64, "{tenant}");
            if found.retrieval == quarry_summary::Retrieval::Vector {
                assert_eq!(keys(&found.summaries), own, "{tenant}");
            }

            // kind counts
            let kinds = tool.kinds(&caller(tenant)).await.unwrap();
            let counts: Vec<(&str, u64)> = kinds
                .iter()
                .map(|k| (k.name.as_str(), k.summaries))
                .collect();
            assert_eq!(
                counts,
                [("artist", artists.len() as u64), ("collection", 1)],
                "{tenant}"
            );

            // every artist by key, name and fuzzy name, in one kind or all
            for (key, name, _, _) in fixture::ARTISTS {
                let key = key.to_string();
                let mine = artists.contains(&key.as_str());
                let surname = name.split(' ').next_back().unwrap();
                for (kind, entity) in [
                    (Some("artist"), key.as_str()),
                    (None, key.as_str()),
                    (Some("artist"), *name),
                    (None, *name),
                ] {
                    match get(tool, tenant, kind, Some(entity)).await {
                        Ok(found) => {
                            // another tenant's entity may only fuzzily
                            // match one of the tenant's own
                            assert_eq!(keys(&found.summaries).len(), found.summaries.len());
                            assert!(keys(&found.summaries).is_subset(&own), "{tenant} {entity}");
                            assert_eq!(
                                found.summaries.iter().any(|s| s.entity_key == key),
                                mine,
                                "{tenant} {entity}: {:?}",
                                found.summaries
                            );
                        }
                        Err(SummaryError::NotFound { closest, .. }) => {
                            assert!(!mine, "{tenant} lost {entity}");
                            assert!(
                                closest
                                    .iter()
                                    .all(|c| own.contains(&(c.kind.clone(), c.key.clone()))),
                                "{tenant} {entity}: {closest:?}"
                            );
                        }
                        Err(e) => panic!("{tenant} {entity}: {e}"),
                    }
                }
                // fuzzy: alternatives are the tenant's own too
                if let Ok(found) = get(tool, tenant, Some("artist"), Some(surname)).await {
                    assert!(keys(&found.summaries).is_subset(&own), "{tenant} {surname}");
                    assert!(
                        found
                            .alternatives
                            .iter()
                            .all(|c| own.contains(&(c.kind.clone(), c.key.clone()))),
                        "{tenant} {surname}: {:?}",
                        found.alternatives
                    );
                }
            }
        }
    }
    // a tenant not listed still reads the shared kind
    let shared = get(&embedded, "acme", Some("collection"), Some("tate"))
        .await
        .unwrap();
    assert_eq!(shared.summaries.len(), 1);
    db.drop_db().await;
}

#[tokio::test]
async fn rebuilds_are_incremental_per_tenant_and_removed_tenants_lose_their_summaries() {
    let db = database().await;
    let tool = open(&db, false).await;
    let all = (EARLY_ARTISTS.len() + MODERN_ARTISTS.len() + 1) as u64;
    tool.build(BuildOptions::all("test"), &|_| {})
        .await
        .unwrap();
    let early_turner = get(&tool, "early", Some("artist"), Some("558"))
        .await
        .unwrap()
        .summaries
        .remove(0);
    let second = tool
        .build(BuildOptions::all("test"), &|_| {})
        .await
        .unwrap();
    assert_eq!((second.built, second.unchanged), (0, all), "{second:?}");

    // a work acquired in 1990 changes modern's Turner and the shared
    // collection, not early's Turner
    db.pool()
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO tate.artworks VALUES (26, 558, 1990, 'Oil paint on canvas')",
            &[],
        )
        .await
        .unwrap();
    let third = tool
        .build(BuildOptions::all("test"), &|_| {})
        .await
        .unwrap();
    assert_eq!((third.built, third.unchanged), (2, all - 2), "{third:?}");
    let modern = get(&tool, "modern", Some("artist"), Some("558"))
        .await
        .unwrap();
    assert_eq!(modern.summaries[0].facts["acquisitions"]["total"], 5);
    let early = get(&tool, "early", Some("artist"), Some("558"))
        .await
        .unwrap()
        .summaries
        .remove(0);
    assert_eq!(early.computed_at, early_turner.computed_at);
    assert_eq!(early.facts, early_turner.facts);

    // building one entity builds it for every tenant that lists it
    let one = tool
        .build(
            BuildOptions {
                kinds: vec!["artist".into()],
                entity_keys: vec!["558".into(), "1293".into(), "9999".into()],
                force: true,
                trigger: "test".into(),
            },
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!((one.entities, one.built, one.failed), (4, 3, 1), "{one:?}");
    assert_eq!(one.failures[0].entity_key, "9999");

    // early is no longer a tenant: its summaries go at the next full build
    let client = db.pool().get().await.unwrap();
    client
        .execute("DELETE FROM tate.tenant_eras WHERE tenant = 'early'", &[])
        .await
        .unwrap();
    let fourth = tool
        .build(BuildOptions::all("test"), &|_| {})
        .await
        .unwrap();
    assert_eq!(fourth.removed, EARLY_ARTISTS.len() as u64, "{fourth:?}");
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM quarry.summaries WHERE tenant = 'early'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    assert!(matches!(
        get(&tool, "early", Some("artist"), Some("558")).await,
        Err(SummaryError::NotFound { .. })
    ));
    assert_eq!(
        get(&tool, "modern", Some("artist"), None)
            .await
            .unwrap()
            .total,
        MODERN_ARTISTS.len() as u64
    );

    // the kind made shared again: its tenants' summaries give way to shared ones
    let mut shared = fixture::config();
    shared.role = Some(ROLE.into());
    let tool = SummaryTool::open(db.pool().clone(), shared, None)
        .await
        .unwrap();
    let fifth = tool
        .build(BuildOptions::all("test"), &|_| {})
        .await
        .unwrap();
    assert_eq!(fifth.removed, MODERN_ARTISTS.len() as u64, "{fifth:?}");
    let tenants: Vec<String> = client
        .query("SELECT DISTINCT tenant FROM quarry.summaries", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tenants, [""]);
    let found = get(&tool, "early", Some("artist"), Some("558"))
        .await
        .unwrap();
    assert_eq!(found.summaries[0].facts["acquisitions"]["total"], 8);
    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn a_tenants_query_that_cannot_be_used_is_refused_at_start_up() {
    let db = database().await;
    for (sql, expected) in [
        (
            "SELECT tenant, from_year FROM tate.tenant_eras",
            "summary definition artist: tenants query: must return exactly one column",
        ),
        (
            "SELECT nope FROM tate.tenant_eras",
            "summary definition artist: tenants query: column \"nope\" does not exist",
        ),
        (
            "DELETE FROM tate.tenant_eras RETURNING tenant",
            "summary definition artist: tenants query: only a query",
        ),
        (
            "SELECT tenant FROM tate.tenant_eras WHERE tenant = $1",
            "summary definition artist: tenants query: takes no parameters",
        ),
    ] {
        let mut config = config();
        config.kinds[0].tenants = Some(sql.into());
        let e = SummaryTool::open(db.pool().clone(), config, None)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with(expected), "{sql}: {e}");
    }
    db.drop_db().await;
}
