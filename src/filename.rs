//! Archive names: `BACKUP_FILENAME` rendered the way docker-volume-backup renders it.
//!
//! Order: the `{{ .Extension }}` template first, then `$VAR` expansion (done by `config` when
//! `BACKUP_FILENAME_EXPAND=true`), then strftime verbs with the run's start time in `TZ`.

use std::sync::LazyLock;

use jiff::Zoned;
use regex::Regex;

/// A template action such as `{{ .Extension }}` or `{{- .Extension -}}`.
static ACTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{-?\s*(.*?)\s*-?\}\}").expect("static regex"));

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilenameError {
    #[error("unsupported template action {action}; the only one available is {{{{ .Extension }}}}")]
    UnknownAction { action: String },
    #[error("invalid strftime pattern: {0}")]
    Strftime(String),
    #[error("{0}")]
    NotPlain(String),
}

/// A validated archive-name template whose extension is already filled in.
#[derive(Debug, Clone)]
pub struct FilenameTemplate {
    /// The template as configured (after `$VAR` expansion), for [`Self::name_pattern`].
    raw: String,
    pattern: String,
    extension: &'static str,
}

impl FilenameTemplate {
    /// Fills in `{{ .Extension }}`, appends `suffix` (`.age` for encrypted archives, as the
    /// reference) and checks that the result renders to a plain file name.
    pub fn new(
        raw: &str,
        extension: &'static str,
        suffix: &'static str,
    ) -> Result<Self, FilenameError> {
        let mut unknown = None;
        let pattern = ACTION.replace_all(raw, |caps: &regex::Captures<'_>| {
            if &caps[1] == ".Extension" {
                extension.to_owned()
            } else {
                unknown.get_or_insert_with(|| caps[0].to_owned());
                String::new()
            }
        });
        if let Some(action) = unknown {
            return Err(FilenameError::UnknownAction { action });
        }
        let template = Self {
            raw: raw.to_owned(),
            pattern: format!("{pattern}{suffix}"),
            extension,
        };
        // Render once now so a bad pattern is a configuration error, not a failed run.
        let probe = jiff::Timestamp::UNIX_EPOCH.to_zoned(jiff::tz::TimeZone::UTC);
        template.render(&probe)?;
        Ok(template)
    }

    /// The archive name for a run that started at `at`.
    pub fn render(&self, at: &Zoned) -> Result<String, FilenameError> {
        let name = jiff::fmt::strtime::format(&self.pattern, at)
            .map_err(|e| FilenameError::Strftime(e.to_string()))?;
        check_plain_name(&name).map_err(FilenameError::NotPlain)?;
        Ok(name)
    }

    /// `tar`, `tar.gz` or `tar.zst`.
    pub fn extension(&self) -> &'static str {
        self.extension
    }

    /// A regular expression matching every name this template renders, whatever the time,
    /// the compression (`{{ .Extension }}` matches each codec's extension) and the
    /// encryption suffix: backups made before the compression or encryption was changed
    /// are still this schedule's backups.
    pub fn name_pattern(&self) -> Regex {
        let mut re = String::from("^");
        let mut rest = self.raw.as_str();
        while let Some(found) = ACTION.find(rest) {
            strftime_pattern(&rest[..found.start()], &mut re);
            re.push_str(r"(?:tar|tar\.gz|tar\.zst)");
            rest = &rest[found.end()..];
        }
        strftime_pattern(rest, &mut re);
        re.push_str(r"(?:\.age|\.gpg)?$");
        Regex::new(&re).expect("escaped literals and fixed classes form a valid regex")
    }
}

/// Appends to `re` a pattern for what the strftime `text` renders to: literals escaped,
/// numeric verbs as digits (with the padding flags' spaces and signs), others as any text.
fn strftime_pattern(text: &str, re: &mut String) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
            continue;
        }
        // Flags, width and the `:` of `%:z`, then the verb.
        while let Some(&f) = chars.peek() {
            if matches!(f, '-' | '_' | '0' | '^' | '#' | ':') || f.is_ascii_digit() {
                chars.next();
            } else {
                break;
            }
        }
        match chars.next() {
            Some('%') => re.push('%'),
            Some(
                'Y' | 'C' | 'G' | 'g' | 'y' | 'm' | 'd' | 'e' | 'H' | 'I' | 'k' | 'l' | 'M' | 'S'
                | 'j' | 'U' | 'W' | 'V' | 'u' | 'w' | 's' | 'f' | 'N' | 'q',
            ) => re.push_str(r"[ +-]?[ \d]*\d"),
            Some('z') => re.push_str(r"[+-][\d:]+"),
            Some('F') => re.push_str(r"[+-]?\d+-\d+-\d+"),
            Some('T') => re.push_str(r"\d+:\d+:\d+"),
            Some('R') => re.push_str(r"\d+:\d+"),
            _ => re.push_str(".+?"),
        }
    }
}

/// A name that can live directly inside the archive folder: not empty, no `/`, no NUL, not
/// `.` or `..`, and not hidden (hidden names are reserved for in-progress uploads).
/// The longest archive name: 255 bytes (most file systems' limit) less what the unfinished
/// upload's name (`.NAME.PID-RANDOM.partial`) adds.
pub const MAX_NAME_BYTES: usize = 225;

pub fn check_plain_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("renders to an empty name".into())
    } else if name.len() > MAX_NAME_BYTES {
        Err(format!(
            "renders to {} bytes; at most {MAX_NAME_BYTES} (file systems allow 255, and the \
             unfinished upload's name adds up to 30)",
            name.len()
        ))
    } else if name.chars().any(char::is_control) {
        Err(format!(
            "renders to {name:?}, which holds a control character"
        ))
    } else if name.contains('/') || name.contains('\0') {
        Err(format!(
            "renders to {name:?}, which is not a plain file name (no '/' allowed)"
        ))
    } else if name.starts_with('.') {
        Err(format!(
            "renders to {name:?}; names starting with '.' are reserved for unfinished uploads"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str, tz: &str) -> Zoned {
        format!("{s}[{tz}]").parse().unwrap()
    }

    #[test]
    fn default_name_matches_the_reference() {
        let t = FilenameTemplate::new(crate::config::DEFAULT_FILENAME, "tar.gz", "").unwrap();
        let name = t.render(&at("2026-11-22T09:05:07", "UTC")).unwrap();
        assert_eq!(name, "backup-2026-11-22T09-05-07.tar.gz");
    }

    #[test]
    fn template_spacing_variants_all_work() {
        for raw in [
            "x.{{ .Extension }}",
            "x.{{.Extension}}",
            "x.{{- .Extension -}}",
            "x.{{  .Extension  }}",
        ] {
            let t = FilenameTemplate::new(raw, "tar.zst", "").unwrap();
            assert_eq!(
                t.render(&at("2026-01-01T00:00:00", "UTC")).unwrap(),
                "x.tar.zst"
            );
        }
    }

    #[test]
    fn time_is_rendered_in_the_runs_zone() {
        let t = FilenameTemplate::new("%Y%m%d-%H%M%z.tar", "tar", "").unwrap();
        let berlin = at("2026-07-01T23:30:00", "Europe/Berlin");
        assert_eq!(t.render(&berlin).unwrap(), "20260701-2330+0200.tar");
        let ny = berlin.with_time_zone(jiff::tz::TimeZone::get("America/New_York").unwrap());
        assert_eq!(t.render(&ny).unwrap(), "20260701-1730-0400.tar");
    }

    #[test]
    fn the_name_pattern_matches_every_rendering_and_nothing_else() {
        let t = FilenameTemplate::new(crate::config::DEFAULT_FILENAME, "tar.gz", "").unwrap();
        let re = t.name_pattern();
        for name in [
            "backup-2026-11-22T09-05-07.tar.gz",
            "backup-2026-11-22T09-05-07.tar.zst",
            "backup-1999-01-01T00-00-00.tar.gz.age",
            "backup-2026-11-22T09-05-07.tar.gpg",
        ] {
            assert!(re.is_match(name), "{name} {re}");
        }
        for name in [
            "notes.txt",
            "backup-2026-11-22T09-05-07.tar.gz.sha256",
            "backup-2026-11-22T09-05-07.tar.gz.001",
            "backup-latest.tar.gz",
            "xbackup-2026-11-22T09-05-07.tar.gz",
        ] {
            assert!(!re.is_match(name), "{name} {re}");
        }
        let t = FilenameTemplate::new("db-%-d.%b.%Y (%:z)+{{ .Extension }}", "tar", "").unwrap();
        let re = t.name_pattern();
        let name = t
            .render(&at("2026-07-01T23:30:00", "Europe/Berlin"))
            .unwrap();
        assert!(re.is_match(&name), "{name} {re}");
        assert!(!re.is_match("db-1.Jul.2026 (+02:00)xtar"), "{re}");
    }

    #[test]
    fn bad_templates_are_rejected_with_the_reason() {
        let e = FilenameTemplate::new("x.{{ .Ext }}", "tar", "").unwrap_err();
        assert!(e.to_string().contains("{{ .Ext }}"), "{e}");
        assert!(matches!(
            FilenameTemplate::new("x-%i.tar", "tar", ""),
            Err(FilenameError::Strftime(_))
        ));
        assert!(matches!(
            FilenameTemplate::new("dir/x.tar", "tar", ""),
            Err(FilenameError::NotPlain(_))
        ));
        assert!(matches!(
            FilenameTemplate::new("100%%", "tar", "").and_then(|t| t.render(&at(
                "2026-01-01T00:00:00",
                "UTC"
            ))),
            Ok(ref n) if n == "100%"
        ));
        assert!(FilenameTemplate::new(".hidden.tar", "tar", "").is_err());
        assert!(matches!(
            FilenameTemplate::new("50%", "tar", ""),
            Err(FilenameError::Strftime(_))
        ));
        assert!(FilenameTemplate::new("", "tar", "").is_err());
    }
}
