#!/usr/bin/env python3
"""Builds the benchmark dataset, byte for byte the same on every run (seeded).

At scale 1 (about 1 GiB):
  - 20,000 small text files (log lines, JSON, prose-like words) in 200 folders
  - 48 medium files of 8 MiB with mixed compressibility (text, random, half and half,
    structured binary)
  - two 256 MiB files: one random (incompressible), one database-like (8 KiB pages of
    records with ids, timestamps, short strings and free space)
Scale N multiplies the counts (small and medium files) and the big files' sizes by N.

Usage: make_dataset.py DIR [--scale N]
"""

import argparse
import os
import random
import struct

MIB = 1 << 20
WORDS = (
    "backup volume archive container restore cron schedule database page index record "
    "commit rollback user order invoice payment shipment customer product price stock "
    "warehouse error warning info debug request response latency status session token "
    "the of and to in is that for it as with was on be at by this had not are but from"
).split()


def corpus(rng: random.Random, size: int) -> bytes:
    """Text with the statistics of logs and prose: repeated words, numbers, timestamps."""
    out = []
    total = 0
    line_no = 0
    while total < size:
        line_no += 1
        kind = rng.random()
        if kind < 0.4:
            line = "2026-%02d-%02dT%02d:%02d:%02d.%03dZ %s [%s] %s id=%d took=%dms\n" % (
                rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999),
                rng.choice(["INFO", "WARN", "DEBUG", "ERROR"]), rng.choice(WORDS),
                " ".join(rng.choices(WORDS, k=rng.randint(3, 12))),
                rng.randint(1, 10_000_000), rng.randint(0, 5000))
        elif kind < 0.7:
            line = '{"id": %d, "name": "%s", "email": "%s@example.org", "total": %d.%02d, "tags": ["%s", "%s"]}\n' % (
                rng.randint(1, 10_000_000), rng.choice(WORDS).title(), rng.choice(WORDS),
                rng.randint(0, 9999), rng.randint(0, 99), rng.choice(WORDS), rng.choice(WORDS))
        else:
            line = " ".join(rng.choices(WORDS, k=rng.randint(5, 20))).capitalize() + ".\n"
        b = line.encode()
        out.append(b)
        total += len(b)
    return b"".join(out)[:size]


def small_files(root: str, rng: random.Random, count: int, text: bytes) -> int:
    total = 0
    per_dir = 100
    for i in range(count):
        d = os.path.join(root, "small", "d%04d" % (i // per_dir))
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        size = int(rng.expovariate(1 / 5000)) + 100
        start = rng.randrange(0, len(text) - size)
        ext = rng.choice(["log", "json", "txt", "md"])
        with open(os.path.join(d, "f%05d.%s" % (i, ext)), "wb") as f:
            f.write(text[start:start + size])
        total += size
    return total


def medium_file(path: str, rng: random.Random, kind: int, size: int, text: bytes) -> None:
    with open(path, "wb") as f:
        if kind == 0:  # text
            start = rng.randrange(0, len(text) - size) if len(text) > size else 0
            chunk = text[start:start + size]
            f.write((chunk * (size // max(len(chunk), 1) + 1))[:size])
        elif kind == 1:  # random
            f.write(rng.randbytes(size))
        elif kind == 2:  # half random, half repetitive
            f.write(rng.randbytes(size // 2))
            f.write((b"ABCD" * 64 + rng.randbytes(64)) * (size // 2 // 320) + b"\0" * (size // 2 % 320))
        else:  # structured binary: fixed-size records with small varying fields
            rec = struct.Struct("<QIIdd16s")
            n = size // rec.size
            buf = bytearray()
            for i in range(n):
                buf += rec.pack(i, rng.randint(0, 1000), i % 7, i * 0.5, rng.random(),
                                rng.choice(WORDS).encode()[:16])
            buf += b"\0" * (size - len(buf))
            f.write(buf)


def db_file(path: str, rng: random.Random, size: int) -> None:
    """8 KiB pages: header, slot array, records packed from the end, free space in between."""
    page = 8192
    with open(path, "wb") as f:
        for pno in range(size // page):
            records = []
            used = 24
            while True:
                row_id = pno * 100 + len(records)
                rec = struct.pack("<QqI", row_id, 1_700_000_000 + row_id * 13, rng.randint(0, 99)) + (
                    "%s-%s" % (rng.choice(WORDS), rng.choice(WORDS))).encode().ljust(24, b" ")
                if used + len(rec) + 4 > page - rng.randint(0, 2000):
                    break
                records.append(rec)
                used += len(rec) + 4
            body = b"".join(records)
            header = struct.pack("<IIQQ", pno, len(records), 0xDB5EED, pno * 7)
            slots = b"".join(struct.pack("<HH", i * 44, 44) for i in range(len(records)))
            free = page - len(header) - len(slots) - len(body)
            f.write(header + slots + b"\0" * free + body)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--scale", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(20261122)
    root = args.dir
    os.makedirs(root, exist_ok=True)
    text = corpus(rng, 8 * MIB)
    small_files(root, rng, 20_000 * args.scale, text)
    os.makedirs(os.path.join(root, "medium"), exist_ok=True)
    for i in range(48 * args.scale):
        medium_file(os.path.join(root, "medium", "m%03d.bin" % i), rng, i % 4, 8 * MIB, text)
    big = 256 * MIB * args.scale
    with open(os.path.join(root, "random.bin"), "wb") as f:
        for _ in range(big // (64 * MIB)):
            f.write(rng.randbytes(64 * MIB))
    db_file(os.path.join(root, "database.db"), rng, big)


if __name__ == "__main__":
    main()
