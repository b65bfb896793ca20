//! A read-only database role for the executor (defence in depth: even SQL
//! that slipped past the validator and the `READ ONLY` transaction cannot
//! write, because the role has no privilege to).
//!
//! The role is `NOLOGIN`: nobody connects as it. The executor's login role
//! (the pool's user) must be a member of it and switches to it per query
//! with `SET LOCAL ROLE` inside the transaction ([`ExecConfig::role`]), so
//! there is no second password to manage and the switch ends with the
//! transaction. Privileges (PostgreSQL 16 docs §5.7 "Privileges", GRANT,
//! ALTER DEFAULT PRIVILEGES):
//!
//! - `USAGE` on each listed schema and `SELECT` on all its tables, views
//!   and materialised views;
//! - default privileges so tables the executing user creates later in those
//!   schemas are readable too (default privileges apply to objects created
//!   by the role that ran `ALTER DEFAULT PRIVILEGES`, so run the SQL as the
//!   owner of the data);
//! - `default_transaction_read_only = on` as a role setting (it takes effect
//!   for sessions that log in as the role, should it ever be given `LOGIN`);
//! - nothing else: no `CREATE`, no `TEMPORARY`, no superuser, role
//!   creation, replication or RLS bypass. Privileges granted to `PUBLIC`
//!   (such as `EXECUTE` on functions) still apply, as for every role.
//!
//! [`ExecConfig::role`]: crate::ExecConfig::role

use quarry_db::{quote_ident, quote_literal};

/// Idempotent SQL (several statements; run with a simple-query `batch_execute`)
/// that creates the `NOLOGIN` read-only role `role` if missing, strips any
/// elevated attributes, grants the current user membership (needed for
/// `SET ROLE`), and grants read access to `schemas` as described in the
/// module docs. Identifiers are quoted, so names are used exactly as given
/// (give lower-case names for ordinary unquoted identifiers).
pub fn read_only_role_sql(role: &str, schemas: &[String]) -> String {
    let ident = quote_ident(role);
    let mut sql = format!(
        "DO $quarry$ BEGIN\n\
         \x20 IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {literal}) THEN\n\
         \x20   CREATE ROLE {ident} NOLOGIN;\n\
         \x20 END IF;\n\
         EXCEPTION WHEN duplicate_object THEN NULL;\n\
         END $quarry$;\n\
         ALTER ROLE {ident} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;\n\
         ALTER ROLE {ident} SET default_transaction_read_only = on;\n\
         GRANT {ident} TO CURRENT_USER;\n",
        literal = quote_literal(role),
    );
    for schema in schemas {
        let schema = quote_ident(schema);
        sql.push_str(&format!(
            "GRANT USAGE ON SCHEMA {schema} TO {ident};\n\
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {ident};\n\
             ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {ident};\n"
        ));
    }
    sql
}

/// Run [`read_only_role_sql`] on `client`.
///
/// # Errors
/// PostgreSQL's error, e.g. SQLSTATE `42501` when the current user may not
/// create roles or grant on the schemas, `3F000` for a missing schema.
pub async fn ensure_read_only_role(
    client: &tokio_postgres::Client,
    role: &str,
    schemas: &[String],
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&read_only_role_sql(role, schemas))
        .await
}

#[cfg(test)]
mod tests;
