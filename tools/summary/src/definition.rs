//! What a summary is made of, as declared in configuration: kinds of entity,
//! the parameterised SQL that yields each entity's figures, the computations
//! applied to them, and the text template.
//!
//! ```toml
//! [summary]
//! refresh_interval_secs = 3600
//! definitions = ["dev/summaries/tate.toml"]   # more [[kinds]] from files
//!
//! [[summary.kinds]]
//! name = "artist"
//! entity = "artist"
//! description = "One artist's works: acquisitions by decade, media, ..."
//! entities = "SELECT a.id AS key, a.name, count(*) AS weight FROM ... GROUP BY 1, 2"
//! template = "{{ entity.name }}: {{ acquisitions.total | count }} works acquired {{ acquisitions.range | decades }} ..."
//!
//! [[summary.kinds.figures]]
//! name = "acquisitions"
//! shape = "series"
//! step = 10
//! compute = ["total", "range", "peak", "slope", "changes"]
//! sql = "SELECT w.acquisition_year / 10 * 10 AS period, count(*) AS value FROM ... WHERE c.artist_id = $1 GROUP BY 1"
//! ```
//!
//! # Entities
//! `entities` is a query returning one row per entity with columns `key`
//! (any type; kept as text), `name` (text) and optionally `weight` (a number;
//! larger wins ties between equally close fuzzy name matches, e.g. the number
//! of works, so that "turner" resolves to J. M. W. Turner rather than one of
//! eight other Turners). Entity keys are unique within a kind.
//!
//! # Figures
//! Each figure's `sql` takes at most one parameter, `$1`, the entity key
//! converted to the parameter's type (`int2`/`int4`/`int8` parsed from the
//! key text, `text`/`varchar` as is). A figure without `$1` is the same for
//! every entity (useful for a kind with one entity, e.g. the whole
//! collection). The builder wraps each query (`SELECT … FROM (<sql>) AS f`),
//! so its result columns are fixed by the shape:
//!
//! | shape | columns | facts always present |
//! |---|---|---|
//! | `values` | any; one row (or none) | the row as a JSON object (`null` when no row) |
//! | `series` | `period` (integer), `value` (number) [, `series` (text)] | `points` |
//! | `breakdown` | `label` (text; NULL becomes `"unknown"`), `value` (number) | `total`, `distinct`, `top` |
//!
//! The builder orders rows itself (series by `period`, `series`; breakdowns
//! by `value` descending then `label`), so figures do not depend on the
//! query's `ORDER BY`.
//!
//! # Computations (`compute`)
//! Numbers in facts are JSON integers when integral, else rounded as noted.
//! Shares are percentages rounded half away from zero to one decimal
//! (`share_pct`); changes in shares are percentage points to one decimal
//! (`change_pp`).
//!
//! Ungrouped series (`period`, `value`), after filling missing periods
//! between the first and last with 0 in steps of `step` (default 1):
//! - always: `points` = `[[period, value], …]`.
//! - `total`: `total` = Σ value.
//! - `range`: `range` = `{first, last}`, the first and last periods with a
//!   non-zero value.
//! - `peak`: `peak` = `{period, value, share_pct}` (earliest period on ties).
//! - `slope`: `slope` = `{per_step, direction}`: the ordinary least-squares
//!   slope of value on period, in value units per `step` (one decimal), and
//!   `"rising"`, `"falling"` or `"flat"`: the fitted change over the span,
//!   `per_step × (n − 1)`, relative to the mean value, is ≥ 0.25, ≤ −0.25, or
//!   in between; `null` with fewer than 3 periods.
//! - `changes`: `changes` = `{steps: [{period, value, change, change_pct}],
//!   largest_rise: {period, change}, largest_fall: {period, change}}`, each
//!   period against the one before (`change_pct` null when that was 0;
//!   `largest_*` null when no period rose/fell).
//!
//! Grouped series (`period`, `series`, `value`): `points` =
//! `[[period, series, value], …]` (not gap-filled); `total`, `range`, `peak`,
//! `slope`, `changes` apply to the per-period totals (gap-filled) and are
//! computed as above; and
//! - `groups`: `groups` = `[{label, value, share_pct}]`, every group's total
//!   and share of the grand total, largest first.
//! - `shares` (needs `focus`, a group label): `shares` = `{focus, points:
//!   [[period, share_pct]], first: {period, share_pct}, last: {period,
//!   share_pct}, change_pp, peak: {period, share_pct}, slope: {per_step,
//!   direction}}` — the focus group's share of each period's total (periods
//!   with a total of 0 are skipped; `slope` in percentage points per step,
//!   direction judged on absolute change: ≥ 2 pp over the span rising,
//!   ≤ −2 pp falling).
//!
//! Breakdowns (`label`, `value`): `total`, `distinct` (number of labels) and
//! `top` = `{items: [{label, value, share_pct}], other: {labels, value,
//! share_pct}}` (the `top` largest, default 5; `other` covers the rest and is
//! `null` when nothing is left) are always computed; `compute` may be empty.
//!
//! # Template
//! A [MiniJinja](https://docs.rs/minijinja) template rendered with `entity`
//! (`{kind, key, name}`) and one variable per figure (its facts). Filters for
//! consistent number formatting:
//! - `count`: thousands separators, `39389` → `39,389` (floats keep one decimal);
//! - `pct`: a percentage to one decimal, `12.345` → `12.3%`;
//! - `pp`: signed percentage points, `4.25` → `+4.3 pp`, `-1` → `-1.0 pp`;
//! - `signed`: signed count, `12` → `+12`, `-1234` → `-1,234`;
//! - `years`: a `{first, last}` range (or `[first, last]`), `1856–1999` (en
//!   dash), one year when equal;
//! - `decade`: `1950` → `1950s`; `decades`: a range of decades, `1850s–1990s`;
//! - `listing`: a list of `{label, value, share_pct}`, `oil paint on canvas
//!   (1,234; 12.3%), graphite on paper (56; 1.2%)`.
//!
//! The rendered text has every run of whitespace collapsed to one space and
//! is trimmed. Undefined variables are errors (strict undefined behaviour).

use serde::{Deserialize, Serialize};

/// Settings of the summaries tool (`[summary]` in quarry.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryConfig {
    /// Seconds between scheduled builds inside `quarry serve`; 0 disables the
    /// schedule (builds then run only on demand). Default 3,600.
    #[serde(default = "default_refresh_interval_secs")]
    pub refresh_interval_secs: u64,
    /// Whether `quarry serve` runs a build as soon as it starts (unchanged
    /// entities are skipped, so this is cheap once built). Default true.
    #[serde(default = "default_true")]
    pub build_on_start: bool,
    /// Entities per batch: their figures are computed, changed ones embedded
    /// together, and the batch written in one transaction. Default 64.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Entities whose figure queries run at the same time. Default 4.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// `statement_timeout` for each figure query, in milliseconds. Default 30,000.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Database role figure queries run as (`SET LOCAL ROLE`), e.g. the SQL
    /// tool's read-only role; unset runs them as the connecting user.
    #[serde(default)]
    pub role: Option<String>,
    /// Files holding more kinds (`[[kinds]]` tables, same fields as
    /// [`KindConfig`]); relative paths are resolved by the caller.
    #[serde(default)]
    pub definitions: Vec<String>,
    /// Kinds declared inline.
    #[serde(default)]
    pub kinds: Vec<KindConfig>,
}

/// The `[[kinds]]` of a definitions file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionsFile {
    /// The kinds the file declares.
    pub kinds: Vec<KindConfig>,
}

/// One kind of summary: which entities it covers and how each is summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindConfig {
    /// Kind name, `[a-z][a-z0-9_]*`, unique, e.g. `artist`.
    pub name: String,
    /// What one entity is, in a word or two, e.g. `artist`, `acquisition decade`.
    pub entity: String,
    /// For a model or a person choosing a kind: what the summaries cover.
    pub description: String,
    /// Query listing the entities: columns `key`, `name` [, `weight`].
    pub entities: String,
    /// The figures computed per entity, in template order.
    pub figures: Vec<FigureConfig>,
    /// MiniJinja template of the paragraph.
    pub template: String,
}

/// One figure: a query and what is computed from its rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FigureConfig {
    /// Figure name, `[a-z][a-z0-9_]*`, unique within the kind, not `entity`;
    /// the template variable and the key in the facts JSON.
    pub name: String,
    /// Columns the query returns, and so what can be computed.
    pub shape: Shape,
    /// The query; `$1` is the entity key.
    pub sql: String,
    /// Computations to apply (see the module documentation).
    #[serde(default)]
    pub compute: Vec<Computation>,
    /// Series: distance between consecutive periods (1 for years, 10 for
    /// decades); missing periods are filled with 0. Default 1.
    #[serde(default)]
    pub step: Option<i64>,
    /// Breakdowns: how many labels `top` lists. Default 5.
    #[serde(default)]
    pub top: Option<usize>,
    /// Grouped series: the group whose share `shares` tracks, e.g. `Female`.
    #[serde(default)]
    pub focus: Option<String>,
}

/// The columns a figure query returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// One row of named values.
    Values,
    /// `period`, `value` [, `series`].
    Series,
    /// `label`, `value`.
    Breakdown,
}

/// A computation over a figure's rows (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Computation {
    /// Σ value.
    Total,
    /// First and last periods with a non-zero value.
    Range,
    /// The period with the largest value.
    Peak,
    /// Ordinary least-squares trend.
    Slope,
    /// Period-over-period change.
    Changes,
    /// Each group's total and share (grouped series).
    Groups,
    /// The focus group's share per period (grouped series).
    Shares,
}

/// A definition that cannot be used; `kind` (and `figure`) name it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("summary definition {}: {message}", location(kind, figure.as_deref()))]
pub struct DefinitionError {
    /// The kind at fault (its name, or `kinds[i]` when the name is the problem).
    pub kind: String,
    /// The figure at fault, if one.
    pub figure: Option<String>,
    /// What is wrong.
    pub message: String,
}

fn location(kind: &str, figure: Option<&str>) -> String {
    match figure {
        Some(f) => format!("{kind}.{f}"),
        None => kind.to_owned(),
    }
}

impl DefinitionError {
    /// An error in kind `kind` (and figure `figure`).
    pub fn new(kind: &str, figure: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            figure: figure.map(str::to_owned),
            message: message.into(),
        }
    }
}

fn default_refresh_interval_secs() -> u64 {
    3600
}
fn default_true() -> bool {
    true
}
fn default_batch_size() -> usize {
    64
}
fn default_concurrency() -> usize {
    4
}
fn default_statement_timeout_ms() -> u64 {
    30_000
}

impl Default for SummaryConfig {
    fn default() -> Self {
        Self {
            refresh_interval_secs: default_refresh_interval_secs(),
            build_on_start: true,
            batch_size: default_batch_size(),
            concurrency: default_concurrency(),
            statement_timeout_ms: default_statement_timeout_ms(),
            role: None,
            definitions: Vec::new(),
            kinds: Vec::new(),
        }
    }
}
