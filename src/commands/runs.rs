//! The runs of the scheduler process, whoever started them (a schedule, the REST API,
//! Akeeba's API): at most one queued or running per profile, at most `DUNNAGE_CONCURRENCY`
//! running at once (the rest queue in order), each cancellable and watchable while it goes
//! (phase, bytes, destinations, log) and remembered for a while after it ended.
//!
//! A run waits here for a slot of this process, then takes its file locks like any run
//! (so one-shot `backup` in another process is still kept apart).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use super::restore;
use crate::config::Config;
use crate::manifest::Level;
use crate::metrics::Metrics;
use crate::progress::{Live, LiveSnapshot};
use crate::report::{Outcome, RunStats};
use crate::schedule::{SHUTDOWN_RECOVERY_WAIT, shutdown_requested};

/// Ended runs kept for status queries.
const KEPT: usize = 200;

/// What a run does.
#[derive(Debug, Clone)]
pub enum Job {
    Backup,
    /// `BACKUP_VERIFY_CRON_EXPRESSION`: every stored backup, reported like a run.
    ScheduledVerify(Level),
    /// One backup, `latest` or `all`, at a level.
    Verify {
        which: String,
        level: Level,
    },
    Restore(restore::Request),
}

impl Job {
    fn kind(&self) -> &'static str {
        match self {
            Job::Backup => "backup",
            Job::ScheduledVerify(_) | Job::Verify { .. } => "verify",
            Job::Restore(_) => "restore",
        }
    }
}

/// Who asked for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Api,
    Akeeba,
}

/// Where a run is.
#[derive(Debug, Clone)]
pub enum State {
    Queued,
    Running,
    Finished(Arc<Finished>),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// `success`, `warning`, `failure` or `cancelled`.
    pub outcome: &'static str,
    pub error: Option<String>,
    /// What it did (the run's summary, verify results, the restore's report).
    pub result: Value,
    /// A backup's statistics (for Akeeba's answers).
    pub stats: Option<RunStats>,
    pub ended: jiff::Timestamp,
}

/// One run.
pub struct Run {
    pub id: String,
    pub profile: String,
    pub kind: &'static str,
    pub trigger: Trigger,
    pub queued: jiff::Timestamp,
    pub live: Live,
    state: watch::Sender<State>,
    cancel: watch::Sender<bool>,
}

impl Run {
    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// Resolves once the run has ended.
    pub async fn finished(&self) -> Arc<Finished> {
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| matches!(s, State::Finished(_)))
            .await
            .map(|s| s.clone());
        match state {
            Ok(State::Finished(f)) => f,
            _ => unreachable!("the sender lives in the run"),
        }
    }

    /// Asks the run to stop; false when it had already ended.
    pub fn cancel(&self) -> bool {
        if matches!(self.state(), State::Finished(_)) {
            return false;
        }
        self.cancel.send_replace(true);
        true
    }

    /// The run as the API shows it: id, profile, kind, state, progress, result.
    pub fn describe(&self) -> Value {
        let LiveSnapshot {
            phase,
            bytes_read,
            archive_bytes,
            entries,
            folder,
            destinations,
        } = self.live.snapshot();
        let mut out = json!({
            "id": self.id,
            "profile": self.profile,
            "kind": self.kind,
            "trigger": self.trigger,
            "queued": self.queued.to_string(),
            "phase": phase,
            "progress": {"bytes_read": bytes_read, "archive_bytes": archive_bytes,
                         "entries": entries, "folder": folder},
            "destinations": destinations,
        });
        out["state"] = match self.state() {
            State::Queued => json!("queued"),
            State::Running => json!("running"),
            State::Finished(f) => {
                out["outcome"] = json!(f.outcome);
                out["error"] = json!(f.error);
                out["result"] = f.result.clone();
                out["ended"] = json!(f.ended.to_string());
                json!("finished")
            }
        };
        // Destination errors and hook output may quote a setting; never a secret.
        serde_json::from_str(&crate::secrets::redact(&out.to_string())).unwrap_or(out)
    }
}

/// Every run of this process.
pub struct Runs {
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Queued or running, by profile.
    active: BTreeMap<String, Arc<Run>>,
    /// Every run still remembered, oldest first.
    recent: VecDeque<Arc<Run>>,
    seq: u64,
}

impl Runs {
    /// `concurrency` runs at once in this process.
    pub fn new(concurrency: usize, metrics: Arc<Metrics>, shutdown: watch::Receiver<bool>) -> Self {
        Runs {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            metrics,
            shutdown,
            inner: Mutex::default(),
        }
    }

    /// Queues a run of `config`; `Err` with the profile's run already queued or running.
    pub fn start(
        self: &Arc<Self>,
        config: &Config,
        job: Job,
        trigger: Trigger,
    ) -> Result<Arc<Run>, Arc<Run>> {
        let mut inner = self.inner.lock().expect("runs");
        if let Some(active) = inner.active.get(&config.name) {
            return Err(active.clone());
        }
        inner.seq += 1;
        let now = jiff::Timestamp::now();
        let run = Arc::new(Run {
            id: format!("{}-{}", now.as_millisecond(), inner.seq),
            profile: config.name.clone(),
            kind: job.kind(),
            trigger,
            queued: now,
            live: Live::default(),
            state: watch::Sender::new(State::Queued),
            cancel: watch::Sender::new(false),
        });
        run.live.set_phase("queued");
        inner.active.insert(config.name.clone(), run.clone());
        inner.recent.push_back(run.clone());
        while inner.recent.len() > KEPT {
            match inner
                .recent
                .iter()
                .position(|r| matches!(r.state(), State::Finished(_)))
            {
                Some(i) => inner.recent.remove(i),
                None => break,
            };
        }
        drop(inner);
        tokio::spawn(self.clone().execute(run.clone(), config.clone(), job));
        Ok(run)
    }

    /// A run by id, if it is still remembered.
    pub fn get(&self, id: &str) -> Option<Arc<Run>> {
        let inner = self.inner.lock().expect("runs");
        inner.recent.iter().find(|r| r.id == id).cloned()
    }

    /// The remembered runs of `profile`, newest first.
    pub fn of(&self, profile: &str) -> Vec<Arc<Run>> {
        let inner = self.inner.lock().expect("runs");
        inner
            .recent
            .iter()
            .rev()
            .filter(|r| r.profile == profile)
            .cloned()
            .collect()
    }

    /// The queued or running run of `profile`.
    pub fn active(&self, profile: &str) -> Option<Arc<Run>> {
        self.inner
            .lock()
            .expect("runs")
            .active
            .get(profile)
            .cloned()
    }

    /// Waits (up to `limit`) until no run is queued or running: at shutdown, aborted runs
    /// still start their containers again.
    pub async fn wait_idle(&self, limit: std::time::Duration) {
        let until = tokio::time::Instant::now() + limit;
        while !self.inner.lock().expect("runs").active.is_empty()
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn execute(self: Arc<Self>, run: Arc<Run>, config: Config, job: Job) {
        let mut cancel = run.cancel.subscribe();
        let mut shutdown = self.shutdown.clone();
        // Cancelled or shut down: why the run stops.
        let stop = async move {
            tokio::select! {
                _ = cancel.wait_for(|c| *c) => "cancelled through the API",
                () = shutdown_requested(&mut shutdown) => "aborted by shutdown",
            }
        };
        tokio::pin!(stop);
        // The slot is held until the run is marked finished: a watcher never sees more runs
        // running than there are slots.
        let mut slot = None;
        let finished = tokio::select! {
            permit = self.slots.clone().acquire_owned() => {
                slot = Some(permit.expect("the semaphore is never closed"));
                run.state.send_replace(State::Running);
                tokio::select! {
                    finished = work(&config, &job, &run.live, run.cancel.subscribe(), self.shutdown.clone()) => finished,
                    why = &mut stop => {
                        tracing::warn!("[{}] {} {why}; its unfinished upload is removed", config.name, run.kind);
                        super::recover::recover_interrupted(&config, SHUTDOWN_RECOVERY_WAIT).await;
                        cancelled(why)
                    }
                }
            }
            why = &mut stop => cancelled(why),
        };
        if let Some(stats) = &finished.stats {
            self.metrics.record(stats);
        }
        run.live.set_phase(if finished.outcome == "cancelled" {
            "cancelled"
        } else {
            "done"
        });
        self.inner.lock().expect("runs").active.remove(&config.name);
        run.state.send_replace(State::Finished(Arc::new(finished)));
        drop(slot);
    }
}

fn cancelled(why: &str) -> Finished {
    Finished {
        outcome: "cancelled",
        error: Some(why.to_owned()),
        result: Value::Null,
        stats: None,
        ended: jiff::Timestamp::now(),
    }
}

/// Does the job. A restore is told to stop (so an in-place one starts its containers again
/// itself); the others are dropped by the caller when stopped.
async fn work(
    config: &Config,
    job: &Job,
    live: &Live,
    cancel: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) -> Finished {
    match job {
        Job::Backup => from_stats(super::backup::run_observed(config, live).await),
        Job::ScheduledVerify(level) => {
            live.set_phase("verifying");
            from_stats(super::verify::scheduled(config, *level).await)
        }
        Job::Verify { which, level } => {
            live.set_phase("verifying");
            let results =
                super::verify::run(std::slice::from_ref(config), which, None, *level).await;
            let code = super::verify::exit_code(&results);
            Finished {
                outcome: if code == 0 { "success" } else { "failure" },
                error: (code != 0).then(|| match code {
                    1 => "damaged or missing".to_owned(),
                    _ => "could not be checked".to_owned(),
                }),
                result: serde_json::to_value(&results).unwrap_or(Value::Null),
                stats: None,
                ended: jiff::Timestamp::now(),
            }
        }
        Job::Restore(request) => {
            live.set_phase("restoring");
            // Cancel or shutdown stop the restore the way SIGTERM stops the command.
            let (stop_tx, stop_rx) = watch::channel(false);
            let forward = tokio::spawn(async move {
                let (mut cancel, mut shutdown) = (cancel, shutdown);
                tokio::select! {
                    _ = cancel.wait_for(|c| *c) => {}
                    () = shutdown_requested(&mut shutdown) => {}
                }
                let _ = stop_tx.send(true);
            });
            let mut out = Vec::new();
            let code = restore::run(config, request, stop_rx, &mut out).await;
            forward.abort();
            let report = String::from_utf8_lossy(&out).into_owned();
            Finished {
                outcome: if code == 0 { "success" } else { "failure" },
                error: (code != 0).then(|| {
                    report
                        .lines()
                        .rfind(|l| l.starts_with("restore failed"))
                        .unwrap_or("some entries were not restored")
                        .to_owned()
                }),
                result: json!({"exit_code": code, "report": report}),
                stats: None,
                ended: jiff::Timestamp::now(),
            }
        }
    }
}

fn from_stats(stats: RunStats) -> Finished {
    let outcome = match stats.outcome() {
        Outcome::Success => "success",
        Outcome::Warning => "warning",
        Outcome::Failure => "failure",
    };
    Finished {
        outcome,
        error: stats.failure(),
        result: summary(&stats),
        stats: Some(stats),
        ended: jiff::Timestamp::now(),
    }
}

/// A run's statistics for the API.
fn summary(stats: &RunStats) -> Value {
    json!({
        "summary": stats.summary(),
        "archive": stats.archive_name,
        "seconds": stats.took.as_secs_f64(),
        "lock_wait_seconds": stats.lock_wait.as_secs_f64(),
        "source_bytes": stats.archive.as_ref().map(|a| a.file_bytes),
        "files": stats.archive.as_ref().map(|a| a.files),
        "destinations": stats.destinations.iter().map(|d| json!({
            "name": d.backend.to_string(),
            "stored_bytes": d.stored.as_ref().map(|s| s.bytes),
            "error": d.error,
            "pruned": d.prune.as_ref().map(|p| p.deleted.len()),
            "prune_error": d.prune_error,
            "verified": d.verified,
        })).collect::<Vec<_>>(),
        "containers": stats.containers.iter().map(|c| json!({
            "name": c.name,
            "down_seconds": c.down_for.map(|d| d.as_secs_f64()),
            "error": c.error,
        })).collect::<Vec<_>>(),
        "warnings": stats.warnings,
    })
}
