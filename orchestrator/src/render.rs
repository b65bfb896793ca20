//! Plain-text rendering of typed result values and row sets, shared by the
//! deterministic (router-mode) answers, the text sent to a model, and the CLI.

use quarry_proto::v1::{RowSet, Value, value::Kind};

/// The display text of one cell: `NULL`, numbers as written, dates as
/// `YYYY-MM-DD`, timestamps as RFC 3339 UTC, bytes as `\x` hex (PostgreSQL's
/// bytea output format).
pub fn value_text(value: &Value) -> String {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => "NULL".to_string(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        Some(Kind::Int64Value(i)) => i.to_string(),
        Some(Kind::DoubleValue(f)) => f.to_string(),
        Some(Kind::DecimalValue(s) | Kind::TextValue(s) | Kind::JsonValue(s)) => s.clone(),
        Some(Kind::BytesValue(b)) => {
            let mut out = String::with_capacity(2 + 2 * b.len());
            out.push_str("\\x");
            for byte in b {
                out.push_str(&format!("{byte:02x}"));
            }
            out
        }
        Some(Kind::DateValue(d)) => format!("{:04}-{:02}-{:02}", d.year, d.month, d.day),
        Some(Kind::TimestampValue(ts)) => {
            chrono::DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_else(|| format!("{}s", ts.seconds))
        }
    }
}

/// Escapes a cell for a Markdown table: `|` and newlines would break the row.
fn cell(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect::<String>()
        .replace('|', "\\|");
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out
}

/// The first `max_rows` rows of `rows` as a Markdown table (GitHub flavour),
/// each cell cut to `max_cell_chars` characters. One line per row, header first.
pub fn markdown_table(rows: &RowSet, max_rows: usize, max_cell_chars: usize) -> Vec<String> {
    let mut lines = Vec::with_capacity(rows.rows.len().min(max_rows) + 2);
    let header: Vec<String> = rows
        .columns
        .iter()
        .map(|c| cell(&c.name, max_cell_chars))
        .collect();
    lines.push(format!("| {} |", header.join(" | ")));
    lines.push(format!("|{}|", vec!["---"; header.len()].join("|")));
    for row in rows.rows.iter().take(max_rows) {
        let cells: Vec<String> = row
            .values
            .iter()
            .map(|v| cell(&value_text(v), max_cell_chars))
            .collect();
        lines.push(format!("| {} |", cells.join(" | ")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_proto::v1::{Column, Date, Row};

    fn v(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    #[test]
    fn values_render_in_postgres_style() {
        assert_eq!(value_text(&v(Kind::NullValue(0))), "NULL");
        assert_eq!(value_text(&Value { kind: None }), "NULL");
        assert_eq!(value_text(&v(Kind::Int64Value(-3))), "-3");
        assert_eq!(value_text(&v(Kind::DecimalValue("12.50".into()))), "12.50");
        assert_eq!(
            value_text(&v(Kind::BytesValue(vec![0xde, 0xad]))),
            "\\xdead"
        );
        let date = Date {
            year: 1851,
            month: 12,
            day: 19,
        };
        assert_eq!(value_text(&v(Kind::DateValue(date))), "1851-12-19");
        let ts = prost_types::Timestamp {
            seconds: 0,
            nanos: 0,
        };
        assert_eq!(
            value_text(&v(Kind::TimestampValue(ts))),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn markdown_table_escapes_pipes_and_caps_rows() {
        let rows = RowSet {
            columns: vec![Column {
                name: "title".into(),
                type_name: "text".into(),
                pii: false,
            }],
            rows: (0..5)
                .map(|i| Row {
                    values: vec![v(Kind::TextValue(format!("a|b\n{i}")))],
                })
                .collect(),
            truncated: false,
        };
        let lines = markdown_table(&rows, 2, 100);
        assert_eq!(
            lines,
            vec!["| title |", "|---|", "| a\\|b 0 |", "| a\\|b 1 |"]
        );
        let lines = markdown_table(&rows, 1, 2);
        assert_eq!(lines[2], "| a\\|… |");
    }
}
