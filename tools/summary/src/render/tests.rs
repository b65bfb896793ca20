#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use super::*;
use crate::definition::{FigureConfig, Shape};

/// Renders `template` with `x` bound to `value`.
fn render(template: &str, value: serde_json::Value) -> Result<String, String> {
    let env = environment();
    let mut ctx = BTreeMap::new();
    ctx.insert("x".to_owned(), json_to_value(&value));
    env.render_str(template, Value::from(ctx))
        .map_err(|e| describe(&e))
}

fn filter(name: &str, value: serde_json::Value) -> String {
    render(&format!("{{{{ x | {name} }}}}"), value).unwrap()
}

fn filter_err(name: &str, value: serde_json::Value) -> String {
    render(&format!("{{{{ x | {name} }}}}"), value).unwrap_err()
}

#[test]
fn count_groups_thousands() {
    assert_eq!(filter("count", json!(39389)), "39,389");
    assert_eq!(filter("count", json!(0)), "0");
    assert_eq!(filter("count", json!(999)), "999");
    assert_eq!(filter("count", json!(1000)), "1,000");
    assert_eq!(filter("count", json!(-1234)), "-1,234");
    assert_eq!(filter("count", json!(-999_999)), "-999,999");
    assert_eq!(
        filter("count", json!(i64::MAX)),
        "9,223,372,036,854,775,807"
    );
    assert_eq!(
        filter("count", json!(i64::MIN)),
        "-9,223,372,036,854,775,808"
    );
    assert_eq!(
        filter("count", json!(u64::MAX)),
        "18,446,744,073,709,551,615"
    );
    // floats keep one decimal, rounded half away from zero
    assert_eq!(filter("count", json!(1234.56)), "1,234.6");
    assert_eq!(filter("count", json!(2.25)), "2.3");
    assert_eq!(filter("count", json!(-2.25)), "-2.3");
    assert_eq!(filter("count", json!(2.0)), "2.0");
    assert_eq!(filter("count", json!(-0.04)), "0.0");
    assert_eq!(filter("count", json!(1.5e9)), "1,500,000,000.0");
    assert!(filter_err("count", json!("12")).contains("count: expected a number, got a string"));
    assert!(filter_err("count", json!(null)).contains("got none"));
}

#[test]
fn pct_has_one_decimal() {
    assert_eq!(filter("pct", json!(12.345)), "12.3%");
    assert_eq!(filter("pct", json!(12.35)), "12.4%");
    assert_eq!(filter("pct", json!(6.25)), "6.3%");
    assert_eq!(filter("pct", json!(0)), "0.0%");
    assert_eq!(filter("pct", json!(100)), "100.0%");
    assert_eq!(filter("pct", json!(-1.25)), "-1.3%");
    assert_eq!(filter("pct", json!(12345.67)), "12,345.7%");
    assert!(filter_err("pct", json!([1])).contains("pct: expected a number"));
}

#[test]
fn pp_is_signed() {
    assert_eq!(filter("pp", json!(4.25)), "+4.3 pp");
    assert_eq!(filter("pp", json!(-1)), "-1.0 pp");
    assert_eq!(filter("pp", json!(0)), "0.0 pp");
    assert_eq!(filter("pp", json!(-0.04)), "0.0 pp");
    assert_eq!(filter("pp", json!(0.05)), "+0.1 pp");
    assert_eq!(filter("pp", json!(1234.5)), "+1,234.5 pp");
}

#[test]
fn signed_is_a_count_with_its_sign() {
    assert_eq!(filter("signed", json!(12)), "+12");
    assert_eq!(filter("signed", json!(-1234)), "-1,234");
    assert_eq!(filter("signed", json!(0)), "0");
    assert_eq!(filter("signed", json!(2.5)), "+2.5");
    assert_eq!(filter("signed", json!(-0.01)), "0.0");
    assert_eq!(filter("signed", json!(1_000_000)), "+1,000,000");
}

#[test]
fn years_and_decades() {
    assert_eq!(
        filter("years", json!({"first": 1856, "last": 1999})),
        "1856\u{2013}1999"
    );
    assert_eq!(filter("years", json!([1856, 1999])), "1856\u{2013}1999");
    assert_eq!(
        filter("years", json!({"first": 1901, "last": 1901})),
        "1901"
    );
    assert_eq!(filter("years", json!([-50, 10])), "-50\u{2013}10");
    assert!(filter_err("years", json!(null)).contains("years: expected {first, last}"));
    assert!(filter_err("years", json!({"first": 1})).contains("`first` and `last`"));
    assert!(filter_err("years", json!([1, 2, 3])).contains("expected {first, last}"));

    assert_eq!(filter("decade", json!(1950)), "1950s");
    assert_eq!(filter("decade", json!(1955)), "1950s");
    assert_eq!(filter("decade", json!(0)), "0s");
    assert_eq!(filter("decade", json!(-5)), "-10s");
    assert!(filter_err("decade", json!(1950.5)).contains("whole year"));

    assert_eq!(
        filter("decades", json!({"first": 1850, "last": 1990})),
        "1850s\u{2013}1990s"
    );
    assert_eq!(filter("decades", json!([1851, 1859])), "1850s");
}

#[test]
fn listing_joins_items() {
    let items = json!([
        {"label": "oil paint on canvas", "value": 1234, "share_pct": 12.3},
        {"label": "graphite on paper", "value": 56, "share_pct": 1.2},
        {"label": "unknown", "value": 3.5, "share_pct": null},
    ]);
    assert_eq!(
        filter("listing", items),
        "oil paint on canvas (1,234; 12.3%), graphite on paper (56; 1.2%), unknown (3.5)"
    );
    assert_eq!(filter("listing", json!([])), "");
    assert!(filter_err("listing", json!({"label": "x"})).contains("expected a list"));
    assert!(filter_err("listing", json!([{"value": 1}])).contains("text `label`"));
}

#[test]
fn strict_undefined_fails() {
    assert!(render("{{ y }}", json!(1)).is_err());
    assert!(render("{{ x.missing }}", json!({})).is_err());
    assert!(render("{{ y | count }}", json!(1)).is_err());
}

#[test]
fn whitespace_collapses() {
    assert_eq!(collapse_whitespace("  a \n\n b\t c  "), "a b c");
    assert_eq!(collapse_whitespace(""), "");
}

fn kind(template: &str) -> KindConfig {
    KindConfig {
        name: "artist".into(),
        entity: "artist".into(),
        description: String::new(),
        entities: "SELECT 1 AS key, 'x' AS name".into(),
        tenants: None,
        figures: vec![FigureConfig {
            name: "works".into(),
            shape: Shape::Values,
            sql: "SELECT 1 AS n".into(),
            compute: vec![],
            step: None,
            top: None,
            focus: None,
        }],
        template: template.into(),
    }
}

#[test]
fn kind_templates_render_entity_and_facts() {
    let template = KindTemplate::compile(&kind(
        "{{ entity.name }} ({{ entity.kind }} {{ entity.key }}):\n  {{ works.n | count }} works\n\n{% if works.range %}x{% endif %}",
    ))
    .unwrap();
    let facts: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(json!({"works": {"n": 41861, "range": null}})).unwrap();
    let entity = EntityRef {
        kind: "artist",
        key: "558",
        name: "J. M. W. Turner <b>",
    };
    assert_eq!(
        template.render(&entity, &facts).unwrap(),
        "J. M. W. Turner <b> (artist 558): 41,861 works"
    );
    let missing: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(json!({"works": {}})).unwrap();
    let e = template.render(&entity, &missing).unwrap_err();
    assert!(e.contains("undefined"), "{e}");
}

#[test]
fn lexer_finds_filters_and_tests() {
    let (filters, tests) = filters_and_tests(
        "{{ a|count }} {{ 'x | no' }} {% filter upper %}y{% endfilter %} \
         {% if a is not defined %}{% endif %}{# {{ a | gone }} #}\
         {% raw %}{{ a | raw_only }}{% endraw %}{{ b | pct(1) | listing }}",
    );
    assert_eq!(filters, ["count", "listing", "pct", "upper"]);
    assert_eq!(tests, ["defined"]);
    // multi-byte text inside and between blocks
    let (filters, _) =
        filters_and_tests("Zoë – {{ \"Léger – ë\" | lower }} – {% if a %}é{% endif %}{{ b|trim }}");
    assert_eq!(filters, ["lower", "trim"]);
}
