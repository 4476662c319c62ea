//! Destinations. Every backend implements [`Storage`] and knows nothing of the others; `run`
//! hands each one the archive as a [`ByteStream`].
//!
//! The contract every backend keeps: nothing appears under the final name unless the whole
//! stream arrived without an error item. A failed or cancelled `put` leaves no partial file
//! under that name.

pub mod azure;
pub mod cleanup;
pub mod dropbox;
mod fanout;
mod local;
mod object;
mod partial;
pub mod parts;
pub mod retry;
pub mod s3;
pub mod sftp;
pub(crate) mod tls;
pub mod webdav;

use std::io;

use async_trait::async_trait;

pub use azure::{
    ACCESS_TIERS, AzureConfig, AzureCredentials, ConnectionString, parse_connection_string,
};
pub use dropbox::{DropboxConfig, DropboxStorage};
pub use fanout::put_all;
pub use local::LocalStorage;
pub use retry::RetryPolicy;
pub use s3::{S3Config, S3Credentials, S3Storage};
pub use sftp::{HostKeyCheck, SftpConfig, SftpStorage};
pub use webdav::{WebDavConfig, WebDavStorage};

use crate::stream::ByteStream;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The archive stream reported an error: the producer failed, the upload was discarded.
    #[error("the archive was not complete: {0}")]
    Incomplete(io::Error),
    /// The destination itself failed; `what` says which operation on which object.
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

impl StorageError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        StorageError::Io {
            what: what.into(),
            source,
        }
    }
}

/// An error with its causes, `outer: cause: root cause`, leaving out causes the message
/// already contains (HTTP clients often say only "error sending request" at the top).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// One backup in a destination's folder, as `list` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    /// The destination's own timestamp (mtime, LastModified).
    pub modified: jiff::Timestamp,
}

/// What a successful `put` stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Where the archive now is, for logs and hooks (a path or URL, without secrets).
    pub location: String,
    pub bytes: u64,
}

#[async_trait]
pub trait Storage: Send + Sync {
    /// The backend's name as users write it in `BACKUP_SKIP_BACKENDS_FROM_PRUNE`.
    fn name(&self) -> &'static str;

    /// Stores `data` under `name`, atomically: the name appears only once all of it is stored.
    async fn put(&self, name: &str, data: ByteStream) -> Result<Stored, StorageError>;

    /// The backups directly in the configured folder: never entries of deeper folders, nor
    /// unfinished uploads or links.
    async fn list(&self) -> Result<Vec<Entry>, StorageError>;

    /// Deletes the backup `name` in the configured folder.
    async fn delete(&self, name: &str) -> Result<(), StorageError>;

    /// Reads the backup `name` back (for `check --write`, restore and verify).
    async fn get(&self, name: &str) -> Result<ByteStream, StorageError>;
}
