//! print-config, check, conf.d schedules, retention and the lock, through the real binary.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file in the archive folder whose mtime is `days` days ago.
fn old_backup(dir: &Path, name: &str, days: u64) {
    let path = dir.join(name);
    fs::write(&path, name).unwrap();
    let f = fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .unwrap();
}

#[test]
fn print_config_shows_values_and_origins_and_never_secrets() {
    let s = Setup::new();
    let secret_file = s.tmp.path().join("sources-path");
    fs::write(&secret_file, format!("{}\n", s.src.display())).unwrap();
    let mut cmd = s.command(&["print-config"]);
    cmd.env_remove("BACKUP_SOURCES")
        .env("BACKUP_SOURCES_FILE", &secret_file)
        .env(
            "NOTIFICATION_URLS",
            "smtp://user:hunter2@mail.example:587/?from=backup@example.org&to=a@example.org",
        )
        .env("BACKUP_RETENTION_DAYS", "7");
    let out = run(&mut cmd);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("# schedule default"), "{text}");
    assert!(text.contains("# next run: "), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing in {text}"))
            .to_owned()
    };
    assert!(line("BACKUP_SOURCES").contains(&format!("# file {}", secret_file.display())));
    assert!(line("BACKUP_RETENTION_DAYS").ends_with("# environment"));
    assert!(
        line("BACKUP_CRON_EXPRESSION").contains("@daily")
            && line("BACKUP_CRON_EXPRESSION").ends_with("# default")
    );
    assert!(line("NOTIFICATION_URLS").contains("(redacted)"));
    let everything = format!("{text}{}", stderr(&out));
    assert!(
        !everything.contains("hunter2"),
        "a secret leaked: {everything}"
    );
}

#[test]
fn print_config_shows_an_invalid_configuration_as_it_resolves_then_its_problems() {
    let s = Setup::new();
    let mut cmd = s.command(&["print-config"]);
    cmd.env("BACKUP_CRON_EXPRESSION", "61 * * * *")
        .env("WEBDAV_URL", "https://dav.example/")
        .env("WEBDAV_USERNAME", "u")
        .env("WEBDAV_PASSWORD", "hunter2")
        .env("SHOP", "shop")
        .env("BACKUP_FILENAME_EXPAND", "true")
        .env("BACKUP_FILENAME", "$SHOP-%Y.tar.gz")
        .env("TZ", "UTC");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.contains("# schedule default"), "{text}");
    assert!(text.contains("# INVALID: 1 problem(s)"), "{text}");
    let year = jiff::Zoned::now().year();
    assert!(
        text.contains(&format!("# archive name if it ran now: shop-{year}.tar.gz")),
        "{text}"
    );
    assert!(text.contains("BACKUP_CRON_EXPRESSION=61 * * * *"), "{text}");
    assert!(text.contains("WEBDAV_PASSWORD=(redacted)"), "{text}");
    let err = stderr(&out);
    assert!(
        err.contains("BACKUP_CRON_EXPRESSION=\"61 * * * *\""),
        "{err}"
    );
    assert!(!text.contains("hunter2") && !err.contains("hunter2"));
}

#[test]
fn check_exits_0_when_valid_and_2_with_every_problem() {
    let s = Setup::new();
    let out = run(&mut s.command(&["check"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("configuration OK: 1 schedule(s)"));

    let mut cmd = s.command(&["check"]);
    cmd.env("BACKUP_CRON_EXPRESSION", "61 * * * *")
        .env("LOCK_TIMEOUT", "forever")
        .env("BACKUP_RETENTION_KEEP_DAILY", "-3")
        .env("GOOGLE_DRIVE_FOLDER_ID", "x")
        .env("GOOGLE_DRIVE_CREDENTIALS_JSON", "{}")
        .env("BACKUP_RETENTON_DAYS", "3");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for needle in [
        "5 problems",
        "BACKUP_CRON_EXPRESSION=\"61 * * * *\"",
        "LOCK_TIMEOUT=\"forever\"",
        "BACKUP_RETENTION_KEEP_DAILY=\"-3\"",
        "GOOGLE_DRIVE_CREDENTIALS_JSON=\"(redacted)\": no \"type\"; expected a service account's key file",
        "BACKUP_RETENTON_DAYS=\"3\": unknown variable; did you mean BACKUP_RETENTION_DAYS?",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
}

#[test]
fn check_fails_without_sources_a_destination_or_a_reachable_docker() {
    let s = Setup::new();
    let out = run(&mut s.command(&["check"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("[default] sources: OK: "), "{text}");
    assert!(text.contains("[default] Docker: off"), "{text}");

    let mut cmd = s.command(&["check"]);
    cmd.env("BACKUP_SOURCES", s.tmp.path().join("gone"))
        .env("BACKUP_ARCHIVE", s.tmp.path().join("not-mounted"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for needle in [
        "[default] sources: FAILED: ",
        "does not exist (BACKUP_SOURCES",
        "[default] Docker: FAILED: ",
        "there is no socket at /nonexistent/docker.sock",
        "[default] destinations: FAILED: none: nothing is mounted at BACKUP_ARCHIVE=",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn docker_socket_problems_get_one_sentence() {
    let s = Setup::new();
    // Root-only and not listening: a user other than root is refused, root finds nobody.
    let socket = s.tmp.path().join("docker.sock");
    fs::write(&socket, "").unwrap();
    fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let host = format!("unix://{}", socket.display());
    let out = run(s.command(&["check"]).env("DOCKER_HOST", &host));
    assert!(
        stdout(&out).contains("nothing accepts connections at"),
        "{}",
        stdout(&out)
    );
    // As nobody (the folders it needs are open to all).
    for dir in [s.tmp.path(), &s.src, &s.out] {
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    let template = s.command(&["check"]);
    let mut cmd = same_env(&template, "setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(template.get_program())
        .arg("check")
        .env("DOCKER_HOST", &host)
        .env("BACKUP_STATE_DIR", s.tmp.path().join("nobody-state"));
    let out = run(&mut cmd);
    let text = stdout(&out);
    assert!(
        text.contains("permission denied on the socket")
            && text.contains("dunnage runs as uid 65534"),
        "{text}{}",
        stderr(&out)
    );
    assert!(!text.contains("hyper"), "{text}");
}

#[test]
fn a_value_that_is_not_utf8_is_named_and_nothing_runs() {
    use std::os::unix::ffi::OsStringExt;
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let bad = std::ffi::OsString::from_vec(vec![b'b', 0xff, b'k']);
    let out = run(s.backup().env("AWS_S3_BUCKET_NAME", &bad));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("AWS_S3_BUCKET_NAME=\"(not shown)\": the value is not valid UTF-8"),
        "{err}"
    );
    assert!(
        s.archive_names().is_empty(),
        "nothing stored (was a local-only run)"
    );
}

#[test]
fn a_missing_secret_file_stops_everything() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let out = run(s
        .backup()
        .env("BACKUP_ARCHIVE_FILE", s.tmp.path().join("nope"))
        .env_remove("BACKUP_ARCHIVE"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("BACKUP_ARCHIVE_FILE="),
        "{}",
        stderr(&out)
    );
    assert!(s.archive_names().is_empty());
}

#[test]
fn conf_d_schedules_run_alone_or_all_together() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let conf = s.tmp.path().join("conf.d");
    fs::create_dir(&conf).unwrap();
    // Values come from the file, `$VAR` expands against the environment and earlier lines,
    // keys absent from the file fall back to the environment (BACKUP_SOURCES, the archive).
    fs::write(
        conf.join("01-db.env"),
        "KIND=db\nBACKUP_FILENAME=${KIND}-${APP:-none}.{{ .Extension }}\nBACKUP_COMPRESSION=zst\n",
    )
    .unwrap();
    fs::write(
        conf.join("02-files.env"),
        "# files\nBACKUP_FILENAME=\"files $APP.tar\"\nBACKUP_COMPRESSION=none\n",
    )
    .unwrap();

    let out = run(s
        .backup()
        .arg("--config")
        .arg("02-files.env")
        .env("APP", "shop"));
    assert!(out.status.success());
    assert_eq!(s.archive_names(), ["files shop.tar"]);
    // (A stored backup is never replaced: the next run would fail on this name.)
    fs::remove_file(s.out.join("files shop.tar")).unwrap();

    let out = run(s.backup().env("APP", "shop"));
    assert!(out.status.success());
    assert_eq!(s.archive_names(), ["db-shop.tar.zst", "files shop.tar"]);

    let out = run(s.backup().arg("--config").arg("03-missing.env"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("available: 01-db.env, 02-files.env"));

    // An empty conf.d is a mistake, not zero schedules.
    fs::remove_file(conf.join("01-db.env")).unwrap();
    fs::remove_file(conf.join("02-files.env")).unwrap();
    let out = run(&mut s.backup());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("holds no files"));
}

#[test]
fn a_backup_prunes_old_archives_by_days_within_the_prefix_only() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    old_backup(&s.out, "backup-old-1.tar", 30);
    old_backup(&s.out, "backup-old-2.tar", 8);
    old_backup(&s.out, "backup-recent.tar", 2);
    old_backup(&s.out, "other-old.tar", 30);
    fs::create_dir(s.out.join("backup-subfolder")).unwrap();
    old_backup(&s.out.join("backup-subfolder"), "backup-deep.tar", 30);

    let out = run(s
        .backup()
        .env("BACKUP_COMPRESSION", "none")
        .env("BACKUP_FILENAME", "backup-new.tar")
        .env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_PRUNING_PREFIX", "backup-"));
    assert!(out.status.success());
    assert_eq!(
        s.archive_names(),
        [
            "backup-new.tar",
            "backup-recent.tar",
            "backup-subfolder",
            "other-old.tar"
        ]
    );
    assert!(
        s.out.join("backup-subfolder/backup-deep.tar").exists(),
        "never recursive"
    );
    assert!(
        stderr(&out).contains("pruned 2 of 4 (0 errors)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn retention_zero_never_empties_the_destination() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    old_backup(&s.out, "backup-a.tar", 3);
    let out = run(s
        .backup()
        .env("BACKUP_COMPRESSION", "none")
        .env("BACKUP_FILENAME", "backup-b.tar")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .env("BACKUP_RETENTION_DAYS", "0"));
    assert!(
        out.status.success(),
        "a refused prune is a warning, not a failure"
    );
    assert_eq!(s.archive_names(), ["backup-a.tar", "backup-b.tar"]);
    assert!(
        stderr(&out).contains("would delete all 2 backup(s)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn keep_rules_and_skip_backends_work_through_a_backup() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    for d in 1..=5 {
        old_backup(&s.out, &format!("backup-{d}.tar"), d);
    }
    let out = run(s
        .backup()
        .env("BACKUP_COMPRESSION", "none")
        .env("BACKUP_FILENAME", "backup-0.tar")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .env("BACKUP_RETENTION_KEEP_LAST", "3")
        .env("BACKUP_SKIP_BACKENDS_FROM_PRUNE", "local"));
    assert!(out.status.success());
    assert_eq!(s.archive_names().len(), 6, "local is skipped");

    let out = run(s
        .backup()
        .env("BACKUP_COMPRESSION", "none")
        .env("BACKUP_FILENAME", "backup-00.tar")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .env("BACKUP_RETENTION_KEEP_LAST", "3"));
    assert!(out.status.success());
    assert_eq!(
        s.archive_names(),
        ["backup-0.tar", "backup-00.tar", "backup-1.tar"]
    );
}

#[test]
fn prune_dry_run_explains_and_deletes_nothing() {
    let s = Setup::new();
    old_backup(&s.out, "backup-old.tar", 40);
    old_backup(&s.out, "backup-new.tar", 1);
    let mut cmd = s.command(&["prune", "--dry-run"]);
    cmd.env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .env("BACKUP_RETENTION_KEEP_MONTHLY", "1");
    let out = run(&mut cmd);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("delete backup-old.tar"), "{text}");
    assert!(text.contains("older than 7 days"), "{text}");
    assert!(text.contains("keep   backup-new.tar"), "{text}");
    assert!(text.contains("newer than 7 days, monthly"), "{text}");
    assert!(
        text.contains("dry run: 1 backup(s) would be deleted"),
        "{text}"
    );
    assert_eq!(s.archive_names(), ["backup-new.tar", "backup-old.tar"]);

    // The same without --dry-run deletes.
    let mut cmd = s.command(&["prune"]);
    cmd.env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_PRUNING_PREFIX", "backup-");
    let out = run(&mut cmd);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("deleted 1 of 2 backup(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(s.archive_names(), ["backup-new.tar"]);
}

#[test]
fn a_run_waits_for_the_lock_another_process_holds_then_times_out() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let lock_path = s.tmp.path().join("lock");
    let file = fs::File::create(&lock_path).unwrap();
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap();

    let out = run(s.backup().env("LOCK_TIMEOUT", "1s"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("longer than LOCK_TIMEOUT"),
        "{}",
        stderr(&out)
    );
    assert!(s.archive_names().is_empty());

    // Released while the run waits: it goes ahead and reports the wait.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(held);
    });
    let out = run(s.backup().env("LOCK_TIMEOUT", "30s"));
    releaser.join().unwrap();
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(err.contains("another backup is running; waiting"), "{err}");
    assert_eq!(s.archive_names().len(), 1);
}

#[test]
fn list_shows_this_schedules_backups_per_destination_as_text_and_json() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    old_backup(&s.out, "db-2026-01-01.tar.gz", 30);
    old_backup(&s.out, "db-2026-01-02.tar.gz", 29);
    old_backup(&s.out, "notes.txt", 40);
    let list = |args: &[&str]| {
        let mut all = vec!["list"];
        all.extend_from_slice(args);
        let mut cmd = s.command(&all);
        cmd.env("BACKUP_PRUNING_PREFIX", "db-");
        run(&mut cmd)
    };
    let out = list(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("[default] Local: db-2026-01-01.tar.gz  "),
        "{text}"
    );
    assert!(
        lines[1].starts_with("[default] Local: db-2026-01-02.tar.gz  "),
        "{text}"
    );

    let out = list(&["--json", "--from", "local"]);
    assert_eq!(out.status.code(), Some(0));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 2);
    assert_eq!(value[1]["name"], "db-2026-01-02.tar.gz");
    assert_eq!(value[1]["destination"], "Local");

    let out = list(&["--from", "s3"]);
    assert_eq!(stdout(&out).trim(), "no backups");
    let out = list(&["--from", "ftp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a destination"),
        "{}",
        stderr(&out)
    );
}
