use super::*;
use crate::execute::ExecConfig;
use crate::validate::{ValidationPolicy, validate};
use quarry_db::testing::TestDb;

fn q(sql: &str) -> ValidatedQuery {
    validate(sql, &ValidationPolicy::default()).unwrap()
}

#[test]
fn describes_queries_deterministically() {
    let d = describe_query(&q(
        "SELECT a.name, count(*) AS n FROM artworks w JOIN artists a ON a.id = w.artist_id \
         WHERE w.year > 1900 GROUP BY a.name ORDER BY n DESC LIMIT 10",
    ));
    assert_eq!(d.tables, ["artworks", "artists"]);
    assert_eq!(d.joins, ["inner join artists a on a.id = w.artist_id"]);
    assert_eq!(d.filters, ["w.year > 1900"]);
    assert_eq!(d.grouping, ["a.name"]);
    assert_eq!(d.aggregates, ["count(*)"]);
    assert_eq!(d.ordering, ["n DESC"]);
    assert_eq!(d.limit.as_deref(), Some("10"));
    assert_eq!(
        d.text,
        "Reads artworks, artists. Then inner join artists a on a.id = w.artist_id. \
         Keeps rows where w.year > 1900. Groups by a.name. Computes count(*). \
         Orders by n DESC. Returns at most 10 rows."
    );
    assert_eq!(describe_query(&q("SELECT 1")).text, "Reads no tables.");
}

async fn setup() -> (TestDb, Executor) {
    let db = TestDb::create().await;
    let client = db.pool().get().await.unwrap();
    let wide: Vec<String> = (1..=30).map(|i| format!("c{i} int")).collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE big (id int PRIMARY KEY, cat int, note text);
             INSERT INTO big SELECT g, g % 1000, 'n' || g FROM generate_series(1, 20000) g;
             CREATE TABLE small (id int, label text);
             INSERT INTO small SELECT g, 'l' || g FROM generate_series(1, 50) g;
             CREATE TABLE wide ({});
             ANALYZE big; ANALYZE small; ANALYZE wide;",
            wide.join(", ")
        ))
        .await
        .unwrap();
    drop(client);
    let exec = Executor::new(db.pool().clone(), ExecConfig::default());
    (db, exec)
}

fn kinds(summary: &PlanSummary) -> Vec<HintKind> {
    summary.hints.iter().map(|h| h.kind).collect()
}

#[tokio::test]
async fn hints_point_at_inefficiencies() {
    let (db, exec) = setup().await;
    let options = ExplainOptions::default();
    // a selective filter on an unindexed column of a large table
    let s = explain_plan(&exec, &q("SELECT id FROM big WHERE cat = 7"), &options)
        .await
        .unwrap();
    assert_eq!(kinds(&s), [HintKind::SeqScanLargeTable], "{s:?}");
    assert!(s.total_cost > 0.0);
    assert!(s.node_types.contains(&"Seq Scan".to_owned()));
    // the primary key serves this one
    let s = explain_plan(&exec, &q("SELECT id FROM big WHERE id = 7"), &options)
        .await
        .unwrap();
    assert!(kinds(&s).is_empty(), "{s:?}");
    // cartesian products
    for sql in [
        "SELECT count(*) FROM big, small",
        "SELECT count(*) FROM big CROSS JOIN small",
    ] {
        let s = explain_plan(&exec, &q(sql), &options).await.unwrap();
        assert_eq!(kinds(&s), [HintKind::CartesianProduct], "{sql}: {s:?}");
    }
    let s = explain_plan(
        &exec,
        &q("SELECT count(*) FROM big JOIN small ON small.id = big.cat"),
        &options,
    )
    .await
    .unwrap();
    assert!(kinds(&s).is_empty(), "{s:?}");
    // select * on a wide table
    let s = explain_plan(&exec, &q("SELECT * FROM wide"), &options)
        .await
        .unwrap();
    assert_eq!(kinds(&s), [HintKind::SelectStarWide], "{s:?}");
    let s = explain_plan(&exec, &q("SELECT c1 FROM wide"), &options)
        .await
        .unwrap();
    assert!(kinds(&s).is_empty(), "{s:?}");
    // sorting a large result without a limit
    let s = explain_plan(
        &exec,
        &q("SELECT id, note FROM big ORDER BY note"),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(kinds(&s), [HintKind::SortWithoutLimit], "{s:?}");
    let s = explain_plan(
        &exec,
        &q("SELECT id, note FROM big ORDER BY note LIMIT 5"),
        &options,
    )
    .await
    .unwrap();
    assert!(kinds(&s).is_empty(), "{s:?}");
    db.drop_db().await;
}
