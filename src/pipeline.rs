//! The data path of a backup: sources -> archive stage (tar, compressor) -> stream ->
//! (optional spool file) -> every destination at once. No lock, no containers, no pruning:
//! the `backup` command wraps this in those.
//!
//! The outcome names the cause, not its echo: destinations that saw an incomplete stream
//! failed because the archive stage did, and an archive stage whose readers all went away
//! failed because every destination did.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::archive::{self, ArchiveError, ArchiveStats, Codec, Encryption};
use crate::catalog;
use crate::commit;
use crate::manifest::{self, Manifest, TarCounts};
use crate::progress::{self, Progress};
use crate::spool;
use crate::storage::{Backend, ErrorKind, LocalStorage, Storage, StorageError, Stored};
use crate::stream::{self, ByteStream};

/// What one pass reads and how it writes it.
pub struct Job<'a> {
    pub sources: &'a Path,
    pub exclude: Option<&'a regex::bytes::Regex>,
    pub codec: Codec,
    pub encryption: &'a Encryption,
    /// The archive's name in every destination.
    pub name: &'a str,
    /// Where to spool the archive first (`BACKUP_SPOOL`), if at all.
    pub spool_dir: Option<&'a Path>,
    /// `BACKUP_ARCHIVE`: the local destination's folder.
    pub archive_dir: &'a Path,
    /// `BACKUP_LATEST_SYMLINK`: the link updated when the local destination stored it.
    pub latest_symlink: Option<&'a str>,
    /// `BACKUP_PROGRESS_INTERVAL`: how often a progress line is logged; `None` for never.
    pub progress_interval: Option<std::time::Duration>,
    /// `BACKUP_SPLIT_SIZE`: store the archive as parts of this many bytes.
    pub split: Option<u64>,
    /// The schedule's name, for the manifest.
    pub schedule: &'a str,
    /// `BACKUP_UPLOAD_LIMIT`: bytes per second into each destination.
    pub upload_limit: Option<u64>,
    /// Updated as bytes pass (read by the progress line and the API).
    pub progress: Arc<Progress>,
}

/// What a pass produced: the archive's statistics and each destination's outcome, in the
/// order the destinations were given. At least one destination stored it.
#[derive(Debug)]
pub struct Produced {
    pub archive: ArchiveStats,
    pub stored: Vec<(Backend, Result<Stored, StorageError>)>,
    /// Problems that did not fail the pass (a manifest that could not be stored).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "no destination to store the backup in: the local archive folder BACKUP_ARCHIVE={} \
         does not exist (create it or mount a volume there)",
        .0.display()
    )]
    NoDestination(PathBuf),
    #[error("creating the archive failed: {0}")]
    Archive(#[from] ArchiveError),
    #[error("{}", describe_failures(.0))]
    Stores(Vec<(Backend, StorageError)>),
    #[error("internal error: the archive stage stopped: {0}")]
    Internal(String),
}

/// Archives `job.sources` once into every destination. Must run inside a multi-threaded
/// Tokio runtime. `sources_released` is signalled as soon as the archive stage has finished
/// reading the sources (and dropped if it never starts), so stopped containers can start.
pub async fn run(
    job: &Job<'_>,
    destinations: &[&dyn Storage],
    sources_released: Option<oneshot::Sender<()>>,
) -> Result<Produced, PipelineError> {
    if destinations.is_empty() {
        return Err(PipelineError::NoDestination(job.archive_dir.to_path_buf()));
    }
    announce(job, destinations);
    let created = jiff::Zoned::now()
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let (writer, data) = stream::channel();
    let progress = job.progress.clone();
    let data: ByteStream = {
        let progress = progress.clone();
        Box::pin(data.inspect(move |item| {
            if let Ok(chunk) = item {
                progress.add_written(chunk.len() as u64);
            }
        }))
    };
    let _progress_lines = job.progress_interval.map(|interval| {
        AbortOnDrop(tokio::spawn(progress::log_every(
            progress.clone(),
            interval,
        )))
    });
    let sources = vec![job.sources.to_path_buf()];
    let exclude = job.exclude.cloned();
    let codec = job.codec;
    let encryption = job.encryption.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let (writer, stats) = archive::write_archive(
            &sources,
            exclude.as_ref(),
            codec,
            &encryption,
            writer,
            progress,
        )?;
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
    let ((mut stored, digests), produced) = match job.spool_dir {
        None => tokio::join!(
            commit::store(destinations, job.name, data, job.split, job.upload_limit),
            producer
        ),
        Some(dir) => {
            let (spooled, produced) = tokio::join!(spool::write(data, dir, job.name), producer);
            let stored = store_spooled(destinations, job, spooled).await;
            (stored, produced)
        }
    };
    let produced = produced.map_err(|e| PipelineError::Internal(e.to_string()))?;
    let backends = destinations.iter().map(|d| d.backend());
    let archive = judge(
        produced,
        &backends.clone().zip(stored.clone()).collect::<Vec<_>>(),
    )?;
    let manifest = manifest_for(job, created, &archive, digests);
    let mut warnings = Vec::new();
    commit::write_manifests(destinations, &mut stored, &manifest, &mut warnings).await;
    let outcomes: Vec<(Backend, Result<Stored, StorageError>)> = backends.zip(stored).collect();
    if outcomes.iter().all(|(_, r)| r.is_err()) {
        return Err(PipelineError::Stores(
            outcomes
                .into_iter()
                .filter_map(|(b, r)| r.err().map(|e| (b, e)))
                .collect(),
        ));
    }
    for (backend, result) in &outcomes {
        if let Err(e) = result {
            tracing::error!("storing the archive in {backend} failed: {e}");
        }
    }
    update_latest_link(job, &outcomes).await?;
    Ok(Produced {
        archive,
        stored: outcomes,
        warnings,
    })
}

/// `BACKUP_LATEST_SYMLINK`, when the local destination stored the backup. A split backup
/// has no one file to point at: the link names its manifest, which names the parts.
async fn update_latest_link(
    job: &Job<'_>,
    outcomes: &[(Backend, Result<Stored, StorageError>)],
) -> Result<(), PipelineError> {
    let local_stored = outcomes
        .iter()
        .any(|(b, r)| *b == Backend::Local && r.is_ok());
    let (true, Some(link)) = (local_stored, job.latest_symlink) else {
        return Ok(());
    };
    let target = if job.split.is_some() {
        catalog::manifest_name(job.name)
    } else {
        job.name.to_owned()
    };
    LocalStorage::new(job.archive_dir)
        .update_symlink(link, &target)
        .await
        .map_err(|e| PipelineError::Stores(vec![(Backend::Local, e)]))
}

fn manifest_for(
    job: &Job<'_>,
    created: String,
    archive: &ArchiveStats,
    digests: commit::Digests,
) -> Manifest {
    Manifest {
        format: manifest::FORMAT,
        name: job.name.to_owned(),
        created,
        dunnage: env!("CARGO_PKG_VERSION").to_owned(),
        schedule: job.schedule.to_owned(),
        sources: vec![job.sources.display().to_string()],
        compression: job.codec.name().to_owned(),
        encryption: job.encryption.method().to_owned(),
        recipients: job.encryption.recipients(),
        size: digests.size,
        sha256: digests.sha256,
        parts: digests.parts,
        tar: TarCounts {
            entries: archive.entries,
            files: archive.files,
            file_bytes: archive.file_bytes,
            bytes: archive.tar_bytes,
        },
    }
}

fn announce(job: &Job<'_>, destinations: &[&dyn Storage]) {
    tracing::info!(
        "backing up {} as {} to {} ({}{}{})",
        job.sources.display(),
        job.name,
        destinations
            .iter()
            .map(|d| d.backend().name())
            .collect::<Vec<_>>()
            .join(", "),
        job.codec,
        match job.encryption {
            Encryption::None => String::new(),
            e => format!(", encrypted with {e}"),
        },
        match job.split {
            Some(size) => format!(", in parts of {}", progress::human_bytes(size)),
            None => String::new(),
        }
    );
}

/// Stops a task when the run that started it ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The whole archive went to the spool first; containers restarted when the sources were
/// read, and only now does the (possibly slow) store begin.
async fn store_spooled(
    destinations: &[&dyn Storage],
    job: &Job<'_>,
    spooled: Result<spool::SpoolFile, StorageError>,
) -> (Vec<Result<Stored, StorageError>>, commit::Digests) {
    let every = |e: StorageError| {
        let failed = destinations.iter().map(|_| Err(e.clone())).collect();
        (failed, commit::Digests::default())
    };
    let file = match spooled {
        Ok(file) => file,
        Err(e) => return every(e),
    };
    tracing::info!(
        "archive spooled to {} ({} bytes); storing it",
        file.path().display(),
        file.bytes
    );
    let stream: ByteStream = match file.stream().await {
        Ok(stream) => stream,
        Err(e) => return every(StorageError::io("reading the spool file", e)),
    };
    commit::store(destinations, job.name, stream, job.split, job.upload_limit).await
}

/// The pass's outcome from the archive stage's and the destinations' results: the archive
/// stage's own error wins unless every destination failed on its own first.
fn judge(
    produced: Result<ArchiveStats, ArchiveError>,
    outcomes: &[(Backend, Result<Stored, StorageError>)],
) -> Result<ArchiveStats, PipelineError> {
    let all_failed_on_their_own = outcomes
        .iter()
        .all(|(_, r)| matches!(r, Err(e) if e.kind() != ErrorKind::Incomplete));
    let stats = match produced {
        Ok(stats) => Some(stats),
        Err(archive) if !all_failed_on_their_own => return Err(archive.into()),
        Err(echo) => {
            tracing::debug!("archive stage stopped after every destination failed: {echo}");
            None
        }
    };
    match stats {
        Some(stats) if outcomes.iter().any(|(_, r)| r.is_ok()) => Ok(stats),
        _ => Err(PipelineError::Stores(
            outcomes
                .iter()
                .filter_map(|(b, r)| r.as_ref().err().map(|e| (*b, e.clone())))
                .collect(),
        )),
    }
}

fn describe_failures(failures: &[(Backend, StorageError)]) -> String {
    match failures {
        [(backend, e)] => format!("storing the archive in {backend} failed: {e}"),
        all => format!(
            "storing the archive failed in every destination: {}",
            all.iter()
                .map(|(b, e)| format!("{b}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn stats() -> ArchiveStats {
        ArchiveStats::default()
    }

    fn stored() -> Result<Stored, StorageError> {
        Ok(Stored {
            location: "x".into(),
            bytes: 1,
        })
    }

    fn own_failure() -> Result<Stored, StorageError> {
        Err(StorageError::io(
            "uploading x",
            io::Error::from(io::ErrorKind::ConnectionRefused),
        ))
    }

    fn echo() -> Result<Stored, StorageError> {
        Err(StorageError::incomplete(io::Error::other(
            "archive stage failed",
        )))
    }

    fn archive_failed() -> Result<ArchiveStats, ArchiveError> {
        Err(ArchiveError::Output(io::Error::other(
            "reading /backup/x: denied",
        )))
    }

    #[test]
    fn one_stored_destination_is_enough_and_the_others_are_kept_as_they_are() {
        let outcomes = vec![(Backend::Local, stored()), (Backend::S3, own_failure())];
        assert!(judge(Ok(stats()), &outcomes).is_ok());
    }

    #[test]
    fn the_archive_stage_is_named_when_it_failed_first() {
        let outcomes = vec![(Backend::Local, echo()), (Backend::S3, echo())];
        let e = judge(archive_failed(), &outcomes).unwrap_err();
        assert!(matches!(e, PipelineError::Archive(_)), "{e}");
    }

    #[test]
    fn destinations_are_named_when_they_all_failed_on_their_own() {
        let outcomes = vec![
            (Backend::Local, own_failure()),
            (Backend::Sftp, own_failure()),
        ];
        let e = judge(archive_failed(), &outcomes).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("storing the archive failed in every destination"),
            "{text}"
        );
        assert!(text.contains("SFTP: uploading x"), "{text}");
        let one = judge(Ok(stats()), &outcomes[..1]).unwrap_err().to_string();
        assert!(
            one.starts_with("storing the archive in Local failed"),
            "{one}"
        );
    }
}
