//! A deterministic digest of a query result, so an answer built on a
//! truncated result knows what it is missing (issue item "large results").
//!
//! [`digest`] summarises the rows that came back: the row count (exact, or
//! "at least" when the executor truncated and could not count), and per
//! column its type, null count, min/max, distinct count and the most
//! frequent values. Everything is computed over the returned rows only, and
//! the digest says so ([`Digest::sampled`]). The same input always gives the
//! same digest, byte for byte, in JSON and in [`Digest::to_text`].

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::execute::{Cell, QueryResult};

/// How many most-frequent values each column reports.
pub const TOP_K: usize = 5;

/// Longest rendering of a single value in a digest, in characters.
const MAX_VALUE_CHARS: usize = 60;

/// Summary of a query result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// Rows the query produces: exact when `row_count_exact`, else a lower
    /// bound (the rows returned).
    pub row_count: u64,
    /// Whether `row_count` is exact.
    pub row_count_exact: bool,
    /// Rows the column statistics are computed over (the returned rows).
    pub rows_summarised: u64,
    /// True when the statistics cover only part of the result.
    pub sampled: bool,
    /// One summary per column, in result order.
    pub columns: Vec<ColumnDigest>,
}

/// Summary of one column over the returned rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDigest {
    /// Column name.
    pub name: String,
    /// PostgreSQL type name.
    pub type_name: String,
    /// NULL cells.
    pub nulls: u64,
    /// Distinct non-NULL values.
    pub distinct: u64,
    /// Smallest non-NULL value (numbers numerically, intervals by length
    /// with PostgreSQL's 30-day months, dates and times chronologically,
    /// text and arrays by bytes of their text), rendered as text.
    pub min: Option<String>,
    /// Largest non-NULL value, rendered as text.
    pub max: Option<String>,
    /// Up to [`TOP_K`] most frequent non-NULL values with their counts,
    /// most frequent first; ties by value text, ascending. Empty when every
    /// value occurs once (nothing is "top" then).
    pub top: Vec<TopValue>,
}

/// A value and how many rows have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopValue {
    /// The value as text (see [`cell_text`]).
    pub value: String,
    /// Rows with this value.
    pub count: u64,
}

/// Summarise `result`. `total_rows` is the exact total when known (the
/// executor's [`QueryResult::total_rows`] is used when this is `None`).
pub fn digest(result: &QueryResult, total_rows: Option<u64>) -> Digest {
    let returned = result.rows.len() as u64;
    let total = total_rows
        .or(result.total_rows)
        .or((!result.truncated).then_some(returned));
    let columns = result
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let cells = result.rows.iter().filter_map(|row| row.get(i));
            column_digest(&column.name, &column.type_name, cells)
        })
        .collect();
    Digest {
        row_count: total.unwrap_or(returned).max(returned),
        row_count_exact: total.is_some(),
        rows_summarised: returned,
        sampled: total.is_none_or(|t| t > returned),
        columns,
    }
}

/// A comparable key for min/max: numbers, then time points, then text.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Number(f64),
    Text(String),
}

fn key(cell: &Cell, text: &str) -> Option<Key> {
    match cell {
        Cell::Null => None,
        Cell::Int(i) => Some(Key::Number(*i as f64)),
        Cell::Float(f) if f.is_nan() => None,
        Cell::Float(f) => Some(Key::Number(*f)),
        Cell::Decimal(d) => d
            .parse::<f64>()
            .ok()
            .filter(|f| !f.is_nan())
            .map(Key::Number),
        // PostgreSQL compares intervals as if a month were 30 days and a
        // day 24 hours (`interval_cmp_value` in `utils/adt/timestamp.c`)
        Cell::Interval {
            months,
            days,
            microseconds,
        } => Some(Key::Number(
            (f64::from(*months) * 30.0 + f64::from(*days)) * 86_400e6 + *microseconds as f64,
        )),
        // ISO dates and times order correctly as text
        Cell::Bool(_)
        | Cell::Text(_)
        | Cell::Bytes(_)
        | Cell::Date(_)
        | Cell::Timestamp(_)
        | Cell::TimestampTz(_)
        | Cell::Time(_)
        | Cell::Array(_)
        | Cell::Json(_) => Some(Key::Text(text.to_owned())),
    }
}

/// A cell as digest text: JSON scalars unquoted, long values cut.
pub fn cell_text(cell: &Cell) -> String {
    let text = match cell.to_json() {
        serde_json::Value::String(s) => s,
        other @ serde_json::Value::Null
        | other @ serde_json::Value::Bool(_)
        | other @ serde_json::Value::Number(_)
        | other @ serde_json::Value::Array(_)
        | other @ serde_json::Value::Object(_) => other.to_string(),
    };
    if text.chars().count() > MAX_VALUE_CHARS {
        let mut cut: String = text.chars().take(MAX_VALUE_CHARS - 1).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

fn column_digest<'a>(
    name: &str,
    type_name: &str,
    cells: impl Iterator<Item = &'a Cell>,
) -> ColumnDigest {
    let mut nulls = 0u64;
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut min: Option<(Key, String)> = None;
    let mut max: Option<(Key, String)> = None;
    for cell in cells {
        if matches!(cell, Cell::Null) {
            nulls += 1;
            continue;
        }
        let text = cell_text(cell);
        if let Some(k) = key(cell, &text) {
            // equal keys (`10` and `10.0`) are ordered by their text, so
            // the row order does not matter
            if min
                .as_ref()
                .is_none_or(|(m, t)| k < *m || (k == *m && text < *t))
            {
                min = Some((k.clone(), text.clone()));
            }
            if max
                .as_ref()
                .is_none_or(|(m, t)| k > *m || (k == *m && text > *t))
            {
                max = Some((k, text.clone()));
            }
        }
        *counts.entry(text).or_default() += 1;
    }
    let distinct = counts.len() as u64;
    let mut top: Vec<TopValue> = counts
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .map(|(value, count)| TopValue { value, count })
        .collect();
    top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    top.truncate(TOP_K);
    ColumnDigest {
        name: name.to_owned(),
        type_name: type_name.to_owned(),
        nulls,
        distinct,
        min: min.map(|(_, t)| t),
        max: max.map(|(_, t)| t),
        top,
    }
}

impl Digest {
    /// Compact text for a model prompt, one line per column, e.g.
    ///
    /// ```text
    /// rows: 1234 (exact; statistics over the first 100)
    /// - year int4: nulls 0, distinct 12, min 1990, max 2001, top 1999×20, 2000×18
    /// ```
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let exactness = if self.row_count_exact {
            "exact"
        } else {
            "at least"
        };
        let _ = write!(out, "rows: {} ({exactness}", self.row_count);
        if self.sampled {
            let _ = write!(out, "; statistics over the first {}", self.rows_summarised);
        }
        out.push_str(")\n");
        for c in &self.columns {
            let _ = write!(
                out,
                "- {} {}: nulls {}, distinct {}",
                c.name, c.type_name, c.nulls, c.distinct
            );
            if let (Some(min), Some(max)) = (&c.min, &c.max) {
                let _ = write!(out, ", min {min}, max {max}");
            }
            if !c.top.is_empty() {
                let top: Vec<String> = c
                    .top
                    .iter()
                    .map(|t| format!("{}×{}", t.value, t.count))
                    .collect();
                let _ = write!(out, ", top {}", top.join(", "));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests;
