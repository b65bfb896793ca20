//! Governance: a validated query checked against the caller's policy and
//! rewritten so that it can only see what the policy shows.
//!
//! [`govern`] runs after [`crate::validate`] (which already refused writes,
//! catalog access and functions off the allowlist) with the catalog of the
//! configured schemas and the caller's [`Grant`]:
//!
//! 1. **Tables.** Every table the query reads must be granted; an
//!    unqualified name is resolved against the allowed schemas and refused
//!    when it exists in several (the candidates are listed) or when a CTE of
//!    the query shadows a real table. Refusals are
//!    [`RejectionKind::Forbidden`] (`PERMISSION_DENIED`) naming the object.
//! 2. **Columns.** A reference to a column no role of the caller shows is
//!    refused naming it; `alias.name` where `name` is not a column (PostgreSQL
//!    would call the function `name` on the row: attribute notation, docs
//!    §8.16.5) is refused as a function call.
//! 3. **Rewrite.** Each reference to a table with hidden columns, masks or a
//!    row filter becomes a derived table `(SELECT <shown columns, masked>
//!    FROM schema.table WHERE <filter>) AS alias`, so every predicate, join,
//!    grouping, ordering and aggregate of the query — `SELECT *` included —
//!    sees only masked values of the rows the caller may see; hidden
//!    columns do not exist for it (ARCHITECTURE.md, "Validate → rewrite →
//!    execute").
//!
//! The governed query also carries the caller's session (tenant, subject,
//! roles, database role), which the executor sets in the transaction for
//! PostgreSQL's own row-level security.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use quarry_auth::{Grant, Mask, TableView};
use quarry_db::quote_ident;
use sqlparser::ast::{
    Expr, Ident, Query, SelectItem, SetExpr, Statement, TableAlias, TableFactor, Visit, VisitMut,
    Visitor, VisitorMut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::TableInfo;
use crate::validate::{
    QuerySession, Rejection, RejectionKind, ValidatedQuery, name_parts, normalise,
};

#[cfg(test)]
mod tests;

/// Checks `query` against `grant` and rewrites it; see the module docs.
/// `catalog` holds the tables of `schemas` (the configured schemas, in
/// `search_path` order). An unrestricted grant (operator work) returns the
/// query unchanged.
///
/// # Errors
/// A [`Rejection`]: [`RejectionKind::Forbidden`] for a table or column the
/// grant does not show, [`RejectionKind::Ambiguous`] for an unqualified name
/// in several schemas or shadowed by a CTE, [`RejectionKind::DeniedFunction`]
/// for attribute-notation calls, [`RejectionKind::Unsupported`] for a
/// `TABLE name` query over a governed table.
pub fn govern(
    query: ValidatedQuery,
    catalog: &[TableInfo],
    schemas: &[String],
    grant: &Grant,
) -> Result<ValidatedQuery, Rejection> {
    if grant.is_unrestricted() {
        return Ok(query);
    }
    let mut facts = Facts::default();
    let _ = query.statement().visit(&mut facts);
    let resolver = Resolver {
        catalog,
        schemas,
        grant,
        ctes: &facts.ctes,
    };

    // 1. tables: every one the validator saw, TABLE queries included
    let mut bound: HashMap<String, Vec<&TableInfo>> = HashMap::new();
    let mut referenced: Vec<&TableInfo> = Vec::new();
    for table in query.tables() {
        let Some(info) = resolver.resolve(table.schema.as_deref(), &table.name)? else {
            continue;
        };
        if !referenced.iter().any(|t| std::ptr::eq(*t, info)) {
            referenced.push(info);
        }
    }
    for (schema, name, alias) in &facts.relations {
        if let Some(info) = resolver.resolve(schema.as_deref(), name)? {
            let key = alias.clone().unwrap_or_else(|| name.clone());
            bound.entry(key).or_default().push(info);
            if let Some(schema) = schema {
                bound
                    .entry(format!("{schema}.{name}"))
                    .or_default()
                    .push(info);
            }
        }
    }
    let view = |t: &TableInfo| grant.table(&t.schema, &t.name);
    if facts.table_queries {
        for info in &referenced {
            if view(info).is_some_and(|v| !plain(&v, info)) {
                return Err(Rejection::new(
                    RejectionKind::Unsupported,
                    format!(
                        "write SELECT … FROM {} instead of TABLE {}",
                        info.qualified_name(),
                        info.name
                    ),
                ));
            }
        }
    }

    // 2. columns
    let all_columns: HashSet<&str> = referenced
        .iter()
        .flat_map(|t| t.columns.iter().map(|c| c.name.as_str()))
        .collect();
    let shown_somewhere = |column: &str| {
        referenced
            .iter()
            .any(|t| t.has_column(column) && view(t).is_some_and(|v| v.shows(column)))
    };
    let hidden = |column: &str| -> Result<(), Rejection> {
        if facts.output_names.contains(column) || shown_somewhere(column) {
            return Ok(());
        }
        match referenced.iter().find(|t| t.has_column(column)) {
            Some(t) => Err(Rejection::new(
                RejectionKind::Forbidden,
                format!(
                    "column {}.{column} is not available to your roles",
                    t.qualified_name()
                ),
            )),
            None => Ok(()),
        }
    };
    for column in &facts.identifiers {
        hidden(column)?;
    }
    for (qualifier, column) in &facts.qualified {
        hidden(column)?;
        let known = match bound.get(qualifier) {
            Some(tables) => tables.iter().any(|t| t.has_column(column)),
            None => all_columns.contains(column.as_str()),
        };
        if !known && !facts.output_names.contains(column) {
            return Err(attribute_call(qualifier, column));
        }
    }
    for field in &facts.fields {
        if !all_columns.contains(field.as_str()) && !facts.output_names.contains(field) {
            return Err(attribute_call("(…)", field));
        }
    }

    // 3. rewrite
    let mut statement = query.statement().clone();
    // unaliased `schema.table` references that become derived tables named
    // `table`: their `schema.table.column` references become `table.column`
    let mut rewritten = HashSet::new();
    for (schema, name, alias) in &facts.relations {
        if let (Some(schema), None) = (schema, alias)
            && let Some(info) = resolver.resolve(Some(schema), name)?
            && view(info).is_some_and(|v| !plain(&v, info))
        {
            rewritten.insert(format!("{schema}.{name}"));
        }
    }
    let mut rewriter = Rewriter {
        resolver: &resolver,
        rewritten,
        error: None,
    };
    let _ = VisitMut::visit(&mut statement, &mut rewriter);
    if let Some(error) = rewriter.error {
        return Err(error);
    }
    // result columns that carry personal data: a PII-tagged column of a
    // table the query reads, or an alias of an expression using one
    let pii: HashSet<String> = referenced
        .iter()
        .filter_map(|t| view(t).map(|v| (t, v)))
        .flat_map(|(t, v)| {
            t.columns
                .iter()
                .filter(move |c| v.is_pii(&c.name))
                .map(|c| c.name.clone())
        })
        .collect();
    let mut pii_columns: Vec<String> = pii.iter().cloned().collect();
    for (alias, names) in &facts.aliased {
        if !names.is_disjoint(&pii) {
            pii_columns.push(alias.clone());
        }
    }
    pii_columns.sort();
    pii_columns.dedup();
    let session = QuerySession {
        tenant: grant.tenant().to_owned(),
        subject: grant.subject().to_owned(),
        roles: grant.roles().into_iter().map(str::to_owned).collect(),
        db_role: grant.db_role().map(str::to_owned),
        pii_columns,
        hash_salt: grant.hash_salt().to_owned(),
    };
    Ok(query.governed(statement, session))
}

fn attribute_call(qualifier: &str, name: &str) -> Rejection {
    Rejection::new(
        RejectionKind::DeniedFunction,
        format!(
            "{qualifier}.{name}: {name} is not a column there, and calling a function in \
             attribute notation is not allowed"
        ),
    )
}

/// Whether `info` can be read as it is under `view`.
fn plain(view: &TableView<'_>, info: &TableInfo) -> bool {
    view.is_plain(info.columns.iter().map(|c| c.name.as_str()))
}

impl TableInfo {
    fn has_column(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c.name == column)
    }
}

struct Resolver<'a> {
    catalog: &'a [TableInfo],
    schemas: &'a [String],
    grant: &'a Grant,
    ctes: &'a HashSet<String>,
}

impl<'a> Resolver<'a> {
    /// The catalog table `schema.name` (or unqualified `name`) refers to,
    /// `None` for a CTE; refused when not granted, ambiguous or unknown.
    fn resolve(
        &self,
        schema: Option<&str>,
        name: &str,
    ) -> Result<Option<&'a TableInfo>, Rejection> {
        let candidates: Vec<&'a TableInfo> = match schema {
            Some(schema) => self
                .catalog
                .iter()
                .filter(|t| t.schema == schema && t.name == name)
                .collect(),
            None => self
                .schemas
                .iter()
                .flat_map(|s| {
                    self.catalog
                        .iter()
                        .filter(move |t| &t.schema == s && t.name == name)
                })
                .collect(),
        };
        if schema.is_none() && self.ctes.contains(name) {
            return match candidates.first() {
                None => Ok(None),
                Some(t) => Err(Rejection::new(
                    RejectionKind::Ambiguous,
                    format!(
                        "the query's CTE {name} has the name of table {}; rename the CTE",
                        t.qualified_name()
                    ),
                )),
            };
        }
        let info = match candidates.as_slice() {
            [one] => *one,
            [] => {
                let shown = schema.map_or_else(|| name.to_owned(), |s| format!("{s}.{name}"));
                return Err(Rejection::new(
                    RejectionKind::Forbidden,
                    format!("table {shown} is not available to your roles"),
                ));
            }
            several => {
                let names: Vec<String> = several.iter().map(|t| t.qualified_name()).collect();
                return Err(Rejection::new(
                    RejectionKind::Ambiguous,
                    format!(
                        "table {name} is ambiguous: it exists as {}; qualify it with its schema",
                        names.join(" and ")
                    ),
                ));
            }
        };
        if self.grant.table(&info.schema, &info.name).is_none() {
            return Err(Rejection::new(
                RejectionKind::Forbidden,
                format!(
                    "table {} is not available to your roles",
                    info.qualified_name()
                ),
            ));
        }
        Ok(Some(info))
    }
}

/// What the rewrite needs to know about the query, read before it.
#[derive(Default)]
struct Facts {
    ctes: HashSet<String>,
    /// `(schema, name, alias)` of each table factor naming a relation.
    relations: Vec<(Option<String>, String, Option<String>)>,
    /// Names the query itself gives to columns: select-list and CTE/table
    /// alias columns, and unaliased function calls' default names.
    output_names: HashSet<String>,
    identifiers: HashSet<String>,
    /// `(qualifier, column)`: `a.col` as `("a", "col")`, `s.t.col` as
    /// `("s.t", "col")`.
    qualified: HashSet<(String, String)>,
    /// Field names of `(expr).field`.
    fields: HashSet<String>,
    /// Whether a `TABLE name` query appears.
    table_queries: bool,
    /// Select-list aliases and the column names their expressions use.
    aliased: Vec<(String, HashSet<String>)>,
}

/// Column names an expression uses (the last part of each identifier).
#[derive(Default)]
struct Names(HashSet<String>);

impl Visitor for Names {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Identifier(ident) = expr {
            self.0.insert(normalise(ident));
        } else if let Expr::CompoundIdentifier(parts) = expr
            && let Some(last) = parts.last()
        {
            self.0.insert(normalise(last));
        }
        ControlFlow::Continue(())
    }
}

fn alias_names(alias: &TableAlias, out: &mut HashSet<String>) {
    out.extend(alias.columns.iter().map(|c| normalise(&c.name)));
}

impl Visitor for Facts {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(normalise(&cte.alias.name));
                alias_names(&cte.alias, &mut self.output_names);
            }
        }
        let mut pending = vec![query.body.as_ref()];
        while let Some(body) = pending.pop() {
            match body {
                SetExpr::SetOperation { left, right, .. } => {
                    pending.push(left);
                    pending.push(right);
                }
                SetExpr::Table(_) => self.table_queries = true,
                SetExpr::Select(select) => {
                    for item in &select.projection {
                        match item {
                            SelectItem::ExprWithAlias { alias, expr } => {
                                self.output_names.insert(normalise(alias));
                                let mut names = Names::default();
                                let _ = expr.visit(&mut names);
                                self.aliased.push((normalise(alias), names.0));
                            }
                            SelectItem::UnnamedExpr(Expr::Function(f)) => {
                                if let Some(last) =
                                    name_parts(&f.name).and_then(|p| p.last().cloned())
                                {
                                    self.output_names.insert(last);
                                }
                            }
                            SelectItem::ExprWithAliases { aliases, .. } => {
                                self.output_names.extend(aliases.iter().map(normalise));
                            }
                            SelectItem::UnnamedExpr(_)
                            | SelectItem::QualifiedWildcard(..)
                            | SelectItem::Wildcard(_) => {}
                        }
                    }
                }
                SetExpr::Query(_)
                | SetExpr::Values(_)
                | SetExpr::Insert(_)
                | SetExpr::Update(_)
                | SetExpr::Delete(_)
                | SetExpr::Merge(_) => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
            && let Some(mut parts) = name_parts(name)
            && let Some(table) = parts.pop()
        {
            self.relations.push((
                parts.pop(),
                table,
                alias.as_ref().map(|a| normalise(&a.name)),
            ));
        }
        // every kind of table factor that can carry column aliases
        if let TableFactor::Table {
            alias: Some(alias), ..
        }
        | TableFactor::Derived {
            alias: Some(alias), ..
        }
        | TableFactor::Function {
            alias: Some(alias), ..
        }
        | TableFactor::UNNEST {
            alias: Some(alias), ..
        }
        | TableFactor::TableFunction {
            alias: Some(alias), ..
        }
        | TableFactor::NestedJoin {
            alias: Some(alias), ..
        } = factor
        {
            alias_names(alias, &mut self.output_names);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Identifier(ident) = expr {
            self.identifiers.insert(normalise(ident));
        } else if let Expr::CompoundIdentifier(parts) = expr
            && let Some((column, qualifier)) = parts.split_last()
            && !qualifier.is_empty()
        {
            let qualifier: Vec<String> = qualifier.iter().map(normalise).collect();
            self.qualified
                .insert((qualifier.join("."), normalise(column)));
        } else if let Expr::CompoundFieldAccess { access_chain, .. } = expr {
            for access in access_chain {
                if let sqlparser::ast::AccessExpr::Dot(Expr::Identifier(field)) = access {
                    self.fields.insert(normalise(field));
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Replaces each governed table factor by its derived table.
struct Rewriter<'r, 'a> {
    resolver: &'r Resolver<'a>,
    /// `schema.table` names rewritten without an alias (their 3-part
    /// column references are shortened to `table.column`), known before
    /// the walk, which reaches the select list before `FROM`.
    rewritten: HashSet<String>,
    error: Option<Rejection>,
}

impl VisitorMut for Rewriter<'_, '_> {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let Some(mut parts) = name_parts(name) else {
            return ControlFlow::Continue(());
        };
        let Some(table) = parts.pop() else {
            return ControlFlow::Continue(());
        };
        let schema = parts.pop();
        let info = match self.resolver.resolve(schema.as_deref(), &table) {
            Ok(Some(info)) => info,
            Ok(None) => return ControlFlow::Continue(()),
            Err(error) => {
                self.error = Some(error);
                return ControlFlow::Break(());
            }
        };
        let Some(view) = self.resolver.grant.table(&info.schema, &info.name) else {
            return ControlFlow::Continue(());
        };
        if plain(&view, info) {
            return ControlFlow::Continue(());
        }
        let subquery = match derived_query(info, &view) {
            Ok(q) => q,
            Err(error) => {
                self.error = Some(error);
                return ControlFlow::Break(());
            }
        };
        let alias = match alias.take() {
            Some(alias) => alias,
            None => TableAlias {
                explicit: true,
                name: Ident::with_quote('"', info.name.clone()),
                columns: Vec::new(),
                at: None,
            },
        };
        *factor = TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(alias),
            sample: None,
        };
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::CompoundIdentifier(parts) = expr
            && parts.len() == 3
            && self.rewritten.contains(&format!(
                "{}.{}",
                normalise(&parts[0]),
                normalise(&parts[1])
            ))
        {
            parts.remove(0);
        }
        ControlFlow::Continue(())
    }
}

/// `SELECT <shown columns, masked> FROM schema.table [WHERE filter]`.
fn derived_query(info: &TableInfo, view: &TableView<'_>) -> Result<Box<Query>, Rejection> {
    let columns: Vec<String> = info
        .columns
        .iter()
        .filter(|c| view.shows(&c.name))
        .map(|c| {
            let name = quote_ident(&c.name);
            match view.mask(&c.name) {
                None => name,
                Some(mask) => format!("{} AS {name}", mask_sql(mask, &name)),
            }
        })
        .collect();
    if columns.is_empty() {
        return Err(Rejection::new(
            RejectionKind::Forbidden,
            format!(
                "no column of {} is available to your roles",
                info.qualified_name()
            ),
        ));
    }
    let mut sql = format!(
        "SELECT {} FROM {}.{}",
        columns.join(", "),
        quote_ident(&info.schema),
        quote_ident(&info.name)
    );
    if let Some(filter) = view.row_filter() {
        sql.push_str(&format!(" WHERE {filter}"));
    }
    let statement = Parser::parse_sql(&PostgreSqlDialect {}, &sql)
        .ok()
        .and_then(|mut s| s.pop());
    match statement {
        Some(Statement::Query(query)) => Ok(query),
        _ => Err(Rejection::new(
            RejectionKind::Unsupported,
            format!(
                "the policy for {} does not form a valid query (check its row filter)",
                info.qualified_name()
            ),
        )),
    }
}

/// The SQL expression that shows `column` (already quoted) under `mask`.
fn mask_sql(mask: &Mask, column: &str) -> String {
    match mask {
        Mask::Redact => format!("CASE WHEN {column} IS NULL THEN NULL ELSE '[redacted]' END"),
        // the salt is a transaction setting, not text of the query, so the
        // statement in the audit log does not carry it (and callers cannot
        // read settings: `current_setting` is not on the allowlist)
        Mask::Hash => format!("md5(current_setting('quarry.hash_salt') || {column}::text)"),
        Mask::Null => "NULL::text".to_owned(),
        Mask::KeepLast(n) => {
            format!(
                "CASE WHEN {column} IS NULL THEN NULL ELSE '****' || right({column}::text, {n}) END"
            )
        }
        Mask::Bucket(width) => format!("floor({column}::numeric / {width}) * {width}"),
    }
}
