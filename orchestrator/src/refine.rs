//! Router mode's follow-ups: a short question that narrows the previous
//! turn's result ("top 10 only", "now only works acquired after 2000",
//! "just those before 1900") is applied to that turn's SQL by rewriting its
//! syntax tree — deterministic, no model. With a model, follow-ups go to the
//! model instead (it sees the earlier turns and their SQL).
//!
//! # What counts as a refinement
//!
//! [`parse`] reads the question's words (lowercased, split at anything that
//! is not a letter or digit). It is a refinement when it has at least one of
//! - a **row limit**: `top N`, `first N`, `only N`, `just N`, `limit N`,
//!   `limit to N`, `N only` (N from 1 to 10,000, digits);
//! - a **year filter**: `after Y` (> Y), `since Y` / `from Y` (≥ Y),
//!   `before Y` (< Y), `until Y` / `up to Y` (≤ Y), `in Y` (= Y),
//!   `between Y1 and Y2` (both included), Y a four-digit year;
//!
//! and every other word is a follow-up word ([`FOLLOW_UP_WORDS`]: "now",
//! "only", "those", "works", "acquired", …) — so "works by Turner acquired
//! after 2000" is a new question, not a refinement. The verb next to a
//! year filter picks the column ([`ColumnHint`]): "acquired"/"acquisition"
//! a column whose name contains `acqui`; "made", "created", "painted", … a
//! year or date column whose name does not.
//!
//! # How it is applied
//!
//! [`apply`] parses the previous SQL (PostgreSQL dialect); its top-level
//! query must be a single `SELECT`. A year filter is AND-ed to the `WHERE`
//! clause on the one column of the `FROM` tables (schema from
//! `DescribeSchema`) that matches the hint and has an integer type (compared
//! with the year) or a date/timestamp type (compared with `make_date(Y, 1,
//! 1)` bounds); no match or several matches is an error naming the
//! candidates. A row limit replaces the query's `LIMIT` (kept when it is
//! already smaller). The result is SQL text the SQL tool validates again
//! before it runs.

use quarry_proto::v1::TableInfo;
use sqlparser::{
    ast::{
        BinaryOperator, Expr, LimitClause, SetExpr, Statement, TableFactor, TableWithJoins,
        Value as SqlValue,
    },
    dialect::PostgreSqlDialect,
    parser::Parser,
};

/// Largest row limit a follow-up may set.
pub const MAX_LIMIT: u64 = 10_000;

/// Words a refinement may contain besides its limit and year phrases.
pub const FOLLOW_UP_WORDS: &[&str] = &[
    "now",
    "only",
    "just",
    "those",
    "these",
    "them",
    "ones",
    "the",
    "of",
    "that",
    "which",
    "were",
    "was",
    "are",
    "is",
    "and",
    "but",
    "please",
    "show",
    "me",
    "give",
    "keep",
    "rows",
    "results",
    "works",
    "artworks",
    "items",
    "records",
    "same",
    "again",
    "instead",
    "with",
    "what",
    "about",
    "then",
    "filter",
    "to",
    "limit",
    "top",
    "first",
    "acquired",
    "acquisition",
    "bought",
    "made",
    "created",
    "painted",
    "produced",
    "dated",
    "year",
    "years",
    "ok",
    "okay",
    "all",
    "for",
    "from",
    "in",
    "after",
    "before",
    "since",
    "until",
    "up",
    "between",
    "a",
];

/// Which year column a filter means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnHint {
    /// "acquired", "acquisition", "bought": a column named like `acqui…`.
    Acquisition,
    /// "made", "created", "painted", "produced", "dated": a year or date
    /// column not about acquisition.
    Creation,
    /// No verb: the only year or date column.
    Any,
}

/// A comparison of a year filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YearOp {
    After(i32),
    Since(i32),
    Before(i32),
    Until(i32),
    In(i32),
    Between(i32, i32),
}

/// What a follow-up asks of the previous result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Refinement {
    /// Keep at most this many rows.
    pub limit: Option<u64>,
    /// Keep rows whose year satisfies this, on the column the hint picks.
    pub year: Option<(YearOp, ColumnHint)>,
}

impl Refinement {
    /// "keep the first 10 rows; only rows with acquisition year after 2000".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((op, hint)) = self.year {
            let what = match hint {
                ColumnHint::Acquisition => "acquired ",
                ColumnHint::Creation => "made ",
                ColumnHint::Any => "",
            };
            parts.push(match op {
                YearOp::After(y) => format!("only rows {what}after {y}"),
                YearOp::Since(y) => format!("only rows {what}in or after {y}"),
                YearOp::Before(y) => format!("only rows {what}before {y}"),
                YearOp::Until(y) => format!("only rows {what}in or before {y}"),
                YearOp::In(y) => format!("only rows {what}in {y}"),
                YearOp::Between(a, b) => format!("only rows {what}from {a} to {b}"),
            });
        }
        if let Some(n) = self.limit {
            parts.push(format!("at most {n} rows"));
        }
        parts.join(", ")
    }
}

fn words(question: &str) -> Vec<String> {
    question
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn year(word: &str) -> Option<i32> {
    (word.len() == 4 && word.bytes().all(|b| b.is_ascii_digit()))
        .then(|| word.parse().ok())
        .flatten()
}

fn count(word: &str) -> Option<u64> {
    if word.is_empty() || word.len() > 5 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n))
}

/// The refinement `question` asks for, or `None` when it is not a
/// refinement of the previous result (see the module documentation).
pub fn parse(question: &str) -> Option<Refinement> {
    let w = words(question);
    let mut used = vec![false; w.len()];
    let mut refinement = Refinement::default();
    let mut i = 0;
    while i < w.len() {
        let next = |k: usize| w.get(i + k).map(String::as_str).unwrap_or("");
        // row limits
        let limit_at = match w[i].as_str() {
            "top" | "first" | "only" | "just" => count(next(1)).map(|n| (n, 2)),
            "limit" if next(1) == "to" => count(next(2)).map(|n| (n, 3)),
            "limit" => count(next(1)).map(|n| (n, 2)),
            word => count(word)
                .filter(|_| next(1) == "only" && year(word).is_none())
                .map(|n| (n, 2)),
        };
        if let Some((n, len)) = limit_at {
            refinement.limit = Some(n);
            used[i..i + len].iter_mut().for_each(|u| *u = true);
            i += len;
            continue;
        }
        // year filters
        let op_at = match w[i].as_str() {
            "between" => match (year(next(1)), next(2), year(next(3))) {
                (Some(a), "and", Some(b)) => Some((YearOp::Between(a.min(b), a.max(b)), 4)),
                _ => None,
            },
            "after" => year(next(1)).map(|y| (YearOp::After(y), 2)),
            "since" | "from" => year(next(1)).map(|y| (YearOp::Since(y), 2)),
            "before" => year(next(1)).map(|y| (YearOp::Before(y), 2)),
            "until" => year(next(1)).map(|y| (YearOp::Until(y), 2)),
            "up" if next(1) == "to" => year(next(2)).map(|y| (YearOp::Until(y), 3)),
            "in" => year(next(1)).map(|y| (YearOp::In(y), 2)),
            _ => None,
        };
        if let Some((op, len)) = op_at {
            refinement.year = Some((op, ColumnHint::Any));
            used[i..i + len].iter_mut().for_each(|u| *u = true);
            i += len;
            continue;
        }
        i += 1;
    }
    if refinement.limit.is_none() && refinement.year.is_none() {
        return None;
    }
    for (word, used) in w.iter().zip(&used) {
        if !used && !FOLLOW_UP_WORDS.contains(&word.as_str()) {
            return None;
        }
    }
    if let Some((op, _)) = refinement.year {
        let hint = if w
            .iter()
            .any(|w| matches!(w.as_str(), "acquired" | "acquisition" | "bought"))
        {
            ColumnHint::Acquisition
        } else if w.iter().any(|w| {
            matches!(
                w.as_str(),
                "made" | "created" | "painted" | "produced" | "dated"
            )
        }) {
            ColumnHint::Creation
        } else {
            ColumnHint::Any
        };
        refinement.year = Some((op, hint));
    }
    Some(refinement)
}

/// A relation of the previous query's `FROM`: how to qualify its columns
/// and the table it is.
struct Relation {
    qualifier: String,
    table: Option<TableInfo>,
}

fn unquote(part: &str) -> String {
    part.trim_matches('"').to_string()
}

fn relations(from: &[TableWithJoins], tables: &[TableInfo]) -> Vec<Relation> {
    let mut out = Vec::new();
    let mut add = |factor: &TableFactor| {
        if let TableFactor::Table { name, alias, .. } = factor {
            let text = name.to_string();
            let parts: Vec<String> = text.split('.').map(unquote).collect();
            let table = match parts.as_slice() {
                [schema, table] => tables
                    .iter()
                    .find(|t| &t.schema == schema && &t.name == table),
                [table] => tables.iter().find(|t| &t.name == table),
                _ => None,
            };
            let qualifier = alias
                .as_ref()
                .map_or_else(|| text.clone(), |a| a.name.to_string());
            out.push(Relation {
                qualifier,
                table: table.cloned(),
            });
        }
    };
    for item in from {
        add(&item.relation);
        for join in &item.joins {
            add(&join.relation);
        }
    }
    out
}

fn is_integer(data_type: &str) -> bool {
    matches!(
        data_type,
        "integer" | "smallint" | "bigint" | "int" | "int2" | "int4" | "int8"
    )
}

fn is_date(data_type: &str) -> bool {
    data_type == "date" || data_type.starts_with("timestamp")
}

/// The column a year filter applies to, as `qualifier.column`, and whether
/// it holds dates (else years).
fn year_column(relations: &[Relation], hint: ColumnHint) -> Result<(String, bool), String> {
    let mut candidates = Vec::new();
    for relation in relations {
        let Some(table) = &relation.table else {
            continue;
        };
        for column in &table.columns {
            let name = column.name.to_lowercase();
            let date = is_date(&column.data_type);
            let yearish = is_integer(&column.data_type) && name.contains("year");
            if !(date || yearish) {
                continue;
            }
            let acquisition = name.contains("acqui");
            let fits = match hint {
                ColumnHint::Acquisition => acquisition,
                ColumnHint::Creation => !acquisition,
                ColumnHint::Any => true,
            };
            if fits {
                candidates.push((
                    format!("{}.{}", relation.qualifier, column.name),
                    date,
                    yearish,
                ));
            }
        }
    }
    // prefer year columns over dates when both fit
    if candidates.iter().any(|c| c.2) {
        candidates.retain(|c| c.2);
    }
    match candidates.as_slice() {
        [(column, date, _)] => Ok((column.clone(), *date)),
        [] => Err(
            "the previous query reads no year or date column that fits the follow-up".to_string(),
        ),
        many => Err(format!(
            "the follow-up could mean any of {}; ask again naming one",
            many.iter()
                .map(|c| c.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn filter_text(column: &str, date: bool, op: YearOp) -> String {
    if date {
        let start = |y: i32| format!("make_date({y}, 1, 1)");
        match op {
            YearOp::After(y) => format!("{column} >= {}", start(y + 1)),
            YearOp::Since(y) => format!("{column} >= {}", start(y)),
            YearOp::Before(y) => format!("{column} < {}", start(y)),
            YearOp::Until(y) => format!("{column} < {}", start(y + 1)),
            YearOp::In(y) => format!("{column} >= {} AND {column} < {}", start(y), start(y + 1)),
            YearOp::Between(a, b) => {
                format!("{column} >= {} AND {column} < {}", start(a), start(b + 1))
            }
        }
    } else {
        match op {
            YearOp::After(y) => format!("{column} > {y}"),
            YearOp::Since(y) => format!("{column} >= {y}"),
            YearOp::Before(y) => format!("{column} < {y}"),
            YearOp::Until(y) => format!("{column} <= {y}"),
            YearOp::In(y) => format!("{column} = {y}"),
            YearOp::Between(a, b) => format!("{column} BETWEEN {a} AND {b}"),
        }
    }
}

/// `previous` SQL narrowed by `refinement`, over `tables` (the caller's
/// schema, for the year column).
///
/// # Errors
/// Why it cannot be applied: the SQL does not parse or is not a single
/// `SELECT`, or no single column fits a year filter (the message names the
/// candidates).
pub fn apply(
    previous: &str,
    refinement: &Refinement,
    tables: &[TableInfo],
) -> Result<String, String> {
    let dialect = PostgreSqlDialect {};
    let mut statements = Parser::parse_sql(&dialect, previous)
        .map_err(|e| format!("the previous SQL does not parse: {e}"))?;
    let [Statement::Query(query)] = statements.as_mut_slice() else {
        return Err("the previous SQL is not a single query".to_string());
    };
    if let Some((op, hint)) = refinement.year {
        let SetExpr::Select(select) = query.body.as_mut() else {
            return Err(
                "the previous query is not a plain SELECT (UNION, VALUES, …); a year filter cannot be added"
                    .to_string(),
            );
        };
        let relations = relations(&select.from, tables);
        let (column, date) = year_column(&relations, hint)?;
        let text = filter_text(&column, date, op);
        let filter = Parser::new(&dialect)
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| format!("building the filter {text}: {e}"))?;
        select.selection = Some(match select.selection.take() {
            None => filter,
            Some(existing) => Expr::BinaryOp {
                left: Box::new(Expr::Nested(Box::new(existing))),
                op: BinaryOperator::And,
                right: Box::new(Expr::Nested(Box::new(filter))),
            },
        });
    }
    if let Some(n) = refinement.limit {
        let existing = match &query.limit_clause {
            Some(LimitClause::LimitOffset {
                limit: Some(Expr::Value(v)),
                ..
            }) => {
                if let SqlValue::Number(text, _) = &v.value {
                    text.parse::<u64>().ok()
                } else {
                    None
                }
            }
            _ => None,
        };
        if existing.is_none_or(|e| e > n) {
            let offset = match query.limit_clause.take() {
                Some(LimitClause::LimitOffset { offset, .. }) => offset,
                _ => None,
            };
            let limit = Parser::new(&dialect)
                .try_with_sql(&n.to_string())
                .and_then(|mut p| p.parse_expr())
                .map_err(|e| format!("building LIMIT {n}: {e}"))?;
            query.limit_clause = Some(LimitClause::LimitOffset {
                limit: Some(limit),
                offset,
                limit_by: Vec::new(),
            });
            query.fetch = None;
        }
    }
    Ok(query.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_proto::v1::ColumnInfo;

    fn tate() -> Vec<TableInfo> {
        let column = |name: &str, data_type: &str| ColumnInfo {
            name: name.into(),
            data_type: data_type.into(),
            ..ColumnInfo::default()
        };
        vec![
            TableInfo {
                schema: "tate".into(),
                name: "artworks".into(),
                columns: vec![
                    column("id", "integer"),
                    column("title", "text"),
                    column("artist_id", "integer"),
                    column("year", "integer"),
                    column("acquisition_year", "integer"),
                ],
                ..TableInfo::default()
            },
            TableInfo {
                schema: "tate".into(),
                name: "artists".into(),
                columns: vec![
                    column("id", "integer"),
                    column("name", "text"),
                    column("year_of_birth", "integer"),
                ],
                ..TableInfo::default()
            },
        ]
    }

    #[test]
    fn follow_ups_parse_and_new_questions_do_not() {
        assert_eq!(
            parse("top 10 only"),
            Some(Refinement {
                limit: Some(10),
                year: None
            })
        );
        assert_eq!(
            parse("Now only works acquired after 2000"),
            Some(Refinement {
                limit: None,
                year: Some((YearOp::After(2000), ColumnHint::Acquisition))
            })
        );
        assert_eq!(
            parse("just those made between 1950 and 1900, first 5"),
            Some(Refinement {
                limit: Some(5),
                year: Some((YearOp::Between(1900, 1950), ColumnHint::Creation))
            })
        );
        assert_eq!(parse("limit to 3").and_then(|r| r.limit), Some(3));
        assert_eq!(parse("5 only").and_then(|r| r.limit), Some(5));
        for new_question in [
            "works by Turner acquired after 2000",
            "how many artworks are there?",
            "only the famous ones",
            "top 0 only",
            "top 99999 only",
        ] {
            assert_eq!(parse(new_question), None, "{new_question}");
        }
    }

    #[test]
    fn a_year_filter_is_anded_on_the_column_the_verb_names() {
        let sql = "SELECT a.title, a.acquisition_year FROM tate.artworks AS a WHERE a.artist_id = 5 OR a.artist_id = 6 ORDER BY a.acquisition_year DESC LIMIT 50";
        let r = parse("now only works acquired after 2000").unwrap();
        assert_eq!(
            apply(sql, &r, &tate()).unwrap(),
            "SELECT a.title, a.acquisition_year FROM tate.artworks AS a WHERE (a.artist_id = 5 OR a.artist_id = 6) AND (a.acquisition_year > 2000) ORDER BY a.acquisition_year DESC LIMIT 50"
        );
        let r = parse("only those made before 1900").unwrap();
        assert!(
            apply("SELECT count(*) FROM tate.artworks", &r, &tate())
                .unwrap()
                .ends_with("WHERE tate.artworks.year < 1900")
        );
        // no verb: three year columns over the join are ambiguous
        let r = parse("only after 2000").unwrap();
        let error = apply(
            "SELECT w.title FROM tate.artworks w JOIN tate.artists p ON p.id = w.artist_id",
            &r,
            &tate(),
        )
        .unwrap_err();
        assert!(
            error.contains("w.year") && error.contains("p.year_of_birth"),
            "{error}"
        );
    }

    #[test]
    fn a_limit_replaces_a_larger_one_and_keeps_a_smaller_one() {
        let r = parse("top 10 only").unwrap();
        assert_eq!(
            apply(
                "SELECT title FROM tate.artworks ORDER BY id LIMIT 50",
                &r,
                &tate()
            )
            .unwrap(),
            "SELECT title FROM tate.artworks ORDER BY id LIMIT 10"
        );
        assert_eq!(
            apply(
                "SELECT title FROM tate.artworks LIMIT 5 OFFSET 2",
                &r,
                &tate()
            )
            .unwrap(),
            "SELECT title FROM tate.artworks LIMIT 5 OFFSET 2"
        );
        assert_eq!(
            apply("SELECT title FROM tate.artworks", &r, &tate()).unwrap(),
            "SELECT title FROM tate.artworks LIMIT 10"
        );
        assert!(apply("DELETE FROM tate.artworks", &r, &tate()).is_err());
    }
}
