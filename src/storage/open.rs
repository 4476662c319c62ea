//! Opening a schedule's destinations: every configured backend, each set up on its own, so
//! that one that cannot be set up is reported by name while the others go on.

use std::path::Path;

use super::{
    AzureConfig, Backend, DropboxConfig, DropboxStorage, GoogleDriveConfig, GoogleDriveStorage,
    LocalStorage, S3Config, S3Storage, SftpConfig, SftpStorage, Storage, StorageError,
    WebDavConfig, WebDavStorage,
};
use crate::net::RetryPolicy;

/// What a schedule stores to, borrowed from its configuration.
pub struct Targets<'a> {
    /// The schedule's name, for log lines.
    pub schedule: &'a str,
    /// `BACKUP_ARCHIVE`: used when it exists.
    pub archive_dir: &'a Path,
    pub s3: Option<&'a S3Config>,
    pub azure: Option<&'a AzureConfig>,
    pub webdav: Option<&'a WebDavConfig>,
    pub sftp: Option<&'a SftpConfig>,
    pub dropbox: Option<&'a DropboxConfig>,
    pub gdrive: Option<&'a GoogleDriveConfig>,
    /// The retry budget every request of every destination gets.
    pub retry: RetryPolicy,
    /// `BACKUP_STATE_DIR`: where unfinished uploads are recorded.
    pub state_dir: &'a Path,
}

impl Targets<'_> {
    /// Each configured destination and where it stores, without connecting: for the
    /// scheduler's start-up summary. Never a secret (no user names, keys or tokens).
    pub fn describe(&self) -> Vec<String> {
        let join = |base: String, folder: &str| {
            let folder = folder.trim_matches('/');
            if folder.is_empty() {
                base
            } else {
                format!("{base}/{folder}")
            }
        };
        let mut out = Vec::new();
        if self.archive_dir.is_dir() {
            out.push(format!("Local {}", self.archive_dir.display()));
        }
        if let Some(c) = self.s3 {
            out.push(format!(
                "S3 {}",
                join(format!("s3://{}", c.bucket), &c.folder)
            ));
        }
        if let Some(c) = self.azure {
            let base = format!("azure://{}/{}", c.account, c.container);
            out.push(format!("Azure {}", join(base, &c.folder)));
        }
        if let Some(c) = self.webdav {
            let mut url = c.url.clone();
            let _ = url.set_username("");
            let _ = url.set_password(None);
            out.push(format!(
                "WebDAV {}",
                join(url.to_string().trim_end_matches('/').into(), &c.folder)
            ));
        }
        if let Some(c) = self.sftp {
            let base = format!("sftp://{}:{}", c.host, c.port);
            out.push(format!("SFTP {}", join(base, &c.remote_path)));
        }
        if let Some(c) = self.dropbox {
            out.push(format!("Dropbox {}", join("dropbox:".into(), &c.folder)));
        }
        if let Some(c) = self.gdrive {
            out.push(format!("GoogleDrive gdrive:{}", c.folder));
        }
        out
    }
}

/// The destinations of `targets` that could be set up, and those that could not (named,
/// with the reason). A missing local archive folder turns local storage off, as in the
/// reference, and says so.
pub async fn open_all(
    targets: &Targets<'_>,
) -> (Vec<Box<dyn Storage>>, Vec<(Backend, StorageError)>) {
    let mut list: Vec<Box<dyn Storage>> = Vec::new();
    let mut failed = Vec::new();
    let retry = |backend: Backend| {
        targets
            .retry
            .for_destination(targets.schedule, backend.name())
    };
    if targets.archive_dir.is_dir() {
        list.push(Box::new(LocalStorage::new(targets.archive_dir)));
    } else {
        tracing::warn!(
            "[{}] local archive folder {} does not exist: local storage is off",
            targets.schedule,
            targets.archive_dir.display()
        );
    }
    if let Some(s3) = targets.s3 {
        match S3Storage::connect(s3, retry(Backend::S3), targets.state_dir).await {
            Ok(store) => list.push(Box::new(store)),
            Err(e) => failed.push((Backend::S3, e)),
        }
    }
    if let Some(azure) = targets.azure {
        match super::azure::connect(azure, retry(Backend::Azure)) {
            Ok(store) => list.push(store),
            Err(e) => failed.push((Backend::Azure, e)),
        }
    }
    if let Some(sftp) = targets.sftp {
        list.push(Box::new(SftpStorage::new(sftp, retry(Backend::Sftp))));
    }
    if let Some(dropbox) = targets.dropbox {
        match DropboxStorage::new(dropbox, retry(Backend::Dropbox)) {
            Ok(store) => list.push(Box::new(store)),
            Err(e) => failed.push((Backend::Dropbox, e)),
        }
    }
    if let Some(gdrive) = targets.gdrive {
        match GoogleDriveStorage::new(gdrive, retry(Backend::GoogleDrive)) {
            Ok(store) => list.push(Box::new(store)),
            Err(e) => failed.push((Backend::GoogleDrive, e)),
        }
    }
    if let Some(webdav) = targets.webdav {
        match WebDavStorage::connect(webdav, retry(Backend::WebDav)) {
            Ok(store) => list.push(Box::new(store)),
            Err(e) => failed.push((Backend::WebDav, e)),
        }
    }
    (list, failed)
}
