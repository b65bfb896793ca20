use super::*;
use quarry_proto::v1::FilterFieldInfo;

#[test]
fn arguments_become_a_request_with_a_typed_filter() {
    let request = request_from_arguments(
        r#"{"collection": "artworks", "query": "storm at sea",
            "filter": {"and": [{"eq": {"field": "classification", "value": "on paper, unique"}},
                               {"range": {"field": "acquisition_year", "gte": 1900, "lt": 1950.5}},
                               {"not": {"in": {"field": "artist", "values": ["A", "B"]}}}]},
            "k": 5}"#,
    )
    .unwrap();
    assert_eq!(request.k, 5);
    assert_eq!(request.mode, SearchMode::Hybrid as i32);
    let Some(filter::Kind::And(list)) = request.filter.unwrap().kind else {
        panic!()
    };
    let Some(filter::Kind::Range(range)) = &list.filters[1].kind else {
        panic!()
    };
    assert_eq!(
        range.lower.as_ref().unwrap().kind,
        Some(Kind::Int64Value(1900))
    );
    assert_eq!(
        range.upper.as_ref().unwrap().kind,
        Some(Kind::DoubleValue(1950.5))
    );
    assert!(range.upper_exclusive && !range.lower_exclusive);
    assert!(matches!(list.filters[2].kind, Some(filter::Kind::Not(_))));
}

#[test]
fn bad_arguments_name_the_place() {
    let error = |args: &str| request_from_arguments(args).unwrap_err();
    assert!(error(r#"{"query": "x"}"#).contains("`collection`"));
    assert!(error(r#"{"collection": "a", "query": "x", "k": 500}"#).contains("`k`"));
    let e = error(
        r#"{"collection": "a", "query": "x", "filter": {"and": [{"eq": {"field": "f", "value": [1]}}]}}"#,
    );
    assert!(e.starts_with("filter.and[0].eq.value:"), "{e}");
    let e = error(
        r#"{"collection": "a", "query": "x", "filter": {"range": {"field": "f", "gt": 1, "gte": 2}}}"#,
    );
    assert!(e.starts_with("filter.range:"), "{e}");
    let e = error(r#"{"collection": "a", "query": "x", "filter": {"like": {}}}"#);
    assert!(e.contains("unknown operator `like`"), "{e}");
    let mut deep = String::from(r#"{"eq": {"field": "f", "value": 1}}"#);
    for _ in 0..40 {
        deep = format!(r#"{{"not": {deep}}}"#);
    }
    let e = error(&format!(
        r#"{{"collection": "a", "query": "x", "filter": {deep}}}"#
    ));
    assert!(e.contains("nested deeper"), "{e}");
}

#[test]
fn spec_lists_collections_and_filter_types() {
    assert!(spec(&[]).is_none());
    let spec = spec(&[CollectionInfo {
        name: "artworks".into(),
        source: "tate.artworks".into(),
        text_fields: vec!["title".into()],
        filter_fields: vec![FilterFieldInfo {
            name: "artist".into(),
            r#type: "keywords".into(),
        }],
        stored_fields: vec!["url".into()],
        ..Default::default()
    }])
    .unwrap();
    assert!(spec.description.contains("`artworks` (from tate.artworks)"));
    assert!(spec.description.contains("artist (keywords)"));
    assert_eq!(
        spec.parameters["properties"]["collection"]["enum"][0],
        "artworks"
    );
}

#[test]
fn the_coverage_note_appears_only_when_vectors_ran_over_a_partial_collection() {
    let found = |mode: SearchMode, embedded| SearchToolResult {
        collection: "artworks".into(),
        mode: mode as i32,
        hits: vec![quarry_proto::v1::SearchHit {
            key: "7".into(),
            score: 0.5,
            ..Default::default()
        }],
        documents: 300,
        embedded_documents: embedded,
        ..Default::default()
    };
    let text = |mode| hits_for_model("c1", &found(mode, 0), 50, str::to_owned);
    assert!(!text(SearchMode::Bm25).contains("note:"));
    assert!(text(SearchMode::Hybrid).contains("covers 0 of 300"));
    let full = hits_for_model("c1", &found(SearchMode::Vector, 300), 50, str::to_owned);
    assert!(!full.contains("note:"));
    assert!(full.contains("[1] key=7 score=0.5000"));
}
