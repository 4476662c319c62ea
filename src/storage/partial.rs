//! Names of unfinished uploads, and when one is stale.
//!
//! While an archive is written it has a hidden name in the destination folder,
//! `.NAME.TAG.partial`, where TAG is unique to that upload (process id and a random part),
//! so no two uploads share a name even when containers share a folder. A partial that has
//! not changed for [`STALE_AFTER`] was left by a run that died (a crash, `kill -9`, a
//! re-created container): a live upload writes to its file every few seconds. Stale ones
//! are removed before each upload, whoever left them; fresh ones are never touched, so a
//! second live instance writing into the same folder is not disturbed.

use std::time::Duration;

use super::{Entry, ErrorKind, Storage, StorageError};

/// A partial file unchanged for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(60 * 60);

/// The hidden name an archive has while it is being written.
pub fn name(name: &str) -> String {
    format!(
        ".{name}.{}-{:08x}.partial",
        std::process::id(),
        fastrand::u32(..)
    )
}

/// Whether `name` is an unfinished upload (never a backup).
pub fn is_partial(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".partial")
}

/// Whether `entry` is an unfinished upload nobody has written to for [`STALE_AFTER`].
pub fn is_stale(entry: &Entry, now: jiff::Timestamp) -> bool {
    is_partial(&entry.name)
        && now
            .duration_since(entry.modified)
            .try_into()
            .is_ok_and(|age: Duration| age >= STALE_AFTER)
}

/// Before an upload under `name`, given the folder's files (raw listing): refuses a name
/// already stored (backups are never replaced), then removes stale unfinished uploads.
pub async fn before_upload(
    storage: &dyn Storage,
    files: &[Entry],
    name: &str,
    location: &str,
) -> Result<(), StorageError> {
    if files.iter().any(|e| e.name == name) {
        return Err(StorageError::exists(location));
    }
    remove_stale(storage, files).await;
    Ok(())
}

/// Deletes the stale unfinished uploads among `entries` (the folder's raw listing) from
/// `storage`; returns their names. Best effort: one that cannot be deleted now is tried
/// again next time.
pub async fn remove_stale(storage: &dyn Storage, entries: &[Entry]) -> Vec<String> {
    let now = jiff::Timestamp::now();
    let mut removed = Vec::new();
    for entry in entries.iter().filter(|e| is_stale(e, now)) {
        match storage.delete(&entry.name).await {
            Ok(()) => {
                tracing::warn!(
                    "{}: removed {}, left unfinished by an interrupted run",
                    storage.backend(),
                    entry.name
                );
                removed.push(entry.name.clone());
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                "{}: could not remove the stale {}: {e}",
                storage.backend(),
                entry.name
            ),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, age_secs: i64) -> Entry {
        Entry {
            name: name.into(),
            size: 1,
            modified: jiff::Timestamp::now() - jiff::SignedDuration::from_secs(age_secs),
        }
    }

    #[test]
    fn partials_are_hidden_unique_and_stale_only_when_old() {
        let a = name("backup.tar.gz");
        let b = name("backup.tar.gz");
        assert!(is_partial(&a) && a.starts_with(".backup.tar.gz.") && a != b);
        assert!(!is_partial("backup.tar.gz"));
        assert!(!is_partial(&a.replace(".partial", ".part")));
        let now = jiff::Timestamp::now();
        // Any host's or container's partial: age decides, not who wrote it.
        assert!(is_stale(
            &entry(".x.tar.gz.other-host.42.partial", 2 * 3600),
            now
        ));
        assert!(!is_stale(
            &entry(".x.tar.gz.other-host.42.partial", 60),
            now
        ));
        assert!(!is_stale(&entry(&a, 59 * 60), now));
        assert!(is_stale(&entry(&a, 61 * 60), now));
        // Never a backup, however old.
        assert!(!is_stale(&entry("backup.tar.gz", 99 * 3600), now));
    }
}
