//! Result equality for the oracle check: a query run directly on PostgreSQL
//! vs. the same query through validate → rewrite → execute.
//!
//! Values are compared by type, not by text: the direct run reads
//! PostgreSQL's text output and parses it by the column's type, the pipeline
//! yields typed [`Cell`]s, and both become a [`Value`]. Floating-point and
//! `numeric` values are equal within a relative tolerance of
//! [`FLOAT_TOLERANCE`] (a plan with a limit may add floats in another order).
//! Results are compared as multisets of rows, or as sequences when the
//! query's outermost level has `ORDER BY`.

use std::cmp::Ordering;

use chrono::SecondsFormat;
use quarry_sql::Cell;
use tokio_postgres::types::Type;

/// Relative tolerance for floating-point equality:
/// `|a - b| <= FLOAT_TOLERANCE * max(1, |a|, |b|)`.
pub const FLOAT_TOLERANCE: f64 = 1e-9;

/// A result value, normalised for comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// `bool`.
    Bool(bool),
    /// Integer types.
    Int(i64),
    /// `float4`, `float8`, `numeric`.
    Num(f64),
    /// Everything else, in PostgreSQL's text form.
    Text(String),
}

impl Value {
    /// Parses PostgreSQL's text output `text` of a column of type `ty`.
    pub fn from_pg_text(text: Option<&str>, ty: &Type) -> Value {
        let Some(text) = text else {
            return Value::Null;
        };
        match *ty {
            Type::BOOL => Value::Bool(text == "t"),
            Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => text
                .parse()
                .map_or_else(|_| Value::Text(text.to_owned()), Value::Int),
            Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => text
                .parse()
                .map_or_else(|_| Value::Text(text.to_owned()), Value::Num),
            _ => Value::Text(text.to_owned()),
        }
    }

    /// The executor's typed cell, in the same normal form. Dates and
    /// timestamps are rendered as PostgreSQL prints them with the default
    /// `DateStyle` (ISO).
    pub fn from_cell(cell: &Cell) -> Value {
        match cell {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Int(i) => Value::Int(*i),
            Cell::Float(f) => Value::Num(*f),
            Cell::Decimal(s) => s
                .parse()
                .map_or_else(|_| Value::Text(s.clone()), Value::Num),
            Cell::Text(s) => Value::Text(s.clone()),
            Cell::Bytes(b) => {
                let mut hex = String::from("\\x");
                for byte in b {
                    hex.push_str(&format!("{byte:02x}"));
                }
                Value::Text(hex)
            }
            Cell::Date(d) => Value::Text(d.format("%Y-%m-%d").to_string()),
            Cell::Timestamp(t) => Value::Text(t.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
            Cell::TimestampTz(t) => Value::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Cell::Json(v) => Value::Text(v.to_string()),
            // time, interval and arrays: PostgreSQL's text form (`to_json`
            // renders them as the server prints them)
            Cell::Time(_) | Cell::Interval { .. } | Cell::Array(_) => match cell.to_json() {
                serde_json::Value::String(s) => Value::Text(s),
                other @ (serde_json::Value::Null
                | serde_json::Value::Bool(_)
                | serde_json::Value::Number(_)
                | serde_json::Value::Array(_)
                | serde_json::Value::Object(_)) => Value::Text(other.to_string()),
            },
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Num(f) => Some(*f),
            Value::Null | Value::Bool(_) | Value::Text(_) => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Num(_) => 2,
            Value::Text(_) => 3,
        }
    }
}

/// Equality with the float tolerance; an integer equals a float of the same value.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x == y,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => {
                x == y
                    || (x.is_nan() && y.is_nan())
                    || (x - y).abs() <= FLOAT_TOLERANCE * 1f64.max(x.abs()).max(y.abs())
            }
            _ => a == b,
        },
    }
}

fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => a.rank().cmp(&b.rank()),
        },
    }
}

fn cmp_rows(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let ordering = cmp_values(x, y);
        if ordering.is_ne() {
            return ordering;
        }
    }
    a.len().cmp(&b.len())
}

fn rows_equal(a: &[Vec<Value>], b: &[Vec<Value>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(u, v)| values_equal(u, v)))
}

/// How two results compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Equal (as sequences when ordered, else as multisets).
    Equal,
    /// Different numbers of columns.
    ColumnCount,
    /// Different numbers of rows.
    RowCount,
    /// An ordered result with the same rows in another order (ties in the
    /// `ORDER BY` key broken differently count here too).
    Order,
    /// Different rows.
    Rows,
}

/// Compares the direct result with the pipeline's.
pub fn compare(
    direct_columns: usize,
    direct: &[Vec<Value>],
    piped_columns: usize,
    piped: &[Vec<Value>],
    ordered: bool,
) -> Comparison {
    if direct_columns != piped_columns {
        return Comparison::ColumnCount;
    }
    if direct.len() != piped.len() {
        return Comparison::RowCount;
    }
    if ordered && rows_equal(direct, piped) {
        return Comparison::Equal;
    }
    let mut a = direct.to_vec();
    let mut b = piped.to_vec();
    a.sort_by(|x, y| cmp_rows(x, y));
    b.sort_by(|x, y| cmp_rows(x, y));
    match (rows_equal(&a, &b), ordered) {
        (true, false) => Comparison::Equal,
        (true, true) => Comparison::Order,
        (false, _) => Comparison::Rows,
    }
}
