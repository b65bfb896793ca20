//! SQL validation: the first line of defence before any model-written SQL
//! reaches a database (see "Safety" in `ARCHITECTURE.md`).
//!
//! [`validate`] parses the text with sqlparser's PostgreSQL dialect and
//! accepts exactly one read-only query: `SELECT` (joins, CTEs, window
//! functions, subqueries, set operations) or `VALUES`. Everything else is a
//! [`Rejection`] with a distinct [`RejectionKind`]:
//!
//! | kind | example |
//! | --- | --- |
//! | [`RejectionKind::Empty`] | `""`, `";"`, `"-- nothing"` |
//! | [`RejectionKind::TooLong`] | text longer than [`ValidationPolicy::max_sql_bytes`] |
//! | [`RejectionKind::Parse`] | `SELEC 1` (carries line/column when sqlparser reports it) |
//! | [`RejectionKind::MultipleStatements`] | `select * from t; drop table t` |
//! | [`RejectionKind::NotAQuery`] | `INSERT`, `UPDATE`, `COPY`, `SET`, DDL, `CALL`, `DO`, … |
//! | [`RejectionKind::SelectInto`] | `SELECT * INTO new_t FROM t` |
//! | [`RejectionKind::DataModifyingCte`] | `WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x` |
//! | [`RejectionKind::LockingClause`] | `SELECT 1 FOR UPDATE` |
//! | [`RejectionKind::DeniedFunction`] | `SELECT pg_catalog.pg_sleep(1)`, anywhere in the tree |
//! | [`RejectionKind::DeniedFunction`] | `SELECT current_setting('x')`: not on the allowlist |
//! | [`RejectionKind::SchemaNotAllowed`] | `SELECT * FROM pg_catalog.pg_authid` with a schema restriction |
//! | [`RejectionKind::SchemaNotAllowed`] | `SELECT 'quarry'::regnamespace::oid` (a catalog look-up type) with a schema restriction |
//! | [`RejectionKind::Unsupported`] | dialect clauses PostgreSQL does not have (`FOR XML`, pipe operators, …) |
//! | [`RejectionKind::TooComplex`] | `1 + 1 + … + 1` with more than [`MAX_DEPTH`] levels |
//! | [`RejectionKind::TooComplex`] | `SELECT repeat('x', 1000000000)`: known to build a string over [`MAX_BUILT_STRING_BYTES`] |
//!
//! A locking clause sqlparser cannot parse (`SELECT 1 FOR UPDATE` reads `FOR`
//! as a column alias) is still reported as [`RejectionKind::LockingClause`]:
//! on a parse error the tokens are scanned for `FOR UPDATE`/`FOR SHARE`/….
//!
//! Functions and relations are found with a sqlparser [`Visitor`], so they are
//! checked wherever they occur: subqueries in `WHERE`, CTE bodies, lateral
//! joins, `FROM` functions, expressions inside window or `FILTER` clauses.
//!
//! # Functions
//!
//! Every function call (in expressions and in `FROM`) is checked twice: a
//! deny-list of known-dangerous names and prefixes ([`is_denied_function`]:
//! sleeps, file access, advisory locks, sequences, backend signals, …) is
//! refused first, as [`RejectionKind::DeniedFunction`]; then the name must be
//! on an allowlist of side-effect-free built-ins ([`is_allowed_function`],
//! listed with the reasons for borderline entries in `validate/functions.rs`)
//! or in [`ValidationPolicy::extra_allowed_functions`], else the query is
//! refused, also as [`RejectionKind::DeniedFunction`] (the message says the
//! function is not on the allowlist). Built-ins are matched by
//! their unqualified name or as `pg_catalog.<name>`; a call qualified with
//! another schema must be allowed by an extra entry. The executor puts
//! `pg_catalog` first on the `search_path`, so an unqualified allowlisted
//! name resolves to the built-in, not to a same-named function elsewhere.
//!
//! # Schema restriction
//!
//! With [`ValidationPolicy::allowed_schemas`] set, a schema-qualified table
//! must name one of the allowed schemas. An unqualified name is first
//! resolved against the common table expressions in scope (CTE names are not
//! tables, and scoping follows PostgreSQL: a non-recursive CTE sees only the
//! CTEs before it). Any other unqualified name resolves through the
//! `search_path`, which the [executor](crate::execute) pins to the allowed
//! schemas (plus `pg_catalog` and `pg_temp`, last); since PostgreSQL still
//! finds `pg_catalog` relations by their unqualified names, unqualified names
//! starting with `pg_` are refused too. Schema-qualified function calls must
//! name an allowed schema or `pg_catalog`.
//!
//! # Row limit
//!
//! [`ValidatedQuery::rewritten_sql`] applies the row limit on the AST: it adds
//! `LIMIT n` to the outermost query, or lowers an existing literal `LIMIT`
//! that is larger; only when the query limits itself in a form that cannot be
//! compared (`FETCH FIRST`, `LIMIT (SELECT …)`) is it wrapped as
//! `SELECT * FROM (<query>) AS quarry_q LIMIT n`. The SQL sent to PostgreSQL
//! is always rendered from the validated AST, never the caller's text, so
//! what runs is what was checked.

use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    ArrayElemTypeDef, DataType, Expr, Ident, LimitClause, ObjectName, ObjectNamePart, Query,
    Select, SetExpr, Spanned, Statement, TableFactor, TypedString, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

mod functions;

/// Deepest nesting of expressions (or of set operations) accepted. Chains
/// like `a + b + c + …` or `x::int[][]…` parse into trees as deep as they are
/// long, and cloning, printing or dropping a tree recurses once per level;
/// this bound keeps that within a small thread stack.
pub const MAX_DEPTH: usize = 200;

/// What a query may touch. Built per caller (tenant, role) by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationPolicy {
    /// Schemas whose tables the query may read; `None` means no restriction.
    /// Names are compared exactly (PostgreSQL folds unquoted identifiers to
    /// lower case, so give lower-case names for ordinary schemas).
    pub allowed_schemas: Option<Vec<String>>,
    /// Default row cap carried to [`ValidatedQuery::max_rows`].
    pub max_rows: u64,
    /// Longest SQL text accepted, in bytes; bounds parse time and AST depth.
    pub max_sql_bytes: usize,
    /// Functions allowed on top of the built-in allowlist (see
    /// [`is_allowed_function`]). An entry without a dot (`"my_fn"`) allows
    /// that name unqualified or in any schema the policy allows; an entry
    /// with one (`"tate.my_fn"`) allows exactly that qualified call. Names
    /// are compared after PostgreSQL identifier folding, so give lower-case
    /// names for ordinary identifiers. The deny-list
    /// ([`is_denied_function`]) always wins over this list.
    pub extra_allowed_functions: Vec<String>,
}

impl Default for ValidationPolicy {
    fn default() -> Self {
        Self {
            allowed_schemas: None,
            max_rows: 1_000,
            max_sql_bytes: 64 * 1024,
            extra_allowed_functions: Vec::new(),
        }
    }
}

/// Why a query was refused. The stable string form ([`Self::as_str`]) is
/// what clients and the query log see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// The text is not valid SQL for the PostgreSQL dialect (or nests too deeply).
    Parse,
    /// No statement at all: empty text, only whitespace, comments or `;`.
    Empty,
    /// The text exceeds [`ValidationPolicy::max_sql_bytes`].
    TooLong,
    /// More than one statement.
    MultipleStatements,
    /// A statement that is not a query (`INSERT`, `COPY`, `SET`, DDL, …).
    NotAQuery,
    /// `SELECT … INTO`, which creates a table.
    SelectInto,
    /// `INSERT`/`UPDATE`/`DELETE`/`MERGE` nested in a query (a data-modifying CTE).
    DataModifyingCte,
    /// `FOR UPDATE`, `FOR SHARE`, `FOR NO KEY UPDATE`, `FOR KEY SHARE`.
    LockingClause,
    /// A call to a function on the deny-list, one not on the allowlist (the
    /// message says which), or a schema-qualified call outside the allowed
    /// schemas.
    DeniedFunction,

    /// A table outside [`ValidationPolicy::allowed_schemas`].
    SchemaNotAllowed,
    /// A table or column the caller's policy does not grant
    /// ([`crate::govern`]); `PERMISSION_DENIED`.
    Forbidden,
    /// An unqualified table name found in more than one allowed schema
    /// (the message lists the candidates), or a name the query's own CTE
    /// shadows.
    Ambiguous,
    /// Syntax sqlparser accepts for other dialects that PostgreSQL lacks.
    Unsupported,
    /// Expressions or set operations nested deeper than [`MAX_DEPTH`].
    TooComplex,
}

impl RejectionKind {
    /// Stable snake_case identifier, e.g. `"denied_function"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parse => "parse",
            Self::Empty => "empty",
            Self::TooLong => "too_long",
            Self::MultipleStatements => "multiple_statements",
            Self::NotAQuery => "not_a_query",
            Self::SelectInto => "select_into",
            Self::DataModifyingCte => "data_modifying_cte",
            Self::LockingClause => "locking_clause",
            Self::DeniedFunction => "denied_function",

            Self::SchemaNotAllowed => "schema_not_allowed",
            Self::Forbidden => "forbidden",
            Self::Ambiguous => "ambiguous",
            Self::Unsupported => "unsupported",
            Self::TooComplex => "too_complex",
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused query: what kind of refusal, a lowercase human message (fit to
/// show a model so it can correct itself) and, when known, the 1-based
/// `(line, column)` of the offending token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// Class of refusal.
    pub kind: RejectionKind,
    /// Lowercase message without trailing period.
    pub message: String,
    /// 1-based line and column in the submitted text, when known.
    pub position: Option<(u64, u64)>,
}

impl Rejection {
    pub(crate) fn new(kind: RejectionKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            position: None,
        }
    }

    fn at(mut self, location: Location) -> Self {
        if location.line > 0 {
            self.position = Some((location.line, location.column));
        }
        self
    }

    fn at_opt(self, location: Option<Location>) -> Self {
        match location {
            Some(location) => self.at(location),
            None => self,
        }
    }
}

/// A table the query reads, as written (identifiers normalised the way
/// PostgreSQL does: unquoted ones folded to lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableRef {
    /// Schema, when the reference is qualified.
    pub schema: Option<String>,
    /// Table or view name.
    pub name: String,
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A query that passed [`validate`]. Holds the parsed statement; the SQL to
/// execute is rendered from it by [`Self::rewritten_sql`].
#[derive(Debug, Clone)]
pub struct ValidatedQuery {
    statement: Statement,
    tables: Vec<TableRef>,
    allowed_schemas: Option<Vec<String>>,
    max_rows: u64,
    session: Option<QuerySession>,
    /// The caller's statement, when [`Self::governed`] replaced it.
    original: Option<Statement>,
}

/// The caller a governed query runs for ([`crate::govern`]): set in the
/// transaction for row-level security, and the database role to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerySession {
    /// `quarry.tenant`.
    pub tenant: String,
    /// `quarry.subject`.
    pub subject: String,
    /// `quarry.roles`.
    pub roles: Vec<String>,
    /// `SET LOCAL ROLE` to this instead of the configured role, when set.
    pub db_role: Option<String>,
    /// Result column names that carry personal data (policy `pii` tags, and
    /// select-list aliases of expressions over such columns), sorted.
    pub pii_columns: Vec<String>,
    /// The salt of `hash` masks, set as `quarry.hash_salt` in the
    /// transaction.
    pub hash_salt: String,
}

impl ValidatedQuery {
    /// The parsed statement (always [`Statement::Query`]).
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// The validated query rendered back to SQL (normalised formatting);
    /// for a governed query, the SQL that runs (with its derived tables).
    pub fn sql(&self) -> String {
        self.statement.to_string()
    }

    /// The query as the caller wrote it (normalised), before governance
    /// rewrote table references: what clients and models are shown, since
    /// the rewrite holds the policy's masks and filters.
    pub fn shown_sql(&self) -> String {
        self.original
            .as_ref()
            .unwrap_or(&self.statement)
            .to_string()
    }

    /// [`Self::rewritten_sql`] of the query as the caller wrote it (see
    /// [`Self::shown_sql`]).
    pub fn shown_rewritten_sql(&self, limit: u64) -> String {
        limited(self.original.as_ref().unwrap_or(&self.statement), limit)
    }

    /// The statement as the caller wrote it (before governance rewrote it).
    pub fn shown_statement(&self) -> &Statement {
        self.original.as_ref().unwrap_or(&self.statement)
    }

    /// The caller this query was governed for, if it was.
    pub fn session(&self) -> Option<&QuerySession> {
        self.session.as_ref()
    }

    /// This query with `statement` (the governed rewrite of its own) and the
    /// caller's `session`.
    pub(crate) fn governed(mut self, statement: Statement, session: QuerySession) -> Self {
        self.original = Some(std::mem::replace(&mut self.statement, statement));
        self.session = Some(session);
        self
    }

    /// Tables and views the query reads (CTE references excluded), in order
    /// of first appearance, without duplicates.
    pub fn tables(&self) -> &[TableRef] {
        &self.tables
    }

    /// The schema restriction the query was validated against; the executor
    /// pins `search_path` to it.
    pub fn allowed_schemas(&self) -> Option<&[String]> {
        self.allowed_schemas.as_deref()
    }

    /// Row cap from the policy the query was validated with.
    pub fn max_rows(&self) -> u64 {
        self.max_rows
    }

    /// SQL that returns at most `limit + 1` rows, so that whoever runs it can
    /// tell whether the result was truncated at `limit` (see the module docs
    /// for how the limit is applied).
    pub fn rewritten_sql(&self, limit: u64) -> String {
        limited(&self.statement, limit)
    }
}

/// `statement` returning at most `limit + 1` rows; see
/// [`ValidatedQuery::rewritten_sql`].
fn limited(statement: &Statement, limit: u64) -> String {
    let cap = limit.saturating_add(1);
    let Statement::Query(query) = statement else {
        // unreachable by construction; render the statement unchanged
        return statement.to_string();
    };
    if query.limit_clause.is_none() && query.fetch.is_none() {
        // the common case, without cloning the tree: sqlparser renders
        // the limit clause last but for clauses the validator refused
        // (settings, locks, `FOR XML`, format, pipe operators), so this
        // is exactly the text `limit_in_place` would give
        return format!("{query} LIMIT {cap}");
    }
    if query.fetch.is_none()
        && let Some(LimitClause::LimitOffset {
            limit: Some(Expr::Value(value)),
            limit_by,
            ..
        }) = &query.limit_clause
        && limit_by.is_empty()
        && value.to_string().parse::<u64>().is_ok_and(|n| n <= cap)
    {
        // a literal limit no larger than the cap stays as it is
        return query.to_string();
    }
    let mut query = query.as_ref().clone();
    if limit_in_place(&mut query, cap) {
        query.to_string()
    } else {
        format!("SELECT * FROM ({query}) AS quarry_q LIMIT {cap}")
    }
}

/// Parse `sql` and accept it only if it is a single read-only query allowed
/// by `policy`. See the module docs for the rules.
///
/// # Errors
/// A [`Rejection`] whose [`RejectionKind`] says why (with a message and,
/// for parse errors, the line and column): [`RejectionKind::Parse`] for
/// text that is not PostgreSQL SQL, [`RejectionKind::Empty`],
/// [`RejectionKind::TooLong`] (above [`ValidationPolicy::max_sql_bytes`]),
/// [`RejectionKind::MultipleStatements`], [`RejectionKind::NotAQuery`],
/// [`RejectionKind::SelectInto`], [`RejectionKind::DataModifyingCte`],
/// [`RejectionKind::LockingClause`], [`RejectionKind::DeniedFunction`],
/// [`RejectionKind::SchemaNotAllowed`], [`RejectionKind::Unsupported`] and
/// [`RejectionKind::TooComplex`] (nesting deeper than [`MAX_DEPTH`]).
pub fn validate(sql: &str, policy: &ValidationPolicy) -> Result<ValidatedQuery, Rejection> {
    if sql.len() > policy.max_sql_bytes {
        return Err(Rejection::new(
            RejectionKind::TooLong,
            format!(
                "sql is {} bytes long, the limit is {}",
                sql.len(),
                policy.max_sql_bytes
            ),
        ));
    }
    if sql.len() <= INLINE_BYTES {
        return validate_here(sql, policy);
    }
    // Long text can nest deeply enough that dropping a rejected tree (or the
    // parser dropping a partial one) overflows an ordinary thread stack, so
    // it is checked on a thread with a large one.
    let owned_sql = sql.to_owned();
    let owned_policy = policy.clone();
    std::thread::Builder::new()
        .name("quarry-sql-validate".into())
        .stack_size(VALIDATE_STACK_BYTES)
        .spawn(move || validate_here(&owned_sql, &owned_policy))
        .map_err(|e| {
            Rejection::new(
                RejectionKind::TooComplex,
                format!("cannot start a validation thread: {e}"),
            )
        })?
        .join()
        .unwrap_or_else(|_| {
            Err(Rejection::new(
                RejectionKind::TooComplex,
                "validation of this query failed",
            ))
        })
}

/// [`validate`] for async callers: text longer than the inline limit (which
/// is checked on a thread with a large stack) goes to tokio's blocking pool,
/// so a long or deeply nested query never stalls an async worker.
///
/// # Errors
/// As [`validate`] (a [`Rejection`] saying why); a blocking task that
/// failed is a [`RejectionKind::TooComplex`] rejection.
pub async fn validate_off_runtime(
    sql: &str,
    policy: &ValidationPolicy,
) -> Result<ValidatedQuery, Rejection> {
    if sql.len() <= INLINE_BYTES {
        return validate(sql, policy);
    }
    let (sql, policy) = (sql.to_owned(), policy.clone());
    tokio::task::spawn_blocking(move || validate(&sql, &policy))
        .await
        .unwrap_or_else(|_| {
            Err(Rejection::new(
                RejectionKind::TooComplex,
                "validation of this query failed",
            ))
        })
}

/// SQL-standard niladic functions that PostgreSQL evaluates without
/// parentheses and sqlparser reads as plain identifiers (PostgreSQL 16 docs
/// §9.26, "Session Information Functions"). Unquoted, they reveal the session
/// (role, schema, database), so they are refused like the session functions
/// left off the allowlist. A column with such a name must be quoted or
/// qualified (`t.user`), as PostgreSQL itself requires.
const SESSION_IDENTIFIERS: &[&str] = &[
    "current_catalog",
    "current_role",
    "current_schema",
    "current_user",
    "session_user",
    "system_user",
    "user",
];

/// Text up to this size is validated on the caller's thread: it cannot nest
/// more than a few hundred levels, which any thread stack handles.
const INLINE_BYTES: usize = 1024;

/// Stack for validating longer text: enough for about one nesting level per
/// two bytes of [`ValidationPolicy::max_sql_bytes`] at its default. Only
/// reserved address space; pages are touched as the stack grows.
const VALIDATE_STACK_BYTES: usize = 256 * 1024 * 1024;

fn validate_here(sql: &str, policy: &ValidationPolicy) -> Result<ValidatedQuery, Rejection> {
    let dialect = PostgreSqlDialect {};
    let mut statements = match Parser::parse_sql(&dialect, sql) {
        Ok(statements) => statements,
        Err(error) => return Err(parse_rejection(sql, error)),
    };
    // Nothing below may recurse over a whole statement (Display, Clone,
    // Spanned) before the depth check passed: only the visitor, which
    // sqlparser protects against stack overflow.
    let statement = match statements.len() {
        0 => {
            return Err(Rejection::new(
                RejectionKind::Empty,
                "no sql statement given",
            ));
        }
        1 => statements.remove(0),
        n => {
            return Err(Rejection::new(
                RejectionKind::MultipleStatements,
                format!("only a single statement is allowed, got {n}"),
            )
            .at_opt(second_statement_start(sql)));
        }
    };
    if !matches!(statement, Statement::Query(_)) {
        let keyword = first_keyword(sql);
        return Err(Rejection::new(
            RejectionKind::NotAQuery,
            format!("only read-only queries (select, values) are allowed, got {keyword}"),
        ));
    }
    let mut checker = Checker::new(policy);
    if let ControlFlow::Break(rejection) = statement.visit(&mut checker) {
        return Err(rejection);
    }
    if needs_round_trip(sql) {
        check_round_trip(&statement, policy)?;
    }
    Ok(ValidatedQuery {
        statement,
        tables: checker.tables,
        allowed_schemas: policy.allowed_schemas.clone(),
        max_rows: policy.max_rows,
        session: None,
        original: None,
    })
}

/// Whether `sql` uses a literal form whose rendering by sqlparser may not
/// read back the same: a backslash (sqlparser prints `\'` inside a string
/// without doubling the quote, so PostgreSQL, with
/// `standard_conforming_strings = on`, ends the string there), dollar
/// quoting, or a prefixed literal (`E'…'`, `U&'…'`, `N'…'`, `X'…'`, `B'…'`,
/// `U&"…"`). Plain SQL skips the extra check.
fn needs_round_trip(sql: &str) -> bool {
    if sql.contains('\\') || sql.contains('$') {
        return true;
    }
    let bytes = sql.as_bytes();
    bytes
        .windows(2)
        .any(|w| (w[1] == b'\'' || w[1] == b'"') && (w[0].is_ascii_alphabetic() || w[0] == b'&'))
}

/// The SQL Quarry sends is rendered from the checked tree, so the rendering
/// must mean what was checked: it must parse back to one query whose own
/// rendering is the same text (a fixpoint), and that query must pass the
/// same checks. Refuses otherwise (e.g. `SELECT '\'' , pg_sleep(1) --'`,
/// whose rendering PostgreSQL would read as a call to `pg_sleep`).
fn check_round_trip(statement: &Statement, policy: &ValidationPolicy) -> Result<(), Rejection> {
    let ambiguous = || {
        Rejection::new(
            RejectionKind::Unsupported,
            "a string literal or quoted identifier cannot be rendered back unambiguously \
             (e.g. a backslash before a quote); write it another way",
        )
    };
    let rendered = statement.to_string();
    let dialect = PostgreSqlDialect {};
    let reparsed = Parser::parse_sql(&dialect, &rendered).map_err(|_| ambiguous())?;
    let [again] = reparsed.as_slice() else {
        return Err(ambiguous());
    };
    if again.to_string() != rendered || again != statement {
        return Err(ambiguous());
    }
    let mut checker = Checker::new(policy);
    if let ControlFlow::Break(rejection) = again.visit(&mut checker) {
        return Err(rejection);
    }
    Ok(())
}

fn parse_rejection(sql: &str, error: ParserError) -> Rejection {
    if let Some((lock, at)) = locking_clause_in_tokens(sql) {
        return Rejection::new(
            RejectionKind::LockingClause,
            format!("locking clause {lock} is not allowed"),
        )
        .at(at);
    }
    let text = match error {
        ParserError::RecursionLimitExceeded => {
            return Rejection::new(RejectionKind::Parse, "sql is nested too deeply");
        }
        ParserError::TokenizerError(text) | ParserError::ParserError(text) => text,
    };
    let (detail, position) = split_location(&text);
    Rejection {
        kind: RejectionKind::Parse,
        message: format!("sql syntax error: {detail}"),
        position,
    }
}

/// Split sqlparser's `"… at Line: 3, Column: 7"` suffix off a message.
fn split_location(text: &str) -> (&str, Option<(u64, u64)>) {
    let Some(at) = text.rfind(" at Line: ") else {
        return (text, None);
    };
    let tail = &text[at + " at Line: ".len()..];
    let Some((line, column)) = tail.split_once(", Column: ") else {
        return (text, None);
    };
    match (line.trim().parse(), column.trim().parse()) {
        (Ok(line), Ok(column)) => (&text[..at], Some((line, column))),
        _ => (text, None),
    }
}

/// Tokens of `sql` other than whitespace and comments; empty if it does not
/// tokenize. Only used on refusal paths.
fn significant_tokens(sql: &str) -> Vec<TokenWithSpan> {
    let dialect = PostgreSqlDialect {};
    Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .collect()
}

fn keyword(token: &TokenWithSpan) -> Option<Keyword> {
    if let Token::Word(word) = &token.token
        && word.quote_style.is_none()
    {
        Some(word.keyword)
    } else {
        None
    }
}

/// `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE` or `FOR KEY SHARE` in the
/// token stream, with the location of `FOR`.
fn locking_clause_in_tokens(sql: &str) -> Option<(&'static str, Location)> {
    let tokens = significant_tokens(sql);
    let words: Vec<Option<Keyword>> = tokens.iter().map(keyword).collect();
    for (i, word) in words.iter().enumerate() {
        if *word != Some(Keyword::FOR) {
            continue;
        }
        let next = |k: usize| words.get(i + k).copied().flatten();
        let lock = match (next(1), next(2), next(3)) {
            (Some(Keyword::UPDATE), _, _) => "for update",
            (Some(Keyword::SHARE), _, _) => "for share",
            (Some(Keyword::NO), Some(Keyword::KEY), Some(Keyword::UPDATE)) => "for no key update",
            (Some(Keyword::KEY), Some(Keyword::SHARE), _) => "for key share",
            _ => continue,
        };
        return Some((lock, tokens[i].span.start));
    }
    None
}

/// Where the second statement starts: the first token after a `;` that is
/// not itself a `;`.
fn second_statement_start(sql: &str) -> Option<Location> {
    let tokens = significant_tokens(sql);
    let semicolon = tokens.iter().position(|t| t.token == Token::SemiColon)?;
    tokens[semicolon..]
        .iter()
        .find(|t| t.token != Token::SemiColon)
        .map(|t| t.span.start)
}

/// First word of the text, lower case, for messages ("insert", "copy").
fn first_keyword(sql: &str) -> String {
    significant_tokens(sql)
        .first()
        .and_then(|t| {
            if let Token::Word(word) = &t.token {
                Some(word.value.to_lowercase())
            } else {
                None
            }
        })
        .unwrap_or_else(|| "another statement".into())
}

/// PostgreSQL's object identifier alias types (PostgreSQL 16 docs §8.19,
/// "Object Identifier Types"): a cast of text to one of them looks the name
/// up in a system catalog (`'quarry'::regnamespace::oid` tells whether a
/// schema exists), so with a schema restriction they are refused like the
/// catalogs themselves.
const CATALOG_LOOKUP_TYPES: &[&str] = &[
    "regclass",
    "regcollation",
    "regconfig",
    "regdictionary",
    "regnamespace",
    "regoper",
    "regoperator",
    "regproc",
    "regprocedure",
    "regrole",
    "regtype",
];

/// The object identifier alias type `data_type` is (or is an array of),
/// lower case; `None` for any other type.
fn catalog_lookup_type(data_type: &DataType) -> Option<String> {
    let (current, _) = array_element(data_type);
    if let DataType::Regclass = current {
        return Some("regclass".to_owned());
    }
    let DataType::Custom(name, _) = current else {
        return None;
    };
    let name = name_parts(name)?.last()?.clone();
    CATALOG_LOOKUP_TYPES
        .contains(&name.as_str())
        .then_some(name)
}

/// Extra nesting of a cast's type: `int[][]` is two `Array` levels deep.
fn cast_depth(expr: &Expr) -> usize {
    let Expr::Cast { data_type, .. } = expr else {
        return 0;
    };
    array_element(data_type).1
}

/// The element type under every `Array` level of `data_type`, and how many
/// levels there are (`int[][]` → `int`, 2).
fn array_element(data_type: &DataType) -> (&DataType, usize) {
    let mut depth = 0;
    let mut current = data_type;
    while let DataType::Array(
        ArrayElemTypeDef::SquareBracket(inner, _)
        | ArrayElemTypeDef::AngleBracket(inner)
        | ArrayElemTypeDef::Parenthesis(inner)
        | ArrayElemTypeDef::Qualified(inner, _),
    ) = current
    {
        depth += 1;
        current = inner;
    }
    (current, depth)
}

fn too_complex() -> Rejection {
    Rejection::new(
        RejectionKind::TooComplex,
        format!("query is nested too deeply (more than {MAX_DEPTH} levels)"),
    )
}

/// Apply `LIMIT cap` to `query` on its AST; `false` when the query's own
/// limit cannot be combined and the caller must wrap it instead.
fn limit_in_place(query: &mut Query, cap: u64) -> bool {
    if query.fetch.is_some() {
        return false;
    }
    let Some(cap_expr) = number_expr(cap) else {
        return false;
    };
    match &mut query.limit_clause {
        None => {
            query.limit_clause = Some(LimitClause::LimitOffset {
                limit: Some(cap_expr),
                offset: None,
                limit_by: Vec::new(),
            });
            true
        }
        Some(LimitClause::LimitOffset {
            limit, limit_by, ..
        }) if limit_by.is_empty() => match limit {
            None => {
                *limit = Some(cap_expr);
                true
            }
            Some(Expr::Value(value)) => match value.to_string().parse::<u64>() {
                Ok(existing) => {
                    if existing > cap {
                        *limit = Some(cap_expr);
                    }
                    true
                }
                Err(_) => false,
            },
            Some(_) => false,
        },
        Some(_) => false,
    }
}

/// A numeric literal expression, built through the parser so that it does not
/// depend on sqlparser's `bigdecimal` feature.
fn number_expr(n: u64) -> Option<Expr> {
    let dialect = PostgreSqlDialect {};
    Parser::new(&dialect)
        .try_with_sql(&n.to_string())
        .and_then(|mut parser| parser.parse_expr())
        .ok()
}

/// PostgreSQL identifier normalisation: unquoted names fold to lower case,
/// ASCII letters only (PostgreSQL 16 docs §4.1.1; in UTF-8 databases it does
/// not fold other letters — Unicode folding would turn the Kelvin sign into
/// `k` and let `pg_loc\u{212A}s` pass as a CTE name for `pg_locks`).
pub(crate) fn normalise(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// Identifiers of an object name, normalised; `None` if a part is not a plain
/// identifier (dialect-specific name functions).
pub(crate) fn name_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Some(normalise(ident)),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

/// Exact function names refused (compared on the last name part, lower case).
const DENIED_FUNCTIONS: &[&str] = &[
    "set_config",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_export_snapshot",
    "pg_notify",
    "pg_stat_file",
    "pg_current_logfile",
    "pg_log_backend_memory_contexts",
    "pg_import_system_collations",
    "pg_prewarm",
    "pg_stat_get_activity",
    "nextval",
    "setval",
    "currval",
    "lastval",
    "copy",
    "ts_stat",
    "ts_rewrite",
    "dblink",
];

/// Function name prefixes refused.
const DENIED_PREFIXES: &[&str] = &[
    "pg_sleep",
    "pg_read_",
    "pg_ls_",
    "pg_file_",
    "pg_stat_reset",
    "pg_advisory",
    "pg_try_advisory",
    "pg_backup_",
    "pg_wal_replay_",
    "pg_logical_",
    "pg_replication_",
    "pg_create_",
    "pg_drop_",
    "lo_",
    "dblink",
    "txid_",
    "query_to_xml",
    "cursor_to_xml",
    "table_to_xml",
    "schema_to_xml",
    "database_to_xml",
];

/// Whether a (lower-case) function name is on the deny-list.
pub fn is_denied_function(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    DENIED_FUNCTIONS.contains(&name.as_str())
        || DENIED_PREFIXES.iter().any(|p| name.starts_with(p))
        || (name.starts_with("pg_") && name.contains("xact"))
        || name.contains("replication_slot")
}

/// Whether a (lower-case, unqualified) function name is on the built-in
/// allowlist of side-effect-free functions (see the module docs).
pub fn is_allowed_function(name: &str) -> bool {
    functions::is_allowed_builtin(name)
}

/// All names on the built-in allowlist, sorted.
pub fn allowed_functions() -> &'static [&'static str] {
    functions::ALLOWED_FUNCTIONS
}

/// CTE names visible in one query's scope.
struct Scope {
    /// Address of the query owning the `WITH`; identifies it in post-visit.
    query: usize,
    recursive: bool,
    names: Vec<String>,
    /// Addresses of the CTE bodies, in declaration order.
    bodies: Vec<usize>,
    /// How many of `names` are visible at the current point of the walk.
    visible: usize,
}

fn address(query: &Query) -> usize {
    std::ptr::from_ref(query) as usize
}

struct Checker<'p> {
    policy: &'p ValidationPolicy,
    statements: usize,
    scopes: Vec<Scope>,
    tables: Vec<TableRef>,
    seen: HashSet<TableRef>,
    /// Current expression nesting.
    depth: usize,
}

impl<'p> Checker<'p> {
    fn new(policy: &'p ValidationPolicy) -> Self {
        Self {
            policy,
            statements: 0,
            scopes: Vec::new(),
            tables: Vec::new(),
            seen: HashSet::new(),
            depth: 0,
        }
    }

    fn is_cte(&self, name: &str) -> bool {
        self.scopes
            .iter()
            .rev()
            .any(|scope| scope.names[..scope.visible].iter().any(|n| n == name))
    }

    fn schema_allowed(&self, schema: &str) -> bool {
        match &self.policy.allowed_schemas {
            None => true,
            Some(allowed) => allowed.iter().any(|s| s == schema),
        }
    }

    fn check_function(&self, name: &ObjectName) -> ControlFlow<Rejection> {
        let at = name.span().start;
        let Some(parts) = name_parts(name) else {
            return ControlFlow::Break(
                Rejection::new(
                    RejectionKind::Unsupported,
                    format!("unsupported function name {name}"),
                )
                .at(at),
            );
        };
        let Some(last) = parts.last() else {
            return ControlFlow::Continue(());
        };
        if is_denied_function(last) {
            return ControlFlow::Break(
                Rejection::new(
                    RejectionKind::DeniedFunction,
                    format!("function {} is not allowed", parts.join(".")),
                )
                .at(at),
            );
        }
        let schema = (parts.len() >= 2).then(|| parts[parts.len() - 2].as_str());
        if let Some(schema) = schema
            && self.policy.allowed_schemas.is_some()
            && schema != "pg_catalog"
            && !self.schema_allowed(schema)
        {
            return ControlFlow::Break(
                Rejection::new(
                    RejectionKind::DeniedFunction,
                    format!(
                        "function {} is in schema {schema}, which is not allowed",
                        parts.join(".")
                    ),
                )
                .at(at),
            );
        }
        let builtin = matches!(schema, None | Some("pg_catalog")) && is_allowed_function(last);
        if builtin || self.extra_allowed(&parts) {
            return ControlFlow::Continue(());
        }
        ControlFlow::Break(
            Rejection::new(
                RejectionKind::DeniedFunction,
                format!(
                    "function {} is not on the allowlist; use built-in aggregate, math, string, \
                     date/time, json or array functions",
                    parts.join(".")
                ),
            )
            .at(at),
        )
    }

    /// Whether the policy's extra entries allow the call `parts`.
    fn extra_allowed(&self, parts: &[String]) -> bool {
        let Some(last) = parts.last() else {
            return false;
        };
        self.policy.extra_allowed_functions.iter().any(|entry| {
            if entry.contains('.') {
                entry.split('.').eq(parts.iter().map(String::as_str))
            } else {
                entry == last
            }
        })
    }

    fn check_relation(&mut self, name: &ObjectName) -> ControlFlow<Rejection> {
        let at = name.span().start;
        let Some(mut parts) = name_parts(name) else {
            return ControlFlow::Break(
                Rejection::new(
                    RejectionKind::Unsupported,
                    format!("unsupported table name {name}"),
                )
                .at(at),
            );
        };
        let Some(table) = parts.pop() else {
            return ControlFlow::Continue(());
        };
        let schema = parts.pop();
        self.record_relation(schema, table, at)
    }

    fn record_relation(
        &mut self,
        schema: Option<String>,
        table: String,
        at: Location,
    ) -> ControlFlow<Rejection> {
        match &schema {
            None if self.is_cte(&table) => return ControlFlow::Continue(()),
            None => {
                if self.policy.allowed_schemas.is_some() && table.starts_with("pg_") {
                    return ControlFlow::Break(
                        Rejection::new(
                            RejectionKind::SchemaNotAllowed,
                            format!(
                                "table {table} resolves to the system catalog, which is not allowed"
                            ),
                        )
                        .at(at),
                    );
                }
            }
            Some(schema) => {
                if !self.schema_allowed(schema) {
                    return ControlFlow::Break(
                        Rejection::new(
                            RejectionKind::SchemaNotAllowed,
                            format!(
                                "table {schema}.{table} is in schema {schema}, which is not allowed"
                            ),
                        )
                        .at(at),
                    );
                }
            }
        }
        let table = TableRef {
            schema,
            name: table,
        };
        if self.seen.insert(table.clone()) {
            self.tables.push(table);
        }
        ControlFlow::Continue(())
    }

    /// Checks on the set-expression tree directly under one query (nested
    /// queries are reached by the visitor itself). Iterative: `a UNION b
    /// UNION …` chains are as deep as they are long.
    fn check_set_expr(&mut self, body: &SetExpr) -> ControlFlow<Rejection> {
        let mut pending = vec![(body, 1usize)];
        while let Some((node, depth)) = pending.pop() {
            if self.depth + depth > MAX_DEPTH {
                return ControlFlow::Break(too_complex());
            }
            match node {
                SetExpr::SetOperation { left, right, .. } => {
                    pending.push((right, depth + 1));
                    pending.push((left, depth + 1));
                }
                SetExpr::Table(table) => {
                    if let Some(name) = &table.table_name {
                        self.record_relation(
                            table.schema_name.as_deref().map(normalise_str),
                            normalise_str(name),
                            Location { line: 0, column: 0 },
                        )?;
                    }
                }
                SetExpr::Insert(_)
                | SetExpr::Update(_)
                | SetExpr::Delete(_)
                | SetExpr::Merge(_) => {
                    return ControlFlow::Break(data_modifying());
                }
                SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) => {}
            }
        }
        ControlFlow::Continue(())
    }
}

/// Normalise a name sqlparser kept only as text (the `TABLE name` command).
fn normalise_str(name: &str) -> String {
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => name.to_ascii_lowercase(),
    }
}

fn data_modifying() -> Rejection {
    Rejection::new(
        RejectionKind::DataModifyingCte,
        "data-modifying statements (insert, update, delete, merge) are not allowed inside a query",
    )
}

impl Visitor for Checker<'_> {
    type Break = Rejection;

    fn pre_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<Rejection> {
        self.statements += 1;
        if self.statements > 1 {
            // a statement nested in the query: INSERT/UPDATE/DELETE/MERGE as
            // the body of a CTE or subquery
            return ControlFlow::Break(data_modifying());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Rejection> {
        let here = address(query);
        if let Some(scope) = self.scopes.last_mut()
            && let Some(i) = scope.bodies.iter().position(|&b| b == here)
        {
            scope.visible = if scope.recursive {
                scope.names.len()
            } else {
                i
            };
        }
        if let Some(lock) = query.locks.first() {
            return ControlFlow::Break(Rejection::new(
                RejectionKind::LockingClause,
                format!("locking clause {lock} is not allowed"),
            ));
        }
        if query.for_clause.is_some()
            || !query.pipe_operators.is_empty()
            || query.settings.is_some()
            || query.format_clause.is_some()
        {
            return ControlFlow::Break(Rejection::new(
                RejectionKind::Unsupported,
                "clause is not supported by postgresql",
            ));
        }
        self.check_set_expr(&query.body)?;
        let (recursive, names, bodies) = match &query.with {
            Some(with) => (
                with.recursive,
                with.cte_tables
                    .iter()
                    .map(|cte| normalise(&cte.alias.name))
                    .collect::<Vec<_>>(),
                with.cte_tables
                    .iter()
                    .map(|cte| address(&cte.query))
                    .collect(),
            ),
            None => (false, Vec::new(), Vec::new()),
        };
        let visible = if recursive { names.len() } else { 0 };
        self.scopes.push(Scope {
            query: here,
            recursive,
            names,
            bodies,
            visible,
        });
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<Rejection> {
        let here = address(query);
        if self.scopes.last().is_some_and(|s| s.query == here) {
            self.scopes.pop();
        }
        if let Some(scope) = self.scopes.last_mut()
            && !scope.recursive
            && let Some(i) = scope.bodies.iter().position(|&b| b == here)
        {
            scope.visible = i + 1;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Rejection> {
        if select.into.is_some() {
            return ControlFlow::Break(
                Rejection::new(
                    RejectionKind::SelectInto,
                    "select into creates a table and is not allowed",
                )
                .at(select.select_token.0.span.start),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Rejection> {
        match factor {
            TableFactor::Table {
                name, args: None, ..
            } => self.check_relation(name),
            // a set-returning function in FROM: `FROM generate_series(1, 3)`
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.check_function(name),
            // Every other kind is named, so that a kind a later sqlparser
            // adds must be looked at here; their parts are walked by the
            // visitor (derived tables, joins, expressions).
            TableFactor::Derived { .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::UNNEST { .. }
            | TableFactor::JsonTable { .. }
            | TableFactor::OpenJsonTable { .. }
            | TableFactor::NestedJoin { .. }
            | TableFactor::Pivot { .. }
            | TableFactor::Unpivot { .. }
            | TableFactor::UnpivotExpr { .. }
            | TableFactor::MatchRecognize { .. }
            | TableFactor::XmlTable { .. }
            | TableFactor::SemanticView { .. } => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Rejection> {
        self.depth += 1 + cast_depth(expr);
        if self.depth > MAX_DEPTH {
            return ControlFlow::Break(too_complex());
        }
        if let Expr::Function(function) = expr {
            self.check_function(&function.name)?;
            check_string_growth(function)?;
        }
        if let Expr::Cast { data_type, .. } | Expr::TypedString(TypedString { data_type, .. }) =
            expr
            && !self.schema_allowed("pg_catalog")
            && let Some(name) = catalog_lookup_type(data_type)
        {
            return ControlFlow::Break(Rejection::new(
                RejectionKind::SchemaNotAllowed,
                format!(
                    "a cast to {name} looks names up in the system catalogs, which are not allowed"
                ),
            ));
        }
        if let Expr::Identifier(ident) = expr
            && ident.quote_style.is_none()
            && SESSION_IDENTIFIERS.contains(&ident.value.to_ascii_lowercase().as_str())
        {
            return ControlFlow::Break(Rejection::new(
                RejectionKind::DeniedFunction,
                format!(
                    "{} is a session function (it names the database role or schema), not data",
                    ident.value.to_ascii_lowercase()
                ),
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Rejection> {
        self.depth = self.depth.saturating_sub(1 + cast_depth(expr));
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests;

/// Most bytes a `repeat`, `lpad` or `rpad` call may be known to build from
/// literals: 10 MB. PostgreSQL allocates such a string whole (up to 1 GB)
/// whatever `work_mem` says, so `length(repeat('x', 1000000000))` is refused
/// here rather than left to the statement timeout.
pub const MAX_BUILT_STRING_BYTES: u64 = 10 * 1024 * 1024;

/// Bytes assumed for a string argument that is not a literal (a column, an
/// expression) when the count is a literal.
const UNKNOWN_STRING_BYTES: u64 = 1_000;

/// The unnamed argument expressions of `function`, if it has a plain list.
fn plain_args(function: &sqlparser::ast::Function) -> Option<Vec<&Expr>> {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    list.args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Some(expr),
            FunctionArg::Unnamed(_) | FunctionArg::Named { .. } | FunctionArg::ExprNamed { .. } => {
                None
            }
        })
        .collect()
}

/// An integer literal's value (`1000`, `(1000)`).
fn integer_literal(expr: &Expr) -> Option<u64> {
    if let Expr::Nested(inner) = expr {
        return integer_literal(inner);
    }
    if let Expr::Value(v) = expr
        && let sqlparser::ast::Value::Number(n, _) = &v.value
    {
        return n.to_string().parse().ok();
    }
    None
}

/// The most bytes `expr` is known to build from literals, for the string
/// builders `repeat(s, n)`, `lpad(s, n [, fill])` and `rpad(s, n [, fill])`
/// (PostgreSQL 16 docs §9.4); `None` when the size depends on data.
fn built_string_bytes(expr: &Expr) -> Option<u64> {
    if let Expr::Nested(inner) = expr {
        return built_string_bytes(inner);
    }
    if let Expr::Function(function) = expr {
        return function_bytes(function);
    }
    if let Expr::Value(v) = expr
        && let sqlparser::ast::Value::SingleQuotedString(s) = &v.value
    {
        return Some(s.len() as u64);
    }
    None
}

/// [`built_string_bytes`] of a function call.
fn function_bytes(function: &sqlparser::ast::Function) -> Option<u64> {
    let name = function
        .name
        .0
        .last()?
        .as_ident()?
        .value
        .to_ascii_lowercase();
    if !matches!(name.as_str(), "repeat" | "lpad" | "rpad") {
        return None;
    }
    let args = plain_args(function)?;
    match (name.as_str(), args.as_slice()) {
        ("repeat", [s, n]) => {
            let count = integer_literal(n)?;
            let each = built_string_bytes(s).unwrap_or(UNKNOWN_STRING_BYTES);
            Some(each.saturating_mul(count))
        }
        // the length is in characters: at most 4 bytes each (UTF-8)
        ("lpad" | "rpad", [_, n, ..]) => Some(integer_literal(n)?.saturating_mul(4)),
        _ => None,
    }
}

/// Refuses a `repeat`, `lpad` or `rpad` call known to build a string over
/// [`MAX_BUILT_STRING_BYTES`].
fn check_string_growth(function: &sqlparser::ast::Function) -> ControlFlow<Rejection> {
    match function_bytes(function) {
        Some(bytes) if bytes > MAX_BUILT_STRING_BYTES => ControlFlow::Break(Rejection::new(
            RejectionKind::TooComplex,
            format!(
                "{} builds a string of up to {bytes} bytes; the limit is {MAX_BUILT_STRING_BYTES}",
                function.name
            ),
        )),
        _ => ControlFlow::Continue(()),
    }
}
