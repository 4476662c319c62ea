//! What this container may use: CPUs and memory, honouring its cgroup limits, so that the
//! compressor's workers fit. `std::thread::available_parallelism` already follows the CPU
//! quota (`cpu.max`) and affinity; the memory limit is read here from cgroup v2
//! (`memory.max`) or v1 (`memory.limit_in_bytes`). A node's core count says nothing about
//! the memory a pod may use: 32 zstd workers on a 32-core node would not fit in 256 MiB.

use std::path::Path;

/// Memory for everything but the compressor's workers: tar, the pipeline's buffers, the
/// uploads in flight, the runtime (measured peak with one zstd worker: 16 MiB; S3 parts in
/// flight add their budget).
const BASE: u64 = 64 << 20;

/// CPUs this process may use (the CPU quota and affinity included).
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// The memory limit of this process's cgroup, if there is one.
pub fn memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    memory_limit_in(Path::new("/sys/fs/cgroup"), &own)
}

/// The limit under `root` for the process whose `/proc/self/cgroup` is `own`: the tightest
/// of its cgroup and the cgroups above it, in cgroup v2 (`memory.max`) or the v1 memory
/// controller (`memory.limit_in_bytes`; hybrid hosts have both, the limit is in v1).
fn memory_limit_in(root: &Path, own: &str) -> Option<u64> {
    let v2 = own.lines().find_map(|l| l.strip_prefix("0::"));
    let v1 = own.lines().find_map(|l| {
        let mut fields = l.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let in_v2 = v2.and_then(|path| tightest(root, path, "memory.max"));
    let in_v1 = v1.and_then(|path| tightest(&root.join("memory"), path, "memory.limit_in_bytes"));
    match (in_v2, in_v1) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The smallest `file` in the cgroup at `path` under `hierarchy` and its parents. Inside a
/// container without its own cgroup namespace the path names the host's cgroup while the
/// container sees only its own at the root: then the root's file counts.
fn tightest(hierarchy: &Path, path: &str, file: &str) -> Option<u64> {
    let read = |dir: &Path| -> Option<u64> {
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        let value: u64 = text.trim().parse().ok()?;
        // "max" (v2) and v1's huge page-aligned number both mean no limit.
        (value < 1 << 60).then_some(value)
    };
    let mut dir = hierarchy.join(path.trim_start_matches('/'));
    let mut limit: Option<u64> = None;
    loop {
        if let Some(l) = read(&dir) {
            limit = Some(limit.map_or(l, |t| t.min(l)));
        }
        if dir.as_path() == hierarchy || !dir.pop() {
            break;
        }
    }
    limit
}

/// How many compressor workers to run: one per CPU, fewer when `per_worker` bytes each
/// would not fit in half of the memory limit after the base.
pub fn workers(cpus: u32, memory_limit: Option<u64>, per_worker: u64) -> u32 {
    let by_memory = memory_limit.map_or(u32::MAX, |limit| {
        let spare = (limit / 2).saturating_sub(BASE);
        (spare / per_worker.max(1)).min(u64::from(u32::MAX)) as u32
    });
    cpus.min(by_memory).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_fit_in_the_memory_limit() {
        const MIB: u64 = 1 << 20;
        assert_eq!(workers(32, None, 20 * MIB), 32);
        // 256 MiB: 128 - 64 = 64 MiB spare for 20 MiB workers.
        assert_eq!(workers(32, Some(256 * MIB), 20 * MIB), 3);
        assert_eq!(workers(2, Some(256 * MIB), 20 * MIB), 2);
        assert_eq!(workers(32, Some(64 * MIB), 20 * MIB), 1, "never none");
        assert_eq!(workers(32, Some(4096 * MIB), 20 * MIB), 32);
    }

    #[test]
    fn the_tightest_cgroup_limit_counts() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("kubepods/pod1/app")).unwrap();
        std::fs::write(r.join("kubepods/memory.max"), "max\n").unwrap();
        std::fs::write(r.join("kubepods/pod1/memory.max"), "268435456\n").unwrap();
        std::fs::write(r.join("kubepods/pod1/app/memory.max"), "max\n").unwrap();
        assert_eq!(
            memory_limit_in(r, "0::/kubepods/pod1/app\n"),
            Some(268_435_456)
        );
        // A container with its own cgroup namespace sees itself at the root.
        std::fs::write(r.join("memory.max"), "536870912\n").unwrap();
        assert_eq!(memory_limit_in(r, "0::/\n"), Some(536_870_912));
        // cgroup v1.
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(v1.path().join("memory")).unwrap();
        std::fs::write(
            v1.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(memory_limit_in(v1.path(), "12:memory:/docker/abc\n"), None);
        std::fs::write(
            v1.path().join("memory/memory.limit_in_bytes"),
            "1073741824\n",
        )
        .unwrap();
        assert_eq!(
            memory_limit_in(v1.path(), "12:memory:/docker/abc\n"),
            Some(1 << 30)
        );
    }
}
