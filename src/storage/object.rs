//! The part of the S3 and Azure destinations that is the same for both: streaming an archive
//! into an `object_store` store as a multipart upload, listing one folder, deleting, reading.
//!
//! An archive smaller than one part is stored with a single PUT. A larger one becomes a
//! multipart upload (S3) or staged blocks (Azure): parts are cut by [`PartPlan`], uploaded as
//! tasks with a bounded number in flight, and committed only after the archive stream ended
//! without an error and every part is stored. Any failure, and a cancelled run, aborts the
//! upload, so nothing appears under the final name.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::MultipartUpload;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions,
    PutPayload,
};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::error::{kind_of_request, kind_of_status};
use super::parts::PartPlan;
use super::staged::Staged;
use super::{Entry, ErrorKind, Storage, StorageError, Stored};
use crate::stream::ByteStream;

/// Starts multipart uploads. S3 supplies its own (to remember uploads it could not abort);
/// the store's own is used otherwise.
#[async_trait]
pub(super) trait Begin: Send + Sync {
    async fn begin(
        &self,
        path: &Path,
        attributes: Attributes,
    ) -> object_store::Result<Box<dyn MultipartUpload>>;
}

/// The store's own multipart upload.
pub(super) struct StoreBegin(pub Arc<dyn ObjectStore>);

#[async_trait]
impl Begin for StoreBegin {
    async fn begin(
        &self,
        path: &Path,
        attributes: Attributes,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let opts = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        self.0.put_multipart_opts(path, opts).await
    }
}

/// One folder of a bucket or container: a destination.
pub(super) struct ObjectFolder {
    /// Which destination this is (S3 or Azure).
    pub backend: super::Backend,
    pub store: Arc<dyn ObjectStore>,
    pub begin: Box<dyn Begin>,
    /// The folder inside the bucket, empty for its root; no leading or trailing slash.
    pub folder: String,
    /// For messages: `s3://bucket/folder`, `azure://account/container/folder`.
    pub display: String,
    pub plan: PartPlan,
    /// Storage class or access tier, applied to every archive.
    pub attributes: Attributes,
}

/// A multipart upload in progress: its parts in flight, and its removal (an abort) unless
/// it is completed, through the one unfinished-upload lifecycle ([`Staged`]).
struct Multipart {
    /// Shared by the part uploads and the abort.
    upload: Arc<Mutex<Box<dyn MultipartUpload>>>,
    parts: JoinSet<object_store::Result<()>>,
    staged: Staged,
}

impl Multipart {
    async fn begin(
        folder: &ObjectFolder,
        path: &Path,
        attributes: Attributes,
        location: &str,
    ) -> Result<Multipart, StorageError> {
        let upload = folder
            .begin
            .begin(path, attributes)
            .await
            .map_err(|e| remote(format!("starting the upload of {location}"), e))?;
        let upload = Arc::new(Mutex::new(upload));
        let abort = {
            let upload = upload.clone();
            let what = format!("aborting the upload of {location}");
            async move {
                upload
                    .lock()
                    .await
                    .abort()
                    .await
                    .map_err(|e| remote(what, e))
            }
        };
        Ok(Multipart {
            upload,
            parts: JoinSet::new(),
            staged: Staged::new(format!("the unfinished upload of {location}"), abort),
        })
    }

    /// Starts uploading the next part.
    async fn send(&mut self, part: Vec<Bytes>) {
        let payload: PutPayload = part.into_iter().collect();
        let request = self.upload.lock().await.put_part(payload);
        self.parts.spawn(request);
    }

    /// Waits until fewer than `limit` parts are in flight.
    async fn wait_below(&mut self, limit: usize) -> object_store::Result<()> {
        while self.parts.len() >= limit {
            joined(self.parts.join_next().await)?;
        }
        Ok(())
    }

    /// Stops the parts in flight and aborts the upload.
    async fn discard(mut self) {
        self.parts.abort_all();
        self.staged.discard().await;
    }
}

/// The media type of an archive, from its name.
pub(super) fn content_type(name: &str) -> &'static str {
    let types = [
        (".tar.gz", "application/gzip"),
        (".tgz", "application/gzip"),
        (".tar.zst", "application/zstd"),
        (".tar", "application/x-tar"),
        (".gpg", "application/pgp-encrypted"),
        (".age", "application/octet-stream"),
    ];
    types
        .iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map_or("application/octet-stream", |(_, t)| t)
}

fn remote(what: impl Into<String>, e: object_store::Error) -> StorageError {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::Denied,
        E::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        E::Precondition { .. } | E::NotModified { .. } => ErrorKind::Other,
        _ => kind_of_cause(&e),
    };
    let chain = crate::net::error_chain(&e);
    // A retry does not make a plain-HTTP port speak TLS.
    let kind = match crate::net::is_tls_mismatch(&chain) {
        true => ErrorKind::Other,
        false => kind,
    };
    StorageError::new(kind, what, explain(&chain).unwrap_or(chain))
}

/// One sentence for the mistakes users make most, naming the variable to fix, instead of
/// the client's chain with the server's XML answer in it. `None`: no known cause.
fn explain(chain: &str) -> Option<String> {
    if crate::net::is_tls_mismatch(chain) {
        return Some(
            "the server does not speak TLS on this port: if it is plain HTTP, set \
             AWS_ENDPOINT_PROTO=http (S3) or an http:// AZURE_STORAGE_ENDPOINT (Azure)"
                .into(),
        );
    }
    let code = between(chain, "<Code>", "</Code>")?;
    let sentence = match code {
        "SignatureDoesNotMatch" => {
            "the server refused the request signature: AWS_SECRET_ACCESS_KEY is not the \
             secret key of AWS_ACCESS_KEY_ID"
        }
        "InvalidAccessKeyId" => "the server does not know the key AWS_ACCESS_KEY_ID",
        "NoSuchBucket" => {
            "the bucket does not exist: create it, or fix AWS_S3_BUCKET_NAME (or \
             AWS_ENDPOINT if it is on another server)"
        }
        "AccessDenied" | "AllAccessDisabled" => {
            "access denied: the key in AWS_ACCESS_KEY_ID may not do this in the bucket (a \
             backup needs s3:PutObject, s3:GetObject, s3:ListBucket and s3:DeleteObject)"
        }
        "AuthorizationHeaderMalformed"
        | "PermanentRedirect"
        | "IllegalLocationConstraintException" => {
            "the bucket is in another region: set AWS_REGION to the bucket's region"
        }
        "InvalidStorageClass" => "the server does not offer the AWS_STORAGE_CLASS set",
        "AuthenticationFailed" => {
            "Azure refused the credentials: check AZURE_STORAGE_PRIMARY_ACCOUNT_KEY (or the \
             connection string or SAS token) and AZURE_STORAGE_ACCOUNT_NAME"
        }
        "ContainerNotFound" => {
            "the container does not exist: create it, or fix AZURE_STORAGE_CONTAINER_NAME"
        }
        "AuthorizationFailure" | "AuthorizationPermissionMismatch" => {
            "Azure refused the request: a wrong AZURE_STORAGE_PRIMARY_ACCOUNT_KEY or SAS \
             token, or an identity without the Storage Blob Data Contributor role"
        }
        _ => return None,
    };
    let detail = between(chain, "<Message>", "</Message>")
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    Some(format!("{sentence} (the server said {code}{detail})"))
}

/// The text between the first `start` and the following `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let (_, rest) = text.split_once(start)?;
    Some(rest.split_once(end)?.0.trim())
}

/// The kind of the HTTP failure under an object-store error: the client's transport error
/// kind where there is one, else the status of the server's answer.
fn kind_of_cause(e: &object_store::Error) -> ErrorKind {
    use object_store::client::{HttpError, HttpErrorKind as H};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(http) = c.downcast_ref::<HttpError>() {
            return match http.kind() {
                H::Connect | H::Request | H::Timeout | H::Interrupted => ErrorKind::Transient,
                _ => ErrorKind::Other,
            };
        }
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            return kind_of_request(r);
        }
        cause = c.source();
    }
    // object_store keeps the status of a refused request in a private type; its message
    // ("... status code: 503 Service Unavailable: ...") is the only way to it.
    status_in(&crate::net::error_chain(e)).map_or(ErrorKind::Other, kind_of_status)
}

/// The HTTP status after "status code: " in an object-store message.
fn status_in(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}

impl ObjectFolder {
    /// An archive smaller than one part, in one request after one more look. Azure also
    /// refuses to replace an existing blob by itself (If-None-Match: *); not every
    /// S3-compatible service accepts that header, so S3 relies on the look.
    async fn put_single(
        &self,
        path: &Path,
        part: Vec<Bytes>,
        attributes: Attributes,
        location: &str,
    ) -> Result<(), StorageError> {
        self.refuse_existing(path, location).await?;
        let payload: PutPayload = part.into_iter().collect();
        let mode = match self.backend {
            super::Backend::Azure => PutMode::Create,
            _ => PutMode::Overwrite,
        };
        let opts = PutOptions {
            attributes,
            mode,
            ..Default::default()
        };
        match self.store.put_opts(path, payload, opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StorageError::exists(location)),
            Err(e) => Err(remote(format!("uploading {location}"), e)),
        }
    }

    /// Fails with `AlreadyExists` when `path` is stored. A look that fails (write-only
    /// credentials may not read) does not stop the upload.
    async fn refuse_existing(&self, path: &Path, location: &str) -> Result<(), StorageError> {
        match self.store.head(path).await {
            Ok(_) => Err(StorageError::exists(location)),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => {
                tracing::debug!("could not look for {location} before storing it: {e}");
                Ok(())
            }
        }
    }

    fn path(&self, name: &str) -> Path {
        if self.folder.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.folder))
        }
    }

    fn location(&self, name: &str) -> String {
        format!("{}/{name}", self.display.trim_end_matches('/'))
    }
}

#[async_trait]
impl Storage for ObjectFolder {
    fn backend(&self) -> super::Backend {
        self.backend
    }

    async fn put(&self, name: &str, mut data: ByteStream) -> Result<Stored, StorageError> {
        let path = self.path(name);
        let location = self.location(name);
        self.refuse_existing(&path, &location).await?;
        let mut attributes = self.attributes.clone();
        attributes.insert(Attribute::ContentType, content_type(name).into());

        let mut part: Vec<Bytes> = Vec::new();
        let mut part_len = 0u64;
        let mut total = 0u64;
        let mut index = 0u64;
        let mut open: Option<Multipart> = None;
        while let Some(item) = data.next().await {
            let chunk = match item {
                Ok(chunk) => chunk,
                Err(e) => return fail(open, StorageError::incomplete(e)).await,
            };
            part_len += chunk.len() as u64;
            total += chunk.len() as u64;
            part.push(chunk);
            if part_len < self.plan.size(index) {
                continue;
            }
            if index + 1 >= self.plan.max_parts {
                let err = io::Error::other(format!(
                    "the archive is larger than {} parts can hold ({} bytes); raise the part \
                     size",
                    self.plan.max_parts,
                    self.plan.capacity()
                ));
                return fail(open, StorageError::io(format!("uploading {location}"), err)).await;
            }
            if open.is_none() {
                open = Some(Multipart::begin(self, &path, attributes.clone(), &location).await?);
            }
            let multipart = open.as_mut().expect("begun above");
            multipart.send(std::mem::take(&mut part)).await;
            part_len = 0;
            index += 1;
            // Keep the bytes uploading within the budget: wait for parts to finish.
            let limit = self.plan.in_flight_for(self.plan.size(index));
            if let Err(e) = multipart.wait_below(limit).await {
                return fail(open, remote(format!("uploading {location}"), e)).await;
            }
        }

        let Some(mut multipart) = open else {
            // Smaller than one part: a single request.
            self.put_single(&path, part, attributes, &location).await?;
            return Ok(Stored {
                location,
                bytes: total,
            });
        };
        if !part.is_empty() {
            multipart.send(part).await;
        }
        if let Err(e) = multipart.wait_below(1).await {
            return fail(Some(multipart), remote(format!("uploading {location}"), e)).await;
        }
        // The multipart API cannot refuse an existing name itself: look once more right
        // before the commit (another writer may have stored it while this one uploaded).
        if let Err(e) = self.refuse_existing(&path, &location).await {
            return fail(Some(multipart), e).await;
        }
        let completed = multipart.upload.lock().await.complete().await;
        if let Err(e) = completed {
            // The commit may have happened with its answer lost: look before failing.
            let stored = self.store.head(&path).await;
            if !stored.is_ok_and(|meta| meta.size == total) {
                let err = remote(format!("completing the upload of {location}"), e);
                return fail(Some(multipart), err).await;
            }
            tracing::info!("{location}: the commit's answer was lost, but it happened");
        }
        multipart.staged.keep();
        Ok(Stored {
            location,
            bytes: total,
        })
    }

    /// Objects directly in the folder (names with a further `/` are in deeper folders).
    async fn list(&self) -> Result<Vec<Entry>, StorageError> {
        let prefix = (!self.folder.is_empty()).then(|| Path::from(self.folder.as_str()));
        let listing = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| remote(format!("listing {}", self.display), e))?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.to_owned();
                let modified = jiff::Timestamp::new(
                    meta.last_modified.timestamp(),
                    meta.last_modified.timestamp_subsec_nanos() as i32,
                )
                .ok()?;
                Some(Entry {
                    name,
                    size: meta.size,
                    modified,
                })
            })
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<(), StorageError> {
        self.store
            .delete(&self.path(name))
            .await
            .map_err(|e| remote(format!("deleting {}", self.location(name)), e))
    }

    async fn get(&self, name: &str) -> Result<ByteStream, StorageError> {
        let location = self.location(name);
        let result = self
            .store
            .get(&self.path(name))
            .await
            .map_err(|e| remote(format!("reading {location}"), e))?;
        Ok(Box::pin(result.into_stream().map_err(io::Error::other)))
    }
}

/// A finished part task: its own error, or a panic turned into one.
/// Ends a failed upload: what was uploaded of it is aborted.
async fn fail(open: Option<Multipart>, err: StorageError) -> Result<Stored, StorageError> {
    if let Some(multipart) = open {
        multipart.discard().await;
    }
    Err(err)
}

fn joined(
    done: Option<Result<object_store::Result<()>, tokio::task::JoinError>>,
) -> object_store::Result<()> {
    match done {
        None => Ok(()),
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(object_store::Error::Generic {
            store: "upload",
            source: Box::new(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("b-2026.tar.gz"), "application/gzip");
        assert_eq!(content_type("b.tar.zst"), "application/zstd");
        assert_eq!(content_type("b.tar"), "application/x-tar");
        assert_eq!(content_type("b.tar.gz.gpg"), "application/pgp-encrypted");
        assert_eq!(content_type("b.bin"), "application/octet-stream");
    }

    #[test]
    fn object_store_errors_keep_their_kind() {
        use object_store::client::{HttpError, HttpErrorKind};
        let generic =
            |source: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
                store: "S3",
                source,
            };
        let kind = |e| remote("x", e).kind();
        let io = std::io::Error::other("refused");
        let connect = generic(Box::new(HttpError::new(HttpErrorKind::Connect, io)));
        assert_eq!(kind(connect), ErrorKind::Transient);
        let decode = HttpError::new(HttpErrorKind::Decode, std::io::Error::other("bad xml"));
        assert_eq!(kind(generic(Box::new(decode))), ErrorKind::Other);
        let status = |s: &str| generic(format!("Server returned non-2xx status code: {s}").into());
        assert_eq!(
            kind(status("503 Service Unavailable: ")),
            ErrorKind::Transient
        );
        assert_eq!(
            kind(status("429 Too Many Requests: ")),
            ErrorKind::Transient
        );
        assert_eq!(kind(status("400 Bad Request: <Error/>")), ErrorKind::Other);
        // A bucket or object name that merely contains "500" or "connect" is not a cause.
        assert_eq!(
            kind(generic("no bucket connect-500".into())),
            ErrorKind::Other
        );
        let missing = object_store::Error::NotFound {
            path: "a".into(),
            source: "gone".into(),
        };
        assert_eq!(kind(missing), ErrorKind::NotFound);
    }
}
