//! Retries with backoff, in one place.
//!
//! Every request a destination makes (a part, a block, a listing, a delete, a commit) is
//! retried under one [`RetryPolicy`] when it fails for a reason that may pass: a connection
//! refused or reset, a timeout, HTTP 5xx or 429. The archive is never read again: a request
//! is retried with the bytes it already holds. The object-store backends (S3, Azure) hand
//! the same policy to their HTTP client, which applies it to each request.

use std::time::Duration;

/// How failing requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = none).
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt (`BACKUP_RETRY_TIMEOUT`).
    pub timeout: Duration,
    /// The first wait; each later wait is up to twice the previous, with jitter.
    pub initial_backoff: Duration,
    /// The longest single wait.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The policy with the given overall retry window.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            max_retries: if timeout.is_zero() { 0 } else { 10 },
            timeout,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
        }
    }

    /// The same policy in the form the `object_store` HTTP client takes.
    pub fn object_store(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: self.initial_backoff,
                max_backoff: self.max_backoff,
                base: 2.,
            },
            max_retries: self.max_retries,
            retry_timeout: self.timeout,
        }
    }
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails for good (`transient` says no), or the policy's
    /// retries or time are used up. For backends whose client has no retries of its own.
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
        let started = std::time::Instant::now();
        let mut wait = self.initial_backoff;
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(e)
                    if attempt < self.max_retries
                        && transient(&e)
                        && started.elapsed() + wait <= self.timeout =>
                {
                    attempt += 1;
                    tracing::info!(
                        "{what}: {e}; retry {attempt} of {} in {:.1}s",
                        self.max_retries,
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                    // Exponential, with jitter so that parallel requests spread out.
                    let doubled = wait.mul_f64(1.5 + fastrand::f64() * 0.5);
                    wait = doubled.min(self.max_backoff);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn quick(retries: usize) -> RetryPolicy {
        RetryPolicy {
            max_retries: retries,
            timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicUsize::new(0);
        let result: Result<usize, String> = quick(5)
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
        let result: Result<(), String> = quick(5)
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
        let result: Result<(), String> = quick(2)
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
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
