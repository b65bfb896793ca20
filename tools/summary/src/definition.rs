//! What a summary is made of, as declared in configuration: kinds of entity,
//! the parameterised SQL that yields each entity's figures, the computations
//! applied to them, and the text template.
//!
//! ```toml
//! [summary]
//! refresh_interval_secs = 3600
//! definitions = ["demo/summaries/tate.toml"]   # more [[kinds]] from files
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
//! eight other Turners). Entity keys are unique within a kind (a repeated
//! key keeps its first row and the build reports a warning; a NULL key is
//! skipped with a warning; a NULL name is the key). The query takes no
//! parameters.
//!
//! # Tenants
//! A kind without `tenants` is shared: built once with no tenant set, so
//! row-level security policies that show everything to Quarry's background
//! work (the demo's `tate.artworks` policy) let it see every row, and its
//! summaries serve every tenant whose role grants the kind.
//!
//! A kind with `tenants` (a query returning one column, the tenants, cast
//! to text; no parameters, e.g. `SELECT tenant FROM tate.tenant_eras`) is
//! tenant-scoped: the builder runs that query (as `summary.role`, no tenant
//! set), then builds the kind once per tenant it lists (NULL and `''` are
//! skipped with a warning, repeats once). For each tenant the entities
//! query and every figure query run in a transaction that first sets
//! `quarry.tenant` to the tenant and `quarry.subject` to
//! [`BUILDER_SUBJECT`] with `set_config(…, true)` ([`quarry_db::Session`]),
//! so row-level security filters what the summaries are computed from.
//! That only holds when `summary.role` (or the login role, without one) is
//! neither a superuser nor `BYPASSRLS`. Each tenant's summaries are stored
//! under that tenant and read only by callers of that tenant; summaries of
//! tenants the query no longer lists are deleted by the next full build.
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
//! query's `ORDER BY`: the same rows in any order give byte-identical facts
//! and text. Rows repeating a period (and series) or a label are added up.
//! A series row with a NULL `period` is left out, a NULL `value` counts as 0,
//! a NULL `series` label is `"unknown"`; a value that is not finite (NaN,
//! infinity) fails the entity. A `values` query returning a second row fails
//! the entity too. `step` applies to series only, `top` to breakdowns only,
//! `focus` to series with `shares` only (anything else is refused at
//! start-up, as are computations a shape does not support: `values` takes
//! none, `breakdown` only `total`, and `groups`/`shares` need a grouped
//! series).
//!
//! # Computations (`compute`)
//! Numbers in facts are JSON integers when integral, else rounded half away
//! from zero to one decimal (values, totals, slopes; numbers in a `values`
//! row too), so a text formatting them with the filters below shows what the
//! facts hold. Shares are percentages rounded half away from zero to one
//! decimal (`share_pct`, computed as `part × 1000 / whole` before rounding,
//! so exact ties such as 1/16 = 6.25 % round up); a share of a zero total
//! is `null`. Changes in shares are percentage points to one decimal
//! (`change_pp`).
//!
//! Ungrouped series (`period`, `value`), after filling missing periods
//! between the first and last with 0 in steps of `step` (default 1): every
//! `first + k × step` up to the last period is present (periods off that
//! grid that the data has are kept too); a series spanning more than 10,000
//! such periods fails the entity:
//! - always: `points` = `[[period, value], …]`.
//! - `total`: `total` = Σ value.
//! - `range`: `range` = `{first, last}`, the first and last periods with a
//!   non-zero value.
//! - `peak`: `peak` = `{period, value, share_pct}` (earliest period on ties;
//!   `share_pct` of the total; `null` without periods).
//! - `slope`: `slope` = `{per_step, direction}`: the ordinary least-squares
//!   slope of value on period, in value units per `step` (one decimal), and
//!   `"rising"`, `"falling"` or `"flat"`: the fitted change over the span,
//!   slope × (last period − first period) (= `per_step × (n − 1)` on a
//!   regular grid, before rounding), relative to the magnitude of the mean
//!   value, is ≥ 0.25, ≤ −0.25, or in between (with a mean of 0, its sign
//!   decides); `null` with fewer than 3 periods.
//! - `changes`: `changes` = `{steps: [{period, value, change, change_pct}],
//!   largest_rise: {period, change}, largest_fall: {period, change}}`, each
//!   period against the one before (`change_pct` relative to the magnitude
//!   of the one before, null when that was 0; `largest_*` null when no
//!   period rose/fell, the earliest on ties).
//!
//! Grouped series (`period`, `series`, `value`): `points` =
//! `[[period, series, value], …]` (not gap-filled); `total`, `range`, `peak`,
//! `slope`, `changes` apply to the per-period totals (gap-filled) and are
//! computed as above; and
//! - `groups`: `groups` = `[{label, value, share_pct}]`, every group's total
//!   and share of the grand total, largest first (then by label).
//! - `shares` (needs `focus`, a group label): `shares` = `{focus, points:
//!   [[period, share_pct]], first: {period, share_pct}, last: {period,
//!   share_pct}, change_pp, peak: {period, share_pct}, slope: {per_step,
//!   direction}}` — the focus group's share of each period's total (periods
//!   with a total of 0 are skipped; `first`, `last`, `peak` and `change_pp`
//!   use the rounded shares, so a text quoting them adds up; `slope` is fitted
//!   to the unrounded shares, in percentage points per step, direction judged
//!   on absolute change: ≥ 2 pp over the span rising, ≤ −2 pp falling; `null`
//!   with fewer than 3 periods).
//!
//! Breakdowns (`label`, `value`): `total`, `distinct` (number of labels) and
//! `top` = `{items: [{label, value, share_pct}], other: {labels, value,
//! share_pct}}` (the `top` largest, default 5; `other` covers the rest and is
//! `null` when nothing is left) are always computed; `compute` may be empty
//! (or `["total"]`).
//!
//! # Template
//! A [MiniJinja](https://docs.rs/minijinja) template rendered with `entity`
//! (`{kind, key, name}`) and one variable per figure (its facts); it may
//! read nothing else but MiniJinja's globals (`range`, `dict`, `namespace`,
//! `debug`). A figure may not be named `entity` or a word a template
//! expression cannot name (`true`, `false`, `none`, `and`, `or`, `not`,
//! `in`, `is`, `if`, `else`, `loop`). Unknown variables, filters and tests
//! are refused at start-up. Filters for consistent number formatting
//! (rounding half away from zero; a result that rounds to zero has no sign;
//! a value of the wrong type, e.g. none, is an error, so guard optional facts
//! with `{% if … %}`):
//! - `count`: thousands separators, `39389` → `39,389` (floats keep one
//!   decimal, `2.0` → `2.0`);
//! - `pct`: a percentage to one decimal, `12.345` → `12.3%`;
//! - `pp`: signed percentage points, `4.25` → `+4.3 pp`, `-1` → `-1.0 pp`,
//!   `0` → `0.0 pp`;
//! - `signed`: signed count, `12` → `+12`, `-1234` → `-1,234`, `0` → `0`;
//! - `years`: a `{first, last}` range (or `[first, last]`), `1856–1999` (en
//!   dash), one year when equal;
//! - `decade`: `1950` → `1950s` (any year names its decade, `1955` →
//!   `1950s`); `decades`: a range of decades, `1850s–1990s`;
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
    /// Summary reads (`get`, `search`, listing kinds) one tenant may run at
    /// once, as a fraction of the pool's connections (rounded down, at least
    /// one); past it a read waits `tenant_wait_ms`, then is refused with
    /// `RESOURCE_EXHAUSTED` and `RetryInfo`. Default 0.5.
    #[serde(default = "default_tenant_share")]
    pub tenant_share: f64,
    /// See `tenant_share`, in milliseconds. Default 250.
    #[serde(default = "default_tenant_wait_ms")]
    pub tenant_wait_ms: u64,
}

fn default_tenant_share() -> f64 {
    0.5
}

fn default_tenant_wait_ms() -> u64 {
    250
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
    /// Query listing the tenants to build this kind for, one column (kept
    /// as text), e.g. `SELECT tenant FROM tate.tenant_eras`; `None` (the
    /// default) makes the kind shared (see the module docs, "Tenants").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<String>,
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
            tenant_share: default_tenant_share(),
            tenant_wait_ms: default_tenant_wait_ms(),
        }
    }
}

/// `quarry.subject` in the transactions of a tenant-scoped kind's build.
pub const BUILDER_SUBJECT: &str = "summary-builder";

/// Words a figure may not be named: the template variable `entity`, and
/// names a MiniJinja expression reads as a literal, operator or the loop
/// variable, so a template could not refer to the figure.
pub const RESERVED_FIGURE_NAMES: &[&str] = &[
    "entity", "true", "false", "none", "and", "or", "not", "in", "is", "if", "else", "loop",
];

impl SummaryConfig {
    /// Reads each file of [`SummaryConfig::definitions`] (a path relative to
    /// `base_dir` unless absolute) as a TOML [`DefinitionsFile`] and appends
    /// its kinds to [`SummaryConfig::kinds`], in file order. Call it once:
    /// calling it again appends the same kinds again (which
    /// [`SummaryConfig::validate_static`] then refuses as duplicates).
    ///
    /// # Errors
    /// A [`DefinitionError`] whose `kind` is the file's path, when the file
    /// cannot be read or is not a valid definitions file.
    pub fn load_definitions(&mut self, base_dir: &std::path::Path) -> Result<(), DefinitionError> {
        for file in &self.definitions {
            let path = base_dir.join(file);
            let at = path.display().to_string();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| DefinitionError::new(&at, None, format!("cannot read file: {e}")))?;
            let parsed: DefinitionsFile = toml::from_str(&text).map_err(|e| {
                DefinitionError::new(&at, None, format!("invalid definitions file: {e}"))
            })?;
            self.kinds.extend(parsed.kinds);
        }
        Ok(())
    }
}

impl FigureConfig {
    /// Per-shape checks of `compute`, `step`, `top` and `focus`.
    pub(crate) fn validate_options(&self) -> Result<(), String> {
        let allowed: &[Computation] = match self.shape {
            Shape::Values => &[],
            Shape::Breakdown => &[Computation::Total],
            Shape::Series => &[
                Computation::Total,
                Computation::Range,
                Computation::Peak,
                Computation::Slope,
                Computation::Changes,
                Computation::Groups,
                Computation::Shares,
            ],
        };
        if let Some(c) = self.compute.iter().find(|c| !allowed.contains(c)) {
            return Err(format!(
                "computation {} does not apply to a {} figure",
                computation_name(*c),
                shape_name(self.shape)
            ));
        }
        match self.step {
            Some(_) if self.shape != Shape::Series => {
                return Err("`step` applies to series figures only".into());
            }
            Some(step) if step <= 0 => return Err(format!("`step` must be > 0, got {step}")),
            _ => {}
        }
        match self.top {
            Some(_) if self.shape != Shape::Breakdown => {
                return Err("`top` applies to breakdown figures only".into());
            }
            Some(0) => return Err("`top` must be at least 1".into()),
            _ => {}
        }
        let wants_shares = self.compute.contains(&Computation::Shares);
        match &self.focus {
            Some(_) if self.shape != Shape::Series => {
                return Err("`focus` applies to series figures only".into());
            }
            Some(_) if !wants_shares => {
                return Err("`focus` is only used by the `shares` computation; add it".into());
            }
            None if wants_shares => {
                return Err("`shares` needs `focus`, the group whose share it tracks".into());
            }
            _ => {}
        }
        Ok(())
    }
}

/// The name of a computation as written in configuration.
pub fn computation_name(c: Computation) -> &'static str {
    match c {
        Computation::Total => "total",
        Computation::Range => "range",
        Computation::Peak => "peak",
        Computation::Slope => "slope",
        Computation::Changes => "changes",
        Computation::Groups => "groups",
        Computation::Shares => "shares",
    }
}

/// The name of a shape as written in configuration.
pub fn shape_name(s: Shape) -> &'static str {
    match s {
        Shape::Values => "values",
        Shape::Series => "series",
        Shape::Breakdown => "breakdown",
    }
}

/// `[a-z][a-z0-9_]*`.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("name {name:?} must match [a-z][a-z0-9_]*"))
    }
}

/// Checks that `sql` is exactly one read-only query, parsed with sqlparser's
/// PostgreSQL dialect: a `SELECT`, `VALUES` or `WITH … SELECT` (set
/// operations and subqueries included), with no data-modifying statement
/// inside (`INSERT`/`UPDATE`/`DELETE`/`MERGE`, e.g. in a CTE), no
/// `SELECT … INTO` and no locking clause (`FOR UPDATE`, `FOR SHARE`, …).
/// A trailing `;` is allowed. The database itself still has the last word:
/// figure queries run in `READ ONLY` transactions.
///
/// # Errors
/// What is wrong, as a lowercase message.
pub fn check_query(sql: &str) -> Result<(), String> {
    use sqlparser::ast::{Statement, Visit as _};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| format!("sql does not parse: {e}"))?;
    let statement = match statements.as_slice() {
        [] => return Err("no sql statement".into()),
        [one] => one,
        more => {
            return Err(format!(
                "exactly one statement is allowed, got {}",
                more.len()
            ));
        }
    };
    if !matches!(statement, Statement::Query(_)) {
        let keyword = sql
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_lowercase();
        return Err(format!(
            "only a query (select, values, with) is allowed, got {keyword}"
        ));
    }
    match statement.visit(&mut ReadOnlyCheck { statements: 0 }) {
        std::ops::ControlFlow::Break(message) => Err(message),
        std::ops::ControlFlow::Continue(()) => Ok(()),
    }
}

/// Visitor refusing anything but reading inside a query.
struct ReadOnlyCheck {
    statements: usize,
}

const DATA_MODIFYING: &str =
    "data-modifying statements (insert, update, delete, merge) are not allowed inside a query";

impl sqlparser::ast::Visitor for ReadOnlyCheck {
    type Break = String;

    fn pre_visit_statement(
        &mut self,
        _statement: &sqlparser::ast::Statement,
    ) -> std::ops::ControlFlow<String> {
        self.statements += 1;
        if self.statements > 1 {
            return std::ops::ControlFlow::Break(DATA_MODIFYING.into());
        }
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &sqlparser::ast::Query) -> std::ops::ControlFlow<String> {
        use sqlparser::ast::SetExpr;
        if let Some(lock) = query.locks.first() {
            return std::ops::ControlFlow::Break(format!("locking clause {lock} is not allowed"));
        }
        let mut pending = vec![query.body.as_ref()];
        while let Some(body) = pending.pop() {
            match body {
                SetExpr::SetOperation { left, right, .. } => {
                    pending.push(left);
                    pending.push(right);
                }
                SetExpr::Insert(_)
                | SetExpr::Update(_)
                | SetExpr::Delete(_)
                | SetExpr::Merge(_) => {
                    return std::ops::ControlFlow::Break(DATA_MODIFYING.into());
                }
                SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) | SetExpr::Table(_) => {
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_select(
        &mut self,
        select: &sqlparser::ast::Select,
    ) -> std::ops::ControlFlow<String> {
        if select.into.is_some() {
            return std::ops::ControlFlow::Break(
                "select into creates a table and is not allowed".into(),
            );
        }
        std::ops::ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests;
