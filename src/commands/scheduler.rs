//! The default command: every schedule on its cron expression, with jitter, all runs
//! serialised by one lock (shared with one-shot `backup` and other processes).
//!
//! Shutdown (SIGTERM/SIGINT): no new runs start; a running backup is aborted, which removes
//! its unfinished upload, so no partial archive is left behind.

use jiff::Zoned;
use tokio::sync::watch;

use super::backup::run_once;
use super::recover::recover_interrupted;
use std::sync::Arc;

use crate::config::Config;
use crate::manifest::Level;
use crate::metrics::Metrics;
use crate::schedule::cron::CronSchedule;
use crate::schedule::{SHUTDOWN_RECOVERY_WAIT, cron, shutdown_requested, sleep_until};

/// Runs every schedule until `shutdown` turns true, each run counted in `metrics`. Returns
/// the number of failed runs.
pub async fn run_forever(
    configs: Vec<Config>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> usize {
    announce(&configs).await;
    let mut tasks = Vec::new();
    for config in configs {
        metrics.restore_state(&config.name, &config.docker.state_dir);
        if let Some((cron, level)) = config.verify_cron.clone() {
            tasks.push(tokio::spawn(verify_loop(
                config.clone(),
                cron,
                level,
                metrics.clone(),
                shutdown.clone(),
            )));
        }
        tasks.push(tokio::spawn(schedule_loop(
            config,
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await.unwrap_or(1);
    }
    failed
}

/// The start-up summary: the version, each schedule's next run and destinations, and a
/// warning for what `dunnage check` would fail on.
async fn announce(configs: &[Config]) {
    tracing::info!(
        "dunnage {} starting: {} schedule(s)",
        env!("CARGO_PKG_VERSION"),
        configs.len()
    );
    for config in configs {
        let now = Zoned::now().with_time_zone(config.time_zone.clone());
        let next = config.cron.next_after(&now).map_or_else(
            || "never".to_owned(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S %Z").to_string(),
        );
        let destinations = config.targets().describe();
        tracing::info!(
            "[{}] {}, next run {next}; sources {}; destinations: {}",
            config.name,
            config.cron.describe(),
            config.sources.display(),
            if destinations.is_empty() {
                "none".to_owned()
            } else {
                destinations.join(", ")
            }
        );
        for problem in super::check::preflight(config).await {
            tracing::warn!("{problem} (`dunnage check` fails on this)");
        }
    }
}

/// `BACKUP_VERIFY_CRON_EXPRESSION`: every stored backup verified on its own schedule.
async fn verify_loop(
    config: Config,
    cron: CronSchedule,
    level: Level,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> usize {
    let mut failed = 0;
    let mut base = Zoned::now().with_time_zone(config.time_zone.clone());
    loop {
        let Some(next) = cron.next_after(&base) else {
            shutdown_requested(&mut shutdown).await;
            return failed;
        };
        tracing::info!(
            "[{}] next verify at {} ({})",
            config.name,
            next.strftime("%Y-%m-%d %H:%M:%S %Z"),
            cron.describe()
        );
        if !sleep_until(&next, &mut shutdown).await {
            return failed;
        }
        tokio::select! {
            stats = super::verify::scheduled(&config, level) => {
                metrics.record(&stats);
                if !stats.complete() {
                    failed += 1;
                }
            }
            () = shutdown_requested(&mut shutdown) => return failed,
        }
        let now = Zoned::now().with_time_zone(config.time_zone.clone());
        base = if now > next { now } else { next };
    }
}

async fn schedule_loop(
    config: Config,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> usize {
    // Containers a crashed earlier process left stopped go back up now, not at the next run.
    tokio::select! {
        () = recover_interrupted(&config, config.lock_timeout) => {}
        () = shutdown_requested(&mut shutdown) => return 0,
    }
    let mut rng = fastrand::Rng::new();
    let mut failed = 0;
    let mut base = Zoned::now().with_time_zone(config.time_zone.clone());
    loop {
        let Some(next) = config.cron.next_after(&base) else {
            tracing::info!(
                "[{}] {} never fires; this schedule is idle",
                config.name,
                config.cron.describe()
            );
            shutdown_requested(&mut shutdown).await;
            return failed;
        };
        tracing::info!(
            "[{}] next run at {} ({})",
            config.name,
            next.strftime("%Y-%m-%d %H:%M:%S %Z"),
            config.cron.describe()
        );
        if !sleep_until(&next, &mut shutdown).await {
            return failed;
        }
        let delay = cron::jitter(config.jitter, &mut rng);
        if !delay.is_zero() {
            tracing::info!("[{}] waiting {delay:?} of jitter", config.name);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown_requested(&mut shutdown) => return failed,
            }
        }
        tokio::select! {
            stats = run_once(&config) => {
                metrics.record(&stats);
                if !stats.succeeded() {
                    failed += 1;
                }
            }
            () = shutdown_requested(&mut shutdown) => {
                tracing::warn!("[{}] shutdown: the running backup was aborted", config.name);
                recover_interrupted(&config, SHUTDOWN_RECOVERY_WAIT).await;
                return failed + 1;
            }
        }
        // Fire times missed while the run went on are skipped, not run back to back.
        let now = Zoned::now().with_time_zone(config.time_zone.clone());
        base = if now > next { now } else { next };
    }
}
