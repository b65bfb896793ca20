//! `quarry usage`: the caller's tenant's usage per UTC day and its budgets.

use std::path::Path;

use anyhow::Context as _;
use quarry_proto::v1::{GetUsageRequest, usage_service_client::UsageServiceClient};
use quarry_server::client::status_error;

use super::Remote;

/// Arguments of `quarry usage`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Days to report, today included (at most 366).
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    #[command(flatten)]
    pub client: Remote,
}

/// Prints the token's tenant's usage per day, newest first, then the
/// budgets in force and this month's spend (needs the `usage:read` scope).
///
/// # Errors
/// The server refuses (no `usage:read`) or cannot be reached.
pub async fn run(args: Args, _config: Option<&Path>) -> anyhow::Result<()> {
    let Args { days, client } = args;
    let mut usage = UsageServiceClient::connect(client.server.clone())
        .await
        .with_context(|| format!("cannot connect to {}", client.server))?;
    let report = usage
        .get_usage(client.request(GetUsageRequest { days })?)
        .await
        .map_err(status_error)?
        .into_inner();
    println!("tenant {}", report.tenant);
    println!(
        "{:<10} {:>8} {:>6} {:>11} {:>13} {:>13} {:>17} {:>10} {:>8} {:>10}",
        "day",
        "requests",
        "asks",
        "model_calls",
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "cost_usd",
        "rows",
        "bytes"
    );
    for d in &report.days {
        println!(
            "{:<10} {:>8} {:>6} {:>11} {:>13} {:>13} {:>17} {:>10.6} {:>8} {:>10}",
            d.day,
            d.requests,
            d.asks,
            d.model_calls,
            d.prompt_tokens,
            d.cached_prompt_tokens,
            d.completion_tokens,
            d.cost_usd,
            d.rows,
            d.bytes
        );
    }
    let limit = |n: String, zero: bool| if zero { "none".to_owned() } else { n };
    if let Some(b) = report.budgets {
        println!(
            "budgets (UTC): tokens/day {}, tokens/month {}, USD/day {}, USD/month {}",
            limit(b.tokens_per_day.to_string(), b.tokens_per_day == 0),
            limit(b.tokens_per_month.to_string(), b.tokens_per_month == 0),
            limit(b.usd_per_day.to_string(), b.usd_per_day <= 0.0),
            limit(b.usd_per_month.to_string(), b.usd_per_month <= 0.0),
        );
    }
    println!(
        "this month: {} tokens, ${:.6}",
        report.month_tokens, report.month_usd
    );
    Ok(())
}
