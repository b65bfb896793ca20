//! Golden question→SQL pairs: validated SQL for questions a source is known to
//! be asked, matched against a new question without any model.
//!
//! This is what answers when no model is configured (router mode), so a wrong
//! match would be an invented answer. The matcher is therefore conservative:
//!
//! - questions are reduced to content terms (lowercased alphanumeric tokens,
//!   English stop words removed, a trailing plural `s` stripped);
//! - the score is the IDF-weighted Dice coefficient of the two term sets,
//!   `2·w(Q∩G) / (w(Q) + w(G))`, with `idf(t) = ln(1 + N / df(t))` over the `N`
//!   golden questions (Robertson–Spärck Jones style weighting without the
//!   relevance terms). A term that no golden question contains gets the highest
//!   weight, so an unseen name ("Constable" where the pair says "Turner") costs
//!   the most;
//! - every number in the question must appear in the golden question and vice
//!   versa ("before 1850" never matches "before 1900");
//! - a match needs a score of at least [`GoldenSet::DEFAULT_THRESHOLD`].

use std::{collections::HashMap, collections::HashSet, path::Path};

use serde::Deserialize;

/// One golden pair as stored in a golden file (a JSON array of these).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GoldenPair {
    /// The question, as a user would ask it.
    pub question: String,
    /// PostgreSQL that answers it; must pass the validator.
    pub sql: String,
    /// Synonyms: a question term equal to one of these counts as shared with
    /// the pair; keywords the question does not use cost nothing.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The tenant that stored the pair (`AddGoldenPair`); `None` for a
    /// shared pair from the golden file, which every tenant sees and none
    /// may override.
    #[serde(skip)]
    pub tenant: Option<String>,
    /// The tables its SQL reads, as the validator found them; filled when
    /// the SQL tool admits the pair (empty before), so deciding whether a
    /// caller may see the pair parses nothing per request.
    #[serde(skip)]
    pub tables: Vec<crate::TableRef>,
}

/// Errors loading a golden file.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    /// The file could not be read.
    #[error("cannot read golden file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a JSON array of pairs.
    #[error("golden file {path} is malformed: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Where and why parsing failed (line and column included).
        source: serde_json::Error,
    },
    /// A pair's question or SQL is empty.
    #[error("golden file {path}: pair {index} has an empty {field}")]
    Empty {
        /// The file.
        path: String,
        /// 0-based index of the pair.
        index: usize,
        /// `question` or `sql`.
        field: &'static str,
    },
}

/// A best match for a question.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenMatch<'a> {
    /// The matched pair.
    pub pair: &'a GoldenPair,
    /// IDF-weighted Dice coefficient in `[0, 1]`.
    pub score: f64,
}

#[derive(Debug)]
struct Indexed {
    /// Content terms of the pair's question.
    terms: HashSet<String>,
    /// Content terms of its keywords (synonyms), counted only when the
    /// question uses them.
    keywords: HashSet<String>,
    numbers: HashSet<String>,
}

/// A loaded set of golden pairs, indexed for matching.
#[derive(Debug, Default)]
pub struct GoldenSet {
    pairs: Vec<GoldenPair>,
    indexed: Vec<Indexed>,
    idf: HashMap<String, f64>,
    max_idf: f64,
}

impl GoldenSet {
    /// Minimum score for a match. Chosen so that paraphrases sharing the
    /// question's content terms match while a changed entity or measure does not
    /// (see the tests in this module).
    pub const DEFAULT_THRESHOLD: f64 = 0.7;

    /// Builds a set from pairs (no validation of the SQL here; callers validate).
    pub fn new(pairs: Vec<GoldenPair>) -> Self {
        let indexed: Vec<Indexed> = pairs
            .iter()
            .map(|p| Indexed {
                terms: terms(&p.question),
                keywords: p.keywords.iter().flat_map(|k| terms_of(k)).collect(),
                numbers: numbers(&p.question),
            })
            .collect();
        let n = indexed.len().max(1) as f64;
        let mut df: HashMap<String, usize> = HashMap::new();
        for ix in &indexed {
            for t in ix.terms.union(&ix.keywords) {
                *df.entry(t.clone()).or_default() += 1;
            }
        }
        let idf: HashMap<String, f64> = df
            .into_iter()
            .map(|(t, d)| (t, (1.0 + n / d as f64).ln()))
            .collect();
        let max_idf = (1.0 + n).ln();
        Self {
            pairs,
            indexed,
            idf,
            max_idf,
        }
    }

    /// Loads a golden file: a JSON array of `{question, sql, keywords?}`.
    ///
    /// # Errors
    /// [`GoldenError`] naming the file, and the pair index for empty fields.
    pub fn load(path: &Path) -> Result<Self, GoldenError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GoldenError::Read {
            path: shown.clone(),
            source,
        })?;
        let pairs: Vec<GoldenPair> =
            serde_json::from_str(&text).map_err(|source| GoldenError::Parse {
                path: shown.clone(),
                source,
            })?;
        for (index, p) in pairs.iter().enumerate() {
            for (field, value) in [("question", &p.question), ("sql", &p.sql)] {
                if value.trim().is_empty() {
                    return Err(GoldenError::Empty {
                        path: shown,
                        index,
                        field,
                    });
                }
            }
        }
        Ok(Self::new(pairs))
    }

    /// The pairs, in file order.
    pub fn pairs(&self) -> &[GoldenPair] {
        &self.pairs
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// IDF-weighted Dice coefficient of the question's terms and the pair's.
    fn score(&self, q_terms: &HashSet<String>, ix: &Indexed) -> f64 {
        let q_weight: f64 = q_terms.iter().map(|t| self.weight(t)).sum();
        // the pair's terms: its question's, plus any keyword the question uses
        let used_keywords: Vec<&String> = q_terms
            .iter()
            .filter(|t| ix.keywords.contains(*t) && !ix.terms.contains(*t))
            .collect();
        let shared: f64 = q_terms
            .iter()
            .filter(|t| ix.terms.contains(*t) || ix.keywords.contains(*t))
            .map(|t| self.weight(t))
            .sum();
        let g_weight: f64 = ix
            .terms
            .iter()
            .chain(used_keywords)
            .map(|t| self.weight(t))
            .sum();
        2.0 * shared / (q_weight + g_weight)
    }

    fn weight(&self, term: &str) -> f64 {
        self.idf.get(term).copied().unwrap_or(self.max_idf)
    }

    /// The highest-scoring pair for `question` whether or not it clears the
    /// threshold (numbers must still agree), or `None` for an empty set or a
    /// question without content terms.
    pub fn closest(&self, question: &str) -> Option<GoldenMatch<'_>> {
        self.closest_where(question, &|_| true)
    }

    /// [`Self::closest`] among the pairs `keep` accepts (a caller's tenant
    /// and policy); on equal scores a shared pair wins over a tenant's.
    pub fn closest_where(
        &self,
        question: &str,
        keep: &dyn Fn(&GoldenPair) -> bool,
    ) -> Option<GoldenMatch<'_>> {
        let q_terms = terms(question);
        let q_numbers = numbers(question);
        if q_terms.is_empty() {
            return None;
        }
        self.indexed
            .iter()
            .zip(&self.pairs)
            .filter(|(ix, pair)| ix.numbers == q_numbers && keep(pair))
            .map(|(ix, pair)| GoldenMatch {
                pair,
                score: self.score(&q_terms, ix),
            })
            .max_by(|a, b| {
                a.score
                    .total_cmp(&b.score)
                    .then(b.pair.tenant.is_some().cmp(&a.pair.tenant.is_some()))
            })
    }

    /// The `k` best-scoring pairs for `question` (numbers need not agree),
    /// best first; for few-shot examples in a prompt.
    pub fn top_k(&self, question: &str, k: usize) -> Vec<GoldenMatch<'_>> {
        self.top_k_where(question, k, &|_| true)
    }

    /// [`Self::top_k`] among the pairs `keep` accepts.
    pub fn top_k_where(
        &self,
        question: &str,
        k: usize,
        keep: &dyn Fn(&GoldenPair) -> bool,
    ) -> Vec<GoldenMatch<'_>> {
        let q_terms = terms(question);
        if q_terms.is_empty() || k == 0 {
            return Vec::new();
        }
        let mut scored: Vec<GoldenMatch<'_>> = self
            .indexed
            .iter()
            .zip(&self.pairs)
            .filter(|(_, pair)| keep(pair))
            .map(|(ix, pair)| GoldenMatch {
                pair,
                score: self.score(&q_terms, ix),
            })
            .filter(|m| m.score > 0.0)
            .collect();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        scored.truncate(k);
        scored
    }

    /// The best pair scoring at least `threshold`, if any.
    pub fn find(&self, question: &str, threshold: f64) -> Option<GoldenMatch<'_>> {
        self.closest(question).filter(|m| m.score >= threshold)
    }
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "any", "are", "as", "at", "be", "by", "can", "could", "did", "do", "does",
    "for", "from", "give", "has", "have", "how", "i", "in", "is", "it", "its", "list", "me", "of",
    "on", "or", "please", "show", "tell", "that", "the", "their", "there", "these", "this", "to",
    "us", "was", "we", "were", "what", "which", "who", "whose", "with", "would", "you",
];

fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

fn terms_of(text: &str) -> impl Iterator<Item = String> + '_ {
    tokens(text)
        .filter(|t| !STOP_WORDS.contains(&t.as_str()))
        .map(|t| {
            if t.len() > 3 && t.ends_with('s') && !t.ends_with("ss") {
                t[..t.len() - 1].to_string()
            } else {
                t
            }
        })
}

fn terms(text: &str) -> HashSet<String> {
    terms_of(text).collect()
}

fn numbers(text: &str) -> HashSet<String> {
    tokens(text)
        .filter(|t| t.chars().all(|c| c.is_ascii_digit()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> GoldenSet {
        let pair = |q: &str, sql: &str| GoldenPair {
            question: q.into(),
            sql: sql.into(),
            keywords: vec![],
            tenant: None,
            tables: vec![],
        };
        GoldenSet::new(vec![
            pair("How many artworks are in the collection?", "select 1"),
            pair(
                "Which works by J. M. W. Turner were acquired before 1900?",
                "select 2",
            ),
            pair("What are the most common mediums?", "select 3"),
            pair("How many works were acquired per decade?", "select 4"),
            pair(
                "Which artists have the most works in the collection?",
                "select 5",
            ),
        ])
    }

    #[test]
    fn exact_question_matches_with_score_one() {
        let s = set();
        let m = s
            .find("How many artworks are in the collection?", 0.7)
            .unwrap();
        assert_eq!(m.pair.sql, "select 1");
        assert!((m.score - 1.0).abs() < 1e-9);
    }

    #[test]
    fn paraphrase_with_case_and_plural_changes_matches() {
        let s = set();
        let m = s.find("most common medium?", 0.7).unwrap();
        assert_eq!(m.pair.sql, "select 3");
        let m = s
            .find("how many works were acquired per decade", 0.7)
            .unwrap();
        assert_eq!(m.pair.sql, "select 4");
    }

    #[test]
    fn different_number_never_matches() {
        let s = set();
        assert!(
            s.find(
                "Which works by J. M. W. Turner were acquired before 1850?",
                0.0
            )
            .is_none()
        );
    }

    #[test]
    fn different_entity_falls_below_threshold() {
        let s = set();
        let m = s.closest("Which works by John Constable were acquired before 1900?");
        let m = m.unwrap();
        assert_eq!(m.pair.sql, "select 2");
        assert!(m.score < GoldenSet::DEFAULT_THRESHOLD, "score {}", m.score);
    }

    #[test]
    fn keywords_help_only_when_used() {
        let mut pairs = set().pairs().to_vec();
        pairs[0].keywords = vec!["pieces".into(), "objects".into()];
        let s = GoldenSet::new(pairs);
        let exact = s
            .find("How many artworks are in the collection?", 0.7)
            .unwrap();
        assert!(
            (exact.score - 1.0).abs() < 1e-9,
            "unused keywords cost nothing"
        );
        let synonym = s
            .find("How many pieces are in the collection?", 0.7)
            .unwrap();
        assert_eq!(synonym.pair.sql, "select 1");
    }

    #[test]
    fn unrelated_question_does_not_match() {
        let s = set();
        assert!(s.find("what is the weather in london today", 0.7).is_none());
        assert!(s.closest("the of and").is_none());
    }

    #[test]
    fn load_reports_file_and_empty_field() {
        let dir = std::env::temp_dir().join(format!("golden-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("g.json");
        std::fs::write(&path, r#"[{"question": "q", "sql": " "}]"#).unwrap();
        let err = GoldenSet::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("g.json") && err.contains("pair 0") && err.contains("sql"),
            "{err}"
        );
        std::fs::write(&path, "[{").unwrap();
        let err = GoldenSet::load(&path).unwrap_err().to_string();
        assert!(err.contains("malformed") && err.contains("line 1"), "{err}");
        let err = GoldenSet::load(&dir.join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.json"), "{err}");
    }
}
