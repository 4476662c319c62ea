//! Local destination: a folder on this machine (`BACKUP_ARCHIVE`).
//!
//! The archive is written to a hidden name in the same folder, fsynced, then renamed to its
//! final name, and the folder is fsynced: after a crash there is either the complete archive
//! or none. New archives are readable by their owner only.

use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{Storage, StorageError, Stored};
use crate::stream::ByteStream;

#[derive(Debug, Clone)]
pub struct LocalStorage {
    dir: PathBuf,
}

/// Removes an unfinished upload when dropped, including when the `put` future is cancelled.
struct Partial {
    path: Option<PathBuf>,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("could not remove unfinished {}: {e}", path.display());
            }
        }
    }
}

impl LocalStorage {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The hidden name an archive has while it is being written.
    pub fn partial_name(name: &str) -> String {
        format!(".{name}.{}.partial", std::process::id())
    }

    /// Points the symlink `link` in the archive folder at `target`, replacing any previous
    /// link atomically (a new link under a hidden name, renamed over the old one).
    pub async fn update_symlink(&self, link: &str, target: &str) -> Result<(), StorageError> {
        let final_path = self.dir.join(link);
        let tmp = self
            .dir
            .join(format!(".{link}.{}.link", std::process::id()));
        let target = target.to_owned();
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(&tmp);
            symlink(&target, &tmp)
                .and_then(|()| std::fs::rename(&tmp, &final_path))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    StorageError::io(format!("updating symlink {}", final_path.display()), e)
                })
        })
        .await
        .map_err(|e| StorageError::io("updating symlink", io::Error::other(e)))?
    }
}

#[async_trait]
impl Storage for LocalStorage {
    fn name(&self) -> &'static str {
        "Local"
    }

    async fn put(&self, name: &str, mut data: ByteStream) -> Result<Stored, StorageError> {
        let final_path = self.dir.join(name);
        let tmp_path = self.dir.join(Self::partial_name(name));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
            .await
            .map_err(|e| StorageError::io(format!("creating {}", tmp_path.display()), e))?;
        let mut partial = Partial {
            path: Some(tmp_path.clone()),
        };
        let write_err = |e| StorageError::io(format!("writing {}", tmp_path.display()), e);

        let mut bytes = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(StorageError::Incomplete)?;
            file.write_all(&chunk).await.map_err(write_err)?;
            bytes += chunk.len() as u64;
        }
        file.flush().await.map_err(write_err)?;
        file.sync_all().await.map_err(write_err)?;
        drop(file);

        tokio::fs::rename(&tmp_path, &final_path)
            .await
            .map_err(|e| StorageError::io(format!("renaming to {}", final_path.display()), e))?;
        partial.path = None;
        // Make the rename itself durable.
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|e| StorageError::io(format!("syncing {}", self.dir.display()), e))?;

        Ok(Stored {
            location: final_path.display().to_string(),
            bytes,
        })
    }
}
