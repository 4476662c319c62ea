//! The scheduler's HTTP side: `/healthz` and `/metrics` (parsed by the Prometheus project's
//! own OpenMetrics parser), on TCP and on a unix socket.

use std::fs;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::remote::env;
use crate::common::*;

/// One HTTP/1.1 GET over `stream`; the status code and the body.
fn get(stream: impl Read + Write, path: &str) -> (u16, String) {
    let (status, body) = get_raw(stream, path);
    (status, String::from_utf8(body).unwrap())
}

/// The same, the body as bytes.
fn get_raw(mut stream: impl Read + Write, path: &str) -> (u16, Vec<u8>) {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let answer = crate::common::http::read_answer(stream);
    (answer.status, answer.body)
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
    wait_for(
        "a success and a failure in /metrics",
        Duration::from_secs(60),
        || {
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
        },
    );
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
    // A run may have ended after the scrape above: what the scheduler kept is the latest.
    let kept: f64 = fs::read_to_string(s.tmp.path().join("state/last-success-good"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(kept >= last, "{kept} < {last}");

    // After a restart, before any run: the alert anchor is still there.
    let conf = s.tmp.path().join("conf.d");
    fs::write(conf.join("good"), "BACKUP_CRON_EXPRESSION=0 0 1 1 *\n").unwrap();
    fs::remove_file(conf.join("broken")).unwrap();
    let (child, _guard) = scheduler_again(&s, port);
    wait_for("the restarted API", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let samples = parse(&get_tcp(port, "/metrics").1);
    assert_eq!(
        sample(
            &samples,
            "dunnage_last_success_timestamp_seconds",
            &[("schedule", "good")]
        ),
        Some(kept)
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
    wait_for("the socket", Duration::from_secs(60), || socket.exists());
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

/// One Akeeba API call as its clients make it: GET with every parameter in the query.
fn akeeba(port: u16, secret: &str, method: &str, params: &[(&str, &str)]) -> Value {
    let mut query = format!(
        "_akeebaAuth={secret}&view=Api&method={method}&option=com_akeebabackup&format=json"
    );
    for (k, v) in params {
        query.push_str(&format!("&{k}={v}"));
    }
    let (status, body) = get_tcp(port, &format!("/index.php?{query}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Raw bytes of a GET (downloadDirect).
fn get_bytes(port: u16, path: &str) -> (u16, Vec<u8>) {
    get_raw(
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap(),
        path,
    )
}

/// Two conf.d profiles, `shop` (its settings: `shop`) and `blog` (its own archive folder,
/// `blog_name`), each with one backup made now.
fn two_profiles(s: &Setup, shop: &str, blog_name: &str) {
    let conf = s.tmp.path().join("conf.d");
    fs::create_dir(&conf).unwrap();
    let blog_out = s.tmp.path().join("blog-archive");
    fs::create_dir(&blog_out).unwrap();
    fs::write(conf.join("shop"), shop).unwrap();
    fs::write(
        conf.join("blog"),
        format!(
            "BACKUP_ARCHIVE={}\nBACKUP_FILENAME={blog_name}\n",
            blog_out.display()
        ),
    )
    .unwrap();
    for schedule in ["shop", "blog"] {
        let out = run(s
            .backup()
            .args(["--config", schedule])
            .env("BACKUP_COMPRESSION", "none"));
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

/// The scheduler with the API on `port` and `tokens`, waited for.
fn api_scheduler(s: &Setup, port: u16, cron: &str, tokens: &str) -> (Child, KillOnPanic) {
    let child = s
        .command(&[])
        .env("BACKUP_CRON_EXPRESSION", cron)
        .env("BACKUP_COMPRESSION", "none")
        .env("DUNNAGE_API_LISTEN", port.to_string())
        .env("DUNNAGE_API_TOKENS", tokens)
        .stderr(log_file(s))
        .spawn()
        .unwrap();
    let guard = KillOnPanic(child.id());
    wait_for("the API", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (child, guard)
}

#[test]
fn akeeba_clients_list_inspect_and_download_only_their_profiles_backups() {
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 3, 21);
    two_profiles(
        &s,
        "BACKUP_SPLIT_SIZE=1MiB\nBACKUP_FILENAME=shop-%Y%m%dT%H%M%S.%f.{{ .Extension }}\n",
        "blog#1-%s.tar",
    );
    let port = free_port();
    let (child, _guard) = api_scheduler(
        &s,
        port,
        "0 0 1 1 *",
        "shop-panel-secret-1 scopes=read profiles=shop\nadmin-panel-secret-1 scopes=admin",
    );

    assert_eq!(
        akeeba(port, "wrong-secret-12345", "getVersion", &[])["status"],
        503
    );
    let version = akeeba(port, "shop-panel-secret-1", "getVersion", &[]);
    assert_eq!(version["status"], 200);
    assert!(version["data"]["api"].as_u64().unwrap() >= 319);
    let profiles = akeeba(port, "shop-panel-secret-1", "getProfiles", &[])["data"].clone();
    assert_eq!(profiles.as_array().unwrap().len(), 1, "{profiles}");
    assert_eq!(profiles[0]["name"], "shop");
    assert_eq!(
        akeeba(port, "admin-panel-secret-1", "getProfiles", &[])["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let list = akeeba(
        port,
        "shop-panel-secret-1",
        "listBackups",
        &[("from", "0"), ("limit", "200")],
    );
    let records = list["data"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{list}");
    let id = records[0]["id"].as_u64().unwrap().to_string();
    assert_eq!(records[0]["status"], "complete");
    let info = akeeba(
        port,
        "shop-panel-secret-1",
        "getBackupInfo",
        &[("backup_id", &id)],
    );
    let parts = info["data"]["filenames"].as_array().unwrap().clone();
    assert!(parts.len() >= 3, "{info}");
    assert_eq!(
        info["data"]["multipart"].as_u64().unwrap() as usize,
        parts.len()
    );
    for part in &parts {
        let n = part["part"].as_u64().unwrap().to_string();
        let name = part["name"].as_str().unwrap();
        let stored = fs::read(s.out.join(name)).unwrap();
        assert_eq!(part["size"].as_u64().unwrap() as usize, stored.len());
        // downloadDirect: the raw bytes.
        let (status, bytes) = get_bytes(
            port,
            &format!(
                "/index.php?_akeebaAuth=shop-panel-secret-1&view=Api&method=downloadDirect&backup_id={id}&part_id={n}"
            ),
        );
        assert_eq!(status, 200);
        assert!(bytes == stored, "downloadDirect part {n}");
        // download: base64 segments of chunk_size MiB until 404.
        let mut joined = Vec::new();
        for segment in 1.. {
            let seg = segment.to_string();
            let answer = akeeba(
                port,
                "shop-panel-secret-1",
                "download",
                &[
                    ("backup_id", &id),
                    ("part", &n),
                    ("segment", &seg),
                    ("chunk_size", "1"),
                ],
            );
            if answer["status"] == 404 {
                break;
            }
            assert_eq!(answer["status"], 200, "{answer}");
            use base64::Engine as _;
            joined.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(answer["data"].as_str().unwrap())
                    .unwrap(),
            );
        }
        assert!(joined == stored, "download part {n}");
    }

    // The blog's record is invisible to the shop's token, visible to the admin's; its name
    // has a '#', which never appears raw in an answer (the clients cut at ###).
    let all = akeeba(port, "admin-panel-secret-1", "listBackups", &[]);
    let blog = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["profile_id"] != records[0]["profile_id"])
        .unwrap()
        .clone();
    let blog_id = blog["id"].as_u64().unwrap().to_string();
    assert_eq!(
        akeeba(
            port,
            "shop-panel-secret-1",
            "getBackupInfo",
            &[("backup_id", &blog_id)]
        )["status"],
        404
    );
    assert_eq!(get_bytes(port, &format!("/index.php?_akeebaAuth=shop-panel-secret-1&method=downloadDirect&backup_id={blog_id}&part_id=1")).0, 404);
    let (_, raw) = get_tcp(
        port,
        &format!(
            "/index.php?_akeebaAuth=admin-panel-secret-1&method=getBackupInfo&backup_id={blog_id}"
        ),
    );
    assert!(!raw.contains('#') && raw.contains("\\u0023"), "{raw}");
    // Ids stay the same when listed again.
    assert_eq!(
        akeeba(port, "shop-panel-secret-1", "listBackups", &[])["data"][0]["id"]
            .as_u64()
            .unwrap()
            .to_string(),
        id
    );
    // POST: the secret in the query string, the rest as a form.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let form = "view=Api&method=getProfiles&option=com_akeebabackup&format=json";
    write!(stream, "POST /index.php?_akeebaAuth=shop-panel-secret-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}", form.len()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let answer: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(answer["data"][0]["name"], "shop");
    assert_eq!(
        akeeba(port, "shop-panel-secret-1", "noSuchMethod", &[])["status"],
        405
    );

    // "Back up now", as the client steps it: start, then step until HasRun is false.
    let shop_profile = profiles[0]["id"].as_u64().unwrap().to_string();
    let refused = akeeba(
        port,
        "shop-panel-secret-1",
        "startBackup",
        &[("profile", &shop_profile)],
    );
    assert_eq!(refused["status"], 403, "a read-only token: {refused}");
    let mut answer = akeeba(
        port,
        "admin-panel-secret-1",
        "startBackup",
        &[("profile", &shop_profile), ("description", "Remote+backup")],
    );
    let mut steps = 0;
    while answer["data"]["HasRun"] == true {
        assert_eq!(answer["status"], 200, "{answer}");
        let backupid = answer["data"]["backupid"].as_str().unwrap().to_owned();
        answer = akeeba(
            port,
            "admin-panel-secret-1",
            "stepBackup",
            &[("backupid", &backupid)],
        );
        steps += 1;
        assert!(steps < 100, "{answer}");
    }
    assert_eq!(answer["status"], 200, "{answer}");
    let new_id = answer["data"]["BackupID"].as_u64().unwrap();
    assert!(new_id > 0, "{answer}");
    let info = akeeba(
        port,
        "shop-panel-secret-1",
        "getBackupInfo",
        &[("backup_id", &new_id.to_string())],
    );
    assert_eq!(info["status"], 200, "{info}");
    assert_eq!(info["data"]["profile_id"].to_string(), shop_profile);
    let list = akeeba(port, "shop-panel-secret-1", "listBackups", &[]);
    assert_eq!(
        list["data"][0]["id"].as_u64(),
        Some(new_id),
        "newest first: {list}"
    );

    // deleteFiles keeps the record (obsolete, no files), delete removes it; the only backup
    // of a profile is never deleted.
    let del =
        |secret: &str, method: &str, id: &str| akeeba(port, secret, method, &[("backup_id", id)]);
    assert_eq!(
        del("shop-panel-secret-1", "deleteFiles", &id)["status"],
        403
    );
    assert_eq!(
        del("admin-panel-secret-1", "deleteFiles", &id)["status"],
        200
    );
    let first_name = parts[0]["name"].as_str().unwrap().to_owned();
    assert!(!s.out.join(&first_name).exists(), "its parts are gone");
    let info = akeeba(
        port,
        "shop-panel-secret-1",
        "getBackupInfo",
        &[("backup_id", &id)],
    );
    assert_eq!(info["status"], 200, "{info}");
    assert_eq!(info["data"]["filesexist"], 0);
    assert_eq!(info["data"]["filenames"], serde_json::json!([]));
    assert_eq!(
        akeeba(port, "shop-panel-secret-1", "listBackups", &[])["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(del("admin-panel-secret-1", "delete", &id)["status"], 200);
    assert_eq!(
        akeeba(
            port,
            "shop-panel-secret-1",
            "getBackupInfo",
            &[("backup_id", &id)]
        )["status"],
        404
    );
    let only = del("admin-panel-secret-1", "delete", &new_id.to_string());
    assert_eq!(only["status"], 500, "{only}");
    assert_eq!(
        akeeba(
            port,
            "shop-panel-secret-1",
            "getBackupInfo",
            &[("backup_id", &new_id.to_string())]
        )["status"],
        200
    );
    stop(&s, child);
    let log = fs::read_to_string(s.tmp.path().join("scheduler.log")).unwrap();
    assert!(!log.contains("panel-secret"), "{log}");
}

#[test]
fn healthcheck_says_whether_the_schedulers_api_answers() {
    let s = Setup::new();
    fs::write(s.src.join("f.txt"), "x").unwrap();
    let port = free_port();
    let probe = |listen: Option<&str>| {
        let mut cmd = s.command(&["healthcheck"]);
        if let Some(listen) = listen {
            cmd.env("DUNNAGE_API_LISTEN", listen);
        }
        run(&mut cmd).status.code()
    };
    assert_eq!(probe(None), Some(0), "no API: nothing to check");
    assert_eq!(
        probe(Some(&port.to_string())),
        Some(1),
        "nothing listens yet"
    );
    let child = scheduler_again(&s, port).0;
    let _guard = KillOnPanic(child.id());
    wait_for("the API", Duration::from_secs(60), || {
        probe(Some(&port.to_string())) == Some(0)
    });
    stop(&s, child);
    assert_eq!(probe(Some(&port.to_string())), Some(1), "stopped");
}

/// A REST GET with a bearer token: status and JSON body.
fn rest(port: u16, path: &str, token: Option<&str>) -> (u16, Value) {
    let answer = crate::common::http::http(port, "GET", path, token, &[], None);
    (answer.status, answer.json())
}

#[test]
fn the_rest_api_lists_profiles_and_backups_per_token() {
    let s = Setup::new();
    fs::write(s.src.join("f.txt"), "x").unwrap();
    two_profiles(&s, "BACKUP_FILENAME=shop-%s.tar\n", "blog-%s.tar");
    let port = free_port();
    let (child, _guard) = api_scheduler(&s, port, "0 3 * * *", "shop-rest-token-123 profiles=shop");

    assert_eq!(rest(port, "/api/v1/profiles", None).0, 401);
    assert_eq!(
        rest(port, "/api/v1/profiles", Some("not-a-token-0000000")).0,
        401
    );
    let (status, profiles) = rest(port, "/api/v1/profiles", Some("shop-rest-token-123"));
    assert_eq!(status, 200);
    let profiles = profiles.as_array().unwrap();
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    assert_eq!(profiles[0]["name"], "shop");
    assert!(
        profiles[0]["next_run"]
            .as_str()
            .unwrap()
            .contains("T03:00:00"),
        "{profiles:?}"
    );
    let (status, backups) = rest(
        port,
        "/api/v1/profiles/shop/backups",
        Some("shop-rest-token-123"),
    );
    assert_eq!(status, 200);
    // The same as `dunnage list --config shop --json`.
    let cli = run(s
        .command(&["list", "--config", "shop", "--json"])
        .env("BACKUP_COMPRESSION", "none"));
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(backups, cli);
    assert_eq!(backups[0]["destination"], "Local");
    assert_eq!(
        rest(
            port,
            "/api/v1/profiles/blog/backups",
            Some("shop-rest-token-123")
        )
        .0,
        404
    );
    assert_eq!(
        rest(
            port,
            "/api/v1/profiles/nope/backups",
            Some("shop-rest-token-123")
        )
        .0,
        404
    );
    let (status, doc) = rest(port, "/api/v1/openapi.json", None);
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/profiles/{name}/backups"].is_object());
    stop(&s, child);
}
