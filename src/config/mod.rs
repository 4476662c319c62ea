//! Configuration: environment variables and conf.d files -> typed, validated [`Config`]s.
//!
//! Everything dunnage reads from its environment is read here, by names listed in
//! [`registry`], so the rest of the code never calls `std::env`. Parsing never stops at the
//! first bad value: every problem is collected and reported at once in a [`ConfigError`],
//! each naming the variable, its value (redacted when secret) and what is allowed.

mod encryption;
mod notifications;
mod remote;
mod vars;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::tz::TimeZone;

use crate::archive::{Codec, Encryption};
use crate::catalog::Selector;
use crate::docker::DockerConfig;
use crate::filename::{self, FilenameTemplate};
use crate::net::RetryPolicy;
use crate::prune::Policy;
use crate::registry;
use crate::resources;
use crate::schedule::cron::CronSchedule;
use crate::spool::SpoolMode;
use crate::storage::{
    AzureConfig, Backend, DropboxConfig, GoogleDriveConfig, S3Config, SftpConfig, WebDavConfig,
};
pub use vars::{Origin, Vars, expand_vars};

/// The archive name when `BACKUP_FILENAME` is unset (same as docker-volume-backup).
pub const DEFAULT_FILENAME: &str = "backup-%Y-%m-%dT%H-%M-%S.{{ .Extension }}";
/// gzip level the reference uses; keeps archive sizes comparable after a swap.
pub const DEFAULT_GZIP_LEVEL: u32 = 5;
/// zstd's own default level.
pub const DEFAULT_ZSTD_LEVEL: u32 = 3;
/// A byte size: a number with an optional unit (see `BACKUP_SPLIT_SIZE`).
pub(crate) fn parse_size(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let digits = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let number: u64 = raw[..digits].parse().ok()?;
    let factor: u64 = match raw[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Highest zstd level we accept: 20-22 ("ultra") need windows of 32-128 MiB per worker,
/// which would break the fixed memory budget.
pub const MAX_ZSTD_LEVEL: u32 = 19;
/// The schedule name used when there is no conf.d folder.
pub const DEFAULT_SCHEDULE: &str = "default";

/// One invalid setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable, e.g. `BACKUP_COMPRESSION` (or a conf.d file and line).
    pub var: String,
    /// The value as given, `(redacted)` when the variable is secret.
    pub value: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl Problem {
    /// A problem with `var`; the value is redacted when `var` is a secret.
    pub fn new(var: &str, value: &str, message: impl Into<String>) -> Self {
        let secret = registry::spec(var).is_some_and(|s| s.secret);
        Self {
            var: var.to_owned(),
            value: if secret {
                "(redacted)".into()
            } else {
                value.to_owned()
            },
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() && self.var.contains('/') {
            write!(f, "{}: {}", self.var, self.message)
        } else {
            write!(f, "{}={:?}: {}", self.var, self.value, self.message)
        }
    }
}

/// Every problem found, in one or more schedules.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
    /// Warnings found on the way (an unknown variable is often why a setting is missing).
    pub warnings: Vec<String>,
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

impl ConfigError {
    pub fn one(problem: Problem) -> Self {
        Self {
            problems: vec![problem],
            warnings: Vec::new(),
        }
    }
}

/// The resolved configuration of one backup schedule.
#[derive(Debug, Clone)]
pub struct Config {
    /// `default`, or the conf.d file name.
    pub name: String,
    /// The settings it was built from, with their origins (for print-config).
    pub vars: Vars,
    /// `BACKUP_CRON_EXPRESSION`.
    pub cron: CronSchedule,
    /// `BACKUP_JITTER`: random delay before each scheduled run.
    pub jitter: Duration,
    /// `LOCK_TIMEOUT`: how long a run waits for another one to finish.
    pub lock_timeout: Duration,
    /// `BACKUP_LOCK_FILE`.
    pub lock_file: PathBuf,
    /// `DUNNAGE_CONCURRENCY`: how many runs of different schedules may go on at once.
    pub concurrency: usize,
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
    /// `TZ`: the zone for the archive name, the cron expression and retention days.
    pub time_zone: TimeZone,
    /// `BACKUP_RETENTION_*`, `BACKUP_PRUNING_LEEWAY`, `BACKUP_PRUNING_PREFIX`.
    pub retention: Policy,
    /// `BACKUP_SKIP_BACKENDS_FROM_PRUNE`.
    pub skip_prune: Vec<Backend>,
    /// `DOCKER_HOST`, the stop labels, `BACKUP_STOP_TIMEOUT`, `BACKUP_STATE_DIR`.
    pub docker: DockerConfig,
    /// `AGE_*` (and later `GPG_*`): how archives are encrypted.
    pub encryption: Encryption,
    /// What opens encrypted backups for restore and verify.
    pub keys: crate::archive::read::Keys,
    /// `BACKUP_PROGRESS_INTERVAL`: how often a running backup logs its progress.
    pub progress_interval: Option<Duration>,
    /// `BACKUP_VERIFY_CRON_EXPRESSION` and `BACKUP_VERIFY_CRON_LEVEL`: when and how every
    /// stored backup of this schedule is verified, apart from backup runs.
    pub verify_cron: Option<(CronSchedule, crate::manifest::Level)>,
    /// `BACKUP_VERIFY_LEVEL`: how each stored backup is verified after the run stored it.
    pub verify_level: Option<crate::manifest::Level>,
    /// `BACKUP_SPLIT_SIZE`: archives are stored as parts of this many bytes.
    pub split: Option<u64>,
    /// `BACKUP_UPLOAD_LIMIT`: bytes per second into each destination.
    pub upload_limit: Option<u64>,
    /// `BACKUP_SPOOL`.
    pub spool: SpoolMode,
    /// `BACKUP_SPOOL_DIR`.
    pub spool_dir: PathBuf,
    /// `BACKUP_RETRY_TIMEOUT`: how requests to network destinations are retried.
    pub retry: RetryPolicy,
    /// `AWS_*`: the S3 destination, when `AWS_S3_BUCKET_NAME` is set.
    pub s3: Option<S3Config>,
    /// `AZURE_STORAGE_*`: the Azure destination, when an account or connection string is set.
    pub azure: Option<AzureConfig>,
    /// `WEBDAV_*`: the WebDAV destination, when `WEBDAV_URL` is set.
    pub webdav: Option<WebDavConfig>,
    /// `SSH_*`: the SFTP destination, when `SSH_HOST_NAME` is set.
    pub sftp: Option<SftpConfig>,
    /// `DROPBOX_*`: the Dropbox destination, when its credentials are set.
    pub dropbox: Option<DropboxConfig>,
    /// `GOOGLE_DRIVE_*`: the Google Drive destination, when its credentials are set.
    pub gdrive: Option<GoogleDriveConfig>,
    /// `BACKUP_HEALTHCHECK_URL`: where health pings go (secret: the URL is the key).
    pub healthcheck: Option<reqwest::Url>,
    /// `NOTIFICATION_*` and the deprecated `EMAIL_*`: who hears about runs, when URLs are set.
    pub notifications: Option<crate::notify::Settings>,
    /// What is wrong with the notification settings (a bad URL, an unknown service, ...):
    /// warnings for a run, errors for `dunnage check`. Values redacted.
    pub notification_problems: Vec<String>,
    /// Things worth telling the user that do not stop the run.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates one schedule from `vars`, reporting every problem at once.
    pub fn from_vars(name: &str, vars: &Vars) -> Result<Self, ConfigError> {
        let mut vars = vars.clone();
        let mut problems = Vec::new();
        vars.resolve_files(&mut problems);
        let mut p = Parser {
            vars: &vars,
            problems,
            warnings: Vec::new(),
        };
        p.check_names_and_features();

        let cron = p.cron();
        let jitter = p.duration("BACKUP_JITTER");
        let lock_timeout = p.duration("LOCK_TIMEOUT");
        let lock_file = p.path("BACKUP_LOCK_FILE");
        let concurrency = p.number("DUNNAGE_CONCURRENCY", 1..=256).unwrap_or(1) as usize;
        let sources = p.path("BACKUP_SOURCES");
        let archive_dir = p.path("BACKUP_ARCHIVE");
        let codec = p.codec();
        let expand = p.bool("BACKUP_FILENAME_EXPAND");
        p.deprecated_snapshot();
        let time_zone = p.time_zone();

        let encryption = p.encryption();
        let keys = p.keys();
        let filename = p.filename(expand, codec.extension(), encryption.suffix());
        let exclude = p.exclude();
        let latest_symlink = p.latest_symlink(expand);

        let mut retention = p.retention(expand);
        retention.select.pattern = filename.as_ref().map(FilenameTemplate::name_pattern);
        let skip_prune = p.skip_prune();
        let retry = p.retry();
        let mut docker = p.docker(retry.named(format!("[{name}] Docker")));
        docker.schedule = name.to_owned();
        let split = p.split_size();
        let upload_limit = p.upload_limit();
        let verify_level = p.verify_level();
        let verify_cron = p.verify_cron();
        let spool = p.spool();
        let spool_dir = p.path("BACKUP_SPOOL_DIR");
        let progress_interval =
            Some(p.duration("BACKUP_PROGRESS_INTERVAL")).filter(|d| !d.is_zero());
        let s3 = p.s3();
        let azure = p.azure();
        let webdav = p.webdav();
        let sftp = p.sftp(&docker.state_dir);
        let dropbox = p.dropbox();
        let gdrive = p.gdrive();
        let healthcheck = p.healthcheck();
        let (notifications, notification_problems) = p.notifications();

        let Parser {
            problems, warnings, ..
        } = p;
        match (cron, filename, problems.is_empty()) {
            (Some(cron), Some(filename), true) => Ok(Config {
                name: name.to_owned(),
                vars: vars.clone(),
                cron,
                jitter,
                lock_timeout,
                lock_file,
                concurrency,
                sources,
                archive_dir,
                codec,
                filename,
                exclude,
                latest_symlink,
                time_zone,
                retention,
                skip_prune,
                docker,
                encryption,
                progress_interval,
                split,
                upload_limit,
                verify_level,
                verify_cron,
                keys,
                spool,
                spool_dir,
                retry,
                s3,
                azure,
                webdav,
                sftp,
                dropbox,
                gdrive,
                healthcheck,
                notifications,
                notification_problems,
                warnings,
            }),
            _ => Err(ConfigError { problems, warnings }),
        }
    }

    /// The destinations this schedule stores to, for [`crate::storage::open_all`].
    pub fn targets(&self) -> crate::storage::Targets<'_> {
        crate::storage::Targets {
            schedule: &self.name,
            archive_dir: &self.archive_dir,
            s3: self.s3.as_ref(),
            azure: self.azure.as_ref(),
            webdav: self.webdav.as_ref(),
            sftp: self.sftp.as_ref(),
            dropbox: self.dropbox.as_ref(),
            gdrive: self.gdrive.as_ref(),
            retry: self.retry.clone(),
            state_dir: &self.docker.state_dir,
        }
    }

    /// The locks a run of this schedule takes (see [`crate::schedule::lock`]).
    pub fn lock_plan(&self) -> crate::schedule::lock::Plan {
        crate::schedule::lock::Plan::new(
            &self.lock_file,
            self.concurrency,
            &self.docker.state_dir,
            &self.name,
            self.docker
                .may_stop()
                .then_some(self.docker.stop_label.as_str()),
        )
    }

    /// Whether pruning is skipped for the destination called `backend` (e.g. `Local`).
    pub fn skips_prune(&self, backend: Backend) -> bool {
        self.skip_prune.contains(&backend)
    }

    /// Every known variable that is set or has a default, with its value (secrets redacted)
    /// and where it came from, for print-config.
    pub fn describe(&self) -> Vec<(&'static str, String, String)> {
        describe_vars(&self.vars)
    }
}

/// Loads every schedule: one per regular file in the conf.d folder (`BACKUP_CONF_DIR`, in
/// name order) when that folder exists, otherwise one from the environment. With `only`,
/// just the conf.d file of that name (`backup --config NAME`).
pub fn load(env: &Vars, only: Option<&str>) -> Result<Vec<Config>, ConfigError> {
    let mut configs = Vec::new();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for Schedule { name, vars } in schedules(env, only)? {
        let from_file = name != DEFAULT_SCHEDULE;
        match vars.and_then(|vars| Config::from_vars(&name, &vars)) {
            Ok(c) => configs.push(c),
            Err(e) => {
                warnings.extend(e.warnings);
                problems.extend(e.problems.into_iter().map(|mut p| {
                    if from_file && !p.var.contains('/') {
                        p.var = format!("{} ({name})", p.var);
                    }
                    p
                }));
            }
        }
    }
    if problems.is_empty() {
        Ok(configs)
    } else {
        warnings.extend(configs.into_iter().flat_map(|c| c.warnings));
        Err(ConfigError { problems, warnings })
    }
}

/// One schedule's name and variables, before validation.
pub struct Schedule {
    pub name: String,
    /// The environment alone, or a conf.d file over it (or why the file cannot be read).
    pub vars: Result<Vars, ConfigError>,
}

/// The conf.d folder (`BACKUP_CONF_DIR`), when it exists.
pub fn conf_dir(env: &Vars) -> Option<PathBuf> {
    let dir = PathBuf::from(
        env.get("BACKUP_CONF_DIR")
            .filter(|v| !v.is_empty())
            .or(registry::spec("BACKUP_CONF_DIR").and_then(|s| s.default))
            .unwrap_or_default(),
    );
    dir.is_dir().then_some(dir)
}

/// Every schedule's name and variables, unvalidated.
pub fn schedules(env: &Vars, only: Option<&str>) -> Result<Vec<Schedule>, ConfigError> {
    let conf_dir = PathBuf::from(
        env.get("BACKUP_CONF_DIR")
            .filter(|v| !v.is_empty())
            .or(registry::spec("BACKUP_CONF_DIR").and_then(|s| s.default))
            .unwrap_or_default(),
    );
    let explicit = env.get("BACKUP_CONF_DIR").is_some_and(|v| !v.is_empty());
    if explicit && !conf_dir.is_dir() {
        // Set on purpose: a missing folder is a wrong mount, not "use the environment".
        return Err(ConfigError::one(Problem::new(
            "BACKUP_CONF_DIR",
            &conf_dir.display().to_string(),
            if conf_dir.exists() {
                "not a folder: expected the folder holding one .env file per schedule"
            } else {
                "no such folder: mount the conf.d folder there, or unset BACKUP_CONF_DIR"
            },
        )));
    }
    if !conf_dir.is_dir() {
        if let Some(name) = only {
            return Err(ConfigError::one(Problem::new(
                "--config",
                name,
                format!(
                    "there is no conf.d folder at {} (set BACKUP_CONF_DIR)",
                    conf_dir.display()
                ),
            )));
        }
        return Ok(vec![Schedule {
            name: DEFAULT_SCHEDULE.to_owned(),
            vars: Ok(env.clone()),
        }]);
    }
    let files = conf_files(&conf_dir)?;
    let selected: Vec<&PathBuf> = match only {
        None => files.iter().collect(),
        Some(name) => {
            let found: Vec<_> = files.iter().filter(|f| file_name(f) == name).collect();
            if found.is_empty() {
                let known: Vec<_> = files.iter().map(|f| file_name(f)).collect();
                return Err(ConfigError::one(Problem::new(
                    "--config",
                    name,
                    format!(
                        "no such file in {}; available: {}",
                        conf_dir.display(),
                        known.join(", ")
                    ),
                )));
            }
            found
        }
    };
    Ok(selected
        .into_iter()
        .map(|path| Schedule {
            name: file_name(path),
            vars: env.with_conf_file(path).map_err(ConfigError::one),
        })
        .collect())
}

/// The notification settings of `vars` alone, whatever else is wrong with them: who to
/// tell that the configuration is invalid. `None` when they are unusable too.
pub fn notification_settings(vars: &Vars) -> Option<crate::notify::Settings> {
    let vars = &resolved(vars);
    let mut p = Parser::new(vars);
    let (settings, problems) = p.notifications();
    settings.filter(|_| problems.is_empty())
}

/// `BACKUP_STATE_DIR` of `vars` (its default when unset).
pub fn state_dir(vars: &Vars) -> PathBuf {
    let vars = &resolved(vars);
    let mut p = Parser::new(vars);
    p.path("BACKUP_STATE_DIR")
}

/// The secret values of `vars` (`_FILE`s read), for [`crate::secrets::register`]: each
/// secret variable's value, and inside URL-valued ones (`NOTIFICATION_URLS`) each URL's
/// password and its long user names and path segments (tokens).
pub fn secret_values(vars: &Vars) -> Vec<String> {
    let vars = resolved(vars);
    let mut out = Vec::new();
    for spec in registry::VARIABLES.iter().filter(|s| s.secret) {
        let Some(value) = vars.get(spec.name).filter(|v| !v.is_empty()) else {
            continue;
        };
        out.push(value.to_owned());
        for piece in value.split(',') {
            let Ok(url) = url::Url::parse(piece.trim()) else {
                continue;
            };
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            out.extend(url.password().map(decode));
            let tokens = std::iter::once(url.username())
                .chain(url.path_segments().into_iter().flatten())
                .filter(|s| s.len() >= 16)
                .map(decode);
            out.extend(tokens);
        }
    }
    out
}

/// `vars` with each `_FILE` variable read (those that cannot be are left out; validation
/// reports them).
fn resolved(vars: &Vars) -> Vars {
    let mut vars = vars.clone();
    vars.resolve_files(&mut Vec::new());
    vars
}

/// `print-config`'s rows for `vars`: every variable that is set or has a default, with its
/// value (secrets redacted) and where it came from.
pub fn describe_vars(vars: &Vars) -> Vec<(&'static str, String, String)> {
    let vars = &resolved(vars);
    registry::VARIABLES
        .iter()
        .filter(|spec| spec.name != "BACKUP_CONF_DIR")
        .filter_map(|spec| {
            let set = vars.get(spec.name);
            let (value, origin) = match (set, spec.default) {
                (Some(v), _) => (v.to_owned(), vars.origin(spec.name)?.to_string()),
                (None, Some(d)) => (d.to_owned(), "default".to_owned()),
                (None, None) => return None,
            };
            let shown = if spec.secret && !value.is_empty() {
                "(redacted)".to_owned()
            } else {
                value
            };
            Some((spec.name, shown, origin))
        })
        .collect()
}

/// The archive name a run of `vars` would use now (`$VAR`s expanded, the time in the
/// schedule's zone), when the settings it depends on are valid.
pub fn preview_filename(vars: &Vars) -> Option<String> {
    let vars = &resolved(vars);
    let mut p = Parser::new(vars);
    let codec = p.codec();
    let expand = p.bool("BACKUP_FILENAME_EXPAND");
    let zone = p.time_zone();
    let suffix = p.encryption().suffix();
    let template = p.filename(expand, codec.extension(), suffix)?;
    if !p.problems.is_empty() {
        return None;
    }
    template
        .render(&jiff::Zoned::now().with_time_zone(zone))
        .ok()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The regular files of a conf.d folder, in name order, but for hidden ones (editors' swap
/// files, files the API is writing). An empty folder is an error: a mounted but empty
/// conf.d means a deployment mistake, not "back up nothing".
fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read = std::fs::read_dir(dir).map_err(|e| {
        ConfigError::one(Problem::new(
            "BACKUP_CONF_DIR",
            &dir.display().to_string(),
            format!("cannot read the conf.d folder: {e}"),
        ))
    })?;
    let mut files: Vec<PathBuf> = read
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && !file_name(p).starts_with('.'))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ConfigError::one(Problem::new(
            "BACKUP_CONF_DIR",
            &dir.display().to_string(),
            "the conf.d folder exists but holds no files; add one file per schedule or \
             remove the folder to configure from the environment",
        )));
    }
    Ok(files)
}

/// Reads typed values, collecting problems instead of stopping at the first.
struct Parser<'a> {
    vars: &'a Vars,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl<'a> Parser<'a> {
    fn new(vars: &'a Vars) -> Self {
        Parser {
            vars,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl Parser<'_> {
    fn problem(&mut self, var: &str, value: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(var, value, message));
    }

    /// The value, or the registry's default when unset. Set-but-empty stays empty.
    fn string(&self, key: &str) -> String {
        let spec = registry::spec(key);
        debug_assert!(spec.is_some(), "{key} is missing from the registry");
        self.vars
            .get(key)
            .or(spec.and_then(|s| s.default))
            .unwrap_or("")
            .to_owned()
    }

    /// `None` when unset or empty.
    fn optional(&self, key: &str) -> Option<String> {
        Some(self.string(key)).filter(|v| !v.is_empty())
    }

    fn bool(&mut self, key: &str) -> bool {
        let raw = self.string(key);
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" | "" => false,
            _ => {
                self.problem(key, &raw, "expected a boolean: true, false, 1 or 0");
                false
            }
        }
    }

    fn path(&mut self, key: &str) -> PathBuf {
        let raw = self.string(key);
        if raw.is_empty() {
            self.problem(key, &raw, "expected a path, got an empty value");
            return PathBuf::new();
        }
        std::path::absolute(&raw).unwrap_or_else(|_| PathBuf::from(raw))
    }

    fn duration(&mut self, key: &str) -> Duration {
        let raw = self.string(key);
        crate::duration::parse_duration(&raw).unwrap_or_else(|why| {
            self.problem(
                key,
                &raw,
                format!("{why}; expected a duration such as 90s, 5m, 1h30m or 2d"),
            );
            Duration::ZERO
        })
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

    /// Unknown names with our prefixes are warnings with a suggestion; a setting of a
    /// feature this version does not have (Google Drive, encryption) is a problem.
    fn check_names_and_features(&mut self) {
        let vars = self.vars;
        for name in vars.not_utf8() {
            let ours = registry::spec(name).is_some()
                || registry::OUR_PREFIXES.iter().any(|p| name.starts_with(p));
            if ours {
                self.problems.push(Problem {
                    var: name.clone(),
                    value: "(not shown)".into(),
                    message: "the value is not valid UTF-8 (check the file or shell that \
                              set it); it would otherwise be ignored"
                        .into(),
                });
            }
        }
        for name in vars.names() {
            if name.starts_with("DUNNAGE_")
                && matches!(vars.origin(name), Some(vars::Origin::ConfFile(_)))
            {
                self.problems.push(Problem::new(
                    name,
                    vars.get(name).unwrap_or_default(),
                    "set for the whole process: put it in the environment, not in a conf.d file",
                ));
                continue;
            }
            if registry::spec(name).is_some() {
                continue;
            }
            if let Some(meant) = registry::typo_of(name) {
                // The value of a misspelt secret is a secret too.
                let value = if meant.secret {
                    "(redacted)".to_owned()
                } else {
                    vars.get(name).unwrap_or_default().to_owned()
                };
                self.problems.push(Problem {
                    var: name.to_owned(),
                    value,
                    message: format!(
                        "unknown variable; did you mean {}? (as written, the setting would \
                         be ignored)",
                        meant.name
                    ),
                });
                continue;
            }
            let upper = name.to_ascii_uppercase();
            if !registry::OUR_PREFIXES.iter().any(|p| upper.starts_with(p)) {
                continue;
            }
            let hint = registry::closest(&upper)
                .map(|c| format!("; did you mean {c}?"))
                .unwrap_or_default();
            self.warnings
                .push(format!("unknown variable {name} is ignored{hint}"));
        }
        self.check_destinations_without_their_key();
    }

    /// A destination's settings given without the variable that turns it on (the bucket
    /// name misspelt, `WEBDAV_USERNAME` without `WEBDAV_URL`): the user believes the backup
    /// goes there, so it is an error naming the missing variable and the likely typo.
    /// Settings equal to their default do not count (panels write every variable).
    fn check_destinations_without_their_key(&mut self) {
        use registry::Feature;
        let vars = self.vars;
        for feature in [
            Feature::S3,
            Feature::WebDav,
            Feature::Sftp,
            Feature::Dropbox,
            Feature::GoogleDrive,
        ] {
            let specs = registry::VARIABLES.iter().filter(|s| s.feature == feature);
            let Some(key) = specs.clone().find(|s| s.enables) else {
                continue;
            };
            if vars.get(key.name).is_some_and(|v| !v.is_empty()) {
                continue;
            }
            let given: Vec<&str> = specs
                .filter(|s| !s.enables)
                .filter(|s| {
                    vars.get(s.name)
                        .is_some_and(|v| !v.is_empty() && Some(v) != s.default)
                })
                .map(|s| s.name)
                .collect();
            if given.is_empty() {
                continue;
            }
            let typo = vars
                .names()
                .find(|n| registry::spec(n).is_none() && registry::closest(n) == Some(key.name))
                .map(|n| format!("; did you mean {} instead of {n}?", key.name))
                .unwrap_or_default();
            self.problem(
                key.name,
                "",
                format!(
                    "not set, so {} is off, although {} {} set{typo}",
                    feature.title(),
                    given.join(", "),
                    if given.len() == 1 { "is" } else { "are" }
                ),
            );
        }
    }

    /// `BACKUP_PRUNING_LEEWAY`: minutes of slack for runs that start a little late. Days
    /// of it would keep what the retention should delete, and the disk fills up.
    fn leeway(&mut self) -> Duration {
        const MAX: Duration = Duration::from_secs(24 * 3600);
        let leeway = self.duration("BACKUP_PRUNING_LEEWAY");
        if leeway > MAX {
            let raw = self.string("BACKUP_PRUNING_LEEWAY");
            self.problem(
                "BACKUP_PRUNING_LEEWAY",
                &raw,
                "at most 24h: it is slack for a run that starts late, and more would keep \
                 backups the retention is meant to delete",
            );
            return MAX;
        }
        leeway
    }

    /// Compressor workers set by `BACKUP_COMPRESSION_THREADS` (or the reference's
    /// `GZIP_PARALLELISM` for gzip); 0 when neither is set.
    fn explicit_threads(&mut self, gzip: bool) -> u32 {
        let threads = self
            .number("BACKUP_COMPRESSION_THREADS", 0..=256)
            .unwrap_or(0);
        let gzip_threads = self.number("GZIP_PARALLELISM", 0..=1024).unwrap_or(0);
        match (threads, gzip_threads) {
            (0, n) if gzip => n,
            (n, 0) => n,
            (n, g) if !gzip || n == g => n,
            (n, g) => {
                self.problem(
                    "GZIP_PARALLELISM",
                    &g.to_string(),
                    format!("differs from BACKUP_COMPRESSION_THREADS={n}; set one of them"),
                );
                n
            }
        }
    }

    fn codec(&mut self) -> Codec {
        let kind = self.string("BACKUP_COMPRESSION");
        // One per CPU the container may use, fewer when they would not fit in its memory.
        let explicit = self.explicit_threads(kind == "gz");
        let threads = |per_worker: u64| match explicit {
            0 => resources::workers(resources::cpus(), resources::memory_limit(), per_worker),
            n => n,
        };
        match kind.as_str() {
            "gz" => {
                let level = self
                    .number("BACKUP_COMPRESSION_LEVEL", 1..=9)
                    .unwrap_or(DEFAULT_GZIP_LEVEL);
                let threads = threads(Codec::gzip_worker_memory());
                Codec::Gzip { level, threads }
            }
            "zst" => {
                let level = self
                    .number("BACKUP_COMPRESSION_LEVEL", 1..=MAX_ZSTD_LEVEL)
                    .unwrap_or(DEFAULT_ZSTD_LEVEL);
                let threads = threads(Codec::zstd_worker_memory(level));
                Codec::Zstd { level, threads }
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

    fn cron(&mut self) -> Option<CronSchedule> {
        let raw = self.string("BACKUP_CRON_EXPRESSION");
        CronSchedule::parse(&raw)
            .map_err(|why| self.problem("BACKUP_CRON_EXPRESSION", &raw, why))
            .ok()
    }

    fn deprecated_snapshot(&mut self) {
        if self.bool("BACKUP_FROM_SNAPSHOT") {
            self.warnings.push(
                "BACKUP_FROM_SNAPSHOT=true is deprecated and ignored: dunnage reads each file \
                 once and reports files that change while read; stop containers with labels \
                 for a consistent copy"
                    .into(),
            );
        }
    }

    /// A value that may name other variables (`$VAR`), expanded when
    /// `BACKUP_FILENAME_EXPAND` is set.
    fn expanded(&self, raw: String, expand: bool) -> String {
        if expand {
            expand_vars(&raw, self.vars)
        } else {
            raw
        }
    }

    fn filename(
        &mut self,
        expand: bool,
        extension: &'static str,
        suffix: &'static str,
    ) -> Option<FilenameTemplate> {
        let raw = self.string("BACKUP_FILENAME");
        let raw = self.expanded(raw, expand);
        FilenameTemplate::new(&raw, extension, suffix)
            .map_err(|e| self.problem("BACKUP_FILENAME", &raw, e.to_string()))
            .ok()
    }

    /// `BACKUP_UPLOAD_LIMIT`: `0` (none) or bytes per second, at least 64 KiB, with the
    /// units of `BACKUP_SPLIT_SIZE` (`10MiB` = 10 MiB/s).
    fn upload_limit(&mut self) -> Option<u64> {
        const KEY: &str = "BACKUP_UPLOAD_LIMIT";
        let raw = self.string(KEY);
        match parse_size(&raw) {
            Some(0) => None,
            Some(n) if n >= 64 << 10 => Some(n),
            _ => {
                self.problem(
                    KEY,
                    &raw,
                    "expected 0 (no limit) or bytes per second of at least 64KiB, such as 10MiB \
                     or 50MB",
                );
                None
            }
        }
    }

    fn verify_cron(&mut self) -> Option<(CronSchedule, crate::manifest::Level)> {
        let raw = self.optional("BACKUP_VERIFY_CRON_EXPRESSION")?;
        let cron = CronSchedule::parse(&raw)
            .map_err(|why| self.problem("BACKUP_VERIFY_CRON_EXPRESSION", &raw, why))
            .ok();
        let level_raw = self.string("BACKUP_VERIFY_CRON_LEVEL");
        let level = crate::manifest::Level::parse(&level_raw);
        if level.is_none() {
            self.problem(
                "BACKUP_VERIFY_CRON_LEVEL",
                &level_raw,
                "expected size, hash or read",
            );
        }
        Some((cron?, level?))
    }

    fn verify_level(&mut self) -> Option<crate::manifest::Level> {
        let raw = self.string("BACKUP_VERIFY_LEVEL");
        if matches!(raw.trim(), "off" | "") {
            return None;
        }
        let level = crate::manifest::Level::parse(&raw);
        if level.is_none() {
            self.problem(
                "BACKUP_VERIFY_LEVEL",
                &raw,
                "expected off, size, hash or read",
            );
        }
        level
    }

    /// `BACKUP_SPLIT_SIZE`: `0` (off) or a size of at least 1 MiB such as `500MiB`, `2G`,
    /// `4GB` (K, M, G, T and KiB... are powers of 1024; KB, MB, GB, TB of 1000).
    fn split_size(&mut self) -> Option<u64> {
        const KEY: &str = "BACKUP_SPLIT_SIZE";
        let raw = self.string(KEY);
        match parse_size(&raw) {
            Some(0) => None,
            Some(n) if n >= 1 << 20 => Some(n),
            _ => {
                self.problem(
                    KEY,
                    &raw,
                    "expected 0 (do not split) or a size of at least 1MiB, such as 500MiB, 2G \
                     or 4GB (K/M/G/T and KiB/MiB/GiB/TiB count in 1024s, KB/MB/GB/TB in 1000s)",
                );
                None
            }
        }
    }

    fn exclude(&mut self) -> Option<regex::bytes::Regex> {
        let raw = self.optional("BACKUP_EXCLUDE_REGEXP")?;
        regex::bytes::Regex::new(&raw)
            .map_err(|e| {
                let why = format!("not a valid regular expression: {e}");
                self.problem("BACKUP_EXCLUDE_REGEXP", &raw, why)
            })
            .ok()
    }

    fn latest_symlink(&mut self, expand: bool) -> Option<String> {
        let raw = self.optional("BACKUP_LATEST_SYMLINK")?;
        let name = self.expanded(raw, expand);
        match filename::check_plain_name(&name) {
            Ok(()) => Some(name),
            Err(why) => {
                self.problem("BACKUP_LATEST_SYMLINK", &name, why);
                None
            }
        }
    }

    fn healthcheck(&mut self) -> Option<reqwest::Url> {
        let raw = self.optional("BACKUP_HEALTHCHECK_URL")?;
        match reqwest::Url::parse(&raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Some(url),
            _ => {
                self.problem(
                    "BACKUP_HEALTHCHECK_URL",
                    &raw,
                    "expected an http(s) URL such as https://hc-ping.com/<uuid> or \
                     https://kuma.example/api/push/<token>",
                );
                None
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

    fn retention(&mut self, expand: bool) -> Policy {
        let days = {
            let raw = self.string("BACKUP_RETENTION_DAYS");
            match raw.trim().parse::<i64>() {
                Ok(n) if n < 0 => None,
                Ok(n) if n <= 100_000 => Some(n as u32),
                _ => {
                    self.problem(
                        "BACKUP_RETENTION_DAYS",
                        &raw,
                        "expected a whole number of days (0 or more), or -1 to keep everything",
                    );
                    None
                }
            }
        };
        let prefix = self.string("BACKUP_PRUNING_PREFIX");
        let mut keep = |key: &str| self.number(key, 0..=1_000_000).unwrap_or(0);
        Policy {
            days,
            keep_last: keep("BACKUP_RETENTION_KEEP_LAST"),
            keep_daily: keep("BACKUP_RETENTION_KEEP_DAILY"),
            keep_weekly: keep("BACKUP_RETENTION_KEEP_WEEKLY"),
            keep_monthly: keep("BACKUP_RETENTION_KEEP_MONTHLY"),
            keep_yearly: keep("BACKUP_RETENTION_KEEP_YEARLY"),
            leeway: self.leeway(),
            select: Selector {
                prefix: if expand {
                    expand_vars(&prefix, self.vars)
                } else {
                    prefix
                },
                pattern: None,
            },
        }
    }

    fn docker(&mut self, retry: RetryPolicy) -> DockerConfig {
        let stop_label = match self.optional("BACKUP_STOP_CONTAINER_LABEL") {
            Some(old) => {
                self.warnings.push(
                    "BACKUP_STOP_CONTAINER_LABEL is deprecated; use \
                     BACKUP_STOP_DURING_BACKUP_LABEL"
                        .into(),
                );
                old
            }
            None => self.string("BACKUP_STOP_DURING_BACKUP_LABEL"),
        };
        if stop_label.is_empty() {
            self.problem(
                "BACKUP_STOP_DURING_BACKUP_LABEL",
                "",
                "expected the label value of containers to stop, e.g. true or a project name",
            );
        }
        DockerConfig {
            schedule: String::new(),
            host: self.optional("DOCKER_HOST"),
            stop_label,
            no_restart_label: self.optional("BACKUP_STOP_DURING_BACKUP_NO_RESTART_LABEL"),
            stop_timeout: self.duration("BACKUP_STOP_TIMEOUT"),
            state_dir: self.path("BACKUP_STATE_DIR"),
            exec_label: self.optional("EXEC_LABEL"),
            exec_forward_output: self.bool("EXEC_FORWARD_OUTPUT"),
            exec_timeout: self.duration("EXEC_TIMEOUT"),
            retry,
        }
    }

    fn spool(&mut self) -> SpoolMode {
        let raw = self.string("BACKUP_SPOOL");
        match raw.to_ascii_lowercase().as_str() {
            "auto" => SpoolMode::Auto,
            "always" => SpoolMode::Always,
            "never" => SpoolMode::Never,
            _ => {
                self.problem("BACKUP_SPOOL", &raw, "expected auto, always or never");
                SpoolMode::Auto
            }
        }
    }

    fn skip_prune(&mut self) -> Vec<Backend> {
        let raw = self.string("BACKUP_SKIP_BACKENDS_FROM_PRUNE");
        let mut names = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Some(backend) = Backend::parse(item) {
                names.push(backend);
            } else {
                self.problem(
                    "BACKUP_SKIP_BACKENDS_FROM_PRUNE",
                    &raw,
                    format!(
                        "unknown destination {item:?}; expected a comma list of {}",
                        Backend::ALL
                            .iter()
                            .map(|b| b.reference_name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::from_pairs(pairs.iter().copied())
    }

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars("test", &vars(pairs))
    }

    fn problem_vars(err: &ConfigError) -> Vec<&str> {
        err.problems.iter().map(|p| p.var.as_str()).collect()
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = config(&[("TZ", "UTC")]).unwrap();
        assert_eq!(c.sources, PathBuf::from("/backup"));
        assert_eq!(c.archive_dir, PathBuf::from("/archive"));
        assert!(matches!(c.codec, Codec::Gzip { level: 5, .. }));
        assert!(c.exclude.is_none());
        assert!(c.latest_symlink.is_none());
        assert_eq!(c.filename.extension(), "tar.gz");
        assert_eq!(c.cron.expression(), "@daily");
        assert_eq!(c.jitter, Duration::ZERO);
        assert_eq!(c.lock_timeout, Duration::from_secs(3600));
        assert_eq!(
            c.lock_file,
            PathBuf::from("/var/lock/dockervolumebackup.lock")
        );
        assert_eq!(c.retention.days, None, "-1 keeps everything");
        assert_eq!(c.retention.leeway, Duration::from_secs(60));
        assert!(!c.retention.is_active());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn gzip_parallelism_zero_means_all_cores() {
        // All the CPUs this container may use, as many as fit in its memory limit.
        let cores = resources::workers(
            resources::cpus(),
            resources::memory_limit(),
            Codec::gzip_worker_memory(),
        );
        for (value, want) in [("0", cores), ("3", 3)] {
            let c = config(&[("GZIP_PARALLELISM", value)]).unwrap();
            assert!(
                matches!(c.codec, Codec::Gzip { threads, .. } if threads == want),
                "{value}"
            );
        }
        let c = config(&[]).unwrap();
        assert!(matches!(c.codec, Codec::Gzip { threads, .. } if threads == cores));
    }

    #[test]
    fn compressor_threads_can_be_set_for_both_codecs() {
        for (pairs, want) in [
            (
                &[
                    ("BACKUP_COMPRESSION", "zst"),
                    ("BACKUP_COMPRESSION_THREADS", "3"),
                ][..],
                3,
            ),
            (&[("BACKUP_COMPRESSION_THREADS", "2")][..], 2),
            (
                &[
                    ("BACKUP_COMPRESSION_THREADS", "4"),
                    ("GZIP_PARALLELISM", "4"),
                ][..],
                4,
            ),
            // GZIP_PARALLELISM is gzip's only.
            (
                &[
                    ("BACKUP_COMPRESSION", "zst"),
                    ("GZIP_PARALLELISM", "1"),
                    ("BACKUP_COMPRESSION_THREADS", "5"),
                ][..],
                5,
            ),
        ] {
            let c = config(pairs).unwrap();
            let threads = match c.codec {
                Codec::Gzip { threads, .. } | Codec::Zstd { threads, .. } => threads,
                Codec::None => 0,
            };
            assert_eq!(threads, want, "{pairs:?}");
        }
        let err = config(&[
            ("BACKUP_COMPRESSION_THREADS", "4"),
            ("GZIP_PARALLELISM", "2"),
        ])
        .unwrap_err();
        assert_eq!(problem_vars(&err), ["GZIP_PARALLELISM"]);
        let err = config(&[("BACKUP_COMPRESSION_THREADS", "many")]).unwrap_err();
        assert_eq!(problem_vars(&err), ["BACKUP_COMPRESSION_THREADS"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = config(&[
            ("BACKUP_COMPRESSION", "lz4"),
            ("BACKUP_FILENAME_EXPAND", "yes"),
            ("BACKUP_EXCLUDE_REGEXP", "(unclosed"),
            ("GZIP_PARALLELISM", "-1"),
            ("TZ", "Mars/Olympus"),
            ("BACKUP_LATEST_SYMLINK", "a/b"),
            ("BACKUP_CRON_EXPRESSION", "every day"),
            ("BACKUP_JITTER", "5 minutes"),
            ("BACKUP_RETENTION_DAYS", "seven"),
            ("BACKUP_SKIP_BACKENDS_FROM_PRUNE", "local,ftp"),
        ])
        .unwrap_err();
        assert_eq!(
            problem_vars(&err),
            [
                "BACKUP_CRON_EXPRESSION",
                "BACKUP_JITTER",
                "GZIP_PARALLELISM",
                "BACKUP_COMPRESSION",
                "BACKUP_FILENAME_EXPAND",
                "TZ",
                "BACKUP_EXCLUDE_REGEXP",
                "BACKUP_LATEST_SYMLINK",
                "BACKUP_RETENTION_DAYS",
                "BACKUP_SKIP_BACKENDS_FROM_PRUNE",
            ]
        );
        let text = err.to_string();
        assert!(
            text.starts_with("invalid configuration (10 problems):"),
            "{text}"
        );
        assert!(
            text.contains(r#"BACKUP_COMPRESSION="lz4": expected one of gz, zst, none"#),
            "{text}"
        );
        assert!(text.contains(r#"unknown destination "ftp""#), "{text}");
    }

    #[test]
    fn compression_levels_are_checked_per_codec() {
        let ok = |pairs: &[(&str, &str)]| config(pairs).map(|c| c.codec);
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
            assert_eq!(problem_vars(&err), ["BACKUP_COMPRESSION_LEVEL"], "{bad:?}");
        }
    }

    #[test]
    fn booleans_accept_the_reference_spellings() {
        for (raw, want) in [("TRUE", true), ("1", true), ("false", false), ("0", false)] {
            let c = config(&[
                ("BACKUP_FILENAME_EXPAND", raw),
                ("BACKUP_FILENAME", "$X.tar"),
                ("X", "x"),
            ])
            .unwrap();
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
        let err = config(&[("BACKUP_SOURCES", "")]).unwrap_err();
        assert_eq!(problem_vars(&err), ["BACKUP_SOURCES"]);
    }

    #[test]
    fn retention_settings_parse() {
        let c = config(&[
            ("BACKUP_RETENTION_DAYS", "7"),
            ("BACKUP_PRUNING_LEEWAY", "10m"),
            ("BACKUP_PRUNING_PREFIX", "$APP-"),
            ("BACKUP_FILENAME_EXPAND", "true"),
            ("APP", "shop"),
            ("BACKUP_RETENTION_KEEP_DAILY", "7"),
            ("BACKUP_RETENTION_KEEP_MONTHLY", "12"),
            ("BACKUP_SKIP_BACKENDS_FROM_PRUNE", " S3 , local "),
        ])
        .unwrap();
        assert_eq!(c.retention.days, Some(7));
        assert_eq!(c.retention.leeway, Duration::from_secs(600));
        assert_eq!(c.retention.select.prefix, "shop-");
        assert_eq!((c.retention.keep_daily, c.retention.keep_monthly), (7, 12));
        assert!(
            c.skips_prune(Backend::Local)
                && c.skips_prune(Backend::S3)
                && !c.skips_prune(Backend::WebDav)
        );
        assert_eq!(
            config(&[("BACKUP_RETENTION_DAYS", "0")])
                .unwrap()
                .retention
                .days,
            Some(0)
        );
    }

    #[test]
    fn secret_files_are_read_and_secrets_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-file");
        let err = config(&[
            ("GPG_PASSPHRASE_FILE", missing.to_str().unwrap()),
            ("NOTIFICATION_URLS", "smtp://user:hunter2@mail"),
        ])
        .unwrap_err();
        // The smtp:// URL lacks from and to: a warning (notifications never stop a run),
        // with the password hidden.
        assert_eq!(problem_vars(&err), ["GPG_PASSPHRASE_FILE"]);
        let text = err.to_string();
        assert!(text.contains("cannot read the file"), "{text}");
        let warned = err.warnings.join("\n");
        assert!(
            warned.contains("smtp://***@mail") && !warned.contains("hunter2"),
            "{warned}"
        );

        let c = config(&[
            ("WEBDAV_URL", "https://dav.example/"),
            ("WEBDAV_USERNAME", "u"),
            ("WEBDAV_PASSWORD", "hunter2"),
            ("BACKUP_SOURCES", "/data"),
        ])
        .unwrap();
        let described = c.describe();
        let show = |name: &str| described.iter().find(|(n, ..)| *n == name).cloned();
        assert_eq!(
            show("WEBDAV_PASSWORD"),
            Some(("WEBDAV_PASSWORD", "(redacted)".into(), "environment".into()))
        );
        assert_eq!(
            show("SSH_HOST_NAME"),
            None,
            "unset settings without a default are hidden"
        );
        assert_eq!(
            show("BACKUP_SOURCES"),
            Some(("BACKUP_SOURCES", "/data".into(), "environment".into()))
        );
        assert_eq!(
            show("BACKUP_COMPRESSION"),
            Some(("BACKUP_COMPRESSION", "gz".into(), "default".into()))
        );
        let err = config(&[("DROPBOX_REFRESH_TOKEN", "hunter2")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("(redacted)"), "{err}");
    }

    #[test]
    fn deprecated_email_settings_and_notification_problems_never_stop_a_backup() {
        let c = config(&[
            ("NOTIFICATION_URLS", "generic://x"),
            ("EMAIL_NOTIFICATION_RECIPIENT", "ops@example.org"),
            ("EMAIL_SMTP_HOST", "mail.example.org"),
            ("EMAIL_SMTP_PASSWORD", "hunter2"),
            ("BACKUP_HEALTHCHECK_URL", "https://hc-ping.example/0f1e"),
        ])
        .unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("EMAIL_* variables are deprecated"));
        let services = c.notifications.as_ref().unwrap().services();
        assert_eq!(services.len(), 2);
        assert_eq!(
            services[1].redacted,
            "smtp://***@mail.example.org:587/?from=noreply@nohost&to=ops@example.org"
        );
        assert!(c.healthcheck.is_some());
        // Notification problems never stop a backup: they are kept for `check` and warned.
        let c = config(&[
            ("EMAIL_NOTIFICATION_RECIPIENT", "ops@example.org"),
            ("NOTIFICATION_LEVEL", "loud"),
        ])
        .unwrap();
        assert!(c.notifications.is_none());
        assert_eq!(c.notification_problems.len(), 2);
        assert!(c.notification_problems[0].starts_with("EMAIL_SMTP_HOST"));
        assert!(c.notification_problems[1].starts_with("NOTIFICATION_LEVEL=\"loud\""));
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        let err = config(&[("BACKUP_HEALTHCHECK_URL", "hc-ping.example/secret-uuid")]).unwrap_err();
        assert_eq!(problem_vars(&err), ["BACKUP_HEALTHCHECK_URL"]);
        assert!(!err.to_string().contains("secret-uuid"), "{err}");
    }

    #[test]
    fn webdav_url_insecure_with_http_is_a_warning_as_the_reference_ignores_it() {
        let c = config(&[
            ("WEBDAV_URL", "http://dav.example/"),
            ("WEBDAV_URL_INSECURE", "true"),
        ])
        .unwrap();
        assert!(c.webdav.is_some());
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("WEBDAV_URL_INSECURE=true has no effect")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn unknown_variables_are_warnings_and_near_misses_are_errors() {
        let c = config(&[
            ("HEALTHCHECK_URL", "not our prefix"),
            ("AWS_SECRET_ACCESS_KEY_FILE_X", "x"),
            ("AWS_S3_BUCKET", "b"),
            ("PATH", "/bin"),
        ])
        .unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("AWS_S3_BUCKET is ignored; did you mean AWS_S3_BUCKET_NAME?")
        );
        assert!(c.warnings[1].contains("AWS_SECRET_ACCESS_KEY_FILE_X"));
        // Retention the user believes is on: an error, and a misspelt secret stays secret.
        let err = config(&[
            ("BACKUP_RETENTON_DAYS", "7"),
            ("backup_cron_expression", "@hourly"),
            ("AWS_SECRET_ACESS_KEY", "hunter2"),
        ])
        .unwrap_err();
        assert_eq!(
            problem_vars(&err),
            [
                "AWS_SECRET_ACESS_KEY",
                "BACKUP_RETENTON_DAYS",
                "backup_cron_expression"
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("did you mean BACKUP_RETENTION_DAYS?"),
            "{text}"
        );
        assert!(
            text.contains("did you mean BACKUP_CRON_EXPRESSION?"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn conf_d_gives_one_schedule_per_file_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf.d");
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(conf.join("20-files.env"), "BACKUP_SOURCES=/files\n").unwrap();
        std::fs::write(
            conf.join("10-db.env"),
            "BACKUP_SOURCES=/db\nBACKUP_CRON_EXPRESSION=0 3 * * *\n",
        )
        .unwrap();
        let env = vars(&[
            ("BACKUP_CONF_DIR", conf.to_str().unwrap()),
            ("BACKUP_CRON_EXPRESSION", "@hourly"),
        ]);
        let all = load(&env, None).unwrap();
        let summary: Vec<_> = all
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.sources.clone(),
                    c.cron.expression().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("10-db.env", PathBuf::from("/db"), "0 3 * * *".to_owned()),
                (
                    "20-files.env",
                    PathBuf::from("/files"),
                    "@hourly".to_owned()
                ),
            ]
        );
        let one = load(&env, Some("20-files.env")).unwrap();
        assert_eq!(one.len(), 1);
        let err = load(&env, Some("nope")).unwrap_err();
        assert!(
            err.to_string()
                .contains("available: 10-db.env, 20-files.env"),
            "{err}"
        );

        // Problems name the file they are in.
        std::fs::write(conf.join("30-bad.env"), "BACKUP_COMPRESSION=lz4\n").unwrap();
        let err = load(&env, None).unwrap_err();
        assert_eq!(problem_vars(&err), ["BACKUP_COMPRESSION (30-bad.env)"]);
    }

    #[test]
    fn an_empty_conf_d_is_an_error_and_a_missing_one_means_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let env = vars(&[("BACKUP_CONF_DIR", dir.path().to_str().unwrap())]);
        let err = load(&env, None).unwrap_err();
        assert!(err.to_string().contains("holds no files"), "{err}");
        // The default folder missing: the environment is the one schedule.
        let env = vars(&[("TZ", "UTC")]);
        let all = load(&env, None).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, DEFAULT_SCHEDULE);
        assert!(load(&env, Some("x")).is_err());
        // Set on purpose to a missing folder or a file: an error.
        let env = vars(&[("BACKUP_CONF_DIR", "/no/such/conf.d")]);
        let err = load(&env, None).unwrap_err();
        assert!(err.to_string().contains("no such folder"), "{err}");
        let file = dir.path().join("file.env");
        std::fs::write(&file, "X=1\n").unwrap();
        let env = vars(&[("BACKUP_CONF_DIR", file.to_str().unwrap())]);
        assert!(
            load(&env, None)
                .unwrap_err()
                .to_string()
                .contains("not a folder")
        );
    }

    #[test]
    fn a_destination_configured_without_its_key_variable_is_an_error() {
        let err = config(&[
            ("AWS_S3_BUCKETNAME", "shop-backups"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("WEBDAV_USERNAME", "u"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "AWS_S3_BUCKET_NAME=\"\": not set, so the S3 destination is off, \
                           although AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY are set; did you \
                           mean AWS_S3_BUCKET_NAME instead of AWS_S3_BUCKETNAME?"
            ),
            "{text}"
        );
        assert!(text.contains("WEBDAV_URL=\"\": not set, so the WebDAV destination is off"));
        assert!(!text.contains("s3cr3t"), "{text}");
        // Settings equal to their defaults (a panel writing every variable) are fine.
        assert!(config(&[("SSH_PORT", "22"), ("WEBDAV_PATH", "/")]).is_ok());
    }

    #[test]
    fn a_conf_d_line_that_does_not_parse_is_named_without_its_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("shop.env"),
            "BACKUP_CRON_EXPRESSION=@daily\nAWS_SECRET_ACCESS_KEY=\"hunter2-secret\n",
        )
        .unwrap();
        let env = vars(&[("BACKUP_CONF_DIR", dir.path().to_str().unwrap())]);
        let text = load(&env, None).unwrap_err().to_string();
        assert!(text.contains("shop.env:2"), "{text}");
        assert!(text.contains("AWS_SECRET_ACCESS_KEY=(not shown)"), "{text}");
        assert!(text.contains("unterminated double quote"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn bad_values_stop_the_start_naming_the_variable_and_hiding_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let garbage_pem =
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        let long = format!("{}.tar.gz", "x".repeat(240));
        // (variable, value, what the message must say); each alone must be exit 2.
        let cases: &[(&str, &str, &str)] = &[
            ("BACKUP_FILENAME", &long, "bytes; at most 225"),
            ("BACKUP_FILENAME", "a\tb.tar.gz", "control character"),
            (
                "AWS_ENDPOINT_CA_CERT",
                garbage_pem,
                "expected a PEM certificate",
            ),
            (
                "AZURE_STORAGE_PRIMARY_ACCOUNT_KEY",
                "not base64 !!",
                "not base64",
            ),
            (
                "AZURE_STORAGE_ENDPOINT",
                "https://",
                "expected an http(s) URL",
            ),
            ("DROPBOX_ENDPOINT", "http://", "expected an http(s) URL"),
            (
                "WEBDAV_PASSWORD_FILE",
                empty.to_str().unwrap(),
                "the file is empty",
            ),
            ("BACKUP_PRUNING_LEEWAY", "1000d", "at most 24h"),
        ];
        for (var, value, needle) in cases {
            let mut pairs = vec![
                ("AWS_S3_BUCKET_NAME", "bkt"),
                ("AWS_ACCESS_KEY_ID", "k"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
                ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
                ("DROPBOX_APP_KEY", "k"),
                ("DROPBOX_APP_SECRET", "s"),
                ("DROPBOX_REFRESH_TOKEN", "t"),
                ("WEBDAV_URL", "https://dav.example/"),
                ("WEBDAV_USERNAME", "u"),
            ];
            pairs.push((var, value));
            let err = config(&pairs).expect_err(var);
            let text = err.to_string();
            assert!(text.contains(var) && text.contains(needle), "{var}: {text}");
            if registry::spec(var).is_some_and(|s| s.secret) {
                assert!(!text.contains(value), "{var}: secret shown: {text}");
            }
        }
    }

    #[test]
    fn sizes_split_upload_limits_and_verify_settings_are_checked_together() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("4GB"), Some(4_000_000_000));
        assert_eq!(parse_size("500 MiB"), Some(500 << 20));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("99999999999T"), None);
        let c = config(&[
            ("BACKUP_SPLIT_SIZE", "1GiB"),
            ("BACKUP_UPLOAD_LIMIT", "10MiB"),
            ("BACKUP_VERIFY_LEVEL", "read"),
            ("BACKUP_VERIFY_CRON_EXPRESSION", "@weekly"),
        ])
        .unwrap();
        assert_eq!((c.split, c.upload_limit), (Some(1 << 30), Some(10 << 20)));
        assert_eq!(c.verify_level, Some(crate::manifest::Level::Read));
        assert_eq!(c.verify_cron.unwrap().1, crate::manifest::Level::Hash);
        let err = config(&[
            ("BACKUP_SPLIT_SIZE", "100k"),
            ("BACKUP_UPLOAD_LIMIT", "fast"),
            ("BACKUP_VERIFY_LEVEL", "thorough"),
            ("BACKUP_VERIFY_CRON_EXPRESSION", "every day"),
            ("BACKUP_VERIFY_CRON_LEVEL", "deep"),
        ])
        .unwrap_err();
        assert_eq!(
            problem_vars(&err),
            [
                "BACKUP_SPLIT_SIZE",
                "BACKUP_UPLOAD_LIMIT",
                "BACKUP_VERIFY_LEVEL",
                "BACKUP_VERIFY_CRON_EXPRESSION",
                "BACKUP_VERIFY_CRON_LEVEL"
            ]
        );
    }
}
