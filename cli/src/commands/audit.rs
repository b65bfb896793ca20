//! `quarry audit`: the audit trail of the caller's tenant.

use std::path::Path;

use quarry_server::client::status_error;

use super::Remote;

/// Arguments of `quarry audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Most entries to print (the server returns at most 1,000).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Only entries older than this id (to page back).
    #[arg(long, default_value_t = 0)]
    pub before: i64,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: Remote,
}

/// Prints the newest audit entries of the token's tenant (needs the
/// `audit:read` scope), newest first.
///
/// # Errors
/// The server refuses (no `audit:read`) or cannot be reached.
pub async fn run(args: Args, _config: Option<&Path>) -> anyhow::Result<()> {
    let Args {
        limit,
        before,
        json,
        client,
    } = args;
    let mut sql_client = client.sql_client().await?;
    let response = sql_client
        .list_audit_entries(client.request(quarry_proto::v1::ListAuditEntriesRequest {
            limit,
            before_id: before,
        })?)
        .await
        .map_err(status_error)?
        .into_inner();
    for e in response.entries {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "id": e.id, "at": e.at, "tenant": e.tenant, "subject": e.subject,
                    "request_id": e.request_id, "tool": e.tool, "action": e.action,
                    "outcome": e.outcome, "sql": e.sql, "rows": e.rows, "bytes": e.bytes,
                    "duration_ms": e.duration_ms, "detail": e.detail,
                })
            );
        } else {
            let what = if e.sql.is_empty() { &e.detail } else { &e.sql };
            let what: String = what.chars().take(100).collect();
            println!(
                "{:>8} {} {:<10} {:<8} {:<9} {:<7} {:>6} rows {:>8.1} ms  {}",
                e.id, e.at, e.subject, e.tool, e.action, e.outcome, e.rows, e.duration_ms, what
            );
        }
    }
    Ok(())
}
