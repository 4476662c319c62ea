//! One archive stream into every destination at once, in one pass.
//!
//! Chunks are `Bytes`, so every destination gets the same allocation, not a copy: memory is
//! at most (queue depth + 1) chunks whatever the number of destinations. The slowest
//! destination sets the pace (nothing is buffered beyond the queues). A destination that
//! fails is dropped from the fan-out and the others go on; an error in the source stream
//! reaches every destination, so none of them commits an incomplete archive.

use std::io;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Storage, StorageError, Stored};
use crate::stream::ByteStream;

/// Chunks queued per destination.
const QUEUE: usize = 2;

/// Stores `data` under `name` in every destination concurrently; one result per
/// destination, in the same order.
pub async fn put_all(
    destinations: &[&dyn Storage],
    name: &str,
    mut data: ByteStream,
) -> Vec<Result<Stored, StorageError>> {
    if let [only] = destinations {
        // No fan-out needed: hand the stream over as it is.
        return vec![only.put(name, data).await];
    }
    let (senders, receivers): (Vec<_>, Vec<_>) = destinations
        .iter()
        .map(|_| mpsc::channel::<io::Result<bytes::Bytes>>(QUEUE))
        .unzip();
    let distribute = async move {
        let mut senders: Vec<Option<mpsc::Sender<_>>> = senders.into_iter().map(Some).collect();
        while let Some(item) = data.next().await {
            let failed = item.is_err();
            let item = item.map_err(|e| (e.kind(), e.to_string()));
            for slot in senders.iter_mut() {
                let Some(tx) = slot else { continue };
                let copy = match &item {
                    Ok(chunk) => Ok(chunk.clone()),
                    Err((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
                };
                if tx.send(copy).await.is_err() {
                    // That destination gave up; the others go on.
                    *slot = None;
                }
            }
            if failed || senders.iter().all(Option::is_none) {
                break;
            }
        }
    };
    let puts =
        futures_util::future::join_all(destinations.iter().zip(receivers).map(|(dest, rx)| {
            let stream: ByteStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            dest.put(name, stream)
        }));
    let ((), results) = tokio::join!(distribute, puts);
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;
    use std::io::Write;

    fn source(data: Vec<u8>, fail_after: bool) -> ByteStream {
        let (mut w, s) = crate::stream::channel();
        tokio::task::spawn_blocking(move || {
            w.write_all(&data).unwrap();
            if fail_after {
                drop(w); // unfinished: the stream ends with an error
            } else {
                w.finish().unwrap();
            }
        });
        s
    }

    fn data() -> Vec<u8> {
        (0..(5 << 20) + 77).map(|i| (i * 7 % 253) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_destination_gets_the_same_bytes() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let stores: Vec<LocalStorage> = dirs.iter().map(|d| LocalStorage::new(d.path())).collect();
        let dests: Vec<&dyn Storage> = stores.iter().map(|s| s as &dyn Storage).collect();
        let results = put_all(&dests, "a.tar", source(data(), false)).await;
        for (dir, result) in dirs.iter().zip(results) {
            assert_eq!(result.unwrap().bytes, data().len() as u64);
            assert!(std::fs::read(dir.path().join("a.tar")).unwrap() == data());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_destination_does_not_stop_the_others() {
        let good = tempfile::tempdir().unwrap();
        let ok = LocalStorage::new(good.path());
        let missing = LocalStorage::new(good.path().join("does-not-exist"));
        let dests: Vec<&dyn Storage> = vec![&missing, &ok];
        let results = put_all(&dests, "a.tar", source(data(), false)).await;
        assert!(results[0].is_err());
        assert_eq!(results[1].as_ref().unwrap().bytes, data().len() as u64);
        assert!(std::fs::read(good.path().join("a.tar")).unwrap() == data());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_source_reaches_every_destination_and_nothing_is_kept() {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let stores: Vec<LocalStorage> = dirs.iter().map(|d| LocalStorage::new(d.path())).collect();
        let dests: Vec<&dyn Storage> = stores.iter().map(|s| s as &dyn Storage).collect();
        let results = put_all(&dests, "a.tar", source(data(), true)).await;
        for (dir, result) in dirs.iter().zip(results) {
            assert!(matches!(result, Err(e) if e.kind() == crate::storage::ErrorKind::Incomplete));
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }
}
