//! Per-tenant request rate limits: [`TenantRateLimiter`] and
//! [`RateLimitLayer`].

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

/// Every this many checks the limiter forgets tenants whose state is back
/// to "fresh", keeping the keyed store bounded by recently active tenants.
const PRUNE_EVERY: u64 = 4096;

/// A tenant's request quota.
///
/// Requests replenish at `requests_per_second`; up to `burst` may arrive at
/// once. Both must be at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained rate, requests per second per tenant.
    pub requests_per_second: NonZeroU32,
    /// Largest number of requests admitted at once per tenant.
    pub burst: NonZeroU32,
}

impl Default for RateLimitConfig {
    /// 20 requests per second, bursts of 40.
    fn default() -> Self {
        RateLimitConfig {
            requests_per_second: NonZeroU32::MIN.saturating_add(19),
            burst: NonZeroU32::MIN.saturating_add(39),
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
}

impl TenantRateLimiter {
    /// A limiter giving every tenant `config`'s quota.
    pub fn new(config: RateLimitConfig) -> Self {
        TenantRateLimiter {
            limiter: Arc::new(RateLimiter::keyed(config.quota())),
            checks: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Admit one request for `tenant`, or return how long until one would be
    /// admitted (governor's wait time from now).
    ///
    /// # Errors
    /// The tenant is over its quota: the wait until a request would be admitted.
    pub fn check(&self, tenant: &str) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
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
/// carries a google.rpc `RetryInfo` with governor's wait time; the inner
/// service is not called.
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
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        if let Some(principal) = req.extensions().get::<Principal>()
            && let Err(retry_after) = self.limiter.check(&principal.tenant)
        {
            tracing::info!(
                tenant = %principal.tenant,
                retry_after_ms = retry_after.as_millis() as u64,
                "rate limit exceeded"
            );
            let err = AuthError::RateLimited {
                tenant: principal.tenant.clone(),
                retry_after,
            };
            return Box::pin(future::ready(Ok(Status::from(err).into_http::<ResBody>())));
        }
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}
