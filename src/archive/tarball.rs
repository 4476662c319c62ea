//! Walks the sources and writes each entry as a tar record.
//!
//! What is stored: regular files (content read once, straight into the output), directories
//! (also empty ones), symlinks as symlinks (never followed), hard links as link records after
//! the first copy, FIFOs and device nodes as headers. Sockets are skipped. Mode, numeric and
//! named owner and mtime are kept. Names are stored relative to `/` with GNU long-name records
//! when needed; non-UTF-8 names are kept byte for byte.
//!
//! A file that vanishes or changes while it is read is a warning and the archive stays valid
//! (a shrinking file is padded with zeros to its announced size, a growing one is cut there).
//! A file or folder that cannot be read fails the run: a silently incomplete backup is worse
//! than a failed one.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::unistd::{Gid, Group, Uid, User};
use regex::bytes::Regex;
use tar::{EntryType, Header};

use super::{ArchiveError, ArchiveStats};
use crate::progress::Progress;

/// Read size for file contents: large enough that per-call costs vanish, small enough to
/// stay a fixed part of the memory budget.
const READ_BUF: usize = 256 << 10;
const BLOCK: u64 = 512;

pub(crate) struct TarWalker<'a, W: Write> {
    tar: tar::Builder<W>,
    exclude: Option<&'a Regex>,
    /// First archive name of every multiply-linked file seen so far, by (device, inode).
    links: HashMap<(u64, u64), PathBuf>,
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
    buf: Vec<u8>,
    pub(crate) stats: ArchiveStats,
    progress: Arc<Progress>,
}

impl<'a, W: Write> TarWalker<'a, W> {
    pub(crate) fn new(out: W, exclude: Option<&'a Regex>, progress: Arc<Progress>) -> Self {
        Self {
            tar: tar::Builder::new(out),
            exclude,
            links: HashMap::new(),
            users: HashMap::new(),
            groups: HashMap::new(),
            buf: vec![0; READ_BUF],
            stats: ArchiveStats::default(),
            progress,
        }
    }

    /// Writes the end-of-archive marker and returns the output.
    pub(crate) fn finish(self) -> Result<(W, ArchiveStats), ArchiveError> {
        let stats = self.stats;
        let out = self.tar.into_inner().map_err(ArchiveError::Output)?;
        Ok((out, stats))
    }

    fn warn(&mut self, path: &Path, what: &str) {
        let msg = format!("{}: {what}", path.display());
        tracing::warn!("{msg}");
        self.stats.warnings.push(msg);
    }

    fn excluded(&self, path: &Path) -> bool {
        self.exclude
            .is_some_and(|re| re.is_match(path.as_os_str().as_bytes()))
    }

    /// Adds the tree below `root` (an absolute path), in file-name order.
    pub(crate) fn add_tree(&mut self, root: &Path) -> Result<(), ArchiveError> {
        let mut walk = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(next) = walk.next() {
            let entry = match next {
                Ok(entry) => entry,
                Err(err) => {
                    let path = err.path().unwrap_or(root).to_path_buf();
                    let io = io::Error::from(err);
                    if io.kind() == io::ErrorKind::NotFound && path != root {
                        self.warn(&path, "vanished while the archive was written; skipped");
                        continue;
                    }
                    return Err(ArchiveError::Unreadable { path, source: io });
                }
            };
            let path = entry.path();
            if self.excluded(path) {
                if entry.file_type().is_dir() {
                    walk.skip_current_dir();
                }
                continue;
            }
            let meta = match fs::symlink_metadata(path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn(path, "vanished while the archive was written; skipped");
                    if entry.file_type().is_dir() {
                        walk.skip_current_dir();
                    }
                    continue;
                }
                Err(source) => {
                    return Err(ArchiveError::Unreadable {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            };
            if entry.depth() == 1 && meta.is_dir() {
                self.progress.set_folder(&path.to_string_lossy());
            }
            let before = self.stats.entries;
            self.add_entry(path, &meta)?;
            if self.stats.entries > before {
                self.progress.add_entry();
            }
        }
        Ok(())
    }

    fn add_entry(&mut self, path: &Path, meta: &Metadata) -> Result<(), ArchiveError> {
        let name = archive_name(path);
        if name.as_os_str().is_empty() {
            return Ok(()); // the root folder itself: nothing to name
        }
        let ft = meta.file_type();
        if ft.is_file() {
            return self.add_file(path, &name);
        }
        let mut header = self.header(meta);
        let out = |e| ArchiveError::Output(e);
        if ft.is_dir() {
            header.set_entry_type(EntryType::Directory);
            self.tar
                .append_data(&mut header, &name, io::empty())
                .map_err(out)?;
        } else if ft.is_symlink() {
            let target = match fs::read_link(path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn(path, "vanished while the archive was written; skipped");
                    return Ok(());
                }
                Err(source) => {
                    return Err(ArchiveError::Unreadable {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            };
            self.append_symlink(header, &name, target.as_os_str().as_bytes())
                .map_err(out)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            header.set_entry_type(if ft.is_fifo() {
                EntryType::Fifo
            } else if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            });
            let dev = meta.rdev();
            header
                .set_device_major(nix::sys::stat::major(dev) as u32)
                .and_then(|()| header.set_device_minor(nix::sys::stat::minor(dev) as u32))
                .map_err(out)?;
            self.tar
                .append_data(&mut header, &name, io::empty())
                .map_err(out)?;
        } else {
            // Sockets: meaningless in a backup, and GNU tar skips them too.
            tracing::debug!("{}: socket skipped", path.display());
            return Ok(());
        }
        self.stats.entries += 1;
        Ok(())
    }

    fn add_file(&mut self, path: &Path, name: &Path) -> Result<(), ArchiveError> {
        // O_NOFOLLOW: if the file was replaced by a symlink since the walk saw it, do not
        // archive whatever it now points to. O_NONBLOCK: a file replaced by a FIFO must not
        // hang the run (it has no effect on regular files).
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(path, "vanished while the archive was written; skipped");
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                self.warn(
                    path,
                    "was replaced by a symlink while being archived; skipped",
                );
                return Ok(());
            }
            Err(source) => {
                return Err(ArchiveError::Unreadable {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let unreadable = |source| ArchiveError::Unreadable {
            path: path.to_path_buf(),
            source,
        };
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            self.warn(path, "changed type while being archived; skipped");
            return Ok(());
        }
        let out = |e| ArchiveError::Output(e);
        let mut header = self.header(&meta);

        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                header.set_entry_type(EntryType::Link);
                let first = first.clone();
                self.tar
                    .append_link(&mut header, name, first)
                    .map_err(out)?;
                self.stats.entries += 1;
                return Ok(());
            }
            self.links.insert(key, name.to_path_buf());
        }

        let size = meta.len();
        header.set_entry_type(EntryType::Regular);
        header.set_size(size);
        // With an empty body `append_data` writes only the header records (long-name records
        // included); the body follows directly below, in large writes.
        self.tar
            .append_data(&mut header, name, io::empty())
            .map_err(out)?;
        let copied = self.copy_body(&file, size).map_err(|e| match e {
            BodyError::Read(e) => unreadable(e),
            BodyError::Write(e) => out(e),
        })?;
        self.stats.entries += 1;
        self.stats.files += 1;
        self.stats.file_bytes += size;

        if copied < size {
            self.warn(
                path,
                &format!(
                    "shrank from {size} to {copied} bytes while being read; padded with zeros"
                ),
            );
        } else {
            let mut probe = [0u8; 1];
            let grew = matches!((&file).read(&mut probe), Ok(n) if n > 0);
            let now = file.metadata().map_err(unreadable)?;
            if grew || now.len() != size {
                self.warn(
                    path,
                    &format!("grew while being read; stored its first {size} bytes"),
                );
            } else if (now.mtime(), now.mtime_nsec()) != (meta.mtime(), meta.mtime_nsec()) {
                self.warn(path, "file changed as we read it");
            }
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of `file` into the archive, padding with zeros if the file
    /// is shorter now, plus the padding to the next 512-byte block. Returns the bytes read.
    fn copy_body(&mut self, mut file: &File, size: u64) -> Result<u64, BodyError> {
        let out = self.tar.get_mut();
        let mut copied = 0u64;
        while copied < size {
            let want = (size - copied).min(self.buf.len() as u64) as usize;
            let n = match file.read(&mut self.buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BodyError::Read(e)),
            };
            out.write_all(&self.buf[..n]).map_err(BodyError::Write)?;
            copied += n as u64;
            self.progress.add_read(n as u64);
        }
        let zeros = (size - copied) + (BLOCK - size % BLOCK) % BLOCK;
        write_zeros(out, zeros).map_err(BodyError::Write)?;
        Ok(copied)
    }

    /// A symlink record whose target is stored byte for byte (the tar crate's own
    /// `append_link` normalises it as a path: `/` became `//`, `a/./b` became `a/b`).
    /// Targets over 100 bytes go first in a GNU long-link record, as GNU tar writes them.
    fn append_symlink(&mut self, mut header: Header, name: &Path, target: &[u8]) -> io::Result<()> {
        const FIELD: usize = 100;
        if target.len() > FIELD {
            let mut long = Header::new_gnu();
            long.as_gnu_mut().expect("a GNU header").name[..13].copy_from_slice(b"././@LongLink");
            long.set_mode(0o644);
            long.set_entry_type(EntryType::GNULongLink);
            let data = [target, b"\0"].concat();
            long.set_size(data.len() as u64);
            long.set_cksum();
            self.tar.append(&long, data.as_slice())?;
        }
        let field = &mut header.as_gnu_mut().expect("a GNU header").linkname;
        let n = target.len().min(FIELD);
        field.fill(0);
        field[..n].copy_from_slice(&target[..n]);
        header.set_entry_type(EntryType::Symlink);
        self.tar.append_data(&mut header, name, io::empty())
    }

    /// A GNU header with mode, owner (numeric and named) and mtime of `meta`.
    fn header(&mut self, meta: &Metadata) -> Header {
        let mut h = Header::new_gnu();
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
        set_mtime(&mut h, meta.mtime());
        h.set_size(0);
        // Names longer than the header field are left out; the numeric id is always there.
        if let Some(user) = cached_name(&mut self.users, meta.uid(), |id| {
            User::from_uid(Uid::from_raw(id)).ok()?.map(|u| u.name)
        }) {
            let _ = h.set_username(user);
        }
        if let Some(group) = cached_name(&mut self.groups, meta.gid(), |id| {
            Group::from_gid(Gid::from_raw(id)).ok()?.map(|g| g.name)
        }) {
            let _ = h.set_groupname(group);
        }
        h
    }
}

/// The mtime field; a time before 1970 in GNU's base-256 form (two's complement, the
/// leading byte 0xff), which GNU tar and bsdtar read back.
fn set_mtime(h: &mut Header, secs: i64) {
    match u64::try_from(secs) {
        Ok(secs) => h.set_mtime(secs),
        Err(_) => {
            let field = &mut h.as_gnu_mut().expect("a GNU header").mtime;
            field[..4].fill(0xff);
            field[4..].copy_from_slice(&secs.to_be_bytes());
        }
    }
}

/// Looks an id's name up once per run; ids without a name are remembered too.
fn cached_name(
    cache: &mut HashMap<u32, Option<String>>,
    id: u32,
    lookup: impl FnOnce(u32) -> Option<String>,
) -> Option<&str> {
    cache.entry(id).or_insert_with(|| lookup(id)).as_deref()
}

enum BodyError {
    Read(io::Error),
    Write(io::Error),
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> io::Result<()> {
    const ZEROS: [u8; 8192] = [0; 8192];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// The name an absolute path gets inside the archive: relative to `/`, as the reference
/// stores it (`/backup/app/db` -> `backup/app/db`).
pub(crate) fn archive_name(path: &Path) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    let trimmed = bytes
        .iter()
        .position(|&b| b != b'/')
        .map_or(&[][..], |i| &bytes[i..]);
    PathBuf::from(OsStr::from_bytes(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_relative_to_root() {
        assert_eq!(
            archive_name(Path::new("/backup/a/b")),
            Path::new("backup/a/b")
        );
        assert_eq!(archive_name(Path::new("//x")), Path::new("x"));
        assert_eq!(archive_name(Path::new("/")), Path::new(""));
    }
}
