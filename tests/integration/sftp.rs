//! The SFTP destination against OpenSSH's sshd (started by `scripts/test`): password and
//! key logins, host key checking, pruning, a server that vanishes mid-upload. Stored files
//! are read straight from the folder the test user writes to.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::remote::{Proxy, env, names_in, restore_and_compare, stdout, unique, write_old};
use crate::common::*;

fn key(name: &str) -> PathBuf {
    Path::new(&env("DUNNAGE_TEST_SSH_KEYS")).join(name)
}

fn root() -> PathBuf {
    env("DUNNAGE_TEST_SSH_ROOT").into()
}

/// SFTP with the password, a folder of its own below the server's test folder, the
/// host key pinned, and a state folder of this test.
fn configure(s: &Setup, cmd: &mut Command, folder: &str) {
    cmd.env("SSH_HOST_NAME", "127.0.0.1")
        .env("SSH_PORT", env("DUNNAGE_TEST_SSH_PORT"))
        .env("SSH_USER", env("DUNNAGE_TEST_SSH_USER"))
        .env("SSH_PASSWORD", env("DUNNAGE_TEST_SSH_PASSWORD"))
        .env("SSH_IDENTITY_FILE", "")
        .env("SSH_REMOTE_PATH", root().join(folder))
        .env(
            "SSH_HOST_KEY_FINGERPRINT",
            env("DUNNAGE_TEST_SSH_FINGERPRINT"),
        )
        .env("BACKUP_STATE_DIR", s.tmp.path().join("state"))
        .env("BACKUP_RETRY_TIMEOUT", "2s");
}

fn names(folder: &str) -> Vec<String> {
    names_in(&root().join(folder))
}

/// A file in the server's folder, modified `days` ago, owned by the SFTP user.
fn put_old(path: &str, days: u64) {
    write_old(&root().join(path), days);
    let top = root().join(path.split('/').next().unwrap());
    let status = Command::new("chown")
        .arg("-R")
        .arg(env("DUNNAGE_TEST_SSH_USER"))
        .arg(top)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn round_trip_with_password_into_a_new_folder_and_pruning() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let top = unique("p");
    let folder = format!("{top}/daily");
    put_old(&format!("{folder}/backup-old.tar.gz"), 10);
    put_old(&format!("{folder}/other-old.tar.gz"), 10);
    put_old(&format!("{folder}/deeper/backup-old-2.tar.gz"), 10);
    let mut cmd = s.backup();
    configure(&s, &mut cmd, &folder);
    cmd.env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_PRUNING_PREFIX", "backup-");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let local = s.only_archive();
    let name = local.file_name().unwrap().to_str().unwrap().to_owned();
    let mut expected = vec![name.clone(), "deeper".into(), "other-old.tar.gz".into()];
    expected.sort();
    assert_eq!(names(&folder), expected);
    let stored = root().join(&folder).join(&name);
    assert!(fs::read(&stored).unwrap() == fs::read(&local).unwrap());
    restore_and_compare(&s, &stored);

    // A folder that does not exist yet is created with its parents.
    let fresh = format!("{}/a/b", unique("n"));
    let mut cmd = s.backup();
    configure(&s, &mut cmd, &fresh);
    cmd.env("BACKUP_FILENAME", "fresh.tar.gz");
    assert_eq!(run(&mut cmd).status.code(), Some(0));
    assert_eq!(names(&fresh), ["fresh.tar.gz"]);

    // Safety rule.
    let safe = unique("s");
    put_old(&format!("{safe}/backup-1.tar.gz"), 10);
    put_old(&format!("{safe}/backup-2.tar.gz"), 9);
    let mut prune = s.command(&["prune"]);
    configure(&s, &mut prune, &safe);
    prune
        .env("BACKUP_RETENTION_DAYS", "1")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .env("BACKUP_SKIP_BACKENDS_FROM_PRUNE", "local");
    let out = run(&mut prune);
    assert!(
        stdout(&out).contains("SFTP: deleted 0 of 2"),
        "{}",
        stdout(&out)
    );
    assert_eq!(names(&safe).len(), 2);
}

#[test]
fn keys_of_every_kind_log_in_and_a_passphrase_is_needed_where_set() {
    for (file, passphrase) in [
        ("ed25519", None),
        ("ed25519_pass", Some("key pass")),
        ("rsa_pem", None),
        ("ecdsa", None),
        ("ecdsa_short", None),
    ] {
        let s = Setup::new();
        fs::write(s.src.join("f"), file).unwrap();
        let folder = unique("k");
        let mut cmd = s.backup();
        configure(&s, &mut cmd, &folder);
        cmd.env_remove("SSH_PASSWORD")
            .env("SSH_IDENTITY_FILE", key(file))
            .env("BACKUP_FILENAME", format!("{file}.tar.gz"));
        if let Some(p) = passphrase {
            cmd.env("SSH_IDENTITY_PASSPHRASE", p);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", stderr(&out));
        assert_eq!(names(&folder), [format!("{file}.tar.gz")]);
    }

    // The protected key without its passphrase: nothing runs (exit 2). A key the server
    // does not know: that destination fails, the local copy is kept.
    for (file, code, needle) in [
        ("ed25519_pass", 2, "SSH_IDENTITY_PASSPHRASE"),
        ("not_authorized", 1, "refused user"),
    ] {
        let s = Setup::new();
        fs::write(s.src.join("f"), "x").unwrap();
        let folder = unique("k");
        let mut cmd = s.backup();
        configure(&s, &mut cmd, &folder);
        cmd.env_remove("SSH_PASSWORD")
            .env("SSH_IDENTITY_FILE", key(file));
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(code), "{file}");
        assert!(stderr(&out).contains(needle), "{file}: {}", stderr(&out));
        assert!(names(&folder).is_empty());
        if code == 1 {
            restore_and_compare(&s, &s.only_archive());
        } else {
            assert!(
                s.archive_names().is_empty(),
                "nothing runs on a bad configuration"
            );
        }
    }
}

#[test]
fn a_wrong_password_fails_that_destination_only_and_is_never_shown() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let folder = unique("w");
    let mut cmd = s.backup();
    configure(&s, &mut cmd, &folder);
    cmd.env("SSH_PASSWORD", "not-the-password-42");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("refused user"), "{err}");
    assert!(!err.contains("not-the-password-42"));
    restore_and_compare(&s, &s.only_archive());
    assert!(names(&folder).is_empty());
}

#[test]
fn host_keys_are_checked_pinned_listed_or_trusted_on_first_use() {
    let port = env("DUNNAGE_TEST_SSH_PORT");
    // A wrong pinned fingerprint is refused.
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let folder = unique("h");
    let mut cmd = s.backup();
    configure(&s, &mut cmd, &folder);
    cmd.env(
        "SSH_HOST_KEY_FINGERPRINT",
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not the SSH_HOST_KEY_FINGERPRINT"),
        "{}",
        stderr(&out)
    );
    assert!(names(&folder).is_empty());

    // known_hosts: the right file works (also one listing only the server's RSA key, which
    // the server does not offer first), one listing another key is refused, and so is the
    // right key marked @revoked.
    let good = key("known_hosts");
    let rsa_only = key("known_hosts_rsa");
    let revoked = s.tmp.path().join("revoked_known_hosts");
    let listed = fs::read_to_string(&good).unwrap();
    let server_key: Vec<&str> = listed.split_whitespace().skip(1).take(2).collect();
    fs::write(
        &revoked,
        format!("{listed}@revoked * {}\n", server_key.join(" ")),
    )
    .unwrap();
    let wrong = s.tmp.path().join("wrong_known_hosts");
    let other = fs::read_to_string(key("other_host.pub")).unwrap();
    let other_key: Vec<&str> = other.split_whitespace().take(2).collect();
    fs::write(
        &wrong,
        format!("[127.0.0.1]:{port} {}\n", other_key.join(" ")),
    )
    .unwrap();
    for (file, ok, why) in [
        (&good, true, ""),
        (&rsa_only, true, ""),
        (&wrong, false, "does not match"),
        (&revoked, false, "is marked @revoked"),
    ] {
        let s = Setup::new();
        fs::write(s.src.join("f"), "x").unwrap();
        let mut cmd = s.backup();
        configure(&s, &mut cmd, &folder);
        cmd.env_remove("SSH_HOST_KEY_FINGERPRINT")
            .env("SSH_KNOWN_HOSTS", file)
            .env("BACKUP_FILENAME", format!("{}.tar.gz", unique("kh")));
        let out = run(&mut cmd);
        assert_eq!(
            out.status.code(),
            Some(if ok { 0 } else { 1 }),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }

    // Trust on first use: remembered with a warning naming the fingerprint, then required.
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let tofu = unique("t");
    let backup = |s: &Setup, name: &str| {
        let mut cmd = s.backup();
        configure(s, &mut cmd, &tofu);
        cmd.env_remove("SSH_HOST_KEY_FINGERPRINT")
            .env("BACKUP_FILENAME", name);
        run(&mut cmd)
    };
    let out = backup(&s, "first.tar.gz");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fingerprint = env("DUNNAGE_TEST_SSH_FINGERPRINT");
    assert!(
        stderr(&out).contains("trusting the host key") && stderr(&out).contains(&fingerprint),
        "{}",
        stderr(&out)
    );
    let trusted = s.tmp.path().join("state/sftp_known_hosts");
    assert!(trusted.is_file());
    let out = backup(&s, "second.tar.gz");
    assert_eq!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains("trusting the host key"));
    // The server's key "changes": refused, loudly.
    fs::write(
        &trusted,
        format!("[127.0.0.1]:{port} {}\n", other_key.join(" ")),
    )
    .unwrap();
    let out = backup(&s, "third.tar.gz");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("CHANGED"), "{}", stderr(&out));
    assert_eq!(names(&tofu), ["first.tar.gz", "second.tar.gz"]);
}

#[test]
fn server_gone_mid_upload_leaves_nothing_under_the_final_name() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let mut data = vec![0u8; 64 << 20];
    fastrand::Rng::with_seed(5).fill(&mut data);
    fs::write(s.src.join("random.bin"), data).unwrap();
    let folder = unique("g");
    let proxy = Proxy::start(&format!("127.0.0.1:{}", env("DUNNAGE_TEST_SSH_PORT")));
    let mut cmd = s.backup();
    configure(&s, &mut cmd, &folder);
    cmd.env("SSH_PORT", proxy.port.to_string())
        .env("BACKUP_COMPRESSION", "none");
    let port = proxy.port;
    let out = proxy.cut_during(&mut cmd, 8 << 20);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("storing the archive in SFTP failed"), "{err}");
    restore_and_compare(&s, &s.only_archive());
    let name = s
        .only_archive()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!names(&folder).contains(&name), "{:?}", names(&folder));

    // The next run connects again, removes the leftover once it is stale (the cut left it
    // behind: the removal could not reach the server) and stores its own.
    for leftover in names(&folder) {
        let touched = Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(root().join(&folder).join(leftover))
            .status()
            .unwrap();
        assert!(touched.success());
    }
    let _back = Proxy::start_on(&format!("127.0.0.1:{}", env("DUNNAGE_TEST_SSH_PORT")), port);
    let mut cmd = s.backup();
    configure(&s, &mut cmd, &folder);
    cmd.env("SSH_PORT", port.to_string())
        .env("BACKUP_FILENAME", "second.tar");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(names(&folder), ["second.tar"]);
}

#[test]
fn check_covers_sftp() {
    let s = Setup::new();
    let folder = unique("c");
    let mut cmd = s.command(&["check", "--write"]);
    configure(&s, &mut cmd, &folder);
    let out = run(&mut cmd);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("SFTP: OK: listed") && text.contains("read back and deleted"),
        "{text}"
    );
    assert!(names(&folder).is_empty());
}
