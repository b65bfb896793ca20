//! Personal data stays out of prompts: reversible pseudonymisation of what is
//! sent to a model.
//!
//! One [`Pseudonymizer`] serves one request (one Ask). Everything sent to a
//! model goes through it: [`Pseudonymizer::redact`] replaces the values the
//! detectors find ([`PiiKind`]: e-mail, phone, payment card, IBAN) and
//! every value seen before in this request by placeholders such as
//! `<EMAIL_1>`; [`Pseudonymizer::redact_value`] replaces a whole cell of a
//! column the policy tags as PII (`<PII_2>`, or `<NAME_2>` for a column
//! tagged `name`). The same value always gets the same placeholder within
//! the request, different values get different numbers (one counter for all
//! labels, from 1). [`Pseudonymizer::restore`] and, for streamed answers,
//! [`StreamRestorer`] put the original values back for a caller allowed to
//! see them.
//!
//! [`Redacting`] is a [`ChatModel`](crate::ChatModel) wrapper doing all of
//! that around any model: every message content and tool-call argument is
//! redacted before the inner model sees it, and (with
//! [`Reveal::Originals`]) the streamed text and the tool calls coming back
//! are restored.
//!
//! ```
//! use std::sync::Arc;
//! use quarry_llm::pii::Pseudonymizer;
//!
//! let pii = Arc::new(Pseudonymizer::new());
//! let row = format!("{} | {}", pii.redact_value("name", "Ada Lovelace"), pii.redact("ada@example.com"));
//! assert_eq!(row, "<NAME_1> | <EMAIL_2>");
//! // a value seen before is replaced wherever it appears later
//! assert_eq!(pii.redact("mail Ada Lovelace"), "mail <NAME_1>");
//!
//! let mut restorer = pii.stream_restorer();
//! let mut answer = restorer.push("Write to <EMA");
//! answer += &restorer.push("IL_2>.");
//! answer += &restorer.finish();
//! assert_eq!(answer, "Write to ada@example.com.");
//! ```
//!
//! # Placeholders
//!
//! A placeholder is `<`, a label of `A-Z`, `0-9` and `_`, `_`, a decimal
//! number, `>`. Labels come from [`PiiKind::label`] or from a column's tag,
//! upper-cased with every other character turned into `_` and cut to
//! [`MAX_LABEL_CHARS`] (an empty tag gives [`PII_LABEL`]), so a tag can
//! never add a `<`, `>` or anything else that would change where a
//! placeholder ends.
//!
//! # Placeholder-looking input
//!
//! Input may already contain text shaped like a placeholder: a user typing
//! `<EMAIL_1>` to make the restore step reveal whatever value `<EMAIL_1>`
//! stands for. [`Pseudonymizer::redact`] treats such text as data:
//! placeholder-shaped text this pseudonymizer has not issued is itself
//! replaced by a new placeholder with label [`LITERAL_LABEL`]
//! (`<LITERAL_3>`), which restores to the typed text, never to another
//! value; and a number is never issued whose placeholder was already seen
//! as such literal text, so a later redaction of the same input gives the
//! same `<LITERAL_3>`. Placeholders this pseudonymizer issued pass through
//! unchanged, which makes redaction idempotent (the orchestrator may redact
//! a tool result that [`Redacting`] redacts again). The one case left: text
//! that first reaches the pseudonymizer *after* a placeholder of the same
//! shape was issued (a database cell holding `<EMAIL_1>`) is taken for that
//! placeholder. It can then only reveal a value of this same request, read
//! with the caller's own permissions, and only to a caller allowed to see
//! PII (with [`Reveal::Placeholders`] nothing is restored).
//!
//! # Values seen before
//!
//! Every value pseudonymised in the request (detected or from a tagged
//! cell) of at least [`MIN_SEARCHED_VALUE_CHARS`] characters is also looked
//! for in later text, case-sensitively and as a whole word (not inside a
//! longer run of letters and digits), both as written and JSON-escaped: a
//! name from a tagged column that comes back in a summary, a search hit or
//! the next question is replaced too. Shorter values would wipe ordinary
//! words, so they are replaced only where a detector or
//! [`Pseudonymizer::redact_value`] finds them.
//!
//! # Across requests
//!
//! A request that continues an earlier one (a follow-up in a conversation,
//! whose earlier turns are sent to the model again) starts from what the
//! earlier requests' pseudonymizers knew: [`Pseudonymizer::known`] lists
//! the values with their placeholders, to store with the earlier turn, and
//! [`Pseudonymizer::seed`] gives them to the new request's pseudonymizer
//! before its first model call. A seeded value is replaced wherever it
//! appears, as any value seen before, keeps its placeholder when it can (so
//! placeholders stored in an earlier answer still stand for the same
//! value), and a value seen again in the new request's rows gets that same
//! placeholder.

mod detect;
mod redacting;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use aho_corasick::{AhoCorasick, MatchKind};
use regex::Regex;

pub use detect::{Detection, PiiKind, detect};
pub use redacting::{Redacting, Reveal};

use crate::chat::{ChatRequest, Message, ToolCall};

/// Label of placeholders for values of PII-tagged columns whose tag gives no
/// usable label: `<PII_1>`.
pub const PII_LABEL: &str = "PII";

/// Label of placeholders standing for input text that looked like a
/// placeholder this pseudonymizer never issued: `<LITERAL_1>`.
pub const LITERAL_LABEL: &str = "LITERAL";

/// Longest label, in characters; longer tags are cut.
pub const MAX_LABEL_CHARS: usize = 32;

/// Shortest value, in characters, looked for again in later text.
pub const MIN_SEARCHED_VALUE_CHARS: usize = 3;

/// Texts of at least this many bytes that the detectors found nothing in
/// are remembered ([`CLEAN_TEXTS`]): the schema context and instructions
/// of a system prompt come back on every model call, and scanning them is
/// most of what redaction costs.
const CLEAN_TEXT_MIN_BYTES: usize = 512;

/// Most bytes of texts remembered as clean.
const CLEAN_TEXTS_MAX_BYTES: u64 = 4 << 20;

/// Texts the detectors ([`PiiKind::ALL`]) found nothing in, compared whole
/// (no hash stands for a text, so no collision can pass a text unscanned).
/// The detectors depend on the text alone, so this holds for every
/// request; what depends on the request (placeholder-shaped text, values
/// seen before) is still checked on every call.
static CLEAN_TEXTS: LazyLock<moka::sync::Cache<Arc<str>, ()>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .max_capacity(CLEAN_TEXTS_MAX_BYTES)
        .weigher(|text: &Arc<str>, (): &()| u32::try_from(text.len()).unwrap_or(u32::MAX))
        .build()
});

/// Text shaped like a placeholder: what [`Pseudonymizer::restore`] looks up
/// and what [`Pseudonymizer::redact`] treats as literal when it was not
/// issued.
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| match Regex::new(r"<[A-Z0-9_]+_[0-9]+>") {
    Ok(regex) => regex,
    Err(e) => panic!("invalid built-in placeholder pattern: {e}"),
});

/// One value a [`Pseudonymizer`] replaced, with its placeholder: what
/// [`Pseudonymizer::known`] lists and [`Pseudonymizer::seed`] takes back.
/// Serialises as `{"placeholder": "<NAME_1>", "value": "Ada Lovelace"}`
/// (the label, e.g. the column tag or [`PiiKind::label`], is the
/// placeholder's). Its `Debug` output shows the placeholder, never the
/// value.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Known {
    /// The placeholder, `<LABEL_N>`.
    pub placeholder: String,
    /// The original value it stands for.
    pub value: String,
}

impl std::fmt::Debug for Known {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Known")
            .field("placeholder", &self.placeholder)
            .finish_non_exhaustive()
    }
}

/// Per-request reversible pseudonymisation of personal data.
///
/// Share it as `Arc<Pseudonymizer>` between the request's model calls and
/// tool calls: every method takes `&self` (one internal lock, held for the
/// length of one call). Its `Debug` output shows counts, never values.
#[derive(Default)]
pub struct Pseudonymizer {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Original value → its placeholder.
    by_value: HashMap<String, String>,
    /// Issued placeholder → the original value.
    by_placeholder: HashMap<String, String>,
    /// Last number issued.
    issued: u64,
    /// Longest issued placeholder, in bytes.
    longest: usize,
    /// Finds values seen before in new text; `None` when values were added
    /// since it was built.
    searcher: Option<Searcher>,
}

struct Searcher {
    automaton: Option<AhoCorasick>,
    /// Placeholder of each pattern, by pattern index.
    placeholders: Vec<String>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonymizer")
            .field("values", &self.value_count())
            .finish_non_exhaustive()
    }
}

impl Pseudonymizer {
    /// A pseudonymizer with no values yet; numbering starts at 1.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many distinct values have been replaced so far (for metrics).
    pub fn value_count(&self) -> usize {
        self.lock().by_value.len()
    }

    /// `text` with every personal value replaced by its placeholder.
    ///
    /// In this order, each step on the text earlier ones left: text shaped
    /// like a placeholder (kept if issued here, else replaced as a literal,
    /// see the [module docs](self)); values seen before in this request;
    /// IBANs, card numbers, e-mail addresses and phone numbers
    /// ([`PiiKind`]); values seen before again, for the text the detectors
    /// left. Placeholders issued by earlier calls pass unchanged, so
    /// redacting a result again keeps its placeholders (it may replace more:
    /// a phone number glued to an e-mail address, `a@b.io-555-123-4567`,
    /// stands free once the address is a placeholder).
    pub fn redact(&self, text: &str) -> String {
        let mut state = self.lock();
        let mut spans: Vec<(Range<usize>, String)> = Vec::new();

        let shaped: Vec<regex::Match<'_>> = PLACEHOLDER.find_iter(text).collect();
        // numbers issued in this call skip every placeholder-shaped text of
        // it, so that `<LITERAL_1>` typed after `<EMAIL_9>` is not taken for
        // the literal this call makes of `<EMAIL_9>`
        let avoid: Vec<&str> = shaped.iter().map(|m| m.as_str()).collect();
        for found in &shaped {
            let text = found.as_str();
            let replacement = if state.by_placeholder.contains_key(text) {
                text.to_owned()
            } else {
                state.assign(LITERAL_LABEL, text, &avoid)
            };
            spans.push((found.range(), replacement));
        }

        let seen = state.find_seen(text, &spans);
        merge(&mut spans, seen);
        // nothing of this request's in it, and the detectors found nothing
        // in it before: nothing to replace
        let rememberable = spans.is_empty() && text.len() >= CLEAN_TEXT_MIN_BYTES;
        if rememberable && CLEAN_TEXTS.contains_key(text) {
            return text.to_owned();
        }

        for kind in PiiKind::ALL {
            let taken: Vec<Range<usize>> = spans.iter().map(|(r, _)| r.clone()).collect();
            let mut found = Vec::new();
            for gap in detect::gaps(text.len(), &taken) {
                for range in kind.find(text, gap) {
                    let value = text.get(range.clone()).unwrap_or_default();
                    found.push((range, state.assign(kind.label(), value, &avoid)));
                }
            }
            merge(&mut spans, found);
        }
        if rememberable && spans.is_empty() {
            CLEAN_TEXTS.insert(Arc::from(text), ());
            return text.to_owned();
        }
        // values detected above may also stand elsewhere where no detector
        // took them (`x-555-123-4567` next to `555-123-4567`)
        let seen = state.find_seen(text, &spans);
        merge(&mut spans, seen);

        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (range, replacement) in &spans {
            out.push_str(text.get(at..range.start).unwrap_or_default());
            out.push_str(replacement);
            at = range.end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        out
    }

    /// The placeholder of a whole cell `value` from a column tagged `tag`
    /// in the policy (e.g. `name` gives `<NAME_4>`; see the
    /// [module docs](self) for how tags become labels). The value is also
    /// replaced wherever [`Pseudonymizer::redact`] later meets it.
    ///
    /// Empty and all-blank values are returned as they are (nothing to
    /// hide), and so is a placeholder this pseudonymizer issued.
    pub fn redact_value(&self, tag: &str, value: &str) -> String {
        if value.trim().is_empty() {
            return value.to_owned();
        }
        let mut state = self.lock();
        if state.by_placeholder.contains_key(value) {
            return value.to_owned();
        }
        state.assign(&label_of(tag), value, &[])
    }

    /// `text` with every placeholder issued here replaced by its original
    /// value; placeholder-shaped text that was never issued (a model's
    /// invention) stays as it is. One pass: restored values are not read
    /// again.
    pub fn restore(&self, text: &str) -> String {
        self.restore_with(text, |value| value.to_owned())
    }

    /// As [`Pseudonymizer::restore`] for JSON text (tool-call arguments):
    /// each value is inserted JSON-escaped, so that a value holding `"` or
    /// `\` cannot break out of the string the placeholder stood in.
    pub fn restore_json(&self, json: &str) -> String {
        self.restore_with(json, |value| {
            let quoted = serde_json::Value::from(value).to_string();
            quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or(&quoted)
                .to_owned()
        })
    }

    fn restore_with(&self, text: &str, insert: impl Fn(&str) -> String) -> String {
        let state = self.lock();
        PLACEHOLDER
            .replace_all(text, |caps: &regex::Captures<'_>| {
                let shaped = caps.get(0).map_or("", |m| m.as_str());
                match state.by_placeholder.get(shaped) {
                    Some(value) => insert(value),
                    None => shaped.to_owned(),
                }
            })
            .into_owned()
    }

    /// Every value replaced so far with its placeholder, in the order the
    /// placeholders were issued (seeded ones by their number): what a later
    /// request continuing this one passes to [`Pseudonymizer::seed`].
    /// Includes the literals ([`LITERAL_LABEL`]), so that the later request
    /// treats the same typed placeholder-like text the same way.
    pub fn known(&self) -> Vec<Known> {
        let state = self.lock();
        let mut known: Vec<(u64, Known)> = state
            .by_placeholder
            .iter()
            .map(|(placeholder, value)| {
                let number = parse_placeholder(placeholder).map_or(0, |(_, n)| n);
                let known = Known {
                    placeholder: placeholder.clone(),
                    value: value.clone(),
                };
                (number, known)
            })
            .collect();
        known
            .sort_by(|(a, ka), (b, kb)| a.cmp(b).then_with(|| ka.placeholder.cmp(&kb.placeholder)));
        known.into_iter().map(|(_, k)| k).collect()
    }

    /// Makes `value` known as a request before this one knew it, under
    /// `placeholder` (from [`Pseudonymizer::known`] of that request), and
    /// returns the placeholder it now has. Call it before anything is
    /// redacted.
    ///
    /// The value then behaves as one seen before in this request: it is
    /// replaced wherever [`Pseudonymizer::redact`] meets it (from
    /// [`MIN_SEARCHED_VALUE_CHARS`]), [`Pseudonymizer::redact_value`] gives
    /// it the same placeholder, and restoring gives it back. It keeps
    /// `placeholder` when that is a placeholder this module could issue
    /// (`<LABEL_N>`, the label as [`Pseudonymizer::redact_value`] makes
    /// them) that this pseudonymizer has neither issued nor seen as a
    /// value; numbers issued later are higher than every seeded one.
    /// Otherwise it gets the next number with the placeholder's label (or
    /// [`PII_LABEL`] for a malformed one). A value already known keeps the
    /// placeholder it has; an empty or all-blank value, and one that is a
    /// placeholder issued here, are not seeded and come back as they are.
    pub fn seed(&self, placeholder: &str, value: &str) -> String {
        if value.trim().is_empty() {
            return value.to_owned();
        }
        let mut state = self.lock();
        if let Some(known) = state.by_value.get(value) {
            return known.clone();
        }
        if state.by_placeholder.contains_key(value) {
            return value.to_owned();
        }
        let parsed = parse_placeholder(placeholder);
        match parsed {
            Some((label, number))
                if label_of(label) == label
                    && placeholder != value
                    && !state.by_placeholder.contains_key(placeholder)
                    && !state.by_value.contains_key(placeholder) =>
            {
                state.issued = state.issued.max(number);
                state.insert(placeholder, value);
                placeholder.to_owned()
            }
            Some((label, _)) => state.assign(&label_of(label), value, &[]),
            None => state.assign(PII_LABEL, value, &[]),
        }
    }

    /// A [`StreamRestorer`] for one streamed answer.
    pub fn stream_restorer(self: &Arc<Self>) -> StreamRestorer {
        StreamRestorer {
            pseudonymizer: Arc::clone(self),
            held: String::new(),
        }
    }

    /// Longest placeholder issued so far, in bytes (0 before the first).
    pub fn longest_placeholder(&self) -> usize {
        self.lock().longest
    }

    /// `request` with every message's content and every tool call's
    /// arguments redacted ([`Pseudonymizer::redact`]). Tool definitions and
    /// the response format are the application's own text and stay as they
    /// are.
    pub fn redact_request(&self, mut request: ChatRequest) -> ChatRequest {
        for message in &mut request.messages {
            match message {
                Message::System { content }
                | Message::User { content }
                | Message::Tool { content, .. } => *content = self.redact(content),
                Message::Assistant {
                    content,
                    tool_calls,
                } => {
                    if let Some(content) = content {
                        *content = self.redact(content);
                    }
                    for call in tool_calls {
                        call.arguments = self.redact(&call.arguments);
                    }
                }
            }
        }
        request
    }

    /// `call` with its arguments restored ([`Pseudonymizer::restore_json`]).
    pub fn restore_tool_call(&self, mut call: ToolCall) -> ToolCall {
        call.arguments = self.restore_json(&call.arguments);
        call
    }
}

impl State {
    /// The placeholder of `value`: the one it has, or the next number with
    /// `label` (already sanitised) — skipping numbers whose placeholder was
    /// itself seen as a value or is in `avoid`, so issued placeholders and
    /// values never meet.
    fn assign(&mut self, label: &str, value: &str, avoid: &[&str]) -> String {
        if let Some(placeholder) = self.by_value.get(value) {
            return placeholder.clone();
        }
        let placeholder = loop {
            self.issued += 1;
            let candidate = format!("<{label}_{}>", self.issued);
            if candidate != value
                && !avoid.contains(&candidate.as_str())
                && !self.by_value.contains_key(&candidate)
            {
                break candidate;
            }
        };
        self.insert(&placeholder, value);
        placeholder
    }

    /// Records `placeholder` as standing for `value` (neither known yet).
    fn insert(&mut self, placeholder: &str, value: &str) {
        self.longest = self.longest.max(placeholder.len());
        if value.chars().count() >= MIN_SEARCHED_VALUE_CHARS {
            self.searcher = None;
        }
        self.by_value
            .insert(value.to_owned(), placeholder.to_owned());
        self.by_placeholder
            .insert(placeholder.to_owned(), value.to_owned());
    }

    /// Values seen before, as whole words, in the parts of `text` outside
    /// `taken`.
    fn find_seen(
        &mut self,
        text: &str,
        taken: &[(Range<usize>, String)],
    ) -> Vec<(Range<usize>, String)> {
        let searcher = self.searcher.get_or_insert_with(|| {
            Searcher::build(
                self.by_value
                    .iter()
                    .filter(|(value, _)| value.chars().count() >= MIN_SEARCHED_VALUE_CHARS),
            )
        });
        let Some(automaton) = &searcher.automaton else {
            return Vec::new();
        };
        let taken: Vec<Range<usize>> = taken.iter().map(|(r, _)| r.clone()).collect();
        let mut out = Vec::new();
        for gap in detect::gaps(text.len(), &taken) {
            let input = aho_corasick::Input::new(text).range(gap);
            for found in automaton.find_iter(input) {
                if whole_word(text, found.range())
                    && let Some(placeholder) = searcher.placeholders.get(found.pattern().as_usize())
                {
                    out.push((found.range(), placeholder.clone()));
                }
            }
        }
        out
    }
}

impl Searcher {
    fn build<'a>(values: impl Iterator<Item = (&'a String, &'a String)>) -> Self {
        let mut patterns = Vec::new();
        let mut placeholders = Vec::new();
        for (value, placeholder) in values {
            let escaped = serde_json::Value::from(value.as_str()).to_string();
            let escaped = escaped
                .strip_prefix('"')
                .and_then(|e| e.strip_suffix('"'))
                .unwrap_or_default();
            if escaped != value {
                patterns.push(escaped.to_owned());
                placeholders.push(placeholder.clone());
            }
            patterns.push(value.clone());
            placeholders.push(placeholder.clone());
        }
        let automaton = if patterns.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .inspect_err(|e| {
                    tracing::warn!(error = %e, values = patterns.len(), "cannot search for pseudonymised values");
                })
                .ok()
        };
        Self {
            automaton,
            placeholders,
        }
    }
}

/// Whether `range` of `text` does not cut through a word: a value starting
/// (ending) with a letter or digit must not have one right before (after)
/// it.
fn whole_word(text: &str, range: Range<usize>) -> bool {
    let inner = text.get(range.clone()).unwrap_or_default();
    let before = text.get(..range.start).unwrap_or_default();
    let after = text.get(range.end..).unwrap_or_default();
    let joins = |a: Option<char>, b: Option<char>| {
        a.is_some_and(char::is_alphanumeric) && b.is_some_and(char::is_alphanumeric)
    };
    !joins(before.chars().next_back(), inner.chars().next())
        && !joins(inner.chars().next_back(), after.chars().next())
}

/// The label and number of `text` when all of it is one placeholder
/// (`<NAME_12>` gives `("NAME", 12)`).
fn parse_placeholder(text: &str) -> Option<(&str, u64)> {
    let found = PLACEHOLDER.find(text)?;
    if found.range() != (0..text.len()) {
        return None;
    }
    let inner = text.strip_prefix('<')?.strip_suffix('>')?;
    let (label, number) = inner.rsplit_once('_')?;
    Some((label, number.parse().ok()?))
}

/// Adds `more` (found in the gaps of `spans`) to `spans`, keeping them in
/// order.
fn merge(spans: &mut Vec<(Range<usize>, String)>, more: Vec<(Range<usize>, String)>) {
    spans.extend(more);
    spans.sort_by_key(|(range, _)| range.start);
}

/// The placeholder label for a column tag: ASCII letters upper-cased,
/// digits and `_` kept, anything else `_`, at most [`MAX_LABEL_CHARS`]
/// characters; [`PII_LABEL`] for an empty tag.
fn label_of(tag: &str) -> String {
    let label: String = tag
        .trim()
        .chars()
        .take(MAX_LABEL_CHARS)
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => c.to_ascii_uppercase(),
            _ => '_',
        })
        .collect();
    if label.is_empty() {
        PII_LABEL.to_owned()
    } else {
        label
    }
}

/// Restores placeholders in a streamed answer whose deltas may cut a
/// placeholder anywhere (`"<EM"`, `"AIL_1"`, `">"`).
///
/// [`StreamRestorer::push`] returns what can be shown now: all of the text
/// so far except a tail that may be the start of a placeholder (a `<`
/// followed only by `A-Z`, `0-9`, `_`, shorter than the longest placeholder
/// issued), which it holds back until the next delta shows whether it is
/// one; so at most [`Pseudonymizer::longest_placeholder`] − 1 bytes wait.
/// [`StreamRestorer::finish`] returns what is left at the end of the
/// stream.
pub struct StreamRestorer {
    pseudonymizer: Arc<Pseudonymizer>,
    held: String,
}

impl std::fmt::Debug for StreamRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRestorer")
            .field("held_bytes", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl StreamRestorer {
    /// The restored text that can be shown after `delta`; may be empty.
    pub fn push(&mut self, delta: &str) -> String {
        self.held.push_str(delta);
        let longest = self.pseudonymizer.longest_placeholder();
        let keep_from = match self.held.rfind('<') {
            Some(i)
                if self.held.len() - i < longest
                    && self.held.as_bytes()[i + 1..]
                        .iter()
                        .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
            {
                i
            }
            Some(_) | None => self.held.len(),
        };
        let tail = self.held.split_off(keep_from);
        let ready = std::mem::replace(&mut self.held, tail);
        self.pseudonymizer.restore(&ready)
    }

    /// The text still held back, at the end of the stream.
    pub fn finish(self) -> String {
        self.pseudonymizer.restore(&self.held)
    }
}
