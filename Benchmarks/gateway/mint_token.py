"""Registers an agent with the official SDK (ath-sdk), authorizes it at the benchmark's provider
and prints {"agent_id", "token"} as JSON: the v0.1 access token the load generator sends.
Usage: ATH_GATEWAY_URL=... mint_token.py PROVIDER SCOPE"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "Interop", "python"))
from sdk_flow import consent, new_agent, serve_documents  # noqa: E402

from ath import ATHGatewayClient  # noqa: E402

gateway, provider, scope = os.environ["ATH_GATEWAY_URL"], sys.argv[1], sys.argv[2]
documents, port = serve_documents()
agent_id, pem = new_agent(documents, port, "bench")
with ATHGatewayClient(gateway, agent_id, pem) as client:
    client.register(developer={"name": "Bench", "id": "bench"}, providers=[{"provider_id": provider, "scopes": [scope]}], purpose="bench")
    auth = client.authorize(provider, [scope])
    code = consent(auth.authorization_url)["code"][0]  # the consent page, the provider, the callback
    token = client.exchange_token(code, auth.ath_session_id)
    print(json.dumps({"agent_id": agent_id, "token": token.access_token}))
