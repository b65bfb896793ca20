//! Preparing the declared kinds against the database, once when the tool
//! opens ([`prepare_kind`]): the wrapped entities and figure queries,
//! each figure's `$1` binding, the compiled template and the kind's
//! fingerprint. The builder runs what this prepares.

use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};
use tokio_postgres::types::Type;

use crate::analysis;
use crate::definition::{Computation, DefinitionError, FigureConfig, KindConfig, Shape};
use crate::error::{Result, SummaryError};
use crate::render::KindTemplate;

/// Version of the analysis and rendering code, part of every data version:
/// bump it when facts or texts would change for the same rows, so the next
/// build recomputes everything.
pub const ANALYSIS_VERSION: u32 = 1;

/// How a figure's `$1` is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyParam {
    /// No parameter: the figure is the same for every entity.
    None,
    /// `int2`, parsed from the key.
    Int2,
    /// `int4`, parsed from the key.
    Int4,
    /// `int8`, parsed from the key.
    Int8,
    /// `text` or `varchar`, the key as is.
    Text,
}

/// A figure ready to run.
#[derive(Debug, Clone)]
pub(crate) struct PreparedFigure {
    pub(crate) config: FigureConfig,
    /// The wrapped query (see [`wrap_figure`]).
    pub(crate) sql: String,
    pub(crate) param: KeyParam,
    /// A series with a `series` column.
    pub(crate) grouped: bool,
}

/// A kind ready to build.
#[derive(Debug)]
pub(crate) struct PreparedKind {
    pub(crate) config: KindConfig,
    /// The wrapped entities query.
    pub(crate) entities_sql: String,
    /// The wrapped tenants query ([`wrap_tenants`]) of a tenant-scoped
    /// kind; `None` for a shared one.
    pub(crate) tenants_sql: Option<String>,
    pub(crate) figures: Vec<PreparedFigure>,
    pub(crate) template: KindTemplate,
    /// SHA-256 (hex) of the definition and [`ANALYSIS_VERSION`].
    pub(crate) fingerprint: String,
}

/// `sql` without trailing whitespace and semicolons, ready to nest.
fn inner(sql: &str) -> &str {
    sql.trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// The query a figure runs: its SQL nested in a `SELECT` fixing the
/// columns' types by shape:
/// - series: `SELECT (f."period")::int8, (f."value")::float8 [, (f."series")::text] FROM (<sql>) AS f`;
/// - breakdown: `SELECT (f."label")::text, (f."value")::float8 FROM (<sql>) AS f`;
/// - values: `SELECT to_jsonb(f) FROM (<sql>) AS f LIMIT 2` (a second row is an error).
pub(crate) fn wrap_figure(shape: Shape, sql: &str, grouped: bool) -> String {
    let sql = inner(sql);
    match shape {
        Shape::Series => format!(
            "SELECT (f.\"period\")::int8, (f.\"value\")::float8{} FROM (\n{sql}\n) AS f",
            if grouped {
                ", (f.\"series\")::text"
            } else {
                ""
            }
        ),
        Shape::Breakdown => {
            format!("SELECT (f.\"label\")::text, (f.\"value\")::float8 FROM (\n{sql}\n) AS f")
        }
        Shape::Values => format!("SELECT to_jsonb(f) FROM (\n{sql}\n) AS f LIMIT 2"),
    }
}

/// The entities query: `SELECT (f."key")::text, (f."name")::text [, (f."weight")::float8] FROM (<sql>) AS f`.
pub(crate) fn wrap_entities(sql: &str, weighted: bool) -> String {
    format!(
        "SELECT (f.\"key\")::text, (f.\"name\")::text{} FROM (\n{}\n) AS f",
        if weighted {
            ", (f.\"weight\")::float8"
        } else {
            ""
        },
        inner(sql)
    )
}

/// The tenants query: `SELECT (f.tenant)::text FROM (<sql>) AS f(tenant)`
/// (its one column renamed, whatever its name).
pub(crate) fn wrap_tenants(sql: &str) -> String {
    format!(
        "SELECT (f.tenant)::text FROM (\n{}\n) AS f(tenant)",
        inner(sql)
    )
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 (hex) of a kind's definition (canonical JSON) and
/// [`ANALYSIS_VERSION`]. The embedder is not part of it: texts do not depend
/// on it, and the embedding phase re-embeds whatever another embedder made.
pub(crate) fn fingerprint(kind: &KindConfig) -> String {
    let definition = serde_json::to_value(kind)
        .map(|v| analysis::canonical_json(&v))
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(definition.as_bytes());
    hasher.update([0]);
    hasher.update(ANALYSIS_VERSION.to_be_bytes());
    hex(&hasher.finalize())
}

/// Prepares one kind against the database: detects optional columns,
/// prepares the wrapped queries (PostgreSQL checks names, types and
/// casts), checks the `$1` type, compiles the template, and checks that
/// `groups`/`shares` are only asked of grouped series.
pub(crate) async fn prepare_kind(
    client: &impl tokio_postgres::GenericClient,
    kind: &KindConfig,
) -> Result<PreparedKind> {
    let name = kind.name.as_str();
    let fail = |figure: Option<&str>, m: String| {
        SummaryError::Definition(DefinitionError::new(name, figure, m))
    };
    // entities
    let raw = client.prepare(inner(&kind.entities)).await.map_err(|e| {
        fail(
            None,
            format!("entities query: {}", quarry_db::error_text(&e)),
        )
    })?;
    let columns: Vec<&str> = raw.columns().iter().map(|c| c.name()).collect();
    for needed in ["key", "name"] {
        if !columns.contains(&needed) {
            return Err(fail(
                None,
                format!(
                    "entities query: needs a column named {needed}; it returns {}",
                    columns.join(", ")
                ),
            ));
        }
    }
    if !raw.params().is_empty() {
        return Err(fail(None, "entities query: takes no parameters".into()));
    }
    let entities_sql = wrap_entities(&kind.entities, columns.contains(&"weight"));
    client.prepare(&entities_sql).await.map_err(|e| {
        fail(
            None,
            format!("entities query: {}", quarry_db::error_text(&e)),
        )
    })?;

    let tenants_sql = match &kind.tenants {
        Some(sql) => Some(
            prepare_tenants(client, sql)
                .await
                .map_err(|m| fail(None, m))?,
        ),
        None => None,
    };

    let mut figures = Vec::new();
    for figure in &kind.figures {
        let f = Some(figure.name.as_str());
        let raw = client
            .prepare(inner(&figure.sql))
            .await
            .map_err(|e| fail(f, quarry_db::error_text(&e)))?;
        let columns: Vec<&str> = raw.columns().iter().map(|c| c.name()).collect();
        let needed: &[&str] = match figure.shape {
            Shape::Series => &["period", "value"],
            Shape::Breakdown => &["label", "value"],
            Shape::Values => &[],
        };
        for column in needed {
            if !columns.contains(column) {
                return Err(fail(
                    f,
                    format!(
                        "a {} figure needs a column named {column}; the query returns {}",
                        crate::definition::shape_name(figure.shape),
                        columns.join(", ")
                    ),
                ));
            }
        }
        let grouped = figure.shape == Shape::Series && columns.contains(&"series");
        if !grouped
            && let Some(c) = figure
                .compute
                .iter()
                .find(|c| matches!(c, Computation::Groups | Computation::Shares))
        {
            return Err(fail(
                f,
                format!(
                    "computation {} needs a grouped series: add a `series` column",
                    crate::definition::computation_name(*c)
                ),
            ));
        }
        let sql = wrap_figure(figure.shape, &figure.sql, grouped);
        let statement = client
            .prepare(&sql)
            .await
            .map_err(|e| fail(f, quarry_db::error_text(&e)))?;
        let param = match statement.params() {
            [] => KeyParam::None,
            [t] if *t == Type::INT2 => KeyParam::Int2,
            [t] if *t == Type::INT4 => KeyParam::Int4,
            [t] if *t == Type::INT8 => KeyParam::Int8,
            [t] if *t == Type::TEXT || *t == Type::VARCHAR => KeyParam::Text,
            [t] => {
                return Err(fail(
                    f,
                    format!(
                        "$1 has type {t}; the entity key binds as int2, int4, int8, text or varchar \
                         (cast it, e.g. $1::int4)"
                    ),
                ));
            }
            more => {
                return Err(fail(
                    f,
                    format!(
                        "takes {} parameters; a figure takes at most one, $1 (the entity key)",
                        more.len()
                    ),
                ));
            }
        };
        figures.push(PreparedFigure {
            config: figure.clone(),
            sql,
            param,
            grouped,
        });
    }
    let template = KindTemplate::compile(kind)?;
    Ok(PreparedKind {
        config: kind.clone(),
        entities_sql,
        tenants_sql,
        figures,
        template,
        fingerprint: fingerprint(kind),
    })
}

/// Prepares a kind's `tenants` query: one column, no parameters, and its
/// text cast accepted by PostgreSQL. Returns the wrapped query.
async fn prepare_tenants(
    client: &impl tokio_postgres::GenericClient,
    sql: &str,
) -> std::result::Result<String, String> {
    let at = |e: tokio_postgres::Error| format!("tenants query: {}", quarry_db::error_text(&e));
    let raw = client.prepare(inner(sql)).await.map_err(at)?;
    if raw.columns().len() != 1 {
        return Err(format!(
            "tenants query: must return exactly one column (the tenant), it returns {}",
            raw.columns().len()
        ));
    }
    if !raw.params().is_empty() {
        return Err("tenants query: takes no parameters".into());
    }
    let wrapped = wrap_tenants(sql);
    client.prepare(&wrapped).await.map_err(at)?;
    Ok(wrapped)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn wraps_queries_by_shape() {
        assert_eq!(
            wrap_figure(Shape::Series, "SELECT 1 AS period, 2 AS value;\n ", false),
            "SELECT (f.\"period\")::int8, (f.\"value\")::float8 FROM (\nSELECT 1 AS period, 2 AS value\n) AS f"
        );
        assert!(wrap_figure(Shape::Series, "x", true).contains(", (f.\"series\")::text FROM"));
        assert!(
            wrap_figure(Shape::Values, "x -- note", false).ends_with("x -- note\n) AS f LIMIT 2")
        );
        assert_eq!(
            wrap_entities("SELECT 1 AS key, 'a' AS name", true),
            "SELECT (f.\"key\")::text, (f.\"name\")::text, (f.\"weight\")::float8 FROM (\nSELECT 1 AS key, 'a' AS name\n) AS f"
        );
        assert_eq!(
            wrap_tenants("SELECT tenant FROM t;"),
            "SELECT (f.tenant)::text FROM (\nSELECT tenant FROM t\n) AS f(tenant)"
        );
    }
}
