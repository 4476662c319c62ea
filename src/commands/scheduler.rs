//! The default command: every schedule on its cron expression, with jitter. Runs go through
//! [`Runs`] (one per profile at a time, `DUNNAGE_CONCURRENCY` at once, the lock shared with
//! one-shot `backup` and other processes). Profiles added, changed or removed in conf.d
//! (see [`Profiles`]) get their loops started, replaced or stopped; a run already going on
//! is left to finish.
//!
//! Shutdown (SIGTERM/SIGINT): no new runs start; a running backup is aborted, which removes
//! its unfinished upload, so no partial archive is left behind.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Zoned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::profiles::Profiles;
use super::recover::recover_interrupted;
use super::runs::{Job, Runs, Trigger};
use crate::config::Config;
use crate::manifest::Level;
use crate::metrics::Metrics;
use crate::schedule::cron::CronSchedule;
use crate::schedule::{cron, shutdown_requested, sleep_until};

/// A profile's loops, and what stops them.
struct Loops {
    config: Config,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<usize>>,
}

/// Runs every profile until `shutdown` turns true, following changes to the profiles.
/// Returns the number of failed runs.
pub async fn run_forever(
    profiles: Arc<Profiles>,
    runs: Arc<Runs>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> usize {
    announce(&profiles.all()).await;
    let mut version = profiles.subscribe();
    let mut loops: BTreeMap<String, Loops> = BTreeMap::new();
    let mut ended = Vec::new();
    let mut failed = 0;
    loop {
        let configs = profiles.all();
        // Stopped: removed or changed profiles' loops (their runs go on in `runs`).
        let gone: Vec<String> = loops
            .iter()
            .filter(|(name, l)| {
                configs
                    .iter()
                    .find(|c| &&c.name == name)
                    .is_none_or(|c| c.vars != l.config.vars)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            let l = loops.remove(&name).expect("listed");
            l.stop.send_replace(true);
            ended.extend(l.tasks);
        }
        // Loops stopped by earlier reloads that have ended: counted now, not kept.
        let (done, going): (Vec<_>, Vec<_>) = ended.into_iter().partition(|t| t.is_finished());
        ended = going;
        for task in done {
            failed += task.await.unwrap_or(1);
        }
        for config in configs.iter() {
            if !loops.contains_key(&config.name) {
                loops.insert(config.name.clone(), start(config, &runs, &metrics));
            }
        }
        tokio::select! {
            changed = version.changed() => if changed.is_err() { break },
            () = shutdown_requested(&mut shutdown) => break,
        }
    }
    for l in loops.into_values() {
        l.stop.send_replace(true);
        ended.extend(l.tasks);
    }
    for task in ended {
        failed += task.await.unwrap_or(1);
    }
    failed
}

/// Starts a profile's backup loop (and its verify loop).
fn start(config: &Config, runs: &Arc<Runs>, metrics: &Metrics) -> Loops {
    metrics.restore_state(&config.name, &config.docker.state_dir);
    let stop = watch::Sender::new(false);
    let mut tasks = Vec::new();
    if let Some((cron, level)) = config.verify_cron.clone() {
        tasks.push(tokio::spawn(verify_loop(
            config.clone(),
            cron,
            level,
            runs.clone(),
            stop.subscribe(),
        )));
    }
    tasks.push(tokio::spawn(schedule_loop(
        config.clone(),
        runs.clone(),
        stop.subscribe(),
    )));
    Loops {
        config: config.clone(),
        stop,
        tasks,
    }
}

/// Starts a run and waits for it to end; false when it failed, or the profile had a run
/// going already (it is skipped), or `stop` came first (the run goes on).
async fn run_and_wait(
    config: &Config,
    job: Job,
    runs: &Arc<Runs>,
    stop: &mut watch::Receiver<bool>,
) -> Option<bool> {
    let run = match runs.start(config, job, Trigger::Schedule) {
        Ok(run) => run,
        Err(other) => {
            tracing::warn!(
                "[{}] skipped: its {} run {} (started by {:?}) has not ended",
                config.name,
                other.kind,
                other.id,
                other.trigger
            );
            return Some(false);
        }
    };
    tokio::select! {
        finished = run.finished() => Some(finished.outcome != "failure" && finished.outcome != "cancelled"),
        () = shutdown_requested(stop) => None,
    }
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
    runs: Arc<Runs>,
    mut stop: watch::Receiver<bool>,
) -> usize {
    let mut failed = 0;
    let mut base = Zoned::now().with_time_zone(config.time_zone.clone());
    loop {
        let Some(next) = cron.next_after(&base) else {
            shutdown_requested(&mut stop).await;
            return failed;
        };
        tracing::info!(
            "[{}] next verify at {} ({})",
            config.name,
            next.strftime("%Y-%m-%d %H:%M:%S %Z"),
            cron.describe()
        );
        if !sleep_until(&next, &mut stop).await {
            return failed;
        }
        match run_and_wait(&config, Job::ScheduledVerify(level), &runs, &mut stop).await {
            Some(ok) => failed += usize::from(!ok),
            None => return failed,
        }
        let now = Zoned::now().with_time_zone(config.time_zone.clone());
        base = if now > next { now } else { next };
    }
}

async fn schedule_loop(config: Config, runs: Arc<Runs>, mut stop: watch::Receiver<bool>) -> usize {
    // Containers a crashed earlier process left stopped go back up now, not at the next run.
    tokio::select! {
        () = recover_interrupted(&config, config.lock_timeout) => {}
        () = shutdown_requested(&mut stop) => return 0,
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
            shutdown_requested(&mut stop).await;
            return failed;
        };
        tracing::info!(
            "[{}] next run at {} ({})",
            config.name,
            next.strftime("%Y-%m-%d %H:%M:%S %Z"),
            config.cron.describe()
        );
        if !sleep_until(&next, &mut stop).await {
            return failed;
        }
        let delay = cron::jitter(config.jitter, &mut rng);
        if !delay.is_zero() {
            tracing::info!("[{}] waiting {delay:?} of jitter", config.name);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown_requested(&mut stop) => return failed,
            }
        }
        match run_and_wait(&config, Job::Backup, &runs, &mut stop).await {
            Some(ok) => failed += usize::from(!ok),
            None => return failed,
        }
        // Fire times missed while the run went on are skipped, not run back to back.
        let now = Zoned::now().with_time_zone(config.time_zone.clone());
        base = if now > next { now } else { next };
    }
}
