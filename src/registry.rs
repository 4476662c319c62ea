//! Every variable dunnage knows: name, default, whether it is secret, and which feature owns
//! it. The loader reads only names listed here, print-config and the unknown-variable
//! warning walk this list, and a test checks docs/configuration.md against it, so code and
//! docs cannot drift apart.

/// The feature a variable belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Schedule,
    Archive,
    Local,
    Retention,
    Docker,
    /// Settings shared by the network destinations.
    Remote,
    S3,
    Azure,
    WebDav,
    Sftp,
    Dropbox,
    GoogleDrive,
    Encryption,
    Age,
    /// Keys that open encrypted backups for restore and verify.
    Restore,
    Notifications,
    HealthCheck,
}

impl Feature {
    pub fn title(self) -> &'static str {
        match self {
            Feature::Schedule => "schedule",
            Feature::Archive => "archive",
            Feature::Local => "local destination",
            Feature::Retention => "retention",
            Feature::Docker => "Docker (stopping containers)",
            Feature::Remote => "network destinations",
            Feature::S3 => "the S3 destination",
            Feature::Azure => "the Azure Blob destination",
            Feature::WebDav => "the WebDAV destination",
            Feature::Sftp => "the SFTP destination",
            Feature::Dropbox => "the Dropbox destination",
            Feature::GoogleDrive => "the Google Drive destination",
            Feature::Encryption => "OpenPGP encryption",
            Feature::Age => "age encryption",
            Feature::Restore => "restore and verify",
            Feature::Notifications => "notifications",
            Feature::HealthCheck => "health pings",
        }
    }
}

/// One known variable.
#[derive(Debug, Clone, Copy)]
pub struct VarSpec {
    pub name: &'static str,
    /// The value used when the variable is unset (`None`: unset means off/empty).
    pub default: Option<&'static str>,
    /// Never printed or logged; print-config shows `(redacted)`.
    pub secret: bool,
    pub feature: Feature,
    /// Setting this variable turns its feature on (a destination's key variable).
    pub enables: bool,
}

const fn var(name: &'static str, default: Option<&'static str>, feature: Feature) -> VarSpec {
    VarSpec {
        name,
        default,
        secret: false,
        feature,
        enables: false,
    }
}

const fn secret(name: &'static str, feature: Feature) -> VarSpec {
    VarSpec {
        name,
        default: None,
        secret: true,
        feature,
        enables: false,
    }
}

const fn key(mut spec: VarSpec) -> VarSpec {
    spec.enables = true;
    spec
}

use Feature::*;

pub static VARIABLES: &[VarSpec] = &[
    // Schedule
    var("BACKUP_CRON_EXPRESSION", Some("@daily"), Schedule),
    var("BACKUP_JITTER", Some("0s"), Schedule),
    var("LOCK_TIMEOUT", Some("60m"), Schedule),
    var(
        "BACKUP_LOCK_FILE",
        Some("/var/lock/dockervolumebackup.lock"),
        Schedule,
    ),
    var(
        "BACKUP_CONF_DIR",
        Some("/etc/dockervolumebackup/conf.d"),
        Schedule,
    ),
    var("TZ", None, Schedule),
    var("DUNNAGE_API_LISTEN", None, Schedule),
    var("DUNNAGE_CONCURRENCY", Some("1"), Schedule),
    secret("DUNNAGE_API_TOKENS", Schedule),
    // Archive
    var("BACKUP_SOURCES", Some("/backup"), Archive),
    var("BACKUP_EXCLUDE_REGEXP", None, Archive),
    var("BACKUP_COMPRESSION", Some("gz"), Archive),
    var("BACKUP_COMPRESSION_LEVEL", None, Archive),
    var("GZIP_PARALLELISM", Some("0"), Archive),
    var("BACKUP_COMPRESSION_THREADS", Some("0"), Archive),
    var("BACKUP_PROGRESS_INTERVAL", Some("1m"), Archive),
    var("BACKUP_SPLIT_SIZE", Some("0"), Archive),
    var("BACKUP_UPLOAD_LIMIT", Some("0"), Archive),
    var("BACKUP_VERIFY_LEVEL", Some("off"), Archive),
    var("BACKUP_VERIFY_CRON_EXPRESSION", None, Schedule),
    var("BACKUP_VERIFY_CRON_LEVEL", Some("hash"), Schedule),
    var(
        "BACKUP_FILENAME",
        Some("backup-%Y-%m-%dT%H-%M-%S.{{ .Extension }}"),
        Archive,
    ),
    var("BACKUP_FILENAME_EXPAND", Some("false"), Archive),
    var("BACKUP_FROM_SNAPSHOT", Some("false"), Archive),
    // Local destination
    var("BACKUP_ARCHIVE", Some("/archive"), Local),
    var("BACKUP_LATEST_SYMLINK", None, Local),
    // Retention
    var("BACKUP_RETENTION_DAYS", Some("-1"), Retention),
    var("BACKUP_PRUNING_LEEWAY", Some("1m"), Retention),
    var("BACKUP_PRUNING_PREFIX", None, Retention),
    var("BACKUP_SKIP_BACKENDS_FROM_PRUNE", None, Retention),
    var("BACKUP_RETENTION_KEEP_LAST", None, Retention),
    var("BACKUP_RETENTION_KEEP_DAILY", None, Retention),
    var("BACKUP_RETENTION_KEEP_WEEKLY", None, Retention),
    var("BACKUP_RETENTION_KEEP_MONTHLY", None, Retention),
    var("BACKUP_RETENTION_KEEP_YEARLY", None, Retention),
    // Docker
    var("DOCKER_HOST", None, Docker),
    var("BACKUP_STOP_DURING_BACKUP_LABEL", Some("true"), Docker),
    var(
        "BACKUP_STOP_DURING_BACKUP_NO_RESTART_LABEL",
        Some("true"),
        Docker,
    ),
    var("BACKUP_STOP_CONTAINER_LABEL", None, Docker),
    var("BACKUP_STOP_TIMEOUT", Some("10s"), Docker),
    var("BACKUP_STATE_DIR", Some("/var/lib/dunnage"), Docker),
    var("BACKUP_SPOOL", Some("auto"), Docker),
    var("BACKUP_SPOOL_DIR", Some("/tmp"), Docker),
    var("BACKUP_STOP_SERVICE_TIMEOUT", Some("5m"), Docker),
    var("EXEC_LABEL", None, Docker),
    var("EXEC_FORWARD_OUTPUT", Some("false"), Docker),
    var("EXEC_TIMEOUT", Some("1h"), Docker),
    // Every network destination
    var("BACKUP_RETRY_TIMEOUT", Some("2m"), Remote),
    // S3
    key(var("AWS_S3_BUCKET_NAME", None, S3)),
    var("AWS_S3_PATH", None, S3),
    var("AWS_ACCESS_KEY_ID", None, S3),
    secret("AWS_SECRET_ACCESS_KEY", S3),
    var("AWS_IAM_ROLE_ENDPOINT", None, S3),
    var("AWS_ENDPOINT", Some("s3.amazonaws.com"), S3),
    var("AWS_ENDPOINT_PROTO", Some("https"), S3),
    var("AWS_ENDPOINT_INSECURE", Some("false"), S3),
    var("AWS_ENDPOINT_CA_CERT", None, S3),
    var("AWS_STORAGE_CLASS", None, S3),
    var("AWS_PART_SIZE", Some("16"), S3),
    var("AWS_S3_MAX_PARTS", None, S3),
    var("AWS_REGION", None, S3),
    // Azure
    key(var("AZURE_STORAGE_ACCOUNT_NAME", None, Azure)),
    secret("AZURE_STORAGE_PRIMARY_ACCOUNT_KEY", Azure),
    key(secret("AZURE_STORAGE_CONNECTION_STRING", Azure)),
    var("AZURE_STORAGE_CONTAINER_NAME", None, Azure),
    var("AZURE_STORAGE_PATH", None, Azure),
    var(
        "AZURE_STORAGE_ENDPOINT",
        Some("https://{{ .AccountName }}.blob.core.windows.net/"),
        Azure,
    ),
    var("AZURE_STORAGE_ACCESS_TIER", None, Azure),
    var("AZURE_STORAGE_BLOCK_SIZE", Some("16"), Azure),
    // WebDAV
    key(var("WEBDAV_URL", None, WebDav)),
    var("WEBDAV_PATH", Some("/"), WebDav),
    var("WEBDAV_USERNAME", None, WebDav),
    secret("WEBDAV_PASSWORD", WebDav),
    var("WEBDAV_URL_INSECURE", Some("false"), WebDav),
    // SFTP
    key(var("SSH_HOST_NAME", None, Sftp)),
    var("SSH_PORT", Some("22"), Sftp),
    var("SSH_USER", None, Sftp),
    secret("SSH_PASSWORD", Sftp),
    var("SSH_IDENTITY_FILE", Some("/root/.ssh/id_rsa"), Sftp),
    secret("SSH_IDENTITY_PASSPHRASE", Sftp),
    var("SSH_REMOTE_PATH", None, Sftp),
    var("SSH_KNOWN_HOSTS", None, Sftp),
    var("SSH_HOST_KEY_FINGERPRINT", None, Sftp),
    // Dropbox
    key(secret("DROPBOX_REFRESH_TOKEN", Dropbox)),
    key(var("DROPBOX_APP_KEY", None, Dropbox)),
    key(secret("DROPBOX_APP_SECRET", Dropbox)),
    var("DROPBOX_REMOTE_PATH", None, Dropbox),
    var("DROPBOX_CONCURRENCY_LEVEL", Some("6"), Dropbox),
    var(
        "DROPBOX_ENDPOINT",
        Some("https://api.dropbox.com/"),
        Dropbox,
    ),
    var(
        "DROPBOX_OAUTH2_ENDPOINT",
        Some("https://api.dropbox.com/"),
        Dropbox,
    ),
    // Google Drive
    key(secret("GOOGLE_DRIVE_CREDENTIALS_JSON", GoogleDrive)),
    var("GOOGLE_DRIVE_FOLDER_ID", None, GoogleDrive),
    var("GOOGLE_DRIVE_IMPERSONATE_SUBJECT", None, GoogleDrive),
    var("GOOGLE_DRIVE_TEAM_DRIVE_ID", None, GoogleDrive),
    var(
        "GOOGLE_DRIVE_ENDPOINT",
        Some("https://www.googleapis.com/drive/v3/"),
        GoogleDrive,
    ),
    var("GOOGLE_DRIVE_TOKEN_URL", None, GoogleDrive),
    // Encryption
    key(secret("GPG_PASSPHRASE", Encryption)),
    key(var("GPG_PUBLIC_KEY_RING", None, Encryption)),
    key(secret("AGE_PASSPHRASE", Age)),
    key(var("AGE_PUBLIC_KEYS", None, Age)),
    // Restore and verify: what opens encrypted backups
    secret("AGE_IDENTITIES", Restore),
    secret("GPG_SECRET_KEY_RING", Restore),
    secret("GPG_SECRET_KEY_PASSPHRASE", Restore),
    // Notifications
    key(secret("NOTIFICATION_URLS", Notifications)),
    var("NOTIFICATION_LEVEL", Some("error"), Notifications),
    var("NOTIFICATION_CA_CERT", None, Notifications),
    var(
        "NOTIFICATION_TEMPLATES_DIR",
        Some("/etc/dockervolumebackup/notifications.d"),
        Notifications,
    ),
    key(var("EMAIL_NOTIFICATION_RECIPIENT", None, Notifications)),
    var(
        "EMAIL_NOTIFICATION_SENDER",
        Some("noreply@nohost"),
        Notifications,
    ),
    var("EMAIL_SMTP_HOST", None, Notifications),
    var("EMAIL_SMTP_PORT", Some("587"), Notifications),
    var("EMAIL_SMTP_USERNAME", None, Notifications),
    secret("EMAIL_SMTP_PASSWORD", Notifications),
    key(secret("BACKUP_HEALTHCHECK_URL", HealthCheck)),
];

/// Prefixes of variables that are meant for dunnage: an unknown one is probably a typo.
pub const OUR_PREFIXES: &[&str] = &[
    "BACKUP_",
    "AWS_",
    "AZURE_",
    "WEBDAV_",
    "SSH_",
    "DROPBOX_",
    "NOTIFICATION_",
    "GPG_",
    "AGE_",
    "EMAIL_",
    "GOOGLE_DRIVE_",
    "EXEC_",
];

pub fn spec(name: &str) -> Option<&'static VarSpec> {
    VARIABLES.iter().find(|v| v.name == name)
}

/// The closest known name, for "did you mean" hints.
pub fn closest(name: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .map(|v| (strsim::levenshtein(name, v.name), v.name))
        .filter(|(d, known)| *d <= 3.max(known.len() / 4))
        .min()
        .map(|(_, n)| n)
        .or_else(|| {
            // A known name that ends with what was written (HEALTHCHECK_URL), or that
            // starts with it (AWS_S3_BUCKET).
            VARIABLES
                .iter()
                .find(|v| {
                    v.name.ends_with(&format!("_{name}")) || v.name.starts_with(&format!("{name}_"))
                })
                .map(|v| v.name)
        })
}

/// The known variable `name` was surely meant to be: the same name in another case, or
/// one at most two edits away. Such a name is an error, not a warning: the setting the
/// user believes is on (retention, say) would silently be off.
pub fn typo_of(name: &str) -> Option<&'static VarSpec> {
    let upper = name.to_ascii_uppercase();
    if upper != name {
        if let Some(spec) = spec(&upper) {
            return Some(spec);
        }
    }
    // Near misses only among names with our prefixes: short or foreign names (X, TZ, PATH)
    // are too close to each other to guess.
    if spec(name).is_some() || !OUR_PREFIXES.iter().any(|p| upper.starts_with(p)) {
        return None;
    }
    VARIABLES
        .iter()
        .map(|v| (strsim::levenshtein(&upper, v.name), v))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = VARIABLES.iter().map(|v| v.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn typos_find_their_variable() {
        assert_eq!(
            closest("BACKUP_RETENTON_DAYS"),
            Some("BACKUP_RETENTION_DAYS")
        );
        assert_eq!(closest("HEALTHCHECK_URL"), Some("BACKUP_HEALTHCHECK_URL"));
        assert_eq!(closest("BACKUP_CRON"), Some("BACKUP_CRON_EXPRESSION"));
        assert_eq!(closest("AWS_S3_BUCKET"), Some("AWS_S3_BUCKET_NAME"));
    }

    #[test]
    fn near_misses_and_other_cases_are_typos_other_names_are_not() {
        let typo = |n: &str| typo_of(n).map(|s| s.name);
        assert_eq!(typo("BACKUP_RETENTON_DAYS"), Some("BACKUP_RETENTION_DAYS"));
        assert_eq!(typo("backup_retention_days"), Some("BACKUP_RETENTION_DAYS"));
        assert_eq!(typo("AWS_SECRET_ACESS_KEY"), Some("AWS_SECRET_ACCESS_KEY"));
        assert_eq!(typo("BACKUP_RETENTION_DAYS"), None, "a known name");
        // Users' own variables for BACKUP_FILENAME_EXPAND, and far-off names.
        assert_eq!(typo("BACKUP_HOSTNAME_SUFFIX"), None);
        assert_eq!(typo("AWS_S3_BUCKET"), None);
        assert_eq!(typo("X"), None, "not one of our prefixes");
    }
}
