//! Notifications against real receivers on 127.0.0.1:
//! - every webhook-style service against tests/servers/notify_receiver.py, which records
//!   each request and answers as the service's API does. It speaks TLS with a certificate
//!   of the tests' private CA (`NOTIFICATION_CA_CERT`) that names discord.com,
//!   api.telegram.org, ...; `DUNNAGE_TEST_NOTIFY_RESOLVE` sends those names to it, so the
//!   requests are byte for byte what would go to the real service.
//! - e-mail against aiosmtpd (tests/servers/smtp_capture.py): STARTTLS with AUTH, implicit
//!   TLS, refusals, an untrusted certificate.
//!
//! Also: levels, template files, and failures that must not fail the backup.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::remote::env;
use crate::common::*;
use serde_json::{Value, json};

/// Until a started receiver writes `file` (it listens); a minute, as Python's start-up can
/// take seconds on a loaded host.
fn wait_for(file: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !file.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{} exited early: {status}", file.display());
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The recording HTTP(S) receiver.
struct Receiver {
    child: Child,
    dir: tempfile::TempDir,
    tls_port: u16,
    plain_port: u16,
}

impl Receiver {
    fn start() -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let (tls_port, plain_port) = (free_port(), free_port());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/notify_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .args([tls_port.to_string(), plain_port.to_string()])
            .args([env("DUNNAGE_TEST_TLS_CERT"), env("DUNNAGE_TEST_TLS_KEY")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&dir.path().join("ready"), &mut child);
        Receiver {
            child,
            dir,
            tls_port,
            plain_port,
        }
    }

    fn set_mode(&self, mode: &str) {
        fs::write(self.dir.path().join("mode"), mode).unwrap();
    }

    fn requests(&self) -> Vec<Value> {
        fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `dunnage backup` that notifies through this receiver.
    fn backup(&self, s: &Setup, urls: &str, level: &str) -> Command {
        let mut cmd = fresh(s);
        cmd.env("NOTIFICATION_URLS", urls)
            .env("NOTIFICATION_LEVEL", level)
            .env("NOTIFICATION_CA_CERT", env("DUNNAGE_TEST_TLS_CA"))
            .env("NOTIFICATION_TEMPLATES_DIR", s.tmp.path().join("templates"))
            .env(
                "DUNNAGE_TEST_NOTIFY_RESOLVE",
                format!("127.0.0.1:{}", self.tls_port),
            );
        cmd
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dunnage backup` storing under a name no other run of the test used: runs a test makes
/// in the same second would otherwise meet an existing backup, which is never replaced.
fn fresh(s: &Setup) -> Command {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut cmd = s.backup();
    cmd.env(
        "BACKUP_FILENAME",
        format!("backup-%Y-%m-%dT%H-%M-%S-{n}.{{{{ .Extension }}}}"),
    );
    cmd
}

fn setup() -> Setup {
    let s = Setup::new();
    fs::write(s.src.join("data.txt"), "payload").unwrap();
    s
}

fn header<'a>(r: &'a Value, name: &str) -> &'a str {
    r["headers"][name].as_str().unwrap_or("")
}

fn json_body(r: &Value) -> Value {
    serde_json::from_str(r["body"].as_str().unwrap()).unwrap_or_else(|e| panic!("{e}: {r}"))
}

fn form_body(r: &Value) -> Vec<(String, String)> {
    url::form_urlencoded::parse(r["body"].as_str().unwrap().as_bytes())
        .into_owned()
        .collect()
}

/// The one request whose Host and path start as given.
fn find<'a>(all: &'a [Value], host: &str, path: &str) -> &'a Value {
    let found: Vec<&Value> = all
        .iter()
        .filter(|r| r["host"] == host && r["path"].as_str().unwrap().starts_with(path))
        .collect();
    assert_eq!(found.len(), 1, "{host}{path} in {all:#?}");
    found[0]
}

const TITLE: &str = "Backup succeeded: default at ";

#[test]
fn every_service_receives_the_request_its_api_documents() {
    let rx = Receiver::start();
    let s = setup();
    let urls = [
        "bark://:dev1ce@bark.test/?sound=alarm",
        "discord://w3bhooktoken@112233?username=Backups",
        "gotify://gotify.test/AbCdEfGhIjKlMnO",
        "googlechat://chat.googleapis.com/v1/spaces/SPACE/messages?key=k3y&token=t0k",
        "ifttt://iftttkey/?events=backup_done,backup_log&value3=dunnage",
        "join://shoutrrr:j0inkey@join/?devices=phone,tablet",
        "mattermost://bot@mattermost.test/hooktoken/ops",
        "matrix://bot:m4trix@matrix.test/?rooms=%23ops:matrix.test",
        "matrix://:ready-token@matrix.test",
        "ntfy://alice:ntfypass@ntfy.test/backups?tags=floppy_disk",
        "opsgenie://api.opsgenie.com/genie-key?responders=team:ops&tags=backup",
        "pushbullet://pbtoken/device1",
        "pushover://shoutrrr:apptoken@userkey/?devices=pixel",
        "rocketchat://rocket.test/tokA/tokB/@admin",
        "slack://hook:T0000-B0000-XXXX@webhook?botname=dunnage",
        "slack://xoxb:123-456-abc@C0123",
        "teams://11111111-2222-3333-4444-555555555555@66666666-7777-8888-9999-000000000000/abcdef/0123?host=org.webhook.office.com",
        "telegram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw@telegram?chats=@backups,-1001",
        "zulip://bot%40zulip.test:zul1pkey@zulip.test/?stream=ops&topic=backups",
        "generic+https://hooks.test/in/Path?template=json&@xApiKey=h3ader&$env=prod&_source=x",
        "pagerduty://events.pagerduty.com/pd-integration-key?source=shop",
        "signal://sig:s1gpass@signal.test/+15550001/+15550002,+15550003/group.abc=",
        "twilio://ACsid:tw1liotoken@+15550001/+15550002/+15550003",
        "wecom://wec0mkey?mentioned_list=@all",
        "lark://open.larksuite.com/l4rktoken?secret=s3cret",
        "notifiarr://n0tifiarrkey?channel=123456789012345678",
        "logger://",
    ];
    let plain = format!(
        "generic+http://127.0.0.1:{}/plain?contenttype=text/plain",
        rx.plain_port
    );
    let all = format!("{},{plain}", urls.join(","));
    let out = run(&mut rx.backup(&s, &all, "info"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(!log.contains("failed"), "{log}");
    assert_eq!(log.matches("notification sent to").count(), urls.len() + 1);
    let got = rx.requests();
    for r in &got {
        let plain_http = r["host"] == format!("127.0.0.1:{}", rx.plain_port);
        assert_eq!(r["tls"], !plain_http, "{r}");
        assert!(header(r, "user-agent").starts_with("dunnage/"), "{r}");
    }

    let r = find(&got, "events.pagerduty.com", "/v2/enqueue");
    let b = json_body(r);
    assert_eq!(b["routing_key"], "pd-integration-key");
    assert_eq!(b["event_action"], "trigger");
    assert_eq!(b["payload"]["severity"], "info");
    assert_eq!(b["payload"]["source"], "shop");
    assert!(b["payload"]["summary"].as_str().unwrap().starts_with(TITLE));

    // Signal: the numbers in one request, each group in its own.
    let signal: Vec<&Value> = got.iter().filter(|r| r["host"] == "signal.test").collect();
    assert_eq!(signal.len(), 2);
    let b = json_body(signal[0]);
    assert_eq!(b["number"], "+15550001");
    assert_eq!(b["recipients"], json!(["+15550002", "+15550003"]));
    assert_eq!(json_body(signal[1])["recipients"], json!(["group.abc="]));
    assert!(header(signal[0], "authorization").starts_with("Basic "));

    // Twilio: one message per recipient, the sender's separators removed.
    let twilio: Vec<&Value> = got
        .iter()
        .filter(|r| r["host"] == "api.twilio.com")
        .collect();
    assert_eq!(twilio.len(), 2);
    assert_eq!(
        twilio[0]["path"],
        "/2010-04-01/Accounts/ACsid/Messages.json"
    );
    let f = form_body(twilio[0]);
    assert!(f.contains(&("From".into(), "+15550001".into())), "{f:?}");
    assert!(f.contains(&("To".into(), "+15550002".into())), "{f:?}");

    let r = find(&got, "qyapi.weixin.qq.com", "/cgi-bin/webhook/send");
    assert_eq!(r["path"], "/cgi-bin/webhook/send?key=wec0mkey");
    let b = json_body(r);
    assert_eq!(b["msgtype"], "text");
    assert_eq!(b["text"]["mentioned_list"], json!(["@all"]));

    let r = find(
        &got,
        "open.larksuite.com",
        "/open-apis/bot/v2/hook/l4rktoken",
    );
    let b = json_body(r);
    assert_eq!(b["msg_type"], "text");
    assert!(!b["sign"].as_str().unwrap().is_empty() && b["timestamp"].is_string());

    let r = find(
        &got,
        "notifiarr.com",
        "/api/v1/notification/passthrough/n0tifiarrkey",
    );
    let b = json_body(r);
    assert_eq!(b["discord"]["ids"]["channel"], 123456789012345678u64);
    assert!(
        b["discord"]["text"]["title"]
            .as_str()
            .unwrap()
            .starts_with(TITLE)
    );

    // logger:// writes the message to our log.
    assert!(log.contains("notification: Backup succeeded"), "{log}");

    let r = find(&got, "bark.test", "/push");
    let b = json_body(r);
    assert_eq!(b["device_key"], "dev1ce");
    assert_eq!(b["sound"], "alarm");
    assert!(b["title"].as_str().unwrap().starts_with(TITLE));
    assert!(
        b["body"]
            .as_str()
            .unwrap()
            .contains("Destinations:\n- Local: stored at")
    );

    let r = find(&got, "discord.com", "/api/webhooks/112233/w3bhooktoken");
    assert_eq!(r["method"], "POST");
    assert_eq!(header(r, "content-type"), "application/json");
    let b = json_body(r);
    assert_eq!(b["username"], "Backups");
    assert!(b["embeds"][0]["title"].as_str().unwrap().starts_with(TITLE));
    assert_eq!(b["embeds"][0]["color"], 0x50D9FF);

    let r = find(&got, "gotify.test", "/message");
    assert_eq!(header(r, "x-gotify-key"), "AbCdEfGhIjKlMnO");
    assert_eq!(json_body(r)["priority"], 2);

    let r = find(&got, "chat.googleapis.com", "/v1/spaces/SPACE/messages");
    assert_eq!(r["path"], "/v1/spaces/SPACE/messages?key=k3y&token=t0k");
    assert!(
        json_body(r)["text"]
            .as_str()
            .unwrap()
            .starts_with("*Backup succeeded")
    );

    for event in ["backup_done", "backup_log"] {
        let r = find(
            &got,
            "maker.ifttt.com",
            &format!("/trigger/{event}/with/key/iftttkey"),
        );
        let b = json_body(r);
        assert_eq!(b["value3"], "dunnage");
        assert!(
            b["value2"]
                .as_str()
                .unwrap()
                .starts_with("Schedule \"default\"")
        );
    }

    let r = find(
        &got,
        "joinjoaomgcd.appspot.com",
        "/_ah/api/messaging/v1/sendPush",
    );
    let q: Vec<(String, String)> = url::form_urlencoded::parse(
        r["path"]
            .as_str()
            .unwrap()
            .split_once('?')
            .unwrap()
            .1
            .as_bytes(),
    )
    .into_owned()
    .collect();
    assert!(q.contains(&("deviceIds".into(), "phone,tablet".into())));
    assert!(q.contains(&("apikey".into(), "j0inkey".into())));

    let r = find(&got, "mattermost.test", "/hooks/hooktoken");
    let b = json_body(r);
    assert_eq!(
        (b["username"].as_str(), b["channel"].as_str()),
        (Some("bot"), Some("ops"))
    );

    // Matrix with a password: log in, join the alias, send with the session token.
    let login = find(&got, "matrix.test", "/_matrix/client/v3/login");
    let b = json_body(login);
    assert_eq!(b["identifier"]["user"], "bot");
    assert_eq!(b["password"], "m4trix");
    let join = find(
        &got,
        "matrix.test",
        "/_matrix/client/v3/join/%23ops%3Amatrix.test",
    );
    assert_eq!(header(join, "authorization"), "Bearer matrix-session");
    let send = find(
        &got,
        "matrix.test",
        "/_matrix/client/v3/rooms/%21joined%3Amatrix.test/send/m.room.message/",
    );
    assert_eq!(send["method"], "PUT");
    assert_eq!(json_body(send)["msgtype"], "m.text");
    // Matrix with an access token and no rooms: every joined room.
    let rooms = find(&got, "matrix.test", "/_matrix/client/v3/joined_rooms");
    assert_eq!(header(rooms, "authorization"), "Bearer ready-token");
    for room in ["one", "two"] {
        let r = find(
            &got,
            "matrix.test",
            &format!("/_matrix/client/v3/rooms/%21{room}%3Amatrix.test/send/"),
        );
        assert_eq!(header(r, "authorization"), "Bearer ready-token");
    }

    let r = find(&got, "ntfy.test", "/backups");
    assert_eq!(header(r, "authorization"), "Basic YWxpY2U6bnRmeXBhc3M=");
    assert_eq!(header(r, "tags"), "floppy_disk");
    assert!(header(r, "title").starts_with(TITLE));
    assert!(
        r["body"]
            .as_str()
            .unwrap()
            .starts_with("Schedule \"default\"")
    );

    let r = find(&got, "api.opsgenie.com", "/v2/alerts");
    assert_eq!(header(r, "authorization"), "GenieKey genie-key");
    let b = json_body(r);
    assert_eq!(
        b["responders"],
        serde_json::json!([{"type": "team", "name": "ops"}])
    );
    assert_eq!(b["priority"], "P5");
    assert!(b["message"].as_str().unwrap().starts_with(TITLE));

    let r = find(&got, "api.pushbullet.com", "/v2/pushes");
    assert_eq!(header(r, "access-token"), "pbtoken");
    assert_eq!(json_body(r)["device_iden"], "device1");
    assert_eq!(json_body(r)["type"], "note");

    let r = find(&got, "api.pushover.net", "/1/messages.json");
    let f = form_body(r);
    for pair in [
        ("token", "apptoken"),
        ("user", "userkey"),
        ("device", "pixel"),
    ] {
        assert!(f.contains(&(pair.0.into(), pair.1.into())), "{f:?}");
    }

    let r = find(&got, "rocket.test", "/hooks/tokA/tokB");
    assert_eq!(json_body(r)["channel"], "@admin");

    let r = find(&got, "hooks.slack.com", "/services/T0000/B0000/XXXX");
    assert_eq!(json_body(r)["username"], "dunnage");
    assert_eq!(json_body(r)["attachments"][0]["color"], "good");
    let r = find(&got, "slack.com", "/api/chat.postMessage");
    assert_eq!(header(r, "authorization"), "Bearer xoxb-123-456-abc");
    assert_eq!(json_body(r)["channel"], "C0123");

    let r = find(
        &got,
        "org.webhook.office.com",
        "/webhookb2/11111111-2222-3333-4444-555555555555@66666666-7777-8888-9999-000000000000/IncomingWebhook/abcdef/0123",
    );
    assert_eq!(json_body(r)["@type"], "MessageCard");

    let chats: Vec<String> = got
        .iter()
        .filter(|r| r["host"] == "api.telegram.org")
        .map(|r| {
            assert_eq!(
                r["path"],
                "/bot110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage"
            );
            let b = json_body(r);
            assert_eq!(b["parse_mode"], "HTML");
            assert!(
                b["text"]
                    .as_str()
                    .unwrap()
                    .starts_with("<b>Backup succeeded")
            );
            b["chat_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(chats, ["@backups", "-1001"]);

    let r = find(&got, "zulip.test", "/api/v1/messages");
    assert_eq!(
        header(r, "authorization"),
        "Basic Ym90QHp1bGlwLnRlc3Q6enVsMXBrZXk="
    );
    let f = form_body(r);
    assert!(f.contains(&("type".into(), "stream".into())));
    assert!(f.contains(&("to".into(), "ops".into())));
    assert!(f.contains(&("topic".into(), "backups".into())));

    let r = find(&got, "hooks.test", "/in/Path");
    assert_eq!(r["path"], "/in/Path?source=x");
    assert_eq!(header(r, "x-api-key"), "h3ader");
    let b = json_body(r);
    assert_eq!(b["env"], "prod");
    assert!(b["title"].as_str().unwrap().starts_with(TITLE));
    assert!(b["message"].as_str().unwrap().starts_with("Schedule"));

    let r = find(&got, &format!("127.0.0.1:{}", rx.plain_port), "/plain");
    assert_eq!(header(r, "content-type"), "text/plain");
    assert!(
        r["body"]
            .as_str()
            .unwrap()
            .starts_with("Schedule \"default\"")
    );

    // One request each (logger:// sends none), plus: a second IFTTT event, Matrix log-in
    // and join, Matrix's room listing and second room, a second Telegram chat, Signal's
    // group, Twilio's second recipient.
    assert_eq!(got.len(), urls.len() - 1 + 1 + 8, "{got:#?}");
    // Secrets stay out of the log: only the redacted URLs appear.
    for secret in [
        "w3bhooktoken",
        "m4trix",
        "apptoken",
        "zul1pkey",
        "h3ader",
        "genie-key",
        "pd-integration-key",
        "s1gpass",
        "tw1liotoken",
        "wec0mkey",
        "l4rktoken",
        "s3cret",
        "n0tifiarrkey",
    ] {
        assert!(!log.contains(secret), "{secret} leaked: {log}");
    }
}

#[test]
fn levels_decide_which_runs_notify() {
    let rx = Receiver::start();
    let s = setup();
    let url = "discord://tok@1";
    let count = || rx.requests().len();

    // error (the default): a good run is quiet, a failed one is reported with its error and
    // the log lines that lead to it.
    run(&mut rx.backup(&s, url, "error"));
    assert_eq!(count(), 0);
    let out = run(rx
        .backup(&s, url, "error")
        .env("BACKUP_SOURCES", s.tmp.path().join("gone")));
    assert_eq!(out.status.code(), Some(1));
    let got = rx.requests();
    assert_eq!(got.len(), 1);
    let embed = &json_body(&got[0])["embeds"][0];
    assert!(
        embed["title"]
            .as_str()
            .unwrap()
            .starts_with("Backup FAILED: default")
    );
    let text = embed["description"].as_str().unwrap();
    assert!(
        text.contains("Error: creating the archive failed: the source folder"),
        "{text}"
    );
    assert!(
        text.contains("\nLog:\n") && text.contains("level=INFO msg=backing up"),
        "{text}"
    );
    assert_eq!(embed["color"], 0xD60510);

    // A destination that fails while another stores the backup: a failure, so the default
    // level (error) reports it, as the reference does.
    let webdav = [
        ("WEBDAV_URL", "http://127.0.0.1:9/dav/"),
        ("BACKUP_RETRY_TIMEOUT", "0s"),
    ];
    let out = run(rx.backup(&s, url, "error").envs(webdav));
    assert_eq!(out.status.code(), Some(1), "not stored everywhere");
    let got = rx.requests();
    assert_eq!(got.len(), 2, "error level reports a failed destination");
    let embed = &json_body(&got[1])["embeds"][0];
    assert!(
        embed["title"]
            .as_str()
            .unwrap()
            .starts_with("Backup stored, but not everywhere"),
        "{embed}"
    );
    assert!(
        embed["description"]
            .as_str()
            .unwrap()
            .contains("- WebDAV: FAILED: ")
    );
    assert_eq!(embed["color"], 0xD60510);
    run(&mut rx.backup(&s, url, "warn"));
    assert_eq!(count(), 2, "warn level ignores clean runs");
    run(&mut rx.backup(&s, url, "info"));
    assert_eq!(count(), 3, "info level reports every run");
}

/// Template files written for docker-volume-backup render the same here.
#[test]
fn custom_templates_render_with_the_reference_data_and_helpers() {
    let rx = Receiver::start();
    let s = setup();
    let dir = s.tmp.path().join("templates");
    fs::create_dir(&dir).unwrap();
    fs::write(
        dir.join("custom.tmpl"),
        r#"{{ define "title_success" -}}
[{{ env "HOSTNAME_LABEL" }}] {{ .Stats.BackupFile.Name }} done
{{- end }}
{{ define "body_success" -}}
size={{ .Stats.BackupFile.Size }} ({{ formatBytesBin .Stats.BackupFile.Size }}, {{ .Stats.BackupFile.Size | formatBytesDec }})
started={{ formatTime .Stats.StartTime }}
{{ range $name, $s := .Stats.Storages }}{{ $name }}: total={{ $s.Total }} pruned={{ $s.Pruned }} errors={{ $s.PruneErrors }}
{{ end -}}
containers={{ .Stats.Containers.Stopped }}/{{ .Stats.Containers.All }} storages={{ len .Stats.Storages }}
prefix={{ .Config.BackupPruningPrefix }} secret=[{{ env "EMAIL_SMTP_PASSWORD" }}]{{ .Config.AwsSecretAccessKey }}
{{ if .Error }}error{{ else }}no error{{ end }}
Log output was:
{{ .Stats.LogOutput }}
{{- end }}
"#,
    )
    .unwrap();
    // A later file may redefine one part.
    fs::write(
        dir.join("z-override.tmpl"),
        r#"{{ define "title_failure" }}FAILED {{ .Error }}{{ end }}"#,
    )
    .unwrap();
    fs::write(dir.join("README"), "not a template: no dot in the name").unwrap();
    let url = format!("generic+http://127.0.0.1:{}/t?template=json", rx.plain_port);
    let out = run(rx
        .backup(&s, &url, "info")
        .env("HOSTNAME_LABEL", "web-1")
        .env("EMAIL_SMTP_PASSWORD", "s3cret-value")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .env("BACKUP_RETENTION_DAYS", "7"));
    assert_eq!(out.status.code(), Some(0));
    let archive = s.only_archive();
    let name = archive.file_name().unwrap().to_str().unwrap();
    let size = fs::metadata(&archive).unwrap().len();
    let got = rx.requests();
    let b = json_body(&got[0]);
    assert_eq!(b["title"], format!("[web-1] {name} done"));
    let body = b["message"].as_str().unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[0],
        format!("size={size} ({}, {})", bin(size), dec(size))
    );
    assert!(
        lines[1].starts_with("started=20") && lines[1].ends_with('Z'),
        "{body}"
    );
    assert_eq!(lines[2], "Local: total=1 pruned=0 errors=0");
    assert_eq!(lines[3], "containers=0/0 storages=1");
    assert!(lines[4].starts_with("prefix=backup- secret=[]"), "{body}");
    assert_eq!(lines[5], "no error");
    assert_eq!(lines[6], "Log output was:");
    assert!(lines[7].starts_with("time=20"), "{body}");
    assert!(body.contains("level=INFO msg=backing up"), "{body}");
    assert!(!body.contains("s3cret"));

    // Failure: the override from the later file, and the default body (not defined).
    run(rx
        .backup(&s, &url, "info")
        .env("BACKUP_SOURCES", s.tmp.path().join("gone")));
    let b = json_body(&rx.requests()[1]);
    assert!(
        b["title"]
            .as_str()
            .unwrap()
            .starts_with("FAILED creating the archive failed"),
        "{b}"
    );
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("Schedule \"default\"")
    );

    // A template that does not parse is a loud warning naming the file; the backup runs
    // and the notification goes out with the built-in text.
    fs::write(
        dir.join("broken.tmpl"),
        "{{ define \"body_success\" }}{{ .Stats",
    )
    .unwrap();
    let before = rx.requests().len();
    let out = run(&mut rx.backup(&s, &url, "info"));
    assert_eq!(out.status.code(), Some(0));
    let log = stderr(&out);
    assert!(log.contains("broken.tmpl: not a valid template"), "{log}");
    assert!(log.contains(" WARN "), "{log}");
    assert_eq!(rx.requests().len(), before + 1);
}

fn bin(n: u64) -> String {
    format_size(n, 1024.0, "KiB")
}

fn dec(n: u64) -> String {
    format_size(n, 1000.0, "kB")
}

fn format_size(n: u64, unit: f64, k: &str) -> String {
    if (n as f64) < unit {
        return format!("{n} B");
    }
    assert!((n as f64) < unit * unit, "the test archive is small");
    format!("{:.1} {k}", n as f64 / unit)
}

#[test]
fn undeliverable_notifications_are_logged_and_never_fail_a_good_backup() {
    let rx = Receiver::start();
    let s = setup();
    let closed = free_port();
    let urls = format!(
        "discord://tok@1,generic+http://127.0.0.1:{closed}/down,slack://xoxb:1-2-3@C1,telegram://1:abc@telegram?chats=9"
    );
    // The services answer 500 (retried, then given up), a port is closed, and the APIs
    // that answer 200 with "not accepted" are believed.
    rx.set_mode("fail500");
    let out = run(&mut rx.backup(&s, &urls, "info"));
    assert_eq!(out.status.code(), Some(0), "a good backup stays good");
    let log = stderr(&out);
    assert!(log.contains("notification to Discord"), "{log}");
    assert!(log.contains("answered 500 Internal Server Error"), "{log}");
    assert!(
        log.contains("0 health ping(s) and 4 notification(s) not delivered"),
        "{log}"
    );
    let discord_attempts = rx
        .requests()
        .iter()
        .filter(|r| r["host"] == "discord.com")
        .count();
    assert!(discord_attempts > 1, "5xx is retried");
    assert_eq!(s.archive_names().len(), 1);

    rx.set_mode("refuse");
    let before = rx.requests().len();
    let out = run(&mut rx.backup(&s, &urls, "info"));
    assert_eq!(out.status.code(), Some(0));
    let log = stderr(&out);
    assert!(
        log.contains("refused the message: {\"ok\": false, \"error\": \"channel_not_found\"}"),
        "{log}"
    );
    assert!(log.contains("chat not found"), "{log}");
    assert_eq!(rx.requests().len() - before, 3, "refusals are not retried");

    // A service that never answers is given up within the deadline.
    rx.set_mode("hang");
    let started = Instant::now();
    let out = run(&mut rx.backup(&s, "discord://tok@1", "info"));
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("1 notification(s) not delivered"));
}

#[test]
fn check_notify_sends_a_test_message_to_each_service() {
    let rx = Receiver::start();
    let s = setup();
    let closed = free_port();
    let urls = format!("discord://tok@1,generic+http://127.0.0.1:{closed}/x");
    let cmd = rx.backup(&s, &urls, "error");
    let mut check = same_env(&cmd, cmd.get_program());
    check.args(["check", "--notify"]);
    let out = run(&mut check);
    assert_eq!(out.status.code(), Some(1), "one service is down");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("[default] notify Discord (discord://***@1): OK"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "[default] notify Generic webhook (generic+http://127.0.0.1:{closed}/***): FAILED: "
        )),
        "{text}"
    );
    let got = rx.requests();
    assert_eq!(got.len(), 1);
    let embed = &json_body(&got[0])["embeds"][0];
    assert_eq!(embed["title"], "dunnage test notification: default");
    assert!(s.archive_names().is_empty(), "check stores nothing");
}

#[test]
fn bad_notification_urls_are_loud_warnings_never_a_skipped_backup_and_check_fails() {
    let rx = Receiver::start();
    let s = setup();
    let urls = "fax://user:hunter2@fax.example,smtp://u:pa55@mail.example/?from=a@b.c&to=nobody,\
                discord://only-token@,discord://tok@1";
    let mut cmd = rx.backup(&s, urls, "info");
    let out = run(&mut cmd);
    let log = stderr(&out);
    // The backup runs, and the usable service still hears about it.
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(s.archive_names().len(), 1);
    assert_eq!(rx.requests().len(), 1, "the good Discord URL is notified");
    for needle in [
        "unknown notification service \"fax\"",
        "fax://***@fax.example",
        "smtp://***@mail.example/?from=a@b.c&to=nobody: \"nobody\" is not an e-mail address",
        "discord://***",
        "`dunnage check` fails until this is fixed",
    ] {
        assert!(log.contains(needle), "{needle}: {log}");
    }
    assert!(log.contains(" WARN "), "{log}");

    // `check` reports each one as an error.
    let mut check = same_env(&cmd, cmd.get_program());
    check.arg("check");
    let out = run(&mut check);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.matches("[default] notifications: FAILED: NOTIFICATION_URLS")
            .count(),
        3,
        "{text}"
    );
    for secret in ["hunter2", "pa55", "only-token"] {
        assert!(
            !log.contains(secret) && !text.contains(secret),
            "{secret} leaked"
        );
    }
}

/// An aiosmtpd server in STARTTLS or implicit TLS mode; user "backup", password "p@ss word".
struct Mail {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Mail {
    fn start(mode: &str) -> Mail {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/smtp_capture.py");
        let mut child = Command::new(env("DUNNAGE_TEST_PYTHON"))
            .arg(script)
            .arg(dir.path())
            .args([&port.to_string(), mode])
            .args([env("DUNNAGE_TEST_TLS_CERT"), env("DUNNAGE_TEST_TLS_KEY")])
            .args(["backup", "p@ss word"])
            .stdout(Stdio::null())
            // aiosmtpd prints a traceback for each client that gives up on TLS (one test
            // does that on purpose).
            .stderr(fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        wait_for(&dir.path().join("ready"), &mut child);
        Mail { child, dir, port }
    }

    fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Mail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mail_backup(s: &Setup, urls: &str) -> Command {
    let mut cmd = fresh(s);
    cmd.env("NOTIFICATION_URLS", urls)
        .env("NOTIFICATION_LEVEL", "info")
        .env("NOTIFICATION_CA_CERT", env("DUNNAGE_TEST_TLS_CA"))
        .env("NOTIFICATION_TEMPLATES_DIR", s.tmp.path().join("templates"));
    cmd
}

#[test]
fn email_over_starttls_with_a_private_ca_and_auth() {
    let mail = Mail::start("starttls");
    let s = setup();
    let url = format!(
        "smtp://backup:p%40ss%20word@127.0.0.1:{}/?from=dunnage@example.org&fromname=Backups&to=ops@example.org,dev@example.org&clienthost=backup-host",
        mail.port
    );
    let out = run(&mut mail_backup(&s, &url));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("notification sent to Email"),
        "{}",
        stderr(&out)
    );
    let got = mail.messages();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m["tls"], true);
    assert_eq!(m["auth"], true);
    assert_eq!(m["login"], "backup");
    assert_eq!(m["helo"], "backup-host");
    assert_eq!(m["mail_from"], "dunnage@example.org");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["ops@example.org", "dev@example.org"])
    );
    let data = m["data"].as_str().unwrap();
    assert!(
        data.contains("From: Backups <dunnage@example.org>"),
        "{data}"
    );
    assert!(
        data.contains("Subject: Backup succeeded: default at "),
        "{data}"
    );
    assert!(data.contains("Destinations:"), "{data}");

    // The deprecated EMAIL_* variables reach the same server the same way.
    let out = run(fresh(&s)
        .env("EMAIL_NOTIFICATION_RECIPIENT", "legacy@example.org")
        .env("EMAIL_SMTP_HOST", "127.0.0.1")
        .env("EMAIL_SMTP_PORT", mail.port.to_string())
        .env("EMAIL_SMTP_USERNAME", "backup")
        .env("EMAIL_SMTP_PASSWORD", "p@ss word")
        .env("NOTIFICATION_LEVEL", "info")
        .env("NOTIFICATION_CA_CERT", env("DUNNAGE_TEST_TLS_CA")));
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("EMAIL_* variables are deprecated"));
    let got = mail.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1]["rcpt_tos"],
        serde_json::json!(["legacy@example.org"])
    );
    assert_eq!(got[1]["mail_from"], "noreply@nohost");
    assert_eq!(got[1]["auth"], true);
}

#[test]
fn email_over_implicit_tls() {
    let mail = Mail::start("implicit");
    let s = setup();
    let url = format!(
        "smtp://backup:p%40ss%20word@127.0.0.1:{}/?from=dunnage@example.org&to=ops@example.org&encryption=ImplicitTLS&subject=Nightly",
        mail.port
    );
    let out = run(&mut mail_backup(&s, &url));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = mail.messages();
    assert_eq!(got.len(), 1, "{}", stderr(&out));
    assert_eq!(got[0]["tls"], true);
    assert!(
        got[0]["data"]
            .as_str()
            .unwrap()
            .contains("Subject: Nightly")
    );
}

#[test]
fn refused_email_is_reported_and_the_backup_stands() {
    let mail = Mail::start("starttls");
    let s = setup();
    let base = format!("127.0.0.1:{}/?from=dunnage@example.org", mail.port);
    let cases = [
        (
            format!("smtp://backup:wrong@{base}&to=ops@example.org"),
            "535",
        ),
        (
            format!("smtp://backup:p%40ss%20word@{base}&to=refuse@example.org"),
            "550",
        ),
    ];
    for (url, code) in cases {
        let out = run(&mut mail_backup(&s, &url));
        assert_eq!(out.status.code(), Some(0), "a good backup stays good");
        let log = stderr(&out);
        assert!(
            log.contains("notification to Email") && log.contains(code),
            "{log}"
        );
        assert!(!log.contains("p@ss") && !log.contains("wrong@"), "{log}");
    }
    // Without the private CA the server's certificate is not trusted: nothing is sent,
    // least of all the password.
    let url = format!("smtp://backup:p%40ss%20word@{base}&to=ops@example.org");
    let out = run(fresh(&s)
        .env("NOTIFICATION_URLS", &url)
        .env("NOTIFICATION_LEVEL", "info"));
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("UnknownIssuer"), "{}", stderr(&out));
    assert!(mail.messages().is_empty());
}

#[test]
fn an_invalid_configuration_is_notified_once_per_distinct_mistake() {
    let rx = Receiver::start();
    let s = setup();
    let state = s.tmp.path().join("state");
    // The scheduler (no subcommand), as a container starts it, restarting after exit 2.
    let start = |cron: &str| {
        let backup = rx.backup(&s, "discord://tok@1", "error");
        let mut cmd = same_env(&backup, backup.get_program());
        cmd.env("BACKUP_CRON_EXPRESSION", cron)
            .env("BACKUP_STATE_DIR", &state);
        run(&mut cmd)
    };
    let out = start("61 * * * *");
    assert_eq!(out.status.code(), Some(2));
    let got = rx.requests();
    assert_eq!(got.len(), 1, "{}", stderr(&out));
    let embed = &json_body(&got[0])["embeds"][0];
    assert_eq!(
        embed["title"],
        "dunnage cannot run schedule default: invalid configuration"
    );
    assert!(
        embed["description"]
            .as_str()
            .unwrap()
            .contains("BACKUP_CRON_EXPRESSION=\"61 * * * *\""),
        "{embed}"
    );
    assert_eq!(embed["color"], 0xD60510);

    // Restarts with the same mistake: not again.
    for _ in 0..2 {
        assert_eq!(start("61 * * * *").status.code(), Some(2));
    }
    assert_eq!(rx.requests().len(), 1);
    // Another mistake is news.
    assert_eq!(start("62 * * * *").status.code(), Some(2));
    assert_eq!(rx.requests().len(), 2);
    // A valid start forgets, so the same mistake made later is reported again.
    let mut ok = rx.backup(&s, "discord://tok@1", "error");
    ok.env("BACKUP_STATE_DIR", &state);
    assert_eq!(run(&mut ok).status.code(), Some(0));
    assert_eq!(start("62 * * * *").status.code(), Some(2));
    assert_eq!(rx.requests().len(), 3);
}

#[test]
fn mqtt_reaches_the_broker_plain_and_over_tls_and_a_refusal_never_fails_the_backup() {
    let s = setup();
    let (plain, tls) = (
        env("DUNNAGE_TEST_MQTT_PORT"),
        env("DUNNAGE_TEST_MQTTS_PORT"),
    );
    let topic = format!("dunnage/t{}", std::process::id());
    let urls = format!(
        "mqtt://dunnage:mq%20pass@127.0.0.1:{plain}/{topic}/plain?qos=1&retained=yes,\
         mqtts://dunnage:mq%20pass@127.0.0.1:{tls}/{topic}/tls?qos=2&retained=yes"
    );
    let out = run(fresh(&s)
        .env("NOTIFICATION_URLS", &urls)
        .env("NOTIFICATION_LEVEL", "info")
        .env("NOTIFICATION_CA_CERT", env("DUNNAGE_TEST_TLS_CA")));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(log.matches("notification sent to MQTT").count(), 2, "{log}");
    assert!(!log.contains("mq pass"), "{log}");
    // Both messages were retained: a subscriber arriving now gets them.
    let sub = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &plain,
            "-u",
            "dunnage",
            "-P",
            "mq pass",
        ])
        .args(["-t", &format!("{topic}/#"), "-C", "2", "-W", "10", "-v"])
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&sub.stdout);
    for leg in ["plain", "tls"] {
        assert!(
            got.contains(&format!("{topic}/{leg} Backup succeeded")),
            "{leg}: {got}"
        );
    }

    // A broker that refuses the login: the backup stands, the failure is logged.
    let out = run(fresh(&s)
        .env(
            "NOTIFICATION_URLS",
            format!("mqtt://dunnage:wrong@127.0.0.1:{plain}/{topic}/x"),
        )
        .env("NOTIFICATION_LEVEL", "info"));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("1 notification(s) not delivered"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_server_echoing_credentials_never_gets_them_into_the_log_or_a_notification() {
    let rx = Receiver::start();
    rx.set_mode("echo");
    let s = setup();
    let password = "echoed-pass-7731";
    let mut cmd = rx.backup(&s, "discord://tok@1", "error");
    cmd.env(
        "WEBDAV_URL",
        format!("http://127.0.0.1:{}/dav/", rx.plain_port),
    )
    .env("WEBDAV_USERNAME", "backup-user")
    .env("WEBDAV_PASSWORD", password)
    .env("BACKUP_RETRY_TIMEOUT", "0s");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1), "WebDAV failed");
    let log = stderr(&out);
    // The server's answer is shown, with the password taken out.
    assert!(
        log.contains("storage error for login backup-user:***"),
        "{log}"
    );
    assert!(!log.contains(password), "{log}");
    let sent: Vec<Value> = rx
        .requests()
        .into_iter()
        .filter(|r| r["host"] == "discord.com")
        .collect();
    assert_eq!(sent.len(), 1, "the failure is notified");
    let text = sent[0]["body"].as_str().unwrap();
    assert!(text.contains("backup-user:***"), "{text}");
    assert!(!text.contains(password), "{text}");
}
