//! `quarry eval sql` on a tiny Spider-format dataset built at test time, and
//! the SQLite → PostgreSQL conversion of gold SQL rule by rule.
//!
//! The database tests need PostgreSQL (`QUARRY_TEST_DATABASE_URL`, set by
//! `dev/test.sh`); each gets a fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use quarry_db::testing::TestDb;
use quarry_eval::compare::{Comparison, Value, compare};
use quarry_eval::convert::{Rule, gold_refs, is_ordered, sqlite_to_postgres};
use quarry_eval::{EvalOptions, GoldDialect, run_sql_eval};
use serde_json::json;

/// Six questions over two databases: a double-quoted string literal, a
/// `LIKE` that relies on SQLite's case-insensitivity, a join with aliases
/// and `ORDER BY`, two `GROUP BY`s and a subquery.
const QUESTIONS: &[(&str, &str, &str)] = &[
    (
        "shop",
        "Which customers live in Paris?",
        r#"SELECT Name FROM Customer WHERE City = "Paris""#,
    ),
    (
        "shop",
        "How many customers have a name starting with a?",
        "SELECT count(*) FROM Customer WHERE Name LIKE 'a%'",
    ),
    (
        "shop",
        "List customer names and order amounts, largest amount first.",
        "SELECT T1.Name, T2.Amount FROM Customer AS T1 JOIN Orders AS T2 \
         ON T1.Customer_ID = T2.Customer_ID ORDER BY T2.Amount DESC",
    ),
    (
        "shop",
        "What is the total order amount for each status?",
        "SELECT Status, sum(Amount) FROM Orders GROUP BY Status",
    ),
    (
        "zoo",
        "What is the average age of each species?",
        "SELECT Species, avg(Age) FROM Animal GROUP BY Species",
    ),
    (
        "zoo",
        "Which animals are older than the average animal?",
        "SELECT Name FROM Animal WHERE Age > (SELECT avg(Age) FROM Animal)",
    ),
];

fn tables_json() -> serde_json::Value {
    json!([
        {
            "db_id": "shop",
            "table_names_original": ["Customer", "Orders"],
            "table_names": ["customer", "orders"],
            "column_names_original": [
                [-1, "*"], [0, "Customer_ID"], [0, "Name"], [0, "City"],
                [1, "Order_ID"], [1, "Customer_ID"], [1, "Amount"], [1, "Status"]
            ],
            "column_names": [
                [-1, "*"], [0, "customer id"], [0, "name"], [0, "city"],
                [1, "order id"], [1, "customer id"], [1, "amount"], [1, "status"]
            ],
            "column_types": ["text", "number", "text", "text", "number", "number", "number", "text"],
            "primary_keys": [1, 4],
            "foreign_keys": [[5, 1]]
        },
        {
            "db_id": "zoo",
            "table_names_original": ["Animal"],
            "table_names": ["animal"],
            "column_names_original": [[-1, "*"], [0, "id"], [0, "Name"], [0, "Species"], [0, "Age"]],
            "column_names": [[-1, "*"], [0, "id"], [0, "name"], [0, "species"], [0, "age"]],
            "column_types": ["text", "number", "text", "text", "number"],
            "primary_keys": [1],
            "foreign_keys": []
        }
    ])
}

/// Writes tables.json and dev.json (with `extra` questions after
/// [`QUESTIONS`]) and, when `with_data`, the two SQLite databases.
fn write_dataset(dir: &Path, with_data: bool, extra: &[(&str, &str, &str)]) {
    std::fs::write(dir.join("tables.json"), tables_json().to_string()).unwrap();
    let dev: Vec<_> = QUESTIONS
        .iter()
        .chain(extra)
        .map(|(db_id, question, query)| json!({"db_id": db_id, "question": question, "query": query}))
        .collect();
    std::fs::write(dir.join("dev.json"), json!(dev).to_string()).unwrap();
    if !with_data {
        return;
    }
    let sqlite = |db_id: &str, sql: &str| {
        let folder = dir.join("database").join(db_id);
        std::fs::create_dir_all(&folder).unwrap();
        let conn = rusqlite::Connection::open(folder.join(format!("{db_id}.sqlite"))).unwrap();
        conn.execute_batch(sql).unwrap();
    };
    // Year-like numbers stored as text, as Spider often does: the gold SQL
    // compares them with numbers
    sqlite(
        "shop",
        r#"
        CREATE TABLE Customer (Customer_ID int PRIMARY KEY, Name text, City text);
        CREATE TABLE Orders (Order_ID int PRIMARY KEY, Customer_ID int REFERENCES Customer(Customer_ID),
                             Amount real, Status text);
        INSERT INTO Customer VALUES (1, 'Alice', 'Paris'), (2, 'anna', 'Lyon'),
                                    (3, 'Bob', 'Paris'), (4, 'Carla', 'Nice');
        INSERT INTO Orders VALUES (10, 1, 12.5, 'paid'), (11, 1, 7.25, 'open'),
                                  (12, 2, 100.0, 'paid'), (13, 3, 3, 'open'), (14, 4, NULL, 'void');
        "#,
    );
    sqlite(
        "zoo",
        r#"
        CREATE TABLE Animal (id int PRIMARY KEY, Name text, Species text, Age text);
        INSERT INTO Animal VALUES (1, 'Rex', 'dog', '7'), (2, 'Tom', 'cat', '3'),
                                  (3, 'Fido', 'dog', '2'), (4, 'Kit', 'cat', '12');
        "#,
    );
}

async fn eval(dir: &Path, db: &TestDb) -> serde_json::Value {
    let options = EvalOptions {
        dataset: dir.to_owned(),
        gold_dialect: GoldDialect::Sqlite,
        database_url: db.url().to_owned(),
        limit: None,
        embeddings: false,
    };
    run_sql_eval(&options).await.unwrap().to_json()
}

fn fraction(report: &serde_json::Value, key: &str) -> f64 {
    let x = report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {report}"));
    assert!((0.0..=1.0).contains(&x), "{key} = {x} is outside [0, 1]");
    x
}

#[tokio::test]
async fn gold_sql_runs_the_same_through_the_pipeline_as_directly() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), true, &[]);

    let report = eval(dir.path(), &db).await;
    assert_eq!(report["questions"], 6, "{report:#}");
    assert_eq!(report["false_rejects"], 0, "{report:#}");
    assert_eq!(report["gold_not_executable"], 0, "{report:#}");
    assert_eq!(report["oracle_executed"], 6, "{report:#}");
    assert_eq!(report["oracle_match_rate"], 1.0, "{report:#}");
    fraction(&report, "table_recall");
    fraction(&report, "column_recall");
    assert!(fraction(&report, "context_token_share") > 0.0);
    assert_eq!(report["conversions"]["double_quoted_string"], 1);
    assert_eq!(report["conversions"]["like_to_ilike"], 1);

    // the data really arrived, typed so the gold SQL runs: Age was text in
    // SQLite and is compared with a number
    let client = db.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), sum(age)::bigint FROM spider_zoo.animal",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (4, 24));
    // LIKE became ILIKE: SQLite's LIKE matches 'Alice' and 'anna' for 'a%'
    let row = client
        .query_one(
            "SELECT count(*) FROM spider_shop.customer WHERE name ILIKE 'a%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    // Spider's natural-language names became comments for schema linking
    let comment: Option<String> = client
        .query_one(
            "SELECT col_description('spider_shop.orders'::regclass, 2)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment.as_deref(), Some("customer id"));
    drop(client);

    // loading again replaces the schemas: same figures
    let again = eval(dir.path(), &db).await;
    for key in [
        "questions",
        "false_rejects",
        "oracle_match_rate",
        "table_recall",
        "column_recall",
    ] {
        assert_eq!(again[key], report[key], "{key} changed on a second run");
    }
    db.drop_db().await;
}

#[tokio::test]
async fn without_database_files_only_linking_and_false_rejects_are_reported() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), false, &[]);

    let report = eval(dir.path(), &db).await;
    assert_eq!(report["questions"], 6, "{report:#}");
    assert_eq!(report["false_rejects"], 0, "{report:#}");
    assert!(report["oracle_match_rate"].is_null(), "{report:#}");
    assert_eq!(report["oracle_executed"], 0);
    fraction(&report, "table_recall");
    fraction(&report, "column_recall");
    fraction(&report, "context_token_share");

    // the schema exists, empty, with keys
    let client = db.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE connamespace = 'spider_shop'::regnamespace",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        3,
        "two primary keys and a foreign key"
    );
    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn gold_sql_postgresql_refuses_is_counted_not_hidden() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    // SQLite's bare column beside an aggregate: PostgreSQL refuses it
    write_dataset(
        dir.path(),
        true,
        &[(
            "zoo",
            "Which animal is the oldest?",
            "SELECT Name, max(Age) FROM Animal",
        )],
    );
    let report = eval(dir.path(), &db).await;
    assert_eq!(report["questions"], 7);
    assert_eq!(report["gold_not_executable"], 1, "{report:#}");
    let details = &report["gold_not_executable_details"][0];
    assert_eq!(details["index"], 6);
    assert!(
        details["reason"].as_str().unwrap().contains("GROUP BY"),
        "{details}"
    );
    // left out of the oracle's denominator, not counted as a match
    assert_eq!(report["oracle_executed"], 6);
    assert_eq!(report["oracle_match_rate"], 1.0);
    db.drop_db().await;
}

fn columns(names: &[&str]) -> HashSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn convert(sql: &str) -> (String, Vec<Rule>) {
    let c = sqlite_to_postgres(sql, &columns(&["name", "city", "18_49_rating_share"])).unwrap();
    (c.sql, c.rules.into_iter().collect())
}

#[test]
fn double_quoted_strings_become_single_quoted() {
    let (sql, rules) = convert(r#"SELECT name FROM t WHERE city = "Paris" AND name != "O'Brien""#);
    assert_eq!(
        sql,
        "SELECT name FROM t WHERE city = 'Paris' AND name <> 'O''Brien'"
    );
    assert_eq!(rules, vec![Rule::DoubleQuotedString]);
}

#[test]
fn double_quoted_column_names_stay_identifiers() {
    let (sql, rules) = convert(r#"SELECT "Name" FROM t ORDER BY "18_49_Rating_Share""#);
    assert_eq!(sql, r#"SELECT "name" FROM t ORDER BY "18_49_rating_share""#);
    assert_eq!(rules, vec![Rule::QuotedIdentifier]);
}

#[test]
fn backtick_and_bracket_identifiers_are_lower_cased_and_double_quoted() {
    let (sql, rules) = convert("SELECT `Name`, [City] FROM `Shop`");
    assert_eq!(sql, r#"SELECT "name", "city" FROM "shop""#);
    assert_eq!(rules, vec![Rule::QuotedIdentifier]);
}

#[test]
fn like_becomes_ilike() {
    let (sql, rules) = convert("SELECT name FROM t WHERE name LIKE '%a%' OR city NOT LIKE 'P%'");
    assert_eq!(
        sql,
        "SELECT name FROM t WHERE name ILIKE '%a%' OR city NOT ILIKE 'P%'"
    );
    assert_eq!(rules, vec![Rule::LikeToIlike]);
}

#[test]
fn join_without_a_condition_becomes_a_cross_join() {
    let (sql, rules) = convert("SELECT a.x FROM a JOIN b WHERE a.y = 1");
    assert_eq!(sql, "SELECT a.x FROM a CROSS JOIN b WHERE a.y = 1");
    assert_eq!(rules, vec![Rule::JoinWithoutOn]);
    // joins with a condition are left alone
    let (sql, rules) = convert("SELECT a.x FROM a JOIN b ON a.id = b.id");
    assert_eq!(sql, "SELECT a.x FROM a JOIN b ON a.id = b.id");
    assert!(rules.is_empty());
}

#[test]
fn limit_with_a_comma_becomes_limit_offset() {
    let (sql, rules) = convert("SELECT name FROM t ORDER BY name LIMIT 5, 10");
    assert_eq!(sql, "SELECT name FROM t ORDER BY name LIMIT 10 OFFSET 5");
    assert_eq!(rules, vec![Rule::LimitComma]);
}

#[test]
fn postgres_compatible_sql_is_unchanged_but_for_formatting() {
    let (sql, rules) = convert("select count(*) from t where city = 'Paris'");
    assert_eq!(sql, "SELECT count(*) FROM t WHERE city = 'Paris'");
    assert!(rules.is_empty());
}

#[test]
fn unparsable_gold_is_an_error_not_a_panic() {
    assert!(sqlite_to_postgres("SELEC name FROM", &columns(&[])).is_err());
}

#[test]
fn gold_references_resolve_aliases_subqueries_and_ignore_stars() {
    let schema: BTreeMap<String, Vec<String>> = [
        ("customer", vec!["customer_id", "name", "city"]),
        ("orders", vec!["order_id", "customer_id", "amount"]),
    ]
    .into_iter()
    .map(|(t, cs)| (t.to_owned(), cs.into_iter().map(str::to_owned).collect()))
    .collect();
    let refs = gold_refs(
        "SELECT T1.name, count(*) FROM customer AS T1 JOIN orders AS T2 \
         ON T1.customer_id = T2.customer_id \
         WHERE amount > (SELECT avg(amount) FROM orders) GROUP BY T1.name",
        &schema,
    )
    .unwrap();
    let tables: Vec<&str> = refs.tables.iter().map(String::as_str).collect();
    assert_eq!(tables, ["customer", "orders"]);
    let cols: Vec<(&str, &str)> = refs
        .columns
        .iter()
        .map(|(t, c)| (t.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        cols,
        [
            ("customer", "customer_id"),
            ("customer", "name"),
            ("orders", "amount"),
            ("orders", "customer_id"),
        ]
    );
    let star = gold_refs("SELECT * FROM customer", &schema).unwrap();
    assert!(star.columns.is_empty());
    assert_eq!(star.tables.len(), 1);
}

#[test]
fn results_compare_as_multisets_unless_ordered() {
    let rows = |xs: &[(i64, f64)]| -> Vec<Vec<Value>> {
        xs.iter()
            .map(|&(a, b)| vec![Value::Int(a), Value::Num(b)])
            .collect()
    };
    let a = rows(&[(1, 0.1 + 0.2), (2, 5.0)]);
    let b = rows(&[(2, 5.0), (1, 0.3)]);
    assert_eq!(compare(2, &a, 2, &b, false), Comparison::Equal);
    assert_eq!(compare(2, &a, 2, &b, true), Comparison::Order);
    assert_eq!(compare(2, &a, 2, &a[..1], false), Comparison::RowCount);
    assert_eq!(compare(2, &a, 1, &a, false), Comparison::ColumnCount);
    let c = rows(&[(1, 0.3), (2, 5.5)]);
    assert_eq!(compare(2, &a, 2, &c, false), Comparison::Rows);
    assert!(is_ordered("SELECT a FROM t ORDER BY a"));
    assert!(!is_ordered("SELECT a FROM (SELECT a FROM t ORDER BY a) s"));
}
