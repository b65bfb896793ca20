//! Where a tenant's data lives: the shared source, or a source of its own.
//!
//! SaaS products keep tenant data in one of two ways, and Quarry serves
//! both at once:
//!
//! - **Shared tables** with a tenant column, protected by PostgreSQL
//!   row-level security: the shared source (`database.url`,
//!   `sql.schemas`). Every transaction sets `quarry.tenant` (see
//!   `quarry_db::read_only::Session`) and the policies filter on it.
//! - **A database or schema per tenant**: `[sql.sources.<name>]` names the
//!   tenants it serves, its schemas and, for a database of its own, its URL.
//!   Each source is a [`SqlTool`] of its own — its own bounded connection
//!   pool (so one tenant cannot hold another's connections), catalog, schema
//!   index and golden pairs — and a tenant listed in a source reaches only
//!   that source: the validator allows only that source's schemas, and its
//!   pool connects only to that database.
//!
//! ```toml
//! [sql]
//! schemas = ["tate"]          # the shared source
//! shared = true               # tenants without a source use it (default)
//!
//! [sql.sources.acme]
//! tenants = ["acme"]
//! schemas = ["acme"]          # a schema per tenant, in database.url
//! pool_size = 4
//!
//! [sql.sources.globex]
//! tenants = ["globex", "globex-eu"]
//! database_url = "postgres://quarry_reader@db-globex/globex"  # a database per tenant
//! schemas = ["shop"]
//! ```
//!
//! Quarry's own tables (stored catalog, golden pairs, audit log) stay in
//! `database.url` for every source ([`SqlTool::with_home`]), keyed by the
//! source's name.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
};

use quarry_auth::Caller;
use quarry_db::audit::AuditLog;
use serde::Deserialize;

use crate::{
    error::SqlError,
    service::{SqlTool, SqlToolConfig, StartError},
};

/// `[sql.sources.<name>]`: the source of some tenants' data.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Tenants (the token's `tenant` claim) whose requests go to this
    /// source, and only to it. A tenant is listed in at most one source.
    pub tenants: Vec<String>,
    /// Schemas of this source its tenants may query; at least one.
    pub schemas: Vec<String>,
    /// libpq-style URL of the tenant's own database; absent: `database.url`
    /// (a schema per tenant in the shared database).
    #[serde(default)]
    pub database_url: Option<String>,
    /// Most connections of this source's own pool (bounded per source, not
    /// shared with other sources even on the same URL). Default 4.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Golden question→SQL pairs for this source (as `sql.golden_path`),
    /// validated against its schemas.
    #[serde(default)]
    pub golden_path: Option<PathBuf>,
    /// The source's semantic layer (as `sql.semantic_path`), checked against
    /// this source's catalog at start-up.
    #[serde(default)]
    pub semantic_path: Option<PathBuf>,
}

const fn default_pool_size() -> usize {
    4
}

impl SourceConfig {
    /// The SQL tool settings of this source named `name`: `shared`'s
    /// settings (limits, linking, models) with this source's schemas, golden
    /// pairs, semantic layer and name.
    pub fn tool_config(&self, name: &str, shared: &SqlToolConfig) -> SqlToolConfig {
        SqlToolConfig {
            schemas: self.schemas.clone(),
            golden_path: self.golden_path.clone(),
            semantic_path: self.semantic_path.clone(),
            source: name.to_owned(),
            sources: BTreeMap::new(),
            ..shared.clone()
        }
    }
}

/// Checks `[sql.sources]` in `config`: names `[a-z0-9_-]+` and not the
/// shared source's `sql.source`; at least one tenant and one schema each;
/// a positive `pool_size`; no tenant in two sources.
///
/// # Errors
/// [`StartError::Config`] naming the field at fault, e.g.
/// `sql.sources.acme.tenants: "acme" is already served by sql.sources.a2`.
pub fn validate_sources(config: &SqlToolConfig) -> Result<(), StartError> {
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for (name, source) in &config.sources {
        let field = format!("sql.sources.{name}");
        let bad = |what: &str| StartError::Config(format!("{field}{what}"));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(bad(": a source name is [a-z0-9_-]+"));
        }
        if *name == config.source {
            return Err(bad(&format!(
                ": {name:?} is the shared source's name (sql.source)"
            )));
        }
        if source.tenants.iter().all(|t| t.trim().is_empty()) {
            return Err(bad(".tenants: must name at least one tenant"));
        }
        if source.schemas.iter().all(|s| s.trim().is_empty()) {
            return Err(bad(".schemas: must name at least one schema"));
        }
        if source.pool_size == 0 {
            return Err(bad(".pool_size: must be positive"));
        }
        if source
            .database_url
            .as_deref()
            .is_some_and(|u| u.parse::<tokio_postgres::Config>().is_err())
        {
            return Err(bad(".database_url: not a PostgreSQL URL"));
        }
        for tenant in &source.tenants {
            if let Some(other) = owner.insert(tenant, name) {
                return Err(bad(&format!(
                    ".tenants: {tenant:?} is already served by sql.sources.{other}"
                )));
            }
        }
    }
    Ok(())
}

/// The SQL tools of every source, and which tenant uses which.
#[derive(Debug)]
pub struct Sources {
    /// The shared source; `None` to callers when `sql.shared` is false.
    shared: Arc<SqlTool>,
    serve_shared: bool,
    /// Each source by name, the shared one included (under `sql.source`).
    named: BTreeMap<String, Arc<SqlTool>>,
    by_tenant: HashMap<String, Arc<SqlTool>>,
}

impl Sources {
    /// Only the shared source, for every tenant.
    pub fn single(shared: Arc<SqlTool>) -> Self {
        Self::new(shared, true, BTreeMap::new())
    }

    /// `shared` (served to tenants without a source while `serve_shared`)
    /// and `own`, each source's tool by name with the tenants it serves.
    /// The tenant lists come from each tool's [`SourceConfig`]; pass them
    /// checked by [`validate_sources`].
    pub fn new(
        shared: Arc<SqlTool>,
        serve_shared: bool,
        own: BTreeMap<String, (Arc<SqlTool>, Vec<String>)>,
    ) -> Self {
        let mut named = BTreeMap::new();
        let mut by_tenant = HashMap::new();
        named.insert(shared.config().source.clone(), Arc::clone(&shared));
        for (name, (tool, tenants)) in own {
            for tenant in tenants {
                by_tenant.insert(tenant, Arc::clone(&tool));
            }
            named.insert(name, tool);
        }
        Self {
            shared,
            serve_shared,
            named,
            by_tenant,
        }
    }

    /// The tool serving `caller`'s tenant: its own source, else the shared
    /// one.
    ///
    /// # Errors
    /// [`SqlError::NoSource`] (`PERMISSION_DENIED`) for a tenant without a
    /// source when the shared source is not served (`sql.shared = false`).
    pub fn for_caller(&self, caller: &Caller) -> Result<&Arc<SqlTool>, SqlError> {
        if let Some(tool) = self.by_tenant.get(&caller.principal.tenant) {
            return Ok(tool);
        }
        if self.serve_shared {
            Ok(&self.shared)
        } else {
            Err(SqlError::NoSource(caller.principal.tenant.clone()))
        }
    }

    /// The shared source's tool (operator work: catalog refresh, start-up).
    pub fn shared(&self) -> &Arc<SqlTool> {
        &self.shared
    }

    /// Every source's tool by name, the shared one included.
    pub fn all(&self) -> &BTreeMap<String, Arc<SqlTool>> {
        &self.named
    }

    /// The audit log (in Quarry's own database, for every source).
    pub fn audit_log(&self) -> &AuditLog {
        self.shared.audit_log()
    }

    /// Queues every source's audit entries and usage charges to `behind`
    /// ([`SqlTool::use_write_behind`]); call before any statement runs.
    pub fn use_write_behind(&self, behind: &quarry_db::write_behind::WriteBehind) {
        for (name, tool) in &self.named {
            if !tool.use_write_behind(behind.clone()) {
                tracing::warn!(source = %name, "the source already stores its bookkeeping itself");
            }
        }
    }

    /// Waits until every source's queued audit entries and usage charges
    /// are stored ([`SqlTool::flush_bookkeeping`]); `false` when some could
    /// not be stored in time.
    pub async fn flush_bookkeeping(&self) -> bool {
        let mut stored = true;
        for tool in self.named.values() {
            stored &= tool.flush_bookkeeping().await;
        }
        stored
    }
}

#[cfg(test)]
mod tests;
