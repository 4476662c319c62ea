//! The one lifecycle of an unfinished upload, for every destination: a temporary name (or
//! an upload id) exists from the first byte until the upload is committed under its final
//! name; if it is not committed, whatever happened (an error, the run cancelled, SIGTERM),
//! it is removed. Removal after a cancel outlives the cancelled future: it runs on the
//! runtime and `main` waits for it (see [`super::cleanup`]). What even that cannot remove
//! (`kill -9`, a server gone) is removed later, once stale (see [`super::partial`]).

use std::future::Future;
use std::pin::Pin;

use super::{ErrorKind, StorageError, cleanup};

type Removal = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + 'static>>;

/// An unfinished upload that is removed unless [`Staged::keep`] is called.
#[must_use = "an unfinished upload is removed when this is dropped"]
pub struct Staged {
    /// For messages: "the unfinished upload .x.partial in WebDAV".
    what: String,
    remove: Option<Removal>,
}

impl Staged {
    /// `remove` deletes the unfinished upload; it only runs if the upload is not committed.
    pub fn new(
        what: impl Into<String>,
        remove: impl Future<Output = Result<(), StorageError>> + Send + 'static,
    ) -> Self {
        Self {
            what: what.into(),
            remove: Some(Box::pin(remove)),
        }
    }

    /// Nothing to remove: the upload is under its final name, or nothing was created after
    /// all (the first request never reached the server).
    pub fn keep(mut self) {
        self.remove = None;
    }

    /// The upload failed: remove it now, and say so.
    pub async fn discard(mut self) {
        if let Some(remove) = self.remove.take() {
            report(remove.await, &self.what);
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(remove) = self.remove.take() {
            let what = std::mem::take(&mut self.what);
            cleanup::spawn(async move { report(remove.await, &what) });
        }
    }
}

fn report(result: Result<(), StorageError>, what: &str) {
    match result {
        Ok(()) => tracing::info!("removed {what}"),
        // Nothing had been stored yet.
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!("could not remove {what}: {e}; a later run removes it once it is stale")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn counting(
        count: &Arc<AtomicUsize>,
    ) -> impl Future<Output = Result<(), StorageError>> + use<> {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn removed_unless_committed_also_when_cancelled() {
        let removed = Arc::new(AtomicUsize::new(0));
        Staged::new("a", counting(&removed)).keep();
        assert_eq!(removed.load(Ordering::SeqCst), 0);
        Staged::new("c", counting(&removed)).discard().await;
        assert_eq!(removed.load(Ordering::SeqCst), 1);
        // A put future cancelled mid-way drops its Staged: removal still happens.
        let upload = async {
            let _staged = Staged::new("d", counting(&removed));
            std::future::pending::<()>().await;
        };
        let _ = tokio::time::timeout(Duration::from_millis(10), upload).await;
        assert!(cleanup::settle(Duration::from_secs(5)).await);
        assert_eq!(removed.load(Ordering::SeqCst), 2);
    }
}
