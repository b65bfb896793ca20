//! Chart hints: a Vega-Lite v5 specification for results that chart well.
//!
//! [`chart_hint`] looks at the column types and values and picks, in order:
//!
//! 1. **line** — a time column (`date`, `timestamp`, `timestamptz`, or an
//!    integer column named like a year/month with values in 1000..=9999 for
//!    years) plus at least one numeric measure: x is time, y the first
//!    measure;
//! 2. **arc (pie)** — one category column and one measure, at most
//!    [`MAX_PIE_PARTS`] rows, all measure values non-negative and not all zero;
//! 3. **bar** — one category column and a measure (more parts, or negative
//!    values);
//! 4. **point (scatter)** — two numeric measures and no category;
//! 5. otherwise no chart (`None`): a single value, only text, only one
//!    numeric column, or no rows.
//!
//! The spec carries the data inline (`"data": {"values": [...]}`) with at
//! most [`MAX_INLINE_ROWS`] rows, so it renders as is; a client holding the
//! full result may replace `data` with `{"name": "result"}` and bind it.
//! Field names are the result's column names, so the spec refers to them.
//! Vega-Lite reference: <https://vega.github.io/vega-lite/docs/>.

use serde_json::{Value, json};

use crate::execute::{Cell, Column};

/// Vega-Lite v5 schema URL.
pub const VEGA_LITE_SCHEMA: &str = "https://vega.github.io/schema/vega-lite/v5.json";
/// Most rows carried inline in a spec.
pub const MAX_INLINE_ROWS: usize = 500;
/// Most parts a pie chart may have.
pub const MAX_PIE_PARTS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Time,
    Measure,
    Category,
    Other,
}

fn is_numeric(type_name: &str) -> bool {
    matches!(
        type_name,
        "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" | "oid"
    )
}

fn is_year_like(column: &Column, values: &[&Cell]) -> bool {
    let name = column.name.to_lowercase();
    let named =
        name == "year" || name.ends_with("_year") || name.starts_with("year_") || name == "yr";
    named
        && matches!(column.type_name.as_str(), "int2" | "int4" | "int8")
        && values.iter().all(|c| {
            matches!(c, Cell::Null) || matches!(c, Cell::Int(y) if (1000..=9999).contains(y))
        })
}

fn role(column: &Column, values: &[&Cell]) -> Role {
    match column.type_name.as_str() {
        "date" | "timestamp" | "timestamptz" => Role::Time,
        _ if is_year_like(column, values) => Role::Time,
        t if is_numeric(t) => Role::Measure,
        "text" | "varchar" | "bpchar" | "name" | "bool" | "citext" | "char" => Role::Category,
        _ => Role::Other,
    }
}

fn number(cell: &Cell) -> Option<f64> {
    match cell {
        Cell::Int(i) => Some(*i as f64),
        Cell::Float(f) => Some(*f),
        Cell::Decimal(d) => d.parse().ok(),
        Cell::Null
        | Cell::Bool(_)
        | Cell::Text(_)
        | Cell::Bytes(_)
        | Cell::Date(_)
        | Cell::Timestamp(_)
        | Cell::TimestampTz(_)
        | Cell::Time(_)
        | Cell::Interval { .. }
        | Cell::Array(_)
        | Cell::Json(_) => None,
    }
}

/// A Vega-Lite v5 spec for `rows` of `columns`, or `None` when the result
/// is not chart-friendly (see the module docs for the rules).
pub fn chart_hint(columns: &[Column], rows: &[Vec<Cell>]) -> Option<Value> {
    if rows.is_empty() || columns.len() < 2 {
        return None;
    }
    let roles: Vec<Role> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let values: Vec<&Cell> = rows.iter().filter_map(|r| r.get(i)).collect();
            role(c, &values)
        })
        .collect();
    let find = |want: Role| roles.iter().position(|r| *r == want);
    let measures: Vec<usize> = (0..roles.len())
        .filter(|&i| roles[i] == Role::Measure)
        .collect();
    let categories: Vec<usize> = (0..roles.len())
        .filter(|&i| roles[i] == Role::Category)
        .collect();
    let field = |i: usize| columns[i].name.as_str();

    let (mark, encoding) = if let (Some(t), Some(&m)) = (find(Role::Time), measures.first()) {
        let time_type = if roles[t] == Role::Time && is_numeric(&columns[t].type_name) {
            "ordinal"
        } else {
            "temporal"
        };
        let mut encoding = json!({
            "x": {"field": field(t), "type": time_type},
            "y": {"field": field(m), "type": "quantitative"},
        });
        if let Some(&c) = categories.first() {
            encoding["color"] = json!({"field": field(c), "type": "nominal"});
        }
        (json!({"type": "line", "point": true}), encoding)
    } else if let (Some(&c), Some(&m)) = (categories.first(), measures.first()) {
        let values: Vec<Option<f64>> = rows.iter().map(|r| r.get(m).and_then(number)).collect();
        let whole = rows.len() <= MAX_PIE_PARTS
            && categories.len() == 1
            && measures.len() == 1
            && values.iter().all(|v| v.is_some_and(|v| v >= 0.0))
            && values.iter().any(|v| v.is_some_and(|v| v > 0.0));
        if whole {
            (
                json!({"type": "arc"}),
                json!({
                    "theta": {"field": field(m), "type": "quantitative"},
                    "color": {"field": field(c), "type": "nominal"},
                }),
            )
        } else {
            (
                json!({"type": "bar"}),
                json!({
                    "x": {"field": field(c), "type": "nominal", "sort": "-y"},
                    "y": {"field": field(m), "type": "quantitative"},
                }),
            )
        }
    } else if categories.is_empty() && measures.len() >= 2 {
        (
            json!({"type": "point"}),
            json!({
                "x": {"field": field(measures[0]), "type": "quantitative"},
                "y": {"field": field(measures[1]), "type": "quantitative"},
            }),
        )
    } else {
        return None;
    };
    let values: Vec<Value> = rows
        .iter()
        .take(MAX_INLINE_ROWS)
        .map(|row| {
            let mut object = serde_json::Map::new();
            for (column, cell) in columns.iter().zip(row) {
                let value = match number(cell) {
                    Some(n) if matches!(cell, Cell::Decimal(_)) => json!(n),
                    _ => cell.to_json(),
                };
                object.insert(column.name.clone(), value);
            }
            Value::Object(object)
        })
        .collect();
    Some(json!({
        "$schema": VEGA_LITE_SCHEMA,
        "data": {"values": values},
        "mark": mark,
        "encoding": encoding,
    }))
}

#[cfg(test)]
mod tests;
