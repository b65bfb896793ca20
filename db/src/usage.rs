//! Usage per tenant and UTC day, in `quarry.usage_daily` (migration V10;
//! V13 adds cached prompt tokens):
//! charged with increments ([`UsageLedger::charge`]), read back for budgets
//! ([`UsageLedger::spent`]) and reports ([`UsageLedger::report`]); the
//! budget holds of Asks in flight (`quarry.budget_holds`, migration V11),
//! shared by every replica ([`UsageLedger::admit`]).

use std::time::Duration;

use uuid::Uuid;

use crate::{Pool, error_text};

/// Amounts charged to a tenant's current UTC day, or a day's totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageAmounts {
    /// Requests: Asks and executed SQL statements.
    pub requests: i64,
    /// Asks.
    pub asks: i64,
    /// Model calls (agentic steps, routing, the SQL tool's).
    pub model_calls: i64,
    /// Prompt tokens the models reported.
    pub prompt_tokens: i64,
    /// Completion tokens the models reported.
    pub completion_tokens: i64,
    /// Of `prompt_tokens`, those the model servers served from their prompt
    /// cache (migration V13).
    pub cached_prompt_tokens: i64,
    /// Cost in USD of the calls with a configured price.
    pub cost_usd: f64,
    /// Rows returned by SQL statements.
    pub rows: i64,
    /// Bytes returned by SQL statements.
    pub bytes: i64,
}

impl std::ops::AddAssign<&UsageAmounts> for UsageAmounts {
    /// Adds every amount of `other` to this one's.
    fn add_assign(&mut self, other: &UsageAmounts) {
        self.requests += other.requests;
        self.asks += other.asks;
        self.model_calls += other.model_calls;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_prompt_tokens += other.cached_prompt_tokens;
        self.cost_usd += other.cost_usd;
        self.rows += other.rows;
        self.bytes += other.bytes;
    }
}

impl UsageAmounts {
    /// Prompt plus completion tokens.
    pub fn tokens(&self) -> i64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// One tenant's usage on one UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageDay {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    /// What was used that day.
    pub amounts: UsageAmounts,
}

/// A tenant's tokens and cost in the current UTC day and month.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    /// Tokens today.
    pub day_tokens: u64,
    /// USD today.
    pub day_usd: f64,
    /// Tokens this month.
    pub month_tokens: u64,
    /// USD this month.
    pub month_usd: f64,
}

/// What an Ask in flight holds against its tenant's budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Held {
    /// Tokens.
    pub tokens: u64,
    /// USD.
    pub usd: f64,
}

/// A tenant's budget limits; `0` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Tokens per UTC day.
    pub tokens_per_day: u64,
    /// Tokens per UTC calendar month.
    pub tokens_per_month: u64,
    /// USD per UTC day.
    pub usd_per_day: f64,
    /// USD per UTC calendar month.
    pub usd_per_month: f64,
}

/// Reads a [`Spent`] from `row`'s columns `from..from + 4` (day tokens, day
/// USD, month tokens, month USD).
fn spent_of(row: &tokio_postgres::Row, from: usize) -> Spent {
    let tokens = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Spent {
        day_tokens: tokens(from),
        day_usd: row.get(from + 1),
        month_tokens: tokens(from + 2),
        month_usd: row.get(from + 3),
    }
}

/// Writes and reads `quarry.usage_daily` and the budget holds of Asks in
/// flight (`quarry.budget_holds`).
#[derive(Debug, Clone)]
pub struct UsageLedger {
    pool: Pool,
    /// Where charges may be queued ([`crate::write_behind`]): flushed
    /// before a report, so a report includes them.
    behind: Option<crate::write_behind::WriteBehind>,
}

pub(crate) const COLUMNS: &str = "requests, asks, model_calls, prompt_tokens, completion_tokens, cost_usd, rows, bytes, \
     cached_prompt_tokens";

/// The `ON CONFLICT … DO UPDATE SET` list adding each of the [`COLUMNS`]
/// of the proposed row (`EXCLUDED`) to the stored one.
pub(crate) fn increments() -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{c} = usage_daily.{c} + EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The upsert adding one charge to a tenant's day (`$1` tenant, `$2`…`$10`
/// the [`COLUMNS`] in order, `$7` in USD as `float8`).
static CHARGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let updates = increments();
    format!(
        "INSERT INTO quarry.usage_daily (tenant, day, {COLUMNS}) \
         VALUES ($1, (now() AT TIME ZONE 'UTC')::date, $2, $3, $4, $5, $6, \
         $7::float8::numeric, $8, $9, $10) \
         ON CONFLICT (tenant, day) DO UPDATE SET {updates}"
    )
});

/// [`CHARGE`] that also deletes the budget hold `$11`, in the same
/// statement (a data-modifying `WITH`, which runs whether or not the rest
/// reads it; PostgreSQL 16 docs §7.8.4): one atomic statement, one round
/// trip, where `BEGIN`, the upsert, the `DELETE` and `COMMIT` took four.
static CHARGE_RELEASING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH released AS (DELETE FROM quarry.budget_holds WHERE hold_id = $11) {}",
        *CHARGE
    )
});

impl UsageLedger {
    /// A ledger on `pool` (the database holding the `quarry` schema).
    pub fn new(pool: Pool) -> Self {
        Self { pool, behind: None }
    }

    /// The ledger whose [`Self::report`] first stores the charges queued
    /// to `behind` (the SQL tool's, in this process).
    #[must_use]
    pub fn with_write_behind(mut self, behind: crate::write_behind::WriteBehind) -> Self {
        self.behind = Some(behind);
        self
    }

    /// Adds `amounts` to `tenant`'s current UTC day.
    ///
    /// # Errors
    /// The pool's or PostgreSQL's error, as text.
    pub async fn charge(&self, tenant: &str, amounts: &UsageAmounts) -> Result<(), String> {
        self.charge_releasing(tenant, amounts, None).await
    }

    /// Queues `amounts` for `tenant`'s current UTC day on the write-behind
    /// ([`Self::with_write_behind`]) and returns `true`; `false`, queuing
    /// nothing, when this ledger has none. For a charge no budget reads
    /// (no hold to release): it is stored within milliseconds, a report of
    /// this ledger includes it, and another replica sees it once stored.
    pub fn charge_behind(&self, tenant: &str, amounts: &UsageAmounts) -> bool {
        let Some(behind) = &self.behind else {
            return false;
        };
        behind.charge(tenant, amounts.clone());
        true
    }

    /// Adds `amounts` to `tenant`'s current UTC day and, in the same
    /// statement ([`CHARGE_RELEASING`]), deletes the budget hold `hold` (see
    /// [`Self::admit`]), so that no replica ever counts the spend twice or
    /// not at all.
    ///
    /// # Errors
    /// The pool's or PostgreSQL's error, as text.
    pub async fn charge_releasing(
        &self,
        tenant: &str,
        amounts: &UsageAmounts,
        hold: Option<Uuid>,
    ) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let a = amounts;
        // one statement either way (atomic on its own): prepared once per
        // connection (deadpool's statement cache), parsed and planned once,
        // not on every Ask
        let statement = if hold.is_some() {
            &*CHARGE_RELEASING
        } else {
            &*CHARGE
        };
        let charge = client
            .prepare_cached(statement)
            .await
            .map_err(|e| error_text(&e))?;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &tenant,
            &a.requests,
            &a.asks,
            &a.model_calls,
            &a.prompt_tokens,
            &a.completion_tokens,
            &a.cost_usd,
            &a.rows,
            &a.bytes,
            &a.cached_prompt_tokens,
        ];
        if let Some(hold) = &hold {
            params.push(hold);
        }
        client
            .execute(&charge, &params)
            .await
            .map_err(|e| error_text(&e))?;
        Ok(())
    }

    /// `tenant`'s tokens and cost charged in the current UTC day and month
    /// (what Asks in flight hold left out; see [`Self::spent`]).
    ///
    /// # Errors
    /// The pool's or PostgreSQL's error, as text.
    pub async fn charged(&self, tenant: &str) -> Result<Spent, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let row = client
            .query_one(
                "WITH today AS (SELECT (now() AT TIME ZONE 'UTC')::date AS d) \
                 SELECT \
                   coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE day = today.d), 0)::bigint, \
                   coalesce(sum(cost_usd) FILTER (WHERE day = today.d), 0)::float8, \
                   coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint, \
                   coalesce(sum(cost_usd), 0)::float8 \
                 FROM today LEFT JOIN quarry.usage_daily u \
                   ON u.tenant = $1 AND u.day >= date_trunc('month', today.d)::date \
                 GROUP BY today.d",
                &[&tenant],
            )
            .await
            .map_err(|e| error_text(&e))?;
        Ok(spent_of(&row, 0))
    }

    /// `tenant`'s tokens and cost in the current UTC day and month: charged,
    /// plus what every replica's Asks in flight hold (`quarry.budget_holds`,
    /// live holds only).
    ///
    /// # Errors
    /// The pool's or PostgreSQL's error, as text.
    pub async fn spent(&self, tenant: &str) -> Result<Spent, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let row = client
            .query_one("SELECT * FROM quarry.budget_spent($1, NULL)", &[&tenant])
            .await
            .map_err(|e| error_text(&e))?;
        Ok(spent_of(&row, 0))
    }

    /// Admits the next model call of the Ask holding `hold` for `tenant`,
    /// atomically across replicas (one call of `quarry.budget_admit`,
    /// migration V11): under the tenant's advisory transaction lock it sets
    /// the hold to `so_far` (what the Ask has spent, not charged), reads the
    /// spend (charged plus every live hold) and, when no limit of `limits`
    /// is reached, adds to the hold a reservation for this call — the
    /// tenant's mean tokens and USD per model call today — which other
    /// Asks see until the Ask is charged ([`Self::charge_releasing`]) or
    /// the hold expires after `ttl`. Returns whether the call is admitted
    /// and the spend it was judged on.
    ///
    /// # Errors
    /// The pool's or PostgreSQL's error, as text.
    pub async fn admit(
        &self,
        tenant: &str,
        hold: Uuid,
        so_far: Held,
        limits: &Limits,
        ttl: Duration,
    ) -> Result<(bool, Spent), String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let admit = client
            .prepare_cached("SELECT * FROM quarry.budget_admit($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .await
            .map_err(|e| error_text(&e))?;
        let row = client
            .query_one(
                &admit,
                &[
                    &tenant,
                    &hold,
                    &int(so_far.tokens),
                    &so_far.usd,
                    &ttl.as_secs_f64(),
                    &int(limits.tokens_per_day),
                    &int(limits.tokens_per_month),
                    &limits.usd_per_day,
                    &limits.usd_per_month,
                ],
            )
            .await
            .map_err(|e| error_text(&e))?;
        Ok((row.get(0), spent_of(&row, 1)))
    }

    /// `tenant`'s usage per day over the last `days` UTC days (today
    /// included), newest first; days without use are left out. With a
    /// write-behind ([`Self::with_write_behind`]), the charges queued to it
    /// before the call are stored first (waiting at most
    /// [`crate::write_behind::FLUSH_TIMEOUT`]).
    ///
    /// # Errors
    /// The pool's or PostgreSQL's error, as text.
    pub async fn report(&self, tenant: &str, days: u32) -> Result<Vec<UsageDay>, String> {
        if let Some(behind) = &self.behind
            && !behind.flush().await
        {
            tracing::warn!("usage charges still queued are missing from this report");
        }
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let days = i32::try_from(days.max(1)).unwrap_or(i32::MAX);
        let rows = client
            .query(
                "SELECT to_char(day, 'YYYY-MM-DD'), requests, asks, model_calls, prompt_tokens, \
                 completion_tokens, cost_usd::float8, rows, bytes, cached_prompt_tokens \
                 FROM quarry.usage_daily \
                 WHERE tenant = $1 AND day > (now() AT TIME ZONE 'UTC')::date - $2::int \
                 ORDER BY day DESC",
                &[&tenant, &days],
            )
            .await
            .map_err(|e| error_text(&e))?;
        Ok(rows
            .iter()
            .map(|r| UsageDay {
                day: r.get(0),
                amounts: UsageAmounts {
                    requests: r.get(1),
                    asks: r.get(2),
                    model_calls: r.get(3),
                    prompt_tokens: r.get(4),
                    completion_tokens: r.get(5),
                    cost_usd: r.get(6),
                    rows: r.get(7),
                    bytes: r.get(8),
                    cached_prompt_tokens: r.get(9),
                },
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    #[tokio::test]
    async fn charges_add_up_per_tenant_and_day() {
        let db = TestDb::create().await;
        crate::migrate(db.pool()).await.unwrap();
        let ledger = UsageLedger::new(db.pool().clone());
        assert_eq!(ledger.spent("a").await.unwrap(), Spent::default());
        let ask = UsageAmounts {
            requests: 1,
            asks: 1,
            model_calls: 2,
            prompt_tokens: 100,
            completion_tokens: 20,
            cached_prompt_tokens: 64,
            cost_usd: 0.25,
            ..UsageAmounts::default()
        };
        ledger.charge("a", &ask).await.unwrap();
        ledger.charge("a", &ask).await.unwrap();
        ledger
            .charge(
                "b",
                &UsageAmounts {
                    requests: 1,
                    rows: 3,
                    bytes: 40,
                    ..UsageAmounts::default()
                },
            )
            .await
            .unwrap();
        let spent = ledger.spent("a").await.unwrap();
        assert_eq!(spent.day_tokens, 240);
        assert_eq!(spent.month_tokens, 240);
        assert!((spent.day_usd - 0.5).abs() < 1e-9);
        let report = ledger.report("a", 7).await.unwrap();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].amounts.asks, 2);
        assert_eq!(report[0].amounts.model_calls, 4);
        assert_eq!(report[0].amounts.cached_prompt_tokens, 128);
        // cached tokens are part of the prompt tokens, not counted twice
        assert_eq!(report[0].amounts.tokens(), 240);
        assert_eq!(report[0].amounts.rows, 0);
        // an earlier day of this month counts for the month, not the day
        let client = db.pool().get().await.unwrap();
        client
            .execute(
                "UPDATE quarry.usage_daily SET day = day - 40 WHERE tenant = 'b'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(ledger.report("b", 7).await.unwrap(), vec![]);
        assert_eq!(ledger.report("b", 41).await.unwrap()[0].amounts.bytes, 40);
    }

    #[tokio::test]
    async fn holds_of_asks_in_flight_count_for_every_replica_until_charged() {
        let db = TestDb::create().await;
        crate::migrate(db.pool()).await.unwrap();
        // two ledgers, as two replicas would have
        let (a, b) = (
            UsageLedger::new(db.pool().clone()),
            UsageLedger::new(db.pool().clone()),
        );
        let limits = Limits {
            tokens_per_day: 1000,
            ..Limits::default()
        };
        let ttl = Duration::from_secs(60);
        // a past Ask: 2 model calls, 200 tokens, so a call reserves 100
        let past = UsageAmounts {
            model_calls: 2,
            prompt_tokens: 150,
            completion_tokens: 50,
            ..UsageAmounts::default()
        };
        a.charge("t", &past).await.unwrap();
        let (h1, h2) = (Uuid::new_v4(), Uuid::new_v4());
        let (ok, spent) = a
            .admit(
                "t",
                h1,
                Held {
                    tokens: 600,
                    usd: 0.0,
                },
                &limits,
                ttl,
            )
            .await
            .unwrap();
        assert!(ok);
        assert_eq!(spent.day_tokens, 800, "charged 200 + held 600");
        // the other replica sees the hold and its reservation: 200 + 700
        assert_eq!(b.spent("t").await.unwrap().day_tokens, 900);
        assert_eq!(b.charged("t").await.unwrap().day_tokens, 200);
        let (ok, spent) = b
            .admit("t", h2, Held::default(), &limits, ttl)
            .await
            .unwrap();
        assert!(ok, "900 < 1000");
        assert_eq!(spent.day_tokens, 900);
        // h1's call spent its 100: 200 + 700 + h2's 100 reaches 1000, so
        // h1's next call is refused
        let (ok, spent) = a
            .admit(
                "t",
                h1,
                Held {
                    tokens: 700,
                    usd: 0.0,
                },
                &limits,
                ttl,
            )
            .await
            .unwrap();
        assert!(!ok);
        assert_eq!(spent.day_tokens, 1000);
        // charging h2 (it spent nothing) releases its reservation
        b.charge_releasing("t", &UsageAmounts::default(), Some(h2))
            .await
            .unwrap();
        assert_eq!(a.spent("t").await.unwrap().day_tokens, 900);
        // charging h1 what it spent adds the charge and drops its hold at once
        let spent_by_h1 = UsageAmounts {
            prompt_tokens: 100,
            ..UsageAmounts::default()
        };
        a.charge_releasing("t", &spent_by_h1, Some(h1))
            .await
            .unwrap();
        assert_eq!(b.charged("t").await.unwrap().day_tokens, 300);
        assert_eq!(b.spent("t").await.unwrap().day_tokens, 300, "no hold left");
        // the hold back, to see an expired one not count
        a.admit(
            "t",
            h1,
            Held {
                tokens: 600,
                usd: 0.0,
            },
            &limits,
            ttl,
        )
        .await
        .unwrap();
        assert!(a.spent("t").await.unwrap().day_tokens > 900);
        // an expired hold no longer counts
        let client = db.pool().get().await.unwrap();
        client
            .execute(
                "UPDATE quarry.budget_holds SET expires_at = now() - interval '1 s'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(a.spent("t").await.unwrap().day_tokens, 300);
        // another tenant is not held back
        assert_eq!(a.spent("u").await.unwrap(), Spent::default());
    }
}
