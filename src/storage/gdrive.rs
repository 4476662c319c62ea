//! Google Drive destination, on the Drive v3 HTTP API with a service account.
//!
//! Access tokens come from the OAuth 2.0 service-account flow: a JWT signed with the
//! account's RSA key (RS256) is exchanged at the token endpoint, renewed a minute before it
//! expires and again whenever Drive answers 401, also in the middle of an upload.
//!
//! An archive goes up through one resumable upload session: chunks of [`CHUNK`] bytes (a
//! multiple of 256 KiB, as such sessions require) are sent in order, and only the last one,
//! which carries the total size, makes the file appear. Memory is one chunk. When a chunk
//! fails (a dropped connection, a 5xx, an expired token), the session is asked how much it
//! holds and the upload goes on from there, so nothing is sent twice and nothing is lost;
//! a session that cannot be finished is cancelled (Drive would drop it after a week).
//!
//! Drive allows several files of one name in a folder; backups are never replaced, so a
//! name already there is refused before the upload and, should two runs race, the later
//! copy is removed after it.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::staged::Staged;
use super::{Entry, ErrorKind, Storage, StorageError, Stored};
use crate::net::RetryPolicy;
use crate::stream::ByteStream;

/// Bytes per upload chunk (a multiple of 256 KiB).
pub const CHUNK: usize = 8 << 20;
/// Google's token endpoint, used when neither `GOOGLE_DRIVE_TOKEN_URL` nor the credentials'
/// `token_uri` names another.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// Full access to the files the account can see (the reference asks for the same).
const SCOPE: &str = "https://www.googleapis.com/auth/drive";
const FOLDER_MIME: &str = "application/vnd.google-apps.folder";
/// Files per listing page (Drive's maximum).
const PAGE_SIZE: &str = "1000";

/// The `GOOGLE_DRIVE_*` settings, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct GoogleDriveConfig {
    /// The service account (`client_email` of the credentials).
    pub client_email: String,
    /// Its RSA key, PKCS#8 DER (`private_key` of the credentials).
    pub private_key: Vec<u8>,
    /// `GOOGLE_DRIVE_FOLDER_ID`: the folder that holds the backups.
    pub folder: String,
    /// `GOOGLE_DRIVE_IMPERSONATE_SUBJECT`: the user the account acts for.
    pub subject: Option<String>,
    /// `GOOGLE_DRIVE_TEAM_DRIVE_ID`: the shared drive the folder is in.
    pub drive: Option<String>,
    /// `GOOGLE_DRIVE_ENDPOINT`, ending in `/`: metadata calls are relative to it, uploads go
    /// to `/upload/drive/v3/files` on its host (as Google's client libraries do).
    pub endpoint: url::Url,
    pub token_url: String,
}

impl fmt::Debug for GoogleDriveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleDriveConfig")
            .field("client_email", &self.client_email)
            .field("folder", &self.folder)
            .field("drive", &self.drive)
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

/// What is read from a service-account key file (the JSON the Cloud console downloads).
#[derive(Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: Vec<u8>,
    pub token_uri: Option<String>,
}

/// Reads a service-account key file. The error never quotes the file (it holds the key).
pub fn parse_credentials(raw: &str) -> Result<ServiceAccount, String> {
    let value: Value = serde_json::from_str(raw)
        .map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    match field("type").as_deref() {
        Some("service_account") => {}
        Some(other) => {
            return Err(format!(
                "a key of type {other:?}; expected a service account's key file (\"type\": \
                 \"service_account\")"
            ));
        }
        None => return Err("no \"type\"; expected a service account's key file".into()),
    }
    let client_email = field("client_email")
        .filter(|e| e.contains('@'))
        .ok_or("no \"client_email\" in the key file")?;
    let pem = field("private_key").ok_or("no \"private_key\" in the key file")?;
    let private_key = pem_body(&pem, "PRIVATE KEY")
        .ok_or("\"private_key\" is not a PEM \"PRIVATE KEY\" block")?;
    ring::signature::RsaKeyPair::from_pkcs8(&private_key)
        .map_err(|e| format!("\"private_key\" is not an RSA key in PKCS#8 form ({e})"))?;
    Ok(ServiceAccount {
        client_email,
        private_key,
        token_uri: field("token_uri").filter(|u| !u.is_empty()),
    })
}

/// The bytes of the PEM block labelled `label`.
fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let text: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// A string literal of Drive's search language: `\` and `'` escaped.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[derive(Debug)]
enum DriveError {
    Http(reqwest::Error),
    /// 401: the access token expired or was revoked; get a new one and repeat.
    Expired,
    Status {
        what: &'static str,
        status: StatusCode,
        /// Drive's `reason` (`rateLimitExceeded`, `notFound`, ...) or the token endpoint's
        /// `error`.
        reason: String,
        message: String,
    },
    /// The upload session is gone or answered something a resumable session never does.
    Session(String),
    /// The token request could not be signed with the account's key.
    Signing(String),
}

impl fmt::Display for DriveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriveError::Http(e) => f.write_str(&crate::net::error_chain(e)),
            DriveError::Expired => f.write_str("the access token expired"),
            DriveError::Session(why) => write!(f, "the upload session failed: {why}"),
            DriveError::Signing(why) => write!(
                f,
                "signing the token request with GOOGLE_DRIVE_CREDENTIALS_JSON's key failed: {why}"
            ),
            DriveError::Status {
                what,
                status,
                reason,
                message,
            } => {
                write!(f, "{what} answered {status}")?;
                if !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                if *what == "the token endpoint" {
                    f.write_str(
                        " (check GOOGLE_DRIVE_CREDENTIALS_JSON, and for \
                         GOOGLE_DRIVE_IMPERSONATE_SUBJECT the domain-wide delegation)",
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl DriveError {
    fn transient(&self) -> bool {
        match self {
            DriveError::Http(e) => super::error::kind_of_request(e) == ErrorKind::Transient,
            DriveError::Expired => true,
            DriveError::Session(_) | DriveError::Signing(_) => false,
            DriveError::Status { status, reason, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || reason.ends_with("RateLimitExceeded")
                    || reason == "rateLimitExceeded"
            }
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            DriveError::Http(e) => super::error::kind_of_request(e),
            DriveError::Expired => ErrorKind::Transient,
            DriveError::Session(_) => ErrorKind::Other,
            DriveError::Signing(_) => ErrorKind::Denied,
            _ if self.transient() => ErrorKind::Transient,
            DriveError::Status { what, .. } if *what == "the token endpoint" => ErrorKind::Denied,
            DriveError::Status { status, .. } => super::error::kind_of_status(status.as_u16()),
        }
    }
}

/// A request that got no answer. Without its URL: an upload session's address lets anyone
/// who has it write into the session, so it stays out of logs.
fn http(e: reqwest::Error) -> DriveError {
    DriveError::Http(e.without_url())
}

fn drive_error(what: impl Into<String>, e: DriveError) -> StorageError {
    StorageError::new(e.kind(), what, e.to_string())
}

/// An error answer of Drive (`{"error": {"errors": [{"reason"}], "message"}}`) or of the
/// token endpoint (`{"error", "error_description"}`).
async fn status_error(what: &'static str, response: reqwest::Response) -> DriveError {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED && what != "the token endpoint" {
        return DriveError::Expired;
    }
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let error = &body["error"];
    let (reason, message) = if error.is_object() {
        (
            error["errors"][0]["reason"].as_str().unwrap_or_default(),
            error["message"].as_str().unwrap_or_default(),
        )
    } else {
        (
            error.as_str().unwrap_or_default(),
            body["error_description"].as_str().unwrap_or_default(),
        )
    };
    let message = if reason.is_empty() && message.is_empty() {
        text.chars().take(200).collect()
    } else {
        message.to_owned()
    };
    DriveError::Status {
        what,
        status,
        reason: reason.to_owned(),
        message,
    }
}

struct Token {
    value: String,
    renew_at: Instant,
}

pub struct GoogleDriveStorage {
    client: reqwest::Client,
    config: GoogleDriveConfig,
    retry: RetryPolicy,
    token: tokio::sync::Mutex<Option<Token>>,
}

/// A file of the folder as Drive lists it.
struct DriveFile {
    id: String,
    name: String,
    size: Option<u64>,
    created: Option<jiff::Timestamp>,
}

impl GoogleDriveStorage {
    pub fn new(config: &GoogleDriveConfig, retry: RetryPolicy) -> Result<Self, StorageError> {
        let client = super::api_client("Google Drive")?;
        Ok(Self {
            client,
            config: config.clone(),
            retry,
            token: tokio::sync::Mutex::new(None),
        })
    }

    fn display(&self) -> String {
        format!("gdrive:{}", self.config.folder)
    }

    /// The signed assertion the token endpoint exchanges for an access token.
    fn assertion(&self) -> Result<String, DriveError> {
        let now = jiff::Timestamp::now().as_second();
        let mut claims = json!({
            "iss": self.config.client_email,
            "scope": SCOPE,
            "aud": self.config.token_url,
            "iat": now,
            "exp": now + 3600,
        });
        if let Some(subject) = &self.config.subject {
            claims["sub"] = json!(subject);
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{payload}");
        let key = ring::signature::RsaKeyPair::from_pkcs8(&self.config.private_key)
            .map_err(|e| DriveError::Signing(e.to_string()))?;
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signed.as_bytes(),
            &mut signature,
        )
        .map_err(|_| DriveError::Signing("ring refused to sign".into()))?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    async fn fetch_token(&self) -> Result<Token, DriveError> {
        let body = format!(
            "grant_type={}&assertion={}",
            percent_encoding::utf8_percent_encode(
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
                percent_encoding::NON_ALPHANUMERIC
            ),
            self.assertion()?
        );
        let asked = Instant::now();
        let response = self
            .client
            .post(&self.config.token_url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(http)?;
        if !response.status().is_success() {
            return Err(status_error("the token endpoint", response).await);
        }
        let answer: Value =
            serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or(Value::Null);
        let value = answer["access_token"]
            .as_str()
            .ok_or_else(|| DriveError::Status {
                what: "the token endpoint",
                status: StatusCode::OK,
                reason: String::new(),
                message: "no access_token in the answer".into(),
            })?
            .to_owned();
        // Renewed a minute early, so that no request starts with a token about to expire.
        let lifetime = answer["expires_in"].as_u64().unwrap_or(3600);
        Ok(Token {
            value,
            renew_at: asked + Duration::from_secs(lifetime.saturating_sub(60)),
        })
    }

    async fn access_token(&self, renew: bool) -> Result<String, DriveError> {
        let mut slot = self.token.lock().await;
        let stale = slot.as_ref().is_none_or(|t| Instant::now() >= t.renew_at);
        if renew || stale {
            *slot = Some(self.fetch_token().await?);
        }
        Ok(slot.as_ref().expect("token").value.clone())
    }

    /// One request built by `build`, with a bearer token; a 401 renews the token and the
    /// shared retry policy repeats what may pass. Answers other than 2xx are errors.
    async fn call(
        &self,
        what: &'static str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DriveError> {
        let renew = std::sync::atomic::AtomicBool::new(false);
        self.retry
            .run(what, DriveError::transient, || async {
                let token = self
                    .access_token(renew.swap(false, std::sync::atomic::Ordering::SeqCst))
                    .await?;
                let response = build(&self.client)
                    .bearer_auth(token)
                    .send()
                    .await
                    .map_err(http)?;
                if response.status().is_success() {
                    return Ok(response);
                }
                let e = status_error(what, response).await;
                if matches!(e, DriveError::Expired) {
                    renew.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                Err(e)
            })
            .await
    }

    /// `path` relative to the endpoint, with the shared-drive parameters and `query`.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> url::Url {
        let mut url = self.config.endpoint.join(path).expect("a relative path");
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("supportsAllDrives", "true");
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// The files (never folders) directly in the folder, every page; only those named
    /// `name` when given.
    async fn files(&self, name: Option<&str>) -> Result<Vec<DriveFile>, DriveError> {
        let mut q = format!(
            "{} in parents and trashed = false and mimeType != {}",
            quote(&self.config.folder),
            quote(FOLDER_MIME)
        );
        if let Some(name) = name {
            q.push_str(&format!(" and name = {}", quote(name)));
        }
        let mut query = vec![
            ("q", q.as_str()),
            ("fields", "nextPageToken,files(id,name,size,createdTime)"),
            ("pageSize", PAGE_SIZE),
            ("includeItemsFromAllDrives", "true"),
            ("orderBy", "createdTime"),
        ];
        if let Some(drive) = &self.config.drive {
            query.extend([("corpora", "drive"), ("driveId", drive.as_str())]);
        }
        let mut files = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = query.clone();
            if let Some(token) = &token {
                query.push(("pageToken", token));
            }
            let url = self.url("files", &query);
            let response = self.call("listing files", |c| c.get(url.clone())).await?;
            let page: Value = serde_json::from_str(&response.text().await.unwrap_or_default())
                .unwrap_or(Value::Null);
            for item in page["files"].as_array().into_iter().flatten() {
                let (Some(id), Some(name)) = (item["id"].as_str(), item["name"].as_str()) else {
                    continue;
                };
                files.push(DriveFile {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    // Drive gives sizes as strings (int64 in JSON).
                    size: item["size"].as_str().and_then(|s| s.parse().ok()),
                    created: item["createdTime"].as_str().and_then(|t| t.parse().ok()),
                });
            }
            match page["nextPageToken"].as_str() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(files)
    }

    async fn delete_id(&self, id: &str) -> Result<(), DriveError> {
        let url = self.url(&format!("files/{id}"), &[]);
        match self
            .call("deleting a file", |c| c.delete(url.clone()))
            .await
        {
            Ok(_) => Ok(()),
            Err(DriveError::Status { status, .. }) if status == StatusCode::NOT_FOUND => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Opens a resumable upload session for `name` in the folder: its URI.
    async fn start_session(&self, name: &str) -> Result<String, DriveError> {
        let mut url = self
            .config
            .endpoint
            .join("/upload/drive/v3/files")
            .expect("an absolute path");
        url.query_pairs_mut()
            .append_pair("uploadType", "resumable")
            .append_pair("supportsAllDrives", "true")
            .append_pair("fields", "id");
        let metadata = json!({"name": name, "parents": [self.config.folder]}).to_string();
        let response = self
            .call("starting an upload", |c| {
                c.post(url.clone())
                    .header("Content-Type", "application/json; charset=UTF-8")
                    .header("X-Upload-Content-Type", "application/octet-stream")
                    .body(metadata.clone())
            })
            .await?;
        response
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| DriveError::Session("no Location in the answer".into()))
    }
}

/// One resumable upload: the session URI and how many bytes Drive holds.
struct Upload<'a> {
    drive: &'a GoogleDriveStorage,
    uri: String,
    offset: u64,
}

/// What a chunk request's answer says.
enum Sent {
    /// 308: the session holds this many bytes.
    Holds(u64),
    /// 200/201: the file exists, with this id.
    Done(String),
}

impl Upload<'_> {
    /// Sends `chunk`, which starts at `self.offset`; `total` is set on the last one. After a
    /// failure the session is asked how much it holds and the rest of the chunk goes from
    /// there: the id of the finished file after the last chunk.
    async fn send(
        &mut self,
        chunk: &Bytes,
        total: Option<u64>,
    ) -> Result<Option<String>, DriveError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let start = self.offset;
        let end = start + chunk.len() as u64;
        let total_text = total.map_or("*".to_owned(), |t| t.to_string());
        let renew = AtomicBool::new(false);
        let failed = AtomicBool::new(false);
        let mut at = start;
        loop {
            let sent = self
                .drive
                .retry
                .run("uploading a chunk", DriveError::transient, || async {
                    let token = self
                        .drive
                        .access_token(renew.swap(false, Ordering::SeqCst))
                        .await?;
                    let mut from = at;
                    if failed.swap(false, Ordering::SeqCst) {
                        match self
                            .request(&token, chunk, start, end, end, &total_text)
                            .await
                        {
                            Ok(Sent::Holds(held)) if (start..=end).contains(&held) => from = held,
                            Ok(Sent::Holds(held)) => return Ok(Sent::Holds(held)),
                            other => return self.note(other, &renew, &failed),
                        }
                    }
                    let result = self
                        .request(&token, chunk, start, from, end, &total_text)
                        .await;
                    self.note(result, &renew, &failed)
                })
                .await?;
            match sent {
                // Part of the chunk arrived without an error (Drive keeps 256 KiB multiples).
                Sent::Holds(held) if (at + 1..end).contains(&held) => at = held,
                Sent::Holds(held) if held == end && total.is_none() => {
                    self.offset = end;
                    return Ok(None);
                }
                Sent::Holds(held) => {
                    return Err(DriveError::Session(format!(
                        "it holds {held} bytes where {end} were sent"
                    )));
                }
                Sent::Done(id) if total.is_some() => return Ok(Some(id)),
                Sent::Done(_) => {
                    return Err(DriveError::Session(
                        "it completed before the last chunk".into(),
                    ));
                }
            }
        }
    }

    /// Marks what the next attempt needs after `result`: a new token, the session's state.
    fn note(
        &self,
        result: Result<Sent, DriveError>,
        renew: &std::sync::atomic::AtomicBool,
        failed: &std::sync::atomic::AtomicBool,
    ) -> Result<Sent, DriveError> {
        if let Err(e) = &result {
            if matches!(e, DriveError::Expired) {
                renew.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        result
    }

    /// One PUT of `chunk[at - start..]`; with `at == end` it only asks what the session
    /// holds (or finishes an empty last chunk).
    async fn request(
        &self,
        token: &str,
        chunk: &Bytes,
        start: u64,
        at: u64,
        end: u64,
        total: &str,
    ) -> Result<Sent, DriveError> {
        let body = chunk.slice((at - start) as usize..);
        let range = if at == end {
            format!("bytes */{total}")
        } else {
            format!("bytes {at}-{}/{total}", end - 1)
        };
        let response = self
            .drive
            .client
            .put(&self.uri)
            .bearer_auth(token)
            .header("Content-Range", range)
            .body(body)
            .send()
            .await
            .map_err(http)?;
        sent(response).await
    }
}

/// Cancels a resumable session; Drive answers 499. Unanswered, Drive drops it after a week.
async fn cancel_session(client: reqwest::Client, uri: String) -> Result<(), StorageError> {
    let what = "cancelling an upload session";
    let response = client
        .delete(&uri)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| StorageError::new(super::error::kind_of_request(&e), what, e))?;
    match response.status() {
        StatusCode::NOT_FOUND | StatusCode::GONE => Err(StorageError::new(
            ErrorKind::NotFound,
            what,
            "no such session",
        )),
        _ => Ok(()),
    }
}

async fn sent(response: reqwest::Response) -> Result<Sent, DriveError> {
    let status = response.status();
    if status.as_u16() == 308 {
        // "Range: bytes=0-N" when N+1 bytes are held; no header when none.
        let held = response
            .headers()
            .get("Range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('-').next())
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map_or(0, |last| last + 1);
        return Ok(Sent::Holds(held));
    }
    if status.is_success() {
        let answer: Value =
            serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or(Value::Null);
        return answer["id"]
            .as_str()
            .map(|id| Sent::Done(id.to_owned()))
            .ok_or_else(|| DriveError::Session("no file id in the final answer".into()));
    }
    if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        return Err(DriveError::Session(format!(
            "{status}: the session expired or was cancelled"
        )));
    }
    Err(status_error("the upload session", response).await)
}

impl GoogleDriveStorage {
    /// Streams `data` through `upload`, one chunk at a time: the new file's id and size.
    async fn send_all(
        &self,
        upload: &mut Upload<'_>,
        mut data: ByteStream,
        location: &str,
    ) -> Result<(String, u64), StorageError> {
        let fail = |e: DriveError| drive_error(format!("uploading {location}"), e);
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            let mut ended = false;
            while buf.len() < CHUNK {
                match data.next().await {
                    Some(Ok(piece)) => buf.extend_from_slice(&piece),
                    Some(Err(e)) => return Err(StorageError::incomplete(e)),
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            if ended {
                let chunk = buf.split().freeze();
                let total = upload.offset + chunk.len() as u64;
                let id = upload.send(&chunk, Some(total)).await.map_err(fail)?;
                return Ok((id.expect("a finished upload"), total));
            }
            // Exactly CHUNK bytes for every chunk but the last (a 256 KiB multiple).
            let chunk = buf.split_to(CHUNK).freeze();
            upload.send(&chunk, None).await.map_err(fail)?;
            buf.reserve(CHUNK);
        }
    }
}

#[async_trait]
impl Storage for GoogleDriveStorage {
    fn backend(&self) -> super::Backend {
        super::Backend::GoogleDrive
    }

    async fn put(&self, name: &str, data: ByteStream) -> Result<Stored, StorageError> {
        let location = format!("{}/{name}", self.display());
        let what = format!("uploading {location}");
        let existing = self
            .files(Some(name))
            .await
            .map_err(|e| drive_error(what.clone(), e))?;
        if !existing.is_empty() {
            return Err(StorageError::exists(&location));
        }
        let uri = self
            .start_session(name)
            .await
            .map_err(|e| drive_error(what.clone(), e))?;
        // Until its last chunk the session holds the bytes out of sight; cancelled unless
        // that chunk arrived, also when this upload is dropped.
        let staged = Staged::new(
            format!("the unfinished upload session of {location}"),
            cancel_session(self.client.clone(), uri.clone()),
        );
        let mut upload = Upload {
            drive: self,
            uri,
            offset: 0,
        };
        let (id, bytes) = match self.send_all(&mut upload, data, &location).await {
            Ok(done) => {
                staged.keep();
                done
            }
            Err(e) => {
                staged.discard().await;
                return Err(e);
            }
        };
        // Two runs raced for the name: the first stored keeps it.
        let same = self
            .files(Some(name))
            .await
            .map_err(|e| drive_error(what.clone(), e))?;
        if same.first().is_some_and(|first| first.id != id) {
            self.delete_id(&id)
                .await
                .map_err(|e| drive_error(format!("removing a second {location}"), e))?;
            return Err(StorageError::exists(&location));
        }
        Ok(Stored { location, bytes })
    }

    async fn list(&self) -> Result<Vec<Entry>, StorageError> {
        let files = self
            .files(None)
            .await
            .map_err(|e| drive_error(format!("listing {}", self.display()), e))?;
        Ok(files
            .into_iter()
            .filter_map(|f| {
                // Google Docs have no size and are never backups.
                Some(Entry {
                    name: f.name,
                    size: f.size?,
                    modified: f.created?,
                })
            })
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<(), StorageError> {
        let what = || format!("deleting {}/{name}", self.display());
        let files = self
            .files(Some(name))
            .await
            .map_err(|e| drive_error(what(), e))?;
        for file in files {
            self.delete_id(&file.id)
                .await
                .map_err(|e| drive_error(what(), e))?;
        }
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<ByteStream, StorageError> {
        let what = || format!("reading {}/{name}", self.display());
        let files = self
            .files(Some(name))
            .await
            .map_err(|e| drive_error(what(), e))?;
        let Some(file) = files.first() else {
            return Err(StorageError::new(
                ErrorKind::NotFound,
                what(),
                "no such file in the folder",
            ));
        };
        let url = self.url(&format!("files/{}", file.id), &[("alt", "media")]);
        let response = self
            .call("downloading a file", |c| c.get(url.clone()))
            .await
            .map_err(|e| drive_error(what(), e))?;
        Ok(Box::pin(response.bytes_stream().map_err(|e| {
            io::Error::other(crate::net::error_chain(&e))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_literals_escape_quotes_and_backslashes() {
        assert_eq!(quote("root"), "'root'");
        assert_eq!(quote("it's"), r"'it\'s'");
        assert_eq!(quote(r"a\b"), r"'a\\b'");
    }

    #[test]
    fn key_files_other_than_a_service_accounts_are_refused_without_quoting_them() {
        assert!(parse_credentials("{").unwrap_err().starts_with("not JSON"));
        let user = r#"{"type": "authorized_user", "refresh_token": "s3cret"}"#;
        let err = parse_credentials(user).unwrap_err();
        assert!(
            err.contains("authorized_user") && !err.contains("s3cret"),
            "{err}"
        );
        let no_key = r#"{"type": "service_account", "client_email": "a@b.iam.gserviceaccount.com",
            "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#;
        let err = parse_credentials(no_key).unwrap_err();
        assert!(err.contains("not an RSA key"), "{err}");
        assert!(!err.contains("AAAA"), "{err}");
    }
}
