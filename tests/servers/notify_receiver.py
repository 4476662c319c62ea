"""A receiver for notification tests: answers what each service's API answers and records
every request (method, Host, path, headers, body) as one JSON line in DIR/requests.jsonl.

Usage: notify_receiver.py DIR TLS_PORT PLAIN_PORT CERT KEY

Both ports are on 127.0.0.1; the TLS one uses CERT/KEY (a leaf signed by the tests' CA whose
names include discord.com, api.telegram.org, ...: dunnage is told to resolve every name to
this port). DIR/mode, read at each request, changes the answer: "ok" (default), "fail500",
"hang" (no answer for 60 s), "refuse" (the service's own "not accepted" answer) or "echo"
(paths under /dav only: a 500 whose text repeats the Basic credentials it was sent).
"""
import base64
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

folder, tls_port, plain_port, cert, key = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
lock = threading.Lock()


def mode():
    try:
        with open(os.path.join(folder, "mode")) as f:
            return f.read().strip() or "ok"
    except FileNotFoundError:
        return "ok"


def answer(path):
    """(status, JSON body or None) as each API answers an accepted request."""
    p = path.split("?")[0]
    if p.startswith("/bot") and p.endswith("/sendMessage"):
        return 200, {"ok": True, "result": {"message_id": 1}}
    if p == "/api/chat.postMessage":
        return 200, {"ok": True, "ts": "1.2"}
    if p == "/1/messages.json":
        return 200, {"status": 1, "request": "r1"}
    if p == "/api/v1/messages":
        return 200, {"result": "success", "msg": "", "id": 42}
    if p.endswith("/push"):
        return 200, {"code": 200, "message": "success"}
    if p.startswith("/_ah/api/messaging/v1/sendPush"):
        return 200, {"success": True}
    if p == "/_matrix/client/v3/login":
        return 200, {"access_token": "matrix-session", "user_id": "@bot:matrix.test"}
    if p.startswith("/_matrix/client/v3/join/"):
        return 200, {"room_id": "!joined:matrix.test"}
    if p == "/_matrix/client/v3/joined_rooms":
        return 200, {"joined_rooms": ["!one:matrix.test", "!two:matrix.test"]}
    if p.startswith("/_matrix/client/v3/rooms/"):
        return 200, {"event_id": "$e1"}
    if p.startswith("/api/webhooks/"):
        return 204, None
    if p == "/v2/alerts":
        return 202, {"result": "Request will be processed", "requestId": "x"}
    if p.endswith("/message"):
        return 200, {"id": 1}
    if p == "/v2/enqueue":
        return 202, {"status": "success", "message": "Event processed", "dedup_key": "k"}
    if p == "/v2/send":
        return 201, {"timestamp": "1"}
    if p.endswith("/Messages.json"):
        return 201, {"sid": "SM1", "status": "queued"}
    if p == "/cgi-bin/webhook/send":
        return 200, {"errcode": 0, "errmsg": "ok"}
    if p.startswith("/open-apis/bot/v2/hook/"):
        return 200, {"code": 0, "msg": "success", "data": {}}
    if p.startswith("/api/v1/notification/passthrough/"):
        return 200, {"result": "success"}
    return 200, "ok"


def refused(path):
    p = path.split("?")[0]
    if p.startswith("/bot"):
        return 400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
    if p == "/api/chat.postMessage":
        return 200, {"ok": False, "error": "channel_not_found"}
    if p == "/1/messages.json":
        return 400, {"status": 0, "errors": ["user identifier is invalid"]}
    if p == "/api/v1/messages":
        return 200, {"result": "error", "msg": "Stream does not exist"}
    return 401, {"error": "unauthorized"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        record = {
            "method": self.command,
            "host": self.headers.get("host", ""),
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
            "tls": isinstance(self.connection, ssl.SSLSocket),
        }
        with lock:
            with open(os.path.join(folder, "requests.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
        m = mode()
        if m == "hang":
            time.sleep(60)
            return
        if m == "echo" and self.path.startswith("/dav"):
            # A careless server: its error answer repeats the credentials it was sent.
            auth = self.headers.get("authorization", "")
            try:
                auth = base64.b64decode(auth.split(" ", 1)[1]).decode()
            except Exception:
                pass
            status, payload = 500, f"storage error for login {auth}"
        elif m == "fail500":
            status, payload = 500, {"error": "internal"}
        elif m == "refuse":
            status, payload = refused(self.path)
        else:
            status, payload = answer(self.path)
        data = b"" if payload is None else (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("content-type", "application/json" if not isinstance(payload, str) else "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


def serve(port, tls):
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


threading.Thread(target=serve, args=(tls_port, True), daemon=True).start()
threading.Thread(target=serve, args=(plain_port, False), daemon=True).start()
time.sleep(0.2)
open(os.path.join(folder, "ready"), "w").close()
while True:
    time.sleep(3600)
