//! The REST API's control plane, driven over HTTP against the real scheduler: runs (start,
//! 409, follow with server-sent events, status, log, cancel), verify and restore as runs,
//! downloads with Range, deletes under the safety rule, the destination check, profiles
//! created, replaced and deleted through the API, conf.d reloaded while a run goes on, and
//! the concurrency limit.

use std::fs;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::http::{Answer, http};
use crate::common::*;

const ADMIN: &str = "admin-control-token-1";
const SHOP: &str = "shop-control-token-1";
const SHOP_READ: &str = "shop-read-token-1";
const BLOG: &str = "blog-control-token-1";

fn tokens() -> String {
    format!(
        "{ADMIN} scopes=admin\n{SHOP} scopes=read,run,restore,delete profiles=shop\n\
         {SHOP_READ} scopes=read profiles=shop\n{BLOG} scopes=read,run profiles=blog"
    )
}

/// A profile file in conf.d.
fn profile(s: &Setup, name: &str, text: &str) {
    let conf = s.tmp.path().join("conf.d");
    let _ = fs::create_dir(&conf);
    fs::write(conf.join(name), text).unwrap();
}

/// The scheduler (nothing due until 03:00) with the API on a free port and the tokens.
fn start(s: &Setup, extra: &[(&str, &str)]) -> (Child, KillOnPanic, u16) {
    let port = free_port();
    let mut cmd = s.command(&[]);
    cmd.env("BACKUP_CRON_EXPRESSION", "0 3 * * *")
        .env("BACKUP_COMPRESSION", "none")
        .env("DUNNAGE_API_LISTEN", port.to_string())
        .env("DUNNAGE_API_TOKENS", tokens())
        .stderr(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(s.tmp.path().join("scheduler.log"))
                .unwrap(),
        );
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let guard = KillOnPanic(child.id());
    wait_for("the API", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (child, guard, port)
}

fn log(s: &Setup) -> String {
    fs::read_to_string(s.tmp.path().join("scheduler.log")).unwrap_or_default()
}

fn stop(s: &Setup, mut child: Child) {
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", log(s));
}

fn get(port: u16, path: &str, token: &str) -> Answer {
    http(port, "GET", path, Some(token), &[], None)
}

/// The run `id` as the API shows it.
fn run_of(port: u16, id: &str, token: &str) -> Value {
    get(port, &format!("/api/v1/runs/{id}"), token).json()
}

/// Starts a run; its id.
fn start_run(port: u16, profile: &str, token: &str, body: Value) -> String {
    let a = http(
        port,
        "POST",
        &format!("/api/v1/profiles/{profile}/runs"),
        Some(token),
        &[],
        Some(&body),
    );
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    let run = a.json();
    assert_eq!(
        a.header("location"),
        Some(format!("/api/v1/runs/{}", run["id"].as_str().unwrap()).as_str())
    );
    run["id"].as_str().unwrap().to_owned()
}

/// Waits for run `id` to end; the run.
fn finished(port: u16, id: &str, token: &str) -> Value {
    let mut last = Value::Null;
    wait_for("the run to end", Duration::from_secs(90), || {
        last = run_of(port, id, token);
        last["state"] == "finished"
    });
    last
}

/// Sources of `mib` MiB of incompressible data (so a paced run takes a while).
fn slow_sources(s: &Setup, mib: usize) {
    fs::create_dir_all(s.src.join("data")).unwrap();
    for i in 0..mib {
        fs::write(
            s.src.join(format!("data/{i}.bin")),
            pseudo_random(1 << 20, i as u64),
        )
        .unwrap();
    }
    fs::write(s.src.join("hello.txt"), "hello").unwrap();
}

#[test]
fn a_run_started_through_the_api_is_followed_live_and_a_second_start_is_a_conflict() {
    let s = Setup::new();
    slow_sources(&s, 3);
    // 3 MiB at 1 MiB/s: long enough to see it running.
    profile(
        &s,
        "shop",
        "BACKUP_UPLOAD_LIMIT=1MiB\nBACKUP_FILENAME=shop-%s.tar\n",
    );
    profile(&s, "blog", "BACKUP_FILENAME=blog-%s.tar\n");
    let (child, _guard, port) = start(&s, &[]);

    let a = http(
        port,
        "POST",
        "/api/v1/profiles/shop/runs",
        Some(SHOP_READ),
        &[],
        None,
    );
    assert_eq!(a.status, 403, "read-only tokens do not start runs");
    let a = http(
        port,
        "POST",
        "/api/v1/profiles/shop/runs",
        Some(BLOG),
        &[],
        None,
    );
    assert_eq!(a.status, 404, "another profile's token does not see it");

    let id = start_run(port, "shop", SHOP, json!({}));
    let again = http(
        port,
        "POST",
        "/api/v1/profiles/shop/runs",
        Some(SHOP),
        &[],
        None,
    );
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["run"]["id"], id.as_str());
    assert_eq!(get(port, &format!("/api/v1/runs/{id}"), BLOG).status, 404);

    // Follow it: server-sent events until the end (curl reads them as a client would).
    let events = Command::new("curl")
        .args(["-sN", "--max-time", "60", "-H"])
        .arg(format!("Authorization: Bearer {SHOP}"))
        .arg(format!("http://127.0.0.1:{port}/api/v1/runs/{id}/events"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&events.stdout);
    let parsed: Vec<(String, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event:"))?;
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            Some((
                event.trim().to_owned(),
                serde_json::from_str(&data).unwrap(),
            ))
        })
        .collect();
    let states: Vec<&Value> = parsed
        .iter()
        .filter(|(e, _)| e == "state")
        .map(|(_, v)| v)
        .collect();
    assert!(
        states.iter().any(|v| v["phase"] == "archiving"
            && v["progress"]["bytes_read"].as_u64().unwrap() > 0
            && v["destinations"]["Local"] == "uploading"),
        "a live view of the archiving: {text}"
    );
    let (last_event, end) = parsed.last().unwrap();
    assert_eq!(last_event, "end", "{text}");
    assert_eq!(end["outcome"], "success", "{end}");
    assert_eq!(end["destinations"]["Local"], "stored");

    let run = finished(port, &id, SHOP);
    let name = run["result"]["archive"].as_str().unwrap();
    let dest = s.tmp.path().join("x");
    fs::create_dir(&dest).unwrap();
    extract(&s.out.join(name), &dest);
    assert_same_tree(&s.src, &dest, &[]);
    let log = get(port, &format!("/api/v1/runs/{id}/log"), SHOP);
    assert!(
        String::from_utf8_lossy(&log.body).contains("succeeded"),
        "{}",
        String::from_utf8_lossy(&log.body)
    );
    let runs = get(port, "/api/v1/profiles/shop/runs", SHOP).json();
    assert_eq!(runs[0]["id"], id.as_str());
    assert_eq!(runs[0]["trigger"], "api");
    // The metrics count it like a scheduled run.
    let metrics = http(port, "GET", "/metrics", None, &[], None);
    assert!(
        String::from_utf8_lossy(&metrics.body)
            .contains("dunnage_runs_total{schedule=\"shop\",outcome=\"success\"} 1"),
        "{}",
        String::from_utf8_lossy(&metrics.body)
    );
    stop(&s, child);
}

#[test]
fn a_cancelled_run_leaves_no_partial_backup_and_cannot_be_cancelled_twice() {
    let s = Setup::new();
    slow_sources(&s, 4);
    profile(
        &s,
        "shop",
        "BACKUP_UPLOAD_LIMIT=256KiB\nBACKUP_FILENAME=shop-%s.tar\n",
    );
    let (child, _guard, port) = start(&s, &[]);
    let id = start_run(port, "shop", SHOP, json!({}));
    wait_for("the upload to begin", Duration::from_secs(30), || {
        let run = run_of(port, &id, SHOP);
        run["progress"]["archive_bytes"].as_u64().unwrap_or(0) > 0
    });
    let cancel = http(
        port,
        "POST",
        &format!("/api/v1/runs/{id}/cancel"),
        Some(SHOP_READ),
        &[],
        None,
    );
    assert_eq!(cancel.status, 403);
    let cancel = http(
        port,
        "POST",
        &format!("/api/v1/runs/{id}/cancel"),
        Some(SHOP),
        &[],
        None,
    );
    assert_eq!(cancel.status, 202);
    let run = finished(port, &id, SHOP);
    assert_eq!(run["outcome"], "cancelled", "{run}");
    assert_eq!(s.all_names(), Vec::<String>::new(), "no partial archive");
    let again = http(
        port,
        "POST",
        &format!("/api/v1/runs/{id}/cancel"),
        Some(SHOP),
        &[],
        None,
    );
    assert_eq!(again.status, 409);
    // The profile can run again.
    let id = start_run(port, "shop", ADMIN, json!({"kind": "backup"}));
    let run = finished(port, &id, ADMIN);
    assert_eq!(run["outcome"], "success", "{run}");
    stop(&s, child);
}

#[test]
fn downloads_resume_with_range_and_deletes_keep_the_only_backup() {
    let s = Setup::new();
    slow_sources(&s, 3);
    profile(
        &s,
        "shop",
        "BACKUP_SPLIT_SIZE=1MiB\nBACKUP_FILENAME=shop-%s.tar\n",
    );
    for _ in 0..2 {
        let out = run(s
            .backup()
            .args(["--config", "shop"])
            .env("BACKUP_COMPRESSION", "none"));
        assert!(out.status.success(), "{}", stderr(&out));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let (child, _guard, port) = start(&s, &[]);
    let listed = get(port, "/api/v1/profiles/shop/backups", SHOP).json();
    let names: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    let name = &names[1];
    let mut parts: Vec<String> = s
        .archive_names()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{name}.")))
        .collect();
    parts.sort();
    assert!(parts.len() >= 4, "{parts:?}");
    let whole: Vec<u8> = parts
        .iter()
        .flat_map(|p| fs::read(s.out.join(p)).unwrap())
        .collect();

    let path = format!("/api/v1/profiles/shop/backups/{name}/download");
    let all = get(port, &path, SHOP_READ);
    assert_eq!(all.status, 200);
    assert_eq!(all.header("accept-ranges"), Some("bytes"));
    assert!(all.body == whole, "the parts joined, byte for byte");
    // A range across a part boundary, the tail, and past the end.
    let a = http(
        port,
        "GET",
        &path,
        Some(SHOP_READ),
        &[("Range", "bytes=1000-2100000")],
        None,
    );
    assert_eq!(a.status, 206);
    assert_eq!(
        a.header("content-range"),
        Some(format!("bytes 1000-2100000/{}", whole.len()).as_str())
    );
    assert!(a.body == whole[1000..=2_100_000]);
    let a = http(
        port,
        "GET",
        &path,
        Some(SHOP_READ),
        &[("Range", "bytes=-10")],
        None,
    );
    assert!(a.body == whole[whole.len() - 10..]);
    let past = format!("bytes={}-", whole.len());
    let a = http(
        port,
        "GET",
        &path,
        Some(SHOP_READ),
        &[("Range", &past)],
        None,
    );
    assert_eq!(a.status, 416);
    // Names only from the listing.
    let a = get(
        port,
        "/api/v1/profiles/shop/backups/..%2F..%2Fetc%2Fpasswd/download",
        SHOP,
    );
    assert_eq!(a.status, 404);
    assert_eq!(get(port, &path, BLOG).status, 404, "not another profile's");

    let del = format!("/api/v1/profiles/shop/backups/{}", names[0]);
    assert_eq!(
        http(port, "DELETE", &del, Some(SHOP_READ), &[], None).status,
        403
    );
    let a = http(port, "DELETE", &del, Some(SHOP), &[], None);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert!(
        s.all_names().iter().all(|n| !n.starts_with(&names[0])),
        "{:?}",
        s.all_names()
    );
    let last = format!("/api/v1/profiles/shop/backups/{name}");
    let a = http(port, "DELETE", &last, Some(SHOP), &[], None);
    assert_eq!(a.status, 409, "the only backup stays");
    assert!(s.all_names().iter().any(|n| n == &format!("{name}.sha256")));
    stop(&s, child);
}

#[test]
fn verify_restore_and_check_run_through_the_api() {
    let s = Setup::new();
    slow_sources(&s, 1);
    profile(&s, "shop", "BACKUP_FILENAME=shop-%s.tar\n");
    let (child, _guard, port) = start(&s, &[]);
    let id = start_run(port, "shop", SHOP, json!({}));
    assert_eq!(finished(port, &id, SHOP)["outcome"], "success");

    let id = start_run(
        port,
        "shop",
        SHOP,
        json!({"kind": "verify", "backup": "latest", "level": "read"}),
    );
    let run = finished(port, &id, SHOP);
    assert_eq!(run["outcome"], "success", "{run}");
    assert_eq!(run["result"][0]["level"], "read", "{run}");

    // A target folder is an administrator's call; in place is the restore scope's.
    let target = s.tmp.path().join("restored");
    let body = json!({"kind": "restore", "backup": "latest", "target": target});
    let a = http(
        port,
        "POST",
        "/api/v1/profiles/shop/runs",
        Some(SHOP),
        &[],
        Some(&body),
    );
    assert_eq!(a.status, 403);
    let id = start_run(port, "shop", ADMIN, body);
    let run = finished(port, &id, ADMIN);
    assert_eq!(run["outcome"], "success", "{run}");
    assert_same_tree(&s.src, &target, &[]);

    fs::remove_file(s.src.join("hello.txt")).unwrap();
    let id = start_run(
        port,
        "shop",
        SHOP,
        json!({"kind": "restore", "backup": "latest", "overwrite": true}),
    );
    let run = finished(port, &id, SHOP);
    assert_eq!(run["outcome"], "success", "{run}");
    assert_eq!(
        fs::read_to_string(s.src.join("hello.txt")).unwrap(),
        "hello"
    );

    let bad = http(
        port,
        "POST",
        "/api/v1/profiles/shop/runs",
        Some(SHOP),
        &[],
        Some(&json!({"kind": "verify", "level": "deep"})),
    );
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("deep"));

    let check = http(
        port,
        "POST",
        "/api/v1/profiles/shop/check",
        Some(SHOP),
        &[],
        None,
    );
    assert_eq!(check.status, 200);
    assert_eq!(check.json()["ok"], true, "{}", check.json());
    stop(&s, child);
}

fn conf_files(s: &Setup) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(s.tmp.path().join("conf.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn profiles_are_created_replaced_and_deleted_through_the_api_after_validation() {
    let s = Setup::new();
    fs::write(s.src.join("f.txt"), "x").unwrap();
    profile(&s, "shop", "BACKUP_FILENAME=shop-%s.tar\n");
    let (child, _guard, port) = start(&s, &[]);
    let secret = "s3cr3t-value-never-shown";

    // Every problem at once, nothing written.
    let bad = json!({"settings": {
        "BACKUP_CRON_EXPRESSION": "every day",
        "BACKUP_COMPRESSION": "rar",
        "BACKUP_CRON_EXPRESION": "@daily",
        "BACKUP_LOCK_FILE": "/tmp/x",
        "AWS_SECRET_ACCESS_KEY": "pa$word",
        "AWS_SECRET_ACCES_KEY": "misspelt-secret-1",
    }});
    let a = http(
        port,
        "PUT",
        "/api/v1/profiles/new1",
        Some(ADMIN),
        &[],
        Some(&bad),
    );
    assert_eq!(a.status, 422, "{}", String::from_utf8_lossy(&a.body));
    let problems = a.json()["problems"].as_array().unwrap().clone();
    let named: Vec<&str> = problems
        .iter()
        .map(|p| p["variable"].as_str().unwrap())
        .collect();
    for var in [
        "BACKUP_CRON_EXPRESION",
        "BACKUP_LOCK_FILE",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(named.contains(&var), "{var} in {problems:?}");
    }
    for secret in ["pa$word", "misspelt-secret-1"] {
        assert!(!String::from_utf8_lossy(&a.body).contains(secret));
    }
    assert_eq!(conf_files(&s), ["shop"]);
    // Values that are wrong only together with the file are found too.
    let bad =
        json!({"settings": {"BACKUP_CRON_EXPRESSION": "every day", "BACKUP_COMPRESSION": "rar"}});
    let a = http(
        port,
        "PUT",
        "/api/v1/profiles/new1",
        Some(ADMIN),
        &[],
        Some(&bad),
    );
    assert_eq!(a.status, 422);
    let named: Vec<String> = a.json()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["variable"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        named.contains(&"BACKUP_CRON_EXPRESSION".into())
            && named.contains(&"BACKUP_COMPRESSION".into()),
        "{named:?}"
    );
    assert_eq!(conf_files(&s), ["shop"]);
    assert_eq!(
        http(
            port,
            "PUT",
            "/api/v1/profiles/new1",
            Some(SHOP),
            &[],
            Some(&bad)
        )
        .status,
        404,
        "a token bound to shop does not see new1"
    );

    // Created: runs every second, its secret never shown.
    let good = json!({"settings": {
        "BACKUP_CRON_EXPRESSION": "* * * * * *",
        "BACKUP_FILENAME": "new1-%Y%m%dT%H%M%S.tar",
        "BACKUP_PRUNING_PREFIX": "new1-",
        "BACKUP_RETENTION_DAYS": "7",
        "NOTIFICATION_URLS": format!("generic+http://127.0.0.1:9/?token={secret}"),
    }});
    let a = http(
        port,
        "PUT",
        "/api/v1/profiles/new1",
        Some(ADMIN),
        &[],
        Some(&good),
    );
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(conf_files(&s), ["new1", "shop"]);
    wait_for(
        "a backup of the new profile",
        Duration::from_secs(30),
        || s.archive_names().iter().any(|n| n.starts_with("new1-")),
    );
    let shown = get(port, "/api/v1/profiles/new1", ADMIN);
    assert_eq!(shown.status, 200);
    let listed = get(port, "/api/v1/profiles", ADMIN);
    // Its runs tried to notify the unreachable URL: their results and logs name it.
    let runs = get(port, "/api/v1/profiles/new1/runs", ADMIN);
    let mut answers = vec![shown, listed];
    for run in runs.json().as_array().unwrap() {
        let id = run["id"].as_str().unwrap();
        answers.push(get(port, &format!("/api/v1/runs/{id}/log"), ADMIN));
    }
    answers.push(runs);
    for answer in &answers {
        let text = String::from_utf8_lossy(&answer.body);
        assert!(!text.contains(secret), "{text}");
    }
    assert!(
        answers[1]
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "new1")
    );

    // Replaced: it stops running every second.
    let mut replaced = good.clone();
    replaced["settings"]["BACKUP_CRON_EXPRESSION"] = json!("0 3 * * *");
    let a = http(
        port,
        "PUT",
        "/api/v1/profiles/new1",
        Some(ADMIN),
        &[],
        Some(&replaced),
    );
    assert_eq!(a.status, 200);
    assert!(a.json()["next_run"].as_str().unwrap().contains("T03:00:00"));
    std::thread::sleep(Duration::from_secs(2));
    let count = s.archive_names().len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.archive_names().len(), count, "no more runs every second");

    // Deleted: gone from the API and conf.d; its backups stay.
    let a = http(
        port,
        "DELETE",
        "/api/v1/profiles/new1",
        Some(ADMIN),
        &[],
        None,
    );
    assert_eq!(a.status, 204);
    assert_eq!(conf_files(&s), ["shop"]);
    assert_eq!(get(port, "/api/v1/profiles/new1", ADMIN).status, 404);
    assert!(s.archive_names().iter().any(|n| n.starts_with("new1-")));
    assert!(!log(&s).contains(secret), "no secret in the log");
    stop(&s, child);
}

#[test]
fn conf_d_is_reloaded_on_change_and_sighup_without_touching_a_running_backup() {
    let s = Setup::new();
    slow_sources(&s, 3);
    profile(
        &s,
        "shop",
        "BACKUP_UPLOAD_LIMIT=1MiB\nBACKUP_FILENAME=shop-old-%s.tar\n",
    );
    let (child, _guard, port) = start(&s, &[]);
    let id = start_run(port, "shop", SHOP, json!({}));
    wait_for("the run to be archiving", Duration::from_secs(30), || {
        run_of(port, &id, SHOP)["phase"] == "archiving"
    });
    // Changed and added while it runs; SIGHUP reads conf.d at once.
    profile(&s, "shop", "BACKUP_FILENAME=shop-new-%s.tar\n");
    profile(&s, "blog", "BACKUP_FILENAME=blog-%s.tar\n");
    signal(&child, nix::sys::signal::Signal::SIGHUP);
    wait_for("blog to appear", Duration::from_secs(10), || {
        let listed = get(port, "/api/v1/profiles", ADMIN).json();
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "blog")
    });
    let run = finished(port, &id, SHOP);
    assert_eq!(
        run["outcome"], "success",
        "the running backup went on: {run}"
    );
    assert!(
        run["result"]["archive"]
            .as_str()
            .unwrap()
            .starts_with("shop-old-")
    );
    let id = start_run(port, "shop", SHOP, json!({}));
    let run = finished(port, &id, SHOP);
    assert!(
        run["result"]["archive"]
            .as_str()
            .unwrap()
            .starts_with("shop-new-"),
        "{run}"
    );

    // Without a signal: a new file is found within seconds; an invalid one keeps the old
    // settings and says why.
    profile(&s, "wiki", "BACKUP_FILENAME=wiki-%s.tar\n");
    profile(&s, "blog", "BACKUP_COMPRESSION=rar\n");
    wait_for("wiki to appear", Duration::from_secs(15), || {
        let listed = get(port, "/api/v1/profiles", ADMIN).json();
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "wiki")
    });
    let blog = get(port, "/api/v1/profiles/blog", ADMIN).json();
    assert_eq!(
        blog["settings"]["BACKUP_FILENAME"]["value"], "blog-%s.tar",
        "{blog}"
    );
    assert!(log(&s).contains("BACKUP_COMPRESSION"), "{}", log(&s));
    stop(&s, child);
}

/// The run states of `profiles` right now.
fn states(port: u16, profiles: &[&str]) -> Vec<String> {
    profiles
        .iter()
        .map(|p| {
            let runs = get(port, &format!("/api/v1/profiles/{p}/runs"), ADMIN).json();
            runs[0]["state"].as_str().unwrap_or("none").to_owned()
        })
        .collect()
}

fn overlapping(concurrency: &str) -> usize {
    let s = Setup::new();
    slow_sources(&s, 2);
    let names = ["a", "b", "c"];
    for name in names {
        profile(
            &s,
            name,
            &format!("BACKUP_UPLOAD_LIMIT=512KiB\nBACKUP_FILENAME={name}-%s.tar\n"),
        );
    }
    let (child, _guard, port) = start(&s, &[("DUNNAGE_CONCURRENCY", concurrency)]);
    let ids: Vec<String> = names
        .iter()
        .map(|n| start_run(port, n, ADMIN, json!({})))
        .collect();
    // One request per profile is no snapshot: a run can finish and the next start between
    // two of them, and both would count. A run found running in two passes in a row ran
    // through the time between them, as did every other run found so; that count never
    // exceeds what really overlapped.
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut before = states(port, &names);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = states(port, &names);
        let throughout = before
            .iter()
            .zip(&now)
            .filter(|(b, n)| *b == "running" && *n == "running")
            .count();
        most = most.max(throughout);
        if now.iter().all(|s| s == "finished") || Instant::now() > deadline {
            break;
        }
        before = now;
    }
    for id in &ids {
        assert_eq!(finished(port, id, ADMIN)["outcome"], "success");
    }
    stop(&s, child);
    most
}

#[test]
fn the_concurrency_limit_lets_other_profiles_overlap_up_to_it() {
    assert_eq!(overlapping("1"), 1, "the default: one run at a time");
    assert_eq!(overlapping("2"), 2);
}

#[test]
fn a_conf_d_file_cannot_set_what_belongs_to_the_process() {
    let s = Setup::new();
    profile(&s, "shop", "DUNNAGE_CONCURRENCY=4\n");
    let out = run(&mut s.command(&["check"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("DUNNAGE_CONCURRENCY"),
        "{}",
        stderr(&out)
    );
}
