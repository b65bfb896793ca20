//! Per-tenant concurrency shares: how many of one resource (Asks in flight,
//! tool calls in flight, database connections) a tenant may hold at once,
//! so that one tenant's load leaves the rest to the others.
//!
//! [`TenantShares`] keeps one counting semaphore per tenant (created on first
//! use, dropped when idle). [`TenantShares::acquire`] waits at most the
//! configured `wait` for a free slot of the caller's tenant and otherwise
//! refuses with [`ShareExhausted`] — `RESOURCE_EXHAUSTED` with a google.rpc
//! `RetryInfo` — rather than queueing until a pool timeout that looks like an
//! outage. A tenant within its share never waits for another tenant's
//! slots: each tenant's semaphore is its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Every this many acquisitions idle tenants are forgotten.
const PRUNE_EVERY: u64 = 1024;

/// A tenant already holds its whole share of a resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {tenant:?} already holds its share of {what} ({limit}); retry shortly")]
pub struct ShareExhausted {
    /// What is shared, e.g. `database connections`.
    pub what: &'static str,
    /// The tenant refused.
    pub tenant: String,
    /// The tenant's share.
    pub limit: usize,
    /// A hint for when to retry (the `RetryInfo` delay).
    pub retry_after: Duration,
}

impl From<ShareExhausted> for Status {
    fn from(error: ShareExhausted) -> Self {
        Status::with_error_details(
            Code::ResourceExhausted,
            error.to_string(),
            ErrorDetails::with_retry_info(Some(error.retry_after)),
        )
    }
}

/// One tenant's slot of a shared resource; released on drop.
#[derive(Debug)]
pub struct SharePermit {
    _permit: OwnedSemaphorePermit,
}

/// Per-tenant shares of one resource; cheap to clone (clones share state).
#[derive(Debug, Clone)]
pub struct TenantShares {
    what: &'static str,
    limit: usize,
    wait: Duration,
    tenants: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    acquisitions: Arc<AtomicU64>,
}

impl TenantShares {
    /// At most `limit` (at least 1) of `what` per tenant; a request waits at
    /// most `wait` for one of its tenant's slots.
    pub fn new(what: &'static str, limit: usize, wait: Duration) -> Self {
        Self {
            what,
            limit: limit.max(1),
            wait,
            tenants: Arc::new(Mutex::new(HashMap::new())),
            acquisitions: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A tenant's share: `fraction` of `capacity` (rounded down, at least
    /// 1), e.g. half of a 16-connection pool is 8.
    pub fn share_of(capacity: usize, fraction: f64) -> usize {
        let share = (capacity as f64 * fraction.clamp(0.0, 1.0)).floor();
        (share as usize).max(1)
    }

    /// Each tenant's share.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot of `tenant`'s share, waiting at most the configured `wait`.
    ///
    /// # Errors
    /// [`ShareExhausted`] when the tenant's slots stay taken for that long.
    pub async fn acquire(&self, tenant: &str) -> Result<SharePermit, ShareExhausted> {
        let semaphore = self.semaphore(tenant);
        let permit = match Arc::clone(&semaphore).try_acquire_owned() {
            Ok(permit) => Ok(permit),
            Err(_) if self.wait.is_zero() => Err(()),
            Err(_) => tokio::time::timeout(self.wait, semaphore.acquire_owned())
                .await
                .map_err(drop)
                .and_then(|acquired| acquired.map_err(drop)),
        };
        permit
            .map(|permit| SharePermit { _permit: permit })
            .map_err(|()| ShareExhausted {
                what: self.what,
                tenant: tenant.to_owned(),
                limit: self.limit,
                retry_after: self.wait.max(Duration::from_millis(100)),
            })
    }

    /// Slots `tenant` holds now.
    pub fn in_use(&self, tenant: &str) -> usize {
        let tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants
            .get(tenant)
            .map_or(0, |s| self.limit - s.available_permits())
    }

    fn semaphore(&self, tenant: &str) -> Arc<Semaphore> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if self.acquisitions.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            // idle: only the map holds it and every slot is free; a caller
            // holding a clone (waiting or with a permit) keeps it alive
            let limit = self.limit;
            tenants.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < limit);
        }
        Arc::clone(
            tenants
                .entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limit))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_holds_at_most_its_share_and_others_are_unaffected() {
        let shares = TenantShares::new("things", 2, Duration::from_millis(20));
        let a1 = shares.acquire("a").await.unwrap();
        let _a2 = shares.acquire("a").await.unwrap();
        let refused = shares.acquire("a").await.unwrap_err();
        assert_eq!(refused.limit, 2);
        assert_eq!(refused.tenant, "a");
        let status = Status::from(refused);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.get_details_retry_info().is_some());
        // another tenant has its own two
        let _b1 = shares.acquire("b").await.unwrap();
        let _b2 = shares.acquire("b").await.unwrap();
        assert_eq!(shares.in_use("a"), 2);
        // a released slot is available again, also to a waiter
        let waiter = {
            let shares = shares.clone();
            tokio::spawn(async move { shares.acquire("a").await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(a1);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn idle_tenants_are_forgotten_but_held_slots_are_not() {
        let shares = TenantShares::new("things", 1, Duration::ZERO);
        let held = shares.acquire("busy").await.unwrap();
        for i in 0..PRUNE_EVERY {
            drop(shares.acquire(&format!("t{i}")).await.unwrap());
        }
        let tenants = shares.tenants.lock().unwrap().len();
        assert!(tenants < PRUNE_EVERY as usize, "{tenants}");
        // the busy tenant's slot survived the pruning
        assert!(shares.acquire("busy").await.is_err());
        drop(held);
        assert!(shares.acquire("busy").await.is_ok());
    }

    #[test]
    fn shares_round_down_to_at_least_one() {
        assert_eq!(TenantShares::share_of(16, 0.5), 8);
        assert_eq!(TenantShares::share_of(3, 0.5), 1);
        assert_eq!(TenantShares::share_of(4, 0.0), 1);
        assert_eq!(TenantShares::share_of(4, 2.0), 4);
    }
}
