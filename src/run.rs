//! One backup run: name the archive, stream it from the sources into the destination, update
//! the latest-symlink, and report what happened.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::Zoned;

use crate::archive::{self, ArchiveError, ArchiveStats};
use crate::config::Config;
use crate::filename::FilenameError;
use crate::storage::{LocalStorage, Storage, StorageError, Stored};
use crate::stream;

/// What a successful run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub archive_name: String,
    pub started: Zoned,
    pub duration: Duration,
    pub archive: ArchiveStats,
    pub stored: Stored,
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
    #[error("storing the archive in {destination} failed: {source}")]
    Storage {
        destination: &'static str,
        source: StorageError,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Runs one backup with `config`. Must be called inside a multi-threaded Tokio runtime.
pub async fn backup(config: &Config) -> Result<RunReport, RunError> {
    let started = Zoned::now().with_time_zone(config.time_zone.clone());
    let clock = Instant::now();
    let archive_name = config.filename.render(&started)?;

    if !config.archive_dir.is_dir() {
        // Same rule as the reference: local storage is on when the folder exists.
        tracing::warn!(
            "local archive folder {} does not exist: local storage is off",
            config.archive_dir.display()
        );
        return Err(RunError::NoDestination(config.archive_dir.clone()));
    }
    let local = LocalStorage::new(&config.archive_dir);

    tracing::info!(
        "backing up {} to {} ({})",
        config.sources.display(),
        local.dir().join(&archive_name).display(),
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
    let stored = local.put(&archive_name, data).await;
    let produced = producer
        .await
        .map_err(|e| RunError::Internal(format!("archive stage stopped: {e}")))?;

    // Name the cause, not its echo: a destination that saw an incomplete stream failed
    // because the archive stage did; an archive stage whose reader went away failed because
    // the destination did.
    let (stats, stored) = match (produced, stored) {
        (Ok(stats), Ok(stored)) => (stats, stored),
        (Err(archive), Ok(_) | Err(StorageError::Incomplete(_))) => return Err(archive.into()),
        (produced, Err(source)) => {
            if let Err(echo) = produced {
                tracing::debug!("archive stage stopped after the destination failed: {echo}");
            }
            return Err(RunError::Storage {
                destination: local.name(),
                source,
            });
        }
    };

    if let Some(link) = &config.latest_symlink {
        local
            .update_symlink(link, &archive_name)
            .await
            .map_err(|source| RunError::Storage {
                destination: local.name(),
                source,
            })?;
    }

    let report = RunReport {
        archive_name,
        started,
        duration: clock.elapsed(),
        archive: stats,
        stored,
    };
    log_summary(&report);
    Ok(report)
}

fn log_summary(r: &RunReport) {
    let secs = r.duration.as_secs_f64();
    let mib = r.archive.file_bytes as f64 / (1 << 20) as f64;
    tracing::info!(
        "backup complete: {} ({} bytes) from {} entries, {} files, {:.1} MiB read in {:.2}s \
         ({:.1} MiB/s), {} warning(s)",
        r.stored.location,
        r.stored.bytes,
        r.archive.entries,
        r.archive.files,
        mib,
        secs,
        if secs > 0.0 { mib / secs } else { 0.0 },
        r.archive.warnings.len()
    );
}
