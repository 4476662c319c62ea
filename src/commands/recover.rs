//! Crash recovery: containers an interrupted run left stopped go back up.

use std::time::Duration;

use crate::config::Config;
use crate::docker;
use crate::schedule::lock;

/// Starts containers an interrupted run left stopped, under the run lock (so a run that is
/// in progress in another process is never disturbed). For scheduler start-up and after an
/// aborted run.
pub async fn recover_interrupted(config: &Config, wait: Duration) {
    let held = match lock::acquire(&config.lock_plan(), wait).await {
        Ok(held) => held,
        Err(e) => {
            tracing::error!(
                "[{}] could not check for an interrupted run: {e}",
                config.name
            );
            return;
        }
    };
    match docker::recover(&config.docker).await {
        Ok(names) if !names.is_empty() => tracing::warn!(
            "[{}] started again after an interrupted run: {}",
            config.name,
            names.join(", ")
        ),
        Ok(_) => {}
        Err(e) => tracing::error!("[{}] {e}", config.name),
    }
    drop(held);
}
