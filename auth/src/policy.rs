//! The access policy: what each role may call and see.
//!
//! A [`PolicyConfig`] (the `[policy]` section of Quarry's configuration)
//! maps role names to a [`RoleConfig`]: tool scopes, tables, column
//! allow- and deny-lists, column masks, row filters, PII tags, the database
//! role queries run as, search collections (and the fields of each a role
//! sees) and summary kinds. It is
//! validated into a [`Policy`] at start-up (errors name the field at fault)
//! and held in a [`PolicyStore`] that can be replaced at run time
//! (reloaded without a restart).
//!
//! Per request, [`Policy::grant`] resolves the caller's roles into a
//! [`Grant`], which travels in [`crate::Caller`] into every domain call.
//! **Default deny:** a token whose roles are all unknown to the policy gets
//! a grant that allows nothing; a scope, table, column, collection or kind
//! not granted by some role is refused.
//!
//! Several roles combine as a union: a scope, table or column is allowed if
//! any of the caller's roles allows it; a column is masked only if every
//! role that shows it masks it (then the first such role's mask applies);
//! a table's rows are filtered only if every role that grants the table
//! filters it (then by the disjunction of the filters); a search field is
//! visible if any role that grants its collection shows it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::error::{AuthError, Result};
use crate::principal::Principal;

mod layer;
#[cfg(test)]
mod tests;

pub(crate) use layer::grant_of;
pub use layer::{PolicyLayer, PolicyService, RefusalHook, RpcScopes};

/// The scopes Quarry's services check. A role lists the ones it grants.
pub mod scopes {
    /// `AssistantService`: Ask and the caller's own conversations.
    pub const ASK: &str = "ask";
    /// `SqlService`: ValidateSql, ExecuteSql, GenerateSql; the
    /// `query_database` tool.
    pub const SQL_QUERY: &str = "sql:query";
    /// `SqlService.ExplainSql` (plans, never rows).
    pub const SQL_EXPLAIN: &str = "sql:explain";
    /// `SqlService.DescribeSchema`: the tables and columns the caller may
    /// use. Implied by [`SQL_QUERY`] (one cannot write SQL blind); granted
    /// alone, it describes without querying.
    pub const SCHEMA_READ: &str = "schema:read";
    /// `SqlService.AddGoldenPair`: store a question → SQL pair for the
    /// caller's tenant.
    pub const GOLDEN_WRITE: &str = "golden:write";
    /// `SearchService`; the `search_documents` tool.
    pub const SEARCH: &str = "search";
    /// `SummaryService` reads; the `get_summaries` tool.
    pub const SUMMARIES: &str = "summaries";
    /// `SummaryService.BuildSummaries`.
    pub const SUMMARIES_BUILD: &str = "summaries:build";
    /// Reading the audit log of the caller's tenant.
    pub const AUDIT_READ: &str = "audit:read";
    /// `UsageService.GetUsage`: the caller's tenant's usage and budgets
    /// (apart from the audit log, so a tenant's billing contact need not
    /// read statements).
    pub const USAGE_READ: &str = "usage:read";
    /// Seeing personal data in answers: placeholders that replaced PII on
    /// the way to a model are restored in the answer only with this scope.
    pub const PII_READ: &str = "pii:read";
    /// Every scope above; a role may only list these.
    pub const ALL: &[&str] = &[
        ASK,
        SQL_QUERY,
        SQL_EXPLAIN,
        SCHEMA_READ,
        GOLDEN_WRITE,
        SEARCH,
        SUMMARIES,
        SUMMARIES_BUILD,
        AUDIT_READ,
        USAGE_READ,
        PII_READ,
    ];
}

/// `[policy]`: roles by name.
///
/// ```toml
/// [policy.roles.analyst]
/// scopes = ["ask", "sql:query", "schema:read", "search", "summaries"]
/// tables = ["tate.*"]
/// deny_columns = ["tate.artists.gender"]
/// masks = { "tate.artists.place_of_birth" = "keep_last:7" }
/// row_filters = { "tate.artworks" = "acquisition_year >= 1900" }
/// pii = ["tate.artists.name"]
/// db_role = "quarry_reader"
/// collections = ["artworks"]
/// collection_fields = { artworks = ["title", "medium", "acquisition_year"] }
/// summary_kinds = ["*"]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Salt mixed into `hash` masks so that a hashed value cannot be looked
    /// up in a table of hashes of likely values. Development default when
    /// empty: a fixed string (say so in production configs by setting it).
    #[serde(default)]
    pub hash_salt: String,
    /// Roles by name, as tokens carry them in `roles`.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleConfig>,
}

/// One role's grants. Every list defaults to empty: nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    /// Scopes (see [`scopes`]).
    pub scopes: Vec<String>,
    /// Tables as `schema.table`, or `schema.*` for every table of a schema.
    pub tables: Vec<String>,
    /// Column allow-lists: `schema.table` → the only columns shown. A table
    /// not listed shows all its columns (minus `deny_columns`).
    pub columns: BTreeMap<String, Vec<String>>,
    /// Columns never shown, as `schema.table.column`.
    pub deny_columns: Vec<String>,
    /// Column masks, `schema.table.column` → `redact`, `hash`, `null`,
    /// `keep_last:N` or `bucket:W` (see [`Mask`]).
    pub masks: BTreeMap<String, String>,
    /// Row filters, `schema.table` → a PostgreSQL boolean expression over
    /// that table's columns, e.g. `acquisition_year >= 1900` or
    /// `tenant_id = current_setting('quarry.tenant')`. Written by the
    /// operator, never by a caller.
    pub row_filters: BTreeMap<String, String>,
    /// Columns holding personal data, `schema.table.column`: their values
    /// are replaced by placeholders before anything reaches a model.
    pub pii: Vec<String>,
    /// PostgreSQL role the queries of this role run as (`SET LOCAL ROLE`).
    pub db_role: Option<String>,
    /// Search collections this role may search; `"*"` for all.
    pub collections: Vec<String>,
    /// Field allow-lists of search collections: collection → the only
    /// fields (text, filter or stored) this role sees in hits, may filter
    /// on, and whose text its queries are matched against; `"*"` for all.
    /// A collection not listed shows all its fields. Each collection listed
    /// must be granted by `collections`. Field names are not checked
    /// against the search configuration here (the policy is validated on
    /// its own); a name no collection has simply matches nothing.
    pub collection_fields: BTreeMap<String, Vec<String>>,
    /// Summary kinds this role may read; `"*"` for all.
    pub summary_kinds: Vec<String>,
}

/// How a masked column's values are shown. Applied inside the database
/// before any predicate, join, grouping, ordering or aggregate sees the
/// column, so masks cannot be probed.
#[derive(Debug, Clone, PartialEq)]
pub enum Mask {
    /// A constant `'[redacted]'` (text) for every non-null value.
    Redact,
    /// `md5(salt || value)` as hex: equal values stay equal, nothing else
    /// is revealed. The salt reaches PostgreSQL as the transaction setting
    /// `quarry.hash_salt`, never as text of the statement.
    Hash,
    /// `NULL`.
    Null,
    /// A fixed `'****'` followed by the last N characters.
    KeepLast(u32),
    /// Numbers rounded down to a multiple of the width (`floor(v / W) * W`).
    Bucket(f64),
}

impl Mask {
    /// Parses a mask as written in `[policy]`.
    ///
    /// # Errors
    /// A message saying which forms are accepted.
    pub fn parse(text: &str) -> std::result::Result<Mask, String> {
        let (kind, arg) = match text.split_once(':') {
            Some((k, a)) => (k.trim(), Some(a.trim())),
            None => (text.trim(), None),
        };
        match (kind, arg) {
            ("redact", None) => Ok(Mask::Redact),
            ("hash", None) => Ok(Mask::Hash),
            ("null", None) => Ok(Mask::Null),
            ("keep_last", Some(n)) => n
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .map(Mask::KeepLast)
                .ok_or_else(|| format!("keep_last needs a count from 1 to 64, got {n:?}")),
            ("bucket", Some(w)) => w
                .parse::<f64>()
                .ok()
                .filter(|w| w.is_finite() && *w > 0.0)
                .map(Mask::Bucket)
                .ok_or_else(|| format!("bucket needs a positive width, got {w:?}")),
            _ => Err(format!(
                "unknown mask {text:?}: use redact, hash, null, keep_last:N or bucket:W"
            )),
        }
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mask::Redact => f.write_str("redact"),
            Mask::Hash => f.write_str("hash"),
            Mask::Null => f.write_str("null"),
            Mask::KeepLast(n) => write!(f, "keep_last:{n}"),
            Mask::Bucket(w) => write!(f, "bucket:{w}"),
        }
    }
}

/// A `schema.table` name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    /// Schema.
    pub schema: String,
    /// Table or view.
    pub table: String,
}

impl TableName {
    /// `schema.table`.
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            table: table.into(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// A validated role.
#[derive(Debug, Clone, PartialEq)]
struct Role {
    name: String,
    scopes: BTreeSet<String>,
    whole_schemas: BTreeSet<String>,
    tables: BTreeSet<TableName>,
    columns: BTreeMap<TableName, BTreeSet<String>>,
    deny_columns: BTreeMap<TableName, BTreeSet<String>>,
    masks: BTreeMap<TableName, BTreeMap<String, Mask>>,
    row_filters: BTreeMap<TableName, String>,
    pii: BTreeMap<TableName, BTreeSet<String>>,
    db_role: Option<String>,
    collections: Access,
    collection_fields: BTreeMap<String, Access>,
    summary_kinds: Access,
}

impl Role {
    fn grants_table(&self, table: &TableName) -> bool {
        self.tables.contains(table) || self.whole_schemas.contains(&table.schema)
    }

    fn shows_column(&self, table: &TableName, column: &str) -> bool {
        self.columns
            .get(table)
            .is_none_or(|only| only.contains(column))
            && !self
                .deny_columns
                .get(table)
                .is_some_and(|deny| deny.contains(column))
    }
}

/// Names a caller may use, or all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every name.
    All,
    /// Only these.
    Only(BTreeSet<String>),
}

impl Access {
    fn from_list(list: &[String]) -> Access {
        if list.iter().any(|n| n == "*") {
            Access::All
        } else {
            Access::Only(list.iter().cloned().collect())
        }
    }

    /// Whether `name` is allowed.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Access::All => true,
            Access::Only(names) => names.contains(name),
        }
    }

    /// The names either allows.
    fn union(self, other: &Access) -> Access {
        match (self, other) {
            (Access::All, _) | (_, Access::All) => Access::All,
            (Access::Only(mut names), Access::Only(more)) => {
                names.extend(more.iter().cloned());
                Access::Only(names)
            }
        }
    }
}

/// A validated policy; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    roles: BTreeMap<String, Arc<Role>>,
    hash_salt: String,
    version: u64,
}

static POLICY_VERSIONS: AtomicU64 = AtomicU64::new(1);

/// Salt used by `hash` masks when `policy.hash_salt` is empty.
pub const DEVELOPMENT_HASH_SALT: &str = "quarry-development-salt";

fn split_table(text: &str) -> Option<TableName> {
    let (schema, table) = text.split_once('.')?;
    (is_name(schema) && (is_name(table) || table == "*")).then(|| TableName::new(schema, table))
}

fn split_column(text: &str) -> Option<(TableName, String)> {
    let mut parts = text.splitn(3, '.');
    let (schema, table, column) = (parts.next()?, parts.next()?, parts.next()?);
    (is_name(schema) && is_name(table) && is_name(column))
        .then(|| (TableName::new(schema, table), column.to_owned()))
}

/// A PostgreSQL identifier as written without quotes after folding: the
/// only names a policy may use (so a policy name can be quoted safely and
/// compared exactly with the catalog).
fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && text.len() <= 63
}

/// A search collection or field name as the search configuration accepts
/// them: `[a-z][a-z0-9_]*`.
fn is_search_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Policy {
    /// Validates `config`.
    ///
    /// # Errors
    /// [`AuthError::Config`] naming the field at fault, e.g.
    /// `policy.roles.viewer.masks."tate.artists.name": unknown mask ...`.
    pub fn new(config: &PolicyConfig) -> Result<Policy> {
        let mut roles = BTreeMap::new();
        for (name, role) in &config.roles {
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return Err(AuthError::Config(format!(
                    "policy.roles: {name:?} is not a usable role name"
                )));
            }
            roles.insert(name.clone(), Arc::new(Self::role(name, role)?));
        }
        Ok(Policy {
            roles,
            hash_salt: if config.hash_salt.is_empty() {
                DEVELOPMENT_HASH_SALT.to_owned()
            } else {
                config.hash_salt.clone()
            },
            version: POLICY_VERSIONS.fetch_add(1, Ordering::Relaxed),
        })
    }

    fn role(name: &str, config: &RoleConfig) -> Result<Role> {
        let field = |f: &str| format!("policy.roles.{name}.{f}");
        let bad = |f: String, why: &str| AuthError::Config(format!("{f}: {why}"));
        let mut role = Role {
            name: name.to_owned(),
            scopes: BTreeSet::new(),
            whole_schemas: BTreeSet::new(),
            tables: BTreeSet::new(),
            columns: BTreeMap::new(),
            deny_columns: BTreeMap::new(),
            masks: BTreeMap::new(),
            row_filters: BTreeMap::new(),
            pii: BTreeMap::new(),
            db_role: None,
            collections: Access::from_list(&config.collections),
            collection_fields: BTreeMap::new(),
            summary_kinds: Access::from_list(&config.summary_kinds),
        };
        for scope in &config.scopes {
            if !scopes::ALL.contains(&scope.as_str()) {
                return Err(bad(
                    field("scopes"),
                    &format!(
                        "unknown scope {scope:?} (known: {})",
                        scopes::ALL.join(", ")
                    ),
                ));
            }
            role.scopes.insert(scope.clone());
        }
        for table in &config.tables {
            let parsed = split_table(table).ok_or_else(|| {
                bad(
                    field("tables"),
                    &format!("{table:?} is not schema.table or schema.*"),
                )
            })?;
            if parsed.table == "*" {
                role.whole_schemas.insert(parsed.schema);
            } else {
                role.tables.insert(parsed);
            }
        }
        let granted = |role: &Role, t: &TableName| role.grants_table(t);
        for (table, columns) in &config.columns {
            let parsed = split_table(table)
                .filter(|t| t.table != "*")
                .ok_or_else(|| bad(field("columns"), &format!("{table:?} is not schema.table")))?;
            if !granted(&role, &parsed) {
                return Err(bad(
                    format!("{}.\"{table}\"", field("columns")),
                    "the role does not grant this table",
                ));
            }
            let mut set = BTreeSet::new();
            for column in columns {
                if !is_name(column) {
                    return Err(bad(
                        format!("{}.\"{table}\"", field("columns")),
                        &format!("{column:?} is not a column name"),
                    ));
                }
                set.insert(column.clone());
            }
            role.columns.insert(parsed, set);
        }
        for column in &config.deny_columns {
            let (table, column) = split_column(column).ok_or_else(|| {
                bad(
                    field("deny_columns"),
                    &format!("{column:?} is not schema.table.column"),
                )
            })?;
            role.deny_columns.entry(table).or_default().insert(column);
        }
        for (column, mask) in &config.masks {
            let f = format!("{}.\"{column}\"", field("masks"));
            let (table, name) =
                split_column(column).ok_or_else(|| bad(f.clone(), "not schema.table.column"))?;
            let mask = Mask::parse(mask).map_err(|why| bad(f.clone(), &why))?;
            if !granted(&role, &table) {
                return Err(bad(f, "the role does not grant this table"));
            }
            role.masks.entry(table).or_default().insert(name, mask);
        }
        for (table, filter) in &config.row_filters {
            let f = format!("{}.\"{table}\"", field("row_filters"));
            let parsed = split_table(table)
                .filter(|t| t.table != "*")
                .ok_or_else(|| bad(f.clone(), "not schema.table"))?;
            if !granted(&role, &parsed) {
                return Err(bad(f, "the role does not grant this table"));
            }
            check_filter(filter).map_err(|why| bad(f.clone(), &why))?;
            role.row_filters.insert(parsed, filter.clone());
        }
        for column in &config.pii {
            let (table, column) = split_column(column).ok_or_else(|| {
                bad(
                    field("pii"),
                    &format!("{column:?} is not schema.table.column"),
                )
            })?;
            role.pii.entry(table).or_default().insert(column);
        }
        for (collection, fields) in &config.collection_fields {
            let f = format!("{}.{collection}", field("collection_fields"));
            if !is_search_name(collection) {
                return Err(bad(f, "not a collection name ([a-z][a-z0-9_]*)"));
            }
            if !role.collections.allows(collection) {
                return Err(bad(f, "the role does not grant this collection"));
            }
            if fields.is_empty() {
                return Err(bad(
                    f,
                    "empty: list the fields the role sees, or \"*\" for all",
                ));
            }
            if let Some(odd) = fields.iter().find(|n| *n != "*" && !is_search_name(n)) {
                return Err(bad(
                    f,
                    &format!("{odd:?} is not a field name ([a-z][a-z0-9_]*) or \"*\""),
                ));
            }
            role.collection_fields
                .insert(collection.clone(), Access::from_list(fields));
        }
        if let Some(db_role) = &config.db_role {
            if !is_name(db_role) {
                return Err(bad(
                    field("db_role"),
                    "must be a lower-case PostgreSQL role name",
                ));
            }
            role.db_role = Some(db_role.clone());
        }
        Ok(role)
    }

    /// The policy's version: different for every validated policy of this
    /// process, so caches keyed by it never serve a result computed under
    /// an older policy.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Role names, sorted.
    pub fn role_names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// What `principal` may do: the union of its known roles (unknown roles
    /// are ignored; none known → nothing allowed). When the token carries
    /// scopes, they narrow the roles' scopes (a token's scopes never widen
    /// what its roles grant).
    pub fn grant(&self, principal: &Principal) -> Grant {
        let roles: Vec<Arc<Role>> = principal
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r).cloned())
            .collect();
        let mut scopes: BTreeSet<String> = roles
            .iter()
            .flat_map(|r| r.scopes.iter().cloned())
            .collect();
        if !principal.scopes.is_empty() {
            scopes.retain(|s| principal.scopes.contains(s));
        }
        // Writing SQL needs the schema it is written against: whoever may
        // query may describe the tables and columns they may query (agentic
        // mode puts that description in the prompt).
        if scopes.contains(scopes::SQL_QUERY) {
            scopes.insert(scopes::SCHEMA_READ.to_owned());
        }
        Grant {
            tenant: principal.tenant.clone(),
            subject: principal.subject.clone(),
            roles,
            scopes,
            hash_salt: self.hash_salt.clone(),
            policy_version: self.version,
            unrestricted: false,
        }
    }
}

/// Checks a row filter is one plain boolean expression: balanced
/// parentheses and quotes, and no statement separator or comment that
/// could end the derived table it is placed in.
fn check_filter(filter: &str) -> std::result::Result<(), String> {
    if filter.trim().is_empty() {
        return Err("empty filter".to_owned());
    }
    let mut depth = 0_i32;
    let mut quote: Option<char> = None;
    let mut prev = '\0';
    for c in filter.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth < 0 {
                        return Err("unbalanced parentheses".to_owned());
                    }
                }
                ';' => return Err("must not contain ';'".to_owned()),
                '-' if prev == '-' => return Err("must not contain comments".to_owned()),
                '*' if prev == '/' => return Err("must not contain comments".to_owned()),
                '$' => return Err("must not contain dollar quoting".to_owned()),
                _ => {}
            },
        }
        prev = c;
    }
    if quote.is_some() || depth != 0 {
        return Err("unbalanced quotes or parentheses".to_owned());
    }
    Ok(())
}

/// What one caller may do, resolved from the [`Policy`] for its roles.
/// Carried by [`crate::Caller`]; cheap to clone behind an `Arc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    tenant: String,
    subject: String,
    roles: Vec<Arc<Role>>,
    scopes: BTreeSet<String>,
    hash_salt: String,
    policy_version: u64,
    /// Operator and background work inside the process (never a token).
    unrestricted: bool,
}

/// One table as a caller may see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableView<'a> {
    table: TableName,
    roles: Vec<&'a Role>,
}

impl TableView<'_> {
    /// The table.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Whether `column` is shown (false: as if it did not exist).
    pub fn shows(&self, column: &str) -> bool {
        self.roles.is_empty()
            || self
                .roles
                .iter()
                .any(|r| r.shows_column(&self.table, column))
    }

    /// The mask applied to `column`, if every role that shows it masks it.
    pub fn mask(&self, column: &str) -> Option<&Mask> {
        let mut first = None;
        for role in self
            .roles
            .iter()
            .filter(|r| r.shows_column(&self.table, column))
        {
            match role.masks.get(&self.table).and_then(|m| m.get(column)) {
                None => return None,
                Some(mask) => {
                    first.get_or_insert(mask);
                }
            }
        }
        first
    }

    /// The row filter, if every role that grants the table filters it: the
    /// disjunction of their filters, each parenthesised.
    pub fn row_filter(&self) -> Option<String> {
        let mut filters = Vec::new();
        for role in &self.roles {
            match role.row_filters.get(&self.table) {
                None => return None,
                Some(f) => filters.push(format!("({f})")),
            }
        }
        (!filters.is_empty()).then(|| filters.join(" OR "))
    }

    /// Whether `column` is tagged PII by any of the caller's roles.
    pub fn is_pii(&self, column: &str) -> bool {
        self.roles
            .iter()
            .any(|r| r.pii.get(&self.table).is_some_and(|c| c.contains(column)))
    }

    /// Whether every column of `columns` is shown unmasked and no row filter
    /// applies (the table can be read as it is).
    pub fn is_plain<'c>(&self, mut columns: impl Iterator<Item = &'c str>) -> bool {
        self.row_filter().is_none() && columns.all(|c| self.shows(c) && self.mask(c).is_none())
    }
}

impl Grant {
    /// A grant that allows everything: operator commands and background
    /// work of this process. Never built from a token.
    pub fn unrestricted() -> Grant {
        Grant {
            tenant: String::new(),
            subject: String::new(),
            roles: Vec::new(),
            scopes: scopes::ALL.iter().map(|s| (*s).to_owned()).collect(),
            hash_salt: DEVELOPMENT_HASH_SALT.to_owned(),
            policy_version: 0,
            unrestricted: true,
        }
    }

    /// A grant that allows nothing (a request no policy was applied to).
    pub fn none() -> Grant {
        Grant {
            tenant: String::new(),
            subject: String::new(),
            roles: Vec::new(),
            scopes: BTreeSet::new(),
            hash_salt: DEVELOPMENT_HASH_SALT.to_owned(),
            policy_version: 0,
            unrestricted: false,
        }
    }

    /// Whether this is [`Grant::unrestricted`].
    pub fn is_unrestricted(&self) -> bool {
        self.unrestricted
    }

    /// The version of the policy this grant was resolved from (0 for
    /// [`Grant::unrestricted`] and [`Grant::none`]).
    pub fn policy_version(&self) -> u64 {
        self.policy_version
    }

    /// Names of the policy roles the caller holds, in token order.
    pub fn roles(&self) -> Vec<&str> {
        self.roles.iter().map(|r| r.name.as_str()).collect()
    }

    /// [`Self::roles`] sorted, each once: what the grant shows depends on
    /// the set, not the order the token lists them in (for cache keys).
    pub fn sorted_roles(&self) -> Vec<String> {
        let mut roles: Vec<String> = self.roles.iter().map(|r| r.name.clone()).collect();
        roles.sort_unstable();
        roles.dedup();
        roles
    }

    /// Whether the grant holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    /// `Ok` if the grant holds `scope`.
    ///
    /// # Errors
    /// [`AuthError::MissingScope`] naming it (`PERMISSION_DENIED`).
    pub fn require(&self, scope: &str) -> Result<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope.to_owned()))
        }
    }

    /// The table as the caller may see it, or `None` when no role grants it.
    pub fn table(&self, schema: &str, table: &str) -> Option<TableView<'_>> {
        let name = TableName::new(schema, table);
        if self.unrestricted {
            return Some(TableView {
                table: name,
                roles: Vec::new(),
            });
        }
        let roles: Vec<&Role> = self
            .roles
            .iter()
            .map(AsRef::as_ref)
            .filter(|r| r.grants_table(&name))
            .collect();
        (!roles.is_empty()).then_some(TableView { table: name, roles })
    }

    /// Whether the caller may see `schema.table.column` unmasked or masked.
    pub fn shows_column(&self, schema: &str, table: &str, column: &str) -> bool {
        self.table(schema, table).is_some_and(|t| t.shows(column))
    }

    /// Whether `schema.table.column` may reach a model as it is: shown,
    /// unmasked and not tagged PII (value index, sample values, few-shot
    /// examples).
    pub fn exposes_values(&self, schema: &str, table: &str, column: &str) -> bool {
        self.table(schema, table)
            .is_some_and(|t| t.shows(column) && t.mask(column).is_none() && !t.is_pii(column))
    }

    /// The database role queries run as: the one the caller's roles name
    /// (the first in token order when several do), or `None`.
    pub fn db_role(&self) -> Option<&str> {
        self.roles.iter().find_map(|r| r.db_role.as_deref())
    }

    /// Whether the caller may search `collection`.
    pub fn allows_collection(&self, collection: &str) -> bool {
        self.unrestricted || self.roles.iter().any(|r| r.collections.allows(collection))
    }

    /// The fields of search collection `collection` the caller sees: `None`
    /// when no role grants the collection, else the union over the roles
    /// that grant it of the fields each shows (`policy.roles.<r>.
    /// collection_fields`; a role that does not list the collection shows
    /// all of it). [`Grant::unrestricted`] sees every field.
    ///
    /// A field not shown is absent from hits, refused in filters and not
    /// matched by queries (the search tool enforces this).
    pub fn collection_fields(&self, collection: &str) -> Option<Access> {
        if self.unrestricted {
            return Some(Access::All);
        }
        self.roles
            .iter()
            .filter(|r| r.collections.allows(collection))
            .map(|r| {
                r.collection_fields
                    .get(collection)
                    .cloned()
                    .unwrap_or(Access::All)
            })
            .reduce(|a, b| a.union(&b))
    }

    /// Whether the caller sees `field` of search collection `collection`
    /// (see [`Grant::collection_fields`]).
    pub fn collection_field_allowed(&self, collection: &str, field: &str) -> bool {
        self.collection_fields(collection)
            .is_some_and(|a| a.allows(field))
    }

    /// Whether the caller may read summaries of `kind`.
    pub fn allows_summary_kind(&self, kind: &str) -> bool {
        self.unrestricted || self.roles.iter().any(|r| r.summary_kinds.allows(kind))
    }

    /// The salt of `hash` masks (`policy.hash_salt`).
    pub fn hash_salt(&self) -> &str {
        &self.hash_salt
    }

    /// The tenant this grant was resolved for (empty for unrestricted).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The subject this grant was resolved for.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// The policy in force, replaceable at run time (a config reload).
#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Policy>,
}

impl PolicyStore {
    /// A store holding `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            current: ArcSwap::from_pointee(policy),
        }
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Replaces the policy with `config` once it validates; on error the
    /// policy in force stays.
    ///
    /// # Errors
    /// As [`Policy::new`].
    pub fn reload(&self, config: &PolicyConfig) -> Result<u64> {
        let policy = Policy::new(config)?;
        let version = policy.version;
        self.current.store(Arc::new(policy));
        Ok(version)
    }
}
