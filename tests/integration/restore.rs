//! Getting backups back: manifests, split archives, `verify` and `restore`, against every
//! destination, encrypted and not, with damaged and hostile archives.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::remote::{Azure, S3, env, serial, sources_with_random, stdout, unique};
use crate::common::*;
use crate::encryption::keygen;

/// `--strip-components` that takes a `--target` restore back to the source's own names.
fn depth(src: &Path) -> String {
    (src.components().count() - 1).to_string()
}

/// Every remote destination at once, each in a folder of its own; the Dropbox fake stores
/// into `dropbox_root`/rst, the Google Drive fake into its `backups` folder.
pub(crate) struct All {
    pub s3: S3,
    pub azure: Azure,
    pub bucket: String,
    pub container: String,
    pub dav_folder: String,
    pub sftp_folder: PathBuf,
    pub dropbox_root: tempfile::TempDir,
    dropbox: crate::dropbox::Fake,
    /// Kept for the fake's lifetime (it stores into it).
    _gdrive_root: tempfile::TempDir,
    pub gdrive: crate::gdrive::Fake,
}

impl All {
    pub fn new() -> All {
        let (s3, azure) = (S3::from_env(), Azure::from_env());
        let (bucket, container) = (s3.bucket(), azure.container());
        let dropbox_root = tempfile::tempdir().unwrap();
        let dropbox = crate::dropbox::Fake::start(dropbox_root.path());
        let gdrive_root = tempfile::tempdir().unwrap();
        let gdrive = crate::gdrive::Fake::start(gdrive_root.path());
        All {
            s3,
            azure,
            bucket,
            container,
            dav_folder: unique("rst"),
            sftp_folder: PathBuf::from(env("DUNNAGE_TEST_SSH_ROOT")).join(unique("rst")),
            dropbox_root,
            dropbox,
            _gdrive_root: gdrive_root,
            gdrive,
        }
    }

    pub fn configure(&self, cmd: &mut Command) {
        self.s3.configure(cmd, &self.bucket, "");
        self.azure.configure(cmd, &self.container, "");
        self.dropbox.configure(cmd, "/rst");
        self.gdrive.configure(cmd, "backups");
        cmd.env("AWS_PART_SIZE", "5")
            .env("AZURE_STORAGE_BLOCK_SIZE", "4")
            .env("WEBDAV_URL", env("DUNNAGE_TEST_WSGIDAV_URL"))
            .env("WEBDAV_PATH", &self.dav_folder)
            .env("WEBDAV_USERNAME", env("DUNNAGE_TEST_DAV_USER"))
            .env("WEBDAV_PASSWORD", env("DUNNAGE_TEST_DAV_PASSWORD"))
            .env("SSH_HOST_NAME", "127.0.0.1")
            .env("SSH_PORT", env("DUNNAGE_TEST_SSH_PORT"))
            .env("SSH_USER", env("DUNNAGE_TEST_SSH_USER"))
            .env("SSH_PASSWORD", env("DUNNAGE_TEST_SSH_PASSWORD"))
            .env("SSH_IDENTITY_FILE", "")
            .env("SSH_REMOTE_PATH", &self.sftp_folder)
            .env(
                "SSH_HOST_KEY_FINGERPRINT",
                env("DUNNAGE_TEST_SSH_FINGERPRINT"),
            );
    }
}

const DESTINATIONS: [&str; 7] = [
    "local",
    "s3",
    "azure",
    "webdav",
    "sftp",
    "dropbox",
    "googledrive",
];

#[test]
fn every_destination_restores_and_verifies_split_encrypted_and_plain() {
    let _serial = serial();
    let s = Setup::new();
    sources_with_random(&s, 12, 16);
    let (identity, public) = keygen(s.tmp.path());
    let all = All::new();
    let variants: [(&str, &[(&str, &str)]); 2] = [
        (
            "split, age",
            &[
                ("BACKUP_SPLIT_SIZE", "5MiB"),
                ("AGE_PUBLIC_KEYS", &public),
                ("BACKUP_COMPRESSION", "zst"),
                ("BACKUP_FILENAME", "split-%Y%m%dT%H%M%S.{{ .Extension }}"),
            ],
        ),
        (
            "one file, plain",
            &[
                ("BACKUP_COMPRESSION", "gz"),
                ("BACKUP_FILENAME", "plain-%Y%m%dT%H%M%S.{{ .Extension }}"),
            ],
        ),
    ];
    for (variant, settings) in variants {
        let mut cmd = s.backup();
        all.configure(&mut cmd);
        cmd.envs(settings.iter().copied())
            .env("AGE_IDENTITIES_FILE", &identity);
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{variant}: {}", stderr(&out));
        for from in DESTINATIONS {
            let mut verify = s.command(&["verify", "latest", "--from", from, "--level", "read"]);
            all.configure(&mut verify);
            verify
                .envs(settings.iter().copied())
                .env("AGE_IDENTITIES_FILE", &identity);
            let out = run(&mut verify);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{variant} verify from {from}: {}{}",
                stdout(&out),
                stderr(&out)
            );
            assert!(
                stdout(&out).contains("all as the manifest says"),
                "{}",
                stdout(&out)
            );

            let target = s
                .tmp
                .path()
                .join(format!("restored-{from}-{}", variant.len()));
            let mut restore = s.command(&[
                "restore",
                "latest",
                "--from",
                from,
                "--target",
                target.to_str().unwrap(),
            ]);
            all.configure(&mut restore);
            restore
                .envs(settings.iter().copied())
                .env("AGE_IDENTITIES_FILE", &identity);
            let out = run(&mut restore);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{variant} restore from {from}: {}{}",
                stdout(&out),
                stderr(&out)
            );
            assert_same_tree(&s.src, &target, &[]);
        }
    }
    // By hand: the manifest checks with sha256sum, the parts join with cat.
    let names = s.all_names();
    let manifest = names
        .iter()
        .find(|n| n.starts_with("split-") && n.ends_with(".sha256"))
        .unwrap();
    let check = Command::new("sha256sum")
        .args(["-c", "--strict", manifest])
        .current_dir(&s.out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let parts: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("split-") && !n.ends_with(".sha256"))
        .collect();
    assert_eq!(
        parts.len(),
        3,
        "12 MiB of random data in 5 MiB parts: {names:?}"
    );
    let by_hand = s.tmp.path().join("by-hand");
    fs::create_dir(&by_hand).unwrap();
    let shell = format!(
        "cat {}/split-*.tar.zst.age.0* | age -d -i {} | tar --zstd -x -C {}",
        s.out.display(),
        identity.display(),
        by_hand.display()
    );
    let out = Command::new("sh").args(["-c", &shell]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&s.src, &by_hand, &[]);
    // Every remote destination holds the same parts and manifest.
    let dav = PathBuf::from(env("DUNNAGE_TEST_WSGIDAV_ROOT")).join(&all.dav_folder);
    for name in names.iter().filter(|n| n.starts_with("split-")) {
        let local = fs::read(s.out.join(name)).unwrap();
        assert!(fs::read(dav.join(name)).unwrap() == local, "WebDAV {name}");
        assert!(
            fs::read(all.sftp_folder.join(name)).unwrap() == local,
            "SFTP {name}"
        );
    }
    // list counts a set as one backup.
    let mut list = s.command(&["list", "--from", "s3", "--json"]);
    all.configure(&mut list);
    let out = run(&mut list);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["parts"], 3);
    assert_eq!(listed[0]["manifest"], true);
    assert_eq!(listed[0]["verified"]["result"], "ok", "{listed:?}");
}

/// A backup in the local folder; its objects' paths.
fn local_backup(s: &Setup, extra: &[(&str, &str)]) -> Vec<PathBuf> {
    let out = run(s
        .backup()
        .env("BACKUP_COMPRESSION", "zst")
        .envs(extra.iter().copied()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    s.archive_names().iter().map(|n| s.out.join(n)).collect()
}

fn verify(s: &Setup, level: &str, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = run(s
        .command(&["verify", "latest", "--level", level])
        .envs(extra.iter().copied()));
    (out.status.code(), stdout(&out) + &stderr(&out))
}

#[test]
fn verify_catches_a_flipped_byte_and_a_truncated_object() {
    let s = Setup::new();
    sources_with_random(&s, 3, 5);
    let split = [("BACKUP_SPLIT_SIZE", "1MiB")];
    let parts = local_backup(&s, &split);
    assert!(parts.len() >= 4, "{parts:?}");
    let last = parts.len() - 1;
    for level in ["size", "hash", "read"] {
        assert_eq!(
            verify(&s, level, &split).0,
            Some(0),
            "{level} on a good backup"
        );
    }
    // One byte flipped in the second part: same size, other content.
    let mut bytes = fs::read(&parts[1]).unwrap();
    bytes[1000] ^= 0x01;
    fs::write(&parts[1], &bytes).unwrap();
    assert_eq!(verify(&s, "size", &split).0, Some(0), "size cannot see it");
    let (code, text) = verify(&s, "hash", &split);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("DAMAGED") && text.contains(".002: SHA-256"),
        "{text}"
    );
    assert_eq!(verify(&s, "read", &split).0, Some(1));
    // The last part cut short.
    bytes[1000] ^= 0x01;
    fs::write(&parts[1], &bytes).unwrap();
    let cut = fs::read(&parts[last]).unwrap();
    fs::write(&parts[last], &cut[..cut.len() / 2]).unwrap();
    let (code, text) = verify(&s, "size", &split);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("the manifest says"), "{text}");
    // A part gone.
    fs::remove_file(&parts[2]).unwrap();
    let (code, text) = verify(&s, "size", &split);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(".003 is missing"), "{text}");
}

#[test]
fn without_a_manifest_only_reading_checks_and_it_catches_damage_and_bad_mdc() {
    let s = Setup::new();
    sources_with_random(&s, 2, 6);
    // An OpenPGP-encrypted backup, manifest removed (an older run's or the reference's).
    let gpg = [("GPG_PASSPHRASE", "verify me")];
    let objects = local_backup(&s, &gpg);
    for name in s.all_names().iter().filter(|n| n.ends_with(".sha256")) {
        fs::remove_file(s.out.join(name)).unwrap();
    }
    let (code, text) = verify(&s, "hash", &gpg);
    assert_eq!(code, Some(3), "nothing to compare: {text}");
    let (code, text) = verify(&s, "read", &gpg);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no manifest to compare"), "{text}");
    // Without the passphrase it cannot be read: not checked, and says what is missing.
    let (code, text) = verify(&s, "read", &[]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("GPG_PASSPHRASE"), "{text}");
    // A flipped byte in the middle fails the MDC (or the packet structure) at the end.
    let mut bytes = fs::read(&objects[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&objects[0], &bytes).unwrap();
    let (code, text) = verify(&s, "read", &gpg);
    assert_eq!(code, Some(1), "{text}");
    // The restore of it fails too and says so.
    let target = s.tmp.path().join("t");
    let out = run(s
        .command(&["restore", "latest", "--target", target.to_str().unwrap()])
        .envs(gpg.iter().copied()));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

#[test]
fn restore_refuses_a_non_empty_target_an_unknown_name_and_a_name_not_listed() {
    let s = Setup::new();
    fs::write(s.src.join("f.txt"), "content").unwrap();
    local_backup(&s, &[]);
    let target = s.tmp.path().join("busy");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep.txt"), "mine").unwrap();
    let t = target.to_str().unwrap();
    let out = run(&mut s.command(&["restore", "latest", "--target", t]));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("--overwrite"), "{}", stdout(&out));
    assert_eq!(fs::read_dir(&target).unwrap().count(), 1, "nothing written");
    for name in ["nope.tar.zst", "../archive/x", "latest.sha256"] {
        let out = run(&mut s.command(&["restore", name, "--target", t]));
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stdout(&out));
        assert!(stdout(&out).contains("dunnage list"), "{}", stdout(&out));
    }
    let out = run(&mut s.command(&["restore", "latest", "--target", t, "--overwrite"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(fs::read(target.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(
        fs::read(extracted(&target, &s.src.join("f.txt"))).unwrap(),
        b"content"
    );
    // --strip-components drops the leading folders, as tar's.
    let stripped = s.tmp.path().join("stripped");
    let out = run(&mut s.command(&[
        "restore",
        "latest",
        "--target",
        stripped.to_str().unwrap(),
        "--strip-components",
        &depth(&s.src),
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(fs::read(stripped.join("f.txt")).unwrap(), b"content");
}

#[test]
fn a_hostile_archive_writes_nothing_outside_the_target() {
    let s = Setup::new();
    let outside = s.tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // Built by Python's tarfile, which writes whatever it is told.
    let archive = s.out.join("backup-2026-01-01T00-00-00.tar.gz");
    let script = format!(
        r#"
import io, tarfile
t = tarfile.open("{archive}", "w:gz")
def add(name, kind=tarfile.REGTYPE, link="", data=b"pwned", mode=0o644):
    i = tarfile.TarInfo(name); i.type = kind; i.linkname = link; i.mode = mode
    i.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(i, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
add("/{outside}/absolute.txt")
add("../outside/dotdot.txt")
add("link", tarfile.SYMTYPE, "{outside}")
add("link/through-symlink.txt")
add("hard", tarfile.LNKTYPE, "../outside/victim.txt")
add("null", tarfile.CHRTYPE, mode=0o666)
add("fine.txt", data=b"fine")
big = tarfile.TarInfo("bomb.bin"); big.size = 1 << 40
t.addfile(big, io.BytesIO(b""))
"#,
        archive = archive.display(),
        outside = outside.display().to_string().trim_start_matches('/'),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    // The bomb's body is missing, so Python stops there: the entries before it are written.
    let _ = out;
    fs::write(outside.join("victim.txt"), "untouched").unwrap();
    let target = s.tmp.path().join("target");
    let out = run(&mut s.command(&[
        "restore",
        "backup-2026-01-01T00-00-00.tar.gz",
        "--target",
        target.to_str().unwrap(),
    ]));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert_eq!(
        crate::common::remote::names_in(&outside),
        ["victim.txt"],
        "{text}"
    );
    assert_eq!(fs::read(outside.join("victim.txt")).unwrap(), b"untouched");
    assert_eq!(fs::read(target.join("fine.txt")).unwrap(), b"fine");
    // The symlink came first, so `link/...` made a real folder and the symlink could not
    // replace it; the bomb stopped the restore before a byte of it was written.
    for needle in [
        "absolute name",
        "'..'",
        "link: a folder of that name",
        "outside the archive",
        "decompression bomb",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn each_run_can_verify_what_it_stored_and_says_so_in_its_summary() {
    let s = Setup::new();
    sources_with_random(&s, 1, 9);
    let out = run(s.backup().env("BACKUP_VERIFY_LEVEL", "read"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("verified (read)"), "{}", stderr(&out));
    let listed = stdout(&run(&mut s.command(&["list"])));
    assert!(listed.contains("verified ok (read"), "{listed}");
    // Encrypted to a key it does not hold: the run stands, the warning says why.
    let (_, public) = keygen(s.tmp.path());
    let out = run(s
        .backup()
        .env("BACKUP_VERIFY_LEVEL", "read")
        .env("AGE_PUBLIC_KEYS", &public)
        .env("BACKUP_FILENAME", "enc-%s.{{ .Extension }}"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("could not be verified (read)")
            && stderr(&out).contains("AGE_IDENTITIES"),
        "{}",
        stderr(&out)
    );
    let out = run(s.backup().env("BACKUP_VERIFY_LEVEL", "thorough"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("BACKUP_VERIFY_LEVEL"),
        "{}",
        stderr(&out)
    );
}
