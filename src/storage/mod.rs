//! Destinations. Every backend implements [`Storage`] and knows nothing of the others; `run`
//! hands each one the archive as a [`ByteStream`].
//!
//! The contract every backend keeps: nothing appears under the final name unless the whole
//! stream arrived without an error item. A failed or cancelled `put` leaves no partial file
//! under that name.

mod azure;
mod backend;
pub mod cleanup;
pub mod conformance;
mod dropbox;
mod error;
mod fanout;
pub(crate) mod gdrive;
mod http_log;
mod local;
#[cfg(test)]
pub(crate) mod memory;
mod object;
mod open;
pub(crate) mod partial;
mod parts;
pub(crate) mod s3;
pub(crate) mod sftp;
mod staged;
mod webdav;

use async_trait::async_trait;

pub use azure::{
    ACCESS_TIERS, AzureConfig, AzureCredentials, ConnectionString, parse_connection_string,
};
pub use backend::Backend;
pub use dropbox::{DropboxConfig, DropboxStorage};
pub use error::{ErrorKind, StorageError};
pub use fanout::put_all;
pub use gdrive::{GoogleDriveConfig, GoogleDriveStorage, ServiceAccount, parse_credentials};
pub use local::LocalStorage;
pub use open::{Targets, open_all};
pub use s3::{S3Config, S3Credentials, S3Storage};
pub use sftp::{HostKeyCheck, SftpConfig, SftpStorage};
pub use webdav::{WebDavConfig, WebDavStorage};

use crate::stream::ByteStream;

/// The HTTP client of a JSON-API destination (Dropbox, Google Drive): rustls, and a
/// connect timeout so that an unreachable host fails the attempt instead of hanging.
fn api_client(service: &str) -> Result<reqwest::Client, StorageError> {
    crate::net::tls::install_provider();
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| {
            StorageError::io(
                format!("setting up {service}"),
                std::io::Error::other(crate::net::error_chain(&e)),
            )
        })
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
    /// Which kind of destination this is.
    fn backend(&self) -> Backend;

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
