#!/usr/bin/env python3
"""The control plane under load (run by bench/control.sh, which builds the release binary).

1. Many profiles: N conf.d profiles with small volumes, all due in the same second, run by
   the scheduler with DUNNAGE_CONCURRENCY=1 and then =C. Prints the time from the fire time
   until every run has ended (counted in /metrics), the scheduler's idle and peak RSS, and
   the ratios the issue asks for: time(C) / time(1) (target under 1/3) and the peak RSS
   above idle at C against C times that of one run.
2. API clients: one profile backing up the benchmark dataset; its throughput with no API
   client and with K clients, each polling the run's status and the profile's listing once
   a second, as a panel's dashboard does. Prints both throughputs, their ratio (target
   within 5 %), the requests answered and any that were not 200.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone

TOKEN = "bench-admin-token-0001"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def request(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    conn.request(method, path, body=body, headers=headers)
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    return answer.status, data


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def runs_ended(port):
    status, body = request(port, "GET", "/metrics")
    if status != 200:
        return 0
    total = 0
    for line in body.decode().splitlines():
        if line.startswith("dunnage_runs_total{"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def start_scheduler(binary, work, port, env_extra):
    env = {
        "PATH": os.environ["PATH"],
        "TZ": "UTC",
        "BACKUP_CONF_DIR": os.path.join(work, "conf.d"),
        "BACKUP_LOCK_FILE": os.path.join(work, "lock"),
        "BACKUP_STATE_DIR": os.path.join(work, "state"),
        "DUNNAGE_API_LISTEN": str(port),
        "DUNNAGE_API_TOKENS": f"{TOKEN} scopes=admin",
        "BACKUP_PROGRESS_INTERVAL": "0",
        "RUST_LOG": "warn",
    }
    env.update(env_extra)
    for k, v in os.environ.items():
        if k.startswith("MALLOC_") or k == "BENCH_SCHEDULER_ENV":
            env[k] = v
    log = open(os.path.join(work, "scheduler.log"), "ab")
    proc = subprocess.Popen([binary], env=env, stderr=log, stdout=log)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit(f"the scheduler did not start; see {work}/scheduler.log")
            time.sleep(0.05)


def stop(proc):
    proc.terminate()
    proc.wait(timeout=60)


def many_profiles(binary, base, profiles, concurrency, files, file_kib, compression, limit):
    work = tempfile.mkdtemp(dir=base, prefix=f"profiles-c{concurrency}-")
    conf = os.path.join(work, "conf.d")
    os.makedirs(conf)
    # One shared source tree per profile would be cheaper to build, but each customer has
    # its own volume: build one and hard-link it (same bytes on disk, separate trees).
    template = os.path.join(work, "template")
    os.makedirs(template)
    for f in range(files):
        with open(os.path.join(template, f"f{f}.bin"), "wb") as out:
            out.write(os.urandom(file_kib * 512) + b"a" * (file_kib * 512))
    # Late enough for every template copy and the scheduler's start-up (recovery checks
    # for 200 schedules) to be over.
    fire = datetime.now(timezone.utc) + timedelta(seconds=15)
    cron = f"{fire.second} {fire.minute} {fire.hour} * * *"
    for p in range(profiles):
        src = os.path.join(work, "src", f"p{p}")
        shutil.copytree(template, src, copy_function=os.link)
        out = os.path.join(work, "out", f"p{p}")
        os.makedirs(out)
        with open(os.path.join(conf, f"p{p:03}"), "w") as f:
            f.write(
                f"BACKUP_CRON_EXPRESSION={cron}\nBACKUP_SOURCES={src}\nBACKUP_ARCHIVE={out}\n"
                f"BACKUP_COMPRESSION={compression}\n"
                + (f"BACKUP_UPLOAD_LIMIT={limit}\n" if limit else "")
                + f"BACKUP_FILENAME=p{p}-%Y%m%dT%H%M%S.{{{{ .Extension }}}}\n"
                f"BACKUP_STOP_DURING_BACKUP_LABEL=customer-{p}\n"
            )
    port = free_port()
    proc = start_scheduler(binary, work, port, {"DUNNAGE_CONCURRENCY": str(concurrency)})
    fire_at = fire.timestamp()
    while time.time() < fire_at - 0.5:
        time.sleep(0.1)
    idle = rss_kib(proc.pid, "VmRSS")
    threads = rss_kib(proc.pid, "Threads")
    while time.time() < fire_at:
        time.sleep(0.01)
    deadline = time.time() + 900
    while runs_ended(port) < profiles:
        if time.time() > deadline:
            raise SystemExit(f"not every run ended; see {work}/scheduler.log")
        time.sleep(0.1)
    took = time.time() - fire_at
    peak = rss_kib(proc.pid, "VmHWM")
    stop(proc)
    stored = sum(len(os.listdir(os.path.join(work, "out", f"p{p}"))) for p in range(profiles))
    shutil.rmtree(work)
    return {"concurrency": concurrency, "seconds": took, "idle_kib": idle,
            "peak_kib": peak, "files_stored": stored, "threads": threads}


def one_backup(binary, base, dataset, clients, compression, poll):
    work = tempfile.mkdtemp(dir=base, prefix=f"clients-{clients}-")
    conf = os.path.join(work, "conf.d")
    os.makedirs(conf)
    out = tempfile.mkdtemp(dir="/dev/shm", prefix="dunnage-bench-")
    with open(os.path.join(conf, "shop"), "w") as f:
        f.write(
            f"BACKUP_CRON_EXPRESSION=0 3 * * *\nBACKUP_SOURCES={dataset}\nBACKUP_ARCHIVE={out}\n"
            f"BACKUP_COMPRESSION={compression}\n"
            "BACKUP_FILENAME=shop-%Y%m%dT%H%M%S.{{ .Extension }}\n"
        )
    port = free_port()
    proc = start_scheduler(binary, work, port, {})
    # One small backup first, so listings have something in them.
    status, body = request(port, "POST", "/api/v1/profiles/shop/runs", {})
    assert status == 202, body
    run = json.loads(body)["id"]
    while json.loads(request(port, "GET", f"/api/v1/runs/{run}")[1])["state"] != "finished":
        time.sleep(0.2)
    status, body = request(port, "POST", "/api/v1/profiles/shop/runs", {})
    assert status == 202, body
    run = json.loads(body)["id"]
    done = threading.Event()
    counts = {"ok": 0, "bad": 0, "errors": []}
    lock = threading.Lock()

    def client(i):
        paths = [f"/api/v1/runs/{run}", "/api/v1/profiles/shop/backups"]
        n = i
        time.sleep(i / max(clients, 1))  # spread over the second
        while not done.is_set():
            try:
                status, _ = request(port, "GET", paths[n % 2])
                with lock:
                    if status == 200:
                        counts["ok"] += 1
                    else:
                        counts["bad"] += 1
                        counts["errors"].append(status)
            except OSError as e:
                with lock:
                    counts["bad"] += 1
                    counts["errors"].append(str(e))
            n += 1
            time.sleep(poll)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    while True:
        state = json.loads(request(port, "GET", f"/api/v1/runs/{run}")[1])
        if state["state"] == "finished":
            break
        time.sleep(0.5)
    done.set()
    for t in threads:
        t.join()
    stop(proc)
    shutil.rmtree(out)
    shutil.rmtree(work)
    result = state["result"]
    assert state["outcome"] == "success", state
    mib = result["source_bytes"] / 1048576
    return {"clients": clients, "mib_per_s": mib / result["seconds"], "seconds": result["seconds"],
            "per_s": counts["ok"] / result["seconds"],
            "answered": counts["ok"], "not_ok": counts["bad"], "errors": counts["errors"][:5]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--work", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--profiles", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--file-kib", type=int, default=64)
    ap.add_argument("--compression", default="gz")
    ap.add_argument("--upload-limit", default="", help="BACKUP_UPLOAD_LIMIT of each profile")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between a client's requests")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-profiles", action="store_true")
    ap.add_argument("--skip-clients", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)

    if not a.skip_profiles:
        print(f"## {a.profiles} profiles, {a.files} files of {a.file_kib} KiB each (half random), "
              f"{a.compression}, upload limit {a.upload_limit or 'none'}, all due in one second")
        rows = [many_profiles(a.binary, a.work, a.profiles, c, a.files, a.file_kib, a.compression,
                              a.upload_limit)
                for c in (1, a.concurrency)]
        print("| concurrency | all ended after | idle RSS (threads) | peak RSS | files stored |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['concurrency']} | {r['seconds']:.1f} s | {r['idle_kib'] // 1024} MiB "
                  f"({r['threads']}) | {r['peak_kib'] // 1024} MiB | {r['files_stored']} |")
        one, many = rows
        budget = max(one["peak_kib"] - one["idle_kib"], 1)
        print(f"time({a.concurrency}) / time(1) = {many['seconds'] / one['seconds']:.2f} (target < 0.33)")
        print(f"peak above idle at {a.concurrency}: {(many['peak_kib'] - many['idle_kib']) / 1024:.1f} MiB "
              f"= {(many['peak_kib'] - many['idle_kib']) / budget:.2f} run budgets "
              f"(one run: {budget / 1024:.1f} MiB; target <= {a.concurrency})")
        sys.stdout.flush()

    if not a.skip_clients:
        print(f"\n## one backup of {a.dataset} ({a.compression}, into tmpfs), with 0 and {a.clients} "
              f"API clients each asking every {a.poll} s (run status and listing in turn); best of {a.reps}")
        best = {}
        for _ in range(a.reps):
            for clients in (0, a.clients):
                r = one_backup(a.binary, a.work, a.dataset, clients, a.compression, a.poll)
                if clients not in best or r["mib_per_s"] > best[clients]["mib_per_s"]:
                    best[clients] = r
                if r["not_ok"]:
                    print(f"  {r['not_ok']} requests were not answered 200: {r['errors']}")
        print("| API clients | backup MiB/s | run seconds | requests answered 200 (per s) | not 200 |")
        print("|---|---|---|---|---|")
        for clients in (0, a.clients):
            r = best[clients]
            print(f"| {clients} | {r['mib_per_s']:.1f} | {r['seconds']:.1f} | {r['answered']} "
                  f"({r['per_s']:.0f}) | {r['not_ok']} |")
        print(f"throughput with clients / without: {best[a.clients]['mib_per_s'] / best[0]['mib_per_s']:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
