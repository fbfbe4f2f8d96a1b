"""Registers an agent with the official SDK (ath-sdk), authorizes it at the benchmark's provider
and prints {"agent_id", "token"} as JSON: the v0.1 access token the load generator sends.
Usage: ATH_GATEWAY_URL=... mint_token.py PROVIDER SCOPE"""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import parse_qs, urlparse

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "Interop", "python"))
from sdk_flow import new_agent, serve_documents  # noqa: E402

from ath import ATHGatewayClient  # noqa: E402

gateway, provider, scope = os.environ["ATH_GATEWAY_URL"], sys.argv[1], sys.argv[2]
documents, port = serve_documents()
agent_id, pem = new_agent(documents, port, "bench")
with ATHGatewayClient(gateway, agent_id, pem) as client:
    client.register(developer={"name": "Bench", "id": "bench"}, providers=[{"provider_id": provider, "scopes": [scope]}], purpose="bench")
    auth = client.authorize(provider, [scope])
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        at_provider = browser.get(auth.authorization_url)
        back = browser.get(at_provider.headers["location"])
        code = parse_qs(urlparse(back.headers["location"]).query)["code"][0]
    token = client.exchange_token(code, auth.ath_session_id)
    print(json.dumps({"agent_id": agent_id, "token": token.access_token}))
