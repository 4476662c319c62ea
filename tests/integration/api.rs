//! The scheduler's HTTP side: `/healthz` and `/metrics` (parsed by the Prometheus project's
//! own OpenMetrics parser), on TCP and on a unix socket.

use std::fs;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::remote::env;
use crate::common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET over `stream`; the status code and the body.
fn get(mut stream: impl Read + Write, path: &str) -> (u16, String) {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

fn get_tcp(port: u16, path: &str) -> (u16, String) {
    get(
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap(),
        path,
    )
}

/// Every sample of an OpenMetrics exposition, as the Prometheus client library parses it:
/// `[{"name", "labels", "value"}]`.
fn parse(exposition: &str) -> Vec<Value> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = Command::new(env("DUNNAGE_TEST_PYTHON"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not valid OpenMetrics:\n{exposition}");
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
}

/// The scheduler with two conf.d schedules: `good` backs up, `broken` has no sources.
fn scheduler(s: &Setup, listen: &str) -> (Child, KillOnPanic) {
    let conf = s.tmp.path().join("conf.d");
    let _ = fs::create_dir(&conf);
    fs::write(
        conf.join("good"),
        "BACKUP_CRON_EXPRESSION=* * * * * *\nBACKUP_FILENAME=good-%Y%m%dT%H%M%S.tar\n",
    )
    .unwrap();
    fs::write(
        conf.join("broken"),
        format!(
            "BACKUP_CRON_EXPRESSION=* * * * * *\nBACKUP_SOURCES={}\n",
            s.tmp.path().join("missing").display()
        ),
    )
    .unwrap();
    let child = s
        .command(&[])
        .env("BACKUP_COMPRESSION", "none")
        .env("DUNNAGE_API_LISTEN", listen)
        .stderr(log_file(s))
        .spawn()
        .unwrap();
    let guard = KillOnPanic(child.id());
    (child, guard)
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The scheduler's log goes to a file: a pipe nobody reads would fill and block it.
fn log_file(s: &Setup) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.tmp.path().join("scheduler.log"))
        .unwrap()
}

fn stop(s: &Setup, mut child: Child) {
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().unwrap();
    let log = fs::read_to_string(s.tmp.path().join("scheduler.log")).unwrap_or_default();
    assert!(status.success(), "{log}");
}

#[test]
fn metrics_count_successes_and_failures_and_the_last_success_survives_a_restart() {
    let s = Setup::new();
    fs::write(s.src.join("f.txt"), "x").unwrap();
    let port = free_port();
    let (child, _guard) = scheduler(&s, &port.to_string());
    wait_for("a success and a failure in /metrics", || {
        let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let (_, body) = get(stream, "/metrics");
        let samples = parse(&body);
        sample(
            &samples,
            "dunnage_runs_total",
            &[("schedule", "good"), ("outcome", "success")],
        )
        .is_some()
            && sample(
                &samples,
                "dunnage_runs_total",
                &[("schedule", "broken"), ("outcome", "failure")],
            )
            .is_some()
    });
    assert_eq!(get_tcp(port, "/healthz"), (200, "ok\n".into()));
    let (status, body) = get_tcp(port, "/metrics");
    assert_eq!(status, 200);
    let samples = parse(&body);
    let now = jiff::Timestamp::now().as_second() as f64;
    let last = sample(
        &samples,
        "dunnage_last_success_timestamp_seconds",
        &[("schedule", "good")],
    )
    .unwrap();
    assert!((now - 60.0..=now + 1.0).contains(&last), "{last} vs {now}");
    assert!(
        sample(
            &samples,
            "dunnage_last_success_timestamp_seconds",
            &[("schedule", "broken")]
        )
        .is_none()
    );
    assert_eq!(
        sample(
            &samples,
            "dunnage_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &samples,
            "dunnage_uploads_total",
            &[
                ("schedule", "good"),
                ("destination", "Local"),
                ("result", "stored")
            ]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &samples,
            "dunnage_archive_bytes_total",
            &[("schedule", "good")]
        )
        .unwrap()
            > 0.0
    );
    assert!(sample(&samples, "dunnage_files_total", &[("schedule", "good")]).unwrap() >= 1.0);
    assert_eq!(get_tcp(port, "/nope").0, 404);
    stop(&s, child);

    // After a restart, before any run: the alert anchor is still there.
    let conf = s.tmp.path().join("conf.d");
    fs::write(conf.join("good"), "BACKUP_CRON_EXPRESSION=0 0 1 1 *\n").unwrap();
    fs::remove_file(conf.join("broken")).unwrap();
    let (child, _guard) = scheduler_again(&s, port);
    wait_for("the restarted API", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let samples = parse(&get_tcp(port, "/metrics").1);
    assert_eq!(
        sample(
            &samples,
            "dunnage_last_success_timestamp_seconds",
            &[("schedule", "good")]
        ),
        Some(last)
    );
    assert!(
        sample(
            &samples,
            "dunnage_runs_total",
            &[("schedule", "good"), ("outcome", "success")]
        )
        .is_none()
    );
    stop(&s, child);
}

fn scheduler_again(s: &Setup, port: u16) -> (Child, KillOnPanic) {
    let child = s
        .command(&[])
        .env("DUNNAGE_API_LISTEN", port.to_string())
        .stderr(log_file(s))
        .spawn()
        .unwrap();
    let guard = KillOnPanic(child.id());
    (child, guard)
}

#[test]
fn the_api_listens_on_a_unix_socket_and_a_bad_address_is_refused() {
    let s = Setup::new();
    fs::write(s.src.join("f.txt"), "x").unwrap();
    let socket = s.tmp.path().join("api.sock");
    let (child, _guard) = scheduler(&s, &format!("unix:{}", socket.display()));
    wait_for("the socket", || socket.exists());
    let (status, body) = get(
        std::os::unix::net::UnixStream::connect(&socket).unwrap(),
        "/healthz",
    );
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    stop(&s, child);
    assert!(!socket.exists(), "the socket file is removed at shutdown");

    let out = run(s.command(&[]).env("DUNNAGE_API_LISTEN", "localhost:http"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("DUNNAGE_API_LISTEN"),
        "{}",
        stderr(&out)
    );
}
