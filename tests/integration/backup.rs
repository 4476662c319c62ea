//! `dunnage backup` end to end: the real binary, a real source tree, the system `tar`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::*;

fn round_trip(compression: &str, extension: &str) {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let out = run(s.backup().env("BACKUP_COMPRESSION", compression));
    assert!(out.status.success(), "{}", stderr(&out));

    let archive = s.only_archive();
    let name = archive.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("backup-") && name.ends_with(extension),
        "{name}"
    );
    assert_eq!(
        fs::metadata(&archive).unwrap().mode() & 0o777,
        0o600,
        "archives are private to their owner"
    );
    // The stock tools accept the stream.
    match compression {
        "gz" => assert!(
            std::process::Command::new("gzip")
                .arg("-t")
                .arg(&archive)
                .status()
                .unwrap()
                .success()
        ),
        "zst" => assert!(
            std::process::Command::new("zstd")
                .arg("-qt")
                .arg(&archive)
                .status()
                .unwrap()
                .success()
        ),
        _ => {}
    }
    let dest = s.tmp.path().join("restore");
    extract(&archive, &dest);
    assert_same_tree(&s.src, &dest, &[]);
}

#[test]
fn gzip_archive_restores_byte_for_byte() {
    round_trip("gz", ".tar.gz");
}

#[test]
fn zstd_archive_restores_byte_for_byte() {
    round_trip("zst", ".tar.zst");
}

#[test]
fn uncompressed_archive_restores_byte_for_byte() {
    round_trip("none", ".tar");
}

#[test]
fn entries_are_stored_relative_to_root() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    assert!(run(&mut s.backup()).status.success());
    let src = s
        .src
        .strip_prefix("/")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(list(&s.only_archive()), [src.clone(), format!("{src}/f")]);
}

#[test]
fn an_excluded_folder_skips_its_whole_subtree() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    fs::create_dir_all(s.src.join("cache/inner")).unwrap();
    fs::write(
        s.src.join("cache/inner/keep.txt"),
        "would match nothing alone",
    )
    .unwrap();
    fs::write(s.src.join("app_data/tmp.log"), "noise").unwrap();
    // `/cache$` matches only the folder itself: its children do not match the expression, so
    // they are left out only because the folder's whole subtree is skipped.
    let out = run(s.backup().env("BACKUP_EXCLUDE_REGEXP", r"/cache$|\.log$"));
    assert!(out.status.success());

    let dest = s.tmp.path().join("restore");
    extract(&s.only_archive(), &dest);
    let cache = s.src.join("cache");
    let log = s.src.join("app_data/tmp.log");
    assert_same_tree(&s.src, &dest, &[&cache, &log]);
}

#[test]
fn the_file_name_is_rendered_like_the_reference() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let zone = jiff::tz::TimeZone::get("Pacific/Kiritimati").unwrap();
    let before = jiff::Zoned::now().with_time_zone(zone.clone());
    let out = run(s
        .backup()
        .env("TZ", "Pacific/Kiritimati")
        .env("APP", "shop")
        .env("BACKUP_FILENAME_EXPAND", "true")
        .env("BACKUP_COMPRESSION", "zst")
        .env(
            "BACKUP_FILENAME",
            "$APP-${APP}_%Y-%m-%d_%z.{{ .Extension }}",
        ));
    assert!(out.status.success());
    let after = jiff::Zoned::now().with_time_zone(zone);
    let expect = |at: &jiff::Zoned| format!("shop-shop_{}_+1400.tar.zst", at.strftime("%Y-%m-%d"));
    let names = s.archive_names();
    assert!(
        names == [expect(&before)] || names == [expect(&after)],
        "{names:?}"
    );
}

#[test]
fn without_expansion_dollar_signs_stay_literal() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let out = run(s
        .backup()
        .env("APP", "shop")
        .env("BACKUP_COMPRESSION", "none")
        .env("BACKUP_FILENAME", "$APP.{{ .Extension }}"));
    assert!(out.status.success());
    assert_eq!(s.archive_names(), ["$APP.tar"]);
}

#[test]
fn the_latest_symlink_points_at_the_newest_archive() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    for (name, content) in [("first", "1"), ("second", "2")] {
        fs::write(s.src.join("f"), content).unwrap();
        let out = run(s
            .backup()
            .env("BACKUP_COMPRESSION", "none")
            .env("BACKUP_FILENAME", format!("{name}.tar"))
            .env("BACKUP_LATEST_SYMLINK", "latest.tar"));
        assert!(out.status.success());
        assert_eq!(
            fs::read_link(s.out.join("latest.tar")).unwrap(),
            Path::new(&format!("{name}.tar"))
        );
    }
    assert_eq!(s.archive_names(), ["first.tar", "latest.tar", "second.tar"]);
    // Following the link reaches the newest archive's content.
    let dest = s.tmp.path().join("restore");
    extract(&s.out.join("latest.tar"), &dest);
    assert_eq!(
        fs::read_to_string(extracted(&dest, &s.src.join("f"))).unwrap(),
        "2"
    );
}

#[test]
fn an_unreadable_file_fails_the_run_and_leaves_nothing() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let secret = s.src.join("app_data/secret.key");
    fs::write(&secret, "k").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    // The socket from the rich tree is irrelevant here and root-owned; drop it.
    let _ = fs::remove_file(s.src.join("socket"));

    let mut cmd = s.backup();
    if is_root() {
        // Root reads any file; run as an unprivileged user so the permission bits bite. That
        // user cannot reach the build folder below /root, so it runs a copy of the binary.
        use std::os::unix::process::CommandExt;
        let nobody = 65534;
        let bin = s.tmp.path().join("dunnage");
        fs::copy(env!("CARGO_BIN_EXE_dunnage"), &bin).unwrap();
        let template = cmd;
        cmd = same_env(&template, &bin);
        cmd.args(template.get_args());
        for p in walkdir::WalkDir::new(s.tmp.path()) {
            let p = p.unwrap().into_path();
            if p != secret {
                let _ = std::os::unix::fs::lchown(&p, Some(nobody), Some(nobody));
            }
        }
        cmd.uid(nobody).gid(nobody);
    }
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot read {}", secret.display())),
        "{err}"
    );
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(
        s.archive_names(),
        Vec::<String>::new(),
        "no archive, no partial file"
    );
}

#[test]
fn a_missing_source_folder_fails_with_its_name() {
    let s = Setup::new();
    let missing = s.tmp.path().join("not-mounted");
    let out = run(s.backup().env("BACKUP_SOURCES", &missing));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("{} does not exist", missing.display())));
    assert!(s.archive_names().is_empty());
}

#[test]
fn a_missing_archive_folder_turns_local_storage_off_and_says_so() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let missing = s.tmp.path().join("no-archive");
    let out = run(s.backup().env("BACKUP_ARCHIVE", &missing));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("local storage is off"), "{err}");
    assert!(
        err.contains(&format!("BACKUP_ARCHIVE={}", missing.display())),
        "{err}"
    );
    assert!(!missing.exists());
}

#[test]
fn invalid_settings_are_all_reported_with_exit_code_2() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let out = run(s
        .backup()
        .env("BACKUP_COMPRESSION", "brotli")
        .env("BACKUP_EXCLUDE_REGEXP", "[z-a]")
        .env("BACKUP_FILENAME", "x-{{ .Name }}")
        .env("BACKUP_FILENAME_EXPAND", "maybe"));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for needle in [
        "4 problems",
        r#"BACKUP_COMPRESSION="brotli": expected one of gz, zst, none"#,
        r#"BACKUP_EXCLUDE_REGEXP="[z-a]""#,
        r#"BACKUP_FILENAME="x-{{ .Name }}""#,
        r#"BACKUP_FILENAME_EXPAND="maybe": expected a boolean"#,
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    assert!(
        s.archive_names().is_empty(),
        "nothing runs on invalid configuration"
    );
}

#[test]
fn invoked_as_backup_it_runs_a_backup() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let link = s.tmp.path().join("backup");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_dunnage"), &link).unwrap();
    // Same environment as `dunnage backup`, but no subcommand: the name says it.
    let out = run(&mut same_env(&s.backup(), &link));
    assert!(out.status.success());
    assert!(s.only_archive().to_string_lossy().ends_with(".tar.gz"));
}

#[test]
fn usage_errors_exit_with_2() {
    let out = run(dunnage().arg("no-such-command"));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn spool_always_goes_through_a_private_file_that_is_removed() {
    let s = Setup::new();
    build_rich_tree(&s.src);
    let spool = s.tmp.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let out = run(s
        .backup()
        .env("BACKUP_SPOOL", "always")
        .env("BACKUP_SPOOL_DIR", &spool)
        .env("BACKUP_COMPRESSION", "zst"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("archive spooled to"));
    assert_eq!(
        fs::read_dir(&spool).unwrap().count(),
        0,
        "spool file removed"
    );
    let dest = s.tmp.path().join("restore");
    extract(&s.only_archive(), &dest);
    assert_same_tree(&s.src, &dest, &[]);

    // A missing spool folder is a clear error and nothing is stored.
    let out = run(s
        .backup()
        .env("BACKUP_SPOOL", "always")
        .env("BACKUP_SPOOL_DIR", s.tmp.path().join("no-spool"))
        .env("BACKUP_FILENAME", "second.tar"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("spooling to BACKUP_SPOOL_DIR"),
        "{}",
        stderr(&out)
    );
    assert!(!s.out.join("second.tar").exists());
}

#[test]
fn stale_partials_are_removed_by_age_whoever_left_them_and_live_ones_are_kept() {
    let s = Setup::new();
    fs::write(s.src.join("a.txt"), "data").unwrap();
    // Left by a container that no longer exists (another host name, a killed process).
    let stale = s.out.join(".backup-old.tar.gz.gone-container.17.partial");
    let live = s.out.join(".backup-new.tar.gz.other-instance.18.partial");
    fs::write(&stale, "half an archive").unwrap();
    fs::write(&live, "an upload in progress").unwrap();
    let touched = std::process::Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&stale)
        .status()
        .unwrap();
    assert!(touched.success());
    let out = run(&mut s.backup());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stale.exists(), "a partial unchanged for 2 hours is stale");
    assert!(
        live.exists(),
        "a fresh partial may be another instance's live upload"
    );
    assert!(stderr(&out).contains("left unfinished by an interrupted run"));
}

#[test]
fn a_second_run_with_the_same_name_fails_and_keeps_the_first_backup() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "first").unwrap();
    let backup = || {
        let mut cmd = s.backup();
        cmd.env("BACKUP_FILENAME", "same-second.tar.gz");
        run(&mut cmd)
    };
    let out = backup();
    assert!(out.status.success(), "{}", stderr(&out));
    let first = fs::read(s.only_archive()).unwrap();
    fs::write(s.src.join("f"), "second, longer").unwrap();
    let out = backup();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already exists and backups are never replaced"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read(s.only_archive()).unwrap(),
        first,
        "the first is kept"
    );
}

/// A memory cgroup with `limit` bytes that a shell joins before running `program`; removed
/// on drop. cgroup v1's memory controller (this host's) or v2.
pub(crate) struct MemoryCgroup(std::path::PathBuf);

impl MemoryCgroup {
    pub(crate) fn new(limit: u64) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("dunnage-test-{}-{n}", std::process::id());
        for (hierarchy, file) in [
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes"),
            ("/sys/fs/cgroup", "memory.max"),
        ] {
            let dir = Path::new(hierarchy).join(&name);
            if fs::create_dir(&dir).is_ok() {
                fs::write(dir.join(file), limit.to_string()).expect("setting the limit");
                return Self(dir);
            }
        }
        panic!("cannot create a memory cgroup (the tests run as root on cgroup v1 or v2)");
    }

    pub(crate) fn command(&self, template: &std::process::Command) -> std::process::Command {
        let mut cmd = same_env(template, "sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(&self.0)
            .arg(template.get_program())
            .args(template.get_args());
        cmd
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn compressor_workers_fit_in_the_containers_memory_limit() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let mut template = s.backup();
    template.env("BACKUP_COMPRESSION", "zst");
    // 160 MiB: half of it, less 64 MiB for the rest, leaves room for one 10 MiB worker.
    let cgroup = MemoryCgroup::new(160 << 20);
    let out = run(&mut cgroup.command(&template));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(zst level 3, 1 threads)"),
        "{}",
        stderr(&out)
    );
    // Without a limit: one per CPU.
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(cpus > 1, "this test needs a machine with 2 or more CPUs");
    fs::remove_file(s.only_archive()).unwrap();
    let out = run(&mut template);
    assert!(
        stderr(&out).contains(&format!("(zst level 3, {cpus} threads)")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_long_run_logs_progress_at_a_steady_interval() {
    let s = Setup::new();
    fs::create_dir(s.src.join("big")).unwrap();
    fs::write(s.src.join("big/data"), pseudo_random(64 << 20, 3)).unwrap();
    let out = run(s
        .backup()
        .env("BACKUP_COMPRESSION", "zst")
        .env("BACKUP_PROGRESS_INTERVAL", "10ms"));
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("progress: ")).collect();
    assert!(!lines.is_empty(), "{log}");
    let folder = s.src.join("big").display().to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" read (") && l.contains(&format!("now in {folder}"))),
        "{lines:?}"
    );

    fs::remove_file(s.only_archive()).unwrap();
    let out = run(s.backup().env("BACKUP_PROGRESS_INTERVAL", "0"));
    assert!(!stderr(&out).contains("progress: "), "0 turns it off");
}

/// The issue's model: every bad input stops the run before anything happens (exit 2), names
/// the variable, never prints a secret, and neither stores nor prunes anything.
#[test]
fn bad_inputs_exit_2_naming_the_variable_and_nothing_is_stored_or_deleted() {
    const SECRET: &str = "s3cr3t-value-Zq9";
    let s3 = [
        ("AWS_S3_BUCKET_NAME", "shop"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ];
    let sftp = [
        ("SSH_HOST_NAME", "files.example.org"),
        ("SSH_USER", "u"),
        ("SSH_PASSWORD", SECRET),
    ];
    let azure = [
        ("AZURE_STORAGE_ACCOUNT_NAME", "acme"),
        ("AZURE_STORAGE_CONTAINER_NAME", "backups"),
    ];
    let not_a_key = std::env::temp_dir().join(format!("not-a-key-{}", std::process::id()));
    fs::write(&not_a_key, "hello\n").unwrap();
    let not_a_key = not_a_key.display().to_string();
    let long_name = format!("{}.tar.gz", "x".repeat(240));
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("AWS_STORAGE_CLASS", "GLACIAR")], "AWS_STORAGE_CLASS"),
        (
            vec![("AWS_S3_BUCKET_NAME", "Shop_Backups")],
            "AWS_S3_BUCKET_NAME",
        ),
        (vec![("AWS_ENDPOINT", "127.0.0.1:99999")], "AWS_ENDPOINT"),
        (
            vec![(
                "AWS_ENDPOINT_CA_CERT",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            )],
            "AWS_ENDPOINT_CA_CERT",
        ),
        (
            azure
                .iter()
                .copied()
                .chain([("AZURE_STORAGE_PRIMARY_ACCOUNT_KEY", "not base64!")])
                .collect(),
            "AZURE_STORAGE_PRIMARY_ACCOUNT_KEY",
        ),
        (
            azure
                .iter()
                .copied()
                .chain([
                    ("AZURE_STORAGE_PRIMARY_ACCOUNT_KEY", "a2V5"),
                    ("AZURE_STORAGE_ENDPOINT", "https://"),
                ])
                .collect(),
            "AZURE_STORAGE_ENDPOINT",
        ),
        (
            vec![
                ("DROPBOX_REFRESH_TOKEN", SECRET),
                ("DROPBOX_APP_KEY", "k"),
                ("DROPBOX_APP_SECRET", "s"),
                ("DROPBOX_OAUTH2_ENDPOINT", "http://127.0.0.1:9/"),
                ("DROPBOX_ENDPOINT", "api.example.org/2"),
            ],
            "DROPBOX_ENDPOINT",
        ),
        (
            sftp.iter()
                .copied()
                .chain([("SSH_IDENTITY_FILE", not_a_key.as_str())])
                .collect(),
            "SSH_IDENTITY_FILE",
        ),
        (
            sftp.iter()
                .copied()
                .chain([("SSH_KNOWN_HOSTS", not_a_key.as_str())])
                .collect(),
            "SSH_KNOWN_HOSTS",
        ),
        (
            vec![
                ("SSH_HOST_NAME", "files example.org"),
                ("SSH_USER", "u"),
                ("SSH_PASSWORD", SECRET),
            ],
            "SSH_HOST_NAME",
        ),
        (
            vec![("BACKUP_FILENAME", long_name.as_str())],
            "BACKUP_FILENAME",
        ),
        (vec![("BACKUP_FILENAME", "a\tb.tar.gz")], "BACKUP_FILENAME"),
        (
            vec![("BACKUP_PRUNING_LEEWAY", "400d")],
            "BACKUP_PRUNING_LEEWAY",
        ),
        (vec![("BACKUP_RETENTON_DAYS", "7")], "BACKUP_RETENTION_DAYS"),
        (
            vec![("backup_retention_days", "7")],
            "BACKUP_RETENTION_DAYS",
        ),
        (
            vec![
                ("AWS_S3_BUCKETNAME", "shop"),
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", SECRET),
            ],
            "AWS_S3_BUCKET_NAME",
        ),
        (
            vec![("WEBDAV_USERNAME", "u"), ("WEBDAV_PASSWORD", SECRET)],
            "WEBDAV_URL",
        ),
        (
            vec![("BACKUP_CONF_DIR", "/no/such/conf.d")],
            "BACKUP_CONF_DIR",
        ),
        (
            vec![("BACKUP_COMPRESSION_THREADS", "-2")],
            "BACKUP_COMPRESSION_THREADS",
        ),
    ];
    for (pairs, var) in cases {
        let s = Setup::new();
        fs::write(s.src.join("f"), "x").unwrap();
        // An old backup that a run with retention would delete.
        let old = s.out.join("backup-2020-01-01T00-00-00.tar.gz");
        fs::write(&old, "old").unwrap();
        crate::common::set_mtime(&old, 1_577_836_800);
        let mut cmd = s.backup();
        // Should a case get through, it must not spend minutes retrying.
        cmd.env("BACKUP_RETENTION_DAYS", "1")
            .env("BACKUP_RETRY_TIMEOUT", "1s");
        let uses_s3 = pairs
            .iter()
            .any(|(k, _)| k.starts_with("AWS_") && *k != "AWS_S3_BUCKETNAME");
        if uses_s3 && !pairs.iter().any(|(k, _)| *k == "AWS_S3_BUCKET_NAME") {
            cmd.envs(s3);
        } else if uses_s3 {
            cmd.envs(
                s3.iter()
                    .filter(|(k, _)| *k != "AWS_S3_BUCKET_NAME")
                    .copied(),
            );
        }
        cmd.envs(pairs.iter().copied());
        let out = run(&mut cmd);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{pairs:?}: {err}");
        assert!(err.contains(var), "{pairs:?}: {var} not named in {err}");
        assert!(
            !err.contains(SECRET),
            "{pairs:?}: the secret is shown: {err}"
        );
        assert_eq!(
            s.archive_names(),
            ["backup-2020-01-01T00-00-00.tar.gz"],
            "{pairs:?}: something was stored or deleted"
        );
    }
}
