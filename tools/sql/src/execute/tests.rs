use chrono::{NaiveDate, TimeZone};

use super::*;
use crate::testing::TestDb;
use crate::validate::{ValidationPolicy, validate};

fn executor(db: &TestDb, config: ExecConfig) -> Executor {
    Executor::new(db.pool().clone(), config)
}

async fn run(db: &TestDb, config: ExecConfig, sql: &str) -> Result<QueryResult, ExecError> {
    let q = validate(sql, &ValidationPolicy::default()).unwrap();
    executor(db, config).execute(&q).await
}

#[tokio::test]
async fn decodes_typed_cells() {
    let db = TestDb::create().await;
    let client = db.pool().get().await.unwrap();
    client
        .batch_execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
        .await
        .unwrap();
    drop(client);
    let sql = "SELECT 1::int2 AS a, 2::int4 AS b, 3000000000::int8 AS c, 26::oid AS d,
        1.5::float4 AS e, 2.25::float8 AS f,
        12.50::numeric AS g, -0.000123::numeric AS h, 'NaN'::numeric AS i,
        123456789012345678901234567890.123456789::numeric AS j,
        'txt'::text AS k, 'vc'::varchar(5) AS l, 'bp'::char(3) AS m, 'nm'::name AS n,
        true AS o, DATE '2024-02-29' AS p, TIMESTAMP '2024-01-02 03:04:05.678' AS q,
        TIMESTAMPTZ '2024-01-02 03:04:05+02' AS r, '{\"a\": [1, 2]}'::json AS s,
        '{\"b\": null}'::jsonb AS t, '\\xdeadbeef'::bytea AS u,
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS v,
        interval '1 day 2 hours' AS w, ARRAY[1, 2, 3] AS x, 'happy'::mood AS y,
        NULL::int4 AS z, 'infinity'::date AS aa, '-infinity'::timestamptz AS ab,
        '10.0.0.1'::inet AS ac, 'x'::\"char\" AS ad, 100000::numeric AS ae,
        0.00::numeric AS af";
    let result = run(&db, ExecConfig::default(), sql).await.unwrap();
    let types: Vec<&str> = result
        .columns
        .iter()
        .map(|c| c.type_name.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "int2",
            "int4",
            "int8",
            "oid",
            "float4",
            "float8",
            "numeric",
            "numeric",
            "numeric",
            "numeric",
            "text",
            "varchar",
            "bpchar",
            "name",
            "bool",
            "date",
            "timestamp",
            "timestamptz",
            "json",
            "jsonb",
            "bytea",
            "uuid",
            "interval",
            "_int4",
            "mood",
            "int4",
            "date",
            "timestamptz",
            "inet",
            "char",
            "numeric",
            "numeric"
        ]
    );
    assert_eq!(result.columns[0].name, "a");
    assert_eq!(result.rows.len(), 1);
    assert!(!result.truncated);
    let expected = vec![
        Cell::Int(1),
        Cell::Int(2),
        Cell::Int(3_000_000_000),
        Cell::Int(26),
        Cell::Float(1.5),
        Cell::Float(2.25),
        Cell::Decimal("12.50".into()),
        Cell::Decimal("-0.000123".into()),
        Cell::Decimal("NaN".into()),
        Cell::Decimal("123456789012345678901234567890.123456789".into()),
        Cell::Text("txt".into()),
        Cell::Text("vc".into()),
        Cell::Text("bp ".into()),
        Cell::Text("nm".into()),
        Cell::Bool(true),
        Cell::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
        Cell::Timestamp(
            NaiveDate::from_ymd_opt(2024, 1, 2)
                .unwrap()
                .and_hms_milli_opt(3, 4, 5, 678)
                .unwrap(),
        ),
        Cell::TimestampTz(chrono::Utc.with_ymd_and_hms(2024, 1, 2, 1, 4, 5).unwrap()),
        Cell::Json(serde_json::json!({"a": [1, 2]})),
        Cell::Json(serde_json::json!({"b": null})),
        Cell::Bytes(vec![0xde, 0xad, 0xbe, 0xef]),
        Cell::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        Cell::Text("1 day 02:00:00".into()),
        Cell::Text("{1,2,3}".into()),
        Cell::Text("happy".into()),
        Cell::Null,
        Cell::Text("infinity".into()),
        Cell::Text("-infinity".into()),
        // inet::text keeps the netmask (unlike its output function)
        Cell::Text("10.0.0.1/32".into()),
        Cell::Text("x".into()),
        Cell::Decimal("100000".into()),
        Cell::Decimal("0.00".into()),
    ];
    for (i, (got, want)) in result.rows[0].iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "column {}", result.columns[i].name);
    }
    assert_eq!(result.rows[0].len(), expected.len());
    assert!(result.bytes > 0);
    db.drop_db().await;
}

#[tokio::test]
async fn numeric_text_matches_the_server() {
    let db = TestDb::create().await;
    let sql = "SELECT v, v::text FROM (VALUES (0::numeric), (1), (-1), (9999), (10000), \
        (0.1), (0.0001), (0.00001), (-123.456), (1e20), (1.5e-20), (12345678.87654321), \
        ('Infinity'), ('-Infinity'), (0.000), (100.100)) AS t(v)";
    let result = run(&db, ExecConfig::default(), sql).await.unwrap();
    assert_eq!(result.rows.len(), 16);
    for row in &result.rows {
        let (Cell::Decimal(decoded), Cell::Text(text)) = (&row[0], &row[1]) else {
            panic!("unexpected cells {row:?}");
        };
        assert_eq!(decoded, text);
    }
    db.drop_db().await;
}

#[tokio::test]
async fn row_cap_truncates_at_exactly_max_rows() {
    let db = TestDb::create().await;
    let config = ExecConfig {
        max_rows: 25,
        fetch_batch: 7,
        ..ExecConfig::default()
    };
    let result = run(
        &db,
        config.clone(),
        "SELECT g FROM generate_series(1, 1000) AS g",
    )
    .await
    .unwrap();
    assert!(result.truncated);
    assert_eq!(result.row_count(), 25);
    assert_eq!(result.rows[24], vec![Cell::Int(25)]);

    // exactly max_rows rows is not truncated
    let result = run(
        &db,
        config.clone(),
        "SELECT g FROM generate_series(1, 25) AS g",
    )
    .await
    .unwrap();
    assert!(!result.truncated);
    assert_eq!(result.row_count(), 25);

    // the query's own smaller limit wins
    let result = run(
        &db,
        config,
        "SELECT g FROM generate_series(1, 1000) AS g LIMIT 3",
    )
    .await
    .unwrap();
    assert!(!result.truncated);
    assert_eq!(result.row_count(), 3);
    db.drop_db().await;
}

#[tokio::test]
async fn empty_results_keep_their_columns() {
    let db = TestDb::create().await;
    let result = run(
        &db,
        ExecConfig::default(),
        "SELECT 1 AS one, 'x' AS two WHERE false",
    )
    .await
    .unwrap();
    assert_eq!(result.row_count(), 0);
    assert_eq!(
        result
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["one", "two"]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn byte_cap_is_an_error() {
    let db = TestDb::create().await;
    let config = ExecConfig {
        max_bytes: 10_000,
        ..ExecConfig::default()
    };
    let error = run(
        &db,
        config,
        "SELECT repeat('x', 1000) FROM generate_series(1, 100)",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, ExecError::TooLarge { max_bytes: 10_000 }),
        "{error:?}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn statement_timeout_is_a_timeout_error() {
    let db = TestDb::create().await;
    let config = ExecConfig {
        statement_timeout_ms: 200,
        ..ExecConfig::default()
    };
    let started = std::time::Instant::now();
    let error = run(&db, config, "SELECT count(*) FROM generate_series(1, 1e9)")
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExecError::Timeout { timeout_ms: 200 }),
        "{error:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // the connection is usable afterwards, and the timeout did not leak
    // out of the transaction
    let client = db.pool().get().await.unwrap();
    let row = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "0");
    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn database_errors_carry_sqlstate_and_position() {
    let db = TestDb::create().await;
    let error = run(
        &db,
        ExecConfig::default(),
        "SELECT no_such_column FROM (SELECT 1 AS a) s",
    )
    .await
    .unwrap_err();
    match error {
        ExecError::Database {
            code,
            message,
            position,
            ..
        } => {
            assert_eq!(code, "42703");
            assert!(message.contains("no_such_column"), "{message}");
            assert_eq!(position, Some(8));
        }
        other => panic!("unexpected {other:?}"),
    }
    db.drop_db().await;
}

#[tokio::test]
async fn the_transaction_is_read_only_even_without_the_validator() {
    let db = TestDb::create().await;
    let client = db.pool().get().await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    drop(client);
    let exec = executor(&db, ExecConfig::default());
    for sql in [
        "INSERT INTO t VALUES (2)",
        "DELETE FROM t",
        "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
        "CREATE TABLE u (id int)",
        "SELECT * INTO u FROM t",
    ] {
        let error = exec.run_sql(sql, None, 10).await.unwrap_err();
        assert_eq!(error.sqlstate(), Some("25006"), "{sql}: {error:?}");
    }
    // nothing changed
    let result = run(&db, ExecConfig::default(), "SELECT count(*) FROM t")
        .await
        .unwrap();
    assert_eq!(result.rows, vec![vec![Cell::Int(1)]]);
    db.drop_db().await;
}

#[tokio::test]
async fn search_path_is_pinned_to_the_allowed_schemas() {
    let db = TestDb::create().await;
    let client = db.pool().get().await.unwrap();
    client
        .batch_execute(
            "CREATE SCHEMA tate; CREATE TABLE tate.artworks (id int);
             INSERT INTO tate.artworks VALUES (7);
             CREATE TABLE public.secrets (id int)",
        )
        .await
        .unwrap();
    drop(client);
    let policy = ValidationPolicy {
        allowed_schemas: Some(vec!["tate".into()]),
        ..ValidationPolicy::default()
    };
    let exec = executor(&db, ExecConfig::default());
    let q = validate("SELECT id FROM artworks", &policy).unwrap();
    let result = exec.execute(&q).await.unwrap();
    assert_eq!(result.rows, vec![vec![Cell::Int(7)]]);
    // an unqualified table of another schema is not found
    let q = validate("SELECT id FROM secrets", &policy).unwrap();
    let error = exec.execute(&q).await.unwrap_err();
    assert_eq!(error.sqlstate(), Some("42P01"), "{error:?}");
    db.drop_db().await;
}
