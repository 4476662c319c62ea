//! One retry budget, applied the same way to every request of every destination and to
//! notifications.
//!
//! A request that fails for a reason that may pass (a connection refused or reset, a
//! timeout, HTTP 5xx or 429) is tried again after a backoff that grows with jitter, until
//! it succeeds or the budget (`BACKUP_RETRY_TIMEOUT`, counted from the request's first
//! attempt) is spent: a server that is away for 10 s costs 10 s, not the run. Each failed
//! attempt is one WARN line naming who retries (schedule and destination). The archive is
//! never read again: a request is retried with the bytes it already holds. The S3 and
//! Azure destinations hand the same budget to their HTTP client (see [`Self::object_store`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed attempts that were tried again, by schedule and destination, since start (read by
/// the metrics).
static RETRIES: Mutex<BTreeMap<Counted, u64>> = Mutex::new(BTreeMap::new());

/// A schedule and one of its destinations.
type Counted = (Arc<str>, Arc<str>);

/// Every destination's retries so far: schedule, destination, count.
pub fn retries() -> Vec<(Arc<str>, Arc<str>, u64)> {
    let all = RETRIES.lock().unwrap_or_else(|e| e.into_inner());
    all.iter()
        .map(|((s, d), n)| (s.clone(), d.clone(), *n))
        .collect()
}

/// How failing requests are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// No retry starts later than this after the first attempt (`BACKUP_RETRY_TIMEOUT`).
    pub timeout: Duration,
    /// The first wait; each later wait is up to twice the previous, with jitter.
    pub initial_backoff: Duration,
    /// The longest single wait.
    pub max_backoff: Duration,
    /// Who retries, for log lines: `[schedule] S3`.
    pub label: Arc<str>,
    /// The schedule and destination whose retries are counted; none for notifications.
    pub counted: Option<Counted>,
}

impl RetryPolicy {
    /// The policy with the given overall retry window.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            timeout,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            label: Arc::from(""),
            counted: None,
        }
    }

    /// The same budget for `destination` of `schedule`: named in log lines, its retries
    /// counted.
    pub fn for_destination(&self, schedule: &str, destination: &str) -> Self {
        Self {
            label: Arc::from(format!("[{schedule}] {destination}")),
            counted: Some((Arc::from(schedule), Arc::from(destination))),
            ..self.clone()
        }
    }

    /// The same budget for something that is not a destination (its retries are not
    /// counted by destination): `label` names it in log lines.
    pub fn named(&self, label: impl Into<Arc<str>>) -> Self {
        Self {
            label: label.into(),
            counted: None,
            ..self.clone()
        }
    }

    /// Counts one failed attempt that is tried again.
    pub fn note_retry(&self) {
        if let Some(key) = &self.counted {
            let mut all = RETRIES.lock().unwrap_or_else(|e| e.into_inner());
            *all.entry(key.clone()).or_default() += 1;
        }
    }

    /// The same policy in the form the `object_store` HTTP client takes: the time budget
    /// decides, not a count (the count is only a backstop far beyond the budget).
    pub fn object_store(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: self.initial_backoff,
                max_backoff: self.max_backoff,
                base: 2.,
            },
            max_retries: if self.timeout.is_zero() { 0 } else { 10_000 },
            retry_timeout: self.timeout,
        }
    }

    /// Runs `op` until it succeeds, fails for good (`transient` says no), or the budget is
    /// spent. Each failed attempt that is retried is logged once, at WARN.
    pub async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        transient: impl Fn(&E) -> bool,
        mut op: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let mut wait = self.initial_backoff;
        let mut attempt = 0u32;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(e) if transient(&e) && started.elapsed() + wait <= self.timeout => {
                    attempt += 1;
                    self.note_retry();
                    let left = self.timeout.saturating_sub(started.elapsed());
                    tracing::warn!(
                        "{}{}{what}: {e}; attempt {attempt} failed, trying again in {:.1}s \
                         (giving up in {:.0}s)",
                        self.label,
                        if self.label.is_empty() { "" } else { ": " },
                        wait.as_secs_f64(),
                        left.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                    wait = self.next_wait(wait);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Exponential, with jitter so that parallel requests spread out.
    fn next_wait(&self, wait: Duration) -> Duration {
        wait.mul_f64(1.5 + fastrand::f64() * 0.5)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn quick(timeout: Duration) -> RetryPolicy {
        RetryPolicy {
            timeout,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            label: Arc::from("[test] Memory"),
            counted: None,
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicUsize::new(0);
        let result: Result<usize, String> = quick(Duration::from_secs(5))
            .run(
                "op",
                |_| true,
                || async {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    if n < 3 {
                        Err(format!("fail {n}"))
                    } else {
                        Ok(n)
                    }
                },
            )
            .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test]
    async fn permanent_failures_and_exhausted_retries_stop() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), String> = quick(Duration::from_secs(5))
            .run(
                "op",
                |e: &String| e != "denied",
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("denied".to_owned())
                },
            )
            .await;
        assert_eq!(result.unwrap_err(), "denied");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicUsize::new(0);
        let started = Instant::now();
        let result: Result<(), String> = quick(Duration::from_millis(300))
            .run(
                "op",
                |_| true,
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("down".to_owned())
                },
            )
            .await;
        assert!(result.is_err());
        // The budget, not a count, decides: many quick attempts, then it gives up in time.
        assert!(calls.load(Ordering::SeqCst) > 10);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn the_object_store_client_gets_the_whole_time_budget() {
        let policy = RetryPolicy::with_timeout(Duration::from_secs(120));
        let config = policy.object_store();
        assert_eq!(config.retry_timeout, Duration::from_secs(120));
        // Enough retries that the time budget, not the count, ends the retrying.
        let mut spent = Duration::ZERO;
        let mut wait = policy.initial_backoff;
        for _ in 0..config.max_retries.min(1000) {
            spent += wait;
            wait = (wait * 2).min(policy.max_backoff);
        }
        assert!(spent > config.retry_timeout);
        assert_eq!(
            RetryPolicy::with_timeout(Duration::ZERO)
                .object_store()
                .max_retries,
            0
        );
    }

    #[tokio::test]
    async fn retries_are_counted_per_schedule_and_destination() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            ..RetryPolicy::with_timeout(Duration::from_secs(5))
        }
        .for_destination("counted-shop", "S3");
        assert_eq!(&*policy.label, "[counted-shop] S3");
        let result: Result<(), String> = policy
            .run(
                "op",
                |_| true,
                || async {
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err("reset".into())
                    } else {
                        Ok(())
                    }
                },
            )
            .await;
        assert!(result.is_ok());
        let counted: Vec<u64> = retries()
            .into_iter()
            .filter(|(s, d, _)| &**s == "counted-shop" && &**d == "S3")
            .map(|(_, _, n)| n)
            .collect();
        assert_eq!(counted, [2]);
    }
}
