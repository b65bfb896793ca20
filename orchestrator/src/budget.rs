//! Token and cost budgets per tenant, per UTC day and month.
//!
//! [`Budgets`] reads a tenant's spend from the [`UsageLedger`]
//! (`quarry.usage_daily`), cached for [`SPENT_CACHE`] so that a check is not
//! a database round trip per model call, plus the spend of this process's
//! Asks in flight that is not charged yet. An `Ask` is refused up front with
//! `RESOURCE_EXHAUSTED` and `RetryInfo` (the time until the window resets)
//! when its tenant has spent a budget, and each of its model calls (agentic
//! steps, the routing call) is checked first: over a budget the Ask ends
//! with `LIMIT_REACHED` and a note naming the budget. Every Ask is charged
//! when it ends — its model calls, the SQL tool's it reported included —
//! and the tenant's cached spend is dropped then. Windows are UTC calendar
//! days and months. A ledger that cannot be read lets the Ask through
//! (logged): budgets do not take the service down.

pub mod grpc;

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use chrono::{Datelike, NaiveDate, Utc};
use quarry_db::usage::{Spent, UsageAmounts, UsageLedger};
use serde::Deserialize;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::warn;

/// How long a tenant's spend read from the ledger is reused.
pub const SPENT_CACHE: Duration = Duration::from_secs(2);

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

/// Tokens and USD of an Ask noted as in flight, not yet charged.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Noted {
    pub(crate) tokens: u64,
    pub(crate) usd: f64,
}

/// The budgets in force, the ledger they are checked against, and this
/// process's spend not yet charged.
#[derive(Debug)]
pub struct Budgets {
    config: BudgetConfig,
    ledger: UsageLedger,
    spent: moka::sync::Cache<String, Spent>,
    uncharged: Mutex<HashMap<String, Noted>>,
}

impl Budgets {
    /// Budgets `config` over `ledger`.
    pub fn new(config: BudgetConfig, ledger: UsageLedger) -> Self {
        Self {
            config,
            ledger,
            spent: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(SPENT_CACHE)
                .build(),
            uncharged: Mutex::new(HashMap::new()),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// The ledger usage is charged to.
    pub fn ledger(&self) -> &UsageLedger {
        &self.ledger
    }

    /// Checks `tenant`'s spend (charged, plus this process's in flight)
    /// against its limits.
    ///
    /// # Errors
    /// [`OverBudget`] naming the first budget spent.
    pub async fn check(&self, tenant: &str) -> Result<(), OverBudget> {
        let limits = self.config.limits(tenant);
        if limits.unlimited() {
            return Ok(());
        }
        let mut spent = match self.spent.get(tenant) {
            Some(spent) => spent,
            None => match self.ledger.spent(tenant).await {
                Ok(spent) => {
                    self.spent.insert(tenant.to_owned(), spent);
                    spent
                }
                Err(error) => {
                    warn!(%tenant, %error, "cannot read the tenant's usage; budgets not checked");
                    return Ok(());
                }
            },
        };
        let in_flight = self.lock().get(tenant).copied().unwrap_or_default();
        spent.day_tokens += in_flight.tokens;
        spent.month_tokens += in_flight.tokens;
        spent.day_usd += in_flight.usd;
        spent.month_usd += in_flight.usd;
        match over_budget(&limits, &spent) {
            Some(over) => Err(over),
            None => Ok(()),
        }
    }

    /// Notes `delta` more spend of an Ask of `tenant` in flight.
    pub(crate) fn note(&self, tenant: &str, delta: Noted) {
        if delta == Noted::default() {
            return;
        }
        let mut uncharged = self.lock();
        let entry = uncharged.entry(tenant.to_owned()).or_default();
        entry.tokens += delta.tokens;
        entry.usd += delta.usd;
    }

    /// Charges an Ask's `amounts` to `tenant`, and forgets the `noted`
    /// spend it had in flight and the tenant's cached spend. A ledger that
    /// cannot be written is logged.
    pub(crate) async fn charge(&self, tenant: &str, amounts: &UsageAmounts, noted: Noted) {
        if let Err(error) = self.ledger.charge(tenant, amounts).await {
            warn!(%tenant, %error, "could not charge the tenant's usage");
        }
        self.spent.invalidate(tenant);
        let mut uncharged = self.lock();
        if let Some(entry) = uncharged.get_mut(tenant) {
            entry.tokens = entry.tokens.saturating_sub(noted.tokens);
            entry.usd = (entry.usd - noted.usd).max(0.0);
            if entry.tokens == 0 && entry.usd <= 0.0 {
                uncharged.remove(tenant);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Noted>> {
        self.uncharged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
