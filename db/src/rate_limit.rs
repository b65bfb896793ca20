//! Request rate limits shared by every replica on one database
//! (`quarry.rate_limits`, migrations V11 and V15).
//!
//! GCRA, the generic cell rate algorithm (ITU-T I.371, annex A, "virtual
//! scheduling"): each bucket has a theoretical arrival time `TAT`. A request
//! at time `now` conforms when `TAT <= now + τ`, where the emission
//! interval `T = 1 / rate` and the tolerance `τ = (burst − 1) · T`; an
//! admitted request sets `TAT = max(TAT, now) + T`. [`acquire`] does the
//! test and the update in one `INSERT … ON CONFLICT DO UPDATE … WHERE`
//! statement — one round trip, atomic under concurrent replicas (the row
//! lock orders them) — with `now` taken from PostgreSQL's clock, so
//! replicas whose clocks differ still share one time line.
//!
//! Cells ahead: an acquisition may also take up to `ahead` more cells, as
//! if that many more requests had arrived at once, but only while the
//! bucket stays drawn by at most half its tolerance ([`Gcra::headroom`]).
//! A replica spends them on later requests without a round trip
//! (`quarry_auth::RateLimit`); near the limit no cell is taken ahead, and
//! every request is tested here as before.

use std::time::Duration;

use crate::{Pool, Result};

/// The one statement: `$1` bucket, `$2` emission interval `T` in seconds,
/// `$3` tolerance `τ` in seconds, `$4` cells needed now (1 for a request,
/// 0 to only take cells ahead), `$5` cells wanted ahead, `$6` the headroom
/// `h` in seconds (cells ahead are granted only while the bucket stays
/// drawn by at most `h + T`). A bucket this statement creates is full
/// (`d = 0`), so it grants `$4 + min($5, ⌊h / T⌋)`.
///
/// With `d = max(TAT − now, 0)`, a request (`$4 = 1`) conforms when
/// `TAT ≤ now + τ`; it is granted `1 + m` cells with
/// `m = clamp(⌊(h − d) / T⌋, 0, $5)` and sets `TAT = max(TAT, now) + (1 + m)·T`.
/// Taking cells ahead only (`$4 = 0`) grants the same `m` when it is at
/// least 1. Returns one row: the cells granted (0 when refused), and for a
/// refused request the wait before one would conform. The wait is read a
/// moment after the refusal, so it may already be 0: a refusal is told by
/// the cells, never by the wait. A refused statement whose bucket row was
/// inserted by a concurrent statement after this one's snapshot returns
/// no row. `now` is PostgreSQL's clock, read once.
const ACQUIRE: &str = "\
WITH now AS (SELECT clock_timestamp() AS t),
granted AS (
    INSERT INTO quarry.rate_limits AS r (bucket, tat, granted)
    SELECT $1, t + make_interval(secs => $2::float8 * cells), cells
    FROM now, (SELECT $4::int + least($5::int, floor($6::float8 / $2::float8)::int) AS cells) fresh
    ON CONFLICT (bucket) DO UPDATE
        SET tat = greatest(r.tat, (SELECT t FROM now)) + make_interval(secs => $2::float8 * ($4::int + least($5::int,
                greatest(floor(($6::float8 - greatest(extract(epoch FROM r.tat - (SELECT t FROM now))::float8, 0)) / $2::float8), 0)::int))),
            granted = $4::int + least($5::int,
                greatest(floor(($6::float8 - greatest(extract(epoch FROM r.tat - (SELECT t FROM now))::float8, 0)) / $2::float8), 0)::int)
        WHERE CASE WHEN $4::int = 1
            THEN r.tat <= (SELECT t FROM now) + make_interval(secs => $3::float8)
            ELSE greatest(extract(epoch FROM r.tat - (SELECT t FROM now))::float8, 0) + $2::float8 <= $6::float8 END
    RETURNING r.granted, 0::float8 AS wait
)
SELECT granted, wait FROM granted
UNION ALL
SELECT 0, greatest(extract(epoch FROM r.tat - clock_timestamp())::float8 - $3::float8, 0)
FROM quarry.rate_limits r
WHERE r.bucket = $1 AND NOT EXISTS (SELECT 1 FROM granted)";

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

    /// The headroom `h = τ / 2` within which cells are taken ahead: only
    /// from the upper half of the bucket, so that a replica holding cells
    /// ahead never leaves the others less than half the burst.
    pub fn headroom(&self) -> Duration {
        self.tolerance() / 2
    }
}

/// What one acquisition asks for: the cell a request needs now (or none,
/// to only take cells ahead) and up to `ahead` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Whether a request waits on this acquisition (it then needs one
    /// conforming cell, and a refusal names the wait).
    pub now: bool,
    /// Cells to take ahead, granted only from the upper half of the bucket
    /// ([`Gcra::headroom`]).
    pub ahead: u32,
}

/// Acquires cells of `bucket` under `quota`: one statement on a connection
/// of `pool` (see `ACQUIRE` for the rule). Returns the cells granted —
/// with `want.now`, at least 1 (the request's) and up to `want.ahead`
/// more; without, 0 to `want.ahead` — or, for a refused request, the wait
/// until one would conform (at least [`MIN_RETRY`]).
///
/// # Errors
/// No connection, or PostgreSQL's error (e.g. migration V15 not applied).
pub async fn acquire(
    pool: &Pool,
    bucket: &str,
    quota: Gcra,
    want: Want,
) -> Result<Result<u32, Duration>> {
    let client = pool.get().await?;
    let interval = quota.interval.as_secs_f64();
    let tolerance = quota.tolerance().as_secs_f64();
    let headroom = quota.headroom().as_secs_f64();
    let needed = i32::from(want.now);
    let ahead = i32::try_from(want.ahead).unwrap_or(i32::MAX);
    // prepared once per connection (deadpool's statement cache)
    let acquire = client.prepare_cached(ACQUIRE).await?;
    let row = client
        .query_opt(
            &acquire,
            &[&bucket, &interval, &tolerance, &needed, &ahead, &headroom],
        )
        .await?;
    let granted = row
        .as_ref()
        .map_or(0, |row| u32::try_from(row.get::<_, i32>(0)).unwrap_or(0));
    Ok(match row {
        Some(_) if granted > 0 => Ok(granted),
        _ if !want.now => Ok(0),
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

    /// Admits one request to `bucket` under `quota`, or returns the wait
    /// until one would be admitted: [`acquire`] with no cells ahead.
    async fn admit(pool: &Pool, bucket: &str, quota: Gcra) -> Result<Result<(), Duration>> {
        let want = Want {
            now: true,
            ahead: 0,
        };
        Ok(acquire(pool, bucket, quota, want).await?.map(|_| ()))
    }

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
    async fn cells_ahead_come_only_from_the_upper_half_of_the_bucket() {
        let db = TestDb::create().await;
        crate::migrate(db.pool()).await.unwrap();
        // one per 10 s, burst 41: τ = 400 s, headroom 200 s = 20 cells
        let quota = Gcra {
            interval: Duration::from_secs(10),
            burst: 41,
        };
        let request = |ahead| Want { now: true, ahead };
        let refill = |ahead| Want { now: false, ahead };
        // a full bucket: the request's cell and 8 ahead
        assert_eq!(
            acquire(db.pool(), "t/a", quota, request(8)).await.unwrap(),
            Ok(9)
        );
        // taking ahead only: 8 more, then 3 (the half is reached at 20)
        assert_eq!(
            acquire(db.pool(), "t/a", quota, refill(8)).await.unwrap(),
            Ok(8)
        );
        assert_eq!(
            acquire(db.pool(), "t/a", quota, refill(8)).await.unwrap(),
            Ok(3)
        );
        assert_eq!(
            acquire(db.pool(), "t/a", quota, refill(8)).await.unwrap(),
            Ok(0)
        );
        // past the half a request still conforms, with nothing ahead, up
        // to the whole burst
        for _ in 20..41 {
            assert_eq!(
                acquire(db.pool(), "t/a", quota, request(8)).await.unwrap(),
                Ok(1)
            );
        }
        let wait = acquire(db.pool(), "t/a", quota, request(8))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        // a bucket created by a refill grants what is ahead only
        assert_eq!(
            acquire(db.pool(), "u/a", quota, refill(30)).await.unwrap(),
            Ok(20)
        );
        // a burst of 1 has no upper half: one cell per request
        let strict = Gcra::per_second(20, 1);
        assert_eq!(
            acquire(db.pool(), "v/a", strict, request(8)).await.unwrap(),
            Ok(1)
        );
        assert_eq!(
            acquire(db.pool(), "v/a", strict, refill(8)).await.unwrap(),
            Ok(0)
        );
    }

    #[tokio::test]
    async fn concurrent_acquisitions_grant_at_most_the_burst() {
        let db = TestDb::create().await;
        crate::migrate(db.pool()).await.unwrap();
        let quota = Gcra {
            interval: Duration::from_secs(60),
            burst: 21,
        };
        let tries = (0..40).map(|i| {
            let want = Want {
                now: i % 2 == 0,
                ahead: 3,
            };
            acquire(db.pool(), "t/shared", quota, want)
        });
        let granted: u32 = futures::future::join_all(tries)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap_or(0))
            .sum();
        assert_eq!(granted, 21);
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
