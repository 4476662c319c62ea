//! Clean-up work that must outlive a cancelled upload (aborting a multipart upload when a
//! run is aborted). `main` waits for it, briefly, before the process exits.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

static PENDING: AtomicUsize = AtomicUsize::new(0);
static SETTLED: Notify = Notify::const_new();

/// Runs `work` on the runtime, counted until it finishes.
pub fn spawn(work: impl Future<Output = ()> + Send + 'static) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    PENDING.fetch_add(1, Ordering::SeqCst);
    handle.spawn(async move {
        work.await;
        PENDING.fetch_sub(1, Ordering::SeqCst);
        SETTLED.notify_waiters();
    });
}

/// Waits until no clean-up work is pending, or `timeout` passed. True when all finished.
pub async fn settle(timeout: Duration) -> bool {
    let wait = async {
        loop {
            let notified = SETTLED.notified();
            if PENDING.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(timeout, wait).await.is_ok()
}
