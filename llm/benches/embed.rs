//! Local embedding throughput: all-MiniLM-L6-v2 on the CPU, reported as
//! texts per second:
//! - `batch_of_64_short_sentences`: 64 short sentences (7–14 word pieces
//!   each) as one question-lane call ([`LocalMiniLm::embed_blocking`]);
//! - `background_tate_artwork_texts`: the text fields the index sync embeds
//!   for the first 200 Tate artworks (title, medium, credit line,
//!   inscription, subjects; distinct, sorted by length and sent 64 at a
//!   time, as `quarry-search-sync` does), as background work
//!   ([`LocalMiniLm::embed_background_blocking`]);
//! - `background_64_scifact_abstracts`: the first 64 abstracts of SciFact's
//!   `corpus.jsonl` (title and text, as the search eval embeds them; most
//!   are cut at 256 word pieces) as one background call;
//! - each background case also with background batches of up to 16,384
//!   padded tokens (`_16384_tokens`), the default before issue 18's second
//!   pass: the before/after of that change.
//!
//! Needs the model (run `dev/model.sh` first, or set `QUARRY_MODEL_DIR`) and
//! the shared data folder for the last two (`../shared/data` next to the
//! repository, or `QUARRY_SHARED_DATA`).
//!
//! ```sh
//! cargo bench -p quarry-llm --bench embed
//! ```

// a benchmark without its model cannot run; panicking says why
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
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

fn shared_data() -> PathBuf {
    std::env::var_os("QUARRY_SHARED_DATA")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// Artworks whose text fields [`tate_texts`] takes.
const TATE_ARTWORKS: usize = 200;

/// The distinct text fields of the first [`TATE_ARTWORKS`] artworks of
/// `tate/artworks.jsonl.gz`, as `dev/quarry.toml`'s `artworks` collection
/// defines them (subjects joined with `, ` in order), shortest first.
fn tate_texts() -> Vec<String> {
    let path = shared_data().join("tate/artworks.jsonl.gz");
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set QUARRY_SHARED_DATA)", path.display()));
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(file));
    let mut texts = std::collections::BTreeSet::new();
    for line in reader.lines().take(TATE_ARTWORKS) {
        let doc: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        for field in ["title", "medium", "credit_line", "inscription"] {
            if let Some(text) = doc[field].as_str().filter(|t| !t.is_empty()) {
                texts.insert(text.to_owned());
            }
        }
        let mut subjects: Vec<&str> = doc["subjects"]
            .as_array()
            .map(|s| s.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        subjects.sort_unstable();
        if !subjects.is_empty() {
            texts.insert(subjects.join(", "));
        }
    }
    let mut texts: Vec<String> = texts.into_iter().collect();
    texts.sort_by_key(String::len);
    texts
}

/// The first [`BATCH`] SciFact abstracts, `title text`.
fn abstracts() -> Vec<String> {
    let path = shared_data().join("scifact/corpus.jsonl");
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
    let before = LocalMiniLm::load(
        &model_dir(),
        LocalMiniLmOptions {
            background_batch_tokens: 16_384,
            ..LocalMiniLmOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tate = tate_texts();
    group.throughput(Throughput::Elements(tate.len() as u64));
    group.measurement_time(Duration::from_secs(60));
    for (name, model) in [
        ("background_tate_artwork_texts", &model),
        ("background_tate_artwork_texts_16384_tokens", &before),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                for chunk in tate.chunks(BATCH) {
                    model.embed_background_blocking(chunk).unwrap();
                }
            })
        });
    }
    let documents = abstracts();
    group.throughput(Throughput::Elements(documents.len() as u64));
    for (name, model) in [
        ("background_64_scifact_abstracts", &model),
        ("background_64_scifact_abstracts_16384_tokens", &before),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| model.embed_background_blocking(&documents).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, local_minilm);
criterion_main!(benches);
