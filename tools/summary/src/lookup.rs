//! Resolving what a caller typed to an entity: name folding and the fuzzy
//! name score, our own retrieval code (small, deterministic, explainable).
//!
//! # Folding
//! [`fold`]: transliterate to ASCII ([deunicode](https://docs.rs/deunicode)),
//! lowercase, and turn every run of non-alphanumeric characters into one
//! space, trimmed: `"J. M. W. Turner"` → `"j m w turner"`, `"Zoë Léger"` →
//! `"zoe leger"`. Exact name matches compare folded names.
//!
//! # Fuzzy score
//! Query and name are folded and split into tokens. Each query token scores
//! against its best name token ([`token_score`]):
//!
//! | case | score |
//! |---|---|
//! | equal | 1.0 |
//! | the query token (≥ 2 characters) is a prefix of the name token | 0.9 |
//! | the query token is one letter, the name token's initial | 0.8 |
//! | Jaro–Winkler similarity ≥ 0.85 (typos: `tunrer`/`turner` ≈ 0.956) | JW × 0.9 |
//! | otherwise | 0 |
//!
//! The query score is the mean over query tokens, rounded to two decimals
//! ([`fuzzy_score`]). Candidates rank by query score (descending), then
//! weight (descending: the entities query's `weight`, e.g. works held, so
//! "turner" is J. M. W. Turner rather than one of eight other Turners), then
//! the fraction of the name's tokens that some query token matched
//! (descending: "alfred turner" covers all of "Alfred Turner"), then name,
//! kind and key (ascending), so ties break the same way every time
//! ([`rank`]).
//!
//! A fuzzy match needs a score of at least [`MATCH_THRESHOLD`] (0.75);
//! alternatives are the next candidates scoring at least
//! [`ALTERNATIVE_THRESHOLD`] (0.5), at most [`MAX_ALTERNATIVES`]. With no
//! match, the [`MAX_ALTERNATIVES`] best candidates, whatever their score,
//! are offered as the closest.

use std::cmp::Ordering;

/// Least fuzzy score that counts as a match.
pub const MATCH_THRESHOLD: f64 = 0.75;
/// Least fuzzy score of an alternative offered next to a match.
pub const ALTERNATIVE_THRESHOLD: f64 = 0.5;
/// Most alternatives (and closest candidates when nothing matches).
pub const MAX_ALTERNATIVES: usize = 5;
/// Least Jaro–Winkler similarity counted for a token that is neither equal,
/// a prefix nor an initial.
pub const JARO_WINKLER_FLOOR: f64 = 0.85;

/// ASCII-folded, lowercased, non-alphanumerics collapsed to single spaces.
pub fn fold(text: &str) -> String {
    let ascii = deunicode::deunicode(text).to_lowercase();
    let mut out = String::with_capacity(ascii.len());
    let mut pending_space = false;
    for c in ascii.chars() {
        if c.is_ascii_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        } else {
            pending_space = true;
        }
    }
    out
}

/// How well query token `q` matches name token `n` (both folded); see the
/// module docs.
pub fn token_score(q: &str, n: &str) -> f64 {
    if q == n {
        return 1.0;
    }
    if q.len() >= 2 && n.starts_with(q) {
        return 0.9;
    }
    if q.len() == 1 {
        return if n.starts_with(q) { 0.8 } else { 0.0 };
    }
    let jw = strsim::jaro_winkler(q, n);
    if jw >= JARO_WINKLER_FLOOR {
        jw * 0.9
    } else {
        0.0
    }
}

/// `(score, matched_fraction)` of a name for a query, both as folded
/// tokens: the mean best-token score (rounded to two decimals) and the
/// fraction of name tokens that are some query token's best, positive match.
/// `(0, 0)` when either has no tokens.
pub fn fuzzy_score<Q: AsRef<str>, N: AsRef<str>>(query: &[Q], name: &[N]) -> (f64, f64) {
    if query.is_empty() || name.is_empty() {
        return (0.0, 0.0);
    }
    let mut matched = vec![false; name.len()];
    let mut sum = 0.0;
    for q in query {
        let mut best: Option<(usize, f64)> = None;
        for (i, n) in name.iter().enumerate() {
            let s = token_score(q.as_ref(), n.as_ref());
            if s > 0.0 && best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        if let Some((i, s)) = best {
            matched[i] = true;
            sum += s;
        }
    }
    let mean = sum / query.len() as f64;
    let fraction = matched.iter().filter(|m| **m).count() as f64 / name.len() as f64;
    ((mean * 100.0).round() / 100.0, fraction)
}

/// One entity name a fuzzy lookup can find.
#[derive(Debug, Clone, PartialEq)]
pub struct NameEntry {
    /// Kind name.
    pub kind: String,
    /// Entity key.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Folded name tokens.
    pub tokens: Vec<String>,
    /// Tie-breaking weight (0 when the entities query has none).
    pub weight: f64,
}

impl NameEntry {
    /// An entry for `name`, its tokens folded.
    pub fn new(kind: &str, key: &str, name: &str, weight: Option<f64>) -> NameEntry {
        NameEntry {
            kind: kind.to_owned(),
            key: key.to_owned(),
            name: name.to_owned(),
            tokens: fold(name)
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            weight: weight.filter(|w| w.is_finite()).unwrap_or(0.0),
        }
    }
}

/// A scored candidate: index into the entries, and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Index into the slice given to [`rank`].
    pub index: usize,
    /// Fuzzy score (two decimals).
    pub score: f64,
    /// Fraction of the name's tokens matched.
    pub matched: f64,
}

/// Every entry scored for `query` and ranked as the module docs say; only
/// the best `keep` are returned. CPU work proportional to the number of
/// entries × name tokens × query tokens: run large lists off the runtime.
pub fn rank(query: &str, entries: &[NameEntry], keep: usize) -> Vec<Scored> {
    let folded = fold(query);
    let query_tokens: Vec<&str> = folded.split(' ').filter(|t| !t.is_empty()).collect();
    let mut scored: Vec<Scored> = entries
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let (score, matched) = fuzzy_score(&query_tokens, &e.tokens);
            Scored {
                index,
                score,
                matched,
            }
        })
        .collect();
    let order = |a: &Scored, b: &Scored| -> Ordering {
        let (x, y) = (&entries[a.index], &entries[b.index]);
        b.score
            .total_cmp(&a.score)
            .then_with(|| y.weight.total_cmp(&x.weight))
            .then_with(|| b.matched.total_cmp(&a.matched))
            .then_with(|| x.name.cmp(&y.name))
            .then_with(|| x.kind.cmp(&y.kind))
            .then_with(|| x.key.cmp(&y.key))
    };
    if keep < scored.len() && keep > 0 {
        scored.select_nth_unstable_by(keep - 1, order);
        scored.truncate(keep);
    }
    scored.sort_by(order);
    scored.truncate(keep);
    scored
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn tate() -> Vec<NameEntry> {
        [
            ("558", "Joseph Mallord William Turner", 41_861.0),
            ("2076", "Alfred Turner", 2.0),
            ("559", "William Turner of Oxford", 4.0),
            ("2566", "W. Turner", 1.0),
            ("2216", "F.C. Turner", 1.0),
            ("556", "Charles Turner", 3.0),
            ("1293", "David Hockney", 111.0),
            ("12", "Zoë Léger", 5.0),
        ]
        .into_iter()
        .map(|(key, name, w)| NameEntry::new("artist", key, name, Some(w)))
        .collect()
    }

    fn best(query: &str) -> (String, f64) {
        let entries = tate();
        let top = rank(query, &entries, 5)[0];
        (entries[top.index].name.clone(), top.score)
    }

    #[test]
    fn folds_accents_case_and_punctuation() {
        assert_eq!(fold("J. M. W. Turner"), "j m w turner");
        assert_eq!(fold("  Zoë   Léger!! "), "zoe leger");
        assert_eq!(fold("F.C. Turner"), "f c turner");
        assert_eq!(fold("..."), "");
        assert_eq!(fold("Ångström 1900s"), "angstrom 1900s");
    }

    #[test]
    fn token_scores_follow_the_table() {
        assert_eq!(token_score("turner", "turner"), 1.0);
        assert_eq!(token_score("tur", "turner"), 0.9);
        assert_eq!(token_score("j", "joseph"), 0.8);
        assert_eq!(token_score("j", "william"), 0.0);
        // Jaro–Winkler("tunrer", "turner"): m = 6, t = 1,
        // jaro = (1 + 1 + 5/6) / 3 = 0.9444…, prefix 2: + 0.2 × 0.0556 = 0.9556
        let typo = token_score("tunrer", "turner");
        assert!((typo - 0.9556 * 0.9).abs() < 1e-3, "{typo}");
        assert_eq!(token_score("zzzz", "turner"), 0.0);
    }

    #[test]
    fn fuzzy_score_is_the_mean_over_query_tokens() {
        // j, m, w initials (0.8 each) and turner (1.0): 3.4 / 4 = 0.85
        let (score, matched) = fuzzy_score(
            &["j", "m", "w", "turner"],
            &["joseph", "mallord", "william", "turner"],
        );
        assert_eq!(score, 0.85);
        assert_eq!(matched, 1.0);
        // against "w turner": j 0, m 0, w 1, turner 1 → 0.5, both tokens matched
        assert_eq!(
            fuzzy_score(&["j", "m", "w", "turner"], &["w", "turner"]),
            (0.5, 1.0)
        );
        assert_eq!(fuzzy_score::<&str, &str>(&[], &["x"]), (0.0, 0.0));
    }

    #[test]
    fn resolves_tate_names() {
        assert_eq!(best("turner").0, "Joseph Mallord William Turner");
        assert_eq!(best("J. M. W. Turner").0, "Joseph Mallord William Turner");
        assert_eq!(best("Alfred Turner"), ("Alfred Turner".to_owned(), 1.0));
        let (name, score) = best("tunrer");
        assert!(name.ends_with("Turner"), "{name}");
        assert!(score >= MATCH_THRESHOLD, "{score}");
        assert_eq!(best("Hockney").0, "David Hockney");
        assert_eq!(best("zoe leger"), ("Zoë Léger".to_owned(), 1.0));
        assert!(best("zzzz").1 < MATCH_THRESHOLD);
    }

    #[test]
    fn ties_break_by_weight_then_coverage_then_name() {
        let entries = vec![
            NameEntry::new("k", "1", "Anna Smith Jones", Some(1.0)),
            NameEntry::new("k", "2", "Anna Smith", Some(1.0)),
            NameEntry::new("k", "3", "Bob Smith", Some(1.0)),
            NameEntry::new("k", "4", "Carl Smith", Some(2.0)),
        ];
        let ranked: Vec<&str> = rank("smith", &entries, 10)
            .iter()
            .map(|s| entries[s.index].key.as_str())
            .collect();
        // all score 1.0; Carl has the weight; then 1/2 coverage beats 1/3;
        // Anna Smith and Bob Smith tie on coverage: name order
        assert_eq!(ranked, ["4", "2", "3", "1"]);
        assert_eq!(rank("smith", &entries, 2).len(), 2);
        assert_eq!(rank("smith", &entries, 2)[0].index, 3);
    }
}
