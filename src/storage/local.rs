//! Local destination: a folder on this machine (`BACKUP_ARCHIVE`).
//!
//! The archive is written to a hidden name in the same folder, fsynced, then renamed to its
//! final name, and the folder is fsynced: after a crash there is either the complete archive
//! or none. New archives are readable by their owner only.

use std::io;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use async_trait::async_trait;
use futures_util::StreamExt;
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};

use super::staged::Staged;
use super::{Entry, Storage, StorageError, Stored, partial};
use crate::stream::ByteStream;

/// Writeback is started for every this many bytes written, and waited for one window later.
const WRITEBACK_WINDOW: u64 = 8 << 20;

#[derive(Debug, Clone)]
pub struct LocalStorage {
    dir: PathBuf,
}

impl LocalStorage {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Every regular file in the folder, hidden ones (unfinished uploads) included.
    async fn list_all(&self) -> Result<Vec<Entry>, StorageError> {
        let dir = self.dir.clone();
        let listing = tokio::task::spawn_blocking(move || -> io::Result<Vec<Entry>> {
            let mut entries = Vec::new();
            for item in std::fs::read_dir(&dir)? {
                let item = item?;
                let Ok(name) = item.file_name().into_string() else {
                    continue; // not a name dunnage writes
                };
                // Regular files only: the latest-symlink and folders are never backups.
                let meta = item.metadata()?;
                if !meta.file_type().is_file() {
                    continue;
                }
                let modified =
                    jiff::Timestamp::try_from(meta.modified()?).map_err(io::Error::other)?;
                entries.push(Entry {
                    name,
                    size: meta.len(),
                    modified,
                });
            }
            Ok(entries)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        listing.map_err(|e| StorageError::io(format!("listing {}", self.dir.display()), e))
    }

    /// Writes `data` to `tmp_path` durably; the number of bytes written.
    async fn write_durably(
        &self,
        tmp_path: &std::path::Path,
        file: File,
        mut data: ByteStream,
    ) -> Result<u64, StorageError> {
        let write_err = |e| StorageError::io(format!("writing {}", tmp_path.display()), e);
        // Each chunk is written on a blocking thread while the next one is being produced.
        let mut writer = DurableWriter::new(file);
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(StorageError::incomplete)?;
            writer = tokio::task::spawn_blocking(move || writer.write(&chunk).map(|()| writer))
                .await
                .map_err(|e| write_err(io::Error::other(e)))?
                .map_err(write_err)?;
        }
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| write_err(io::Error::other(e)))?
            .map_err(write_err)
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
    fn backend(&self) -> super::Backend {
        super::Backend::Local
    }

    async fn put(&self, name: &str, data: ByteStream) -> Result<Stored, StorageError> {
        if let Ok(entries) = self.list_all().await {
            partial::remove_stale(self, &entries).await;
        }
        let final_path = self.dir.join(name);
        let location = final_path.display().to_string();
        if final_path.symlink_metadata().is_ok() {
            return Err(StorageError::exists(&location));
        }
        let tmp_path = self.dir.join(partial::name(name));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(|e| StorageError::io(format!("creating {}", tmp_path.display()), e))?;
        let staged = {
            let path = tmp_path.clone();
            Staged::new(
                format!("the unfinished {}", tmp_path.display()),
                async move {
                    tokio::fs::remove_file(&path)
                        .await
                        .map_err(|e| StorageError::io(format!("deleting {}", path.display()), e))
                },
            )
        };
        let committed = async {
            let bytes = self.write_durably(&tmp_path, file, data).await?;
            let (from, to) = (tmp_path.clone(), final_path.clone());
            tokio::task::spawn_blocking(move || rename_no_replace(&from, &to))
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => StorageError::exists(&location),
                    _ => StorageError::io(format!("renaming to {location}"), e),
                })?;
            Ok::<_, StorageError>(bytes)
        }
        .await;
        let bytes = match committed {
            Ok(bytes) => {
                staged.keep();
                bytes
            }
            Err(e) => {
                staged.discard().await;
                return Err(e);
            }
        };
        // Make the rename itself durable.
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|e| StorageError::io(format!("syncing {}", self.dir.display()), e))?;

        Ok(Stored { location, bytes })
    }

    async fn list(&self) -> Result<Vec<Entry>, StorageError> {
        let mut entries = self.list_all().await?;
        // Hidden files (unfinished uploads, anything else hidden) are never backups.
        entries.retain(|e| !e.name.starts_with('.'));
        Ok(entries)
    }

    async fn delete(&self, name: &str) -> Result<(), StorageError> {
        let path = self.dir.join(name);
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| StorageError::io(format!("deleting {}", path.display()), e))
    }

    async fn get(&self, name: &str) -> Result<ByteStream, StorageError> {
        let path = self.dir.join(name);
        let mut file = File::open(&path)
            .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
        let (mut writer, stream) = crate::stream::channel();
        tokio::task::spawn_blocking(move || {
            // A read error drops the writer unfinished: the stream ends with an error.
            if io::copy(&mut file, &mut writer).is_ok() {
                let _ = writer.finish();
            }
        });
        Ok(stream)
    }
}

/// Writes a file so that making it durable costs little at the end: the kernel is asked to
/// start writing each window to disk as soon as it is complete, and the window before is
/// waited for and dropped from the page cache. Dirty memory stays at about two windows, the
/// final fsync has only the tail left to do, and a backup does not push the application's
/// own data out of the page cache.
struct DurableWriter {
    file: File,
    written: u64,
    /// Start of the bytes not yet handed to writeback.
    unsubmitted: u64,
    /// The window whose writeback was started last: (offset, length).
    in_flight: Option<(u64, u64)>,
}

impl DurableWriter {
    fn new(file: File) -> Self {
        Self {
            file,
            written: 0,
            unsubmitted: 0,
            in_flight: None,
        }
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk)?;
        self.written += chunk.len() as u64;
        if self.written - self.unsubmitted >= WRITEBACK_WINDOW {
            let window = (self.unsubmitted, self.written - self.unsubmitted);
            self.unsubmitted = self.written;
            sync_range(&self.file, window, nix::libc::SYNC_FILE_RANGE_WRITE)?;
            if let Some(previous) = self.in_flight.replace(window) {
                self.settle(previous)?;
            }
        }
        Ok(())
    }

    /// Waits until `window` is on disk, then lets the page cache forget it.
    fn settle(&self, window: (u64, u64)) -> io::Result<()> {
        use nix::libc::{
            SYNC_FILE_RANGE_WAIT_AFTER, SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE,
        };
        sync_range(
            &self.file,
            window,
            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER,
        )?;
        // Advice only; failing to give it changes nothing about the data.
        let _ = posix_fadvise(
            &self.file,
            window.0 as i64,
            window.1 as i64,
            PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        Ok(())
    }

    /// Makes everything durable and returns the number of bytes written.
    fn finish(self) -> io::Result<u64> {
        self.file.sync_all()?;
        if let Some(last) = self.in_flight {
            self.settle(last)?;
        }
        let rest = (self.unsubmitted, self.written - self.unsubmitted);
        let _ = posix_fadvise(
            &self.file,
            rest.0 as i64,
            rest.1 as i64,
            PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        Ok(self.written)
    }
}

/// `sync_file_range(2)`. Filesystems that do not support it are fine: the final fsync is
/// what makes the file durable; this only spreads its work over the run.
fn sync_range(file: &File, (offset, len): (u64, u64), flags: u32) -> io::Result<()> {
    // SAFETY: a plain syscall on a file descriptor we own, no pointers involved.
    let r =
        unsafe { nix::libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, flags) };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(nix::libc::ENOSYS | nix::libc::EINVAL | nix::libc::ESPIPE | nix::libc::EOPNOTSUPP) => {
            Ok(())
        }
        _ => Err(err),
    }
}
/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`), atomically:
/// `renameat2(RENAME_NOREPLACE)`, or where the file system lacks it, a hard link (which
/// refuses an existing name too) and the removal of the old name.
fn rename_no_replace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}
