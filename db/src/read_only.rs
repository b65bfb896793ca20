//! The guarded read-only transaction every query on source data runs in.

use deadpool_postgres::{ClientWrapper, Transaction};
use tokio_postgres::IsolationLevel;

use crate::ident::{quote_ident, quote_literal};

/// The settings of a guarded read-only transaction. [`ReadOnly::begin`]
/// starts `READ ONLY` (PostgreSQL itself refuses any write) at `isolation`,
/// then applies [`ReadOnly::settings`] with `SET LOCAL`, so every setting
/// ends with the transaction:
/// - `statement_timeout` in milliseconds (as given: 0 disables it, so
///   callers that must always time out pass at least 1);
/// - `standard_conforming_strings = on`, so backslashes in `'…'` are
///   ordinary characters, as sqlparser reads them (PostgreSQL 16 docs
///   §4.1.2.1; a database or role could set it off);
/// - with `search_path`, `pg_catalog`, the schemas, then `pg_temp` —
///   `pg_catalog` first, so an allowlisted built-in name always resolves to
///   the built-in, never to a same-named function in a data schema;
/// - with `role`, `SET LOCAL ROLE` (the pool's login role must be a member);
/// - with a [`Session`], `quarry.tenant`, `quarry.subject` and `quarry.roles`
///   (a PostgreSQL text-array literal such as `{analyst,"a b"}`) set with
///   `set_config(…, true)`, the transaction-local form of `SET LOCAL`, for
///   row-level security policies to read with `current_setting` (PostgreSQL
///   16 docs §5.8 "Row Security Policies" and §9.27.1). The values are
///   quoted as literals: a tenant or subject is data, never SQL;
/// - with [`ReadOnly::limits`], `work_mem` (memory per sort or hash before
///   it spills to disk, PostgreSQL 16 docs §20.4.1) and `temp_file_limit`
///   (disk for temporary files per process, §20.4.2; a query past it fails
///   with SQLSTATE `53400`), both in kB and set before `ROLE`, so the login
///   role's privilege to set `temp_file_limit` applies (superuser, or
///   `GRANT SET ON PARAMETER temp_file_limit`);
/// - with [`ReadOnly::parallel_workers`], `max_parallel_workers_per_gather`
///   (the most parallel worker processes one Gather node may start,
///   PostgreSQL 16 docs §20.4.6; 0 keeps a query in its own backend, so on
///   one core);
/// - with a [`TraceTag`] (by default, [`ReadOnly::begin`] takes the current
///   span's), `application_name` = `quarry 00-<trace id>-<span id>-<flags>`,
///   the span's W3C `traceparent`, so `pg_stat_activity`, `log_line_prefix`
///   `%a` and `auto_explain` output name the trace a statement ran for.
#[derive(Debug, Clone, Copy)]
pub struct ReadOnly<'a> {
    /// `statement_timeout`, in milliseconds.
    pub statement_timeout_ms: u64,
    /// `work_mem`, in kB; `None` keeps the session's.
    pub work_mem_kb: Option<u64>,
    /// `temp_file_limit`, in kB; `None` keeps the session's.
    pub temp_file_limit_kb: Option<u64>,
    /// `max_parallel_workers_per_gather`; `None` keeps the session's.
    pub parallel_workers: Option<u32>,
    /// Schemas that make up `search_path` (between `pg_catalog` and
    /// `pg_temp`); `None` keeps the session's.
    pub search_path: Option<&'a [String]>,
    /// Role to run as; `None` keeps the login role.
    pub role: Option<&'a str>,
    /// Isolation level; `None` is the server default (`READ COMMITTED`).
    pub isolation: Option<IsolationLevel>,
    /// Whose request this is, for row-level security; `None` sets nothing.
    pub session: Option<Session<'a>>,
    /// The trace the transaction runs for; `None` keeps the session's
    /// `application_name`.
    pub trace: Option<TraceTag>,
}

/// The span a transaction runs in, as written into `application_name`.
/// Built from OpenTelemetry's binary ids and formatted here as hex, so no
/// text from a client or a model reaches the setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceTag {
    /// The 16-byte W3C trace id.
    pub trace_id: [u8; 16],
    /// The 8-byte id of the span.
    pub span_id: [u8; 8],
    /// Whether the trace is sampled (flags `01`, else `00`).
    pub sampled: bool,
}

impl TraceTag {
    /// The current `tracing` span's OpenTelemetry context; `None` when no
    /// span is exported (no OpenTelemetry layer, or outside any span).
    pub fn current() -> Option<Self> {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let context = tracing::Span::current().context();
        let span = context.span();
        let span = span.span_context();
        span.is_valid().then(|| Self {
            trace_id: span.trace_id().to_bytes(),
            span_id: span.span_id().to_bytes(),
            sampled: span.is_sampled(),
        })
    }

    /// `quarry 00-<32 hex>-<16 hex>-<2 hex>`: 62 bytes, under PostgreSQL's
    /// 63-byte limit for `application_name` (NAMEDATALEN − 1, PostgreSQL
    /// 16 docs §20.8.1), so it is never truncated.
    pub fn application_name(&self) -> String {
        use std::fmt::Write as _;
        let mut name = String::with_capacity(62);
        name.push_str("quarry 00-");
        for byte in self.trace_id {
            let _ = write!(name, "{byte:02x}");
        }
        name.push('-');
        for byte in self.span_id {
            let _ = write!(name, "{byte:02x}");
        }
        name.push_str(if self.sampled { "-01" } else { "-00" });
        name
    }
}

/// The caller as row-level security policies see it: `quarry.tenant`,
/// `quarry.subject` and `quarry.roles`.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    /// `quarry.tenant`.
    pub tenant: &'a str,
    /// `quarry.subject`.
    pub subject: &'a str,
    /// `quarry.roles`, written as a text-array literal.
    pub roles: &'a [String],
    /// `quarry.hash_salt`, for `hash` column masks, when given.
    pub hash_salt: Option<&'a str>,
}

impl Session<'_> {
    /// The roles as a PostgreSQL array literal (docs §8.15.6): every element
    /// double-quoted with `"` and `\` escaped, so `current_setting(
    /// 'quarry.roles')::text[]` gives the roles back exactly.
    pub fn roles_array(&self) -> String {
        let elements: Vec<String> = self
            .roles
            .iter()
            .map(|r| format!("\"{}\"", r.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        format!("{{{}}}", elements.join(","))
    }
}

impl<'a> ReadOnly<'a> {
    /// Read-only with `statement_timeout_ms`, nothing else set.
    pub fn new(statement_timeout_ms: u64) -> Self {
        Self {
            statement_timeout_ms,
            work_mem_kb: None,
            temp_file_limit_kb: None,
            parallel_workers: None,
            search_path: None,
            role: None,
            isolation: None,
            session: None,
            trace: None,
        }
    }

    /// Tagged with `trace` (when `Some`) in `application_name`.
    #[must_use]
    pub fn trace(mut self, trace: Option<TraceTag>) -> Self {
        self.trace = trace;
        self
    }

    /// With the caller's `session` set for row-level security.
    #[must_use]
    pub fn session(mut self, session: Option<Session<'a>>) -> Self {
        self.session = session;
        self
    }

    /// With `work_mem` and `temp_file_limit` (kB, when `Some`).
    #[must_use]
    pub fn limits(mut self, work_mem_kb: Option<u64>, temp_file_limit_kb: Option<u64>) -> Self {
        self.work_mem_kb = work_mem_kb;
        self.temp_file_limit_kb = temp_file_limit_kb;
        self
    }

    /// With `max_parallel_workers_per_gather` set to `workers` (when `Some`).
    #[must_use]
    pub fn parallel_workers(mut self, workers: Option<u32>) -> Self {
        self.parallel_workers = workers;
        self
    }

    /// With `search_path` restricted to `schemas` (when `Some`).
    #[must_use]
    pub fn search_path(mut self, schemas: Option<&'a [String]>) -> Self {
        self.search_path = schemas;
        self
    }

    /// Running as `role` (when `Some`).
    #[must_use]
    pub fn role(mut self, role: Option<&'a str>) -> Self {
        self.role = role;
        self
    }

    /// At `isolation`.
    #[must_use]
    pub fn isolation(mut self, isolation: IsolationLevel) -> Self {
        self.isolation = Some(isolation);
        self
    }

    /// The `SET LOCAL` batch of the type's docs (one simple-query string).
    pub fn settings(&self) -> String {
        let mut settings = format!(
            "SET LOCAL statement_timeout = {}; SET LOCAL standard_conforming_strings = on",
            self.statement_timeout_ms
        );
        if let Some(schemas) = self.search_path {
            let mut path = vec!["pg_catalog".to_owned()];
            path.extend(schemas.iter().map(|s| quote_ident(s)));
            path.push("pg_temp".into());
            settings.push_str(&format!("; SET LOCAL search_path = {}", path.join(", ")));
        }
        if let Some(kb) = self.work_mem_kb {
            settings.push_str(&format!("; SET LOCAL work_mem = '{kb}kB'"));
        }
        if let Some(kb) = self.temp_file_limit_kb {
            settings.push_str(&format!("; SET LOCAL temp_file_limit = '{kb}kB'"));
        }
        if let Some(workers) = self.parallel_workers {
            settings.push_str(&format!(
                "; SET LOCAL max_parallel_workers_per_gather = {workers}"
            ));
        }
        if let Some(role) = self.role {
            settings.push_str(&format!("; SET LOCAL ROLE {}", quote_ident(role)));
        }
        if let Some(trace) = &self.trace {
            settings.push_str(&format!(
                "; SET LOCAL application_name = {}",
                quote_literal(&trace.application_name())
            ));
        }
        if let Some(session) = &self.session {
            settings.push_str(&format!(
                "; SELECT set_config('quarry.tenant', {}, true), \
                 set_config('quarry.subject', {}, true), set_config('quarry.roles', {}, true)",
                quote_literal(session.tenant),
                quote_literal(session.subject),
                quote_literal(&session.roles_array()),
            ));
            if let Some(salt) = session.hash_salt {
                settings.push_str(&format!(
                    ", set_config('quarry.hash_salt', {}, true)",
                    quote_literal(salt)
                ));
            }
        }
        settings
    }

    /// Starts the transaction on `client` and applies the settings, with
    /// the current span's [`TraceTag`] unless one was given. Dropping the
    /// transaction rolls it back.
    ///
    /// # Errors
    /// PostgreSQL's error, e.g. SQLSTATE `22023` for a role that does not
    /// exist, `42501` for one the login role may not assume.
    pub async fn begin<'c>(
        &self,
        client: &'c mut ClientWrapper,
    ) -> Result<Transaction<'c>, tokio_postgres::Error> {
        let (tx, settings) = self.start(client).await?;
        tx.batch_execute(&settings).await?;
        Ok(tx)
    }

    /// Starts the transaction (`READ ONLY`, at `isolation`) and returns it
    /// with the settings to apply, with the current span's [`TraceTag`]
    /// unless one was given.
    async fn start<'c>(
        &self,
        client: &'c mut ClientWrapper,
    ) -> Result<(Transaction<'c>, String), tokio_postgres::Error> {
        let mut builder = client.build_transaction().read_only(true);
        if let Some(isolation) = self.isolation {
            builder = builder.isolation_level(isolation);
        }
        let tx = builder.start().await?;
        let guard = if self.trace.is_none() {
            self.trace(TraceTag::current())
        } else {
            *self
        };
        Ok((tx, guard.settings()))
    }

    /// As [`ReadOnly::begin`], and prepares `sql` in the same round trip as
    /// the settings: the `SET LOCAL` query and the statement's `Parse` are
    /// pipelined (PostgreSQL 16 docs §55.2.4 "Pipelining"), and the server
    /// handles them in order, so the statement is parsed under the
    /// transaction's `search_path` and `ROLE` exactly as when the settings
    /// are awaited first. Two round trips (`BEGIN`, settings + prepare)
    /// instead of three.
    ///
    /// # Errors
    /// PostgreSQL's error: the settings' first (e.g. SQLSTATE `22023` for a
    /// role that does not exist — the statement then fails only because the
    /// transaction was aborted), else the statement's (e.g. `42P01`).
    pub async fn begin_and_prepare<'c>(
        &self,
        client: &'c mut ClientWrapper,
        sql: &str,
    ) -> Result<(Transaction<'c>, tokio_postgres::Statement), tokio_postgres::Error> {
        let (tx, settings) = self.start(client).await?;
        // both requests are written before either answer is awaited
        let (set, prepared) = tokio::join!(tx.batch_execute(&settings), tx.prepare(sql));
        set?;
        let statement = prepared?;
        Ok((tx, statement))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    #[test]
    fn settings_quote_names() {
        let schemas = vec!["Tate".to_owned()];
        let guard = ReadOnly::new(500)
            .search_path(Some(&schemas))
            .role(Some("ro\"le"));
        assert_eq!(
            guard.settings(),
            "SET LOCAL statement_timeout = 500; SET LOCAL standard_conforming_strings = on; \
             SET LOCAL search_path = pg_catalog, \"Tate\", pg_temp; SET LOCAL ROLE \"ro\"\"le\""
        );
    }

    #[test]
    fn the_trace_tag_is_a_traceparent_within_the_name_limit() {
        let tag = TraceTag {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            sampled: true,
        };
        let name = tag.application_name();
        assert_eq!(
            name,
            "quarry 00-abababababababababababababababab-0101010101010101-01"
        );
        assert!(name.len() <= 63);
        assert!(
            ReadOnly::new(1)
                .trace(Some(tag))
                .settings()
                .ends_with(&format!("; SET LOCAL application_name = '{name}'"))
        );
    }

    /// The tag reaches PostgreSQL as given, for this transaction only.
    #[tokio::test]
    async fn application_name_carries_the_trace_for_the_transaction() {
        let db = TestDb::create().await;
        let mut client = db.pool().get().await.unwrap();
        let tag = TraceTag {
            trace_id: [0x4b; 16],
            span_id: [0x0f; 8],
            sampled: false,
        };
        let tx = ReadOnly::new(1000)
            .trace(Some(tag))
            .begin(&mut client)
            .await
            .unwrap();
        let row = tx
            .query_one("SELECT current_setting('application_name')", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), tag.application_name());
        tx.rollback().await.unwrap();
        let row = client
            .query_one("SELECT current_setting('application_name')", &[])
            .await
            .unwrap();
        assert_ne!(row.get::<_, String>(0), tag.application_name());
    }

    /// A query past `temp_file_limit` fails with SQLSTATE 53400 instead of
    /// filling the disk; `work_mem` is set as given.
    #[tokio::test]
    async fn work_mem_and_temp_file_limit_bound_a_query() {
        let db = TestDb::create().await;
        let mut client = db.pool().get().await.unwrap();
        let tx = ReadOnly::new(10_000)
            .limits(Some(1024), Some(1024))
            .begin(&mut client)
            .await
            .unwrap();
        let row = tx
            .query_one(
                "SELECT current_setting('work_mem'), current_setting('temp_file_limit')",
                &[],
            )
            .await
            .unwrap();
        let (work_mem, temp): (String, String) = (row.get(0), row.get(1));
        assert_eq!((work_mem.as_str(), temp.as_str()), ("1MB", "1MB"));
        // sorting 2 million integers spills ~30 MB past a 1 MB work_mem
        let error = tx
            .query_one(
                "SELECT count(*) FROM (SELECT g FROM generate_series(1, 2000000) g ORDER BY g DESC) s",
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(error.code().map(|c| c.code()), Some("53400"), "{error}");
    }

    #[tokio::test]
    async fn the_transaction_is_read_only_with_its_settings() {
        let db = TestDb::create().await;
        let mut client = db.pool().get().await.unwrap();
        let guard = ReadOnly::new(1234).isolation(IsolationLevel::RepeatableRead);
        let tx = guard.begin(&mut client).await.unwrap();
        let row = tx
            .query_one(
                "SELECT current_setting('statement_timeout'), current_setting('transaction_read_only'), \
                 current_setting('transaction_isolation')",
                &[],
            )
            .await
            .unwrap();
        let (timeout, read_only, isolation): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (timeout.as_str(), read_only.as_str(), isolation.as_str()),
            ("1234ms", "on", "repeatable read")
        );
        let error = tx
            .batch_execute("CREATE TABLE t (id int)")
            .await
            .unwrap_err();
        assert_eq!(error.code().map(|c| c.code()), Some("25006"));
        assert_eq!(
            crate::error_text(&error),
            "cannot execute CREATE TABLE in a read-only transaction (SQLSTATE 25006)"
        );
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;
    use crate::testing::TestDb;

    /// Hostile tenant, subject and role strings arrive in PostgreSQL as
    /// the very same text: data, never SQL.
    #[tokio::test]
    async fn the_session_reaches_current_setting_exactly() {
        let db = TestDb::create().await;
        let mut client = db.pool().get().await.unwrap();
        let roles = vec![
            "analyst".to_owned(),
            "a\"b,c}".to_owned(),
            "back\\slash".to_owned(),
        ];
        let tenant = "acme'; SET ROLE postgres; --";
        let subject = "ali\\ce";
        let guard = ReadOnly::new(1000).session(Some(Session {
            tenant,
            subject,
            roles: &roles,
            hash_salt: None,
        }));
        let tx = guard.begin(&mut client).await.unwrap();
        let row = tx
            .query_one(
                "SELECT current_setting('quarry.tenant'), current_setting('quarry.subject'), \
                 current_setting('quarry.roles')::text[], current_user::text",
                &[],
            )
            .await
            .unwrap();
        let (t, s, r): (String, String, Vec<String>) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((t.as_str(), s.as_str()), (tenant, subject));
        assert_eq!(r, roles);
        tx.rollback().await.unwrap();
        // transaction-local: gone after the transaction
        let row = client
            .query_one("SELECT current_setting('quarry.tenant', true)", &[])
            .await
            .unwrap();
        let after: Option<String> = row.get(0);
        assert!(after.as_deref().is_none_or(str::is_empty), "{after:?}");
    }

    /// A database (or role) may set `standard_conforming_strings` off; the
    /// settings batch is parsed as a whole before its own `SET … = on`
    /// runs, so its literals must read back the same either way. A subject
    /// that ends a plain `'…'` early there (a backslash escapes the doubled
    /// quote) and sets another tenant with dollar quotes stays data.
    #[tokio::test]
    async fn the_session_stays_data_where_backslashes_escape_quotes() {
        let db = TestDb::create().await;
        db.pool()
            .get()
            .await
            .unwrap()
            .batch_execute(&format!(
                "ALTER DATABASE {} SET standard_conforming_strings = off",
                crate::quote_ident(db.name())
            ))
            .await
            .unwrap();
        // a new connection, which takes the database's setting
        let pool = crate::testing::pool_for(db.url(), 1);
        let mut client = pool.get().await.unwrap();
        let before = client
            .query_one("SELECT current_setting('standard_conforming_strings')", &[])
            .await
            .unwrap();
        assert_eq!(before.get::<_, String>(0), "off");
        let roles = vec!["back\\slash".to_owned()];
        let subject = r"\', true), set_config($$quarry.tenant$$, $$evil$$, true) --";
        let guard = ReadOnly::new(1000).session(Some(Session {
            tenant: "acme",
            subject,
            roles: &roles,
            hash_salt: Some(r"s\'alt"),
        }));
        let tx = guard.begin(&mut client).await.unwrap();
        let row = tx
            .query_one(
                "SELECT current_setting('quarry.tenant'), current_setting('quarry.subject'), \
                 current_setting('quarry.roles')::text[], current_setting('quarry.hash_salt')",
                &[],
            )
            .await
            .unwrap();
        let (t, s, r, salt): (String, String, Vec<String>, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!((t.as_str(), s.as_str()), ("acme", subject));
        assert_eq!(r, roles);
        assert_eq!(salt, r"s\'alt");
    }
}
