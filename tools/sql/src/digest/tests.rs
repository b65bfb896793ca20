use std::time::Duration;

use chrono::NaiveDate;
use proptest::prelude::*;

use super::*;
use crate::execute::Column;

fn result(rows: Vec<Vec<Cell>>, truncated: bool, total_rows: Option<u64>) -> QueryResult {
    QueryResult {
        columns: vec![
            Column {
                name: "artist".into(),
                type_name: "text".into(),
                pii: false,
            },
            Column {
                name: "year".into(),
                type_name: "int4".into(),
                pii: false,
            },
            Column {
                name: "price".into(),
                type_name: "numeric".into(),
                pii: false,
            },
            Column {
                name: "acquired".into(),
                type_name: "date".into(),
                pii: false,
            },
        ],
        rows,
        truncated,
        total_rows,
        bytes: 0,
        elapsed: Duration::ZERO,
        sql: String::new(),
        cache: crate::cache::CacheStatus::Bypassed,
    }
}

fn rows() -> Vec<Vec<Cell>> {
    let date = |d| Cell::Date(NaiveDate::from_ymd_opt(2020, 1, d).unwrap());
    vec![
        vec![
            Cell::Text("Turner".into()),
            Cell::Int(1840),
            Cell::Decimal("9.5".into()),
            date(3),
        ],
        vec![
            Cell::Text("Blake".into()),
            Cell::Int(1795),
            Cell::Decimal("10".into()),
            date(1),
        ],
        vec![
            Cell::Text("Turner".into()),
            Cell::Int(1840),
            Cell::Null,
            date(2),
        ],
        vec![
            Cell::Text("Constable".into()),
            Cell::Null,
            Cell::Decimal("-2".into()),
            Cell::Null,
        ],
        vec![
            Cell::Text("Blake".into()),
            Cell::Int(1800),
            Cell::Decimal("10".into()),
            date(9),
        ],
    ]
}

#[test]
fn summarises_columns_deterministically() {
    let d = digest(&result(rows(), true, Some(1234)), None);
    assert_eq!(d.row_count, 1234);
    assert!(d.row_count_exact);
    assert!(d.sampled);
    let text = d.to_text();
    assert_eq!(
        text,
        "rows: 1234 (exact; statistics over the first 5)\n\
         - artist text: nulls 0, distinct 3, min Blake, max Turner, top Blake×2, Turner×2\n\
         - year int4: nulls 1, distinct 3, min 1795, max 1840, top 1840×2\n\
         - price numeric: nulls 1, distinct 3, min -2, max 10, top 10×2\n\
         - acquired date: nulls 1, distinct 4, min 2020-01-01, max 2020-01-09\n"
    );
    // byte-identical across runs and row order does not change the counts
    let mut reversed = rows();
    reversed.reverse();
    let again = digest(&result(reversed, true, Some(1234)), None);
    assert_eq!(again.to_text(), text);
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        serde_json::to_string(&d).unwrap()
    );
}

#[test]
fn says_when_the_count_is_a_lower_bound() {
    let d = digest(&result(rows(), true, None), None);
    assert_eq!(d.row_count, 5);
    assert!(!d.row_count_exact);
    assert!(
        d.to_text()
            .starts_with("rows: 5 (at least; statistics over the first 5)\n")
    );
    let d = digest(&result(rows(), false, None), None);
    assert!(d.row_count_exact);
    assert!(!d.sampled);
    assert!(d.to_text().starts_with("rows: 5 (exact)\n"));
    // the executor's own count is used
    let d = digest(&result(rows(), true, None), Some(99));
    assert_eq!((d.row_count, d.row_count_exact), (99, true));
}

#[test]
fn intervals_order_by_length_and_arrays_by_text() {
    let interval = |months, days, microseconds| Cell::Interval {
        months,
        days,
        microseconds,
    };
    let cells = [
        // 1 mon (30 days) > 29 days 23:00:00 > 2 days > 36:00:00
        interval(1, 0, 0),
        interval(0, 2, 0),
        interval(0, 29, 23 * 3_600_000_000),
        interval(0, 0, 36 * 3_600_000_000),
    ];
    let d = column_digest("span", "interval", cells.iter());
    assert_eq!(d.min.as_deref(), Some("36:00:00"));
    assert_eq!(d.max.as_deref(), Some("1 mon"));
    let cells = [
        Cell::Array(vec![Cell::Int(2)]),
        Cell::Array(vec![Cell::Int(1), Cell::Null]),
        Cell::Array(vec![Cell::Int(2)]),
    ];
    let d = column_digest("tags", "_int4", cells.iter());
    assert_eq!(d.min.as_deref(), Some("[1,null]"));
    assert_eq!(d.distinct, 2);
    assert_eq!(d.top[0].value, "[2]");
}

proptest! {
    #[test]
    fn digest_is_order_independent(values in proptest::collection::vec(0i64..6, 0..40)) {
        let make = |vs: &[i64]| QueryResult {
            columns: vec![Column { name: "v".into(), type_name: "int8".into(), pii: false }],
            rows: vs.iter().map(|v| vec![Cell::Int(*v)]).collect(),
            truncated: false,
            total_rows: None,
            bytes: 0,
            elapsed: Duration::ZERO,
            sql: String::new(),
            cache: crate::cache::CacheStatus::Bypassed,
        };
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let a = digest(&make(&values), None);
        let b = digest(&make(&sorted), None);
        prop_assert_eq!(a.to_text(), b.to_text());
        prop_assert!(a.columns[0].top.len() <= TOP_K);
        prop_assert_eq!(a.row_count, values.len() as u64);
    }
}
