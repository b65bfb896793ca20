//! The guarded read-only transaction every query on source data runs in.

use deadpool_postgres::{ClientWrapper, Transaction};
use tokio_postgres::IsolationLevel;

use crate::ident::quote_ident;

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
/// - with `role`, `SET LOCAL ROLE` (the pool's login role must be a member).
#[derive(Debug, Clone, Copy)]
pub struct ReadOnly<'a> {
    /// `statement_timeout`, in milliseconds.
    pub statement_timeout_ms: u64,
    /// Schemas that make up `search_path` (between `pg_catalog` and
    /// `pg_temp`); `None` keeps the session's.
    pub search_path: Option<&'a [String]>,
    /// Role to run as; `None` keeps the login role.
    pub role: Option<&'a str>,
    /// Isolation level; `None` is the server default (`READ COMMITTED`).
    pub isolation: Option<IsolationLevel>,
}

impl<'a> ReadOnly<'a> {
    /// Read-only with `statement_timeout_ms`, nothing else set.
    pub fn new(statement_timeout_ms: u64) -> Self {
        Self {
            statement_timeout_ms,
            search_path: None,
            role: None,
            isolation: None,
        }
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
        if let Some(role) = self.role {
            settings.push_str(&format!("; SET LOCAL ROLE {}", quote_ident(role)));
        }
        settings
    }

    /// Starts the transaction on `client` and applies the settings. Dropping
    /// the transaction rolls it back.
    ///
    /// # Errors
    /// PostgreSQL's error, e.g. SQLSTATE `22023` for a role that does not
    /// exist, `42501` for one the login role may not assume.
    pub async fn begin<'c>(
        &self,
        client: &'c mut ClientWrapper,
    ) -> Result<Transaction<'c>, tokio_postgres::Error> {
        let mut builder = client.build_transaction().read_only(true);
        if let Some(isolation) = self.isolation {
            builder = builder.isolation_level(isolation);
        }
        let tx = builder.start().await?;
        tx.batch_execute(&self.settings()).await?;
        Ok(tx)
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
