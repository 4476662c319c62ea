//! The destination contract (`dunnage::storage::conformance`), run by every network
//! destination against its real server on 127.0.0.1 (Dropbox against its fake, in
//! dropbox.rs): put/list/get/delete, an incomplete
//! archive stores nothing, a cancelled upload leaves nothing, missing objects are not found,
//! a stored backup is never replaced.
//! The in-memory and local destinations run the same suite in the unit tests.

use std::process::Command;

use crate::common::remote::{Azure, S3, env, serial, unique};
use dunnage::config::{self, Vars};
use dunnage::storage::{self, Backend, conformance};

/// Opens the one destination `configure` sets up (local storage is off: its folder does
/// not exist) and runs the suite on it.
pub fn conform(backend: Backend, configure: impl FnOnce(&mut Command)) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("unused");
    cmd.env("BACKUP_ARCHIVE", tmp.path().join("no-local-folder"))
        .env("BACKUP_STATE_DIR", tmp.path().join("state"));
    configure(&mut cmd);
    let pairs: Vec<(String, String)> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
        .collect();
    let configs = config::load(&Vars::from_pairs(pairs), None).expect("a valid configuration");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (stores, failed) = storage::open_all(&configs[0].targets()).await;
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(stores.len(), 1);
        assert_eq!(stores[0].backend(), backend);
        conformance::run(stores[0].as_ref(), &unique("conf")).await;
    });
}

#[test]
fn s3_keeps_the_destination_contract() {
    let _serial = serial();
    let s3 = S3::from_env();
    let bucket = s3.bucket();
    conform(Backend::S3, |cmd| s3.configure(cmd, &bucket, "conformance"));
    assert!(
        s3.open_uploads(&bucket).is_empty(),
        "an upload was left open"
    );
}

#[test]
fn azure_keeps_the_destination_contract() {
    let _serial = serial();
    let azure = Azure::from_env();
    let container = azure.container();
    conform(Backend::Azure, |cmd| {
        azure.configure(cmd, &container, "conformance")
    });
}

#[test]
fn webdav_keeps_the_destination_contract() {
    for (url, name) in [
        ("DUNNAGE_TEST_WSGIDAV_URL", "WsgiDAV"),
        ("DUNNAGE_TEST_APACHE_URL", "Apache"),
    ] {
        eprintln!("WebDAV on {name}");
        conform(Backend::WebDav, |cmd| {
            cmd.env("WEBDAV_URL", env(url))
                .env("WEBDAV_PATH", unique("conformance"))
                .env("WEBDAV_USERNAME", env("DUNNAGE_TEST_DAV_USER"))
                .env("WEBDAV_PASSWORD", env("DUNNAGE_TEST_DAV_PASSWORD"))
                .env("BACKUP_RETRY_TIMEOUT", "3s");
        });
    }
}

#[test]
fn sftp_keeps_the_destination_contract() {
    let root = std::path::PathBuf::from(env("DUNNAGE_TEST_SSH_ROOT"));
    conform(Backend::Sftp, |cmd| {
        cmd.env("SSH_HOST_NAME", "127.0.0.1")
            .env("SSH_PORT", env("DUNNAGE_TEST_SSH_PORT"))
            .env("SSH_USER", env("DUNNAGE_TEST_SSH_USER"))
            .env("SSH_PASSWORD", env("DUNNAGE_TEST_SSH_PASSWORD"))
            .env("SSH_IDENTITY_FILE", "")
            .env("SSH_REMOTE_PATH", root.join(unique("conformance")))
            .env(
                "SSH_HOST_KEY_FINGERPRINT",
                env("DUNNAGE_TEST_SSH_FINGERPRINT"),
            )
            .env("BACKUP_RETRY_TIMEOUT", "2s");
    });
}
