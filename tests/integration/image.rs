//! The container image as users run it: built from this build's binary by
//! scripts/build-image, running as a sidecar next to a labeled app with the Docker socket
//! mounted read-only. Also checks that compose.example.yml is a valid compose file.

use std::process::Command;
use std::sync::OnceLock;

use crate::common::docker::*;
use crate::common::*;

/// The dunnage image built from the binary under test, once per test process.
fn image() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let tag = format!("dunnage:test-{}", std::process::id());
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-image"))
            .arg(env!("CARGO_BIN_EXE_dunnage"))
            .arg(&tag)
            .env("DOCKER_HOST", engine())
            .output()
            .unwrap();
        assert!(out.status.success(), "build-image: {}", stderr(&out));
        tag
    })
}

/// Removes the containers and volumes a test created.
struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in &self.0 {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = docker(&args);
        }
    }
}

#[test]
fn the_image_as_a_sidecar_stops_the_app_runs_its_hook_and_starts_it_again() {
    let s = Setup::new();
    let id = std::process::id();
    let label = format!("sidecar-{id}");
    let (volume, state, app) = (
        format!("app-data-{id}"),
        format!("dunnage-state-{id}"),
        format!("sidecar-app-{id}"),
    );
    let _cleanup = Cleanup(vec![
        vec!["rm".into(), "-f".into(), app.clone()],
        vec![
            "volume".into(),
            "rm".into(),
            "-f".into(),
            volume.clone(),
            state.clone(),
        ],
    ]);
    let socket = engine().trim_start_matches("unix://").to_owned();

    // The app keeps writing to its volume; its hook dumps "the database" before archiving.
    docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &app,
        "-v",
        &format!("{volume}:/data"),
        "-l",
        &format!("docker-volume-backup.stop-during-backup={label}"),
        "-l",
        &format!("docker-volume-backup.exec-label={label}"),
        "-l",
        "docker-volume-backup.archive-pre=echo consistent dump | tee /data/dump.sql",
        busybox(),
        "sh",
        "-c",
        // Exits on SIGTERM like a real service, so downtime is not the stop timeout.
        "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo $i >> /data/counter; sleep 0.05 & wait $!; done",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &app]);

    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{socket}:/var/run/docker.sock:ro"),
        "-v",
        &format!("{volume}:/backup/app_data:ro"),
        "-v",
        &format!("{}:/archive", s.out.display()),
        "-v",
        &format!("{state}:/var/lib/dunnage"),
        "-e",
        &format!("BACKUP_STOP_DURING_BACKUP_LABEL={label}"),
        "-e",
        &format!("EXEC_LABEL={label}"),
        // Unset, it means `true`: other tests' containers labeled so on the shared engine.
        "-e",
        &format!("BACKUP_STOP_DURING_BACKUP_NO_RESTART_LABEL={label}-keep-down"),
        "-e",
        "BACKUP_COMPRESSION=zst",
        "-e",
        "EXEC_FORWARD_OUTPUT=true",
        image(),
        "backup",
    ]);
    let log = stderr(&out);
    eprintln!("{log}");
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("consistent dump"),
        "hook output is in the run log"
    );
    assert!(log.contains(&format!("container {app} down")), "{log}");

    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &app]),
        "true"
    );
    assert_ne!(
        docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &app]),
        before
    );

    // The archive holds the volume (as backup/app_data/...) and the hook's dump.
    let archive = s.only_archive();
    let dest = s.tmp.path().join("restore");
    extract(&archive, &dest);
    let dump = std::fs::read_to_string(dest.join("backup/app_data/dump.sql")).unwrap();
    assert_eq!(dump, "consistent dump\n");
    let counter = std::fs::read_to_string(dest.join("backup/app_data/counter")).unwrap();
    let numbers: Vec<u64> = counter.lines().map(|l| l.parse().unwrap()).collect();
    assert!(!numbers.is_empty() && numbers.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn the_compose_example_is_a_valid_compose_file() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/compose.example.yml");
    std::fs::copy(example, dir.path().join("compose.yml")).unwrap();
    std::fs::write(dir.path().join("db_password.txt"), "example").unwrap();
    let out = Command::new("docker-compose")
        .args(["-f", "compose.yml", "config", "--quiet"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_image_runs_as_a_non_root_user() {
    let s = Setup::new();
    std::fs::write(s.src.join("data.txt"), "readable by anyone").unwrap();
    std::os::unix::fs::chown(&s.out, Some(1000), Some(1000)).unwrap();
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "1000",
        "-v",
        &format!("{}:/backup:ro", s.src.display()),
        "-v",
        &format!("{}:/archive", s.out.display()),
        image(),
        "backup",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(s.only_archive()).unwrap().uid(), 1000);
    assert!(
        stderr(&out).contains("Docker features are off"),
        "no socket: said once"
    );
}

#[test]
fn a_sidecar_killed_mid_backup_brings_the_app_back_when_it_is_started_again() {
    let id = std::process::id();
    let label = format!("kill9-{id}");
    let (volume, state, archive, app, sidecar) = (
        format!("kill9-data-{id}"),
        format!("kill9-state-{id}"),
        format!("kill9-archive-{id}"),
        format!("kill9-app-{id}"),
        format!("kill9-sidecar-{id}"),
    );
    let _cleanup = Cleanup(vec![
        vec!["rm".into(), "-f".into(), app.clone(), sidecar.clone()],
        vec![
            "volume".into(),
            "rm".into(),
            "-f".into(),
            volume.clone(),
            state.clone(),
            archive.clone(),
        ],
    ]);
    let socket = engine().trim_start_matches("unix://").to_owned();
    let running = |name: &str| docker_ok(&["inspect", "-f", "{{.State.Running}}", name]) == "true";
    let wait = |name: &str, want: bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while running(name) != want {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never running={want}; the sidecar's log:\n{}",
                stderr(&docker(&["logs", &sidecar]))
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // A volume that takes far longer to archive than the test waits: a huge sparse file.
    docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{volume}:/data"),
        busybox(),
        "truncate",
        "-s",
        "256G",
        "/data/huge",
    ]);
    docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &app,
        "-v",
        &format!("{volume}:/data"),
        "-l",
        &format!("docker-volume-backup.stop-during-backup={label}"),
        busybox(),
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
    ]);
    let sidecar_args = |name: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            name,
            "-v",
            &format!("{socket}:/var/run/docker.sock:ro"),
            "-v",
            &format!("{volume}:/backup/app_data:ro"),
            "-v",
            &format!("{state}:/var/lib/dunnage"),
            "-v",
            &format!("{archive}:/archive"),
            "-e",
            &format!("BACKUP_STOP_DURING_BACKUP_LABEL={label}"),
            // Without it the sidecar runs the hooks of every container on the shared test
            // engine, other tests' apps included, even as those are being stopped.
            "-e",
            &format!("EXEC_LABEL={label}"),
            "-e",
            &format!("BACKUP_STOP_DURING_BACKUP_NO_RESTART_LABEL={label}-keep-down"),
            "-e",
            "BACKUP_COMPRESSION=zst",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let args = sidecar_args(&sidecar, &[image(), "backup"]);
    docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait(&app, false);
    docker_ok(&["kill", "-s", "KILL", &sidecar]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!running(&app), "nothing restarted the app yet");
    docker_ok(&["rm", "-f", &sidecar]);

    // dunnage starts again (a re-created sidecar with the same state volume, as
    // `docker compose up` does): the app comes back before any schedule fires.
    let args = sidecar_args(
        &sidecar,
        &["-e", "BACKUP_CRON_EXPRESSION=0 0 5 31 2 ?", image()],
    );
    docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait(&app, true);
    let logs = docker(&["logs", &sidecar]);
    let text = stderr(&logs);
    assert!(text.contains("interrupted"), "{text}");
    docker_ok(&["stop", &sidecar]);
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &sidecar]),
        "0"
    );
}

#[test]
fn the_image_has_a_shell_for_the_reference_recipes_and_no_archive_folder_of_its_own() {
    let s = Setup::new();
    std::fs::write(s.src.join("data.txt"), "sourced").unwrap();
    let cfg = s.tmp.path().join("cfg");
    std::fs::create_dir(&cfg).unwrap();
    std::fs::write(cfg.join("x.env"), "BACKUP_FILENAME=recipe-%Y.tar.gz\n").unwrap();
    // The reference's manual-run recipe: source a conf.d file, then `backup`.
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        "-v",
        &format!("{}:/backup:ro", s.src.display()),
        "-v",
        &format!("{}:/archive", s.out.display()),
        "-v",
        &format!("{}:/cfg:ro", cfg.display()),
        image(),
        "-c",
        "set -a; source /cfg/x.env; backup",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let archive = s.only_archive();
    let name = archive.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("recipe-20"), "{name}");

    // Nothing mounted at /archive: the image has no such folder, so local storage is off
    // (nothing is written into the container's own layer), as in the reference.
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        "-v",
        &format!("{}:/backup:ro", s.src.display()),
        image(),
        "-c",
        "test ! -e /archive && backup",
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("/archive does not exist: local storage is off"),
        "{err}"
    );
    assert!(
        !out.status.success(),
        "no destination at all is a failed run"
    );
}

#[test]
fn the_images_healthcheck_follows_the_api() {
    let name = format!("dunnage-health-{}", std::process::id());
    let _cleanup = Cleanup(vec![vec!["rm".into(), "-f".into(), name.clone()]]);
    let out = docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &name,
        "--health-interval",
        "1s",
        "--health-start-period",
        "1s",
        "-e",
        "DUNNAGE_API_LISTEN=8080",
        "-e",
        "BACKUP_CRON_EXPRESSION=0 0 1 1 *",
        image(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = docker(&["inspect", "-f", "{{.State.Health.Status}}", &name]);
        let status = String::from_utf8_lossy(&status.stdout).trim().to_owned();
        if status == "healthy" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {status}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
