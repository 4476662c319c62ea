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

/// The fault file of `container` (run with [`FLAKY_RUNTIME`]): how many execs are still to
/// fail.
fn exec_faults(container: &str) -> std::path::PathBuf {
    let dir = std::env::var("DUNNAGE_TEST_RUNTIME_FAULTS").expect(
        "runtime fault tests need the engine scripts/with-servers starts (it has the \
         dunnage-flaky runtime)",
    );
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", container]);
    std::path::Path::new(&dir).join(id)
}

/// Makes the next `n` execs into `container` fail as runc does under load: the process
/// never starts and `docker exec` ends with 126 and "OCI runtime exec failed".
pub fn fail_next_execs(container: &str, n: u32) {
    std::fs::write(exec_faults(container), n.to_string()).unwrap();
}

/// How many of the failures [`fail_next_execs`] asked for are still to come.
pub fn execs_still_to_fail(container: &str) -> u32 {
    std::fs::read_to_string(exec_faults(container))
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
