"""A stateful fake of Dropbox's HTTP API (v2), for the tests. No Dropbox server can run
here, so this follows Dropbox's documentation for the routes dunnage uses, and is strict
where Dropbox is: bearer tokens that expire, concurrent upload sessions whose chunks must
be multiples of 4 MiB and cover the file exactly, finish only after the session was closed,
409 answers with an `error_summary`, 429 with `Retry-After`.

Files live in a real folder (ROOT), so tests read what was stored without this fake's help,
and back-date entries by setting a file's mtime (it is the `server_modified`).

Usage: dropbox_fake.py PORT ROOT. Control routes for tests (no auth):
  POST /_fake/fail   {"route": "files/upload_session/append_v2", "status": 429, "count": 2}
  POST /_fake/expire (every issued access token expires now)
  GET  /_fake/stats  (counters: token refreshes, appends, failures injected, ...)
"""
import json
import os
import sys
import threading
import uuid
from http.server import ThreadingHTTPServer
from datetime import datetime, timezone
from urllib.parse import parse_qs

from fake_http import JsonHandler  # tests/servers/fake_http.py, beside this script

APP_KEY, APP_SECRET, REFRESH = "fake-app-key", "fake-app-secret", "fake-refresh-token"
CHUNK_UNIT = 4 << 20
PAGE = 3  # list_folder page size, small so tests see pagination

lock = threading.Lock()
tokens = set()
sessions = {}  # id -> {"chunks": {offset: bytes}, "closed": bool}
failures = []  # [{"route", "status", "count"}]
stats = {"refreshes": 0, "appends": 0, "injected": 0, "expired_rejections": 0, "finishes": 0}
cursors = {}


def now_iso(ts):
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Handler(JsonHandler):
    def error(self, summary, status=409):
        self.send(status, {"error_summary": summary, "error": {".tag": summary.split("/")[0]}})

    def local(self, path):
        if path and not path.startswith("/"):
            raise ValueError(path)
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(path)
        return os.path.join(ROOT, *parts)

    def do_GET(self):
        if self.path == "/_fake/stats":
            with lock:
                return self.send(200, dict(stats))
        self.send(404, b"")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length) if length else b""
        route = self.path.lstrip("/")
        if route == "_fake/fail":
            with lock:
                failures.append(json.loads(body))
            return self.send(200, {})
        if route == "_fake/expire":
            with lock:
                tokens.clear()
            return self.send(200, {})
        if route == "oauth2/token":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if (form.get("grant_type") != "refresh_token" or form.get("client_id") != APP_KEY
                    or form.get("client_secret") != APP_SECRET):
                return self.send(400, {"error": "invalid_client", "error_description": "bad app key or secret"})
            if form.get("refresh_token") != REFRESH:
                return self.send(400, {"error": "invalid_grant", "error_description": "refresh token is invalid"})
            token = "tok-" + uuid.uuid4().hex
            with lock:
                tokens.add(token)
                stats["refreshes"] += 1
            return self.send(200, {"access_token": token, "token_type": "bearer", "expires_in": 14400})
        auth = self.headers.get("Authorization", "")
        with lock:
            valid = auth.startswith("Bearer ") and auth[7:] in tokens
            if not valid and auth.startswith("Bearer tok-"):
                stats["expired_rejections"] += 1
        if not valid:
            summary = "expired_access_token/" if auth.startswith("Bearer tok-") else "invalid_access_token/"
            return self.error(summary, 401)
        if not route.startswith("2/"):
            return self.send(404, b"")
        route = route[2:]
        with lock:
            for f in failures:
                if f["route"] == route and f["count"] > 0:
                    f["count"] -= 1
                    stats["injected"] += 1
                    if f["status"] == 429:
                        return self.send(429, {"error_summary": "too_many_requests/"}, headers=[("Retry-After", "1")])
                    return self.send(f["status"], b"oops", ctype="text/plain")
        arg = self.headers.get("Dropbox-API-Arg")
        try:
            arg = json.loads(arg) if arg is not None else json.loads(body or b"{}")
        except ValueError:
            return self.send(400, b"bad argument", ctype="text/plain")
        try:
            return getattr(self, "r_" + route.replace("/", "_"))(arg, body)
        except AttributeError:
            return self.send(404, b"")
        except ValueError:
            return self.error("path/malformed_path/")

    def r_files_create_folder_v2(self, arg, _):
        path = self.local(arg["path"])
        if os.path.exists(path):
            return self.error("path/conflict/folder/")
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path))
        os.mkdir(path)
        return self.send(200, {"metadata": {"name": os.path.basename(path)}})

    def r_files_upload_session_start(self, arg, body):
        if arg.get("session_type") != "concurrent":
            return self.send(400, b"this fake only does concurrent sessions", ctype="text/plain")
        if body:
            return self.send(400, b"concurrent sessions start without data", ctype="text/plain")
        sid = uuid.uuid4().hex
        with lock:
            sessions[sid] = {"chunks": {}, "closed": bool(arg.get("close"))}
        return self.send(200, {"session_id": sid})

    def r_files_upload_session_append_v2(self, arg, body):
        cursor = arg["cursor"]
        with lock:
            s = sessions.get(cursor["session_id"])
            if s is None:
                return self.error("lookup_failed/not_found/")
            if s["closed"]:
                return self.error("lookup_failed/closed/")
            if len(body) % CHUNK_UNIT != 0 and not arg.get("close"):
                return self.send(400, b"chunks of concurrent sessions must be multiples of 4 MiB", ctype="text/plain")
            if cursor["offset"] in s["chunks"]:
                # A retried append of the same chunk is accepted if identical.
                if s["chunks"][cursor["offset"]] != body:
                    return self.error("lookup_failed/incorrect_offset/")
            s["chunks"][cursor["offset"]] = body
            if arg.get("close"):
                s["closed"] = True
                s["end"] = cursor["offset"] + len(body)
            stats["appends"] += 1
        return self.send(200, b"null")

    def r_files_upload_session_finish(self, arg, _):
        cursor = arg["cursor"]
        with lock:
            s = sessions.get(cursor["session_id"])
            if s is None:
                return self.error("lookup_failed/not_found/")
            if not s["closed"]:
                return self.error("lookup_failed/not_closed/")
            # The chunks must cover [0, offset) exactly, without gaps or overlaps.
            pos, data = 0, []
            for off in sorted(s["chunks"]):
                if off != pos:
                    return self.error("lookup_failed/incorrect_offset/")
                data.append(s["chunks"][off])
                pos += len(s["chunks"][off])
            if pos != cursor["offset"] or pos != s.get("end"):
                return self.error("lookup_failed/incorrect_offset/")
            del sessions[cursor["session_id"]]
            stats["finishes"] += 1
        path = self.local(arg["commit"]["path"])
        if not os.path.isdir(os.path.dirname(path)):
            return self.error("path/not_found/")
        # WriteMode: "add" (the default) never replaces a file with other content; with
        # autorename false that is a conflict. Identical content is not a conflict.
        mode = arg["commit"].get("mode", "add")
        mode = mode.get(".tag") if isinstance(mode, dict) else mode
        tmp = path + ".fake-tmp"
        with lock:
            if mode == "add" and os.path.exists(path):
                with open(path, "rb") as f:
                    same = f.read() == b"".join(data)
                if not same:
                    if arg["commit"].get("autorename", False):
                        return self.error("fake/autorename_not_supported/", 400)
                    return self.error("path/conflict/file/")
            with open(tmp, "wb") as f:
                for d in data:
                    f.write(d)
            os.replace(tmp, path)
        return self.send(200, {"name": os.path.basename(path), "size": pos})

    def entries(self, folder):
        out = []
        for name in sorted(os.listdir(folder)):
            full = os.path.join(folder, name)
            if name.endswith(".fake-tmp"):
                continue
            st = os.stat(full)
            if os.path.isdir(full):
                out.append({".tag": "folder", "name": name})
            else:
                out.append({".tag": "file", "name": name, "size": st.st_size,
                            "server_modified": now_iso(st.st_mtime)})
        return out

    def page(self, entries):
        first, rest = entries[:PAGE], entries[PAGE:]
        cursor = uuid.uuid4().hex
        with lock:
            cursors[cursor] = rest
        return self.send(200, {"entries": first, "cursor": cursor, "has_more": bool(rest)})

    def r_files_list_folder(self, arg, _):
        if arg.get("recursive"):
            return self.send(400, b"recursive listing not expected", ctype="text/plain")
        folder = self.local(arg["path"])
        if not os.path.isdir(folder):
            return self.error("path/not_found/")
        return self.page(self.entries(folder))

    def r_files_list_folder_continue(self, arg, _):
        with lock:
            rest = cursors.pop(arg["cursor"], None)
        if rest is None:
            return self.error("reset/")
        return self.page(rest)

    def r_files_delete_v2(self, arg, _):
        path = self.local(arg["path"])
        if not os.path.isfile(path):
            return self.error("path_lookup/not_found/")
        os.remove(path)
        return self.send(200, {"metadata": {"name": os.path.basename(path)}})

    def r_files_download(self, arg, _):
        path = self.local(arg["path"])
        if not os.path.isfile(path):
            return self.error("path/not_found/")
        with open(path, "rb") as f:
            data = f.read()
        return self.send(200, data, ctype="application/octet-stream")


if __name__ == "__main__":
    port, ROOT = int(sys.argv[1]), sys.argv[2]
    os.makedirs(ROOT, exist_ok=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
