use super::*;
use crate::collection::CollectionConfig;

fn collection() -> Collection {
    let config: CollectionConfig = toml::from_str(
        r#"
        name = "docs"
        source = "public.src"
        key = "id"
        text = [{ name = "body" }]
        filters = [{ name = "tag", type = "keyword" },
                   { name = "tags", type = "keywords" },
                   { name = "year", type = "integer" },
                   { name = "price", type = "float" }]
        "#,
    )
    .unwrap();
    Collection::from_config(&config, "c").unwrap()
}

fn eq(field: &str, value: Value) -> Filter {
    Filter::Eq {
        field: field.into(),
        value,
    }
}

#[test]
fn errors_name_the_path() {
    let c = collection();
    let f = Filter::And(vec![
        eq("tag", Value::Text("a".into())),
        Filter::Range {
            field: "year".into(),
            lower: Bound::Included(Value::Float(1.5)),
            upper: Bound::Unbounded,
        },
    ]);
    let e = f.validate(&c).unwrap_err();
    assert_eq!(e.path, "filter.and[1].range.lower");
    assert!(e.message.contains("integer"), "{e}");

    let e = Filter::Not(Box::new(eq("nope", Value::Int(1))))
        .validate(&c)
        .unwrap_err();
    assert_eq!(e.path, "filter.not.eq.field");
    assert!(e.message.contains("tag, tags, year, price"), "{e}");

    let e = Filter::Prefix {
        field: "year".into(),
        value: Value::Text("1".into()),
    }
    .validate(&c)
    .unwrap_err();
    assert_eq!(e.path, "filter.prefix.field");

    let e = eq("price", Value::Float(f64::NAN))
        .validate(&c)
        .unwrap_err();
    assert_eq!(e.path, "filter.eq.value");

    let e = Filter::In {
        field: "tag".into(),
        values: vec![Value::Text("a".into()), Value::Int(2)],
    }
    .validate(&c)
    .unwrap_err();
    assert_eq!(e.path, "filter.in.values[1]");

    let e = Filter::In {
        field: "tag".into(),
        values: vec![Value::Text("a".into()); MAX_IN_VALUES + 1],
    }
    .validate(&c)
    .unwrap_err();
    assert_eq!(e.path, "filter.in.values");
}

#[test]
fn limits_depth_and_predicates() {
    let c = collection();
    let mut f = eq("year", Value::Int(1));
    for _ in 0..MAX_DEPTH - 1 {
        f = Filter::Not(Box::new(f));
    }
    assert!(f.validate(&c).is_ok());
    let e = Filter::Not(Box::new(f)).validate(&c).unwrap_err();
    assert!(e.message.contains("nest"), "{e}");

    let many = Filter::Or(vec![eq("year", Value::Int(1)); MAX_PREDICATES + 1]);
    let e = many.validate(&c).unwrap_err();
    assert_eq!(e.path, format!("filter.or[{MAX_PREDICATES}].eq"));
}

#[test]
fn float_fields_take_integers_and_integer_fields_refuse_floats() {
    let c = collection();
    assert!(eq("price", Value::Int(3)).validate(&c).is_ok());
    assert!(eq("year", Value::Float(3.0)).validate(&c).is_err());
    assert!(eq("tag", Value::Int(3)).validate(&c).is_err());
    assert!(eq("year", Value::Text("3".into())).validate(&c).is_err());
}

#[test]
fn sql_is_two_valued_and_parameterised() {
    let c = collection();
    let f = Filter::And(vec![
        Filter::Not(Box::new(eq("tags", Value::Text("x'; DROP".into())))),
        Filter::Range {
            field: "tag".into(),
            lower: Bound::Excluded(Value::Text("b".into())),
            upper: Bound::Unbounded,
        },
        Filter::Or(vec![]),
        Filter::And(vec![]),
    ])
    .validate(&c)
    .unwrap();
    let mut params = SqlParams::new();
    let sql = f.to_sql(&mut params);
    assert_eq!(
        sql,
        r#"((NOT ("f_tags" IS NOT NULL AND "f_tags" @> ARRAY[$1::text])) AND ("f_tag" IS NOT NULL AND "f_tag" COLLATE "C" > $2::text) AND FALSE AND TRUE)"#
    );
    assert_eq!(params.len(), 2);
}

#[test]
fn empty_ranges_and_lists_match_nothing() {
    let c = collection();
    for f in [
        Filter::In {
            field: "tag".into(),
            values: vec![],
        },
        Filter::Range {
            field: "year".into(),
            lower: Bound::Included(Value::Int(5)),
            upper: Bound::Excluded(Value::Int(5)),
        },
        Filter::Range {
            field: "price".into(),
            lower: Bound::Included(Value::Int(6)),
            upper: Bound::Included(Value::Float(5.5)),
        },
    ] {
        let mut params = SqlParams::new();
        assert_eq!(f.validate(&c).unwrap().to_sql(&mut params), "FALSE");
    }
}

#[test]
fn byte_successor_bounds_prefixes() {
    assert_eq!(byte_successor(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(byte_successor(&[b'a', 0xff]), Some(b"b".to_vec()));
    assert_eq!(byte_successor(&[0xff, 0xff]), None);
}
