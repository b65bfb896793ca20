//! Background work that heals itself: [`Supervisor::spawn`] runs a task,
//! restarts it with bounded exponential backoff and jitter after any
//! failure (an error or a panic), and keeps each task's state — running or
//! restarting, the last error, the number of restarts — where health checks
//! (and metrics) read it ([`Supervisor::tasks`], [`Supervisor::down`]).
//!
//! Tasks that retry on their own (a loop that logs a failed round and tries
//! again) report through their [`TaskHandle`] instead
//! ([`TaskHandle::failed`], [`TaskHandle::running`]), so their state is
//! visible the same way.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// First delay before a restart.
pub const MIN_RESTART_DELAY: Duration = Duration::from_millis(250);
/// Longest delay between restarts: with factor 2 the delays run 0.25 s,
/// 0.5 s, 1 s … and stop growing here (plus up to as much jitter again), so
/// a task is retried at least every 10 s while its dependency is down.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);
/// A run that lasted this long counts as healthy: the next failure starts
/// the backoff from [`MIN_RESTART_DELAY`] again.
pub const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// What a supervised task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Running (or between its own rounds) without a pending failure.
    Running,
    /// Failed; waiting to restart or retry ([`TaskState::last_error`] says why).
    Restarting,
    /// Ended on its own without error (e.g. a schedule with nothing to do).
    Finished,
}

impl TaskStatus {
    /// The status as lowercase text (`running`, `restarting`, `finished`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Running => "running",
            TaskStatus::Restarting => "restarting",
            TaskStatus::Finished => "finished",
        }
    }
}

/// The state of one supervised task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// The group the task belongs to (the server role it serves, e.g.
    /// `sync`): health reports a group as down while any task of it is.
    pub group: String,
    /// What the task is doing.
    pub status: TaskStatus,
    /// The most recent failure, kept after recovery.
    pub last_error: Option<String>,
    /// Restarts (or failed rounds) since the process started.
    pub restarts: u64,
}

/// The registry of supervised tasks of one process. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Supervisor {
    tasks: Arc<Mutex<BTreeMap<String, TaskState>>>,
}

/// One task's line to its [`Supervisor`]: the task reports failures it
/// recovers from itself, and the supervisor reports restarts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TaskHandle {
    supervisor: Supervisor,
    name: Arc<str>,
}

impl Supervisor {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers task `name` of `group` as running and returns its handle
    /// (a second registration of a name replaces the first).
    pub fn register(&self, name: &str, group: &str) -> TaskHandle {
        quarry_metrics::background_task(name, group, true);
        self.lock().insert(
            name.to_owned(),
            TaskState {
                group: group.to_owned(),
                status: TaskStatus::Running,
                last_error: None,
                restarts: 0,
            },
        );
        TaskHandle {
            supervisor: self.clone(),
            name: name.into(),
        }
    }

    /// Every task's state, by name.
    pub fn tasks(&self) -> BTreeMap<String, TaskState> {
        self.lock().clone()
    }

    /// The tasks of `group` that are down (restarting), with their last
    /// error; empty when the group's background work is healthy.
    pub fn down(&self, group: &str) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter(|(_, t)| t.group == group && t.status == TaskStatus::Restarting)
            .map(|(name, t)| (name.clone(), t.last_error.clone().unwrap_or_default()))
            .collect()
    }

    /// Runs `make(handle)` as task `name` of `group` on its own tokio task
    /// until `stop` is cancelled: when a run fails (returns an error or
    /// panics) the failure is logged and recorded, and after a delay of
    /// bounded exponential backoff with jitter ([`MIN_RESTART_DELAY`] doubling
    /// to [`MAX_RESTART_DELAY`], reset after a run of [`HEALTHY_RUN`]) a new
    /// run starts. A run that returns `Ok(())` before `stop` ends the task
    /// ([`TaskStatus::Finished`]). A restarted run stays
    /// [`TaskStatus::Restarting`] until it reports [`TaskHandle::running`]
    /// (e.g. once it has reached its database), so health does not flap
    /// between quick failures.
    pub fn spawn<F, Fut, E>(
        &self,
        name: &str,
        group: &str,
        stop: CancellationToken,
        mut make: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut(TaskHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let handle = self.register(name, group);
        tokio::spawn(async move {
            let mut delays = restart_delays();
            loop {
                let started = Instant::now();
                let run = tokio::spawn(make(handle.clone()));
                let abort = run.abort_handle();
                let result = tokio::select! {
                    () = stop.cancelled() => {
                        abort.abort();
                        return;
                    }
                    joined = run => joined,
                };
                let error = match result {
                    Ok(Ok(())) => {
                        handle.finished();
                        return;
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(join) if join.is_panic() => format!("panicked: {join}"),
                    Err(join) => join.to_string(),
                };
                if started.elapsed() >= HEALTHY_RUN {
                    delays = restart_delays();
                }
                let delay = delays.next().unwrap_or(MAX_RESTART_DELAY);
                let restarts = handle.failed(&error);
                warn!(
                    task = %handle.name, %error, restarts,
                    delay_ms = delay.as_millis() as u64,
                    "background task failed; restarting"
                );
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TaskState>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The restart policy, as the delays before each retry: bounded
/// exponential backoff with jitter ([`MIN_RESTART_DELAY`] doubling to
/// [`MAX_RESTART_DELAY`], each plus a random jitter of up to itself), never
/// giving up. For work that retries on its own, e.g. an interrupted build.
pub fn restart_delays() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::new()
        .with_min_delay(MIN_RESTART_DELAY)
        .with_max_delay(MAX_RESTART_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

impl TaskHandle {
    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records a failure the task recovers from (it retries on its own) or
    /// that ended its run; returns the restarts counted so far.
    pub fn failed(&self, error: &dyn Display) -> u64 {
        let mut tasks = self.supervisor.lock();
        match tasks.get_mut(&*self.name) {
            Some(task) => {
                task.status = TaskStatus::Restarting;
                task.last_error = Some(error.to_string());
                task.restarts += 1;
                quarry_metrics::background_task(&self.name, &task.group, false);
                quarry_metrics::background_task_restarted(&self.name, &task.group);
                task.restarts
            }
            None => 0,
        }
    }

    /// Records that the task runs without a pending failure (logged once
    /// when it recovers from one).
    pub fn running(&self) {
        let recovered = {
            let mut tasks = self.supervisor.lock();
            match tasks.get_mut(&*self.name) {
                Some(task) if task.status == TaskStatus::Restarting => {
                    task.status = TaskStatus::Running;
                    quarry_metrics::background_task(&self.name, &task.group, true);
                    true
                }
                Some(_) | None => false,
            }
        };
        if recovered {
            info!(task = %self.name, "background task recovered");
        }
    }

    fn finished(&self) {
        if let Some(task) = self.supervisor.lock().get_mut(&*self.name) {
            task.status = TaskStatus::Finished;
            quarry_metrics::background_task(&self.name, &task.group, false);
        }
    }
}

#[cfg(test)]
mod tests;
