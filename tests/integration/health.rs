//! Health pings (`BACKUP_HEALTHCHECK_URL`) against a local HTTP receiver that records every
//! request: the sequence for success and failure, both URL styles, and a receiver that
//! never answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// One request as received: method, path with query, body.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// A receiver on 127.0.0.1 that answers 200 (or never, when `hang`).
fn receiver(hang: bool) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let record = record.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_owned(),
                    parts.next().unwrap_or("").to_owned(),
                );
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                record.lock().unwrap().push((
                    method,
                    path,
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                if hang {
                    std::thread::sleep(Duration::from_secs(60));
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK");
            });
        }
    });
    (port, seen)
}

fn requests(seen: &Seen) -> Vec<(String, String, String)> {
    seen.lock().unwrap().clone()
}

#[test]
fn healthchecks_style_pings_start_then_success_or_fail_with_the_reason() {
    let (port, seen) = receiver(false);
    let s = Setup::new();
    std::fs::write(s.src.join("f"), "x").unwrap();
    let url = format!("http://127.0.0.1:{port}/ping/0f1e-uuid");
    let out = run(s.backup().env("BACKUP_HEALTHCHECK_URL", &url));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = requests(&seen);
    let paths: Vec<&str> = got.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/ping/0f1e-uuid/start", "/ping/0f1e-uuid"]);
    // The URL is a secret: the log shows the host only.
    assert!(!stderr(&out).contains("0f1e-uuid"));

    // A failing run (the sources do not exist): start, then /fail with the error.
    let (port, seen) = receiver(false);
    let url = format!("http://127.0.0.1:{port}/ping/0f1e-uuid");
    let out = run(s
        .backup()
        .env("BACKUP_HEALTHCHECK_URL", &url)
        .env("BACKUP_SOURCES", s.tmp.path().join("missing")));
    assert_eq!(out.status.code(), Some(1));
    let got = requests(&seen);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].1, "/ping/0f1e-uuid/start");
    assert_eq!(
        (got[1].0.as_str(), got[1].1.as_str()),
        ("POST", "/ping/0f1e-uuid/fail")
    );
    assert!(
        got[1].2.contains("backup failed") && got[1].2.contains("missing"),
        "{got:?}"
    );
    // The report ends with the run's log lines.
    assert!(
        got[1].2.contains("\nlog:\n") && got[1].2.contains("msg=backing up"),
        "{got:?}"
    );
}

#[test]
fn uptime_kuma_push_style_says_up_or_down() {
    let s = Setup::new();
    std::fs::write(s.src.join("f"), "x").unwrap();
    for (sources, status) in [
        (s.src.clone(), "up"),
        (s.tmp.path().join("missing"), "down"),
    ] {
        let (port, seen) = receiver(false);
        let url = format!("http://127.0.0.1:{port}/api/push/tok3n");
        run(s
            .backup()
            .env("BACKUP_HEALTHCHECK_URL", &url)
            .env("BACKUP_SOURCES", &sources));
        let got = requests(&seen);
        assert_eq!(got.len(), 1, "no start ping for Kuma: {got:?}");
        assert!(
            got[0]
                .1
                .starts_with(&format!("/api/push/tok3n?status={status}&msg=")),
            "{got:?}"
        );
    }
}

#[test]
fn a_monitoring_service_that_never_answers_does_not_fail_or_hold_the_run() {
    let (port, seen) = receiver(true);
    let s = Setup::new();
    std::fs::write(s.src.join("f"), "x").unwrap();
    let url = format!("http://127.0.0.1:{port}/ping/slow");
    let started = Instant::now();
    let out = run(s.backup().env("BACKUP_HEALTHCHECK_URL", &url));
    // Two pings of at most 5 s each; far below the receiver's 60 s.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "a good backup stays good");
    assert!(
        stderr(&out).contains("2 health ping(s) and 0 notification(s) not delivered"),
        "{}",
        stderr(&out)
    );
    assert_eq!(requests(&seen).len(), 2);
    assert!(!stderr(&out).contains("/ping/slow"), "the URL is a secret");
    assert_eq!(s.archive_names().len(), 1);
}
