//! Router mode's answer text, written deterministically from what the
//! pipelines found — no model composes it.
//!
//! - summaries: the best summary's text verbatim, introduced by its
//!   entity's name and citation id and how it was found; the other
//!   summaries by name and id;
//! - search: one line per hit, its key and title;
//! - then what could not be done: pipelines that found nothing or failed,
//!   pipelines the question called for that are not available, and that
//!   without a model nothing is composed or written as new SQL.

use quarry_proto::v1::{SearchHit, SearchToolResult, SummaryToolResult};

use super::Pipeline;
use crate::render::value_text;

/// Fields shown as a hit's title, in order of preference.
const TITLE_FIELDS: &[&str] = &["title", "name", "label", "subject"];

/// How the summaries step found its summaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SummarySource {
    /// `GetSummaries` resolved the entity named in the question.
    Entity {
        entity: String,
        /// Resolved by the closest name rather than exactly.
        fuzzy: bool,
    },
    /// `SearchSummaries` with every query word.
    AllWords { query: String },
    /// `SearchSummaries` with any query word, after every word found none.
    SomeWords { query: String },
}

/// What router mode's pipelines found.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// Summaries found (at least one), and how.
    pub summaries: Option<(SummaryToolResult, SummarySource)>,
    /// Search hits found (at least one).
    pub hits: Option<SearchToolResult>,
    /// What ran without finding anything, one phrase per attempt (e.g.
    /// `searching “artworks” for “ships” found nothing`), by pipeline.
    pub misses: Vec<(Pipeline, String)>,
    /// Pipelines the question called for whose service is not available.
    pub unavailable: Vec<Pipeline>,
    /// Whether a model is configured (router mode was asked for).
    pub model_configured: bool,
}

impl Findings {
    /// At least one pipeline returned something.
    pub fn answered(&self) -> bool {
        self.summaries.is_some() || self.hits.is_some()
    }
}

/// The answer from what was found, ending with what could not be done;
/// cells of hits cut to `max_chars` characters. For [`Findings::answered`].
pub fn answer(findings: &Findings, max_chars: usize) -> String {
    let mut parts = Vec::new();
    if let Some((found, source)) = &findings.summaries {
        parts.push(summaries_text(found, source));
    }
    if let Some(found) = &findings.hits {
        parts.push(hits_text(found, max_chars));
    }
    let mut closing = misses_text(&findings.misses);
    closing.extend(unavailable_text(&findings.unavailable));
    closing.push(
        if findings.model_configured {
            "In router mode I return stored summaries and search hits as they are, without \
             composing an answer; ask in agentic mode for one."
        } else {
            "Without a language model I can only return stored summaries and search hits, not \
             compose an answer or write new SQL."
        }
        .to_string(),
    );
    parts.push(closing.join("\n"));
    parts.join("\n\n")
}

/// Why nothing was found: the route's reason when no pipeline ran, each
/// miss and unavailable pipeline otherwise, then `golden` (why no golden
/// question matched, naming the closest).
pub fn no_answer(findings: &Findings, ran: bool, reason: &str, golden: &str) -> String {
    let mut out = format!(
        "I can't answer this {}",
        if findings.model_configured {
            "in router mode"
        } else {
            "offline"
        }
    );
    if ran {
        out.push('.');
    } else {
        out.push_str(&format!(": {reason}."));
    }
    for line in misses_text(&findings.misses)
        .into_iter()
        .chain(unavailable_text(&findings.unavailable))
    {
        out.push(' ');
        out.push_str(&line);
    }
    if !golden.trim().is_empty() {
        out.push(' ');
        out.push_str(golden.trim());
    }
    out
}

fn summaries_text(found: &SummaryToolResult, source: &SummarySource) -> String {
    let Some(best) = found.summaries.first() else {
        return String::new();
    };
    let how = match source {
        SummarySource::Entity { fuzzy: false, .. } => String::new(),
        SummarySource::Entity {
            entity,
            fuzzy: true,
        } => format!(", the closest match to “{entity}”"),
        SummarySource::AllWords { query } => format!(", the best match for “{query}”"),
        SummarySource::SomeWords { query } => {
            format!(", which matches some of “{query}” (no summary matches them all)")
        }
    };
    let mut out = format!(
        "From the stored summary of {} ({}){how}:\n{}",
        best.entity_name,
        best.id,
        best.text.trim()
    );
    let others: Vec<String> = found.summaries[1..]
        .iter()
        .map(|s| format!("{} ({})", s.entity_name, s.id))
        .collect();
    if !others.is_empty() {
        out.push_str(&format!("\nOther summaries found: {}.", others.join("; ")));
    }
    out
}

fn hits_text(found: &SearchToolResult, max_chars: usize) -> String {
    let mut lines = vec![format!(
        "Search hits in “{}” for “{}”:",
        found.collection, found.query
    )];
    for hit in &found.hits {
        match title(hit, max_chars) {
            Some(title) => lines.push(format!("- {}: {title}", hit.key)),
            None => lines.push(format!("- {}", hit.key)),
        }
    }
    lines.join("\n")
}

/// The hit's title-like field (see [`TITLE_FIELDS`]), else its first
/// non-empty field by name; on one line, cut to `max_chars` characters.
fn title(hit: &SearchHit, max_chars: usize) -> Option<String> {
    let text = |name: &str| {
        hit.fields
            .get(name)
            .map(value_text)
            .filter(|t| !t.trim().is_empty() && t != "NULL")
    };
    let mut names: Vec<&String> = hit.fields.keys().collect();
    names.sort();
    let full = TITLE_FIELDS
        .iter()
        .find_map(|name| text(name))
        .or_else(|| names.into_iter().find_map(|name| text(name)))?;
    let line = full.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = line.chars().take(max_chars).collect();
    if line.chars().count() > max_chars {
        cut.push('…');
    }
    Some(cut)
}

/// `Summaries: looking up “Turner” failed (…); searching them for “turner” found nothing.`
fn misses_text(misses: &[(Pipeline, String)]) -> Vec<String> {
    [Pipeline::Summaries, Pipeline::Search]
        .into_iter()
        .filter_map(|pipeline| {
            let phrases: Vec<&str> = misses
                .iter()
                .filter(|(p, _)| *p == pipeline)
                .map(|(_, m)| m.as_str())
                .collect();
            (!phrases.is_empty()).then(|| {
                let name = match pipeline {
                    Pipeline::Summaries => "Summaries",
                    Pipeline::Search => "Search",
                };
                format!("{name}: {}.", phrases.join("; "))
            })
        })
        .collect()
}

fn unavailable_text(unavailable: &[Pipeline]) -> Vec<String> {
    unavailable
        .iter()
        .map(|p| {
            match p {
                Pipeline::Summaries => {
                    "Trend questions are answered from stored summaries, which are not available here."
                }
                Pipeline::Search => {
                    "Descriptive questions are answered by search, which is not available here."
                }
            }
            .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_proto::v1::{Summary, Value, value::Kind};

    fn summary(id: &str, name: &str, text: &str) -> Summary {
        Summary {
            id: id.into(),
            entity_name: name.into(),
            text: text.into(),
            ..Default::default()
        }
    }

    fn hit(key: &str, fields: &[(&str, &str)]) -> SearchHit {
        SearchHit {
            key: key.into(),
            fields: fields
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_string(),
                        Value {
                            kind: Some(Kind::TextValue((*v).to_string())),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_answer_quotes_the_best_summary_and_lists_hits_then_says_what_it_cannot_do() {
        let findings = Findings {
            summaries: Some((
                SummaryToolResult {
                    summaries: vec![
                        summary(
                            "summary:artist:558",
                            "J. M. W. Turner",
                            "Turner: 39,391 works.\n",
                        ),
                        summary(
                            "summary:artist:2076",
                            "Alfred Turner",
                            "Alfred Turner: 3 works.",
                        ),
                    ],
                    ..Default::default()
                },
                SummarySource::Entity {
                    entity: "Turner".into(),
                    fuzzy: true,
                },
            )),
            hits: Some(SearchToolResult {
                collection: "artworks".into(),
                query: "works bequest".into(),
                hits: vec![
                    hit("101", &[("url", "http://x"), ("title", "Storm\nat  Sea")]),
                    hit("102", &[("url", "http://y"), ("medium", "Oil paint")]),
                    hit("103", &[]),
                ],
                ..Default::default()
            }),
            misses: vec![],
            unavailable: vec![],
            model_configured: false,
        };
        assert!(findings.answered());
        assert_eq!(
            answer(&findings, 7),
            "From the stored summary of J. M. W. Turner (summary:artist:558), the closest match to \
             “Turner”:\nTurner: 39,391 works.\nOther summaries found: Alfred Turner \
             (summary:artist:2076).\n\n\
             Search hits in “artworks” for “works bequest”:\n- 101: Storm a…\n- 102: Oil pai…\n- 103\n\n\
             Without a language model I can only return stored summaries and search hits, not \
             compose an answer or write new SQL."
        );
    }

    #[test]
    fn misses_and_missing_pipelines_are_stated() {
        let findings = Findings {
            hits: Some(SearchToolResult {
                collection: "artworks".into(),
                query: "ships".into(),
                hits: vec![hit("1", &[("title", "Ship")])],
                ..Default::default()
            }),
            misses: vec![
                (
                    Pipeline::Summaries,
                    "looking up “Tate” failed (boom)".into(),
                ),
                (
                    Pipeline::Summaries,
                    "searching them for “ships” found nothing".into(),
                ),
            ],
            unavailable: vec![Pipeline::Search],
            model_configured: true,
            ..Default::default()
        };
        let text = answer(&findings, 100);
        assert!(
            text.ends_with(
                "Summaries: looking up “Tate” failed (boom); searching them for “ships” found nothing.\n\
                 Descriptive questions are answered by search, which is not available here.\n\
                 In router mode I return stored summaries and search hits as they are, without \
                 composing an answer; ask in agentic mode for one."
            ),
            "{text}"
        );
    }

    #[test]
    fn no_answer_gives_the_reason_or_the_misses_and_the_closest_golden_question() {
        let none = Findings::default();
        assert!(!none.answered());
        assert_eq!(
            no_answer(
                &none,
                false,
                "no trend or descriptive cue, and no words to look up",
                " Closest: “x”. "
            ),
            "I can't answer this offline: no trend or descriptive cue, and no words to look up. Closest: “x”."
        );
        let missed = Findings {
            misses: vec![(
                Pipeline::Search,
                "searching “artworks” for “zzz” found nothing".into(),
            )],
            unavailable: vec![Pipeline::Summaries],
            ..Default::default()
        };
        assert_eq!(
            no_answer(&missed, true, "ignored", ""),
            "I can't answer this offline. Search: searching “artworks” for “zzz” found nothing. \
             Trend questions are answered from stored summaries, which are not available here."
        );
    }
}
