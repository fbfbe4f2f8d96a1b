"""A minimal OAuth 2.0 provider for the gateway benchmark: authorize answers at once (302 with a
code), the token endpoint checks the code, the redirect_uri and PKCE S256, and issues a token.
Usage: mock_idp.py PORT. Prints "ready" when it listens."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

codes: dict[str, tuple[str, str, str]] = {}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path != "/authorize" or q.get("code_challenge_method") != "S256":
            self.send_error(400)
            return
        code = secrets.token_urlsafe(16)
        codes[code] = (q["code_challenge"], q["redirect_uri"], q.get("scope", ""))
        self.send_response(302)
        self.send_header("Location", q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]}))
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
        pending = codes.pop(form.get("code", ""), None)
        digest = base64.urlsafe_b64encode(hashlib.sha256(form.get("code_verifier", "").encode()).digest()).rstrip(b"=").decode()
        if pending is None or pending[0] != digest or pending[1] != form.get("redirect_uri"):
            self.send_error(400)
            return
        body = json.dumps({"access_token": "idp_" + secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 86400,
                           "scope": pending[2]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("ready", flush=True)
server.serve_forever()
