//! Retention: which backups to delete. [`plan`] is a pure function over a listing
//! `(name, size, modified)`, so every rule is unit-tested without a destination; [`apply`]
//! then lists a destination, plans, and deletes.
//!
//! Rules (a backup survives if any rule keeps it, as with restic's `forget`):
//! - `BACKUP_RETENTION_DAYS` (reference semantics): keep what was modified at or after
//!   `now - N days + BACKUP_PRUNING_LEEWAY` (calendar days in the schedule's time zone).
//! - `BACKUP_RETENTION_KEEP_LAST` N: the N newest.
//! - `_KEEP_DAILY/_WEEKLY/_MONTHLY/_YEARLY` N: the newest backup of each of the N most
//!   recent days / ISO weeks / months / years that have one.
//!
//! Candidates are this schedule's backups as [`crate::catalog`] groups them (a backup with
//! its manifest and parts is one candidate). Safety rule (reference): if every candidate
//! would be deleted, nothing is.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use crate::catalog::{self, Selector};
pub use crate::storage::Entry;
use crate::storage::{ErrorKind, Storage, StorageError, partial};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `BACKUP_RETENTION_DAYS`; `None` when negative (off).
    pub days: Option<u32>,
    pub leeway: Duration,
    /// `BACKUP_PRUNING_PREFIX` and the `BACKUP_FILENAME` pattern: which names are ours.
    pub select: Selector,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
}

impl Policy {
    /// Whether any rule is set; without one nothing is ever deleted.
    pub fn is_active(&self) -> bool {
        self.days.is_some()
            || self.keep_last > 0
            || self.keep_daily > 0
            || self.keep_weekly > 0
            || self.keep_monthly > 0
            || self.keep_yearly > 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Kept, with every rule that keeps it.
    Keep(Vec<String>),
    Delete(String),
}

/// What retention decided for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Candidates (names with the prefix), newest first, each with its verdict.
    pub decisions: Vec<(Entry, Verdict)>,
    /// Set when the safety rule stopped every deletion.
    pub refused: Option<String>,
}

impl Plan {
    /// The entries to delete (none when the safety rule applied).
    pub fn deletions(&self) -> Vec<&Entry> {
        if self.refused.is_some() {
            return Vec::new();
        }
        self.decisions
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Delete(_)))
            .map(|(e, _)| e)
            .collect()
    }
}

/// Decides, for a listing, what `policy` deletes at `now` (whose zone defines days).
pub fn plan(entries: &[Entry], policy: &Policy, now: &Zoned) -> Plan {
    let mut candidates: Vec<Entry> = entries
        .iter()
        .filter(|e| e.name.starts_with(&policy.select.prefix))
        .cloned()
        .collect();
    // Newest first; equal times ordered by name so the result never depends on listing order.
    candidates.sort_by(|a, b| (b.modified, &b.name).cmp(&(a.modified, &a.name)));

    if !policy.is_active() {
        let decisions = candidates
            .into_iter()
            .map(|e| (e, Verdict::Keep(vec!["no retention rule is set".into()])))
            .collect();
        return Plan {
            decisions,
            refused: None,
        };
    }

    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); candidates.len()];
    let deadline = policy.days.map(|days| {
        let back = now
            .checked_sub(jiff::Span::new().days(i64::from(days)))
            .unwrap_or_else(|_| now.clone());
        back.timestamp()
            .checked_add(policy.leeway)
            .unwrap_or(Timestamp::MAX)
    });
    if let (Some(days), Some(deadline)) = (policy.days, deadline) {
        for (i, e) in candidates.iter().enumerate() {
            if e.modified >= deadline {
                reasons[i].push(format!("newer than {days} days"));
            }
        }
    }
    for r in reasons.iter_mut().take(policy.keep_last as usize) {
        r.push(format!("one of the last {}", policy.keep_last));
    }
    let tz = now.time_zone().clone();
    keep_calendar(&candidates, &mut reasons, policy, &tz);

    let delete_reason = match (policy.days, deadline) {
        (Some(days), Some(deadline)) => format!(
            "older than {days} days (before {}) and kept by no other rule",
            deadline
                .to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
        ),
        _ => "kept by no retention rule".to_owned(),
    };
    let decisions: Vec<(Entry, Verdict)> = candidates
        .into_iter()
        .zip(reasons)
        .map(|(e, r)| {
            let v = if r.is_empty() {
                Verdict::Delete(delete_reason.clone())
            } else {
                Verdict::Keep(r)
            };
            (e, v)
        })
        .collect();
    let doomed = decisions
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Delete(_)))
        .count();
    let refused = (doomed > 0 && doomed == decisions.len()).then(|| {
        format!(
            "retention would delete all {doomed} backup(s) matching prefix {:?}; deleting none",
            policy.select.prefix
        )
    });
    Plan { decisions, refused }
}

/// The daily, weekly, monthly and yearly rules, in `tz`'s calendar.
fn keep_calendar(entries: &[Entry], reasons: &mut [Vec<String>], policy: &Policy, tz: &TimeZone) {
    let local = |e: &Entry| e.modified.to_zoned(tz.clone()).date();
    keep_per_bucket(entries, reasons, policy.keep_daily, "daily", |e| {
        local(e).to_string()
    });
    keep_per_bucket(entries, reasons, policy.keep_weekly, "weekly", |e| {
        let w = local(e).iso_week_date();
        format!("{}-W{:02}", w.year(), w.week())
    });
    keep_per_bucket(entries, reasons, policy.keep_monthly, "monthly", |e| {
        let d = local(e);
        format!("{}-{:02}", d.year(), d.month())
    });
    keep_per_bucket(entries, reasons, policy.keep_yearly, "yearly", |e| {
        local(e).year().to_string()
    });
}

/// Keeps the newest entry of each of the `n` most recent buckets (entries are newest first).
fn keep_per_bucket(
    entries: &[Entry],
    reasons: &mut [Vec<String>],
    n: u32,
    rule: &str,
    bucket: impl Fn(&Entry) -> String,
) {
    let mut last: Option<String> = None;
    let mut kept = 0;
    for (i, e) in entries.iter().enumerate() {
        if kept >= n {
            break;
        }
        let b = bucket(e);
        if last.as_ref() != Some(&b) {
            reasons[i].push(format!("{rule} {b}"));
            kept += 1;
            last = Some(b);
        }
    }
}

/// What pruning did on one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Candidates (this schedule's backups) found.
    pub total: usize,
    /// The backups deleted (each with its manifest and parts).
    pub deleted: Vec<String>,
    /// Unfinished split sets and orphaned manifests removed.
    pub unfinished: Vec<String>,
    /// Deletions that failed, with the error.
    pub errors: Vec<String>,
    /// The safety rule's message, when it applied.
    pub refused: Option<String>,
}

/// Lists `storage`, plans with `policy`, and deletes (a backup's manifest first, then its
/// archive or parts). A failed listing deletes nothing; failed deletions are reported and do
/// not stop the others. Unfinished sets nobody wrote to for an hour are removed too.
pub async fn apply(
    storage: &dyn Storage,
    policy: &Policy,
    now: &Zoned,
) -> Result<PruneReport, StorageError> {
    let catalog = catalog::group(&storage.list().await?, &policy.select);
    let summaries: Vec<Entry> = catalog.backups.iter().map(summary).collect();
    let plan = plan(&summaries, policy, now);
    let mut report = PruneReport {
        total: plan.decisions.len(),
        refused: plan.refused.clone(),
        ..Default::default()
    };
    if let Some(why) = &plan.refused {
        tracing::warn!("{}: {why}", storage.backend());
    }
    for entry in plan.deletions() {
        let Some(backup) = catalog.find(&entry.name) else {
            continue;
        };
        match delete_backup(storage, backup).await {
            Ok(()) => {
                tracing::info!("{}: pruned {}", storage.backend(), entry.name);
                report.deleted.push(entry.name.clone());
            }
            Err(e) => {
                tracing::error!("{}: could not prune {}: {e}", storage.backend(), entry.name);
                report.errors.push(format!("{}: {e}", entry.name));
            }
        }
    }
    let stale = catalog.unfinished.iter().filter(|b| {
        now.timestamp().duration_since(b.modified)
            >= partial::STALE_AFTER.try_into().unwrap_or_default()
    });
    for backup in stale {
        match delete_backup(storage, backup).await {
            Ok(()) => {
                tracing::warn!(
                    "{}: removed {}, a split backup left unfinished by an interrupted run",
                    storage.backend(),
                    backup.name
                );
                report.unfinished.push(backup.name.clone());
            }
            Err(e) => report.errors.push(format!("{}: {e}", backup.name)),
        }
    }
    Ok(report)
}

/// A backup as retention sees it: one name, its size and time.
pub fn summary(backup: &catalog::Backup) -> Entry {
    Entry {
        name: backup.name.clone(),
        size: backup.size,
        modified: backup.modified,
    }
}

/// Deletes every object of `backup`, manifest first; already gone counts as deleted.
pub async fn delete_backup(
    storage: &dyn Storage,
    backup: &catalog::Backup,
) -> Result<(), StorageError> {
    for name in backup.names() {
        match storage.delete(name).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn now() -> Zoned {
        "2026-11-22T12:00:00+00:00[UTC]".parse().unwrap()
    }

    /// A backup taken `secs` seconds before `now()`.
    fn ago(name: &str, secs: i64) -> Entry {
        Entry {
            name: name.into(),
            size: 1,
            modified: now().timestamp() - jiff::SignedDuration::from_secs(secs),
        }
    }

    fn deleted(plan: &Plan) -> Vec<&str> {
        let mut v: Vec<_> = plan.deletions().iter().map(|e| e.name.as_str()).collect();
        v.sort();
        v
    }

    fn days(n: u32) -> Policy {
        Policy {
            days: Some(n),
            leeway: Duration::from_secs(60),
            ..Default::default()
        }
    }

    #[test]
    fn no_rule_deletes_nothing() {
        let entries = [ago("backup-1", 100 * DAY), ago("backup-2", DAY)];
        let p = plan(&entries, &Policy::default(), &now());
        assert!(deleted(&p).is_empty());
        assert_eq!(p.decisions.len(), 2);
    }

    #[test]
    fn days_rule_uses_the_leeway_like_the_reference() {
        // Deadline: 7 days ago plus 1 minute. Exactly 7 days old: deleted (the run a week
        // ago started a few seconds later than today's, the leeway covers that).
        let entries = [
            ago("backup-a", 7 * DAY),      // older than the deadline by 60s
            ago("backup-b", 7 * DAY - 59), // 1s before the deadline
            ago("backup-c", 7 * DAY - 60), // exactly at the deadline: kept
            ago("backup-d", 7 * DAY - 61), // after it
            ago("backup-e", 0),
        ];
        let p = plan(&entries, &days(7), &now());
        assert_eq!(deleted(&p), ["backup-a", "backup-b"]);
        let zero_leeway = Policy {
            leeway: Duration::ZERO,
            ..days(7)
        };
        let p = plan(&entries, &zero_leeway, &now());
        assert_eq!(
            deleted(&p),
            Vec::<&str>::new(),
            "nothing is strictly older than 7 days"
        );
    }

    #[test]
    fn days_are_calendar_days_in_the_schedule_zone() {
        // Across the DST change of 2026-03-29 in Berlin, "1 day" before 12:00 local on the
        // 29th is 12:00 local on the 28th, which is 23 hours earlier, not 24.
        let now: Zoned = "2026-03-29T12:00:00+02:00[Europe/Berlin]".parse().unwrap();
        let at = |s: &str| Entry {
            name: s.into(),
            size: 1,
            modified: s.parse::<Zoned>().unwrap().timestamp(),
        };
        let entries = [
            at("2026-03-28T11:59:00+01:00[Europe/Berlin]"),
            at("2026-03-28T12:00:00+01:00[Europe/Berlin]"),
            at("2026-03-29T11:00:00+02:00[Europe/Berlin]"),
        ];
        let policy = Policy {
            days: Some(1),
            ..Default::default()
        };
        let p = plan(&entries, &policy, &now);
        assert_eq!(deleted(&p), ["2026-03-28T11:59:00+01:00[Europe/Berlin]"]);
    }

    #[test]
    fn the_safety_rule_never_deletes_every_candidate() {
        let entries = [ago("backup-1", 10 * DAY), ago("backup-2", 9 * DAY)];
        let p = plan(&entries, &days(0), &now());
        assert!(p.refused.as_deref().unwrap().contains("all 2 backup(s)"));
        assert!(deleted(&p).is_empty());
        // One backup only, retention 0: still kept.
        let p = plan(&entries[..1], &days(0), &now());
        assert!(p.refused.is_some() && deleted(&p).is_empty());
    }

    #[test]
    fn the_prefix_limits_candidates_and_a_prefix_matching_nothing_deletes_nothing() {
        let entries = [
            ago("db-1", 30 * DAY),
            ago("db-2", 0),
            ago("files-1", 30 * DAY),
        ];
        let with_prefix = |prefix: &str| Policy {
            select: Selector {
                prefix: prefix.into(),
                pattern: None,
            },
            ..days(7)
        };
        assert_eq!(
            deleted(&plan(&entries, &with_prefix("db-"), &now())),
            ["db-1"]
        );
        let p = plan(&entries, &with_prefix("nothing-"), &now());
        assert!(p.decisions.is_empty() && p.refused.is_none() && deleted(&p).is_empty());
        // Without the prefix, the other schedule's old file is a candidate too.
        assert_eq!(
            deleted(&plan(&entries, &with_prefix(""), &now())),
            ["db-1", "files-1"]
        );
    }

    #[test]
    fn keep_last_and_equal_timestamps_are_deterministic() {
        let entries = [
            ago("b", DAY),
            ago("a", DAY),
            ago("c", DAY),
            ago("old", 5 * DAY),
        ];
        let policy = Policy {
            keep_last: 2,
            ..Default::default()
        };
        // Same time: ordered by name descending ("c", "b" newest), so "a" and "old" go.
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]] {
            let shuffled: Vec<_> = order.iter().map(|&i| entries[i].clone()).collect();
            assert_eq!(deleted(&plan(&shuffled, &policy, &now())), ["a", "old"]);
        }
    }

    #[test]
    fn calendar_rules_keep_the_newest_of_each_bucket() {
        // Two backups a day for 10 days, at 01:00 and 13:00 UTC.
        let base: Zoned = "2026-11-22T13:00:00+00:00[UTC]".parse().unwrap();
        let mut entries = Vec::new();
        for d in 0..10 {
            for h in [0, 12] {
                let t = base
                    .checked_sub(jiff::Span::new().days(d).hours(h))
                    .unwrap();
                entries.push(Entry {
                    name: t.strftime("backup-%Y%m%d-%H").to_string(),
                    size: 1,
                    modified: t.timestamp(),
                });
            }
        }
        let now: Zoned = "2026-11-22T14:00:00+00:00[UTC]".parse().unwrap();
        let daily = Policy {
            keep_daily: 3,
            ..Default::default()
        };
        let p = plan(&entries, &daily, &now);
        let kept: Vec<_> = p
            .decisions
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Keep(_)))
            .map(|(e, _)| e.name.as_str())
            .collect();
        assert_eq!(
            kept,
            [
                "backup-20261122-13",
                "backup-20261121-13",
                "backup-20261120-13"
            ]
        );

        // 2026-11-22 is a Sunday: ISO week 47 is 16-22 Nov, week 46 is 9-15 Nov.
        let weekly = Policy {
            keep_weekly: 2,
            ..Default::default()
        };
        let p = plan(&entries, &weekly, &now);
        let kept: Vec<_> = p
            .decisions
            .iter()
            .filter_map(|(e, v)| match v {
                Verdict::Keep(r) => Some((e.name.as_str(), r[0].as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("backup-20261122-13", "weekly 2026-W47"),
                ("backup-20261115-13", "weekly 2026-W46")
            ]
        );

        let monthly_yearly = Policy {
            keep_monthly: 5,
            keep_yearly: 5,
            ..Default::default()
        };
        let p = plan(&entries, &monthly_yearly, &now);
        match &p.decisions[0].1 {
            Verdict::Keep(r) => assert_eq!(r, &["monthly 2026-11", "yearly 2026"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.deletions().len(), entries.len() - 1);
    }

    #[test]
    fn rules_combine_a_backup_survives_if_any_rule_keeps_it() {
        let entries = [
            ago("backup-new", DAY),
            ago("backup-mid", 20 * DAY),
            ago("backup-old", 400 * DAY),
        ];
        let policy = Policy {
            keep_yearly: 2,
            ..days(7)
        };
        let p = plan(&entries, &policy, &now());
        // new: within 7 days and newest of 2026; old: newest of 2025; mid: neither.
        assert_eq!(deleted(&p), ["backup-mid"]);
        let reasons =
            |name: &str| match &p.decisions.iter().find(|(e, _)| e.name == name).unwrap().1 {
                Verdict::Keep(r) => r.clone(),
                Verdict::Delete(r) => vec![r.clone()],
            };
        assert_eq!(reasons("backup-new"), ["newer than 7 days", "yearly 2026"]);
        assert_eq!(reasons("backup-old"), ["yearly 2025"]);
        assert!(reasons("backup-mid")[0].starts_with("older than 7 days"));
    }

    #[test]
    fn keep_rules_in_another_zone_bucket_by_local_date() {
        // 23:30 UTC on the 21st is already the 22nd in Tokyo.
        let entries = [
            Entry {
                name: "late".into(),
                size: 1,
                modified: "2026-11-21T23:30:00Z".parse().unwrap(),
            },
            Entry {
                name: "early".into(),
                size: 1,
                // 23:00 on the 21st in Tokyo, while "late" is 08:30 on the 22nd there.
                modified: "2026-11-21T14:00:00Z".parse().unwrap(),
            },
        ];
        let policy = Policy {
            keep_daily: 1,
            ..Default::default()
        };
        let utc: Zoned = "2026-11-22T12:00:00+00:00[UTC]".parse().unwrap();
        let tokyo = utc.with_time_zone(jiff::tz::TimeZone::get("Asia/Tokyo").unwrap());
        assert_eq!(
            deleted(&plan(&entries, &policy, &utc)),
            ["early"],
            "same UTC day"
        );
        let p = plan(&entries, &policy, &tokyo);
        // In Tokyo they are on different days, but keep_daily 1 keeps only the newest day.
        assert_eq!(deleted(&p), ["early"]);
        let two = Policy {
            keep_daily: 2,
            ..Default::default()
        };
        assert!(
            deleted(&plan(&entries, &two, &tokyo)).is_empty(),
            "two Tokyo days"
        );
        assert_eq!(
            deleted(&plan(&entries, &two, &utc)),
            ["early"],
            "one UTC day"
        );
    }

    #[tokio::test]
    async fn apply_deletes_whole_sets_and_stale_unfinished_ones_only() {
        let m = crate::storage::memory::MemoryStorage::new();
        let at = |secs: i64| now().timestamp() - jiff::SignedDuration::from_secs(secs);
        for name in ["b-1.tar.001", "b-1.tar.002", "b-1.tar.sha256"] {
            m.insert(name, b"x", at(10 * DAY));
        }
        for name in ["b-2.tar", "b-2.tar.sha256"] {
            m.insert(name, b"x", at(DAY / 2));
        }
        m.insert("b-3.tar.001", b"x", at(2 * 3600)); // a run that died two hours ago
        m.insert("b-4.tar.001", b"x", at(600)); // maybe still being written
        m.insert("notes.txt", b"x", at(100 * DAY));
        let policy = Policy {
            days: Some(7),
            select: Selector {
                prefix: "b-".into(),
                pattern: None,
            },
            ..Default::default()
        };
        let report = apply(&m, &policy, &now()).await.unwrap();
        assert_eq!(report.total, 2, "a set and its manifest are one backup");
        assert_eq!(report.deleted, ["b-1.tar"]);
        assert_eq!(report.unfinished, ["b-3.tar"]);
        assert!(report.errors.is_empty());
        assert_eq!(
            m.names(),
            ["b-2.tar", "b-2.tar.sha256", "b-4.tar.001", "notes.txt"]
        );
    }
}
