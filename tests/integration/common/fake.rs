//! The stateful fakes of services that have no server here (tests/servers/*_fake.py), each
//! started by a test on its own port with its own folder, and their control routes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fake may take to listen.
const READY_WITHIN: Duration = Duration::from_secs(60);

pub struct FakeServer {
    child: Child,
    pub port: u16,
    /// Where the fake keeps the files it stores.
    pub root: PathBuf,
}

impl FakeServer {
    /// Starts `tests/servers/<script>` with `python` (the servers' venv when the fake needs
    /// more than the standard library) and waits until it listens.
    pub fn start(script: &str, python: &str, root: &Path) -> FakeServer {
        let port = super::free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/servers")
            .join(script);
        let child = Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut fake = FakeServer {
            child,
            port,
            root: root.to_owned(),
        };
        // Python's start-up (imports, the Drive fake's RSA key) can take seconds on a loaded
        // host; a test that went on before the fake listens fails at its first request.
        let deadline = Instant::now() + READY_WITHIN;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = fake.child.try_wait().unwrap() {
                panic!(
                    "the fake {} ended before it listened: {status}",
                    script.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the fake {} did not listen on {port} within {READY_WITHIN:?}",
                script.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        fake
    }

    /// `POST /_fake/<route>` with a JSON body; its JSON answer.
    pub fn control(&self, route: &str, body: &str) -> serde_json::Value {
        self.curl(&["-X", "POST", "-d", body], route)
    }

    /// `GET /_fake/<route>`: its JSON answer.
    pub fn get(&self, route: &str) -> serde_json::Value {
        self.curl(&[], route)
    }

    fn curl(&self, args: &[&str], route: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .arg("-sSf")
            .args(args)
            .arg(format!("http://127.0.0.1:{}/_fake/{route}", self.port))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the fake refused {route}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Whether the fake's process ended (a fault that ends it, or a crash).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
