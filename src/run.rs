//! One backup run, in phases: take the lock, stream the archive from the sources into the
//! destination, update the latest-symlink, prune, and report everything in one [`RunStats`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::Zoned;

use crate::archive::{self, ArchiveError, ArchiveStats};
use crate::config::Config;
use crate::config::duration::format_duration;
use crate::docker::{self, Downtime, Engine, Phase};
use crate::filename::FilenameError;
use crate::notify::{self, HealthCheck, capture};
use crate::prune::{self, PruneReport};
use crate::schedule::lock;
use crate::spool::{self, SpoolMode};
use crate::storage::{
    self, DropboxStorage, LocalStorage, S3Storage, SftpStorage, Storage, StorageError, Stored,
    WebDavStorage,
};
use crate::stream;

/// Everything one run did, for the summary log line (and later notifications and metrics).
#[derive(Debug, Clone)]
pub struct RunStats {
    pub schedule: String,
    pub started: Zoned,
    pub took: Duration,
    /// Time spent waiting for another run to release the lock.
    pub lock_wait: Duration,
    pub archive_name: Option<String>,
    pub archive: Option<ArchiveStats>,
    pub destinations: Vec<DestinationStats>,
    /// Containers stopped for this run and how long each was down.
    pub containers: Vec<Downtime>,
    /// Non-fatal problems: files changed while read, refused or failed prunes.
    pub warnings: Vec<String>,
    /// Why the run failed; `None` when it succeeded.
    pub error: Option<String>,
    /// Health pings that could not be delivered (they never change the outcome).
    pub pings_failed: usize,
    /// Notification services that could not be reached (they never change the outcome).
    pub notifications_failed: usize,
}

impl RunStats {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    /// Succeeded and stored in every configured destination.
    pub fn complete(&self) -> bool {
        self.succeeded() && self.destinations.iter().all(|d| d.error.is_none())
    }
}

/// What happened at one destination.
#[derive(Debug, Clone)]
pub struct DestinationStats {
    pub name: &'static str,
    pub stored: Option<Stored>,
    /// Why storing failed here (other destinations may have succeeded).
    pub error: Option<String>,
    pub prune: Option<PruneReport>,
    pub prune_error: Option<String>,
}

/// What a successful run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub archive_name: String,
    pub started: Zoned,
    pub duration: Duration,
    pub archive: ArchiveStats,
    /// Each destination's outcome, in configuration order.
    pub stored: Vec<(&'static str, Result<Stored, String>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("BACKUP_FILENAME: {0}")]
    Name(#[from] FilenameError),
    #[error(
        "no destination to store the backup in: the local archive folder BACKUP_ARCHIVE={} \
         does not exist (create it or mount a volume there)",
        .0.display()
    )]
    NoDestination(PathBuf),
    #[error("creating the archive failed: {0}")]
    Archive(#[from] ArchiveError),
    #[error("{}", describe_failures(.0))]
    Stores(Vec<(&'static str, StorageError)>),
    #[error("internal error: {0}")]
    Internal(String),
}

/// One complete run: lock, backup, prune, then health ping and notifications. Never fails as
/// a function: the outcome, success or not, is in the returned stats, which are also logged
/// as a summary.
pub async fn run_once(config: &Config) -> RunStats {
    use tracing::Instrument as _;
    // The run's log lines are kept for its notification (see notify::capture).
    let span = tracing::trace_span!(capture::RUN_SPAN, schedule = %config.name);
    run_once_captured(config).instrument(span).await
}

async fn run_once_captured(config: &Config) -> RunStats {
    let started = Zoned::now().with_time_zone(config.time_zone.clone());
    let clock = Instant::now();
    let mut stats = RunStats {
        schedule: config.name.clone(),
        started,
        took: Duration::ZERO,
        lock_wait: Duration::ZERO,
        archive_name: None,
        archive: None,
        destinations: Vec::new(),
        containers: Vec::new(),
        warnings: Vec::new(),
        error: None,
        pings_failed: 0,
        notifications_failed: 0,
    };
    let health = config.healthcheck.clone().map(HealthCheck::new);
    if let Some(h) = &health {
        stats.pings_failed += usize::from(!h.started().await);
    }
    match lock::acquire(&config.lock_file, config.lock_timeout).await {
        Err(e) => stats.error = Some(e.to_string()),
        Ok(held) => {
            stats.lock_wait = held.waited;
            if config.archive_dir.is_dir() {
                let leftovers = LocalStorage::new(&config.archive_dir)
                    .remove_stale_partials()
                    .await;
                stats.warnings.extend(
                    leftovers
                        .into_iter()
                        .map(|n| format!("removed {n}, left by an interrupted run")),
                );
            }
            if let Err(e) = run_locked(config, &mut stats).await {
                stats.error = Some(e);
            }
            drop(held);
        }
    }
    stats.took = clock.elapsed();
    log_summary(&stats);
    // After the lock is released: a slow monitoring or chat service delays nobody's run.
    let log = capture::current_log();
    let ping = async {
        match &health {
            Some(h) => usize::from(!h.finished(&stats, &log).await),
            None => 0,
        }
    };
    let notification = async {
        match &config.notifications {
            Some(n) => notify::notify(n, &stats, config).await,
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
    stats
}

/// The phases that run under the lock: recover, stop containers, archive and store (the
/// containers start again as soon as the sources are read), prune.
async fn run_locked(config: &Config, stats: &mut RunStats) -> Result<(), String> {
    // Holding the lock, no run of ours is in progress: anything a state file lists was left
    // stopped by an interrupted run.
    if let Err(e) = docker::recover(&config.docker).await {
        stats.warnings.push(e.to_string());
    }
    let engine = Engine::connect(&config.docker)
        .await
        .map_err(|e| e.to_string())?;
    let archive_name = config
        .filename
        .render(&stats.started)
        .map_err(|e| RunError::Name(e).to_string())?;
    let archive_path = config.archive_dir.join(&archive_name).display().to_string();
    // Destinations are set up before anything stops, so that this adds no downtime.
    let (owned, unavailable) = destinations(config).await;
    if owned.is_empty() && !unavailable.is_empty() {
        return Err(RunError::Stores(unavailable).to_string());
    }
    let dests: Vec<&dyn Storage> = owned.iter().map(|d| d.as_ref()).collect();
    // Pre hooks of every phase run before anything stops: the pass that follows archives,
    // processes and copies in one go. A failing pre hook stops the run here.
    if let Some(engine) = &engine {
        for phase in [Phase::Archive, Phase::Process, Phase::Copy] {
            engine
                .run_hooks(phase, false, &archive_path)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let stopped = match &engine {
        Some(engine) => Some(engine.stop_labeled().await.map_err(|e| e.to_string())?),
        None => None,
    };
    let any_stopped = stopped.as_ref().is_some_and(|(list, _)| !list.is_empty());
    // With the local destination only, writing the archive is storing it: `auto` would gain
    // nothing from a spool file but double the disk I/O.
    let remote_destination = dests.iter().any(|d| d.name() != "Local");
    let spool_dir = match config.spool {
        SpoolMode::Always => Some(config.spool_dir.as_path()),
        SpoolMode::Auto if any_stopped && remote_destination => Some(config.spool_dir.as_path()),
        SpoolMode::Auto | SpoolMode::Never => None,
    };
    let (released, sources_read) = tokio::sync::oneshot::channel();
    let restart = async {
        // Fires when the archive stage is done with the sources, or when backup() ended
        // early (the sender is dropped): either way the containers go back up now.
        let _ = sources_read.await;
        match (&engine, &stopped) {
            (Some(engine), Some((list, since))) if !list.is_empty() => {
                engine.start_again(list, *since).await
            }
            _ => Vec::new(),
        }
    };
    let (result, downtimes) = tokio::join!(
        backup(config, &dests, &archive_name, Some(released), spool_dir),
        restart
    );
    for d in &downtimes {
        if let Some(e) = &d.error {
            stats
                .warnings
                .push(format!("container {} did not start again: {e}", d.name));
        }
    }
    stats.containers = downtimes;
    // Post hooks run after their step whatever its outcome.
    let mut post_errors = Vec::new();
    if let Some(engine) = &engine {
        for phase in [Phase::Archive, Phase::Process, Phase::Copy] {
            if let Err(e) = engine.run_hooks(phase, true, &archive_path).await {
                post_errors.push(e.to_string());
            }
        }
    }
    let report = result.map_err(|e| e.to_string())?;
    stats
        .warnings
        .extend(report.archive.warnings.iter().cloned());
    stats.archive_name = Some(report.archive_name);
    stats.archive = Some(report.archive);
    let pruning = config.retention.is_active();
    if pruning {
        if let Some(engine) = &engine {
            engine
                .run_hooks(Phase::Prune, false, &archive_path)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    for (name, e) in unavailable {
        stats.warnings.push(format!("{name}: storing failed: {e}"));
        stats.destinations.push(DestinationStats {
            name,
            stored: None,
            error: Some(e.to_string()),
            prune: None,
            prune_error: None,
        });
    }
    for (storage, (name, outcome)) in dests.iter().zip(report.stored) {
        let mut dest = DestinationStats {
            name,
            stored: None,
            error: None,
            prune: None,
            prune_error: None,
        };
        match outcome {
            Ok(stored) => {
                dest.stored = Some(stored);
                // Pruning runs where this backup was stored, never where it failed.
                prune_destination(config, *storage, &mut dest, &mut stats.warnings).await;
            }
            Err(e) => {
                stats.warnings.push(format!("{name}: storing failed: {e}"));
                dest.error = Some(e);
            }
        }
        stats.destinations.push(dest);
    }
    if pruning {
        if let Some(engine) = &engine {
            if let Err(e) = engine.run_hooks(Phase::Prune, true, &archive_path).await {
                post_errors.push(e.to_string());
            }
        }
    }
    if !post_errors.is_empty() {
        return Err(format!(
            "the backup was stored, but post hooks failed: {}",
            post_errors.join("; ")
        ));
    }
    if stats.containers.iter().any(|d| d.error.is_some()) {
        return Err("the backup was stored, but not every stopped container started again".into());
    }
    Ok(())
}

/// Starts containers an interrupted run left stopped, under the run lock (so a run that
/// is in progress in another process is never disturbed). For scheduler start-up and
/// after an aborted run.
pub async fn recover_interrupted(config: &Config, wait: Duration) {
    match lock::acquire(&config.lock_file, wait).await {
        Ok(held) => {
            match docker::recover(&config.docker).await {
                Ok(names) if !names.is_empty() => {
                    tracing::warn!(
                        "[{}] started again after an interrupted run: {}",
                        config.name,
                        names.join(", ")
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::error!("[{}] {e}", config.name),
            }
            drop(held);
        }
        Err(e) => tracing::error!(
            "[{}] could not check for an interrupted run: {e}",
            config.name
        ),
    }
}

/// Applies the retention policy to one destination that just stored a backup.
async fn prune_destination(
    config: &Config,
    storage: &dyn Storage,
    dest: &mut DestinationStats,
    warnings: &mut Vec<String>,
) {
    if !config.retention.is_active() {
        return;
    }
    if config.skips_prune(storage.name()) {
        tracing::info!(
            "{}: pruning skipped (BACKUP_SKIP_BACKENDS_FROM_PRUNE)",
            storage.name()
        );
        return;
    }
    let now = Zoned::now().with_time_zone(config.time_zone.clone());
    match prune::apply(storage, &config.retention, &now).await {
        Ok(report) => {
            if let Some(why) = &report.refused {
                warnings.push(format!("{}: {why}", storage.name()));
            }
            for e in &report.errors {
                warnings.push(format!("{}: pruning failed for {e}", storage.name()));
            }
            dest.prune = Some(report);
        }
        Err(e) => {
            let msg = format!("{}: pruning skipped, listing failed: {e}", storage.name());
            tracing::error!("{msg}");
            warnings.push(msg.clone());
            dest.prune_error = Some(msg);
        }
    }
}

/// `dunnage prune`: applies the retention policy now to every destination, or with
/// `dry_run` only prints what it would delete and why. Returns false when something failed.
pub async fn prune_now(config: &Config, dry_run: bool, out: &mut impl std::io::Write) -> bool {
    let name = &config.name;
    let mut ok = true;
    if !config.archive_dir.is_dir() {
        let _ = writeln!(
            out,
            "[{name}] Local: {} does not exist; nothing to prune",
            config.archive_dir.display()
        );
    }
    let (owned, unavailable) = destinations(config).await;
    for (dest, e) in &unavailable {
        let _ = writeln!(out, "[{name}] {dest}: {e}");
        ok = false;
    }
    if !config.retention.is_active() {
        let _ = writeln!(out, "[{name}] no retention rule is set; nothing is deleted");
        return ok;
    }
    let _held = if dry_run {
        None
    } else {
        match lock::acquire(&config.lock_file, config.lock_timeout).await {
            Ok(held) => Some(held),
            Err(e) => {
                let _ = writeln!(out, "[{name}] {e}");
                return false;
            }
        }
    };
    for storage in &owned {
        let mut say = |line: String| {
            let _ = writeln!(out, "[{name}] {}: {line}", storage.name());
        };
        ok &= prune_one(config, storage.as_ref(), dry_run, &mut say).await;
    }
    ok
}

/// `dunnage prune` for one destination.
async fn prune_one(
    config: &Config,
    storage: &dyn Storage,
    dry_run: bool,
    say: &mut impl FnMut(String),
) -> bool {
    if config.skips_prune(storage.name()) {
        say("skipped (BACKUP_SKIP_BACKENDS_FROM_PRUNE)".into());
        return true;
    }
    let now = Zoned::now().with_time_zone(config.time_zone.clone());
    if !dry_run {
        return match prune::apply(storage, &config.retention, &now).await {
            Ok(r) => {
                say(format!(
                    "deleted {} of {} backup(s){}{}",
                    r.deleted.len(),
                    r.total,
                    r.refused.map(|w| format!("; {w}")).unwrap_or_default(),
                    if r.errors.is_empty() {
                        String::new()
                    } else {
                        format!("; failed: {}", r.errors.join("; "))
                    }
                ));
                r.errors.is_empty()
            }
            Err(e) => {
                say(format!("listing failed, nothing deleted: {e}"));
                false
            }
        };
    }
    let entries = match storage.list().await {
        Ok(entries) => entries,
        Err(e) => {
            say(format!("listing failed, nothing would be deleted: {e}"));
            return false;
        }
    };
    let plan = prune::plan(&entries, &config.retention, &now);
    if plan.decisions.is_empty() {
        say(format!(
            "no backups match prefix {:?}",
            config.retention.prefix
        ));
    }
    let refused = plan.refused.is_some();
    for (entry, verdict) in &plan.decisions {
        let when = entry
            .modified
            .to_zoned(config.time_zone.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z");
        let line = match verdict {
            prune::Verdict::Keep(why) => {
                format!("keep   {} ({when}): {}", entry.name, why.join(", "))
            }
            prune::Verdict::Delete(why) if refused => {
                format!(
                    "keep   {} ({when}): safety rule; would be {why}",
                    entry.name
                )
            }
            prune::Verdict::Delete(why) => format!("delete {} ({when}): {why}", entry.name),
        };
        say(line);
    }
    if let Some(why) = &plan.refused {
        say(why.clone());
    }
    say(format!(
        "dry run: {} backup(s) would be deleted",
        plan.deletions().len()
    ));
    true
}

/// Archives and stores once with `config` (no lock, no pruning, no containers). Must be
/// called inside a multi-threaded Tokio runtime. `sources_released` is signalled as soon as
/// the archive stage has finished reading the sources (and dropped if it never starts).
pub async fn backup(
    config: &Config,
    destinations: &[&dyn Storage],
    archive_name: &str,
    sources_released: Option<tokio::sync::oneshot::Sender<()>>,
    spool_dir: Option<&std::path::Path>,
) -> Result<RunReport, RunError> {
    let started = Zoned::now().with_time_zone(config.time_zone.clone());
    let clock = Instant::now();
    let archive_name = archive_name.to_owned();
    if destinations.is_empty() {
        return Err(RunError::NoDestination(config.archive_dir.clone()));
    }
    tracing::info!(
        "backing up {} as {archive_name} to {} ({})",
        config.sources.display(),
        destinations
            .iter()
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join(", "),
        config.codec
    );

    let (writer, data) = stream::channel();
    let sources = vec![config.sources.clone()];
    let exclude = config.exclude.clone();
    let codec = config.codec;
    let producer = tokio::task::spawn_blocking(move || {
        let (writer, stats) = archive::write_archive(&sources, exclude.as_ref(), codec, writer)?;
        writer.finish().map_err(ArchiveError::Output)?;
        Ok::<_, ArchiveError>(stats)
    });
    let producer = async move {
        let produced = producer.await;
        if let Some(tx) = sources_released {
            let _ = tx.send(());
        }
        produced
    };
    let (stored, produced) = match spool_dir {
        None => tokio::join!(
            storage::put_all(destinations, &archive_name, data),
            producer
        ),
        Some(dir) => {
            // The whole archive goes to the spool first; containers restart when the
            // sources are read, and only then does the (possibly slow) store begin.
            let (spooled, produced) =
                tokio::join!(spool::write(data, dir, &archive_name), producer);
            let stored = match spooled {
                Ok(file) => {
                    tracing::info!(
                        "archive spooled to {} ({} bytes); storing it",
                        file.path().display(),
                        file.bytes
                    );
                    match file.stream().await {
                        Ok(stream) => storage::put_all(destinations, &archive_name, stream).await,
                        Err(e) => destinations
                            .iter()
                            .map(|_| {
                                Err(StorageError::io(
                                    "reading the spool file",
                                    std::io::Error::new(e.kind(), e.to_string()),
                                ))
                            })
                            .collect(),
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    let incomplete = matches!(e, StorageError::Incomplete(_));
                    destinations
                        .iter()
                        .map(|_| {
                            let io = std::io::Error::other(msg.clone());
                            Err(if incomplete {
                                StorageError::Incomplete(io)
                            } else {
                                StorageError::io("spooling", io)
                            })
                        })
                        .collect()
                }
            };
            (stored, produced)
        }
    };
    let produced =
        produced.map_err(|e| RunError::Internal(format!("archive stage stopped: {e}")))?;

    // Name the cause, not its echo: destinations that saw an incomplete stream failed
    // because the archive stage did; an archive stage whose readers all went away failed
    // because every destination did.
    let all_failed_on_their_own = stored
        .iter()
        .all(|r| matches!(r, Err(e) if !matches!(e, StorageError::Incomplete(_))));
    let stats = match produced {
        Ok(stats) => Some(stats),
        Err(archive) if !all_failed_on_their_own => return Err(archive.into()),
        Err(echo) => {
            tracing::debug!("archive stage stopped after every destination failed: {echo}");
            None
        }
    };
    let outcomes: Vec<(&'static str, Result<Stored, StorageError>)> =
        destinations.iter().map(|d| d.name()).zip(stored).collect();
    let stats = match stats {
        Some(stats) if outcomes.iter().any(|(_, r)| r.is_ok()) => stats,
        _ => {
            return Err(RunError::Stores(
                outcomes
                    .into_iter()
                    .filter_map(|(n, r)| r.err().map(|e| (n, e)))
                    .collect(),
            ));
        }
    };
    for (name, result) in &outcomes {
        if let Err(e) = result {
            tracing::error!("storing the archive in {name} failed: {e}");
        }
    }

    let local_stored = outcomes.iter().any(|(n, r)| *n == "Local" && r.is_ok());
    if let (true, Some(link)) = (local_stored, &config.latest_symlink) {
        LocalStorage::new(&config.archive_dir)
            .update_symlink(link, &archive_name)
            .await
            .map_err(|source| RunError::Stores(vec![("Local", source)]))?;
    }
    let stored = outcomes
        .into_iter()
        .map(|(n, r)| (n, r.map_err(|e| e.to_string())))
        .collect();

    Ok(RunReport {
        archive_name,
        started,
        duration: clock.elapsed(),
        archive: stats,
        stored,
    })
}

fn describe_failures(failures: &[(&'static str, StorageError)]) -> String {
    match failures {
        [(name, e)] => format!("storing the archive in {name} failed: {e}"),
        all => format!(
            "storing the archive failed in every destination: {}",
            all.iter()
                .map(|(n, e)| format!("{n}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// The destinations this configuration stores to, and those that could not be set up
/// (named, with the reason). A missing local archive folder turns local storage off, as in
/// the reference, and says so.
pub async fn destinations(
    config: &Config,
) -> (Vec<Box<dyn Storage>>, Vec<(&'static str, StorageError)>) {
    let mut list: Vec<Box<dyn Storage>> = Vec::new();
    let mut failed = Vec::new();
    if config.archive_dir.is_dir() {
        list.push(Box::new(LocalStorage::new(&config.archive_dir)));
    } else {
        tracing::warn!(
            "local archive folder {} does not exist: local storage is off",
            config.archive_dir.display()
        );
    }
    if let Some(s3) = &config.s3 {
        match S3Storage::connect(s3, config.retry, &config.docker.state_dir).await {
            Ok(store) => list.push(Box::new(store)),
            Err(e) => failed.push(("S3", e)),
        }
    }
    if let Some(azure) = &config.azure {
        match storage::azure::connect(azure, config.retry) {
            Ok(store) => list.push(store),
            Err(e) => failed.push(("Azure", e)),
        }
    }
    if let Some(sftp) = &config.sftp {
        list.push(Box::new(SftpStorage::new(sftp, config.retry)));
    }
    if let Some(dropbox) = &config.dropbox {
        match DropboxStorage::new(dropbox, config.retry) {
            Ok(store) => list.push(Box::new(store)),
            Err(e) => failed.push(("Dropbox", e)),
        }
    }
    if let Some(webdav) = &config.webdav {
        match WebDavStorage::connect(webdav, config.retry) {
            Ok(store) => list.push(Box::new(store)),
            Err(e) => failed.push(("WebDAV", e)),
        }
    }
    (list, failed)
}

fn log_summary(s: &RunStats) {
    let mut line = String::new();
    let _ = write!(
        line,
        "[{}] run {} after {} (lock wait {})",
        s.schedule,
        if s.complete() {
            "succeeded"
        } else if s.succeeded() {
            "stored the backup, but not in every destination,"
        } else {
            "FAILED"
        },
        format_duration(s.took),
        format_duration(s.lock_wait)
    );
    if let (Some(name), Some(a)) = (&s.archive_name, &s.archive) {
        let _ = write!(
            line,
            "; archive {name}: {} files, {} entries, {:.1} MiB read",
            a.files,
            a.entries,
            a.file_bytes as f64 / f64::from(1 << 20)
        );
    }
    for d in &s.destinations {
        if let Some(e) = &d.error {
            let _ = write!(line, "; {}: FAILED ({e})", d.name);
        }
        if let Some(stored) = &d.stored {
            let _ = write!(
                line,
                "; {}: {} bytes at {}",
                d.name, stored.bytes, stored.location
            );
        }
        if let Some(p) = &d.prune {
            let _ = write!(
                line,
                ", pruned {} of {} ({} errors)",
                p.deleted.len(),
                p.total,
                p.errors.len()
            );
        }
    }
    for c in &s.containers {
        match c.down_for {
            Some(d) => {
                let _ = write!(line, "; container {} down {:.2}s", c.name, d.as_secs_f64());
            }
            None => {
                let _ = write!(line, "; container {} left stopped", c.name);
            }
        }
    }
    let _ = write!(line, "; {} warning(s)", s.warnings.len());
    match &s.error {
        None => tracing::info!("{line}"),
        Some(e) => tracing::error!("{line}: {e}"),
    }
}
