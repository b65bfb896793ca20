//! Per-tenant request rate limits: [`TenantRateLimiter`] and
//! [`RateLimitLayer`], in this process and, with a [`SharedRateStore`],
//! across every replica.

use std::fmt;
use std::mem;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{self, BoxFuture};
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tonic::Status;
use tower::{Layer, Service};

use crate::error::AuthError;
use crate::principal::Principal;

#[cfg(test)]
mod tests;

/// How long [`RateLimit`] waits for the [`SharedRateStore`] before it
/// admits a request on the local stage alone (one round trip to
/// PostgreSQL on the same network takes about a millisecond).
pub const SHARED_STORE_TIMEOUT: Duration = Duration::from_millis(250);

/// The store that makes a tenant's quota hold across replicas: GCRA cells
/// acquired per request, or ahead of requests, shared by every process
/// using the store (e.g. GCRA in PostgreSQL, `quarry_db::rate_limit`).
pub trait SharedRateStore: fmt::Debug + Send + Sync {
    /// Acquires cells of `bucket` (tenant and service) under `quota`: with
    /// `now`, the cell a waiting request needs (refused when it does not
    /// conform) and up to `ahead` more; without, up to `ahead` cells only.
    /// Cells ahead come only from the upper half of the bucket (at most
    /// `(burst − 1) / 2` cells drawn after the grant), so that a replica
    /// holding some never leaves the others less than half the burst.
    /// Returns the cells granted (with `now`, at least 1; without, possibly
    /// 0), or for a refused request the wait until one would conform.
    ///
    /// # Errors
    /// The store could not be reached or failed, as text; [`RateLimit`]
    /// then admits on the local stage alone.
    fn acquire(
        &self,
        bucket: String,
        quota: RateLimitConfig,
        now: bool,
        ahead: u32,
    ) -> BoxFuture<'static, Result<Result<u32, Duration>, String>>;
}

/// How long cells taken ahead may be spent after the bucket's last grant
/// to this replica; unspent ones are then dropped. With at most [`MAX_CELLS_AHEAD`] cells held per
/// bucket, a replica's admissions in any window exceed what the shared
/// store granted in that window by at most the cells it held at its start.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// The most cells a replica takes ahead per bucket.
pub const MAX_CELLS_AHEAD: u32 = 16;

/// Cells a replica takes ahead for a quota of `burst`: a quarter of the
/// tolerance `burst − 1`, at most [`MAX_CELLS_AHEAD`]; 0 (every request
/// asks the store) for a burst under 5.
pub fn cells_ahead(burst: u32) -> u32 {
    (burst.saturating_sub(1) / 4).min(MAX_CELLS_AHEAD)
}

/// Cells one replica holds for one bucket.
#[derive(Debug, Clone, Copy)]
struct Lease {
    cells: u32,
    expires: tokio::time::Instant,
    refilling: bool,
}

/// The cells this process holds ahead, per bucket.
#[derive(Debug, Default)]
struct Leases(std::sync::Mutex<std::collections::HashMap<String, Lease>>);

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Lease>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Spends one unexpired cell of `bucket`. Returns whether one was
    /// spent, and whether the caller should now take more ahead (the
    /// bucket is down to half of `ahead` and no refill is in flight; it is
    /// then marked as refilling).
    fn spend(&self, bucket: &str, ahead: u32) -> (bool, bool) {
        let now = tokio::time::Instant::now();
        let mut leases = self.lock();
        let Some(lease) = leases.get_mut(bucket) else {
            return (false, false);
        };
        if lease.cells == 0 || lease.expires <= now {
            lease.cells = 0;
            return (false, false);
        }
        lease.cells -= 1;
        let refill = !lease.refilling && lease.cells <= ahead / 2;
        if refill {
            lease.refilling = true;
        }
        (true, refill)
    }

    /// The cells to ask for in a refill of `bucket`: up to `ahead` held.
    fn missing(&self, bucket: &str, ahead: u32) -> u32 {
        let now = tokio::time::Instant::now();
        self.lock()
            .get(bucket)
            .filter(|l| l.expires > now)
            .map_or(ahead, |l| ahead.saturating_sub(l.cells))
    }

    /// Adds `granted` cells to `bucket` (keeping at most `ahead`), valid
    /// for [`LEASE_TTL`] from now; `refilled` ends a refill.
    fn add(&self, bucket: &str, granted: u32, ahead: u32, refilled: bool) {
        let now = tokio::time::Instant::now();
        let mut leases = self.lock();
        let lease = leases.entry(bucket.to_owned()).or_insert(Lease {
            cells: 0,
            expires: now,
            refilling: false,
        });
        if lease.expires <= now {
            lease.cells = 0;
        }
        if granted > 0 {
            lease.cells = lease.cells.saturating_add(granted).min(ahead);
            lease.expires = now + LEASE_TTL;
        }
        if refilled {
            lease.refilling = false;
        }
    }

    /// Forgets buckets with no unexpired cell and no refill in flight.
    fn prune(&self) {
        let now = tokio::time::Instant::now();
        self.lock()
            .retain(|_, l| l.refilling || (l.cells > 0 && l.expires > now));
    }
}

/// Every this many checks the limiter forgets tenants whose state is back
/// to "fresh", keeping the keyed store bounded by recently active tenants.
const PRUNE_EVERY: u64 = 4096;

/// A tenant's request quota.
///
/// Requests replenish at `requests_per_second`; up to `burst` may arrive at
/// once. Both must be at least 1. With `shared` (the default) the quota
/// holds across every replica on the same database (see [`RateLimit`]);
/// without it, per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained rate, requests per second per tenant.
    pub requests_per_second: NonZeroU32,
    /// Largest number of requests admitted at once per tenant.
    pub burst: NonZeroU32,
    /// Whether the quota is shared by all replicas (a [`SharedRateStore`]
    /// in Quarry's database: one statement per request).
    pub shared: bool,
}

impl Default for RateLimitConfig {
    /// 20 requests per second, bursts of 40, shared across replicas.
    fn default() -> Self {
        RateLimitConfig {
            requests_per_second: NonZeroU32::MIN.saturating_add(19),
            burst: NonZeroU32::MIN.saturating_add(39),
            shared: true,
        }
    }
}

impl RateLimitConfig {
    /// The governor quota: one request replenished every
    /// `1 / requests_per_second` seconds, bucket depth `burst`.
    pub fn quota(&self) -> Quota {
        Quota::per_second(self.requests_per_second).allow_burst(self.burst)
    }
}

type KeyedLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// One independent request quota per tenant, in this process.
///
/// Uses governor's keyed rate limiter, which implements GCRA (the generic
/// cell rate algorithm, a virtual-scheduling form of the leaky bucket): each
/// tenant has its own theoretical arrival time, so one tenant exhausting its
/// quota never delays another. Tenants idle long enough to be back at a
/// full bucket are dropped from the store periodically. Cheap to clone;
/// clones share state.
#[derive(Clone, Debug)]
pub struct TenantRateLimiter {
    limiter: Arc<KeyedLimiter>,
    checks: Arc<AtomicU64>,
    config: RateLimitConfig,
    shared: Option<Arc<dyn SharedRateStore>>,
    leases: Arc<Leases>,
}

impl TenantRateLimiter {
    /// A limiter giving every tenant `config`'s quota.
    pub fn new(config: RateLimitConfig) -> Self {
        TenantRateLimiter {
            limiter: Arc::new(RateLimiter::keyed(config.quota())),
            checks: Arc::new(AtomicU64::new(0)),
            config,
            shared: None,
            leases: Arc::default(),
        }
    }

    /// Also admits every request that passes this process's quota against
    /// `store`, so that the quota holds across replicas; see [`RateLimit`].
    pub fn with_shared(mut self, store: Arc<dyn SharedRateStore>) -> Self {
        self.shared = Some(store);
        self
    }

    /// The quota of every tenant.
    pub fn config(&self) -> RateLimitConfig {
        self.config
    }

    /// Admit one request for `tenant`, or return how long until one would be
    /// admitted (governor's wait time from now).
    ///
    /// # Errors
    /// The tenant is over its quota: the wait until a request would be admitted.
    pub fn check(&self, tenant: &str) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
            self.leases.prune();
        }
        self.limiter
            .check_key(&tenant.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Forget tenants whose quota is fully replenished.
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
    }

    /// Number of tenants currently tracked (may be approximate).
    pub fn tracked_tenants(&self) -> usize {
        self.limiter.len()
    }
}

/// Layer producing [`RateLimit`]; see there.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: TenantRateLimiter,
}

impl RateLimitLayer {
    /// Admit requests through `limiter`.
    pub fn new(limiter: TenantRateLimiter) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// Admits each request against its tenant's quota.
///
/// Must sit after (inside) [`crate::AuthLayer`]: it keys on the
/// [`Principal`] in the request extensions. A request without one (health,
/// reflection) is not limited. A refused request is answered directly with
/// `grpc-status: 8` (`RESOURCE_EXHAUSTED`) whose `grpc-status-details-bin`
/// carries a google.rpc `RetryInfo` with the wait time; the inner service
/// is not called.
///
/// Two stages: this process's governor first (no I/O; it sheds a flood
/// before it reaches the store), then, when the limiter has a
/// [`SharedRateStore`], a cell of the bucket `<tenant>/<gRPC service>`
/// (e.g. `acme/quarry.v1.AssistantService`) in the store, so that all
/// replicas together admit the quota — per service, so that an Ask's tool
/// calls forwarded to remote tool roles do not spend the tenant's Ask
/// quota.
///
/// Cells ahead: with a burst of 5 or more, the acquisition a request
/// waits on also takes up to [`cells_ahead`] cells ahead, from the upper
/// half of the bucket only. Later requests spend them without I/O; when
/// half are spent, more are taken in the background. They expire
/// [`LEASE_TTL`] after the bucket's last grant. Away from the limit a request then
/// costs no round trip; near it (the bucket more than half drawn) nothing
/// is granted ahead and each request is tested in the store. What a
/// replica holds ahead was granted by the store, so the fleet exceeds the
/// shared quota over any window by at most the cells held at its start:
/// replicas × [`cells_ahead`], never more than replicas × 16.
///
/// When the store fails or does not answer within
/// [`SHARED_STORE_TIMEOUT`], the request is admitted on the local stage
/// alone (logged at warn): limits then hold per replica, so the fleet
/// admits at most replicas × quota, and the service stays up.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: TenantRateLimiter,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RateLimit<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let Some(tenant) = req
            .extensions()
            .get::<Principal>()
            .map(|p| p.tenant.clone())
        else {
            return Box::pin(inner.call(req));
        };
        if let Err(retry_after) = self.limiter.check(&tenant) {
            return Box::pin(future::ready(Ok(refusal(tenant, retry_after))));
        }
        let Some(store) = self.limiter.shared.clone() else {
            return Box::pin(inner.call(req));
        };
        let service = req
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let bucket = format!("{tenant}/{service}");
        let quota = self.limiter.config;
        let ahead = cells_ahead(quota.burst.get());
        let leases = Arc::clone(&self.limiter.leases);
        if ahead > 0 {
            let (spent, refill) = leases.spend(&bucket, ahead);
            if refill {
                // take more ahead off the request's path; the request
                // itself is admitted on the cell just spent
                let (store, leases, bucket) =
                    (Arc::clone(&store), Arc::clone(&leases), bucket.clone());
                tokio::spawn(async move {
                    let missing = leases.missing(&bucket, ahead);
                    let granted = match tokio::time::timeout(
                        SHARED_STORE_TIMEOUT,
                        store.acquire(bucket.clone(), quota, false, missing),
                    )
                    .await
                    {
                        Ok(Ok(Ok(granted))) => granted,
                        Ok(Err(error)) => {
                            tracing::debug!(%bucket, %error, "taking rate-limit cells ahead failed");
                            0
                        }
                        // refused, or no answer in time: nothing ahead
                        Ok(Ok(Err(_))) | Err(_) => 0,
                    };
                    leases.add(&bucket, granted, ahead, true);
                });
            }
            if spent {
                return Box::pin(inner.call(req));
            }
        }
        Box::pin(async move {
            match tokio::time::timeout(
                SHARED_STORE_TIMEOUT,
                store.acquire(bucket.clone(), quota, true, ahead),
            )
            .await
            {
                Ok(Ok(Ok(granted))) => {
                    if ahead > 0 && granted > 1 {
                        leases.add(&bucket, granted - 1, ahead, false);
                    }
                }
                Ok(Ok(Err(retry_after))) => return Ok(refusal(tenant, retry_after)),
                Ok(Err(error)) => tracing::warn!(
                    %bucket, %error,
                    "shared rate-limit store failed; admitted on this replica's limit alone"
                ),
                Err(_) => tracing::warn!(
                    %bucket,
                    timeout_ms = SHARED_STORE_TIMEOUT.as_millis() as u64,
                    "shared rate-limit store did not answer; admitted on this replica's limit alone"
                ),
            }
            inner.call(req).await
        })
    }
}

/// The `RESOURCE_EXHAUSTED` answer to a request of `tenant` over its quota.
fn refusal<ResBody: Default>(tenant: String, retry_after: Duration) -> http::Response<ResBody> {
    tracing::info!(
        %tenant,
        retry_after_ms = retry_after.as_millis() as u64,
        "rate limit exceeded"
    );
    Status::from(AuthError::RateLimited {
        tenant,
        retry_after,
    })
    .into_http::<ResBody>()
}
