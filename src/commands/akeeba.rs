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

use crate::catalog::{self, Backup};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::report::RunStats;
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

/// What the adapter serves: the schedules, the record ids, the runs it started.
pub struct Akeeba {
    configs: Vec<Config>,
    ids: Mutex<Ids>,
    runs: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<Run>>>>,
    /// Schedules with a run started here that has not ended.
    active: Arc<Mutex<std::collections::BTreeSet<String>>>,
    metrics: Arc<Metrics>,
}

/// Finished runs remembered for `stepBackup`.
const KEPT_RUNS: usize = 100;

/// A backup started through `startBackup`.
struct Run {
    profile: usize,
    schedule: String,
    handle: Option<tokio::task::JoinHandle<RunStats>>,
    done: Option<RunStats>,
    steps: u64,
}

/// How long `stepBackup` waits for the run before answering "still running" (the clients
/// call it again at once, whatever `sleepTime` says).
const STEP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Stable record ids (`schedule/name` -> id) and the records whose files were deleted
/// (`deleteFiles` keeps the record, as Akeeba does), kept in a file.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct IdFile {
    ids: BTreeMap<String, u64>,
    #[serde(default)]
    obsolete: BTreeMap<u64, Value>,
}

struct Ids {
    path: PathBuf,
    file: IdFile,
}

impl Ids {
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
    pub fn new(mut configs: Vec<Config>, metrics: Arc<Metrics>) -> Akeeba {
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        let path = configs
            .first()
            .map(|c| c.docker.state_dir.join("api-ids.json"))
            .unwrap_or_default();
        let file = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Akeeba {
            configs,
            ids: Mutex::new(Ids { path, file }),
            runs: Mutex::new(BTreeMap::new()),
            active: Arc::default(),
            metrics,
        }
    }

    /// `startBackup`: a run of the profile now (under the run lock, like any run).
    fn start_backup(&self, token: &Token, profile: u64) -> Answer {
        let Some((profile, config)) = self.profiles(token).find(|(id, _)| *id as u64 == profile)
        else {
            return error(404, "Invalid profile");
        };
        if !token.allows(Scope::Run) {
            return error(403, "This token may not start backups");
        }
        if !self
            .active
            .lock()
            .expect("active")
            .insert(config.name.clone())
        {
            return error(500, "A backup of this profile is already running");
        }
        let backupid = format!(
            "id-{}-{}",
            jiff::Timestamp::now().as_millisecond(),
            config.name
        );
        let (run_config, metrics, active) =
            (config.clone(), self.metrics.clone(), self.active.clone());
        let handle = tokio::spawn(async move {
            let stats = super::backup::run_once(&run_config).await;
            metrics.record(&stats);
            active.lock().expect("active").remove(&run_config.name);
            stats
        });
        let mut runs = self.runs.lock().expect("runs");
        while runs.len() >= KEPT_RUNS {
            let finished = runs
                .iter()
                .find(|(_, r)| {
                    r.try_lock().is_ok_and(|r| {
                        r.done.is_some() || r.handle.as_ref().is_none_or(|h| h.is_finished())
                    })
                })
                .map(|(k, _)| k.clone());
            match finished {
                Some(key) => runs.remove(&key),
                None => break,
            };
        }
        runs.insert(
            backupid.clone(),
            Arc::new(tokio::sync::Mutex::new(Run {
                profile,
                schedule: config.name.clone(),
                handle: Some(handle),
                done: None,
                steps: 0,
            })),
        );
        ok(progress(&backupid, 0, profile, true, "Backup started", 0.0))
    }

    /// `stepBackup`: waits a moment for the run, then says where it is.
    async fn step_backup(&self, token: &Token, backupid: &str) -> Answer {
        let Some(run) = self.runs.lock().expect("runs").get(backupid).cloned() else {
            return error(404, "Invalid backupid");
        };
        let mut run = run.lock().await;
        if !token.sees(&run.schedule) {
            return error(404, "Invalid backupid");
        }
        run.steps += 1;
        if run.done.is_none() {
            if let Some(handle) = run.handle.as_mut() {
                if let Ok(joined) = tokio::time::timeout(STEP_WAIT, handle).await {
                    run.handle = None;
                    run.done = Some(joined.unwrap_or_else(|e| {
                        let mut stats = RunStats::new(&run.schedule, jiff::Zoned::now());
                        stats.error = Some(format!("the run stopped: {e}"));
                        stats
                    }));
                }
            }
        }
        let Some(stats) = &run.done else {
            return ok(progress(backupid, 0, run.profile, true, "Backing up", 50.0));
        };
        if !stats.succeeded() {
            return error(
                500,
                &format!(
                    "A backup error has occurred: {}",
                    stats.error.clone().unwrap_or_default()
                ),
            );
        }
        let id = stats
            .archive_name
            .as_deref()
            .map(|name| self.ids.lock().expect("ids").id(&run.schedule, name))
            .unwrap_or(0);
        let mut answer = progress(backupid, id, run.profile, false, "Backup complete", 100.0);
        answer["Warnings"] = json!(stats.warnings);
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

    fn profiles<'a>(&'a self, token: &'a Token) -> impl Iterator<Item = (usize, &'a Config)> + 'a {
        self.configs
            .iter()
            .enumerate()
            .map(|(i, c)| (i + 1, c))
            .filter(|(_, c)| token.sees(&c.name))
    }

    /// The records `token` may see: time, id, record.
    async fn records(&self, token: &Token) -> Vec<(jiff::Timestamp, u64, Value)> {
        let mut out = Vec::new();
        for (profile, config) in self.profiles(token) {
            let Some((storage, backups)) = first_destination(config).await else {
                continue;
            };
            drop(storage);
            for backup in backups {
                let found = self.record(profile, config, backup);
                out.push((found.backup.modified, found.id, found.summary()));
            }
        }
        let ids = self.ids.lock().expect("ids");
        for (id, record) in &ids.file.obsolete {
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
        self.profiles(token).any(|(id, _)| id as u64 == profile)
    }

    /// A record whose files were deleted, if `token` sees it.
    fn obsolete(&self, token: &Token, id: Option<u64>) -> Option<Value> {
        let ids = self.ids.lock().expect("ids");
        let record = ids.file.obsolete.get(&id?)?;
        self.visible(token, record).then(|| record.clone())
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
        let config = &self.configs[found.record.profile - 1];
        if let Some((_, backups)) = first_destination(config).await
            && backups.len() <= 1
        {
            return error(
                500,
                "this is the profile's only backup; take another one before deleting it",
            );
        }
        let (owned, _) = storage::open_all(&config.targets()).await;
        for storage in &owned {
            let Ok(entries) = storage.list().await else {
                continue;
            };
            let catalog = catalog::group(&entries, &config.retention.select);
            if let Some(backup) = catalog.find(&found.record.backup.name)
                && let Err(e) = crate::prune::delete_backup(storage.as_ref(), backup).await
            {
                return error(
                    500,
                    &format!("deleting from {} failed: {e}", storage.backend()),
                );
            }
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

    fn record(&self, profile: usize, config: &Config, backup: Backup) -> Record {
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
            let Some((storage, backups)) = first_destination(config).await else {
                continue;
            };
            for backup in backups {
                let record = self.record(profile, config, backup);
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
    profile: usize,
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
    profile: usize,
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
