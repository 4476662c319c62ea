//! WebDAV destination (Nextcloud, ownCloud, Apache mod_dav, nginx, ...).
//!
//! An archive is streamed with one PUT to a hidden temporary name in the folder, then
//! MOVEd to its final name: a partial file never appears under the final name. The folder
//! is created (MKCOL, level by level) when missing. Listing is PROPFIND with `Depth: 1`,
//! read tolerantly: namespace prefixes, absolute or relative hrefs, encoded or not, with or
//! without trailing slashes. Every request but the streamed PUT is retried under the
//! policy; the PUT cannot be repeated without reading the archive again.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use percent_encoding::percent_decode_str;
use quick_xml::events::Event;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};

use super::staged::Staged;
use super::{Entry, Storage, StorageError, Stored, partial};
use crate::net::RetryPolicy;
use crate::stream::ByteStream;

/// The `WEBDAV_*` settings, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct WebDavConfig {
    /// `WEBDAV_URL`: the server's WebDAV root.
    pub url: Url,
    /// `WEBDAV_PATH` without leading or trailing slashes.
    pub folder: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `WEBDAV_URL_INSECURE`: accept any certificate.
    pub insecure: bool,
}

impl fmt::Debug for WebDavConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebDavConfig")
            .field("url", &self.url.as_str())
            .field("folder", &self.folder)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What went wrong with one request.
#[derive(Debug)]
enum DavError {
    Http(reqwest::Error),
    Status {
        method: String,
        status: StatusCode,
        body: String,
    },
}

impl fmt::Display for DavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DavError::Http(e) => f.write_str(&crate::net::error_chain(e)),
            DavError::Status {
                method,
                status,
                body,
            } => {
                write!(f, "{method} answered {status}")?;
                match status.as_u16() {
                    401 => f.write_str(" (check WEBDAV_USERNAME and WEBDAV_PASSWORD)")?,
                    403 => f.write_str(" (the user may not write there)")?,
                    507 => f.write_str(" (the server is out of space)")?,
                    _ => {}
                }
                if !body.is_empty() {
                    write!(f, ": {body}")?;
                }
                Ok(())
            }
        }
    }
}

impl DavError {
    /// Worth trying again: the connection failed or timed out, or the server is
    /// overloaded or broken for now.
    fn transient(&self) -> bool {
        self.kind() == super::ErrorKind::Transient
    }

    fn kind(&self) -> super::ErrorKind {
        match self {
            DavError::Http(e) => super::error::kind_of_request(e),
            DavError::Status { status, .. } => super::error::kind_of_status(status.as_u16()),
        }
    }
}

pub struct WebDavStorage {
    client: reqwest::Client,
    config: WebDavConfig,
    retry: RetryPolicy,
    /// The folder's URL, ending in `/`.
    folder_url: Url,
    /// The folder exists (created or found once per run).
    folder_ready: tokio::sync::OnceCell<()>,
    /// The server's Digest challenge, once it asked for Digest authentication: every
    /// later request answers it (Basic until then).
    digest: Mutex<Option<digest_auth::WwwAuthenticateHeader>>,
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("a valid method name")
}

impl WebDavStorage {
    pub fn connect(config: &WebDavConfig, retry: RetryPolicy) -> Result<Self, StorageError> {
        crate::net::tls::install_provider();
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(config.insecure)
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| {
                StorageError::io(
                    format!("connecting to {}", config.url),
                    io::Error::other(crate::net::error_chain(&e)),
                )
            })?;
        let folder_url = join(&config.url, &config.folder, true);
        Ok(Self {
            client,
            config: config.clone(),
            retry,
            folder_url,
            folder_ready: tokio::sync::OnceCell::new(),
            digest: Mutex::new(None),
        })
    }

    fn file_url(&self, name: &str) -> Url {
        join(&self.folder_url, name, false)
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let Some(user) = &self.config.username else {
            return self.client.request(method, url);
        };
        let password = self.config.password.as_deref().unwrap_or("");
        let mut digest = self.digest.lock().expect("digest lock");
        let answer = digest.as_mut().and_then(|challenge| {
            let uri = match url.query() {
                Some(query) => format!("{}?{query}", url.path()),
                None => url.path().to_owned(),
            };
            let context = digest_auth::AuthContext::new_with_method(
                user.as_str(),
                password,
                uri,
                None::<&[u8]>,
                digest_auth::HttpMethod::from(method.as_str()),
            );
            challenge.respond(&context).ok()
        });
        let builder = self.client.request(method, url);
        match answer {
            Some(answer) => builder.header(AUTHORIZATION, answer.to_header_string()),
            None => builder.basic_auth(user, Some(password)),
        }
    }

    /// Keeps the Digest challenge of a 401 answer; true when there is one to answer (and
    /// credentials to answer it with).
    fn learn_challenge(&self, response: &reqwest::Response) -> bool {
        if response.status() != StatusCode::UNAUTHORIZED || self.config.username.is_none() {
            return false;
        }
        let challenge = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.trim_start().to_ascii_lowercase().starts_with("digest "))
            .and_then(|v| digest_auth::parse(v).ok());
        match challenge {
            Some(challenge) => {
                *self.digest.lock().expect("digest lock") = Some(challenge);
                true
            }
            None => false,
        }
    }

    /// Sends a request built by `build`, retrying transient failures; `ok` says which
    /// statuses count as success.
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
        ok: impl Fn(StatusCode) -> bool,
    ) -> Result<reqwest::Response, DavError> {
        self.retry
            .run(what, DavError::transient, || async {
                let request = build().build().map_err(DavError::Http)?;
                let method = request.method().to_string();
                let mut response = self.client.execute(request).await.map_err(DavError::Http)?;
                if self.learn_challenge(&response) {
                    // A Digest server: answer its challenge at once.
                    let request = build().build().map_err(DavError::Http)?;
                    response = self.client.execute(request).await.map_err(DavError::Http)?;
                }
                check(method, response, &ok).await
            })
            .await
    }

    /// Creates the folder and its parents where missing.
    async fn ensure_folder(&self) -> Result<(), StorageError> {
        self.folder_ready
            .get_or_try_init(|| async {
                let mut url = self.config.url.clone();
                for segment in self.config.folder.split('/').filter(|s| !s.is_empty()) {
                    url = join(&url, segment, true);
                    let target = url.clone();
                    // 201: created; 405: exists already (some servers answer 301 or 409
                    // for an existing collection; a later request reports real trouble).
                    self.send(
                        &format!("creating folder {target}"),
                        || self.request(method("MKCOL"), target.clone()),
                        |s| s.is_success() || s == StatusCode::METHOD_NOT_ALLOWED,
                    )
                    .await
                    .map_err(|e| dav(format!("creating folder {target}"), e))?;
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// PROPFIND Depth 1 of the folder: every entry, hidden and unfinished ones included.
    async fn list_all(&self) -> Result<Vec<(Entry, bool)>, StorageError> {
        const BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:getlastmodified/><d:getcontentlength/><d:resourcetype/></d:prop></d:propfind>"#;
        let url = self.folder_url.clone();
        let response = self
            .send(
                &format!("listing {url}"),
                || {
                    self.request(method("PROPFIND"), url.clone())
                        .header("Depth", "1")
                        .header("Content-Type", "application/xml; charset=utf-8")
                        .body(BODY)
                },
                // 404: the folder does not exist yet (it is created at the first upload).
                |s| s.as_u16() == 207 || s == StatusCode::NOT_FOUND,
            )
            .await
            .map_err(|e| dav(format!("listing {url}"), e))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let text = response
            .text()
            .await
            .map_err(|e| dav(format!("listing {url}"), DavError::Http(e)))?;
        parse_multistatus(&text, &url).map_err(|why| {
            StorageError::io(
                format!("listing {url}"),
                io::Error::other(format!("unreadable PROPFIND answer: {why}")),
            )
        })
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
            .filter(|(_, collection)| !collection)
            .map(|(e, _)| e)
            .collect();
        partial::before_upload(self, &files, name, location).await
    }

    /// Whether `name` is in the folder with `size` bytes: tells whether a commit whose
    /// answer was lost happened after all.
    async fn holds(&self, name: &str, size: u64) -> bool {
        self.list_all().await.is_ok_and(|entries| {
            entries
                .iter()
                .any(|(e, collection)| !collection && e.name == name && e.size == size)
        })
    }

    /// The unfinished upload at `url`, removed unless committed: one DELETE, no retries.
    fn staged(&self, temp: &str, url: Url) -> Staged {
        let request = self.request(Method::DELETE, url);
        let what = format!("deleting the unfinished {temp}");
        Staged::new(
            format!("the unfinished upload {temp} in WebDAV"),
            async move {
                let response = request.send().await.map_err(DavError::Http);
                let result = match response {
                    Ok(r) => check("DELETE".into(), r, |s| s.is_success()).await,
                    Err(e) => Err(e),
                };
                result.map(drop).map_err(|e| dav(what, e))
            },
        )
    }
}

/// `base` with `path`'s segments appended (percent-encoded), as a folder (trailing slash)
/// or a file.
fn join(base: &Url, path: &str, folder: bool) -> Url {
    let mut url = base.clone();
    {
        let mut segments = url.path_segments_mut().expect("an http(s) URL");
        segments.pop_if_empty();
        segments.extend(path.split('/').filter(|s| !s.is_empty()));
        if folder {
            segments.push("");
        }
    }
    url
}

fn dav(what: String, e: DavError) -> StorageError {
    let text = e.to_string();
    if crate::net::is_tls_mismatch(&text) {
        return StorageError::new(
            super::ErrorKind::Other,
            what,
            "the server does not speak TLS on this port: if it is plain HTTP, WEBDAV_URL \
             must start with http://",
        );
    }
    StorageError::new(e.kind(), what, text)
}

/// Turns a response into an error unless its status is acceptable.
async fn check(
    method: String,
    response: reqwest::Response,
    ok: impl Fn(StatusCode) -> bool,
) -> Result<reqwest::Response, DavError> {
    let status = response.status();
    if ok(status) {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    // A short hint from the server; HTML error pages are noise.
    let body = if body.trim_start().starts_with('<') && body.contains("<html") {
        String::new()
    } else {
        body.chars().take(300).collect::<String>().trim().to_owned()
    };
    Err(DavError::Status {
        method,
        status,
        body,
    })
}

/// One `<response>` of a PROPFIND answer, as read.
#[derive(Default)]
struct Response {
    href: String,
    modified: String,
    length: String,
    collection: bool,
}

impl Response {
    /// The entry, with whether it is a collection, when it is directly in `folder_path`.
    fn entry_in(self, folder_path: &str) -> Result<Option<(Entry, bool)>, String> {
        let href = self.href.trim();
        let path = match Url::parse(href) {
            Ok(absolute) => absolute.path().to_owned(),
            Err(_) => href.to_owned(),
        };
        let path = decoded_path(&path);
        let Some((parent, name)) = path.rsplit_once('/') else {
            return Ok(None);
        };
        if path == folder_path || parent != folder_path || name.is_empty() {
            return Ok(None); // the folder itself, or not directly in it
        }
        let modified = self.modified.trim();
        let modified = jiff::fmt::rfc2822::DateTimeParser::new()
            .parse_timestamp(modified)
            .map_err(|e| format!("getlastmodified {modified:?} of {name}: {e}"))?;
        let entry = Entry {
            name: name.to_owned(),
            size: self.length.trim().parse().unwrap_or(0),
            modified,
        };
        Ok(Some((entry, self.collection)))
    }
}

/// The character an XML entity reference (`amp`, `#x41`, `#65`) stands for.
fn entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        n => n
            .strip_prefix("#x")
            .map(|h| u32::from_str_radix(h, 16))
            .or_else(|| n.strip_prefix('#').map(str::parse))
            .and_then(Result::ok)
            .and_then(char::from_u32),
    }
}

/// The entries of a PROPFIND multistatus directly below `folder` (the folder itself is
/// left out), with whether each is a collection.
fn parse_multistatus(xml: &str, folder: &Url) -> Result<Vec<(Entry, bool)>, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut entries = Vec::new();
    let mut current: Option<Response> = None;
    let mut field: Option<&'static str> = None;
    let folder_path = decoded_path(folder.path());
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => match e.local_name().as_ref() {
                b"response" => current = Some(Response::default()),
                b"href" => field = Some("href"),
                b"getlastmodified" => field = Some("modified"),
                b"getcontentlength" => field = Some("length"),
                b"collection" => {
                    if let Some(r) = current.as_mut() {
                        r.collection = true;
                    }
                }
                _ => {}
            },
            Event::Empty(e) if e.local_name().as_ref() == b"collection" => {
                if let Some(r) = current.as_mut() {
                    r.collection = true;
                }
            }
            Event::Text(t) => {
                if let (Some(r), Some(f)) = (current.as_mut(), field) {
                    let text = t.xml10_content().map_err(|e| e.to_string())?;
                    let slot = match f {
                        "href" => &mut r.href,
                        "modified" => &mut r.modified,
                        _ => &mut r.length,
                    };
                    slot.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                // `&amp;` and friends inside an href.
                if let (Some(resp), Some("href")) = (current.as_mut(), field) {
                    resp.href.extend(entity(&String::from_utf8_lossy(&r)));
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"response" => {
                    if let Some(r) = current.take() {
                        entries.extend(r.entry_in(&folder_path)?);
                    }
                }
                b"href" | b"getlastmodified" | b"getcontentlength" => field = None,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(entries)
}

/// A URL path percent-decoded, without a trailing slash.
fn decoded_path(path: &str) -> String {
    percent_decode_str(path)
        .decode_utf8_lossy()
        .trim_end_matches('/')
        .to_owned()
}

#[async_trait]
impl Storage for WebDavStorage {
    fn backend(&self) -> super::Backend {
        super::Backend::WebDav
    }

    async fn put(&self, name: &str, data: ByteStream) -> Result<Stored, StorageError> {
        self.ensure_folder().await?;
        let temp = partial::name(name);
        let temp_url = self.file_url(&temp);
        let final_url = self.file_url(name);
        let location = final_url.to_string();
        self.prepare(name, &location).await?;
        let staged = self.staged(&temp, temp_url.clone());

        // The body is the archive stream itself; an error item in it aborts the request.
        let broken: Arc<Mutex<Option<io::Error>>> = Arc::default();
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let body = {
            let (broken, sent) = (broken.clone(), sent.clone());
            data.inspect(move |item| match item {
                Ok(chunk) => {
                    sent.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    *broken.lock().expect("lock") = Some(io::Error::new(e.kind(), e.to_string()))
                }
            })
        };
        let uploaded = async {
            let response = self
                .request(Method::PUT, temp_url.clone())
                .header("Content-Type", "application/octet-stream")
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
                .map_err(DavError::Http)?;
            check("PUT".into(), response, |s| s.is_success()).await
        }
        .await;
        let broken = broken.lock().expect("lock").take();
        if let Some(e) = broken {
            staged.discard().await;
            return Err(StorageError::incomplete(e));
        }
        if let Err(e) = uploaded {
            if matches!(&e, DavError::Http(h) if h.is_connect()) {
                // The request never reached the server: there is nothing to remove.
                staged.keep();
            } else {
                staged.discard().await;
            }
            return Err(dav(format!("uploading {location}"), e));
        }
        let bytes = sent.load(std::sync::atomic::Ordering::Relaxed);
        let moved = self
            .send(
                &format!("renaming to {location}"),
                || {
                    self.request(method("MOVE"), temp_url.clone())
                        .header("Destination", final_url.as_str())
                        // A backup stored meanwhile by another writer is never replaced.
                        .header("Overwrite", "F")
                },
                |s| s.is_success(),
            )
            .await;
        if let Err(DavError::Status { status, .. }) = &moved
            && *status == StatusCode::PRECONDITION_FAILED
        {
            staged.discard().await;
            return Err(StorageError::exists(&location));
        }
        if let Err(e) = moved {
            // The MOVE may have happened with its answer lost: look before failing.
            if self.holds(name, bytes).await {
                tracing::info!("{location}: the rename's answer was lost, but it happened");
                staged.keep();
                return Ok(Stored { location, bytes });
            }
            staged.discard().await;
            return Err(dav(format!("renaming the upload to {location}"), e));
        }
        staged.keep();
        Ok(Stored { location, bytes })
    }

    async fn list(&self) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .list_all()
            .await?
            .into_iter()
            .filter(|(entry, collection)| !collection && !partial::is_partial(&entry.name))
            .map(|(entry, _)| entry)
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<(), StorageError> {
        let url = self.file_url(name);
        self.send(
            &format!("deleting {url}"),
            || self.request(Method::DELETE, url.clone()),
            // Gone already is what we wanted.
            |s| s.is_success() || s == StatusCode::NOT_FOUND,
        )
        .await
        .map(|_| ())
        .map_err(|e| dav(format!("deleting {url}"), e))
    }

    async fn get(&self, name: &str) -> Result<ByteStream, StorageError> {
        let url = self.file_url(name);
        let response = self
            .send(
                &format!("reading {url}"),
                || self.request(Method::GET, url.clone()),
                |s| s.is_success(),
            )
            .await
            .map_err(|e| dav(format!("reading {url}"), e))?;
        Ok(Box::pin(
            response
                .bytes_stream()
                .map_err(|e| io::Error::other(crate::net::error_chain(&e)))
                .map_ok(Bytes::from),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> Url {
        Url::parse("https://cloud.example/remote.php/dav/files/ann/backups/").unwrap()
    }

    #[test]
    fn urls_are_joined_and_encoded() {
        let base = Url::parse("https://cloud.example/remote.php/webdav").unwrap();
        assert_eq!(
            join(&base, "/my backups/daily/", true).as_str(),
            "https://cloud.example/remote.php/webdav/my%20backups/daily/"
        );
        let f = join(&base, "a b", true);
        assert_eq!(
            join(&f, "backup #1.tar.gz", false).as_str(),
            "https://cloud.example/remote.php/webdav/a%20b/backup%20%231.tar.gz"
        );
    }

    #[test]
    fn multistatus_from_nextcloud_style_servers_parses() {
        // Prefixed namespace, absolute-path hrefs, encoded names, folder with a slash.
        let xml = r#"<?xml version="1.0"?>
<d:multistatus xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">
 <d:response><d:href>/remote.php/dav/files/ann/backups/</d:href>
  <d:propstat><d:prop><d:getlastmodified>Sat, 21 Nov 2026 10:00:00 GMT</d:getlastmodified>
  <d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>
  <d:propstat><d:prop><d:getcontentlength/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response>
 <d:response><d:href>/remote.php/dav/files/ann/backups/backup%202026.tar.gz</d:href>
  <d:propstat><d:prop><d:getlastmodified>Sun, 22 Nov 2026 03:00:05 GMT</d:getlastmodified>
  <d:getcontentlength>1234</d:getcontentlength><d:resourcetype/></d:prop>
  <d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
 <d:response><d:href>/remote.php/dav/files/ann/backups/sub/</d:href>
  <d:propstat><d:prop><d:getlastmodified>Sun, 22 Nov 2026 03:00:05 GMT</d:getlastmodified>
  <d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
</d:multistatus>"#;
        let entries = parse_multistatus(xml, &folder()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0.name, "backup 2026.tar.gz");
        assert_eq!(entries[0].0.size, 1234);
        assert_eq!(entries[0].0.modified.to_string(), "2026-11-22T03:00:05Z");
        assert!(!entries[0].1);
        assert_eq!(entries[1].0.name, "sub");
        assert!(entries[1].1);
    }

    #[test]
    fn multistatus_from_apache_style_servers_parses() {
        // Default namespace, absolute URLs, folder without a trailing slash.
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<multistatus xmlns="DAV:">
<response><href>https://cloud.example/remote.php/dav/files/ann/backups</href>
<propstat><prop><resourcetype><collection/></resourcetype>
<getlastmodified>Sat, 21 Nov 2026 10:00:00 GMT</getlastmodified></prop>
<status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>https://cloud.example/remote.php/dav/files/ann/backups/a&amp;b.tar</href>
<propstat><prop><resourcetype/><getcontentlength>7</getcontentlength>
<getlastmodified>Sat, 21 Nov 2026 10:00:00 GMT</getlastmodified></prop>
<status>HTTP/1.1 200 OK</status></propstat></response>
</multistatus>"#;
        let entries = parse_multistatus(xml, &folder()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0.name, "a&b.tar");
        assert_eq!(entries[0].0.size, 7);
    }
}
