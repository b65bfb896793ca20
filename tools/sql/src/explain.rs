//! Explaining a validated query: a deterministic plain-English description
//! from the AST ([`describe_query`]) and the planner's view with
//! inefficiency hints ([`explain_plan`]).
//!
//! The plan comes from `EXPLAIN (FORMAT JSON, VERBOSE)` without `ANALYZE`
//! (PostgreSQL 16 docs §14.1 "Using EXPLAIN"), so the query is planned, never
//! run; it is planned inside a `READ ONLY` transaction with the executor's
//! timeout, role and `search_path`. Costs are in the planner's arbitrary
//! units (`seq_page_cost` = 1.0); row counts are estimates.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlparser::ast::{
    Expr, GroupByExpr, JoinOperator, Query, Select, SelectItem, SetExpr, TableFactor, Visit,
};

use quarry_db::quote_ident;

use crate::execute::{ExecError, Executor};
use crate::validate::ValidatedQuery;

/// What a query does, read off its AST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryDescription {
    /// Tables and views read (CTE references excluded).
    pub tables: Vec<String>,
    /// Joins of the outermost query, e.g. `"inner join artists a on a.id = w.artist_id"`.
    pub joins: Vec<String>,
    /// `WHERE` condition of the outermost query, as SQL.
    pub filters: Vec<String>,
    /// `GROUP BY` expressions.
    pub grouping: Vec<String>,
    /// Aggregate and window calls in the select list, as SQL.
    pub aggregates: Vec<String>,
    /// `ORDER BY` items.
    pub ordering: Vec<String>,
    /// The query's own `LIMIT`, if any.
    pub limit: Option<String>,
    /// All of the above as sentences.
    pub text: String,
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "stddev",
    "variance",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "bool_and",
    "bool_or",
    "every",
    "percentile_cont",
    "percentile_disc",
    "mode",
];

/// Describe `q` in plain English; the same query always gives the same text.
pub fn describe_query(q: &ValidatedQuery) -> QueryDescription {
    let mut d = QueryDescription {
        tables: q.tables().iter().map(ToString::to_string).collect(),
        joins: Vec::new(),
        filters: Vec::new(),
        grouping: Vec::new(),
        aggregates: Vec::new(),
        ordering: Vec::new(),
        limit: None,
        text: String::new(),
    };
    let sqlparser::ast::Statement::Query(query) = q.shown_statement() else {
        return d;
    };
    if let Some(select) = outer_select(query) {
        for (i, table) in select.from.iter().enumerate() {
            if i > 0 {
                d.joins.push(format!("cross join {}", table.relation));
            }
            for join in &table.joins {
                d.joins.push(describe_join(join));
            }
        }
        if let Some(selection) = &select.selection {
            d.filters.push(selection.to_string());
        }
        if let Some(having) = &select.having {
            d.filters.push(format!("having {having}"));
        }
        if let GroupByExpr::Expressions(exprs, _) = &select.group_by {
            d.grouping = exprs.iter().map(ToString::to_string).collect();
        }
        for item in &select.projection {
            let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) = item
            else {
                continue;
            };
            let _ = sqlparser::ast::visit_expressions(expr, |e| {
                if let Expr::Function(f) = e {
                    let name = f.name.to_string().to_lowercase();
                    if f.over.is_some() || AGGREGATES.contains(&name.as_str()) {
                        d.aggregates.push(e.to_string());
                    }
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
        }
    }
    if let Some(order_by) = &query.order_by
        && let sqlparser::ast::OrderByKind::Expressions(exprs) = &order_by.kind
    {
        d.ordering = exprs.iter().map(ToString::to_string).collect();
    }
    if let Some(sqlparser::ast::LimitClause::LimitOffset {
        limit: Some(limit), ..
    }) = &query.limit_clause
    {
        d.limit = Some(limit.to_string());
    }
    d.text = render(&d, query);
    d
}

fn outer_select(query: &Query) -> Option<&Select> {
    if let SetExpr::Select(select) = query.body.as_ref() {
        Some(select)
    } else if let SetExpr::Query(inner) = query.body.as_ref() {
        outer_select(inner)
    } else {
        None
    }
}

#[allow(
    clippy::wildcard_enum_match_arm,
    reason = "a description: sqlparser's dialect-specific join kinds (semi, anti, apply, as-of, array) read as a plain join"
)]
fn describe_join(join: &sqlparser::ast::Join) -> String {
    let (kind, constraint) = match &join.join_operator {
        JoinOperator::Join(c) | JoinOperator::Inner(c) => ("inner join", Some(c)),
        JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => ("left join", Some(c)),
        JoinOperator::Right(c) | JoinOperator::RightOuter(c) => ("right join", Some(c)),
        JoinOperator::FullOuter(c) => ("full join", Some(c)),
        JoinOperator::CrossJoin(_) => ("cross join", None),
        _ => ("join", None),
    };
    let on = match constraint {
        Some(sqlparser::ast::JoinConstraint::On(e)) => format!(" on {e}"),
        Some(sqlparser::ast::JoinConstraint::Using(cols)) => format!(
            " using ({})",
            cols.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(sqlparser::ast::JoinConstraint::Natural) => " (natural)".into(),
        _ => String::new(),
    };
    format!("{kind} {}{on}", join.relation)
}

fn render(d: &QueryDescription, query: &Query) -> String {
    let mut out = String::new();
    if let SetExpr::SetOperation { op, .. } = query.body.as_ref() {
        let _ = write!(out, "Combines the results of several queries with {op}. ");
    }
    if d.tables.is_empty() {
        out.push_str("Reads no tables.");
    } else {
        let _ = write!(out, "Reads {}.", d.tables.join(", "));
    }
    for join in &d.joins {
        let _ = write!(out, " Then {join}.");
    }
    for filter in &d.filters {
        let _ = write!(out, " Keeps rows where {filter}.");
    }
    if !d.grouping.is_empty() {
        let _ = write!(out, " Groups by {}.", d.grouping.join(", "));
    }
    if !d.aggregates.is_empty() {
        let _ = write!(out, " Computes {}.", d.aggregates.join(", "));
    }
    if !d.ordering.is_empty() {
        let _ = write!(out, " Orders by {}.", d.ordering.join(", "));
    }
    if let Some(limit) = &d.limit {
        let _ = write!(out, " Returns at most {limit} rows.");
    }
    out
}

/// Thresholds for [`explain_plan`]'s hints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExplainOptions {
    /// A table with at least this many rows (`pg_class.reltuples`) is large.
    pub large_table_rows: f64,
    /// A filter keeping at most this share of a table's rows is selective.
    pub selective_fraction: f64,
    /// `SELECT *` over a table with more columns than this is flagged.
    pub wide_table_columns: i64,
    /// A sort without `LIMIT` over more estimated rows than this is flagged.
    pub large_sort_rows: f64,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        Self {
            large_table_rows: 10_000.0,
            selective_fraction: 0.1,
            wide_table_columns: 20,
            large_sort_rows: 1_000.0,
        }
    }
}

/// Class of an inefficiency hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HintKind {
    /// A sequential scan of a large table under a selective filter (an index
    /// on the filtered columns would help).
    SeqScanLargeTable,
    /// Tables combined without a join condition: a cartesian product.
    CartesianProduct,
    /// `SELECT *` on a wide table.
    SelectStarWide,
    /// `ORDER BY` without `LIMIT` on a large estimated result.
    SortWithoutLimit,
}

/// One inefficiency hint, with a lowercase message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hint {
    /// What kind of inefficiency.
    pub kind: HintKind,
    /// Lowercase explanation naming the table or node.
    pub message: String,
}

/// The planner's view of a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Estimated total cost of the top plan node (planner units).
    pub total_cost: f64,
    /// Estimated rows the query returns.
    pub estimated_rows: f64,
    /// Node types of the plan, depth first (`"Seq Scan"`, `"Hash Join"`, …).
    pub node_types: Vec<String>,
    /// Inefficiency hints, in a fixed order.
    pub hints: Vec<Hint>,
}

/// Plan `q` (as validated, without the executor's row cap) with `EXPLAIN
/// (FORMAT JSON, VERBOSE)` in a read-only transaction and summarise it.
///
/// # Errors
/// [`ExecError`] as for execution: the tenant's share of connections
/// taken, pool, timeout or database errors (e.g. an unknown table, SQLSTATE
/// `42P01`).
pub async fn explain_plan(
    executor: &Executor,
    q: &ValidatedQuery,
    options: &ExplainOptions,
) -> Result<PlanSummary, ExecError> {
    let config = executor.config();
    let timeout_ms = config.statement_timeout_ms.max(1);
    let pg = |e| ExecError::from_pg(e, timeout_ms);
    // planning holds a connection too: it counts against the tenant's share
    let _share = match q.session() {
        Some(session) => Some(executor.tenant_shares().acquire(&session.tenant).await?),
        None => None,
    };
    let mut client = executor.pool().get().await?;
    let tx = crate::execute::guard(config, q.allowed_schemas(), q.session())
        .begin(&mut client)
        .await
        .map_err(pg)?;
    let row = tx
        .query_one(&format!("EXPLAIN (FORMAT JSON, VERBOSE) {}", q.sql()), &[])
        .await
        .map_err(pg)?;
    let plan: tokio_postgres::types::Json<Value> = row.try_get(0).map_err(pg)?;
    let top = plan
        .0
        .get(0)
        .and_then(|p| p.get("Plan"))
        .cloned()
        .unwrap_or(Value::Null);

    let mut nodes = Vec::new();
    collect_nodes(&top, &mut nodes);
    let mut hints = Vec::new();
    // sequential scans of large tables under selective filters
    for node in &nodes {
        if node["Node Type"] != "Seq Scan" || node.get("Filter").is_none() {
            continue;
        }
        let (Some(schema), Some(table)) = (node["Schema"].as_str(), node["Relation Name"].as_str())
        else {
            continue;
        };
        // only tables the query names (a policy's row filter may read others)
        if !q
            .tables()
            .iter()
            .any(|t| t.name == table && t.schema.as_deref().is_none_or(|s| s == schema))
        {
            continue;
        }
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
        let reltuples: f64 = tx
            .query_one(
                "SELECT reltuples::float8 FROM pg_catalog.pg_class WHERE oid = to_regclass($1)",
                &[&qualified],
            )
            .await
            .ok()
            .and_then(|r| r.try_get(0).ok())
            .unwrap_or(0.0);
        let kept = node["Plan Rows"].as_f64().unwrap_or(0.0);
        if reltuples >= options.large_table_rows && kept <= reltuples * options.selective_fraction {
            hints.push(Hint {
                kind: HintKind::SeqScanLargeTable,
                message: format!(
                    "sequential scan of {schema}.{table} (about {reltuples:.0} rows) keeps about \
                     {kept:.0} rows; an index on the filtered columns would help"
                ),
            });
        }
    }
    // cartesian products: in the AST, or a nested loop with no condition
    let ast_cartesian = cartesian_in_ast(q);
    let plan_cartesian = nodes.iter().any(|n| {
        n["Node Type"] == "Nested Loop"
            && n.get("Join Filter").is_none()
            && !subtree_has_condition(n)
    });
    if ast_cartesian || plan_cartesian {
        hints.push(Hint {
            kind: HintKind::CartesianProduct,
            message: "tables are combined without a join condition (cartesian product); \
                      add a join condition"
                .into(),
        });
    }
    // SELECT * on wide tables
    if selects_star(q) {
        for table in q.tables() {
            let name = match &table.schema {
                Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&table.name)),
                None => quote_ident(&table.name),
            };
            let columns: i64 = tx
                .query_one(
                    "SELECT count(*) FROM pg_catalog.pg_attribute \
                     WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
                    &[&name],
                )
                .await
                .ok()
                .and_then(|r| r.try_get(0).ok())
                .unwrap_or(0);
            if columns > options.wide_table_columns {
                hints.push(Hint {
                    kind: HintKind::SelectStarWide,
                    message: format!(
                        "select * reads all {columns} columns of {table}; name the columns needed"
                    ),
                });
            }
        }
    }
    // sorting without a limit
    let estimated_rows = top["Plan Rows"].as_f64().unwrap_or(0.0);
    if let sqlparser::ast::Statement::Query(query) = q.shown_statement()
        && query.order_by.is_some()
        && query.limit_clause.is_none()
        && query.fetch.is_none()
        && estimated_rows > options.large_sort_rows
    {
        hints.push(Hint {
            kind: HintKind::SortWithoutLimit,
            message: format!(
                "sorts about {estimated_rows:.0} rows without a limit; add a limit or drop the order by"
            ),
        });
    }
    tx.rollback().await.map_err(pg)?;
    Ok(PlanSummary {
        total_cost: top["Total Cost"].as_f64().unwrap_or(0.0),
        estimated_rows,
        node_types: nodes
            .iter()
            .filter_map(|n| n["Node Type"].as_str().map(str::to_owned))
            .collect(),
        hints,
    })
}

fn collect_nodes<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
    if node.is_null() {
        return;
    }
    out.push(node);
    if let Some(children) = node.get("Plans").and_then(Value::as_array) {
        for child in children {
            collect_nodes(child, out);
        }
    }
}

/// Whether a join's inputs are linked by an index or recheck condition or
/// a parameterised scan (so the nested loop is not a plain product).
fn subtree_has_condition(node: &Value) -> bool {
    let mut nodes = Vec::new();
    collect_nodes(node, &mut nodes);
    nodes.iter().skip(1).any(|n| {
        n.get("Index Cond").is_some()
            || n.get("Recheck Cond").is_some()
            || n.get("Hash Cond").is_some()
            || n.get("Merge Cond").is_some()
            || n.get("Join Filter").is_some()
            || n.get("Filter").is_some()
            || n["Node Type"] == "Result"
    })
}

/// Comma joins or `CROSS JOIN`s of real tables in any `SELECT` without a
/// `WHERE` clause to link them.
fn cartesian_in_ast(q: &ValidatedQuery) -> bool {
    struct Finder(bool);
    impl sqlparser::ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> std::ops::ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_ref() {
                let relations = select.from.len()
                    + select
                        .from
                        .iter()
                        .flat_map(|t| &t.joins)
                        .filter(|j| matches!(j.join_operator, JoinOperator::CrossJoin(_)))
                        .count();
                let plain = select
                    .from
                    .iter()
                    .all(|t| matches!(t.relation, TableFactor::Table { args: None, .. }));
                if relations > 1 && plain && select.selection.is_none() {
                    self.0 = true;
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut finder = Finder(false);
    let _ = q.shown_statement().visit(&mut finder);
    finder.0
}

fn selects_star(q: &ValidatedQuery) -> bool {
    let sqlparser::ast::Statement::Query(query) = q.shown_statement() else {
        return false;
    };
    outer_select(query).is_some_and(|s| {
        s.projection.iter().any(|item| {
            matches!(
                item,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        })
    })
}

#[cfg(test)]
mod tests;
