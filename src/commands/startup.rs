//! An invalid configuration at start. The scheduler exits 2 and, in a container, restarts
//! and fails again: silence would look like a healthy sidecar. So when the schedule's own
//! notification settings are usable, its problems are sent there as a failure, once per
//! distinct set of problems (a marker file in `BACKUP_STATE_DIR` remembers it), not once
//! per restart. A valid start removes the marker, so the same mistake made again is
//! reported again.

use std::path::PathBuf;

use crate::config::{self, Config, Schedule, Vars};
use crate::notify::{self, Message, Outcome};

fn marker(state_dir: &std::path::Path, schedule: &str) -> PathBuf {
    state_dir.join(format!("invalid-config-{schedule}.notified"))
}

/// A fingerprint of the problems, so that a restart with the same ones sends nothing.
fn fingerprint(problems: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, problems.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends each invalid schedule's problems to its notification services, unless that same
/// set of problems was sent already.
pub async fn report_invalid(env: &Vars, only: Option<&str>) {
    let Ok(schedules) = config::schedules(env, only) else {
        return;
    };
    for Schedule { name, vars } in schedules {
        let Ok(vars) = vars else { continue };
        let Err(err) = Config::from_vars(&name, &vars) else {
            continue;
        };
        let Some(settings) = config::notification_settings(&vars) else {
            continue;
        };
        let problems = err.to_string();
        let marker = marker(&config::state_dir(&vars), &name);
        let digest = fingerprint(&problems);
        if std::fs::read_to_string(&marker).ok().as_deref() == Some(digest.as_str()) {
            tracing::info!("[{name}] these configuration problems were notified already");
            continue;
        }
        let msg = Message {
            title: format!("dunnage cannot run schedule {name}: invalid configuration"),
            body: format!("{problems}\n\nNo backup of this schedule runs until this is fixed."),
            outcome: Outcome::Failure,
        };
        let mut delivered = false;
        for (service, result) in notify::send_each(&settings, &msg).await {
            match result {
                Ok(()) => {
                    delivered = true;
                    tracing::info!("[{name}] configuration problems sent to {service}");
                }
                Err(e) => tracing::warn!("[{name}] could not notify {service}: {e}"),
            }
        }
        if delivered {
            let written = std::fs::create_dir_all(marker.parent().unwrap_or(&marker))
                .and_then(|()| std::fs::write(&marker, &digest));
            if let Err(e) = written {
                tracing::warn!(
                    "could not write {}: {e}; the next start notifies again",
                    marker.display()
                );
            }
        }
    }
}

/// The configuration is valid: forget what was notified about earlier ones.
pub fn forget_invalid(configs: &[Config]) {
    for c in configs {
        let _ = std::fs::remove_file(marker(&c.docker.state_dir, &c.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_problems_have_the_same_fingerprint() {
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert_ne!(fingerprint("a"), fingerprint("b"));
        assert_eq!(fingerprint("").len(), 64);
    }
}
