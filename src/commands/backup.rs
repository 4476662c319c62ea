//! `dunnage backup` and every scheduled run. The phases, in order:
//!
//! 1. health ping "start"; take the run lock (waiting up to `LOCK_TIMEOUT`)
//! 2. under the lock: recover containers an interrupted run left stopped, open the
//!    destinations (before anything stops, so set-up adds no downtime)
//! 3. archive/process/copy pre hooks; stop labeled containers; archive into every
//!    destination at once (containers start again as soon as the sources are read);
//!    post hooks, whatever the outcome
//! 4. prune pre hooks; prune where the backup was stored; prune post hooks
//! 5. release the lock; summary line; health ping and notifications
//!
//! The function never fails: the outcome is in the returned [`RunStats`].

use std::time::Instant;

use async_trait::async_trait;
use jiff::Zoned;
use tokio::sync::watch;

use crate::config::Config;
use crate::docker::{self, Engine, Phase};
use crate::notify::{self, HealthCheck, capture};
use crate::pipeline::{self, Job, PipelineError, Produced};
use crate::progress::Live;
use crate::report::{DestinationStats, RunStats};
use crate::schedule::{self, lock};
use crate::spool::SpoolMode;
use crate::storage::{self, Backend, Storage};

/// `dunnage backup`: every schedule once, one after another. False when a run failed in any
/// destination or shutdown aborted it.
pub async fn run(configs: &[Config], mut shutdown: watch::Receiver<bool>) -> bool {
    let mut ok = true;
    for config in configs {
        tokio::select! {
            // A destination that failed makes the command fail, even when others stored it.
            stats = run_once(config) => ok &= stats.complete(),
            () = schedule::shutdown_requested(&mut shutdown) => {
                tracing::error!("[{}] backup aborted; its unfinished upload is removed", config.name);
                super::recover::recover_interrupted(config, schedule::SHUTDOWN_RECOVERY_WAIT).await;
                return false;
            }
        }
    }
    ok
}

/// One complete run of `config`. Its log lines are kept for its notification.
pub async fn run_once(config: &Config) -> RunStats {
    run_observed(config, &Live::default()).await
}

/// [`run_once`], telling `live` where it is (phase, bytes, destinations, log).
pub async fn run_observed(config: &Config, live: &Live) -> RunStats {
    use tracing::Instrument as _;
    let span = tracing::trace_span!(capture::RUN_SPAN, schedule = %config.name);
    run_captured(config, live).instrument(span).await
}

async fn run_captured(config: &Config, live: &Live) -> RunStats {
    live.attach_log(capture::current_buffer());
    live.set_phase("waiting for the lock");
    let clock = Instant::now();
    let mut stats = RunStats::new(
        &config.name,
        Zoned::now().with_time_zone(config.time_zone.clone()),
    );
    let health = config.healthcheck.clone().map(HealthCheck::new);
    if let Some(h) = &health {
        stats.pings_failed += usize::from(!h.started().await);
    }
    match lock::acquire(&config.lock_plan(), config.lock_timeout).await {
        Err(e) => stats.error = Some(e.to_string()),
        Ok(held) => {
            stats.lock_wait = held.waited;
            if let Err(e) = locked(config, live, &mut stats).await {
                stats.error = Some(e);
            }
            drop(held);
        }
    }
    stats.took = clock.elapsed();
    match &stats.error {
        None => tracing::info!("{}", stats.summary()),
        Some(_) => tracing::error!("{}", stats.summary()),
    }
    live.set_phase("notifying");
    tell(config, health.as_ref(), &mut stats).await;
    live.set_phase("done");
    stats
}

/// After the lock is released (a slow monitoring or chat service delays nobody's run):
/// the health ping and the notifications, at once. They never change the outcome.
pub(super) async fn tell(config: &Config, health: Option<&HealthCheck>, stats: &mut RunStats) {
    let log = capture::current_log();
    let ping = async {
        match health {
            Some(h) => usize::from(!h.finished(stats, &log).await),
            None => 0,
        }
    };
    let notification = async {
        match &config.notifications {
            Some(n) => notify::notify(n, stats).await,
            None => 0,
        }
    };
    let (pings_failed, notifications_failed) = tokio::join!(ping, notification);
    stats.pings_failed += pings_failed;
    stats.notifications_failed = notifications_failed;
    if stats.pings_failed + notifications_failed > 0 {
        tracing::warn!(
            "[{}] {} health ping(s) and {} notification(s) not delivered (the run's outcome \
             stands)",
            stats.schedule,
            stats.pings_failed,
            notifications_failed
        );
    }
}

/// Runs one phase's pre or post exec hooks (the Docker engine; a fake in tests).
#[async_trait]
trait RunHooks: Sync {
    async fn run(&self, phase: Phase, post: bool, archive_path: &str) -> Result<(), String>;
}

#[async_trait]
impl RunHooks for Engine {
    async fn run(&self, phase: Phase, post: bool, archive_path: &str) -> Result<(), String> {
        self.run_hooks(phase, post, archive_path)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Exec hooks wrapped around a body: every phase's pre hooks before it (a failing one stops
/// the run there), every phase's post hooks after it whatever its outcome (their failures
/// are collected and fail the run at the end).
struct Hooks<'a> {
    runner: Option<&'a dyn RunHooks>,
    archive_path: &'a str,
    post_errors: Vec<String>,
}

impl Hooks<'_> {
    async fn around<T>(
        &mut self,
        phases: &[Phase],
        body: impl Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let Some(runner) = self.runner else {
            return body.await;
        };
        for phase in phases {
            runner.run(*phase, false, self.archive_path).await?;
        }
        let result = body.await;
        for phase in phases {
            if let Err(e) = runner.run(*phase, true, self.archive_path).await {
                self.post_errors.push(e);
            }
        }
        result
    }
}

/// The phases that run under the lock.
async fn locked(config: &Config, live: &Live, stats: &mut RunStats) -> Result<(), String> {
    live.set_phase("preparing");
    // Holding the lock, no run of ours is in progress: anything a state file lists was left
    // stopped by an interrupted run.
    if let Err(e) = docker::recover(&config.docker).await {
        stats.warnings.push(e.to_string());
    }
    let engine = Engine::connect(&config.docker)
        .await
        .map_err(|e| e.to_string())?;
    // Named when the lock is held, not when the run began to wait for it: a run that
    // waited behind another one started in the same second gets a name of its own.
    let name = config
        .filename
        .render(&Zoned::now().with_time_zone(config.time_zone.clone()))
        .map_err(|e| format!("BACKUP_FILENAME: {e}"))?;
    let archive_path = config.archive_dir.join(&name).display().to_string();
    stats.archive_path = Some(archive_path.clone());
    let (owned, unavailable) = storage::open_all(&config.targets()).await;
    for (backend, e) in &unavailable {
        live.set_destination(&backend.to_string(), format!("unavailable: {e}"));
    }
    if owned.is_empty() && !unavailable.is_empty() {
        return Err(PipelineError::Stores(unavailable).to_string());
    }
    let dests: Vec<&dyn Storage> = owned.iter().map(|d| d.as_ref()).collect();
    for dest in &dests {
        live.set_destination(&dest.backend().to_string(), "waiting");
    }
    let mut hooks = Hooks {
        runner: engine.as_ref().map(|e| e as &dyn RunHooks),
        archive_path: &archive_path,
        post_errors: Vec::new(),
    };
    let copy_phases = [Phase::Archive, Phase::Process, Phase::Copy];
    let produced = hooks
        .around(
            &copy_phases,
            archive_and_store(config, engine.as_ref(), &dests, &name, stats, live),
        )
        .await?;
    record(stats, produced, unavailable);
    tell_destinations(live, stats);
    if let Some(level) = config.verify_level {
        live.set_phase("verifying");
        let offset = stats.destinations.len() - dests.len();
        for (storage, dest) in dests.iter().zip(&mut stats.destinations[offset..]) {
            if dest.stored.is_some() {
                super::verify::after_backup(
                    config,
                    *storage,
                    &name,
                    level,
                    dest,
                    &mut stats.warnings,
                )
                .await;
            }
        }
    }
    stats.archive_name = Some(name);
    if config.retention.is_active() {
        live.set_phase("pruning");
        let offset = stats.destinations.len() - dests.len();
        hooks
            .around(&[Phase::Prune], async {
                for (storage, dest) in dests.iter().zip(&mut stats.destinations[offset..]) {
                    // Pruning runs where this backup was stored (and verified, when asked),
                    // never where it failed.
                    if dest.stored.is_some() && dest.error.is_none() {
                        super::prune::after_backup(config, *storage, dest, &mut stats.warnings)
                            .await;
                        let pruned = dest.prune.as_ref().map_or(0, |p| p.deleted.len());
                        live.set_destination(
                            &dest.backend.to_string(),
                            format!("stored; {pruned} old backup(s) pruned"),
                        );
                    }
                }
                Ok(())
            })
            .await?;
    }
    if !hooks.post_errors.is_empty() {
        return Err(format!(
            "the backup was stored, but post hooks failed: {}",
            hooks.post_errors.join("; ")
        ));
    }
    if stats.containers.iter().any(|d| d.error.is_some()) {
        return Err("the backup was stored, but not every stopped container started again".into());
    }
    Ok(())
}

/// Stops the labeled containers, runs the pipeline, and starts them again as soon as the
/// sources are read (or the pipeline ended early).
async fn archive_and_store(
    config: &Config,
    engine: Option<&Engine>,
    dests: &[&dyn Storage],
    name: &str,
    stats: &mut RunStats,
    live: &Live,
) -> Result<Produced, String> {
    live.set_phase("stopping containers");
    let stopped = match engine {
        Some(engine) => Some(engine.stop_labeled().await.map_err(|e| e.to_string())?),
        None => None,
    };
    let any_stopped = stopped.as_ref().is_some_and(|(list, _)| !list.is_empty());
    let job = Job {
        sources: &config.sources,
        exclude: config.exclude.as_ref(),
        codec: config.codec,
        encryption: &config.encryption,
        name,
        spool_dir: spool_dir(config, any_stopped, dests),
        archive_dir: &config.archive_dir,
        latest_symlink: config.latest_symlink.as_deref(),
        progress_interval: config.progress_interval,
        split: config.split,
        schedule: &config.name,
        upload_limit: config.upload_limit,
        progress: live.counters.clone(),
    };
    live.set_phase("archiving");
    for dest in dests {
        live.set_destination(&dest.backend().to_string(), "uploading");
    }
    let (released, sources_read) = tokio::sync::oneshot::channel();
    let restart = async {
        // Fires when the archive stage is done with the sources, or when the pipeline ended
        // early (the sender is dropped): either way the containers go back up now.
        let _ = sources_read.await;
        match (engine, &stopped) {
            (Some(engine), Some((list, since))) if !list.is_empty() => {
                engine.start_again(list, *since).await
            }
            _ => Vec::new(),
        }
    };
    let (result, downtimes) = tokio::join!(pipeline::run(&job, dests, Some(released)), restart);
    for d in &downtimes {
        if let Some(e) = &d.error {
            stats
                .warnings
                .push(format!("container {} did not start again: {e}", d.name));
        }
    }
    stats.containers = downtimes;
    let produced = result.map_err(|e| e.to_string())?;
    stats
        .warnings
        .extend(produced.archive.warnings.iter().cloned());
    stats.warnings.extend(produced.warnings.iter().cloned());
    Ok(produced)
}

/// Each destination's outcome, for whoever watches the run.
fn tell_destinations(live: &Live, stats: &RunStats) {
    for dest in &stats.destinations {
        let state = match (&dest.stored, &dest.error) {
            (_, Some(e)) => format!("failed: {e}"),
            (Some(_), None) => "stored".to_owned(),
            (None, None) => "skipped".to_owned(),
        };
        live.set_destination(&dest.backend.to_string(), state);
    }
}

/// Whether the archive goes through a spool file first. With the local destination only,
/// writing the archive is storing it: `auto` would gain nothing but double the disk I/O.
fn spool_dir<'a>(
    config: &'a Config,
    any_stopped: bool,
    dests: &[&dyn Storage],
) -> Option<&'a std::path::Path> {
    let remote = dests.iter().any(|d| d.backend() != Backend::Local);
    match config.spool {
        SpoolMode::Always => Some(config.spool_dir.as_path()),
        // A capped upload would keep the containers down for as long as it takes.
        SpoolMode::Auto if any_stopped && (remote || config.upload_limit.is_some()) => {
            Some(config.spool_dir.as_path())
        }
        SpoolMode::Auto | SpoolMode::Never => None,
    }
}

/// Each destination's outcome into `stats`: those that could not be set up first, then the
/// others in the order they were given to the pipeline.
fn record(
    stats: &mut RunStats,
    produced: Produced,
    unavailable: Vec<(Backend, storage::StorageError)>,
) {
    stats.archive = Some(produced.archive);
    let outcomes = unavailable
        .into_iter()
        .map(|(b, e)| (b, Err(e)))
        .chain(produced.stored);
    for (backend, outcome) in outcomes {
        let mut dest = DestinationStats::new(backend);
        match outcome {
            Ok(stored) => dest.stored = Some(stored),
            Err(e) => {
                stats
                    .warnings
                    .push(format!("{backend}: storing failed: {e}"));
                dest.error = Some(e.to_string());
            }
        }
        stats.destinations.push(dest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records every hook it runs; fails the ones listed.
    struct Fake {
        ran: Mutex<Vec<String>>,
        failing: Vec<String>,
    }

    impl Fake {
        fn failing(names: &[&str]) -> Fake {
            Fake {
                ran: Mutex::new(Vec::new()),
                failing: names.iter().map(|n| n.to_string()).collect(),
            }
        }

        fn ran(&self) -> Vec<String> {
            self.ran.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl RunHooks for Fake {
        async fn run(&self, phase: Phase, post: bool, _: &str) -> Result<(), String> {
            let name = format!("{}-{phase:?}", if post { "post" } else { "pre" }).to_lowercase();
            self.ran.lock().unwrap().push(name.clone());
            if self.failing.contains(&name) {
                Err(format!("{name} failed"))
            } else {
                Ok(())
            }
        }
    }

    fn hooks(fake: &Fake) -> Hooks<'_> {
        Hooks {
            runner: Some(fake),
            archive_path: "/archive/b.tar.gz",
            post_errors: Vec::new(),
        }
    }

    const COPY: [Phase; 2] = [Phase::Archive, Phase::Copy];

    #[tokio::test]
    async fn a_failing_pre_hook_stops_the_run_before_the_body() {
        let fake = Fake::failing(&["pre-copy"]);
        let mut h = hooks(&fake);
        let mut body_ran = false;
        let result = h
            .around(&COPY, async {
                body_ran = true;
                Ok(())
            })
            .await;
        assert_eq!(result, Err("pre-copy failed".into()));
        assert!(!body_ran);
        // No post hooks either: nothing they would close was opened.
        assert_eq!(fake.ran(), ["pre-archive", "pre-copy"]);
    }

    #[tokio::test]
    async fn post_hooks_run_whatever_the_body_did_and_their_errors_are_kept() {
        let fake = Fake::failing(&["post-archive"]);
        let mut h = hooks(&fake);
        let result: Result<(), String> =
            h.around(&COPY, async { Err("upload failed".into()) }).await;
        // The body's failure is the run's cause; the post hooks still ran, in order.
        assert_eq!(result, Err("upload failed".into()));
        assert_eq!(
            fake.ran(),
            ["pre-archive", "pre-copy", "post-archive", "post-copy"]
        );
        assert_eq!(h.post_errors, ["post-archive failed"]);

        let fake = Fake::failing(&["post-copy"]);
        let mut h = hooks(&fake);
        assert_eq!(h.around(&COPY, async { Ok(7) }).await, Ok(7));
        assert_eq!(h.post_errors, ["post-copy failed"]);
    }

    #[tokio::test]
    async fn without_docker_the_body_just_runs() {
        let mut h = Hooks {
            runner: None,
            archive_path: "",
            post_errors: Vec::new(),
        };
        assert_eq!(h.around(&COPY, async { Ok(1) }).await, Ok(1));
        assert!(h.post_errors.is_empty());
    }
}
