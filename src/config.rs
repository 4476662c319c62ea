//! Configuration: environment variables -> a typed, validated [`Config`].
//!
//! Everything dunnage reads from its environment is read here, through [`Vars`], so the rest
//! of the code never calls `std::env`. Parsing never stops at the first bad value: every
//! problem is collected and reported at once in a [`ConfigError`], each naming the variable,
//! its value and what is allowed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use jiff::tz::TimeZone;

use crate::archive::Codec;
use crate::filename::{self, FilenameTemplate};

/// Where the archive walk starts when `BACKUP_SOURCES` is unset.
pub const DEFAULT_SOURCES: &str = "/backup";
/// The local archive folder when `BACKUP_ARCHIVE` is unset.
pub const DEFAULT_ARCHIVE: &str = "/archive";
/// The archive name when `BACKUP_FILENAME` is unset (same as docker-volume-backup).
pub const DEFAULT_FILENAME: &str = "backup-%Y-%m-%dT%H-%M-%S.{{ .Extension }}";
/// gzip level the reference uses; keeps archive sizes comparable after a swap.
pub const DEFAULT_GZIP_LEVEL: u32 = 5;
/// zstd's own default level.
pub const DEFAULT_ZSTD_LEVEL: u32 = 3;
/// Highest zstd level we accept: 20-22 ("ultra") need windows of 32-128 MiB per worker,
/// which would break the fixed memory budget.
pub const MAX_ZSTD_LEVEL: u32 = 19;

/// A snapshot of the variables dunnage was started with.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    map: BTreeMap<String, String>,
}

impl Vars {
    /// The process environment. Variables whose name or value is not UTF-8 are skipped.
    pub fn from_env() -> Self {
        Self::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            map: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }
}

/// One invalid setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable, e.g. `BACKUP_COMPRESSION`.
    pub var: String,
    /// The value as given (already redacted when the variable is secret).
    pub value: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: {}", self.var, self.value, self.message)
    }
}

/// Every problem found in one configuration.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// The resolved configuration of one backup schedule.
#[derive(Debug, Clone)]
pub struct Config {
    /// `BACKUP_SOURCES`: the tree to archive (absolute).
    pub sources: PathBuf,
    /// `BACKUP_ARCHIVE`: the local archive folder (used when it exists).
    pub archive_dir: PathBuf,
    /// `BACKUP_COMPRESSION`, `BACKUP_COMPRESSION_LEVEL`, `GZIP_PARALLELISM`.
    pub codec: Codec,
    /// `BACKUP_FILENAME` with `BACKUP_FILENAME_EXPAND` already applied.
    pub filename: FilenameTemplate,
    /// `BACKUP_EXCLUDE_REGEXP`, matched against each entry's absolute path.
    pub exclude: Option<regex::bytes::Regex>,
    /// `BACKUP_LATEST_SYMLINK`, after `$VAR` expansion when enabled.
    pub latest_symlink: Option<String>,
    /// `TZ`: the zone the archive name's date is rendered in.
    pub time_zone: TimeZone,
}

impl Config {
    /// Reads and validates the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_env())
    }

    /// Reads and validates the configuration from `vars`, reporting every problem at once.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let mut p = Parser {
            vars,
            problems: Vec::new(),
        };

        let sources = p.path("BACKUP_SOURCES", DEFAULT_SOURCES);
        let archive_dir = p.path("BACKUP_ARCHIVE", DEFAULT_ARCHIVE);
        let codec = p.codec();
        let expand = p.bool("BACKUP_FILENAME_EXPAND", false);
        let time_zone = p.time_zone();

        let filename = {
            let raw = p.string("BACKUP_FILENAME", DEFAULT_FILENAME);
            let raw = if expand { expand_vars(&raw, vars) } else { raw };
            match FilenameTemplate::new(&raw, codec.extension()) {
                Ok(t) => Some(t),
                Err(e) => {
                    p.problem("BACKUP_FILENAME", &raw, e.to_string());
                    None
                }
            }
        };

        let exclude = p.optional("BACKUP_EXCLUDE_REGEXP").and_then(|raw| {
            regex::bytes::Regex::new(&raw)
                .map_err(|e| {
                    p.problem(
                        "BACKUP_EXCLUDE_REGEXP",
                        &raw,
                        format!("not a valid regular expression: {e}"),
                    )
                })
                .ok()
        });

        let latest_symlink = p.optional("BACKUP_LATEST_SYMLINK").and_then(|raw| {
            let name = if expand { expand_vars(&raw, vars) } else { raw };
            match filename::check_plain_name(&name) {
                Ok(()) => Some(name),
                Err(why) => {
                    p.problem("BACKUP_LATEST_SYMLINK", &name, why);
                    None
                }
            }
        });

        match (filename, p.problems.is_empty()) {
            (Some(filename), true) => Ok(Config {
                sources,
                archive_dir,
                codec,
                filename,
                exclude,
                latest_symlink,
                time_zone,
            }),
            _ => Err(ConfigError {
                problems: p.problems,
            }),
        }
    }
}

/// Reads typed values, collecting problems instead of stopping at the first.
struct Parser<'a> {
    vars: &'a Vars,
    problems: Vec<Problem>,
}

impl Parser<'_> {
    fn problem(&mut self, var: &str, value: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            var: var.to_owned(),
            value: value.to_owned(),
            message: message.into(),
        });
    }

    /// Set-but-empty counts as set (the value is the empty string), as in the reference.
    fn string(&self, key: &str, default: &str) -> String {
        self.vars.get(key).unwrap_or(default).to_owned()
    }

    /// `None` when unset or empty.
    fn optional(&self, key: &str) -> Option<String> {
        self.vars
            .get(key)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    fn bool(&mut self, key: &str, default: bool) -> bool {
        let Some(raw) = self.vars.get(key) else {
            return default;
        };
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                self.problem(key, raw, "expected a boolean: true, false, 1 or 0");
                default
            }
        }
    }

    fn path(&mut self, key: &str, default: &str) -> PathBuf {
        let raw = self.string(key, default);
        if raw.is_empty() {
            self.problem(key, &raw, "expected a path, got an empty value");
            return PathBuf::from(default);
        }
        std::path::absolute(&raw).unwrap_or_else(|_| PathBuf::from(raw))
    }

    fn number(&mut self, key: &str, range: std::ops::RangeInclusive<u32>) -> Option<u32> {
        let raw = self.optional(key)?;
        match raw.trim().parse::<u32>() {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.problem(
                    key,
                    &raw,
                    format!(
                        "expected a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    fn codec(&mut self) -> Codec {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let kind = self.string("BACKUP_COMPRESSION", "gz");
        let threads = match self.number("GZIP_PARALLELISM", 0..=1024) {
            None | Some(0) => cores,
            Some(n) => n,
        };
        match kind.as_str() {
            "gz" => {
                let level = self
                    .number("BACKUP_COMPRESSION_LEVEL", 1..=9)
                    .unwrap_or(DEFAULT_GZIP_LEVEL);
                Codec::Gzip { level, threads }
            }
            "zst" => {
                let level = self
                    .number("BACKUP_COMPRESSION_LEVEL", 1..=MAX_ZSTD_LEVEL)
                    .unwrap_or(DEFAULT_ZSTD_LEVEL);
                Codec::Zstd {
                    level,
                    threads: cores,
                }
            }
            "none" => {
                if let Some(raw) = self.optional("BACKUP_COMPRESSION_LEVEL") {
                    self.problem(
                        "BACKUP_COMPRESSION_LEVEL",
                        &raw,
                        "a level has no effect with BACKUP_COMPRESSION=none; unset it",
                    );
                }
                Codec::None
            }
            _ => {
                self.problem("BACKUP_COMPRESSION", &kind, "expected one of gz, zst, none");
                Codec::None
            }
        }
    }

    fn time_zone(&mut self) -> TimeZone {
        match self.optional("TZ") {
            None => TimeZone::system(),
            Some(name) => {
                // POSIX allows a leading ':' before a zone name.
                let zone = name.strip_prefix(':').unwrap_or(&name);
                TimeZone::get(zone).unwrap_or_else(|_| {
                    self.problem(
                        "TZ",
                        &name,
                        "unknown time zone; expected an IANA name such as Europe/Berlin or UTC",
                    );
                    TimeZone::UTC
                })
            }
        }
    }
}

/// Expands `$VAR` and `${VAR}` against `vars`, like Go's `os.ExpandEnv` (which the reference
/// uses): unset variables become empty, a `$` not followed by a name is kept as it is.
pub fn expand_vars(input: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            if let Some(end) = braced.find('}') {
                out.push_str(vars.get(&braced[..end]).unwrap_or(""));
                rest = &braced[end + 1..];
                continue;
            }
        }
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if len == 0 {
            out.push('$');
        } else {
            out.push_str(vars.get(&after[..len]).unwrap_or(""));
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = Config::from_vars(&vars(&[("TZ", "UTC")])).unwrap();
        assert_eq!(c.sources, PathBuf::from("/backup"));
        assert_eq!(c.archive_dir, PathBuf::from("/archive"));
        assert!(matches!(c.codec, Codec::Gzip { level: 5, .. }));
        assert!(c.exclude.is_none());
        assert!(c.latest_symlink.is_none());
        assert_eq!(c.filename.extension(), "tar.gz");
    }

    #[test]
    fn gzip_parallelism_zero_means_all_cores() {
        let cores = std::thread::available_parallelism().unwrap().get() as u32;
        for (value, want) in [("0", cores), ("3", 3)] {
            let c = Config::from_vars(&vars(&[("GZIP_PARALLELISM", value)])).unwrap();
            assert!(
                matches!(c.codec, Codec::Gzip { threads, .. } if threads == want),
                "{value}"
            );
        }
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert!(matches!(c.codec, Codec::Gzip { threads, .. } if threads == cores));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::from_vars(&vars(&[
            ("BACKUP_COMPRESSION", "lz4"),
            ("BACKUP_FILENAME_EXPAND", "yes"),
            ("BACKUP_EXCLUDE_REGEXP", "(unclosed"),
            ("GZIP_PARALLELISM", "-1"),
            ("TZ", "Mars/Olympus"),
            ("BACKUP_LATEST_SYMLINK", "a/b"),
        ]))
        .unwrap_err();
        let vars: Vec<_> = err.problems.iter().map(|p| p.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "GZIP_PARALLELISM",
                "BACKUP_COMPRESSION",
                "BACKUP_FILENAME_EXPAND",
                "TZ",
                "BACKUP_EXCLUDE_REGEXP",
                "BACKUP_LATEST_SYMLINK"
            ]
        );
        let text = err.to_string();
        assert!(
            text.starts_with("invalid configuration (6 problems):"),
            "{text}"
        );
        assert!(
            text.contains(r#"BACKUP_COMPRESSION="lz4": expected one of gz, zst, none"#),
            "{text}"
        );
    }

    #[test]
    fn compression_levels_are_checked_per_codec() {
        let ok = |pairs: &[(&str, &str)]| Config::from_vars(&vars(pairs)).map(|c| c.codec);
        assert!(matches!(
            ok(&[
                ("BACKUP_COMPRESSION", "zst"),
                ("BACKUP_COMPRESSION_LEVEL", "19")
            ]),
            Ok(Codec::Zstd { level: 19, .. })
        ));
        assert!(matches!(
            ok(&[
                ("BACKUP_COMPRESSION", "gz"),
                ("BACKUP_COMPRESSION_LEVEL", "9")
            ]),
            Ok(Codec::Gzip { level: 9, .. })
        ));
        for bad in [
            [
                ("BACKUP_COMPRESSION", "gz"),
                ("BACKUP_COMPRESSION_LEVEL", "10"),
            ],
            [
                ("BACKUP_COMPRESSION", "zst"),
                ("BACKUP_COMPRESSION_LEVEL", "22"),
            ],
            [
                ("BACKUP_COMPRESSION", "zst"),
                ("BACKUP_COMPRESSION_LEVEL", "fast"),
            ],
            [
                ("BACKUP_COMPRESSION", "none"),
                ("BACKUP_COMPRESSION_LEVEL", "3"),
            ],
        ] {
            let err = ok(&bad).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{bad:?}");
            assert_eq!(err.problems[0].var, "BACKUP_COMPRESSION_LEVEL");
        }
    }

    #[test]
    fn booleans_accept_the_reference_spellings() {
        for (raw, want) in [("TRUE", true), ("1", true), ("false", false), ("0", false)] {
            let v = vars(&[
                ("BACKUP_FILENAME_EXPAND", raw),
                ("BACKUP_FILENAME", "$X.tar"),
            ]);
            let v = Vars::from_pairs(v.map.into_iter().chain([("X".into(), "x".into())]));
            let c = Config::from_vars(&v).unwrap();
            let name = c
                .filename
                .render(&jiff::Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC));
            assert_eq!(
                name.unwrap(),
                if want { "x.tar" } else { "$X.tar" },
                "{raw}"
            );
        }
    }

    #[test]
    fn empty_paths_are_refused() {
        let err = Config::from_vars(&vars(&[("BACKUP_SOURCES", "")])).unwrap_err();
        assert_eq!(err.problems[0].var, "BACKUP_SOURCES");
    }

    #[test]
    fn expansion_follows_go_expandenv() {
        let v = vars(&[("A", "1"), ("B_2", "two")]);
        assert_eq!(expand_vars("x-$A-${B_2}-$MISSING-$", &v), "x-1-two--$");
        assert_eq!(expand_vars("$A$A", &v), "11");
        assert_eq!(expand_vars("${A", &v), "${A");
        assert_eq!(expand_vars("100$ off", &v), "100$ off");
    }
}
