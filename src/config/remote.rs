//! Settings of the network destinations: `AWS_*` (S3), `AZURE_STORAGE_*` (Azure Blob),
//! `WEBDAV_*`, `SSH_*` (SFTP), `DROPBOX_*` and `GOOGLE_DRIVE_*`.

use crate::net::RetryPolicy;
use crate::storage::{
    ACCESS_TIERS, AzureConfig, AzureCredentials, DropboxConfig, GoogleDriveConfig, HostKeyCheck,
    S3Config, S3Credentials, SftpConfig, WebDavConfig, parse_connection_string, s3, sftp,
};

use super::Parser;

const MIB: u64 = 1 << 20;

/// `folder/sub/` and `/folder/sub` both mean `folder/sub`.
fn folder(raw: &str) -> String {
    raw.trim_matches('/').to_owned()
}

impl Parser<'_> {
    pub(super) fn retry(&mut self) -> RetryPolicy {
        RetryPolicy::with_timeout(self.duration("BACKUP_RETRY_TIMEOUT"))
    }

    pub(super) fn s3(&mut self) -> Option<S3Config> {
        let bucket = self.optional("AWS_S3_BUCKET_NAME")?;
        let credentials = self.s3_credentials();

        let endpoint = self.string("AWS_ENDPOINT");
        if let Err(why) = bucket_name(&bucket, endpoint == s3::AWS_ENDPOINT) {
            self.problem("AWS_S3_BUCKET_NAME", &bucket, why);
        }
        if let Err(why) = host_and_port(&endpoint) {
            self.problem(
                "AWS_ENDPOINT",
                &endpoint,
                format!(
                    "{why}; expected host[:port] such as s3.amazonaws.com or minio:9000 (the \
                     scheme goes in AWS_ENDPOINT_PROTO)"
                ),
            );
        }
        let proto = self.string("AWS_ENDPOINT_PROTO").to_ascii_lowercase();
        if proto != "http" && proto != "https" {
            self.problem("AWS_ENDPOINT_PROTO", &proto, "expected https or http");
        }
        let insecure = self.bool("AWS_ENDPOINT_INSECURE");
        if insecure && proto == "http" {
            self.problem(
                "AWS_ENDPOINT_INSECURE",
                "true",
                "only applies with AWS_ENDPOINT_PROTO=https (http has no certificate to check)",
            );
        }
        let ca_cert = self.certificate("AWS_ENDPOINT_CA_CERT");
        let part_size = self.number("AWS_PART_SIZE", 5..=5120).unwrap_or(16) as u64 * MIB;
        let max_parts = self
            .number("AWS_S3_MAX_PARTS", 1..=s3::MAX_PARTS as u32)
            .map_or_else(|| s3::default_max_parts(&endpoint), u64::from);
        let region = self
            .optional("AWS_REGION")
            .or_else(|| s3::region_from_endpoint(&endpoint));
        let aws_endpoint = endpoint == s3::AWS_ENDPOINT;
        Some(S3Config {
            bucket,
            folder: folder(&self.string("AWS_S3_PATH")),
            credentials: credentials?,
            endpoint,
            proto,
            insecure,
            ca_cert,
            storage_class: self.storage_class(aws_endpoint),
            region,
            part_size,
            max_parts,
        })
    }

    fn s3_credentials(&mut self) -> Option<S3Credentials> {
        let key_id = self.optional("AWS_ACCESS_KEY_ID");
        let secret = self.optional("AWS_SECRET_ACCESS_KEY");
        if let Some(endpoint) = self.optional("AWS_IAM_ROLE_ENDPOINT") {
            if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                self.problem(
                    "AWS_IAM_ROLE_ENDPOINT",
                    &endpoint,
                    "expected a URL such as http://169.254.169.254",
                );
            }
            if key_id.is_some() || secret.is_some() {
                self.warnings.push(
                    "AWS_IAM_ROLE_ENDPOINT is set: the static AWS_ACCESS_KEY_ID / \
                     AWS_SECRET_ACCESS_KEY are ignored"
                        .into(),
                );
            }
            return Some(S3Credentials::Metadata { endpoint });
        }
        match (key_id, secret) {
            (Some(key_id), Some(secret)) => Some(S3Credentials::Static { key_id, secret }),
            (Some(_), None) => {
                self.problem(
                    "AWS_SECRET_ACCESS_KEY",
                    "",
                    "AWS_ACCESS_KEY_ID is set; the secret key is needed with it",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(
                    "AWS_ACCESS_KEY_ID",
                    "",
                    "AWS_SECRET_ACCESS_KEY is set; the key id is needed with it",
                );
                None
            }
            (None, None) => {
                let bucket = self.string("AWS_S3_BUCKET_NAME");
                self.problem(
                    "AWS_S3_BUCKET_NAME",
                    &bucket,
                    "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                     AWS_IAM_ROLE_ENDPOINT",
                );
                None
            }
        }
    }

    /// `AWS_STORAGE_CLASS`: one of AWS's classes on AWS; elsewhere a class name in the
    /// same spelling (providers add their own).
    fn storage_class(&mut self, aws: bool) -> Option<String> {
        const AWS_CLASSES: &[&str] = &[
            "STANDARD",
            "REDUCED_REDUNDANCY",
            "STANDARD_IA",
            "ONEZONE_IA",
            "INTELLIGENT_TIERING",
            "GLACIER",
            "DEEP_ARCHIVE",
            "GLACIER_IR",
            "OUTPOSTS",
            "SNOW",
            "EXPRESS_ONEZONE",
        ];
        let class = self.optional("AWS_STORAGE_CLASS")?;
        let spelled = class
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if (aws && !AWS_CLASSES.contains(&class.as_str())) || !spelled {
            self.problem(
                "AWS_STORAGE_CLASS",
                &class,
                format!(
                    "expected a storage class such as {}",
                    AWS_CLASSES.join(", ")
                ),
            );
            return None;
        }
        Some(class)
    }

    /// A PEM certificate given inline or as a path, checked to hold at least one certificate.
    pub(super) fn certificate(&mut self, key: &str) -> Option<String> {
        let raw = self.optional(key)?;
        let pem = if raw.trim_start().starts_with("-----BEGIN") {
            raw.clone()
        } else {
            match std::fs::read_to_string(&raw) {
                Ok(text) => text,
                Err(e) => {
                    self.problem(key, &raw, format!("cannot read the certificate file: {e}"));
                    return None;
                }
            }
        };
        match parse_certificates(&pem) {
            Ok(()) => Some(pem),
            Err(_) => {
                let shown = if raw.len() > 60 { "(inline PEM)" } else { &raw };
                self.problem(
                    key,
                    shown,
                    "expected a PEM certificate (-----BEGIN CERTIFICATE-----), inline or as a \
                     file path",
                );
                None
            }
        }
    }

    fn check_ssh_host(&mut self, host: &str) {
        let checked = host_and_port(host).and_then(|port| match port {
            Some(_) => Err("a port goes in SSH_PORT".to_owned()),
            None => Ok(()),
        });
        if let Err(why) = checked {
            let why = format!("{why}; expected a host name or address");
            self.problem("SSH_HOST_NAME", host, why);
        }
    }

    pub(super) fn azure(&mut self) -> Option<AzureConfig> {
        let account = self.optional("AZURE_STORAGE_ACCOUNT_NAME");
        let key = self.optional("AZURE_STORAGE_PRIMARY_ACCOUNT_KEY");
        if let Some(k) = &key {
            use base64::Engine;
            if base64::engine::general_purpose::STANDARD.decode(k).is_err() {
                self.problem(
                    "AZURE_STORAGE_PRIMARY_ACCOUNT_KEY",
                    k,
                    "not base64: copy the key from the storage account's access keys",
                );
            }
        }
        let connection = self.optional("AZURE_STORAGE_CONNECTION_STRING");
        if account.is_none() && connection.is_none() {
            if key.is_some() {
                self.problem(
                    "AZURE_STORAGE_ACCOUNT_NAME",
                    "",
                    "AZURE_STORAGE_PRIMARY_ACCOUNT_KEY is set; the account name is needed with it",
                );
            }
            return None;
        }
        let container = self.optional("AZURE_STORAGE_CONTAINER_NAME");
        if container.is_none() {
            self.problem(
                "AZURE_STORAGE_CONTAINER_NAME",
                "",
                "the Azure destination needs the container to store backups in",
            );
        }
        let access_tier = self.optional("AZURE_STORAGE_ACCESS_TIER").and_then(|raw| {
            let tier = ACCESS_TIERS
                .iter()
                .find(|t| t.eq_ignore_ascii_case(&raw))
                .map(|t| (*t).to_owned());
            if tier.is_none() {
                self.problem(
                    "AZURE_STORAGE_ACCESS_TIER",
                    &raw,
                    format!("expected one of {}", ACCESS_TIERS.join(", ")),
                );
            }
            tier
        });
        let block_size = self
            .number("AZURE_STORAGE_BLOCK_SIZE", 1..=4000)
            .unwrap_or(16) as u64
            * MIB;

        let (account, credentials, endpoint) = match (connection, key) {
            (Some(_), Some(_)) => {
                self.problem(
                    "AZURE_STORAGE_CONNECTION_STRING",
                    "",
                    "set either AZURE_STORAGE_CONNECTION_STRING or \
                     AZURE_STORAGE_PRIMARY_ACCOUNT_KEY, not both",
                );
                return None;
            }
            (Some(text), None) => self.azure_connection_string(&text, account)?,
            (None, key) => {
                let account = account?;
                let credentials = key.map_or(AzureCredentials::ManagedIdentity, |k| {
                    AzureCredentials::AccountKey(k)
                });
                let endpoint = self.azure_endpoint(&account)?;
                (account, credentials, endpoint)
            }
        };
        Some(AzureConfig {
            account,
            credentials,
            container: container?,
            folder: folder(&self.string("AZURE_STORAGE_PATH")),
            endpoint,
            access_tier,
            block_size,
        })
    }

    fn azure_connection_string(
        &mut self,
        text: &str,
        account: Option<String>,
    ) -> Option<(String, AzureCredentials, String)> {
        const VAR: &str = "AZURE_STORAGE_CONNECTION_STRING";
        let cs = match parse_connection_string(text) {
            Ok(cs) => cs,
            Err(why) => {
                self.problem(VAR, "", format!("not a connection string: {why}"));
                return None;
            }
        };
        let account = match (cs.account, account) {
            (Some(a), Some(b)) if a != b => {
                self.problem(
                    "AZURE_STORAGE_ACCOUNT_NAME",
                    &b,
                    format!("differs from the connection string's AccountName {a:?}"),
                );
                return None;
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => {
                self.problem(
                    VAR,
                    "",
                    "has no AccountName; add it, or set AZURE_STORAGE_ACCOUNT_NAME",
                );
                return None;
            }
        };
        let credentials = match (cs.key, cs.sas) {
            (Some(key), _) => AzureCredentials::AccountKey(key),
            (None, Some(sas)) => AzureCredentials::SharedAccessSignature(sas),
            (None, None) => {
                self.problem(VAR, "", "has neither AccountKey nor SharedAccessSignature");
                return None;
            }
        };
        let endpoint = cs.blob_endpoint.unwrap_or_default();
        Some((account, credentials, endpoint))
    }

    pub(super) fn webdav(&mut self) -> Option<WebDavConfig> {
        let raw = self.optional("WEBDAV_URL")?;
        let url = match reqwest::Url::parse(&raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                if !url.username().is_empty() || url.password().is_some() {
                    self.problem(
                        "WEBDAV_URL",
                        "(contains credentials)",
                        "put the user and password in WEBDAV_USERNAME and WEBDAV_PASSWORD, \
                         not in the URL",
                    );
                    return None;
                }
                url
            }
            _ => {
                self.problem(
                    "WEBDAV_URL",
                    &raw,
                    "expected an http(s) URL such as https://cloud.example/remote.php/webdav/",
                );
                return None;
            }
        };
        let insecure = self.bool("WEBDAV_URL_INSECURE");
        if insecure && url.scheme() == "http" {
            // The reference ignores it; refusing would stop a configuration that works there.
            self.warnings.push(
                "WEBDAV_URL_INSECURE=true has no effect: WEBDAV_URL is http, which has no \
                 certificate to check"
                    .into(),
            );
        }
        let username = self.optional("WEBDAV_USERNAME");
        let password = self.optional("WEBDAV_PASSWORD");
        if password.is_some() && username.is_none() {
            self.problem(
                "WEBDAV_USERNAME",
                "",
                "WEBDAV_PASSWORD is set; the user name is needed with it",
            );
        }
        Some(WebDavConfig {
            url,
            folder: folder(&self.string("WEBDAV_PATH")),
            username,
            password,
            insecure,
        })
    }

    /// `SSH_KNOWN_HOSTS` must be a known_hosts file listing this host.
    fn check_known_hosts(&mut self, path: &str, host: &str, port: u16) {
        let file = std::path::Path::new(path);
        if !file.is_file() {
            self.problem("SSH_KNOWN_HOSTS", path, "no such file");
            return;
        }
        match sftp::KnownHosts::load(file) {
            Err(why) => self.problem("SSH_KNOWN_HOSTS", path, why),
            Ok(listed) if listed.keys_for(host, port).is_empty() => self.problem(
                "SSH_KNOWN_HOSTS",
                path,
                format!(
                    "lists no key for {}; add it with ssh-keyscan -p {port} {host}",
                    if port == 22 {
                        host.to_owned()
                    } else {
                        format!("[{host}]:{port}")
                    }
                ),
            ),
            Ok(_) => {}
        }
    }

    /// The private key must load, with `SSH_IDENTITY_PASSPHRASE` when it is protected.
    fn check_identity(&mut self, file: &std::path::Path, passphrase: Option<&str>) {
        let Err(e) = russh::keys::load_secret_key(file, passphrase) else {
            return;
        };
        let shown = file.display().to_string();
        match (e, passphrase) {
            (russh::keys::Error::KeyIsEncrypted, None) => self.problem(
                "SSH_IDENTITY_PASSPHRASE",
                "",
                format!(
                    "the key in SSH_IDENTITY_FILE={shown} is protected by a passphrase; set it here"
                ),
            ),
            (_, Some(_)) if is_encrypted_key(file) => self.problem(
                "SSH_IDENTITY_PASSPHRASE",
                "",
                format!("does not open the key in SSH_IDENTITY_FILE={shown}"),
            ),
            (e, _) => self.problem(
                "SSH_IDENTITY_FILE",
                &shown,
                format!("is not a private key OpenSSH or PEM format can read ({e})"),
            ),
        }
    }

    /// `state_dir` is `BACKUP_STATE_DIR`, where keys trusted on first use are kept.
    pub(super) fn sftp(&mut self, state_dir: &std::path::Path) -> Option<SftpConfig> {
        let host = self.optional("SSH_HOST_NAME")?;
        self.check_ssh_host(&host);
        let port = self.number("SSH_PORT", 1..=65535).unwrap_or(22) as u16;
        let user = self.optional("SSH_USER").unwrap_or_else(|| {
            self.problem(
                "SSH_USER",
                "",
                "the SFTP destination needs the user to log in as",
            );
            String::new()
        });
        let password = self.optional("SSH_PASSWORD");
        let passphrase = self.optional("SSH_IDENTITY_PASSPHRASE");
        // The default key path is used only when the file exists (as in the reference);
        // an explicitly set one must exist.
        let identity_file = match self.vars.get("SSH_IDENTITY_FILE") {
            Some(raw) if !raw.is_empty() => {
                let path = std::path::PathBuf::from(raw);
                if path.is_file() {
                    Some(path)
                } else {
                    self.problem(
                        "SSH_IDENTITY_FILE",
                        raw,
                        "no such file; mount the private key there or unset the variable",
                    );
                    None
                }
            }
            // Set but empty: no key.
            Some(_) => None,
            None => Some(std::path::PathBuf::from(self.string("SSH_IDENTITY_FILE")))
                .filter(|p| p.is_file()),
        };
        if let Some(file) = &identity_file {
            self.check_identity(file, passphrase.as_deref());
        }
        if identity_file.is_none() && password.is_none() {
            self.problem(
                "SSH_PASSWORD",
                "",
                "the SFTP destination needs SSH_PASSWORD or a private key in SSH_IDENTITY_FILE",
            );
        }
        if passphrase.is_some() && identity_file.is_none() {
            self.warnings.push(
                "SSH_IDENTITY_PASSPHRASE is set but there is no SSH_IDENTITY_FILE to use it with"
                    .into(),
            );
        }
        let known_hosts = self.optional("SSH_KNOWN_HOSTS");
        let pinned = self.optional("SSH_HOST_KEY_FINGERPRINT");
        let host_key = match (known_hosts, pinned) {
            (Some(_), Some(fp)) => {
                self.problem(
                    "SSH_HOST_KEY_FINGERPRINT",
                    &fp,
                    "set either SSH_KNOWN_HOSTS or SSH_HOST_KEY_FINGERPRINT, not both",
                );
                return None;
            }
            (Some(path), None) => {
                self.check_known_hosts(&path, &host, port);
                HostKeyCheck::KnownHosts(path.into())
            }
            (None, Some(fp)) => {
                let valid = fp.strip_prefix("SHA256:").is_some_and(|b64| {
                    b64.len() == 43
                        && b64
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
                });
                if !valid {
                    self.problem(
                        "SSH_HOST_KEY_FINGERPRINT",
                        &fp,
                        "expected SHA256: and 43 base64 characters, as ssh-keygen -lf prints",
                    );
                }
                HostKeyCheck::Fingerprint(fp)
            }
            (None, None) => HostKeyCheck::TrustOnFirstUse(state_dir.join(sftp::TRUSTED_KEYS_FILE)),
        };
        Some(SftpConfig {
            host,
            port,
            user,
            password,
            identity_file,
            passphrase,
            remote_path: self
                .string("SSH_REMOTE_PATH")
                .trim_end_matches('/')
                .to_owned(),
            host_key,
        })
    }

    pub(super) fn dropbox(&mut self) -> Option<DropboxConfig> {
        let token = self.optional("DROPBOX_REFRESH_TOKEN");
        let key = self.optional("DROPBOX_APP_KEY");
        let secret = self.optional("DROPBOX_APP_SECRET");
        if token.is_none() && key.is_none() && secret.is_none() {
            return None;
        }
        // All three or a clear error (the reference silently skips Dropbox otherwise).
        for (name, value) in [
            ("DROPBOX_REFRESH_TOKEN", &token),
            ("DROPBOX_APP_KEY", &key),
            ("DROPBOX_APP_SECRET", &secret),
        ] {
            if value.is_none() {
                self.problem(
                    name,
                    "",
                    "Dropbox needs DROPBOX_APP_KEY, DROPBOX_APP_SECRET and DROPBOX_REFRESH_TOKEN \
                     together",
                );
            }
        }
        let concurrency = self
            .number("DROPBOX_CONCURRENCY_LEVEL", 1..=64)
            .unwrap_or(6) as usize;
        let mut endpoint = |var: &str| -> String {
            let raw = self.string(var);
            if let Err(why) = http_url(&raw) {
                self.problem(var, &raw, format!("expected an http(s) URL ({why})"));
            }
            raw
        };
        let endpoint_url = endpoint("DROPBOX_ENDPOINT");
        let oauth2_endpoint = endpoint("DROPBOX_OAUTH2_ENDPOINT");
        let raw_path = self.string("DROPBOX_REMOTE_PATH");
        let folder = match raw_path.trim_matches('/') {
            "" => String::new(),
            p => format!("/{p}"),
        };
        Some(DropboxConfig {
            app_key: key?,
            app_secret: secret?,
            refresh_token: token?,
            folder,
            concurrency,
            endpoint: endpoint_url,
            oauth2_endpoint,
        })
    }

    pub(super) fn gdrive(&mut self) -> Option<GoogleDriveConfig> {
        const CREDENTIALS: &str = "GOOGLE_DRIVE_CREDENTIALS_JSON";
        let raw = self.optional(CREDENTIALS)?;
        let account = crate::storage::parse_credentials(&raw)
            .map_err(|why| {
                self.problem(
                    CREDENTIALS,
                    &raw,
                    format!(
                        "{why}; expected the JSON key file of a service account (or \
                         GOOGLE_DRIVE_CREDENTIALS_JSON_FILE naming it)"
                    ),
                );
            })
            .ok();
        let drive = self.drive_id("GOOGLE_DRIVE_TEAM_DRIVE_ID");
        // Unset means the drive's top level, as in the reference: the user's own drive
        // ("root") or the shared drive, whose id is its top folder's.
        let folder = match self.optional("GOOGLE_DRIVE_FOLDER_ID") {
            Some(_) => self.drive_id("GOOGLE_DRIVE_FOLDER_ID"),
            None => Some(drive.clone().unwrap_or_else(|| "root".into())),
        };
        let subject = self.optional("GOOGLE_DRIVE_IMPERSONATE_SUBJECT");
        if let Some(s) = subject.as_ref().filter(|s| !s.contains('@')) {
            self.problem(
                "GOOGLE_DRIVE_IMPERSONATE_SUBJECT",
                s,
                "expected the e-mail address of the user the service account acts for",
            );
        }
        let raw_endpoint = self.string("GOOGLE_DRIVE_ENDPOINT");
        // Metadata paths are relative to the endpoint, which therefore ends in '/'.
        let endpoint = match url::Url::parse(&format!("{}/", raw_endpoint.trim_end_matches('/'))) {
            Ok(url) if http_url(url.as_str()).is_ok() => Some(url),
            _ => {
                self.problem(
                    "GOOGLE_DRIVE_ENDPOINT",
                    &raw_endpoint,
                    "expected an http(s) URL such as https://www.googleapis.com/drive/v3/",
                );
                None
            }
        };
        let token_url = match self.optional("GOOGLE_DRIVE_TOKEN_URL") {
            Some(url) => {
                if let Err(why) = http_url(&url) {
                    self.problem(
                        "GOOGLE_DRIVE_TOKEN_URL",
                        &url,
                        format!("expected an http(s) URL ({why})"),
                    );
                }
                url
            }
            None => match account.as_ref().and_then(|a| a.token_uri.clone()) {
                Some(url) if http_url(&url).is_err() => {
                    self.problem(CREDENTIALS, &raw, "its \"token_uri\" is not an http(s) URL");
                    url
                }
                Some(url) => url,
                None => crate::storage::gdrive::DEFAULT_TOKEN_URL.to_owned(),
            },
        };
        let account = account?;
        Some(GoogleDriveConfig {
            client_email: account.client_email,
            private_key: account.private_key,
            folder: folder?,
            subject,
            drive,
            endpoint: endpoint?,
            token_url,
        })
    }

    /// A Drive folder or shared-drive id in `var`, when set.
    fn drive_id(&mut self, var: &str) -> Option<String> {
        let value = self.optional(var)?;
        if value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Some(value);
        }
        self.problem(
            var,
            &value,
            "expected an id (letters, digits, - and _): the last part of the folder's or \
             drive's address in Drive (drive.google.com/drive/folders/ID)",
        );
        None
    }

    /// `AZURE_STORAGE_ENDPOINT` with `{{ .AccountName }}` filled in.
    fn azure_endpoint(&mut self, account: &str) -> Option<String> {
        let raw = self.string("AZURE_STORAGE_ENDPOINT");
        let re = regex::Regex::new(r"\{\{\s*\.AccountName\s*\}\}").expect("valid pattern");
        let endpoint = re
            .replace_all(&raw, account)
            .trim_end_matches('/')
            .to_owned();
        // A brace left over is a placeholder other than AccountName.
        if http_url(&endpoint).is_err() || endpoint.contains(['{', '}']) {
            self.problem(
                "AZURE_STORAGE_ENDPOINT",
                &raw,
                "expected an http(s) URL; {{ .AccountName }} is the only placeholder",
            );
            return None;
        }
        Some(endpoint)
    }
}

/// Every certificate of a PEM bundle parses as one (not only its PEM framing): at least one.
fn parse_certificates(pem: &str) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// An http(s) URL with a host.
fn http_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("not an http(s) URL with a host".into());
    }
    Ok(())
}

/// S3's bucket naming rules on AWS (3-63 lower-case letters, digits, dots and hyphens,
/// starting and ending with a letter or digit); elsewhere only what no provider accepts.
fn bucket_name(name: &str, aws: bool) -> Result<(), String> {
    if name.contains('/') {
        return Err("expected a bucket name only; put the folder in AWS_S3_PATH".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) || name.len() > 255 {
        return Err("not a bucket name (spaces, control characters or too long)".into());
    }
    if !aws {
        return Ok(());
    }
    let allowed = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&name.len())
        || !allowed
        || !ends(name.chars().next())
        || !ends(name.chars().last())
        || name.contains("..")
    {
        return Err(
            "not a valid S3 bucket name: 3 to 63 lower-case letters, digits, dots and \
                    hyphens, starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

/// Checks `raw` is `host[:port]` and nothing else (no scheme, path, user, space), with a
/// port in range; the port when one is given.
fn host_and_port(raw: &str) -> Result<Option<u16>, String> {
    if raw.is_empty() {
        return Err("empty".into());
    }
    if raw.contains("://") || raw.contains(['/', '@', '?', '#']) {
        return Err("not just a host name and port".into());
    }
    let url = url::Url::parse(&format!("http://{raw}")).map_err(|e| format!("not a host: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host name".into());
    }
    Ok(url.port())
}

/// Whether a private key file says it is protected by a passphrase (OpenSSH or PEM).
fn is_encrypted_key(file: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    text.contains("Proc-Type: 4,ENCRYPTED")
        || text.contains("BEGIN ENCRYPTED PRIVATE KEY")
        || russh::keys::ssh_key::PrivateKey::from_openssh(&text).is_ok_and(|k| k.is_encrypted())
}

#[cfg(test)]
mod tests {
    use super::host_and_port;
    use crate::config::{Config, ConfigError, Vars};
    use crate::storage::{AzureCredentials, S3Credentials};

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars("default", &Vars::from_pairs(pairs.iter().copied()))
    }

    fn problems(err: &ConfigError) -> Vec<String> {
        err.problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn s3_settings_parse_with_the_reference_defaults() {
        let c = config(&[
            ("AWS_S3_BUCKET_NAME", "backups"),
            ("AWS_S3_PATH", "/host-1/daily/"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
        ])
        .unwrap();
        let s3 = c.s3.unwrap();
        assert_eq!(s3.folder, "host-1/daily");
        assert_eq!(s3.endpoint, "s3.amazonaws.com");
        assert_eq!(s3.proto, "https");
        assert_eq!(s3.part_size, 16 << 20);
        assert_eq!(s3.max_parts, 10_000);
        assert_eq!(s3.region, None);
        assert!(matches!(s3.credentials, S3Credentials::Static { .. }));
        assert!(!format!("{s3:?}").contains("s3cr3t"));
        assert!(config(&[]).unwrap().s3.is_none());
    }

    #[test]
    fn scaleway_endpoints_get_their_region_and_part_limit() {
        let c = config(&[
            ("AWS_S3_BUCKET_NAME", "bkt"),
            ("AWS_ENDPOINT", "s3.fr-par.scw.cloud"),
            ("AWS_IAM_ROLE_ENDPOINT", "http://169.254.169.254"),
        ])
        .unwrap();
        let s3 = c.s3.unwrap();
        assert_eq!(s3.region.as_deref(), Some("fr-par"));
        assert_eq!(s3.max_parts, 1_000);
        assert!(matches!(s3.credentials, S3Credentials::Metadata { .. }));
    }

    #[test]
    fn bucket_names_and_storage_classes_are_checked() {
        use super::bucket_name;
        assert!(bucket_name("shop-backups.2026", true).is_ok());
        for bad in ["ab", "Shop", "-shop", "shop-", "a..b", "shop_backups"] {
            assert!(bucket_name(bad, true).is_err(), "{bad}");
        }
        assert!(
            bucket_name("Legacy_Bucket", false).is_ok(),
            "other providers differ"
        );
        assert!(bucket_name("my bucket", false).is_err());
        let c = |class: &str, endpoint: &str| {
            config(&[
                ("AWS_S3_BUCKET_NAME", "shop"),
                ("AWS_ACCESS_KEY_ID", "k"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
                ("AWS_ENDPOINT", endpoint),
                ("AWS_STORAGE_CLASS", class),
            ])
        };
        assert!(c("GLACIER_IR", "s3.amazonaws.com").is_ok());
        let err = c("GLACIAR", "s3.amazonaws.com").unwrap_err().to_string();
        assert!(err.contains("AWS_STORAGE_CLASS=\"GLACIAR\""), "{err}");
        assert!(c("COLD", "minio:9000").is_ok(), "providers' own classes");
        assert!(c("cold storage", "minio:9000").is_err());
    }

    #[test]
    fn hosts_are_checked_before_anything_runs() {
        assert_eq!(host_and_port("minio:9000"), Ok(Some(9000)));
        assert_eq!(host_and_port("s3.amazonaws.com"), Ok(None));
        assert_eq!(host_and_port("[::1]:9000"), Ok(Some(9000)));
        for bad in ["127.0.0.1:99999", "my host", "https://x", "x/y", "", "u@h"] {
            assert!(host_and_port(bad).is_err(), "{bad:?}");
        }
        let err = config(&[
            ("AWS_S3_BUCKET_NAME", "bkt"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ENDPOINT", "127.0.0.1:99999"),
            ("SSH_HOST_NAME", "files example.org"),
            ("SSH_USER", "u"),
            ("SSH_PASSWORD", "p"),
        ])
        .unwrap_err();
        let text = problems(&err).join("\n");
        assert!(
            text.contains("AWS_ENDPOINT=\"127.0.0.1:99999\": not a host"),
            "{text}"
        );
        assert!(
            text.contains("SSH_HOST_NAME=\"files example.org\""),
            "{text}"
        );
    }

    #[test]
    fn ssh_key_and_known_hosts_files_are_read_before_anything_runs() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let plain = format!("{fixtures}/ecdsa_p256_short_scalar");
        let protected = format!("{fixtures}/ed25519_protected");
        let host_line = "[files.example.org]:2222 ssh-ed25519 \
            AAAAC3NzaC1lZDI1NTE5AAAAICv6LUDx3groZ0BmY2ew+M8mopwTCPRZaK6NMBwuWHls\n";
        let good_hosts = file("good", host_line);
        let other_hosts = file("other", &host_line.replace("files.", "www."));
        let garbage = file("garbage", "this is not a known_hosts file\n");
        let not_a_key = file("not_a_key", "hello\n");
        let sftp = |identity: &str, passphrase: Option<&str>, known: &str| {
            let mut pairs = vec![
                ("SSH_HOST_NAME", "files.example.org"),
                ("SSH_PORT", "2222"),
                ("SSH_USER", "u"),
                ("SSH_IDENTITY_FILE", identity),
                ("SSH_KNOWN_HOSTS", known),
            ];
            pairs.extend(passphrase.map(|p| ("SSH_IDENTITY_PASSPHRASE", p)));
            config(&pairs)
                .map(|_| ())
                .map_err(|e| problems(&e).join("\n"))
        };
        assert_eq!(sftp(&plain, None, &good_hosts), Ok(()));
        assert_eq!(sftp(&protected, Some("fixture pass"), &good_hosts), Ok(()));
        for (identity, passphrase, known, want) in [
            (&not_a_key, None, &good_hosts, "SSH_IDENTITY_FILE="),
            (&good_hosts, None, &good_hosts, "is not a private key"),
            (
                &protected,
                None,
                &good_hosts,
                "is protected by a passphrase",
            ),
            (
                &protected,
                Some("wrong"),
                &good_hosts,
                "SSH_IDENTITY_PASSPHRASE=\"(redacted)\": does not open",
            ),
            (&plain, None, &garbage, "line 1: not a known_hosts entry"),
            (&plain, None, &not_a_key, "SSH_KNOWN_HOSTS="),
            (
                &plain,
                None,
                &other_hosts,
                "lists no key for [files.example.org]:2222",
            ),
        ] {
            let err = sftp(identity, passphrase, known).expect_err(want);
            assert!(err.contains(want), "want {want:?} in {err}");
            assert!(!err.contains("wrong\""), "the passphrase is shown: {err}");
        }
    }

    #[test]
    fn s3_problems_are_all_reported_and_secrets_redacted() {
        let err = config(&[
            ("AWS_S3_BUCKET_NAME", "b/sub"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_ENDPOINT", "https://minio:9000"),
            ("AWS_ENDPOINT_PROTO", "ftp"),
            ("AWS_PART_SIZE", "4"),
            ("AWS_ENDPOINT_CA_CERT", "/no/such/ca.pem"),
        ])
        .unwrap_err();
        let text = problems(&err).join("\n");
        for var in [
            "AWS_S3_BUCKET_NAME=\"b/sub\"",
            "AWS_ACCESS_KEY_ID",
            "AWS_ENDPOINT=\"https://minio:9000\"",
            "AWS_ENDPOINT_PROTO=\"ftp\"",
            "AWS_PART_SIZE=\"4\": expected a whole number from 5 to 5120",
            "AWS_ENDPOINT_CA_CERT=\"/no/such/ca.pem\"",
        ] {
            assert!(text.contains(var), "{var} missing in:\n{text}");
        }
        assert!(!text.contains("s3cr3t"));

        let err = config(&[("AWS_S3_BUCKET_NAME", "bkt")]).unwrap_err();
        assert!(problems(&err)[0].contains("no credentials"), "{err}");
        let err = config(&[
            ("AWS_S3_BUCKET_NAME", "bkt"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ENDPOINT_PROTO", "http"),
            ("AWS_ENDPOINT_INSECURE", "true"),
        ])
        .unwrap_err();
        assert!(
            problems(&err)[0].starts_with("AWS_ENDPOINT_INSECURE"),
            "{err}"
        );
    }

    #[test]
    fn azure_credentials_follow_the_reference_order() {
        let base = [
            ("AZURE_STORAGE_ACCOUNT_NAME", "acme"),
            ("AZURE_STORAGE_CONTAINER_NAME", "backups"),
        ];
        let c = config(&base).unwrap().azure.unwrap();
        assert_eq!(c.credentials, AzureCredentials::ManagedIdentity);
        assert_eq!(c.endpoint, "https://acme.blob.core.windows.net");
        assert_eq!(c.block_size, 16 << 20);

        let mut with_key = base.to_vec();
        with_key.push(("AZURE_STORAGE_PRIMARY_ACCOUNT_KEY", "a2V5"));
        with_key.push((
            "AZURE_STORAGE_ENDPOINT",
            "http://127.0.0.1:10000/{{.AccountName}}/",
        ));
        with_key.push(("AZURE_STORAGE_ACCESS_TIER", "cool"));
        let c = config(&with_key).unwrap().azure.unwrap();
        assert_eq!(c.credentials, AzureCredentials::AccountKey("a2V5".into()));
        assert_eq!(c.endpoint, "http://127.0.0.1:10000/acme");
        assert_eq!(c.access_tier.as_deref(), Some("Cool"));

        let c = config(&[
            (
                "AZURE_STORAGE_CONNECTION_STRING",
                "AccountName=other;AccountKey=a2V5;BlobEndpoint=https://x.example/",
            ),
            ("AZURE_STORAGE_CONTAINER_NAME", "backups"),
        ])
        .unwrap()
        .azure
        .unwrap();
        assert_eq!(c.account, "other");
        assert_eq!(c.endpoint, "https://x.example");

        let mut both = with_key.clone();
        both.push((
            "AZURE_STORAGE_CONNECTION_STRING",
            "AccountName=acme;AccountKey=eHl6",
        ));
        let err = config(&both).unwrap_err();
        let text = problems(&err).join("\n");
        assert!(
            text.contains("not both") && !text.contains("eHl6"),
            "{text}"
        );
    }

    #[test]
    fn azure_problems_are_all_reported() {
        let err = config(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", "acme"),
            ("AZURE_STORAGE_ACCESS_TIER", "Lukewarm"),
            ("AZURE_STORAGE_BLOCK_SIZE", "5000"),
            ("AZURE_STORAGE_ENDPOINT", "acme.blob.core.windows.net"),
        ])
        .unwrap_err();
        let text = problems(&err).join("\n");
        for var in [
            "AZURE_STORAGE_CONTAINER_NAME",
            "AZURE_STORAGE_ACCESS_TIER=\"Lukewarm\": expected one of Hot, Cool, Cold, Archive",
            "AZURE_STORAGE_BLOCK_SIZE=\"5000\"",
            "AZURE_STORAGE_ENDPOINT=\"acme.blob.core.windows.net\"",
        ] {
            assert!(text.contains(var), "{var} missing in:\n{text}");
        }
    }

    const KEY_FILE: &str = include_str!("../../tests/fixtures/gdrive-service-account.json");

    #[test]
    fn google_drive_settings_parse_and_resolve_as_googles_libraries_do() {
        let c = config(&[
            ("GOOGLE_DRIVE_CREDENTIALS_JSON", KEY_FILE),
            ("GOOGLE_DRIVE_FOLDER_ID", "1AbC-d_9"),
        ])
        .unwrap();
        let d = c.gdrive.unwrap();
        assert_eq!(
            d.client_email,
            "fixture@dunnage-fixture.iam.gserviceaccount.com"
        );
        assert_eq!(d.folder, "1AbC-d_9");
        assert_eq!(d.endpoint.as_str(), "https://www.googleapis.com/drive/v3/");
        assert_eq!(d.token_url, "https://oauth2.googleapis.com/token");
        assert_eq!((d.subject, d.drive), (None, None));

        // Unset folder: the top of the shared drive, or of the user's drive.
        let team = config(&[
            ("GOOGLE_DRIVE_CREDENTIALS_JSON", KEY_FILE),
            ("GOOGLE_DRIVE_TEAM_DRIVE_ID", "0ATeam"),
            ("GOOGLE_DRIVE_IMPERSONATE_SUBJECT", "owner@example.org"),
            // Without a trailing slash it still names the folder of the metadata calls.
            ("GOOGLE_DRIVE_ENDPOINT", "http://127.0.0.1:9/drive/v3"),
            ("GOOGLE_DRIVE_TOKEN_URL", "http://127.0.0.1:9/token"),
        ])
        .unwrap()
        .gdrive
        .unwrap();
        assert_eq!(team.folder, "0ATeam");
        assert_eq!(team.drive.as_deref(), Some("0ATeam"));
        assert_eq!(team.subject.as_deref(), Some("owner@example.org"));
        assert_eq!(team.endpoint.as_str(), "http://127.0.0.1:9/drive/v3/");
        assert_eq!(team.token_url, "http://127.0.0.1:9/token");
        let own = config(&[("GOOGLE_DRIVE_CREDENTIALS_JSON", KEY_FILE)]).unwrap();
        assert_eq!(own.gdrive.unwrap().folder, "root");
        // Settings without the credentials: the user believes backups go to Drive.
        let err = config(&[("GOOGLE_DRIVE_FOLDER_ID", "1AbC")]).unwrap_err();
        assert!(
            problems(&err)[0].contains("although GOOGLE_DRIVE_FOLDER_ID is set"),
            "{err}"
        );
    }

    #[test]
    fn google_drive_problems_are_all_reported_and_the_key_never_shown() {
        let not_a_service_account = r#"{"type": "authorized_user", "client_secret": "hunter2"}"#;
        let err = config(&[
            ("GOOGLE_DRIVE_CREDENTIALS_JSON", not_a_service_account),
            (
                "GOOGLE_DRIVE_FOLDER_ID",
                "https://drive.google.com/drive/folders/1AbC",
            ),
            ("GOOGLE_DRIVE_TEAM_DRIVE_ID", "team drive"),
            ("GOOGLE_DRIVE_IMPERSONATE_SUBJECT", "owner"),
            ("GOOGLE_DRIVE_ENDPOINT", "www.googleapis.com"),
            ("GOOGLE_DRIVE_TOKEN_URL", "oauth2.googleapis.com/token"),
        ])
        .unwrap_err();
        let text = problems(&err).join("\n");
        for needle in [
            "GOOGLE_DRIVE_CREDENTIALS_JSON=\"(redacted)\": a key of type \"authorized_user\"",
            "GOOGLE_DRIVE_FOLDER_ID=\"https://drive.google.com/drive/folders/1AbC\": expected an id",
            "GOOGLE_DRIVE_TEAM_DRIVE_ID=\"team drive\"",
            "GOOGLE_DRIVE_IMPERSONATE_SUBJECT=\"owner\"",
            "GOOGLE_DRIVE_ENDPOINT=\"www.googleapis.com\"",
            "GOOGLE_DRIVE_TOKEN_URL=\"oauth2.googleapis.com/token\"",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
        assert_eq!(err.problems.len(), 6, "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let broken_key = KEY_FILE.replace("MII", "XYZ");
        let err = config(&[("GOOGLE_DRIVE_CREDENTIALS_JSON", &broken_key)]).unwrap_err();
        let text = problems(&err).join("\n");
        assert!(text.contains("not an RSA key"), "{text}");
        assert!(!text.contains("XYZ"), "{text}");
    }
}
