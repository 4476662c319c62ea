//! Dropbox destination, on Dropbox's HTTP API (v2).
//!
//! An archive is uploaded through one concurrent upload session: chunks of [`CHUNK`] bytes
//! (a multiple of 4 MiB, as such sessions require) are appended at their offsets with up to
//! `DROPBOX_CONCURRENCY_LEVEL` requests in flight, the last one closes the session, and
//! `finish` commits the file under its final name. Until then nothing is visible; a failed
//! session is simply never finished (Dropbox discards it). Memory is chunk size x
//! concurrency. The access token is obtained from the refresh token and obtained again
//! whenever Dropbox says it expired, also in the middle of an upload; 429 answers are
//! retried after the `Retry-After` they carry.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{Entry, ErrorKind, Storage, StorageError, Stored};
use crate::net::RetryPolicy;
use crate::stream::ByteStream;

/// Bytes per appended chunk (a multiple of 4 MiB).
pub const CHUNK: usize = 8 << 20;
/// Dropbox's documented hosts, used while `DROPBOX_ENDPOINT` keeps its default.
const API_HOST: &str = "https://api.dropboxapi.com/";
const CONTENT_HOST: &str = "https://content.dropboxapi.com/";
/// `DROPBOX_ENDPOINT`'s and `DROPBOX_OAUTH2_ENDPOINT`'s default.
pub const DEFAULT_ENDPOINT: &str = "https://api.dropbox.com/";

/// The `DROPBOX_*` settings, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct DropboxConfig {
    pub app_key: String,
    pub app_secret: String,
    pub refresh_token: String,
    /// `DROPBOX_REMOTE_PATH`, starting with `/`, without a trailing one (`""` = root).
    pub folder: String,
    pub concurrency: usize,
    /// `DROPBOX_ENDPOINT`; the default means Dropbox's own API and content hosts.
    pub endpoint: String,
    pub oauth2_endpoint: String,
}

impl fmt::Debug for DropboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropboxConfig")
            .field("app_key", &self.app_key)
            .field("folder", &self.folder)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum DbxError {
    Http(reqwest::Error),
    /// The access token expired or was revoked: get a new one and repeat.
    Expired,
    /// 429 or 503 with the wait Dropbox asked for.
    RateLimited(Duration),
    Status {
        route: String,
        status: StatusCode,
        summary: String,
    },
}

impl fmt::Display for DbxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbxError::Http(e) => f.write_str(&crate::net::error_chain(e)),
            DbxError::Expired => f.write_str("the access token expired"),
            DbxError::RateLimited(wait) => {
                write!(f, "rate limited (retry after {}s)", wait.as_secs())
            }
            DbxError::Status {
                route,
                status,
                summary,
            } => {
                write!(f, "{route} answered {status}: {summary}")?;
                if route.contains("oauth2") {
                    f.write_str(
                        " (check DROPBOX_APP_KEY, DROPBOX_APP_SECRET and DROPBOX_REFRESH_TOKEN)",
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl DbxError {
    fn transient(&self) -> bool {
        match self {
            DbxError::Http(e) => super::error::kind_of_request(e) == ErrorKind::Transient,
            DbxError::Expired | DbxError::RateLimited(_) => true,
            DbxError::Status { status, .. } => status.is_server_error(),
        }
    }
}

struct Inner {
    client: reqwest::Client,
    config: DropboxConfig,
    retry: RetryPolicy,
    /// The current access token, if one was obtained.
    token: tokio::sync::Mutex<Option<String>>,
}

pub struct DropboxStorage {
    inner: Arc<Inner>,
}

/// How a request's body and answer look.
enum Call {
    /// JSON argument in the body, JSON answer (api host).
    Rpc(Value),
    /// JSON argument in `Dropbox-API-Arg`, bytes in the body (content host).
    Upload(Value, Bytes),
    /// JSON argument in `Dropbox-API-Arg`, bytes in the answer (content host).
    Download(Value),
}

impl Inner {
    fn url(&self, route: &str, content: bool) -> String {
        let base = if self.config.endpoint == DEFAULT_ENDPOINT {
            if content { CONTENT_HOST } else { API_HOST }
        } else {
            self.config.endpoint.as_str()
        };
        format!("{}/2/{route}", base.trim_end_matches('/'))
    }

    /// A new access token from the refresh token.
    async fn refresh(&self) -> Result<String, DbxError> {
        let url = format!(
            "{}/oauth2/token",
            self.config.oauth2_endpoint.trim_end_matches('/')
        );
        let form: Vec<String> = [
            ("grant_type", "refresh_token"),
            ("refresh_token", self.config.refresh_token.as_str()),
            ("client_id", self.config.app_key.as_str()),
            ("client_secret", self.config.app_secret.as_str()),
        ]
        .iter()
        .map(|(k, v)| {
            let v = percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC);
            format!("{k}={v}")
        })
        .collect();
        let response = self
            .client
            .post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.join("&"))
            .send()
            .await
            .map_err(DbxError::Http)?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let summary = body
                .get("error_description")
                .or_else(|| body.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no details")
                .to_owned();
            return Err(DbxError::Status {
                route: "oauth2/token".into(),
                status,
                summary,
            });
        }
        body.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| DbxError::Status {
                route: "oauth2/token".into(),
                status,
                summary: "no access_token in the answer".into(),
            })
    }

    async fn token(&self, renew: bool) -> Result<String, DbxError> {
        let mut slot = self.token.lock().await;
        if renew || slot.is_none() {
            *slot = Some(self.refresh().await?);
        }
        Ok(slot.clone().expect("token"))
    }

    /// One request, without retries.
    async fn call_once(
        &self,
        route: &str,
        call: &Call,
        renew: bool,
    ) -> Result<reqwest::Response, DbxError> {
        let token = self.token(renew).await?;
        let request = match call {
            Call::Rpc(arg) => self
                .client
                .post(self.url(route, false))
                .header("Content-Type", "application/json")
                .body(arg.to_string()),
            Call::Upload(arg, body) => self
                .client
                .post(self.url(route, true))
                .header("Dropbox-API-Arg", arg.to_string())
                .header("Content-Type", "application/octet-stream")
                .body(body.clone()),
            Call::Download(arg) => self
                .client
                .post(self.url(route, true))
                .header("Dropbox-API-Arg", arg.to_string()),
        };
        let response = request
            .bearer_auth(token)
            .send()
            .await
            .map_err(DbxError::Http)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            let wait = response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(secs) = wait {
                return Err(DbxError::RateLimited(Duration::from_secs(secs)));
            }
        }
        let text = response.text().await.unwrap_or_default();
        let summary = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("error_summary")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| text.chars().take(200).collect());
        if status == StatusCode::UNAUTHORIZED && summary.contains("expired_access_token") {
            return Err(DbxError::Expired);
        }
        Err(DbxError::Status {
            route: route.to_owned(),
            status,
            summary,
        })
    }

    /// A request with the shared retry policy, a fresh token after `Expired`, and the
    /// server's own wait after a rate limit.
    async fn call(&self, route: &str, call: Call) -> Result<reqwest::Response, DbxError> {
        let renew = std::sync::atomic::AtomicBool::new(false);
        self.retry
            .run(route, DbxError::transient, || async {
                let result = self
                    .call_once(
                        route,
                        &call,
                        renew.swap(false, std::sync::atomic::Ordering::SeqCst),
                    )
                    .await;
                match &result {
                    Err(DbxError::Expired) => {
                        renew.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(DbxError::RateLimited(wait)) => tokio::time::sleep(*wait).await,
                    _ => {}
                }
                result
            })
            .await
    }

    async fn rpc(&self, route: &str, arg: Value) -> Result<Value, DbxError> {
        let response = self.call(route, Call::Rpc(arg)).await?;
        let text = response.text().await.map_err(DbxError::Http)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.config.folder)
    }
}

/// A chunk task that panicked or was cancelled, as an error.
/// An upload session: chunks appended concurrently (up to `DROPBOX_CONCURRENCY`), the
/// closing chunk last, then a commit under the final name. Nothing is visible in the folder
/// before the commit; Dropbox drops an unfinished session by itself after a week.
struct Session<'a> {
    inner: &'a Arc<Inner>,
    id: String,
    offset: u64,
    appends: JoinSet<Result<(), DbxError>>,
    closed: bool,
}

impl<'a> Session<'a> {
    async fn start(inner: &'a Arc<Inner>) -> Result<Session<'a>, DbxError> {
        let started = inner
            .rpc_upload(
                "files/upload_session/start",
                json!({"close": false, "session_type": "concurrent"}),
                Bytes::new(),
            )
            .await?;
        let id = started
            .get("session_id")
            .and_then(Value::as_str)
            .ok_or_else(|| DbxError::Status {
                route: "files/upload_session/start".into(),
                status: StatusCode::OK,
                summary: "no session_id in the answer".into(),
            })?
            .to_owned();
        Ok(Session {
            inner,
            id,
            offset: 0,
            appends: JoinSet::new(),
            closed: false,
        })
    }

    /// Appends `piece` at the current offset; the `last` piece closes the session.
    async fn append(&mut self, piece: Bytes, last: bool) -> Result<(), DbxError> {
        let len = piece.len() as u64;
        let arg = json!({
            "cursor": {"session_id": self.id, "offset": self.offset},
            "close": last,
        });
        self.offset += len;
        if last {
            // Nothing may be appended after the closing chunk, so every other chunk
            // (retries included) must be stored first.
            self.wait_below(1).await?;
            self.inner
                .rpc_upload("files/upload_session/append_v2", arg, piece)
                .await?;
            self.closed = true;
            return Ok(());
        }
        let inner = self.inner.clone();
        self.appends.spawn(async move {
            inner
                .rpc_upload("files/upload_session/append_v2", arg, piece)
                .await
                .map(|_| ())
        });
        // Keep the bytes in flight within the budget.
        self.wait_below(self.inner.config.concurrency).await
    }

    async fn wait_below(&mut self, limit: usize) -> Result<(), DbxError> {
        while self.appends.len() >= limit.max(1) {
            match self.appends.join_next().await {
                Some(done) => done.map_err(joined)??,
                None => break,
            }
        }
        Ok(())
    }

    /// Commits the closed session under `path`; the number of bytes stored.
    async fn finish(self, path: &str) -> Result<u64, DbxError> {
        self.inner
            .rpc_upload(
                "files/upload_session/finish",
                json!({
                    "cursor": {"session_id": self.id, "offset": self.offset},
                    // "add": an existing file is never replaced (a conflict).
                    "commit": {"path": path, "mode": "add", "autorename": false, "mute": true},
                }),
                Bytes::new(),
            )
            .await?;
        Ok(self.offset)
    }
}

fn joined(e: tokio::task::JoinError) -> DbxError {
    DbxError::Status {
        route: "files/upload_session/append_v2".into(),
        status: StatusCode::INTERNAL_SERVER_ERROR,
        summary: format!("the upload task failed: {e}"),
    }
}

fn dbx(what: impl Into<String>, e: DbxError) -> StorageError {
    let kind = match &e {
        DbxError::Http(e) => super::error::kind_of_request(e),
        DbxError::Expired | DbxError::RateLimited(_) => ErrorKind::Transient,
        DbxError::Status { route, .. } if route.contains("oauth2") => ErrorKind::Denied,
        // "path/not_found/", "path_lookup/not_found/": the summary names the case.
        DbxError::Status { summary, .. } if summary.contains("/not_found") => ErrorKind::NotFound,
        DbxError::Status { status, .. } => super::error::kind_of_status(status.as_u16()),
    };
    StorageError::new(kind, what, e.to_string())
}

impl DropboxStorage {
    pub fn new(config: &DropboxConfig, retry: RetryPolicy) -> Result<Self, StorageError> {
        let client = super::api_client("Dropbox")?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                config: config.clone(),
                retry,
                token: tokio::sync::Mutex::new(None),
            }),
        })
    }

    fn display(&self) -> String {
        format!("dropbox:{}", self.inner.config.folder)
    }

    async fn ensure_folder(&self) -> Result<(), StorageError> {
        let folder = &self.inner.config.folder;
        if folder.is_empty() {
            return Ok(());
        }
        match self
            .inner
            .rpc(
                "files/create_folder_v2",
                json!({"path": folder, "autorename": false}),
            )
            .await
        {
            Ok(_) => Ok(()),
            // It exists already.
            Err(DbxError::Status { summary, .. }) if summary.starts_with("path/conflict") => Ok(()),
            Err(e) => Err(dbx(format!("creating folder {folder}"), e)),
        }
    }
}

#[async_trait]
impl Storage for DropboxStorage {
    fn backend(&self) -> super::Backend {
        super::Backend::Dropbox
    }

    async fn put(&self, name: &str, mut data: ByteStream) -> Result<Stored, StorageError> {
        self.ensure_folder().await?;
        let path = self.inner.path(name);
        let location = format!("dropbox:{path}");
        let fail = |e: DbxError| dbx(format!("uploading {location}"), e);
        let mut session = Session::start(&self.inner).await.map_err(fail)?;
        let mut buf = BytesMut::with_capacity(CHUNK);
        let mut ended = false;
        while !ended {
            // Fill one chunk, or reach the end of the archive.
            while buf.len() < CHUNK {
                match data.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Err(StorageError::incomplete(e)),
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            // Exactly CHUNK bytes per append except the last (the session's rule).
            while buf.len() >= CHUNK || (ended && !buf.is_empty()) {
                let piece = buf.split_to(buf.len().min(CHUNK)).freeze();
                let last = ended && buf.is_empty();
                session.append(piece, last).await.map_err(fail)?;
            }
            buf.reserve(CHUNK);
        }
        if !session.closed {
            // The archive ended on a chunk boundary: close the session with an empty append.
            session.append(Bytes::new(), true).await.map_err(fail)?;
        }
        let bytes = session.finish(&path).await.map_err(|e| match e {
            DbxError::Status { summary, .. } if summary.starts_with("path/conflict") => {
                StorageError::exists(&location)
            }
            e => dbx(format!("committing {location}"), e),
        })?;
        Ok(Stored { location, bytes })
    }

    async fn list(&self) -> Result<Vec<Entry>, StorageError> {
        let what = format!("listing {}", self.display());
        let folder = self.inner.config.folder.clone();
        let mut page = match self
            .inner
            .rpc(
                "files/list_folder",
                json!({"path": folder, "recursive": false}),
            )
            .await
        {
            Ok(page) => page,
            // Created at the first upload.
            Err(DbxError::Status { summary, .. }) if summary.starts_with("path/not_found") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(dbx(what, e)),
        };
        let mut entries = Vec::new();
        loop {
            for item in page["entries"].as_array().into_iter().flatten() {
                if item[".tag"] != "file" {
                    continue;
                }
                let (Some(name), Some(modified)) =
                    (item["name"].as_str(), item["server_modified"].as_str())
                else {
                    continue;
                };
                let Ok(modified) = modified.parse::<jiff::Timestamp>() else {
                    continue;
                };
                entries.push(Entry {
                    name: name.to_owned(),
                    size: item["size"].as_u64().unwrap_or(0),
                    modified,
                });
            }
            if page["has_more"] != true {
                break;
            }
            let cursor = page["cursor"].as_str().unwrap_or_default().to_owned();
            page = self
                .inner
                .rpc("files/list_folder/continue", json!({"cursor": cursor}))
                .await
                .map_err(|e| dbx(what.clone(), e))?;
        }
        Ok(entries)
    }

    async fn delete(&self, name: &str) -> Result<(), StorageError> {
        let path = self.inner.path(name);
        match self
            .inner
            .rpc("files/delete_v2", json!({"path": path}))
            .await
        {
            Ok(_) => Ok(()),
            Err(DbxError::Status { summary, .. }) if summary.contains("not_found") => Ok(()),
            Err(e) => Err(dbx(format!("deleting dropbox:{path}"), e)),
        }
    }

    async fn get(&self, name: &str) -> Result<ByteStream, StorageError> {
        let path = self.inner.path(name);
        let response = self
            .inner
            .call("files/download", Call::Download(json!({"path": path})))
            .await
            .map_err(|e| dbx(format!("reading dropbox:{path}"), e))?;
        Ok(Box::pin(response.bytes_stream().map_err(|e| {
            io::Error::other(crate::net::error_chain(&e))
        })))
    }
}

impl Inner {
    /// A content-host call with a JSON answer (upload session routes).
    async fn rpc_upload(&self, route: &str, arg: Value, body: Bytes) -> Result<Value, DbxError> {
        let response = self.call(route, Call::Upload(arg, body)).await?;
        let text = response.text().await.map_err(DbxError::Http)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}
