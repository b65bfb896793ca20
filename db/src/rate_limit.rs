//! Request rate limits shared by every replica on one database
//! (`quarry.rate_limits`, migration V11).
//!
//! GCRA, the generic cell rate algorithm (ITU-T I.371, annex A, "virtual
//! scheduling"): each bucket has a theoretical arrival time `TAT`. A request
//! at time `now` conforms when `TAT <= now + τ`, where the emission
//! interval `T = 1 / rate` and the tolerance `τ = (burst − 1) · T`; an
//! admitted request sets `TAT = max(TAT, now) + T`. [`admit`] does the test
//! and the update in one `INSERT … ON CONFLICT DO UPDATE … WHERE` statement
//! — one round trip, atomic under concurrent replicas (the row lock orders
//! them) — with `now` taken from PostgreSQL's clock, so replicas whose
//! clocks differ still share one time line.

use std::time::Duration;

use crate::{Pool, Result};

/// The one statement: `$1` bucket, `$2` emission interval `T` in seconds,
/// `$3` tolerance `τ` in seconds. Returns one row: whether this request
/// was admitted (and `TAT` advanced), and for a refused one the wait before
/// a request would conform. The wait is read a moment after the refusal,
/// so it may already be 0: a refusal is told by `admitted`, never by the
/// wait (which once admitted requests without advancing `TAT`). A refused
/// request whose bucket row was inserted by a concurrent statement after
/// this one's snapshot returns no row.
const ADMIT: &str = "\
WITH admitted AS (
    INSERT INTO quarry.rate_limits AS r (bucket, tat)
    VALUES ($1, clock_timestamp() + make_interval(secs => $2))
    ON CONFLICT (bucket) DO UPDATE
        SET tat = greatest(r.tat + make_interval(secs => $2), EXCLUDED.tat)
        WHERE r.tat <= EXCLUDED.tat - make_interval(secs => $2) + make_interval(secs => $3)
    RETURNING true AS admitted, 0::float8 AS wait
)
SELECT admitted, wait FROM admitted
UNION ALL
SELECT false, greatest(extract(epoch FROM r.tat - clock_timestamp())::float8 - $3, 0)
FROM quarry.rate_limits r
WHERE r.bucket = $1 AND NOT EXISTS (SELECT 1 FROM admitted)";

/// The shortest wait a refusal names.
const MIN_RETRY: Duration = Duration::from_millis(1);

/// A GCRA quota: `rate` requests per second, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gcra {
    /// Emission interval `T`: one request per this long.
    pub interval: Duration,
    /// Requests admitted at once from a full bucket (at least 1).
    pub burst: u32,
}

impl Gcra {
    /// `per_second` requests per second (at least 1), `burst` at once (at
    /// least 1).
    pub fn per_second(per_second: u32, burst: u32) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / f64::from(per_second.max(1))),
            burst: burst.max(1),
        }
    }

    /// The tolerance `τ = (burst − 1) · T`.
    pub fn tolerance(&self) -> Duration {
        self.interval * (self.burst - 1)
    }
}

/// Admits one request to `bucket` under `quota`, or returns the wait until
/// one would be admitted. One statement on a connection of `pool`.
///
/// # Errors
/// No connection, or PostgreSQL's error (e.g. migration V11 not applied).
pub async fn admit(pool: &Pool, bucket: &str, quota: Gcra) -> Result<Result<(), Duration>> {
    let client = pool.get().await?;
    let interval = quota.interval.as_secs_f64();
    let tolerance = quota.tolerance().as_secs_f64();
    // prepared once per connection (deadpool's statement cache)
    let admit = client.prepare_cached(ADMIT).await?;
    let row = client
        .query_opt(&admit, &[&bucket, &interval, &tolerance])
        .await?;
    Ok(match row {
        Some(row) if row.get::<_, bool>(0) => Ok(()),
        // refused: at least a millisecond, so a client's retry is not at once
        Some(row) => Err(Duration::from_secs_f64(
            row.get::<_, f64>(1).max(MIN_RETRY.as_secs_f64()),
        )),
        // refused, bucket created concurrently: about one interval to wait
        None => Err(quota.interval),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    #[tokio::test]
    async fn a_full_bucket_admits_the_burst_then_one_per_interval() {
        let db = TestDb::create().await;
        crate::migrate(db.pool()).await.unwrap();
        // one per 10 s: nothing replenishes while the test runs
        let quota = Gcra {
            interval: Duration::from_secs(10),
            burst: 3,
        };
        for _ in 0..3 {
            assert_eq!(admit(db.pool(), "t/a", quota).await.unwrap(), Ok(()));
        }
        let wait = admit(db.pool(), "t/a", quota).await.unwrap().unwrap_err();
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        // another bucket is its own
        assert_eq!(admit(db.pool(), "u/a", quota).await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_quota() {
        let db = TestDb::create().await;
        crate::migrate(db.pool()).await.unwrap();
        let quota = Gcra {
            interval: Duration::from_secs(60),
            burst: 5,
        };
        let tries = (0..40).map(|_| admit(db.pool(), "t/shared", quota));
        let admitted = futures::future::join_all(tries)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(Ok(()))))
            .count();
        assert_eq!(admitted, 5);
    }

    #[tokio::test]
    async fn cells_replenish_at_the_rate() {
        let db = TestDb::create().await;
        crate::migrate(db.pool()).await.unwrap();
        let quota = Gcra::per_second(20, 1);
        assert_eq!(admit(db.pool(), "t/r", quota).await.unwrap(), Ok(()));
        let wait = admit(db.pool(), "t/r", quota).await.unwrap().unwrap_err();
        assert!(wait <= Duration::from_millis(50), "{wait:?}");
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
        assert_eq!(admit(db.pool(), "t/r", quota).await.unwrap(), Ok(()));
    }
}
