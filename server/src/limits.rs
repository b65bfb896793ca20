//! The stores that make per-tenant limits hold across replicas: the
//! request rate in PostgreSQL ([`PgRateStore`], `quarry.rate_limits`), and
//! the budgets as the SQL tool sees them ([`SqlBudgets`]).

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use quarry_auth::{RateLimitConfig, SharedRateStore};
use quarry_db::{
    Pool,
    rate_limit::{Gcra, Want},
    usage::UsageAmounts,
};
use quarry_orchestrator::Budgets;
use quarry_sql::grpc::SqlBudget;
use tonic::Status;

/// A boxed, sendable future.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`SqlBudget`] over the orchestrator's [`Budgets`]: a direct
/// `GenerateSql` is checked and charged like an Ask's model calls.
#[derive(Debug, Clone)]
pub struct SqlBudgets(pub Arc<Budgets>);

impl SqlBudget for SqlBudgets {
    fn check<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move { self.0.check(tenant).await.map_err(Status::from) })
    }

    fn charge<'a>(&'a self, tenant: &'a str, amounts: UsageAmounts) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.0.charge(tenant, &amounts, None).await })
    }
}

/// [`SharedRateStore`] on Quarry's own PostgreSQL database: GCRA with the
/// theoretical arrival time of each bucket in `quarry.rate_limits`, cells
/// acquired by one statement ([`quarry_db::rate_limit::acquire`]) for a
/// request, or ahead of requests.
///
/// PostgreSQL rather than Redis: every replica already holds a pool to it,
/// so the shared stage adds no component to deploy, secure or watch, and
/// one indexed upsert (about a millisecond here) is within the one round
/// trip per request allowed.
#[derive(Debug, Clone)]
pub struct PgRateStore {
    pool: Pool,
}

impl PgRateStore {
    /// A store on `pool` (the database holding the `quarry` schema,
    /// migrated to V15).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

impl SharedRateStore for PgRateStore {
    fn acquire(
        &self,
        bucket: String,
        quota: RateLimitConfig,
        now: bool,
        ahead: u32,
    ) -> BoxFuture<'static, Result<Result<u32, Duration>, String>> {
        let pool = self.pool.clone();
        let gcra = Gcra::per_second(quota.requests_per_second.get(), quota.burst.get());
        Box::pin(async move {
            quarry_db::rate_limit::acquire(&pool, &bucket, gcra, Want { now, ahead })
                .await
                .map_err(|e| e.to_string())
        })
    }
}
