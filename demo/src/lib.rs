//! `quarry ingest`: loads the Tate collection (the demo data set) from its
//! gzipped JSON-lines files into a normalised PostgreSQL schema.
//!
//! [`ingest_tate`] reads `artists.jsonl.gz` and `artworks.jsonl.gz` from a
//! directory line by line, parses each line into typed structs on a blocking
//! thread, and streams rows into the database with binary `COPY`. The whole
//! load is one transaction: the tables are dropped and recreated inside it, so
//! a run either replaces the schema's tables completely or leaves them as they
//! were, and running it twice gives the same result.
//!
//! Tables (all in the given schema, usually `tate`): `artists`, `artworks`,
//! `artwork_contributors`, `subjects` (a three-level tree), `artwork_subjects`,
//! `movements`, `artist_movements`, `artwork_movements`. Every table and column
//! carries a `COMMENT` written for the language model that generates SQL.
//!
//! The demo's tenants share these tables under PostgreSQL row-level
//! security: `artworks` is tenanted by acquisition era through the table
//! `tenant_eras` (kept across loads; the demo tenants `demo`, `acme` and
//! `bench` see every era, `modern` the works acquired in 1950 or later,
//! `early` those acquired before), read from the `quarry.tenant` setting
//! Quarry puts in every request's transaction. The rules, and why a
//! transaction with no tenant sees every row, are on `schema::TENANCY`.

mod schema;
mod source;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use source::{ArtistRow, ArtworkRow, Lines, Movements};

/// File name of the artists in the data directory.
pub const ARTISTS_FILE: &str = "artists.jsonl.gz";
/// File name of the artworks in the data directory.
pub const ARTWORKS_FILE: &str = "artworks.jsonl.gz";
/// The schema the demo uses.
pub const DEFAULT_SCHEMA: &str = "tate";

/// Artwork rows per message from the parsing thread to the loader.
const BATCH: usize = 1024;

/// Rows loaded per table, and how long the load took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Rows of `artists`, stubs included.
    pub artists: u64,
    /// Of `artists`, rows created for contributors missing from the artists file.
    pub artist_stubs: u64,
    /// Lines of the artists file that repeated an id already seen and were
    /// merged into the first line's row.
    pub duplicate_artist_lines: u64,
    pub artworks: u64,
    pub artwork_contributors: u64,
    /// Nodes of the subject tree, all levels.
    pub subjects: u64,
    pub artwork_subjects: u64,
    pub movements: u64,
    pub artist_movements: u64,
    pub artwork_movements: u64,
    /// Wall time from the start of the call to the commit.
    pub elapsed: Duration,
}

impl IngestReport {
    /// `(table, rows)` for every table, in load order.
    pub fn tables(&self) -> [(&'static str, u64); 8] {
        [
            ("artists", self.artists),
            ("artworks", self.artworks),
            ("artwork_contributors", self.artwork_contributors),
            ("subjects", self.subjects),
            ("artwork_subjects", self.artwork_subjects),
            ("movements", self.movements),
            ("artist_movements", self.artist_movements),
            ("artwork_movements", self.artwork_movements),
        ]
    }
}

impl fmt::Display for IngestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, rows) in self.tables() {
            writeln!(f, "{table:<22} {rows:>8}")?;
        }
        write!(
            f,
            "({} artist stubs, {} duplicate artist lines merged) in {:.1}s",
            self.artist_stubs,
            self.duplicate_artist_lines,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Why an ingest failed. Whatever the error, the database is as it was before
/// the call: the load runs in one transaction that is rolled back.
#[derive(Debug)]
pub enum IngestError {
    /// The schema name is not a plain lower-case identifier.
    InvalidSchema(String),
    /// An input file does not exist.
    MissingFile { path: PathBuf },
    /// An input file exists but cannot be opened.
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Reading or decompressing failed at a line (1-based).
    Read {
        path: PathBuf,
        line: u64,
        source: std::io::Error,
    },
    /// A line (1-based) is not a valid record.
    Malformed {
        path: PathBuf,
        line: u64,
        message: String,
    },
    /// A database statement failed; `context` says which step.
    Database {
        context: String,
        source: tokio_postgres::Error,
    },
    /// The parsing thread panicked or went away.
    Worker(String),
}

/// Result of this module.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IngestError::InvalidSchema(name) => write!(
                f,
                "invalid schema name {name:?}: use lower-case letters, digits and underscores"
            ),
            IngestError::MissingFile { path } => {
                write!(f, "input file {} does not exist", path.display())
            }
            IngestError::Open { path, source } => {
                write!(f, "cannot open {}: {source}", path.display())
            }
            IngestError::Read { path, line, source } => {
                write!(f, "{}: line {line}: cannot read: {source}", path.display())
            }
            IngestError::Malformed {
                path,
                line,
                message,
            } => write!(f, "{}: line {line}: {message}", path.display()),
            IngestError::Database { context, source } => match source.as_db_error() {
                Some(db) => write!(f, "{context}: {db}"),
                None => write!(f, "{context}: {source}"),
            },
            IngestError::Worker(message) => write!(f, "ingest worker failed: {message}"),
        }
    }
}

impl std::error::Error for IngestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IngestError::Open { source, .. } | IngestError::Read { source, .. } => Some(source),
            IngestError::Database { source, .. } => Some(source),
            IngestError::InvalidSchema(_)
            | IngestError::MissingFile { .. }
            | IngestError::Malformed { .. }
            | IngestError::Worker(_) => None,
        }
    }
}

fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> IngestError {
    let context = context.into();
    move |source| IngestError::Database { context, source }
}

/// Loads `dir/artists.jsonl.gz` and `dir/artworks.jsonl.gz` into `schema`
/// (created if missing; its Tate tables are replaced), in one transaction,
/// and puts `artworks` under row-level security by tenant era (the table
/// `tenant_eras` is created if missing and keeps its rows; missing demo
/// tenants are added).
///
/// With `progress`, draws a progress bar per file on stderr.
///
/// # Errors
/// [`IngestError::MissingFile`] naming a missing input file before anything
/// is touched; [`IngestError::Malformed`] / [`IngestError::Read`] naming the
/// file and the 1-based line; [`IngestError::Database`] for a failed
/// statement. After any error the database is unchanged.
pub async fn ingest_tate(
    client: &mut tokio_postgres::Client,
    dir: &Path,
    schema: &str,
    progress: bool,
) -> Result<IngestReport> {
    let started = Instant::now();
    if !is_plain_identifier(schema) {
        return Err(IngestError::InvalidSchema(schema.to_owned()));
    }
    let quoted = format!("\"{schema}\"");
    let artists_path = dir.join(ARTISTS_FILE);
    let artworks_path = dir.join(ARTWORKS_FILE);
    let artists_file = source::open(&artists_path)?;
    let artworks_file = source::open(&artworks_path)?;

    // Artists are few (3.5k): parse them all before touching the database.
    let artists_bar = file_bar(progress, &artists_file, ARTISTS_FILE);
    let artists_reader: Box<dyn std::io::Read + Send> =
        Box::new(artists_bar.wrap_read(artists_file));
    let path = artists_path.clone();
    let (artists, mut movements) = tokio::task::spawn_blocking(move || {
        let mut lines = Lines::new(&path, artists_reader);
        let mut movements = Movements::default();
        source::read_artists(&mut lines, &mut movements).map(|artists| (artists, movements))
    })
    .await
    .map_err(|e| IngestError::Worker(e.to_string()))??;
    artists_bar.finish_with_message(format!("{ARTISTS_FILE}: {} lines", artists.lines));

    let tx = client
        .transaction()
        .await
        .map_err(db("cannot begin transaction"))?;
    let drop_tables = schema::TABLES
        .iter()
        .map(|t| format!("{quoted}.{t}"))
        .collect::<Vec<_>>()
        .join(", ");
    tx.batch_execute(&format!(
        "SET LOCAL maintenance_work_mem = '256MB';\n\
         CREATE SCHEMA IF NOT EXISTS {quoted};\n\
         DROP TABLE IF EXISTS {drop_tables} CASCADE;\n{}",
        schema::render(schema::CREATE, &quoted)
    ))
    .await
    .map_err(db("cannot create tables"))?;

    // Artworks: a blocking thread parses and sends batches; this task COPYs
    // them as they come. Links are small and collected in memory.
    let known: HashSet<i32> = artists.rows.iter().map(|a| a.id).collect();
    let artworks_bar = file_bar(progress, &artworks_file, ARTWORKS_FILE);
    let artworks_reader: Box<dyn std::io::Read + Send> =
        Box::new(artworks_bar.wrap_read(artworks_file));
    let (batches, mut received) = mpsc::channel::<Vec<ArtworkRow>>(4);
    let path = artworks_path.clone();
    let bar = artworks_bar.clone();
    let parser = tokio::task::spawn_blocking(move || {
        let mut lines = Lines::new(&path, artworks_reader);
        let mut batch = Vec::with_capacity(BATCH);
        let mut count: u64 = 0;
        let links = source::read_artworks(&mut lines, &known, &mut movements, |row| {
            batch.push(row);
            count += 1;
            if batch.len() == BATCH {
                bar.set_message(format!("{ARTWORKS_FILE}: {count} lines"));
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                batches
                    .blocking_send(full)
                    .map_err(|_| IngestError::Worker("loader stopped".to_owned()))?;
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            batches
                .blocking_send(batch)
                .map_err(|_| IngestError::Worker("loader stopped".to_owned()))?;
        }
        Ok::<_, IngestError>((links, movements))
    });

    let sink = tx
        .copy_in(&format!(
            "COPY {quoted}.artworks (id, accession_number, title, all_artists, medium, \
             credit_line, inscription, date_text, year_made, year_made_end, acquisition_year, \
             classification, dimensions, height_mm, width_mm, depth_mm, foreign_title, \
             group_title, url) FROM STDIN BINARY"
        ))
        .await
        .map_err(db("cannot copy artworks"))?;
    let mut writer = pin!(BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT4,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::INT4,
            Type::INT4,
            Type::TEXT,
            Type::TEXT,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
        ],
    ));
    let mut copy_error = None;
    'batches: while let Some(batch) = received.recv().await {
        for r in &batch {
            let row: [&(dyn ToSql + Sync); 19] = [
                &r.id,
                &r.accession_number,
                &r.title,
                &r.all_artists,
                &r.medium,
                &r.credit_line,
                &r.inscription,
                &r.date_text,
                &r.year_made,
                &r.year_made_end,
                &r.acquisition_year,
                &r.classification,
                &r.dimensions,
                &r.height_mm,
                &r.width_mm,
                &r.depth_mm,
                &r.foreign_title,
                &r.group_title,
                &r.url,
            ];
            if let Err(e) = writer.as_mut().write(&row).await {
                copy_error = Some(e);
                break 'batches;
            }
        }
    }
    // Stop the parser (if still running) by closing the channel. A failed
    // COPY makes the parser fail with "loader stopped", so the COPY error is
    // the one to report; otherwise the parser's (e.g. a malformed line).
    drop(received);
    let parsed = parser
        .await
        .map_err(|e| IngestError::Worker(e.to_string()))?;
    if let Some(e) = copy_error {
        return Err(db("cannot copy artworks")(e));
    }
    let (links, movements) = parsed?;
    let artworks = writer
        .as_mut()
        .finish()
        .await
        .map_err(db("cannot copy artworks"))?;
    artworks_bar.finish_with_message(format!("{ARTWORKS_FILE}: {} lines", links.lines));

    let artist_stubs = links.stubs.len() as u64;
    let all_artists: Vec<&ArtistRow> = artists.rows.iter().chain(links.stubs.iter()).collect();
    let artists_count = copy_rows(
        &tx,
        &format!(
            "COPY {quoted}.artists (id, name, sort_name, gender, birth_year, death_year, \
             birth_place, birth_country, death_place, death_country, dates, total_works, url, \
             is_stub) FROM STDIN BINARY"
        ),
        &[
            Type::INT4,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::INT4,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::TEXT,
            Type::BOOL,
        ],
        all_artists.iter().map(|a| {
            let birth_country = ArtistRow::country(a.birth_place.as_deref());
            let death_country = ArtistRow::country(a.death_place.as_deref());
            vec![
                Box::new(a.id) as Box<dyn ToSql + Sync + Send>,
                Box::new(a.name.clone()),
                Box::new(a.sort_name.clone()),
                Box::new(a.gender.clone()),
                Box::new(a.birth_year),
                Box::new(a.death_year),
                Box::new(a.birth_place.clone()),
                Box::new(birth_country),
                Box::new(a.death_place.clone()),
                Box::new(death_country),
                Box::new(a.dates.clone()),
                Box::new(a.total_works),
                Box::new(a.url.clone()),
                Box::new(a.is_stub),
            ]
        }),
        "artists",
    )
    .await?;

    let contributors = copy_rows(
        &tx,
        &format!(
            "COPY {quoted}.artwork_contributors (artwork_id, artist_id, role, position) \
             FROM STDIN BINARY"
        ),
        &[Type::INT4, Type::INT4, Type::TEXT, Type::INT4],
        links.contributors.iter().map(|c| {
            vec![
                Box::new(c.artwork_id) as Box<dyn ToSql + Sync + Send>,
                Box::new(c.artist_id),
                Box::new(c.role.clone()),
                Box::new(c.position),
            ]
        }),
        "artwork_contributors",
    )
    .await?;

    let subjects = copy_rows(
        &tx,
        &format!("COPY {quoted}.subjects (id, name, parent_id, level, path) FROM STDIN BINARY"),
        &[Type::INT4, Type::TEXT, Type::INT4, Type::INT4, Type::TEXT],
        links.subjects.rows.iter().map(|s| {
            vec![
                Box::new(s.id) as Box<dyn ToSql + Sync + Send>,
                Box::new(s.name.clone()),
                Box::new(s.parent_id),
                Box::new(s.level),
                Box::new(s.path.clone()),
            ]
        }),
        "subjects",
    )
    .await?;

    let artwork_subjects = copy_pairs(
        &tx,
        &quoted,
        "artwork_subjects",
        "artwork_id, subject_id",
        &links.subject_links,
    )
    .await?;

    let movements_count = copy_rows(
        &tx,
        &format!("COPY {quoted}.movements (id, name) FROM STDIN BINARY"),
        &[Type::INT4, Type::TEXT],
        movements.rows.iter().map(|(id, name)| {
            vec![
                Box::new(*id) as Box<dyn ToSql + Sync + Send>,
                Box::new(name.clone()),
            ]
        }),
        "movements",
    )
    .await?;
    let artist_movements = copy_pairs(
        &tx,
        &quoted,
        "artist_movements",
        "artist_id, movement_id",
        &artists.movement_links,
    )
    .await?;
    let artwork_movements = copy_pairs(
        &tx,
        &quoted,
        "artwork_movements",
        "artwork_id, movement_id",
        &links.movement_links,
    )
    .await?;

    tx.batch_execute(&schema::render(schema::FINISH, &quoted))
        .await
        .map_err(db("cannot add keys and indexes"))?;
    tx.batch_execute(&format!(
        "{}{}",
        schema::render(schema::TENANT_ERAS, &quoted),
        schema::render(schema::TENANCY, &quoted)
    ))
    .await
    .map_err(db("cannot set up row-level security"))?;
    tx.batch_execute(&schema::comment_statements(&quoted))
        .await
        .map_err(db("cannot add comments"))?;
    let analyze = schema::TABLES
        .iter()
        .map(|t| format!("ANALYZE {quoted}.{t};"))
        .collect::<String>();
    tx.batch_execute(&analyze)
        .await
        .map_err(db("cannot analyze tables"))?;
    tx.commit().await.map_err(db("cannot commit"))?;

    Ok(IngestReport {
        artists: artists_count,
        artist_stubs,
        duplicate_artist_lines: artists.duplicate_lines,
        artworks,
        artwork_contributors: contributors,
        subjects,
        artwork_subjects,
        movements: movements_count,
        artist_movements,
        artwork_movements,
        elapsed: started.elapsed(),
    })
}

/// Binary COPY of prepared rows; returns the row count.
async fn copy_rows<I>(
    tx: &tokio_postgres::Transaction<'_>,
    statement: &str,
    types: &[Type],
    rows: I,
    table: &str,
) -> Result<u64>
where
    I: Iterator<Item = Vec<Box<dyn ToSql + Sync + Send>>>,
{
    let context = format!("cannot copy {table}");
    let sink = tx.copy_in(statement).await.map_err(db(context.clone()))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, types));
    for row in rows {
        let values: Vec<&(dyn ToSql + Sync)> = row
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect();
        writer
            .as_mut()
            .write(&values)
            .await
            .map_err(db(context.clone()))?;
    }
    writer.as_mut().finish().await.map_err(db(context))
}

/// Binary COPY of an `(integer, integer)` link table.
async fn copy_pairs(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    table: &str,
    columns: &str,
    pairs: &[(i32, i32)],
) -> Result<u64> {
    let context = format!("cannot copy {table}");
    let sink = tx
        .copy_in(&format!(
            "COPY {schema}.{table} ({columns}) FROM STDIN BINARY"
        ))
        .await
        .map_err(db(context.clone()))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &[Type::INT4, Type::INT4]));
    for (a, b) in pairs {
        let row: [&(dyn ToSql + Sync); 2] = [a, b];
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(db(context.clone()))?;
    }
    writer.as_mut().finish().await.map_err(db(context))
}

/// A progress bar over the compressed bytes of `file`, hidden unless `show`.
fn file_bar(show: bool, file: &std::fs::File, name: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let style = ProgressStyle::with_template(
        "{msg:<36} [{bar:30}] {bytes}/{total_bytes} {elapsed_precise}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len)
        .with_style(style)
        .with_message(format!("{name}: 0 lines"))
}

/// Lower-case ASCII letters, digits and `_`, not starting with a digit, at
/// most 63 bytes (PostgreSQL's identifier limit).
fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        assert!(is_plain_identifier("tate"));
        assert!(is_plain_identifier("tate_2014"));
        assert!(!is_plain_identifier(""));
        assert!(!is_plain_identifier("Tate"));
        assert!(!is_plain_identifier("1tate"));
        assert!(!is_plain_identifier("tate\"; drop"));
    }

    #[test]
    fn error_messages_name_file_and_line() {
        let err = IngestError::Malformed {
            path: PathBuf::from("/data/artworks.jsonl.gz"),
            line: 7,
            message: "invalid json: expected value (column 1)".to_owned(),
        };
        assert_eq!(
            err.to_string(),
            "/data/artworks.jsonl.gz: line 7: invalid json: expected value (column 1)"
        );
        let err = IngestError::MissingFile {
            path: PathBuf::from("/data/artists.jsonl.gz"),
        };
        assert_eq!(
            err.to_string(),
            "input file /data/artists.jsonl.gz does not exist"
        );
    }
}
