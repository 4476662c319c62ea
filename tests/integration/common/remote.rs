//! The S3 (moto) and Azure (Azurite) servers that `scripts/test` starts, independent clients
//! for them (boto3, azure-storage-blob), the servers' clock, and a TCP proxy that can be
//! killed to make a server vanish mid-upload.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

/// Tests in this binary share the servers and their clock: one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A variable `scripts/with-servers` sets (a server's address, key or folder).
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which starts the servers")
    })
}

/// A name no other test of this run uses (buckets, folders).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A rich source tree (see [`super::build_rich_tree`]) plus `mib` MiB of incompressible
/// bytes, so that archives span several parts or chunks.
pub fn sources_with_random(s: &super::Setup, mib: usize, seed: u64) {
    super::build_rich_tree(&s.src);
    let mut data = vec![0u8; mib << 20];
    fastrand::Rng::with_seed(seed).fill(&mut data);
    std::fs::write(s.src.join("random.bin"), data).unwrap();
}

/// Extracts `archive` (fetched from a destination) and compares it with the sources.
pub fn restore_and_compare(s: &super::Setup, archive: &Path) {
    let dest = s.tmp.path().join("restored");
    let _ = std::fs::remove_dir_all(&dest);
    super::extract(archive, &dest);
    super::assert_same_tree(&s.src, &dest, &[]);
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names in a folder a server serves, sorted, hidden ones included, manifests left out;
/// empty if missing.
pub fn names_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".sha256"))
        .collect();
    names.sort();
    names
}

/// Writes `path` with a modification time `days` ago.
pub fn write_old(path: &Path, days: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, "old").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    super::set_mtime(path, now - days * 86_400);
}

/// Runs a helper script of tests/servers with the venv's Python; returns its JSON output.
fn helper(script: &str, args: &[&str], back_dated: bool, ca: Option<&Path>) -> Value {
    let mut cmd = Command::new(env("DUNNAGE_TEST_PYTHON"));
    if let Some(ca) = ca {
        cmd.env("AWS_CA_BUNDLE", ca);
    }
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/servers")
            .join(script),
    );
    cmd.args(args);
    if back_dated {
        // The client must share the server's clock, or signatures look skewed.
        cmd.env("FAKETIME_TIMESTAMP_FILE", env("DUNNAGE_TEST_CLOCK"))
            .env("FAKETIME_NO_CACHE", "1")
            // Timers run on the monotonic clock: moving it back would break them.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env(
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
            );
    }
    let out = cmd.output().expect("run the test helper");
    assert!(
        out.status.success(),
        "{script} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("helper prints JSON")
}

/// Moves the servers' clock back by `days` until dropped: objects written meanwhile (by
/// the helpers, see [`S3::put_old`]) get old modification times.
pub struct ClockBack(());

impl ClockBack {
    pub fn days(days: u32) -> Self {
        std::fs::write(env("DUNNAGE_TEST_CLOCK"), format!("-{days}d\n")).unwrap();
        ClockBack(())
    }
}

impl Drop for ClockBack {
    fn drop(&mut self) {
        let _ = std::fs::write(env("DUNNAGE_TEST_CLOCK"), "+0\n");
    }
}

/// The moto server, with the IAM key `scripts/test` created (SigV4 is checked).
pub struct S3 {
    pub endpoint: String,
    pub key: String,
    pub secret: String,
    /// A CA certificate the helper client trusts (TLS tests).
    pub ca: Option<std::path::PathBuf>,
}

impl S3 {
    pub fn from_env() -> Self {
        S3 {
            endpoint: env("DUNNAGE_TEST_S3_ENDPOINT"),
            key: env("DUNNAGE_TEST_S3_KEY"),
            secret: env("DUNNAGE_TEST_S3_SECRET"),
            ca: None,
        }
    }

    pub fn cli(&self, args: &[&str]) -> Value {
        self.cli_at(&format!("http://{}", self.endpoint), args, false)
    }

    pub fn cli_at(&self, url: &str, args: &[&str], back_dated: bool) -> Value {
        let mut all = vec![url, &self.key, &self.secret];
        all.extend_from_slice(args);
        helper("s3_client.py", &all, back_dated, self.ca.as_deref())
    }

    /// A new, empty bucket.
    pub fn bucket(&self) -> String {
        let name = unique("b");
        self.cli(&["make-bucket", &name]);
        name
    }

    /// Sets the `AWS_*` variables for `bucket`, folder `path`.
    pub fn configure(&self, cmd: &mut Command, bucket: &str, path: &str) {
        cmd.env("AWS_S3_BUCKET_NAME", bucket)
            .env("AWS_S3_PATH", path)
            .env("AWS_ENDPOINT", &self.endpoint)
            .env("AWS_ENDPOINT_PROTO", "http")
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("BACKUP_RETRY_TIMEOUT", "3s");
    }

    /// Keys in `bucket` under `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["list", bucket, prefix])
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["key"].as_str().unwrap().to_owned())
            .filter(|k| !k.ends_with(".sha256"))
            .collect();
        keys.sort();
        keys
    }

    /// Downloads `key` to `file`.
    pub fn get(&self, bucket: &str, key: &str, file: &Path) {
        self.cli(&["get", bucket, key, file.to_str().unwrap()]);
    }

    /// Stores `key` with a modification time `days` in the past.
    pub fn put_old(&self, bucket: &str, key: &str, days: u32, scratch: &Path) {
        let file = scratch.join("old-object");
        std::fs::write(&file, format!("old {key}")).unwrap();
        let _clock = ClockBack::days(days);
        let url = format!("http://{}", self.endpoint);
        self.cli_at(&url, &["put", bucket, key, file.to_str().unwrap()], true);
    }

    pub fn open_uploads(&self, bucket: &str) -> Vec<Value> {
        self.cli(&["uploads", bucket]).as_array().unwrap().clone()
    }
}

/// Azurite, with the development account.
pub struct Azure {
    /// `http://127.0.0.1:PORT/devstoreaccount1`
    pub endpoint: String,
}

pub const AZURE_ACCOUNT: &str = "devstoreaccount1";
/// The emulator's well-known development key (public in Microsoft's documentation).
pub const AZURE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Azure {
    pub fn from_env() -> Self {
        Azure {
            endpoint: env("DUNNAGE_TEST_AZURE_ENDPOINT"),
        }
    }

    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};\
             BlobEndpoint={};",
            self.endpoint
        )
    }

    pub fn cli(&self, args: &[&str], back_dated: bool) -> Value {
        let conn = self.connection_string();
        let mut all = vec![conn.as_str()];
        all.extend_from_slice(args);
        helper("azurite_client.py", &all, back_dated, None)
    }

    pub fn container(&self) -> String {
        let name = unique("c");
        self.cli(&["make-container", &name], false);
        name
    }

    /// Sets the `AZURE_STORAGE_*` variables with the account key and endpoint template.
    pub fn configure(&self, cmd: &mut Command, container: &str, path: &str) {
        let template = self.endpoint.replace(AZURE_ACCOUNT, "{{ .AccountName }}") + "/";
        cmd.env("AZURE_STORAGE_ACCOUNT_NAME", AZURE_ACCOUNT)
            .env("AZURE_STORAGE_PRIMARY_ACCOUNT_KEY", AZURE_KEY)
            .env("AZURE_STORAGE_CONTAINER_NAME", container)
            .env("AZURE_STORAGE_PATH", path)
            .env("AZURE_STORAGE_ENDPOINT", template)
            .env("BACKUP_RETRY_TIMEOUT", "3s");
    }

    pub fn names(&self, container: &str, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .cli(&["list", container, prefix], false)
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_owned())
            .filter(|n| !n.ends_with(".sha256"))
            .collect();
        names.sort();
        names
    }

    pub fn put_old(&self, container: &str, name: &str, days: u32, scratch: &Path) {
        let file = scratch.join("old-blob");
        std::fs::write(&file, format!("old {name}")).unwrap();
        let _clock = ClockBack::days(days);
        self.cli(&["put", container, name, file.to_str().unwrap()], true);
    }
}

/// A TCP proxy to `target` on a port of its own. [`Proxy::kill`] closes every connection
/// and stops listening: to the client, the server is gone.
pub struct Proxy {
    pub port: u16,
    target: String,
    /// Bytes sent from client to server so far.
    pub upstream_bytes: Arc<AtomicU64>,
    killed: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: &str) -> Self {
        Self::start_on(target, 0)
    }

    pub fn start_on(target: &str, port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            target: target.to_owned(),
            upstream_bytes: Arc::default(),
            killed: Arc::default(),
            conns: Arc::default(),
        };
        let (target, bytes, killed, conns) = (
            proxy.target.clone(),
            proxy.upstream_bytes.clone(),
            proxy.killed.clone(),
            proxy.conns.clone(),
        );
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !killed.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                {
                    let mut list = conns.lock().unwrap();
                    list.push(client.try_clone().unwrap());
                    list.push(server.try_clone().unwrap());
                }
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Some(bytes.clone()),
                );
                pump(server, client, None);
            }
            // Dropping the listener here: new connections are refused.
        });
        proxy
    }

    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Give the accept loop time to drop the listener.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Runs `cmd` (whose destination is reached through this proxy), kills the proxy once
    /// `bytes` went upstream (mid-upload), and returns the run's output.
    pub fn cut_during(&self, cmd: &mut Command, bytes: u64) -> std::process::Output {
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        assert!(
            self.wait_for_upstream(bytes, Duration::from_secs(60)),
            "the upload never started"
        );
        self.kill();
        let out = child.wait_with_output().unwrap();
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Waits until at least `n` bytes went upstream.
    pub fn wait_for_upstream(&self, n: u64, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.upstream_bytes.load(Ordering::SeqCst) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>) {
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if let Some(c) = &count {
                        c.fetch_add(n as u64, Ordering::SeqCst);
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
