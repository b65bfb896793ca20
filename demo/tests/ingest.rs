//! Integration tests of `quarry_demo` against a real PostgreSQL.
//!
//! Needs `QUARRY_TEST_DATABASE_URL` (e.g. the URL `dev/pg.sh start` prints);
//! every test creates and drops its own database, so they run in parallel.
//! Input slices are cut at test time from the shared Tate files
//! (`$QUARRY_SHARED_DATA` or `../../shared/data` from this crate).

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use quarry_demo::{ARTISTS_FILE, ARTWORKS_FILE, IngestError, IngestReport, ingest_tate};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

const SCHEMA: &str = "tate";

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn database_url() -> String {
    match std::env::var("QUARRY_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "QUARRY_TEST_DATABASE_URL is not set: start PostgreSQL with `dev/pg.sh start` and \
             export QUARRY_TEST_DATABASE_URL=$(dev/pg.sh url)"
        ),
    }
}

async fn connect(config: &tokio_postgres::Config) -> (Client, JoinHandle<()>) {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
    let handle = tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection error: {e}");
        }
    });
    (client, handle)
}

/// A fresh database, dropped by [`TestDb::drop_db`].
struct TestDb {
    admin: Client,
    name: String,
    client: Client,
    connection: JoinHandle<()>,
}

impl TestDb {
    async fn new() -> Self {
        let config: tokio_postgres::Config = database_url()
            .parse()
            .unwrap_or_else(|e| panic!("QUARRY_TEST_DATABASE_URL is not a valid url: {e}"));
        let (admin, _) = connect(&config).await;
        let name = format!("test_{}", unique_suffix());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let mut config = config;
        config.dbname(&name);
        let (client, connection) = connect(&config).await;
        Self {
            admin,
            name,
            client,
            connection,
        }
    }

    async fn drop_db(self) {
        // Close the test connection cleanly before dropping its database.
        drop(self.client);
        let _ = self.connection.await;
        self.admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap_or_else(|e| panic!("cannot drop database {}: {e}", self.name));
    }

    async fn count(&self, table: &str) -> i64 {
        self.client
            .query_one(&format!("SELECT count(*) FROM {SCHEMA}.{table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("cannot count {table}: {e}"))
            .get(0)
    }

    /// Row counts of every table, read from the database.
    async fn counts(&self) -> Vec<(&'static str, i64)> {
        let mut out = Vec::new();
        for (table, _) in IngestReport::default().tables() {
            out.push((table, self.count(table).await));
        }
        out
    }
}

fn shared_data() -> PathBuf {
    match std::env::var_os("QUARRY_SHARED_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

fn tate_dir() -> PathBuf {
    let dir = shared_data().join("tate");
    assert!(
        dir.join(ARTWORKS_FILE).is_file(),
        "tate data not found in {} (set QUARRY_SHARED_DATA)",
        dir.display()
    );
    dir
}

/// The first `n` lines of a gzipped file.
fn head(path: &Path, n: usize) -> Vec<String> {
    let file = File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    BufReader::new(MultiGzDecoder::new(file))
        .lines()
        .take(n)
        .map(|l| l.unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())))
        .collect()
}

fn write_gz(path: &Path, lines: &[String]) {
    let file =
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let mut gz = GzEncoder::new(file, Compression::fast());
    for line in lines {
        writeln!(gz, "{line}").unwrap_or_else(|e| panic!("cannot write: {e}"));
    }
    gz.finish()
        .unwrap_or_else(|e| panic!("cannot finish gzip: {e}"));
}

/// A temporary directory holding input files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("quarry-ingest-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create temp dir: {e}"));
        Self(dir)
    }

    fn write(&self, name: &str, lines: &[String]) {
        write_gz(&self.0.join(name), lines);
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A slice of the real data: the first `artworks` artworks, the first
/// `artists` artists.
fn slice(artworks: usize, artists: usize) -> (TempDir, Vec<String>, Vec<String>) {
    let src = tate_dir();
    let artwork_lines = head(&src.join(ARTWORKS_FILE), artworks);
    let artist_lines = head(&src.join(ARTISTS_FILE), artists);
    let dir = TempDir::new();
    dir.write(ARTWORKS_FILE, &artwork_lines);
    dir.write(ARTISTS_FILE, &artist_lines);
    (dir, artwork_lines, artist_lines)
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad test line: {e}"))
}

/// Counts computed from the raw lines, independently of the loader.
struct Expected {
    artists: u64,
    artworks: u64,
    contributors: u64,
    subjects: u64,
    artwork_subjects: u64,
    movements: u64,
}

fn expected(artwork_lines: &[String], artist_lines: &[String]) -> Expected {
    let mut artist_ids = HashSet::new();
    let mut movements = BTreeSet::new();
    for line in artist_lines {
        let a = json(line);
        artist_ids.insert(a["id"].as_i64());
        for m in a["movements"].as_array().into_iter().flatten() {
            movements.insert(m.as_str().map(str::to_owned));
        }
    }
    let mut contributors = HashSet::new();
    let mut subject_nodes = HashSet::new();
    let mut artwork_subjects = HashSet::new();
    for line in artwork_lines {
        let w = json(line);
        let id = w["id"].as_i64();
        for c in w["contributors"].as_array().into_iter().flatten() {
            artist_ids.insert(c["id"].as_i64());
            contributors.insert((id, c["id"].as_i64(), c["role"].as_str().map(str::to_owned)));
        }
        for s in w["subjects"].as_array().into_iter().flatten() {
            let path = s.as_str().unwrap_or_default();
            artwork_subjects.insert((id, path.to_owned()));
            let parts: Vec<&str> = path.split(" > ").collect();
            for depth in 1..=parts.len() {
                subject_nodes.insert(parts[..depth].join(" > "));
            }
        }
        for m in w["movements"].as_array().into_iter().flatten() {
            movements.insert(m.as_str().map(str::to_owned));
        }
    }
    Expected {
        artists: artist_ids.len() as u64,
        artworks: artwork_lines.len() as u64,
        contributors: contributors.len() as u64,
        subjects: subject_nodes.len() as u64,
        artwork_subjects: artwork_subjects.len() as u64,
        movements: movements.len() as u64,
    }
}

async fn ingest(db: &mut TestDb, dir: &Path) -> Result<IngestReport, IngestError> {
    ingest_tate(&mut db.client, dir, SCHEMA, false).await
}

#[tokio::test]
async fn slice_loads_with_expected_counts_and_joins() {
    let (dir, artwork_lines, artist_lines) = slice(400, 300);
    let mut db = TestDb::new().await;
    let report = ingest(&mut db, &dir.0)
        .await
        .unwrap_or_else(|e| panic!("ingest failed: {e}"));

    let want = expected(&artwork_lines, &artist_lines);
    assert_eq!(report.artworks, want.artworks);
    assert_eq!(report.artists, want.artists);
    assert_eq!(report.artwork_contributors, want.contributors);
    assert_eq!(report.subjects, want.subjects);
    assert_eq!(report.artwork_subjects, want.artwork_subjects);
    assert_eq!(report.movements, want.movements);
    assert!(
        report.artist_stubs > 0,
        "the slice names artists beyond the first 300"
    );
    // The report's counts are what is in the database.
    for ((table, reported), (_, stored)) in report.tables().iter().zip(db.counts().await) {
        assert_eq!(*reported as i64, stored, "rows of {table}");
    }

    // The first artwork's artists, found by a join, are those of its line.
    let first = json(&artwork_lines[0]);
    let acno = first["acno"].as_str().unwrap_or_default();
    let mut want_names: Vec<String> = first["contributors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    want_names.sort();
    want_names.dedup();
    let rows = db
        .client
        .query(
            "SELECT DISTINCT ar.name FROM tate.artworks w \
             JOIN tate.artwork_contributors c ON c.artwork_id = w.id \
             JOIN tate.artists ar ON ar.id = c.artist_id \
             WHERE w.accession_number = $1 ORDER BY ar.name",
            &[&acno],
        )
        .await
        .unwrap_or_else(|e| panic!("join failed: {e}"));
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, want_names);

    // Height and width come from the dimensions text order (height x width):
    // the source's `width` is the height.
    let row = db
        .client
        .query_one(
            "SELECT height_mm::float8, width_mm::float8 FROM tate.artworks WHERE accession_number = $1",
            &[&acno],
        )
        .await
        .unwrap_or_else(|e| panic!("query failed: {e}"));
    let (height, width): (Option<f64>, Option<f64>) = (row.get(0), row.get(1));
    assert_eq!(height, first["width"].as_f64());
    assert_eq!(width, first["height"].as_f64());

    // Subject paths join back to artworks.
    let with_people: i64 = db
        .client
        .query_one(
            "SELECT count(DISTINCT s.artwork_id) FROM tate.artwork_subjects s \
             JOIN tate.subjects sub ON sub.id = s.subject_id WHERE sub.path LIKE 'people > %'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("query failed: {e}"))
        .get(0);
    let want_people = artwork_lines
        .iter()
        .filter(|l| {
            json(l)["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s.as_str().is_some_and(|s| s.starts_with("people > ")))
        })
        .count() as i64;
    assert_eq!(with_people, want_people);

    // Every table and column carries a comment.
    let uncommented: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM information_schema.columns c \
             WHERE c.table_schema = 'tate' AND col_description( \
               (quote_ident(c.table_schema) || '.' || quote_ident(c.table_name))::regclass, \
               c.ordinal_position) IS NULL",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("query failed: {e}"))
        .get(0);
    assert_eq!(uncommented, 0, "columns without a comment");
    db.drop_db().await;
}

#[tokio::test]
async fn running_twice_gives_identical_counts() {
    let (dir, _, _) = slice(300, 200);
    let mut db = TestDb::new().await;
    let first = ingest(&mut db, &dir.0)
        .await
        .unwrap_or_else(|e| panic!("first ingest failed: {e}"));
    let first_stored = db.counts().await;
    let second = ingest(&mut db, &dir.0)
        .await
        .unwrap_or_else(|e| panic!("second ingest failed: {e}"));
    let second_stored = db.counts().await;
    assert_eq!(
        IngestReport {
            elapsed: Default::default(),
            ..first
        },
        IngestReport {
            elapsed: Default::default(),
            ..second
        }
    );
    assert_eq!(first_stored, second_stored);
    assert!(first_stored.iter().any(|(_, n)| *n > 0));
    db.drop_db().await;
}

#[tokio::test]
async fn malformed_line_is_named_and_previous_data_survives() {
    let (good, _, _) = slice(300, 200);
    let mut db = TestDb::new().await;
    ingest(&mut db, &good.0)
        .await
        .unwrap_or_else(|e| panic!("ingest of good data failed: {e}"));
    let before = db.counts().await;

    // 2,500 good lines (so rows are already streaming into COPY), then a
    // line whose id is a string.
    let src = tate_dir();
    let mut lines = head(&src.join(ARTWORKS_FILE), 2_500);
    lines.push(r#"{"id": "not a number", "acno": "X1", "title": "broken"}"#.to_owned());
    lines.extend(
        head(&src.join(ARTWORKS_FILE), 2_510)
            .into_iter()
            .skip(2_500),
    );
    let bad = TempDir::new();
    bad.write(ARTWORKS_FILE, &lines);
    bad.write(ARTISTS_FILE, &head(&src.join(ARTISTS_FILE), 100));
    let err = match ingest(&mut db, &bad.0).await {
        Err(err) => err,
        Ok(report) => panic!("malformed input was accepted: {report:?}"),
    };
    let message = err.to_string();
    assert!(
        matches!(err, IngestError::Malformed { line: 2501, .. }),
        "{err:?}"
    );
    assert!(message.contains(ARTWORKS_FILE), "{message}");
    assert!(message.contains("line 2501"), "{message}");
    assert!(message.contains("invalid type"), "{message}");
    assert_eq!(
        db.counts().await,
        before,
        "a failed ingest changed the data"
    );

    // Truncated JSON in the artists file.
    let bad = TempDir::new();
    bad.write(ARTWORKS_FILE, &head(&src.join(ARTWORKS_FILE), 10));
    let mut artists = head(&src.join(ARTISTS_FILE), 3);
    artists.push(r#"{"id": 1, "name": "#.to_owned());
    bad.write(ARTISTS_FILE, &artists);
    let err = match ingest(&mut db, &bad.0).await {
        Err(err) => err,
        Ok(report) => panic!("malformed input was accepted: {report:?}"),
    };
    let message = err.to_string();
    assert!(message.contains(ARTISTS_FILE), "{message}");
    assert!(message.contains("line 4"), "{message}");
    assert_eq!(
        db.counts().await,
        before,
        "a failed ingest changed the data"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn missing_file_is_named() {
    let src = tate_dir();
    let dir = TempDir::new();
    dir.write(ARTISTS_FILE, &head(&src.join(ARTISTS_FILE), 5));
    let mut db = TestDb::new().await;
    let err = match ingest(&mut db, &dir.0).await {
        Err(err) => err,
        Ok(report) => panic!("ingest without artworks succeeded: {report:?}"),
    };
    assert!(matches!(err, IngestError::MissingFile { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.0.join(ARTWORKS_FILE).display().to_string()),
        "{message}"
    );
    let schemas: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'tate'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("query failed: {e}"))
        .get(0);
    assert_eq!(schemas, 0, "a failed ingest created the schema");
    db.drop_db().await;
}

#[derive(serde::Deserialize)]
struct Golden {
    question: String,
    sql: String,
}

/// The full data set loads, and every golden question's SQL runs read-only
/// against it and returns rows.
#[tokio::test]
async fn full_ingest_answers_every_golden_question() {
    let golden_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/tate.json");
    let golden: Vec<Golden> = serde_json::from_reader(
        File::open(&golden_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", golden_path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not valid: {e}", golden_path.display()));
    assert!(golden.len() >= 20, "too few golden pairs: {}", golden.len());

    let mut db = TestDb::new().await;
    let report = ingest(&mut db, &tate_dir())
        .await
        .unwrap_or_else(|e| panic!("full ingest failed: {e}"));
    eprintln!("full ingest:\n{report}");
    assert_eq!(report.artworks, 69_202);
    assert_eq!(report.artists, 3_534 + report.artist_stubs);
    assert_eq!(report.artist_stubs, 5);
    assert_eq!(report.duplicate_artist_lines, 4);

    let mut failures = Vec::new();
    for g in &golden {
        let result = async {
            let tx = db.client.transaction().await?;
            tx.batch_execute("SET TRANSACTION READ ONLY").await?;
            let rows = tx.query(g.sql.as_str(), &[]).await;
            tx.rollback().await?;
            rows
        }
        .await;
        match result {
            Ok(rows) if rows.is_empty() => failures.push(format!("{}: no rows", g.question)),
            Ok(_) => {}
            Err(e) => failures.push(format!(
                "{}: {}",
                g.question,
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.to_string())
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "golden pairs failed:\n{}",
        failures.join("\n")
    );
    db.drop_db().await;
}

/// Artworks a non-owner role sees with `quarry.tenant` set to `tenant`
/// (`None`: not set), counted in a transaction that is rolled back.
async fn visible_artworks(db: &TestDb, role: &str, tenant: Option<&str>) -> i64 {
    db.client
        .batch_execute("BEGIN")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    db.client
        .batch_execute(&format!("SET LOCAL ROLE {role}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(tenant) = tenant {
        db.client
            .query("SELECT set_config('quarry.tenant', $1, true)", &[&tenant])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let seen = db
        .client
        .query_one(&format!("SELECT count(*) FROM {SCHEMA}.artworks"), &[])
        .await
        .unwrap_or_else(|e| panic!("{tenant:?}: {e}"))
        .get(0);
    db.client
        .batch_execute("ROLLBACK")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    seen
}

#[tokio::test]
async fn artworks_are_tenanted_by_era_and_a_reload_keeps_the_tenants() {
    let (dir, _, _) = slice(300, 200);
    let mut db = TestDb::new().await;
    ingest(&mut db, &dir.0)
        .await
        .unwrap_or_else(|e| panic!("first ingest failed: {e}"));
    // an operator's tenant and an edited demo tenant survive a reload
    db.client
        .batch_execute(&format!(
            "INSERT INTO {SCHEMA}.tenant_eras VALUES ('t-late', 1900, NULL);
             UPDATE {SCHEMA}.tenant_eras SET to_year = 1899 WHERE tenant = 'early'"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ingest(&mut db, &dir.0)
        .await
        .unwrap_or_else(|e| panic!("second ingest failed: {e}"));
    let tenants: Vec<(String, Option<i32>, Option<i32>)> = db
        .client
        .query(
            &format!("SELECT tenant, from_year, to_year FROM {SCHEMA}.tenant_eras ORDER BY tenant"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let era = |t: &str, from: Option<i32>, to: Option<i32>| (t.to_owned(), from, to);
    assert_eq!(
        tenants,
        vec![
            era("acme", None, None),
            era("bench", None, None),
            era("demo", None, None),
            era("early", None, Some(1899)),
            era("modern", Some(1950), None),
            era("t-late", Some(1900), None),
        ]
    );

    // the owner (here a superuser) is not subject to the policy; a role that
    // only reads is
    let role = format!("quarry_demo_ro_{}", unique_suffix());
    db.client
        .batch_execute(&format!(
            "CREATE ROLE {role} NOLOGIN; GRANT USAGE ON SCHEMA {SCHEMA} TO {role};
             GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {role}"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let count = |filter: &str| {
        let sql = format!("SELECT count(*) FROM {SCHEMA}.artworks WHERE {filter}");
        let client = &db.client;
        async move {
            client
                .query_one(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .get::<_, i64>(0)
        }
    };
    let all = count("true").await;
    let late = count("acquisition_year >= 1900").await;
    let early = count("acquisition_year <= 1899").await;
    assert!(
        late > 0 && early > 0,
        "the slice spans 1900: {early} {late}"
    );
    for (tenant, expected) in [
        (Some("t-late"), late),
        (Some("early"), early),
        (Some("modern"), count("acquisition_year >= 1950").await),
        (Some("demo"), all),
        (Some("nobody"), 0),
        // no tenant: Quarry's own background work
        (Some(""), all),
        (None, all),
    ] {
        assert_eq!(
            visible_artworks(&db, &role, tenant).await,
            expected,
            "tenant {tenant:?}"
        );
    }
    db.client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    db.drop_db().await;
}
