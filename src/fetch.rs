//! Reading a stored backup back: its objects (the archive, or each part in order) fetched
//! one after another as one byte stream, each hashed on the way, handed to synchronous code
//! (decrypt, decompress, tar) on a blocking thread through a bounded channel. Memory: the
//! channel's few chunks, whatever the backup's size.

use std::io::{self, Read};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::manifest::{Part, hex};
use crate::storage::{Storage, StorageError};

/// Chunks in flight between the download and the reader.
const IN_FLIGHT: usize = 4;

/// The stored bytes as a blocking [`Read`]. An error from the destination is an error here,
/// and so is a download that stopped without saying it reached the end (cancelled): only
/// the explicit end marker (an empty chunk) reads as the end of the backup.
pub struct StoredReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    ended: bool,
}

impl Read for StoredReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) if chunk.is_empty() => self.ended = true,
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the download stopped before the end of the backup",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Fetches `names` from `storage` in order into `consume`, which runs on a blocking thread.
/// Returns what each object was (its size and SHA-256, for the objects fully read) and what
/// `consume` returned. A consumer that stops early ends the download.
pub async fn read_objects<T: Send + 'static>(
    storage: &dyn Storage,
    names: &[String],
    consume: impl FnOnce(StoredReader) -> T + Send + 'static,
) -> (Result<Vec<Part>, StorageError>, T) {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let reader = StoredReader {
        rx,
        current: Bytes::new(),
        ended: false,
    };
    let consumer = tokio::task::spawn_blocking(move || consume(reader));
    let download = async move {
        let mut parts = Vec::new();
        for name in names {
            let mut data = match storage.get(name).await {
                Ok(data) => data,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                    return Err(e);
                }
            };
            let (mut hasher, mut size) = (Sha256::new(), 0u64);
            while let Some(item) = data.next().await {
                match item {
                    Ok(chunk) if chunk.is_empty() => {}
                    Ok(chunk) => {
                        hasher.update(&chunk);
                        size += chunk.len() as u64;
                        if tx.send(Ok(chunk)).await.is_err() {
                            // The reader stopped early (it had what it needed, or failed).
                            return Ok(parts);
                        }
                    }
                    Err(e) => {
                        let message =
                            format!("reading {name} from {} failed: {e}", storage.backend());
                        let _ = tx.send(Err(io::Error::new(e.kind(), message))).await;
                        return Err(StorageError::io(format!("reading {name}"), e));
                    }
                }
            }
            parts.push(Part {
                name: name.clone(),
                size,
                sha256: hex(&hasher.finalize()),
            });
        }
        // The end marker: everything arrived.
        let _ = tx.send(Ok(Bytes::new())).await;
        Ok(parts)
    };
    let (parts, consumed) = tokio::join!(download, consumer);
    (parts, consumed.expect("the reading thread does not panic"))
}

/// Reads one small object (a manifest) whole; at most `limit` bytes.
pub async fn read_small(
    storage: &dyn Storage,
    name: &str,
    limit: usize,
) -> Result<Vec<u8>, StorageError> {
    let mut data = storage.get(name).await?;
    let mut out = Vec::new();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| StorageError::io(format!("reading {name}"), e))?;
        if out.len() + chunk.len() > limit {
            return Err(StorageError::io(
                format!("reading {name}"),
                io::Error::other(format!("larger than {limit} bytes; not a manifest")),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_end_marker_ends_the_stream() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        drop(tx); // cancelled: no end marker
        let mut r = StoredReader {
            rx,
            current: Bytes::new(),
            ended: false,
        };
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(out, b"abc");

        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        tx.try_send(Ok(Bytes::new())).unwrap();
        drop(tx);
        let mut r = StoredReader {
            rx,
            current: Bytes::new(),
            ended: false,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
    }
}
