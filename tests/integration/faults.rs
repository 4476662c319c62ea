//! Faults during a backup: files that change under the reader, a run killed half-way, and
//! the memory bound on a large source.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const GIB: u64 = 1 << 30;

/// A sparse file: `size` bytes that take no disk space and read as zeros, fast.
fn sparse(path: &Path, size: u64) {
    fs::File::create(path).unwrap().set_len(size).unwrap();
}

/// Where `pid` is in reading `target`: the read position of a descriptor it holds on it.
fn read_position(pid: u32, target: &Path) -> Option<u64> {
    let entries = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    entries.filter_map(Result::ok).find_map(|e| {
        if fs::read_link(e.path()).ok()? != target {
            return None;
        }
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_str()?));
        info.ok()?
            .lines()
            .find_map(|l| l.strip_prefix("pos:"))?
            .trim()
            .parse()
            .ok()
    })
}

/// Whether every thread of `pid` is stopped.
fn all_stopped(pid: u32) -> bool {
    fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
        tasks.filter_map(Result::ok).all(|t| {
            fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                // The state follows the command name in parentheses.
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T'))
            })
        })
    })
}

/// Stops dunnage (SIGSTOP) in the middle of reading `target`: open and read short of `size`,
/// checked again once it is stopped, so a change made now is one it meets. Seeing the file
/// open is not enough: on a loaded host dunnage may read to its end before the change.
fn stop_while_reading(child: &mut Child, target: &Path, size: u64) {
    use nix::sys::signal::Signal;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if read_position(child.id(), target).is_some_and(|p| p < size) {
            signal(child, Signal::SIGSTOP);
            while !all_stopped(child.id()) {
                std::thread::sleep(Duration::from_micros(200));
            }
            if read_position(child.id(), target).is_some_and(|p| p < size) {
                return;
            }
            signal(child, Signal::SIGCONT);
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "dunnage read {target:?} to its end before it could be stopped there"
        );
        assert!(
            Instant::now() < deadline,
            "dunnage never read {}",
            target.display()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn files_that_change_or_vanish_while_read_are_warnings_and_the_archive_stays_valid() {
    let s = Setup::new();
    let shrinks = s.src.join("1-shrinks.bin");
    let grows = s.src.join("2-grows.bin");
    let vanishes = s.src.join("3-vanishes.txt");
    let steady = s.src.join("4-steady.txt");
    sparse(&shrinks, GIB);
    fs::OpenOptions::new()
        .write(true)
        .open(&shrinks)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &[b'A'; 4096]))
        .unwrap();
    sparse(&grows, GIB);
    fs::write(&vanishes, "here at the start").unwrap();
    fs::write(&steady, "unchanged").unwrap();

    let mut child = s
        .backup()
        .env("BACKUP_COMPRESSION", "zst")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    stop_while_reading(&mut child, &shrinks, GIB);
    fs::OpenOptions::new()
        .write(true)
        .open(&shrinks)
        .unwrap()
        .set_len(4096)
        .unwrap();
    fs::remove_file(&vanishes).unwrap();
    signal(&child, nix::sys::signal::Signal::SIGCONT);
    stop_while_reading(&mut child, &grows, GIB);
    fs::OpenOptions::new()
        .write(true)
        .open(&grows)
        .unwrap()
        .set_len(GIB + 10)
        .unwrap();
    signal(&child, nix::sys::signal::Signal::SIGCONT);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    eprintln!("{err}");

    assert!(out.status.success(), "changed files are not a failure");
    // It shrank to 4096 bytes, but dunnage may have read further before the truncation.
    let shrank = format!("{}: shrank from {GIB} to ", shrinks.display());
    let read: u64 = err
        .split(&shrank)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no shrink warning in {err}"));
    assert!((4096..GIB).contains(&read), "{read}");
    assert!(
        err.contains(&format!("{}: grew while being read", grows.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}: vanished", vanishes.display())),
        "{err}"
    );
    assert!(err.contains("3 warning(s)"), "{err}");

    // The archive is valid and has the entries with the sizes their headers announced.
    let archive = s.only_archive();
    let listing = tar(&archive).arg("-tvf").arg(&archive).output().unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout);
    let size_of = |name: &str| -> u64 {
        let line = listing.lines().find(|l| l.ends_with(name)).unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert_eq!(size_of("1-shrinks.bin"), GIB);
    assert_eq!(size_of("2-grows.bin"), GIB);
    assert!(!listing.contains("3-vanishes.txt"));
    // The entry after the changed ones is intact: the stream stayed aligned.
    let steady_name = steady.strip_prefix("/").unwrap();
    let content = tar(&archive)
        .arg("-xOf")
        .arg(&archive)
        .arg(steady_name)
        .output()
        .unwrap();
    assert_eq!(content.stdout, b"unchanged");
}

#[test]
fn a_killed_run_never_leaves_a_file_under_the_final_name() {
    let s = Setup::new();
    // Data that reaches the archive at once, then far more than can be archived before the
    // kill, at no disk cost.
    fs::write(s.src.join("a-noise.bin"), pseudo_random(16 << 20, 9)).unwrap();
    sparse(&s.src.join("b-huge.bin"), 256 * GIB);
    let mut child = s
        .backup()
        .env("BACKUP_COMPRESSION", "zst")
        .env("BACKUP_FILENAME", "final.tar.zst")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the upload is under way: a hidden partial file with data in it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let partial = loop {
        let found = s.archive_names().into_iter().find(|n| n.starts_with('.'));
        if let Some(name) = found {
            let path = s.out.join(name);
            if fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false) {
                break path;
            }
        }
        assert!(Instant::now() < deadline, "no partial file appeared");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());

    assert!(
        !s.out.join("final.tar.zst").exists(),
        "final name must not exist"
    );
    let visible: Vec<_> = s
        .archive_names()
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(visible.is_empty(), "{visible:?}");
    assert!(
        partial.exists(),
        "the partial file is hidden, not under the final name"
    );
}

/// Peak RSS of a child, in KiB, and its exit code.
fn wait_peak_rss_kib(mut child: Child) -> (i32, u64) {
    // The kernel's peak for the process's own memory (VmHWM), sampled until it exits. Not
    // `wait4`'s ru_maxrss: that also counts the test binary's memory at the fork, which
    // grows with the other tests running beside this one.
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Some(hwm) = fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak = peak.max(hwm);
        }
        if let Some(exit) = child.try_wait().unwrap() {
            return (exit.code().unwrap_or(-1), peak);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn memory_stays_within_the_budget_whatever_the_data_size() {
    for (compression, size) in [
        ("zst", GIB / 2),
        ("zst", 2 * GIB),
        ("gz", GIB / 2),
        ("gz", 2 * GIB),
    ] {
        let s = Setup::new();
        sparse(&s.src.join("big.bin"), size);
        fs::write(s.src.join("noise.bin"), pseudo_random(16 << 20, 3)).unwrap();
        let child = s
            .backup()
            .env("BACKUP_COMPRESSION", compression)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (status, peak_kib) = wait_peak_rss_kib(child);
        assert_eq!(status, 0, "{compression} {size}");
        eprintln!(
            "{compression} {} MiB: peak RSS {} MiB",
            size >> 20,
            peak_kib / 1024
        );
        assert!(
            peak_kib < 100 * 1024,
            "{compression} {size}: peak RSS {peak_kib} KiB"
        );
        let archive = s.only_archive();
        let listed = list(&archive);
        assert!(listed.iter().any(|n| n.ends_with("big.bin")));
    }
}

#[test]
fn a_full_destination_fails_the_run_and_leaves_no_file() {
    use std::os::unix::process::CommandExt;
    let s = Setup::new();
    fs::write(s.src.join("noise.bin"), pseudo_random(8 << 20, 5)).unwrap();
    let mut cmd = s.backup();
    cmd.env("BACKUP_COMPRESSION", "none");
    // The destination "fills up" after 1 MiB: writes past it fail (EFBIG), deterministically
    // and without privileges. SIGXFSZ is ignored so the write returns an error instead of
    // killing the process, as ENOSPC would.
    // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = nix::libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if nix::libc::setrlimit(nix::libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            nix::libc::signal(nix::libc::SIGXFSZ, nix::libc::SIG_IGN);
            Ok(())
        });
    }
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("storing the archive in Local failed: writing "),
        "{err}"
    );
    assert!(err.contains("File too large"), "{err}");
    assert!(s.archive_names().is_empty(), "{:?}", s.archive_names());
}
