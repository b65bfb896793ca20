//! Usage per tenant and UTC day, in `quarry.usage_daily` (migration V10):
//! charged with increments ([`UsageLedger::charge`]), read back for budgets
//! ([`UsageLedger::spent`]) and reports ([`UsageLedger::report`]).

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
    /// Cost in USD of the calls with a configured price.
    pub cost_usd: f64,
    /// Rows returned by SQL statements.
    pub rows: i64,
    /// Bytes returned by SQL statements.
    pub bytes: i64,
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

/// Writes and reads `quarry.usage_daily`.
#[derive(Debug, Clone)]
pub struct UsageLedger {
    pool: Pool,
}

const COLUMNS: &str =
    "requests, asks, model_calls, prompt_tokens, completion_tokens, cost_usd, rows, bytes";

impl UsageLedger {
    /// A ledger on `pool` (the database holding the `quarry` schema).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Adds `amounts` to `tenant`'s current UTC day.
    ///
    /// # Errors
    /// The pool's or PostgreSQL's error, as text.
    pub async fn charge(&self, tenant: &str, amounts: &UsageAmounts) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let a = amounts;
        let updates = COLUMNS
            .split(", ")
            .map(|c| format!("{c} = usage_daily.{c} + EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        client
            .execute(
                &format!(
                    "INSERT INTO quarry.usage_daily (tenant, day, {COLUMNS}) \
                     VALUES ($1, (now() AT TIME ZONE 'UTC')::date, $2, $3, $4, $5, $6, \
                     $7::float8::numeric, $8, $9) \
                     ON CONFLICT (tenant, day) DO UPDATE SET {updates}"
                ),
                &[
                    &tenant,
                    &a.requests,
                    &a.asks,
                    &a.model_calls,
                    &a.prompt_tokens,
                    &a.completion_tokens,
                    &a.cost_usd,
                    &a.rows,
                    &a.bytes,
                ],
            )
            .await
            .map_err(|e| error_text(&e))?;
        Ok(())
    }

    /// `tenant`'s tokens and cost in the current UTC day and month.
    ///
    /// # Errors
    /// The pool's or PostgreSQL's error, as text.
    pub async fn spent(&self, tenant: &str) -> Result<Spent, String> {
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
        let tokens = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(Spent {
            day_tokens: tokens(0),
            day_usd: row.get(1),
            month_tokens: tokens(2),
            month_usd: row.get(3),
        })
    }

    /// `tenant`'s usage per day over the last `days` UTC days (today
    /// included), newest first; days without use are left out.
    ///
    /// # Errors
    /// The pool's or PostgreSQL's error, as text.
    pub async fn report(&self, tenant: &str, days: u32) -> Result<Vec<UsageDay>, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let days = i32::try_from(days.max(1)).unwrap_or(i32::MAX);
        let rows = client
            .query(
                "SELECT to_char(day, 'YYYY-MM-DD'), requests, asks, model_calls, prompt_tokens, \
                 completion_tokens, cost_usd::float8, rows, bytes FROM quarry.usage_daily \
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
}
