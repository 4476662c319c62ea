#!/usr/bin/env python3
"""Sums bytes written to files other than the destination, from `strace -ff -y` output.

Usage: written_outside.py STRACE_PREFIX DEST_DIR
Counts write/writev/pwrite64/pwritev return values per target path (strace -y prints the
path behind each fd). Writes into DEST_DIR (the archive or its partial name) and the tool's
stderr are its output; writes to pipes, sockets, event fds (a runtime's 8-byte wake-ups)
and devices are not files. All of those are left out; anything else is counted.
Prints the total and the paths it counted.
"""
import collections
import glob
import re
import sys

prefix, dest = sys.argv[1], sys.argv[2].rstrip("/") + "/"
call = re.compile(r"^(?:write|writev|pwrite64|pwritev)\(\d+<([^>]*)>.*\) = (\d+)$")
outside = collections.Counter()
for name in glob.glob(prefix + ".*"):
    with open(name, errors="replace") as f:
        for line in f:
            m = call.match(line.rstrip("\n"))
            if not m:
                continue
            path, n = m.group(1), int(m.group(2))
            if path.startswith(dest) or path.startswith(("pipe:", "/dev/", "anon_inode:", "socket:")):
                continue
            if path.endswith("/stderr.txt"):
                continue
            outside[path] += n
print(sum(outside.values()))
for path, n in outside.most_common(5):
    print(f"  {n} bytes to {path}", file=sys.stderr)
