//! A folder in Spider's format and its load into PostgreSQL.
//!
//! Spider (Yu et al., "Spider: A Large-Scale Human-Labeled Dataset for
//! Complex and Cross-Domain Semantic Parsing and Text-to-SQL Task", EMNLP
//! 2018) ships `tables.json` (one schema per database: `table_names_original`,
//! `column_names_original` as `[table index, name]` pairs with `[-1, "*"]`
//! first, `column_types`, `primary_keys`, `foreign_keys` as pairs of column
//! indices, plus the natural-language `table_names` and `column_names`),
//! `dev.json` (`db_id`, `question`, `query`) and optionally
//! `database/<db_id>/<db_id>.sqlite`.
//!
//! [`load_database`] recreates schema [`schema_name`]`(db_id)` from scratch in
//! one transaction. Identifiers are lower-cased (and always quoted when
//! created), so the gold SQL's unquoted mixed-case names resolve the way
//! PostgreSQL folds them. Column types come from the SQLite data when the file
//! exists (SQLite is dynamically typed: Spider's `number` columns are not all
//! integers, and many `text` columns hold numbers): all integers (or integer
//! text such as `'2014'`) → `bigint`, any real (or decimal text) → `double
//! precision`, any other text → `text`, only blobs → `bytea` (see
//! `numeric_text` for what counts as a number; the text `'null'` among numbers
//! loads as NULL); columns without a non-null value, and
//! every column when the file is absent, map from Spider's type (`number` →
//! `double precision`, `boolean` → `boolean`, `time`/`text`/`others` → `text`; Spider's
//! `time` values are SQLite text and the gold SQL compares them as text).
//! Rows are copied with binary `COPY`; primary keys and foreign keys are then
//! added where the data and PostgreSQL allow (a foreign key needs a unique
//! referenced column; it is added `NOT VALID`, since Spider's data do not
//! always honour their keys), each in its own savepoint so that one refusal
//! does not undo the load. Spider's natural-language names become table and
//! column comments, so schema linking has descriptions to match.

use quarry_db::{quote_ident, quote_literal};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::pin;

use serde::Deserialize;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::{EvalError, Result};

/// Schema that holds Spider database `db_id` in PostgreSQL: `spider_<db_id>`,
/// lower-cased.
pub fn schema_name(db_id: &str) -> String {
    format!("spider_{}", db_id.to_lowercase())
}

/// One entry of `primary_keys`: a column index, or a list of them (composite
/// keys, in some releases of the format).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum KeyRef {
    One(usize),
    Many(Vec<usize>),
}

/// One database of `tables.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSpec {
    /// Database identifier, e.g. `concert_singer`.
    pub db_id: String,
    /// Table names as in the SQLite file.
    pub table_names_original: Vec<String>,
    /// Natural-language table names.
    #[serde(default)]
    pub table_names: Vec<String>,
    /// `[table index, column name]`; index -1 is the `*` pseudo-column.
    pub column_names_original: Vec<(i64, String)>,
    /// Natural-language column names, parallel to `column_names_original`.
    #[serde(default)]
    pub column_names: Vec<(i64, String)>,
    /// `text`, `number`, `time`, `boolean` or `others`, parallel to the columns.
    pub column_types: Vec<String>,
    #[serde(default)]
    primary_keys: Vec<KeyRef>,
    /// Pairs `[column index, referenced column index]`.
    #[serde(default)]
    pub foreign_keys: Vec<(usize, usize)>,
}

/// One question of `dev.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Question {
    /// The database the question is about.
    pub db_id: String,
    /// The question in English.
    pub question: String,
    /// The gold SQL.
    pub query: String,
}

/// A Spider-format folder, read.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The folder.
    pub root: PathBuf,
    /// The schemas of `tables.json`, in file order.
    pub databases: Vec<DatabaseSpec>,
    /// The questions of `dev.json`, in file order.
    pub questions: Vec<Question>,
}

impl Dataset {
    /// Reads `tables.json` and `dev.json` under `root` (blocking: call it off
    /// the async runtime).
    ///
    /// # Errors
    /// A missing or malformed file, a question whose `db_id` has no schema, or
    /// a schema whose column lists disagree in length.
    pub fn read(root: &Path) -> Result<Self> {
        let databases: Vec<DatabaseSpec> = read_json(&root.join("tables.json"))?;
        let questions: Vec<Question> = read_json(&root.join("dev.json"))?;
        for db in &databases {
            db.check()?;
        }
        let known: HashSet<&str> = databases.iter().map(|d| d.db_id.as_str()).collect();
        if let Some((i, q)) = questions
            .iter()
            .enumerate()
            .find(|(_, q)| !known.contains(q.db_id.as_str()))
        {
            return Err(EvalError::Dataset(format!(
                "dev.json question {i} names db_id {:?}, which tables.json does not describe",
                q.db_id
            )));
        }
        Ok(Self {
            root: root.to_owned(),
            databases,
            questions,
        })
    }

    /// `database/<db_id>/<db_id>.sqlite` under the root, if it exists.
    pub fn sqlite_path(&self, db_id: &str) -> Option<PathBuf> {
        let path = self
            .root
            .join("database")
            .join(db_id)
            .join(format!("{db_id}.sqlite"));
        path.is_file().then_some(path)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| {
        EvalError::Dataset(format!("{} is not valid Spider json: {e}", path.display()))
    })
}

impl DatabaseSpec {
    fn check(&self) -> Result<()> {
        let n = self.column_names_original.len();
        let bad = |what: &str| {
            Err(EvalError::Dataset(format!(
                "tables.json database {}: {what}",
                self.db_id
            )))
        };
        if self.column_types.len() != n {
            return bad("column_types and column_names_original differ in length");
        }
        if !self.column_names.is_empty() && self.column_names.len() != n {
            return bad("column_names and column_names_original differ in length");
        }
        for (table, name) in &self.column_names_original {
            if *table >= 0
                && usize::try_from(*table).unwrap_or(usize::MAX) >= self.table_names_original.len()
            {
                return bad(&format!(
                    "column {name} names a table index {table} out of range"
                ));
            }
        }
        let in_range = |c: usize| c < n && self.column_names_original[c].0 >= 0;
        if !self
            .foreign_keys
            .iter()
            .all(|&(a, b)| in_range(a) && in_range(b))
        {
            return bad("a foreign key names a column index out of range");
        }
        if !self
            .primary_key_groups()
            .iter()
            .flatten()
            .all(|&c| in_range(c))
        {
            return bad("a primary key names a column index out of range");
        }
        Ok(())
    }

    /// Columns of table `t` as indices into `column_names_original`.
    fn columns_of(&self, t: usize) -> Vec<usize> {
        self.column_names_original
            .iter()
            .enumerate()
            .filter(|(_, (table, _))| usize::try_from(*table).ok() == Some(t))
            .map(|(i, _)| i)
            .collect()
    }

    fn primary_key_groups(&self) -> Vec<Vec<usize>> {
        self.primary_keys
            .iter()
            .map(|k| match k {
                KeyRef::One(c) => vec![*c],
                KeyRef::Many(cs) => cs.clone(),
            })
            .collect()
    }

    fn table_of(&self, column: usize) -> usize {
        usize::try_from(self.column_names_original[column].0).unwrap_or(0)
    }

    /// Lower-cased `(table, column)` names of every real column.
    pub fn lowercase_columns(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (t, table) in self.table_names_original.iter().enumerate() {
            let columns = self
                .columns_of(t)
                .into_iter()
                .map(|c| self.column_names_original[c].1.to_lowercase())
                .collect();
            out.insert(table.to_lowercase(), columns);
        }
        out
    }
}

/// A value read from SQLite (dynamically typed).
#[derive(Debug, Clone, PartialEq)]
enum SqlValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// PostgreSQL type chosen for a Spider column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// `bigint`.
    BigInt,
    /// `double precision`.
    Double,
    /// `boolean` (only for columns without data).
    Boolean,
    /// `text`.
    Text,
    /// `bytea`.
    Bytea,
}

impl PgType {
    fn sql(self) -> &'static str {
        match self {
            PgType::BigInt => "bigint",
            PgType::Double => "double precision",
            PgType::Boolean => "boolean",
            PgType::Text => "text",
            PgType::Bytea => "bytea",
        }
    }

    fn copy_type(self) -> Type {
        match self {
            PgType::BigInt => Type::INT8,
            PgType::Double => Type::FLOAT8,
            PgType::Boolean => Type::BOOL,
            PgType::Text => Type::TEXT,
            PgType::Bytea => Type::BYTEA,
        }
    }

    /// The type for Spider's declared type when there are no values to go by.
    pub fn from_spider(declared: &str) -> Self {
        match declared {
            "number" => PgType::Double,
            "boolean" => PgType::Boolean,
            _ => PgType::Text,
        }
    }

    fn from_values<'a>(values: impl Iterator<Item = &'a SqlValue>, declared: &str) -> Self {
        let (mut int, mut real, mut text, mut blob) = (false, false, false, false);
        for v in values {
            match v {
                SqlValue::Null => {}
                SqlValue::Int(_) => int = true,
                SqlValue::Real(_) => real = true,
                // Spider writes some missing numbers as the text 'null'
                SqlValue::Text(s) if s.eq_ignore_ascii_case("null") => {}
                SqlValue::Text(s) => match numeric_text(s) {
                    Some(NumericText::Int) => int = true,
                    Some(NumericText::Real) => real = true,
                    None => text = true,
                },
                SqlValue::Blob(_) => blob = true,
            }
        }
        if text || (blob && (int || real)) {
            PgType::Text
        } else if blob {
            PgType::Bytea
        } else if real {
            PgType::Double
        } else if int {
            PgType::BigInt
        } else {
            PgType::from_spider(declared)
        }
    }
}

/// What a text value holds when it is a number written canonically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumericText {
    Int,
    Real,
}

/// Whether `s` is an integer or decimal written the way a number prints
/// (`-12`, `3.5`; not `007`, `+1`, ` 1`, `1e3` or `1.`): SQLite columns
/// declared `text` often hold numbers that the gold SQL compares with numbers
/// (`WHERE year = 2014`), which SQLite's type affinity allows and PostgreSQL
/// does not; text with leading zeros (codes, zip codes) stays text.
fn numeric_text(s: &str) -> Option<NumericText> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let canonical_whole = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && (whole == "0" || !whole.starts_with('0'));
    if !canonical_whole || whole.len() > 15 {
        return None;
    }
    match fraction {
        None => Some(NumericText::Int),
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            Some(NumericText::Real)
        }
        Some(_) => None,
    }
}

/// The rows of one table read from SQLite.
#[derive(Debug, Clone, Default)]
struct TableData {
    rows: Vec<Vec<SqlValue>>,
}

/// What [`load_database`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Whether rows came from a SQLite file.
    pub with_data: bool,
    /// Tables created.
    pub tables: usize,
    /// Rows copied, all tables.
    pub rows: u64,
    /// Primary keys PostgreSQL refused (duplicates or NULLs in the data):
    /// `table: reason`.
    pub skipped_primary_keys: Vec<String>,
    /// Foreign keys PostgreSQL refused (referenced columns not unique):
    /// `table(col) -> table(col): reason`.
    pub skipped_foreign_keys: Vec<String>,
}

/// Reads every table of `spec` from the SQLite file at `path` (blocking).
fn read_sqlite(path: &Path, spec: &DatabaseSpec) -> Result<Vec<TableData>> {
    let sqlite_err = |table: &str, e: rusqlite::Error| {
        EvalError::Dataset(format!(
            "{} (database {}, table {table}): {e}",
            path.display(),
            spec.db_id
        ))
    };
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sqlite_err("-", e))?;
    let mut tables = Vec::with_capacity(spec.table_names_original.len());
    for (t, table) in spec.table_names_original.iter().enumerate() {
        let columns = spec.columns_of(t);
        if columns.is_empty() {
            tables.push(TableData::default());
            continue;
        }
        let select = format!(
            "SELECT {} FROM {}",
            columns
                .iter()
                .map(|&c| quote_ident(&spec.column_names_original[c].1))
                .collect::<Vec<_>>()
                .join(", "),
            quote_ident(table)
        );
        let mut statement = conn.prepare(&select).map_err(|e| sqlite_err(table, e))?;
        let mut rows = statement.query([]).map_err(|e| sqlite_err(table, e))?;
        let mut data = TableData::default();
        while let Some(row) = rows.next().map_err(|e| sqlite_err(table, e))? {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                use rusqlite::types::ValueRef;
                let value = match row.get_ref(i).map_err(|e| sqlite_err(table, e))? {
                    ValueRef::Null => SqlValue::Null,
                    ValueRef::Integer(v) => SqlValue::Int(v),
                    ValueRef::Real(v) => SqlValue::Real(v),
                    // PostgreSQL text cannot hold NUL
                    ValueRef::Text(bytes) => {
                        SqlValue::Text(String::from_utf8_lossy(bytes).replace('\0', ""))
                    }
                    ValueRef::Blob(bytes) => SqlValue::Blob(bytes.to_vec()),
                };
                values.push(value);
            }
            data.rows.push(values);
        }
        tables.push(data);
    }
    Ok(tables)
}

/// A value in the form the COPY writer takes, for a column of type `ty`.
fn to_sql_value(value: &SqlValue, ty: PgType) -> Box<dyn ToSql + Sync + Send> {
    match (ty, value) {
        (_, SqlValue::Null) => match ty {
            PgType::BigInt => Box::new(None::<i64>),
            PgType::Double => Box::new(None::<f64>),
            PgType::Bytea => Box::new(None::<Vec<u8>>),
            PgType::Boolean => Box::new(None::<bool>),
            PgType::Text => Box::new(None::<String>),
        },
        (PgType::BigInt, SqlValue::Int(v)) => Box::new(*v),
        (PgType::Double, SqlValue::Int(v)) => Box::new(*v as f64),
        (PgType::Double, SqlValue::Real(v)) => Box::new(*v),
        // numeric text, checked by numeric_text when the type was chosen
        (PgType::BigInt, SqlValue::Text(s)) => Box::new(s.parse::<i64>().ok()),
        (PgType::Double, SqlValue::Text(s)) => Box::new(s.parse::<f64>().ok()),
        (PgType::Bytea, SqlValue::Blob(v)) => Box::new(v.clone()),
        (_, SqlValue::Int(v)) => Box::new(v.to_string()),
        (_, SqlValue::Real(v)) => Box::new(v.to_string()),
        (_, SqlValue::Text(v)) => Box::new(v.clone()),
        (_, SqlValue::Blob(v)) => Box::new(String::from_utf8_lossy(v).replace('\0', "")),
    }
}

/// Recreates schema [`schema_name`]`(spec.db_id)` with the tables of `spec`
/// and, when `sqlite` is given, their rows; all in one transaction, so a run
/// either replaces the schema or leaves the old one. Idempotent.
///
/// # Errors
/// Unreadable SQLite file, or PostgreSQL refusing the DDL or the copy (keys
/// it refuses are skipped and reported instead).
pub async fn load_database(
    client: &mut tokio_postgres::Client,
    spec: &DatabaseSpec,
    sqlite: Option<PathBuf>,
) -> Result<LoadReport> {
    let data = match sqlite {
        Some(path) => {
            let spec = spec.clone();
            Some(
                tokio::task::spawn_blocking(move || read_sqlite(&path, &spec))
                    .await
                    .map_err(|e| EvalError::Worker(e.to_string()))??,
            )
        }
        None => None,
    };
    let db_id = spec.db_id.as_str();
    let schema = schema_name(db_id);
    let qschema = quote_ident(&schema);
    let db = |what: String| {
        move |source| EvalError::Database {
            context: what,
            source,
        }
    };
    let mut report = LoadReport {
        with_data: data.is_some(),
        tables: spec.table_names_original.len(),
        ..LoadReport::default()
    };

    let tx = client
        .transaction()
        .await
        .map_err(db(format!("database {db_id}: cannot begin")))?;
    tx.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {qschema} CASCADE; CREATE SCHEMA {qschema}"
    ))
    .await
    .map_err(db(format!(
        "database {db_id}: cannot recreate schema {schema}"
    )))?;

    // column types per column index
    let mut types = vec![PgType::Text; spec.column_names_original.len()];
    for t in 0..spec.table_names_original.len() {
        for (k, c) in spec.columns_of(t).into_iter().enumerate() {
            let declared = spec.column_types[c].as_str();
            types[c] = match &data {
                Some(tables) => PgType::from_values(
                    tables[t].rows.iter().filter_map(|row| row.get(k)),
                    declared,
                ),
                None => PgType::from_spider(declared),
            };
        }
    }

    for (t, table) in spec.table_names_original.iter().enumerate() {
        let qtable = format!("{qschema}.{}", quote_ident(&table.to_lowercase()));
        let columns = spec.columns_of(t);
        let defs: Vec<String> = columns
            .iter()
            .map(|&c| {
                format!(
                    "{} {}",
                    quote_ident(&spec.column_names_original[c].1.to_lowercase()),
                    types[c].sql()
                )
            })
            .collect();
        let mut ddl = format!("CREATE TABLE {qtable} ({})", defs.join(", "));
        if let Some(name) = spec.table_names.get(t) {
            ddl.push_str(&format!(
                "; COMMENT ON TABLE {qtable} IS {}",
                quote_literal(name)
            ));
        }
        for &c in &columns {
            if let Some((_, name)) = spec.column_names.get(c) {
                ddl.push_str(&format!(
                    "; COMMENT ON COLUMN {qtable}.{} IS {}",
                    quote_ident(&spec.column_names_original[c].1.to_lowercase()),
                    quote_literal(name)
                ));
            }
        }
        tx.batch_execute(&ddl)
            .await
            .map_err(db(format!("database {db_id}: cannot create table {table}")))?;

        let Some(tables) = &data else { continue };
        let rows = &tables[t].rows;
        if rows.is_empty() || columns.is_empty() {
            continue;
        }
        let copy_types: Vec<Type> = columns.iter().map(|&c| types[c].copy_type()).collect();
        let sink = tx
            .copy_in(&format!("COPY {qtable} FROM STDIN BINARY"))
            .await
            .map_err(db(format!("database {db_id}: cannot copy into {table}")))?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &copy_types));
        for row in rows {
            let values: Vec<Box<dyn ToSql + Sync + Send>> = columns
                .iter()
                .zip(row)
                .map(|(&c, v)| to_sql_value(v, types[c]))
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> = values
                .iter()
                .map(|v| v.as_ref() as &(dyn ToSql + Sync))
                .collect();
            writer.as_mut().write(&refs).await.map_err(db(format!(
                "database {db_id}: cannot copy a row into {table}"
            )))?;
        }
        report.rows += writer.finish().await.map_err(db(format!(
            "database {db_id}: cannot finish copying {table}"
        )))?;
    }

    add_keys(&tx, spec, &qschema, &mut report).await?;
    tx.commit()
        .await
        .map_err(db(format!("database {db_id}: cannot commit the load")))?;
    if report.with_data {
        client
            .batch_execute(&format!(
                "ANALYZE {}",
                spec.table_names_original
                    .iter()
                    .map(|t| format!("{qschema}.{}", quote_ident(&t.to_lowercase())))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .await
            .map_err(db(format!("database {db_id}: cannot analyze")))?;
    }
    Ok(report)
}

/// Adds primary and foreign keys, each in a savepoint: a key PostgreSQL
/// refuses is recorded in `report` and skipped.
async fn add_keys(
    tx: &tokio_postgres::Transaction<'_>,
    spec: &DatabaseSpec,
    qschema: &str,
    report: &mut LoadReport,
) -> Result<()> {
    let table_sql = |t: usize| {
        format!(
            "{qschema}.{}",
            quote_ident(&spec.table_names_original[t].to_lowercase())
        )
    };
    let column_sql = |c: usize| quote_ident(&spec.column_names_original[c].1.to_lowercase());
    let column_label = |c: usize| {
        format!(
            "{}({})",
            spec.table_names_original[spec.table_of(c)],
            spec.column_names_original[c].1
        )
    };

    // primary keys: group the listed columns by table (one key per table)
    let mut by_table: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for group in spec.primary_key_groups() {
        for c in group {
            let columns = by_table.entry(spec.table_of(c)).or_default();
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
    }
    for (t, columns) in &by_table {
        let sql = format!(
            "ALTER TABLE {} ADD PRIMARY KEY ({})",
            table_sql(*t),
            columns
                .iter()
                .map(|&c| column_sql(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Err(reason) = try_in_savepoint(tx, &sql).await? {
            report
                .skipped_primary_keys
                .push(format!("{}: {reason}", spec.table_names_original[*t]));
        }
    }

    // foreign keys: pairs that point at the same table and together cover
    // its composite primary key form one key; the rest are single-column
    let mut grouped: BTreeMap<(usize, usize), Vec<(usize, usize)>> = BTreeMap::new();
    for &(from, to) in &spec.foreign_keys {
        grouped
            .entry((spec.table_of(from), spec.table_of(to)))
            .or_default()
            .push((from, to));
    }
    for ((from_table, to_table), pairs) in grouped {
        let referenced: Vec<usize> = pairs.iter().map(|&(_, to)| to).collect();
        let composite = by_table.get(&to_table).is_some_and(|pk| {
            pk.len() > 1
                && pk.len() == referenced.len()
                && pk.iter().all(|c| referenced.contains(c))
        });
        let keys: Vec<Vec<(usize, usize)>> = if composite {
            vec![pairs]
        } else {
            pairs.into_iter().map(|p| vec![p]).collect()
        };
        for key in keys {
            let from_cols: Vec<String> = key.iter().map(|&(f, _)| column_sql(f)).collect();
            let to_cols: Vec<String> = key.iter().map(|&(_, t)| column_sql(t)).collect();
            let label = key
                .iter()
                .map(|&(f, t)| format!("{} -> {}", column_label(f), column_label(t)))
                .collect::<Vec<_>>()
                .join(", ");
            let add = format!(
                "ALTER TABLE {} ADD FOREIGN KEY ({}) REFERENCES {} ({}) NOT VALID",
                table_sql(from_table),
                from_cols.join(", "),
                table_sql(to_table),
                to_cols.join(", ")
            );
            let mut outcome = try_in_savepoint(tx, &add).await?;
            if outcome.is_err() && !composite {
                // the referenced column may be unique without being declared so
                let unique = format!(
                    "ALTER TABLE {} ADD UNIQUE ({})",
                    table_sql(to_table),
                    to_cols.join(", ")
                );
                if try_in_savepoint(tx, &unique).await?.is_ok() {
                    outcome = try_in_savepoint(tx, &add).await?;
                }
            }
            if let Err(reason) = outcome {
                report
                    .skipped_foreign_keys
                    .push(format!("{label}: {reason}"));
            }
        }
    }
    Ok(())
}

/// Runs `sql` in a savepoint; a database error rolls the savepoint back and
/// comes back as `Ok(Err(message))`.
async fn try_in_savepoint(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
) -> Result<std::result::Result<(), String>> {
    let db = |context: &str| {
        let context = context.to_owned();
        move |source| EvalError::Database { context, source }
    };
    tx.batch_execute("SAVEPOINT quarry_eval_key")
        .await
        .map_err(db("cannot create a savepoint"))?;
    match tx.batch_execute(sql).await {
        Ok(()) => {
            tx.batch_execute("RELEASE SAVEPOINT quarry_eval_key")
                .await
                .map_err(db("cannot release a savepoint"))?;
            Ok(Ok(()))
        }
        Err(error) => {
            let reason = error
                .as_db_error()
                .map_or_else(|| error.to_string(), |d| d.message().to_owned());
            if error.as_db_error().is_none() {
                return Err(EvalError::Database {
                    context: format!("cannot run {sql}"),
                    source: error,
                });
            }
            tx.batch_execute("ROLLBACK TO SAVEPOINT quarry_eval_key")
                .await
                .map_err(db("cannot roll back a savepoint"))?;
            Ok(Err(reason))
        }
    }
}
