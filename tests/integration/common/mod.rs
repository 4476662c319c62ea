//! Helpers shared by the integration tests: run the real binary, build source trees, extract
//! archives with the system `tar` and compare the result with the source.

pub mod docker;
pub mod fake;
pub mod http;
pub mod remote;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Checks `ready` until it holds; fails naming `what` after `limit`. Limits are generous: a
/// loaded host is slow, and only a broken one waits them out.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The `dunnage` binary with a clean environment: only what the test sets is seen.
pub fn dunnage() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dunnage"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TZ", "UTC")
        .env("RUST_LOG", "info");
    cmd
}

/// A source folder and an archive folder in one temporary directory.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub out: PathBuf,
}

impl Setup {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let out = tmp.path().join("archive");
        fs::create_dir(&src).unwrap();
        fs::create_dir(&out).unwrap();
        Setup { tmp, src, out }
    }

    /// `dunnage backup` with sources and archive folder pointing here.
    pub fn backup(&self) -> Command {
        let mut cmd = dunnage();
        cmd.arg("backup")
            .env("BACKUP_SOURCES", &self.src)
            .env("BACKUP_ARCHIVE", &self.out)
            .env("BACKUP_LOCK_FILE", self.tmp.path().join("lock"))
            .env("BACKUP_STATE_DIR", self.tmp.path().join("state"));
        // A test's own conf.d once it made one; otherwise none (a BACKUP_CONF_DIR naming a
        // missing folder is an error).
        let conf = self.tmp.path().join("conf.d");
        if conf.is_dir() {
            cmd.env("BACKUP_CONF_DIR", conf);
        } else {
            cmd.env_remove("BACKUP_CONF_DIR");
        }
        cmd
    }

    /// `dunnage ARGS` with the same environment as [`Setup::backup`].
    pub fn command(&self, args: &[&str]) -> Command {
        let template = self.backup();
        let mut cmd = same_env(&template, template.get_program());
        cmd.args(args);
        cmd
    }

    /// Names in the archive folder, hidden ones included, sorted; manifests left out.
    pub fn archive_names(&self) -> Vec<String> {
        let mut names = self.all_names();
        names.retain(|n| !n.ends_with(".sha256"));
        names
    }

    /// Names in the archive folder, hidden ones and manifests included, sorted.
    pub fn all_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The one archive in the archive folder.
    pub fn only_archive(&self) -> PathBuf {
        let names = self.archive_names();
        assert_eq!(
            names.len(),
            1,
            "expected exactly one archive, found {names:?}"
        );
        self.out.join(&names[0])
    }
}

/// `program` with exactly the environment `template` would run with, and no arguments.
pub fn same_env(template: &Command, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .envs(template.get_envs().filter_map(|(k, v)| Some((k, v?))));
    cmd
}

/// Sends `signal` to a child process.
pub fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run dunnage");
    eprintln!(
        "--- {:?} exit {:?}\n{}",
        cmd.get_program(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(path: &Path, data: &[u8], mode: u32, mtime: u64) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(path, mtime);
}

pub fn set_mtime(path: &Path, secs: u64) {
    let f = fs::File::open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// Deterministic, moderately compressible bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 3 == 0 {
                b'a' + (x % 7) as u8
            } else {
                x as u8
            }
        })
        .collect()
}

/// Fills `root` with every kind of entry the archive must preserve.
pub fn build_rich_tree(root: &Path) {
    let sub = root.join("app_data");
    fs::create_dir_all(sub.join("nested/deeper")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();

    write(&root.join("plain.txt"), b"hello\n", 0o644, 1_600_000_000);
    write(&root.join("zero-bytes"), b"", 0o600, 1_600_000_001);
    write(
        &root.join("exactly-512"),
        &[b'x'; 512],
        0o640,
        1_600_000_002,
    );
    write(
        &sub.join("db.sqlite"),
        &pseudo_random(3 << 20, 7),
        0o600,
        1_650_000_000,
    );
    write(
        &sub.join("run.sh"),
        b"#!/bin/sh\necho hi\n",
        0o755,
        1_650_000_001,
    );
    write(
        &sub.join("nested/deeper/setuid"),
        b"s",
        0o4755,
        1_650_000_002,
    );

    // Hard links: three names, one inode; they must come back as one inode.
    write(
        &sub.join("linked-a"),
        b"shared content\n",
        0o644,
        1_660_000_000,
    );
    fs::hard_link(sub.join("linked-a"), sub.join("nested/linked-b")).unwrap();
    fs::hard_link(sub.join("linked-a"), root.join("linked-c")).unwrap();

    // Symlinks are stored, never followed: relative, absolute, dangling, to a folder.
    symlink("plain.txt", root.join("link-rel")).unwrap();
    symlink("/etc/hostname", root.join("link-abs")).unwrap();
    symlink("does/not/exist", root.join("link-dangling")).unwrap();
    symlink("app_data", root.join("link-dir")).unwrap();

    // Long names (GNU long-name records) and a long symlink target.
    let long_dir = root.join("d".repeat(120));
    fs::create_dir(&long_dir).unwrap();
    write(
        &long_dir.join("f".repeat(200)),
        b"long",
        0o644,
        1_670_000_000,
    );
    symlink("t".repeat(180), root.join("link-long-target")).unwrap();
    // Targets are stored byte for byte, not as normalised paths.
    symlink("/", root.join("link-root")).unwrap();
    symlink("a/./b//c/", root.join("link-unnormal")).unwrap();
    symlink(
        format!("{}/./", "u".repeat(120)),
        root.join("link-long-unnormal"),
    )
    .unwrap();

    // A file from before 1970: a negative modification time.
    write(&root.join("from-1960"), b"old", 0o644, 0);
    fs::File::open(root.join("from-1960"))
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH - Duration::from_secs(315_619_200))
        .unwrap();

    // A name that is not UTF-8.
    write(
        &root.join(OsStr::from_bytes(b"caf\xe9-latin1.txt")),
        b"bytes",
        0o644,
        1_670_000_001,
    );

    // Special files: a FIFO is stored as a header; a socket is skipped.
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o620),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();

    if is_root() {
        nix::sys::stat::mknod(
            &root.join("null-device"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        std::os::unix::fs::chown(sub.join("db.sqlite"), Some(999), Some(998)).unwrap();
        std::os::unix::fs::lchown(root.join("link-rel"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(root.join("empty"), Some(4321), Some(0)).unwrap();
    }

    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o2750)).unwrap();
    // Folder mtimes last, after their contents stopped changing.
    set_mtime(&sub.join("nested/deeper"), 1_680_000_000);
    set_mtime(&sub.join("nested"), 1_680_000_001);
    set_mtime(&root.join("empty"), 1_680_000_002);
    set_mtime(&sub, 1_680_000_003);
}

/// The system tar, with the decompression flag `archive`'s extension asks for.
pub fn tar(archive: &Path) -> Command {
    let name = archive.to_string_lossy();
    let mut cmd = Command::new("tar");
    if name.ends_with(".gz") {
        cmd.arg("-z");
    } else if name.ends_with(".zst") {
        cmd.arg("--zstd");
    }
    cmd
}

/// Extracts `archive` into `dest` with the system tar, as a restoring operator would.
pub fn extract(archive: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let mut cmd = tar(archive);
    cmd.args(["-x", "-p", "--numeric-owner"]);
    if is_root() {
        cmd.arg("--same-owner");
    }
    let out = cmd
        .arg("-f")
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -x failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lists entry names with the system tar.
pub fn list(archive: &Path) -> Vec<String> {
    let out = tar(archive).arg("-tf").arg(archive).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect()
}

/// Where `path` (absolute, below the source) lands when extracted under `dest`.
pub fn extracted(dest: &Path, path: &Path) -> PathBuf {
    dest.join(path.strip_prefix("/").unwrap())
}

/// Asserts the extracted copy of `src` under `dest` equals it: same entries, and for each its
/// type, permission bits, owner, mtime, content, symlink target, device number and
/// hard-link identity. Sockets are expected to be absent. `skip` names source paths that
/// must be absent from the extraction (excluded ones).
pub fn assert_same_tree(src: &Path, dest: &Path, skip: &[&Path]) {
    let mut src_inodes: HashMap<u64, PathBuf> = HashMap::new();
    let mut expected = BTreeMap::new();
    for entry in walkdir::WalkDir::new(src).sort_by_file_name() {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = entry.metadata().unwrap();
        let copy = extracted(dest, path);
        if skip.iter().any(|s| path.starts_with(s)) || meta.file_type().is_socket() {
            assert!(
                fs::symlink_metadata(&copy).is_err(),
                "{} should not be in the archive",
                path.display()
            );
            continue;
        }
        let got = fs::symlink_metadata(&copy)
            .unwrap_or_else(|e| panic!("{} missing from the archive: {e}", path.display()));
        let ft = meta.file_type();
        let what = path.display();
        assert_eq!(got.file_type(), ft, "type of {what}");
        assert_eq!(
            (got.uid(), got.gid()),
            (meta.uid(), meta.gid()),
            "owner of {what}"
        );
        if ft.is_symlink() {
            // As bytes: Path equality ignores `.` and repeated slashes.
            assert_eq!(
                fs::read_link(&copy).unwrap().as_os_str(),
                fs::read_link(path).unwrap().as_os_str(),
                "{what}"
            );
        } else {
            assert_eq!(got.mode() & 0o7777, meta.mode() & 0o7777, "mode of {what}");
            assert_eq!(got.mtime(), meta.mtime(), "mtime of {what}");
        }
        if ft.is_file() {
            assert!(
                fs::read(&copy).unwrap() == fs::read(path).unwrap(),
                "content of {what}"
            );
            if meta.nlink() > 1 {
                match src_inodes.get(&meta.ino()) {
                    Some(first) => {
                        let first_copy = fs::metadata(extracted(dest, first)).unwrap();
                        assert_eq!(got.ino(), first_copy.ino(), "{what} is a hard link");
                    }
                    None => {
                        src_inodes.insert(meta.ino(), path.to_path_buf());
                    }
                }
            }
        }
        if ft.is_char_device() || ft.is_block_device() {
            assert_eq!(got.rdev(), meta.rdev(), "device number of {what}");
        }
        expected.insert(copy, ());
    }
    // Nothing extra: every extracted entry below the source's copy has a source.
    let root_copy = extracted(dest, src);
    for entry in walkdir::WalkDir::new(&root_copy) {
        let p = entry.unwrap().into_path();
        assert!(
            expected.contains_key(&p),
            "unexpected {} in the archive",
            p.display()
        );
    }
}

use std::os::unix::fs::FileTypeExt;

/// Kills a long-running child (a scheduler) when the test panics before it stopped it, so
/// a failed test never leaves a scheduler running on after the test binary.
pub struct KillOnPanic(pub u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let pid = nix::unistd::Pid::from_raw(self.0 as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}
