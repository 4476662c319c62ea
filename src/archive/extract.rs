//! Safe extraction of a tar stream into a target folder, as the backup stored it.
//!
//! Every entry is created relative to an open handle on the target, one path component at a
//! time with `O_NOFOLLOW`, so nothing is ever written through a symlink (one in the archive
//! or one already in the target) and nothing lands outside the target. Refused, and
//! reported (never silently skipped): absolute names, `..`, a path through a symlink, a hard
//! link to something outside the archive, device nodes and FIFOs without root, sparse or
//! unknown entry types. Symlinks are created last, so no entry can be written through one
//! the archive created; folders get their mode and time last, deepest first, so a read-only
//! folder still receives its contents.
//!
//! Metadata as stored: mode (setuid/setgid only as root), numeric owner (only as root: like
//! `tar --numeric-owner`, since names inside the dunnage container mean nothing), mtime of
//! files, folders and symlinks, hard links as hard links, empty folders.
//!
//! Limits against decompression bombs: the content bytes and the number of entries (from the
//! manifest, or the target's free space) are checked before anything is written past them.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags, mkdirat, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

/// Copy buffer for file contents.
const COPY_BUF: usize = 256 << 10;

/// How to extract.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Leading path components to drop from every name (`--strip-components`).
    pub strip_components: usize,
    /// Replace files that exist in the target (else an existing name is an error).
    pub overwrite: bool,
    /// Most content bytes to write.
    pub max_bytes: Option<u64>,
    /// Most entries to create.
    pub max_entries: Option<u64>,
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Entries read from the archive.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Entries not restored, each with the reason.
    pub refused: Vec<String>,
    /// Things restored differently than stored (ownership without root, ...), once each.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("cannot open the target folder {}: {source}", path.display())]
    Target { path: PathBuf, source: io::Error },
    #[error("reading the archive failed: {0}")]
    Read(io::Error),
    #[error("writing {path} failed: {source}")]
    Write { path: String, source: io::Error },
    #[error("{0}; stopped before writing more (a damaged archive or a decompression bomb)")]
    Limit(String),
}

/// A name inside the target: its components, already checked.
#[derive(Debug, Clone)]
struct RelPath(Vec<Vec<u8>>);

impl RelPath {
    fn show(&self) -> String {
        String::from_utf8_lossy(&self.0.join(&b'/')).into_owned()
    }

    fn split(&self) -> (&[Vec<u8>], &OsStr) {
        let (leaf, parents) = self.0.split_last().expect("never empty");
        (parents, OsStr::from_bytes(leaf))
    }
}

/// Turns a stored name into components: absolute names and `..` are refused; `.` and empty
/// components dropped; then `strip` leading components removed (`None`: nothing left).
fn sanitize(raw: &[u8], strip: usize) -> Result<Option<RelPath>, String> {
    if raw.starts_with(b"/") {
        return Err("an absolute name".into());
    }
    let mut parts = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("a name with '..'".into()),
            c => parts.push(c.to_vec()),
        }
    }
    if parts.len() <= strip {
        return Ok(None);
    }
    Ok(Some(RelPath(parts.split_off(strip))))
}

/// Stored attributes applied after contents.
struct Attrs {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
}

struct Extractor<'a> {
    root: OwnedFd,
    opts: &'a Options,
    root_user: bool,
    report: Report,
    /// Regular files written, for hard links to them.
    written: std::collections::HashSet<Vec<Vec<u8>>>,
    symlinks: Vec<(RelPath, Vec<u8>, Attrs)>,
    late_links: Vec<(RelPath, RelPath)>,
    dirs: Vec<(RelPath, Attrs)>,
    buf: Vec<u8>,
    /// The last parent folder opened, by its components.
    parent: Option<(Vec<Vec<u8>>, OwnedFd)>,
    stripped_setid: bool,
}

/// Extracts the tar stream `tar` into `target` (which must exist).
pub fn extract(tar: impl Read, target: &Path, opts: &Options) -> Result<Report, ExtractError> {
    let root = openat(
        nix::fcntl::AT_FDCWD,
        target,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ExtractError::Target {
        path: target.to_path_buf(),
        source: e.into(),
    })?;
    let mut x = Extractor {
        root,
        opts,
        root_user: Uid::effective().is_root(),
        report: Report::default(),
        written: Default::default(),
        symlinks: Vec::new(),
        late_links: Vec::new(),
        dirs: Vec::new(),
        buf: vec![0; COPY_BUF],
        parent: None,
        stripped_setid: false,
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(ExtractError::Read)? {
        let entry = entry.map_err(ExtractError::Read)?;
        x.entry(entry)?;
    }
    x.finish()
}

impl Extractor<'_> {
    fn refuse(&mut self, name: &str, why: impl std::fmt::Display) {
        tracing::warn!("not restored: {name}: {why}");
        self.report.refused.push(format!("{name}: {why}"));
    }

    fn note(&mut self, note: &str) {
        if !self.report.notes.iter().any(|n| n == note) {
            self.report.notes.push(note.to_owned());
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ExtractError> {
        self.report.entries += 1;
        if let Some(max) = self.opts.max_entries
            && self.report.entries > max
        {
            return Err(ExtractError::Limit(format!(
                "the archive holds more than {max} entries"
            )));
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let path = match sanitize(&raw, self.opts.strip_components) {
            Ok(Some(path)) => path,
            Ok(None) => return Ok(()),
            Err(why) => {
                self.refuse(&shown, why);
                return Ok(());
            }
        };
        let header = entry.header().clone();
        let attrs = Attrs {
            mode: header.mode().unwrap_or(0o644),
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            mtime: mtime_of(&header),
        };
        let kind = header.entry_type();
        if matches!(kind, EntryType::Regular | EntryType::Continuous) {
            return self.file(&path, &attrs, &mut entry);
        }
        let outcome = match kind {
            EntryType::Directory => self.directory(path, attrs),
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.symlinks.push((path, target, attrs));
                Ok(())
            }
            EntryType::Link => {
                self.hard_link(path, entry.link_name_bytes().map(|t| t.into_owned()))
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.special(&path, kind, &attrs, &header)
            }
            EntryType::XGlobalHeader => Ok(()),
            other => Err(format!(
                "an entry of type {other:?}, which dunnage does not restore"
            )),
        };
        if let Err(why) = outcome {
            self.refuse(&shown, why);
        }
        Ok(())
    }

    /// Opens (creating when asked) the folder holding `path`'s leaf, never following a
    /// symlink on the way.
    fn parent_of(&mut self, parents: &[Vec<u8>], create: bool) -> Result<&OwnedFd, String> {
        let cached = self.parent.as_ref().is_some_and(|(p, _)| p == parents);
        if !cached {
            let mut fd: Option<OwnedFd> = None;
            for (depth, c) in parents.iter().enumerate() {
                let dir = fd.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
                let name = OsStr::from_bytes(c);
                let flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let opened = match openat(dir, name, flags, Mode::empty()) {
                    Err(Errno::ENOENT) if create => {
                        mkdirat(dir, name, Mode::from_bits_truncate(0o755))
                            .or_else(|e| if e == Errno::EEXIST { Ok(()) } else { Err(e) })
                            .and_then(|()| openat(dir, name, flags, Mode::empty()))
                    }
                    other => other,
                };
                let shown = || String::from_utf8_lossy(&parents[..=depth].join(&b'/')).into_owned();
                fd = Some(opened.map_err(|e| match e {
                    Errno::ELOOP | Errno::ENOTDIR => {
                        format!(
                            "{} is not a folder (a symlink or file); nothing is written through it",
                            shown()
                        )
                    }
                    e => format!("cannot open the folder {}: {e}", shown()),
                })?);
            }
            let fd = match fd {
                Some(fd) => fd,
                None => self.root.try_clone().map_err(|e| e.to_string())?,
            };
            self.parent = Some((parents.to_vec(), fd));
        }
        Ok(&self.parent.as_ref().expect("just set").1)
    }

    /// Clears the way for a new entry named `leaf`: with `overwrite` an existing non-folder
    /// is removed; else an existing name is refused.
    fn make_room(&mut self, parents: &[Vec<u8>], leaf: &OsStr) -> Result<(), String> {
        let overwrite = self.opts.overwrite;
        let dir = self.parent_of(parents, true)?;
        match nix::sys::stat::fstatat(dir, leaf, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.to_string()),
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
                Err("a folder of that name is in the target".into())
            }
            Ok(_) if overwrite => {
                unlinkat(dir, leaf, UnlinkatFlags::NoRemoveDir).map_err(|e| e.to_string())
            }
            Ok(_) => Err("it exists in the target (restore with --overwrite to replace it)".into()),
        }
    }

    fn directory(&mut self, path: RelPath, attrs: Attrs) -> Result<(), String> {
        let (parents, leaf) = path.split();
        let overwrite = self.opts.overwrite;
        let dir = self.parent_of(parents, true)?;
        match mkdirat(dir, leaf, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.to_string()),
        }
        // Whatever is there now must be a real folder (not a symlink to one).
        let st = nix::sys::stat::fstatat(dir, leaf, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| e.to_string())?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
            if !overwrite {
                return Err("it exists in the target and is not a folder".into());
            }
            unlinkat(dir, leaf, UnlinkatFlags::NoRemoveDir).map_err(|e| e.to_string())?;
            mkdirat(dir, leaf, Mode::from_bits_truncate(0o700)).map_err(|e| e.to_string())?;
        }
        self.dirs.push((path, attrs));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        path: &RelPath,
        attrs: &Attrs,
        body: &mut tar::Entry<'_, R>,
    ) -> Result<(), ExtractError> {
        let size = body.size();
        if let Some(max) = self.opts.max_bytes
            && self.report.bytes + size > max
        {
            return Err(ExtractError::Limit(format!(
                "the archive's files hold more than {max} bytes"
            )));
        }
        let (parents, leaf) = path.split();
        let created = self.make_room(parents, leaf).and_then(|()| {
            let dir = self.parent_of(parents, true)?;
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            openat(dir, leaf, flags, Mode::from_bits_truncate(0o600)).map_err(|e| e.to_string())
        });
        let fd = match created {
            Ok(fd) => fd,
            Err(why) => {
                // The reader skips the unread body by itself.
                self.refuse(&path.show(), why);
                return Ok(());
            }
        };
        let mut file = File::from(fd);
        let written = copy(body, &mut file, &mut self.buf).map_err(|e| match e {
            Copy::Read(e) => ExtractError::Read(e),
            Copy::Write(e) => ExtractError::Write {
                path: path.show(),
                source: e,
            },
        })?;
        self.report.bytes += written;
        self.report.files += 1;
        let mode = self.allowed_mode(attrs.mode);
        let fd = file.as_fd();
        let applied = nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode))
            .and_then(|()| self.chown(fd, None, attrs))
            .and_then(|()| {
                nix::sys::stat::futimens(fd, &TimeSpec::UTIME_OMIT, &TimeSpec::new(attrs.mtime, 0))
            });
        if let Err(e) = applied {
            self.note(&format!("some metadata could not be restored: {e}"));
        }
        self.written.insert(path.0.clone());
        Ok(())
    }

    fn hard_link(&mut self, path: RelPath, target: Option<Vec<u8>>) -> Result<(), String> {
        let target = target.ok_or("a hard link without a target")?;
        let target = sanitize(&target, self.opts.strip_components)
            .map_err(|why| format!("a hard link to {why} (outside the archive)"))?
            .ok_or("a hard link to a stripped name")?;
        if self.written.contains(&target.0) {
            self.link_now(&path, &target)
        } else {
            // To a symlink or something not written yet: after the symlinks.
            self.late_links.push((path, target));
            Ok(())
        }
    }

    fn link_now(&mut self, path: &RelPath, target: &RelPath) -> Result<(), String> {
        let (tparents, tleaf) = target.split();
        let from = self
            .parent_of(tparents, false)?
            .try_clone()
            .map_err(|e| e.to_string())?;
        let (parents, leaf) = path.split();
        self.make_room(parents, leaf)?;
        let dir = self.parent_of(parents, true)?;
        linkat(&from, tleaf, dir, leaf, AtFlags::empty()).map_err(|e| e.to_string())
    }

    fn special(
        &mut self,
        path: &RelPath,
        kind: EntryType,
        attrs: &Attrs,
        header: &tar::Header,
    ) -> Result<(), String> {
        if !self.root_user {
            return Err(format!(
                "a {} needs root to be created",
                match kind {
                    EntryType::Fifo => "FIFO",
                    _ => "device node",
                }
            ));
        }
        let sflag = match kind {
            EntryType::Char => SFlag::S_IFCHR,
            EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let dev = nix::sys::stat::makedev(
            u64::from(header.device_major().ok().flatten().unwrap_or(0)),
            u64::from(header.device_minor().ok().flatten().unwrap_or(0)),
        );
        let (parents, leaf) = path.split();
        self.make_room(parents, leaf)?;
        let dir = self.parent_of(parents, true)?;
        mknodat(dir, leaf, sflag, Mode::from_bits_truncate(attrs.mode), dev)
            .map_err(|e| e.to_string())?;
        let dir = dir.try_clone().map_err(|e| e.to_string())?;
        self.set_attrs(&dir, leaf, attrs, false);
        Ok(())
    }

    /// The mode to set: setuid and setgid only as root.
    fn allowed_mode(&mut self, mode: u32) -> u32 {
        if self.root_user || mode & 0o6000 == 0 {
            return mode & 0o7777;
        }
        self.stripped_setid = true;
        mode & 0o1777
    }

    fn chown(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        leaf: Option<&OsStr>,
        attrs: &Attrs,
    ) -> nix::Result<()> {
        if !self.root_user {
            return Ok(());
        }
        let (uid, gid) = (
            Uid::from_raw(attrs.uid as u32),
            Gid::from_raw(attrs.gid as u32),
        );
        match leaf {
            None => nix::unistd::fchown(fd, Some(uid), Some(gid)),
            Some(leaf) => fchownat(fd, leaf, Some(uid), Some(gid), AtFlags::AT_SYMLINK_NOFOLLOW),
        }
    }

    /// Mode (not for symlinks), owner and mtime of `leaf` in `dir`, without following it.
    fn set_attrs(&mut self, dir: &OwnedFd, leaf: &OsStr, attrs: &Attrs, symlink: bool) {
        let mut result = Ok(());
        if !symlink {
            let mode = self.allowed_mode(attrs.mode);
            result = nix::sys::stat::fchmodat(
                dir,
                leaf,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::NoFollowSymlink,
            )
            .or_else(|e| {
                if e == Errno::EOPNOTSUPP {
                    Ok(())
                } else {
                    Err(e)
                }
            });
        }
        let result = result
            .and_then(|()| self.chown(dir.as_fd(), Some(leaf), attrs))
            .and_then(|()| {
                utimensat(
                    dir,
                    leaf,
                    &TimeSpec::UTIME_OMIT,
                    &TimeSpec::new(attrs.mtime, 0),
                    UtimensatFlags::NoFollowSymlink,
                )
            });
        if let Err(e) = result {
            self.note(&format!("some metadata could not be restored: {e}"));
        }
    }

    fn finish(mut self) -> Result<Report, ExtractError> {
        for (path, target, attrs) in std::mem::take(&mut self.symlinks) {
            let (parents, leaf) = path.split();
            let made = self.make_room(parents, leaf).and_then(|()| {
                let dir = self
                    .parent_of(parents, true)?
                    .try_clone()
                    .map_err(|e| e.to_string())?;
                symlinkat(OsStr::from_bytes(&target), &dir, leaf).map_err(|e| e.to_string())?;
                Ok(dir)
            });
            match made {
                Ok(dir) => self.set_attrs(&dir, leaf, &attrs, true),
                Err(why) => self.refuse(&path.show(), why),
            }
        }
        for (path, target) in std::mem::take(&mut self.late_links) {
            if let Err(why) = self.link_now(&path, &target) {
                self.refuse(
                    &path.show(),
                    format!("hard link to {}: {why}", target.show()),
                );
            }
        }
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.0.len()));
        for (path, attrs) in dirs {
            let (parents, leaf) = path.split();
            match self
                .parent_of(parents, false)
                .and_then(|d| d.try_clone().map_err(|e| e.to_string()))
            {
                Ok(dir) => self.set_attrs(&dir, leaf, &attrs, false),
                Err(why) => self.refuse(&path.show(), why),
            }
        }
        if !self.root_user {
            self.note(
                "owners not restored: not running as root (files belong to the restoring user)",
            );
        }
        if self.stripped_setid {
            self.note("setuid/setgid bits not restored: not running as root");
        }
        Ok(self.report)
    }
}

/// The entry's mtime, also GNU base-256 (negative) values.
fn mtime_of(header: &tar::Header) -> i64 {
    if let Some(gnu) = header.as_gnu() {
        let field = gnu.mtime;
        if field[0] & 0x80 != 0 {
            let mut v: i64 = if field[0] == 0xff { -1 } else { 0 };
            for &b in &field[4..] {
                v = (v << 8) | i64::from(b);
            }
            return v;
        }
    }
    header.mtime().map(|t| t as i64).unwrap_or(0)
}

enum Copy {
    Read(io::Error),
    Write(io::Error),
}

fn copy(from: &mut impl Read, to: &mut File, buf: &mut [u8]) -> Result<u64, Copy> {
    let mut total = 0;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Copy::Write)?;
        total += n as u64;
    }
}
