//! The foreground scheduler end to end: an every-second cron writes real backups, retention
//! prunes them, a one-shot `backup` waits for the lock, SIGTERM stops it cleanly.

use std::fs;
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Collects a child's stderr on a thread so the test can look at it while it runs.
struct Log {
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Log {
    fn follow(child: &mut Child) -> Self {
        let mut pipe = child.stderr.take().unwrap();
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Log { text }
    }

    fn count(&self, needle: &str) -> usize {
        self.text.lock().unwrap().matches(needle).count()
    }

    fn wait_for(&self, needle: &str, times: usize, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.count(needle) < times {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}:\n{}",
                self.all()
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "scheduler exited:\n{}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn all(&self) -> String {
        self.text.lock().unwrap().clone()
    }
}

#[test]
fn the_scheduler_backs_up_prunes_shares_the_lock_and_stops_cleanly() {
    let s = Setup::new();
    fs::write(s.src.join("data.txt"), "payload").unwrap();
    // Makes each run take a moment, so a one-shot backup can meet a run holding the lock.
    fs::File::create(s.src.join("sparse.bin"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let configure = |cmd: &mut std::process::Command| {
        cmd.env("BACKUP_COMPRESSION", "zst")
            .env("BACKUP_FILENAME", "backup-%Y%m%dT%H%M%S.{{ .Extension }}")
            .env("BACKUP_RETENTION_KEEP_LAST", "2")
            .env("LOCK_TIMEOUT", "2m");
    };

    let mut scheduler = s.command(&[]);
    scheduler
        .env("BACKUP_CRON_EXPRESSION", "* * * * * *")
        .stderr(Stdio::piped());
    configure(&mut scheduler);
    let mut scheduler = scheduler.spawn().unwrap();
    let _kill_on_panic = KillOnPanic(scheduler.id());
    let log = Log::follow(&mut scheduler);

    log.wait_for("run succeeded", 2, &mut scheduler);

    // Start a one-shot backup at a moment a scheduled run is writing (its partial file
    // exists): it has to wait for the lock.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.archive_names().iter().any(|n| n.ends_with(".partial")) {
        assert!(Instant::now() < deadline, "no run in progress seen");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut one_shot = s.backup();
    configure(&mut one_shot);
    // Its own name: it gets the lock in the second the scheduled run it waited for began,
    // and a stored backup is never replaced.
    one_shot.env(
        "BACKUP_FILENAME",
        "backup-%Y%m%dT%H%M%S-manual.{{ .Extension }}",
    );
    let out = run(&mut one_shot);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("another backup is running; waiting"),
        "{}",
        stderr(&out)
    );

    let before = log.count("run succeeded");
    log.wait_for("run succeeded", before.max(4) + 1, &mut scheduler);
    // Right after a run finished (and pruned), stop the scheduler; a run that just started
    // is aborted and must leave nothing behind.
    signal(&scheduler, nix::sys::signal::Signal::SIGTERM);
    let status = scheduler.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100)); // let the log thread drain
    let text = log.all();
    eprintln!("{text}");
    assert!(status.success(), "{status:?}");
    assert!(text.contains("SIGTERM: shutting down"));
    assert!(text.contains("scheduler stopped"));

    let names = s.archive_names();
    assert!(
        !names.iter().any(|n| n.starts_with('.')),
        "no partial file may remain: {names:?}"
    );
    // Many runs happened, retention kept the newest two.
    assert!(log.count("run succeeded") >= 5);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        text.contains("pruned 1 of 3"),
        "retention pruned as it went"
    );
    for name in &names {
        assert!(
            list(&s.out.join(name))
                .iter()
                .any(|n| n.ends_with("data.txt"))
        );
    }
}

#[test]
fn a_failed_scheduled_run_is_logged_and_the_scheduler_keeps_going() {
    let s = Setup::new();
    let sources = s.tmp.path().join("not-yet-mounted");
    let mut scheduler = s.command(&[]);
    scheduler
        .env("BACKUP_SOURCES", &sources)
        .env("BACKUP_CRON_EXPRESSION", "* * * * * *")
        .env("BACKUP_FILENAME", "backup-%H%M%S.tar")
        .env("BACKUP_COMPRESSION", "none")
        .arg("-foreground") // the reference's flag: same as no command
        .stderr(Stdio::piped());
    let mut scheduler = scheduler.spawn().unwrap();
    let _kill_on_panic = KillOnPanic(scheduler.id());
    let log = Log::follow(&mut scheduler);

    log.wait_for("run FAILED", 2, &mut scheduler);
    assert!(
        log.all()
            .contains(&format!("{} does not exist", sources.display()))
    );
    // The start-up summary, and a warning for what `check` would fail on.
    let all = log.all();
    assert!(
        all.contains(concat!(
            "dunnage ",
            env!("CARGO_PKG_VERSION"),
            " starting: 1 schedule(s)"
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!("destinations: Local {}", s.out.display())),
        "{all}"
    );
    assert!(
        all.contains("WARN [default] sources: FAILED: ")
            && all.contains("`dunnage check` fails on this"),
        "{all}"
    );
    // The volume appears: the next run succeeds without a restart.
    fs::create_dir(&sources).unwrap();
    fs::write(sources.join("f"), "x").unwrap();
    log.wait_for("run succeeded", 1, &mut scheduler);

    signal(&scheduler, nix::sys::signal::Signal::SIGINT);
    assert!(scheduler.wait().unwrap().success());
    assert!(!s.archive_names().is_empty());
}

#[test]
fn a_verify_schedule_checks_every_stored_backup_and_reports_damage() {
    let s = Setup::new();
    fs::write(s.src.join("data.txt"), "payload").unwrap();
    for name in ["backup-a.tar", "backup-b.tar"] {
        let out = run(s
            .backup()
            .env("BACKUP_COMPRESSION", "none")
            .env("BACKUP_FILENAME", name));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // One of them damaged after it was stored (same size, other bytes).
    let mut bytes = fs::read(s.out.join("backup-a.tar")).unwrap();
    bytes[600] ^= 0xff;
    fs::write(s.out.join("backup-a.tar"), bytes).unwrap();

    let mut scheduler = s.command(&[]);
    scheduler
        .env("BACKUP_CRON_EXPRESSION", "0 0 1 1 *")
        .env("BACKUP_VERIFY_CRON_EXPRESSION", "* * * * * *")
        .env("BACKUP_VERIFY_CRON_LEVEL", "hash")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .stderr(Stdio::piped());
    let mut scheduler = scheduler.spawn().unwrap();
    let _kill_on_panic = KillOnPanic(scheduler.id());
    let log = Log::follow(&mut scheduler);
    log.wait_for("[default] verify FAILED", 1, &mut scheduler);
    signal(&scheduler, nix::sys::signal::Signal::SIGTERM);
    assert!(scheduler.wait().unwrap().success());
    let text = log.all();
    assert!(
        text.contains("1 damaged backup(s): Local: backup-a.tar")
            && text.contains("1 of 2 backup(s) verified (hash)"),
        "{text}"
    );
    // `list` remembers what the scheduled verify found.
    let listed = String::from_utf8(run(&mut s.command(&["list"])).stdout).unwrap();
    assert!(
        listed.contains("backup-a.tar") && listed.contains("verified DAMAGED (hash"),
        "{listed}"
    );
    assert!(listed.contains("verified ok (hash"), "{listed}");
}
