use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// Waits (bounded) until `check` holds for the supervisor's tasks.
async fn until(supervisor: &Supervisor, check: impl Fn(&BTreeMap<String, TaskState>) -> bool) {
    for _ in 0..200 {
        if check(&supervisor.tasks()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached: {:?}", supervisor.tasks());
}

#[tokio::test]
async fn a_failing_task_is_restarted_and_reported_down_until_it_runs() {
    let supervisor = Supervisor::new();
    let stop = CancellationToken::new();
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    supervisor.spawn("sync:a", "sync", stop.clone(), move |handle| {
        let run = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            match run {
                0 => Err("connection refused".to_owned()),
                1 => panic!("boom"),
                _ => {
                    handle.running();
                    std::future::pending::<()>().await;
                    Ok(())
                }
            }
        }
    });
    until(&supervisor, |t| t["sync:a"].restarts >= 1).await;
    until(&supervisor, |t| t["sync:a"].status == TaskStatus::Running).await;
    let state = &supervisor.tasks()["sync:a"];
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "restarted after an error and a panic"
    );
    assert_eq!(state.restarts, 2);
    assert!(
        state
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("panicked"),
        "{state:?}"
    );
    assert!(supervisor.down("sync").is_empty());
    stop.cancel();
}

#[tokio::test]
async fn a_task_that_fails_every_time_stays_down_and_keeps_being_retried() {
    let supervisor = Supervisor::new();
    let stop = CancellationToken::new();
    supervisor.spawn("purge", "assistant", stop.clone(), |_| async {
        Err::<(), _>("database unreachable")
    });
    until(&supervisor, |t| t["purge"].restarts >= 3).await;
    let down = supervisor.down("assistant");
    assert_eq!(
        down,
        vec![("purge".to_owned(), "database unreachable".to_owned())]
    );
    assert!(supervisor.down("sync").is_empty(), "other groups are up");
    stop.cancel();
    // once stopped, no more restarts
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = supervisor.tasks()["purge"].restarts;
    tokio::time::sleep(MAX_RESTART_DELAY / 2).await;
    assert_eq!(supervisor.tasks()["purge"].restarts, after);
}

#[tokio::test]
async fn a_task_that_returns_ok_is_finished_and_self_reported_failures_count() {
    let supervisor = Supervisor::new();
    let stop = CancellationToken::new();
    supervisor.spawn("schedule", "summary", stop.clone(), |handle| async move {
        handle.failed(&"build interrupted");
        Ok::<(), String>(())
    });
    until(&supervisor, |t| {
        t["schedule"].status == TaskStatus::Finished
    })
    .await;
    let state = &supervisor.tasks()["schedule"];
    assert_eq!(state.restarts, 1);
    assert_eq!(state.last_error.as_deref(), Some("build interrupted"));
    assert!(supervisor.down("summary").is_empty());
}

#[test]
fn the_backoff_grows_and_stays_bounded() {
    let delays: Vec<Duration> = restart_delays().take(20).collect();
    assert_eq!(delays.len(), 20, "never gives up");
    assert!(delays[0] >= MIN_RESTART_DELAY && delays[0] <= 2 * MIN_RESTART_DELAY);
    // jitter adds at most the delay itself
    assert!(
        delays.iter().all(|d| *d <= 2 * MAX_RESTART_DELAY),
        "{delays:?}"
    );
    assert!(delays[19] >= MAX_RESTART_DELAY, "{delays:?}");
}
