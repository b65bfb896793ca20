//! A retrieval benchmark in BEIR's format (Thakur et al., "BEIR: A
//! Heterogeneous Benchmark for Zero-shot Evaluation of Information Retrieval
//! Models", NeurIPS 2021 Datasets and Benchmarks), and the standard figures
//! over it.
//!
//! A folder holds `corpus.jsonl` (`{"_id", "title", "text"}` per line), the
//! queries (`queries-<split>.jsonl` or `queries.jsonl`, `{"_id", "text"}`)
//! and the relevance judgements (`qrels-<split>.tsv` or `qrels/<split>.tsv`:
//! a header line, then `query-id`, `corpus-id`, `score` separated by tabs).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{EvalError, Result};

/// One corpus document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Document {
    /// Document id.
    #[serde(rename = "_id", deserialize_with = "string_or_number")]
    pub id: String,
    /// Title; may be empty.
    #[serde(default)]
    pub title: String,
    /// Body text.
    #[serde(default)]
    pub text: String,
}

/// One query.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Query {
    /// Query id.
    #[serde(rename = "_id", deserialize_with = "string_or_number")]
    pub id: String,
    /// Query text.
    pub text: String,
}

/// Relevance judgements: query id → document id → graded relevance (> 0
/// is relevant; 0 and below are judged non-relevant).
pub type Qrels = BTreeMap<String, HashMap<String, i32>>;

/// The files of a BEIR folder for one split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeirFiles {
    /// `corpus.jsonl`.
    pub corpus: PathBuf,
    /// The queries file.
    pub queries: PathBuf,
    /// The judgements file.
    pub qrels: PathBuf,
}

impl BeirFiles {
    /// Finds the files of `split` (e.g. `test`) in `folder`.
    ///
    /// # Errors
    /// [`EvalError::Dataset`] naming what is missing.
    pub fn find(folder: &Path, split: &str) -> Result<BeirFiles> {
        let first = |candidates: &[PathBuf], what: &str| -> Result<PathBuf> {
            candidates
                .iter()
                .find(|p| p.is_file())
                .cloned()
                .ok_or_else(|| {
                    EvalError::Dataset(format!(
                        "{}: no {what} (looked for {})",
                        folder.display(),
                        candidates
                            .iter()
                            .map(|p| p.strip_prefix(folder).unwrap_or(p).display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        };
        Ok(BeirFiles {
            corpus: first(&[folder.join("corpus.jsonl")], "corpus")?,
            queries: first(
                &[
                    folder.join(format!("queries-{split}.jsonl")),
                    folder.join("queries.jsonl"),
                ],
                "queries",
            )?,
            qrels: first(
                &[
                    folder.join(format!("qrels-{split}.tsv")),
                    folder.join("qrels").join(format!("{split}.tsv")),
                ],
                "relevance judgements",
            )?,
        })
    }
}

/// Reads JSON lines of `T`, one per non-blank line, calling `each` on every
/// record (the corpus is streamed, never held whole by this function).
///
/// # Errors
/// I/O errors; [`EvalError::Dataset`] naming the file and line of a bad record.
pub fn for_each_jsonl<T: for<'de> Deserialize<'de>>(
    path: &Path,
    mut each: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })?;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| EvalError::Io {
            path: path.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line)
            .map_err(|e| EvalError::Dataset(format!("{}:{}: {e}", path.display(), i + 1)))?;
        each(record)?;
    }
    Ok(())
}

/// Reads a qrels TSV (header line first, as BEIR writes them).
///
/// # Errors
/// I/O errors; [`EvalError::Dataset`] naming the file and line of a bad row.
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let file = File::open(path).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut qrels = Qrels::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| EvalError::Io {
            path: path.to_owned(),
            source,
        })?;
        let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
        if line.trim().is_empty() || (i == 0 && cols.first().is_some_and(|c| c.contains("query"))) {
            continue;
        }
        let bad = || {
            EvalError::Dataset(format!(
                "{}:{}: expected `query-id<TAB>corpus-id<TAB>score`",
                path.display(),
                i + 1
            ))
        };
        let [query, doc, score] = cols.as_slice() else {
            return Err(bad());
        };
        let score: i32 = score.parse().map_err(|_| bad())?;
        qrels
            .entry((*query).to_owned())
            .or_default()
            .insert((*doc).to_owned(), score);
    }
    Ok(qrels)
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(serde_json::Number),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

/// nDCG@k of one ranking (Järvelin and Kekäläinen, "Cumulated gain-based
/// evaluation of IR techniques", TOIS 2002), with trec_eval's linear gain as
/// BEIR computes it through pytrec_eval: DCG@k = Σ_{i=1..k} rel_i / log2(i + 1),
/// divided by the DCG@k of the judged documents in ideal order. `ranked` is
/// best first; unjudged documents have gain 0. `None` when the query has no
/// relevant document (BEIR leaves such queries out).
pub fn ndcg_at_k(ranked: &[String], judged: &HashMap<String, i32>, k: usize) -> Option<f64> {
    let mut ideal: Vec<i32> = judged.values().copied().filter(|&r| r > 0).collect();
    if ideal.is_empty() {
        return None;
    }
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let discount = |i: usize| 1.0 / ((i as f64) + 2.0).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, id)| f64::from(judged.get(id).copied().unwrap_or(0).max(0)) * discount(i))
        .sum();
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &r)| f64::from(r) * discount(i))
        .sum();
    Some(dcg / idcg)
}

/// Recall@k of one ranking: relevant documents (relevance > 0) among the
/// first `k`, over all relevant documents. `None` when there are none.
pub fn recall_at_k(ranked: &[String], judged: &HashMap<String, i32>, k: usize) -> Option<f64> {
    let relevant = judged.values().filter(|&&r| r > 0).count();
    if relevant == 0 {
        return None;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|id| judged.get(*id).is_some_and(|&r| r > 0))
        .count();
    Some(found as f64 / relevant as f64)
}

/// Mean nDCG@10 and recall@100 of one retrieval mode over a query set.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RetrievalFigures {
    /// Mean nDCG@10 over queries with at least one relevant document.
    pub ndcg_at_10: f64,
    /// Mean recall@100 over the same queries.
    pub recall_at_100: f64,
    /// Queries averaged.
    pub queries: usize,
}

/// Averages [`ndcg_at_k`] (k = 10) and [`recall_at_k`] (k = 100) over
/// `runs` (query id → ranked document ids, best first). As BEIR's
/// `EvaluateRetrieval.evaluate` does by default, a document whose id equals
/// the query id is dropped from its ranking; queries without judgements or
/// without a relevant document are left out; a judged query missing from
/// `runs` counts as an empty ranking.
pub fn figures(runs: &HashMap<String, Vec<String>>, qrels: &Qrels) -> RetrievalFigures {
    let (mut ndcg, mut recall, mut n) = (0.0, 0.0, 0usize);
    let empty = Vec::new();
    for (query, judged) in qrels {
        let ranked: Vec<String> = runs
            .get(query)
            .unwrap_or(&empty)
            .iter()
            .filter(|d| *d != query)
            .cloned()
            .collect();
        if let (Some(a), Some(b)) = (
            ndcg_at_k(&ranked, judged, 10),
            recall_at_k(&ranked, judged, 100),
        ) {
            ndcg += a;
            recall += b;
            n += 1;
        }
    }
    if n == 0 {
        return RetrievalFigures::default();
    }
    RetrievalFigures {
        ndcg_at_10: ndcg / n as f64,
        recall_at_100: recall / n as f64,
        queries: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i32)]) -> HashMap<String, i32> {
        pairs.iter().map(|(d, r)| ((*d).to_owned(), *r)).collect()
    }

    fn ids(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn ndcg_matches_hand_computation() {
        // Relevant a (2) and b (1); ranking x, a, b.
        let j = judged(&[("a", 2), ("b", 1), ("x", 0)]);
        let got = ndcg_at_k(&ids(&["x", "a", "b"]), &j, 10).unwrap();
        let dcg = 2.0 / 3f64.log2() + 1.0 / 4f64.log2();
        let idcg = 2.0 / 2f64.log2() + 1.0 / 3f64.log2();
        assert!((got - dcg / idcg).abs() < 1e-12, "{got}");
        assert_eq!(ndcg_at_k(&ids(&["a", "b"]), &j, 10), Some(1.0));
        // Only the first k count.
        assert_eq!(ndcg_at_k(&ids(&["x", "a"]), &j, 1), Some(0.0));
        assert_eq!(ndcg_at_k(&ids(&["a"]), &judged(&[("a", 0)]), 10), None);
    }

    #[test]
    fn recall_counts_relevant_in_the_first_k() {
        let j = judged(&[("a", 1), ("b", 1), ("c", 0)]);
        assert_eq!(recall_at_k(&ids(&["c", "a", "z"]), &j, 100), Some(0.5));
        assert_eq!(recall_at_k(&ids(&["c", "a", "b"]), &j, 2), Some(0.5));
        assert_eq!(recall_at_k(&ids(&["b", "a"]), &j, 100), Some(1.0));
    }

    #[test]
    fn figures_average_judged_queries_and_drop_identical_ids() {
        let mut qrels = Qrels::new();
        qrels.insert("q1".into(), judged(&[("d1", 1)]));
        qrels.insert("q2".into(), judged(&[("d2", 1)]));
        qrels.insert("q3".into(), judged(&[("d3", 0)])); // no relevant document: left out
        let mut runs = HashMap::new();
        runs.insert("q1".into(), ids(&["q1", "d1"])); // the query's own id is dropped
        // q2 missing: an empty ranking.
        let f = figures(&runs, &qrels);
        assert_eq!(f.queries, 2);
        assert!((f.ndcg_at_10 - 0.5).abs() < 1e-12);
        assert!((f.recall_at_100 - 0.5).abs() < 1e-12);
    }

    #[test]
    fn reads_the_standard_beir_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        std::fs::create_dir_all(dir.join("qrels")).unwrap();
        std::fs::write(
            dir.join("corpus.jsonl"),
            "{\"_id\": 4983, \"title\": \"T\", \"text\": \"body\"}\n\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("queries.jsonl"),
            "{\"_id\": \"1\", \"text\": \"q\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("qrels").join("test.tsv"),
            "query-id\tcorpus-id\tscore\n1\t4983\t1\n",
        )
        .unwrap();
        let files = BeirFiles::find(&dir, "test").unwrap();
        let mut docs = Vec::new();
        for_each_jsonl::<Document>(&files.corpus, |d| {
            docs.push(d);
            Ok(())
        })
        .unwrap();
        assert_eq!(docs[0].id, "4983");
        let qrels = read_qrels(&files.qrels).unwrap();
        assert_eq!(qrels["1"]["4983"], 1);
        std::fs::write(
            dir.join("qrels").join("test.tsv"),
            "query-id\tcorpus-id\tscore\n1\t4983\n",
        )
        .unwrap();
        let error = read_qrels(&files.qrels).unwrap_err().to_string();
        assert!(error.contains("test.tsv:2"), "{error}");
        assert!(
            BeirFiles::find(&dir, "dev")
                .unwrap_err()
                .to_string()
                .contains("relevance judgements")
        );
    }
}
