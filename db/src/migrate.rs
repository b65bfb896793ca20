//! The migrations of Quarry's own `quarry` schema (`db/migrations/V*__*.sql`,
//! embedded with refinery): V1 the stored catalog and golden pairs, V2
//! conversations, V3 summaries, V4 search bookkeeping, V5 golden pairs per
//! tenant, V6 the audit log, V8 the personal data of conversation turns
//! (V7 was never released), V9 summaries per tenant, V10 usage per tenant and day, V11 the limits
//! shared across replicas (rate-limit buckets, budget holds), V13 cached prompt
//! tokens in the usage ledger, V14 the result cache's change log, V15 the
//! cells a rate-limit acquisition granted. Per-collection search sidecar tables are not here: their shape follows
//! each collection's definition, so the search tool creates them
//! (`quarry_search::ddl`).

use deadpool_postgres::Pool;

use crate::error::Result;
use crate::lock;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Session advisory lock that serialises migration runs across processes
/// (refinery itself does not: two servers starting together would race to
/// create its history table).
const MIGRATION_LOCK: &str = "quarry.migrations";

/// Applies pending migrations on a connection of `pool` and returns the
/// names of those applied now (`V3__summaries`, …); see [`migrate_client`].
///
/// # Errors
/// As [`migrate_client`], and [`crate::DbError::Pool`] when no connection is
/// available.
pub async fn migrate(pool: &Pool) -> Result<Vec<String>> {
    let mut client = pool.get().await?;
    migrate_client(&mut client).await
}

/// Applies pending migrations (each in its own transaction, recorded in
/// `refinery_schema_history`; a changed or missing applied migration aborts)
/// and returns the names of those applied now. Idempotent and serialised
/// across processes by an advisory lock, so every tool may call it when it
/// opens; with nothing pending it costs two round trips and a history read.
///
/// # Errors
/// [`crate::DbError::Migrate`] naming the failing migration with
/// PostgreSQL's error; [`crate::DbError::Database`] when the lock cannot be
/// taken.
pub async fn migrate_client(client: &mut tokio_postgres::Client) -> Result<Vec<String>> {
    lock::lock(&*client, MIGRATION_LOCK).await?;
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(client)
        .await;
    // release before reporting: the connection may go back to a pool
    let unlocked = lock::unlock_named(&*client, MIGRATION_LOCK).await;
    let report = report?;
    unlocked?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    #[tokio::test]
    async fn migrations_apply_once_even_when_run_together() {
        let db = TestDb::create().await;
        let (a, b) = tokio::join!(migrate(db.pool()), migrate(db.pool()));
        let mut applied = [a.unwrap(), b.unwrap()];
        applied.sort();
        assert_eq!(applied[0], Vec::<String>::new());
        assert_eq!(
            applied[1],
            [
                "V1__quarry_schema",
                "V2__conversations",
                "V3__summaries",
                "V4__search",
                "V5__golden_per_tenant",
                "V6__audit_log",
                "V8__conversation_pii",
                "V9__summaries_per_tenant",
                "V10__usage",
                "V11__limits_across_replicas",
                "V13__usage_cached_tokens",
                "V14__result_cache_changes",
                "V15__rate_limit_leases",
            ]
        );
        assert!(migrate(db.pool()).await.unwrap().is_empty());
        let client = db.pool().get().await.unwrap();
        let tables: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'quarry' \
                 AND tablename IN ('summaries', 'summary_builds', 'search_collections', 'search_outbox', 'conversations')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(tables, 5);
    }
}
