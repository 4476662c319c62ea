//! `dunnage restore NAME|latest`: a stored backup back into a folder, streamed: get ->
//! decrypt -> decompress -> safe extraction ([`crate::archive::extract`]), no temporary file.
//!
//! Names are only accepted from the destination's listing. Without `--target` the backup
//! goes back where it came from (`BACKUP_SOURCES`, the backup's own folder prefix stripped):
//! an in-place restore into live volumes, so the containers labeled for the backup are
//! stopped for it and started again however it ends, under the backup lock, optionally after
//! a safety backup of what is there now. A non-empty target needs `--overwrite`.
//!
//! Exit codes: 0 restored; 1 failed or some entries were refused (each is listed);
//! 2 bad usage (unknown name, non-empty target without `--overwrite`); 3 the backup could not
//! be read (destination unreachable, no key).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::archive::extract::{self, Options, Report, Stopped};
use crate::archive::read::{self, OpenError};
use crate::catalog::{self, Backup};
use crate::config::Config;
use crate::docker::Engine;
use crate::fetch;
use crate::manifest::Manifest;
use crate::progress::human_bytes;
use crate::report::Outcome;
use crate::schedule::{lock, shutdown_requested};
use crate::storage::{self, Backend, Storage};
use tokio::sync::watch;

use super::verify::{self, Verdict};

/// What to restore, where, how.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// A backup's name or `latest`.
    pub which: String,
    pub from: Option<Backend>,
    /// `None`: in place, into `BACKUP_SOURCES`.
    pub target: Option<PathBuf>,
    pub strip_components: Option<usize>,
    pub overwrite: bool,
    /// Back up what is there now before restoring in place.
    pub safety_backup: bool,
}

/// Why a restore did not happen or did not finish; its exit code, and what it had done.
#[derive(Debug)]
struct Failed {
    code: u8,
    why: String,
    done: Option<Report>,
}

fn fail(code: u8, why: String) -> Failed {
    Failed {
        code,
        why,
        done: None,
    }
}

/// Restores as `req` asks; SIGTERM/SIGINT (`shutdown`) stops it midway, and the containers
/// an in-place restore stopped are started again then too.
pub async fn run(
    config: &Config,
    req: &Request,
    shutdown: watch::Receiver<bool>,
    out: &mut impl Write,
) -> u8 {
    let (report, failure) = match restore(config, req, shutdown, out).await {
        Ok(report) => (Some(report), None),
        Err(Failed { code, why, done }) => (done, Some((code, why))),
    };
    if let Some(report) = &report {
        print_report(report, out);
    }
    match failure {
        Some((code, why)) => {
            let _ = writeln!(out, "restore failed: {why}");
            tracing::error!("restore failed: {why}");
            code
        }
        None => u8::from(report.is_some_and(|r| !r.refused.is_empty())),
    }
}

fn print_report(report: &Report, out: &mut impl Write) {
    let _ = writeln!(
        out,
        "restored {} entries ({} files, {}){}",
        report.entries,
        report.files,
        human_bytes(report.bytes),
        if report.refused.is_empty() {
            String::new()
        } else {
            format!("; {} NOT restored:", report.refused.len())
        }
    );
    for r in &report.refused {
        let _ = writeln!(out, "  not restored: {r}");
    }
    for n in &report.notes {
        let _ = writeln!(out, "  note: {n}");
    }
}

async fn restore(
    config: &Config,
    req: &Request,
    mut shutdown: watch::Receiver<bool>,
    out: &mut impl Write,
) -> Result<Report, Failed> {
    let (owned, unavailable) = storage::open_all(&config.targets()).await;
    for (backend, e) in &unavailable {
        if req.from.is_none_or(|f| f == *backend) {
            tracing::warn!("{backend}: {e}");
        }
    }
    let (storage, backup) = find(config, &owned, req).await?;
    let manifest = verify::manifest_of(storage, &backup)
        .await
        .map_err(|v| match v {
            Verdict::Unchecked(why) => fail(3, why),
            Verdict::Damaged(why) | Verdict::Ok(why) => fail(1, why),
        })?;
    if let Some(m) = &manifest {
        verify::sizes_match(m, &backup)
            .map_err(|why| fail(1, format!("{}: {why}; nothing was restored", backup.name)))?;
    }
    let (target, strip, in_place) = target_of(config, req, manifest.as_ref())?;
    let _ = writeln!(
        out,
        "restoring {} from {} ({}) into {}{}",
        backup.name,
        storage.backend(),
        human_bytes(backup.size),
        target.display(),
        if in_place { " (in place)" } else { "" }
    );
    check_target(&target, req.overwrite, manifest.as_ref())?;
    if in_place && req.safety_backup {
        wait_for_a_new_name(config, storage).await;
        let stats = super::backup::run_once(config).await;
        if stats.outcome() == Outcome::Failure {
            return Err(fail(
                1,
                format!(
                    "the safety backup failed, nothing was restored: {}",
                    stats.error.unwrap_or_default()
                ),
            ));
        }
    }
    let opts = Options {
        strip_components: strip,
        privileged: Options::new().privileged,
        overwrite: req.overwrite,
        max_bytes: Some(match &manifest {
            Some(m) => m.tar.file_bytes,
            None => free_space(&target).unwrap_or(u64::MAX),
        }),
        max_entries: manifest.as_ref().map(|m| m.tar.entries),
    };
    let extraction = async {
        tokio::select! {
            result = extract_from(config, storage, &backup, target, opts, manifest.as_ref()) => result,
            () = shutdown_requested(&mut shutdown) => Err(fail(
                1,
                "interrupted: the restore stopped midway, the target holds part of the backup".into(),
            )),
        }
    };
    if in_place {
        with_containers_stopped(config, extraction, out).await
    } else {
        extraction.await
    }
}

/// Runs `extraction` under the run lock with the labeled containers stopped, and starts them
/// again however it ends.
async fn with_containers_stopped(
    config: &Config,
    extraction: impl Future<Output = Result<Report, Failed>>,
    out: &mut impl Write,
) -> Result<Report, Failed> {
    let _held = lock::acquire(&config.lock_plan(), config.lock_timeout)
        .await
        .map_err(|e| fail(1, e.to_string()))?;
    let engine = Engine::connect(&config.docker)
        .await
        .map_err(|e| fail(1, e.to_string()))?;
    let stopped = match &engine {
        Some(engine) => Some(
            engine
                .stop_labeled()
                .await
                .map_err(|e| fail(1, e.to_string()))?,
        ),
        None => None,
    };
    let result = extraction.await;
    if let (Some(engine), Some((list, since))) = (&engine, &stopped) {
        for d in engine.start_again(list, *since).await {
            let _ = match d.error {
                Some(e) => writeln!(out, "container {} did not start again: {e}", d.name),
                None => writeln!(out, "container {} started again", d.name),
            };
        }
    }
    result
}

/// A safety backup right after a backup (a script, a test) would get the same name in the
/// same second, and a backup is never replaced: wait for a name the folder does not hold
/// (at most two seconds; a template without a time verb never changes and then fails).
async fn wait_for_a_new_name(config: &Config, storage: &dyn Storage) {
    let Ok(entries) = storage.list().await else {
        return;
    };
    for _ in 0..3 {
        let now = jiff::Zoned::now().with_time_zone(config.time_zone.clone());
        let Ok(name) = config.filename.render(&now) else {
            return;
        };
        let manifest = catalog::manifest_name(&name);
        if !entries.iter().any(|e| e.name == name || e.name == manifest) {
            return;
        }
        // Until just past the next second.
        let into_second = u64::try_from(now.subsec_nanosecond() / 1_000_000).unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(
            1001 - into_second.min(1000),
        ))
        .await;
    }
}

/// The destination to restore from (`--from`, else the first that lists the backup) and
/// the backup, by a name from its listing.
async fn find<'a>(
    config: &Config,
    owned: &'a [Box<dyn Storage>],
    req: &Request,
) -> Result<(&'a dyn Storage, Backup), Failed> {
    let mut looked = Vec::new();
    let mut errors = Vec::new();
    for storage in owned
        .iter()
        .filter(|s| req.from.is_none_or(|f| f == s.backend()))
    {
        looked.push(storage.backend().name());
        match storage.list().await {
            Ok(entries) => {
                let catalog = catalog::group(&entries, &config.retention.select);
                if let Some(backup) = catalog.find(&req.which) {
                    return Ok((storage.as_ref(), backup.clone()));
                }
            }
            Err(e) => errors.push(format!("{}: listing failed: {e}", storage.backend())),
        }
    }
    if !errors.is_empty() {
        return Err(fail(
            3,
            format!("{} not found; {}", req.which, errors.join("; ")),
        ));
    }
    Err(fail(
        2,
        format!(
            "no backup {} in {} (`dunnage list` shows the backups)",
            req.which,
            if looked.is_empty() {
                "any configured destination".to_owned()
            } else {
                looked.join(", ")
            }
        ),
    ))
}

/// Where to extract, how many leading components to strip, and whether it is in place.
fn target_of(
    config: &Config,
    req: &Request,
    manifest: Option<&Manifest>,
) -> Result<(PathBuf, usize, bool), Failed> {
    let sources = &config.sources;
    match &req.target {
        Some(target) => {
            let in_place = within(target, sources);
            Ok((target.clone(), req.strip_components.unwrap_or(0), in_place))
        }
        None => {
            // The archive stores the sources' names relative to `/`: strip their components.
            let stored = manifest
                .and_then(|m| m.sources.first())
                .map(PathBuf::from)
                .unwrap_or_else(|| sources.clone());
            let depth = stored
                .components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .count();
            Ok((sources.clone(), req.strip_components.unwrap_or(depth), true))
        }
    }
}

fn within(path: &Path, folder: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(path).starts_with(canon(folder))
}

/// The target exists (or is created), is empty unless `--overwrite`, and has room.
fn check_target(target: &Path, overwrite: bool, manifest: Option<&Manifest>) -> Result<(), Failed> {
    std::fs::create_dir_all(target).map_err(|e| {
        fail(
            2,
            format!("cannot create the target folder {}: {e}", target.display()),
        )
    })?;
    let mut entries = std::fs::read_dir(target).map_err(|e| {
        fail(
            2,
            format!("cannot read the target folder {}: {e}", target.display()),
        )
    })?;
    if entries.next().is_some() && !overwrite {
        return Err(fail(
            2,
            format!(
                "the target folder {} is not empty; restore into an empty folder (--target) or \
                 replace what is there with --overwrite",
                target.display()
            ),
        ));
    }
    if let (Some(m), Some(free)) = (manifest, free_space(target))
        && m.tar.file_bytes > free
    {
        return Err(fail(
            1,
            format!(
                "the backup holds {} of files, the target has {} free; nothing was written",
                human_bytes(m.tar.file_bytes),
                human_bytes(free)
            ),
        ));
    }
    Ok(())
}

fn free_space(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Streams the backup's objects into the extraction.
async fn extract_from(
    config: &Config,
    storage: &dyn Storage,
    backup: &Backup,
    target: PathBuf,
    opts: Options,
    manifest: Option<&Manifest>,
) -> Result<Report, Failed> {
    let names: Vec<String> = backup.objects.iter().map(|o| o.name.clone()).collect();
    let keys = config.keys.clone();
    let (fetched, extracted) = fetch::read_objects(storage, &names, move |stored| {
        let tar = read::open(stored, &keys).map_err(Stage::Open)?;
        extract::extract(tar, &target, &opts).map_err(Stage::Extract)
    })
    .await;
    match (fetched, extracted) {
        (Ok(parts), Ok(report)) => match manifest.map(|m| verify::hashes_match(m, &parts)) {
            Some(Err(why)) => Err(fail(
                1,
                format!(
                    "the stored bytes do not match the manifest, the restored files may be damaged: {why}"
                ),
            )),
            _ => Ok(report),
        },
        (_, Ok(report)) => Ok(report),
        (Err(e), _) => Err(fail(
            3,
            format!("reading the backup from {} failed: {e}", storage.backend()),
        )),
        (Ok(_), Err(Stage::Open(OpenError::NoKey(why) | OpenError::WrongKey(why)))) => {
            Err(fail(3, why))
        }
        (Ok(_), Err(Stage::Open(e))) => Err(fail(1, e.to_string())),
        (Ok(_), Err(Stage::Extract(stopped))) => Err(Failed {
            code: 1,
            why: stopped.error.to_string(),
            done: Some(stopped.report),
        }),
    }
}

enum Stage {
    Open(OpenError),
    Extract(Stopped),
}
