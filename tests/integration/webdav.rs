//! The WebDAV destination against WsgiDAV and Apache mod_dav (started by `scripts/test`):
//! the stored files are read straight from the folders the servers serve.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::common::remote::{Proxy, env, names_in, restore_and_compare, stdout, unique, write_old};
use crate::common::*;

/// One of the two servers.
struct Dav {
    url: String,
    root: PathBuf,
}

fn wsgidav() -> Dav {
    Dav {
        url: env("DUNNAGE_TEST_WSGIDAV_URL"),
        root: env("DUNNAGE_TEST_WSGIDAV_ROOT").into(),
    }
}

fn apache() -> Dav {
    Dav {
        url: env("DUNNAGE_TEST_APACHE_URL"),
        root: env("DUNNAGE_TEST_APACHE_ROOT").into(),
    }
}

/// Apache's `/digest/` folder: Digest authentication, as the WebDAV image the reference's
/// own tests use.
fn apache_digest() -> Dav {
    Dav {
        url: format!("{}digest/", env("DUNNAGE_TEST_APACHE_URL")),
        root: PathBuf::from(env("DUNNAGE_TEST_APACHE_ROOT")).join("digest"),
    }
}

impl Dav {
    fn configure(&self, cmd: &mut Command, path: &str) {
        cmd.env("WEBDAV_URL", &self.url)
            .env("WEBDAV_PATH", path)
            .env("WEBDAV_USERNAME", env("DUNNAGE_TEST_DAV_USER"))
            .env("WEBDAV_PASSWORD", env("DUNNAGE_TEST_DAV_PASSWORD"))
            .env("BACKUP_RETRY_TIMEOUT", "3s");
    }

    /// Names in a served folder, sorted (hidden ones included).
    fn names(&self, path: &str) -> Vec<String> {
        names_in(&self.root.join(path))
    }

    /// A file in a served folder with a modification time `days` ago.
    fn put_old(&self, path: &str, days: u64) {
        write_old(&self.root.join(path), days);
        // Apache's www-data must be able to delete it.
        let _ = Command::new("chown")
            .args(["-R", "www-data:www-data"])
            .arg(self.root.join(path.split('/').next().unwrap()))
            .status();
    }
}

fn round_trip_folder_creation_and_pruning(dav: Dav) {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let top = unique("t");
    let folder = format!("{top}/nightly backups/x");
    dav.put_old(&format!("{folder}/backup-old-1.tar.gz"), 10);
    dav.put_old(&format!("{folder}/other-old.tar.gz"), 10);
    dav.put_old(&format!("{folder}/deeper/backup-old-2.tar.gz"), 10);

    let mut cmd = s.backup();
    dav.configure(&mut cmd, &format!("/{folder}/"));
    cmd.env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_PRUNING_PREFIX", "backup-");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let local = s.only_archive();
    let name = local.file_name().unwrap().to_str().unwrap().to_owned();
    let mut expected = vec![name.clone(), "deeper".into(), "other-old.tar.gz".into()];
    expected.sort();
    assert_eq!(
        dav.names(&folder),
        expected,
        "old backup pruned, nothing partial"
    );
    let stored = dav.root.join(&folder).join(&name);
    assert!(fs::read(&stored).unwrap() == fs::read(&local).unwrap());
    restore_and_compare(&s, &stored);

    // A folder that does not exist yet is created, level by level.
    let fresh = format!("{}/a/b", unique("new"));
    let mut cmd = s.backup();
    dav.configure(&mut cmd, &fresh);
    cmd.env("BACKUP_FILENAME", "fresh.tar.gz");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(dav.names(&fresh), ["fresh.tar.gz"]);

    // Safety rule: only old matching backups: `prune` deletes none of them.
    let safe = format!("{}/only-old", unique("s"));
    dav.put_old(&format!("{safe}/backup-1.tar.gz"), 10);
    dav.put_old(&format!("{safe}/backup-2.tar.gz"), 9);
    let mut prune = s.command(&["prune"]);
    dav.configure(&mut prune, &safe);
    prune
        .env("BACKUP_RETENTION_DAYS", "1")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .env("BACKUP_SKIP_BACKENDS_FROM_PRUNE", "local");
    let out = run(&mut prune);
    assert!(
        stdout(&out).contains("WebDAV: deleted 0 of 2"),
        "{}",
        stdout(&out)
    );
    assert_eq!(dav.names(&safe).len(), 2);
}

#[test]
fn wsgidav_round_trip_folder_creation_and_pruning() {
    round_trip_folder_creation_and_pruning(wsgidav());
}

#[test]
fn apache_round_trip_folder_creation_and_pruning() {
    round_trip_folder_creation_and_pruning(apache());
}

#[test]
fn apache_digest_round_trip_folder_creation_and_pruning() {
    round_trip_folder_creation_and_pruning(apache_digest());
}

fn wrong_password_fails_that_destination_only(dav: Dav) {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let folder = unique("w");
    let mut cmd = s.backup();
    dav.configure(&mut cmd, &folder);
    cmd.env("WEBDAV_PASSWORD", "not-the-password-xyz");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("401") && err.contains("WEBDAV_PASSWORD"),
        "{err}"
    );
    assert!(!err.contains("not-the-password-xyz"));
    restore_and_compare(&s, &s.only_archive());
    assert!(dav.names(&folder).is_empty());
}

#[test]
fn wsgidav_wrong_password_fails_that_destination_only() {
    wrong_password_fails_that_destination_only(wsgidav());
}

#[test]
fn apache_wrong_password_fails_that_destination_only() {
    wrong_password_fails_that_destination_only(apache());
}

#[test]
fn apache_digest_wrong_password_fails_that_destination_only() {
    wrong_password_fails_that_destination_only(apache_digest());
}

fn server_gone_mid_upload_leaves_nothing_under_the_final_name(dav: Dav) {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let mut data = vec![0u8; 48 << 20];
    fastrand::Rng::with_seed(3).fill(&mut data);
    fs::write(s.src.join("random.bin"), data).unwrap();
    let folder = unique("g");
    let authority = dav.url.trim_start_matches("http://").trim_end_matches('/');
    let proxy = Proxy::start(authority);
    let mut cmd = s.backup();
    dav.configure(&mut cmd, &folder);
    cmd.env("WEBDAV_URL", format!("http://127.0.0.1:{}/", proxy.port))
        .env("BACKUP_COMPRESSION", "none");
    let port = proxy.port;
    let out = proxy.cut_during(&mut cmd, 8 << 20);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("storing the archive in WebDAV failed"),
        "{err}"
    );
    restore_and_compare(&s, &s.only_archive());
    let name = s
        .only_archive()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        !dav.names(&folder).contains(&name),
        "{:?}",
        dav.names(&folder)
    );

    // Back again: the next run removes what the broken one left once it is stale (the
    // removal could not reach the server through the cut) and stores its own.
    for leftover in dav.names(&folder) {
        let touched = Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(dav.root.join(&folder).join(leftover))
            .status()
            .unwrap();
        assert!(touched.success());
    }
    let _back = Proxy::start_on(authority, port);
    let mut cmd = s.backup();
    dav.configure(&mut cmd, &folder);
    cmd.env("WEBDAV_URL", format!("http://127.0.0.1:{port}/"))
        .env("BACKUP_FILENAME", "second.tar");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(dav.names(&folder), ["second.tar"]);
}

#[test]
fn wsgidav_server_gone_mid_upload_leaves_nothing_under_the_final_name() {
    server_gone_mid_upload_leaves_nothing_under_the_final_name(wsgidav());
}

#[test]
fn apache_server_gone_mid_upload_leaves_nothing_under_the_final_name() {
    server_gone_mid_upload_leaves_nothing_under_the_final_name(apache());
}

#[test]
fn check_writes_reads_and_deletes_on_both_servers() {
    for dav in [wsgidav(), apache()] {
        let s = Setup::new();
        let folder = unique("c");
        let mut cmd = s.command(&["check", "--write"]);
        dav.configure(&mut cmd, &folder);
        let out = run(&mut cmd);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(
            text.contains("WebDAV: OK: listed") && text.contains("read back and deleted"),
            "{text}"
        );
        assert!(dav.names(&folder).is_empty());
    }
}

#[test]
fn https_against_a_plain_http_port_says_so_without_retrying() {
    let dav = wsgidav();
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let mut cmd = s.backup();
    dav.configure(&mut cmd, &unique("tls"));
    cmd.env("WEBDAV_URL", dav.url.replace("http://", "https://"))
        .env("BACKUP_RETRY_TIMEOUT", "30s");
    let started = std::time::Instant::now();
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("does not speak TLS on this port") && err.contains("WEBDAV_URL"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "retried as if transient"
    );
}
