//! The one error type of every destination, with a kind that says what a caller may do about
//! it: retry (transient), fix credentials (denied), or nothing (not found is often fine).
//! Cheap to clone, so one failure can be handed to every part of a run that reports it.
//! Rendered to text only where it is shown (logs, notifications, `check`).

use std::fmt;
use std::io;
use std::sync::Arc;

/// What kind of failure, independent of the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object or folder does not exist.
    NotFound,
    /// Credentials were refused, or the account may not do this.
    Denied,
    /// May pass: a connection refused or reset, a timeout, an overloaded server.
    Transient,
    /// The archive stream ended with an error: the producer failed, nothing was committed.
    Incomplete,
    /// A backup of that name is already stored: backups are never replaced.
    AlreadyExists,
    /// Anything else (a full disk, a malformed answer, a refusal a retry will not change).
    Other,
}

/// A destination's failure: which operation on which object, its kind and its cause.
#[derive(Clone)]
pub struct StorageError {
    kind: ErrorKind,
    what: Arc<str>,
    source: Arc<dyn std::error::Error + Send + Sync>,
}

impl StorageError {
    /// `what` failed (e.g. "uploading s3://bucket/x") with `kind`, because of `source`.
    pub fn new(
        kind: ErrorKind,
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            what: what.into().into(),
            source: Arc::from(source.into()),
        }
    }

    /// An I/O failure; the kind follows the I/O error's kind.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::new(kind_of(&source), what, source)
    }

    /// The archive stream failed (see [`ErrorKind::Incomplete`]).
    pub fn incomplete(source: io::Error) -> Self {
        Self::new(
            ErrorKind::Incomplete,
            "the archive was not complete",
            source,
        )
    }

    /// A backup named `location` is already stored; the new one was not put in its place.
    pub fn exists(location: &str) -> Self {
        Self::new(
            ErrorKind::AlreadyExists,
            format!("storing {location}"),
            "a backup of that name already exists and backups are never replaced (two runs \
             in the same second with the same BACKUP_FILENAME? add a finer time or a unique \
             part to it)",
        )
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            crate::net::error_chain(self.source.as_ref())
        )
    }
}

impl fmt::Debug for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageError")
            .field("kind", &self.kind)
            .field("what", &self.what)
            .field("source", &self.source.to_string())
            .finish()
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        None
    }
}

/// The kind an I/O error stands for.
pub fn kind_of(e: &io::Error) -> ErrorKind {
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::PermissionDenied => ErrorKind::Denied,
        K::AlreadyExists => ErrorKind::AlreadyExists,
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::BrokenPipe
        | K::TimedOut
        | K::Interrupted
        | K::UnexpectedEof
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// The kind an HTTP status stands for (for destinations that speak HTTP).
pub fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::Denied,
        404 | 410 => ErrorKind::NotFound,
        408 | 425 | 429 => ErrorKind::Transient,
        507 => ErrorKind::Other,
        500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// The kind of a failed HTTP exchange that got no status.
pub fn kind_of_request(e: &reqwest::Error) -> ErrorKind {
    // A retry does not make a plain-HTTP port speak TLS.
    if crate::net::is_tls_mismatch(&crate::net::error_chain(e)) {
        return ErrorKind::Other;
    }
    if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() {
        ErrorKind::Transient
    } else if let Some(status) = e.status() {
        kind_of_status(status.as_u16())
    } else {
        ErrorKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_causes_and_render_with_the_operation() {
        let e = StorageError::io("reading x", io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().starts_with("reading x: "));
        let denied = StorageError::io("x", io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(denied.kind(), ErrorKind::Denied);
        let reset = StorageError::io("x", io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(reset.is_transient());
        let shared = reset.clone();
        assert_eq!(shared.to_string(), reset.to_string());
        assert_eq!(kind_of_status(503), ErrorKind::Transient);
        assert_eq!(kind_of_status(507), ErrorKind::Other);
        assert_eq!(kind_of_status(403), ErrorKind::Denied);
        assert_eq!(kind_of_status(404), ErrorKind::NotFound);
        let incomplete = StorageError::incomplete(io::Error::other("producer failed"));
        assert_eq!(incomplete.kind(), ErrorKind::Incomplete);
        assert_eq!(
            incomplete.to_string(),
            "the archive was not complete: producer failed"
        );
    }
}
