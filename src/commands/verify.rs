//! `dunnage verify NAME|latest|all`: checks stored backups against their manifests.
//!
//! Levels, each including the ones before:
//! - `size`: every object the manifest names is listed with its size (no download);
//! - `hash`: the stored bytes' SHA-256, part by part (a download, no key needed);
//! - `read`: decrypt, decompress and read every tar entry to the end, comparing the counts
//!   with the manifest (truncation, a bad MAC or MDC, a corrupt frame).
//!
//! A backup without a manifest (older runs, the reference's archives) can only be read.
//! Each result is remembered in `BACKUP_STATE_DIR`, so `dunnage list` shows it.
//!
//! Exit codes: 0 every backup verified; 1 one is damaged or missing; 3 one could not be
//! checked (destination unreachable, no key for an encrypted backup); 2 bad usage.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::archive::read::{self, OpenError};
use crate::catalog::{self, Backup};
use crate::config::Config;
use crate::fetch;
pub use crate::manifest::Level;
use crate::manifest::{Manifest, Part};
use crate::progress::human_bytes;
use crate::report::{DestinationStats, RunKind, RunStats};
use crate::schedule::lock;
use crate::storage::{self, Backend, Storage};

/// Largest manifest accepted (a few lines per part).
pub const MANIFEST_LIMIT: usize = 4 << 20;

/// One backup's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "detail", rename_all = "lowercase")]
pub enum Verdict {
    Ok(String),
    Damaged(String),
    Unchecked(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub schedule: String,
    pub destination: &'static str,
    pub name: String,
    pub level: Level,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// A backup's manifest, if it has one: `Err` when it is stored but unreadable.
pub async fn manifest_of(
    storage: &dyn Storage,
    backup: &Backup,
) -> Result<Option<Manifest>, Verdict> {
    let Some(entry) = &backup.manifest else {
        return Ok(None);
    };
    let bytes = fetch::read_small(storage, &entry.name, MANIFEST_LIMIT)
        .await
        .map_err(|e| Verdict::Unchecked(format!("reading the manifest failed: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    Manifest::parse(&text)
        .map(Some)
        .map_err(|e| Verdict::Damaged(format!("{}: {e}", entry.name)))
}

/// Verifies one backup in one destination at `level`.
pub async fn verify_backup(
    config: &Config,
    storage: &dyn Storage,
    backup: &Backup,
    level: Level,
) -> Verdict {
    let manifest = match manifest_of(storage, backup).await {
        Ok(m) => m,
        Err(v) => return v,
    };
    if let Some(m) = &manifest
        && let Err(why) = sizes_match(m, backup)
    {
        return Verdict::Damaged(why);
    }
    let parts = backup.objects.len();
    let size = human_bytes(backup.size);
    match (level, &manifest) {
        (Level::Size, Some(_)) => {
            return Verdict::Ok(format!("{parts} object(s), {size} as the manifest says"));
        }
        (Level::Size | Level::Hash, None) => {
            return Verdict::Unchecked(
                "no manifest (an older backup): only --level read can check it".into(),
            );
        }
        _ => {}
    }
    let names: Vec<String> = backup.objects.iter().map(|o| o.name.clone()).collect();
    let keys = config.keys.clone();
    let read_all = level == Level::Read;
    let (fetched, walked) = fetch::read_objects(storage, &names, move |stored| {
        if !read_all {
            return std::io::copy(&mut { stored }, &mut std::io::sink())
                .map(|_| None)
                .map_err(OpenError::Io);
        }
        let tar = read::open(stored, &keys)?;
        read::walk(tar).map(Some).map_err(OpenError::Io)
    })
    .await;
    let fetched = match fetched {
        Ok(parts) => parts,
        Err(e) => return Verdict::Unchecked(format!("reading the backup failed: {e}")),
    };
    if let Some(m) = &manifest
        && let Err(why) = hashes_match(m, &fetched)
    {
        return Verdict::Damaged(why);
    }
    let counts = match walked {
        Ok(counts) => counts,
        Err(OpenError::NoKey(why) | OpenError::WrongKey(why)) => return Verdict::Unchecked(why),
        Err(e) => return Verdict::Damaged(format!("the archive does not read to its end: {e}")),
    };
    match (counts, &manifest) {
        (None, _) => Verdict::Ok(format!(
            "{parts} object(s), {size}, SHA-256 as the manifest says"
        )),
        (Some(c), Some(m)) if c != m.tar => Verdict::Damaged(format!(
            "the archive holds {} entries, {} files, {} tar bytes; the manifest says {}, {}, {}",
            c.entries, c.files, c.bytes, m.tar.entries, m.tar.files, m.tar.bytes
        )),
        (Some(c), m) => Verdict::Ok(format!(
            "read to the end: {} entries, {} files, {} of content{}",
            c.entries,
            c.files,
            human_bytes(c.file_bytes),
            if m.is_some() {
                ", all as the manifest says"
            } else {
                " (no manifest to compare)"
            }
        )),
    }
}

/// The listed objects against the manifest's parts: names, count and sizes.
pub(super) fn sizes_match(m: &Manifest, backup: &Backup) -> Result<(), String> {
    for (i, part) in m.parts.iter().enumerate() {
        match backup.objects.iter().find(|o| o.name == part.name) {
            None => {
                return Err(format!(
                    "{} is missing (part {} of {})",
                    part.name,
                    i + 1,
                    m.parts.len()
                ));
            }
            Some(o) if o.size != part.size => {
                return Err(format!(
                    "{} holds {} bytes; the manifest says {}",
                    part.name, o.size, part.size
                ));
            }
            Some(_) => {}
        }
    }
    if backup.objects.len() != m.parts.len() {
        return Err(format!(
            "{} objects are stored; the manifest names {}",
            backup.objects.len(),
            m.parts.len()
        ));
    }
    Ok(())
}

pub(super) fn hashes_match(m: &Manifest, fetched: &[Part]) -> Result<(), String> {
    for (want, got) in m.parts.iter().zip(fetched) {
        if want.sha256 != got.sha256 || want.size != got.size {
            return Err(format!(
                "{}: SHA-256 {} ({} bytes read); the manifest says {} ({} bytes)",
                want.name, got.sha256, got.size, want.sha256, want.size
            ));
        }
    }
    Ok(())
}

/// `BACKUP_VERIFY_LEVEL`: verifies the backup `name` a run just stored in `storage`. A
/// damaged one fails that destination (and so keeps pruning away from it); one that could
/// not be checked is a warning.
pub(super) async fn after_backup(
    config: &Config,
    storage: &dyn Storage,
    name: &str,
    level: Level,
    dest: &mut DestinationStats,
    warnings: &mut Vec<String>,
) {
    let backend = storage.backend();
    let verdict = match storage.list().await {
        Ok(entries) => match catalog::group(&entries, &config.retention.select).find(name) {
            Some(backup) => verify_backup(config, storage, backup, level).await,
            None => Verdict::Damaged(format!("{name} is not listed after it was stored")),
        },
        Err(e) => Verdict::Unchecked(format!("listing failed: {e}")),
    };
    let level_name = level_name(level);
    match &verdict {
        Verdict::Ok(_) => dest.verified = Some(format!("verified ({level_name})")),
        Verdict::Damaged(why) => {
            tracing::error!(
                "{backend}: the stored backup failed verification ({level_name}): {why}"
            );
            dest.error = Some(format!(
                "stored, but verification ({level_name}) found it damaged: {why}"
            ));
        }
        Verdict::Unchecked(why) => {
            let msg =
                format!("{backend}: the stored backup could not be verified ({level_name}): {why}");
            tracing::warn!("{msg}");
            warnings.push(msg);
        }
    }
    remember(config, &checked(config, backend, name, level, verdict));
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Size => "size",
        Level::Hash => "hash",
        Level::Read => "read",
    }
}

/// `BACKUP_VERIFY_CRON_EXPRESSION`: every stored backup of `config` verified at `level`,
/// under the run lock (so pruning never deletes what is being read), reported like a run:
/// summary line, notifications, and a failure ping (a success ping would hide a failing
/// backup schedule from the monitor).
pub async fn scheduled(config: &Config, level: Level) -> RunStats {
    use tracing::Instrument as _;
    let span = tracing::trace_span!(crate::notify::capture::RUN_SPAN, schedule = %config.name);
    scheduled_captured(config, level).instrument(span).await
}

async fn scheduled_captured(config: &Config, level: Level) -> RunStats {
    let clock = std::time::Instant::now();
    let mut stats = RunStats::new(
        &config.name,
        jiff::Zoned::now().with_time_zone(config.time_zone.clone()),
    );
    stats.kind = RunKind::Verify;
    match lock::acquire(&config.lock_plan(), config.lock_timeout).await {
        Err(e) => stats.error = Some(e.to_string()),
        Ok(held) => {
            stats.lock_wait = held.waited;
            let results = run(std::slice::from_ref(config), "all", None, level).await;
            record(&mut stats, &results, level);
        }
    }
    stats.took = clock.elapsed();
    match &stats.error {
        None => tracing::info!("{}", stats.summary()),
        Some(_) => tracing::error!("{}", stats.summary()),
    }
    let health = config
        .healthcheck
        .clone()
        .filter(|_| !stats.complete())
        .map(crate::notify::HealthCheck::new);
    super::backup::tell(config, health.as_ref(), &mut stats).await;
    stats
}

/// The verify results into a run's statistics: one entry per destination.
fn record(stats: &mut RunStats, results: &[Checked], level: Level) {
    let mut damaged = Vec::new();
    for backend in Backend::ALL {
        let mine: Vec<&Checked> = results
            .iter()
            .filter(|r| r.destination == backend.name())
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut dest = DestinationStats::new(backend);
        let ok = mine
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Ok(_)))
            .count();
        dest.verified = Some(format!(
            "{ok} of {} backup(s) verified ({})",
            mine.len(),
            level_name(level)
        ));
        let bad: Vec<String> = mine
            .iter()
            .filter_map(|r| match &r.verdict {
                Verdict::Damaged(why) if why.starts_with(&r.name) => Some(why.clone()),
                Verdict::Damaged(why) => Some(format!("{}: {why}", r.name)),
                _ => None,
            })
            .collect();
        for r in &mine {
            if let Verdict::Unchecked(why) = &r.verdict {
                stats.warnings.push(format!(
                    "{backend}: {} could not be verified: {why}",
                    r.name
                ));
            }
        }
        if !bad.is_empty() {
            dest.error = Some(format!("DAMAGED: {}", bad.join("; ")));
            damaged.extend(bad.into_iter().map(|b| format!("{backend}: {b}")));
        }
        stats.destinations.push(dest);
    }
    if !damaged.is_empty() {
        stats.error = Some(format!(
            "{} damaged backup(s): {}",
            damaged.len(),
            damaged.join("; ")
        ));
    }
}

/// `dunnage verify` over `configs`: `which` is a name, `latest` or `all`.
pub async fn run(
    configs: &[Config],
    which: &str,
    from: Option<Backend>,
    level: Level,
) -> Vec<Checked> {
    let mut results = Vec::new();
    for config in configs {
        let (owned, unavailable) = storage::open_all(&config.targets()).await;
        for (backend, e) in unavailable {
            if from.is_none_or(|f| f == backend) {
                results.push(checked(
                    config,
                    backend,
                    which,
                    level,
                    Verdict::Unchecked(e.to_string()),
                ));
            }
        }
        for storage in owned
            .iter()
            .filter(|s| from.is_none_or(|f| f == s.backend()))
        {
            let backend = storage.backend();
            let catalog = match storage.list().await {
                Ok(entries) => catalog::group(&entries, &config.retention.select),
                Err(e) => {
                    results.push(checked(
                        config,
                        backend,
                        which,
                        level,
                        Verdict::Unchecked(format!("listing failed: {e}")),
                    ));
                    continue;
                }
            };
            let chosen: Vec<&Backup> = if which == "all" {
                catalog.backups.iter().collect()
            } else {
                catalog.find(which).into_iter().collect()
            };
            if chosen.is_empty() && which != "all" {
                results.push(checked(
                    config,
                    backend,
                    which,
                    level,
                    Verdict::Damaged(format!("no backup {which} here (see dunnage list)")),
                ));
            }
            for backup in chosen {
                let verdict = verify_backup(config, storage.as_ref(), backup, level).await;
                let result = checked(config, backend, &backup.name, level, verdict);
                remember(config, &result);
                results.push(result);
            }
        }
    }
    results
}

fn checked(
    config: &Config,
    backend: Backend,
    name: &str,
    level: Level,
    verdict: Verdict,
) -> Checked {
    Checked {
        schedule: config.name.clone(),
        destination: backend.name(),
        name: name.to_owned(),
        level,
        verdict,
    }
}

/// Prints the results; returns the exit code (0, 1 or 3).
pub fn print(results: &[Checked], json: bool, out: &mut impl Write) -> u8 {
    if json {
        let _ = serde_json::to_writer_pretty(&mut *out, results);
        let _ = writeln!(out);
    } else {
        for r in results {
            let (word, detail) = match &r.verdict {
                Verdict::Ok(d) => ("ok", d),
                Verdict::Damaged(d) => ("DAMAGED", d),
                Verdict::Unchecked(d) => ("NOT CHECKED", d),
            };
            let _ = writeln!(
                out,
                "[{}] {}: {}: {word}: {detail}",
                r.schedule, r.destination, r.name
            );
        }
        if results.is_empty() {
            let _ = writeln!(out, "no backups to verify");
        }
    }
    exit_code(results)
}

pub fn exit_code(results: &[Checked]) -> u8 {
    if results
        .iter()
        .any(|r| matches!(r.verdict, Verdict::Damaged(_)))
    {
        1
    } else if results
        .iter()
        .any(|r| matches!(r.verdict, Verdict::Unchecked(_)))
    {
        3
    } else {
        0
    }
}

/// What the last verify found, per destination and backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub level: Level,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub at: String,
}

fn state_file(config: &Config) -> PathBuf {
    config
        .docker
        .state_dir
        .join(format!("verified-{}.json", config.name))
}

/// The remembered results of `config`'s backups, keyed by `destination/name`.
pub fn remembered(config: &Config) -> BTreeMap<String, Remembered> {
    std::fs::read(state_file(config))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Best effort: a state folder that cannot be written only costs the memory of the result.
fn remember(config: &Config, result: &Checked) {
    let mut all = remembered(config);
    all.insert(
        format!("{}/{}", result.destination, result.name),
        Remembered {
            level: result.level,
            verdict: result.verdict.clone(),
            at: jiff::Zoned::now()
                .with_time_zone(config.time_zone.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
        },
    );
    let path = state_file(config);
    let tmp = path.with_extension("json.tmp");
    let written = std::fs::create_dir_all(&config.docker.state_dir)
        .and_then(|()| std::fs::write(&tmp, serde_json::to_vec_pretty(&all).unwrap_or_default()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::debug!(
            "could not remember the verify result in {}: {e}",
            path.display()
        );
    }
}
