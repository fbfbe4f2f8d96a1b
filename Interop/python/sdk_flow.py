"""The official Python SDK (PyPI `ath-sdk` 0.1.0) against `ath gateway`, attestations verified.

Run by Tests/ATHIntegrationTests/OfficialSDKTests.swift with ATH_GATEWAY_URL set to a gateway
whose `github` provider is the test's mock (auto-approving authorize, PKCE token endpoint, an
upstream answering GET /userinfo) and which may fetch identity documents from loopback. This
script publishes its agent's identity document on a loopback port of its own, so the gateway
checks every attestation signature against it; it prints one JSON line per step and exits 0
only when every expectation held.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ath import ATHError, ATHGatewayClient, ATHNativeClient

GATEWAY = os.environ["ATH_GATEWAY_URL"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_agent(documents: dict[str, bytes], port: int, name: str) -> tuple[str, str]:
    """A P-256 key and an agent id whose identity document (JWK) this process serves."""
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    agent_id = f"http://127.0.0.1:{port}/agents/{name}.json"
    documents[f"/agents/{name}.json"] = json.dumps({
        "ath_version": "0.1",
        "agent_id": agent_id,
        "name": name,
        "developer": {"name": "Interop", "id": "dev-interop", "contact": None},
        "public_key": {
            "kty": "EC", "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big")),
        },
    }).encode()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return agent_id, pem.decode()


def serve_documents() -> tuple[dict[str, bytes], int]:
    documents: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = documents.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body or b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return documents, server.server_address[1]


def consent(authorization_url: str) -> dict[str, list[str]]:
    """The user's browser (a cookie jar): the gateway's consent page and its Continue button,
    the provider (auto-approving), then the gateway's callback, which wants the page's cookie."""
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        page = browser.get(authorization_url)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.text
        binding = re.search(r'name="binding" value="([^"]+)"', page.text)
        assert binding, page.text
        continued = browser.post(authorization_url, data={"binding": binding.group(1), "decision": "approve"})
        assert continued.status_code == 303, continued.text
        url = urlparse(continued.headers["location"])
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert query.get("code_challenge_method") == "S256" and query.get("code_challenge"), query
        query["auto_approve"] = "true"
        at_provider = browser.get(f"{url.scheme}://{url.netloc}{url.path}", params=query)
        assert at_provider.status_code == 302, at_provider.text
        callback_url = at_provider.headers["location"]
        # Carried to another browser, the callback fails.
        stranger = httpx.get(callback_url, follow_redirects=False, timeout=30)
        assert stranger.status_code == 400 and stranger.json()["code"] == "STATE_MISMATCH", stranger.text
        callback = browser.get(callback_url)
        assert callback.status_code == 302, callback.text
        return parse_qs(urlparse(callback.headers["location"]).query)


def step(name: str, **facts: object) -> None:
    print(json.dumps({"step": name, **facts}), flush=True)


def main() -> int:
    documents, port = serve_documents()
    agent_id, pem = new_agent(documents, port, "interop")
    with ATHGatewayClient(GATEWAY, agent_id, pem) as client:
        doc = client.discover()
        assert doc.gateway_id == GATEWAY and doc.ath_version == "0.1"
        assert "github" in [p.provider_id for p in doc.supported_providers]
        step("discover", gateway_id=doc.gateway_id)

        reg = client.register(
            developer={"name": "Interop", "id": "dev-interop"},
            providers=[{"provider_id": "github", "scopes": ["repo", "read:user"]}],
            purpose="interop test",
        )
        assert reg.agent_status.value == "approved", reg
        step("register", client_id=reg.client_id, status=reg.agent_status.value)

        auth = client.authorize("github", ["repo", "read:user"])
        assert auth.authorization_url == f"{GATEWAY}/ath/consent/{auth.ath_session_id}", auth
        back = consent(auth.authorization_url)
        assert back.get("success") == ["true"] and back.get("session_id") == [auth.ath_session_id], back
        step("authorize", session=auth.ath_session_id)

        # Strict mode: the one-time code the callback handed to the redirect is required.
        try:
            client.exchange_token("oauth-completed", auth.ath_session_id)
            raise AssertionError("a placeholder code was accepted outside dev mode")
        except ATHError as e:
            assert e.code == "SESSION_NOT_COMPLETED", e
        tok = client.exchange_token(back["code"][0], auth.ath_session_id)
        assert tok.token_type == "Bearer" and tok.expires_in > 0 and tok.agent_id == agent_id
        assert tok.scope_intersection.effective == ["repo", "read:user"], tok
        step("token", effective=tok.scope_intersection.effective)

        user = client.proxy("github", "GET", "/userinfo")
        assert isinstance(user, dict) and user.get("login") == "test-user", user
        step("proxy", login=user["login"])
        try:
            client.proxy("slack", "GET", "/x")
            raise AssertionError("another provider was reached")
        except ATHError as e:
            assert e.code == "PROVIDER_MISMATCH" and e.status == 403, e
        try:
            client.proxy("github", "GET", "/admin")
            raise AssertionError("an unmapped operation was forwarded")
        except ATHError as e:
            assert e.code == "OPERATION_NOT_MAPPED", e
        step("refusals", codes=["PROVIDER_MISMATCH", "OPERATION_NOT_MAPPED"])

        token = client.access_token
        client.revoke()
        assert client.access_token is None
        client.set_token(token)
        try:
            client.proxy("github", "GET", "/userinfo")
            raise AssertionError("a revoked token still works")
        except ATHError as e:
            assert e.code == "TOKEN_REVOKED", e
        step("revoke")

    # Native mode: the same gateway as one service (oauth.native_app), found through
    # /.well-known/ath-app.json, its API called at api_base.
    native_id, native_pem = new_agent(documents, port, "native")
    with ATHNativeClient(GATEWAY, native_id, native_pem) as native:
        app = native.discover()
        assert app.app_id == "github" and app.api_base == f"{GATEWAY}/ath/proxy/github", app
        assert app.auth.agent_attestation_required is True and "read:user" in app.auth.scopes_supported, app
        native.register(developer={"name": "Interop", "id": "dev-interop"}, providers=[{"provider_id": app.app_id, "scopes": ["read:user"]}], purpose="native mode")
        auth = native.authorize(app.app_id, ["read:user"])
        back = consent(auth.authorization_url)
        tok = native.exchange_token(back["code"][0], auth.ath_session_id)
        assert tok.effective_scopes == ["read:user"], tok
        user = native.api("GET", "/userinfo")
        assert isinstance(user, dict) and user.get("login") == "test-user", user
        try:
            native.api("GET", "/echo/x")
            raise AssertionError("a scope the user did not grant was used")
        except ATHError as e:
            assert e.code == "SCOPE_NOT_APPROVED" or e.status == 403, e
        native.revoke()
    step("native", app_id=app.app_id)

    # An agent whose published key is not the one it signs with.
    impostor_id, _ = new_agent(documents, port, "impostor")
    _, other_pem = new_agent({}, port, "unused")
    with ATHGatewayClient(GATEWAY, impostor_id, other_pem) as impostor:
        try:
            impostor.register(developer={"name": "X", "id": "x"}, providers=[{"provider_id": "github", "scopes": ["repo"]}], purpose="x")
            raise AssertionError("an attestation signed with an unpublished key was accepted")
        except ATHError as e:
            assert e.code == "INVALID_ATTESTATION" and e.status == 401, e
    step("impostor", code="INVALID_ATTESTATION")
    step("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
