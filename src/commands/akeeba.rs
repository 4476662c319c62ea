//! Akeeba Backup's remote JSON API (v2): `getVersion`, `getProfiles`, `startBackup` and
//! `stepBackup`, `listBackups`, `getBackupInfo`, `downloadDirect` and `download`, as Akeeba's own clients
//! call them (docs/reference contract: secret word in `_akeebaAuth` or `X-Akeeba-Auth`,
//! `{"status": <int>, "data": ...}` answers with HTTP 200, 503 for a wrong secret, 404 for
//! what the token may not see). The secret word is an API token (`DUNNAGE_API_TOKENS`).
//!
//! A profile is a schedule (ids 1, 2, ... in name order). A backup record is a backup of the
//! profile in its first destination, with an id kept in `BACKUP_STATE_DIR` (`api-ids.json`)
//! so it stays the same across listings and restarts. Parts are the backup's objects.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::{Value, json};

use std::sync::Arc;

use super::profiles::Profiles;
use super::runs::{Job, Runs, Trigger};
use crate::catalog::{self, Backup};
use crate::config::Config;
use crate::storage::{self, Storage};
use crate::stream::ByteStream;
use crate::tokens::{Scope, Token};

/// The API level we answer with (Akeeba's clients need 319 or more).
const API_LEVEL: u32 = 400;
/// The largest `download` segment served, in MiB (the JSON answer holds it in memory).
const MAX_SEGMENT_MIB: u64 = 16;

/// An answer: JSON, or the raw bytes of a part (`downloadDirect`).
pub enum Answer {
    Json(u16, Value),
    Raw {
        name: String,
        size: u64,
        body: ByteStream,
    },
    /// HTTP 404 with no body (`downloadDirect` of something unknown).
    NotFound,
}

fn ok(data: Value) -> Answer {
    Answer::Json(200, data)
}

fn error(status: u16, message: &str) -> Answer {
    Answer::Json(status, Value::String(message.to_owned()))
}

/// What the adapter serves: the profiles, the record ids, the runs.
pub struct Akeeba {
    profiles: Arc<Profiles>,
    runs: Arc<Runs>,
    ids: Mutex<Ids>,
    /// `stepBackup` calls per backupid (Akeeba's `stepNumber`).
    steps: Mutex<BTreeMap<String, u64>>,
}

/// Step counters remembered.
const KEPT_STEPS: usize = 200;

/// How long `stepBackup` waits for the run before answering "still running" (the clients
/// call it again at once, whatever `sleepTime` says).
const STEP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Stable record ids (`schedule/name` -> id) and the records whose files were deleted
/// (`deleteFiles` keeps the record, as Akeeba does), kept in a file.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct IdFile {
    ids: BTreeMap<String, u64>,
    /// Profile name -> Akeeba profile id (1, 2, ...), kept as profiles come and go.
    #[serde(default)]
    profiles: BTreeMap<String, u64>,
    #[serde(default)]
    obsolete: BTreeMap<u64, Value>,
}

struct Ids {
    path: PathBuf,
    file: IdFile,
}

impl Ids {
    /// Profile ids for `names`: known ones kept, new ones numbered on in name order.
    fn profile_ids(&mut self, names: &[&str]) -> Vec<u64> {
        let mut sorted: Vec<&str> = names.to_vec();
        sorted.sort_unstable();
        let mut added = false;
        for name in sorted {
            if !self.file.profiles.contains_key(name) {
                let next = self.file.profiles.values().max().copied().unwrap_or(0) + 1;
                self.file.profiles.insert(name.to_owned(), next);
                added = true;
            }
        }
        if added {
            self.save();
        }
        names.iter().map(|n| self.file.profiles[*n]).collect()
    }

    fn id(&mut self, schedule: &str, name: &str) -> u64 {
        let key = format!("{schedule}/{name}");
        if let Some(id) = self.file.ids.get(&key) {
            return *id;
        }
        let id = self.file.ids.values().max().copied().unwrap_or(0) + 1;
        self.file.ids.insert(key, id);
        self.save();
        id
    }

    fn save(&self) {
        let tmp = self.path.with_extension("json.tmp");
        let written = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, serde_json::to_vec(&self.file).unwrap_or_default()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(
                "could not keep the API record ids in {}: {e}",
                self.path.display()
            );
        }
    }
}

impl Akeeba {
    pub fn new(profiles: Arc<Profiles>, runs: Arc<Runs>) -> Akeeba {
        let path = profiles
            .all()
            .first()
            .map(|c| c.docker.state_dir.join("api-ids.json"))
            .unwrap_or_default();
        let file = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Akeeba {
            profiles,
            runs,
            ids: Mutex::new(Ids { path, file }),
            steps: Mutex::new(BTreeMap::new()),
        }
    }

    /// `startBackup`: a run of the profile now (through the scheduler's runs, like any run).
    fn start_backup(&self, token: &Token, profile: u64) -> Answer {
        let Some((profile, config)) = self
            .profiles(token)
            .into_iter()
            .find(|(id, _)| *id == profile)
        else {
            return error(404, "Invalid profile");
        };
        if !token.allows(Scope::Run) {
            return error(403, "This token may not start backups");
        }
        match self.runs.start(&config, Job::Backup, Trigger::Akeeba) {
            Ok(run) => ok(progress(&run.id, 0, profile, true, "Backup started", 0.0)),
            Err(_) => error(500, "A backup of this profile is already running"),
        }
    }

    /// `stepBackup`: waits a moment for the run, then says where it is.
    async fn step_backup(&self, token: &Token, backupid: &str) -> Answer {
        let Some(run) = self.runs.get(backupid).filter(|r| token.sees(&r.profile)) else {
            return error(404, "Invalid backupid");
        };
        let Some((profile, _)) = self
            .profiles(token)
            .into_iter()
            .find(|(_, c)| c.name == run.profile)
        else {
            return error(404, "Invalid backupid");
        };
        let step = {
            let mut steps = self.steps.lock().expect("steps");
            if steps.len() >= KEPT_STEPS && !steps.contains_key(backupid) {
                steps.pop_first();
            }
            let n = steps.entry(backupid.to_owned()).or_default();
            *n += 1;
            *n
        };
        let Ok(finished) = tokio::time::timeout(STEP_WAIT, run.finished()).await else {
            let mut answer = progress(backupid, 0, profile, true, &run.live.snapshot().phase, 50.0);
            answer["stepNumber"] = json!(step);
            return ok(answer);
        };
        let Some(stats) = finished.stats.as_ref().filter(|s| s.succeeded()) else {
            return error(
                500,
                &format!(
                    "A backup error has occurred: {}",
                    finished.error.clone().unwrap_or_default()
                ),
            );
        };
        let id = stats
            .archive_name
            .as_deref()
            .map(|name| self.ids.lock().expect("ids").id(&run.profile, name))
            .unwrap_or(0);
        let mut answer = progress(backupid, id, profile, false, "Backup complete", 100.0);
        answer["Warnings"] = json!(stats.warnings);
        answer["stepNumber"] = json!(step);
        ok(answer)
    }

    /// Handles one call by `token` (already authenticated).
    pub async fn call(
        &self,
        token: &Token,
        method: &str,
        params: &BTreeMap<String, String>,
    ) -> Answer {
        let number = |key: &str| params.get(key).and_then(|v| v.trim().parse::<u64>().ok());
        match method {
            "getVersion" => ok(json!({
                "api": API_LEVEL,
                "component": env!("CARGO_PKG_VERSION"),
                "date": "",
                "edition": "pro",
            })),
            "getProfiles" => ok(Value::Array(
                self.profiles(token)
                    .into_iter()
                    .map(|(id, c)| json!({"id": id, "name": c.name}))
                    .collect(),
            )),
            "listBackups" => {
                let from = number("from").unwrap_or(0) as usize;
                let limit = number("limit").unwrap_or(200).clamp(1, 200) as usize;
                let mut records = self.records(token).await;
                // Newest first, as Akeeba lists them.
                records.sort_by_key(|r| std::cmp::Reverse((r.0, r.1)));
                ok(Value::Array(
                    records
                        .into_iter()
                        .skip(from)
                        .take(limit)
                        .map(|r| r.2)
                        .collect(),
                ))
            }
            "getBackupInfo" => match self.find(token, number("backup_id")).await {
                Some(found) => ok(found.info()),
                None => match self.obsolete(token, number("backup_id")) {
                    Some(record) => ok(record),
                    None => error(404, "Invalid backup record identifier"),
                },
            },
            "downloadDirect" => {
                self.download_direct(token, number("backup_id"), number("part_id").unwrap_or(1))
                    .await
            }
            "download" => {
                let part = number("part").or(number("part_id")).unwrap_or(1);
                let segment = number("segment").unwrap_or(1).max(1);
                let chunk = number("chunk_size").unwrap_or(1).clamp(1, MAX_SEGMENT_MIB) << 20;
                self.download_segment(token, number("backup_id"), part, segment, chunk)
                    .await
            }
            "startBackup" => self.start_backup(token, number("profile").unwrap_or(1)),
            "stepBackup" => {
                let backupid = params.get("backupid").map(String::as_str).unwrap_or("");
                self.step_backup(token, backupid).await
            }
            "delete" => self.delete(token, number("backup_id"), false).await,
            "deleteFiles" => self.delete(token, number("backup_id"), true).await,
            _ => error(405, "Unknown method"),
        }
    }

    /// The profiles `token` sees, with their Akeeba ids, in id order.
    fn profiles(&self, token: &Token) -> Vec<(u64, Config)> {
        let all = self.profiles.all();
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        let ids = self.ids.lock().expect("ids").profile_ids(&names);
        let mut out: Vec<(u64, Config)> = ids
            .into_iter()
            .zip(all.iter())
            .filter(|(_, c)| token.sees(&c.name))
            .map(|(id, c)| (id, c.clone()))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// The records `token` may see: time, id, record.
    async fn records(&self, token: &Token) -> Vec<(jiff::Timestamp, u64, Value)> {
        let mut out = Vec::new();
        for (profile, config) in self.profiles(token) {
            let Some((storage, backups)) = first_destination(&config).await else {
                continue;
            };
            drop(storage);
            for backup in backups {
                let found = self.record(profile, &config, backup);
                out.push((found.backup.modified, found.id, found.summary()));
            }
        }
        // Copied out: `visible` takes the lock again.
        let obsolete = self.ids.lock().expect("ids").file.obsolete.clone();
        for (id, record) in &obsolete {
            if self.visible(token, record) {
                let time = record["backupstart"]
                    .as_str()
                    .and_then(|t| t.replace(' ', "T").parse::<jiff::civil::DateTime>().ok());
                let time = time
                    .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC).ok())
                    .map_or(jiff::Timestamp::UNIX_EPOCH, |z| z.timestamp());
                out.push((time, *id, record.clone()));
            }
        }
        out
    }

    /// Whether `token` sees the profile of an obsolete `record`.
    fn visible(&self, token: &Token, record: &Value) -> bool {
        let profile = record["profile_id"].as_u64().unwrap_or(0);
        self.profiles(token).iter().any(|(id, _)| *id == profile)
    }

    /// A record whose files were deleted, if `token` sees it.
    fn obsolete(&self, token: &Token, id: Option<u64>) -> Option<Value> {
        let record = self
            .ids
            .lock()
            .expect("ids")
            .file
            .obsolete
            .get(&id?)?
            .clone();
        self.visible(token, &record).then_some(record)
    }

    /// `delete` (record and files) and `deleteFiles` (files; the record stays, obsolete):
    /// the backup goes from every destination of its profile, manifest first. Refused for a
    /// profile's only backup, as retention's safety rule.
    async fn delete(&self, token: &Token, id: Option<u64>, keep_record: bool) -> Answer {
        if !token.allows(Scope::Delete) {
            return error(403, "This token may not delete backups");
        }
        let Some(found) = self.find(token, id).await else {
            if let Some(record) = self.obsolete(token, id) {
                let mut ids = self.ids.lock().expect("ids");
                if !keep_record {
                    let id = record["id"].as_u64().unwrap_or(0);
                    ids.file.obsolete.remove(&id);
                    ids.save();
                }
                return ok(Value::Bool(true));
            }
            return error(404, "Invalid backup record identifier");
        };
        let Some((_, config)) = self
            .profiles(token)
            .into_iter()
            .find(|(id, _)| *id == found.record.profile)
        else {
            return error(404, "Invalid backup record identifier");
        };
        if let Err(e) = super::prune::delete_named(&config, &found.record.backup.name, None).await {
            return error(500, &e.to_string());
        }
        if keep_record {
            let mut record = found.record.summary();
            record["filesexist"] = json!(0);
            record["meta"] = json!("obsolete");
            record["filenames"] = json!([]);
            let mut ids = self.ids.lock().expect("ids");
            ids.file.obsolete.insert(found.record.id, record);
            ids.save();
        }
        ok(Value::Bool(true))
    }

    fn record(&self, profile: u64, config: &Config, backup: Backup) -> Record {
        let id = self.ids.lock().expect("ids").id(&config.name, &backup.name);
        Record {
            id,
            profile,
            time_zone: config.time_zone.clone(),
            backup,
        }
    }

    /// The record `id` if `token` sees it, with the destination holding it.
    async fn find(&self, token: &Token, id: Option<u64>) -> Option<Found> {
        let id = id?;
        for (profile, config) in self.profiles(token) {
            let Some((storage, backups)) = first_destination(&config).await else {
                continue;
            };
            for backup in backups {
                let record = self.record(profile, &config, backup);
                if record.id == id {
                    return Some(Found { record, storage });
                }
            }
        }
        None
    }

    async fn download_direct(&self, token: &Token, id: Option<u64>, part: u64) -> Answer {
        if !token.allows(Scope::Read) {
            return Answer::NotFound;
        }
        let Some(found) = self.find(token, id).await else {
            return Answer::NotFound;
        };
        let Some(object) = found.record.part(part) else {
            return Answer::NotFound;
        };
        match found.storage.get(&object.name).await {
            Ok(body) => Answer::Raw {
                name: object.name.clone(),
                size: object.size,
                body,
            },
            Err(e) => {
                tracing::warn!("API download of {}: {e}", object.name);
                Answer::NotFound
            }
        }
    }

    async fn download_segment(
        &self,
        token: &Token,
        id: Option<u64>,
        part: u64,
        segment: u64,
        chunk: u64,
    ) -> Answer {
        let Some(found) = self.find(token, id).await else {
            return error(404, "Invalid backup record identifier");
        };
        let Some(object) = found.record.part(part) else {
            return error(404, "Invalid part");
        };
        let start = (segment - 1) * chunk;
        if start > object.size {
            return error(404, "Invalid segment");
        }
        let end = (start + chunk).min(object.size);
        let mut data = match found.storage.get(&object.name).await {
            Ok(data) => data,
            Err(e) => return error(500, &format!("reading the backup failed: {e}")),
        };
        let mut offset = 0u64;
        let mut out = Vec::with_capacity((end - start) as usize);
        while let Some(item) = data.next().await {
            let bytes = match item {
                Ok(b) => b,
                Err(e) => return error(500, &format!("reading the backup failed: {e}")),
            };
            let (from, to) = (offset, offset + bytes.len() as u64);
            offset = to;
            if to > start && from < end {
                let a = start.saturating_sub(from) as usize;
                let b = (end.min(to) - from) as usize;
                out.extend_from_slice(&bytes[a..b]);
            }
            if offset >= end {
                break;
            }
        }
        ok(Value::String(
            base64::engine::general_purpose::STANDARD.encode(out),
        ))
    }
}

/// The progress object `startBackup` and `stepBackup` answer with.
fn progress(
    backupid: &str,
    record: u64,
    profile: u64,
    running: bool,
    step: &str,
    percent: f64,
) -> Value {
    json!({
        "HasRun": running,
        "Domain": if running { "backup" } else { "finale" },
        "Step": step,
        "Substep": "",
        "Error": "",
        "Warnings": [],
        "Progress": percent,
        "backupid": backupid,
        "BackupID": record,
        "Archive": "",
        "sleepTime": 0,
        "stepNumber": 0,
        "Profile": profile,
    })
}

/// A profile's backups in its first destination that can be listed.
async fn first_destination(config: &Config) -> Option<(Box<dyn Storage>, Vec<Backup>)> {
    let (owned, _) = storage::open_all(&config.targets()).await;
    for storage in owned {
        if let Ok(entries) = storage.list().await {
            let backups = catalog::group(&entries, &config.retention.select).backups;
            return Some((storage, backups));
        }
    }
    None
}

struct Record {
    id: u64,
    profile: u64,
    time_zone: jiff::tz::TimeZone,
    backup: Backup,
}

struct Found {
    record: Record,
    storage: Box<dyn Storage>,
}

impl Found {
    fn info(&self) -> Value {
        let mut info = self.record.summary();
        info["filenames"] = Value::Array(
            self.record
                .backup
                .objects
                .iter()
                .enumerate()
                .map(|(i, o)| json!({"part": i + 1, "name": o.name, "size": o.size}))
                .collect(),
        );
        info
    }
}

impl Record {
    fn summary(&self) -> Value {
        let parts = self.backup.objects.len();
        json!({
            "id": self.id,
            "backupstart": self.backup.modified.to_zoned(self.time_zone.clone()).strftime("%Y-%m-%d %H:%M:%S").to_string(),
            "status": "complete",
            "filesexist": 1,
            "description": self.backup.name,
            "profile_id": self.profile,
            "multipart": if parts > 1 { parts } else { 0 },
            "meta": "ok",
            "size": self.backup.size,
            "archivename": self.backup.name,
        })
    }

    fn part(&self, part: u64) -> Option<&crate::storage::Entry> {
        self.backup
            .objects
            .get(usize::try_from(part).ok()?.checked_sub(1)?)
    }
}
