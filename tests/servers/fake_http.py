"""What the stateful fakes of cloud APIs (dropbox_fake.py, gdrive_fake.py) share: a quiet
HTTP/1.1 handler that answers with JSON or bytes."""
import json
from http.server import BaseHTTPRequestHandler


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body=b"", ctype="application/json", headers=()):
        """Answers `status` with `body` (a dict or list is sent as JSON); 204 and 308
        answers without a body carry no Content-Type, as real servers send them."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        if body or status not in (204, 308):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
