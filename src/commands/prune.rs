//! `dunnage prune`: the retention policy now, or (`--dry-run`) what it would delete and why.
//! Also the prune step of a backup run, where the backup was just stored.

use std::io::Write;

use jiff::Zoned;

use crate::catalog;
use crate::config::Config;
use crate::prune::{self, Verdict};
use crate::report::DestinationStats;
use crate::schedule::lock;
use crate::storage::{self, Backend, Storage};

/// Applies the retention policy to one destination that just stored a backup; what it did
/// goes into `dest`, problems into `warnings`.
pub(super) async fn after_backup(
    config: &Config,
    storage: &dyn Storage,
    dest: &mut DestinationStats,
    warnings: &mut Vec<String>,
) {
    let backend = storage.backend();
    if config.skips_prune(backend) {
        tracing::info!("{backend}: pruning skipped (BACKUP_SKIP_BACKENDS_FROM_PRUNE)");
        return;
    }
    let now = Zoned::now().with_time_zone(config.time_zone.clone());
    match prune::apply(storage, &config.retention, &now).await {
        Ok(report) => {
            if let Some(why) = &report.refused {
                warnings.push(format!("{backend}: {why}"));
            }
            for e in &report.errors {
                warnings.push(format!("{backend}: pruning failed for {e}"));
            }
            dest.prune = Some(report);
        }
        Err(e) => {
            let msg = format!("{backend}: pruning skipped, listing failed: {e}");
            tracing::error!("{msg}");
            warnings.push(msg.clone());
            dest.prune_error = Some(msg);
        }
    }
}

/// Why a backup was not deleted on request.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("no backup {0} in this profile's destinations (see its listing)")]
    NotFound(String),
    /// Retention's safety rule: a profile never loses its last backup in a destination.
    #[error("{0} is this profile's only backup in {1}; take another backup before deleting it")]
    OnlyBackup(String, Backend),
    #[error("deleting from {0} failed: {1}")]
    Failed(Backend, String),
    #[error("{0} cannot be listed: {1}")]
    Unlisted(Backend, String),
}

/// Deletes the backup called `name` (taken from the listings, never from the request alone)
/// from every destination of `config` holding it, or only from `from`: manifest first, then
/// its parts. Nothing is deleted when it is the only backup in any of them. Returns where
/// it was deleted.
pub async fn delete_named(
    config: &Config,
    name: &str,
    from: Option<Backend>,
) -> Result<Vec<Backend>, DeleteError> {
    let (owned, unavailable) = storage::open_all(&config.targets()).await;
    if let Some((backend, e)) = unavailable
        .into_iter()
        .find(|(b, _)| from.is_none_or(|f| f == *b))
    {
        return Err(DeleteError::Unlisted(backend, e.to_string()));
    }
    let mut holding = Vec::new();
    for storage in owned
        .iter()
        .filter(|s| from.is_none_or(|f| f == s.backend()))
    {
        let entries = storage
            .list()
            .await
            .map_err(|e| DeleteError::Unlisted(storage.backend(), e.to_string()))?;
        let catalog = catalog::group(&entries, &config.retention.select);
        let Some(backup) = catalog.backups.iter().find(|b| b.name == name) else {
            continue;
        };
        if catalog.backups.len() <= 1 {
            return Err(DeleteError::OnlyBackup(name.to_owned(), storage.backend()));
        }
        holding.push((storage, backup.clone()));
    }
    if holding.is_empty() {
        return Err(DeleteError::NotFound(name.to_owned()));
    }
    let mut deleted = Vec::new();
    for (storage, backup) in holding {
        prune::delete_backup(storage.as_ref(), &backup)
            .await
            .map_err(|e| DeleteError::Failed(storage.backend(), e.to_string()))?;
        tracing::info!(
            "[{}] {}: deleted {name} on request",
            config.name,
            storage.backend()
        );
        deleted.push(storage.backend());
    }
    Ok(deleted)
}

/// `dunnage prune` for every schedule. False when something failed.
pub async fn run(configs: &[Config], dry_run: bool, out: &mut impl Write) -> bool {
    let mut ok = true;
    for config in configs {
        ok &= prune_now(config, dry_run, out).await;
    }
    ok
}

/// Applies the retention policy now to every destination of `config`, or with `dry_run`
/// only prints what it would delete and why. False when something failed.
pub async fn prune_now(config: &Config, dry_run: bool, out: &mut impl Write) -> bool {
    let name = &config.name;
    let mut ok = true;
    if !config.archive_dir.is_dir() {
        let _ = writeln!(
            out,
            "[{name}] Local: {} does not exist; nothing to prune",
            config.archive_dir.display()
        );
    }
    let (owned, unavailable) = storage::open_all(&config.targets()).await;
    for (backend, e) in &unavailable {
        let _ = writeln!(out, "[{name}] {backend}: {e}");
        ok = false;
    }
    if !config.retention.is_active() {
        let _ = writeln!(out, "[{name}] no retention rule is set; nothing is deleted");
        return ok;
    }
    let _held = if dry_run {
        None
    } else {
        match lock::acquire(&config.lock_plan(), config.lock_timeout).await {
            Ok(held) => Some(held),
            Err(e) => {
                let _ = writeln!(out, "[{name}] {e}");
                return false;
            }
        }
    };
    for storage in &owned {
        let mut say = |line: String| {
            let _ = writeln!(out, "[{name}] {}: {line}", storage.backend());
        };
        ok &= if config.skips_prune(storage.backend()) {
            say("skipped (BACKUP_SKIP_BACKENDS_FROM_PRUNE)".into());
            true
        } else if dry_run {
            dry_run_one(config, storage.as_ref(), &mut say).await
        } else {
            prune_one(config, storage.as_ref(), &mut say).await
        };
    }
    ok
}

async fn prune_one(config: &Config, storage: &dyn Storage, say: &mut impl FnMut(String)) -> bool {
    let now = Zoned::now().with_time_zone(config.time_zone.clone());
    match prune::apply(storage, &config.retention, &now).await {
        Ok(r) => {
            say(format!(
                "deleted {} of {} backup(s){}{}",
                r.deleted.len(),
                r.total,
                r.refused.map(|w| format!("; {w}")).unwrap_or_default(),
                if r.errors.is_empty() {
                    String::new()
                } else {
                    format!("; failed: {}", r.errors.join("; "))
                }
            ));
            r.errors.is_empty()
        }
        Err(e) => {
            say(format!("listing failed, nothing deleted: {e}"));
            false
        }
    }
}

async fn dry_run_one(config: &Config, storage: &dyn Storage, say: &mut impl FnMut(String)) -> bool {
    let entries = match storage.list().await {
        Ok(entries) => entries,
        Err(e) => {
            say(format!("listing failed, nothing would be deleted: {e}"));
            return false;
        }
    };
    let now = Zoned::now().with_time_zone(config.time_zone.clone());
    let catalog = crate::catalog::group(&entries, &config.retention.select);
    let summaries: Vec<_> = catalog.backups.iter().map(prune::summary).collect();
    let plan = prune::plan(&summaries, &config.retention, &now);
    if plan.decisions.is_empty() {
        say(format!(
            "no backups match prefix {:?}",
            config.retention.select.prefix
        ));
    }
    let refused = plan.refused.is_some();
    for (entry, verdict) in &plan.decisions {
        let when = entry
            .modified
            .to_zoned(config.time_zone.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z");
        let line = match verdict {
            Verdict::Keep(why) => format!("keep   {} ({when}): {}", entry.name, why.join(", ")),
            Verdict::Delete(why) if refused => {
                format!(
                    "keep   {} ({when}): safety rule; would be {why}",
                    entry.name
                )
            }
            Verdict::Delete(why) => format!("delete {} ({when}): {why}", entry.name),
        };
        say(line);
    }
    if let Some(why) = &plan.refused {
        say(why.clone());
    }
    say(format!(
        "dry run: {} backup(s) would be deleted",
        plan.deletions().len()
    ));
    true
}
