//! How far a running backup is: counters the archive stage and the destinations update as
//! bytes pass, read by a steady progress line in the log, and a run's phase, per-destination
//! state and log ([`Live`]) for the API's live view. Updating a counter is a relaxed atomic
//! add per buffer, nothing per byte.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Live counters of one run.
#[derive(Debug, Default)]
pub struct Progress {
    read: AtomicU64,
    entries: AtomicU64,
    written: AtomicU64,
    /// The folder directly below the source root being read now.
    folder: Mutex<String>,
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Bytes of file content read from the sources.
    pub read: u64,
    /// Archive entries written (files, folders, links).
    pub entries: u64,
    /// Archive bytes produced (compressed).
    pub written: u64,
    pub folder: String,
}

impl Progress {
    pub fn add_read(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_entry(&self) {
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_folder(&self, folder: &str) {
        let mut current = self.folder.lock().expect("lock");
        current.clear();
        current.push_str(folder);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            read: self.read.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            folder: self.folder.lock().expect("lock").clone(),
        }
    }
}

/// Where a run is, for anyone watching it (the REST API's status and events).
#[derive(Debug, Default)]
pub struct Live {
    pub counters: Arc<Progress>,
    phase: Mutex<String>,
    /// Each destination's state, in the order first set.
    destinations: Mutex<Vec<(String, String)>>,
    /// The run's log as its notification keeps it (attached once the run has begun).
    log: Mutex<Option<Arc<Mutex<String>>>>,
}

/// A [`Live`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveSnapshot {
    pub phase: String,
    /// Bytes of file content read from the sources.
    pub bytes_read: u64,
    /// Archive bytes produced (compressed, encrypted).
    pub archive_bytes: u64,
    /// Archive entries written.
    pub entries: u64,
    pub folder: String,
    pub destinations: std::collections::BTreeMap<String, String>,
}

impl Live {
    pub fn set_phase(&self, phase: &str) {
        *self.phase.lock().expect("lock") = phase.to_owned();
    }

    pub fn set_destination(&self, name: &str, state: impl Into<String>) {
        let mut all = self.destinations.lock().expect("lock");
        let state = state.into();
        match all.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = state,
            None => all.push((name.to_owned(), state)),
        }
    }

    pub fn attach_log(&self, log: Option<Arc<Mutex<String>>>) {
        *self.log.lock().expect("lock") = log;
    }

    /// The log so far (empty before the run began or without a capturing subscriber).
    pub fn log(&self) -> String {
        let log = self.log.lock().expect("lock").clone();
        log.map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    pub fn snapshot(&self) -> LiveSnapshot {
        let counters = self.counters.snapshot();
        LiveSnapshot {
            phase: self.phase.lock().expect("lock").clone(),
            bytes_read: counters.read,
            archive_bytes: counters.written,
            entries: counters.entries,
            folder: counters.folder,
            destinations: self
                .destinations
                .lock()
                .expect("lock")
                .iter()
                .cloned()
                .collect(),
        }
    }
}

/// The progress line: totals, the read rate since the last line, where the walk is.
pub fn line(now: &Snapshot, before: &Snapshot, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = (now.read.saturating_sub(before.read) as f64 / secs) as u64;
    let mut text = format!(
        "progress: {} read ({}/s), {} entries, archive {} so far",
        human_bytes(now.read),
        human_bytes(rate),
        now.entries,
        human_bytes(now.written),
    );
    if !now.folder.is_empty() {
        text.push_str(&format!(", now in {}", now.folder));
    }
    text
}

/// Logs a progress line every `interval` until dropped (the caller aborts it).
pub async fn log_every(progress: Arc<Progress>, interval: Duration) {
    let mut before = progress.snapshot();
    let mut at = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let now = progress.snapshot();
        tracing::info!("{}", line(&now, &before, at.elapsed()));
        (before, at) = (now, Instant::now());
    }
}

/// `531.2 MiB`, `140 B`: binary units, one decimal above bytes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_has_totals_rate_and_folder() {
        let p = Progress::default();
        let before = p.snapshot();
        p.add_read(300 << 20);
        p.add_entry();
        p.add_entry();
        p.add_written(100 << 20);
        p.set_folder("/backup/app_data");
        let text = line(&p.snapshot(), &before, Duration::from_secs(10));
        assert_eq!(
            text,
            "progress: 300.0 MiB read (30.0 MiB/s), 2 entries, archive 100.0 MiB so far, \
             now in /backup/app_data"
        );
    }
}
