//! The behaviour every destination must have, as one suite: the in-memory destination runs
//! it in unit tests, and every real backend runs it against its real server in the
//! integration tests. Each check panics with what went wrong.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{ErrorKind, Storage, cleanup, partial};
use crate::stream::ByteStream;

/// Runs every check in a fresh, empty folder of `store`; names start with `prefix`.
pub async fn run(store: &dyn Storage, prefix: &str) {
    put_list_get_delete(store, prefix).await;
    failed_stream_leaves_nothing(store, prefix).await;
    cancelled_put_leaves_nothing(store, prefix).await;
    missing_objects_are_not_found(store, prefix).await;
    a_backup_is_never_replaced(store, prefix).await;
}

/// `chunks` pieces of `size` bytes, then either the end or (when `fail`) an error.
fn source(chunks: usize, size: usize, fail: bool) -> ByteStream {
    let mut items: Vec<std::io::Result<Bytes>> = (0..chunks)
        .map(|i| Ok(Bytes::from(vec![(i % 251) as u8; size])))
        .collect();
    if fail {
        items.push(Err(std::io::Error::other("the archive stage failed")));
    }
    Box::pin(futures_util::stream::iter(items))
}

async fn read_all(store: &dyn Storage, name: &str) -> Vec<u8> {
    let mut stream = store.get(name).await.expect("get");
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk.expect("a chunk"));
    }
    data
}

async fn visible(store: &dyn Storage) -> Vec<String> {
    let mut names: Vec<String> = store
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    names
}

/// A stored object lists with its size, reads back byte for byte, and is gone once deleted.
pub async fn put_list_get_delete(store: &dyn Storage, prefix: &str) {
    let name = format!("{prefix}-a.tar.gz");
    let stored = store
        .put(&name, source(3, 70_000, false))
        .await
        .expect("put");
    assert_eq!(stored.bytes, 210_000, "bytes stored");
    let listed = store.list().await.expect("list");
    let entry = listed
        .iter()
        .find(|e| e.name == name)
        .expect("listed after put");
    assert_eq!(entry.size, 210_000, "listed size");
    let data = read_all(store, &name).await;
    assert_eq!(data.len(), 210_000);
    assert!(data[..70_000].iter().all(|b| *b == 0) && data[140_000..].iter().all(|b| *b == 2));
    store.delete(&name).await.expect("delete");
    assert!(
        !visible(store).await.contains(&name),
        "deleted object still listed"
    );
}

/// Storing under a name that exists fails with [`ErrorKind::AlreadyExists`] and keeps the
/// stored backup: when the name existed before the upload began, and when another writer
/// committed it while this upload was under way (two runs in the same second).
pub async fn a_backup_is_never_replaced(store: &dyn Storage, prefix: &str) {
    let name = format!("{prefix}-same-second.tar.gz");
    store.put(&name, source(1, 1000, false)).await.expect("put");
    let err = store
        .put(&name, source(2, 3000, false))
        .await
        .expect_err("a second put under the same name");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(
        read_all(store, &name).await,
        vec![0u8; 1000],
        "the first one is kept"
    );
    store.delete(&name).await.expect("delete");

    // The race: the slow upload saw no such name when it began.
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let slow: ByteStream = Box::pin(
        futures_util::stream::iter([Ok(Bytes::from(vec![7u8; 5000]))]).chain(
            futures_util::stream::once(async move {
                let _ = wait.await;
                Ok(Bytes::from(vec![7u8; 5000]))
            }),
        ),
    );
    let racing = async {
        // Let the slow upload begin first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let quick = store.put(&name, source(1, 2000, false)).await;
        let _ = release.send(());
        quick
    };
    let (slow, quick) = tokio::join!(store.put(&name, slow), racing);
    quick.expect("the quick upload");
    let err = slow.expect_err("the slow upload must not replace the quick one");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(
        read_all(store, &name).await,
        vec![0u8; 2000],
        "the committed one is kept"
    );
    assert_eq!(visible(store).await, vec![name.clone()], "no partial left");
    store.delete(&name).await.expect("delete");
}

/// A stream that ends in an error stores nothing: not under the final name, no visible
/// partial, and the error says the archive was incomplete.
pub async fn failed_stream_leaves_nothing(store: &dyn Storage, prefix: &str) {
    let name = format!("{prefix}-broken.tar.gz");
    let err = store
        .put(&name, source(2, 50_000, true))
        .await
        .expect_err("an incomplete stream must not be stored");
    assert_eq!(err.kind(), ErrorKind::Incomplete, "{err}");
    assert!(
        !visible(store).await.contains(&name),
        "incomplete archive stored under its final name"
    );
}

/// A put cancelled half-way (the run aborted) leaves nothing under the final name, and its
/// unfinished upload is removed.
pub async fn cancelled_put_leaves_nothing(store: &dyn Storage, prefix: &str) {
    let name = format!("{prefix}-cancelled.tar.gz");
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    let stream: ByteStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
    let feed = async {
        for _ in 0..4 {
            if tx
                .send(Ok(Bytes::from(vec![7u8; 64 * 1024])))
                .await
                .is_err()
            {
                break;
            }
        }
        // Then nothing more: the upload hangs until it is cancelled.
        std::future::pending::<()>().await;
    };
    let put = store.put(&name, stream);
    let _ = tokio::time::timeout(Duration::from_millis(1500), async {
        tokio::join!(put, feed)
    })
    .await;
    drop(tx);
    assert!(
        cleanup::settle(Duration::from_secs(15)).await,
        "cleanup did not finish"
    );
    assert!(
        !visible(store).await.contains(&name),
        "a cancelled upload appeared under its final name"
    );
    let entries = store.list().await.expect("list");
    assert!(
        entries.iter().all(|e| !partial::is_partial(&e.name)),
        "list shows unfinished uploads: {entries:?}"
    );
}

/// Reading or deleting a name that does not exist is `NotFound`.
pub async fn missing_objects_are_not_found(store: &dyn Storage, prefix: &str) {
    let name = format!("{prefix}-missing.tar.gz");
    match store.get(&name).await {
        Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{e}"),
        Ok(mut stream) => {
            // Some servers answer the read lazily: the stream itself must fail.
            let first = stream.next().await;
            assert!(
                matches!(first, Some(Err(_)) | None),
                "read a missing object"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::RetryPolicy;
    use crate::storage::LocalStorage;
    use crate::storage::memory::{Faulty, MemoryStorage};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_in_memory_destination_keeps_the_contract() {
        run(&MemoryStorage::new(), "mem").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_local_destination_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(dir.path());
        run(&store, "local").await;
        // Nothing left behind at all, hidden files included.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn stale_partials_of_any_writer_go_and_fresh_ones_stay() {
        let store = MemoryStorage::new();
        let now = jiff::Timestamp::now();
        let old = now - jiff::SignedDuration::from_secs(2 * 3600);
        store.insert(".a.tar.gz.old-container.1.partial", b"x", old);
        store.insert(".b.tar.gz.live-container.2.partial", b"x", now);
        store.insert("c.tar.gz", b"x", old);
        store.put("d.tar.gz", source(1, 10, false)).await.unwrap();
        let names = store.names();
        assert!(!names.contains(&".a.tar.gz.old-container.1.partial".to_owned()));
        assert!(names.contains(&".b.tar.gz.live-container.2.partial".to_owned()));
        assert!(names.contains(&"c.tar.gz".to_owned()) && names.contains(&"d.tar.gz".to_owned()));
    }

    /// Lists a memory destination whose first `failures` requests fail, within `budget`.
    async fn list_through(
        failures: usize,
        budget: Duration,
    ) -> Result<Vec<crate::storage::Entry>, crate::storage::StorageError> {
        let store = Faulty::new(MemoryStorage::new(), failures, Duration::from_millis(5));
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(5),
            ..RetryPolicy::with_timeout(budget)
        };
        policy
            .run(
                "listing",
                |e: &crate::storage::StorageError| e.is_transient(),
                || store.list(),
            )
            .await
    }

    #[tokio::test]
    async fn requests_are_retried_through_transient_failures_within_the_budget() {
        let listed = list_through(3, Duration::from_secs(5)).await;
        assert!(listed.is_ok(), "{listed:?}");
        // A budget that is spent fails with the transient error itself.
        let listed = list_through(1000, Duration::from_millis(100)).await;
        assert!(listed.unwrap_err().is_transient());
    }
}
