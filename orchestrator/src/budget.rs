//! Token and cost budgets per tenant, per UTC day and month.
//!
//! [`Budgets`] reads a tenant's spend from the [`UsageLedger`] in Quarry's
//! database, shared by every replica: what is charged
//! (`quarry.usage_daily`) plus what the Asks in flight on any replica hold
//! (`quarry.budget_holds`, migration V11). An `Ask` is refused up front
//! with `RESOURCE_EXHAUSTED` and `RetryInfo` (the time until the window
//! resets) when its tenant has spent a budget, and each of its model calls
//! (agentic steps, the routing call) is admitted first ([`Budgets::admit`],
//! one statement, atomic per tenant across replicas): over a budget the Ask
//! ends with `LIMIT_REACHED` and a note naming the budget; admitted, the
//! Ask's hold becomes what it has spent so far plus a reservation for the
//! call (the tenant's mean tokens and USD per model call today), which the
//! other Asks of the tenant, on every replica, count against the limit.
//! So the limit is exceeded by at most what the calls admitted last spend
//! beyond their reservation, however many replicas and Asks run at once.
//! Every Ask is charged when it ends — its model calls, the SQL tool's it
//! reported included — releasing its hold in the same transaction. A hold
//! whose replica died stops counting after [`HOLD_TTL`]. Windows are UTC
//! calendar days and months. A ledger that cannot be read or written lets
//! the Ask through (logged): budgets do not take the service down.

pub mod grpc;

use std::{collections::HashMap, time::Duration};

use chrono::{Datelike, NaiveDate, Utc};
use quarry_db::usage::{Held, Limits, Spent, UsageAmounts, UsageLedger};
use serde::Deserialize;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::warn;
use uuid::Uuid;

/// How long the hold of an Ask in flight counts after its last model call
/// was admitted: past it (the replica running the Ask died, or the Ask went
/// that long without a model call) the hold is ignored and deleted.
pub const HOLD_TTL: Duration = Duration::from_secs(15 * 60);

/// One tenant's limits; `0` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetLimits {
    /// Tokens (prompt plus completion) per UTC day.
    pub tokens_per_day: u64,
    /// Tokens per UTC calendar month.
    pub tokens_per_month: u64,
    /// USD per UTC day, of model calls with a configured price.
    pub usd_per_day: f64,
    /// USD per UTC calendar month.
    pub usd_per_month: f64,
}

impl BudgetLimits {
    /// Whether no limit is set.
    pub fn unlimited(&self) -> bool {
        self.tokens_per_day == 0
            && self.tokens_per_month == 0
            && self.usd_per_day <= 0.0
            && self.usd_per_month <= 0.0
    }
}

/// A tenant's changes to the default limits; keys left out keep the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// See [`BudgetLimits::tokens_per_day`].
    pub tokens_per_day: Option<u64>,
    /// See [`BudgetLimits::tokens_per_month`].
    pub tokens_per_month: Option<u64>,
    /// See [`BudgetLimits::usd_per_day`].
    pub usd_per_day: Option<f64>,
    /// See [`BudgetLimits::usd_per_month`].
    pub usd_per_month: Option<f64>,
}

/// `[budgets]`: default limits per tenant and `[budgets.tenants.<tenant>]`
/// changes. All default to `0` (no limit).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Tokens per tenant per UTC day.
    pub tokens_per_day: u64,
    /// Tokens per tenant per UTC calendar month.
    pub tokens_per_month: u64,
    /// USD per tenant per UTC day (model calls with a configured price).
    pub usd_per_day: f64,
    /// USD per tenant per UTC calendar month.
    pub usd_per_month: f64,
    /// Per-tenant changes to the limits above.
    pub tenants: HashMap<String, TenantLimits>,
}

impl BudgetConfig {
    /// The limits in force for `tenant`.
    pub fn limits(&self, tenant: &str) -> BudgetLimits {
        let t = self.tenants.get(tenant).copied().unwrap_or_default();
        BudgetLimits {
            tokens_per_day: t.tokens_per_day.unwrap_or(self.tokens_per_day),
            tokens_per_month: t.tokens_per_month.unwrap_or(self.tokens_per_month),
            usd_per_day: t.usd_per_day.unwrap_or(self.usd_per_day),
            usd_per_month: t.usd_per_month.unwrap_or(self.usd_per_month),
        }
    }
}

/// A tenant has spent one of its budgets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the tenant's {budget} budget of {limit} is spent; it resets at {resets}")]
pub struct OverBudget {
    /// Which budget: `daily token`, `monthly token`, `daily USD`, `monthly USD`.
    pub budget: &'static str,
    /// The limit, as configured.
    pub limit: String,
    /// When the window resets, in words.
    pub resets: &'static str,
    /// Time until the window resets (the `RetryInfo` delay).
    pub retry_after: Duration,
}

impl From<OverBudget> for Status {
    fn from(error: OverBudget) -> Self {
        Status::with_error_details(
            Code::ResourceExhausted,
            error.to_string(),
            ErrorDetails::with_retry_info(Some(error.retry_after)),
        )
    }
}

/// The first budget `spent` is over (spent reaches the limit), if any.
pub fn over_budget(limits: &BudgetLimits, spent: &Spent) -> Option<OverBudget> {
    const DAY: &str = "00:00 UTC";
    const MONTH: &str = "00:00 UTC on the first of next month";
    let now = Utc::now();
    let today = now.date_naive();
    let tomorrow = today.succ_opt().unwrap_or(today);
    let next_month = if today.month() == 12 {
        NaiveDate::from_ymd_opt(today.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(today.year(), today.month() + 1, 1)
    }
    .unwrap_or(tomorrow);
    let until = |day: NaiveDate| {
        let at = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        (at - now).to_std().unwrap_or(Duration::from_secs(1))
    };
    let over = |budget, limit: String, resets, day| OverBudget {
        budget,
        limit,
        resets,
        retry_after: until(day),
    };
    if limits.tokens_per_day > 0 && spent.day_tokens >= limits.tokens_per_day {
        return Some(over(
            "daily token",
            limits.tokens_per_day.to_string(),
            DAY,
            tomorrow,
        ));
    }
    if limits.usd_per_day > 0.0 && spent.day_usd >= limits.usd_per_day {
        return Some(over(
            "daily USD",
            format!("{}", limits.usd_per_day),
            DAY,
            tomorrow,
        ));
    }
    if limits.tokens_per_month > 0 && spent.month_tokens >= limits.tokens_per_month {
        return Some(over(
            "monthly token",
            limits.tokens_per_month.to_string(),
            MONTH,
            next_month,
        ));
    }
    if limits.usd_per_month > 0.0 && spent.month_usd >= limits.usd_per_month {
        return Some(over(
            "monthly USD",
            format!("{}", limits.usd_per_month),
            MONTH,
            next_month,
        ));
    }
    None
}

impl From<BudgetLimits> for Limits {
    fn from(l: BudgetLimits) -> Self {
        Limits {
            tokens_per_day: l.tokens_per_day,
            tokens_per_month: l.tokens_per_month,
            usd_per_day: l.usd_per_day,
            usd_per_month: l.usd_per_month,
        }
    }
}

/// The budgets in force and the ledger, shared by every replica, they are
/// checked against.
#[derive(Debug)]
pub struct Budgets {
    config: BudgetConfig,
    ledger: UsageLedger,
}

impl Budgets {
    /// Budgets `config` over `ledger`.
    pub fn new(config: BudgetConfig, ledger: UsageLedger) -> Self {
        Self { config, ledger }
    }

    /// The settings in force.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// The ledger usage is charged to.
    pub fn ledger(&self) -> &UsageLedger {
        &self.ledger
    }

    /// Checks `tenant`'s spend (charged, plus what its Asks in flight on
    /// every replica hold) against its limits: one statement, none when
    /// the tenant has no limit.
    ///
    /// # Errors
    /// [`OverBudget`] naming the first budget spent.
    pub async fn check(&self, tenant: &str) -> Result<(), OverBudget> {
        let limits = self.config.limits(tenant);
        if limits.unlimited() {
            return Ok(());
        }
        match self.ledger.spent(tenant).await {
            Ok(spent) => over_budget(&limits, &spent).map_or(Ok(()), Err),
            Err(error) => {
                warn!(%tenant, %error, "cannot read the tenant's usage; budgets not checked");
                Ok(())
            }
        }
    }

    /// Admits the next model call of the Ask holding `hold` that has spent
    /// `so_far` (not charged yet), and reserves the call's expected spend
    /// in the hold ([`UsageLedger::admit`]); see the module docs.
    ///
    /// # Errors
    /// [`OverBudget`] naming the first budget spent.
    pub async fn admit(&self, tenant: &str, hold: Uuid, so_far: Held) -> Result<(), OverBudget> {
        let limits = self.config.limits(tenant);
        if limits.unlimited() {
            return Ok(());
        }
        match self
            .ledger
            .admit(tenant, hold, so_far, &limits.into(), HOLD_TTL)
            .await
        {
            Ok((true, _)) => Ok(()),
            Ok((false, spent)) => over_budget(&limits, &spent).map_or(Ok(()), Err),
            Err(error) => {
                warn!(%tenant, %error, "cannot read the tenant's usage; budgets not checked");
                Ok(())
            }
        }
    }

    /// Charges an Ask's (or a SQL statement's) `amounts` to `tenant` and
    /// releases its `hold`, in one transaction. A ledger that cannot be
    /// written is logged.
    ///
    /// A tenant without limits has no hold to release (see
    /// [`Self::admit`]) and no budget reading its spend: its charge is
    /// queued on the ledger's write-behind when it has one
    /// ([`UsageLedger::charge_behind`]), one transaction fewer per Ask.
    pub async fn charge(&self, tenant: &str, amounts: &UsageAmounts, hold: Option<Uuid>) {
        if self.config.limits(tenant).unlimited() && self.ledger.charge_behind(tenant, amounts) {
            return;
        }
        if let Err(error) = self.ledger.charge_releasing(tenant, amounts, hold).await {
            warn!(%tenant, %error, "could not charge the tenant's usage");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_changes_keep_the_other_defaults() {
        let config: BudgetConfig = serde_json::from_str(
            r#"{"tokens_per_day": 100, "usd_per_month": 5,
                "tenants": {"big": {"tokens_per_day": 0}}}"#,
        )
        .unwrap();
        assert_eq!(config.limits("small").tokens_per_day, 100);
        assert_eq!(config.limits("big").tokens_per_day, 0);
        assert!((config.limits("big").usd_per_month - 5.0).abs() < 1e-9);
        assert!(serde_json::from_str::<BudgetConfig>(r#"{"token_per_day": 1}"#).is_err());
        assert!(BudgetConfig::default().limits("x").unlimited());
    }

    #[test]
    fn the_first_budget_spent_is_named_with_its_reset() {
        let limits = BudgetLimits {
            tokens_per_day: 100,
            tokens_per_month: 1000,
            usd_per_day: 0.0,
            usd_per_month: 2.0,
        };
        let mut spent = Spent {
            day_tokens: 99,
            month_tokens: 500,
            ..Spent::default()
        };
        assert_eq!(over_budget(&limits, &spent), None);
        spent.day_tokens = 100;
        let over = over_budget(&limits, &spent).unwrap();
        assert_eq!(
            over.to_string(),
            "the tenant's daily token budget of 100 is spent; it resets at 00:00 UTC"
        );
        assert!(over.retry_after <= Duration::from_secs(86_400));
        spent.day_tokens = 0;
        spent.month_usd = 2.5;
        let over = over_budget(&limits, &spent).unwrap();
        assert_eq!(over.budget, "monthly USD");
        assert!(over.retry_after <= Duration::from_secs(31 * 86_400));
        let status = Status::from(over);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.get_error_details().retry_info().is_some());
    }
}
