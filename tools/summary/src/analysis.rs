//! Deterministic analysis: a figure's rows → its facts, a JSON value, as the
//! [`crate::definition`] module documentation specifies (gap-filling,
//! totals, ranges, peaks, least-squares trend, period-over-period change,
//! group totals and shares, breakdown top-k).
//!
//! Pure functions, no I/O. Rows are put in a canonical order first (series by
//! period, then series label, then value; breakdowns by label, then value),
//! and every sum is taken in that order, so the facts do not depend on the
//! order the database returned rows in: the same rows in any order give
//! byte-identical JSON. Rows repeating a period (and series) or a label are
//! added together.
//!
//! Numbers: integral results are JSON integers; anything else is rounded
//! half away from zero to one decimal ([`round1`]); percentages are computed
//! as `part × 1000 / whole` before rounding to tenths ([`pct1`]), so that a
//! share that is exactly a tie (1/16 = 6.25 %) rounds the documented way.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::definition::{Computation, FigureConfig, Shape};

/// Most periods a gap-filled series may have (protects against a stray
/// period like 0 or 9999 in a yearly series).
pub const MAX_PERIODS: usize = 10_000;

/// One row of a series figure.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRow {
    /// The `period` column (e.g. a year, or a decade's first year).
    pub period: i64,
    /// The `series` column of a grouped series (`None` for an ungrouped
    /// series; a NULL label is read as `"unknown"`).
    pub series: Option<String>,
    /// The `value` column (a NULL value is read as 0).
    pub value: f64,
}

/// One row of a breakdown figure.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakdownRow {
    /// The `label` column; NULL becomes `"unknown"`.
    pub label: Option<String>,
    /// The `value` column (a NULL value is read as 0).
    pub value: f64,
}

/// The rows of one figure, as fetched.
#[derive(Debug, Clone, PartialEq)]
pub enum FigureRows {
    /// A `values` figure: its one row as a JSON object, `None` without a row.
    Values(Option<Value>),
    /// A `series` figure; `grouped` when the query has a `series` column.
    Series {
        /// Whether the rows carry a series label.
        grouped: bool,
        /// The rows.
        rows: Vec<SeriesRow>,
    },
    /// A `breakdown` figure.
    Breakdown(Vec<BreakdownRow>),
}

/// Why a figure's facts cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AnalysisError(pub String);

/// `x` rounded half away from zero to one decimal.
pub fn round1(x: f64) -> f64 {
    let r = (x * 10.0).round() / 10.0;
    if r == 0.0 { 0.0 } else { r }
}

/// `part / whole` as a percentage rounded half away from zero to one
/// decimal, `None` when `whole` is 0.
pub fn pct1(part: f64, whole: f64) -> Option<f64> {
    if whole == 0.0 {
        return None;
    }
    let r = (part * 1000.0 / whole).round() / 10.0;
    Some(if r == 0.0 { 0.0 } else { r })
}

/// A number as it appears in facts: a JSON integer when integral (within
/// ±2^53), else rounded to one decimal (an integer again if that makes it
/// integral). Non-finite numbers become `null` (the builder refuses them
/// before they get here).
pub fn num(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let r = if x.fract() == 0.0 { x } else { round1(x) };
    if r.fract() == 0.0 && r.abs() < 9_007_199_254_740_992.0 {
        // integral and exactly representable: the cast is exact
        json!(r as i64)
    } else {
        json!(r)
    }
}

fn opt_num(x: Option<f64>) -> Value {
    x.map_or(Value::Null, num)
}

/// The facts of one figure (see the [`crate::definition`] module docs).
///
/// # Errors
/// [`AnalysisError`] when a value is not finite, a series would span more
/// than [`MAX_PERIODS`] periods, a `values` row is not a JSON object, the
/// rows do not fit the figure's shape, or a computation needs a grouped
/// series and the series is not grouped.
pub fn figure_facts(figure: &FigureConfig, rows: &FigureRows) -> Result<Value, AnalysisError> {
    match (figure.shape, rows) {
        (Shape::Values, FigureRows::Values(row)) => match row {
            None => Ok(Value::Null),
            Some(Value::Object(map)) => Ok(Value::Object(
                map.iter().map(|(k, v)| (k.clone(), normalise(v))).collect(),
            )),
            Some(other) => Err(AnalysisError(format!(
                "a values row must be a JSON object, got {other}"
            ))),
        },
        (Shape::Series, FigureRows::Series { grouped, rows }) => {
            series_facts(figure, *grouped, rows)
        }
        (Shape::Breakdown, FigureRows::Breakdown(rows)) => breakdown_facts(figure, rows),
        _ => Err(AnalysisError(
            "the rows do not match the figure's shape".into(),
        )),
    }
}

/// Numbers in a `values` row in fact form ([`num`]), recursively.
fn normalise(value: &Value) -> Value {
    match value {
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(_), _, _) | (_, Some(_), _) => value.clone(),
            (_, _, Some(f)) => num(f),
            _ => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(normalise).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
        }
        Value::Null | Value::Bool(_) | Value::String(_) => value.clone(),
    }
}

fn check_finite(value: f64) -> Result<(), AnalysisError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(AnalysisError(format!(
            "value {value} is not a finite number"
        )))
    }
}

/// Period totals, gap-filled: every period of `first + k × step` up to the
/// last period is present (0 when missing), plus any off-grid period the
/// data has.
fn gap_fill(totals: &BTreeMap<i64, f64>, step: i64) -> Result<Vec<(i64, f64)>, AnalysisError> {
    let (Some((&first, _)), Some((&last, _))) = (totals.first_key_value(), totals.last_key_value())
    else {
        return Ok(Vec::new());
    };
    let span = i128::from(last) - i128::from(first);
    if span / i128::from(step) + 1 > MAX_PERIODS as i128 {
        return Err(AnalysisError(format!(
            "the series spans {first} to {last} in steps of {step}: more than {MAX_PERIODS} periods"
        )));
    }
    let mut filled = totals.clone();
    let mut p = first;
    while p <= last {
        filled.entry(p).or_insert(0.0);
        match p.checked_add(step) {
            Some(next) => p = next,
            None => break,
        }
    }
    Ok(filled.into_iter().collect())
}

fn series_facts(
    figure: &FigureConfig,
    grouped: bool,
    rows: &[SeriesRow],
) -> Result<Value, AnalysisError> {
    let step = figure.step.unwrap_or(1);
    if step <= 0 {
        return Err(AnalysisError(format!("step must be > 0, got {step}")));
    }
    for row in rows {
        check_finite(row.value)?;
    }
    if !grouped
        && figure
            .compute
            .iter()
            .any(|c| matches!(c, Computation::Groups | Computation::Shares))
    {
        return Err(AnalysisError(
            "groups and shares need a grouped series (a `series` column)".into(),
        ));
    }
    // canonical order: period, series, value
    let mut sorted: Vec<&SeriesRow> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        a.period
            .cmp(&b.period)
            .then_with(|| a.series.cmp(&b.series))
            .then_with(|| a.value.total_cmp(&b.value))
    });
    // (period, series) → value, summed in canonical order
    let mut cells: BTreeMap<(i64, String), f64> = BTreeMap::new();
    let mut totals: BTreeMap<i64, f64> = BTreeMap::new();
    for row in &sorted {
        let label = if grouped {
            row.series.clone().unwrap_or_else(|| "unknown".to_owned())
        } else {
            String::new()
        };
        *cells.entry((row.period, label)).or_insert(0.0) += row.value;
    }
    for ((period, _), value) in &cells {
        *totals.entry(*period).or_insert(0.0) += value;
    }
    let points = gap_fill(&totals, step)?;

    let mut facts = Map::new();
    if grouped {
        facts.insert(
            "points".into(),
            Value::Array(
                cells
                    .iter()
                    .map(|((period, label), value)| json!([period, label, num(*value)]))
                    .collect(),
            ),
        );
    } else {
        facts.insert(
            "points".into(),
            Value::Array(
                points
                    .iter()
                    .map(|(period, value)| json!([period, num(*value)]))
                    .collect(),
            ),
        );
    }
    let total: f64 = points.iter().map(|(_, v)| v).sum();
    let mut compute = figure.compute.clone();
    compute.sort();
    compute.dedup();
    for c in compute {
        match c {
            Computation::Total => {
                facts.insert("total".into(), num(total));
            }
            Computation::Range => {
                facts.insert("range".into(), range(&points));
            }
            Computation::Peak => {
                facts.insert("peak".into(), peak(&points, total));
            }
            Computation::Slope => {
                facts.insert("slope".into(), slope_facts(&points, step));
            }
            Computation::Changes => {
                facts.insert("changes".into(), changes(&points));
            }
            Computation::Groups => {
                facts.insert("groups".into(), groups(&cells));
            }
            Computation::Shares => {
                let focus = figure.focus.as_deref().unwrap_or_default();
                facts.insert("shares".into(), shares(&cells, &points, focus, step));
            }
        }
    }
    Ok(Value::Object(facts))
}

/// `{first, last}`: the first and last periods with a non-zero value.
fn range(points: &[(i64, f64)]) -> Value {
    let mut non_zero = points.iter().filter(|(_, v)| *v != 0.0);
    match (non_zero.next(), non_zero.next_back()) {
        (Some((first, _)), Some((last, _))) => json!({"first": first, "last": last}),
        (Some((only, _)), None) => json!({"first": only, "last": only}),
        _ => Value::Null,
    }
}

/// `{period, value, share_pct}` of the largest value (earliest on ties).
fn peak(points: &[(i64, f64)], total: f64) -> Value {
    let mut best: Option<(i64, f64)> = None;
    for &(period, value) in points {
        if best.is_none_or(|(_, v)| value > v) {
            best = Some((period, value));
        }
    }
    match best {
        Some((period, value)) => json!({
            "period": period,
            "value": num(value),
            "share_pct": opt_num(pct1(value, total)),
        }),
        None => Value::Null,
    }
}

/// The ordinary least-squares slope of `y` on `x`:
///
/// `b = Σ (xᵢ − x̄)(yᵢ − ȳ) / Σ (xᵢ − x̄)²`
///
/// (NIST/SEMATECH e-Handbook of Statistical Methods, §4.1.4.1 "Linear Least
/// Squares Regression"; any regression text, e.g. Montgomery, Peck & Vining,
/// *Introduction to Linear Regression Analysis*, §2.2.1). Centred sums keep
/// large x (years) from cancelling. Returns `(b, ȳ)`, or `None` with fewer
/// than two points or when every x is the same.
pub fn ols_slope(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|(x, _)| x).sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in points {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    if sxx == 0.0 {
        return None;
    }
    Some((sxy / sxx, mean_y))
}

/// `{per_step, direction}` of a (gap-filled) series; `null` with fewer than
/// three periods. The direction compares the fitted change over the span,
/// `b × (last − first)` (= `per_step × (n − 1)` on a regular grid), with
/// the mean value's magnitude: ≥ 25 % rising, ≤ −25 % falling, else flat. A
/// mean of 0 judges by the sign of the change alone.
fn slope_facts(points: &[(i64, f64)], step: i64) -> Value {
    if points.len() < 3 {
        return Value::Null;
    }
    let xy: Vec<(f64, f64)> = points.iter().map(|(p, v)| (*p as f64, *v)).collect();
    let Some((b, mean)) = ols_slope(&xy) else {
        return Value::Null;
    };
    let span = (points[points.len() - 1].0 - points[0].0) as f64;
    let fitted = b * span;
    let direction = if mean == 0.0 {
        direction_of(fitted, f64::MIN_POSITIVE)
    } else {
        direction_of(fitted / mean.abs(), 0.25)
    };
    json!({"per_step": num(b * step as f64), "direction": direction})
}

/// `"rising"` when `change ≥ threshold`, `"falling"` when `change ≤ −threshold`, else `"flat"`.
fn direction_of(change: f64, threshold: f64) -> &'static str {
    if change >= threshold {
        "rising"
    } else if change <= -threshold {
        "falling"
    } else {
        "flat"
    }
}

/// `{steps, largest_rise, largest_fall}`.
fn changes(points: &[(i64, f64)]) -> Value {
    let mut steps = Vec::new();
    let mut rise: Option<(i64, f64)> = None;
    let mut fall: Option<(i64, f64)> = None;
    for pair in points.windows(2) {
        let (_, before) = pair[0];
        let (period, value) = pair[1];
        let change = value - before;
        steps.push(json!({
            "period": period,
            "value": num(value),
            "change": num(change),
            "change_pct": opt_num(pct1(change, before.abs())),
        }));
        if change > 0.0 && rise.is_none_or(|(_, c)| change > c) {
            rise = Some((period, change));
        }
        if change < 0.0 && fall.is_none_or(|(_, c)| change < c) {
            fall = Some((period, change));
        }
    }
    let extreme = |e: Option<(i64, f64)>| {
        e.map_or(
            Value::Null,
            |(period, change)| json!({"period": period, "change": num(change)}),
        )
    };
    json!({
        "steps": steps,
        "largest_rise": extreme(rise),
        "largest_fall": extreme(fall),
    })
}

/// `[{label, value, share_pct}]` of every group, largest first (then by label).
fn groups(cells: &BTreeMap<(i64, String), f64>) -> Value {
    let mut by_label: BTreeMap<&str, f64> = BTreeMap::new();
    for ((_, label), value) in cells {
        *by_label.entry(label.as_str()).or_insert(0.0) += value;
    }
    let grand: f64 = by_label.values().sum();
    let mut list: Vec<(&str, f64)> = by_label.into_iter().collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    Value::Array(
        list.into_iter()
            .map(|(label, value)| {
                json!({"label": label, "value": num(value), "share_pct": opt_num(pct1(value, grand))})
            })
            .collect(),
    )
}

/// The focus group's share of each period's total (periods totalling 0 are
/// skipped). `first`, `last`, `peak` and `change_pp` use the rounded shares,
/// so a text quoting them adds up; the slope is fitted to the unrounded ones.
fn shares(
    cells: &BTreeMap<(i64, String), f64>,
    totals: &[(i64, f64)],
    focus: &str,
    step: i64,
) -> Value {
    let mut exact: Vec<(i64, f64)> = Vec::new();
    let mut rounded: Vec<(i64, f64)> = Vec::new();
    for &(period, total) in totals {
        if total == 0.0 {
            continue;
        }
        let part = cells
            .get(&(period, focus.to_owned()))
            .copied()
            .unwrap_or(0.0);
        exact.push((period, part / total * 100.0));
        rounded.push((period, pct1(part, total).unwrap_or(0.0)));
    }
    let at = |p: Option<&(i64, f64)>| {
        p.map_or(
            Value::Null,
            |(period, share)| json!({"period": period, "share_pct": num(*share)}),
        )
    };
    let mut peak: Option<(i64, f64)> = None;
    for &(period, share) in &rounded {
        if peak.is_none_or(|(_, s)| share > s) {
            peak = Some((period, share));
        }
    }
    let change_pp = match (rounded.first(), rounded.last()) {
        (Some((_, first)), Some((_, last))) => num(round1(last - first)),
        _ => Value::Null,
    };
    let slope = if exact.len() < 3 {
        Value::Null
    } else {
        let xy: Vec<(f64, f64)> = exact.iter().map(|(p, s)| (*p as f64, *s)).collect();
        match ols_slope(&xy) {
            Some((b, _)) => {
                let span = (exact[exact.len() - 1].0 - exact[0].0) as f64;
                json!({
                    "per_step": num(b * step as f64),
                    "direction": direction_of(b * span, 2.0),
                })
            }
            None => Value::Null,
        }
    };
    json!({
        "focus": focus,
        "points": rounded.iter().map(|(p, s)| json!([p, num(*s)])).collect::<Vec<_>>(),
        "first": at(rounded.first()),
        "last": at(rounded.last()),
        "change_pp": change_pp,
        "peak": at(peak.as_ref()),
        "slope": slope,
    })
}

fn breakdown_facts(figure: &FigureConfig, rows: &[BreakdownRow]) -> Result<Value, AnalysisError> {
    for row in rows {
        check_finite(row.value)?;
    }
    let mut sorted: Vec<(&str, f64)> = rows
        .iter()
        .map(|r| (r.label.as_deref().unwrap_or("unknown"), r.value))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0).then_with(|| a.1.total_cmp(&b.1)));
    let mut by_label: BTreeMap<&str, f64> = BTreeMap::new();
    for (label, value) in sorted {
        *by_label.entry(label).or_insert(0.0) += value;
    }
    let total: f64 = by_label.values().sum();
    let mut list: Vec<(&str, f64)> = by_label.into_iter().collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let top = figure.top.unwrap_or(5);
    let item = |label: &str, value: f64| json!({"label": label, "value": num(value), "share_pct": opt_num(pct1(value, total))});
    let items: Vec<Value> = list.iter().take(top).map(|(l, v)| item(l, *v)).collect();
    let rest = list.get(top..).unwrap_or_default();
    let other = if rest.is_empty() {
        Value::Null
    } else {
        let value: f64 = rest.iter().map(|(_, v)| v).sum();
        json!({"labels": rest.len(), "value": num(value), "share_pct": opt_num(pct1(value, total))})
    };
    Ok(json!({
        "total": num(total),
        "distinct": list.len(),
        "top": {"items": items, "other": other},
    }))
}

/// The rows in canonical order, encoded as JSON bytes: what the data
/// version hashes, so the same rows in another order give the same version.
/// Series rows sort by (period, series, value), breakdown rows by (label,
/// value); a values row is its JSON (objects sorted by key).
pub fn canonical_rows(rows: &FigureRows) -> Vec<u8> {
    let value = match rows {
        FigureRows::Values(row) => json!({"values": row}),
        FigureRows::Series { grouped, rows } => {
            let mut sorted: Vec<&SeriesRow> = rows.iter().collect();
            sorted.sort_by(|a, b| {
                a.period
                    .cmp(&b.period)
                    .then_with(|| a.series.cmp(&b.series))
                    .then_with(|| a.value.total_cmp(&b.value))
            });
            json!({
                "series": sorted.iter().map(|r| json!([r.period, r.series, r.value])).collect::<Vec<_>>(),
                "grouped": grouped,
            })
        }
        FigureRows::Breakdown(rows) => {
            let mut sorted: Vec<&BreakdownRow> = rows.iter().collect();
            sorted.sort_by(|a, b| {
                a.label
                    .cmp(&b.label)
                    .then_with(|| a.value.total_cmp(&b.value))
            });
            json!({
                "breakdown": sorted.iter().map(|r| json!([r.label, r.value])).collect::<Vec<_>>(),
            })
        }
    };
    canonical_json(&value).into_bytes()
}

/// JSON text with object keys sorted, whatever map type serde_json is built
/// with.
pub fn canonical_json(value: &Value) -> String {
    fn sort(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sort).collect()),
            other @ Value::Null
            | other @ Value::Bool(_)
            | other @ Value::Number(_)
            | other @ Value::String(_) => other.clone(),
        }
    }
    sort(value).to_string()
}

#[cfg(test)]
mod tests;
