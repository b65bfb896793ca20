#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The same filter selects the same documents in PostgreSQL (the SQL
//! translation over the sidecar) and in tantivy (the query translation over
//! an index the follower built from that sidecar), for random documents and
//! random filters.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use quarry_db::testing::TestDb;
use quarry_search::collection::{Collection, CollectionConfig};
use quarry_search::ddl::ensure_sidecar;
use quarry_search::filter::{SqlParams, param_refs};
use quarry_search::index::CollectionIndex;
use quarry_search::{Filter, Value};

#[derive(Debug, Clone)]
struct Doc {
    tag: Option<String>,
    tags: Option<Vec<String>>,
    year: Option<i64>,
    price: Option<f64>,
    deleted: bool,
}

fn text() -> impl Strategy<Value = String> {
    // A small alphabet so that values collide: ASCII of both cases, a space,
    // a two-byte and a four-byte character.
    "[abB é\u{10348}]{0,3}"
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![8 => -4i64..4, 1 => Just(i64::MIN), 1 => Just(i64::MAX)]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => (-8i32..8).prop_map(|h| f64::from(h) / 2.0),
        1 => Just(-0.0),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(1e300),
    ]
}

fn doc() -> impl Strategy<Value = Doc> {
    (
        prop::option::weighted(0.8, text()),
        prop::option::weighted(0.8, prop::collection::vec(text(), 0..3)),
        prop::option::weighted(0.8, int()),
        prop::option::weighted(0.8, float()),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(tag, tags, year, price, deleted)| Doc {
            tag,
            tags,
            year,
            price,
            deleted,
        })
}

fn value_for(field: &'static str) -> BoxedStrategy<Value> {
    match field {
        "tag" | "tags" => text().prop_map(Value::Text).boxed(),
        "year" => int().prop_map(Value::Int).boxed(),
        _ => prop_oneof![float().prop_map(Value::Float), int().prop_map(Value::Int)].boxed(),
    }
}

fn bound(field: &'static str) -> BoxedStrategy<Bound<Value>> {
    prop_oneof![
        1 => Just(Bound::Unbounded),
        2 => value_for(field).prop_map(Bound::Included),
        2 => value_for(field).prop_map(Bound::Excluded),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Filter> {
    let field = prop::sample::select(vec!["tag", "tags", "year", "price"]);
    field
        .prop_flat_map(|field| {
            let f = field.to_owned();
            let mut options = vec![
                value_for(field)
                    .prop_map({
                        let f = f.clone();
                        move |value| Filter::Eq {
                            field: f.clone(),
                            value,
                        }
                    })
                    .boxed(),
                prop::collection::vec(value_for(field), 0..4)
                    .prop_map({
                        let f = f.clone();
                        move |values| Filter::In {
                            field: f.clone(),
                            values,
                        }
                    })
                    .boxed(),
                (bound(field), bound(field))
                    .prop_map({
                        let f = f.clone();
                        move |(lower, upper)| Filter::Range {
                            field: f.clone(),
                            lower,
                            upper,
                        }
                    })
                    .boxed(),
            ];
            if field == "tag" || field == "tags" {
                options.push(
                    text()
                        .prop_map(move |p| Filter::Prefix {
                            field: f.clone(),
                            value: Value::Text(p),
                        })
                        .boxed(),
                );
            }
            prop::strategy::Union::new(options)
        })
        .boxed()
}

fn filter() -> impl Strategy<Value = Filter> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Filter::And),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Filter::Or),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

fn collection() -> Collection {
    let config: CollectionConfig = toml::from_str(
        r#"
        name = "eq"
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

async fn write_docs(client: &tokio_postgres::Client, c: &Collection, docs: &[(String, Doc)]) {
    let sql = format!(
        "INSERT INTO {} (key, version, deleted, t_body, f_tag, f_tags, f_year, f_price) \
         VALUES ($1, nextval('quarry.search_version'), $2, 'text', $3, $4, $5, $6) \
         ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, deleted = EXCLUDED.deleted, \
         f_tag = EXCLUDED.f_tag, f_tags = EXCLUDED.f_tags, f_year = EXCLUDED.f_year, f_price = EXCLUDED.f_price",
        c.docs_table()
    );
    let statement = client.prepare(&sql).await.unwrap();
    for (key, d) in docs {
        client
            .execute(
                &statement,
                &[key, &d.deleted, &d.tag, &d.tags, &d.year, &d.price],
            )
            .await
            .unwrap();
    }
}

async fn sql_keys(client: &tokio_postgres::Client, c: &Collection, f: &Filter) -> HashSet<String> {
    let checked = f.validate(c).unwrap();
    let mut params = SqlParams::new();
    let condition = checked.to_sql(&mut params);
    let sql = format!(
        "SELECT key FROM {} WHERE NOT deleted AND {condition}",
        c.docs_table()
    );
    client
        .query(&sql, &param_refs(&params))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn sql_and_tantivy_select_the_same_documents() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let c = Arc::new(collection());
    let dir = std::env::temp_dir().join(format!("quarry-search-{}", uuid::Uuid::new_v4()));
    let db = runtime.block_on(async {
        let db = TestDb::create().await;
        let mut client = db.pool().get().await.unwrap();
        client
            .batch_execute("CREATE TABLE public.src (id int PRIMARY KEY)")
            .await
            .unwrap();
        ensure_sidecar(&mut client, &c, None).await.unwrap();
        db
    });
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    let docs: Vec<(String, Doc)> = prop::collection::vec(doc(), 300)
        .new_tree(&mut runner)
        .unwrap()
        .current()
        .into_iter()
        .enumerate()
        .map(|(i, d)| (format!("k{i}"), d))
        .collect();
    let rewrites: Vec<(String, Doc)> = prop::collection::vec(doc(), 60)
        .new_tree(&mut runner)
        .unwrap()
        .current()
        .into_iter()
        .enumerate()
        .map(|(i, d)| (format!("k{}", i * 5), d))
        .collect();
    let index = runtime.block_on(async {
        let client = db.pool().get().await.unwrap();
        write_docs(&client, &c, &docs).await;
        let index = Arc::new(CollectionIndex::open(&dir, Arc::clone(&c)).unwrap());
        let first = index.catch_up(db.pool()).await.unwrap();
        assert_eq!(first.rows, 300);
        // Rewrites and tombstones arrive incrementally.
        write_docs(&client, &c, &rewrites).await;
        let second = index.catch_up(db.pool()).await.unwrap();
        assert_eq!(second.rows, 60);
        let live = docs
            .iter()
            .filter(|(k, d)| {
                !rewrites
                    .iter()
                    .find(|(rk, _)| rk == k)
                    .map_or(d.deleted, |(_, r)| r.deleted)
            })
            .count();
        assert_eq!(usize::try_from(index.num_docs()).unwrap(), live);
        index
    });
    let client = runtime.block_on(db.pool().get()).unwrap();
    let live = usize::try_from(index.num_docs()).unwrap();
    let partial = std::cell::Cell::new(0usize);
    runner
        .run(&filter(), |f| {
            let checked = f.validate(&c).unwrap();
            let from_sql = runtime.block_on(sql_keys(&client, &c, &f));
            let from_index = index.matching_keys(&checked).unwrap();
            prop_assert_eq!(&from_sql, &from_index, "filter {:?}", f);
            if !from_sql.is_empty() && from_sql.len() < live {
                partial.set(partial.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    // Most random filters must select some but not all documents, or the
    // comparison says little.
    assert!(
        partial.get() >= 16,
        "only {} selective filters",
        partial.get()
    );
    drop(client);
    runtime.block_on(db.drop_db());
    let _ = std::fs::remove_dir_all(dir);
}
