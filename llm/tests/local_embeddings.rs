//! `LocalMiniLm` against reference vectors from sentence-transformers.
//!
//! Needs the model files: `dev/model.sh` installs them; the tests read
//! `QUARRY_MODEL_DIR` if set, else ask `dev/model.sh path`, and fail (not
//! skip) when neither finds the model. `tests/fixtures/minilm_reference.json`
//! was produced by `tests/fixtures/minilm_reference.py` (see its docstring for
//! the exact command): sentence-transformers 6.2.0 on torch 2.15.0 (CPU),
//! reading the same files.

// test helpers outside #[test] fns panic on purpose too
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use quarry_llm::embed::{
    Embedder, LocalMiniLm, LocalMiniLmOptions, MINILM_DIMENSION, MINILM_MODEL_ID, cosine,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    model_id: String,
    max_seq_length: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    tokens: usize,
    embedding: Vec<f32>,
}

fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QUARRY_MODEL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("dev/model.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("path")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "the local embedding model is not installed: run dev/model.sh (or set \
         QUARRY_MODEL_DIR to the directory holding config.json, model.safetensors \
         and tokenizer.json); dev/model.sh path said: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// The model with `batch_size` 64, loaded once per test binary.
fn model() -> &'static LocalMiniLm {
    static MODEL: OnceLock<LocalMiniLm> = OnceLock::new();
    MODEL.get_or_init(|| {
        LocalMiniLm::load(&model_dir(), LocalMiniLmOptions::default())
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn reference() -> Reference {
    let text = include_str!("fixtures/minilm_reference.json");
    serde_json::from_str(text).unwrap()
}

fn owned(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|s| (*s).to_owned()).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[tokio::test]
async fn vectors_match_sentence_transformers_to_1e4() {
    let reference = reference();
    let model = model();
    assert_eq!(model.model_id(), reference.model_id);
    assert_eq!(model.model_id(), MINILM_MODEL_ID);
    assert_eq!(model.dimension(), MINILM_DIMENSION);
    assert_eq!(model.options().max_seq_length, reference.max_seq_length);
    // the long case only matches if truncation happens at 256 tokens
    assert!(reference.cases.iter().any(|c| c.tokens == 256));

    let texts = reference.cases.iter().map(|c| c.text.clone()).collect();
    let vectors = model.embed(texts).await.unwrap();
    assert_eq!(vectors.len(), reference.cases.len());
    for (case, vector) in reference.cases.iter().zip(&vectors) {
        assert_eq!(vector.len(), MINILM_DIMENSION);
        let diff = max_abs_diff(vector, &case.embedding);
        assert!(
            diff < 1e-4,
            "{:?}: max abs difference {diff} from sentence-transformers",
            case.text
        );
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

#[tokio::test]
async fn similar_sentences_are_closer_than_unrelated_ones() {
    let v = model()
        .embed(owned(&[
            "How many paintings did Turner make?",
            "Count the artworks created by J. M. W. Turner.",
            "The quarterly revenue of the north region fell by 3%.",
        ]))
        .await
        .unwrap();
    let similar = cosine(&v[0], &v[1]);
    let unrelated = cosine(&v[0], &v[2]);
    assert!(
        similar > unrelated + 0.3,
        "similar {similar}, unrelated {unrelated}"
    );
}

#[tokio::test]
async fn batching_and_padding_do_not_change_vectors_and_order_is_kept() {
    // mixed lengths, not sorted, and batches of 3 so several batches pad
    let texts = owned(&[
        "short",
        "a considerably longer sentence about the artists who donated works to the Tate in 1897",
        "medium length text about sales",
        "",
        "x",
        "another fairly long sentence, with punctuation; numbers 1, 2, 3 and a date 2024-05-01",
        "the end",
    ]);
    let small_batches = LocalMiniLm::load(
        &model_dir(),
        LocalMiniLmOptions {
            batch_size: 3,
            ..LocalMiniLmOptions::default()
        },
    )
    .unwrap();
    let batched = small_batches.embed(texts.clone()).await.unwrap();
    let whole = model().embed(texts.clone()).await.unwrap();
    assert_eq!(batched.len(), texts.len());
    for (i, text) in texts.iter().enumerate() {
        let alone = model().embed(vec![text.clone()]).await.unwrap();
        let diff = max_abs_diff(&batched[i], &alone[0]);
        assert!(diff < 1e-5, "{text:?}: batched differs by {diff}");
        let diff = max_abs_diff(&whole[i], &alone[0]);
        assert!(diff < 1e-5, "{text:?}: one batch differs by {diff}");
    }

    // reversing the input reverses the output
    let mut reversed = texts.clone();
    reversed.reverse();
    let mut back = small_batches.embed(reversed).await.unwrap();
    back.reverse();
    for (a, b) in back.iter().zip(&batched) {
        assert!(max_abs_diff(a, b) < 1e-5);
    }
}

#[tokio::test]
async fn background_batches_by_tokens_give_the_same_vectors_in_order() {
    // 40 texts of mixed length: with a 64-token background budget the long
    // ones go one a batch and the short ones several a batch
    let texts: Vec<String> = (0..40)
        .map(|i| match i % 3 {
            0 => format!("storm at sea number {i}"),
            1 => format!("a long description of a watercolour, {i}, ").repeat(6),
            _ => String::new(),
        })
        .collect();
    let lean = LocalMiniLm::load(
        &model_dir(),
        LocalMiniLmOptions {
            background_batch_tokens: 64,
            ..LocalMiniLmOptions::default()
        },
    )
    .unwrap();
    let background = lean.embed_background(texts.clone()).await.unwrap();
    let interactive = model().embed(texts.clone()).await.unwrap();
    assert_eq!(background.len(), texts.len());
    for (i, (a, b)) in background.iter().zip(&interactive).enumerate() {
        let diff = max_abs_diff(a, b);
        assert!(diff < 1e-5, "{:?}: differs by {diff}", texts[i]);
    }
}

#[tokio::test]
async fn empty_input_gives_empty_output() {
    assert!(model().embed(Vec::new()).await.unwrap().is_empty());
}
