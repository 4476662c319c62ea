//! SFTP destination (any OpenSSH server).
//!
//! The archive is written to a hidden temporary name with many write requests in flight,
//! closed, then renamed to its final name. The server's host key is always checked:
//! against `SSH_KNOWN_HOSTS` or `SSH_HOST_KEY_FINGERPRINT` when set, otherwise trusted on
//! first use and remembered in `BACKUP_STATE_DIR`; a key that changed is always refused.
//! A connection is opened when needed and opened again when it dropped, so a connection
//! lost while a long archive was built does not fail the next operation.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::OpenFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::staged::Staged;
use super::{Entry, ErrorKind, Storage, StorageError, Stored, partial};
use crate::net::RetryPolicy;
use crate::stream::ByteStream;

mod known_hosts;
pub use known_hosts::KnownHosts;
use known_hosts::Verdict;

/// The file in `BACKUP_STATE_DIR` with host keys trusted on first use.
pub const TRUSTED_KEYS_FILE: &str = "sftp_known_hosts";

/// How the server's host key is checked.
#[derive(Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// `SSH_KNOWN_HOSTS`: the key must be listed for this host and port.
    KnownHosts(PathBuf),
    /// `SSH_HOST_KEY_FINGERPRINT`: `SHA256:...`.
    Fingerprint(String),
    /// Neither: the first key seen is remembered in this file and required afterwards.
    TrustOnFirstUse(PathBuf),
}

/// The `SSH_*` settings, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct SftpConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// `SSH_IDENTITY_FILE`, when the file exists.
    pub identity_file: Option<PathBuf>,
    pub passphrase: Option<String>,
    /// `SSH_REMOTE_PATH`; empty means the login folder.
    pub remote_path: String,
    pub host_key: HostKeyCheck,
}

impl fmt::Debug for SftpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("remote_path", &self.remote_path)
            .finish_non_exhaustive()
    }
}

/// Checks host keys for one connection; keeps why a key was refused for the error.
struct Client {
    host: String,
    port: u16,
    check: HostKeyCheck,
    refused: Arc<Mutex<Option<String>>>,
}

/// `SHA256:...` of a key, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl Client {
    fn refuse(&self, why: String) -> bool {
        *self.refused.lock().expect("lock") = Some(why);
        false
    }

    fn verify(&self, key: &PublicKey) -> bool {
        let seen = fingerprint(key);
        let at = format!("{}:{}", self.host, self.port);
        let (path, first_use) = match &self.check {
            HostKeyCheck::Fingerprint(want) => {
                let want = want.strip_prefix("SHA256:").unwrap_or(want);
                return if seen.strip_prefix("SHA256:") == Some(want) {
                    true
                } else {
                    self.refuse(format!(
                        "the host key of {at} is {seen}, not the SSH_HOST_KEY_FINGERPRINT \
                         SHA256:{want}"
                    ))
                };
            }
            HostKeyCheck::KnownHosts(path) => (path, false),
            HostKeyCheck::TrustOnFirstUse(path) => (path, true),
        };
        let file = path.display();
        let listed = match KnownHosts::load(path) {
            Ok(listed) => listed,
            Err(why) => return self.refuse(format!("{file} {why}")),
        };
        match (listed.verdict(&self.host, self.port, key), first_use) {
            (Verdict::Trusted, _) => true,
            (Verdict::Revoked, _) => self.refuse(format!(
                "the host key of {at} ({seen}) is marked @revoked in {file}: refusing to connect"
            )),
            (Verdict::Changed, false) => self.refuse(format!(
                "the host key of {at} ({seen}) does not match the one in SSH_KNOWN_HOSTS \
                 {file}: refusing to connect"
            )),
            (Verdict::Unknown, false) => self.refuse(format!(
                "{at} is not in SSH_KNOWN_HOSTS {file} (its key is {seen}; add it with \
                 ssh-keyscan -p {} {})",
                self.port, self.host
            )),
            (Verdict::Changed, true) => self.refuse(format!(
                "the host key of {at} CHANGED: it is now {seen}, which differs from the \
                 key trusted earlier (in {file}). Refusing to connect: this may be an attack. \
                 If the server's key really changed, remove its line from that file."
            )),
            (Verdict::Unknown, true) => {
                if let Err(e) = std::fs::create_dir_all(path.parent().unwrap_or(path))
                    .map_err(russh::keys::Error::from)
                    .and_then(|()| {
                        russh::keys::known_hosts::learn_known_hosts_path(
                            &self.host, self.port, key, path,
                        )
                    })
                {
                    return self.refuse(format!("cannot remember the host key in {file}: {e}"));
                }
                tracing::warn!(
                    "SFTP: trusting the host key of {at} on first use: {seen}. Pin it \
                     with SSH_HOST_KEY_FINGERPRINT={seen} (or SSH_KNOWN_HOSTS); it is \
                     remembered in {file}"
                );
                true
            }
        }
    }
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => self.verify(key),
            russh::keys::PublicKeyOrCertificate::Certificate(_) => self.refuse(
                "the server offered a host certificate; pin its plain host key instead".into(),
            ),
        })
    }
}

/// One live connection.
struct Connection {
    ssh: Handle<Client>,
    sftp: SftpSession,
}

#[derive(Debug)]
enum SftpError {
    /// Could not connect or the connection broke: worth trying again.
    Connection(String),
    /// Refused for a reason a retry will not change.
    Refused(String),
}

impl fmt::Display for SftpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SftpError::Connection(why) | SftpError::Refused(why) => f.write_str(why),
        }
    }
}

impl SftpError {
    fn transient(&self) -> bool {
        matches!(self, SftpError::Connection(_))
    }
}

/// A failed SFTP request, with the kind its status stands for.
fn failed(what: String, e: russh_sftp::client::error::Error) -> StorageError {
    use russh_sftp::client::error::Error as E;
    use russh_sftp::protocol::StatusCode as S;
    let kind = match &e {
        E::Status(s) if s.status_code == S::NoSuchFile => ErrorKind::NotFound,
        E::Status(s) if s.status_code == S::PermissionDenied => ErrorKind::Denied,
        E::Status(s) if matches!(s.status_code, S::NoConnection | S::ConnectionLost) => {
            ErrorKind::Transient
        }
        E::IO(_) | E::Timeout => ErrorKind::Transient,
        _ => ErrorKind::Other,
    };
    StorageError::new(kind, what, e.to_string())
}

fn sftp_error(e: russh_sftp::client::error::Error) -> SftpError {
    use russh_sftp::client::error::Error as E;
    match e {
        E::Status(_) | E::Limited(_) | E::UnexpectedPacket | E::UnexpectedBehavior(_) => {
            SftpError::Refused(e.to_string())
        }
        _ => SftpError::Connection(e.to_string()),
    }
}

pub struct SftpStorage {
    config: SftpConfig,
    retry: RetryPolicy,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    folder_ready: tokio::sync::OnceCell<()>,
}

impl SftpStorage {
    pub fn new(config: &SftpConfig, retry: RetryPolicy) -> Self {
        Self {
            config: config.clone(),
            retry,
            connection: tokio::sync::Mutex::new(None),
            folder_ready: tokio::sync::OnceCell::new(),
        }
    }

    fn path(&self, name: &str) -> String {
        let dir = self.config.remote_path.trim_end_matches('/');
        match dir {
            "" => name.to_owned(),
            _ => format!("{dir}/{name}"),
        }
    }

    fn display(&self) -> String {
        format!(
            "sftp://{}@{}:{}/{}",
            self.config.user,
            self.config.host,
            self.config.port,
            self.config.remote_path.trim_start_matches('/')
        )
    }

    /// The live connection, opened (again) when there is none or it dropped.
    async fn connection(&self) -> Result<Arc<Connection>, StorageError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.ssh.is_closed() {
                return Ok(c.clone());
            }
            tracing::info!("SFTP: the connection dropped; connecting again");
        }
        let what = format!("connecting to {}", self.display());
        let connection = self
            .retry
            .run(&what, SftpError::transient, || self.connect())
            .await
            .map_err(|e| {
                let kind = if e.transient() {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Denied
                };
                StorageError::new(kind, what.clone(), e.to_string())
            })?;
        let connection = Arc::new(connection);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn connect(&self) -> Result<Connection, SftpError> {
        let c = &self.config;
        let refused = Arc::new(Mutex::new(None));
        let handler = Client {
            host: c.host.clone(),
            port: c.port,
            check: c.host_key.clone(),
            refused: refused.clone(),
        };
        let mut config = client::Config {
            inactivity_timeout: Some(std::time::Duration::from_secs(300)),
            keepalive_interval: Some(std::time::Duration::from_secs(30)),
            ..Default::default()
        };
        // Ask for a host key of a type we can check: a server listed only with its RSA
        // key must not be asked for its ed25519 one first.
        if let HostKeyCheck::KnownHosts(path) | HostKeyCheck::TrustOnFirstUse(path) = &c.host_key {
            let listed = KnownHosts::load(path).map_err(SftpError::Refused)?;
            let algorithms = listed.algorithms_for(&c.host, c.port);
            if !algorithms.is_empty() {
                config.preferred.key = algorithms.into();
            }
        }
        let config = Arc::new(config);
        let mut ssh = match client::connect(config, (c.host.as_str(), c.port), handler).await {
            Ok(ssh) => ssh,
            Err(e) => {
                return Err(match refused.lock().expect("lock").take() {
                    Some(why) => SftpError::Refused(why),
                    None => SftpError::Connection(format!("{e}")),
                });
            }
        };
        let mut tried = Vec::new();
        let mut authenticated = false;
        if let Some(file) = &c.identity_file {
            let key = russh::keys::load_secret_key(file, c.passphrase.as_deref()).map_err(|e| {
                SftpError::Refused(format!(
                    "cannot use the key SSH_IDENTITY_FILE={}: {e}{}",
                    file.display(),
                    if c.passphrase.is_none() {
                        " (is it protected by a passphrase? set SSH_IDENTITY_PASSPHRASE)"
                    } else {
                        " (is SSH_IDENTITY_PASSPHRASE right?)"
                    }
                ))
            })?;
            let hash = ssh
                .best_supported_rsa_hash()
                .await
                .map_err(|e| SftpError::Connection(e.to_string()))?
                .flatten();
            let result = ssh
                .authenticate_publickey(&c.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await
                .map_err(|e| SftpError::Connection(e.to_string()))?;
            authenticated = result.success();
            tried.push(format!("key {}", file.display()));
        }
        if !authenticated {
            if let Some(password) = &c.password {
                let result = ssh
                    .authenticate_password(&c.user, password)
                    .await
                    .map_err(|e| SftpError::Connection(e.to_string()))?;
                authenticated = result.success();
                tried.push("password".into());
            }
        }
        if !authenticated {
            return Err(SftpError::Refused(format!(
                "the server refused user {} ({})",
                c.user,
                if tried.is_empty() {
                    "no SSH_PASSWORD and no SSH_IDENTITY_FILE to try".to_owned()
                } else {
                    format!("tried: {}", tried.join(", "))
                }
            )));
        }
        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|e| SftpError::Connection(e.to_string()))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| SftpError::Connection(e.to_string()))?;
        let sftp_config = russh_sftp::client::Config {
            // Many writes in flight: 64 x 32 KiB keeps a fast link busy.
            max_concurrent_writes: 64,
            request_timeout_secs: 60,
            ..Default::default()
        };
        let sftp = SftpSession::new_with_config(channel.into_stream(), sftp_config)
            .await
            .map_err(sftp_error)?;
        Ok(Connection { ssh, sftp })
    }

    /// Creates `SSH_REMOTE_PATH` and its parents where missing.
    async fn ensure_folder(&self, sftp: &SftpSession) -> Result<(), StorageError> {
        self.folder_ready
            .get_or_try_init(|| async {
                let path = self.config.remote_path.trim_end_matches('/');
                let mut current = String::new();
                if path.starts_with('/') {
                    current.push('/');
                }
                for part in path.split('/').filter(|p| !p.is_empty()) {
                    if !current.is_empty() && !current.ends_with('/') {
                        current.push('/');
                    }
                    current.push_str(part);
                    let exists = sftp.try_exists(current.as_str()).await.unwrap_or(false);
                    if !exists {
                        sftp.create_dir(current.as_str())
                            .await
                            .map_err(|e| failed(format!("creating folder {current}"), e))?;
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Every entry of the folder with whether it is a regular file.
    async fn list_all(&self) -> Result<Vec<(Entry, bool)>, StorageError> {
        let what = format!("listing {}", self.display());
        let connection = self.connection().await?;
        let dir = match self.config.remote_path.trim_end_matches('/') {
            "" => ".".to_owned(),
            d => d.to_owned(),
        };
        if !connection
            .sftp
            .try_exists(dir.as_str())
            .await
            .unwrap_or(false)
        {
            return Ok(Vec::new()); // created at the first upload
        }
        let entries = connection
            .sftp
            .read_dir(dir.as_str())
            .await
            .map_err(|e| failed(what.clone(), e))?;
        Ok(entries
            .filter_map(|e| {
                let meta = e.metadata();
                let modified = jiff::Timestamp::from_second(i64::from(meta.mtime?)).ok()?;
                let regular = e.file_type().is_file();
                Some((
                    Entry {
                        name: e.file_name(),
                        size: meta.size.unwrap_or(0),
                        modified,
                    },
                    regular,
                ))
            })
            .collect())
    }

    /// Deletes stale unfinished uploads (see [`partial`]).
    /// Before an upload: refuses a name already stored, removes stale partials. A listing
    /// that fails does not stop the upload (the commit refuses an existing name too).
    async fn prepare(&self, name: &str, location: &str) -> Result<(), StorageError> {
        let Ok(entries) = self.list_all().await else {
            return Ok(());
        };
        let files: Vec<Entry> = entries
            .into_iter()
            .filter(|(_, regular)| *regular)
            .map(|(e, _)| e)
            .collect();
        partial::before_upload(self, &files, name, location).await
    }
}

#[async_trait]
impl Storage for SftpStorage {
    fn backend(&self) -> super::Backend {
        super::Backend::Sftp
    }

    async fn put(&self, name: &str, mut data: ByteStream) -> Result<Stored, StorageError> {
        let connection = self.connection().await?;
        self.ensure_folder(&connection.sftp).await?;
        let location = format!("{}/{name}", self.display().trim_end_matches('/'));
        self.prepare(name, &location).await?;
        let temp = self.path(&partial::name(name));
        let target = self.path(name);
        let io_err = |what: &str, e: &dyn fmt::Display| {
            StorageError::io(
                format!("{what} {location}"),
                io::Error::other(e.to_string()),
            )
        };

        let staged = {
            let (connection, temp) = (connection.clone(), temp.clone());
            Staged::new(
                format!("the unfinished upload {temp} in SFTP"),
                async move {
                    connection
                        .sftp
                        .remove_file(temp.as_str())
                        .await
                        .map_err(|e| failed(format!("deleting {temp}"), e))
                },
            )
        };
        let written: Result<u64, StorageError> = async {
            let mut file = connection
                .sftp
                .open_with_flags(
                    temp.as_str(),
                    OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                )
                .await
                .map_err(|e| io_err("creating a temporary file for", &e))?;
            let mut total = 0u64;
            while let Some(item) = data.next().await {
                let chunk: Bytes = item.map_err(StorageError::incomplete)?;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| io_err("uploading", &e))?;
                total += chunk.len() as u64;
            }
            // Waits for every write to be acknowledged, then closes the handle.
            file.shutdown().await.map_err(|e| io_err("uploading", &e))?;
            Ok(total)
        }
        .await;
        let total = match written {
            Ok(total) => total,
            Err(e) => {
                staged.discard().await;
                return Err(e);
            }
        };
        // SFTP's rename (version 3) refuses an existing target: a backup that another
        // writer committed meanwhile is never replaced.
        if let Err(e) = connection.sftp.rename(temp.as_str(), target.as_str()).await {
            // Either the answer was lost (the upload is gone from its temporary name and
            // stored), or the rename did not happen.
            let moved = !connection
                .sftp
                .try_exists(temp.as_str())
                .await
                .unwrap_or(true);
            let stored = connection.sftp.metadata(target.as_str()).await.ok();
            if moved && stored.as_ref().and_then(|m| m.size) == Some(total) {
                staged.keep();
                return Ok(Stored {
                    location,
                    bytes: total,
                });
            }
            if !moved && stored.is_some() {
                staged.discard().await;
                return Err(StorageError::exists(&location));
            }
            staged.discard().await;
            return Err(io_err("renaming the upload to", &e));
        }
        staged.keep();
        Ok(Stored {
            location,
            bytes: total,
        })
    }

    async fn list(&self) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .list_all()
            .await?
            .into_iter()
            .filter(|(entry, regular)| *regular && !partial::is_partial(&entry.name))
            .map(|(entry, _)| entry)
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<(), StorageError> {
        let connection = self.connection().await?;
        let path = self.path(name);
        connection
            .sftp
            .remove_file(path.as_str())
            .await
            .map_err(|e| failed(format!("deleting {path}"), e))
    }

    async fn get(&self, name: &str) -> Result<ByteStream, StorageError> {
        let connection = self.connection().await?;
        let path = self.path(name);
        let file = connection
            .sftp
            .open(path.as_str())
            .await
            .map_err(|e| failed(format!("reading {path}"), e))?;
        let stream = futures_util::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    /// ssh-keygen writes the P-256 scalar as an `mpint`, without leading zero bytes, so
    /// 1 key in 256 has a 31-byte scalar. ssh-key 0.7.0-rc.11 refused those keys (fixed
    /// by the patch in vendor/ssh-key); this key is one of them.
    #[test]
    fn a_p256_key_with_a_short_scalar_loads() {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ecdsa_p256_short_scalar"
        );
        let key = russh::keys::load_secret_key(file, None).expect("the key loads");
        assert_eq!(key.algorithm().as_str(), "ecdsa-sha2-nistp256");
    }
}
