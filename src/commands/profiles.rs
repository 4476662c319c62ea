//! The schedules (profiles) the scheduler runs, kept current: conf.d is read again when it
//! changes (looked at every few seconds) and on SIGHUP, and hosting panels create, replace
//! and delete profiles through the API (each a conf.d file, written atomically after the
//! same validation as at start-up).
//!
//! A file that turns invalid after start-up does not stop anything: its schedule goes on
//! with the settings it had, and the problems are logged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::{self, Config, ConfigError, Problem, Schedule, Vars};
use crate::registry;
use crate::schedule::shutdown_requested;

/// How often conf.d is looked at for changes.
const POLL_EVERY: Duration = Duration::from_secs(3);

/// Variables a profile written through the API may not set: they are the whole process's
/// or would let one customer's profile reach into another's (locks, state).
const NOT_PER_PROFILE: [&str; 3] = ["BACKUP_CONF_DIR", "BACKUP_LOCK_FILE", "BACKUP_STATE_DIR"];

/// The current profiles.
pub struct Profiles {
    env: Vars,
    current: RwLock<Arc<Vec<Config>>>,
    version: watch::Sender<u64>,
    /// One writer at a time (the API's writes and reloads).
    writing: tokio::sync::Mutex<()>,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Files that are invalid now (their schedules keep their earlier settings).
    pub invalid: Vec<String>,
}

impl Profiles {
    pub fn new(env: Vars, configs: Vec<Config>) -> Arc<Profiles> {
        Arc::new(Profiles {
            env,
            current: RwLock::new(Arc::new(configs)),
            version: watch::Sender::new(0),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn all(&self) -> Arc<Vec<Config>> {
        self.current.read().expect("profiles").clone()
    }

    pub fn get(&self, name: &str) -> Option<Config> {
        self.all().iter().find(|c| c.name == name).cloned()
    }

    /// Changes each time the profiles change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Reads conf.d again; valid files replace what was there, invalid ones keep theirs.
    pub async fn reload(&self) -> Changes {
        let _writing = self.writing.lock().await;
        self.reload_locked()
    }

    fn reload_locked(&self) -> Changes {
        let schedules = match config::schedules(&self.env, None) {
            Ok(s) => s,
            // Every profile deleted: nothing to run (not an error, unlike at start-up).
            Err(_) if config::conf_dir(&self.env).is_some_and(|d| is_empty(&d)) => Vec::new(),
            Err(e) => {
                tracing::error!("conf.d not reloaded: {e}");
                return Changes::default();
            }
        };
        let old = self.all();
        let mut next = Vec::new();
        let mut changes = Changes::default();
        for Schedule { name, vars } in schedules {
            if let Ok(vars) = &vars {
                crate::secrets::register(config::secret_values(vars).iter().map(String::as_str));
            }
            let before = old.iter().find(|c| c.name == name);
            match vars.and_then(|vars| Config::from_vars(&name, &vars)) {
                Ok(config) => {
                    match before {
                        None => changes.added.push(name),
                        Some(b) if b.vars != config.vars => changes.changed.push(name),
                        Some(_) => {}
                    }
                    next.push(config);
                }
                Err(e) => {
                    tracing::error!(
                        "[{name}] {e}\n(the schedule keeps {})",
                        if before.is_some() {
                            "its earlier settings"
                        } else {
                            "off until the file is valid"
                        }
                    );
                    changes.invalid.push(name);
                    next.extend(before.cloned());
                }
            }
        }
        changes.removed = old
            .iter()
            .filter(|o| !next.iter().any(|n| n.name == o.name))
            .map(|o| o.name.clone())
            .collect();
        if changes.added.len() + changes.changed.len() + changes.removed.len() > 0 {
            tracing::info!(
                "conf.d reloaded: added {:?}, changed {:?}, removed {:?}",
                changes.added,
                changes.changed,
                changes.removed
            );
            *self.current.write().expect("profiles") = Arc::new(next);
            self.version.send_modify(|v| *v += 1);
        }
        changes
    }

    /// Creates or replaces profile `name` with `settings` (a conf.d file's variables):
    /// validated as at start-up, every problem at once, nothing written when any. True when
    /// it was created.
    pub async fn put(
        &self,
        name: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<bool, Vec<Problem>> {
        let _writing = self.writing.lock().await;
        let dir = self.writable_dir()?;
        let mut problems = Vec::new();
        if let Err(p) = check_name(name) {
            problems.push(p);
        }
        for (key, value) in settings {
            if let Some(p) = check_setting(key, value) {
                problems.push(p);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let written = std::fs::write(&tmp, conf_text(settings))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(vec![Problem::new(
                "BACKUP_CONF_DIR",
                &dir.display().to_string(),
                format!("cannot write {}: {e}", tmp.display()),
            )]);
        }
        let validated = self
            .env
            .with_conf_file(&tmp)
            .map_err(ConfigError::one)
            .and_then(|vars| Config::from_vars(name, &vars));
        if let Err(e) = validated {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.problems);
        }
        let created = !path.exists();
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(vec![Problem::new(
                "BACKUP_CONF_DIR",
                &dir.display().to_string(),
                format!("cannot write {}: {e}", path.display()),
            )]);
        }
        sync_dir(&dir);
        self.reload_locked();
        Ok(created)
    }

    /// Deletes profile `name`'s conf.d file; false when there is none. Its backups stay.
    pub async fn delete(&self, name: &str) -> Result<bool, Vec<Problem>> {
        let _writing = self.writing.lock().await;
        let dir = self.writable_dir()?;
        check_name(name).map_err(|p| vec![p])?;
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {
                sync_dir(&dir);
                self.reload_locked();
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(vec![Problem::new(
                "BACKUP_CONF_DIR",
                &dir.display().to_string(),
                format!("cannot delete {name}: {e}"),
            )]),
        }
    }

    fn writable_dir(&self) -> Result<PathBuf, Vec<Problem>> {
        config::conf_dir(&self.env).ok_or_else(|| {
            vec![Problem::new(
                "BACKUP_CONF_DIR",
                self.env.get("BACKUP_CONF_DIR").unwrap_or_default(),
                "profiles are conf.d files, and there is no conf.d folder: the environment's \
                 one schedule cannot be changed through the API (mount a conf.d folder)",
            )]
        })
    }

    /// Reloads whenever conf.d changes (looked at every few seconds) or SIGHUP arrives,
    /// until `shutdown`.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut seen = self.fingerprint();
        loop {
            let sighup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sighup => tracing::info!("SIGHUP: reading conf.d again"),
                () = tokio::time::sleep(POLL_EVERY) => {
                    let now = self.fingerprint();
                    if now == seen {
                        continue;
                    }
                }
                () = shutdown_requested(&mut shutdown) => return,
            }
            seen = self.fingerprint();
            self.reload().await;
        }
    }

    /// Names, sizes and times of conf.d's files: what changes when a file does.
    fn fingerprint(&self) -> Vec<(String, u64, Option<SystemTime>)> {
        let Some(dir) = config::conf_dir(&self.env) else {
            return Vec::new();
        };
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let meta = std::fs::metadata(e.path()).ok()?;
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    meta.len(),
                    meta.modified().ok(),
                ))
            })
            .collect();
        out.sort();
        out
    }
}

fn is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .all(|e| e.file_name().to_string_lossy().starts_with('.') || !e.path().is_file())
    })
}

fn sync_dir(dir: &std::path::Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!("could not sync {}: {e}", dir.display());
    }
}

/// A profile name is a conf.d file name: letters, digits, `.`, `_`, `-`, not hidden.
fn check_name(name: &str) -> Result<(), Problem> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if fine {
        Ok(())
    } else {
        Err(Problem::new(
            "name",
            name,
            "a profile name is 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'",
        ))
    }
}

/// A variable the API may set in a profile, with a value a conf.d file keeps as given.
fn check_setting(key: &str, value: &str) -> Option<Problem> {
    let base = key.strip_suffix("_FILE").unwrap_or(key);
    let known = registry::spec(key).or(registry::spec(base));
    let Some(spec) = known else {
        let hint = registry::typo_of(key)
            .map(|s| format!("; did you mean {}?", s.name))
            .unwrap_or_default();
        // A misspelt secret's value is a secret too: an unknown variable's is never shown.
        let mut p = Problem::new(key, "", format!("unknown variable{hint}"));
        p.value = "(not shown)".into();
        return Some(p);
    };
    if NOT_PER_PROFILE.contains(&spec.name) || spec.name.starts_with("DUNNAGE_") {
        return Some(Problem::new(
            key,
            value,
            "set for the whole server, not per profile",
        ));
    }
    // conf.d files expand `$NAME`; a value that would change is refused, not mangled.
    if config::expand_vars(value, &Vars::from_pairs::<&str, &str>([])) != value {
        return Some(Problem::new(
            spec.name,
            value,
            "contains `$` followed by a name or `{`, which conf.d files expand; this value \
             cannot be stored as given",
        ));
    }
    None
}

/// The settings as conf.d lines, each value double-quoted with `\`, `"`, newlines and tabs
/// escaped (as conf.d files are read back).
fn conf_text(settings: &BTreeMap<String, String>) -> String {
    let mut text = String::from("# written through the dunnage API\n");
    for (key, value) in settings {
        let mut quoted = String::with_capacity(value.len() + 2);
        for c in value.chars() {
            match c {
                '\\' => quoted.push_str("\\\\"),
                '"' => quoted.push_str("\\\""),
                '\n' => quoted.push_str("\\n"),
                '\t' => quoted.push_str("\\t"),
                c => quoted.push(c),
            }
        }
        text.push_str(&format!("{key}=\"{quoted}\"\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_the_round_trip_through_a_conf_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings: BTreeMap<String, String> = [
            ("BACKUP_FILENAME", "a \"quoted\" # not a comment"),
            ("NOTIFICATION_URLS", "back\\slash\tand\nnewline"),
            ("AWS_SECRET_ACCESS_KEY", "  spaces kept  "),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let path = dir.path().join("p");
        std::fs::write(&path, conf_text(&settings)).unwrap();
        let vars = Vars::from_pairs::<&str, &str>([])
            .with_conf_file(&path)
            .unwrap();
        for (k, v) in &settings {
            assert_eq!(vars.get(k), Some(v.as_str()), "{k}");
        }
    }

    #[test]
    fn names_keys_and_dollars_are_checked() {
        assert!(check_name("shop-1.env").is_ok());
        for bad in ["", ".hidden", "a/b", "../x", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_setting("BACKUP_CRON_EXPRESSION", "@daily").is_none());
        assert!(check_setting("AWS_SECRET_ACCESS_KEY_FILE", "/run/secrets/k").is_none());
        let p = check_setting("BACKUP_CRON_EXPRESION", "x").unwrap();
        assert!(p.message.contains("BACKUP_CRON_EXPRESSION"), "{p}");
        let p = check_setting("AWS_SECRET_ACCES_KEY", "leak-me-123").unwrap();
        assert!(!p.to_string().contains("leak-me-123"), "{p}");
        for process_wide in [
            "BACKUP_LOCK_FILE",
            "DUNNAGE_CONCURRENCY",
            "BACKUP_STATE_DIR",
        ] {
            assert!(check_setting(process_wide, "x").is_some(), "{process_wide}");
        }
        let p = check_setting("AWS_SECRET_ACCESS_KEY", "pa$word").unwrap();
        assert_eq!(p.value, "(redacted)");
        assert!(check_setting("AWS_SECRET_ACCESS_KEY", "costs 5$").is_none());
    }
}
