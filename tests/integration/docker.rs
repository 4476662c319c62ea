//! Stopping and restarting labeled containers, against a real Docker engine (scripts/test
//! starts one with no networks; containers run with `--network none`).

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::docker::{
    FLAKY_RUNTIME, busybox, docker_ok as docker, engine, fail_next, failures_to_come,
};
use crate::common::*;

/// A running app container with `labels`, writing a counter into `data` every 50 ms.
struct App {
    name: String,
}

impl App {
    fn start(test: &str, role: &str, data: &std::path::Path, labels: &[String]) -> App {
        Self::start_with(test, role, data, labels, &[])
    }

    /// As [`App::start`], with more `docker run` options (`extra`).
    fn start_with(
        test: &str,
        role: &str,
        data: &std::path::Path,
        labels: &[String],
        extra: &[&str],
    ) -> App {
        let image = busybox();
        let name = format!("dunnage-{test}-{role}-{}", std::process::id());
        let mount = format!("{}:/data", data.display());
        let mut args = vec![
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            "-v",
            &mount,
        ];
        let label_args: Vec<String> = labels
            .iter()
            .flat_map(|l| ["-l".to_owned(), l.clone()])
            .collect();
        args.extend(label_args.iter().map(String::as_str));
        args.extend(extra);
        args.extend([
            image,
            "sh",
            "-c",
            // Exits on SIGTERM like a real service, so downtime is not the stop timeout.
            "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo $i >> /data/counter-$HOSTNAME; sleep 0.05 & wait $!; done",
        ]);
        docker(&args);
        App { name }
    }

    fn running(&self) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.name]) == "true"
    }

    fn started_at(&self) -> String {
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &self.name])
    }

    fn wait_until(&self, running: bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.running() != running {
            assert!(
                Instant::now() < deadline,
                "{} never became running={running}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .arg("-H")
            .arg(engine())
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// `dunnage backup` aimed at the test engine, with a label value only this test uses.
fn backup(s: &Setup, label: &str) -> Command {
    let mut cmd = s.backup();
    cmd.env("DOCKER_HOST", engine())
        .env("BACKUP_STOP_DURING_BACKUP_LABEL", label)
        .env(
            "BACKUP_STOP_DURING_BACKUP_NO_RESTART_LABEL",
            format!("{label}-keep-down"),
        )
        .env("EXEC_LABEL", label)
        .env("BACKUP_STATE_DIR", s.tmp.path().join("state"))
        .env("BACKUP_STOP_TIMEOUT", "1s");
    cmd
}

/// The label that makes this test's dunnage stop a container.
fn stop(label: &str) -> String {
    format!("docker-volume-backup.stop-during-backup={label}")
}

/// The WARN lines of `err` about attempts at `what` that are tried again.
fn retried<'a>(err: &'a str, what: &str) -> Vec<&'a str> {
    err.lines()
        .filter(|l| l.contains("WARN") && l.contains(what))
        .collect()
}

fn unique(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

#[test]
fn the_no_restart_label_defaults_to_true_as_in_the_reference() {
    let s = Setup::new();
    let down = App::start(
        "norestart",
        "down",
        &s.src,
        &["docker-volume-backup.stop-during-backup-no-restart=true".into()],
    );
    std::thread::sleep(Duration::from_millis(200));
    // BACKUP_STOP_DURING_BACKUP_NO_RESTART_LABEL is not set.
    let mut cmd = s.backup();
    cmd.env("DOCKER_HOST", engine())
        .env("BACKUP_STOP_DURING_BACKUP_LABEL", unique("norestart"))
        // Not the hooks of other tests' containers on the shared engine.
        .env("EXEC_LABEL", unique("norestart"))
        .env("BACKUP_STATE_DIR", s.tmp.path().join("state"))
        .env("BACKUP_STOP_TIMEOUT", "1s");
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("container {} left stopped", down.name)),
        "{}",
        stderr(&out)
    );
    assert!(
        !down.running(),
        "a no-restart=true container is left stopped"
    );
}

#[test]
fn labeled_containers_are_stopped_for_the_archive_and_started_again() {
    let s = Setup::new();
    let label = unique("stop");
    let app = App::start("stop", "app", &s.src, &[stop(&label)]);
    let down = App::start(
        "stop",
        "down",
        &s.src,
        &[format!(
            "docker-volume-backup.stop-during-backup-no-restart={label}-keep-down"
        )],
    );
    let bystander = App::start(
        "stop",
        "other",
        &s.src,
        &["docker-volume-backup.stop-during-backup=someone-else".into()],
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = app.started_at();

    let out = run(backup(&s, &label).env("BACKUP_COMPRESSION", "zst"));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("container {} down", app.name)),
        "{err}"
    );
    assert!(
        err.contains(&format!("container {} left stopped", down.name)),
        "{err}"
    );

    assert!(app.running(), "the app is running again");
    assert_ne!(app.started_at(), before, "the app was stopped and started");
    assert!(!down.running(), "no-restart leaves its container stopped");
    assert!(
        bystander.running(),
        "containers with another label value are not touched"
    );
    assert!(!s.tmp.path().join("state/stopped-containers").exists());

    // The archive holds the app's data as it was while stopped: a complete counter file.
    let dest = s.tmp.path().join("restore");
    extract(&s.only_archive(), &dest);
    let app_id = docker(&["inspect", "-f", "{{.Config.Hostname}}", &app.name]);
    let counter =
        fs::read_to_string(extracted(&dest, &s.src.join(format!("counter-{app_id}")))).unwrap();
    let numbers: Vec<u64> = counter.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        !numbers.is_empty() && counter.ends_with('\n'),
        "whole lines only: {counter:?}"
    );
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "no torn writes"
    );
}

#[test]
fn both_labels_on_one_container_fail_before_anything_stops() {
    let s = Setup::new();
    let label = unique("both");
    let app = App::start(
        "both",
        "app",
        &s.src,
        &[
            stop(&label),
            format!("docker-volume-backup.stop-during-backup-no-restart={label}-keep-down"),
        ],
    );
    let before = app.started_at();
    let out = run(&mut backup(&s, &label));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has both the"), "{}", stderr(&out));
    assert!(app.running());
    assert_eq!(app.started_at(), before, "nothing was stopped");
    assert!(s.archive_names().is_empty());
}

#[test]
fn hooks_run_in_their_containers_and_a_pre_hook_dump_is_archived() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let s = Setup::new();
    fs::set_permissions(&s.src, fs::Permissions::from_mode(0o777)).unwrap();
    let label = unique("hooks");
    // The whole label value runs, pipes included (the reference drops everything after |).
    let db = App::start(
        "hooks",
        "db",
        &s.src,
        &[
            stop(&label),
            format!("docker-volume-backup.exec-label={label}"),
            "docker-volume-backup.archive-pre=echo \"dump for $COMMAND_RUNTIME_ARCHIVE_FILEPATH\" | tr a-z A-Z > /data/dump.sql".into(),
            "docker-volume-backup.archive-pre.user=65534".into(),
            "docker-volume-backup.archive-post=touch /data/post-ran".into(),
        ],
    );
    // Same hook, other exec-label: out of scope, must not run.
    let other = App::start(
        "hooks",
        "other",
        &s.src,
        &[
            "docker-volume-backup.exec-label=someone-else".into(),
            "docker-volume-backup.archive-pre=touch /data/other-ran".into(),
        ],
    );
    let out = run(backup(&s, &label)
        .env("BACKUP_FILENAME", "hooked.tar")
        .env("BACKUP_COMPRESSION", "none")
        .env("EXEC_TIMEOUT", "4321s"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(db.running() && other.running());
    // Nothing of ours is left in the app container after its (post) hook: no watchdog
    // `sleep 4321`, no zombie.
    let procs = docker(&[
        "exec",
        &db.name,
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do echo \"$(cut -d' ' -f3 $p/stat) $(tr '\\0' ' ' < $p/cmdline)\"; done",
    ]);
    assert!(!procs.contains("sleep 4321"), "a watchdog is left: {procs}");
    assert!(
        !procs.lines().any(|l| l.starts_with("Z ")),
        "a zombie is left: {procs}"
    );

    let dest = s.tmp.path().join("restore");
    extract(&s.out.join("hooked.tar"), &dest);
    let dump = extracted(&dest, &s.src.join("dump.sql"));
    let expected = format!("DUMP FOR {}\n", s.out.join("hooked.tar").display()).to_uppercase();
    assert_eq!(fs::read_to_string(&dump).unwrap(), expected);
    assert_eq!(
        fs::metadata(&dump).unwrap().uid(),
        65534,
        "ran as the .user given"
    );
    assert!(s.src.join("post-ran").exists(), "the post hook ran");
    assert!(
        !extracted(&dest, &s.src.join("post-ran")).exists(),
        "after the archive"
    );
    assert!(!s.src.join("other-ran").exists(), "EXEC_LABEL scopes hooks");
}

#[test]
fn a_failing_pre_hook_fails_the_run_before_anything_stops() {
    let s = Setup::new();
    let label = unique("prefail");
    let app = App::start(
        "prefail",
        "db",
        &s.src,
        &[
            stop(&label),
            format!("docker-volume-backup.exec-label={label}"),
            "docker-volume-backup.archive-pre=echo cannot reach database >&2; exit 3".into(),
        ],
    );
    let before = app.started_at();
    let out = run(&mut backup(&s, &label));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for needle in [
        &format!("archive-pre hook in container {}", app.name),
        "exit 3",
        "exited with status 3",
        "cannot reach database",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    assert_eq!(app.started_at(), before, "nothing was stopped");
    assert!(s.archive_names().is_empty());
}

#[test]
fn a_hook_running_past_exec_timeout_is_killed_and_fails() {
    let s = Setup::new();
    let label = unique("timeout");
    let app = App::start(
        "timeout",
        "db",
        &s.src,
        &[
            format!("docker-volume-backup.exec-label={label}"),
            "docker-volume-backup.archive-pre=sleep 60".into(),
        ],
    );
    let started = Instant::now();
    let out = run(backup(&s, &label).env("EXEC_TIMEOUT", "2s"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up at the timeout"
    );
    assert!(stderr(&out).contains("EXEC_TIMEOUT"), "{}", stderr(&out));
    // The in-container watchdog killed the hook: no `sleep 60` is left running.
    std::thread::sleep(Duration::from_secs(1));
    let ps = docker(&["exec", &app.name, "ps"]);
    assert!(!ps.contains("sleep 60"), "{ps}");
    assert!(s.archive_names().is_empty());
}

#[test]
fn a_hook_killed_before_exec_timeout_is_not_called_a_timeout() {
    let s = Setup::new();
    let label = unique("oom");
    let app = App::start(
        "oom",
        "db",
        &s.src,
        &[
            format!("docker-volume-backup.exec-label={label}"),
            // SIGKILL from elsewhere (the OOM killer in a memory-limited container, say)
            // also ends the exec with 137, as the EXEC_TIMEOUT watchdog's kill does.
            "docker-volume-backup.archive-pre=echo dumping; kill -9 $$".into(),
        ],
    );
    let out = run(backup(&s, &label).env("EXEC_TIMEOUT", "60s"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "archive-pre hook in container {} (\"echo dumping; kill -9 $$\") was killed \
             (SIGKILL) before EXEC_TIMEOUT",
            app.name
        )),
        "{err}"
    );
    assert!(!err.contains("ran longer than EXEC_TIMEOUT"), "{err}");
    assert!(err.contains("dumping"), "its output is shown: {err}");
    assert!(s.archive_names().is_empty());
}

#[test]
fn a_hook_the_container_runtime_could_not_start_is_run_again() {
    let s = Setup::new();
    let label = unique("hiccup");
    let app = App::start_with(
        "hiccup",
        "db",
        &s.src,
        &[
            stop(&label),
            format!("docker-volume-backup.exec-label={label}"),
            "docker-volume-backup.archive-pre=echo dumped >> /data/dump.sql".into(),
        ],
        &["--runtime", FLAKY_RUNTIME],
    );
    let before = app.started_at();
    // runc under load: the first two execs never start their process.
    fail_next(&app.name, "exec", 2);
    let out = run(backup(&s, &label)
        .env("BACKUP_FILENAME", "hiccup.tar")
        .env("BACKUP_COMPRESSION", "none"));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(failures_to_come(&app.name, "exec"), 0);
    let retried = retried(&err, "archive-pre hook in");
    assert_eq!(
        retried.len(),
        2,
        "one WARN line per attempt tried again: {err}"
    );
    assert!(
        retried[0].contains(&format!(
            "[default] Docker: archive-pre hook in {}: could not be started by the container \
             runtime (exit 126): OCI runtime exec failed",
            app.name
        )) && retried[0].contains("read init-p: connection reset by peer"),
        "{err}"
    );
    // It ran once, before the app was stopped, and its dump is in the archive.
    let dest = s.tmp.path().join("restore");
    extract(&s.out.join("hiccup.tar"), &dest);
    let dump = extracted(&dest, &s.src.join("dump.sql"));
    assert_eq!(fs::read_to_string(dump).unwrap(), "dumped\n");
    app.wait_until(true);
    assert_ne!(
        app.started_at(),
        before,
        "stopped for the archive, then started"
    );

    // A runtime that keeps failing gives up within BACKUP_RETRY_TIMEOUT, before anything
    // stopped.
    fail_next(&app.name, "exec", 1000);
    let before = app.started_at();
    let started = Instant::now();
    let out = run(backup(&s, &label)
        .env("BACKUP_FILENAME", "hiccup-2.tar")
        .env("BACKUP_RETRY_TIMEOUT", "2s"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up in time"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "archive-pre hook in container {} (\"echo dumped >> /data/dump.sql\") could not \
             be started by the container runtime (exit 126); output:\nOCI runtime exec failed",
            app.name
        )),
        "{err}"
    );
    assert!(failures_to_come(&app.name, "exec") < 1000, "it was tried");
    assert_eq!(app.started_at(), before, "nothing was stopped");
    assert!(!s.out.join("hiccup-2.tar").exists());
}

#[test]
fn an_app_the_runtime_fails_to_start_again_is_started_on_a_later_attempt() {
    let s = Setup::new();
    let label = unique("restart");
    let app = App::start_with(
        "restart",
        "app",
        &s.src,
        &[stop(&label)],
        &["--runtime", FLAKY_RUNTIME],
    );
    let before = app.started_at();
    // runc under load: the first two starts after the archive never start the process.
    fail_next(&app.name, "create", 2);
    let out = run(&mut backup(&s, &label));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(app.running(), "{err}");
    assert_ne!(
        app.started_at(),
        before,
        "stopped for the archive, then started"
    );
    assert_eq!(failures_to_come(&app.name, "create"), 0);
    let retried = retried(&err, "starting container");
    assert_eq!(
        retried.len(),
        2,
        "one WARN line per attempt tried again: {err}"
    );
    assert!(
        retried[0].contains(&format!(
            "[default] Docker: starting container {} again: ",
            app.name
        )) && retried[0].contains("OCI runtime create failed"),
        "{err}"
    );
    assert!(
        err.contains(&format!("started container {} again after", app.name)),
        "{err}"
    );
    assert_eq!(s.archive_names().len(), 1);
    let state = s.tmp.path().join("state");
    assert_eq!(
        fs::read_dir(&state).unwrap().count(),
        0,
        "the crash-safety state file is gone: all are running"
    );
}

#[test]
fn a_failed_run_still_starts_the_containers_again() {
    let s = Setup::new();
    let label = unique("fail");
    let app = App::start("fail", "app", &s.src, &[stop(&label)]);
    let before = app.started_at();
    // An unreadable source folder fails the archive stage after the containers stopped.
    let out = run(backup(&s, &label).env("BACKUP_SOURCES", s.tmp.path().join("missing")));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"));
    assert!(app.running(), "started again although the run failed");
    assert_ne!(app.started_at(), before);
    assert!(!s.tmp.path().join("state/stopped-containers").exists());
}

#[test]
fn an_unreachable_docker_host_fails_the_run_clearly() {
    let s = Setup::new();
    fs::write(s.src.join("f"), "x").unwrap();
    let out = run(backup(&s, "unreachable").env("DOCKER_HOST", "unix:///nonexistent/docker.sock"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock")
    );
    assert!(s.archive_names().is_empty());
}

/// A backup that runs for a long time: a huge sparse file.
fn slow_source(s: &Setup) {
    fs::File::create(s.src.join("huge.bin"))
        .unwrap()
        .set_len(256 << 30)
        .unwrap();
}

#[test]
fn sigterm_during_a_backup_starts_the_containers_again() {
    let s = Setup::new();
    slow_source(&s);
    let label = unique("term");
    let app = App::start("term", "app", &s.src, &[stop(&label)]);
    let child = backup(&s, &label)
        .env("BACKUP_COMPRESSION", "zst")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    app.wait_until(false);
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    eprintln!("{}", stderr(&out));
    assert_eq!(out.status.code(), Some(1));
    assert!(app.running(), "the app is back after the aborted run");
    assert!(
        s.archive_names().is_empty(),
        "no partial file: {:?}",
        s.archive_names()
    );
}

#[test]
fn after_a_kill_9_the_next_start_of_dunnage_brings_the_app_back() {
    let s = Setup::new();
    slow_source(&s);
    let label = unique("kill");
    let app = App::start("kill", "app", &s.src, &[stop(&label)]);
    let mut child = backup(&s, &label)
        .env("BACKUP_COMPRESSION", "zst")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    app.wait_until(false);
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !app.running(),
        "killed outright, dunnage could not restart it"
    );
    // The run's own state file; renamed here to the one file all schedules shared before
    // runs could overlap, which a newer dunnage still reads.
    let own = s.tmp.path().join("state/stopped-containers-default");
    assert!(own.exists());
    fs::rename(&own, s.tmp.path().join("state/stopped-containers")).unwrap();

    // Starting the scheduler (here with a schedule that never fires) recovers at once.
    let template = backup(&s, &label);
    let mut scheduler = same_env(&template, template.get_program());
    scheduler
        .env("BACKUP_CRON_EXPRESSION", "0 0 5 31 2 ?")
        .stderr(Stdio::piped());
    let scheduler = scheduler.spawn().unwrap();
    let _kill_on_panic = KillOnPanic(scheduler.id());
    app.wait_until(true);
    signal(&scheduler, nix::sys::signal::Signal::SIGTERM);
    let out = scheduler.wait_with_output().unwrap();
    let err = stderr(&out);
    eprintln!("{err}");
    assert!(out.status.success());
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains(&app.name), "{err}");
    assert!(!s.tmp.path().join("state/stopped-containers").exists());
}

#[test]
fn with_a_spool_the_app_restarts_before_the_archive_is_stored() {
    let s = Setup::new();
    fs::write(s.src.join("noise.bin"), pseudo_random(16 << 20, 11)).unwrap();
    let label = unique("spool");
    let app = App::start("spool", "app", &s.src, &[stop(&label)]);
    let spool = s.tmp.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let out = run(backup(&s, &label)
        .env("BACKUP_SPOOL", "always")
        .env("BACKUP_SPOOL_DIR", &spool)
        .env("BACKUP_COMPRESSION", "zst"));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("archive spooled to"), "{err}");
    assert!(
        err.contains(&format!("container {} down", app.name)),
        "{err}"
    );
    assert!(app.running());
    assert_eq!(fs::read_dir(&spool).unwrap().count(), 0);
    let listed = list(&s.only_archive());
    assert!(listed.iter().any(|n| n.ends_with("noise.bin")));

    // A failing spool still brings the app back.
    let before = app.started_at();
    let out = run(backup(&s, &label)
        .env("BACKUP_SPOOL", "always")
        .env("BACKUP_SPOOL_DIR", s.tmp.path().join("missing-spool")));
    assert_eq!(out.status.code(), Some(1));
    assert!(app.running());
    assert_ne!(app.started_at(), before);
}

#[test]
fn a_failing_post_hook_fails_the_run_but_the_app_is_back_and_the_backup_kept() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    fs::set_permissions(&s.src, fs::Permissions::from_mode(0o777)).unwrap();
    let label = unique("postfail");
    let app = App::start(
        "postfail",
        "db",
        &s.src,
        &[
            stop(&label),
            format!("docker-volume-backup.exec-label={label}"),
            // The reference's deprecated alias of archive-pre still works.
            "docker-volume-backup.exec-pre=echo via-alias > /data/alias-dump".into(),
            "docker-volume-backup.archive-post=echo post broke >&2; false".into(),
        ],
    );
    let before = app.started_at();
    let out = run(backup(&s, &label)
        .env("BACKUP_COMPRESSION", "none")
        .env("BACKUP_FILENAME", "kept.tar"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("post hooks failed"), "{err}");
    assert!(
        err.contains("archive-post hook") && err.contains("post broke"),
        "{err}"
    );
    assert!(app.running(), "the app is back");
    assert_ne!(app.started_at(), before);
    assert!(
        list(&s.out.join("kept.tar"))
            .iter()
            .any(|n| n.ends_with("alias-dump"))
    );
}

#[test]
fn recovery_copes_with_containers_started_by_hand_or_removed_meanwhile() {
    let s = Setup::new();
    slow_source(&s);
    let label = unique("handstart");
    let app = App::start("handstart", "app", &s.src, &[stop(&label)]);
    let gone = App::start("handstart", "gone", &s.src, &[stop(&label)]);
    let mut child = backup(&s, &label)
        .env("BACKUP_COMPRESSION", "zst")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    app.wait_until(false);
    gone.wait_until(false);
    child.kill().unwrap();
    child.wait().unwrap();
    // The operator starts one by hand and removes the other before dunnage runs again.
    docker(&["start", &app.name]);
    docker(&["rm", "-f", &gone.name]);
    fs::remove_file(s.src.join("huge.bin")).unwrap();

    let out = run(&mut backup(&s, &label));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no longer exists"), "{err}");
    assert!(!err.contains("could not start"), "{err}");
    assert!(app.running());
    assert!(
        !s.tmp.path().join("state/stopped-containers").exists(),
        "state cleared"
    );
}

#[test]
fn an_in_place_restore_stops_the_app_and_starts_it_again_also_when_it_fails() {
    let s = Setup::new();
    let label = unique("restore");
    fs::write(s.src.join("db.txt"), "version 1").unwrap();
    let app = App::start("restore", "app", &s.src, &[stop(&label)]);
    let out = run(&mut backup(&s, &label));
    assert!(out.status.success(), "{}", stderr(&out));
    app.wait_until(true);
    fs::write(s.src.join("db.txt"), "version 2, broken").unwrap();

    // In place (no --target): into BACKUP_SOURCES, the app down meanwhile, a safety backup
    // of what is there now first.
    let before = app.started_at();
    let template = backup(&s, &label);
    let mut restore = same_env(&template, template.get_program());
    restore.args(["restore", "latest", "--overwrite", "--safety-backup"]);
    let out = run(&mut restore);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("(in place)"), "{text}");
    assert!(
        text.contains(&format!("container {} started again", app.name)),
        "{text}"
    );
    assert_eq!(
        fs::read_to_string(s.src.join("db.txt")).unwrap(),
        "version 1"
    );
    app.wait_until(true);
    assert_ne!(
        app.started_at(),
        before,
        "the app was stopped for the restore"
    );
    assert_eq!(s.archive_names().len(), 2, "the safety backup is there");

    // A restore that fails midway (its archive cut short) still brings the app back.
    let newest = s
        .archive_names()
        .into_iter()
        .map(|n| s.out.join(n))
        .max_by_key(|p| fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let bytes = fs::read(&newest).unwrap();
    fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    // Without its manifest the damage is only found while extracting.
    fs::remove_file(format!("{}.sha256", newest.display())).unwrap();
    let before = app.started_at();
    let mut restore = same_env(&template, template.get_program());
    restore.args(["restore", "latest", "--overwrite"]);
    let out = run(&mut restore);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        text.contains(&format!("container {} started again", app.name)),
        "{text}"
    );
    app.wait_until(true);
    assert_ne!(app.started_at(), before);
}

#[test]
fn sigterm_during_an_in_place_restore_starts_the_containers_again() {
    let s = Setup::new();
    fs::File::create(s.src.join("big.bin"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let label = unique("rterm");
    let out = run(backup(&s, &label).env("BACKUP_COMPRESSION", "zst"));
    assert!(out.status.success(), "{}", stderr(&out));
    let app = App::start("rterm", "app", &s.src, &[stop(&label)]);
    app.wait_until(true);
    let template = backup(&s, &label);
    let child = same_env(&template, template.get_program())
        .args(["restore", "latest", "--overwrite"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _kill_on_panic = KillOnPanic(child.id());
    app.wait_until(false);
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("interrupted"), "{text}");
    assert!(
        text.contains(&format!("container {} started again", app.name)),
        "{text}"
    );
    app.wait_until(true);
}
