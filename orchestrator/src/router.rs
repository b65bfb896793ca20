//! Router mode's classifier: which offline pipelines a question goes to,
//! decided by rules over its words — deterministic, no model call.
//!
//! The caller tries golden SQL first (`SqlService.GenerateSql`, a known
//! question→SQL pair); only when no pair matches does it [`classify`] the
//! question and run the chosen [`Pipeline`]s, summaries before search.
//!
//! # Text
//!
//! Cues are matched on words: the question is lowercased, possessives
//! dropped (`Turner's` → `turner`) and split at anything that is not a
//! letter or digit, so a cue only ever matches whole words (`find` does not
//! fire in `findings`). In a cue pattern, `{year}` is a four-digit year,
//! `{decade}` a decade such as `1980s`, and `...` up to four words of any kind.
//!
//! The question is cut into clauses at `,` `;` `:` `?` `!`, at a full stop
//! that ends a sentence, and at "and also" / "as well as"; each clause is
//! classified on its own, so a compound question can go to both pipelines,
//! each with the words of its own part. A clause without any cue belongs to
//! every pipeline chosen (it usually carries the subject).
//!
//! # Rules
//!
//! 1. **Summaries** (stored trend summaries) when a clause has a trend cue
//!    ([`TREND_CUES`]: "how has", "changed", "over time", "trend", "by
//!    decade", "acquisition history", "since {year}", "grown", "declined",
//!    "what did ... acquire", …), or a share cue ([`SHARE_CUES`]: "share
//!    of", "proportion of", …) while the question has a time cue anywhere
//!    ([`TIME_CUES`]: "since {year}", "{decade}", "over time", "by decade",
//!    "changed", …).
//! 2. **Search** (documents by meaning) when a clause has a descriptive cue
//!    ([`DESCRIPTIVE_CUES`]: "show me", "find", "works depicting", "works
//!    showing", "paintings of", "about", "mentions", "credit line mentions",
//!    "which ... show", "look like", "featuring", …).
//! 3. **Search as the fallback** when no cue fired at all and the question
//!    has content words (anything but stop words, small talk and generic
//!    nouns such as "works" or "anything").
//! 4. Availability: a pipeline whose service is not available is not chosen
//!    and is listed in [`Route::unavailable`]; when summaries are wanted but
//!    missing and no descriptive cue fired, search takes the whole question
//!    instead. A pipeline is also dropped when its part of the question has
//!    nothing to look up (no content words, no entity).
//!
//! Each chosen [`Step`] carries its query — the content words of its
//! clauses without stop words, generic nouns and cue words, except cue
//! words that name what is asked about ("share of" keeps "share", "paintings of" keeps
//! "paintings") — and, for summaries, the longest capitalised phrase of its
//! clauses as an entity to look up first (`Turner`, `William Blake`,
//! `Tate`; a capitalised question or cue word such as "How" or "Show" is
//! not part of a name).
//!
//! # Examples
//!
//! | question | route | queries |
//! | --- | --- | --- |
//! | How has the share of works by women changed since 1950? | summaries | "share women 1950" |
//! | Show me works whose credit line mentions a bequest | search | "bequest" |
//! | Turner's acquisition history, and any works whose credit line mentions a bequest? | summaries+search | entity "Turner", else "turner"; search "bequest" |
//! | watercolours of storms at sea | search | "watercolours storms sea" |
//! | Which painting would my grandmother like best? | search (no cue) | "painting grandmother like best" |
//! | hello there | none | — |
//!
//! The [`Route::reason`] names the cues that fired, e.g. `trend cues “how
//! has”, “changed”, “since 1950” and share cue “share of” with a time cue →
//! summaries`.

use std::collections::BTreeSet;

pub mod answer;
pub mod model;

/// Trend cues: the question asks how something developed, which stored
/// summaries (figures per decade, peaks, trends) answer.
pub const TREND_CUES: &[&str] = &[
    "how has",
    "how have",
    "how did ... change",
    "changed",
    "change over",
    "changes in",
    "changing",
    "over time",
    "over the years",
    "over the decades",
    "trend",
    "trends",
    "decade by decade",
    "by decade",
    "per decade",
    "each decade",
    "history of",
    "acquisition history",
    "collecting history",
    "since {year}",
    "grown",
    "grew",
    "growth",
    "declined",
    "decline",
    "declining",
    "increased",
    "decreased",
    "risen",
    "fallen",
    "what did ... acquire",
    "acquire of",
    "acquired of",
];

/// Share cues: a trend question only together with a time cue ("what share
/// of acquisitions in the 1980s were by women"); their words stay in the
/// query.
pub const SHARE_CUES: &[&str] = &["share of", "proportion of", "percentage of", "fraction of"];

/// Time cues, which make a share cue a trend question.
pub const TIME_CUES: &[&str] = &[
    "since {year}",
    "{decade}",
    "in {year}",
    "before {year}",
    "after {year}",
    "from {year}",
    "over time",
    "over the years",
    "over the decades",
    "by decade",
    "per decade",
    "each decade",
    "decade by decade",
    "changed",
    "trend",
    "trends",
];

/// Descriptive cues: the question describes documents to find by their
/// text, which search answers.
pub const DESCRIPTIVE_CUES: &[&str] = &[
    "show me",
    "find",
    "search for",
    "look for",
    "looking for",
    "works depicting",
    "depicting",
    "depicts",
    "depict",
    "depicted",
    "works showing",
    "showing",
    "works of",
    "pictures of",
    "paintings of",
    "drawings of",
    "prints of",
    "images of",
    "photographs of",
    "sculptures of",
    "watercolours of",
    "watercolors of",
    "about",
    "mentions",
    "mention",
    "mentioning",
    "credit line mentions",
    "whose credit line",
    "which ... show",
    "which ... depict",
    "look like",
    "looks like",
    "featuring",
    "features",
    "titled",
    "entitled",
];

/// Words that carry no content of their own: never a query word, never the
/// start of a name.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "between", "both", "but", "by", "can", "could", "did", "do", "does",
    "during", "each", "every", "for", "from", "give", "had", "has", "have", "how", "i", "if", "in",
    "into", "is", "it", "its", "just", "let", "me", "more", "most", "much", "my", "of", "on", "or",
    "our", "over", "please", "should", "show", "since", "so", "some", "such", "tell", "than",
    "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "to",
    "under", "up", "us", "very", "was", "we", "were", "what", "when", "where", "which", "while",
    "who", "whom", "whose", "why", "will", "with", "would", "you", "your",
];

/// Greetings and fillers: a question made only of these has nothing to
/// look up. "gallery" and "museum" name the organisation, not a subject.
const SMALL_TALK: &[&str] = &[
    "hello",
    "hi",
    "hey",
    "thanks",
    "thank",
    "ok",
    "okay",
    "yes",
    "no",
    "bye",
    "goodbye",
    "good",
    "morning",
    "afternoon",
    "evening",
    "cheers",
    "gallery",
    "museum",
];

/// Lowercase words allowed inside a name ("Rogier van der Weyden").
const NAME_CONNECTORS: &[&str] = &[
    "of", "de", "da", "del", "van", "von", "der", "den", "la", "le", "du", "y",
];

/// Nouns for "an item of the collection" in general: they narrow nothing,
/// so they are never query words ("show me works about ships" searches
/// "ships").
const GENERIC_NOUNS: &[&str] = &[
    "work",
    "works",
    "artwork",
    "artworks",
    "piece",
    "pieces",
    "item",
    "items",
    "thing",
    "things",
    "anything",
    "something",
    "everything",
];

/// Cue words that name what is asked about, so they stay in the query
/// ("share of" keeps "share", "paintings of" keeps "paintings").
const KEPT_CUE_WORDS: &[&str] = &[
    "share",
    "proportion",
    "percentage",
    "fraction",
    "pictures",
    "paintings",
    "drawings",
    "prints",
    "images",
    "photographs",
    "sculptures",
    "watercolours",
    "watercolors",
];

/// Words a `...` in a cue pattern may skip.
const MAX_GAP: usize = 4;

/// A pipeline router mode can choose once golden SQL has not matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pipeline {
    /// Stored summaries: an entity's summary (`GetSummaries`), or summaries
    /// whose text matches the query (`SearchSummaries`).
    Summaries,
    /// Hybrid search over a collection's documents.
    Search,
}

impl Pipeline {
    /// `summaries` or `search`, as in the route name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Summaries => "summaries",
            Self::Search => "search",
        }
    }
}

/// Which pipelines can run: the services configured (and, for search, with
/// at least one collection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Available {
    pub summaries: bool,
    pub search: bool,
}

/// One pipeline to run, with what to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub pipeline: Pipeline,
    /// Content words of the pipeline's clauses, lowercased, cue and stop
    /// words removed, in question order, each once; may be empty when
    /// `entity` is set.
    pub query: String,
    /// Summaries only: the longest capitalised phrase of the pipeline's
    /// clauses, as written (possessive dropped), to look up as an entity
    /// before searching by `query`.
    pub entity: Option<String>,
}

/// The classifier's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Pipelines to run, in order (summaries before search); empty for none.
    pub steps: Vec<Step>,
    /// Why, naming the cues that fired.
    pub reason: String,
    /// Pipelines the question called for whose service is not available.
    pub unavailable: Vec<Pipeline>,
}

impl Route {
    /// `summaries`, `search`, `summaries+search`, or `none`.
    pub fn name(&self) -> String {
        if self.steps.is_empty() {
            return "none".to_string();
        }
        self.steps
            .iter()
            .map(|s| s.pipeline.name())
            .collect::<Vec<_>>()
            .join("+")
    }

    /// The step of `pipeline`, if chosen.
    pub fn step(&self, pipeline: Pipeline) -> Option<&Step> {
        self.steps.iter().find(|s| s.pipeline == pipeline)
    }
}

/// Chooses the pipelines for `question` among those `available` (see the
/// module documentation for the rules). Pure and deterministic.
pub fn classify(question: &str, available: Available) -> Route {
    let clauses: Vec<Clause<'_>> = clauses(question).into_iter().map(Clause::new).collect();
    let timed = clauses.iter().any(|c| !c.time.is_empty());
    let for_summaries = |c: &Clause<'_>| !c.trend.is_empty() || (timed && !c.share.is_empty());
    let for_search = |c: &Clause<'_>| !c.descriptive.is_empty();
    let neutral = |c: &Clause<'_>| !for_summaries(c) && !for_search(c);
    let wants_summaries = clauses.iter().any(for_summaries);
    let wants_search = clauses.iter().any(for_search);

    let mut steps = Vec::new();
    let mut unavailable = Vec::new();
    let mut reasons = Vec::new();
    if wants_summaries {
        let trend: Vec<&str> = cue_texts(clauses.iter().map(|c| &c.trend));
        let share: Vec<&str> = cue_texts(clauses.iter().filter(|_| timed).map(|c| &c.share));
        let cues = match (trend.is_empty(), share.is_empty()) {
            (false, true) => cue_list("trend", &trend),
            (true, false) => format!("{} with a time cue", cue_list("share", &share)),
            _ => format!(
                "{} and {} with a time cue",
                cue_list("trend", &trend),
                cue_list("share", &share)
            ),
        };
        if available.summaries {
            let part: Vec<&Clause<'_>> = clauses
                .iter()
                .filter(|c| for_summaries(c) || neutral(c))
                .collect();
            let step = Step {
                pipeline: Pipeline::Summaries,
                query: query_words(&part),
                entity: entity(&part),
            };
            if step.query.is_empty() && step.entity.is_none() {
                reasons.push(format!("{cues}, but nothing to look up in summaries"));
            } else {
                reasons.push(format!("{cues} → summaries"));
                steps.push(step);
            }
        } else {
            unavailable.push(Pipeline::Summaries);
            let all: Vec<&Clause<'_>> = clauses.iter().collect();
            let query = query_words(&all);
            if available.search && !wants_search && !query.is_empty() {
                reasons.push(format!(
                    "{cues} call for summaries, which are not available → search"
                ));
                steps.push(Step {
                    pipeline: Pipeline::Search,
                    query,
                    entity: None,
                });
            } else {
                reasons.push(format!(
                    "{cues} call for summaries, which are not available"
                ));
            }
        }
    }
    if wants_search {
        let cues = cue_list(
            "descriptive",
            &cue_texts(clauses.iter().map(|c| &c.descriptive)),
        );
        if available.search {
            let part: Vec<&Clause<'_>> = clauses
                .iter()
                .filter(|c| for_search(c) || neutral(c))
                .collect();
            let query = query_words(&part);
            if query.is_empty() {
                reasons.push(format!("{cues}, but nothing to search for"));
            } else {
                reasons.push(format!("{cues} → search"));
                steps.push(Step {
                    pipeline: Pipeline::Search,
                    query,
                    entity: None,
                });
            }
        } else {
            unavailable.push(Pipeline::Search);
            reasons.push(format!("{cues} call for search, which is not available"));
        }
    }
    if !wants_summaries && !wants_search {
        let all: Vec<&Clause<'_>> = clauses.iter().collect();
        let query = query_words(&all);
        if query.is_empty() {
            reasons.push("no trend or descriptive cue, and no words to look up".to_string());
        } else if !available.search {
            reasons.push("no trend or descriptive cue, and search is not available".to_string());
        } else {
            reasons
                .push("no trend or descriptive cue → search for the question's words".to_string());
            steps.push(Step {
                pipeline: Pipeline::Search,
                query,
                entity: None,
            });
        }
    }
    Route {
        steps,
        reason: reasons.join("; "),
        unavailable,
    }
}

/// The collection to search: the one whose name (or its singular) is a
/// word of `question`, else the first; `None` without collections.
pub fn pick_collection(question: &str, names: &[&str]) -> Option<usize> {
    let words: BTreeSet<String> = tokens(question).into_iter().collect();
    names
        .iter()
        .position(|name| {
            let name = name.to_lowercase();
            words.contains(&name) || name.strip_suffix('s').is_some_and(|n| words.contains(n))
        })
        .or((!names.is_empty()).then_some(0))
}

/// One clause: its text, words and the cues found in it.
struct Clause<'a> {
    text: &'a str,
    tokens: Vec<String>,
    trend: Vec<Hit>,
    share: Vec<Hit>,
    time: Vec<Hit>,
    descriptive: Vec<Hit>,
}

impl<'a> Clause<'a> {
    fn new(text: &'a str) -> Self {
        let tokens = tokens(text);
        Self {
            trend: find(&tokens, TREND_CUES),
            share: find(&tokens, SHARE_CUES),
            time: find(&tokens, TIME_CUES),
            descriptive: find(&tokens, DESCRIPTIVE_CUES),
            text,
            tokens,
        }
    }

    /// Positions of cue words, which queries leave out (except
    /// [`KEPT_CUE_WORDS`]).
    fn cue_positions(&self) -> BTreeSet<usize> {
        [&self.trend, &self.share, &self.time, &self.descriptive]
            .into_iter()
            .flatten()
            .flat_map(|h| h.literal.iter().copied())
            .filter(|&i| !KEPT_CUE_WORDS.contains(&self.tokens[i].as_str()))
            .collect()
    }
}

/// One cue found in a clause.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hit {
    /// The words matched, e.g. `since 1950` or `which works show`.
    text: String,
    start: usize,
    end: usize,
    /// Positions of the pattern's own words (not placeholders or gaps).
    literal: Vec<usize>,
}

/// Lowercased words, possessives dropped, split at everything that is not
/// a letter or digit.
fn tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase().replace(['\u{2019}', '\u{2018}'], "'");
    let mut out = Vec::new();
    for piece in lower.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        let piece = piece.trim_matches('\'');
        let piece = piece.strip_suffix("'s").unwrap_or(piece);
        out.extend(
            piece
                .split('\'')
                .filter(|w| !w.is_empty())
                .map(str::to_string),
        );
    }
    out
}

/// The clauses of `text` (see the module documentation), trimmed, empty
/// ones dropped.
fn clauses(text: &str) -> Vec<&str> {
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (n, &(i, c)) in chars.iter().enumerate() {
        let cut = match c {
            ',' | ';' | ':' | '?' | '!' => true,
            // a sentence end, not an initial ("J.M.W. Turner") or a decimal
            '.' => {
                let before = n.checked_sub(1).map(|p| chars[p].1);
                let after = chars.get(n + 1).map(|&(_, c)| c);
                after.is_none_or(char::is_whitespace)
                    && before.is_some_and(|b| b.is_lowercase() || b.is_ascii_digit())
            }
            _ => false,
        };
        if cut {
            cuts.push((i, i + c.len_utf8()));
        }
    }
    // ASCII lowercasing keeps byte offsets
    let lower = text.to_ascii_lowercase();
    for phrase in [" and also ", " as well as "] {
        let mut from = 0;
        while let Some(at) = lower[from..].find(phrase) {
            cuts.push((from + at, from + at + phrase.len()));
            from += at + phrase.len();
        }
    }
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for (cut_start, cut_end) in cuts {
        if cut_start >= start {
            out.push(&text[start..cut_start]);
            start = cut_end;
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

fn is_year(word: &str) -> bool {
    word.len() == 4 && word.chars().all(|c| c.is_ascii_digit()) && word.starts_with(['1', '2'])
}

fn is_decade(word: &str) -> bool {
    word.strip_suffix('s')
        .is_some_and(|y| is_year(y) && y.ends_with('0'))
}

/// Every match of every pattern in `tokens`, keeping only the widest where
/// matches nest ("credit line mentions", not also "mentions").
fn find(tokens: &[String], patterns: &[&str]) -> Vec<Hit> {
    let mut hits = Vec::new();
    for start in 0..tokens.len() {
        for pattern in patterns {
            let pattern: Vec<&str> = pattern.split_whitespace().collect();
            let mut literal = Vec::new();
            if let Some(end) = match_at(&pattern, tokens, start, &mut literal) {
                hits.push(Hit {
                    text: tokens[start..end].join(" "),
                    start,
                    end,
                    literal,
                });
            }
        }
    }
    let nested = |h: &Hit| {
        hits.iter()
            .any(|o| o.start <= h.start && h.end <= o.end && (o.end - o.start) > (h.end - h.start))
    };
    let mut widest: Vec<Hit> = hits.iter().filter(|h| !nested(h)).cloned().collect();
    widest.dedup_by(|a, b| a.start == b.start && a.end == b.end);
    widest
}

/// Matches `pattern` at `tokens[at..]`; returns the end of the match and
/// pushes the positions of the pattern's literal words onto `literal`.
fn match_at(
    pattern: &[&str],
    tokens: &[String],
    at: usize,
    literal: &mut Vec<usize>,
) -> Option<usize> {
    let Some((&first, rest)) = pattern.split_first() else {
        return Some(at);
    };
    match first {
        "..." => (0..=MAX_GAP).find_map(|skip| {
            let from = at + skip;
            if from > tokens.len() {
                return None;
            }
            let mark = literal.len();
            let end = match_at(rest, tokens, from, literal);
            if end.is_none() {
                literal.truncate(mark);
            }
            end
        }),
        "{year}" => tokens
            .get(at)
            .filter(|w| is_year(w))
            .and_then(|_| match_at(rest, tokens, at + 1, literal)),
        "{decade}" => tokens
            .get(at)
            .filter(|w| is_decade(w))
            .and_then(|_| match_at(rest, tokens, at + 1, literal)),
        word => {
            if tokens.get(at).is_some_and(|t| t == word) {
                literal.push(at);
                let end = match_at(rest, tokens, at + 1, literal);
                if end.is_none() {
                    literal.pop();
                }
                end
            } else {
                None
            }
        }
    }
}

/// The distinct texts of the hits, in order.
fn cue_texts<'h>(hits: impl Iterator<Item = &'h Vec<Hit>>) -> Vec<&'h str> {
    let mut out: Vec<&str> = Vec::new();
    for hit in hits.flatten() {
        if !out.contains(&hit.text.as_str()) {
            out.push(&hit.text);
        }
    }
    out
}

/// `trend cue “changed”` or `trend cues “how has”, “changed”`.
fn cue_list(kind: &str, cues: &[&str]) -> String {
    let quoted: Vec<String> = cues.iter().map(|c| format!("“{c}”")).collect();
    format!(
        "{kind} cue{} {}",
        if cues.len() == 1 { "" } else { "s" },
        quoted.join(", ")
    )
}

fn is_stop(word: &str) -> bool {
    STOP_WORDS.contains(&word) || SMALL_TALK.contains(&word) || GENERIC_NOUNS.contains(&word)
}

/// Content words of `clauses`: not a cue word, stop word, small talk or
/// generic noun, not a lone letter; each once, in order.
fn query_words(clauses: &[&Clause<'_>]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for clause in clauses {
        let cue = clause.cue_positions();
        for (i, word) in clause.tokens.iter().enumerate() {
            let lone_letter =
                word.chars().count() == 1 && !word.chars().all(|c| c.is_ascii_digit());
            if cue.contains(&i) || is_stop(word) || lone_letter || out.contains(&word.as_str()) {
                continue;
            }
            out.push(word);
        }
    }
    out.join(" ")
}

/// Whether a capitalised `word` (lowercased) is a question or cue word
/// rather than a name.
fn is_common(word: &str) -> bool {
    is_stop(word)
        || [TREND_CUES, SHARE_CUES, TIME_CUES, DESCRIPTIVE_CUES]
            .iter()
            .flat_map(|cues| cues.iter())
            .any(|cue| cue.split_whitespace().any(|w| w == word))
}

/// The longest run of capitalised words in `clauses` (name connectors such
/// as "van" allowed inside), the first on a tie; a capitalised question,
/// stop or cue word ("How", "Show", "The", "Changed") is not part of a name.
fn entity(clauses: &[&Clause<'_>]) -> Option<String> {
    let mut best: Vec<String> = Vec::new();
    for clause in clauses {
        let mut run: Vec<String> = Vec::new();
        let words = clause
            .text
            .split_whitespace()
            .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
            .map(|w| {
                w.strip_suffix("'s")
                    .or_else(|| w.strip_suffix("\u{2019}s"))
                    .unwrap_or(w)
            });
        for word in words.chain([""]) {
            let capitalised = word.chars().next().is_some_and(char::is_uppercase);
            let name_word = capitalised && !is_common(&word.to_lowercase());
            let connector = !run.is_empty() && NAME_CONNECTORS.contains(&word);
            if name_word || connector {
                run.push(word.to_string());
            } else {
                while run
                    .last()
                    .is_some_and(|w| NAME_CONNECTORS.contains(&w.as_str()))
                {
                    run.pop();
                }
                if run.len() > best.len() {
                    best = std::mem::take(&mut run);
                }
                run.clear();
            }
        }
    }
    (!best.is_empty()).then(|| best.join(" "))
}

#[cfg(test)]
mod tests;
