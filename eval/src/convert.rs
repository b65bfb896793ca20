//! Gold SQL from Spider's SQLite flavour to PostgreSQL, and the tables and
//! columns a gold query reads.
//!
//! [`sqlite_to_postgres`] parses with sqlparser's SQLite dialect, rewrites the
//! AST and prints it; it does not touch text with regular expressions. The
//! rules, each reported as a [`Rule`] when it fired:
//!
//! | rule | SQLite | PostgreSQL |
//! | --- | --- | --- |
//! | [`Rule::DoubleQuotedString`] | `name = "Alice"` (a double-quoted token that names no column is a string) | `name = 'Alice'` |
//! | [`Rule::LikeToIlike`] | `LIKE` (case-insensitive for ASCII) | `ILIKE` |
//! | [`Rule::QuotedIdentifier`] | `` `Name` ``, `[Name]`, `"Name"` naming a column | `"name"` (tables are created lower-case) |
//! | [`Rule::JoinWithoutOn`] | `a JOIN b` with no `ON`/`USING` (a cross join) | `a CROSS JOIN b` |
//! | [`Rule::LimitComma`] | `LIMIT 5, 10` | `LIMIT 10 OFFSET 5` |
//!
//! Unquoted identifiers are left alone: PostgreSQL folds them to lower case,
//! which is how [`super::dataset`] creates them. Schema qualification is not
//! done here: the evaluation sets `search_path` to the database's schema, as
//! the executor does for a validated query.
//!
//! What is not converted: SQLite's bare columns beside aggregates
//! (`SELECT name, max(age) FROM t`) and columns outside `GROUP BY` that are
//! not functionally dependent on it have no PostgreSQL equivalent with the
//! same meaning (SQLite picks the row of the max, or an arbitrary row);
//! PostgreSQL refuses them and the evaluation counts them as gold not
//! executable on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Ident, JoinConstraint, JoinOperator, LimitClause, ObjectName, Offset, OffsetRows, Query,
    Select, SetExpr, Statement, TableFactor, TableWithJoins, Value, Visit, VisitMut, Visitor,
    VisitorMut,
};
use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

/// A conversion rule that changed a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// A double-quoted token that names no column became a string literal.
    DoubleQuotedString,
    /// `LIKE` became `ILIKE`.
    LikeToIlike,
    /// A quoted identifier was lower-cased and double-quoted.
    QuotedIdentifier,
    /// `JOIN` without a condition became `CROSS JOIN`.
    JoinWithoutOn,
    /// `LIMIT offset, count` became `LIMIT count OFFSET offset`.
    LimitComma,
}

impl Rule {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::DoubleQuotedString => "double_quoted_string",
            Rule::LikeToIlike => "like_to_ilike",
            Rule::QuotedIdentifier => "quoted_identifier",
            Rule::JoinWithoutOn => "join_without_on",
            Rule::LimitComma => "limit_comma",
        }
    }
}

/// Converted SQL and the rules that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    /// PostgreSQL text.
    pub sql: String,
    /// Rules applied (each once, in [`Rule`] order).
    pub rules: BTreeSet<Rule>,
}

/// Converts one SQLite gold query to PostgreSQL. `columns` holds the
/// lower-cased names of every column of the query's database: a
/// double-quoted token is an identifier when it names one of them (SQLite's
/// own rule: a double-quoted string is an identifier if it can be one), and a
/// string literal otherwise.
///
/// # Errors
/// The text does not parse as SQLite or is not exactly one statement
/// (message from sqlparser).
pub fn sqlite_to_postgres(sql: &str, columns: &HashSet<String>) -> Result<Conversion, String> {
    let mut statements = Parser::parse_sql(&SQLiteDialect {}, sql).map_err(|e| e.to_string())?;
    if statements.len() != 1 {
        return Err(format!(
            "expected one statement, found {}",
            statements.len()
        ));
    }
    let mut statement = statements.remove(0);
    let mut converter = Converter {
        columns,
        rules: BTreeSet::new(),
    };
    let _ = VisitMut::visit(&mut statement, &mut converter);
    Ok(Conversion {
        sql: statement.to_string(),
        rules: converter.rules,
    })
}

struct Converter<'a> {
    columns: &'a HashSet<String>,
    rules: BTreeSet<Rule>,
}

impl Converter<'_> {
    fn fix_joins(&mut self, from: &mut [TableWithJoins]) {
        for table in from {
            for join in &mut table.joins {
                if matches!(
                    join.join_operator,
                    JoinOperator::Join(JoinConstraint::None)
                        | JoinOperator::Inner(JoinConstraint::None)
                ) {
                    join.join_operator = JoinOperator::CrossJoin(JoinConstraint::None);
                    self.rules.insert(Rule::JoinWithoutOn);
                }
            }
        }
    }
}

impl VisitorMut for Converter<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let Some(LimitClause::OffsetCommaLimit { offset, limit }) = &query.limit_clause {
            query.limit_clause = Some(LimitClause::LimitOffset {
                limit: Some(limit.clone()),
                offset: Some(Offset {
                    value: offset.clone(),
                    rows: OffsetRows::None,
                }),
                limit_by: Vec::new(),
            });
            self.rules.insert(Rule::LimitComma);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        self.fix_joins(&mut select.from);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::NestedJoin {
            table_with_joins, ..
        } = factor
        {
            self.fix_joins(std::slice::from_mut(table_with_joins.as_mut()));
        }
        ControlFlow::Continue(())
    }

    #[allow(
        clippy::wildcard_enum_match_arm,
        reason = "sqlparser's AST has dozens of kinds: only those named are rewritten or read, the visitor walks the rest"
    )]
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            // runs before the identifier itself is visited (and re-quoted)
            Expr::Identifier(ident)
                if ident.quote_style == Some('"')
                    && !self.columns.contains(&ident.value.to_lowercase()) =>
            {
                let text = std::mem::take(&mut ident.value);
                *expr = Expr::Value(Value::SingleQuotedString(text).into());
                self.rules.insert(Rule::DoubleQuotedString);
            }
            Expr::Like {
                negated,
                any,
                expr: inner,
                pattern,
                escape_char,
            } => {
                *expr = Expr::ILike {
                    negated: *negated,
                    any: *any,
                    expr: inner.clone(),
                    pattern: pattern.clone(),
                    escape_char: escape_char.clone(),
                };
                self.rules.insert(Rule::LikeToIlike);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_ident(&mut self, ident: &mut Ident) -> ControlFlow<()> {
        if matches!(ident.quote_style, Some('"' | '`' | '[')) {
            ident.value = ident.value.to_lowercase();
            ident.quote_style = Some('"');
            self.rules.insert(Rule::QuotedIdentifier);
        }
        ControlFlow::Continue(())
    }
}

/// The tables and columns a query reads, lower-cased, as named in its
/// database (not schema-qualified).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoldRefs {
    /// Tables referenced anywhere in the query (subqueries included).
    pub tables: BTreeSet<String>,
    /// `(table, column)` for every column reference that resolves to a table
    /// of the database: qualified references through their table or alias,
    /// unqualified ones through the tables in scope (innermost query first,
    /// then enclosing ones, as SQL resolves correlated references). `*` and
    /// `t.*` name no column; references that resolve to nothing (output
    /// aliases, derived tables' columns) are left out.
    pub columns: BTreeSet<(String, String)>,
}

/// What an alias in a `FROM` clause stands for.
#[derive(Debug, Clone)]
enum Source {
    Table(String),
    Derived,
}

/// Parses `sql` (PostgreSQL dialect) and resolves its table and column
/// references against `schema` (lower-case table → lower-case columns).
///
/// # Errors
/// The text does not parse.
pub fn gold_refs(sql: &str, schema: &BTreeMap<String, Vec<String>>) -> Result<GoldRefs, String> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| e.to_string())?;
    let mut collector = RefCollector {
        schema,
        scopes: Vec::new(),
        refs: GoldRefs::default(),
    };
    for statement in &statements {
        let _ = Visit::visit(statement, &mut collector);
    }
    Ok(collector.refs)
}

struct RefCollector<'a> {
    schema: &'a BTreeMap<String, Vec<String>>,
    scopes: Vec<Vec<(String, Source)>>,
    refs: GoldRefs,
}

fn last_name(name: &ObjectName) -> Option<String> {
    name.0
        .last()
        .and_then(|part| part.as_ident())
        .map(|ident| ident.value.to_lowercase())
}

#[allow(
    clippy::wildcard_enum_match_arm,
    reason = "sqlparser's AST has dozens of kinds: only those named are rewritten or read, the visitor walks the rest"
)]
fn collect_factor(factor: &TableFactor, scope: &mut Vec<(String, Source)>) {
    match factor {
        TableFactor::Table { name, alias, .. } => {
            if let Some(table) = last_name(name) {
                let key = alias
                    .as_ref()
                    .map_or_else(|| table.clone(), |a| a.name.value.to_lowercase());
                scope.push((key, Source::Table(table)));
            }
        }
        TableFactor::Derived {
            alias: Some(alias), ..
        } => scope.push((alias.name.value.to_lowercase(), Source::Derived)),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => collect_from(std::slice::from_ref(table_with_joins.as_ref()), scope),
        _ => {}
    }
}

fn collect_from(from: &[TableWithJoins], scope: &mut Vec<(String, Source)>) {
    for table in from {
        collect_factor(&table.relation, scope);
        for join in &table.joins {
            collect_factor(&join.relation, scope);
        }
    }
}

fn select_scope(select: &Select) -> Vec<(String, Source)> {
    let mut scope = Vec::new();
    collect_from(&select.from, &mut scope);
    scope
}

impl RefCollector<'_> {
    fn has_column(&self, table: &str, column: &str) -> bool {
        self.schema
            .get(table)
            .is_some_and(|columns| columns.iter().any(|c| c == column))
    }

    fn resolve_unqualified(&self, column: &str) -> Option<String> {
        for scope in self.scopes.iter().rev() {
            for (_, source) in scope {
                if let Source::Table(table) = source
                    && self.has_column(table, column)
                {
                    return Some(table.clone());
                }
            }
        }
        None
    }

    fn resolve_qualifier(&self, qualifier: &str) -> Option<&Source> {
        self.scopes
            .iter()
            .rev()
            .flat_map(|scope| scope.iter())
            .find(|(key, _)| key == qualifier)
            .map(|(_, source)| source)
    }
}

impl Visitor for RefCollector<'_> {
    type Break = ();

    #[allow(
        clippy::wildcard_enum_match_arm,
        reason = "sqlparser's AST has dozens of kinds: only those named are rewritten or read, the visitor walks the rest"
    )]
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        // the query's ORDER BY sees the FROM clause of its body
        let scope = match query.body.as_ref() {
            SetExpr::Select(select) => select_scope(select),
            _ => Vec::new(),
        };
        self.scopes.push(scope);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.scopes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        self.scopes.push(select_scope(select));
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, _select: &Select) -> ControlFlow<()> {
        self.scopes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if let Some(table) = last_name(relation)
            && self.schema.contains_key(&table)
        {
            self.refs.tables.insert(table);
        }
        ControlFlow::Continue(())
    }

    #[allow(
        clippy::wildcard_enum_match_arm,
        reason = "sqlparser's AST has dozens of kinds: only those named are rewritten or read, the visitor walks the rest"
    )]
    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(ident) => {
                let column = ident.value.to_lowercase();
                if let Some(table) = self.resolve_unqualified(&column) {
                    self.refs.columns.insert((table, column));
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let column = parts[parts.len() - 1].value.to_lowercase();
                let qualifier = parts[parts.len() - 2].value.to_lowercase();
                if let Some(Source::Table(table)) = self.resolve_qualifier(&qualifier) {
                    if self.has_column(table, &column) {
                        let table = table.clone();
                        self.refs.columns.insert((table, column));
                    }
                } else if self.has_column(&qualifier, &column) {
                    // a table named directly, outside any scope we track
                    self.refs.columns.insert((qualifier, column));
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Whether the outermost query of `sql` (PostgreSQL dialect) has an
/// `ORDER BY`, so that row order is part of its result.
pub fn is_ordered(sql: &str) -> bool {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => statements
            .iter()
            .any(|s| matches!(s, Statement::Query(query) if query.order_by.is_some())),
        Err(_) => false,
    }
}
