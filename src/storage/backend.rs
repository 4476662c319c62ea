//! Which kind of destination: one name per backend, used wherever a backend is named
//! (configuration, `BACKUP_SKIP_BACKENDS_FROM_PRUNE`, logs, notifications).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    Local,
    S3,
    Azure,
    WebDav,
    Sftp,
    Dropbox,
    GoogleDrive,
}

impl Backend {
    pub const ALL: [Backend; 7] = [
        Backend::Local,
        Backend::S3,
        Backend::Azure,
        Backend::WebDav,
        Backend::Sftp,
        Backend::Dropbox,
        Backend::GoogleDrive,
    ];

    /// The name logs and messages use.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Local => "Local",
            Backend::S3 => "S3",
            Backend::Azure => "Azure",
            Backend::WebDav => "WebDAV",
            Backend::Sftp => "SFTP",
            Backend::Dropbox => "Dropbox",
            Backend::GoogleDrive => "GoogleDrive",
        }
    }

    /// The name docker-volume-backup gives it (in `BACKUP_SKIP_BACKENDS_FROM_PRUNE` and in
    /// notification templates' `.Storages`): SFTP is `SSH` there.
    pub fn reference_name(self) -> &'static str {
        match self {
            Backend::Sftp => "SSH",
            other => other.name(),
        }
    }

    /// The names `parse` takes, lower-case, for messages and the API's schema.
    pub fn choices() -> Vec<String> {
        Backend::ALL
            .iter()
            .map(|b| b.name().to_ascii_lowercase())
            .collect()
    }

    /// "local, s3, ... or googledrive": what an error message says is allowed.
    pub fn choices_text() -> String {
        let mut all = Backend::choices();
        let last = all.pop().unwrap_or_default();
        format!("{} or {last}", all.join(", "))
    }

    /// Reads a name as users write it (case-insensitive; SFTP also as `SSH`).
    pub fn parse(raw: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| {
            b.name().eq_ignore_ascii_case(raw) || b.reference_name().eq_ignore_ascii_case(raw)
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_in_any_case_and_sftp_answers_to_ssh() {
        for b in Backend::ALL {
            assert_eq!(Backend::parse(b.name()), Some(b));
            assert_eq!(Backend::parse(&b.name().to_lowercase()), Some(b));
            assert_eq!(Backend::parse(b.reference_name()), Some(b));
        }
        assert_eq!(Backend::parse("ssh"), Some(Backend::Sftp));
        assert_eq!(Backend::parse("googledrive"), Some(Backend::GoogleDrive));
        assert_eq!(Backend::parse("ftp"), None);
        assert_eq!(
            Backend::choices_text(),
            "local, s3, azure, webdav, sftp, dropbox or googledrive"
        );
    }
}
