//! The lock every run takes, shared by scheduled runs, one-shot `backup` and other processes
//! (`BACKUP_LOCK_FILE`, `LOCK_TIMEOUT`): overlapping runs wait for each other.

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

/// Held while a run goes on; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _lock: Flock<File>,
    /// How long the run waited for it.
    pub waited: Duration,
}

/// Takes the lock at `path`, waiting up to `timeout` for another holder to finish.
pub async fn acquire(path: &Path, timeout: Duration) -> Result<RunLock, LockError> {
    let started = Instant::now();
    let mut logged = false;
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|source| LockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                return Ok(RunLock {
                    _lock: lock,
                    waited: started.elapsed(),
                });
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
            Err((_, errno)) => {
                return Err(LockError::Open {
                    path: path.to_path_buf(),
                    source: io::Error::from(errno),
                });
            }
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(LockError::Timeout {
                path: path.to_path_buf(),
                waited,
            });
        }
        if !logged {
            tracing::info!(
                "another backup is running; waiting up to {} for the lock {}",
                crate::duration::format_duration(timeout),
                path.display()
            );
            logged = true;
        }
        tokio::time::sleep(RETRY_EVERY.min(timeout - waited)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_then_times_out_then_gets_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = acquire(&path, Duration::ZERO).await.unwrap();
        let err = acquire(&path, Duration::from_millis(600))
            .await
            .unwrap_err();
        assert!(
            matches!(err, LockError::Timeout { waited, .. } if waited >= Duration::from_millis(600))
        );
        drop(first);
        let second = acquire(&path, Duration::ZERO).await.unwrap();
        assert!(second.waited < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn an_unwritable_lock_path_is_a_clear_error() {
        let err = acquire(Path::new("/nonexistent-dir/x.lock"), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("BACKUP_LOCK_FILE"), "{err}");
    }
}
