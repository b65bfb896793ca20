//! PostgreSQL advisory locks (PostgreSQL 16 docs §13.3.5 "Advisory Locks",
//! §9.27.10 "Advisory Lock Functions").
//!
//! A session lock ([`try_lock`], [`lock`], [`unlock`]) is held by the
//! connection until unlocked or closed, so hold it on a connection of its
//! own and never hand that connection to other work while it is held. A
//! transaction lock ([`xact_lock`]) ends with its transaction. Names are
//! turned into keys with PostgreSQL's `hashtext`, the way Quarry has always
//! keyed its named locks.

use tokio_postgres::GenericClient;

/// Takes the session-level advisory lock `key` if it is free; `false` when
/// another session holds it (nothing is held then).
///
/// # Errors
/// PostgreSQL's error.
pub async fn try_lock(
    client: &impl GenericClient,
    key: i64,
) -> Result<bool, tokio_postgres::Error> {
    client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await?
        .try_get(0)
}

/// Waits for and takes the session-level advisory lock named `name`.
///
/// # Errors
/// PostgreSQL's error (e.g. the statement timeout while waiting).
pub async fn lock(client: &impl GenericClient, name: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&name])
        .await
        .map(drop)
}

/// Releases the session-level advisory lock `key`; `false` when this session
/// did not hold it.
///
/// # Errors
/// PostgreSQL's error.
pub async fn unlock(client: &impl GenericClient, key: i64) -> Result<bool, tokio_postgres::Error> {
    client
        .query_one("SELECT pg_advisory_unlock($1)", &[&key])
        .await?
        .try_get(0)
}

/// Releases the session-level advisory lock named `name` (taken with
/// [`lock`]); `false` when this session did not hold it.
///
/// # Errors
/// PostgreSQL's error.
pub async fn unlock_named(
    client: &impl GenericClient,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    client
        .query_one("SELECT pg_advisory_unlock(hashtext($1))", &[&name])
        .await?
        .try_get(0)
}

/// Waits for and takes the transaction-level advisory lock named `name`; it
/// is released when the transaction `client` runs in ends. Serialises
/// idempotent set-up (DDL) across processes.
///
/// # Errors
/// PostgreSQL's error.
pub async fn xact_lock(
    client: &impl GenericClient,
    name: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&name])
        .await
        .map(drop)
}

/// Takes the session-level two-key advisory lock (`purpose`, `name`) if it
/// is free (`pg_try_advisory_lock(hashtext(purpose), hashtext(name))`, a
/// key space apart from the one-key locks); `false` when another session
/// holds it. The session keeps it until it unlocks or closes.
///
/// # Errors
/// PostgreSQL's error.
pub async fn try_lock_pair(
    client: &impl GenericClient,
    purpose: &str,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))",
            &[&purpose, &name],
        )
        .await?
        .try_get(0)
}

/// Waits for and takes the transaction-level two-key advisory lock
/// (`purpose`, `name`); it is released when the transaction ends.
///
/// # Errors
/// PostgreSQL's error.
pub async fn xact_lock_pair(
    client: &impl GenericClient,
    purpose: &str,
    name: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
            &[&purpose, &name],
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    #[tokio::test]
    async fn a_session_lock_excludes_other_sessions_until_unlocked() {
        let db = TestDb::create().await;
        let a = db.pool().get().await.unwrap();
        let b = db.pool().get().await.unwrap();
        assert!(try_lock(&**a, 42).await.unwrap());
        assert!(!try_lock(&**b, 42).await.unwrap());
        assert!(!unlock(&**b, 42).await.unwrap());
        assert!(unlock(&**a, 42).await.unwrap());
        assert!(try_lock(&**b, 42).await.unwrap());
        assert!(unlock(&**b, 42).await.unwrap());
        lock(&**a, "quarry.test").await.unwrap();
        assert!(unlock_named(&**a, "quarry.test").await.unwrap());
        assert!(try_lock_pair(&**a, "purpose", "x").await.unwrap());
        assert!(!try_lock_pair(&**b, "purpose", "x").await.unwrap());
        assert!(try_lock_pair(&**b, "purpose", "y").await.unwrap());
    }
}
