//! The summaries tool's domain service: [`SummaryTool`] opens the declared
//! kinds against the database, looks summaries up (by key, exact name,
//! fuzzy name, kind listing), searches them by meaning, reports freshness,
//! runs builds ([`crate::builder`]) and schedules them.
//!
//! Every returned [`Summary`] says how fresh it is: `computed_at` (when its
//! text and facts were computed), `checked_at` (when a build last confirmed
//! its inputs unchanged), `age_seconds` (now − `checked_at`) and
//! `last_error` (set when the latest build of the entity failed; the text is
//! then the one from `computed_at`).
//!
//! # Tenants
//! Every read is limited to the caller's tenant
//! (`caller.principal.tenant`): a shared kind's summaries (stored with
//! tenant `''`) serve every tenant whose role grants the kind, a
//! tenant-scoped kind's (see [`crate::definition`], "Tenants") only the
//! tenant they were built for. Key and name lookups, fuzzy candidates and
//! alternatives, listings and their totals, searches (ranking and the
//! `searched`/`covered` counts) and kind counts never read another tenant's
//! rows; a caller without a tenant sees no tenant-scoped kind's summaries.
//! Build reports shown to a caller ([`SummaryTool::last_build`],
//! [`SummaryTool::refresh`]) list only failures of shared kinds and of the
//! caller's tenant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use quarry_auth::Caller;
use quarry_llm::embed::Embedder;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use crate::definition::SummaryConfig;
use crate::error::{Candidate, Result, SummaryError};
use crate::lookup::{
    ALTERNATIVE_THRESHOLD, MATCH_THRESHOLD, MAX_ALTERNATIVES, NameEntry, Scored, fold, rank,
};
use crate::model::{BuildOptions, BuildProgressEvent, BuildReport, Summary};
use crate::prepare::{PreparedKind, prepare_kind};
use crate::store::{self, SUMMARY_COLUMNS, summary_from_row};

/// The row filter of every read: `(kind, tenant)` is one of the pairs of the
/// parallel text arrays `$2` (kinds) and `$3` (tenants), see
/// [`SummaryTool::scopes`].
const SCOPED: &str = "(kind, tenant) IN (SELECT * FROM unnest($2::text[], $3::text[]))";
/// [`SCOPED`] with the arrays as `$1` and `$2`.
const SCOPED_1: &str = "(kind, tenant) IN (SELECT * FROM unnest($1::text[], $2::text[]))";

/// How long a kind's entity names are reused for fuzzy lookups (a build in
/// this process refreshes them at once).
pub const NAMES_TTL: Duration = Duration::from_secs(60);
/// `limit` when a request asks for 0.
pub const DEFAULT_LIMIT: u32 = 10;
/// Largest `limit` and `k`.
pub const MAX_LIMIT: u32 = 100;
/// `k` when a search asks for 0.
pub const DEFAULT_K: u32 = 5;
/// Longest entity text or search query, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;

/// How a lookup resolved the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// The entity text equals an entity key.
    Key,
    /// The entity text equals a name, ignoring case, accents and punctuation.
    Name,
    /// The best fuzzy name match.
    Fuzzy,
    /// No entity given: a listing of one kind.
    Listing,
}

/// A lookup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetRequest {
    /// Kind; `None` searches every kind (then `entity` is required).
    pub kind: Option<String>,
    /// Entity key or name; `None` lists the kind.
    pub entity: Option<String>,
    /// Summaries wanted, 1..=100; 0 means 10.
    pub limit: u32,
    /// Summaries to skip (listings only).
    pub offset: u32,
}

/// A lookup's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct GetResponse {
    /// The summaries: every kind's summary of a key or name match (up to
    /// `limit`), the one best fuzzy match, or a page of the listing.
    pub summaries: Vec<Summary>,
    /// How the entity was resolved.
    pub matched: MatchKind,
    /// Other close names, best first (fuzzy matches only).
    pub alternatives: Vec<Candidate>,
    /// Summaries of the kind in total (listings), else the number returned.
    pub total: u64,
}

/// A search.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchRequest {
    /// Query text (required).
    pub query: String,
    /// Kinds to search; empty searches every kind.
    pub kinds: Vec<String>,
    /// Summaries wanted, 1..=100; 0 means 5.
    pub k: u32,
}

/// Which retrieval a search used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieval {
    /// Cosine similarity of embeddings (pgvector `<=>`).
    Vector,
    /// PostgreSQL full-text search (`websearch_to_tsquery`, `ts_rank_cd`).
    FullText,
}

impl Retrieval {
    /// `vector` or `full_text`.
    pub fn as_str(self) -> &'static str {
        match self {
            Retrieval::Vector => "vector",
            Retrieval::FullText => "full_text",
        }
    }
}

/// A search's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResponse {
    /// Best first, `score` set.
    pub summaries: Vec<Summary>,
    /// What ran.
    pub retrieval: Retrieval,
    /// Summaries of the searched kinds.
    pub searched: u64,
    /// Of those, the ones vector retrieval can find (embedded by the
    /// current embedder; texts are embedded after they are written, so a
    /// fresh build is searchable by meaning progressively). Equal to
    /// `searched` for full-text retrieval.
    pub covered: u64,
}

/// A declared kind and the state of its summaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindStatus {
    /// Kind name.
    pub name: String,
    /// What one entity is.
    pub entity: String,
    /// What the summaries cover.
    pub description: String,
    /// Summaries stored.
    pub summaries: u64,
    /// Summaries whose latest build failed.
    pub failed: u64,
    /// Oldest `checked_at` (none without summaries).
    pub oldest_checked_at: Option<DateTime<Utc>>,
}

struct CachedNames {
    loaded: Instant,
    entries: Arc<Vec<NameEntry>>,
}

/// The summaries tool.
pub struct SummaryTool {
    pub(crate) pool: Pool,
    pub(crate) config: SummaryConfig,
    pub(crate) embedder: Option<Arc<dyn Embedder>>,
    pub(crate) kinds: Vec<PreparedKind>,
    /// Quoted schema of pgvector (qualifies `<=>`).
    vector_schema: String,
    /// Entity names per (kind, tenant), for fuzzy lookups.
    names: Mutex<HashMap<(String, String), CachedNames>>,
    /// Each tenant's share of concurrent summary reads.
    shares: quarry_auth::shares::TenantShares,
}

impl std::fmt::Debug for SummaryTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SummaryTool")
            .field("kinds", &self.kind_names())
            .field(
                "embedder",
                &self.embedder.as_ref().map(|e| e.model_id().to_owned()),
            )
            .finish_non_exhaustive()
    }
}

impl SummaryTool {
    /// Checks the configuration ([`SummaryConfig::validate_static`]),
    /// creates the `quarry.summaries` tables when missing
    /// (the `quarry` schema's migrations, [`quarry_db::migrate`]), checks `role` exists, and prepares every
    /// kind against the database: each wrapped figure, entities and
    /// `tenants` query is prepared (PostgreSQL checks tables, columns, types
    /// and casts), a `tenants` query must return one column and take no
    /// parameters, `$1` must be of a supported type, `groups`/`shares` need a grouped series,
    /// and the templates are compiled. Definitions come from
    /// `config.kinds`: call [`SummaryConfig::load_definitions`] first for
    /// `config.definitions`.
    ///
    /// # Errors
    /// [`SummaryError::Definition`] naming `kind.figure`, or the kind with
    /// `entities query: …` / `tenants query: …` (with PostgreSQL's
    /// message when preparing fails); [`SummaryError::Config`] for a role
    /// that cannot be assumed or a pool of fewer than 2 connections (a build
    /// keeps one for its lock and needs others for its queries); database
    /// and pool errors.
    pub async fn open(
        pool: Pool,
        config: SummaryConfig,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Result<SummaryTool> {
        config.validate_static()?;
        if pool.status().max_size < 2 {
            return Err(SummaryError::Config(
                "the database pool needs at least 2 connections (a build holds one for its lock)"
                    .into(),
            ));
        }
        let mut client = quarry_db::checkout(&pool, "summaries").await?;
        quarry_db::migrate_client(&mut client).await?;
        let vector_schema = store::vector_type_schema(&**client).await?;
        if let Some(role) = &config.role {
            let tx = client.transaction().await?;
            tx.batch_execute(&format!("SET LOCAL ROLE {}", quarry_db::quote_ident(role)))
                .await
                .map_err(|e| {
                    SummaryError::Config(format!(
                        "role {role:?} cannot be assumed: {}",
                        e.as_db_error()
                            .map_or_else(|| e.to_string(), |d| d.message().to_owned())
                    ))
                })?;
            tx.rollback().await?;
        }
        let mut kinds = Vec::with_capacity(config.kinds.len());
        for kind in &config.kinds {
            kinds.push(prepare_kind(&**client, kind).await?);
        }
        drop(client);
        let shares = quarry_auth::shares::TenantShares::new(
            "concurrent summary reads",
            quarry_auth::shares::TenantShares::share_of(
                pool.status().max_size,
                config.tenant_share,
            ),
            std::time::Duration::from_millis(config.tenant_wait_ms),
        );
        Ok(SummaryTool {
            shares,
            pool,
            config,
            embedder,
            kinds,
            vector_schema,
            names: Mutex::new(HashMap::new()),
        })
    }

    /// Each tenant's share of concurrent summary reads.
    pub fn tenant_shares(&self) -> &quarry_auth::shares::TenantShares {
        &self.shares
    }

    /// The configuration in force.
    pub fn config(&self) -> &SummaryConfig {
        &self.config
    }

    /// The embedder texts and queries are embedded with, if any.
    pub fn embedder(&self) -> Option<Arc<dyn Embedder>> {
        self.embedder.clone()
    }

    /// Names of the declared kinds, in declaration order.
    pub fn kind_names(&self) -> Vec<&str> {
        self.kinds.iter().map(|k| k.config.name.as_str()).collect()
    }

    pub(crate) fn kind(&self, name: &str) -> Result<&PreparedKind> {
        self.kinds
            .iter()
            .find(|k| k.config.name == name)
            .ok_or_else(|| {
                SummaryError::invalid(
                    "kind",
                    format!(
                        "unknown kind {name:?}; kinds: {}",
                        self.kind_names().join(", ")
                    ),
                )
            })
    }

    /// Drops the cached entity names (after a build).
    pub(crate) fn invalidate_names(&self) {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The tenant whose summaries of `kind` the caller reads: `''` for a
    /// shared kind, the caller's tenant for a tenant-scoped one (`None`
    /// when the caller has no tenant: it reads none of them).
    fn tenant_of<'c>(&self, caller: &'c Caller, kind: &str) -> Option<&'c str> {
        let scoped = self
            .kinds
            .iter()
            .any(|k| k.config.name == kind && k.tenants_sql.is_some());
        let tenant = caller.principal.tenant.as_str();
        match (scoped, tenant.is_empty()) {
            (false, _) => Some(""),
            (true, false) => Some(tenant),
            (true, true) => None,
        }
    }

    /// `kinds` paired with the tenant the caller reads each as (see
    /// [`Self::tenant_of`]; kinds it reads nothing of are left out), as two
    /// parallel arrays for [`SCOPED`].
    fn scopes(&self, caller: &Caller, kinds: &[String]) -> (Vec<String>, Vec<String>) {
        kinds
            .iter()
            .filter_map(|k| Some((k.clone(), self.tenant_of(caller, k)?.to_owned())))
            .unzip()
    }

    /// A kind's entity names for `tenant` (`''`: shared) from
    /// `quarry.summaries`, cached for [`NAMES_TTL`].
    async fn names(&self, kind: &str, tenant: &str) -> Result<Arc<Vec<NameEntry>>> {
        let cache_key = (kind.to_owned(), tenant.to_owned());
        if let Some(cached) = self
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&cache_key)
            .filter(|c| c.loaded.elapsed() < NAMES_TTL)
        {
            return Ok(Arc::clone(&cached.entries));
        }
        let client = quarry_db::checkout(&self.pool, "summaries").await?;
        let rows = client
            .query(
                "SELECT entity_key, entity_name, weight FROM quarry.summaries \
                 WHERE kind = $1 AND tenant = $2 ORDER BY entity_key",
                &[&kind, &tenant],
            )
            .await?;
        drop(client);
        let mut raw = Vec::with_capacity(rows.len());
        for row in &rows {
            raw.push((
                row.try_get::<_, String>(0)?,
                row.try_get::<_, String>(1)?,
                row.try_get::<_, Option<f64>>(2)?,
            ));
        }
        let owned_kind = kind.to_owned();
        let entries = tokio::task::spawn_blocking(move || {
            raw.iter()
                .map(|(key, name, weight)| NameEntry::new(&owned_kind, key, name, *weight))
                .collect::<Vec<_>>()
        })
        .await?;
        let entries = Arc::new(entries);
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        // one entry per (kind, tenant) asked for lately, not every tenant ever
        names.retain(|_, c| c.loaded.elapsed() < NAMES_TTL);
        names.insert(
            cache_key,
            CachedNames {
                loaded: Instant::now(),
                entries: Arc::clone(&entries),
            },
        );
        Ok(entries)
    }

    fn check_limit(value: u32, default: u32, field: &str) -> Result<u32> {
        match value {
            0 => Ok(default),
            v if v > MAX_LIMIT => Err(SummaryError::invalid(
                field,
                format!("{v} is above the limit of {MAX_LIMIT}"),
            )),
            v => Ok(v),
        }
    }

    /// Looks summaries up: with an entity, by exact key, then exact folded
    /// name, then fuzzy name ([`crate::lookup`]), within `kind` or across
    /// every kind; without one, lists `kind` (by weight, then name).
    ///
    /// # Errors
    /// [`SummaryError::InvalidArgument`] naming `kind` (unknown, or missing
    /// for a listing), `entity` (longer than [`MAX_QUERY_CHARS`], or no
    /// letters or digits) or `limit` (above 100);
    /// [`SummaryError::NotFound`] with the closest entities when no name is
    /// close enough; [`SummaryError::Busy`] past the tenant's share of
    /// reads; database errors.
    #[instrument(level = "debug", skip_all, fields(tenant = %caller.principal.tenant, request_id = %caller.request_id))]
    pub async fn get(&self, caller: &Caller, request: GetRequest) -> Result<GetResponse> {
        let _share = self.shares.acquire(&caller.principal.tenant).await?;
        let limit = Self::check_limit(request.limit, DEFAULT_LIMIT, "limit")?;
        let kind = match request.kind.as_deref().map(str::trim) {
            Some("") | None => None,
            Some(k) => Some(allowed(caller, &self.kind(k)?.config.name)?),
        };
        let entity = request
            .entity
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        let Some(entity) = entity else {
            let Some(kind) = kind else {
                return Err(SummaryError::invalid(
                    "kind",
                    format!(
                        "a kind is required to list summaries (no entity given); kinds: {}",
                        self.kind_names().join(", ")
                    ),
                ));
            };
            return self.listing(caller, &kind, limit, request.offset).await;
        };
        if entity.chars().count() > MAX_QUERY_CHARS {
            return Err(SummaryError::invalid(
                "entity",
                format!("longer than {MAX_QUERY_CHARS} characters"),
            ));
        }
        let kinds: Vec<String> = match &kind {
            Some(k) => vec![k.clone()],
            None => self.allowed_kinds(caller),
        };
        let (kinds, tenants) = self.scopes(caller, &kinds);
        let now = Utc::now();
        let client = quarry_db::checkout(&self.pool, "summaries").await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM quarry.summaries \
                     WHERE entity_key = $1 AND {SCOPED} ORDER BY kind LIMIT $4"
                ),
                &[&entity, &kinds, &tenants, &i64::from(limit)],
            )
            .await?;
        if !rows.is_empty() {
            return found(&rows, now, MatchKind::Key, 1.0);
        }
        let folded = fold(entity);
        if folded.is_empty() {
            return Err(SummaryError::invalid(
                "entity",
                "neither a key nor a name: no letters or digits",
            ));
        }
        let rows = client
            .query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM quarry.summaries \
                     WHERE name_folded = $1 AND {SCOPED} \
                     ORDER BY weight DESC NULLS LAST, kind, entity_key LIMIT $4"
                ),
                &[&folded, &kinds, &tenants, &i64::from(limit)],
            )
            .await?;
        drop(client);
        if !rows.is_empty() {
            return found(&rows, now, MatchKind::Name, 1.0);
        }
        self.fuzzy(entity, kind, &kinds, &tenants).await
    }

    /// The best fuzzy name match among `kinds`, each read as the parallel
    /// `tenants` entry.
    async fn fuzzy(
        &self,
        entity: &str,
        kind: Option<String>,
        kinds: &[String],
        tenants: &[String],
    ) -> Result<GetResponse> {
        let mut lists = Vec::with_capacity(kinds.len());
        for (k, t) in kinds.iter().zip(tenants) {
            lists.push((t.clone(), self.names(k, t).await?));
        }
        let query = entity.to_owned();
        let keep = MAX_ALTERNATIVES + 1;
        let ranked: Vec<(NameEntry, Scored)> = tokio::task::spawn_blocking(move || {
            let mut all: Vec<(NameEntry, Scored)> = Vec::new();
            for (_, list) in &lists {
                for s in rank(&query, list, keep) {
                    all.push((list[s.index].clone(), s));
                }
            }
            all.sort_by(|(a, sa), (b, sb)| {
                sb.score
                    .total_cmp(&sa.score)
                    .then_with(|| b.weight.total_cmp(&a.weight))
                    .then_with(|| sb.matched.total_cmp(&sa.matched))
                    .then_with(|| a.name.cmp(&b.name))
                    .then_with(|| a.kind.cmp(&b.kind))
                    .then_with(|| a.key.cmp(&b.key))
            });
            all.truncate(keep);
            all
        })
        .await?;
        let tenant_of = |kind: &str| {
            kinds
                .iter()
                .zip(tenants)
                .find(|(k, _)| *k == kind)
                .map_or("", |(_, t)| t.as_str())
        };
        let candidate = |(e, s): &(NameEntry, Scored)| Candidate {
            kind: e.kind.clone(),
            key: e.key.clone(),
            name: e.name.clone(),
            score: s.score,
        };
        let not_found = || SummaryError::NotFound {
            entity: entity.to_owned(),
            kind: kind.clone(),
            closest: ranked
                .iter()
                .take(MAX_ALTERNATIVES)
                .map(candidate)
                .collect(),
        };
        let Some((best, score)) = ranked.first().filter(|(_, s)| s.score >= MATCH_THRESHOLD) else {
            return Err(not_found());
        };
        let client = quarry_db::checkout(&self.pool, "summaries").await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM quarry.summaries \
                     WHERE kind = $1 AND entity_key = $2 AND tenant = $3"
                ),
                &[&best.kind, &best.key, &tenant_of(&best.kind)],
            )
            .await?;
        if rows.is_empty() {
            // deleted since the names were cached
            return Err(not_found());
        }
        let mut response = found(&rows, Utc::now(), MatchKind::Fuzzy, score.score)?;
        response.alternatives = ranked
            .iter()
            .skip(1)
            .filter(|(_, s)| s.score >= ALTERNATIVE_THRESHOLD)
            .take(MAX_ALTERNATIVES)
            .map(candidate)
            .collect();
        Ok(response)
    }

    async fn listing(
        &self,
        caller: &Caller,
        kind: &str,
        limit: u32,
        offset: u32,
    ) -> Result<GetResponse> {
        let Some(tenant) = self.tenant_of(caller, kind) else {
            return Ok(GetResponse {
                summaries: Vec::new(),
                matched: MatchKind::Listing,
                alternatives: Vec::new(),
                total: 0,
            });
        };
        let client = quarry_db::checkout(&self.pool, "summaries").await?;
        let now = Utc::now();
        let rows = client
            .query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM quarry.summaries WHERE kind = $1 AND tenant = $4 \
                     ORDER BY weight DESC NULLS LAST, entity_name, entity_key LIMIT $2 OFFSET $3"
                ),
                &[&kind, &i64::from(limit), &i64::from(offset), &tenant],
            )
            .await?;
        let total: i64 = client
            .query_one(
                "SELECT count(*) FROM quarry.summaries WHERE kind = $1 AND tenant = $2",
                &[&kind, &tenant],
            )
            .await?
            .try_get(0)?;
        let summaries = rows
            .iter()
            .map(|r| summary_from_row(r, now))
            .collect::<Result<Vec<_>>>()?;
        Ok(GetResponse {
            summaries,
            matched: MatchKind::Listing,
            alternatives: Vec::new(),
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    /// Summaries closest to `query`: by cosine similarity of embeddings when
    /// an embedder is configured (only summaries embedded by the same model
    /// take part), else by PostgreSQL full-text ranking. Ties break by kind
    /// and key.
    ///
    /// # Errors
    /// [`SummaryError::InvalidArgument`] naming `query` (empty or longer
    /// than [`MAX_QUERY_CHARS`]), `k` (above 100) or `kinds[i]` (unknown);
    /// [`SummaryError::Unavailable`] when the embedder fails;
    /// [`SummaryError::Busy`] past the tenant's share of reads; database
    /// errors.
    #[instrument(level = "debug", skip_all, fields(tenant = %caller.principal.tenant, request_id = %caller.request_id))]
    pub async fn search(&self, caller: &Caller, request: SearchRequest) -> Result<SearchResponse> {
        let _share = self.shares.acquire(&caller.principal.tenant).await?;
        let query = request.query.trim();
        if query.is_empty() {
            return Err(SummaryError::invalid("query", "must not be empty"));
        }
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(SummaryError::invalid(
                "query",
                format!("longer than {MAX_QUERY_CHARS} characters"),
            ));
        }
        let k = i64::from(Self::check_limit(request.k, DEFAULT_K, "k")?);
        let mut kinds: Vec<String> = Vec::new();
        for (i, name) in request.kinds.iter().enumerate() {
            let kind = self.kind(name.trim()).map_err(|_| {
                SummaryError::invalid(
                    format!("kinds[{i}]"),
                    format!(
                        "unknown kind {name:?}; kinds: {}",
                        self.kind_names().join(", ")
                    ),
                )
            })?;
            kinds.push(allowed(caller, &kind.config.name)?);
        }
        if kinds.is_empty() {
            kinds = self.allowed_kinds(caller);
        }
        let (kinds, tenants) = self.scopes(caller, &kinds);
        let coverage: (i64, i64);
        let (rows, retrieval) = match &self.embedder {
            Some(embedder) => {
                let mut vectors = embedder
                    .embed(vec![query.to_owned()])
                    .await
                    .map_err(|e| SummaryError::Unavailable(format!("embedder: {e}")))?;
                let Some(vector) = vectors.pop() else {
                    return Err(SummaryError::Unavailable(
                        "embedder returned no vector".into(),
                    ));
                };
                let vector = pgvector::Vector::from(vector);
                let op = format!("OPERATOR({}.<=>)", self.vector_schema);
                let client = quarry_db::checkout(&self.pool, "summaries").await?;
                let counts = client
                    .query_one(
                        &format!(
                            "SELECT count(*), \
                               count(*) FILTER (WHERE embedder = $1 AND embedding IS NOT NULL) \
                             FROM quarry.summaries WHERE {SCOPED}"
                        ),
                        &[&embedder.model_id(), &kinds, &tenants],
                    )
                    .await?;
                coverage = (counts.get::<_, i64>(0), counts.get::<_, i64>(1));
                let rows = client
                    .query(
                        &format!(
                            "SELECT {SUMMARY_COLUMNS}, 1 - (embedding {op} $1) AS score \
                             FROM quarry.summaries \
                             WHERE embedder = $4 AND embedding IS NOT NULL AND {SCOPED} \
                             ORDER BY embedding {op} $1, kind, entity_key LIMIT $5"
                        ),
                        &[&vector, &kinds, &tenants, &embedder.model_id(), &k],
                    )
                    .await?;
                (rows, Retrieval::Vector)
            }
            None => {
                let client = quarry_db::checkout(&self.pool, "summaries").await?;
                let total: i64 = client
                    .query_one(
                        &format!("SELECT count(*) FROM quarry.summaries WHERE {SCOPED_1}"),
                        &[&kinds, &tenants],
                    )
                    .await?
                    .get(0);
                coverage = (total, total);
                let rows = client
                    .query(
                        &format!(
                            "SELECT {SUMMARY_COLUMNS}, score FROM ( \
                               SELECT s.*, ts_rank_cd(to_tsvector('english', s.text), q)::float8 AS score \
                               FROM quarry.summaries s, websearch_to_tsquery('english', $1) AS q \
                               WHERE to_tsvector('english', s.text) @@ q AND {SCOPED} \
                             ) AS ranked ORDER BY score DESC, kind, entity_key LIMIT $4"
                        ),
                        &[&query, &kinds, &tenants, &k],
                    )
                    .await?;
                (rows, Retrieval::FullText)
            }
        };
        let now = Utc::now();
        let summaries = rows
            .iter()
            .map(|r| summary_from_row(r, now))
            .collect::<Result<Vec<_>>>()?;
        Ok(SearchResponse {
            summaries,
            retrieval,
            searched: u64::try_from(coverage.0).unwrap_or(0),
            covered: u64::try_from(coverage.1).unwrap_or(0),
        })
    }

    /// Names of the declared kinds the caller's policy grants
    /// (`summary_kinds`), in declaration order.
    fn allowed_kinds(&self, caller: &Caller) -> Vec<String> {
        self.kinds
            .iter()
            .map(|k| k.config.name.clone())
            .filter(|k| caller.grant.allows_summary_kind(k))
            .collect()
    }

    /// The declared kinds the caller may read, with counts and the oldest
    /// `checked_at`.
    ///
    /// # Errors
    /// [`SummaryError::Busy`] past the tenant's share of reads; database
    /// errors.
    #[instrument(level = "debug", skip_all, fields(tenant = %caller.principal.tenant, request_id = %caller.request_id))]
    pub async fn kinds(&self, caller: &Caller) -> Result<Vec<KindStatus>> {
        let _share = self.shares.acquire(&caller.principal.tenant).await?;
        let names: Vec<String> = self.allowed_kinds(caller);
        let (scoped, tenants) = self.scopes(caller, &names);
        let client = quarry_db::checkout(&self.pool, "summaries").await?;
        let rows = client
            .query(
                &format!(
                    "SELECT kind, count(*), count(*) FILTER (WHERE last_error IS NOT NULL), \
                       min(checked_at) \
                     FROM quarry.summaries WHERE {SCOPED_1} GROUP BY kind"
                ),
                &[&scoped, &tenants],
            )
            .await?;
        let mut stats: HashMap<String, (u64, u64, Option<DateTime<Utc>>)> = HashMap::new();
        for row in &rows {
            let count: i64 = row.try_get(1)?;
            let failed: i64 = row.try_get(2)?;
            stats.insert(
                row.try_get(0)?,
                (
                    u64::try_from(count).unwrap_or(0),
                    u64::try_from(failed).unwrap_or(0),
                    row.try_get(3)?,
                ),
            );
        }
        Ok(self
            .kinds
            .iter()
            .filter(|k| names.contains(&k.config.name))
            .map(|k| {
                let (summaries, failed, oldest) =
                    stats.get(&k.config.name).cloned().unwrap_or((0, 0, None));
                KindStatus {
                    name: k.config.name.clone(),
                    entity: k.config.entity.clone(),
                    description: k.config.description.clone(),
                    summaries,
                    failed,
                    oldest_checked_at: oldest,
                }
            })
            .collect())
    }

    /// The latest recorded build (by any replica), if any, with only the
    /// failures the caller may see ([`BuildReport::visible_to`]).
    ///
    /// # Errors
    /// Database errors.
    #[instrument(level = "debug", skip_all, fields(tenant = %caller.principal.tenant, request_id = %caller.request_id))]
    pub async fn last_build(&self, caller: &Caller) -> Result<Option<BuildReport>> {
        let client = quarry_db::checkout(&self.pool, "summaries").await?;
        Ok(store::last_build(&**client)
            .await?
            .map(|r| r.visible_to(&caller.principal.tenant)))
    }

    /// A build requested by `caller` (the BuildSummaries RPC): [`Self::build`]
    /// with the caller on its span. The caller's right to build is checked
    /// by the adapter (scope `summaries:build`); the build itself does not
    /// depend on who asked (shared kinds serve every caller, tenant-scoped
    /// ones are built for every tenant their query lists), but the report
    /// returned lists only the failures the caller may see
    /// ([`BuildReport::visible_to`]). Progress events count every tenant's
    /// entities under the kind's name.
    ///
    /// # Errors
    /// As [`Self::build`].
    #[instrument(level = "debug", skip_all, fields(tenant = %caller.principal.tenant, request_id = %caller.request_id))]
    pub async fn refresh(
        &self,
        caller: &Caller,
        options: BuildOptions,
        progress: &(dyn Fn(BuildProgressEvent) + Send + Sync),
    ) -> Result<BuildReport> {
        tracing::info!(trigger = %options.trigger, "summary build requested");
        let report = self.build(options, progress).await?;
        Ok(report.visible_to(&caller.principal.tenant))
    }

    /// Spawns the build schedule ([`Self::run_schedule`] without a task
    /// handle).
    pub fn spawn_scheduler(
        self: Arc<Self>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run_schedule(cancel, None).await })
    }

    /// The build schedule: a build at once when `build_on_start` (trigger
    /// `startup`), then one every `refresh_interval_secs` (trigger
    /// `schedule`; 0 means never). A build that fails (PostgreSQL restarted
    /// under it, say) is retried after a delay of bounded exponential
    /// backoff with jitter ([`quarry_db::supervisor::restart_delays`]) until
    /// one succeeds, rather than left until the next interval (a retry that
    /// comes back with failed entities, or any build whose failures include
    /// the database being unreachable, is retried too, at most
    /// [`PARTIAL_RETRIES`] times, see [`retry_partial`]); each failure
    /// is logged as a warning and reported to `task` (the schedule is down
    /// until a build succeeds). A build another replica is running is
    /// skipped quietly. Cancelling `cancel` stops promptly, abandoning a
    /// running build (its lock is released, see [`crate::builder`]).
    pub async fn run_schedule(
        self: Arc<Self>,
        cancel: CancellationToken,
        task: Option<quarry_db::supervisor::TaskHandle>,
    ) {
        if self.config.build_on_start {
            self.scheduled_build("startup", &cancel, task.as_ref())
                .await;
        }
        let secs = self.config.refresh_interval_secs;
        if secs == 0 {
            return;
        }
        let period = Duration::from_secs(secs);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => self.scheduled_build("schedule", &cancel, task.as_ref()).await,
            }
        }
    }

    /// Whether a build by any replica started within [`RECENT_SHARE`] of
    /// the refresh interval, so a scheduled or start-up build is not needed
    /// (`false` without a schedule, or when the database cannot say: the
    /// build then runs, and fails or not on its own).
    async fn built_recently(&self) -> bool {
        let secs = self.config.refresh_interval_secs;
        if secs == 0 {
            return false;
        }
        #[allow(clippy::cast_precision_loss)] // seconds of an interval: far below 2^52
        let window = secs as f64 * RECENT_SHARE;
        let recent = async {
            let client = quarry_db::checkout(&self.pool, "summaries").await?;
            let row = client
                .query_one(
                    "SELECT coalesce(max(started_at) > now() - make_interval(secs => $1), false) \
                     FROM quarry.summary_builds",
                    &[&window],
                )
                .await?;
            Ok::<bool, SummaryError>(row.get(0))
        };
        match recent.await {
            Ok(recent) => recent,
            Err(error) => {
                tracing::debug!(%error, "cannot read the last summary build; building");
                false
            }
        }
    }

    /// One scheduled build, retried with backoff until it succeeds, another
    /// replica runs one, or `cancel`. Skipped when a replica's build started
    /// within [`RECENT_SHARE`] of the interval ([`Self::built_recently`]):
    /// replicas whose timers do not line up build once per interval between
    /// them, not once each, and a replica started after another's build does
    /// not repeat it.
    async fn scheduled_build(
        &self,
        trigger: &str,
        cancel: &CancellationToken,
        task: Option<&quarry_db::supervisor::TaskHandle>,
    ) {
        if self.built_recently().await {
            tracing::debug!(
                trigger,
                "summary build skipped: a replica built within the interval"
            );
            if let Some(task) = task {
                task.running();
            }
            return;
        }
        let mut delays = quarry_db::supervisor::restart_delays();
        let mut attempt = 1u32;
        let mut partial_retries = 0u32;
        loop {
            let build = self.build(BuildOptions::all(trigger), &|_| {});
            let result = tokio::select! {
                () = cancel.cancelled() => return,
                result = build => result,
            };
            let error = match result {
                // A retry after an interrupted build that still has failures
                // most likely met what the outage left behind (pooled
                // connections from before a PostgreSQL restart, handed out
                // for a moment after it), and a build whose failures include
                // the database being unreachable met a blip: tried again, a
                // few times.
                Ok(report)
                    if retry_partial(
                        report.failed,
                        report.failures.iter().any(|f| f.unavailable),
                        attempt,
                        partial_retries,
                    ) =>
                {
                    partial_retries += 1;
                    SummaryError::Unavailable(format!(
                        "the retry of an interrupted build had {} failures",
                        report.failed
                    ))
                }
                Ok(_) => {
                    if let Some(task) = task {
                        task.running();
                    }
                    return;
                }
                Err(SummaryError::BuildRunning) => {
                    tracing::debug!(trigger, "summary build skipped: another build is running");
                    return;
                }
                Err(e) => e,
            };
            let delay = delays
                .next()
                .unwrap_or(quarry_db::supervisor::MAX_RESTART_DELAY);
            tracing::warn!(
                trigger, attempt, error = %error, retry_in_ms = delay.as_millis() as u64,
                "summary build failed; retrying"
            );
            if let Some(task) = task {
                task.failed(&error);
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            attempt += 1;
        }
    }
}

/// How many times a retry of an interrupted scheduled build that comes back
/// with failed entities is retried again rather than accepted as a partial
/// build (see [`SummaryTool::run_schedule`]); past them a kind that always
/// fails no longer keeps the schedule rebuilding.
pub const PARTIAL_RETRIES: u32 = 3;

/// Whether attempt `attempt` of a scheduled build, which came back with
/// `failed` entities (`unavailable`: some of them because the database was
/// unreachable, [`crate::model::BuildFailure::unavailable`]), is retried:
/// a retry (an earlier attempt failed), or any attempt with such a
/// failure, at most [`PARTIAL_RETRIES`] times, counting only partial
/// results (`partial_retries` so far). A first attempt whose failures are
/// all the definition's or the data's is accepted: retrying cannot mend it.
/// Attempts that failed outright while PostgreSQL was away do not count: a
/// long restart used to spend the allowance before the database was back,
/// and the first partial build after it, on connections pooled before the
/// restart, was accepted.
fn retry_partial(failed: u64, unavailable: bool, attempt: u32, partial_retries: u32) -> bool {
    failed > 0 && (attempt > 1 || unavailable) && partial_retries < PARTIAL_RETRIES
}

/// The share of `refresh_interval_secs` within which a build by any replica
/// makes a scheduled one unneeded: less than the whole interval, so the
/// replica that built last time (its timer one interval on, the build
/// having started a moment after its tick) is not skipped itself.
pub const RECENT_SHARE: f64 = 0.9;

/// A key or name match's response: every row, `score` set.
fn found(
    rows: &[tokio_postgres::Row],
    now: DateTime<Utc>,
    matched: MatchKind,
    score: f64,
) -> Result<GetResponse> {
    let summaries = rows
        .iter()
        .map(|r| {
            summary_from_row(r, now).map(|mut s| {
                s.score = score;
                s
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(GetResponse {
        total: summaries.len() as u64,
        summaries,
        matched,
        alternatives: Vec::new(),
    })
}

/// `kind` when the caller's policy grants it.
fn allowed(caller: &Caller, kind: &str) -> Result<String> {
    if caller.grant.allows_summary_kind(kind) {
        Ok(kind.to_owned())
    } else {
        Err(SummaryError::Forbidden(kind.to_owned()))
    }
}

#[cfg(test)]
mod schedule_tests {
    use super::*;

    #[test]
    fn a_partial_retry_is_retried_only_after_an_interruption_and_a_few_times() {
        // the first attempt's partial build, its failures the definition's
        // or the data's, is accepted: nothing interrupted it
        assert!(!retry_partial(2, false, 1, 0));
        // a retry without failures is accepted, of course
        assert!(!retry_partial(0, false, 2, 0));
        assert!(!retry_partial(0, true, 1, 0));
        // a retry with failures is retried, PARTIAL_RETRIES times
        assert!(retry_partial(2, false, 2, 0));
        assert!(retry_partial(2, false, 4, PARTIAL_RETRIES - 1));
        assert!(!retry_partial(2, false, 5, PARTIAL_RETRIES));
        // attempts that failed outright (PostgreSQL away) do not count: after
        // ten of them, the first partial build is still retried
        assert!(retry_partial(1, false, 11, 0));
    }

    #[test]
    fn a_first_build_that_met_an_unreachable_database_is_retried_a_few_times() {
        // a blip without a restart: the first attempt's failures include the
        // database being unreachable, so it is retried
        assert!(retry_partial(3, true, 1, 0));
        assert!(retry_partial(3, true, 3, PARTIAL_RETRIES - 1));
        // and no more than the allowance: a database that keeps failing
        // entities leaves the build partial until the next interval
        assert!(!retry_partial(3, true, 4, PARTIAL_RETRIES));
    }
}
