//! What a notification says: our default title and body, or the user's templates.
//!
//! Templates are files in the notifications folder (`NOTIFICATION_TEMPLATES_DIR`, by default
//! `/etc/dockervolumebackup/notifications.d`, every `*.*` file) in Go's template syntax, as
//! written for docker-volume-backup: `{{ define "title_success" }}...{{ end }}` and
//! `body_success`, `title_failure`, `body_failure` (and, ours, `title_warning` /
//! `body_warning`). They see the reference's data (`.Error`, `.Config`, `.Stats...`) and its
//! helpers (`formatTime`, `formatBytesDec`, `formatBytesBin`, `env`, `toJson`,
//! `toPrettyJson`). Secrets are not in the data, and `env` returns nothing for them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gtmpl::{Context, FuncError, Template, Value};
use jiff::Zoned;

use super::Message;
use crate::registry;
use crate::report::{Outcome, RunStats};

/// The template files of one schedule, read and checked when the configuration is loaded.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    /// (file name, text), in name order: a later file's `define` wins.
    files: Vec<(String, String)>,
}

impl Templates {
    /// Reads every `*.*` file in `dir` (none when `dir` does not exist) and checks that it
    /// parses. The error names the file.
    pub fn load(dir: &Path) -> Result<Templates, String> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Templates::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains('.'))
            })
            .collect();
        paths.sort();
        let mut files = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut t = engine();
            t.parse(text.as_str())
                .map_err(|e| format!("{}: not a valid template: {e}", path.display()))?;
            files.push((path.display().to_string(), text));
        }
        Ok(Templates { files })
    }

    fn parsed(&self) -> Template {
        let mut t = engine();
        for (_, text) in &self.files {
            // Checked at load time; a failure here cannot happen for the same text.
            let _ = t.parse(text.as_str());
        }
        t
    }

    /// The message for `stats`: the user's templates where they define one, our default
    /// text otherwise. A template that fails to render falls back to the default and says so.
    pub fn render(
        &self,
        stats: &RunStats,
        config_values: &[(&'static str, String)],
        log: &str,
    ) -> Message {
        let outcome = stats.outcome();
        let default = Message {
            title: default_title(stats, outcome),
            body: default_body(stats, outcome, log),
            outcome,
        };
        if self.files.is_empty() {
            return default;
        }
        let mut t = self.parsed();
        let data = Context::from(data(stats, config_values, log));
        // Templates written for the reference know no warnings: theirs is a success.
        let kind = match outcome {
            Outcome::Failure => "failure",
            Outcome::Warning if t.tree_set.contains_key("title_warning") => "warning",
            Outcome::Warning | Outcome::Success => "success",
        };
        let mut render = |part: &str, fallback: &str| -> String {
            let name = format!("{part}_{kind}");
            if !t.tree_set.contains_key(&name) {
                return fallback.to_owned();
            }
            t.name = name.clone();
            match t.render(&data) {
                Ok(text) => text,
                Err(e) => {
                    tracing::warn!(
                        "notification template {name} failed: {e}; sending the default text"
                    );
                    fallback.to_owned()
                }
            }
        };
        Message {
            title: render("title", &default.title),
            body: render("body", &default.body),
            outcome,
        }
    }
}

/// A template engine with the reference's helpers (and a `len` that also counts maps).
fn engine() -> Template {
    let mut t = Template::default();
    t.add_func("formatTime", format_time);
    t.add_func("formatBytesDec", |a| bytes_fn(a, true));
    t.add_func("formatBytesBin", |a| bytes_fn(a, false));
    t.add_func("env", env);
    t.add_func("toJson", |a| json_fn(a, false));
    t.add_func("toPrettyJson", |a| json_fn(a, true));
    t.add_func("len", len);
    t
}

fn one_arg<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [a] => Ok(a),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

/// Times are handed to templates as Go prints a `time.Time`; this gives RFC 3339 as the
/// reference's `formatTime` does.
fn format_time(args: &[Value]) -> Result<Value, FuncError> {
    let Value::String(s) = one_arg("formatTime", args)? else {
        return Err(FuncError::UnableToConvertFromValue);
    };
    let mut parts = s.split(' ');
    let (Some(date), Some(time), Some(offset)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(FuncError::Generic(format!(
            "formatTime: {s:?} is not a time"
        )));
    };
    let time = time.split('.').next().unwrap_or(time);
    let offset = if offset == "+0000" {
        "Z".to_owned()
    } else if offset.len() == 5 {
        format!("{}:{}", &offset[..3], &offset[3..])
    } else {
        offset.to_owned()
    };
    Ok(Value::from(format!("{date}T{time}{offset}")))
}

fn bytes_fn(args: &[Value], decimal: bool) -> Result<Value, FuncError> {
    let n = match one_arg("formatBytes", args)? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or(FuncError::UnableToConvertFromValue)?;
    Ok(Value::from(format_bytes(n, decimal)))
}

/// As the reference prints sizes: `512 B`, `1.5 kB` / `1.5 KiB`, one decimal.
pub fn format_bytes(b: u64, decimal: bool) -> String {
    let unit: u64 = if decimal { 1000 } else { 1024 };
    if b < unit {
        return format!("{b} B");
    }
    let (mut div, mut exp) = (unit, 0);
    let mut n = b / unit;
    while n >= unit {
        div *= unit;
        exp += 1;
        n /= unit;
    }
    let prefix = ['k', 'M', 'G', 'T', 'P', 'E'][exp];
    let prefix = if decimal {
        prefix.to_string()
    } else {
        format!("{}i", prefix.to_ascii_uppercase())
    };
    format!("{:.1} {prefix}B", b as f64 / div as f64)
}

/// Whether a variable must not reach a template: registry secrets, and anything named like
/// a credential.
fn secret_name(name: &str) -> bool {
    if registry::spec(name).is_some_and(|s| s.secret) {
        return true;
    }
    let upper = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSPHRASE",
        "SECRET",
        "TOKEN",
        "_KEY",
        "CREDENTIAL",
    ]
    .iter()
    .any(|w| upper.contains(w))
        || upper.ends_with("KEY")
}

fn env(args: &[Value]) -> Result<Value, FuncError> {
    let Value::String(name) = one_arg("env", args)? else {
        return Err(FuncError::UnableToConvertFromValue);
    };
    if secret_name(name) {
        return Ok(Value::from(""));
    }
    Ok(Value::from(std::env::var(name).unwrap_or_default()))
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::String(s) => s.clone().into(),
        Value::Number(n) => n
            .as_u64()
            .map(Into::into)
            .or_else(|| n.as_i64().map(Into::into))
            .or_else(|| n.as_f64().map(Into::into))
            .unwrap_or(serde_json::Value::Null),
        Value::Array(a) => a.iter().map(to_json).collect(),
        Value::Object(m) | Value::Map(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            keys.into_iter()
                .map(|k| (k.clone(), to_json(&m[k])))
                .collect::<serde_json::Map<_, _>>()
                .into()
        }
    }
}

fn json_fn(args: &[Value], pretty: bool) -> Result<Value, FuncError> {
    let v = to_json(one_arg("toJson", args)?);
    let text = if pretty {
        serde_json::to_string_pretty(&v)
    } else {
        serde_json::to_string(&v)
    };
    text.map(Value::from)
        .map_err(|e| FuncError::Generic(e.to_string()))
}

fn len(args: &[Value]) -> Result<Value, FuncError> {
    let n = match one_arg("len", args)? {
        Value::String(s) => s.len(),
        Value::Array(a) => a.len(),
        Value::Object(m) | Value::Map(m) => m.len(),
        Value::Nil | Value::NoValue => 0,
        _ => return Err(FuncError::Generic("len of a value without length".into())),
    };
    Ok(Value::from(n as u64))
}

/// `time.Time.String()`: `2006-01-02 15:04:05.999999999 -0700 MST`.
pub fn go_time(t: &Zoned) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S%.f %z %Z").to_string()
}

/// `time.Duration.String()`: `1h2m3.5s`, `250ms`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let trim = |whole: u128, frac: u128, digits: usize| {
        let f = format!("{frac:0digits$}");
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{f}")
        }
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim(nanos / 1_000, nanos % 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim(nanos / 1_000_000, nanos % 1_000_000, 6));
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let s = trim(u128::from(s), u128::from(d.subsec_nanos()), 9);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// `BACKUP_CRON_EXPRESSION` -> `BackupCronExpression`, the reference's field names.
fn go_field(var: &str) -> String {
    var.split('_')
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            let mut c = lower.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// The template data, shaped as the reference's: `.Error`, `.Config`, `.Stats`.
fn data(stats: &RunStats, config_values: &[(&'static str, String)], log: &str) -> Value {
    let mut cfg = HashMap::new();
    for (name, value) in config_values {
        if !secret_name(name) {
            cfg.insert(go_field(name), Value::from(value.as_str()));
        }
    }
    let size = stats
        .destinations
        .iter()
        .filter_map(|d| d.stored.as_ref().map(|s| s.bytes))
        .max()
        .unwrap_or(0);
    let name = stats.archive_name.clone().unwrap_or_default();
    let storages: HashMap<String, Value> = stats
        .destinations
        .iter()
        .map(|d| {
            let (total, pruned, errors) = d
                .prune
                .as_ref()
                .map_or((0, 0, 0), |p| (p.total, p.deleted.len(), p.errors.len()));
            (
                d.backend.reference_name().to_owned(),
                map(vec![
                    ("Total", Value::from(total as u64)),
                    ("Pruned", Value::from(pruned as u64)),
                    ("PruneErrors", Value::from(errors as u64)),
                    ("Error", d.error.clone().map_or(Value::Nil, Value::from)),
                ]),
            )
        })
        .collect();
    let stop_errors = stats
        .containers
        .iter()
        .filter(|c| c.error.is_some())
        .count() as u64;
    let stopped = stats.containers.len() as u64;
    let end = stats
        .started
        .checked_add(jiff::SignedDuration::try_from(stats.took).unwrap_or_default())
        .unwrap_or_else(|_| stats.started.clone());
    let stats_value = map(vec![
        ("StartTime", Value::from(go_time(&stats.started))),
        ("EndTime", Value::from(go_time(&end))),
        ("TookTime", Value::from(go_duration(stats.took))),
        ("LockedTime", Value::from(go_duration(stats.lock_wait))),
        ("LogOutput", Value::from(log)),
        ("Output", Value::from(log)),
        (
            "Containers",
            map(vec![
                ("All", Value::from(stopped)),
                ("ToStop", Value::from(stopped)),
                ("Stopped", Value::from(stopped - stop_errors)),
                ("StopErrors", Value::from(stop_errors)),
            ]),
        ),
        (
            "Services",
            map(vec![
                ("All", Value::from(0u64)),
                ("ToScale", Value::from(0u64)),
                ("Scaled", Value::from(0u64)),
                ("ScaleErrors", Value::from(0u64)),
            ]),
        ),
        (
            "BackupFile",
            map(vec![
                ("Name", Value::from(name.clone())),
                (
                    "FullPath",
                    Value::from(stats.archive_path.clone().unwrap_or_default()),
                ),
                ("Size", Value::from(size)),
            ]),
        ),
        ("Storages", Value::Map(storages)),
        (
            "Warnings",
            Value::Array(
                stats
                    .warnings
                    .iter()
                    .map(|w| Value::from(w.as_str()))
                    .collect(),
            ),
        ),
    ]);
    map(vec![
        ("Error", stats.failure().map_or(Value::Nil, Value::from)),
        ("Config", Value::Map(cfg)),
        ("Stats", stats_value),
        ("Schedule", Value::from(stats.schedule.as_str())),
    ])
}

fn rfc3339(t: &Zoned) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
        .replace("+00:00", "Z")
}

fn default_title(stats: &RunStats, outcome: Outcome) -> String {
    if stats.kind == crate::report::RunKind::Verify {
        let what = match outcome {
            Outcome::Failure => "Verify FAILED: a stored backup is damaged",
            Outcome::Warning => "Verify could not check every backup",
            Outcome::Success => "Backups verified",
        };
        return format!("{what}: {} at {}", stats.schedule, rfc3339(&stats.started));
    }
    let what = match outcome {
        Outcome::Failure if stats.succeeded() => "Backup stored, but not everywhere",
        Outcome::Failure => "Backup FAILED",
        Outcome::Warning => "Backup succeeded with warnings",
        Outcome::Success => "Backup succeeded",
    };
    format!("{what}: {} at {}", stats.schedule, rfc3339(&stats.started))
}

/// Lines of the log shown with a failure.
const LOG_TAIL: usize = 30;

fn default_body(stats: &RunStats, outcome: Outcome, log: &str) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "Schedule {:?} started {} and took {:.1}s (waited {:.1}s for the lock).",
        stats.schedule,
        rfc3339(&stats.started),
        stats.took.as_secs_f64(),
        stats.lock_wait.as_secs_f64()
    );
    if let Some(e) = &stats.error {
        let _ = writeln!(b, "\nError: {e}");
    }
    if let Some(name) = &stats.archive_name {
        let size = stats
            .destinations
            .iter()
            .filter_map(|d| d.stored.as_ref().map(|s| s.bytes))
            .max();
        let _ = write!(b, "\nArchive: {name}");
        if let Some(size) = size {
            let _ = write!(b, " ({})", format_bytes(size, false));
        }
        if let Some(a) = &stats.archive {
            let _ = write!(
                b,
                ", {} files, {} read",
                a.files,
                format_bytes(a.file_bytes, false)
            );
        }
        b.push('\n');
    }
    if !stats.destinations.is_empty() {
        b.push_str("\nDestinations:\n");
        for d in &stats.destinations {
            let _ = write!(b, "- {}: ", d.backend);
            match (&d.stored, &d.error) {
                (Some(s), _) => {
                    let _ = write!(b, "stored at {}", s.location);
                }
                (None, Some(e)) => {
                    let _ = write!(b, "FAILED: {e}");
                }
                (None, None) => b.push_str("not stored"),
            }
            if let Some(p) = &d.prune {
                let _ = write!(
                    b,
                    "; pruned {} of {} old backup(s)",
                    p.deleted.len(),
                    p.total
                );
                if !p.errors.is_empty() {
                    let _ = write!(b, ", {} deletion(s) failed", p.errors.len());
                }
                if p.refused.is_some() {
                    b.push_str(", pruning refused by the safety rule");
                }
            }
            if let Some(e) = &d.prune_error {
                let _ = write!(b, "; {e}");
            }
            b.push('\n');
        }
    }
    if !stats.containers.is_empty() {
        b.push_str("\nContainers stopped:\n");
        for c in &stats.containers {
            match (c.down_for, &c.error) {
                (_, Some(e)) => {
                    let _ = writeln!(b, "- {}: did not start again: {e}", c.name);
                }
                (Some(d), None) => {
                    let _ = writeln!(b, "- {}: down {:.1}s", c.name, d.as_secs_f64());
                }
                (None, None) => {
                    let _ = writeln!(b, "- {}: left stopped", c.name);
                }
            }
        }
    }
    if !stats.warnings.is_empty() {
        b.push_str("\nWarnings:\n");
        for w in &stats.warnings {
            let _ = writeln!(b, "- {w}");
        }
    }
    if outcome == Outcome::Failure && !log.is_empty() {
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
        b.push_str("\nLog:\n");
        for l in tail {
            let _ = writeln!(b, "{l}");
        }
    }
    b.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_print_as_the_reference_prints_them() {
        assert_eq!(format_bytes(999, true), "999 B");
        assert_eq!(format_bytes(1000, true), "1.0 kB");
        assert_eq!(format_bytes(1536, false), "1.5 KiB");
        assert_eq!(format_bytes(5 * 1024 * 1024 * 1024, false), "5.0 GiB");
        assert_eq!(format_bytes(123_456_789, true), "123.5 MB");
    }

    #[test]
    fn durations_and_times_print_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        let t: Zoned = "2026-11-22T14:31:33.5+01:00[Europe/Berlin]"
            .parse()
            .unwrap();
        let go = go_time(&t);
        assert_eq!(go, "2026-11-22 14:31:33.5 +0100 CET");
        assert_eq!(
            format_time(&[Value::from(go)]).unwrap().to_string(),
            "2026-11-22T14:31:33+01:00"
        );
        let utc = format_time(&[Value::from("2026-01-02 03:04:05 +0000 UTC")]).unwrap();
        assert_eq!(utc.to_string(), "2026-01-02T03:04:05Z");
    }

    #[test]
    fn field_names_follow_the_reference() {
        assert_eq!(go_field("BACKUP_CRON_EXPRESSION"), "BackupCronExpression");
        assert_eq!(go_field("AWS_S3_BUCKET_NAME"), "AwsS3BucketName");
    }

    #[test]
    fn secrets_are_not_reachable_through_env() {
        // SAFETY: tests in this module do not read these variables concurrently.
        unsafe {
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "s3cret");
            std::env::set_var("DUNNAGE_TEMPLATE_TEST_PLAIN", "visible");
        }
        assert_eq!(
            env(&[Value::from("AWS_SECRET_ACCESS_KEY")])
                .unwrap()
                .to_string(),
            ""
        );
        assert_eq!(
            env(&[Value::from("DUNNAGE_TEMPLATE_TEST_PLAIN")])
                .unwrap()
                .to_string(),
            "visible"
        );
        assert!(secret_name("MY_API_TOKEN") && secret_name("EMAIL_SMTP_PASSWORD"));
    }

    #[test]
    fn helpers_and_len_work_in_templates() {
        let mut t = engine();
        t.parse(
            r#"{{ define "x" }}{{ len .M }} {{ .N | formatBytesBin }} {{ toJson .M }}{{ end }}"#,
        )
        .unwrap();
        t.name = "x".into();
        let mut m = HashMap::new();
        m.insert("b".to_owned(), Value::from(2u64));
        m.insert("a".to_owned(), Value::from("x"));
        let data = map(vec![("M", Value::Map(m)), ("N", Value::from(2048u64))]);
        assert_eq!(
            t.render(&Context::from(data)).unwrap(),
            r#"2 2.0 KiB {"a":"x","b":2}"#
        );
    }
}
