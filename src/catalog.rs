//! What a destination's folder holds, as backups: a pure function from a listing to backup
//! sets, used by `list`, retention, `verify` and `restore` alike.
//!
//! A backup is its archive (`NAME`) or, when split, its parts (`NAME.001`, `NAME.002`, ...),
//! plus its manifest (`NAME.sha256`), written once every part was stored. A split set is
//! complete only with its manifest; without one it is an unfinished upload. An archive
//! without a manifest (older runs, the reference's archives) is still a backup.
//!
//! Which names are this schedule's: those starting with `BACKUP_PRUNING_PREFIX` (as the
//! reference). With an empty prefix the reference takes every file in the folder; dunnage
//! then takes only names with a manifest or matching the `BACKUP_FILENAME` pattern, so an
//! unrelated file in the folder is never a candidate for deletion.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use regex::Regex;

use crate::storage::Entry;

/// Appended to a backup's name for its manifest.
pub const MANIFEST_SUFFIX: &str = ".sha256";

/// The name of part `index` (1-based) of the split backup `name`.
pub fn part_name(name: &str, index: usize) -> String {
    format!("{name}.{index:03}")
}

/// The manifest's name for the backup `name`.
pub fn manifest_name(name: &str) -> String {
    format!("{name}{MANIFEST_SUFFIX}")
}

/// Which names in a folder belong to one schedule.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// `BACKUP_PRUNING_PREFIX`.
    pub prefix: String,
    /// The `BACKUP_FILENAME` pattern, applied when the prefix is empty.
    pub pattern: Option<Regex>,
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix
            && self.pattern.as_ref().map(Regex::as_str) == other.pattern.as_ref().map(Regex::as_str)
    }
}

impl Eq for Selector {}

impl Selector {
    fn matches(&self, name: &str) -> bool {
        !self.prefix.is_empty() || self.pattern.as_ref().is_none_or(|p| p.is_match(name))
    }
}

/// One backup in one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The archive's name (without a part number).
    pub name: String,
    /// The archive, or its parts in order.
    pub objects: Vec<Entry>,
    pub manifest: Option<Entry>,
    /// The stored bytes (the parts together).
    pub size: u64,
    /// When its last object was stored.
    pub modified: Timestamp,
}

impl Backup {
    fn new(name: &str, objects: Vec<Entry>, manifest: Option<Entry>) -> Self {
        let times = objects.iter().chain(&manifest).map(|e| e.modified);
        Backup {
            name: name.to_owned(),
            size: objects.iter().map(|e| e.size).sum(),
            modified: times.max().unwrap_or(Timestamp::UNIX_EPOCH),
            objects,
            manifest,
        }
    }

    /// Whether the archive is stored as numbered parts.
    pub fn is_split(&self) -> bool {
        self.objects.first().is_some_and(|o| o.name != self.name)
    }

    /// Every name to delete, manifest first: a deletion cut short leaves an unfinished set
    /// (cleaned later), never a manifest whose parts are gone.
    pub fn names(&self) -> Vec<&str> {
        self.manifest
            .iter()
            .chain(&self.objects)
            .map(|e| e.name.as_str())
            .collect()
    }
}

/// A destination's folder, as one schedule sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Complete backups, oldest first.
    pub backups: Vec<Backup>,
    /// Parts without a manifest, and manifests without their archive: unfinished uploads.
    pub unfinished: Vec<Backup>,
}

impl Catalog {
    /// The backup called `name`, or the newest for `latest`.
    pub fn find(&self, name: &str) -> Option<&Backup> {
        if name == "latest" {
            return self.backups.last();
        }
        self.backups.iter().find(|b| b.name == name)
    }
}

/// Groups `entries` (a folder's listing, without unfinished uploads) into the backups
/// `select` takes.
pub fn group(entries: &[Entry], select: &Selector) -> Catalog {
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.name.starts_with(&select.prefix))
        .collect();
    let mut manifests: BTreeMap<&str, &Entry> = BTreeMap::new();
    let mut plain: BTreeMap<&str, &Entry> = BTreeMap::new();
    let mut parts: BTreeMap<&str, Vec<(usize, &Entry)>> = BTreeMap::new();
    for e in &mine {
        if let Some(base) = e.name.strip_suffix(MANIFEST_SUFFIX) {
            manifests.insert(base, e);
        }
        plain.insert(&e.name, e);
        if let Some((base, index)) = split_part(&e.name) {
            parts.entry(base).or_default().push((index, e));
        }
    }
    let mut catalog = Catalog::default();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let manifested = |base: &str| manifests.contains_key(base);
    for p in parts.values_mut() {
        p.sort_by_key(|(index, _)| *index);
    }
    for (base, manifest) in &manifests {
        used.insert(&manifest.name);
        let objects: Vec<&Entry> = match (parts.get(base), plain.get(base)) {
            (Some(p), _) => p.iter().map(|(_, e)| *e).collect(),
            (None, Some(e)) => vec![*e],
            (None, None) => Vec::new(),
        };
        used.extend(objects.iter().map(|e| e.name.as_str()));
        let objects = objects.into_iter().cloned().collect();
        let backup = Backup::new(base, objects, Some((*manifest).clone()));
        if backup.objects.is_empty() {
            catalog.unfinished.push(backup);
        } else {
            catalog.backups.push(backup);
        }
    }
    for (base, p) in &parts {
        if manifested(base) || !select.matches(base) {
            continue;
        }
        used.extend(p.iter().map(|(_, e)| e.name.as_str()));
        let objects = p.iter().map(|(_, e)| (*e).clone()).collect();
        catalog.unfinished.push(Backup::new(base, objects, None));
    }
    for (name, e) in &plain {
        if !used.contains(name) && select.matches(name) {
            catalog
                .backups
                .push(Backup::new(name, vec![(*e).clone()], None));
        }
    }
    catalog
        .backups
        .sort_by(|a, b| (a.modified, &a.name).cmp(&(b.modified, &b.name)));
    catalog
}

/// `NAME.NNN` -> (`NAME`, NNN) for part numbers of three or more digits, from 1.
fn split_part(name: &str) -> Option<(&str, usize)> {
    let (base, digits) = name.rsplit_once('.')?;
    if digits.len() < 3 || !digits.bytes().all(|b| b.is_ascii_digit()) || base.is_empty() {
        return None;
    }
    let index: usize = digits.parse().ok()?;
    (index > 0).then_some((base, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, secs: i64, size: u64) -> Entry {
        Entry {
            name: name.into(),
            size,
            modified: Timestamp::from_second(secs).unwrap(),
        }
    }

    fn selector(prefix: &str) -> Selector {
        let template =
            crate::filename::FilenameTemplate::new("backup-%Y%m%d.{{ .Extension }}", "tar", "")
                .unwrap();
        Selector {
            prefix: prefix.into(),
            pattern: Some(template.name_pattern()),
        }
    }

    fn names(backups: &[Backup]) -> Vec<&str> {
        backups.iter().map(|b| b.name.as_str()).collect()
    }

    #[test]
    fn an_archive_and_its_manifest_are_one_backup() {
        let c = group(
            &[
                entry("backup-20261101.tar.gz.sha256", 101, 300),
                entry("backup-20261101.tar.gz", 100, 5000),
                entry("backup-20261102.tar.gz", 200, 6000),
            ],
            &selector(""),
        );
        assert_eq!(
            names(&c.backups),
            ["backup-20261101.tar.gz", "backup-20261102.tar.gz"]
        );
        let first = &c.backups[0];
        assert_eq!(first.size, 5000);
        assert!(!first.is_split());
        assert_eq!(
            first.names(),
            ["backup-20261101.tar.gz.sha256", "backup-20261101.tar.gz"]
        );
        assert!(c.backups[1].manifest.is_none());
        assert!(c.unfinished.is_empty());
        assert_eq!(c.find("latest").unwrap().name, "backup-20261102.tar.gz");
        assert_eq!(c.find("backup-20261101.tar.gz").unwrap().size, 5000);
        assert!(c.find("backup-20261101.tar.gz.sha256").is_none());
    }

    #[test]
    fn parts_are_one_backup_only_with_their_manifest() {
        let c = group(
            &[
                entry("backup-20261101.tar.zst.002", 102, 10),
                entry("backup-20261101.tar.zst.001", 101, 100),
                entry("backup-20261101.tar.zst.sha256", 103, 1),
                entry("backup-20261102.tar.zst.001", 201, 100),
                entry("backup-20261102.tar.zst.002", 202, 100),
            ],
            &selector(""),
        );
        assert_eq!(names(&c.backups), ["backup-20261101.tar.zst"]);
        let set = &c.backups[0];
        assert!(set.is_split());
        assert_eq!(set.size, 110);
        assert_eq!(set.modified, Timestamp::from_second(103).unwrap());
        assert_eq!(
            set.names(),
            [
                "backup-20261101.tar.zst.sha256",
                "backup-20261101.tar.zst.001",
                "backup-20261101.tar.zst.002"
            ]
        );
        assert_eq!(names(&c.unfinished), ["backup-20261102.tar.zst"]);
        assert_eq!(c.unfinished[0].objects.len(), 2);
    }

    #[test]
    fn part_numbers_sort_as_numbers_past_999() {
        let mut entries: Vec<Entry> = (1..=1001)
            .map(|i| entry(&part_name("backup-20261101.tar", i), i as i64, 1))
            .collect();
        entries.reverse();
        entries.push(entry("backup-20261101.tar.sha256", 2000, 1));
        let c = group(&entries, &selector(""));
        let objects = &c.backups[0].objects;
        assert_eq!(objects.len(), 1001);
        assert_eq!(objects[998].name, "backup-20261101.tar.999");
        assert_eq!(objects[999].name, "backup-20261101.tar.1000");
    }

    #[test]
    fn unrelated_files_are_never_this_schedules_even_with_an_empty_prefix() {
        let c = group(
            &[
                entry("notes.txt", 1, 1),
                entry("db.sql.001", 1, 1),
                entry("backup-20261101.tar.gz", 100, 5),
                entry("other-20261101.tar.gz", 100, 5),
            ],
            &selector(""),
        );
        assert_eq!(names(&c.backups), ["backup-20261101.tar.gz"]);
        assert!(c.unfinished.is_empty());
    }

    #[test]
    fn a_manifest_makes_a_backup_whatever_its_name_and_the_prefix_still_applies() {
        let c = group(
            &[
                entry("renamed.tar.gz", 5, 9),
                entry("renamed.tar.gz.sha256", 6, 1),
                entry("backup-20261101.tar", 7, 1),
                entry("x-backup-20261102.tar", 8, 1),
            ],
            &Selector {
                prefix: "".into(),
                pattern: None,
            },
        );
        assert_eq!(
            names(&c.backups),
            [
                "renamed.tar.gz",
                "backup-20261101.tar",
                "x-backup-20261102.tar"
            ]
        );
        let c = group(
            &[
                entry("renamed.tar.gz", 5, 9),
                entry("renamed.tar.gz.sha256", 6, 1),
                entry("backup-20261101.tar", 7, 1),
            ],
            &selector("backup-"),
        );
        assert_eq!(names(&c.backups), ["backup-20261101.tar"]);
        // A prefix alone decides, as in the reference (the template may have changed).
        let c = group(
            &[entry("backup-old-name.tar", 7, 1), entry("other.tar", 7, 1)],
            &selector("backup-"),
        );
        assert_eq!(names(&c.backups), ["backup-old-name.tar"]);
    }

    #[test]
    fn a_manifest_without_its_archive_is_unfinished() {
        let c = group(&[entry("backup-20261101.tar.sha256", 5, 1)], &selector(""));
        assert!(c.backups.is_empty());
        assert_eq!(c.unfinished[0].names(), ["backup-20261101.tar.sha256"]);
    }

    #[test]
    fn part_names_are_recognised_strictly() {
        assert_eq!(split_part("a.tar.001"), Some(("a.tar", 1)));
        assert_eq!(split_part("a.tar.1234"), Some(("a.tar", 1234)));
        assert_eq!(split_part("a.tar.01"), None);
        assert_eq!(split_part("a.tar.000"), None);
        assert_eq!(split_part("a.tar.0x1"), None);
        assert_eq!(split_part(".001"), None);
        assert_eq!(part_name("a", 7), "a.007");
        assert_eq!(manifest_name("a.tar"), "a.tar.sha256");
    }
}
