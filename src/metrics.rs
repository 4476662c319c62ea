//! Prometheus metrics of the runs (`GET /metrics`), fed from each run's [`RunStats`].
//!
//! Names carry the `dunnage_` prefix and base units (seconds, bytes), as Prometheus asks.
//! `dunnage_last_success_timestamp_seconds` is the alert anchor ("no success for 26 h"), so
//! it survives restarts: it is also written to `BACKUP_STATE_DIR` and read back at start.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::report::{Outcome, RunKind, RunStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabel {
    schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    schedule: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    schedule: String,
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    schedule: String,
    destination: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    runs: Family<OutcomeLabels, Counter>,
    last_success: Family<ScheduleLabel, FloatGauge>,
    last_duration: Family<ScheduleLabel, FloatGauge>,
    archive_bytes: Family<ScheduleLabel, Counter>,
    source_bytes: Family<ScheduleLabel, Counter>,
    files: Family<ScheduleLabel, Counter>,
    uploads: Family<ResultLabels, Counter>,
    uploaded_bytes: Family<DestinationLabels, Counter>,
    retries: Family<DestinationLabels, Counter>,
    pruned: Family<DestinationLabels, Counter>,
    prune_refused: Family<DestinationLabels, Counter>,
    downtime: Family<ScheduleLabel, FloatCounter>,
    lock_wait: Family<ScheduleLabel, FloatCounter>,
    verified: Family<ResultLabels, Counter>,
    /// Where each schedule's last success is kept (the latest settings win after a reload).
    state_dirs: std::sync::Mutex<std::collections::BTreeMap<String, PathBuf>>,
    /// The last backup run's outcome and end per schedule, for the REST API.
    last: std::sync::Mutex<std::collections::BTreeMap<String, (&'static str, String)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dunnage");
        let m = Metrics {
            registry: Registry::default(),
            runs: Family::default(),
            last_success: Family::default(),
            last_duration: Family::default(),
            archive_bytes: Family::default(),
            source_bytes: Family::default(),
            files: Family::default(),
            uploads: Family::default(),
            uploaded_bytes: Family::default(),
            retries: Family::default(),
            pruned: Family::default(),
            prune_refused: Family::default(),
            downtime: Family::default(),
            lock_wait: Family::default(),
            verified: Family::default(),
            state_dirs: Default::default(),
            last: Default::default(),
        };
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "The running dunnage version", build);
        registry.register(
            "runs",
            "Backup runs by outcome (success, warning, failure)",
            m.runs.clone(),
        );
        registry.register_with_unit(
            "last_success_timestamp",
            "When the last backup run of the schedule succeeded (Unix time); kept across restarts",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register_with_unit(
            "last_run_duration",
            "How long the last backup run of the schedule took",
            Unit::Seconds,
            m.last_duration.clone(),
        );
        registry.register_with_unit(
            "archive",
            "Archive bytes stored (one copy)",
            Unit::Bytes,
            m.archive_bytes.clone(),
        );
        registry.register_with_unit(
            "source",
            "Bytes of file content read from the sources",
            Unit::Bytes,
            m.source_bytes.clone(),
        );
        registry.register("files", "Regular files archived", m.files.clone());
        registry.register(
            "uploads",
            "Archives stored per destination, by result (stored, failed)",
            m.uploads.clone(),
        );
        registry.register_with_unit(
            "uploaded",
            "Bytes stored per destination",
            Unit::Bytes,
            m.uploaded_bytes.clone(),
        );
        registry.register(
            "retries",
            "Failed requests to a destination that were tried again within BACKUP_RETRY_TIMEOUT",
            m.retries.clone(),
        );
        registry.register("pruned", "Backups deleted by retention", m.pruned.clone());
        registry.register(
            "prune_refused",
            "Prunes the safety rule stopped (it would have deleted every backup)",
            m.prune_refused.clone(),
        );
        registry.register_with_unit(
            "container_downtime",
            "Time labeled containers were stopped, summed",
            Unit::Seconds,
            m.downtime.clone(),
        );
        registry.register_with_unit(
            "lock_wait",
            "Time runs waited for the run lock",
            Unit::Seconds,
            m.lock_wait.clone(),
        );
        registry.register(
            "verified",
            "Backups verified, by result (ok, damaged, unchecked)",
            m.verified.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Loads `schedule`'s last success time from `state_dir` (kept across restarts), and
    /// remembers where to write it.
    pub fn restore_state(&self, schedule: &str, state_dir: &Path) {
        let path = state_dir.join(format!("last-success-{schedule}"));
        if let Some(t) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
        {
            self.last_success.get_or_create(&label(schedule)).set(t);
        }
        self.state_dirs
            .lock()
            .expect("lock")
            .insert(schedule.to_owned(), path);
    }

    /// Counts what one run did.
    pub fn record(&self, stats: &RunStats) {
        let schedule = &stats.schedule;
        if stats.kind == RunKind::Verify {
            return self.record_verify(stats);
        }
        let outcome = match stats.outcome() {
            Outcome::Success => "success",
            Outcome::Warning => "warning",
            Outcome::Failure => "failure",
        };
        self.last.lock().expect("lock").insert(
            schedule.clone(),
            (
                outcome,
                jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .unwrap_or_default()
                    .to_string(),
            ),
        );
        self.runs
            .get_or_create(&OutcomeLabels {
                schedule: schedule.clone(),
                outcome: outcome.into(),
            })
            .inc();
        self.last_duration
            .get_or_create(&label(schedule))
            .set(stats.took.as_secs_f64());
        self.lock_wait
            .get_or_create(&label(schedule))
            .inc_by(stats.lock_wait.as_secs_f64());
        if stats.succeeded() {
            let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
            self.last_success.get_or_create(&label(schedule)).set(now);
            self.persist(schedule, now);
        }
        if let Some(a) = &stats.archive {
            self.source_bytes
                .get_or_create(&label(schedule))
                .inc_by(a.file_bytes);
            self.files.get_or_create(&label(schedule)).inc_by(a.files);
        }
        if let Some(stored) = stats.destinations.iter().find_map(|d| d.stored.as_ref()) {
            self.archive_bytes
                .get_or_create(&label(schedule))
                .inc_by(stored.bytes);
        }
        for d in &stats.destinations {
            let dest = DestinationLabels {
                schedule: schedule.clone(),
                destination: d.backend.name().into(),
            };
            let result = if d.error.is_none() && d.stored.is_some() {
                "stored"
            } else {
                "failed"
            };
            self.uploads
                .get_or_create(&result_labels(schedule, d.backend.name(), result))
                .inc();
            if let Some(s) = &d.stored {
                self.uploaded_bytes.get_or_create(&dest).inc_by(s.bytes);
            }
            if d.verified.is_some() {
                self.verified
                    .get_or_create(&result_labels(schedule, d.backend.name(), "ok"))
                    .inc();
            }
            if let Some(p) = &d.prune {
                self.pruned
                    .get_or_create(&dest)
                    .inc_by(p.deleted.len() as u64);
                if p.refused.is_some() {
                    self.prune_refused.get_or_create(&dest).inc();
                }
            }
        }
        let down: f64 = stats
            .containers
            .iter()
            .filter_map(|c| c.down_for)
            .map(|d| d.as_secs_f64())
            .sum();
        self.downtime.get_or_create(&label(schedule)).inc_by(down);
    }

    fn record_verify(&self, stats: &RunStats) {
        for d in &stats.destinations {
            let result = if d.error.is_some() { "damaged" } else { "ok" };
            self.verified
                .get_or_create(&result_labels(&stats.schedule, d.backend.name(), result))
                .inc();
        }
    }

    fn persist(&self, schedule: &str, at: f64) {
        let dirs = self.state_dirs.lock().expect("lock");
        if let Some(path) = dirs.get(schedule) {
            let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))
                .and_then(|()| std::fs::write(path, format!("{at:.3}\n")));
        }
    }

    /// The last backup run of `schedule` since start: outcome and when it ended.
    pub fn last_run(&self, schedule: &str) -> Option<(&'static str, String)> {
        self.last.lock().expect("lock").get(schedule).cloned()
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        // Retries are counted where requests are made (`net`), for every destination.
        for (schedule, destination, n) in crate::net::retries() {
            let counter = self.retries.get_or_create(&DestinationLabels {
                schedule: schedule.to_string(),
                destination: destination.to_string(),
            });
            counter.inc_by(n.saturating_sub(counter.get()));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

fn label(schedule: &str) -> ScheduleLabel {
    ScheduleLabel {
        schedule: schedule.to_owned(),
    }
}

fn result_labels(schedule: &str, destination: &str, result: &str) -> ResultLabels {
    ResultLabels {
        schedule: schedule.to_owned(),
        destination: destination.to_owned(),
        result: result.to_owned(),
    }
}
