//! Azure Blob Storage destination.
//!
//! Archives are staged as blocks and committed with one block list at the end (see
//! [`super::object`]); until the commit nothing is visible under the name, and staged
//! blocks of an upload that never commits are discarded by the service.

use std::fmt;
use std::io;
use std::sync::Arc;

use object_store::azure::MicrosoftAzureBuilder;
use object_store::{Attribute, Attributes, ClientOptions};

use super::object::{ObjectFolder, StoreBegin};
use super::parts::PartPlan;
use super::{Storage, StorageError};
use crate::net::RetryPolicy;

/// Azure's limits: blocks per blob, and the largest block.
pub const MAX_BLOCKS: u64 = 50_000;
pub const MAX_BLOCK_SIZE: u64 = 4000 << 20;
/// Blocks uploading at once (at the configured block size).
const BLOCKS_IN_FLIGHT: usize = 4;
/// The access tiers the service knows.
pub const ACCESS_TIERS: &[&str] = &["Hot", "Cool", "Cold", "Archive"];

/// The `AZURE_STORAGE_*` settings, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct AzureConfig {
    pub account: String,
    pub credentials: AzureCredentials,
    pub container: String,
    /// `AZURE_STORAGE_PATH` without leading or trailing slashes.
    pub folder: String,
    /// The account's blob service URL (`AZURE_STORAGE_ENDPOINT` rendered, or the
    /// connection string's `BlobEndpoint`), without a trailing slash.
    pub endpoint: String,
    /// `AZURE_STORAGE_ACCESS_TIER`, spelled as the service does.
    pub access_tier: Option<String>,
    /// `AZURE_STORAGE_BLOCK_SIZE` in bytes.
    pub block_size: u64,
}

#[derive(Clone, PartialEq, Eq)]
pub enum AzureCredentials {
    AccountKey(String),
    SharedAccessSignature(String),
    /// Neither a key nor a connection string: the managed identity of the host.
    ManagedIdentity,
}

impl fmt::Debug for AzureCredentials {
    /// The kind of credential only, never the key or signature.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AzureCredentials::AccountKey(_) => "AccountKey(redacted)",
            AzureCredentials::SharedAccessSignature(_) => "SharedAccessSignature(redacted)",
            AzureCredentials::ManagedIdentity => "ManagedIdentity",
        })
    }
}

impl fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureConfig")
            .field("account", &self.account)
            .field("container", &self.container)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// What a connection string holds, as far as blob storage is concerned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConnectionString {
    pub account: Option<String>,
    pub key: Option<String>,
    pub sas: Option<String>,
    pub blob_endpoint: Option<String>,
}

/// The well-known development account of the storage emulator.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Splits `Key=Value;...` as the Azure SDKs do. A malformed field is an error that never
/// contains the field's text (it may be the key).
pub fn parse_connection_string(text: &str) -> Result<ConnectionString, String> {
    let mut cs = ConnectionString::default();
    let mut protocol = "https".to_owned();
    let mut suffix = "core.windows.net".to_owned();
    let mut development = false;
    for field in text.split(';').map(str::trim).filter(|f| !f.is_empty()) {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!(
                "a field without '=' ({} characters)",
                field.chars().count()
            ));
        };
        match key {
            "AccountName" => cs.account = Some(value.to_owned()),
            "AccountKey" => cs.key = Some(value.to_owned()),
            "SharedAccessSignature" => cs.sas = Some(value.to_owned()),
            "BlobEndpoint" => cs.blob_endpoint = Some(value.trim_end_matches('/').to_owned()),
            "DefaultEndpointsProtocol" => protocol = value.to_owned(),
            "EndpointSuffix" => suffix = value.to_owned(),
            "UseDevelopmentStorage" => development = value.eq_ignore_ascii_case("true"),
            // Endpoints of other services, proxy settings: not about blobs.
            _ => {}
        }
    }
    if development {
        cs.account.get_or_insert_with(|| EMULATOR_ACCOUNT.into());
        cs.key.get_or_insert_with(|| EMULATOR_KEY.into());
        cs.blob_endpoint
            .get_or_insert_with(|| format!("http://127.0.0.1:10000/{EMULATOR_ACCOUNT}"));
    }
    if cs.blob_endpoint.is_none() {
        if let Some(account) = &cs.account {
            cs.blob_endpoint = Some(format!("{protocol}://{account}.blob.{suffix}"));
        }
    }
    Ok(cs)
}

/// The Azure destination for `config`.
pub fn connect(config: &AzureConfig, retry: RetryPolicy) -> Result<Box<dyn Storage>, StorageError> {
    crate::net::tls::install_provider();
    let display = format!(
        "azure://{}/{}/{}",
        config.account, config.container, config.folder
    )
    .trim_end_matches('/')
    .to_owned();
    let fail = |e: object_store::Error| {
        StorageError::io(
            format!("connecting to {display}"),
            io::Error::other(crate::net::error_chain(&e)),
        )
    };
    let options = ClientOptions::new().with_allow_http(config.endpoint.starts_with("http://"));
    let mut builder = MicrosoftAzureBuilder::new()
        .with_account(&config.account)
        .with_container_name(&config.container)
        .with_endpoint(config.endpoint.clone())
        .with_client_options(options)
        .with_retry(retry.object_store())
        .with_http_connector(super::http_log::LoggingConnector {
            retry: retry.clone(),
        });
    builder = match &config.credentials {
        AzureCredentials::AccountKey(key) => builder.with_access_key(key),
        AzureCredentials::SharedAccessSignature(sas) => builder.with_config(
            object_store::azure::AzureConfigKey::SasKey,
            sas.trim_start_matches('?'),
        ),
        AzureCredentials::ManagedIdentity => builder,
    };
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(builder.build().map_err(fail)?);
    let mut attributes = Attributes::new();
    if let Some(tier) = &config.access_tier {
        attributes.insert(Attribute::StorageClass, tier.clone().into());
    }
    Ok(Box::new(ObjectFolder {
        backend: super::Backend::Azure,
        store: store.clone(),
        begin: Box::new(StoreBegin(store)),
        folder: config.folder.clone(),
        display,
        plan: PartPlan {
            base: config.block_size,
            max_parts: MAX_BLOCKS,
            max_part_size: MAX_BLOCK_SIZE,
            in_flight: BLOCKS_IN_FLIGHT,
        },
        attributes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_give_account_key_and_endpoint() {
        let cs = parse_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=c2VjcmV0;\
             EndpointSuffix=core.chinacloudapi.cn",
        )
        .unwrap();
        assert_eq!(cs.account.as_deref(), Some("acme"));
        assert_eq!(cs.key.as_deref(), Some("c2VjcmV0"));
        assert_eq!(
            cs.blob_endpoint.as_deref(),
            Some("https://acme.blob.core.chinacloudapi.cn")
        );

        let cs = parse_connection_string(
            "AccountName=devstoreaccount1;AccountKey=a2V5;\
             BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;",
        )
        .unwrap();
        assert_eq!(
            cs.blob_endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );

        let cs = parse_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(cs.account.as_deref(), Some(EMULATOR_ACCOUNT));
        assert!(cs.key.is_some());

        let cs = parse_connection_string(
            "BlobEndpoint=https://acme.blob.core.windows.net;SharedAccessSignature=sv=2022&sig=x",
        )
        .unwrap();
        assert_eq!(cs.sas.as_deref(), Some("sv=2022&sig=x"));
    }

    #[test]
    fn malformed_connection_strings_never_echo_their_values() {
        let err = parse_connection_string("AccountName=a;TopSecretValue").unwrap_err();
        assert!(!err.contains("TopSecret"), "{err}");
    }
}
