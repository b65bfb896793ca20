//! Collections: what the search tool indexes, declared in configuration, and
//! the sidecar table in PostgreSQL that holds each collection's documents.
//!
//! A collection reads one source table (`schema.table`) keyed by its primary
//! key. Each field is either a source column or a SQL expression over the
//! source row, which the expression names `src` (so a field can reach into
//! related tables, e.g. an artwork's artist names). Fields come in three
//! kinds:
//!
//! - **text** fields are searched: tantivy indexes them for BM25 and each
//!   gets its own embedding in pgvector;
//! - **filter** fields are typed ([`FilterType`]) and constrain a search;
//! - **stored** fields are only returned with hits.
//!
//! # The sidecar table
//!
//! `quarry."search_<name>"` ([`Collection::docs_table`]) has one row per
//! source row, keyed by the source key in text form. It is the source of
//! truth for the tantivy index, which is rebuilt from it at will:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `key` | `text` primary key | source primary key, text form |
//! | `version` | `bigint` | from `quarry.search_version`, taken on every write by the sync |
//! | `deleted` | `boolean` | tombstone: the source row is gone (kept so index followers see it) |
//! | `t_<field>` | `text` | each text field's text (NULL when empty) |
//! | `f_<field>` | `text` / `text[]` / `bigint` / `double precision` | each filter field ([`FilterType::sql_type`]); arrays hold no NULLs |
//! | `stored` | `jsonb` | stored fields, `{name: value}` |
//! | `embedded` | `boolean` | every text field's vector is current |
//! | `h_<field>` | `bytea` | SHA-256 of the text `v_<field>` was computed from |
//! | `v_<field>` | `vector(d)` | embedding of `t_<field>`, L2-normalised; HNSW index, cosine |
//!
//! The `h_`/`v_` columns exist only once an embedder has been recorded for
//! the collection (`quarry.search_collections.model_id`/`dimension`); a
//! different embedder is refused ([`CollectionError::EmbedderMismatch`]).
//! A changed collection definition (its [`Collection::config_hash`]) drops
//! and recreates the sidecar table, so the sync copies everything again.
//! The sidecar's DDL and its creation live in [`crate::ddl`]; the fixed
//! bookkeeping tables are the migration `db/migrations/V4__search.sql`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use quarry_db::quote_ident;

/// Longest collection name, in bytes (keeps generated identifiers within
/// PostgreSQL's 63-byte `NAMEDATALEN` limit, PostgreSQL docs §4.1.1).
pub const MAX_COLLECTION_NAME: usize = 24;
/// Longest field name, in bytes (same reason).
pub const MAX_FIELD_NAME: usize = 40;

/// Errors from declaring or preparing a collection.
#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    /// The configuration is invalid; `field` names the offending setting
    /// (e.g. `search.collections[0].filters[2].type`).
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the setting at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The collection's vectors were written by another embedder.
    #[error(
        "collection {collection}: vectors were computed with {recorded_model} ({recorded_dimension} dims), \
         but the configured embedder is {given_model} ({given_dimension} dims); \
         configure the recorded model or reset the collection (`quarry index reset {collection}`)"
    )]
    EmbedderMismatch {
        /// Collection name.
        collection: String,
        /// Model recorded in `quarry.search_collections`.
        recorded_model: String,
        /// Dimension recorded there.
        recorded_dimension: usize,
        /// Model of the embedder given now.
        given_model: String,
        /// Its dimension.
        given_dimension: usize,
    },
    /// The source table or key column does not exist or is unsuitable.
    #[error("collection {collection}: {message}")]
    Source {
        /// Collection name.
        collection: String,
        /// What is wrong.
        message: String,
    },
    /// PostgreSQL failed.
    #[error("database: {}", quarry_db::error_text(.0))]
    Database(#[from] tokio_postgres::Error),
    /// The `quarry` schema's migrations failed.
    #[error("quarry schema: {0}")]
    Migrate(#[from] quarry_db::DbError),
}

/// Result alias of this module.
pub type Result<T, E = CollectionError> = std::result::Result<T, E>;

/// A collection as written in configuration (`[[search.collections]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// Collection name: `[a-z][a-z0-9_]*`, at most [`MAX_COLLECTION_NAME`] bytes.
    pub name: String,
    /// Source table, `schema.table`.
    pub source: String,
    /// The source's primary-key column (one column; integer or text types).
    pub key: String,
    /// Searched text fields (at least one).
    #[serde(default)]
    pub text: Vec<FieldConfig>,
    /// Typed filter fields.
    #[serde(default)]
    pub filters: Vec<FilterFieldConfig>,
    /// Fields only returned with hits.
    #[serde(default)]
    pub stored: Vec<FieldConfig>,
    /// Other tables whose changes alter a document (e.g. a join table the
    /// fields' SQL reads); a change there re-syncs the source rows it names.
    #[serde(default)]
    pub dependents: Vec<DependentConfig>,
    /// A `keyword` or `keywords` filter field holding the tenant(s) a
    /// document belongs to: when set, every search by a caller is limited
    /// to documents whose field holds the caller's tenant (operator work is
    /// not). Not part of the sidecar's shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_filter: Option<String>,
}

/// A text or stored field: a source column, or a SQL expression over `src`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// Field name: `[a-z][a-z0-9_]*`, at most [`MAX_FIELD_NAME`] bytes.
    pub name: String,
    /// Source column (exclusive with `sql`); defaults to `name` when neither is set.
    #[serde(default)]
    pub column: Option<String>,
    /// SQL expression over the source row `src` (exclusive with `column`).
    #[serde(default)]
    pub sql: Option<String>,
}

/// A typed filter field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterFieldConfig {
    /// Field name: `[a-z][a-z0-9_]*`, at most [`MAX_FIELD_NAME`] bytes.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub kind: FilterType,
    /// Source column (exclusive with `sql`); defaults to `name` when neither is set.
    #[serde(default)]
    pub column: Option<String>,
    /// SQL expression over the source row `src` (exclusive with `column`).
    #[serde(default)]
    pub sql: Option<String>,
}

/// Another table whose rows feed a collection's documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependentConfig {
    /// The table, `schema.table`.
    pub table: String,
    /// Its column holding the source key of the document it affects.
    pub key_column: String,
}

/// Type of a filter field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterType {
    /// One exact, case-sensitive string.
    Keyword,
    /// A set of exact strings (e.g. the artists of a work); a predicate holds
    /// when it holds for any element.
    Keywords,
    /// A 64-bit signed integer.
    Integer,
    /// A 64-bit float.
    Float,
}

impl FilterType {
    /// The sidecar column type.
    pub fn sql_type(self) -> &'static str {
        match self {
            FilterType::Keyword => "text",
            FilterType::Keywords => "text[]",
            FilterType::Integer => "bigint",
            FilterType::Float => "double precision",
        }
    }

    /// Name as written in configuration and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterType::Keyword => "keyword",
            FilterType::Keywords => "keywords",
            FilterType::Integer => "integer",
            FilterType::Float => "float",
        }
    }
}

/// Where a field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSource {
    /// A column of the source table.
    Column(String),
    /// A SQL expression over the source row `src`.
    Sql(String),
}

impl FieldSource {
    /// The expression to put in a `SELECT … FROM <source> AS src`.
    pub fn select_expr(&self) -> String {
        match self {
            FieldSource::Column(column) => format!("src.{}", quote_ident(column)),
            FieldSource::Sql(sql) => format!("({sql})"),
        }
    }
}

/// A validated text or stored field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Where its value comes from.
    pub source: FieldSource,
}

/// A validated filter field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterField {
    /// Field name.
    pub name: String,
    /// Value type.
    pub kind: FilterType,
    /// Where its value comes from.
    pub source: FieldSource,
}

/// A schema-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
}

impl TableName {
    /// `"schema"."table"`, quoted.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

/// A validated dependent table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependent {
    /// The table.
    pub table: TableName,
    /// Its column naming the source key.
    pub key_column: String,
}

/// A validated collection (see the module docs for its sidecar table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// Collection name.
    pub name: String,
    /// Source table.
    pub source: TableName,
    /// Source primary-key column.
    pub key: String,
    /// Searched text fields, in configuration order.
    pub text: Vec<Field>,
    /// Filter fields, in configuration order.
    pub filters: Vec<FilterField>,
    /// Stored fields, in configuration order.
    pub stored: Vec<Field>,
    /// Dependent tables.
    pub dependents: Vec<Dependent>,
    config_hash: String,
}

impl Collection {
    /// Validates `config`; `path` is the setting's location for error
    /// messages (e.g. `search.collections[0]`).
    ///
    /// # Errors
    /// [`CollectionError::Invalid`] naming the setting at fault.
    pub fn from_config(config: &CollectionConfig, path: &str) -> Result<Collection> {
        let invalid = |field: String, message: String| CollectionError::Invalid { field, message };
        check_name(&config.name, MAX_COLLECTION_NAME)
            .map_err(|m| invalid(format!("{path}.name"), m))?;
        let source =
            parse_table(&config.source).map_err(|m| invalid(format!("{path}.source"), m))?;
        check_ident(&config.key).map_err(|m| invalid(format!("{path}.key"), m))?;
        if config.text.is_empty() {
            return Err(invalid(
                format!("{path}.text"),
                "a collection needs at least one text field".into(),
            ));
        }
        let text = validate_fields(
            config.text.iter().map(|f| (&f.name, &f.column, &f.sql)),
            &format!("{path}.text"),
            "text",
        )?
        .into_iter()
        .map(|(name, source)| Field { name, source })
        .collect();
        let filters: Vec<FilterField> = validate_fields(
            config.filters.iter().map(|f| (&f.name, &f.column, &f.sql)),
            &format!("{path}.filters"),
            "filter",
        )?
        .into_iter()
        .zip(&config.filters)
        .map(|((name, source), f)| FilterField {
            name,
            kind: f.kind,
            source,
        })
        .collect();
        let stored = validate_fields(
            config.stored.iter().map(|f| (&f.name, &f.column, &f.sql)),
            &format!("{path}.stored"),
            "stored",
        )?
        .into_iter()
        .map(|(name, source)| Field { name, source })
        .collect();
        let mut dependents = Vec::new();
        for (i, dependent) in config.dependents.iter().enumerate() {
            let at = format!("{path}.dependents[{i}]");
            let table =
                parse_table(&dependent.table).map_err(|m| invalid(format!("{at}.table"), m))?;
            check_ident(&dependent.key_column)
                .map_err(|m| invalid(format!("{at}.key_column"), m))?;
            dependents.push(Dependent {
                table,
                key_column: dependent.key_column.clone(),
            });
        }
        if let Some(tenant) = &config.tenant_filter
            && !filters.iter().any(|f| {
                &f.name == tenant && matches!(f.kind, FilterType::Keyword | FilterType::Keywords)
            })
        {
            return Err(invalid(
                format!("{path}.tenant_filter"),
                format!("{tenant:?} is not a keyword or keywords filter field of the collection"),
            ));
        }
        let canonical = serde_json::to_vec(config).unwrap_or_default();
        let config_hash = hex(&Sha256::digest(&canonical));
        Ok(Collection {
            name: config.name.clone(),
            source,
            key: config.key.clone(),
            text,
            filters,
            stored,
            dependents,
            config_hash,
        })
    }

    /// SHA-256 (hex) of the configuration: a change recreates the sidecar.
    pub fn config_hash(&self) -> &str {
        &self.config_hash
    }

    /// The sidecar table, quoted: `quarry."search_<name>"`.
    pub fn docs_table(&self) -> String {
        format!("quarry.{}", quote_ident(&format!("search_{}", self.name)))
    }

    /// Looks up a text field by name.
    pub fn text_field(&self, name: &str) -> Option<&Field> {
        self.text.iter().find(|f| f.name == name)
    }

    /// Looks up a filter field by name.
    pub fn filter_field(&self, name: &str) -> Option<&FilterField> {
        self.filters.iter().find(|f| f.name == name)
    }

    /// Looks up a stored field by name.
    pub fn stored_field(&self, name: &str) -> Option<&Field> {
        self.stored.iter().find(|f| f.name == name)
    }
}

/// Sidecar column of a text field's text: `t_<name>`.
pub fn text_column(field: &str) -> String {
    format!("t_{field}")
}

/// Sidecar column of a filter field: `f_<name>`.
pub fn filter_column(field: &str) -> String {
    format!("f_{field}")
}

/// Sidecar column of a text field's embedding: `v_<name>`.
pub fn vector_column(field: &str) -> String {
    format!("v_{field}")
}

/// Sidecar column of the hash of the text a vector was computed from: `h_<name>`.
pub fn hash_column(field: &str) -> String {
    format!("h_{field}")
}

/// SHA-256 of a text as embedded (the embedding cache key).
pub fn content_hash(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// Validates a list of fields (`(name, column, sql)` each) found at
/// `at[i]`: names, sources, no duplicate within the list (`what` names the
/// kind in the error).
fn validate_fields<'a>(
    fields: impl Iterator<Item = (&'a String, &'a Option<String>, &'a Option<String>)>,
    at: &str,
    what: &str,
) -> Result<Vec<(String, FieldSource)>> {
    let mut out: Vec<(String, FieldSource)> = Vec::new();
    for (i, (name, column, sql)) in fields.enumerate() {
        let at = format!("{at}[{i}]");
        let source = field_source(name, column, sql, &at)?;
        if out.iter().any(|(seen, _)| seen == name) {
            return Err(CollectionError::Invalid {
                field: format!("{at}.name"),
                message: format!("duplicate {what} field {name:?}"),
            });
        }
        out.push((name.clone(), source));
    }
    Ok(out)
}

fn field_source(
    name: &str,
    column: &Option<String>,
    sql: &Option<String>,
    at: &str,
) -> Result<FieldSource> {
    let invalid = |field: String, message: String| CollectionError::Invalid { field, message };
    check_name(name, MAX_FIELD_NAME).map_err(|m| invalid(format!("{at}.name"), m))?;
    match (column, sql) {
        (Some(_), Some(_)) => Err(invalid(
            at.to_owned(),
            "set `column` or `sql`, not both".into(),
        )),
        (Some(column), None) => {
            check_ident(column).map_err(|m| invalid(format!("{at}.column"), m))?;
            Ok(FieldSource::Column(column.clone()))
        }
        (None, Some(sql)) => {
            if sql.trim().is_empty() {
                return Err(invalid(format!("{at}.sql"), "empty SQL expression".into()));
            }
            if sql.contains(';') {
                return Err(invalid(
                    format!("{at}.sql"),
                    "one expression, no `;`".into(),
                ));
            }
            Ok(FieldSource::Sql(sql.clone()))
        }
        (None, None) => Ok(FieldSource::Column(name.to_owned())),
    }
}

fn check_name(name: &str, max: usize) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(format!("{name:?} must match [a-z][a-z0-9_]*"));
    }
    if name.len() > max {
        return Err(format!("{name:?} is longer than {max} bytes"));
    }
    Ok(())
}

fn check_ident(ident: &str) -> std::result::Result<(), String> {
    if ident.is_empty() || ident.len() > 63 || ident.contains('\0') {
        return Err(format!(
            "{ident:?} is not a valid identifier (1 to 63 bytes)"
        ));
    }
    Ok(())
}

fn parse_table(name: &str) -> std::result::Result<TableName, String> {
    match name.split_once('.') {
        Some((schema, table)) if !table.contains('.') => {
            check_ident(schema)?;
            check_ident(table)?;
            Ok(TableName {
                schema: schema.to_owned(),
                table: table.to_owned(),
            })
        }
        _ => Err(format!("{name:?} must be `schema.table`")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> CollectionConfig {
        toml::from_str(toml_text).unwrap()
    }

    const ARTWORKS: &str = r#"
        name = "artworks"
        source = "tate.artworks"
        key = "id"
        text = [{ name = "title" }, { name = "subjects", sql = "(SELECT 1)" }]
        filters = [{ name = "artist", type = "keywords", sql = "ARRAY[]::text[]" },
                   { name = "acquisition_year", type = "integer" }]
        stored = [{ name = "url" }]
        dependents = [{ table = "tate.artwork_subjects", key_column = "artwork_id" }]
    "#;

    #[test]
    fn parses_and_validates() {
        let collection = Collection::from_config(&parse(ARTWORKS), "c").unwrap();
        assert_eq!(collection.docs_table(), r#"quarry."search_artworks""#);
        assert_eq!(
            collection.text[0].source,
            FieldSource::Column("title".into())
        );
        assert_eq!(collection.filters[0].kind, FilterType::Keywords);
        assert_eq!(collection.text[0].source.select_expr(), r#"src."title""#);
        let ddl = collection.sidecar_ddl(Some(384)).join(";\n");
        assert!(ddl.contains("f_artist text[]"), "{ddl}");
        assert!(ddl.contains("USING gin (f_artist)"), "{ddl}");
        assert!(ddl.contains("v_title vector(384)"), "{ddl}");
        assert!(
            ddl.contains("USING hnsw (v_subjects vector_cosine_ops)"),
            "{ddl}"
        );
        assert!(!collection.sidecar_ddl(None).join(";").contains("vector("));
    }

    #[test]
    fn errors_name_the_setting() {
        let mut config = parse(ARTWORKS);
        config.filters[1].name = "Year".into();
        let error = Collection::from_config(&config, "search.collections[0]").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("search.collections[0].filters[1].name:"),
            "{error}"
        );

        let mut config = parse(ARTWORKS);
        config.source = "artworks".into();
        let error = Collection::from_config(&config, "x").unwrap_err();
        assert!(error.to_string().starts_with("x.source:"), "{error}");

        let mut config = parse(ARTWORKS);
        config.text.clear();
        assert!(
            Collection::from_config(&config, "x")
                .unwrap_err()
                .to_string()
                .starts_with("x.text:")
        );

        let mut config = parse(ARTWORKS);
        config.text[0].sql = Some("1".into());
        config.text[0].column = Some("title".into());
        assert!(
            Collection::from_config(&config, "x")
                .unwrap_err()
                .to_string()
                .starts_with("x.text[0]:")
        );

        let bad_type =
            toml::from_str::<CollectionConfig>(&ARTWORKS.replace("\"keywords\"", "\"date\""));
        assert!(bad_type.is_err());
    }

    #[test]
    fn definition_hash_changes_with_config() {
        let a = Collection::from_config(&parse(ARTWORKS), "x").unwrap();
        let mut config = parse(ARTWORKS);
        config.stored.push(FieldConfig {
            name: "date_text".into(),
            column: None,
            sql: None,
        });
        let b = Collection::from_config(&config, "x").unwrap();
        assert_ne!(a.config_hash(), b.config_hash());
        assert_eq!(a.config_hash().len(), 64);
    }
}
