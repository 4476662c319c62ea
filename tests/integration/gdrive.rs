//! The Google Drive destination against a stateful fake of the Drive v3 API and Google's
//! token endpoint (tests/servers/gdrive_fake.py, started by each test on its own port). The
//! fake verifies the signed JWT with the service account's public key, the scope and the
//! audience, keeps resumable sessions' offsets and creates a file only when every byte
//! arrived, checks parents and shared-drive flags, parses the search language and pages
//! its listings; the tests read what it stored from its folder.

use std::fs;
use std::ops::Deref;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::fake::FakeServer;
use crate::common::remote::{restore_and_compare, stdout};
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
        // The fake signs and verifies with `cryptography`, which the servers' venv holds.
        let python = std::env::var("DUNNAGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        Fake(FakeServer::start("gdrive_fake.py", &python, root))
    }

    fn stat(&self, name: &str) -> u64 {
        self.get("stats")[name].as_u64().unwrap()
    }

    /// The files (not folders) the fake holds, as (name, parent) sorted.
    fn files(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .get("files")
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().to_owned(),
                    f["parents"][0].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The stored bytes of the one file called `name`.
    pub(crate) fn stored(&self, name: &str) -> std::path::PathBuf {
        let files = self.get("files");
        let ids: Vec<&str> = files
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["name"] == name)
            .map(|f| f["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 1, "{files}");
        self.root.join(ids[0])
    }

    pub(crate) fn configure(&self, cmd: &mut Command, folder: &str) {
        let key = self.get("credentials").to_string();
        cmd.env("GOOGLE_DRIVE_CREDENTIALS_JSON", key)
            .env(
                "GOOGLE_DRIVE_ENDPOINT",
                format!("http://127.0.0.1:{}/drive/v3/", self.port),
            )
            .env("BACKUP_RETRY_TIMEOUT", "20s");
        if !folder.is_empty() {
            cmd.env("GOOGLE_DRIVE_FOLDER_ID", folder);
        }
    }
}

fn name_of(path: &std::path::Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_owned()
}

#[test]
fn round_trip_survives_an_expired_token_a_5xx_and_a_dropped_connection_mid_chunk() {
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 44, 7);
    let fake = Fake::start(&s.tmp.path().join("gdrive"));
    // Faults Drive produces during one upload: a backend error on the 2nd chunk and a
    // connection dropped in the middle of the 4th, each after part of the chunk arrived.
    fake.control("fail", r#"{"chunk": 2, "status": 503}"#);
    fake.control("fail", r#"{"chunk": 4, "drop": true}"#);
    let mut cmd = s.backup();
    fake.configure(&mut cmd, "backups");
    cmd.env("BACKUP_COMPRESSION", "none")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // The access token expires once the upload is under way: the next chunk gets a 401.
    wait_for("the first chunk", Duration::from_secs(60), || {
        fake.stat("chunks") >= 1
    });
    fake.control("expire", "{}");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(fake.stat("injected"), 2);
    assert!(fake.stat("tokens") >= 2, "a new token after the 401");
    assert!(fake.stat("unauthorized") >= 1);
    assert!(
        fake.stat("status_queries") >= 2,
        "each failure asks what arrived"
    );
    assert_eq!(fake.stat("created"), 2, "the archive and its manifest");

    let local = s.only_archive();
    let name = name_of(&local);
    assert_eq!(
        fake.files(),
        [
            (name.clone(), "backups".to_owned()),
            (format!("{name}.sha256"), "backups".to_owned())
        ]
    );
    let stored = fake.stored(&name);
    assert!(fs::read(&stored).unwrap() == fs::read(&local).unwrap());
    restore_and_compare(&s, &stored);
    // No token, key or session address reaches the log.
    for secret in ["ya29.", "PRIVATE KEY", "upload_id"] {
        assert!(!err.contains(secret), "{secret} in the log:\n{err}");
    }
}

#[test]
fn pruning_pages_through_the_users_drive_root_only_with_quotes_in_names() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "data").unwrap();
    let fake = Fake::start(&s.tmp.path().join("gdrive"));
    // Tokens that live 30 s are renewed before every request (a minute's margin): no
    // request may ever be refused for an expired token.
    fake.control("lifetime", r#"{"seconds": 30}"#);
    // Twelve old backups at the top of the user's drive: three pages of the fake's five.
    let seed = |name: &str, parent: &str, days: u32| {
        fake.control(
            "seed",
            &format!(r#"{{"name": "{name}", "parent": "{parent}"}}"#),
        );
        fake.control(
            "backdate",
            &format!(r#"{{"name": "{name}", "days": {days}}}"#),
        );
    };
    for i in 0..12 {
        seed(&format!("db's-2026-01-01T00-00-{i:02}.tar.gz"), "root", 10);
    }
    seed("db's-2026-12-01T00-00-00.tar.gz", "root", 0);
    // Old backups elsewhere in the drive, and an old file without the prefix.
    seed("db's-2026-01-02T00-00-00.tar.gz", "other", 10);
    seed("db's-2026-01-03T00-00-00.tar.gz", "backups", 10);
    seed("notes-old.txt", "root", 10);
    let mut cmd = s.backup();
    // No folder: the top of the impersonated user's drive, as in the reference.
    fake.configure(&mut cmd, "");
    cmd.env("GOOGLE_DRIVE_IMPERSONATE_SUBJECT", "owner@example.org")
        .env("BACKUP_FILENAME", "db's-%Y-%m-%dT%H-%M-%S.tar.gz")
        .env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_PRUNING_PREFIX", "db's-");
    let out = run(&mut cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let name = name_of(&s.only_archive());
    let manifest = format!("{name}.sha256");
    let mut expected: Vec<(String, String)> = [
        (name.as_str(), "root"),
        (manifest.as_str(), "root"),
        ("db's-2026-12-01T00-00-00.tar.gz", "root"),
        ("db's-2026-01-02T00-00-00.tar.gz", "other"),
        ("db's-2026-01-03T00-00-00.tar.gz", "backups"),
        ("notes-old.txt", "root"),
    ]
    .iter()
    .map(|(n, p)| (n.to_string(), p.to_string()))
    .collect();
    expected.sort();
    assert_eq!(fake.files(), expected, "{err}");
    assert_eq!(fake.stat("unauthorized"), 0);
    assert!(fake.stat("tokens") >= 3);

    // `list` shows the folder's backups only.
    let mut list = s.command(&["list"]);
    fake.configure(&mut list, "");
    list.env("GOOGLE_DRIVE_IMPERSONATE_SUBJECT", "owner@example.org")
        .env("BACKUP_FILENAME", "db's-%Y-%m-%dT%H-%M-%S.tar.gz");
    let out = run(&mut list);
    let text = stdout(&out);
    assert!(text.contains(&name), "{text}");
    assert!(text.contains("db's-2026-12-01T00-00-00.tar.gz"), "{text}");
    assert!(
        !text.contains("2026-01-0"),
        "only the folder's backups: {text}"
    );
}

#[test]
fn shared_drives_work_for_backup_check_and_restore() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let fake = Fake::start(&s.tmp.path().join("gdrive"));
    // The key from a file, as compose secrets give it.
    let key_file = s.tmp.path().join("gdrive-key.json");
    fs::write(&key_file, fake.get("credentials").to_string()).unwrap();
    let configure = |cmd: &mut Command| {
        fake.configure(cmd, "teamfolder");
        cmd.env_remove("GOOGLE_DRIVE_CREDENTIALS_JSON")
            .env("GOOGLE_DRIVE_CREDENTIALS_JSON_FILE", &key_file)
            .env("GOOGLE_DRIVE_TEAM_DRIVE_ID", "team1");
    };
    let mut cmd = s.backup();
    configure(&mut cmd);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let name = name_of(&s.only_archive());
    assert_eq!(fake.files()[0], (name.clone(), "teamfolder".to_owned()));
    assert_eq!(fake.files().len(), 2, "the archive and its manifest");

    let mut check = s.command(&["check", "--write"]);
    configure(&mut check);
    let out = run(&mut check);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("GoogleDrive: OK: listed") && text.contains("read back and deleted"),
        "{text}"
    );

    // Restore from Drive alone (the local copy is gone).
    fs::remove_file(s.only_archive()).unwrap();
    let target = s.tmp.path().join("restored");
    let mut restore = s.command(&[
        "restore",
        &name,
        "--from",
        "GoogleDrive",
        "--target",
        target.to_str().unwrap(),
    ]);
    configure(&mut restore);
    let out = run(&mut restore);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_tree(&s.src, &target, &[]);
}

#[test]
fn a_foreign_key_or_an_unauthorised_subject_fails_drive_only_and_stays_secret() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let fake = Fake::start(&s.tmp.path().join("gdrive"));
    // The right account name with another key: the signature does not verify.
    let mut forged: Value = fake.get("credentials");
    let other: Value =
        serde_json::from_str(include_str!("../fixtures/gdrive-service-account.json")).unwrap();
    forged["private_key"] = other["private_key"].clone();
    let mut cmd = s.backup();
    fake.configure(&mut cmd, "backups");
    cmd.env("GOOGLE_DRIVE_CREDENTIALS_JSON", forged.to_string());
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("Invalid JWT Signature") && err.contains("GOOGLE_DRIVE_CREDENTIALS_JSON"),
        "{err}"
    );
    assert!(
        !err.contains("PRIVATE KEY") && !err.contains("MII"),
        "{err}"
    );
    restore_and_compare(&s, &s.only_archive());

    let mut cmd = s.backup();
    fake.configure(&mut cmd, "backups");
    cmd.env("GOOGLE_DRIVE_IMPERSONATE_SUBJECT", "intruder@example.org")
        .env("BACKUP_FILENAME", "second.tar.gz");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unauthorized_client"),
        "{}",
        stderr(&out)
    );
    assert!(fake.files().is_empty());
    assert_eq!(s.archive_names().len(), 2, "both local copies are kept");
}

#[test]
fn a_refused_chunk_cancels_the_session_and_stores_nothing() {
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 20, 3);
    let fake = Fake::start(&s.tmp.path().join("gdrive"));
    fake.control("fail", r#"{"chunk": 2, "status": 400}"#);
    let mut cmd = s.backup();
    fake.configure(&mut cmd, "backups");
    cmd.env("BACKUP_COMPRESSION", "none");
    let out = run(&mut cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("GoogleDrive") && err.contains("400"), "{err}");
    assert_eq!(fake.stat("cancelled"), 1, "the session is cancelled");
    assert_eq!(fake.stat("sessions"), 0);
    assert!(fake.files().is_empty());
    restore_and_compare(&s, &s.only_archive());
}

#[test]
fn the_server_gone_mid_upload_stores_nothing_and_keeps_the_local_copy() {
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 30, 5);
    let mut fake = Fake::start(&s.tmp.path().join("gdrive"));
    fake.control("fail", r#"{"chunk": 2, "exit": true}"#);
    let mut cmd = s.backup();
    fake.configure(&mut cmd, "backups");
    cmd.env("BACKUP_COMPRESSION", "none")
        .env("BACKUP_RETRY_TIMEOUT", "2s");
    let out = run(&mut cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(fake.0.exited(), "the fault ends the fake");
    assert!(err.contains("GoogleDrive"), "{err}");
    // The fake writes a file's bytes only when its upload completes.
    assert!(fs::read_dir(&fake.root).unwrap().next().is_none());
    restore_and_compare(&s, &s.only_archive());
}

#[test]
fn google_drive_keeps_the_destination_contract() {
    let root = tempfile::tempdir().unwrap();
    let fake = Fake::start(root.path());
    crate::conformance::conform(dunnage::storage::Backend::GoogleDrive, |cmd| {
        fake.configure(cmd, "teamfolder");
        cmd.env("GOOGLE_DRIVE_TEAM_DRIVE_ID", "team1");
    });
    assert_eq!(fake.stat("sessions"), 0, "no session is left open");
}
