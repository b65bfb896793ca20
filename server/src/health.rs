//! Health that follows the node's state: every [`CHECK_INTERVAL`] each
//! served gRPC service is set `SERVING` or `NOT_SERVING` in the
//! `grpc.health.v1` reporter, from whether the databases this process uses
//! answer and whether the background work of the service's role runs
//! ([`quarry_db::supervisor`]). The overall status (service `""`) is
//! `NOT_SERVING` while anything is down.

use std::time::Duration;

use quarry_db::{Pool, supervisor::Supervisor};
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::Role;

/// How often health is re-evaluated.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a database may take to answer `SELECT 1` before it counts as
/// unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The supervisor group of background work every role depends on (the
/// audit purge).
pub const SHARED_GROUP: &str = "server";

/// What [`spawn`] watches.
pub(crate) struct Watch {
    /// The health reporter of the node's health service.
    pub(crate) reporter: HealthReporter,
    /// Each served gRPC service (its full name) with the role it belongs to.
    pub(crate) services: Vec<(&'static str, Role)>,
    /// The roles this process plays (a role with no service, like `sync`,
    /// counts towards the overall status only).
    pub(crate) roles: Vec<Role>,
    /// Every database pool of the process.
    pub(crate) pools: Vec<Pool>,
    /// The background work.
    pub(crate) supervisor: Supervisor,
}

/// Why `role` is down now, or `None` when it is up.
fn reason(role: Role, database: Option<&str>, supervisor: &Supervisor) -> Option<String> {
    if let Some(error) = database {
        return Some(format!("database unreachable: {error}"));
    }
    let mut down = supervisor.down(role.as_str());
    down.extend(supervisor.down(SHARED_GROUP));
    (!down.is_empty()).then(|| {
        down.iter()
            .map(|(task, error)| format!("{task}: {error}"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Re-evaluates health every [`CHECK_INTERVAL`] until `stop`, logging each
/// change of a role's state.
pub(crate) fn spawn(watch: Watch, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut was_down: std::collections::BTreeMap<Role, bool> =
            watch.roles.iter().map(|r| (*r, false)).collect();
        let mut ticks = tokio::time::interval(CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let mut database = None;
            for pool in &watch.pools {
                if let Err(error) = quarry_db::reachable(pool, PROBE_TIMEOUT).await {
                    database = Some(error);
                    break;
                }
            }
            let mut any_down = false;
            for role in &watch.roles {
                let why = reason(*role, database.as_deref(), &watch.supervisor);
                let down = why.is_some();
                any_down |= down;
                let before = was_down.insert(*role, down).unwrap_or(false);
                match (before, why) {
                    (false, Some(why)) => warn!(role = %role, reason = %why, "role not serving"),
                    (true, None) => info!(role = %role, "role serving again"),
                    (true, Some(_)) | (false, None) => {}
                }
                let status = if down {
                    ServingStatus::NotServing
                } else {
                    ServingStatus::Serving
                };
                for (service, _) in watch.services.iter().filter(|(_, r)| r == role) {
                    watch.reporter.set_service_status(service, status).await;
                }
            }
            let overall = if any_down {
                ServingStatus::NotServing
            } else {
                ServingStatus::Serving
            };
            watch.reporter.set_service_status("", overall).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_role_is_down_while_its_database_or_its_background_work_is() {
        let supervisor = Supervisor::new();
        assert_eq!(reason(Role::Sync, None, &supervisor), None);
        let database = reason(Role::Sql, Some("connection refused"), &supervisor);
        assert!(database.unwrap().contains("connection refused"));
        let sync = supervisor.register("sync artworks", "sync");
        sync.failed(&"lost the leader connection");
        let why = reason(Role::Sync, None, &supervisor).unwrap();
        assert!(
            why.contains("sync artworks: lost the leader connection"),
            "{why}"
        );
        assert_eq!(
            reason(Role::Search, None, &supervisor),
            None,
            "other roles are up"
        );
        sync.running();
        assert_eq!(reason(Role::Sync, None, &supervisor), None);
        // the shared purge is everyone's
        supervisor
            .register("audit purge", SHARED_GROUP)
            .failed(&"timeout");
        assert!(reason(Role::Search, None, &supervisor).is_some());
    }
}
