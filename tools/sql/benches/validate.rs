//! Validation overhead over parsing, on all 972 Spider dev gold queries
//! (issue item 12; target: validate + rewrite adds at most 20 % to parsing).
//!
//! `cargo bench -p quarry-sql --bench validate` (add `-- --quick` for a short
//! run). Set `QUARRY_SHARED_DATA` when the data is not at `../shared/data`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use quarry_sql::{ValidationPolicy, validate};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

fn spider_gold() -> Vec<String> {
    let dir = std::env::var_os("QUARRY_SHARED_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
        PathBuf::from,
    );
    let text = std::fs::read_to_string(dir.join("spider/dev.json")).expect("read spider dev.json");
    let examples: Vec<serde_json::Value> = serde_json::from_str(&text).expect("parse dev.json");
    examples
        .iter()
        .map(|e| e["query"].as_str().expect("query").to_owned())
        .collect()
}

fn bench(c: &mut Criterion) {
    let queries = spider_gold();
    let policy = ValidationPolicy::default();
    let mut group = c.benchmark_group("spider_dev_gold");
    group.bench_function("parse", |b| {
        b.iter(|| {
            for sql in &queries {
                black_box(Parser::parse_sql(&PostgreSqlDialect {}, black_box(sql)).unwrap());
            }
        });
    });
    group.bench_function("validate_and_rewrite", |b| {
        b.iter(|| {
            for sql in &queries {
                let q = validate(black_box(sql), &policy).unwrap();
                black_box(q.rewritten_sql(1_000));
            }
        });
    });
    group.bench_function("validate", |b| {
        b.iter(|| {
            for sql in &queries {
                black_box(validate(black_box(sql), &policy).unwrap());
            }
        });
    });
    let validated: Vec<_> = queries
        .iter()
        .map(|sql| validate(sql, &policy).unwrap())
        .collect();
    group.bench_function("render", |b| {
        b.iter(|| {
            for q in &validated {
                black_box(q.sql());
            }
        });
    });
    group.bench_function("rewrite", |b| {
        b.iter(|| {
            for q in &validated {
                black_box(q.rewritten_sql(1_000));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
