"""A stateful fake of Google Drive's v3 HTTP API and of Google's OAuth 2.0 token endpoint,
for the tests. No Drive server can run here, so this follows Google's documentation for
what dunnage uses, and is strict where Google is:

- the token endpoint takes only a JWT bearer assertion signed (RS256) with the service
  account's key, checked against its public key, with the right issuer, audience, scope
  and lifetime; an impersonated subject must be one the account may act for;
- access tokens expire; Drive answers 401 with an `authError` after that;
- resumable sessions take chunks in order at the offset they hold, every chunk but the last
  a multiple of 256 KiB, and create the file only when the declared total arrived; a status
  query (`Content-Range: bytes */N`) answers 308 with the `Range` held;
- a file's parent must exist; shared-drive items need `supportsAllDrives=true` (and in
  listings `includeItemsFromAllDrives=true`); the search language (`q`) is parsed and a
  malformed literal is a 400, as is an unknown field;
- listings are paged (at most PAGE files per page) and `nextPageToken` is only returned
  when `fields` asks for it; `fields` selects what each file shows.

File contents live in a real folder (ROOT/<id>); metadata is in memory.

Usage: gdrive_fake.py PORT ROOT. Control routes for tests (no auth):
  GET  /_fake/credentials  the service account's key file (JSON, as Google issues it)
  GET  /_fake/files        every file: id, name, parents, size, createdTime, trashed
  GET  /_fake/stats        counters (tokens, chunks, status queries, injected faults, ...)
  POST /_fake/seed         {"name", "parent", "size"} a file put there by someone else
  POST /_fake/backdate     {"name", "days"} moves a file's createdTime back
  POST /_fake/expire       every access token expires now
  POST /_fake/lifetime     {"seconds"} lifetime of tokens issued from now on
  POST /_fake/fail         {"chunk": N, "status": 503} or {"chunk": N, "drop": true}: the
                           Nth chunk request from now keeps part of its body, then answers
                           that status or drops the connection; {"chunk": N, "exit": true}
                           ends the server there (the server gone mid-upload)
"""
import base64
import json
import os
import re
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fake_http import JsonHandler  # tests/servers/fake_http.py, beside this script

SCOPE = "https://www.googleapis.com/auth/drive"
EMAIL = "backup@dunnage-test.iam.gserviceaccount.com"
SUBJECTS = {"owner@example.org"}
UNIT = 256 << 10
PAGE = 5
FOLDER = "application/vnd.google-apps.folder"

lock = threading.Lock()
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
tokens = {}  # token -> expiry (epoch seconds)
lifetime = [3600]
files = {}  # id -> metadata (folders too)
drives = {"team1"}  # shared drives; a drive's id is its top folder's
sessions = {}  # upload_id -> {"name", "parents", "held": bytearray}
faults = []  # [{"chunk": n, ...}]
pages = {}  # page token -> remaining ids
stats = {"tokens": 0, "chunks": 0, "status_queries": 0, "injected": 0, "unauthorized": 0,
         "cancelled": 0, "lists": 0, "created": 0}


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def add(name, parents, size=0, mime="application/octet-stream", fid=None, drive=None):
    fid = fid or uuid.uuid4().hex[:20]
    files[fid] = {"id": fid, "name": name, "parents": parents, "size": size, "mimeType": mime,
                  "createdTime": time.time(), "trashed": False, "drive": drive}
    return fid


add("My Drive", [], mime=FOLDER, fid="root")
add("backups", ["root"], mime=FOLDER, fid="backups")
add("other", ["root"], mime=FOLDER, fid="other")
add("team1", [], mime=FOLDER, fid="team1", drive="team1")
add("teamfolder", ["team1"], mime=FOLDER, fid="teamfolder", drive="team1")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- the search language -------------------------------------------------------------

TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|=|<=|>=|<|>|\(|\))|"
                   r"(?P<word>[A-Za-z_][A-Za-z0-9_]*))")


class BadQuery(Exception):
    pass


def tokens_of(q):
    out, pos = [], 0
    while pos < len(q):
        if q[pos:].strip() == "":
            break
        m = TOKEN.match(q, pos)
        if not m:
            raise BadQuery(f"Invalid Value at {pos}: {q[pos:pos + 20]!r}")
        if m.group("str") is not None:
            out.append(("str", re.sub(r"\\(.)", r"\1", m.group("str")[1:-1])))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            out.append(("word", m.group("word")))
        pos = m.end()
    return out


def parse(toks):
    """expr := term (('and'|'or') term)*; term := 'not' term | '(' expr ')' | comparison"""
    def expr(i):
        left, i = term(i)
        while i < len(toks) and toks[i] in (("word", "and"), ("word", "or")):
            op = toks[i][1]
            right, i = term(i + 1)
            left = (op, left, right)
        return left, i

    def term(i):
        if i >= len(toks):
            raise BadQuery("Invalid Value: the query ends early")
        if toks[i] == ("word", "not"):
            inner, i = term(i + 1)
            return ("not", inner), i
        if toks[i] == ("op", "("):
            inner, i = expr(i + 1)
            if i >= len(toks) or toks[i] != ("op", ")"):
                raise BadQuery("Invalid Value: unbalanced parentheses")
            return inner, i + 1
        if i + 2 >= len(toks):
            raise BadQuery("Invalid Value: incomplete comparison")
        if toks[i][0] == "str" and toks[i + 1] == ("word", "in"):
            if toks[i + 2] != ("word", "parents"):
                raise BadQuery("Invalid Value: only 'x' in parents")
            return ("in_parents", toks[i][1]), i + 3
        field, op, value = toks[i], toks[i + 1], toks[i + 2]
        if field[0] != "word" or field[1] not in ("name", "mimeType", "trashed"):
            raise BadQuery(f"Invalid Value: unknown field {field[1]!r}")
        if field[1] == "trashed":
            if value not in (("word", "true"), ("word", "false")) or op[1] not in ("=", "!="):
                raise BadQuery("Invalid Value: trashed takes = true or = false")
            return ("cmp", "trashed", op[1], value[1] == "true"), i + 3
        if value[0] != "str" or op[1] not in ("=", "!=", "contains"):
            raise BadQuery(f"Invalid Value near {field[1]}")
        return ("cmp", field[1], op[1], value[1]), i + 3

    tree, i = expr(0)
    if i != len(toks):
        raise BadQuery(f"Invalid Value: unexpected {toks[i][1]!r}")
    return tree


def matches(tree, f):
    kind = tree[0]
    if kind == "and":
        return matches(tree[1], f) and matches(tree[2], f)
    if kind == "or":
        return matches(tree[1], f) or matches(tree[2], f)
    if kind == "not":
        return not matches(tree[1], f)
    if kind == "in_parents":
        return tree[1] in f["parents"]
    _, field, op, value = tree
    have = f[field]
    if op == "=":
        return have == value
    if op == "!=":
        return have != value
    # contains: on names, a prefix match of words, as Drive does; a plain substring here.
    return value in have


# --- the server ----------------------------------------------------------------------

def drive_error(status, reason, message):
    return status, {"error": {"code": status, "message": message,
                              "errors": [{"domain": "global", "reason": reason,
                                          "message": message}]}}


def select(f, fields):
    """The file as `files(...)` in `fields` asks for it."""
    m = re.search(r"files\(([^)]*)\)", fields or "")
    wanted = [w.strip() for w in m.group(1).split(",")] if m else ["id", "name", "mimeType", "kind"]
    out = {}
    for w in wanted:
        if w == "kind":
            out["kind"] = "drive#file"
        elif w == "size":
            if f["mimeType"] != FOLDER:
                out["size"] = str(f["size"])
        elif w == "createdTime":
            out["createdTime"] = iso(f["createdTime"])
        elif w in f and w != "drive":
            out[w] = f[w]
        else:
            raise KeyError(w)
    return out


class Handler(JsonHandler):
    def body(self):
        length = int(self.headers.get("Content-Length", 0))
        return self.rfile.read(length) if length else b""

    def url(self):
        u = urlparse(self.path)
        return u.path, {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}

    def authorized(self):
        auth = self.headers.get("Authorization", "")
        expiry = tokens.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None
        if expiry is None or expiry <= time.time():
            stats["unauthorized"] += 1
            self.send(*drive_error(401, "authError", "Request had invalid authentication "
                                   "credentials. Expected OAuth 2 access token."),
                      headers=[("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')])
            return False
        return True

    def visible(self, f, q):
        """Shared-drive items only for callers that say they support them."""
        return f["drive"] is None or q.get("supportsAllDrives") == "true"

    # -- control

    def control(self, method, path, body):
        global lifetime
        if method == "GET" and path == "/_fake/credentials":
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
            port = self.server.server_address[1]
            return 200, {"type": "service_account", "project_id": "dunnage-test",
                         "private_key_id": "k1", "private_key": pem, "client_email": EMAIL,
                         "client_id": "1", "token_uri": f"http://127.0.0.1:{port}/token"}
        if method == "GET" and path == "/_fake/files":
            return 200, [dict(f, createdTime=iso(f["createdTime"])) for f in files.values()
                         if f["mimeType"] != FOLDER]
        if method == "GET" and path == "/_fake/stats":
            return 200, dict(stats, sessions=len(sessions))
        arg = json.loads(body or b"{}")
        if path == "/_fake/seed":
            fid = add(arg["name"], [arg["parent"]], arg.get("size", 1),
                      drive=files[arg["parent"]]["drive"])
            with open(os.path.join(ROOT, fid), "wb") as out:
                out.write(b"x" * arg.get("size", 1))
            return 200, {"id": fid}
        if path == "/_fake/backdate":
            for f in files.values():
                if f["name"] == arg["name"]:
                    f["createdTime"] -= arg["days"] * 86400
            return 200, {}
        if path == "/_fake/expire":
            for t in tokens:
                tokens[t] = 0
            return 200, {}
        if path == "/_fake/lifetime":
            lifetime[0] = arg["seconds"]
            return 200, {}
        if path == "/_fake/fail":
            arg["chunk"] += stats["chunks"]
            faults.append(arg)
            return 200, {}
        return 404, {}

    def dispatch(self, method):
        path, q = self.url()
        body = self.body() if method in ("POST", "PUT", "DELETE") else b""
        if path.startswith("/_fake/"):
            with lock:
                return self.send(*self.control(method, path, body))
        if path == "/token" and method == "POST":
            with lock:
                return self.send(*self.token(body))
        if path == "/upload/drive/v3/files" and method == "PUT":
            return self.chunk(q, body)
        if path == "/upload/drive/v3/files" and method == "DELETE" and "upload_id" in q:
            with lock:
                if sessions.pop(q["upload_id"], None) is None:
                    return self.send(404, b"")
                stats["cancelled"] += 1
            return self.send(499, b"")
        with lock:
            if not self.authorized():
                return
            if path == "/upload/drive/v3/files" and method == "POST":
                return self.send(*self.start(q, body))
            if path == "/drive/v3/files" and method == "GET":
                return self.send(*self.listing(q))
            m = re.fullmatch(r"/drive/v3/files/([A-Za-z0-9_-]+)", path)
            f = files.get(m.group(1)) if m else None
            if m and (f is None or f["trashed"] or not self.visible(f, q)):
                return self.send(*drive_error(404, "notFound", f"File not found: {m.group(1)}."))
            if m and method == "DELETE":
                del files[f["id"]]
                try:
                    os.remove(os.path.join(ROOT, f["id"]))
                except FileNotFoundError:
                    pass
                return self.send(204)
            if m and method == "GET" and q.get("alt") == "media":
                with open(os.path.join(ROOT, f["id"]), "rb") as src:
                    return self.send(200, src.read(), "application/octet-stream")
        self.send(*drive_error(404, "notFound", f"no route {method} {path}"))

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    # -- OAuth

    def token(self, body):
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        def refuse(error, why):
            return 400, {"error": error, "error_description": why}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return refuse("unsupported_grant_type", "Invalid grant_type")
        parts = form.get("assertion", "").split(".")
        if len(parts) != 3:
            return refuse("invalid_request", "Invalid JWT")
        try:
            header, claims = json.loads(unb64(parts[0])), json.loads(unb64(parts[1]))
            if header.get("alg") != "RS256":
                return refuse("invalid_grant", "Invalid JWT: alg must be RS256")
            key.public_key().verify(unb64(parts[2]), f"{parts[0]}.{parts[1]}".encode(),
                                    padding.PKCS1v15(), hashes.SHA256())
        except Exception:  # noqa: BLE001 - any decoding or signature failure
            return refuse("invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        port = self.server.server_address[1]
        if claims.get("iss") != EMAIL:
            return refuse("invalid_grant", "Invalid email or User ID")
        if claims.get("aud") != f"http://127.0.0.1:{port}/token":
            return refuse("invalid_grant", "Invalid JWT: aud")
        if SCOPE not in str(claims.get("scope", "")).split():
            return refuse("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        iat, exp = claims.get("iat", 0), claims.get("exp", 0)
        if not (iat - 300 <= now <= exp + 300) or exp - iat > 3600:
            return refuse("invalid_grant", "Invalid JWT: Token must be a short-lived token "
                          "(60 minutes) and in a reasonable timeframe.")
        if "sub" in claims and claims["sub"] not in SUBJECTS:
            return refuse("unauthorized_client", "Client is unauthorized to retrieve access "
                          "tokens using this method, or client not authorized for any of the "
                          "scopes requested.")
        token = "ya29." + uuid.uuid4().hex
        tokens[token] = now + lifetime[0]
        stats["tokens"] += 1
        return 200, {"access_token": token, "expires_in": lifetime[0], "token_type": "Bearer"}

    # -- files

    def listing(self, q):
        stats["lists"] += 1
        fields = q.get("fields", "")
        if "pageToken" in q:
            ids = pages.pop(q["pageToken"], None)
            if ids is None:
                return drive_error(400, "invalid", "Invalid Value: pageToken")
        else:
            try:
                tree = parse(tokens_of(q.get("q", "")))
            except BadQuery as e:
                return drive_error(400, "invalid", str(e))
            corpora = q.get("corpora", "user")
            if corpora == "drive" and "driveId" not in q:
                return drive_error(400, "invalid", "The driveId parameter must be specified "
                                   "if and only if corpora is set to drive.")
            shared = (q.get("includeItemsFromAllDrives") == "true"
                      and q.get("supportsAllDrives") == "true")
            found = [f for f in files.values() if f["id"] not in ("root", "team1")
                     and (f["drive"] is None or shared)
                     and (corpora != "drive" or f["drive"] == q["driveId"])
                     and matches(tree, f)]
            found.sort(key=lambda f: (f["createdTime"], f["id"])
                       if q.get("orderBy") == "createdTime" else f["id"])
            ids = [f["id"] for f in found]
        size = min(int(q.get("pageSize", 100)), PAGE)
        page, rest = ids[:size], ids[size:]
        try:
            out = {"files": [select(files[i], fields) for i in page if i in files]}
        except KeyError as e:
            return drive_error(400, "invalidParameter", f"Invalid field selection {e.args[0]}")
        if rest:
            token = uuid.uuid4().hex
            pages[token] = rest
            if not fields or "nextPageToken" in fields:
                out["nextPageToken"] = token
        return 200, out

    def start(self, q, body):
        if q.get("uploadType") != "resumable":
            return drive_error(400, "badRequest", "uploadType must be resumable here")
        meta = json.loads(body or b"{}")
        parents = meta.get("parents") or ["root"]
        for p in parents:
            f = files.get(p)
            if f is None or f["mimeType"] != FOLDER or not self.visible(f, q):
                return drive_error(404, "notFound", f"File not found: {p}.")
        sid = uuid.uuid4().hex
        sessions[sid] = {"name": meta["name"], "parents": parents, "held": bytearray(),
                         "drive": files[parents[0]]["drive"]}
        port = self.server.server_address[1]
        return 200, b"", "application/json", [(
            "Location", f"http://127.0.0.1:{port}/upload/drive/v3/files?uploadType=resumable"
                        f"&upload_id={sid}")]

    def held_range(self, s):
        n = len(s["held"])
        return [("Range", f"bytes=0-{n - 1}")] if n else []

    def chunk(self, q, body):
        with lock:
            if not self.authorized():
                return
            s = sessions.get(q.get("upload_id"))
            if s is None:
                return self.send(*drive_error(404, "notFound", "No such upload session"))
            m = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", self.headers.get("Content-Range", ""))
            if not m:
                return self.send(*drive_error(400, "badRequest", "Invalid Content-Range"))
            total = None if m.group(3) == "*" else int(m.group(3))
            if m.group(1) is None:
                if body:
                    return self.send(*drive_error(400, "badRequest", "a status query has no body"))
                stats["status_queries"] += 1
                if total is not None and len(s["held"]) == total:
                    return self.send(*self.complete(q, s))
                return self.send(308, headers=self.held_range(s))
            start, end = int(m.group(1)), int(m.group(2))
            if len(body) != end - start + 1:
                return self.send(*drive_error(400, "badRequest", "Content-Range does not match "
                                              "the body's length"))
            if start != len(s["held"]):
                return self.send(*drive_error(400, "badRequest", f"chunk at {start}, session "
                                              f"holds {len(s['held'])}"))
            last = total is not None and end + 1 == total
            if not last and len(body) % UNIT:
                return self.send(*drive_error(400, "badRequest", "chunks but the last must be "
                                              "a multiple of 256 KiB"))
            if total is not None and end + 1 > total:
                return self.send(*drive_error(400, "badRequest", "more than the declared total"))
            stats["chunks"] += 1
            fault = next((f for f in faults if f["chunk"] == stats["chunks"]), None)
            if fault:
                faults.remove(fault)
                stats["injected"] += 1
                # Part of the body arrived before the failure (whole 256 KiB units).
                s["held"] += body[:len(body) // 2 // UNIT * UNIT]
                if fault.get("exit"):
                    os._exit(3)
                if fault.get("drop"):
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                return self.send(*drive_error(fault["status"], "backendError", "Backend Error"))
            s["held"] += body
            if last:
                return self.send(*self.complete(q, s))
            return self.send(308, headers=self.held_range(s))

    def complete(self, q, s):
        fid = add(s["name"], s["parents"], len(s["held"]), drive=s["drive"])
        with open(os.path.join(ROOT, fid), "wb") as out:
            out.write(s["held"])
        for sid, other in list(sessions.items()):
            if other is s:
                del sessions[sid]
        stats["created"] += 1
        return 200, select(files[fid], f"files({q.get('fields', 'id,name')})")


if __name__ == "__main__":
    PORT, ROOT = int(sys.argv[1]), sys.argv[2]
    os.makedirs(ROOT, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    server.serve_forever()
