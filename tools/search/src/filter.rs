//! Structured filters: one typed structure, validated against a collection,
//! translated to parameterised SQL over the sidecar table and to a tantivy
//! query with the same meaning.
//!
//! # Semantics (identical in SQL and tantivy)
//!
//! - A document without a value for a field (SQL `NULL`, an empty
//!   `keywords` array) matches no predicate on that field, so `not` of the
//!   predicate matches it. In SQL every predicate is made two-valued
//!   (`(f_x IS NOT NULL AND …)`), so `NOT` never meets `NULL`.
//! - A predicate on a `keywords` field holds when it holds for any element.
//! - Strings compare in byte order (`COLLATE "C"` in SQL, the term
//!   dictionary's order in tantivy); `prefix` is a byte prefix.
//! - `integer` fields take integer values only; `float` fields take integers
//!   (converted with `as f64`, the same conversion on both sides) or floats.
//!   `-0.0` is taken as `0.0` (PostgreSQL compares them equal; tantivy's
//!   order-preserving float encoding does not, so the index stores `0.0`).
//! - An empty `and` holds for every document, an empty `or` for none, an
//!   empty `in` for none; a range with no bound holds for documents with a
//!   value.
//!
//! Limits ([`MAX_DEPTH`], [`MAX_PREDICATES`], [`MAX_IN_VALUES`],
//! [`MAX_TEXT_VALUE_BYTES`]) bound the work one request can ask for.

use std::fmt::Write as _;
use std::ops::Bound;

use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, ExistsQuery, InvertedIndexRangeQuery, Occur, Query,
    RangeQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{IndexRecordOption, Schema};
use tokio_postgres::types::ToSql;

use quarry_db::quote_ident;

use crate::collection::{Collection, FilterType, filter_column};

/// Deepest nesting of `and`/`or`/`not` accepted (the root is depth 1).
pub const MAX_DEPTH: usize = 32;
/// Most predicates (`eq`, `in`, `range`, `prefix`) in one filter.
pub const MAX_PREDICATES: usize = 256;
/// Most values in one `in` list.
pub const MAX_IN_VALUES: usize = 1024;
/// Longest text value, in bytes. tantivy skips terms longer than
/// `tantivy::tokenizer::MAX_TOKEN_LEN` (65,530 bytes); values far below that
/// keep every comparison meaningful.
pub const MAX_TEXT_VALUE_BYTES: usize = 4096;

/// A filter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text, for `keyword` and `keywords` fields.
    Text(String),
    /// Integer, for `integer` and `float` fields.
    Int(i64),
    /// Float, for `float` fields.
    Float(f64),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Text(_) => "text",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
        }
    }
}

/// A structured filter over a collection's filter fields (see the module
/// docs for its meaning).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `field = value`.
    Eq {
        /// Filter field name.
        field: String,
        /// Value.
        value: Value,
    },
    /// `field` is one of `values`.
    In {
        /// Filter field name.
        field: String,
        /// Values (at most [`MAX_IN_VALUES`]).
        values: Vec<Value>,
    },
    /// `lower <= field <= upper`, each bound optional, inclusive or exclusive.
    Range {
        /// Filter field name.
        field: String,
        /// Lower bound.
        lower: Bound<Value>,
        /// Upper bound.
        upper: Bound<Value>,
    },
    /// `field` starts with `value` (bytes); `keyword`/`keywords` fields only.
    Prefix {
        /// Filter field name.
        field: String,
        /// The prefix (a [`Value::Text`]).
        value: Value,
    },
    /// Every filter holds (empty: every document).
    And(Vec<Filter>),
    /// Some filter holds (empty: no document).
    Or(Vec<Filter>),
    /// The filter does not hold.
    Not(Box<Filter>),
}

/// A filter refused by [`Filter::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FilterError {
    /// Where in the filter, e.g. `filter.and[1].range.lower`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn error(path: &str, message: impl Into<String>) -> FilterError {
    FilterError {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// A value coerced to its field's type.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Pred {
    Eq(Scalar),
    In(Vec<Scalar>),
    Range(Bound<Scalar>, Bound<Scalar>),
    Prefix(String),
    Exists,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    All,
    Nothing,
    Pred {
        field: String,
        kind: FilterType,
        pred: Pred,
    },
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
}

/// A filter checked against a collection: every field exists, every value has
/// its field's type. Made by [`Filter::validate`]; translate it with
/// [`CheckedFilter::to_sql`] and [`CheckedFilter::to_tantivy`].
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedFilter {
    root: Node,
}

/// Parameters collected while rendering SQL: `$1` is `params[0]`.
pub type SqlParams = Vec<Box<dyn ToSql + Sync + Send>>;

/// Borrows [`SqlParams`] in the form `tokio_postgres` query methods take.
pub fn param_refs(params: &SqlParams) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl Filter {
    /// Checks the filter against `collection`.
    ///
    /// # Errors
    /// [`FilterError`] naming the path (rooted at `filter`) of the first
    /// problem: an unknown field, a value of the wrong type, `prefix` on a
    /// numeric field, NaN, a text value over [`MAX_TEXT_VALUE_BYTES`], nesting
    /// deeper than [`MAX_DEPTH`], more than [`MAX_PREDICATES`] predicates or
    /// [`MAX_IN_VALUES`] values in one `in`.
    pub fn validate(&self, collection: &Collection) -> Result<CheckedFilter, FilterError> {
        let mut predicates = 0;
        let root = check(self, collection, "filter", 1, &mut predicates)?;
        Ok(CheckedFilter { root })
    }
}

fn check(
    filter: &Filter,
    collection: &Collection,
    path: &str,
    depth: usize,
    predicates: &mut usize,
) -> Result<Node, FilterError> {
    if depth > MAX_DEPTH {
        return Err(error(
            path,
            format!("filters nest at most {MAX_DEPTH} levels deep"),
        ));
    }
    let mut predicate = |path: &str| {
        *predicates += 1;
        if *predicates > MAX_PREDICATES {
            Err(error(
                path,
                format!("a filter holds at most {MAX_PREDICATES} predicates"),
            ))
        } else {
            Ok(())
        }
    };
    let field_of = |field: &str, at: &str| -> Result<FilterType, FilterError> {
        collection
            .filter_field(field)
            .map(|f| f.kind)
            .ok_or_else(|| {
                let known: Vec<&str> = collection.filters.iter().map(|f| f.name.as_str()).collect();
                error(
                    &format!("{at}.field"),
                    format!(
                        "unknown filter field {field:?} in collection {}; filter fields: {}",
                        collection.name,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })
    };
    Ok(match filter {
        Filter::Eq { field, value } => {
            let at = format!("{path}.eq");
            predicate(&at)?;
            let kind = field_of(field, &at)?;
            Node::Pred {
                field: field.clone(),
                kind,
                pred: Pred::Eq(coerce(value, kind, field, &format!("{at}.value"))?),
            }
        }
        Filter::In { field, values } => {
            let at = format!("{path}.in");
            predicate(&at)?;
            let kind = field_of(field, &at)?;
            if values.len() > MAX_IN_VALUES {
                return Err(error(
                    &format!("{at}.values"),
                    format!(
                        "{} values; at most {MAX_IN_VALUES} are accepted",
                        values.len()
                    ),
                ));
            }
            let values = values
                .iter()
                .enumerate()
                .map(|(i, v)| coerce(v, kind, field, &format!("{at}.values[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            if values.is_empty() {
                Node::Nothing
            } else {
                Node::Pred {
                    field: field.clone(),
                    kind,
                    pred: Pred::In(values),
                }
            }
        }
        Filter::Range {
            field,
            lower,
            upper,
        } => {
            let at = format!("{path}.range");
            predicate(&at)?;
            let kind = field_of(field, &at)?;
            let bound = |b: &Bound<Value>, name: &str| -> Result<Bound<Scalar>, FilterError> {
                let at = format!("{at}.{name}");
                Ok(match b {
                    Bound::Included(v) => Bound::Included(coerce(v, kind, field, &at)?),
                    Bound::Excluded(v) => Bound::Excluded(coerce(v, kind, field, &at)?),
                    Bound::Unbounded => Bound::Unbounded,
                })
            };
            let lower = bound(lower, "lower")?;
            let upper = bound(upper, "upper")?;
            let pred = match (&lower, &upper) {
                (Bound::Unbounded, Bound::Unbounded) => Some(Pred::Exists),
                _ if range_is_empty(&lower, &upper) => None,
                _ => Some(Pred::Range(lower, upper)),
            };
            match pred {
                Some(pred) => Node::Pred {
                    field: field.clone(),
                    kind,
                    pred,
                },
                None => Node::Nothing,
            }
        }
        Filter::Prefix { field, value } => {
            let at = format!("{path}.prefix");
            predicate(&at)?;
            let kind = field_of(field, &at)?;
            if !matches!(kind, FilterType::Keyword | FilterType::Keywords) {
                return Err(error(
                    &format!("{at}.field"),
                    format!(
                        "prefix needs a keyword or keywords field; {field:?} is {}",
                        kind.as_str()
                    ),
                ));
            }
            let Scalar::Text(prefix) = coerce(value, kind, field, &format!("{at}.value"))? else {
                return Err(error(&format!("{at}.value"), "prefix must be text"));
            };
            Node::Pred {
                field: field.clone(),
                kind,
                pred: if prefix.is_empty() {
                    Pred::Exists
                } else {
                    Pred::Prefix(prefix)
                },
            }
        }
        Filter::And(filters) | Filter::Or(filters) => {
            let is_and = matches!(filter, Filter::And(_));
            let op = if is_and { "and" } else { "or" };
            let nodes = filters
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    check(
                        f,
                        collection,
                        &format!("{path}.{op}[{i}]"),
                        depth + 1,
                        predicates,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            // An empty `and` holds for every document, an empty `or` for none.
            match (is_and, nodes.is_empty()) {
                (true, true) => Node::All,
                (true, false) => Node::And(nodes),
                (false, true) => Node::Nothing,
                (false, false) => Node::Or(nodes),
            }
        }
        Filter::Not(inner) => Node::Not(Box::new(check(
            inner,
            collection,
            &format!("{path}.not"),
            depth + 1,
            predicates,
        )?)),
    })
}

fn coerce(value: &Value, kind: FilterType, field: &str, at: &str) -> Result<Scalar, FilterError> {
    let wrong = || {
        error(
            at,
            format!(
                "field {field:?} is {}; a {} value does not fit it",
                kind.as_str(),
                value.type_name()
            ),
        )
    };
    match (kind, value) {
        (FilterType::Keyword | FilterType::Keywords, Value::Text(s)) => {
            if s.len() > MAX_TEXT_VALUE_BYTES {
                return Err(error(
                    at,
                    format!(
                        "text value of {} bytes; at most {MAX_TEXT_VALUE_BYTES}",
                        s.len()
                    ),
                ));
            }
            Ok(Scalar::Text(s.clone()))
        }
        (FilterType::Integer, Value::Int(i)) => Ok(Scalar::Int(*i)),
        (FilterType::Float, Value::Int(i)) => Ok(Scalar::Float(normalise_float(*i as f64))),
        (FilterType::Float, Value::Float(f)) => {
            if f.is_nan() {
                return Err(error(at, "NaN is not a comparable value"));
            }
            Ok(Scalar::Float(normalise_float(*f)))
        }
        _ => Err(wrong()),
    }
}

/// `-0.0` becomes `0.0` (see the module docs); everything else is unchanged.
/// The index applies it to stored values too.
pub fn normalise_float(f: f64) -> f64 {
    if f == 0.0 { 0.0 } else { f }
}

fn scalar_cmp(a: &Scalar, b: &Scalar) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Scalar::Text(a), Scalar::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Scalar::Int(a), Scalar::Int(b)) => Some(a.cmp(b)),
        (Scalar::Float(a), Scalar::Float(b)) => a.partial_cmp(b),
        _ => None,
    }
}

/// True when no value lies between the bounds.
fn range_is_empty(lower: &Bound<Scalar>, upper: &Bound<Scalar>) -> bool {
    use std::cmp::Ordering::{Equal, Greater};
    let (l, l_incl) = match lower {
        Bound::Included(v) => (v, true),
        Bound::Excluded(v) => (v, false),
        Bound::Unbounded => return false,
    };
    let (u, u_incl) = match upper {
        Bound::Included(v) => (v, true),
        Bound::Excluded(v) => (v, false),
        Bound::Unbounded => return false,
    };
    match scalar_cmp(l, u) {
        Some(Greater) => true,
        Some(Equal) => !(l_incl && u_incl),
        _ => false,
    }
}

impl CheckedFilter {
    /// The filter that holds for every document.
    pub fn all() -> CheckedFilter {
        CheckedFilter { root: Node::All }
    }

    /// True when the filter holds for every document.
    pub fn is_all(&self) -> bool {
        self.root == Node::All
    }

    /// A boolean SQL expression over the sidecar's `f_` columns (unqualified
    /// column names), never `NULL`. Values are appended to `params` and
    /// referenced as `$n` with `n = params.len()` after each push, so start
    /// with the parameters the surrounding statement already uses.
    pub fn to_sql(&self, params: &mut SqlParams) -> String {
        let mut sql = String::new();
        node_sql(&self.root, params, &mut sql);
        sql
    }

    /// The tantivy query matching the same documents, over an index whose
    /// filter fields are named `f_<field>` (see [`crate::index`]): `keyword`
    /// and `keywords` as raw-tokenised indexed fast strings, `integer` as
    /// indexed fast `i64`, `float` as indexed fast `f64`. Every match scores
    /// 1; wrap it in a `ConstScoreQuery` to make it non-scoring.
    ///
    /// # Errors
    /// [`FilterError`] at path `filter` when a field is missing from `schema`
    /// (an index built for another definition).
    pub fn to_tantivy(&self, schema: &Schema) -> Result<Box<dyn Query>, FilterError> {
        node_query(&self.root, schema)
    }
}

fn push(params: &mut SqlParams, value: Box<dyn ToSql + Sync + Send>) -> usize {
    params.push(value);
    params.len()
}

fn scalar_param(value: &Scalar) -> (Box<dyn ToSql + Sync + Send>, &'static str) {
    match value {
        Scalar::Text(s) => (Box::new(s.clone()), "text"),
        Scalar::Int(i) => (Box::new(*i), "bigint"),
        Scalar::Float(f) => (Box::new(*f), "float8"),
    }
}

fn array_param(values: &[Scalar]) -> (Box<dyn ToSql + Sync + Send>, &'static str) {
    match values.first() {
        Some(Scalar::Int(_)) => (
            Box::new(
                values
                    .iter()
                    .filter_map(|v| {
                        if let Scalar::Int(i) = v {
                            Some(*i)
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<i64>>(),
            ),
            "bigint[]",
        ),
        Some(Scalar::Float(_)) => (
            Box::new(
                values
                    .iter()
                    .filter_map(|v| {
                        if let Scalar::Float(f) = v {
                            Some(*f)
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<f64>>(),
            ),
            "float8[]",
        ),
        _ => (
            Box::new(
                values
                    .iter()
                    .filter_map(|v| {
                        if let Scalar::Text(s) = v {
                            Some(s.clone())
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<String>>(),
            ),
            "text[]",
        ),
    }
}

fn node_sql(node: &Node, params: &mut SqlParams, out: &mut String) {
    match node {
        Node::All => out.push_str("TRUE"),
        Node::Nothing => out.push_str("FALSE"),
        Node::And(nodes) | Node::Or(nodes) => {
            let op = if matches!(node, Node::And(_)) {
                " AND "
            } else {
                " OR "
            };
            out.push('(');
            for (i, n) in nodes.iter().enumerate() {
                if i > 0 {
                    out.push_str(op);
                }
                node_sql(n, params, out);
            }
            out.push(')');
        }
        Node::Not(inner) => {
            out.push_str("(NOT ");
            node_sql(inner, params, out);
            out.push(')');
        }
        Node::Pred { field, kind, pred } => {
            let column = quote_ident(&filter_column(field));
            pred_sql(&column, *kind, pred, params, out);
        }
    }
}

/// Comparison of `expr` against a bound, byte order for text.
fn bound_sql(expr: &str, op: &str, value: &Scalar, params: &mut SqlParams) -> String {
    let (param, cast) = scalar_param(value);
    let n = push(params, param);
    if cast == "text" {
        format!("{expr} COLLATE \"C\" {op} ${n}::text")
    } else {
        format!("{expr} {op} ${n}::{cast}")
    }
}

fn range_sql(
    expr: &str,
    lower: &Bound<Scalar>,
    upper: &Bound<Scalar>,
    params: &mut SqlParams,
) -> String {
    let mut parts = Vec::new();
    match lower {
        Bound::Included(v) => parts.push(bound_sql(expr, ">=", v, params)),
        Bound::Excluded(v) => parts.push(bound_sql(expr, ">", v, params)),
        Bound::Unbounded => {}
    }
    match upper {
        Bound::Included(v) => parts.push(bound_sql(expr, "<=", v, params)),
        Bound::Excluded(v) => parts.push(bound_sql(expr, "<", v, params)),
        Bound::Unbounded => {}
    }
    if parts.is_empty() {
        "TRUE".to_owned()
    } else {
        parts.join(" AND ")
    }
}

fn pred_sql(column: &str, kind: FilterType, pred: &Pred, params: &mut SqlParams, out: &mut String) {
    let multi = kind == FilterType::Keywords;
    let body = match pred {
        Pred::Exists => {
            if multi {
                format!("cardinality({column}) > 0")
            } else {
                "TRUE".to_owned()
            }
        }
        Pred::Eq(value) => {
            let (param, cast) = scalar_param(value);
            let n = push(params, param);
            if multi {
                format!("{column} @> ARRAY[${n}::{cast}]")
            } else {
                format!("{column} = ${n}::{cast}")
            }
        }
        Pred::In(values) => {
            let (param, cast) = array_param(values);
            let n = push(params, param);
            if multi {
                format!("{column} && ${n}::{cast}")
            } else {
                format!("{column} = ANY(${n}::{cast})")
            }
        }
        Pred::Range(lower, upper) => {
            if multi {
                format!(
                    "EXISTS (SELECT 1 FROM unnest({column}) AS e(v) WHERE {})",
                    range_sql("e.v", lower, upper, params)
                )
            } else {
                range_sql(column, lower, upper, params)
            }
        }
        Pred::Prefix(prefix) => {
            let n = push(params, Box::new(prefix.clone()));
            if multi {
                format!(
                    "EXISTS (SELECT 1 FROM unnest({column}) AS e(v) WHERE starts_with(e.v, ${n}::text))"
                )
            } else {
                format!("starts_with({column}, ${n}::text)")
            }
        }
    };
    let _ = write!(out, "({column} IS NOT NULL AND {body})");
}

fn node_query(node: &Node, schema: &Schema) -> Result<Box<dyn Query>, FilterError> {
    Ok(match node {
        Node::All => Box::new(AllQuery),
        Node::Nothing => Box::new(EmptyQuery),
        Node::And(nodes) => Box::new(BooleanQuery::new(
            nodes
                .iter()
                .map(|n| Ok((Occur::Must, node_query(n, schema)?)))
                .collect::<Result<Vec<_>, FilterError>>()?,
        )),
        Node::Or(nodes) => Box::new(BooleanQuery::new(
            nodes
                .iter()
                .map(|n| Ok((Occur::Should, node_query(n, schema)?)))
                .collect::<Result<Vec<_>, FilterError>>()?,
        )),
        Node::Not(inner) => Box::new(BooleanQuery::new(vec![
            (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
            (Occur::MustNot, node_query(inner, schema)?),
        ])),
        Node::Pred { field, kind, pred } => {
            let name = filter_column(field);
            let tantivy_field = schema.get_field(&name).map_err(|_| {
                error(
                    "filter",
                    format!("the index has no field {name}; it is being rebuilt"),
                )
            })?;
            let term = |v: &Scalar| match v {
                Scalar::Text(s) => Term::from_field_text(tantivy_field, s),
                Scalar::Int(i) => Term::from_field_i64(tantivy_field, *i),
                Scalar::Float(f) => Term::from_field_f64(tantivy_field, *f),
            };
            match pred {
                Pred::Exists => Box::new(ExistsQuery::new(name, false)),
                Pred::Eq(v) => Box::new(TermQuery::new(term(v), IndexRecordOption::Basic)),
                Pred::In(values) => Box::new(TermSetQuery::new(values.iter().map(term))),
                Pred::Range(lower, upper) => {
                    let lower = map_bound(lower, term);
                    let upper = map_bound(upper, term);
                    let text = matches!(kind, FilterType::Keyword | FilterType::Keywords);
                    if text {
                        // The term dictionary orders terms by bytes, as COLLATE "C" does.
                        Box::new(InvertedIndexRangeQuery::new(lower, upper))
                    } else {
                        Box::new(RangeQuery::new(lower, upper))
                    }
                }
                Pred::Prefix(prefix) => {
                    let lower = Bound::Included(Term::from_field_text(tantivy_field, prefix));
                    let upper = match byte_successor(prefix.as_bytes()) {
                        Some(bytes) => {
                            let mut t = Term::from_field_text(tantivy_field, "");
                            t.append_bytes(&bytes);
                            Bound::Excluded(t)
                        }
                        None => Bound::Unbounded,
                    };
                    Box::new(InvertedIndexRangeQuery::new(lower, upper))
                }
            }
        }
    })
}

fn map_bound(bound: &Bound<Scalar>, f: impl Fn(&Scalar) -> Term) -> Bound<Term> {
    match bound {
        Bound::Included(v) => Bound::Included(f(v)),
        Bound::Excluded(v) => Bound::Excluded(f(v)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest byte string greater than every string starting with
/// `prefix`: drop trailing `0xff` bytes and increment the last one; `None`
/// when every byte is `0xff` (no upper bound).
fn byte_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = prefix.to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return Some(bytes);
        }
    }
    None
}

#[cfg(test)]
mod tests;
