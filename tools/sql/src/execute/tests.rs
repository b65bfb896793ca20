// an unexpected variant fails the test with its value
#![allow(clippy::wildcard_enum_match_arm)]

use chrono::{NaiveDate, NaiveTime, TimeZone};

use super::*;
use crate::validate::{ValidationPolicy, validate};
use quarry_db::testing::TestDb;

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
        Cell::Interval {
            months: 0,
            days: 1,
            microseconds: 2 * 3_600_000_000,
        },
        Cell::Array(vec![Cell::Int(1), Cell::Int(2), Cell::Int(3)]),
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
    // fixed-width rows too: 1,001 rows of 16 bytes at most cannot be
    // fetched at once within 5,000 bytes, and 1,000 of 8 are over the cap
    let error = run(
        &db,
        ExecConfig {
            max_bytes: 5_000,
            max_rows: 1000,
            ..ExecConfig::default()
        },
        "SELECT g::int8 FROM generate_series(1, 2000) AS g",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, ExecError::TooLarge { max_bytes: 5_000 }),
        "{error:?}"
    );
    // and the same rows under a cap they fit, fetched at once
    let result = run(
        &db,
        ExecConfig {
            max_bytes: 1001 * 16,
            max_rows: 1000,
            ..ExecConfig::default()
        },
        "SELECT g::int8 FROM generate_series(1, 2000) AS g",
    )
    .await
    .unwrap();
    assert!(result.truncated);
    assert_eq!(result.row_count(), 1000);
    assert_eq!(result.rows[999], vec![Cell::Int(1000)]);
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

#[tokio::test]
async fn truncated_results_count_the_true_total() {
    let db = TestDb::create().await;
    let config = ExecConfig {
        max_rows: 10,
        ..ExecConfig::default()
    };
    let result = run(
        &db,
        config.clone(),
        "SELECT g FROM generate_series(1, 1234) AS g",
    )
    .await
    .unwrap();
    assert!(result.truncated);
    assert_eq!(result.total_rows, Some(1234));
    let result = run(
        &db,
        config.clone(),
        "SELECT g FROM generate_series(1, 7) AS g",
    )
    .await
    .unwrap();
    assert_eq!(result.total_rows, Some(7));
    // the query's own limit is part of the count
    let result = run(
        &db,
        config.clone(),
        "SELECT g FROM generate_series(1, 1234) AS g LIMIT 50",
    )
    .await
    .unwrap();
    assert_eq!(result.total_rows, Some(50));
    let result = run(
        &db,
        ExecConfig {
            count_when_truncated: false,
            ..config
        },
        "SELECT g FROM generate_series(1, 1234) AS g",
    )
    .await
    .unwrap();
    assert!(result.truncated);
    assert_eq!(result.total_rows, None);
    db.drop_db().await;
}

#[tokio::test]
async fn dropping_the_future_cancels_the_query_on_the_server() {
    let db = TestDb::create().await;
    let marker = format!("quarry_cancel_{}", uuid::Uuid::new_v4().simple());
    let exec = executor(
        &db,
        ExecConfig {
            statement_timeout_ms: 120_000,
            ..ExecConfig::default()
        },
    );
    let sql = format!(
        "SELECT count(*) AS {marker} FROM generate_series(1, 100000) AS a, generate_series(1, 100000) AS b"
    );
    let q = validate(&sql, &ValidationPolicy::default()).unwrap();
    let admin = db.pool().get().await.unwrap();
    let active = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
         AND pid <> pg_backend_pid() AND query LIKE '%{marker}%'"
    );
    let mut future = Box::pin(exec.execute(&q));
    tokio::select! {
        result = &mut future => panic!("the query finished early: {result:?}"),
        () = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
    }
    let running: i64 = admin.query_one(&active, &[]).await.unwrap().get(0);
    assert_eq!(running, 1, "the query is not running");
    drop(future);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let running: i64 = admin.query_one(&active, &[]).await.unwrap().get(0);
        if running == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the query still runs on the server after the future was dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(admin);
    db.drop_db().await;
}

/// `sql` returns rows of `(value, value::text)`; each value's JSON must be
/// the server's text, and its cell must match `is_typed`.
async fn assert_text_matches_the_server(
    db: &TestDb,
    sql: &str,
    rows: usize,
    is_typed: impl Fn(&Cell) -> bool,
) {
    let result = run(db, ExecConfig::default(), sql).await.unwrap();
    assert_eq!(result.rows.len(), rows);
    for row in &result.rows {
        let Cell::Text(text) = &row[1] else {
            panic!("unexpected cells {row:?}");
        };
        assert!(is_typed(&row[0]), "{row:?}");
        assert_eq!(row[0].to_json(), serde_json::Value::String(text.clone()));
    }
}

#[tokio::test]
async fn time_text_matches_the_server() {
    let db = TestDb::create().await;
    let sql = "SELECT v, v::text FROM (VALUES ('00:00:00'::time), ('04:05:06.5'), \
        ('23:59:59.999999'), ('12:00:00.000001'), ('13:14:15.12'), ('00:00:00.1')) AS t(v)";
    assert_text_matches_the_server(&db, sql, 6, |c| matches!(c, Cell::Time(_))).await;
    // 24:00:00 is a valid PostgreSQL time but not a chrono one
    let result = run(
        &db,
        ExecConfig::default(),
        "SELECT '24:00:00'::time AS a, '04:05:06+02'::timetz AS b",
    )
    .await
    .unwrap();
    assert_eq!(
        result.rows[0],
        [
            Cell::Text("24:00:00".into()),
            Cell::Text("04:05:06+02".into())
        ]
    );
    assert_eq!(
        run(&db, ExecConfig::default(), "SELECT '04:05:06.5'::time")
            .await
            .unwrap()
            .rows[0],
        [Cell::Time(
            NaiveTime::from_hms_milli_opt(4, 5, 6, 500).unwrap()
        )]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn interval_text_matches_the_server() {
    let db = TestDb::create().await;
    let values = [
        "1 year 2 mons 3 days 04:05:06.5",
        "0",
        "1 mon",
        "1 day",
        "1 year",
        "-1 year",
        "-1 day",
        "14 mons",
        "-14 mons",
        "1 second",
        "-1 second",
        "0.000001 seconds",
        "-0.5 seconds",
        "100 hours",
        "-100 hours 30 minutes",
        "-1 days +02:00:00",
        "1 day -02:00:00",
        "-1 year +2 mons -3 days +04:00:00",
        "-1 year -2 mons +3 days -04:00:00",
        "1 year -1 mon",
        "2 days 3 mons",
        "178000000 years",
        "-178000000 years",
        "2147483647 days",
        "-2147483648 days",
        "2562047788 hours",
        "-2562047788 hours",
        "1.5 months",
        "P1Y2M3DT4H5M6.7S",
        "12:34:56.789012",
    ];
    let list: Vec<String> = values
        .iter()
        .map(|v| format!("('{v}'::interval)"))
        .collect();
    let sql = format!(
        "SELECT v, v::text FROM (VALUES {}) AS t(v)",
        list.join(", ")
    );
    assert_text_matches_the_server(&db, &sql, values.len(), |c| {
        matches!(c, Cell::Interval { .. })
    })
    .await;
    // the extremes of every field (cannot be written as one literal); all
    // three at their minimum or maximum at once is PostgreSQL 17's
    // -infinity/infinity, so the time part stays one microsecond inside
    let sql = "SELECT v, v::text FROM (VALUES \
        ('-2147483648 mons'::interval + '-2147483648 days' + '-2562047788 hours' \
            - '54.775807 seconds'), \
        ('2147483647 mons'::interval + '2147483647 days' + '2562047788 hours' \
            + '54.775806 seconds'), \
        ('-2147483648 mons'::interval), ('-2562047788 hours'::interval - '54.775808 seconds')) \
        AS t(v)";
    assert_text_matches_the_server(&db, sql, 4, |c| matches!(c, Cell::Interval { .. })).await;
    let result = run(
        &db,
        ExecConfig::default(),
        "SELECT interval '1 year 2 mons 3 days 04:05:06.5'",
    )
    .await
    .unwrap();
    assert_eq!(
        result.rows[0],
        [Cell::Interval {
            months: 14,
            days: 3,
            microseconds: 14_706_500_000,
        }]
    );
    db.drop_db().await;
}

#[test]
fn interval_text_renders_postgres_style() {
    assert_eq!(interval_text(0, 0, 0), "00:00:00");
    assert_eq!(
        interval_text(14, 3, 14_706_500_000),
        "1 year 2 mons 3 days 04:05:06.5"
    );
    assert_eq!(interval_text(0, -1, 7_200_000_000), "-1 days +02:00:00");
    assert_eq!(interval_text(-1, 0, 0), "-1 mons");
    assert_eq!(interval_text(0, 0, -500_000), "-00:00:00.5");
    assert_eq!(
        interval_text(i32::MIN, i32::MIN, i64::MIN),
        "-178956970 years -8 mons -2147483648 days -2562047788:00:54.775808"
    );
}

#[tokio::test]
async fn real_cells_are_the_decimal_postgresql_prints() {
    let db = TestDb::create().await;
    // each value next to PostgreSQL's own text of it
    let sql = "SELECT v, v::text FROM unnest(ARRAY[4.7, 0.1, -1.3, 1e-45, 3.4028235e38,
        16777217, 'Infinity', '-Infinity', 'NaN']::real[]) AS t(v)";
    let result = run(&db, ExecConfig::default(), sql).await.unwrap();
    assert_eq!(result.rows.len(), 9);
    for row in &result.rows {
        let [Cell::Float(value), Cell::Text(printed)] = row.as_slice() else {
            panic!("unexpected cells {row:?}");
        };
        let printed = match printed.as_str() {
            "Infinity" => "inf",
            "-Infinity" => "-inf",
            other => other,
        };
        // 1e-45 prints as 1e-45 in PostgreSQL and 0.000…001 in Rust
        let expected: f64 = printed.parse().unwrap();
        if expected.is_nan() {
            assert!(value.is_nan(), "{row:?}");
        } else {
            assert_eq!(*value, expected, "{row:?}");
        }
    }
    // the value a model and a client read: no float4 → float8 artefacts
    let Cell::Float(v) = result.rows[0][0] else {
        unreachable!()
    };
    assert_eq!(v.to_string(), "4.7");
}

#[tokio::test]
async fn arrays_decode_element_by_element() {
    let db = TestDb::create().await;
    // the server's JSON of each array with its elements as text: the same
    // shape as ours, with every element compared to its own `::text`
    let arrays = [
        "ARRAY[1, NULL, 3]::int2[]",
        "ARRAY[1, 2]::int4[]",
        "ARRAY[3000000000]::int8[]",
        "ARRAY[1.5, -0.25]::float4[]",
        "ARRAY[2.25, 1e-3]::float8[]",
        "ARRAY[12.50, -0.000123, 'NaN', 100000]::numeric[]",
        "ARRAY['a', 'b,c', 'd\"e', NULL, '', 'NULL', '{x}']::text[]",
        "ARRAY['vc']::varchar[]",
        "ARRAY[true, false]",
        "ARRAY[DATE '2024-02-29', 'infinity']",
        "ARRAY[TIME '04:05:06.5']",
        "ARRAY[interval '1 day -02:00:00']",
        "ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]",
        "'{}'::int4[]",
        "'{{1,2,3},{4,5,6}}'::int4[]",
        "'{{{1},{2}},{{3},{4}}}'::int8[]",
        "'[0:1]={7,8}'::int4[]",
        "'{{a,NULL},{c,d}}'::text[]",
    ];
    for (i, array) in arrays.iter().enumerate() {
        let sql =
            format!("SELECT v, array_to_json(v::text[])::text FROM (VALUES ({array})) AS t(v)");
        let result = run(&db, ExecConfig::default(), &sql).await.unwrap();
        let [Cell::Array(_), Cell::Text(json)] = result.rows[0].as_slice() else {
            panic!("{array}: unexpected cells {:?}", result.rows[0]);
        };
        let expected: serde_json::Value = serde_json::from_str(json).unwrap();
        let got = as_text_json(&result.rows[0][0]);
        assert_eq!(got, expected, "{array} (#{i})");
    }
    // typed elements, NULLs and nesting
    let result = run(
        &db,
        ExecConfig::default(),
        "SELECT ARRAY[[1, NULL], [3, 4]] AS a, ARRAY['{\"k\": 1}'::json, NULL] AS b, \
         ARRAY[TIMESTAMPTZ '2024-01-02 03:04:05+02'] AS c, ARRAY[12.5::numeric] AS d, \
         '{}'::text[] AS e, ARRAY['10.0.0.1'::inet] AS f",
    )
    .await
    .unwrap();
    let types: Vec<&str> = result
        .columns
        .iter()
        .map(|c| c.type_name.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "_int4",
            "_json",
            "_timestamptz",
            "_numeric",
            "_text",
            "_inet"
        ]
    );
    assert_eq!(
        result.rows[0],
        [
            Cell::Array(vec![
                Cell::Array(vec![Cell::Int(1), Cell::Null]),
                Cell::Array(vec![Cell::Int(3), Cell::Int(4)]),
            ]),
            Cell::Array(vec![Cell::Json(serde_json::json!({"k": 1})), Cell::Null]),
            Cell::Array(vec![Cell::TimestampTz(
                chrono::Utc.with_ymd_and_hms(2024, 1, 2, 1, 4, 5).unwrap()
            )]),
            Cell::Array(vec![Cell::Decimal("12.5".into())]),
            Cell::Array(vec![]),
            // arrays of unsupported element types are cast to text
            Cell::Text("{10.0.0.1}".into()),
        ]
    );
    assert_eq!(
        result.rows[0][0].to_json(),
        serde_json::json!([[1, null], [3, 4]])
    );
    db.drop_db().await;
}

/// An array cell as JSON with each element in PostgreSQL's text form, like
/// the server's `array_to_json(v::text[])`.
fn as_text_json(cell: &Cell) -> serde_json::Value {
    use serde_json::Value;
    match cell {
        Cell::Array(cells) => Value::Array(cells.iter().map(as_text_json).collect()),
        Cell::Null => Value::Null,
        Cell::Bool(b) => Value::String(if *b { "true" } else { "false" }.into()),
        Cell::Int(i) => Value::String(i.to_string()),
        // PostgreSQL's shortest round-trip form, for the plain values used here
        Cell::Float(f) => Value::String(f.to_string()),
        Cell::Decimal(s) | Cell::Text(s) => Value::String(s.clone()),
        Cell::Date(d) => Value::String(d.to_string()),
        other => other.to_json(),
    }
}

#[tokio::test]
async fn a_cost_ceiling_refuses_expensive_queries_before_they_run() {
    let db = TestDb::create().await;
    let config = ExecConfig {
        max_estimated_cost: Some(1_000.0),
        ..ExecConfig::default()
    };
    let marker = format!("quarry_cost_{}", uuid::Uuid::new_v4().simple());
    let sql = format!(
        "SELECT count(*) AS {marker} FROM generate_series(1, 100000) AS a, \
         generate_series(1, 100000) AS b"
    );
    let started = std::time::Instant::now();
    let error = run(&db, config.clone(), &sql).await.unwrap_err();
    let ExecError::TooExpensive { estimated, limit } = error else {
        panic!("unexpected {error:?}");
    };
    assert_eq!(limit, 1_000.0);
    assert!(estimated > 1_000_000.0, "{estimated}");
    let message = error.to_string();
    assert!(
        message.contains("1000.00") && message.contains("§14.1"),
        "{message}"
    );
    // refused at planning: a full run would take minutes
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // a cheap query passes, and so does any query without a ceiling
    let result = run(&db, config, "SELECT g FROM generate_series(1, 10) AS g")
        .await
        .unwrap();
    assert_eq!(result.row_count(), 10);
    let result = run(
        &db,
        ExecConfig::default(),
        "SELECT count(*) FROM generate_series(1, 1000) AS a, generate_series(1, 1000) AS b",
    )
    .await
    .unwrap();
    assert_eq!(result.rows, vec![vec![Cell::Int(1_000_000)]]);
    db.drop_db().await;
}

#[tokio::test]
async fn a_cost_ceiling_skips_an_expensive_count() {
    let db = TestDb::create().await;
    // the capped query is cheap (its limit stops the join after 6 rows, an
    // estimated cost below 1), its count(*) over the whole 4-million-row
    // cross join is not (about 90 000)
    let sql = "SELECT a FROM generate_series(1, 2000) AS a, generate_series(1, 2000) AS b";
    let config = ExecConfig {
        max_rows: 5,
        ..ExecConfig::default()
    };
    let result = run(&db, config.clone(), sql).await.unwrap();
    assert_eq!(result.total_rows, Some(4_000_000));
    let config = ExecConfig {
        max_estimated_cost: Some(10_000.0),
        ..config
    };
    let result = run(&db, config, sql).await.unwrap();
    assert!(result.truncated);
    assert_eq!(result.row_count(), 5);
    assert_eq!(result.total_rows, None);
    db.drop_db().await;
}

#[test]
fn fetches_leave_held_rows_within_the_byte_cap() {
    // nothing known yet: one row
    assert_eq!(next_fetch(256, 1001, 4_000_000, 0, 0, true), 1);
    // small rows: the whole batch
    assert_eq!(next_fetch(256, 1000, 4_000_000, 100, 100, false), 256);
    // 1 MB rows with 1.5 MB left: one more row at a time, never 256
    assert_eq!(
        next_fetch(256, 1000, 4_000_000, 2_500_000, 1_000_000, false),
        1
    );
    // 100 kB rows, 1 MB left: ten
    assert_eq!(
        next_fetch(256, 1000, 4_000_000, 3_000_000, 100_000, false),
        10
    );
    // never more than wanted (one past the row cap)
    assert_eq!(next_fetch(256, 3, 4_000_000, 0, 10, false), 3);
}

/// PostgreSQL refuses a row over the byte cap itself, before sending it:
/// the wrapped query fails with the guard's error, while rows within the
/// cap come back exactly as the original query returns them.
#[tokio::test]
async fn a_row_over_the_byte_cap_is_refused_before_it_is_sent() {
    let db = TestDb::create().await;
    let client = db.pool().get().await.unwrap();
    let sql = "SELECT g, repeat('x', g * 1000) AS s, ARRAY[g] AS a FROM generate_series(1, 3) g";
    let statement = client.prepare(sql).await.unwrap();
    let wrapped = guarded_select(sql, statement.columns(), 2_500).unwrap();
    let error = client.query(&wrapped, &[]).await.unwrap_err();
    assert!(is_row_too_large(&error), "{error}");
    let fits = guarded_select(sql, statement.columns(), 10_000).unwrap();
    let rows = client.query(&fits, &[]).await.unwrap();
    let lengths: Vec<usize> = rows.iter().map(|r| r.get::<_, String>(1).len()).collect();
    assert_eq!(lengths, [1000, 2000, 3000]);
    // nothing to wrap: fixed-size, natively decoded columns
    let plain = client.prepare("SELECT 1::int4, now()").await.unwrap();
    assert!(guarded_select("SELECT 1::int4, now()", plain.columns(), 10).is_none());
    drop(client);

    // through the executor: TooLarge, as for the cap over many rows
    let config = ExecConfig {
        max_bytes: 1_000_000,
        ..ExecConfig::default()
    };
    let result = run(
        &db,
        config,
        "SELECT repeat('x', 40000000 + g - g) FROM generate_series(1, 6) AS g",
    )
    .await;
    assert!(
        matches!(
            result,
            Err(ExecError::TooLarge {
                max_bytes: 1_000_000
            })
        ),
        "{result:?}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn work_mem_and_temp_file_limit_are_set_per_query() {
    let db = TestDb::create().await;
    let config = ExecConfig {
        work_mem_kb: 1_024,
        temp_file_limit_kb: 1_024,
        ..ExecConfig::default()
    };
    let spill = run(
        &db,
        config,
        "SELECT count(*) FROM (SELECT g FROM generate_series(1, 3000000) AS g ORDER BY g DESC) AS s",
    )
    .await;
    match spill {
        Err(error @ ExecError::Database { .. }) => {
            let ExecError::Database { ref code, .. } = error else {
                unreachable!()
            };
            assert_eq!(code, "53400", "{error}");
            assert_eq!(
                quarry_proto::ServiceError::error_code(&error),
                quarry_proto::ServiceErrorCode::ResourceExhausted
            );
        }
        other => panic!("expected temp_file_limit to stop the sort, got {other:?}"),
    }
    // the defaults let the same sort finish
    let fine = run(
        &db,
        ExecConfig::default(),
        "SELECT count(*) FROM (SELECT g FROM generate_series(1, 3000000) AS g ORDER BY g DESC) AS s",
    )
    .await
    .unwrap();
    assert_eq!(fine.rows[0], vec![Cell::Int(3_000_000)]);
    db.drop_db().await;
}

/// Parallel query is off by default (one backend, so one core, per
/// query) and follows the configuration when set: the test fails if the
/// setting is dropped from the transaction's `SET LOCAL` batch.
#[tokio::test]
async fn parallel_workers_per_gather_are_set_per_query() {
    let db = TestDb::create().await;
    let mut client = db.pool().get().await.unwrap();
    for (workers, expected) in [(None, "0"), (Some(2), "2")] {
        let mut config = ExecConfig::default();
        if let Some(workers) = workers {
            config.max_parallel_workers_per_gather = workers;
        }
        let tx = super::guard(&config, None, None)
            .begin(&mut client)
            .await
            .unwrap();
        let row = tx
            .query_one(
                "SELECT current_setting('max_parallel_workers_per_gather')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), expected);
        tx.rollback().await.unwrap();
    }
    drop(client);
    db.drop_db().await;
}
