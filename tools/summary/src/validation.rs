//! Static validation of the summary definitions (no database needed):
//! [`SummaryConfig::validate_static`] and [`KindConfig::validate_static`].
//! Apart from [`crate::definition`] because it also compiles each kind's
//! template ([`crate::render::check_template`]), and the renderer reads the
//! definitions: kept here, neither of those two modules imports the other.

use crate::definition::{
    DefinitionError, KindConfig, RESERVED_FIGURE_NAMES, SummaryConfig, check_name, check_query,
};

impl SummaryConfig {
    /// Checks everything that can be checked without a database: settings
    /// (`batch_size`, `concurrency` ≥ 1), names (`[a-z][a-z0-9_]*`, kinds
    /// unique, figures unique within their kind and not one of
    /// [`RESERVED_FIGURE_NAMES`]), per-shape options (computations the shape
    /// supports, `step` > 0 for series only, `top` ≥ 1 for breakdowns only,
    /// `focus` for series only and required by `shares`), every SQL text
    /// (entities, `tenants`, figures: one read-only query each, see
    /// [`check_query`]), and the template (compiles;
    /// every variable it reads is `entity`, a figure or a MiniJinja global;
    /// every filter and test it applies exists). Whether a series is grouped
    /// (and so whether `groups`/`shares` apply) is only known once its query
    /// is prepared, so [`crate::SummaryTool::open`] checks that.
    ///
    /// # Errors
    /// The first [`DefinitionError`] found; `kind` is `summary` for settings,
    /// `kinds[i]` when a kind's name is invalid, else the kind's name.
    pub fn validate_static(&self) -> Result<(), DefinitionError> {
        if self.batch_size == 0 {
            return Err(DefinitionError::new(
                "summary",
                None,
                "batch_size must be at least 1",
            ));
        }
        if self.concurrency == 0 {
            return Err(DefinitionError::new(
                "summary",
                None,
                "concurrency must be at least 1",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, kind) in self.kinds.iter().enumerate() {
            check_name(&kind.name)
                .map_err(|m| DefinitionError::new(&format!("kinds[{i}]"), None, m))?;
            if seen.contains(&kind.name.as_str()) {
                return Err(DefinitionError::new(
                    &kind.name,
                    None,
                    "duplicate kind name",
                ));
            }
            seen.push(&kind.name);
            kind.validate_static()?;
        }
        Ok(())
    }
}

impl KindConfig {
    /// [`SummaryConfig::validate_static`] for one kind (its name is assumed valid).
    ///
    /// # Errors
    /// The first [`DefinitionError`] found, naming this kind (and figure).
    pub fn validate_static(&self) -> Result<(), DefinitionError> {
        let kind = self.name.as_str();
        if self.entity.trim().is_empty() {
            return Err(DefinitionError::new(
                kind,
                None,
                "`entity` (what one entity is, e.g. \"artist\") must not be empty",
            ));
        }
        check_query(&self.entities)
            .map_err(|m| DefinitionError::new(kind, None, format!("entities query: {m}")))?;
        if let Some(tenants) = &self.tenants {
            check_query(tenants)
                .map_err(|m| DefinitionError::new(kind, None, format!("tenants query: {m}")))?;
        }
        let mut names: Vec<&str> = Vec::new();
        for figure in &self.figures {
            let name = figure.name.as_str();
            let error = |m: String| DefinitionError::new(kind, Some(name), m);
            check_name(name).map_err(error)?;
            if RESERVED_FIGURE_NAMES.contains(&name) {
                return Err(error(format!(
                    "{name:?} is reserved (template variable or keyword); choose another figure name"
                )));
            }
            if names.contains(&name) {
                return Err(error("duplicate figure name".into()));
            }
            names.push(name);
            figure.validate_options().map_err(error)?;
            check_query(&figure.sql).map_err(error)?;
        }
        crate::render::check_template(self)
    }
}
