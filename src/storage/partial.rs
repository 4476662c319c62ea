//! Names of unfinished uploads: `.NAME.HOST.PID.partial`, hidden, in the destination folder.
//! The host name tells which machine or container an unfinished file belongs to, so a run
//! removes only what runs of its own host left behind.

/// The hidden name an archive has while it is being written.
pub fn name(name: &str) -> String {
    format!(".{name}.{}.{}.partial", host_tag(), std::process::id())
}

/// Whether `name` is an unfinished upload of a run on this host (of any process: call it
/// only while holding the run lock, when no run of this host is writing).
pub fn is_ours(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".partial") else {
        return false;
    };
    let host = format!(".{}.", host_tag());
    name.starts_with('.')
        && stem.rsplit_once('.').is_some_and(|(rest, pid)| {
            !pid.is_empty()
                && pid.chars().all(|c| c.is_ascii_digit())
                && format!("{rest}.").ends_with(&host)
        })
}

/// Whether `name` is any host's unfinished upload (never a backup).
pub fn is_partial(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".partial")
}

/// Deletes, from `storage`, the unfinished uploads of this host among `names` (best
/// effort: one that cannot be deleted now is tried again next time).
pub async fn remove_ours(storage: &dyn super::Storage, names: impl IntoIterator<Item = String>) {
    for name in names {
        if is_ours(&name) && storage.delete(&name).await.is_ok() {
            tracing::warn!(
                "{}: removed {name}, left unfinished by an interrupted run",
                storage.backend()
            );
        }
    }
}

/// This host's name as used in partial names (no dots, so names parse back).
fn host_tag() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let tag: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if tag.is_empty() { "host".into() } else { tag }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_partials_are_recognised_and_others_are_not() {
        let mine = name("backup.tar.gz");
        assert!(is_ours(&mine) && is_partial(&mine));
        let other = format!(".backup.tar.gz.{}.42.partial", "some-other-host");
        assert!(!is_ours(&other) && is_partial(&other));
        assert!(!is_ours("backup.tar.gz") && !is_partial("backup.tar.gz"));
        assert!(!is_ours(&mine.replace(".partial", ".part")));
    }
}
