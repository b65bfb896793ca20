use chrono::NaiveDate;

use super::*;

fn col(name: &str, type_name: &str) -> Column {
    Column {
        name: name.into(),
        type_name: type_name.into(),
        pii: false,
    }
}

fn mark(spec: &Value) -> &str {
    spec["mark"]["type"].as_str().unwrap()
}

#[test]
fn time_series_is_a_line() {
    let columns = [col("day", "date"), col("visits", "int8")];
    let rows: Vec<Vec<Cell>> = (1..=3)
        .map(|d| {
            vec![
                Cell::Date(NaiveDate::from_ymd_opt(2024, 1, d).unwrap()),
                Cell::Int(i64::from(d) * 10),
            ]
        })
        .collect();
    let spec = chart_hint(&columns, &rows).unwrap();
    assert_eq!(spec["$schema"], VEGA_LITE_SCHEMA);
    assert_eq!(mark(&spec), "line");
    assert_eq!(spec["encoding"]["x"]["field"], "day");
    assert_eq!(spec["encoding"]["x"]["type"], "temporal");
    assert_eq!(spec["encoding"]["y"]["field"], "visits");
    assert_eq!(
        spec["data"]["values"][0],
        json!({"day": "2024-01-01", "visits": 10})
    );
    // a year-like integer column is time too
    let columns = [col("year", "int4"), col("total", "numeric")];
    let rows = vec![
        vec![Cell::Int(1999), Cell::Decimal("1.5".into())],
        vec![Cell::Int(2000), Cell::Decimal("2".into())],
    ];
    let spec = chart_hint(&columns, &rows).unwrap();
    assert_eq!(mark(&spec), "line");
    assert_eq!(spec["encoding"]["x"]["type"], "ordinal");
    assert_eq!(spec["data"]["values"][0]["total"], json!(1.5));
}

#[test]
fn few_parts_of_a_whole_are_a_pie_more_are_bars() {
    let columns = [col("medium", "text"), col("n", "int8")];
    let rows: Vec<Vec<Cell>> = ["oil", "watercolour", "ink"]
        .iter()
        .zip([5, 3, 1])
        .map(|(m, n)| vec![Cell::Text((*m).into()), Cell::Int(n)])
        .collect();
    let spec = chart_hint(&columns, &rows).unwrap();
    assert_eq!(mark(&spec), "arc");
    assert_eq!(spec["encoding"]["theta"]["field"], "n");
    assert_eq!(spec["encoding"]["color"]["field"], "medium");

    let many: Vec<Vec<Cell>> = (0..10)
        .map(|i| vec![Cell::Text(format!("c{i}")), Cell::Int(i)])
        .collect();
    let spec = chart_hint(&columns, &many).unwrap();
    assert_eq!(mark(&spec), "bar");
    assert_eq!(spec["encoding"]["x"]["field"], "medium");
    assert_eq!(spec["encoding"]["y"]["field"], "n");
    // negative values are not parts of a whole
    let negative = vec![
        vec![Cell::Text("a".into()), Cell::Int(-1)],
        vec![Cell::Text("b".into()), Cell::Int(2)],
    ];
    assert_eq!(mark(&chart_hint(&columns, &negative).unwrap()), "bar");
}

#[test]
fn two_measures_are_a_scatter() {
    let columns = [col("height", "float8"), col("width", "float8")];
    let rows = vec![
        vec![Cell::Float(1.0), Cell::Float(2.0)],
        vec![Cell::Float(3.0), Cell::Float(1.5)],
    ];
    let spec = chart_hint(&columns, &rows).unwrap();
    assert_eq!(mark(&spec), "point");
    assert_eq!(spec["encoding"]["x"]["field"], "height");
    assert_eq!(spec["encoding"]["y"]["field"], "width");
}

#[test]
fn other_results_get_no_chart() {
    // a single value
    assert!(chart_hint(&[col("count", "int8")], &[vec![Cell::Int(3)]]).is_none());
    // only text
    let columns = [col("title", "text"), col("artist", "text")];
    let rows = vec![vec![Cell::Text("a".into()), Cell::Text("b".into())]];
    assert!(chart_hint(&columns, &rows).is_none());
    // no rows
    assert!(chart_hint(&[col("d", "date"), col("n", "int4")], &[]).is_none());
    // a column named year with values that are not years is a measure
    let columns = [col("year", "int4"), col("label", "json")];
    let rows = vec![vec![Cell::Int(3), Cell::Json(json!({}))]];
    assert!(chart_hint(&columns, &rows).is_none());
}

#[test]
fn inline_data_is_capped() {
    let columns = [col("x", "int4"), col("y", "int4")];
    let rows: Vec<Vec<Cell>> = (0..2_000)
        .map(|i| vec![Cell::Int(i), Cell::Int(i)])
        .collect();
    let spec = chart_hint(&columns, &rows).unwrap();
    assert_eq!(
        spec["data"]["values"].as_array().unwrap().len(),
        MAX_INLINE_ROWS
    );
}
