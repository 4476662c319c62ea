//! Storing one archive stream as a backup in every destination: the archive under its name,
//! or (`BACKUP_SPLIT_SIZE`) cut into `NAME.001`, `NAME.002`, ... each committed as it fills;
//! SHA-256 of the whole and of every part computed on the way; then the manifest, in each
//! destination that stored every part.
//!
//! Nothing is spooled for splitting: one part is in flight at a time, so memory is what the
//! fan-out holds for an unsplit archive. A destination that fails on one part is dropped
//! for the rest, and the parts it already stored are deleted (an unfinished set, which
//! retention would also remove later).

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::catalog;
use crate::manifest::{Manifest, Part, hex};
use crate::storage::{self, ErrorKind, Storage, StorageError, Stored};
use crate::stream::ByteStream;

/// What the destinations received: the parts, their digests, and the whole's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    pub sha256: String,
    pub parts: Vec<Part>,
}

/// Stores `data` under `name` (or as parts of `split` bytes) in every destination; one
/// result per destination, in order, and the digests of what was sent.
pub async fn store(
    destinations: &[&dyn Storage],
    name: &str,
    data: ByteStream,
    split: Option<u64>,
    upload_limit: Option<u64>,
) -> (Vec<Result<Stored, StorageError>>, Digests) {
    let data = match upload_limit {
        Some(rate) => crate::stream::throttle(data, rate),
        None => data,
    };
    let whole = Arc::new(Mutex::new(Sha256::new()));
    let data: ByteStream = {
        let whole = whole.clone();
        Box::pin(data.inspect(move |item| {
            if let Ok(chunk) = item {
                whole.lock().expect("hasher").update(chunk);
            }
        }))
    };
    let (results, parts) = match split {
        None => {
            let (hashed, part) = hashing(data, name);
            let results = storage::put_all(destinations, name, hashed).await;
            (results, vec![finish(&part)])
        }
        Some(size) => store_split(destinations, name, data, size).await,
    };
    let sha256 = hex(whole.lock().expect("hasher").clone().finalize().as_slice());
    let digests = Digests {
        size: parts.iter().map(|p| p.size).sum(),
        sha256,
        parts,
    };
    (results, digests)
}

/// A part being hashed while it streams through.
type PartHasher = Arc<Mutex<(String, u64, Sha256)>>;

fn hashing(data: ByteStream, name: &str) -> (ByteStream, PartHasher) {
    let state: PartHasher = Arc::new(Mutex::new((name.to_owned(), 0, Sha256::new())));
    let seen = state.clone();
    let stream = Box::pin(data.inspect(move |item| {
        if let Ok(chunk) = item {
            let mut s = seen.lock().expect("hasher");
            s.1 += chunk.len() as u64;
            s.2.update(chunk);
        }
    }));
    (stream, state)
}

fn finish(part: &PartHasher) -> Part {
    let s = part.lock().expect("hasher");
    Part {
        name: s.0.clone(),
        size: s.1,
        sha256: hex(s.2.clone().finalize().as_slice()),
    }
}

/// The split case: one part after another into the destinations still going.
async fn store_split(
    destinations: &[&dyn Storage],
    name: &str,
    mut data: ByteStream,
    size: u64,
) -> (Vec<Result<Stored, StorageError>>, Vec<Part>) {
    let mut outcome: Vec<Option<Result<Stored, StorageError>>> =
        destinations.iter().map(|_| None).collect();
    let mut stored: Vec<Vec<String>> = destinations.iter().map(|_| Vec::new()).collect();
    let mut first_location: Vec<Option<String>> = destinations.iter().map(|_| None).collect();
    let mut bytes = vec![0u64; destinations.len()];
    let mut parts = Vec::new();
    let mut leftover: Option<Bytes> = None;
    loop {
        let first = match leftover.take() {
            Some(chunk) => Ok(chunk),
            None => match data.next().await {
                None => break,
                Some(item) => item,
            },
        };
        let live: Vec<usize> = (0..destinations.len())
            .filter(|&i| outcome[i].is_none())
            .collect();
        if live.is_empty() {
            break;
        }
        let part_name = catalog::part_name(name, parts.len() + 1);
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(2);
        let part_stream: ByteStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        let (hashed, hasher) = hashing(part_stream, &part_name);
        let live_dests: Vec<&dyn Storage> = live.iter().map(|&i| destinations[i]).collect();
        let ((rest, source_failed), results) = tokio::join!(
            feed_part(first, &mut data, tx, size),
            storage::put_all(&live_dests, &part_name, hashed)
        );
        leftover = rest;
        parts.push(finish(&hasher));
        for (&i, result) in live.iter().zip(results) {
            match result {
                Ok(s) => {
                    bytes[i] += s.bytes;
                    first_location[i].get_or_insert(s.location);
                    stored[i].push(part_name.clone());
                }
                Err(e) => outcome[i] = Some(Err(e)),
            }
        }
        if source_failed {
            break;
        }
    }
    let count = parts.len();
    let results = destinations
        .iter()
        .zip(outcome)
        .zip(stored.iter().zip(bytes).zip(first_location))
        .map(|((dest, outcome), ((names, bytes), first))| match outcome {
            Some(e) => e,
            None if names.len() == count && count > 0 => Ok(Stored {
                location: format!("{} ({count} parts)", first.unwrap_or_default()),
                bytes,
            }),
            None => Err(StorageError::incomplete(io::Error::other(format!(
                "{}: the archive stream ended before its parts were stored",
                dest.backend()
            )))),
        })
        .collect::<Vec<_>>();
    for ((dest, result), names) in destinations.iter().zip(&results).zip(&stored) {
        if result.is_err() {
            remove_parts(*dest, names).await;
        }
    }
    (results, parts)
}

/// Sends `first`, then chunks of `data`, into `tx` until `size` bytes went; a chunk crossing
/// the boundary is cut and its rest returned. True when the source failed (the error was
/// passed on, so no destination commits this part).
async fn feed_part(
    first: io::Result<Bytes>,
    data: &mut ByteStream,
    tx: mpsc::Sender<io::Result<Bytes>>,
    size: u64,
) -> (Option<Bytes>, bool) {
    let mut sent = 0u64;
    let mut next = Some(first);
    loop {
        let item = match next.take() {
            Some(item) => item,
            None if sent >= size => return (None, false),
            None => match data.next().await {
                Some(item) => item,
                None => return (None, false),
            },
        };
        let mut chunk = match item {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return (None, true);
            }
        };
        let room = (size - sent) as usize;
        let rest = (chunk.len() > room).then(|| chunk.split_off(room));
        sent += chunk.len() as u64;
        if tx.send(Ok(chunk)).await.is_err() {
            // Every destination gave up on this part.
            return (rest, false);
        }
        if rest.is_some() {
            return (rest, false);
        }
    }
}

/// Best effort: deletes the parts a failed destination stored.
async fn remove_parts(dest: &dyn Storage, names: &[String]) {
    for name in names {
        match dest.delete(name).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                "{}: could not remove {name} of an unfinished split backup: {e}",
                dest.backend()
            ),
        }
    }
}

/// Stores `manifest` next to the backup in each destination whose result is `Ok`. A split
/// backup without its manifest is unfinished, so there a failure fails the destination (and
/// its parts are removed); an unsplit archive stays a backup and the failure is a warning.
pub async fn write_manifests(
    destinations: &[&dyn Storage],
    results: &mut [Result<Stored, StorageError>],
    manifest: &Manifest,
    warnings: &mut Vec<String>,
) {
    let text = Bytes::from(manifest.render());
    let name = catalog::manifest_name(&manifest.name);
    for (dest, result) in destinations.iter().zip(results.iter_mut()) {
        if result.is_err() {
            continue;
        }
        let body: ByteStream = Box::pin(futures_util::stream::once(std::future::ready(Ok(
            text.clone()
        ))));
        let Err(e) = dest.put(&name, body).await else {
            continue;
        };
        if manifest.is_split() {
            let parts: Vec<String> = manifest.parts.iter().map(|p| p.name.clone()).collect();
            remove_parts(*dest, &parts).await;
            *result = Err(e);
        } else {
            warnings.push(format!(
                "{}: the backup is stored, but its manifest is not: {e}",
                dest.backend()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;
    use std::io::Write;

    fn source(data: Vec<u8>, chunk: usize, fail: bool) -> ByteStream {
        let (mut w, s) = crate::stream::channel_with(chunk, 2);
        tokio::task::spawn_blocking(move || {
            w.write_all(&data).unwrap();
            if !fail {
                w.finish().unwrap();
            }
        });
        s
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn sha(bytes: &[u8]) -> String {
        hex(Sha256::digest(bytes).as_slice())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_are_cut_at_the_size_whatever_the_chunks_and_hashed() {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let stores: Vec<LocalStorage> = dirs.iter().map(|d| LocalStorage::new(d.path())).collect();
        let dests: Vec<&dyn Storage> = stores.iter().map(|s| s as &dyn Storage).collect();
        let all = data(2500);
        // Chunks of 300 bytes, parts of 1000: boundaries fall inside chunks.
        let (results, digests) = store(
            &dests,
            "a.tar",
            source(all.clone(), 300, false),
            Some(1000),
            None,
        )
        .await;
        for (dir, result) in dirs.iter().zip(results) {
            assert_eq!(result.unwrap().bytes, 2500);
            let mut joined = Vec::new();
            for (i, len) in [(1, 1000), (2, 1000), (3, 500)] {
                let part = std::fs::read(dir.path().join(format!("a.tar.00{i}"))).unwrap();
                assert_eq!(part.len(), len);
                joined.extend(part);
            }
            assert!(joined == all);
            assert!(!dir.path().join("a.tar.004").exists());
        }
        assert_eq!(digests.size, 2500);
        assert_eq!(digests.sha256, sha(&all));
        assert_eq!(digests.parts.len(), 3);
        assert_eq!(digests.parts[2].sha256, sha(&all[2000..]));
        assert_eq!(digests.parts[0].name, "a.tar.001");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exact_multiple_makes_no_empty_last_part() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStorage::new(dir.path());
        let (results, digests) = store(
            &[&local],
            "a.tar",
            source(data(2000), 1000, false),
            Some(1000),
            None,
        )
        .await;
        assert!(results[0].is_ok());
        assert_eq!(digests.parts.len(), 2);
        assert!(!dir.path().join("a.tar.003").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_source_leaves_no_part_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStorage::new(dir.path());
        let (results, _) = store(
            &[&local],
            "a.tar",
            source(data(2500), 300, true),
            Some(1000),
            None,
        )
        .await;
        assert!(results[0].is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_destination_failing_midway_loses_its_parts_and_the_other_goes_on() {
        let good = tempfile::tempdir().unwrap();
        let bad = tempfile::tempdir().unwrap();
        let ok = LocalStorage::new(good.path());
        let failing = LocalStorage::new(bad.path());
        // The second part's name is taken in the failing destination: it refuses it.
        std::fs::write(bad.path().join("a.tar.002"), b"taken").unwrap();
        let dests: Vec<&dyn Storage> = vec![&failing, &ok];
        let (results, _) = store(
            &dests,
            "a.tar",
            source(data(2500), 300, false),
            Some(1000),
            None,
        )
        .await;
        assert_eq!(
            results[0].as_ref().unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        assert!(results[1].is_ok());
        let mut left: Vec<_> = std::fs::read_dir(bad.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a.tar.002"]);
        assert!(good.path().join("a.tar.003").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_limit_paces_the_stream_and_keeps_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStorage::new(dir.path());
        let all = data(400_000);
        let started = std::time::Instant::now();
        // 100 KB/s: 400 KB cannot be stored in less than about 3 s (the first chunk goes
        // at once). A lower bound: the cap, not the machine's speed, is what is asserted.
        let (results, _) = store(
            &[&local],
            "a.tar",
            source(all.clone(), 50_000, false),
            None,
            Some(100_000),
        )
        .await;
        assert!(results[0].is_ok());
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(3400),
            "{:?}",
            started.elapsed()
        );
        assert!(std::fs::read(dir.path().join("a.tar")).unwrap() == all);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsplit_archives_get_one_part_named_as_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStorage::new(dir.path());
        let all = data(1234);
        let (results, digests) = store(
            &[&local],
            "a.tar",
            source(all.clone(), 100, false),
            None,
            None,
        )
        .await;
        assert!(results[0].is_ok());
        assert_eq!(
            digests.parts,
            vec![Part {
                name: "a.tar".into(),
                size: 1234,
                sha256: sha(&all)
            }]
        );
        assert_eq!(digests.sha256, sha(&all));
    }
}
