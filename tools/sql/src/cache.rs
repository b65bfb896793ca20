//! The result cache: rows of executed statements, served again while the
//! tables they read have not changed (issue 18 item 2).
//!
//! # What a result is keyed by
//! [`ResultKey`]: the source, the caller's tenant, subject and roles, the
//! policy version and whether the grant is unrestricted, the governed
//! session (the row-level-security settings `quarry.tenant`,
//! `quarry.subject`, `quarry.roles`, the database role, the hash salt and
//! the PII columns), the `search_path`, and the normalised SQL — the
//! validated (and governed) statement printed back by sqlparser with its
//! row limit, so whitespace and keyword case do not matter. Two callers
//! share an entry only when every one of these is equal: one tenant or
//! principal never sees another's rows.
//!
//! # When a result may be reused
//! Only when every relation the statement reads is an ordinary table the
//! cache hears about ([`DataVersions`]), and every function it calls is
//! immutable in `pg_catalog` (no `now()`, `random()`, `current_date`,
//! `'now'::date`). Anything else — a view, a partitioned or inherited
//! table, a table function, a table without the change trigger — is run
//! every time (default deny). Each entry holds the data version of each
//! table read, taken *before* the statement ran; a lookup serves it only
//! when every version is still current, so a change committed while the
//! statement ran makes the entry unusable as soon as its notice arrives.
//!
//! # Change notices
//! [`DataVersions`] keeps one `LISTEN quarry_table_changed` connection per
//! source database. A statement-level trigger `quarry_cache_changed` on
//! each table (installed here on connect, calling
//! `quarry.cache_table_changed()` from migration V14) sends the table's OID
//! when a writing transaction commits. While that connection is down the
//! cache is bypassed, and entries from before the drop are never served
//! again (a new generation starts when it is back). Tables recreated under
//! the same name, or new tables, are picked up by the rescan every
//! `rescan` interval. A TTL bounds every entry as a safety net (e.g. for a
//! row-level-security policy that reads the clock).

use std::{
    collections::{HashMap, HashSet},
    ops::ControlFlow,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::StreamExt as _;
use quarry_auth::Caller;
use serde::Deserialize;
use sqlparser::ast::{Expr, ObjectName, ObjectNamePart, Query, Statement, Visit, Visitor};
use tokio_postgres::{AsyncMessage, NoTls};
use tracing::{debug, info, warn};

use crate::{QueryResult, ValidatedQuery};

/// The channel `quarry.cache_table_changed()` (migration V14) notifies on.
pub const CHANNEL: &str = "quarry_table_changed";
/// `application_name` of the listener's connection.
pub const LISTENER_NAME: &str = "quarry result cache";
/// Name of the statement-level trigger installed on each covered table.
pub const TRIGGER: &str = "quarry_cache_changed";

/// `[cache]`: the result cache and the model-response cache.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether results (and deterministic model responses) are cached.
    /// Default false.
    pub enabled: bool,
    /// Bound of the result cache, in bytes of cells (plus SQL text and a
    /// fixed 256 bytes per entry). Default 64 MiB.
    pub max_bytes: u64,
    /// Bound of the model-response cache, in bytes of replies. Default
    /// 16 MiB.
    pub model_max_bytes: u64,
    /// Longest life of an entry, in seconds: a safety net behind the change
    /// notices. Default 300.
    pub ttl_secs: u64,
    /// How often the tables of each source are rescanned for new, dropped
    /// or recreated tables (and triggers installed on new ones), in
    /// seconds. Default 10.
    pub rescan_secs: u64,
    /// Install the change trigger on tables of the source that lack it
    /// (needs the table's owner). Off: only tables that already have it are
    /// cached. Default true.
    pub install_triggers: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_bytes: 64 << 20,
            model_max_bytes: 16 << 20,
            ttl_secs: 300,
            rescan_secs: 10,
            install_triggers: true,
        }
    }
}

/// Whether a result came from the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheStatus {
    /// The cache was not consulted: off, or the statement is not cacheable,
    /// or change notices are not being received.
    #[default]
    Bypassed,
    /// Served from the cache.
    Hit,
    /// Looked up, not found (or out of date); executed and stored.
    Miss,
}

/// The governed session's part of the key: every setting row-level
/// security or the masks read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    tenant: String,
    subject: String,
    roles: Vec<String>,
    db_role: Option<String>,
    hash_salt: String,
    pii_columns: Vec<String>,
}

/// Everything a cached result depends on besides the data; see the module
/// docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResultKey {
    source: String,
    tenant: String,
    subject: String,
    roles: Vec<String>,
    policy_version: u64,
    unrestricted: bool,
    session: Option<SessionKey>,
    search_path: Option<Vec<String>>,
    sql: String,
}

impl ResultKey {
    /// The key of `query` run for `caller` on `source` with the row cap
    /// `max_rows`.
    pub fn new(source: &str, caller: &Caller, query: &ValidatedQuery, max_rows: u64) -> Self {
        let mut roles = caller.principal.roles.clone();
        roles.sort();
        Self {
            source: source.to_owned(),
            tenant: caller.principal.tenant.clone(),
            subject: caller.principal.subject.clone(),
            roles,
            policy_version: caller.grant.policy_version(),
            unrestricted: caller.grant.is_unrestricted(),
            session: query.session().map(|s| SessionKey {
                tenant: s.tenant.clone(),
                subject: s.subject.clone(),
                roles: s.roles.clone(),
                db_role: s.db_role.clone(),
                hash_salt: s.hash_salt.clone(),
                pii_columns: s.pii_columns.clone(),
            }),
            search_path: query.allowed_schemas().map(<[String]>::to_vec),
            sql: query.rewritten_sql(max_rows),
        }
    }
}

struct Entry {
    /// The [`DataVersions`] generation the versions belong to.
    generation: u64,
    /// Version of each table read, in [`Lookup::tables`] order.
    versions: Vec<u64>,
    result: QueryResult,
}

/// The store of results, shared by every source, bounded by bytes.
#[derive(Clone)]
pub struct ResultStore {
    cache: moka::sync::Cache<Arc<ResultKey>, Arc<Entry>>,
}

impl std::fmt::Debug for ResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStore")
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl ResultStore {
    /// A store of at most `max_bytes` (cells, SQL text and 256 bytes per
    /// entry), each entry kept at most `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &Arc<ResultKey>, entry: &Arc<Entry>| {
                let bytes = entry.result.bytes + key.sql.len() + entry.result.sql.len() + 256;
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .time_to_live(ttl)
            .eviction_listener(|_key, _entry, cause| {
                let cause = match cause {
                    moka::notification::RemovalCause::Expired => "expired",
                    moka::notification::RemovalCause::Explicit => "explicit",
                    moka::notification::RemovalCause::Replaced => "replaced",
                    moka::notification::RemovalCause::Size => "size",
                };
                quarry_metrics::cache_eviction("result", cause);
            })
            .build();
        Self { cache }
    }

    /// Drops every entry (e.g. after a policy reload; entries of an older
    /// policy are never served anyway, since the version is in the key).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }
}

/// A prepared lookup: the key, the tables read and their versions when the
/// lookup was made.
#[derive(Debug)]
pub struct Lookup {
    key: Arc<ResultKey>,
    tables: Vec<(String, String)>,
    versions: Vec<u64>,
    generation: u64,
}

/// The result cache of one source: the shared [`ResultStore`] and the data
/// versions of the source's database.
#[derive(Debug, Clone)]
pub struct SourceCache {
    store: ResultStore,
    versions: Arc<DataVersions>,
    /// The listener task [`SourceCache::start`] spawned; stopped with the
    /// last clone.
    _listener: Option<Arc<AbortOnDrop>>,
}

impl SourceCache {
    /// The cache of a source whose change notices `versions` receives
    /// (the caller runs [`DataVersions::run`]).
    pub fn new(store: ResultStore, versions: Arc<DataVersions>) -> Self {
        Self {
            store,
            versions,
            _listener: None,
        }
    }

    /// The cache of the source of `schemas` in the database at `url`, with
    /// its listener spawned on the current Tokio runtime (stopped when the
    /// last clone of this cache is dropped).
    pub fn start(store: ResultStore, url: &str, schemas: &[String], config: &CacheConfig) -> Self {
        let versions = DataVersions::new(url, schemas, config);
        let listener = tokio::spawn(Arc::clone(&versions).run());
        Self {
            store,
            versions,
            _listener: Some(Arc::new(AbortOnDrop(listener))),
        }
    }

    /// The data versions this cache checks.
    pub fn versions(&self) -> &Arc<DataVersions> {
        &self.versions
    }

    /// The lookup for `query`, or `None` when it may not be cached (not
    /// cacheable, or change notices not being received).
    pub fn prepare(
        &self,
        source: &str,
        caller: &Caller,
        query: &ValidatedQuery,
        max_rows: u64,
    ) -> Option<Lookup> {
        let reads = Reads::of(query.statement())?;
        let state = self.versions.read();
        if !state.live {
            return None;
        }
        for function in &reads.functions {
            if !state.immutable.contains(function) {
                debug!(%function, "not cached: function not immutable");
                return None;
            }
        }
        let search_path = query.allowed_schemas();
        let mut tables = Vec::with_capacity(reads.relations.len());
        let mut versions = Vec::with_capacity(reads.relations.len());
        for (schema, name) in &reads.relations {
            let resolved = match schema {
                Some(schema) => (schema.clone(), name.clone()),
                None => {
                    let is_cte = reads.ctes.contains(name);
                    match state.resolve(search_path, name) {
                        Resolved::Relation(schema) if !is_cte => (schema, name.clone()),
                        Resolved::Nothing if is_cte => continue,
                        Resolved::Relation(_) | Resolved::Nothing | Resolved::Unknown => {
                            return None;
                        }
                    }
                }
            };
            let Some(version) = state.version(&resolved) else {
                debug!(table = %format!("{}.{}", resolved.0, resolved.1), "not cached: table not covered");
                return None;
            };
            if !tables.contains(&resolved) {
                tables.push(resolved);
                versions.push(version);
            }
        }
        Some(Lookup {
            key: Arc::new(ResultKey::new(source, caller, query, max_rows)),
            tables,
            versions,
            generation: state.generation,
        })
    }

    /// The cached result for `lookup`, if its data versions are current.
    pub fn get(&self, lookup: &Lookup) -> Option<QueryResult> {
        let entry = self.store.cache.get(&lookup.key)?;
        let current = entry.generation == lookup.generation && entry.versions == lookup.versions;
        if current && self.versions.read().live {
            Some(entry.result.clone())
        } else {
            self.store.cache.invalidate(&lookup.key);
            None
        }
    }

    /// Stores `result` for `lookup` unless a change notice or a lost
    /// connection arrived since [`SourceCache::prepare`] (then the result
    /// may be newer or older than the versions it would be stored with).
    pub fn insert(&self, lookup: Lookup, result: &QueryResult) {
        {
            let state = self.versions.read();
            if !state.live || state.generation != lookup.generation {
                return;
            }
            for (table, version) in lookup.tables.iter().zip(&lookup.versions) {
                if state.version(table) != Some(*version) {
                    return;
                }
            }
        }
        self.store.cache.insert(
            lookup.key,
            Arc::new(Entry {
                generation: lookup.generation,
                versions: lookup.versions,
                result: result.clone(),
            }),
        );
    }
}

/// What a statement reads: relations (schema when qualified, name),
/// functions called (lower-case names), CTE names.
#[derive(Debug, Default)]
struct Reads {
    relations: Vec<(Option<String>, String)>,
    functions: HashSet<String>,
    ctes: HashSet<String>,
}

/// Values whose meaning is the clock when cast to a date or time
/// (PostgreSQL docs §8.5.1.4 "Special Values").
const CLOCK_LITERALS: [&str; 4] = ["now", "today", "tomorrow", "yesterday"];

/// SQL value functions (PostgreSQL docs §9.9.5, §9.27): the clock and the
/// session, however sqlparser parses them (call or bare identifier).
const VALUE_FUNCTIONS: [&str; 11] = [
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_user",
    "session_user",
    "user",
    "current_role",
    "current_catalog",
    "current_schema",
];

fn ident_name(part: &ObjectNamePart) -> Option<String> {
    match part {
        ObjectNamePart::Identifier(ident) => Some(match ident.quote_style {
            Some(_) => ident.value.clone(),
            None => ident.value.to_lowercase(),
        }),
        ObjectNamePart::Function(_) => None,
    }
}

impl Reads {
    /// `None` when the statement reads something no version describes.
    fn of(statement: &Statement) -> Option<Self> {
        let mut visitor = ReadsVisitor::default();
        if visitor_failed(statement.visit(&mut visitor)) {
            return None;
        }
        Some(visitor.reads)
    }
}

fn visitor_failed(flow: ControlFlow<()>) -> bool {
    flow.is_break()
}

#[derive(Default)]
struct ReadsVisitor {
    reads: Reads,
}

impl Visitor for ReadsVisitor {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let name = match cte.alias.name.quote_style {
                    Some(_) => cte.alias.name.value.clone(),
                    None => cte.alias.name.value.to_lowercase(),
                };
                self.reads.ctes.insert(name);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let parts: Option<Vec<String>> = relation.0.iter().map(ident_name).collect();
        match parts.as_deref() {
            Some([name]) => self.reads.relations.push((None, name.clone())),
            Some([schema, name]) => self
                .reads
                .relations
                .push((Some(schema.clone()), name.clone())),
            // a catalog-qualified name or a computed part: not described
            Some(_) | None => return ControlFlow::Break(()),
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        // a foreign AST: only the few kinds that can read the clock or call
        // a function matter here; every other kind is walked into
        #[allow(clippy::wildcard_enum_match_arm)]
        match expr {
            Expr::Function(function) => {
                let parts: Option<Vec<String>> = function.name.0.iter().map(ident_name).collect();
                match parts.as_deref() {
                    Some([name]) if VALUE_FUNCTIONS.contains(&name.as_str()) => {
                        return ControlFlow::Break(());
                    }
                    Some([name]) => {
                        self.reads.functions.insert(name.clone());
                    }
                    Some([schema, name]) if schema == "pg_catalog" => {
                        self.reads.functions.insert(name.clone());
                    }
                    Some(_) | None => return ControlFlow::Break(()),
                }
            }
            Expr::Identifier(ident)
                if ident.quote_style.is_none()
                    && VALUE_FUNCTIONS.contains(&ident.value.to_lowercase().as_str()) =>
            {
                return ControlFlow::Break(());
            }
            Expr::Value(value) if is_clock_literal(&value.value) => {
                return ControlFlow::Break(());
            }
            Expr::TypedString(typed) if is_clock_literal(&typed.value.value) => {
                return ControlFlow::Break(());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn is_clock_literal(value: &sqlparser::ast::Value) -> bool {
    let text = value.to_string();
    let text = text.trim_matches(|c| c == '\'' || c == '$').trim();
    CLOCK_LITERALS
        .iter()
        .any(|literal| text.eq_ignore_ascii_case(literal))
}

/// How an unqualified name resolves on a `search_path`.
enum Resolved {
    /// To a relation in this schema.
    Relation(String),
    /// To no relation.
    Nothing,
    /// Cannot tell (no search path, or a name `pg_catalog` also has).
    Unknown,
}

/// A relation of the source: its OID and whether the change trigger covers
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Relation {
    oid: u32,
    covered: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Change notices are being received.
    live: bool,
    /// Why notices stopped, until they resume.
    failure: Option<String>,
    /// Bumped whenever notices stop or resume: entries of another
    /// generation are never served.
    generation: u64,
    /// Every relation of the scanned schemas by (schema, name).
    relations: HashMap<(String, String), Relation>,
    /// Names of relations in `pg_catalog` (searched first, implicitly).
    catalog_names: HashSet<String>,
    /// Covered tables by OID.
    by_oid: HashMap<u32, (String, String)>,
    /// Data version per table name; survives rescans.
    versions: HashMap<(String, String), u64>,
    /// `pg_catalog` functions every overload of which is immutable.
    immutable: HashSet<String>,
}

impl State {
    fn resolve(&self, search_path: Option<&[String]>, name: &str) -> Resolved {
        let Some(search_path) = search_path else {
            return Resolved::Unknown;
        };
        if self.catalog_names.contains(name) {
            return Resolved::Unknown;
        }
        for schema in search_path {
            if self
                .relations
                .contains_key(&(schema.clone(), name.to_owned()))
            {
                return Resolved::Relation(schema.clone());
            }
        }
        Resolved::Nothing
    }

    /// The version of a covered table; `None` for anything else.
    fn version(&self, table: &(String, String)) -> Option<u64> {
        match self.relations.get(table) {
            Some(relation) if relation.covered => {
                Some(self.versions.get(table).copied().unwrap_or(0))
            }
            Some(_) | None => None,
        }
    }

    fn bump(&mut self, table: &(String, String)) {
        *self.versions.entry(table.clone()).or_insert(0) += 1;
    }

    /// Takes a new scan: a table whose OID or coverage changed gets a new
    /// version.
    fn apply(&mut self, scan: Scan) {
        let changed: Vec<(String, String)> = scan
            .relations
            .iter()
            .filter(|(name, relation)| self.relations.get(*name) != Some(*relation))
            .map(|(name, _)| name.clone())
            .chain(
                self.relations
                    .keys()
                    .filter(|name| !scan.relations.contains_key(*name))
                    .cloned(),
            )
            .collect();
        for name in &changed {
            self.bump(name);
        }
        self.by_oid = scan
            .relations
            .iter()
            .filter(|(_, relation)| relation.covered)
            .map(|(name, relation)| (relation.oid, name.clone()))
            .collect();
        self.relations = scan.relations;
        self.catalog_names = scan.catalog_names;
        self.immutable = scan.immutable;
    }
}

/// What one scan of the source's catalog found.
struct Scan {
    relations: HashMap<(String, String), Relation>,
    catalog_names: HashSet<String>,
    immutable: HashSet<String>,
}

/// The data version of each table of one source database, kept current by
/// change notices; see the module docs.
#[derive(Debug)]
pub struct DataVersions {
    state: RwLock<State>,
    url: String,
    schemas: Vec<String>,
    config: CacheConfig,
    /// Woken when the state changes (tests wait on it).
    changed: tokio::sync::Notify,
    /// Where the listener reports its state (health and metrics), once
    /// [`DataVersions::report_to`] has been called.
    reporter: std::sync::OnceLock<quarry_db::supervisor::TaskHandle>,
}

impl DataVersions {
    /// Versions of the tables in `schemas` of the database at `url`; not
    /// live until [`DataVersions::run`] has connected.
    pub fn new(url: &str, schemas: &[String], config: &CacheConfig) -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::new(State::default()),
            url: url.to_owned(),
            schemas: schemas.to_vec(),
            config: config.clone(),
            changed: tokio::sync::Notify::new(),
            reporter: std::sync::OnceLock::new(),
        })
    }

    /// Reports the listener's state through `handle` from now on: a lost
    /// or refused connection as a failure (the task restarting, with the
    /// error), receiving notices again as running. The current state is
    /// reported at once. Only the first handle is kept.
    pub fn report_to(&self, handle: quarry_db::supervisor::TaskHandle) {
        let failure = self.read().failure.clone();
        if self.reporter.set(handle).is_ok()
            && let (Some(error), Some(handle)) = (failure, self.reporter.get())
        {
            handle.failed(&error);
        }
    }

    /// The listener lost its connection or could not open one.
    fn failed(&self, error: String) {
        if let Some(handle) = self.reporter.get() {
            handle.failed(&error);
        }
        self.write().failure = Some(error);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        match self.state.read() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        match self.state.write() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether change notices are being received (the cache is in use).
    pub fn is_live(&self) -> bool {
        self.read().live
    }

    /// The version of `schema.table`, `None` when the table is not covered.
    pub fn version_of(&self, schema: &str, table: &str) -> Option<u64> {
        self.read().version(&(schema.to_owned(), table.to_owned()))
    }

    /// Waits until `ready` holds for this object, at most `timeout`;
    /// returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, ready: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if ready(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return ready(self);
            }
        }
    }

    fn set_dark(&self) {
        let mut state = self.write();
        if state.live {
            state.live = false;
            state.generation += 1;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Keeps the versions current until dropped: connects, `LISTEN`s,
    /// scans (installing triggers), serves notices and rescans; after a
    /// lost connection the cache is bypassed and the connection retried
    /// with bounded exponential backoff (100 ms to 5 s). Never returns.
    pub async fn run(self: Arc<Self>) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.listen().await {
                Ok(()) => {
                    delay = Duration::from_millis(100);
                    self.failed("the listener's connection closed".to_owned());
                }
                Err(error) => {
                    warn!(%error, "result cache: change notices lost; bypassing the cache");
                    self.failed(quarry_db::PgError(error).to_string());
                }
            }
            self.set_dark();
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection's life: returns when it closes.
    async fn listen(&self) -> Result<(), tokio_postgres::Error> {
        let mut pg: tokio_postgres::Config = self.url.parse()?;
        pg.application_name(LISTENER_NAME);
        let (client, mut connection) = pg.connect(NoTls).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                        if tx.send(Some(n.payload().to_owned())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        warn!(error = %quarry_db::PgError(error), "result cache: listener connection failed");
                        break;
                    }
                }
            }
            let _closed = tx.send(None);
        });
        let _driver = AbortOnDrop(driver);
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        let scan = self.scan(&client).await?;
        {
            let mut state = self.write();
            state.apply(scan);
            state.generation += 1;
            state.live = true;
            state.failure = None;
            // reported before anyone can see the state live
            if let Some(handle) = self.reporter.get() {
                handle.running();
            }
            let covered = state.by_oid.len();
            drop(state);
            info!(
                covered_tables = covered,
                "result cache: receiving change notices"
            );
        }
        self.changed.notify_waiters();
        let mut rescan = tokio::time::interval(Duration::from_secs(self.config.rescan_secs.max(1)));
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescan.tick().await;
        loop {
            tokio::select! {
                notice = rx.recv() => {
                    let Some(Some(payload)) = notice else {
                        return Ok(());
                    };
                    let mut state = self.write();
                    if let Ok(oid) = payload.parse::<u32>()
                        && let Some(table) = state.by_oid.get(&oid).cloned()
                    {
                        state.bump(&table);
                    }
                    drop(state);
                    self.changed.notify_waiters();
                }
                _ = rescan.tick() => {
                    let scan = self.scan(&client).await?;
                    self.write().apply(scan);
                    self.changed.notify_waiters();
                }
            }
        }
    }

    /// Reads the relations of the schemas (installing the trigger where it
    /// is missing and allowed), `pg_catalog`'s relation names and its
    /// immutable functions.
    async fn scan(&self, client: &tokio_postgres::Client) -> Result<Scan, tokio_postgres::Error> {
        let has_function = client
            .query_one(
                "SELECT to_regprocedure('quarry.cache_table_changed()') IS NOT NULL",
                &[],
            )
            .await?
            .get::<_, bool>(0);
        if !has_function {
            warn!(
                "result cache: quarry.cache_table_changed() is missing in the source database; no table is cached"
            );
        }
        let relations_sql = "SELECT n.nspname, c.relname, c.oid, \
               c.relkind = 'r' AND NOT c.relispartition AND NOT c.relhassubclass \
                 AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid) AS plain, \
               EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid \
                 AND t.tgname = $2 AND t.tgenabled IN ('O', 'A') \
                 AND t.tgfoid = to_regprocedure('quarry.cache_table_changed()')) AS covered \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'v', 'm', 'p', 'f')";
        let mut rows = client
            .query(relations_sql, &[&self.schemas, &TRIGGER])
            .await?;
        if has_function && self.config.install_triggers {
            let mut installed = 0;
            for row in &rows {
                let (plain, covered): (bool, bool) = (row.get(3), row.get(4));
                if !plain || covered {
                    continue;
                }
                let table = format!(
                    "{}.{}",
                    quarry_db::quote_ident(row.get(0)),
                    quarry_db::quote_ident(row.get(1))
                );
                let ddl = format!(
                    "CREATE OR REPLACE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE \
                     ON {table} FOR EACH STATEMENT EXECUTE FUNCTION quarry.cache_table_changed()"
                );
                match client.batch_execute(&ddl).await {
                    Ok(()) => installed += 1,
                    Err(error) => {
                        warn!(%table, error = %quarry_db::PgError(error), "result cache: cannot install the change trigger; table not cached");
                    }
                }
            }
            if installed > 0 {
                info!(installed, "result cache: change triggers installed");
                rows = client
                    .query(relations_sql, &[&self.schemas, &TRIGGER])
                    .await?;
            }
        }
        let relations = rows
            .iter()
            .map(|row| {
                let (plain, covered): (bool, bool) = (row.get(3), row.get(4));
                (
                    (row.get::<_, String>(0), row.get::<_, String>(1)),
                    Relation {
                        oid: row.get(2),
                        covered: plain && covered,
                    },
                )
            })
            .collect();
        let catalog_names = client
            .query(
                "SELECT relname FROM pg_class WHERE relnamespace = 'pg_catalog'::regnamespace",
                &[],
            )
            .await?
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
        let immutable = client
            .query(
                "SELECT proname::text FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace \
                 GROUP BY proname HAVING bool_and(provolatile = 'i')",
                &[],
            )
            .await?
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
        Ok(Scan {
            relations,
            catalog_names,
            immutable,
        })
    }
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests;
