//! `dunnage list`: the backups each schedule has in each destination, oldest first, as
//! retention sees them ([`crate::catalog`]: a backup with its manifest and parts is one line;
//! no unfinished uploads). Text for
//! people, `--json` for scripts. A destination that cannot be listed is reported and makes
//! the command fail; the others are still listed.

use std::io::Write;

use serde::Serialize;

use super::verify::{Remembered, Verdict, remembered};
use crate::catalog;
use crate::config::Config;
use crate::progress::human_bytes;
use crate::storage::{self, Backend, Entry};

/// One line of the listing: a backup, or a destination that could not be listed.
#[derive(Debug, Serialize)]
pub struct Listed {
    pub schedule: String,
    pub destination: &'static str,
    #[serde(flatten)]
    pub item: Item,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Item {
    Backup {
        name: String,
        size: u64,
        modified: String,
        /// Objects the archive is stored as (1 unless split).
        parts: usize,
        /// Whether its manifest is stored (older runs and the reference's archives have none).
        manifest: bool,
        /// What the last `dunnage verify` of it found, if it ran.
        verified: Option<Remembered>,
    },
    Failed {
        error: String,
    },
}

/// Every backup of `configs` in their destinations (only `from`, when given).
pub async fn collect(configs: &[Config], from: Option<Backend>) -> Vec<Listed> {
    let mut listed = Vec::new();
    for config in configs {
        let targets = config.targets();
        let (owned, unavailable) = storage::open_all(&targets).await;
        for (backend, e) in unavailable {
            if from.is_none_or(|f| f == backend) {
                listed.push(failed(config, backend, e.to_string()));
            }
        }
        for storage in owned
            .iter()
            .filter(|s| from.is_none_or(|f| f == s.backend()))
        {
            match storage.list().await {
                Ok(entries) => listed.extend(backups(config, storage.backend(), entries)),
                Err(e) => listed.push(failed(config, storage.backend(), e.to_string())),
            }
        }
    }
    listed
}

fn failed(config: &Config, backend: Backend, error: String) -> Listed {
    Listed {
        schedule: config.name.clone(),
        destination: backend.name(),
        item: Item::Failed { error },
    }
}

/// This schedule's backups among `entries`, oldest first.
fn backups(config: &Config, backend: Backend, entries: Vec<Entry>) -> Vec<Listed> {
    let mut verified = remembered(config);
    catalog::group(&entries, &config.retention.select)
        .backups
        .into_iter()
        .map(|b| Listed {
            schedule: config.name.clone(),
            destination: backend.name(),
            item: Item::Backup {
                modified: b
                    .modified
                    .to_zoned(config.time_zone.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string(),
                parts: b.objects.len(),
                manifest: b.manifest.is_some(),
                verified: verified.remove(&format!("{}/{}", backend.name(), b.name)),
                name: b.name,
                size: b.size,
            },
        })
        .collect()
}

/// Prints `listed` as text or JSON; false when a destination could not be listed.
pub fn print(listed: &[Listed], json: bool, out: &mut impl Write) -> bool {
    let ok = !listed.iter().any(|l| matches!(l.item, Item::Failed { .. }));
    if json {
        let _ = serde_json::to_writer_pretty(&mut *out, listed);
        let _ = writeln!(out);
        return ok;
    }
    for l in listed {
        let _ = match &l.item {
            Item::Backup {
                name,
                size,
                modified,
                parts,
                manifest,
                verified,
            } => writeln!(
                out,
                "[{}] {}: {name}  {}  {modified}{}{}{}",
                l.schedule,
                l.destination,
                human_bytes(*size),
                if *parts > 1 {
                    format!("  {parts} parts")
                } else {
                    String::new()
                },
                if *manifest { "" } else { "  (no manifest)" },
                match verified {
                    None => String::new(),
                    Some(v) => format!(
                        "  verified {} ({}, {})",
                        match v.verdict {
                            Verdict::Ok(_) => "ok",
                            Verdict::Damaged(_) => "DAMAGED",
                            Verdict::Unchecked(_) => "not checked",
                        },
                        serde_json::to_value(v.level)
                            .ok()
                            .and_then(|l| l.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        v.at
                    ),
                },
            ),
            Item::Failed { error } => {
                writeln!(out, "[{}] {}: FAILED: {error}", l.schedule, l.destination)
            }
        };
    }
    if listed.is_empty() {
        let _ = writeln!(out, "no backups");
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, secs: i64) -> Entry {
        Entry {
            name: name.into(),
            size: 2048,
            modified: jiff::Timestamp::from_second(secs).unwrap(),
        }
    }

    #[test]
    fn only_this_schedules_backups_oldest_first_and_failures_fail() {
        let mut config = crate::config::Config::from_vars(
            "default",
            &crate::config::Vars::from_pairs([("BACKUP_PRUNING_PREFIX", "db-"), ("TZ", "UTC")]),
        )
        .unwrap();
        config.name = "db".into();
        config.retention.select.pattern = None;
        let listed = backups(
            &config,
            Backend::Local,
            vec![
                entry("db-2.tar.gz", 200),
                entry("notes.txt", 50),
                entry("db-1.tar.gz", 100),
                entry("db-3.tar.gz.001", 300),
                entry("db-3.tar.gz.002", 301),
                entry("db-3.tar.gz.sha256", 302),
            ],
        );
        let names: Vec<&str> = listed
            .iter()
            .map(|l| match &l.item {
                Item::Backup { name, .. } => name.as_str(),
                Item::Failed { .. } => "",
            })
            .collect();
        assert_eq!(names, ["db-1.tar.gz", "db-2.tar.gz", "db-3.tar.gz"]);
        let mut text = Vec::new();
        assert!(print(&listed, false, &mut text));
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "[db] Local: db-1.tar.gz  2.0 KiB  1970-01-01T00:01:40+00:00  (no manifest)\n\
             [db] Local: db-2.tar.gz  2.0 KiB  1970-01-01T00:03:20+00:00  (no manifest)\n\
             [db] Local: db-3.tar.gz  4.0 KiB  1970-01-01T00:05:02+00:00  2 parts\n"
        );
        let mut json = Vec::new();
        let mut with_failure = listed;
        with_failure.push(failed(&config, Backend::S3, "listing failed".into()));
        assert!(!print(&with_failure, true, &mut json));
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value[0]["name"], "db-1.tar.gz");
        assert_eq!(value[0]["size"], 2048);
        assert_eq!(value[2]["parts"], 2);
        assert_eq!(value[2]["manifest"], true);
        assert_eq!(value[3]["destination"], "S3");
        assert_eq!(value[3]["error"], "listing failed");
    }
}
