//! Local embedding throughput: all-MiniLM-L6-v2 on the CPU, reported as
//! texts per second:
//! - `batch_of_64_short_sentences`: 64 short sentences (7–14 word pieces
//!   each) as one question-lane call ([`LocalMiniLm::embed_blocking`]);
//! - `background_64_scifact_abstracts`: the first 64 abstracts of SciFact's
//!   `corpus.jsonl` (title and text, as the search eval embeds them; most
//!   are cut at 256 word pieces) as one background call
//!   ([`LocalMiniLm::embed_background_blocking`]), what the index sync does;
//! - `background_*`: the 64 short sentences and the 64 abstracts as
//!   background work, with the default options and with background batches
//!   capped at 1,024 padded tokens (the default before the lanes got their
//!   own thread pools, issue 18), which is the before/after of that change.
//!
//! Needs the model (run `dev/model.sh` first, or set `QUARRY_MODEL_DIR`) and
//! the shared data folder for the second (`../shared/data` next to the
//! repository, or `QUARRY_SHARED_DATA`).
//!
//! ```sh
//! cargo bench -p quarry-llm --bench embed
//! ```

// a benchmark without its model cannot run; panicking says why
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quarry_llm::embed::{DEFAULT_MODEL_DIR, LocalMiniLm, LocalMiniLmOptions, MODEL_DIR_ENV};

const BATCH: usize = 64;

fn model_dir() -> PathBuf {
    std::env::var_os(MODEL_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(DEFAULT_MODEL_DIR)
        })
}

/// 64 distinct short sentences, like table and column descriptions.
fn sentences() -> Vec<String> {
    let subjects = [
        "painting",
        "sculpture",
        "print",
        "drawing",
        "photograph",
        "installation",
        "textile",
        "video work",
    ];
    let places = [
        "London",
        "Paris",
        "St Ives",
        "Liverpool",
        "New York",
        "Berlin",
        "Tokyo",
        "Glasgow",
    ];
    (0..BATCH)
        .map(|i| {
            format!(
                "A {} acquired in {} from {}.",
                subjects[i % subjects.len()],
                1900 + i,
                places[(i / subjects.len()) % places.len()]
            )
        })
        .collect()
}

/// The first [`BATCH`] SciFact abstracts, `title text`.
fn abstracts() -> Vec<String> {
    let data = std::env::var_os("QUARRY_SHARED_DATA")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let path = data.join("scifact/corpus.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set QUARRY_SHARED_DATA)", path.display()));
    text.lines()
        .take(BATCH)
        .map(|line| {
            let doc: serde_json::Value = serde_json::from_str(line).unwrap();
            format!(
                "{} {}",
                doc["title"].as_str().unwrap_or_default(),
                doc["text"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn local_minilm(c: &mut Criterion) {
    let model = LocalMiniLm::load(&model_dir(), LocalMiniLmOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let texts = sentences();
    let mut group = c.benchmark_group("local_minilm");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(45));
    group.bench_function("batch_of_64_short_sentences", |b| {
        b.iter(|| model.embed_blocking(&texts).unwrap())
    });
    let documents = abstracts();
    let capped = LocalMiniLm::load(
        &model_dir(),
        LocalMiniLmOptions {
            background_batch_tokens: 1024,
            ..LocalMiniLmOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    group.bench_function("background_64_short_sentences", |b| {
        b.iter(|| model.embed_background_blocking(&texts).unwrap())
    });
    group.bench_function("background_64_short_sentences_capped_1024_tokens", |b| {
        b.iter(|| capped.embed_background_blocking(&texts).unwrap())
    });
    group.measurement_time(Duration::from_secs(60));
    group.bench_function("background_64_scifact_abstracts", |b| {
        b.iter(|| model.embed_background_blocking(&documents).unwrap())
    });
    group.bench_function("background_64_scifact_abstracts_capped_1024_tokens", |b| {
        b.iter(|| capped.embed_background_blocking(&documents).unwrap())
    });
    group.finish();
}

criterion_group!(benches, local_minilm);
criterion_main!(benches);
