//! Schema description from the PostgreSQL catalog, for schema linking and
//! prompts.
//!
//! [`describe_schema`] reads tables, views, materialized views, foreign and
//! partitioned tables of the given schemas from `pg_catalog`: columns with
//! their `format_type` types, nullability and comments (`col_description`),
//! primary keys, foreign keys, table comments (`obj_description`) and the
//! planner's row estimate (`pg_class.reltuples`, refreshed by `ANALYZE` and
//! autovacuum). [`compact_description`] renders the result as one line per
//! table, e.g.
//!
//! ```text
//! tate.artworks(id int PK, title text -- title of the work, artist_id int -> tate.artists.id) -- 69,202 rows: works in the collection
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

/// Why the catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A catalog query failed.
    #[error("cannot read the schema catalog: {}", quarry_db::error_text(.0))]
    Catalog(#[from] tokio_postgres::Error),
}

/// What kind of relation a [`TableInfo`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// Ordinary table (`relkind` `r`).
    Table,
    /// Partitioned table (`p`).
    PartitionedTable,
    /// View (`v`).
    View,
    /// Materialized view (`m`).
    MaterializedView,
    /// Foreign table (`f`).
    ForeignTable,
}

impl TableKind {
    fn from_relkind(relkind: &str) -> Self {
        match relkind {
            "p" => Self::PartitionedTable,
            "v" => Self::View,
            "m" => Self::MaterializedView,
            "f" => Self::ForeignTable,
            _ => Self::Table,
        }
    }
}

/// A column of a table or view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Type as `format_type` prints it, e.g. `integer`, `character varying(200)`.
    pub data_type: String,
    /// False when the column is `NOT NULL`.
    pub nullable: bool,
    /// `COMMENT ON COLUMN`, if any.
    pub comment: Option<String>,
}

/// A foreign key of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    /// Constraint name.
    pub name: String,
    /// Referencing columns, in key order.
    pub columns: Vec<String>,
    /// Schema of the referenced table.
    pub referenced_schema: String,
    /// Referenced table.
    pub referenced_table: String,
    /// Referenced columns, matching `columns` position by position.
    pub referenced_columns: Vec<String>,
}

/// A table or view with its columns, keys and comments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableInfo {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Table, view, …
    pub kind: TableKind,
    /// `COMMENT ON TABLE`/`VIEW`, if any.
    pub comment: Option<String>,
    /// Planner's row estimate (`pg_class.reltuples`); `None` for views and
    /// for tables never analysed.
    pub estimated_rows: Option<u64>,
    /// Columns in table order (dropped columns excluded).
    pub columns: Vec<ColumnInfo>,
    /// Primary key columns in key order; empty without a primary key.
    pub primary_key: Vec<String>,
    /// Foreign keys, by constraint name.
    pub foreign_keys: Vec<ForeignKey>,
}

impl TableInfo {
    /// `schema.name`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

const TABLES_SQL: &str = "
SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text,
       obj_description(c.oid, 'pg_class'), c.reltuples::float8
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY($1::text[])
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND NOT c.relispartition
ORDER BY n.nspname, c.relname";

const COLUMNS_SQL: &str = "
SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod),
       NOT a.attnotnull, col_description(a.attrelid, a.attnum)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY($1::text[])
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum";

const KEYS_SQL: &str = "
SELECT con.conrelid, con.conname::text, con.contype::text,
       ARRAY(SELECT a.attname::text
             FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_catalog.pg_attribute a
               ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.ord),
       fn.nspname::text, fc.relname::text,
       ARRAY(SELECT a.attname::text
             FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_catalog.pg_attribute a
               ON a.attrelid = con.confrelid AND a.attnum = k.attnum
             ORDER BY k.ord)
FROM pg_catalog.pg_constraint con
JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid
LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
WHERE n.nspname::text = ANY($1::text[])
  AND con.contype IN ('p', 'f')
ORDER BY con.conrelid, con.conname";

/// Describe the tables and views of `schemas` (in schema, then table name
/// order). Schemas that do not exist contribute nothing.
///
/// # Errors
/// [`SchemaError::Catalog`] when a catalog query fails (PostgreSQL's
/// SQLSTATE and message in its text).
pub async fn describe_schema<C>(
    client: &C,
    schemas: &[String],
) -> Result<Vec<TableInfo>, SchemaError>
where
    C: GenericClient + Sync,
{
    let tables = client.query(TABLES_SQL, &[&schemas]).await?;
    let mut infos = Vec::with_capacity(tables.len());
    let mut by_oid = HashMap::with_capacity(tables.len());
    for row in &tables {
        let oid: u32 = row.try_get(0)?;
        let kind = TableKind::from_relkind(&row.try_get::<_, String>(3)?);
        let reltuples: f64 = row.try_get(5)?;
        let estimated_rows = match kind {
            TableKind::View => None,
            // -1 means "never vacuumed or analysed" (PostgreSQL 14+)
            _ if reltuples < 0.0 => None,
            TableKind::Table
            | TableKind::PartitionedTable
            | TableKind::MaterializedView
            | TableKind::ForeignTable => Some(reltuples.round() as u64),
        };
        by_oid.insert(oid, infos.len());
        infos.push(TableInfo {
            schema: row.try_get(1)?,
            name: row.try_get(2)?,
            kind,
            comment: row.try_get(4)?,
            estimated_rows,
            columns: Vec::new(),
            primary_key: Vec::new(),
            foreign_keys: Vec::new(),
        });
    }

    for row in client.query(COLUMNS_SQL, &[&schemas]).await? {
        let oid: u32 = row.try_get(0)?;
        let Some(&i) = by_oid.get(&oid) else { continue };
        infos[i].columns.push(ColumnInfo {
            name: row.try_get(1)?,
            data_type: row.try_get(2)?,
            nullable: row.try_get(3)?,
            comment: row.try_get(4)?,
        });
    }

    for row in client.query(KEYS_SQL, &[&schemas]).await? {
        let oid: u32 = row.try_get(0)?;
        let Some(&i) = by_oid.get(&oid) else { continue };
        let name: String = row.try_get(1)?;
        let contype: String = row.try_get(2)?;
        let columns: Vec<String> = row.try_get(3)?;
        if contype == "p" {
            infos[i].primary_key = columns;
            continue;
        }
        let (Some(referenced_schema), Some(referenced_table)) = (
            row.try_get::<_, Option<String>>(4)?,
            row.try_get::<_, Option<String>>(5)?,
        ) else {
            continue;
        };
        infos[i].foreign_keys.push(ForeignKey {
            name,
            columns,
            referenced_schema,
            referenced_table,
            referenced_columns: row.try_get(6)?,
        });
    }
    Ok(infos)
}

/// Token-lean rendering of `tables` for a model prompt: one line per table,
/// `schema.table(col type [PK] [-> schema.table.col] [-- comment], …)`,
/// then composite keys, then `-- N rows: comment`. Views are prefixed with
/// `view `. Common type names are shortened (`integer` → `int`,
/// `character varying(n)` → `varchar(n)`, `timestamp with time zone` →
/// `timestamptz`, …) and comments are collapsed to one line.
pub fn compact_description(tables: &[TableInfo]) -> String {
    let mut out = String::new();
    for table in tables {
        describe_table(&mut out, table);
        out.push('\n');
    }
    out
}

fn describe_table(out: &mut String, table: &TableInfo) {
    match table.kind {
        TableKind::View => out.push_str("view "),
        TableKind::MaterializedView => out.push_str("materialized view "),
        TableKind::Table | TableKind::PartitionedTable | TableKind::ForeignTable => {}
    }
    let _ = write!(out, "{}(", table.qualified_name());
    let single_pk = table.primary_key.len() == 1;
    let mut parts = Vec::with_capacity(table.columns.len() + 2);
    for column in &table.columns {
        let mut part = format!("{} {}", column.name, short_type(&column.data_type));
        if single_pk && table.primary_key[0] == column.name {
            part.push_str(" PK");
        }
        for fk in &table.foreign_keys {
            if fk.columns.len() == 1 && fk.columns[0] == column.name {
                let _ = write!(
                    part,
                    " -> {}.{}.{}",
                    fk.referenced_schema,
                    fk.referenced_table,
                    fk.referenced_columns.first().map_or("", String::as_str)
                );
            }
        }
        if let Some(comment) = column.comment.as_deref().map(one_line)
            && !comment.is_empty()
        {
            let _ = write!(part, " -- {comment}");
        }
        parts.push(part);
    }
    if table.primary_key.len() > 1 {
        parts.push(format!("PK({})", table.primary_key.join(", ")));
    }
    for fk in table.foreign_keys.iter().filter(|fk| fk.columns.len() > 1) {
        parts.push(format!(
            "FK({}) -> {}.{}({})",
            fk.columns.join(", "),
            fk.referenced_schema,
            fk.referenced_table,
            fk.referenced_columns.join(", ")
        ));
    }
    out.push_str(&parts.join(", "));
    out.push(')');
    let comment = table.comment.as_deref().map(one_line).unwrap_or_default();
    match (table.estimated_rows, comment.is_empty()) {
        (Some(rows), true) => {
            let _ = write!(out, " -- {} rows", thousands(rows));
        }
        (Some(rows), false) => {
            let _ = write!(out, " -- {} rows: {comment}", thousands(rows));
        }
        (None, false) => {
            let _ = write!(out, " -- {comment}");
        }
        (None, true) => {}
    }
}

/// Collapse whitespace (newlines included) to single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `69202` → `69,202`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Shorter spellings of `format_type` output.
fn short_type(data_type: &str) -> String {
    const EXACT: &[(&str, &str)] = &[
        ("integer", "int"),
        ("smallint", "int2"),
        ("bigint", "int8"),
        ("boolean", "bool"),
        ("double precision", "float8"),
        ("real", "float4"),
        ("character varying", "varchar"),
        ("character", "char"),
        ("timestamp without time zone", "timestamp"),
        ("timestamp with time zone", "timestamptz"),
        ("time without time zone", "time"),
        ("time with time zone", "timetz"),
    ];
    const PREFIX: &[(&str, &str)] = &[("character varying(", "varchar("), ("character(", "char(")];
    let (base, array) = match data_type.strip_suffix("[]") {
        Some(base) => (base, "[]"),
        None => (data_type, ""),
    };
    if let Some((_, short)) = EXACT.iter().find(|(long, _)| *long == base) {
        return format!("{short}{array}");
    }
    for (long, short) in PREFIX {
        if let Some(rest) = base.strip_prefix(long) {
            return format!("{short}{rest}{array}");
        }
    }
    // timestamp(3) with time zone -> timestamptz(3)
    for kind in ["timestamp", "time"] {
        if let Some(rest) = base.strip_prefix(kind).and_then(|r| r.strip_prefix('('))
            && let Some((precision, zone)) = rest.split_once(')')
        {
            let tz = match zone {
                " with time zone" => "tz",
                " without time zone" => "",
                _ => continue,
            };
            return format!("{kind}{tz}({precision}){array}");
        }
    }
    data_type.to_owned()
}

#[cfg(test)]
mod tests;
