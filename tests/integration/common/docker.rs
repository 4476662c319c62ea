//! The test Docker engine (started by scripts/test) and a busybox image built locally.

use std::process::{Command, Output};
use std::sync::OnceLock;

/// The engine's address, `unix:///.../docker.sock`.
pub fn engine() -> String {
    std::env::var("DUNNAGE_TEST_DOCKER_HOST")
        .expect("Docker tests need an engine: run scripts/test, which starts one")
}

/// `docker ARGS` against the test engine.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .arg("-H")
        .arg(engine())
        .args(args)
        .output()
        .unwrap()
}

/// `docker ARGS`, which must succeed; returns its trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The test engine's runtime whose `exec` fails on demand (tests/servers/flaky-runtime,
/// registered by scripts/with-servers).
pub const FLAKY_RUNTIME: &str = "dunnage-flaky";

/// The fault file of `container` (run with [`FLAKY_RUNTIME`]) for the runtime's `call`
/// (`exec` or `create`): how many calls are still to fail.
fn runtime_faults(container: &str, call: &str) -> std::path::PathBuf {
    let dir = std::env::var("DUNNAGE_TEST_RUNTIME_FAULTS").expect(
        "runtime fault tests need the engine scripts/with-servers starts (it has the \
         dunnage-flaky runtime)",
    );
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", container]);
    std::path::Path::new(&dir).join(format!("{id}.{call}"))
}

/// Makes the next `n` execs into `container` (`call` = "exec"), or starts of it ("create"),
/// fail as runc does under load: the process never starts and the engine answers "OCI
/// runtime exec failed" (`docker exec` ends with 126) or "OCI runtime create failed".
pub fn fail_next(container: &str, call: &str, n: u32) {
    std::fs::write(runtime_faults(container, call), n.to_string()).unwrap();
}

/// How many of the failures [`fail_next`] asked for are still to come.
pub fn failures_to_come(container: &str, call: &str) -> u32 {
    std::fs::read_to_string(runtime_faults(container, call))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A tiny image with a static busybox (no registry is reachable, so it is built here),
/// once per test process. Returns its tag.
pub fn busybox() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        )
        .unwrap();
        let out = Command::new("docker")
            .arg("-H")
            .arg(engine())
            .args(["build", "-q", "-t", "dunnage-test-busybox"])
            .arg(dir.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    });
    "dunnage-test-busybox"
}
