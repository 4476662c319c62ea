//! Encrypted archives, decrypted with the real tools (Debian's `age` 1.1), then extracted
//! with the system `tar` and compared with the source byte for byte.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Decrypts `archive` with `age -d` and the given extra arguments into `archive` minus `.age`.
fn age_decrypt(archive: &Path, args: &[&str]) -> PathBuf {
    let plain = archive.with_extension("");
    let out = Command::new("age")
        .arg("-d")
        .args(args)
        .arg("-o")
        .arg(&plain)
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    plain
}

pub(crate) fn keygen(dir: &Path) -> (PathBuf, String) {
    let identity = dir.join("age-identity.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&identity)
        .output()
        .unwrap();
    assert!(out.status.success());
    // age-keygen prints "Public key: age1..." on stderr.
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("Public key: "))
        .unwrap()
        .trim()
        .to_owned();
    (identity, public)
}

#[test]
fn age_recipients_x25519_ssh_ed25519_and_ssh_rsa_each_decrypt_with_the_age_tool() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let (identity, public) = keygen(s.tmp.path());
    let ssh_key = s.tmp.path().join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&ssh_key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let ssh_public = fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
    let rsa_key = s.tmp.path().join("id_rsa");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa_key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let rsa_public = fs::read_to_string(rsa_key.with_extension("pub")).unwrap();
    let out = run(s.backup().env("BACKUP_COMPRESSION", "zst").env(
        "AGE_PUBLIC_KEYS",
        format!("{public}, {},{}", ssh_public.trim(), rsa_public.trim()),
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("encrypted with age, 3 recipient(s)"));
    let archive = s.only_archive();
    assert!(
        archive.to_string_lossy().ends_with(".tar.zst.age"),
        "{archive:?}"
    );
    let bytes = fs::read(&archive).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    assert!(
        !bytes.windows(8).any(|w| w == b"app_data"),
        "a file name is readable in the encrypted archive"
    );

    for (n, args) in [
        ("x25519", vec!["-i", identity.to_str().unwrap()]),
        ("ssh", vec!["-i", ssh_key.to_str().unwrap()]),
        ("rsa", vec!["-i", rsa_key.to_str().unwrap()]),
    ] {
        let plain = age_decrypt(&archive, &args);
        let dest = s.tmp.path().join(format!("restore-{n}"));
        extract(&plain, &dest);
        assert_same_tree(&s.src, &dest, &[]);
        fs::remove_file(plain).unwrap();
    }
}

#[test]
fn an_age_passphrase_decrypts_at_the_age_tools_prompt() {
    let s = Setup::new();
    fs::write(s.src.join("data.txt"), "payload").unwrap();
    const PASSPHRASE: &str = "correct horse battery staple";
    let out = run(s.backup().env("AGE_PASSPHRASE", PASSPHRASE));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(PASSPHRASE));
    let archive = s.only_archive();
    assert!(archive.to_string_lossy().ends_with(".tar.gz.age"));
    // The scrypt stanza with the reference's work factor (2^18).
    let header = String::from_utf8_lossy(&fs::read(&archive).unwrap()[..200]).into_owned();
    assert!(
        header.contains("-> scrypt ") && header.contains(" 18\n"),
        "{header}"
    );

    // age reads a passphrase only from a terminal: expect types it at the prompt.
    let plain = archive.with_extension("");
    let script = format!(
        "spawn age -d -o {} {}\nexpect \"Enter passphrase:\"\nsend \"{PASSPHRASE}\\r\"\nexpect eof\nlassign [wait] pid spawnid os_error value\nexit $value\n",
        plain.display(),
        archive.display()
    );
    let out = Command::new("expect")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dest = s.tmp.path().join("restore");
    extract(&plain, &dest);
    assert_same_tree(&s.src, &dest, &[]);
}

#[test]
fn encryption_settings_that_cannot_work_stop_everything() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let missing = s.tmp.path().join("no-such-passphrase-file");
    for (var, value) in [
        ("AGE_PUBLIC_KEYS", "age1qqqqqqqqqqqqqqqq"),
        ("AGE_PUBLIC_KEYS", "ssh-dss AAAAB3NzaC1kc3M="),
        ("AGE_PASSPHRASE_FILE", missing.to_str().unwrap()),
    ] {
        let out = run(s.backup().env(var, value));
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        assert!(stderr(&out).contains(var), "{}", stderr(&out));
        assert!(s.archive_names().is_empty(), "never a plain backup instead");
    }
}

/// One encrypted run into every destination at once (S3 and Azure in several parts): each
/// stores exactly the bytes the local copy has, and that copy decrypts with `age` and
/// extracts to the source.
#[test]
fn every_destination_stores_the_encrypted_archive() {
    use crate::common::remote::{env, serial, sources_with_random};
    let _serial = serial();
    let s = Setup::new();
    sources_with_random(&s, 12, 11);
    let (identity, public) = keygen(s.tmp.path());
    let all = crate::restore::All::new();
    let mut cmd = s.backup();
    all.configure(&mut cmd);
    cmd.env("AGE_PUBLIC_KEYS", &public)
        .env("BACKUP_COMPRESSION", "zst");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let archive = s.only_archive();
    let name = archive.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.ends_with(".tar.zst.age"), "{name}");
    let local = fs::read(&archive).unwrap();

    let from_s3 = s.tmp.path().join("from-s3");
    all.s3.get(&all.bucket, &name, &from_s3);
    let from_azure = s.tmp.path().join("from-azure");
    all.azure.cli(
        &["get", &all.container, &name, from_azure.to_str().unwrap()],
        false,
    );
    for (destination, path) in [
        ("S3", from_s3),
        ("Azure", from_azure),
        (
            "WebDAV",
            PathBuf::from(env("DUNNAGE_TEST_WSGIDAV_ROOT"))
                .join(&all.dav_folder)
                .join(&name),
        ),
        ("SFTP", all.sftp_folder.join(&name)),
        ("Dropbox", all.dropbox_root.path().join("rst").join(&name)),
        ("GoogleDrive", all.gdrive.stored(&name)),
    ] {
        assert!(
            fs::read(&path).unwrap() == local,
            "{destination} stored other bytes"
        );
    }
    let plain = age_decrypt(&archive, &["-i", identity.to_str().unwrap()]);
    let dest = s.tmp.path().join("restore");
    extract(&plain, &dest);
    assert_same_tree(&s.src, &dest, &[]);
}

#[test]
fn a_passphrase_in_a_container_too_small_for_scrypt_is_refused_up_front() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let mut template = s.backup();
    template.env("AGE_PASSPHRASE", "correct horse");
    let cgroup = crate::backup::MemoryCgroup::new(256 << 20);
    let out = run(&mut cgroup.command(&template));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("more than this container's memory limit of 256 MiB"),
        "{}",
        stderr(&out)
    );
    assert!(s.archive_names().is_empty());
}

/// A fresh GnuPG home with one key made by `gpg --quick-gen-key` (no passphrase); returns
/// the home and its armored public key.
pub(crate) fn gpg_key(dir: &Path, name: &str, algo: &str, usage: &str) -> (PathBuf, String) {
    let home = dir.join(format!("gnupg-{name}"));
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let uid = format!("{name} <{name}@example.org>");
    gpg(&["--quick-gen-key", &uid, algo, usage, "never"]);
    if algo == "future-default" {
        // ed25519 signs; the cv25519 subkey encrypts.
        let fpr = gpg(&["--list-keys", "--with-colons", &uid])
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:::::::::")
                    .map(|f| f.trim_end_matches(':').to_owned())
            })
            .unwrap();
        gpg(&["--quick-add-key", &fpr, "cv25519", "encr", "never"]);
    }
    (home.clone(), gpg(&["--armor", "--export", &uid]))
}

fn gpg_decrypt(home: Option<&Path>, archive: &Path, passphrase: &str) -> PathBuf {
    let plain = archive.with_extension("");
    let mut cmd = Command::new("gpg");
    if let Some(home) = home {
        cmd.env("GNUPGHOME", home);
    } else {
        cmd.env("GNUPGHOME", archive.parent().unwrap().join("no-keys"));
        let _ = fs::create_dir(archive.parent().unwrap().join("no-keys"));
    }
    let out = cmd
        .args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            passphrase,
        ])
        .arg("-o")
        .arg(&plain)
        .arg("-d")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gpg -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    plain
}

#[test]
fn a_gpg_passphrase_decrypts_with_gpg() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    const PASSPHRASE: &str = "open sesame 42";
    let out = run(s.backup().env("GPG_PASSPHRASE", PASSPHRASE));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(PASSPHRASE));
    let archive = s.only_archive();
    assert!(
        archive.to_string_lossy().ends_with(".tar.gz.gpg"),
        "{archive:?}"
    );
    let plain = gpg_decrypt(None, &archive, PASSPHRASE);
    let dest = s.tmp.path().join("restore");
    extract(&plain, &dest);
    assert_same_tree(&s.src, &dest, &[]);
}

/// An RSA primary-only key and an ed25519 key with a cv25519 subkey, pasted as two armored
/// blocks: each secret key alone decrypts the archive.
#[test]
fn a_gpg_keyring_encrypts_to_every_key_in_it() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let (rsa_home, rsa) = gpg_key(s.tmp.path(), "rsa", "rsa2048", "sign,encr");
    let (ed_home, ed) = gpg_key(s.tmp.path(), "ed", "future-default", "sign");
    let out = run(s
        .backup()
        .env("BACKUP_COMPRESSION", "zst")
        .env("GPG_PUBLIC_KEY_RING", format!("{rsa}\n{ed}")));
    assert!(out.status.success(), "{}", stderr(&out));
    let archive = s.only_archive();
    assert!(archive.to_string_lossy().ends_with(".tar.zst.gpg"));
    assert!(
        fs::read_to_string(&archive)
            .unwrap()
            .starts_with("-----BEGIN PGP MESSAGE-----")
    );
    for home in [&rsa_home, &ed_home] {
        let plain = gpg_decrypt(Some(home), &archive, "");
        let dest = s
            .tmp
            .path()
            .join(format!("restore-{}", home.display()).replace('/', "_"));
        extract(&plain, &dest);
        assert_same_tree(&s.src, &dest, &[]);
        fs::remove_file(plain).unwrap();
        // dunnage itself restores it with either secret key.
        let secret = Command::new("gpg")
            .env("GNUPGHOME", home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(["--armor", "--export-secret-keys"])
            .output()
            .unwrap();
        let target = PathBuf::from(format!("{}-dunnage", dest.display()));
        let out = run(s
            .command(&["restore", "latest", "--target", target.to_str().unwrap()])
            .env("GPG_PUBLIC_KEY_RING", format!("{rsa}\n{ed}"))
            .env("BACKUP_COMPRESSION", "zst")
            .env(
                "GPG_SECRET_KEY_RING",
                String::from_utf8(secret.stdout).unwrap(),
            ));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_same_tree(&s.src, &target, &[]);
    }
}

#[test]
fn a_keyring_without_a_usable_key_stops_everything() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    // ed25519 without an encryption subkey can only sign.
    let (_, sign_only) = gpg_key(s.tmp.path(), "signer", "ed25519", "sign");
    for (ring, want) in [
        (sign_only.as_str(), "no valid encryption-capable key"),
        (
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnope\n-----END PGP PUBLIC KEY BLOCK-----\n",
            "holds no key",
        ),
        ("", "GPG_PUBLIC_KEY_RING"),
    ] {
        let mut cmd = s.backup();
        cmd.env("GPG_PUBLIC_KEY_RING", ring);
        if ring.is_empty() {
            cmd.env("GPG_PUBLIC_KEY_RING_FILE", s.tmp.path().join("missing.asc"))
                .env_remove("GPG_PUBLIC_KEY_RING");
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(want), "{want}: {}", stderr(&out));
        assert!(s.archive_names().is_empty(), "never a plain backup instead");
    }
}

#[test]
fn retention_prefixes_and_the_latest_link_work_with_encrypted_names() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let (_, public) = keygen(s.tmp.path());
    let old = s.out.join("backup-2020-01-01T00-00-00.tar.gz.age");
    fs::write(&old, "old").unwrap();
    crate::common::set_mtime(&old, 1_577_836_800);
    let unrelated = s.out.join("notes-2020.txt");
    fs::write(&unrelated, "keep").unwrap();
    crate::common::set_mtime(&unrelated, 1_577_836_800);
    let out = run(s
        .backup()
        .env("AGE_PUBLIC_KEYS", &public)
        .env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .env("BACKUP_LATEST_SYMLINK", "latest.tar.gz.age"));
    assert!(out.status.success(), "{}", stderr(&out));
    let names = s.archive_names();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!old.exists(), "the old encrypted backup is pruned");
    assert!(unrelated.exists());
    let link = fs::read_link(s.out.join("latest.tar.gz.age")).unwrap();
    assert!(link.to_string_lossy().ends_with(".tar.gz.age"), "{link:?}");
    assert!(s.out.join(&link).is_file());
}
