"""An SMTP server for notification tests (aiosmtpd), writing each accepted message as JSON
(envelope, data, whether TLS and AUTH were used) to DIR/N.json.

Usage: smtp_capture.py DIR PORT MODE CERT KEY USER PASSWORD
MODE: "starttls" (STARTTLS required before AUTH and MAIL) or "implicit" (TLS from the first
byte). Recipients starting with "refuse" are rejected with 550.
"""
import asyncio
import itertools
import json
import os
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

folder, port, mode, cert, key, user, password = sys.argv[1:8]
counter = itertools.count(1)


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refuse"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": session.ssl is not None or mode == "implicit",
            "auth": session.authenticated,
            "login": (session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None),
            "helo": session.host_name,
        }
        with open(os.path.join(folder, "%d.json" % next(counter)), "w") as f:
            json.dump(record, f)
        return "250 Message accepted"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == user.encode() and auth_data.password == password.encode()
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
common = dict(hostname="127.0.0.1", port=int(port), authenticator=authenticator)
if mode == "starttls":
    controller = Controller(Handler(), tls_context=ctx, require_starttls=True, auth_require_tls=True, **common)
else:
    # The whole connection is TLS, which aiosmtpd does not see: AUTH must not wait for it.
    controller = Controller(Handler(), ssl_context=ctx, auth_require_tls=False, **common)
controller.start()
open(os.path.join(folder, "ready"), "w").close()
while True:
    time.sleep(3600)
