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

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::with_timeout(DEFAULT_TIMEOUT)
    }
}

/// `BACKUP_RETRY_TIMEOUT`'s default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
