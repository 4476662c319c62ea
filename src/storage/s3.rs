//! S3-compatible destination (AWS, MinIO, Backblaze B2, Wasabi, R2, Scaleway, ...).
//!
//! Archives larger than one part are streamed as a multipart upload (see
//! [`super::object`]). An upload that cannot be aborted (the server went away) is
//! remembered in `BACKUP_STATE_DIR` and aborted at the next run, so no orphaned parts keep
//! costing storage.

use std::fmt;
use std::io;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use object_store::MultipartUpload;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientOptions, MultipartId, PutMultipartOptions, PutPayload, PutResult,
    UploadPart,
};

use super::object::{Begin, ObjectFolder};
use super::parts::PartPlan;
use super::{Entry, Storage, StorageError, Stored};
use crate::net::RetryPolicy;
use crate::stream::ByteStream;

/// AWS's own endpoint, `AWS_ENDPOINT`'s default.
pub const AWS_ENDPOINT: &str = "s3.amazonaws.com";
/// S3's limits: parts per upload, and the largest part.
pub const MAX_PARTS: u64 = 10_000;
/// Scaleway allows 1,000 parts per upload.
pub const SCALEWAY_MAX_PARTS: u64 = 1_000;
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Parts uploading at once (at the configured part size).
const PARTS_IN_FLIGHT: usize = 4;
/// The file in `BACKUP_STATE_DIR` listing uploads to abort.
const UNFINISHED_FILE: &str = "s3-unfinished-uploads";

/// The `AWS_*` settings, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// `AWS_S3_PATH` without leading or trailing slashes.
    pub folder: String,
    pub credentials: S3Credentials,
    /// `AWS_ENDPOINT`: host[:port].
    pub endpoint: String,
    /// `AWS_ENDPOINT_PROTO`: `http` or `https`.
    pub proto: String,
    /// `AWS_ENDPOINT_INSECURE`: accept any certificate.
    pub insecure: bool,
    /// `AWS_ENDPOINT_CA_CERT`, read into PEM text.
    pub ca_cert: Option<String>,
    pub storage_class: Option<String>,
    /// `AWS_REGION`, or taken from the endpoint's name, or found from the bucket.
    pub region: Option<String>,
    /// `AWS_PART_SIZE` in bytes.
    pub part_size: u64,
    /// `AWS_S3_MAX_PARTS`: the provider's part limit.
    pub max_parts: u64,
}

#[derive(Clone, PartialEq, Eq)]
pub enum S3Credentials {
    Static {
        key_id: String,
        secret: String,
    },
    /// `AWS_IAM_ROLE_ENDPOINT`: instance or container metadata.
    Metadata {
        endpoint: String,
    },
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret key never reaches a log line.
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("folder", &self.folder)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The region named in a provider's endpoint (`s3.fr-par.scw.cloud`,
/// `s3.eu-central-1.amazonaws.com`, `s3.us-west-002.backblazeb2.com`, ...).
pub fn region_from_endpoint(endpoint: &str) -> Option<String> {
    let host = endpoint.split(':').next().unwrap_or(endpoint);
    let labels: Vec<&str> = host.split('.').collect();
    let known = [
        "amazonaws.com",
        "scw.cloud",
        "wasabisys.com",
        "backblazeb2.com",
        "digitaloceanspaces.com",
    ];
    let suffix = known.iter().find(|k| host.ends_with(*k))?;
    // The label before the provider's domain, after an `s3` label.
    let kept = labels.len() - suffix.split('.').count();
    let region = *labels.get(kept.checked_sub(1)?)?;
    (region != "s3" && !region.is_empty()).then(|| region.to_owned())
}

/// The part limit of the provider behind `endpoint`.
pub fn default_max_parts(endpoint: &str) -> u64 {
    let host = endpoint.split(':').next().unwrap_or(endpoint);
    if host.ends_with(".scw.cloud") {
        SCALEWAY_MAX_PARTS
    } else {
        MAX_PARTS
    }
}

pub struct S3Storage {
    folder: ObjectFolder,
    store: Arc<AmazonS3>,
    unfinished: Arc<Unfinished>,
}

/// The HTTP client's settings: plain HTTP when asked, the private CA or no certificate
/// checks, and the checksum algorithm header.
fn client_options(config: &S3Config) -> Result<ClientOptions, object_store::Error> {
    // With the SHA-256 checksum (see `connect`), say which algorithm it is, as AWS's SDKs
    // do: Object Lock buckets ask for this header (or Content-MD5) on every upload.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-amz-sdk-checksum-algorithm",
        reqwest::header::HeaderValue::from_static("SHA256"),
    );
    let mut options = ClientOptions::new()
        .with_allow_http(config.proto == "http")
        .with_default_headers(headers);
    if config.insecure {
        options = options.with_allow_invalid_certificates(true);
    }
    if let Some(pem) = &config.ca_cert {
        for cert in object_store::Certificate::from_pem_bundle(pem.as_bytes())? {
            options = options.with_root_certificate(cert);
        }
    }
    Ok(options)
}

impl S3Storage {
    pub async fn connect(
        config: &S3Config,
        retry: RetryPolicy,
        state_dir: &FsPath,
    ) -> Result<Self, StorageError> {
        let display = if config.folder.is_empty() {
            format!("s3://{}", config.bucket)
        } else {
            format!("s3://{}/{}", config.bucket, config.folder)
        };
        let fail = |e: object_store::Error| {
            StorageError::io(
                format!("connecting to {display}"),
                io::Error::other(crate::net::error_chain(&e)),
            )
        };
        let aws = config.endpoint == AWS_ENDPOINT && config.proto == "https";
        let region = match &config.region {
            Some(r) => r.clone(),
            None if aws => bucket_region(&config.bucket)
                .await
                .unwrap_or_else(|| "us-east-1".into()),
            None => "us-east-1".into(),
        };
        crate::net::tls::install_provider();
        let options = client_options(config).map_err(fail)?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(region)
            .with_client_options(options)
            // Over TLS the payload's integrity is TLS's job: skip hashing every part for the
            // signature, as the reference's client does. Plain HTTP keeps signed payloads.
            .with_unsigned_payload(config.proto == "https")
            // A checksum on every PUT and part: buckets with Object Lock refuse uploads
            // without one (the reference sends Content-MD5; S3 takes SHA-256 as well), and
            // the server checks what it stored.
            .with_checksum_algorithm(Checksum::SHA256)
            .with_retry(retry.object_store())
            .with_http_connector(super::http_log::LoggingConnector {
                retry: retry.clone(),
            });
        if aws {
            builder = builder.with_virtual_hosted_style_request(true);
        } else {
            // Custom endpoints: path-style addressing, which every compatible server takes.
            builder = builder.with_endpoint(format!("{}://{}", config.proto, config.endpoint));
        }
        match &config.credentials {
            S3Credentials::Static { key_id, secret } => {
                builder = builder
                    .with_access_key_id(key_id)
                    .with_secret_access_key(secret);
            }
            S3Credentials::Metadata { endpoint } => {
                builder = builder.with_metadata_endpoint(endpoint);
                if let Ok(uri) = std::env::var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
                    builder = builder
                        .with_config(AmazonS3ConfigKey::ContainerCredentialsRelativeUri, uri);
                }
            }
        }
        let store = Arc::new(builder.build().map_err(fail)?);
        let unfinished = Arc::new(Unfinished {
            file: state_dir.join(UNFINISHED_FILE),
            scope: format!("{}://{}/{}", config.proto, config.endpoint, config.bucket),
            lock: Mutex::new(()),
        });
        let mut attributes = Attributes::new();
        if let Some(class) = &config.storage_class {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        Ok(Self {
            store: store.clone(),
            folder: ObjectFolder {
                backend: super::Backend::S3,
                store: store.clone(),
                begin: Box::new(S3Begin {
                    store,
                    unfinished: unfinished.clone(),
                }),
                folder: config.folder.clone(),
                display,
                plan: PartPlan {
                    base: config.part_size,
                    max_parts: config.max_parts,
                    max_part_size: MAX_PART_SIZE,
                    in_flight: PARTS_IN_FLIGHT,
                },
                attributes,
            },
            unfinished,
        })
    }
}

/// Asks AWS where the bucket lives: every answer about a bucket, even a refusal, carries
/// its region in a header.
async fn bucket_region(bucket: &str) -> Option<String> {
    crate::net::tls::install_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .ok()?;
    let response = client
        .head(format!("https://{AWS_ENDPOINT}/{bucket}"))
        .send()
        .await
        .ok()?;
    let region = response
        .headers()
        .get("x-amz-bucket-region")?
        .to_str()
        .ok()?;
    Some(region.to_owned())
}

#[async_trait]
impl Storage for S3Storage {
    fn backend(&self) -> super::Backend {
        super::Backend::S3
    }

    async fn put(&self, name: &str, data: ByteStream) -> Result<Stored, StorageError> {
        self.unfinished.abort_remembered(&self.store).await;
        self.folder.put(name, data).await
    }

    async fn list(&self) -> Result<Vec<Entry>, StorageError> {
        self.folder.list().await
    }

    async fn delete(&self, name: &str) -> Result<(), StorageError> {
        self.folder.delete(name).await
    }

    async fn get(&self, name: &str) -> Result<ByteStream, StorageError> {
        self.folder.get(name).await
    }
}

/// Starts uploads through the low-level API, which knows the upload id.
struct S3Begin {
    store: Arc<AmazonS3>,
    unfinished: Arc<Unfinished>,
}

#[async_trait]
impl Begin for S3Begin {
    async fn begin(
        &self,
        path: &Path,
        attributes: Attributes,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let opts = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let id = self.store.create_multipart_opts(path, opts).await?;
        // Recorded before the first part: if this process dies (`kill -9`, OOM), the next
        // run aborts the upload, so its parts are not billed forever.
        self.unfinished.record(path, &id);
        Ok(Box::new(S3Upload {
            store: self.store.clone(),
            path: path.clone(),
            id,
            next: 0,
            parts: Arc::default(),
            unfinished: self.unfinished.clone(),
        }))
    }
}

/// One multipart upload with numbered parts.
struct S3Upload {
    store: Arc<AmazonS3>,
    path: Path,
    id: MultipartId,
    next: usize,
    parts: Arc<Mutex<Vec<Option<PartId>>>>,
    unfinished: Arc<Unfinished>,
}

impl fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Upload({}, {})", self.path, self.id)
    }
}

#[async_trait]
impl MultipartUpload for S3Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let index = self.next;
        self.next += 1;
        let (store, path, id, parts) = (
            self.store.clone(),
            self.path.clone(),
            self.id.clone(),
            self.parts.clone(),
        );
        Box::pin(async move {
            let part = store.put_part(&path, &id, index, data).await?;
            let mut parts = parts.lock().expect("parts lock");
            if parts.len() <= index {
                parts.resize(index + 1, None);
            }
            parts[index] = Some(part);
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts: Option<Vec<PartId>> = std::mem::take(&mut *self.parts.lock().expect("lock"))
            .into_iter()
            .collect();
        let parts = parts.ok_or_else(|| object_store::Error::Generic {
            store: "S3",
            source: "a part of the upload is missing".into(),
        })?;
        let result = self
            .store
            .complete_multipart(&self.path, &self.id, parts)
            .await?;
        self.unfinished.forget(&self.id);
        Ok(result)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let result = self.store.abort_multipart(&self.path, &self.id).await;
        match &result {
            Ok(()) => self.unfinished.forget(&self.id),
            Err(_) => tracing::warn!(
                "the unfinished upload of {} will be aborted at the next run (id {}, listed \
                 in {})",
                self.path,
                self.id,
                self.unfinished.file.display()
            ),
        }
        result
    }
}

/// Uploads that could not be aborted, kept in a file so a later run aborts them.
struct Unfinished {
    file: PathBuf,
    /// Entries of this endpoint and bucket; others in the file are left alone.
    scope: String,
    lock: Mutex<()>,
}

impl Unfinished {
    fn read(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('\t');
                Some((
                    fields.next()?.to_owned(),
                    fields.next()?.to_owned(),
                    fields.next()?.to_owned(),
                ))
            })
            .collect()
    }

    fn write(&self, entries: &[(String, String, String)]) {
        let text: String = entries
            .iter()
            .map(|(scope, path, id)| format!("{scope}\t{path}\t{id}\n"))
            .collect();
        let result = if text.is_empty() {
            match std::fs::remove_file(&self.file) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        } else {
            std::fs::create_dir_all(self.file.parent().unwrap_or(FsPath::new(".")))
                .and_then(|()| std::fs::write(&self.file, text))
        };
        if let Err(e) = result {
            tracing::warn!("could not update {}: {e}", self.file.display());
        }
    }

    /// Lists an upload that has begun, until it is completed or aborted.
    fn record(&self, path: &Path, id: &MultipartId) {
        let _guard = self.lock.lock().expect("lock");
        let mut entries = self.read();
        entries.push((self.scope.clone(), path.to_string(), id.clone()));
        self.write(&entries);
    }

    /// The upload `id` is completed or aborted.
    fn forget(&self, id: &MultipartId) {
        let _guard = self.lock.lock().expect("lock");
        let mut entries = self.read();
        entries.retain(|(_, _, listed)| listed != id);
        self.write(&entries);
    }

    /// Aborts the remembered uploads of this bucket; those that fail again stay listed.
    async fn abort_remembered(&self, store: &AmazonS3) {
        let pending: Vec<_> = {
            let _guard = self.lock.lock().expect("lock");
            self.read()
        };
        if !pending.iter().any(|(scope, ..)| *scope == self.scope) {
            return;
        }
        let mut keep = Vec::new();
        for entry in pending {
            let (scope, path, id) = &entry;
            if *scope != self.scope {
                keep.push(entry);
                continue;
            }
            match store.abort_multipart(&Path::from(path.as_str()), id).await {
                Ok(()) => tracing::info!("aborted the unfinished upload of {path} (id {id})"),
                Err(e) => {
                    tracing::warn!("could not abort the unfinished upload of {path} yet: {e}");
                    keep.push(entry);
                }
            }
        }
        let _guard = self.lock.lock().expect("lock");
        self.write(&keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_read_from_provider_endpoints() {
        let cases = [
            ("s3.fr-par.scw.cloud", Some("fr-par")),
            ("s3.eu-central-1.amazonaws.com", Some("eu-central-1")),
            ("s3.us-west-002.backblazeb2.com", Some("us-west-002")),
            ("s3.eu-central-2.wasabisys.com", Some("eu-central-2")),
            ("fra1.digitaloceanspaces.com", Some("fra1")),
            ("s3.amazonaws.com", None),
            ("minio:9000", None),
            ("127.0.0.1:9000", None),
        ];
        for (endpoint, region) in cases {
            assert_eq!(
                region_from_endpoint(endpoint).as_deref(),
                region,
                "{endpoint}"
            );
        }
        assert_eq!(default_max_parts("s3.nl-ams.scw.cloud"), 1_000);
        assert_eq!(default_max_parts("s3.amazonaws.com"), 10_000);
    }
}
