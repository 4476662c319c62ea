//! Time for the scheduler: cron expressions and jitter (`cron`), the run lock shared by every
//! process (`lock`), sleeping until a wall-clock time, and shutdown requests. The loop that
//! uses them is the `scheduler` command.

pub mod cron;
pub mod lock;

use std::time::Duration;

use jiff::Zoned;
use tokio::sync::watch;

/// How long shutdown waits for the lock to restart containers of an aborted run (Docker
/// kills a container 10 s after SIGTERM by default).
pub const SHUTDOWN_RECOVERY_WAIT: Duration = Duration::from_secs(5);

/// Longest single sleep: the wall clock is re-read at least this often, so clock changes and
/// suspended hosts do not make a run late by more than this.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Resolves when shutdown was requested.
pub async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which is a shutdown too.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Sleeps until the wall clock reaches `when`; false when shutdown came first.
pub async fn sleep_until(when: &Zoned, shutdown: &mut watch::Receiver<bool>) -> bool {
    loop {
        let now = jiff::Timestamp::now();
        let left = when.timestamp().duration_since(now);
        if left <= jiff::SignedDuration::ZERO {
            return true;
        }
        let step = Duration::try_from(left).unwrap_or(MAX_SLEEP).min(MAX_SLEEP);
        tokio::select! {
            () = tokio::time::sleep(step) => {}
            () = shutdown_requested(shutdown) => return false,
        }
    }
}
