#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::definition::KindConfig;
use crate::render::{EntityRef, KindTemplate};

fn figure(shape: Shape, compute: &[Computation]) -> FigureConfig {
    FigureConfig {
        name: "f".into(),
        shape,
        sql: String::new(),
        compute: compute.to_vec(),
        step: None,
        top: None,
        focus: None,
    }
}

const ALL_SERIES: &[Computation] = &[
    Computation::Total,
    Computation::Range,
    Computation::Peak,
    Computation::Slope,
    Computation::Changes,
];

fn row(period: i64, value: f64) -> SeriesRow {
    SeriesRow {
        period,
        series: None,
        value,
    }
}

fn grouped(period: i64, series: &str, value: f64) -> SeriesRow {
    SeriesRow {
        period,
        series: Some(series.to_owned()),
        value,
    }
}

#[test]
fn rounding_is_half_away_from_zero() {
    assert_eq!(round1(0.25), 0.3);
    assert_eq!(round1(-0.25), -0.3);
    assert_eq!(round1(2.449), 2.4);
    assert!(round1(-0.04).is_sign_positive());
    assert_eq!(pct1(1.0, 16.0), Some(6.3)); // 6.25 exactly
    assert_eq!(pct1(1.0, 3.0), Some(33.3));
    assert_eq!(pct1(2.0, 3.0), Some(66.7));
    assert_eq!(pct1(1.0, 0.0), None);
    assert_eq!(num(41_861.0), json!(41861));
    assert_eq!(num(2.96), json!(3));
    assert_eq!(num(12.345), json!(12.3));
    assert_eq!(num(-0.04), json!(0));
    assert_eq!(num(f64::NAN), Value::Null);
}

#[test]
fn ols_slope_matches_hand_computation() {
    // x̄ = 2, ȳ = 11/3; Σ(x−x̄)(y−ȳ) = 3, Σ(x−x̄)² = 2 → b = 1.5
    let (b, mean) = ols_slope(&[(1.0, 2.0), (2.0, 4.0), (3.0, 5.0)]).unwrap();
    assert!((b - 1.5).abs() < 1e-12);
    assert!((mean - 11.0 / 3.0).abs() < 1e-12);
    assert_eq!(ols_slope(&[(1.0, 2.0)]), None);
    assert_eq!(ols_slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
}

#[test]
fn ungrouped_series_facts() {
    let mut f = figure(Shape::Series, ALL_SERIES);
    f.step = Some(10);
    // 1960 is missing and filled with 0; rows out of order
    let rows = vec![row(1980, 4.0), row(1950, 2.0), row(1970, 6.0)];
    let facts = figure_facts(
        &f,
        &FigureRows::Series {
            grouped: false,
            rows,
        },
    )
    .unwrap();
    // slope: x̄ = 1965, ȳ = 3, Σdxdy = 60, Σdx² = 500 → 0.12/year = 1.2 per
    // decade; fitted change over 30 years 3.6 = 1.2 × mean → rising
    assert_eq!(
        facts,
        json!({
            "points": [[1950, 2], [1960, 0], [1970, 6], [1980, 4]],
            "total": 12,
            "range": {"first": 1950, "last": 1980},
            "peak": {"period": 1970, "value": 6, "share_pct": 50},
            "slope": {"per_step": 1.2, "direction": "rising"},
            "changes": {
                "steps": [
                    {"period": 1960, "value": 0, "change": -2, "change_pct": -100},
                    {"period": 1970, "value": 6, "change": 6, "change_pct": null},
                    {"period": 1980, "value": 4, "change": -2, "change_pct": -33.3},
                ],
                "largest_rise": {"period": 1970, "change": 6},
                "largest_fall": {"period": 1960, "change": -2},
            },
        })
    );
}

#[test]
fn flat_short_empty_and_leading_zero_series() {
    let f = figure(Shape::Series, ALL_SERIES);
    let facts = |rows: Vec<SeriesRow>| {
        figure_facts(
            &f,
            &FigureRows::Series {
                grouped: false,
                rows,
            },
        )
        .unwrap()
    };
    // 10, 11, 10: slope 0 → flat
    let flat = facts(vec![row(1, 10.0), row(2, 11.0), row(3, 10.0)]);
    assert_eq!(flat["slope"], json!({"per_step": 0, "direction": "flat"}));
    // 10, 12, 13: b = 1.5, fitted 3 over the span, 3 / 11.67 = 0.26 → rising
    let rising = facts(vec![row(1, 10.0), row(2, 12.0), row(3, 13.0)]);
    assert_eq!(
        rising["slope"],
        json!({"per_step": 1.5, "direction": "rising"})
    );
    // 13, 12, 11.5: b = −0.75, fitted −1.5, mean 12.17 → −0.12: flat
    let gentle = facts(vec![row(1, 13.0), row(2, 12.0), row(3, 11.5)]);
    assert_eq!(
        gentle["slope"],
        json!({"per_step": -0.8, "direction": "flat"})
    );
    let short = facts(vec![row(1, 1.0), row(2, 3.0)]);
    assert_eq!(short["slope"], Value::Null);
    let empty = facts(vec![]);
    assert_eq!(
        empty,
        json!({
            "points": [], "total": 0, "range": null, "peak": null, "slope": null,
            "changes": {"steps": [], "largest_rise": null, "largest_fall": null},
        })
    );
    // zeros at the edges: range covers the non-zero periods only
    let edges = facts(vec![row(1, 0.0), row(2, 5.0), row(3, 0.0)]);
    assert_eq!(edges["range"], json!({"first": 2, "last": 2}));
    // duplicates add up
    let dup = facts(vec![row(1, 1.5), row(1, 1.5)]);
    assert_eq!(dup["points"], json!([[1, 3]]));
}

#[test]
fn grouped_series_with_groups_and_shares() {
    let mut f = figure(
        Shape::Series,
        &[
            Computation::Shares,
            Computation::Groups,
            Computation::Total,
            Computation::Peak,
            Computation::Slope,
        ],
    );
    f.step = Some(10);
    f.focus = Some("Female".into());
    let rows = vec![
        grouped(1950, "Female", 1.0),
        grouped(1950, "Male", 3.0),
        grouped(1960, "Female", 2.0),
        grouped(1960, "Male", 2.0),
        grouped(1970, "Female", 3.0),
        grouped(1970, "Male", 1.0),
        grouped(1990, "Male", 1.0),
        grouped(1990, "Female", 1.0),
    ];
    let facts = figure_facts(
        &f,
        &FigureRows::Series {
            grouped: true,
            rows,
        },
    )
    .unwrap();
    assert_eq!(
        facts["points"],
        json!([
            [1950, "Female", 1],
            [1950, "Male", 3],
            [1960, "Female", 2],
            [1960, "Male", 2],
            [1970, "Female", 3],
            [1970, "Male", 1],
            [1990, "Female", 1],
            [1990, "Male", 1],
        ])
    );
    assert_eq!(facts["total"], json!(14));
    // per-period totals 4, 4, 4, 0 (filled), 2: peak 1950 (earliest), 4/14
    assert_eq!(
        facts["peak"],
        json!({"period": 1950, "value": 4, "share_pct": 28.6})
    );
    // totals: x̄ = 1970, ȳ = 2.8, Σdxdy = −80, Σdx² = 1000 → −0.08/year;
    // fitted −3.2 over 40 years is −1.14 × mean → falling
    assert_eq!(
        facts["slope"],
        json!({"per_step": -0.8, "direction": "falling"})
    );
    // 7 each: ties break by label
    assert_eq!(
        facts["groups"],
        json!([
            {"label": "Female", "value": 7, "share_pct": 50},
            {"label": "Male", "value": 7, "share_pct": 50},
        ])
    );
    // shares 25, 50, 75, (1980 skipped), 50; slope over the exact shares:
    // x̄ = 1967.5, ȳ = 50, Σdxdy = 500, Σdx² = 875 → 0.5714 pp/year = 5.7 per
    // decade; fitted +22.9 pp over 40 years → rising
    assert_eq!(
        facts["shares"],
        json!({
            "focus": "Female",
            "points": [[1950, 25], [1960, 50], [1970, 75], [1990, 50]],
            "first": {"period": 1950, "share_pct": 25},
            "last": {"period": 1990, "share_pct": 50},
            "change_pp": 25,
            "peak": {"period": 1970, "share_pct": 75},
            "slope": {"per_step": 5.7, "direction": "rising"},
        })
    );
}

#[test]
fn shares_round_before_the_change() {
    let mut f = figure(Shape::Series, &[Computation::Shares]);
    f.focus = Some("a".into());
    // shares 1/3 = 33.3 and 2/3 = 66.7: change 33.4 from the rounded values
    let rows = vec![
        grouped(1, "a", 1.0),
        grouped(1, "b", 2.0),
        grouped(2, "a", 2.0),
        grouped(2, "b", 1.0),
    ];
    let facts = figure_facts(
        &f,
        &FigureRows::Series {
            grouped: true,
            rows,
        },
    )
    .unwrap();
    assert_eq!(facts["shares"]["change_pp"], json!(33.4));
    assert_eq!(facts["shares"]["slope"], Value::Null);
    // a focus group with no rows has share 0 where periods have data
    f.focus = Some("z".into());
    let rows = vec![grouped(1, "a", 1.0), grouped(2, "b", 0.0)];
    let facts = figure_facts(
        &f,
        &FigureRows::Series {
            grouped: true,
            rows,
        },
    )
    .unwrap();
    assert_eq!(facts["shares"]["points"], json!([[1, 0]]));
}

#[test]
fn breakdown_facts_with_top_and_other() {
    let mut f = figure(Shape::Breakdown, &[]);
    f.top = Some(2);
    let rows = vec![
        BreakdownRow {
            label: Some("oil".into()),
            value: 5.0,
        },
        BreakdownRow {
            label: Some("graphite".into()),
            value: 3.0,
        },
        BreakdownRow {
            label: None,
            value: 1.0,
        },
        BreakdownRow {
            label: Some("oil".into()),
            value: 2.0,
        },
        BreakdownRow {
            label: Some("ink".into()),
            value: 3.0,
        },
        BreakdownRow {
            label: Some("wax".into()),
            value: 1.0,
        },
    ];
    let facts = figure_facts(&f, &FigureRows::Breakdown(rows)).unwrap();
    assert_eq!(
        facts,
        json!({
            "total": 15,
            "distinct": 5,
            "top": {
                "items": [
                    {"label": "oil", "value": 7, "share_pct": 46.7},
                    {"label": "graphite", "value": 3, "share_pct": 20},
                ],
                "other": {"labels": 3, "value": 5, "share_pct": 33.3},
            },
        })
    );
    let few = figure_facts(
        &figure(Shape::Breakdown, &[]),
        &FigureRows::Breakdown(vec![BreakdownRow {
            label: Some("x".into()),
            value: 0.0,
        }]),
    )
    .unwrap();
    assert_eq!(
        few["top"],
        json!({"items": [{"label": "x", "value": 0, "share_pct": null}], "other": null})
    );
}

#[test]
fn values_facts_normalise_numbers() {
    let f = figure(Shape::Values, &[]);
    let facts = figure_facts(
        &f,
        &FigureRows::Values(Some(
            json!({"works": 3, "mean_year": 1923.456, "name": "x"}),
        )),
    )
    .unwrap();
    assert_eq!(facts, json!({"works": 3, "mean_year": 1923.5, "name": "x"}));
    assert_eq!(
        figure_facts(&f, &FigureRows::Values(None)).unwrap(),
        Value::Null
    );
    assert!(figure_facts(&f, &FigureRows::Values(Some(json!(3)))).is_err());
}

#[test]
fn bad_input_is_refused() {
    let f = figure(Shape::Series, &[Computation::Total]);
    let series = |rows| FigureRows::Series {
        grouped: false,
        rows,
    };
    let e = figure_facts(&f, &series(vec![row(0, 1.0), row(100_000, 1.0)])).unwrap_err();
    assert!(e.0.contains("more than 10000 periods"), "{e}");
    let e = figure_facts(&f, &series(vec![row(0, f64::NAN)])).unwrap_err();
    assert!(e.0.contains("not a finite number"), "{e}");
    let g = figure(Shape::Series, &[Computation::Groups]);
    assert!(figure_facts(&g, &series(vec![row(0, 1.0)])).is_err());
    assert!(figure_facts(&f, &FigureRows::Breakdown(vec![])).is_err());
    // off-grid periods are kept next to the filled grid
    let mut stepped = figure(Shape::Series, &[]);
    stepped.step = Some(10);
    let facts = figure_facts(
        &stepped,
        &series(vec![row(1950, 1.0), row(1975, 1.0), row(1980, 1.0)]),
    )
    .unwrap();
    assert_eq!(
        facts["points"],
        json!([[1950, 1], [1960, 0], [1970, 0], [1975, 1], [1980, 1]])
    );
}

fn shuffle_kind() -> (KindConfig, FigureConfig, FigureConfig) {
    let mut acquisitions = figure(
        Shape::Series,
        &[
            Computation::Total,
            Computation::Range,
            Computation::Peak,
            Computation::Slope,
            Computation::Changes,
            Computation::Groups,
            Computation::Shares,
        ],
    );
    acquisitions.name = "acquisitions".into();
    acquisitions.step = Some(5);
    acquisitions.focus = Some("Female".into());
    let mut media = figure(Shape::Breakdown, &[]);
    media.name = "media".into();
    media.top = Some(3);
    let kind = KindConfig {
        name: "artist".into(),
        entity: "artist".into(),
        description: String::new(),
        entities: "SELECT 1 AS key, 'x' AS name".into(),
        tenants: None,
        figures: vec![acquisitions.clone(), media.clone()],
        template: "{{ entity.name }}: {{ acquisitions.total | count }} works \
            {% if acquisitions.range %}{{ acquisitions.range | years }}{% endif %}; \
            women {% if acquisitions.shares.first %}{{ acquisitions.shares.first.share_pct | pct }} → \
            {{ acquisitions.shares.last.share_pct | pct }} ({{ acquisitions.shares.change_pp | pp }}){% endif %}; \
            media {{ media.top.items | listing }}; {{ media.total | signed }}"
            .into(),
    };
    (kind, acquisitions, media)
}

type Input = (Vec<(i64, Option<usize>, i64)>, Vec<(Option<usize>, i64)>);

fn facts_and_text(input: &Input) -> (String, String) {
    const GROUPS: [&str; 3] = ["Female", "Male", "Mixed"];
    const LABELS: [&str; 4] = ["oil", "ink", "graphite", "wax"];
    let (kind, acquisitions, media) = shuffle_kind();
    let series = FigureRows::Series {
        grouped: true,
        rows: input
            .0
            .iter()
            .map(|(p, g, v)| SeriesRow {
                period: 1900 + p * 5,
                series: Some(g.map_or("unknown", |g| GROUPS[g]).to_owned()),
                value: *v as f64 / 10.0,
            })
            .collect(),
    };
    let breakdown = FigureRows::Breakdown(
        input
            .1
            .iter()
            .map(|(l, v)| BreakdownRow {
                label: l.map(|l| LABELS[l].to_owned()),
                value: *v as f64 / 10.0,
            })
            .collect(),
    );
    let mut facts = serde_json::Map::new();
    facts.insert(
        "acquisitions".into(),
        figure_facts(&acquisitions, &series).unwrap(),
    );
    facts.insert("media".into(), figure_facts(&media, &breakdown).unwrap());
    let text = KindTemplate::compile(&kind)
        .unwrap()
        .render(
            &EntityRef {
                kind: "artist",
                key: "1",
                name: "A",
            },
            &facts,
        )
        .unwrap();
    let version = crate::builder::data_version(
        "fp",
        "A",
        &[("acquisitions", &series), ("media", &breakdown)],
    );
    (format!("{}|{version}", Value::Object(facts)), text)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The same rows in any order give byte-identical facts, data version
    /// and text (values are tenths, so float sums would differ by order if
    /// the code summed in input order).
    #[test]
    fn row_order_does_not_matter(
        (input, shuffled) in (
            prop::collection::vec((0i64..20, prop::option::of(0usize..3), 0i64..10_000), 0..40),
            prop::collection::vec((prop::option::of(0usize..4), 0i64..10_000), 0..12),
        )
            .prop_flat_map(|(series, breakdown)| {
                (
                    Just((series.clone(), breakdown.clone())),
                    (Just(series).prop_shuffle(), Just(breakdown).prop_shuffle()),
                )
            })
    ) {
        let (facts_a, text_a) = facts_and_text(&input);
        let (facts_b, text_b) = facts_and_text(&shuffled);
        prop_assert_eq!(facts_a, facts_b);
        prop_assert_eq!(text_a, text_b);
    }
}
