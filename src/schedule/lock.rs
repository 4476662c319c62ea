//! The locks every run takes, shared by scheduled runs, one-shot `backup`, restores and other
//! processes (`BACKUP_LOCK_FILE`, `LOCK_TIMEOUT`, `DUNNAGE_CONCURRENCY`).
//!
//! With a concurrency of 1 (the default, as in docker-volume-backup) every run takes the one
//! lock file, so runs wait for each other. With N > 1 a run takes, in path order (so two runs
//! never wait for each other crosswise), the lock of its own schedule (never two runs of one
//! schedule) and, when it may stop containers, the lock of its stop label (a run never starts
//! containers another run is archiving), then one of N slots: `BACKUP_LOCK_FILE`,
//! `BACKUP_LOCK_FILE.2`, ... `BACKUP_LOCK_FILE.N`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

/// How often a waiting run tries again.
const RETRY_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the lock file {}: {source} (set BACKUP_LOCK_FILE to a writable path)", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("another backup held the lock {} for longer than LOCK_TIMEOUT ({waited:?})", path.display())]
    Timeout { path: PathBuf, waited: Duration },
}

/// Which lock files a run needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Each held alone, all of them, in this order.
    pub exclusive: Vec<PathBuf>,
    /// One of these (the first free).
    pub slots: Vec<PathBuf>,
}

impl Plan {
    /// The locks of a run of schedule `name`: `lock_file` alone when `concurrency` is 1;
    /// otherwise the schedule's lock and its stop label's (when `stops_containers`) in
    /// `state_dir`, then a slot.
    pub fn new(
        lock_file: &Path,
        concurrency: usize,
        state_dir: &Path,
        name: &str,
        stop_label: Option<&str>,
    ) -> Plan {
        if concurrency <= 1 {
            return Plan {
                exclusive: Vec::new(),
                slots: vec![lock_file.to_path_buf()],
            };
        }
        let mut exclusive = vec![state_dir.join(format!("run-{}.lock", file_safe(name)))];
        if let Some(label) = stop_label {
            exclusive.push(state_dir.join(format!("stop-label-{}.lock", file_safe(label))));
        }
        exclusive.sort();
        let mut slots = vec![lock_file.to_path_buf()];
        slots.extend((2..=concurrency).map(|i| {
            let mut path = lock_file.as_os_str().to_owned();
            path.push(format!(".{i}"));
            PathBuf::from(path)
        }));
        Plan { exclusive, slots }
    }
}

/// `name` as one file-name component: other characters become `_` and a short hash of the
/// original keeps distinct names distinct.
fn file_safe(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .take(64)
        .collect();
    if plain == name {
        return plain;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    format!("{plain}-{}", &crate::manifest::hex(&digest)[..12])
}

/// Held while a run goes on; dropping it releases the locks.
#[derive(Debug)]
pub struct RunLock {
    _locks: Vec<Flock<File>>,
    /// How long the run waited for them.
    pub waited: Duration,
}

/// Takes the locks of `plan`, waiting up to `timeout` in all for other holders to finish.
pub async fn acquire(plan: &Plan, timeout: Duration) -> Result<RunLock, LockError> {
    let started = Instant::now();
    let mut locks = Vec::with_capacity(plan.exclusive.len() + 1);
    for path in &plan.exclusive {
        // In BACKUP_STATE_DIR, which a fresh volume may not have yet.
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| LockError::Open {
                path: path.clone(),
                source,
            })?;
        }
        locks.push(take_one(std::slice::from_ref(path), started, timeout).await?);
    }
    locks.push(take_one(&plan.slots, started, timeout).await?);
    Ok(RunLock {
        _locks: locks,
        waited: started.elapsed(),
    })
}

/// Takes the first free lock of `paths`, waiting until `started + timeout`.
async fn take_one(
    paths: &[PathBuf],
    started: Instant,
    timeout: Duration,
) -> Result<Flock<File>, LockError> {
    let mut logged = false;
    loop {
        for path in paths {
            if let Some(lock) = try_lock(path)? {
                return Ok(lock);
            }
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(LockError::Timeout {
                path: paths[0].clone(),
                waited,
            });
        }
        if !logged {
            tracing::info!(
                "another backup is running; waiting up to {} for the lock {}",
                crate::duration::format_duration(timeout),
                paths[0].display()
            );
            logged = true;
        }
        tokio::time::sleep(RETRY_EVERY.min(timeout - waited)).await;
    }
}

fn try_lock(path: &Path) -> Result<Option<Flock<File>>, LockError> {
    let open_err = |source| LockError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(open_err)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(open_err(io::Error::from(errno))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_then_times_out_then_gets_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = acquire(&Plan::new(&path, 1, dir.path(), "x", None), Duration::ZERO)
            .await
            .unwrap();
        let err = acquire(
            &Plan::new(&path, 1, dir.path(), "x", None),
            Duration::from_millis(600),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, LockError::Timeout { waited, .. } if waited >= Duration::from_millis(600))
        );
        drop(first);
        let second = acquire(&Plan::new(&path, 1, dir.path(), "x", None), Duration::ZERO)
            .await
            .unwrap();
        assert!(second.waited < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn an_unwritable_lock_path_is_a_clear_error() {
        let err = acquire(
            &Plan::new(
                Path::new("/nonexistent-dir/x.lock"),
                1,
                Path::new("/tmp"),
                "x",
                None,
            ),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("BACKUP_LOCK_FILE"), "{err}");
    }

    fn plan(dir: &Path, name: &str, label: Option<&str>) -> Plan {
        Plan::new(&dir.join("lock"), 2, &dir.join("state"), name, label)
    }

    #[tokio::test]
    async fn with_two_slots_other_schedules_overlap_and_a_third_waits() {
        let dir = tempfile::tempdir().unwrap();
        let a = acquire(&plan(dir.path(), "a", None), Duration::ZERO)
            .await
            .unwrap();
        let b = acquire(&plan(dir.path(), "b", None), Duration::ZERO)
            .await
            .unwrap();
        let err = acquire(&plan(dir.path(), "c", None), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        drop(a);
        let c = acquire(&plan(dir.path(), "c", None), Duration::ZERO)
            .await
            .unwrap();
        drop((b, c));
    }

    #[tokio::test]
    async fn one_schedule_or_one_stop_label_never_runs_twice_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = acquire(&plan(dir.path(), "a", Some("true")), Duration::ZERO)
            .await
            .unwrap();
        for (name, label) in [("a", None), ("b", Some("true"))] {
            let err = acquire(&plan(dir.path(), name, label), Duration::from_millis(300))
                .await
                .unwrap_err();
            assert!(matches!(err, LockError::Timeout { .. }), "{name}: {err}");
        }
        let other_label = acquire(&plan(dir.path(), "b", Some("shop")), Duration::ZERO).await;
        assert!(other_label.is_ok());
        drop(a);
    }

    #[test]
    fn the_default_plan_is_the_one_lock_file_and_names_stay_apart() {
        let p = Plan::new(Path::new("/l"), 1, Path::new("/s"), "a/b", Some("x y"));
        assert_eq!(p.exclusive, Vec::<PathBuf>::new());
        assert_eq!(p.slots, vec![PathBuf::from("/l")]);
        let p = Plan::new(Path::new("/l"), 3, Path::new("/s"), "a/b", Some("x y"));
        assert_eq!(p.slots, ["/l", "/l.2", "/l.3"].map(PathBuf::from));
        assert_ne!(file_safe("a/b"), file_safe("a_b"));
        assert_eq!(file_safe("shop-1.env"), "shop-1.env");
        assert!(
            p.exclusive
                .iter()
                .all(|e| e.parent() == Some(Path::new("/s")))
        );
    }
}
