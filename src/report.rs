//! What one run did: the results every reader shares (the summary log line, notifications,
//! health pings, and later the API and metrics). A leaf: it holds data and the rules that
//! classify it, and calls nothing.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::Zoned;

use crate::archive::ArchiveStats;
use crate::docker::Downtime;
use crate::duration::format_duration;
use crate::progress::human_bytes;
use crate::prune::PruneReport;
use crate::storage::{Backend, Stored};

/// How a run ended, for everyone who reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Success,
    /// Stored, but something needs attention (a destination failed, a prune was refused,
    /// files changed while read).
    Warning,
    Failure,
}

/// What a run was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Backup,
    /// `BACKUP_VERIFY_CRON_EXPRESSION`: stored backups checked against their manifests.
    Verify,
}

/// Everything one run did.
#[derive(Debug, Clone)]
pub struct RunStats {
    pub kind: RunKind,
    pub schedule: String,
    pub started: Zoned,
    pub took: Duration,
    /// Time spent waiting for another run to release the lock.
    pub lock_wait: Duration,
    pub archive_name: Option<String>,
    /// Where the archive is (or would be) in the local folder, for hooks and templates.
    pub archive_path: Option<String>,
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

/// What happened at one destination.
#[derive(Debug, Clone)]
pub struct DestinationStats {
    pub backend: Backend,
    pub stored: Option<Stored>,
    /// Why storing failed here (other destinations may have succeeded).
    pub error: Option<String>,
    pub prune: Option<PruneReport>,
    pub prune_error: Option<String>,
    /// `BACKUP_VERIFY_LEVEL`: what verifying the stored backup found, when it ran.
    pub verified: Option<String>,
}

impl DestinationStats {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            stored: None,
            error: None,
            prune: None,
            prune_error: None,
            verified: None,
        }
    }
}

impl RunStats {
    /// A run of `schedule` that starts now, with nothing done yet.
    pub fn new(schedule: &str, started: Zoned) -> Self {
        Self {
            kind: RunKind::Backup,
            schedule: schedule.to_owned(),
            started,
            took: Duration::ZERO,
            lock_wait: Duration::ZERO,
            archive_name: None,
            archive_path: None,
            archive: None,
            destinations: Vec::new(),
            containers: Vec::new(),
            warnings: Vec::new(),
            error: None,
            pings_failed: 0,
            notifications_failed: 0,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    /// What went wrong, for messages: the run's error, else each failed destination's.
    pub fn failure(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        let failed: Vec<String> = self
            .destinations
            .iter()
            .filter_map(|d| Some(format!("{}: {}", d.backend, d.error.as_ref()?)))
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }

    /// Succeeded and stored in every configured destination.
    pub fn complete(&self) -> bool {
        self.succeeded() && self.destinations.iter().all(|d| d.error.is_none())
    }

    /// A destination that failed is a failure even when others stored the backup (an
    /// offsite copy missing is what `NOTIFICATION_LEVEL=error` exists for), as in the
    /// reference.
    pub fn outcome(&self) -> Outcome {
        if !self.complete() {
            Outcome::Failure
        } else if !self.warnings.is_empty() {
            Outcome::Warning
        } else {
            Outcome::Success
        }
    }

    /// The one line that sums the run up in the log.
    pub fn summary(&self) -> String {
        let mut line = String::new();
        let _ = write!(
            line,
            "[{}] {} {} after {} (lock wait {})",
            self.schedule,
            match self.kind {
                RunKind::Backup => "run",
                RunKind::Verify => "verify",
            },
            if self.complete() {
                "succeeded"
            } else if self.succeeded() {
                "stored the backup, but not in every destination,"
            } else {
                "FAILED"
            },
            format_duration(self.took),
            format_duration(self.lock_wait)
        );
        if let (Some(name), Some(a)) = (&self.archive_name, &self.archive) {
            let _ = write!(
                line,
                "; archive {name}: {} files, {} entries, {} read",
                a.files,
                a.entries,
                human_bytes(a.file_bytes)
            );
            let secs = self.took.as_secs_f64();
            if secs > 0.0 && a.file_bytes > 0 {
                let _ = write!(
                    line,
                    " at {}/s",
                    human_bytes((a.file_bytes as f64 / secs) as u64)
                );
            }
            let stored = self.destinations.iter().find_map(|d| d.stored.as_ref());
            if let Some(stored) = stored.filter(|_| a.file_bytes > 0) {
                let _ = write!(
                    line,
                    ", archive {} (ratio {:.2})",
                    human_bytes(stored.bytes),
                    stored.bytes as f64 / a.file_bytes as f64
                );
            }
        }
        for d in &self.destinations {
            if let Some(e) = &d.error {
                let _ = write!(line, "; {}: FAILED ({e})", d.backend);
            }
            if let Some(stored) = &d.stored {
                let _ = write!(
                    line,
                    "; {}: {} at {}",
                    d.backend,
                    human_bytes(stored.bytes),
                    stored.location
                );
            }
            match (&d.verified, &d.stored) {
                (Some(v), Some(_)) => {
                    let _ = write!(line, ", {v}");
                }
                (Some(v), None) => {
                    let _ = write!(line, "; {}: {v}", d.backend);
                }
                (None, _) => {}
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
        for c in &self.containers {
            match c.down_for {
                Some(d) => {
                    let _ = write!(line, "; container {} down {:.2}s", c.name, d.as_secs_f64());
                }
                None => {
                    let _ = write!(line, "; container {} left stopped", c.name);
                }
            }
        }
        let _ = write!(line, "; {} warning(s)", self.warnings.len());
        if let Some(e) = &self.error {
            let _ = write!(line, ": {e}");
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> RunStats {
        let started = "2026-11-30T03:00:00+00:00[UTC]".parse().unwrap();
        RunStats::new("default", started)
    }

    fn stored(backend: Backend) -> DestinationStats {
        DestinationStats {
            stored: Some(Stored {
                location: format!("{backend}:x.tar.gz"),
                bytes: 10,
            }),
            ..DestinationStats::new(backend)
        }
    }

    fn failed(backend: Backend) -> DestinationStats {
        DestinationStats {
            error: Some("connection refused".into()),
            ..DestinationStats::new(backend)
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(140), "140 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(557_056_000), "531.2 MiB");
        assert_eq!(human_bytes(3 << 40), "3.0 TiB");
    }

    #[test]
    fn the_summary_says_sizes_rate_and_ratio() {
        let mut s = stats();
        s.took = Duration::from_secs(2);
        s.archive_name = Some("b.tar.gz".into());
        s.archive = Some(ArchiveStats {
            entries: 3,
            files: 2,
            file_bytes: 40 << 20,
            ..Default::default()
        });
        let mut local = stored(Backend::Local);
        local.stored.as_mut().unwrap().bytes = 10 << 20;
        s.destinations = vec![local];
        let line = s.summary();
        assert!(
            line.contains(
                "2 files, 3 entries, 40.0 MiB read at 20.0 MiB/s, archive 10.0 MiB (ratio 0.25)"
            ),
            "{line}"
        );
        assert!(line.contains("Local: 10.0 MiB at Local:x.tar.gz"), "{line}");
    }

    #[test]
    fn stored_everywhere_without_warnings_is_a_success() {
        let mut s = stats();
        s.destinations = vec![stored(Backend::Local), stored(Backend::S3)];
        assert!(s.complete());
        assert_eq!(s.outcome(), Outcome::Success);
        assert!(s.summary().contains("run succeeded"));
    }

    #[test]
    fn one_failed_destination_is_a_failure_and_says_which() {
        let mut s = stats();
        s.destinations = vec![stored(Backend::Local), failed(Backend::Sftp)];
        assert!(s.succeeded() && !s.complete());
        assert_eq!(s.outcome(), Outcome::Failure);
        assert_eq!(s.failure().as_deref(), Some("SFTP: connection refused"));
        let line = s.summary();
        assert!(line.contains("not in every destination"), "{line}");
        assert!(line.contains("SFTP: FAILED (connection refused)"), "{line}");
    }

    #[test]
    fn warnings_alone_make_a_warning_and_an_error_a_failure() {
        let mut s = stats();
        s.destinations = vec![stored(Backend::Local)];
        s.warnings.push("file changed as we read it".into());
        assert_eq!(s.outcome(), Outcome::Warning);
        s.error = Some("post hooks failed".into());
        assert_eq!(s.outcome(), Outcome::Failure);
        assert!(!s.complete());
        let line = s.summary();
        assert!(
            line.contains("FAILED") && line.ends_with(": post hooks failed"),
            "{line}"
        );
    }

    #[test]
    fn containers_are_summed_up_with_their_downtime() {
        let mut s = stats();
        s.containers = vec![
            Downtime {
                name: "app".into(),
                down_for: Some(Duration::from_millis(1500)),
                error: None,
            },
            Downtime {
                name: "db".into(),
                down_for: None,
                error: Some("gone".into()),
            },
        ];
        let line = s.summary();
        assert!(line.contains("container app down 1.50s"), "{line}");
        assert!(line.contains("container db left stopped"), "{line}");
    }
}
