//! Turning facts into the paragraph: one MiniJinja [`Environment`] per kind,
//! built and compiled once at start-up ([`KindTemplate::compile`]), with
//! strict undefined behaviour, no auto-escaping, and the number-formatting
//! filters of the [`crate::definition`] module documentation:
//!
//! | filter | input | output |
//! |---|---|---|
//! | `count` | `39389`, `-1234`, `2.25` | `39,389`, `-1,234`, `2.3` |
//! | `pct` | `12.345` | `12.3%` |
//! | `pp` | `4.25`, `-1`, `0` | `+4.3 pp`, `-1.0 pp`, `0.0 pp` |
//! | `signed` | `12`, `-1234`, `0`, `2.5` | `+12`, `-1,234`, `0`, `+2.5` |
//! | `years` | `{first: 1856, last: 1999}` or `[1856, 1999]` | `1856–1999` (`1856` when equal) |
//! | `decade` | `1950`, `1955` | `1950s`, `1950s` |
//! | `decades` | `{first: 1850, last: 1990}` | `1850s–1990s` (`1850s` when equal) |
//! | `listing` | `[{label, value, share_pct}]` | `oil paint on canvas (1,234; 12.3%), graphite on paper (56; 1.2%)` |
//!
//! Rounding is half away from zero to one decimal everywhere; a result that
//! rounds to zero carries no sign (`-0.04 | pp` is `0.0 pp`). Floats keep one
//! decimal even when integral (`2.0 | count` is `2.0`): facts hold integral
//! numbers as integers, so a float in a template is a real fraction or the
//! result of template arithmetic. A filter given a value of the wrong type
//! (text, none, an undefined variable) is an error, so a template that
//! formats a missing figure fails the entity's build instead of printing
//! nonsense; guard optional facts with `{% if … %}`.
//!
//! The rendered text has every run of whitespace collapsed to one space and
//! is trimmed ([`collapse_whitespace`]).

use std::collections::BTreeMap;

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};

use crate::definition::{DefinitionError, KindConfig};

/// The name every kind's template is registered under in its environment.
const TEMPLATE_NAME: &str = "summary";

/// An environment with strict undefined behaviour, no auto-escaping and the
/// crate's filters; no templates.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("count", count);
    env.add_filter("pct", pct);
    env.add_filter("pp", pp);
    env.add_filter("signed", signed);
    env.add_filter("years", years);
    env.add_filter("decade", decade);
    env.add_filter("decades", decades);
    env.add_filter("listing", listing);
    env
}

/// What the template of one entity is rendered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRef<'a> {
    /// Kind name.
    pub kind: &'a str,
    /// Entity key (text form).
    pub key: &'a str,
    /// Display name.
    pub name: &'a str,
}

/// One kind's compiled template.
#[derive(Debug)]
pub struct KindTemplate {
    env: Environment<'static>,
}

impl KindTemplate {
    /// Compiles `kind.template` into its own environment after the checks of
    /// [`check_template`].
    ///
    /// # Errors
    /// [`DefinitionError`] naming the kind when the template does not
    /// compile, reads a variable that is neither `entity`, a figure nor a
    /// global, or applies an unknown filter or test.
    pub fn compile(kind: &KindConfig) -> Result<KindTemplate, DefinitionError> {
        let mut env = environment();
        env.add_template_owned(TEMPLATE_NAME, kind.template.clone())
            .map_err(|e| template_error(kind, &e))?;
        check_compiled(kind, &env)?;
        Ok(KindTemplate { env })
    }

    /// Renders the paragraph of `entity` from `facts` (an object keyed by
    /// figure name), whitespace collapsed and trimmed.
    ///
    /// # Errors
    /// The MiniJinja error, with its line, when rendering fails: an undefined
    /// variable or attribute, a filter given the wrong type, ….
    pub fn render(
        &self,
        entity: &EntityRef<'_>,
        facts: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| describe(&e))?;
        let mut context: BTreeMap<String, Value> = facts
            .iter()
            .map(|(name, value)| (name.clone(), json_to_value(value)))
            .collect();
        let mut entity_map = BTreeMap::new();
        entity_map.insert("kind".to_owned(), Value::from(entity.kind));
        entity_map.insert("key".to_owned(), Value::from(entity.key));
        entity_map.insert("name".to_owned(), Value::from(entity.name));
        context.insert("entity".to_owned(), Value::from(entity_map));
        let text = template
            .render(Value::from(context))
            .map_err(|e| describe(&e))?;
        Ok(collapse_whitespace(&text))
    }
}

/// A MiniJinja error with its source chain, one line.
fn describe(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn template_error(kind: &KindConfig, error: &Error) -> DefinitionError {
    DefinitionError::new(&kind.name, None, format!("template: {}", describe(error)))
}

/// Checks `kind.template` as [`KindTemplate::compile`] does, discarding the
/// result (used by [`crate::definition::SummaryConfig::validate_static`]).
///
/// # Errors
/// As [`KindTemplate::compile`].
pub fn check_template(kind: &KindConfig) -> Result<(), DefinitionError> {
    KindTemplate::compile(kind).map(|_| ())
}

fn check_compiled(kind: &KindConfig, env: &Environment<'static>) -> Result<(), DefinitionError> {
    let template = env
        .get_template(TEMPLATE_NAME)
        .map_err(|e| template_error(kind, &e))?;
    let globals: Vec<&str> = env.globals().map(|(name, _)| name).collect();
    let mut undeclared: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| {
            name != "entity"
                && !kind.figures.iter().any(|f| &f.name == name)
                && !globals.contains(&name.as_str())
        })
        .collect();
    undeclared.sort();
    if !undeclared.is_empty() {
        let figures: Vec<&str> = kind.figures.iter().map(|f| f.name.as_str()).collect();
        return Err(DefinitionError::new(
            &kind.name,
            None,
            format!(
                "template: unknown variable{} {}; the template sees `entity` and the figures: {}",
                if undeclared.len() > 1 { "s" } else { "" },
                undeclared.join(", "),
                figures.join(", ")
            ),
        ));
    }
    let (filters, tests) = filters_and_tests(&kind.template);
    for name in filters {
        if probe(
            env,
            &format!("{{{{ none | {name} }}}}"),
            ErrorKind::UnknownFilter,
        ) {
            return Err(DefinitionError::new(
                &kind.name,
                None,
                format!("template: unknown filter {name}"),
            ));
        }
    }
    for name in tests {
        if probe(
            env,
            &format!("{{{{ none is {name} }}}}"),
            ErrorKind::UnknownTest,
        ) {
            return Err(DefinitionError::new(
                &kind.name,
                None,
                format!("template: unknown test {name}"),
            ));
        }
    }
    Ok(())
}

/// Whether rendering `source` fails with `kind`.
fn probe(env: &Environment<'static>, source: &str, kind: ErrorKind) -> bool {
    matches!(env.render_str(source, ()), Err(e) if e.kind() == kind)
}

/// The filter and test names a template applies, found lexically: inside
/// `{{ … }}` and `{% … %}` (outside string literals), the identifier after
/// each `|`, after `is` [`not`], and after a block's opening `filter`
/// keyword. `{% raw %}` sections and `{# … #}` comments are skipped.
/// MiniJinja looks filters up only when rendering, so this is how an
/// unknown one is caught at start-up.
fn filters_and_tests(source: &str) -> (Vec<String>, Vec<String>) {
    let mut filters = Vec::new();
    let mut tests = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let (close, is_statement) = match after.chars().next() {
            Some('{') => ("}}", false),
            Some('%') => ("%}", true),
            Some('#') => {
                rest = after.find("#}").map_or("", |end| &after[end + 2..]);
                continue;
            }
            _ => {
                rest = after;
                continue;
            }
        };
        let body_start = &after[1..];
        let (tokens, consumed) = block_tokens(body_start, close);
        rest = &body_start[consumed..];
        let words: Vec<&str> = tokens.iter().map(String::as_str).collect();
        if is_statement && words.first() == Some(&"raw") {
            rest = rest
                .find("endraw")
                .and_then(|i| rest[i..].find("%}").map(|j| &rest[i + j + 2..]))
                .unwrap_or("");
            continue;
        }
        for (i, word) in words.iter().enumerate() {
            let next = |at: usize| {
                words
                    .get(at)
                    .filter(|w| is_ident(w))
                    .map(|w| (*w).to_owned())
            };
            match *word {
                "|" => filters.extend(next(i + 1)),
                "filter" if is_statement && i == 0 => filters.extend(next(i + 1)),
                "is" => {
                    let at = if words.get(i + 1) == Some(&"not") {
                        i + 2
                    } else {
                        i + 1
                    };
                    tests.extend(next(at));
                }
                _ => {}
            }
        }
    }
    filters.sort();
    filters.dedup();
    tests.sort();
    tests.dedup();
    (filters, tests)
}

/// Identifiers and `|` in a block up to `close`, skipping string literals;
/// returns them and the bytes consumed (including `close`).
fn block_tokens(body: &str, close: &str) -> (Vec<String>, usize) {
    let bytes = body.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if bytes[i..].starts_with(close.as_bytes()) {
            return (tokens, i + close.len());
        }
        if c == b'\'' || c == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != c {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == b'|' {
            tokens.push("|".to_owned());
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            tokens.push(body[start..i].to_owned());
        } else if c.is_ascii_digit() {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    (tokens, bytes.len())
}

fn is_ident(word: &str) -> bool {
    word.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

/// Every run of whitespace replaced by one space, and trimmed.
pub fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A JSON value as a template value: objects become maps (sorted by key),
/// arrays sequences, integers integers, other numbers floats.
pub fn json_to_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(json_to_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

/// A number a filter was given.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

fn invalid(filter: &str, message: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("{filter}: {message}"))
}

fn what(value: &Value) -> String {
    if value.is_undefined() {
        "an undefined value".to_owned()
    } else if value.is_none() {
        "none".to_owned()
    } else {
        format!("a {} ({value})", value.kind())
    }
}

fn number(filter: &str, value: &Value) -> Result<Num, Error> {
    if value.is_integer() {
        return i128::try_from(value.clone())
            .map(Num::Int)
            .map_err(|e| invalid(filter, e));
    }
    if value.is_number() {
        let f = f64::try_from(value.clone()).map_err(|e| invalid(filter, e))?;
        if !f.is_finite() {
            return Err(invalid(filter, format!("{f} is not a finite number")));
        }
        return Ok(Num::Float(f));
    }
    Err(invalid(
        filter,
        format!("expected a number, got {}", what(value)),
    ))
}

/// `x` rounded half away from zero to tenths, as an integer count of tenths.
fn tenths(x: f64) -> i128 {
    // `f64::round` rounds half away from zero; the cast saturates.
    (x * 10.0).round() as i128
}

/// `1234567` → `1,234,567` (no sign).
fn group_thousands(mut n: u128) -> String {
    let mut groups = Vec::new();
    loop {
        if n < 1000 {
            groups.push(n.to_string());
            break;
        }
        groups.push(format!("{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join(",")
}

/// Signed integer with thousands separators: `-1,234`.
fn format_int(n: i128) -> String {
    let digits = group_thousands(n.unsigned_abs());
    if n < 0 { format!("-{digits}") } else { digits }
}

/// Tenths with thousands separators and one decimal: `12345` → `1,234.5`;
/// the sign only when non-zero.
fn format_tenths(t: i128) -> String {
    let abs = t.unsigned_abs();
    let text = format!("{}.{}", group_thousands(abs / 10), abs % 10);
    if t < 0 { format!("-{text}") } else { text }
}

fn format_num(n: Num) -> String {
    match n {
        Num::Int(i) => format_int(i),
        Num::Float(f) => format_tenths(tenths(f)),
    }
}

/// `count`: thousands separators; floats with one decimal.
///
/// # Errors
/// A MiniJinja `InvalidOperation` error naming the filter when the value
/// is not of the shape it takes (e.g. text where a number is expected).
pub fn count(value: Value) -> Result<String, Error> {
    Ok(format_num(number("count", &value)?))
}

/// `pct`: a percentage to one decimal, `12.345` → `12.3%`.
///
/// # Errors
/// A MiniJinja `InvalidOperation` error naming the filter when the value
/// is not of the shape it takes (e.g. text where a number is expected).
pub fn pct(value: Value) -> Result<String, Error> {
    let t = match number("pct", &value)? {
        Num::Int(i) => i.saturating_mul(10),
        Num::Float(f) => tenths(f),
    };
    Ok(format!("{}%", format_tenths(t)))
}

/// `pp`: signed percentage points to one decimal, `4.25` → `+4.3 pp`.
///
/// # Errors
/// A MiniJinja `InvalidOperation` error naming the filter when the value
/// is not of the shape it takes (e.g. text where a number is expected).
pub fn pp(value: Value) -> Result<String, Error> {
    let t = match number("pp", &value)? {
        Num::Int(i) => i.saturating_mul(10),
        Num::Float(f) => tenths(f),
    };
    let sign = if t > 0 { "+" } else { "" };
    Ok(format!("{sign}{} pp", format_tenths(t)))
}

/// `signed`: a count with its sign, `12` → `+12`, `-1234` → `-1,234`.
///
/// # Errors
/// A MiniJinja `InvalidOperation` error naming the filter when the value
/// is not of the shape it takes (e.g. text where a number is expected).
pub fn signed(value: Value) -> Result<String, Error> {
    let n = number("signed", &value)?;
    let positive = match n {
        Num::Int(i) => i > 0,
        Num::Float(f) => tenths(f) > 0,
    };
    let sign = if positive { "+" } else { "" };
    Ok(format!("{sign}{}", format_num(n)))
}

/// The `(first, last)` integers of a `{first, last}` map or `[first, last]` sequence.
fn bounds(filter: &str, value: &Value) -> Result<(i128, i128), Error> {
    let as_int = |v: Value| match number(filter, &v)? {
        Num::Int(i) => Ok(i),
        Num::Float(f) if f.fract() == 0.0 => Ok(f as i128),
        Num::Float(f) => Err(invalid(filter, format!("expected a whole year, got {f}"))),
    };
    if value.kind() == minijinja::value::ValueKind::Map {
        let first = value.get_attr("first")?;
        let last = value.get_attr("last")?;
        if first.is_undefined() || last.is_undefined() {
            return Err(invalid(filter, "expected a map with `first` and `last`"));
        }
        return Ok((as_int(first)?, as_int(last)?));
    }
    if value.kind() == minijinja::value::ValueKind::Seq && value.len() == Some(2) {
        return Ok((
            as_int(value.get_item_by_index(0)?)?,
            as_int(value.get_item_by_index(1)?)?,
        ));
    }
    Err(invalid(
        filter,
        format!(
            "expected {{first, last}} or [first, last], got {}",
            what(value)
        ),
    ))
}

/// `years`: `{first, last}` → `1856–1999`, one year when equal.
///
/// # Errors
/// A MiniJinja `InvalidOperation` error naming the filter when the value
/// is not of the shape it takes (e.g. text where a number is expected).
pub fn years(value: Value) -> Result<String, Error> {
    let (first, last) = bounds("years", &value)?;
    Ok(if first == last {
        first.to_string()
    } else {
        format!("{first}\u{2013}{last}")
    })
}

fn decade_of(year: i128) -> String {
    format!("{}s", year.div_euclid(10) * 10)
}

/// `decade`: `1950` → `1950s` (any year of the decade names it).
///
/// # Errors
/// A MiniJinja `InvalidOperation` error naming the filter when the value
/// is not of the shape it takes (e.g. text where a number is expected).
pub fn decade(value: Value) -> Result<String, Error> {
    match number("decade", &value)? {
        Num::Int(i) => Ok(decade_of(i)),
        Num::Float(f) if f.fract() == 0.0 => Ok(decade_of(f as i128)),
        Num::Float(f) => Err(invalid("decade", format!("expected a whole year, got {f}"))),
    }
}

/// `decades`: `{first: 1850, last: 1990}` → `1850s–1990s`, one decade when equal.
///
/// # Errors
/// A MiniJinja `InvalidOperation` error naming the filter when the value
/// is not of the shape it takes (e.g. text where a number is expected).
pub fn decades(value: Value) -> Result<String, Error> {
    let (first, last) = bounds("decades", &value)?;
    let (first, last) = (decade_of(first), decade_of(last));
    Ok(if first == last {
        first
    } else {
        format!("{first}\u{2013}{last}")
    })
}

/// `listing`: `[{label, value, share_pct}]` → `label (1,234; 12.3%), …`
/// (`label (1,234)` when `share_pct` is none or missing).
///
/// # Errors
/// A MiniJinja `InvalidOperation` error naming the filter when the value
/// is not of the shape it takes (e.g. text where a number is expected).
pub fn listing(value: Value) -> Result<String, Error> {
    if value.kind() != minijinja::value::ValueKind::Seq {
        return Err(invalid(
            "listing",
            format!(
                "expected a list of {{label, value, share_pct}}, got {}",
                what(&value)
            ),
        ));
    }
    let mut parts = Vec::new();
    for item in value.try_iter()? {
        let label = item.get_attr("label")?;
        let Some(label) = label.as_str().map(str::to_owned) else {
            return Err(invalid(
                "listing",
                format!("each item needs a text `label`, got {}", what(&item)),
            ));
        };
        let count = format_num(number("listing", &item.get_attr("value")?)?);
        let share = item.get_attr("share_pct")?;
        if share.is_undefined() || share.is_none() {
            parts.push(format!("{label} ({count})"));
        } else {
            parts.push(format!("{label} ({count}; {})", pct(share)?));
        }
    }
    Ok(parts.join(", "))
}

#[cfg(test)]
mod tests;
