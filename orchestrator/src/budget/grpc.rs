//! gRPC adapter: `quarry.v1.UsageService` over [`Budgets`]' ledger.

use std::sync::Arc;

use quarry_auth::Principal;
use quarry_proto::{
    status::bad_request,
    v1::{GetUsageRequest, GetUsageResponse, UsageDay, usage_service_server::UsageService},
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::Budgets;

/// Most days one report covers.
pub const MAX_DAYS: u32 = 366;

/// The tonic service implementation.
#[derive(Debug, Clone)]
pub struct UsageGrpc {
    budgets: Arc<Budgets>,
}

impl UsageGrpc {
    /// Serves the usage and budgets of `budgets`.
    pub fn new(budgets: Arc<Budgets>) -> Self {
        Self { budgets }
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[tonic::async_trait]
impl UsageService for UsageGrpc {
    #[instrument(skip(self, request))]
    async fn get_usage(
        &self,
        request: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let principal = Principal::of(&request)?;
        let days = match request.get_ref().days {
            0 => 7,
            n if n > MAX_DAYS => {
                return Err(bad_request("days", format!("must be at most {MAX_DAYS}")));
            }
            n => n,
        };
        let tenant = &principal.tenant;
        let ledger = self.budgets.ledger();
        let unavailable = |error: String| Status::unavailable(format!("usage: {error}"));
        let report = ledger.report(tenant, days).await.map_err(unavailable)?;
        let spent = ledger.charged(tenant).await.map_err(unavailable)?;
        let limits = self.budgets.config().limits(tenant);
        Ok(Response::new(GetUsageResponse {
            tenant: tenant.clone(),
            days: report
                .into_iter()
                .map(|d| UsageDay {
                    day: d.day,
                    requests: count(d.amounts.requests),
                    asks: count(d.amounts.asks),
                    model_calls: count(d.amounts.model_calls),
                    prompt_tokens: count(d.amounts.prompt_tokens),
                    completion_tokens: count(d.amounts.completion_tokens),
                    cached_prompt_tokens: count(d.amounts.cached_prompt_tokens),
                    cost_usd: d.amounts.cost_usd,
                    rows: count(d.amounts.rows),
                    bytes: count(d.amounts.bytes),
                })
                .collect(),
            budgets: Some(quarry_proto::v1::Budgets {
                tokens_per_day: limits.tokens_per_day,
                tokens_per_month: limits.tokens_per_month,
                usd_per_day: limits.usd_per_day,
                usd_per_month: limits.usd_per_month,
            }),
            month_tokens: spent.month_tokens,
            month_usd: spent.month_usd,
        }))
    }
}
