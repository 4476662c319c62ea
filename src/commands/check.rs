//! `dunnage check`: can a backup run? The sources are readable, the Docker engine answers
//! (when Docker is set up), there is at least one destination and every configured one is
//! reachable, readable and (with `--write`) writable, the notification settings are usable
//! and (with `--notify`) a test message reaches every service. One line per check; any
//! failure makes the command exit 1.

use std::io::Write;

use bytes::Bytes;
use futures_util::StreamExt;

use std::time::Duration;

use crate::config::Config;
use crate::net::RetryPolicy;
use crate::storage::{self, Storage};
use crate::stream::ByteStream;

/// The retry budget of `check`: a dead server is reported in seconds, not after the
/// minutes a backup would keep trying.
pub const CHECK_RETRY_BUDGET: Duration = Duration::from_secs(3);

/// `dunnage check` for every schedule: false when a destination failed, a notification
/// setting is unusable, or (with `notify`) a notification service could not be reached.
pub async fn run(configs: &[Config], write: bool, notify: bool, out: &mut impl Write) -> bool {
    let mut ok = true;
    for config in configs {
        ok &= check_sources(config, out);
        ok &= check_docker(config, out).await;
        ok &= check_destinations(config, write, out).await;
        for problem in &config.notification_problems {
            ok = false;
            let _ = writeln!(out, "[{}] notifications: FAILED: {problem}", config.name);
        }
        if notify {
            ok &= check_notifications(config, out).await;
        }
    }
    ok
}

/// What `check` would fail on that shows without touching a destination (sources, the
/// Docker engine, no destination at all): the scheduler warns about it at start.
pub async fn preflight(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    check_sources(config, &mut out);
    check_docker(config, &mut out).await;
    if config.targets().describe().is_empty() {
        let _ = writeln!(
            out,
            "[{}] destinations: FAILED: none: nothing is mounted at BACKUP_ARCHIVE={} and no \
             other destination is configured",
            config.name,
            config.archive_dir.display()
        );
    }
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| l.contains("FAILED"))
        .map(str::to_owned)
        .collect()
}

/// The sources folder exists and can be listed.
fn check_sources(config: &Config, out: &mut impl Write) -> bool {
    let dir = &config.sources;
    let line = match std::fs::read_dir(dir) {
        Ok(entries) => Ok(format!(
            "OK: {} ({} entries)",
            dir.display(),
            entries.count()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "{} does not exist (BACKUP_SOURCES; mount the volumes to back up there)",
            dir.display()
        )),
        Err(e) => Err(format!(
            "cannot read {} (BACKUP_SOURCES): {e}",
            dir.display()
        )),
    };
    report(out, &config.name, "sources", line)
}

/// The Docker engine answers, when Docker is set up (`DOCKER_HOST` or the socket).
async fn check_docker(config: &Config, out: &mut impl Write) -> bool {
    let line = match crate::docker::Engine::connect(&config.docker).await {
        Ok(Some(_)) => Ok("OK: the engine answers".to_owned()),
        Ok(None) => Ok("off (DOCKER_HOST is unset and there is no socket)".to_owned()),
        Err(e) => Err(crate::net::error_chain(&e)),
    };
    report(out, &config.name, "Docker", line)
}

fn report(out: &mut impl Write, schedule: &str, what: &str, line: Result<String, String>) -> bool {
    let (ok, text) = match line {
        Ok(text) => (true, text),
        Err(e) => (false, format!("FAILED: {e}")),
    };
    let _ = writeln!(out, "[{schedule}] {what}: {text}");
    ok
}

/// Checks each destination of `config`: lists its folder, and with `write` stores a small
/// object, reads it back, compares and deletes it. Returns false when any check failed.
pub async fn check_destinations(config: &Config, write: bool, out: &mut impl Write) -> bool {
    let name = &config.name;
    let mut ok = true;
    if !config.archive_dir.is_dir() {
        let _ = writeln!(
            out,
            "[{name}] Local: off ({} does not exist)",
            config.archive_dir.display()
        );
    }
    let mut targets = config.targets();
    targets.retry = RetryPolicy::with_timeout(CHECK_RETRY_BUDGET);
    let (owned, unavailable) = storage::open_all(&targets).await;
    if owned.is_empty() && unavailable.is_empty() {
        let _ = writeln!(
            out,
            "[{name}] destinations: FAILED: none: nothing is mounted at BACKUP_ARCHIVE={} and \
             no other destination is configured",
            config.archive_dir.display()
        );
        ok = false;
    }
    for (dest, e) in &unavailable {
        let _ = writeln!(out, "[{name}] {dest}: FAILED: {e}");
        ok = false;
    }
    for storage in &owned {
        let line = match check_one(storage.as_ref(), write).await {
            Ok(report) => format!("OK: {report}"),
            Err(e) => {
                ok = false;
                format!("FAILED: {e}")
            }
        };
        let _ = writeln!(out, "[{name}] {}: {line}", storage.backend());
    }
    ok
}

/// Sends a test message to each notification service of `config`. Returns false when any
/// could not be reached (true when none is configured).
pub async fn check_notifications(config: &Config, out: &mut impl Write) -> bool {
    let name = &config.name;
    let Some(settings) = &config.notifications else {
        let _ = writeln!(out, "[{name}] notifications: none configured");
        return true;
    };
    let msg = crate::notify::Message {
        title: format!("dunnage test notification: {name}"),
        body: format!(
            "This is a test sent by `dunnage check --notify` for schedule {name:?}. \
             Notifications reach this service."
        ),
        outcome: crate::notify::Outcome::Success,
    };
    let mut ok = true;
    for (service, result) in crate::notify::send_each(settings, &msg).await {
        let line = match result {
            Ok(()) => "OK: test message sent".to_owned(),
            Err(e) => {
                ok = false;
                format!("FAILED: {e}")
            }
        };
        let _ = writeln!(out, "[{name}] notify {service}: {line}");
    }
    ok
}

async fn check_one(storage: &dyn Storage, write: bool) -> Result<String, String> {
    let entries = storage.list().await.map_err(|e| e.to_string())?;
    let mut report = format!("listed, {} object(s) in the folder", entries.len());
    if !write {
        return Ok(report);
    }
    let probe = format!(
        "dunnage-check-{}-{}.txt",
        std::process::id(),
        fastrand::u64(..)
    );
    let body = Bytes::from(format!("dunnage check {probe}\n"));
    let data: ByteStream = Box::pin(futures_util::stream::iter([Ok(body.clone())]));
    storage
        .put(&probe, data)
        .await
        .map_err(|e| format!("writing {probe}: {e}"))?;
    let read = async {
        let mut got = Vec::new();
        let mut stream = storage.get(&probe).await.map_err(|e| e.to_string())?;
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        }
        Ok::<_, String>(got)
    }
    .await;
    let deleted = storage.delete(&probe).await;
    match read {
        Ok(got) if got == body => {}
        Ok(_) => return Err(format!("{probe} read back differs from what was written")),
        Err(e) => return Err(format!("reading {probe} back: {e}")),
    }
    deleted.map_err(|e| format!("deleting {probe}: {e}"))?;
    report.push_str("; wrote, read back and deleted a test object");
    Ok(report)
}
