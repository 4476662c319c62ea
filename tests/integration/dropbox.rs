//! The Dropbox destination against a stateful fake of Dropbox's HTTP API
//! (tests/servers/dropbox_fake.py, started by each test on its own port and folder). The
//! fake checks chunk sizes, offsets and session closing, so a file it stored is exactly
//! the bytes appended; the tests read that file from the fake's folder.

use std::fs;
use std::ops::Deref;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::fake::FakeServer;
use crate::common::remote::{Proxy, names_in, restore_and_compare, stdout};
use crate::common::*;

pub(crate) struct Fake(FakeServer);

impl Deref for Fake {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.0
    }
}

impl Fake {
    pub(crate) fn start(root: &std::path::Path) -> Fake {
        Fake(FakeServer::start("dropbox_fake.py", "python3", root))
    }

    fn stats(&self) -> serde_json::Value {
        self.get("stats")
    }

    fn names(&self, folder: &str) -> Vec<String> {
        names_in(&self.root.join(folder))
    }

    pub(crate) fn configure(&self, cmd: &mut Command, folder: &str) {
        let url = format!("http://127.0.0.1:{}/", self.port);
        cmd.env("DROPBOX_APP_KEY", "fake-app-key")
            .env("DROPBOX_APP_SECRET", "fake-app-secret")
            .env("DROPBOX_REFRESH_TOKEN", "fake-refresh-token")
            .env("DROPBOX_REMOTE_PATH", folder)
            .env("DROPBOX_ENDPOINT", &url)
            .env("DROPBOX_OAUTH2_ENDPOINT", &url)
            .env("BACKUP_RETRY_TIMEOUT", "10s");
    }
}

#[test]
fn round_trip_in_concurrent_chunks_with_429_5xx_and_an_expired_token() {
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 40, 11);
    let fake = Fake::start(&s.tmp.path().join("dropbox"));
    // Faults Dropbox produces: rate limits, a server error, an access token that expires
    // while chunks are being appended.
    fake.control(
        "fail",
        r#"{"route": "files/upload_session/append_v2", "status": 429, "count": 2}"#,
    );
    fake.control(
        "fail",
        r#"{"route": "files/upload_session/append_v2", "status": 500, "count": 1}"#,
    );
    let mut cmd = s.backup();
    fake.configure(&mut cmd, "/Backups/daily");
    cmd.env("BACKUP_COMPRESSION", "none")
        .env("DROPBOX_CONCURRENCY_LEVEL", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Expire the token once the upload is under way.
    wait_for("the first append", Duration::from_secs(60), || {
        fake.stats()["appends"].as_u64().unwrap_or(0) >= 1
    });
    fake.control("expire", "{}");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    let stats = fake.stats();
    assert!(stats["refreshes"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["injected"], 3, "{stats}");
    assert!(
        stats["appends"].as_u64().unwrap() >= 5,
        "several chunks: {stats}"
    );

    let local = s.only_archive();
    let name = local.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(fake.names("Backups/daily"), std::slice::from_ref(&name));
    let stored = fake.root.join("Backups/daily").join(&name);
    assert!(fs::read(&stored).unwrap() == fs::read(&local).unwrap());
    restore_and_compare(&s, &stored);
}

#[test]
fn pruning_pages_through_the_folder_and_keeps_the_safety_rule() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "data").unwrap();
    let fake = Fake::start(&s.tmp.path().join("dropbox"));
    let folder = fake.root.join("app");
    fs::create_dir_all(folder.join("deeper")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // More entries than one page of the fake's listing.
    for (name, days) in [
        ("backup-old-1.tar.gz", 10),
        ("backup-old-2.tar.gz", 11),
        ("backup-old-3.tar.gz", 12),
        ("backup-recent.tar.gz", 2),
        ("other-old.tar.gz", 10),
        ("deeper/backup-old-4.tar.gz", 10),
    ] {
        fs::write(folder.join(name), "old").unwrap();
        set_mtime(&folder.join(name), now - days * 86_400);
    }
    let mut cmd = s.backup();
    fake.configure(&mut cmd, "/app");
    cmd.env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_PRUNING_PREFIX", "backup-");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let name = s
        .only_archive()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut expected = vec![
        name,
        "backup-recent.tar.gz".into(),
        "deeper".into(),
        "other-old.tar.gz".into(),
    ];
    expected.sort();
    assert_eq!(fake.names("app"), expected);
    assert_eq!(fake.names("app/deeper"), ["backup-old-4.tar.gz"]);

    // Safety rule: in app/deeper the only backup is old: `prune` keeps it.
    let mut prune = s.command(&["prune"]);
    fake.configure(&mut prune, "/app/deeper");
    prune
        .env("BACKUP_RETENTION_DAYS", "1")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .env("BACKUP_SKIP_BACKENDS_FROM_PRUNE", "local");
    let out = run(&mut prune);
    assert!(
        stdout(&out).contains("Dropbox: deleted 0 of 1"),
        "{}",
        stdout(&out)
    );
    assert_eq!(fake.names("app/deeper"), ["backup-old-4.tar.gz"]);
}

#[test]
fn wrong_credentials_fail_that_destination_only_and_stay_secret() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let fake = Fake::start(&s.tmp.path().join("dropbox"));
    let mut cmd = s.backup();
    fake.configure(&mut cmd, "/b");
    cmd.env("DROPBOX_REFRESH_TOKEN", "stolen-token-zzz");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("refresh token is invalid") && err.contains("DROPBOX_REFRESH_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("stolen-token-zzz") && !err.contains("fake-app-secret"));
    restore_and_compare(&s, &s.only_archive());
    assert!(fake.names("b").is_empty());
}

#[test]
fn server_gone_mid_upload_commits_nothing() {
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 48, 11);
    let fake = Fake::start(&s.tmp.path().join("dropbox"));
    let proxy = Proxy::start(&format!("127.0.0.1:{}", fake.port));
    let mut cmd = s.backup();
    fake.configure(&mut cmd, "/g");
    let url = format!("http://127.0.0.1:{}/", proxy.port);
    cmd.env("DROPBOX_ENDPOINT", &url)
        .env("DROPBOX_OAUTH2_ENDPOINT", &url)
        .env("BACKUP_RETRY_TIMEOUT", "2s")
        .env("BACKUP_COMPRESSION", "none");
    let out = proxy.cut_during(&mut cmd, 12 << 20);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("storing the archive in Dropbox failed"),
        "{err}"
    );
    restore_and_compare(&s, &s.only_archive());
    assert!(fake.names("g").is_empty(), "{:?}", fake.names("g"));
    assert_eq!(fake.stats()["finishes"], 0);
}

#[test]
fn all_three_credentials_are_required_and_check_covers_dropbox() {
    let s = Setup::new();
    let mut cmd = s.command(&["check"]);
    cmd.env("DROPBOX_REFRESH_TOKEN", "t");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("DROPBOX_APP_KEY") && err.contains("DROPBOX_APP_SECRET"),
        "{err}"
    );

    let fake = Fake::start(&s.tmp.path().join("dropbox"));
    let mut cmd = s.command(&["check", "--write"]);
    fake.configure(&mut cmd, "/c");
    let out = run(&mut cmd);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("Dropbox: OK: listed") && text.contains("read back and deleted"),
        "{text}"
    );
    assert!(fake.names("c").is_empty());
}

#[test]
fn an_archive_ending_on_a_chunk_boundary_closes_the_session_with_an_empty_append() {
    let s = Setup::new();
    // Uncompressed: the source folder's header, the file's header and body, two end blocks.
    let body = (16 << 20) - 2048;
    let mut data = vec![0u8; body];
    fastrand::Rng::with_seed(13).fill(&mut data);
    fs::write(s.src.join("f.bin"), data).unwrap();
    let fake = Fake::start(&s.tmp.path().join("dropbox"));
    let mut cmd = s.backup();
    fake.configure(&mut cmd, "/edge");
    cmd.env("BACKUP_COMPRESSION", "none");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let local = s.only_archive();
    let len = fs::metadata(&local).unwrap().len();
    assert_eq!(
        len % (8 << 20),
        0,
        "the archive must end on a chunk boundary: {len}"
    );
    let name = local.file_name().unwrap().to_str().unwrap().to_owned();
    let stored = fake.root.join("edge").join(&name);
    assert!(fs::read(&stored).unwrap() == fs::read(&local).unwrap());
}

#[test]
fn dropbox_keeps_the_destination_contract() {
    let root = tempfile::tempdir().unwrap();
    let fake = Fake::start(root.path());
    crate::conformance::conform(dunnage::storage::Backend::Dropbox, |cmd| {
        fake.configure(cmd, "/conformance")
    });
}
