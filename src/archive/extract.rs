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
    /// Restore owners, device nodes, FIFOs and setuid/setgid bits: only when running as
    /// root ([`Options::new`] sets it from the effective user).
    pub privileged: bool,
}

impl Options {
    /// Options for this process: privileged when running as root.
    pub fn new() -> Self {
        Options {
            privileged: Uid::effective().is_root(),
            ..Default::default()
        }
    }
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

/// What [`Extractor::set_attrs`] applies attributes to.
#[derive(Clone, Copy)]
enum Kind {
    Folder,
    Special,
    Symlink,
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

/// An extraction that stopped, with what it did until then.
#[derive(Debug)]
pub struct Stopped {
    pub error: ExtractError,
    pub report: Report,
}

/// Extracts the tar stream `tar` into `target` (which must exist).
pub fn extract(tar: impl Read, target: &Path, opts: &Options) -> Result<Report, Stopped> {
    let root = openat(
        nix::fcntl::AT_FDCWD,
        target,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Stopped {
        error: ExtractError::Target {
            path: target.to_path_buf(),
            source: e.into(),
        },
        report: Report::default(),
    })?;
    let mut x = Extractor::new(root, opts);
    match x.all(tar) {
        Ok(()) => Ok(x.finish()),
        Err(error) => {
            // What was written stays; symlinks and folder attributes are still applied, so
            // the partial result is what the archive says as far as it went.
            Err(Stopped {
                error,
                report: x.finish(),
            })
        }
    }
}

impl<'a> Extractor<'a> {
    fn new(root: OwnedFd, opts: &'a Options) -> Self {
        Extractor {
            root,
            opts,
            root_user: opts.privileged,
            report: Report::default(),
            written: Default::default(),
            symlinks: Vec::new(),
            late_links: Vec::new(),
            dirs: Vec::new(),
            buf: vec![0; COPY_BUF],
            parent: None,
            stripped_setid: false,
        }
    }

    fn all(&mut self, tar: impl Read) -> Result<(), ExtractError> {
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries().map_err(ExtractError::Read)? {
            let entry = entry.map_err(ExtractError::Read)?;
            self.entry(entry)?;
        }
        Ok(())
    }
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
        // Owner first: chown clears setuid and setgid bits.
        let applied = self
            .chown(fd, None, attrs)
            .and_then(|()| nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode)))
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
        self.set_attrs(&dir, leaf, attrs, Kind::Special);
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

    /// Owner, mode (not for symlinks) and mtime of `leaf` in `dir`, without following it.
    /// Owner first: chown clears setuid and setgid bits.
    fn set_attrs(&mut self, dir: &OwnedFd, leaf: &OsStr, attrs: &Attrs, kind: Kind) {
        let mode = Mode::from_bits_truncate(self.allowed_mode(attrs.mode));
        let mtime = TimeSpec::new(attrs.mtime, 0);
        let result = match kind {
            Kind::Folder => {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                openat(dir, leaf, flags, Mode::empty()).and_then(|fd| {
                    self.chown(fd.as_fd(), None, attrs)
                        .and_then(|()| nix::sys::stat::fchmod(&fd, mode))
                        .and_then(|()| nix::sys::stat::futimens(&fd, &TimeSpec::UTIME_OMIT, &mtime))
                })
            }
            Kind::Special | Kind::Symlink => self
                .chown(dir.as_fd(), Some(leaf), attrs)
                .and_then(|()| match kind {
                    // Just created by mknodat in a folder opened without following links.
                    Kind::Special => {
                        nix::sys::stat::fchmodat(dir, leaf, mode, FchmodatFlags::FollowSymlink)
                    }
                    _ => Ok(()),
                })
                .and_then(|()| {
                    utimensat(
                        dir,
                        leaf,
                        &TimeSpec::UTIME_OMIT,
                        &mtime,
                        UtimensatFlags::NoFollowSymlink,
                    )
                }),
        };
        if let Err(e) = result {
            self.note(&format!("some metadata could not be restored: {e}"));
        }
    }

    fn finish(&mut self) -> Report {
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
                Ok(dir) => self.set_attrs(&dir, leaf, &attrs, Kind::Symlink),
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
                Ok(dir) => self.set_attrs(&dir, leaf, &attrs, Kind::Folder),
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
        std::mem::take(&mut self.report)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A tar stream built record by record, names and link targets written raw (so hostile
    /// names the tar crate's builder refuses can be made).
    #[derive(Default)]
    struct Tar(Vec<u8>);

    impl Tar {
        fn add(
            &mut self,
            kind: EntryType,
            name: &str,
            link: &str,
            body: &[u8],
            mode: u32,
        ) -> &mut Self {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(kind);
            h.set_size(body.len() as u64);
            h.set_mode(mode);
            h.set_mtime(1_000_000_000);
            h.set_cksum();
            self.0.extend_from_slice(h.as_bytes());
            self.0.extend_from_slice(body);
            self.0.resize(self.0.len().div_ceil(512) * 512, 0);
            self
        }
        fn file(&mut self, name: &str, body: &[u8]) -> &mut Self {
            self.add(EntryType::Regular, name, "", body, 0o644)
        }
        fn bytes(&mut self) -> Vec<u8> {
            let mut b = self.0.clone();
            b.extend_from_slice(&[0; 1024]);
            b
        }
    }

    fn run(tar: &[u8], opts: &Options) -> (tempfile::TempDir, Result<Report, Stopped>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("target")).unwrap();
        let result = extract(tar, &dir.path().join("target"), opts);
        (dir, result)
    }

    /// Everything under `dir`, relative, sorted.
    fn tree(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                e.unwrap()
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn hostile_names_are_refused_and_reported_and_nothing_lands_outside() {
        let tar = Tar::default()
            .file("/abs.txt", b"x")
            .file("../up.txt", b"x")
            .file("a/../../up2.txt", b"x")
            .file("ok/fine.txt", b"fine")
            .bytes();
        let (dir, result) = run(&tar, &Options::default());
        let report = result.unwrap();
        assert_eq!(
            tree(dir.path()),
            ["target", "target/ok", "target/ok/fine.txt"]
        );
        assert_eq!(report.refused.len(), 3, "{:?}", report.refused);
        assert!(
            report.refused[0].contains("absolute"),
            "{:?}",
            report.refused
        );
        assert!(report.refused[1].contains(".."), "{:?}", report.refused);
        assert_eq!(report.files, 1);
    }

    #[test]
    fn nothing_is_written_through_a_symlink_from_the_archive_or_the_target() {
        let (dir, _) = run(&[], &Options::default());
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        // The archive makes `evil -> ../outside` and then writes through it.
        let tar = Tar::default()
            .add(EntryType::Symlink, "evil", "../outside", b"", 0o777)
            .file("evil/pwned.txt", b"x")
            .add(EntryType::Symlink, "abs", "/tmp", b"", 0o777)
            .file("abs/pwned.txt", b"x")
            .bytes();
        let target = dir.path().join("target");
        let report = extract(&tar[..], &target, &Options::default()).unwrap();
        assert!(tree(&outside).is_empty(), "{:?}", tree(&outside));
        assert!(!Path::new("/tmp/pwned.txt").exists());
        // The files went into real folders; the symlinks could not replace them: reported.
        assert!(target.join("evil").is_dir() && !target.join("evil").is_symlink());
        assert_eq!(report.refused.len(), 2, "{:?}", report.refused);
        // A symlink already in the target is never followed either, even with --overwrite.
        let second = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&outside, second.path().join("evil")).unwrap();
        let tar = Tar::default().file("evil/pwned.txt", b"x").bytes();
        let opts = Options {
            overwrite: true,
            ..Default::default()
        };
        let report = extract(&tar[..], second.path(), &opts).unwrap();
        assert!(tree(&outside).is_empty());
        assert!(
            report.refused[0].contains("not a folder"),
            "{:?}",
            report.refused
        );
    }

    #[test]
    fn hard_links_outside_the_archive_are_refused_and_inside_ones_made() {
        let tar = Tar::default()
            .file("data/a.txt", b"content")
            .add(EntryType::Link, "data/b.txt", "data/a.txt", b"", 0o644)
            .add(
                EntryType::Link,
                "data/passwd",
                "../../etc/passwd",
                b"",
                0o644,
            )
            .add(EntryType::Link, "data/root", "/etc/passwd", b"", 0o644)
            .bytes();
        let (dir, result) = run(&tar, &Options::default());
        let report = result.unwrap();
        let target = dir.path().join("target");
        let a = std::fs::metadata(target.join("data/a.txt")).unwrap();
        let b = std::fs::metadata(target.join("data/b.txt")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert!(!target.join("data/passwd").exists() && !target.join("data/root").exists());
        assert_eq!(report.refused.len(), 2, "{:?}", report.refused);
    }

    #[test]
    fn devices_and_fifos_need_root_and_setuid_bits_are_dropped_without_it() {
        let tar = Tar::default()
            .add(EntryType::Char, "null", "", b"", 0o666)
            .add(EntryType::Fifo, "pipe", "", b"", 0o644)
            .add(EntryType::Regular, "suid", "", b"x", 0o4755)
            .bytes();
        let (dir, result) = run(&tar, &Options::default());
        let report = result.unwrap();
        assert_eq!(report.refused.len(), 2);
        let mode = std::fs::metadata(dir.path().join("target/suid"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert!(
            report.notes.iter().any(|n| n.contains("setuid")),
            "{:?}",
            report.notes
        );
        if Uid::effective().is_root() {
            // Privileged, they are made as stored.
            let opts = Options {
                privileged: true,
                ..Default::default()
            };
            let (dir, result) = run(&tar, &opts);
            assert!(result.unwrap().refused.is_empty());
            use std::os::unix::fs::FileTypeExt;
            let target = dir.path().join("target");
            assert!(
                std::fs::symlink_metadata(target.join("pipe"))
                    .unwrap()
                    .file_type()
                    .is_fifo()
            );
            assert!(
                std::fs::symlink_metadata(target.join("null"))
                    .unwrap()
                    .file_type()
                    .is_char_device()
            );
            let mode = std::fs::metadata(target.join("suid"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o4755);
        }
    }

    fn stopped_at_a_limit(result: &Result<Report, Stopped>) -> bool {
        matches!(
            result,
            Err(Stopped {
                error: ExtractError::Limit(_),
                ..
            })
        )
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let big = vec![0u8; 10_000];
        let tar = Tar::default()
            .file("a", &big)
            .file("b", &big)
            .file("c", &big)
            .bytes();
        let opts = Options {
            max_bytes: Some(15_000),
            ..Default::default()
        };
        let (dir, result) = run(&tar, &opts);
        assert!(stopped_at_a_limit(&result), "{result:?}");
        // The entry that would pass the limit was never created.
        assert_eq!(tree(&dir.path().join("target")), ["a"]);
        let opts = Options {
            max_entries: Some(2),
            ..Default::default()
        };
        let (_, result) = run(&tar, &opts);
        assert!(stopped_at_a_limit(&result), "{result:?}");
    }

    #[test]
    fn an_existing_file_needs_overwrite_and_then_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"old").unwrap();
        let tar = Tar::default().file("f", b"new").bytes();
        let report = extract(&tar[..], dir.path(), &Options::default()).unwrap();
        assert_eq!(report.refused.len(), 1);
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"old");
        let opts = Options {
            overwrite: true,
            ..Default::default()
        };
        let report = extract(&tar[..], dir.path(), &opts).unwrap();
        assert!(report.refused.is_empty());
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
    }

    #[test]
    fn strip_components_and_sanitize() {
        assert_eq!(sanitize(b"a/./b//c", 0).unwrap().unwrap().show(), "a/b/c");
        assert_eq!(
            sanitize(b"backup/app/x", 1).unwrap().unwrap().show(),
            "app/x"
        );
        assert!(sanitize(b"backup", 1).unwrap().is_none());
        assert!(sanitize(b"a/../b", 0).is_err());
        assert!(sanitize(b"/a", 0).is_err());
    }

    #[test]
    fn mtimes_before_1970_are_read_back() {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().mtime[..4].fill(0xff);
        h.as_gnu_mut().unwrap().mtime[4..].copy_from_slice(&(-315_619_200i64).to_be_bytes());
        assert_eq!(mtime_of(&h), -315_619_200);
        h.set_mtime(1_700_000_000);
        assert_eq!(mtime_of(&h), 1_700_000_000);
    }
}
