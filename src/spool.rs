//! The spool: a temporary file that holds the finished archive, so stopped containers can
//! start again before a slow upload (`BACKUP_SPOOL`, `BACKUP_SPOOL_DIR`). It is written once
//! from the archive stream and read back as a stream; it is private (0600) and deleted when
//! dropped, also when the run fails or is aborted.

use std::io;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::storage::StorageError;
use crate::stream::{ByteStream, CHUNK_SIZE};

/// When the archive goes through a spool file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolMode {
    /// Only while containers are stopped and a destination is remote: a local archive is
    /// written as fast as a spool file would be, so spooling it would only double the I/O.
    Auto,
    Always,
    Never,
}

/// A spooled archive; the file is removed when this is dropped.
#[derive(Debug)]
pub struct SpoolFile {
    path: PathBuf,
    pub bytes: u64,
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("could not remove spool file {}: {e}", self.path.display());
        }
    }
}

/// Writes the whole `data` stream to a new spool file in `dir`. An error item in the stream
/// (the archive stage failed: `Incomplete`) or a write error (`Io`) removes the file.
pub async fn write(
    mut data: ByteStream,
    dir: &Path,
    name: &str,
) -> Result<SpoolFile, StorageError> {
    let path = dir.join(format!(".{name}.{}.spool", std::process::id()));
    let io = |what: &str, path: &Path, e: io::Error| {
        StorageError::io(
            format!("spooling to BACKUP_SPOOL_DIR: {what} {}", path.display()),
            e,
        )
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .await
        .map_err(|e| io("creating", &path, e))?;
    // From here on the guard removes the file on every way out.
    let mut spool = SpoolFile { path, bytes: 0 };
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(StorageError::incomplete)?;
        file.write_all(&chunk)
            .await
            .map_err(|e| io("writing", &spool.path, e))?;
        spool.bytes += chunk.len() as u64;
    }
    file.flush()
        .await
        .map_err(|e| io("writing", &spool.path, e))?;
    Ok(spool)
}

impl SpoolFile {
    /// The spooled archive as a stream of chunks.
    pub async fn stream(&self) -> io::Result<ByteStream> {
        let file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| with_path(e, "reading", &self.path))?;
        let chunks = futures_util::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = BytesMut::with_capacity(CHUNK_SIZE);
            while buf.len() < CHUNK_SIZE {
                match file.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Some((Err(e), None)),
                }
            }
            if buf.is_empty() {
                None
            } else {
                Some((Ok(buf.freeze()), Some(file)))
            }
        });
        Ok(Box::pin(chunks))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("{what} spool file {}: {e}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spooled_stream_reads_back_identical_and_the_file_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3 * CHUNK_SIZE + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let (mut w, s) = crate::stream::channel();
        let input = data.clone();
        let producer = tokio::task::spawn_blocking(move || {
            w.write_all(&input).unwrap();
            w.finish().unwrap();
        });
        let spool = write(s, dir.path(), "a.tar").await.unwrap();
        producer.await.unwrap();
        assert_eq!(spool.bytes, data.len() as u64);
        let mut back = Vec::new();
        let mut stream = spool.stream().await.unwrap();
        while let Some(chunk) = stream.next().await {
            back.extend_from_slice(&chunk.unwrap());
        }
        assert!(back == data);
        let path = spool.path().to_path_buf();
        drop(spool);
        assert!(!path.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_archive_leaves_no_spool_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, s) = crate::stream::channel();
        tokio::task::spawn_blocking(move || {
            w.write_all(&[1; 3 << 20]).unwrap();
            drop(w); // unfinished: the stream ends with an error
        });
        assert!(write(s, dir.path(), "a.tar").await.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
