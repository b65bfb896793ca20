//! The semantic layer of a source: a reviewed description of its data the
//! way analysts speak of it, in a TOML file per source (`sql.semantic_path`,
//! `[sql.sources.<name>] semantic_path`). Modelled on Snowflake Cortex
//! Analyst's semantic model (tables with descriptions and synonyms, filters,
//! metrics, relationships) and WrenAI's MDL (models, calculated fields,
//! relationships), kept to what schema linking and the model's prompt use:
//!
//! ```toml
//! # Tables and columns of the source's schemas: `table` or `schema.table`.
//! [[tables]]
//! name = "artists"
//! description = "People and groups credited with works"   # shown instead of the catalog comment
//! synonyms = ["painters", "sculptors", "makers"]          # words questions use for it
//!
//! [[tables.columns]]
//! name = "gender"
//! description = "'Male', 'Female' or null"
//! synonyms = ["women", "female", "men", "male"]
//!
//! # Business terms: a phrase analysts use, and the SQL filter or expression
//! # it means. Columns are written `table.column` (or `schema.table.column`).
//! [[terms]]
//! name = "works by women"
//! synonyms = ["female artists", "women artists"]
//! sql = "artists.gender = 'Female'"
//!
//! # Metrics: a named aggregate.
//! [[metrics]]
//! name = "number of works"
//! synonyms = ["works count"]
//! sql = "count(DISTINCT artworks.id)"
//!
//! # Join hints: how two tables join when the foreign keys do not say it
//! # (or say it through a link table).
//! [[joins]]
//! tables = ["artworks", "artists"]
//! on = "artwork_contributors.artwork_id = artworks.id AND artists.id = artwork_contributors.artist_id"
//! ```
//!
//! [`SemanticLayer::load`] reads the file; [`SemanticLayer::resolve`]
//! checks it against the catalog — an unknown table or column, a `sql` or
//! `on` that does not parse as a PostgreSQL expression (sqlparser), or one
//! that references an unknown or unqualified column is a [`SemanticError`]
//! naming the file, the entry and the field — and gives the
//! [`ResolvedLayer`] schema linking uses. Every string of the file is data:
//! it reaches a prompt collapsed to one line, and a `<` that could open or
//! close a prompt delimiter (`<tool_result>`, `</result>`) is written
//! `&lt;` (SQL's `a < b` stays as written).

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sqlparser::ast::{Expr, visit_expressions};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::schema::TableInfo;

/// The file as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticLayer {
    /// Descriptions and synonyms of tables and their columns.
    #[serde(default)]
    pub tables: Vec<TableEntry>,
    /// Business terms: phrases mapped to SQL filters or expressions.
    #[serde(default)]
    pub terms: Vec<TermEntry>,
    /// Metrics: names mapped to SQL aggregate expressions.
    #[serde(default)]
    pub metrics: Vec<TermEntry>,
    /// Join hints between two tables.
    #[serde(default)]
    pub joins: Vec<JoinEntry>,
}

/// `[[tables]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableEntry {
    /// `table` or `schema.table`, in the source's schemas.
    pub name: String,
    /// Shown in the schema context instead of the catalog comment.
    #[serde(default)]
    pub description: Option<String>,
    /// Words or phrases questions use for the table.
    #[serde(default)]
    pub synonyms: Vec<String>,
    /// `[[tables.columns]]`.
    #[serde(default)]
    pub columns: Vec<ColumnEntry>,
}

/// `[[tables.columns]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnEntry {
    /// A column of the table.
    pub name: String,
    /// Shown in the schema context instead of the catalog comment.
    #[serde(default)]
    pub description: Option<String>,
    /// Words or phrases questions use for the column.
    #[serde(default)]
    pub synonyms: Vec<String>,
}

/// `[[terms]]` and `[[metrics]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermEntry {
    /// The phrase analysts use, e.g. `works by women`.
    pub name: String,
    /// Other phrases for it.
    #[serde(default)]
    pub synonyms: Vec<String>,
    /// A PostgreSQL expression over `table.column` references.
    pub sql: String,
    /// What it means, for reviewers (not sent to the model).
    #[serde(default)]
    pub description: Option<String>,
}

/// `[[joins]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinEntry {
    /// The two tables joined.
    pub tables: [String; 2],
    /// The join condition, a PostgreSQL expression over `table.column`
    /// references (link tables may appear in it).
    pub on: String,
}

/// Why a semantic layer file is refused.
#[derive(Debug, thiserror::Error)]
pub enum SemanticError {
    /// The file cannot be read.
    #[error("semantic layer {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of this shape.
    #[error("semantic layer {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// An entry does not match the catalog.
    #[error("semantic layer {}: {entry}.{field}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The entry, e.g. `terms[2] "works by women"`.
        entry: String,
        /// The field, e.g. `sql`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// A matched business term or metric, or a join hint, as linking uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    /// `term`, `metric` or `join`.
    pub kind: &'static str,
    /// The term's name, or `a~b` for a join.
    pub name: String,
    /// Word lists of the name and synonyms (see [`crate::linking::words`]);
    /// empty for a join.
    pub phrases: Vec<Vec<String>>,
    /// The SQL, one line.
    pub sql: String,
    /// Columns the SQL references: `(table index, column index)`.
    pub columns: Vec<(usize, usize)>,
    /// Tables it needs: those referenced, and for a join its two tables.
    pub tables: BTreeSet<usize>,
}

/// A semantic layer checked against a catalog: positions are indexes into
/// the catalog's table list (and each table's column list).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedLayer {
    /// Table index → description.
    pub table_descriptions: HashMap<usize, String>,
    /// `(table, column)` → description.
    pub column_descriptions: HashMap<(usize, usize), String>,
    /// Table index → synonyms.
    pub table_synonyms: HashMap<usize, Vec<String>>,
    /// `(table, column)` → synonyms.
    pub column_synonyms: HashMap<(usize, usize), Vec<String>>,
    /// Terms, then metrics, then joins.
    pub hints: Vec<Hint>,
    /// A fingerprint of the file's content (changes when the file does).
    pub fingerprint: String,
}

impl ResolvedLayer {
    /// `tables` with the layer's descriptions in place of their comments.
    pub fn annotate(&self, tables: &[TableInfo]) -> Vec<TableInfo> {
        let mut out = tables.to_vec();
        for (&t, description) in &self.table_descriptions {
            if let Some(table) = out.get_mut(t) {
                table.comment = Some(description.clone());
            }
        }
        for (&(t, c), description) in &self.column_descriptions {
            if let Some(column) = out.get_mut(t).and_then(|t| t.columns.get_mut(c)) {
                column.comment = Some(description.clone());
            }
        }
        out
    }
}

/// A string from the file as it may reach a prompt: one line (whitespace
/// and control characters collapsed to single spaces), and a `<` that
/// could open or close a delimiter (`<tag`, `</tag`, `<!`) written `&lt;`,
/// while SQL's `a < b` stays as written.
fn data(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                ' '
            } else {
                c
            }
        })
        .collect();
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '<'
            && chars
                .peek()
                .is_some_and(|n| n.is_alphabetic() || *n == '/' || *n == '!')
        {
            out.push_str("&lt;");
        } else {
            out.push(c);
        }
    }
    out
}

impl SemanticLayer {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// [`SemanticError::Read`] or [`SemanticError::Parse`] naming the file.
    pub fn load(path: &Path) -> Result<Self, SemanticError> {
        let text = std::fs::read_to_string(path).map_err(|source| SemanticError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| SemanticError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses the TOML text of a layer.
    ///
    /// # Errors
    /// The TOML parser's message.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))
    }

    /// Checks the layer against `tables` (the catalog of the source's
    /// schemas); `path` names the file in errors.
    ///
    /// # Errors
    /// [`SemanticError::Invalid`] for the first entry at fault: an unknown
    /// or ambiguous table, an unknown column, an empty name, a `sql`/`on`
    /// that does not parse as one PostgreSQL expression, or that references
    /// an unknown table or column or a column without its table.
    pub fn resolve(
        &self,
        tables: &[TableInfo],
        path: &Path,
    ) -> Result<ResolvedLayer, SemanticError> {
        let invalid = |entry: String, field: &str, message: String| SemanticError::Invalid {
            path: path.to_owned(),
            entry,
            field: field.to_owned(),
            message,
        };
        let mut out = ResolvedLayer {
            fingerprint: format!("{:x}", fingerprint(self)),
            ..ResolvedLayer::default()
        };
        for (i, entry) in self.tables.iter().enumerate() {
            let label = format!("tables[{i}] {:?}", entry.name);
            let t =
                find_table(tables, &entry.name).map_err(|m| invalid(label.clone(), "name", m))?;
            if let Some(d) = entry
                .description
                .as_deref()
                .map(data)
                .filter(|d| !d.is_empty())
            {
                out.table_descriptions.insert(t, d);
            }
            let synonyms = clean(&entry.synonyms);
            if !synonyms.is_empty() {
                out.table_synonyms.insert(t, synonyms);
            }
            for (j, column) in entry.columns.iter().enumerate() {
                let label = format!("tables[{i}].columns[{j}] {:?}", column.name);
                let c = tables[t]
                    .columns
                    .iter()
                    .position(|c| c.name == column.name)
                    .ok_or_else(|| {
                        invalid(
                            label.clone(),
                            "name",
                            format!(
                                "no column {:?} in {}",
                                column.name,
                                tables[t].qualified_name()
                            ),
                        )
                    })?;
                if let Some(d) = column
                    .description
                    .as_deref()
                    .map(data)
                    .filter(|d| !d.is_empty())
                {
                    out.column_descriptions.insert((t, c), d);
                }
                let synonyms = clean(&column.synonyms);
                if !synonyms.is_empty() {
                    out.column_synonyms.insert((t, c), synonyms);
                }
            }
        }
        for (kind, list, section) in [
            ("term", &self.terms, "terms"),
            ("metric", &self.metrics, "metrics"),
        ] {
            for (i, entry) in list.iter().enumerate() {
                let label = format!("{section}[{i}] {:?}", entry.name);
                let mut phrases: Vec<Vec<String>> = std::iter::once(&entry.name)
                    .chain(&entry.synonyms)
                    .map(|p| crate::linking::words(p))
                    .filter(|w| !w.is_empty())
                    .collect();
                phrases.dedup();
                if crate::linking::words(&entry.name).is_empty() {
                    return Err(invalid(
                        label,
                        "name",
                        "must hold a word that is not a stop word".into(),
                    ));
                }
                let columns = expression_columns(&entry.sql, tables)
                    .map_err(|m| invalid(label.clone(), "sql", m))?;
                out.hints.push(Hint {
                    kind,
                    name: data(&entry.name),
                    phrases,
                    sql: data(&entry.sql),
                    tables: columns.iter().map(|&(t, _)| t).collect(),
                    columns,
                });
            }
        }
        for (i, entry) in self.joins.iter().enumerate() {
            let label = format!("joins[{i}] {:?}", entry.tables.join("~"));
            let mut needed = BTreeSet::new();
            for name in &entry.tables {
                needed.insert(
                    find_table(tables, name).map_err(|m| invalid(label.clone(), "tables", m))?,
                );
            }
            let columns = expression_columns(&entry.on, tables)
                .map_err(|m| invalid(label.clone(), "on", m))?;
            out.hints.push(Hint {
                kind: "join",
                name: data(&entry.tables.join("~")),
                phrases: Vec::new(),
                sql: data(&entry.on),
                tables: needed,
                columns,
            });
        }
        Ok(out)
    }
}

fn clean(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|s| data(s))
        .filter(|s| !s.is_empty())
        .collect()
}

/// FNV-1a over the layer's debug rendering: stable across runs, which a
/// stored catalog's key needs (`DefaultHasher` is not guaranteed to be).
fn fingerprint(layer: &SemanticLayer) -> u64 {
    format!("{layer:?}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The index of table `name` (`table` or `schema.table`) in `tables`.
fn find_table(tables: &[TableInfo], name: &str) -> Result<usize, String> {
    let found: Vec<usize> = tables
        .iter()
        .enumerate()
        .filter(|(_, t)| t.qualified_name() == name || t.name == name)
        .map(|(i, _)| i)
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("no table {name:?} in the source's schemas")),
        _ => Err(format!(
            "{name:?} is in more than one schema; write schema.table"
        )),
    }
}

/// The columns `sql` (one PostgreSQL expression) references, each written
/// `table.column` or `schema.table.column`.
fn expression_columns(sql: &str, tables: &[TableInfo]) -> Result<Vec<(usize, usize)>, String> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| format!("does not parse: {e}"))?;
    let expr = parser
        .parse_expr()
        .map_err(|e| format!("does not parse: {e}"))?;
    if parser.peek_token().token != Token::EOF {
        return Err(format!(
            "does not parse: one expression expected, found {} after it",
            parser.peek_token().token
        ));
    }
    let mut references: Vec<Vec<String>> = Vec::new();
    let _ = visit_expressions(&expr, |e: &Expr| {
        if let Expr::Identifier(ident) = e {
            references.push(vec![ident.value.clone()]);
        } else if let Expr::CompoundIdentifier(parts) = e {
            references.push(parts.iter().map(|p| p.value.clone()).collect());
        }
        ControlFlow::<()>::Continue(())
    });
    let mut columns = Vec::new();
    for parts in references {
        let (table, column) = match parts.as_slice() {
            [table, column] => (table.clone(), column),
            [schema, table, column] => (format!("{schema}.{table}"), column),
            [column] => {
                return Err(format!(
                    "column {column:?} without its table; write table.column"
                ));
            }
            _ => return Err(format!("cannot resolve {:?}", parts.join("."))),
        };
        let t = find_table(tables, &table)?;
        let c = tables[t]
            .columns
            .iter()
            .position(|c| &c.name == column)
            .ok_or_else(|| format!("no column {column:?} in {}", tables[t].qualified_name()))?;
        if !columns.contains(&(t, c)) {
            columns.push((t, c));
        }
    }
    Ok(columns)
}

#[cfg(test)]
mod tests;
