#!/usr/bin/env bash
# The gateway against nginx, side by side in one run on loopback (docs/PERFORMANCE.md, "The gateway"):
#   1. nginx reverse-proxying the upstream (the baseline);
#   2. `ath gateway`, v0.1 token checked on every request, forwarding to the same upstream;
#   3. nginx with auth_request to `ath authz`, forwarding to the same upstream.
# The upstream is an nginx answering a small JSON body; the load is wrk (its own process, one thread),
# GET with a v0.1 access token minted through the official Python SDK. Each server's CPU comes from
# the kernel (/proc/<pid>/stat, user + system) over the measured run, divided by its requests.
#   Benchmarks/gateway/run.sh [seconds] [connections]     needs: release ath, nginx, wrk, ath-sdk
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-15}"
connections="${2:-32}"
source Benchmarks/common.sh
bench_init   # ATH_BIN: another build, e.g. to try the script on a debug one
U=$(port); P=$(port); I=$(port); G=$(port); G2=$(port); Z=$(port); A=$(port)

upstream_run
nginx_run proxy "server { listen 127.0.0.1:$P; location / { proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://up; } }"

python3 Benchmarks/gateway/mock_idp.py "$I" > "$work/idp.log" 2>&1 &
pids+=($!); disown
$ath keygen --out "$work/key.pem" > /dev/null
echo secret > "$work/idp-secret"
cat > "$work/gateway.yaml" <<EOF
gateway: {public_url: "http://127.0.0.1:$G", listen: {host: "127.0.0.1", port: $G}, insecure_http: true}
server: {did: "did:ath:bench", key_file: "key.pem"}
store: {sqlite: "gateway.sqlite"}
oauth: {identity_documents_on_loopback: true, agent_rate_limit: "none"}
handshake: {require_user_confirmation: false}
services: ["bench", "shop"]
service:
  shop:
    protocol: "ath"
    upstream: "http://127.0.0.1:$U"
    scopes: ["profile:read = Your profile"]
    routes: ["GET /userinfo profile:read"]
  bench:
    protocol: "oauth"
    upstream: "http://127.0.0.1:$U"
    scopes: ["read:user = Your profile"]
    routes: ["GET /userinfo read:user"]
    authorization_endpoint: "http://127.0.0.1:$I/authorize"
    token_endpoint: "http://127.0.0.1:$I/token"
    client_id: "bench"
    client_secret_file: "idp-secret"
EOF
$ath gateway --config "$work/gateway.yaml" > "$work/gateway.log" 2>&1 &
pids+=($!); gateway_pid=$!; disown
# The authorizer reads the same file and store, on its own ports, behind its own nginx.
$ath authz --config "$work/gateway.yaml" --set gateway.listen.port=$G2 --set authz.listen.port=$Z > "$work/authz.log" 2>&1 &
pids+=($!); authz_pid=$!; disown
nginx_run front "upstream authz { server 127.0.0.1:$Z; keepalive 64; } server { listen 127.0.0.1:$A;
  location /ath/ { proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://127.0.0.1:$G; }
  location /shop/ { auth_request /_ath; proxy_set_header Authorization \"\"; proxy_set_header ATH-Proof \"\"; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://up/; }
  location /ath/proxy/bench/ { auth_request /_ath; auth_request_set \$ath_auth \$upstream_http_x_ath_upstream_authorization;
    proxy_set_header Authorization \$ath_auth; proxy_set_header X-ATH-Agent-ID \"\"; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://up/; }
  location = /_ath { internal; proxy_pass http://authz/ath/authz/nginx; proxy_pass_request_body off; proxy_set_header Content-Length \"\";
    proxy_set_header X-Original-Method \$request_method; proxy_set_header X-Original-URI \$request_uri; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$G/health" > /dev/null && curl -sf "http://127.0.0.1:$G2/health" > /dev/null && break
    sleep 0.1
done
minted=$(ATH_GATEWAY_URL="http://127.0.0.1:$G" python3 Benchmarks/gateway/mint_token.py bench read:user)
token=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["token"])' "$minted")
agent=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["agent_id"])' "$minted")

profile() {  # file (empty: none), pid: perf records the pid for the next measurement's seconds
    recorder=""
    [ -n "$1" ] || return 0
    perf record -F 999 -g -p "$2" -o "$1" -- sleep "$seconds" > /dev/null 2>&1 &
    recorder=$!
}
profiled() { [ -z "$recorder" ] || wait "$recorder" || true; }
extra=()     # more request headers for the next measure
measure() {  # label, url, pids whose CPU counts
    local label=$1 url=$2; shift 2
    for p in "$@"; do
        [ -e "/proc/$p" ] || { echo "| $label | a server process ($p) is gone; logs in $work |"; return; }
    done
    wrk -t1 -c"$connections" -d3s -H "Authorization: Bearer $token" -H "X-ATH-Agent-ID: $agent" "${extra[@]}" "$url" > /dev/null
    local before=0 after=0
    for p in "$@"; do before=$((before + $(cpu "$p"))); done
    wrk -t1 -c"$connections" -d"${seconds}s" --latency -H "Authorization: Bearer $token" -H "X-ATH-Agent-ID: $agent" "${extra[@]}" "$url" > "$work/$label.wrk"
    for p in "$@"; do after=$((after + $(cpu "$p"))); done
    local requests rps p50 p99 errors
    requests=$(awk '/requests in/ {print $1}' "$work/$label.wrk")
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/$label.wrk")
    p50=$(awk '$1 == "50%" {print $2}' "$work/$label.wrk")
    p99=$(awk '$1 == "99%" {print $2}' "$work/$label.wrk")
    errors=$(awk '/Non-2xx/ {print $5}' "$work/$label.wrk")
    local us=$(( (after - before) * 1000000 / ticks / requests ))
    echo "| $label | $rps | $p50 | $p99 | $us | ${errors:-0} |"
}
# The 9-step handshake's protected route: token and proof on every request, which wrk cannot
# sign; `ath bench proxy` (in its own process) makes them. The server's CPU is read from the
# moment it says "measuring" (after its handshake and warm-up) until it ends.
measure_proofs() {  # label, base URL, pids whose CPU counts
    local label=$1 url=$2; shift 2
    local out="$work/$label.bench" before=0 after=0
    "$ath" bench proxy --url "$url" --path /shop/userinfo --scope profile:read --seconds "$seconds" --concurrency "$connections" > "$out" 2>&1 &
    local bench=$!
    for _ in $(seq 200); do grep -q measuring "$out" 2>/dev/null && break; sleep 0.05; done
    for p in "$@"; do before=$((before + $(cpu "$p"))); done
    wait "$bench" || { echo "| $label | failed: $(tail -1 "$out") |"; return; }
    for p in "$@"; do after=$((after + $(cpu "$p"))); done
    local line requests
    line=$(grep "^requests:" "$out")
    requests=$(echo "$line" | awk '{print $2}')
    local us=$(( (after - before) * 1000000 / ticks / requests ))
    echo "| $label | $(echo "$line" | sed -E 's/.*= ([0-9]+)\/s.*/\1/') | $(echo "$line" | sed -E 's/.*p50 ([0-9.]+) ms.*/\1ms/') | $(echo "$line" | sed -E 's/.*p99 ([0-9.]+) ms.*/\1ms/') | $us | $(grep -c "first failure" "$out") |"
}
echo "| setup | requests/s | p50 | p99 | server CPU per request (µs) | non-2xx |"
echo "|---|---|---|---|---|---|"
measure "nginx reverse proxy" "http://127.0.0.1:$P/userinfo" "$proxy_pid"
profile "${PROFILE_GATEWAY:-}" "$gateway_pid"  # perf's profile of the gateway under the same load, to $PROFILE_GATEWAY
measure "ath gateway (v0.1 token)" "http://127.0.0.1:$G/ath/proxy/bench/userinfo" "$gateway_pid"
profiled
measure "nginx + auth_request to ath authz" "http://127.0.0.1:$A/ath/proxy/bench/userinfo" "$front_pid" "$authz_pid"
measure "upstream alone" "http://127.0.0.1:$U/userinfo" "$upstream_pid"
# The check alone, as nginx asks it (no forwarding): what the gateway's CPU is beyond its check.
extra=(-H "X-Original-Method: GET" -H "X-Original-URI: /ath/proxy/bench/userinfo")
profile "${PROFILE_AUTHZ:-}" "$authz_pid"  # perf's profile of ath authz alone, to $PROFILE_AUTHZ
measure "ath authz alone (the check)" "http://127.0.0.1:$Z/ath/authz/nginx" "$authz_pid"
profiled
extra=()
profile "${PROFILE_PROOFS:-}" "$gateway_pid"  # perf's profile of the gateway under the 9-step load, to $PROFILE_PROOFS
measure_proofs "ath gateway (9-step token + proof)" "http://127.0.0.1:$G" "$gateway_pid"
profiled
measure_proofs "nginx + auth_request to ath authz (9-step)" "http://127.0.0.1:$A" "$front_pid" "$authz_pid"
measure "ath gateway, GET health (no check)" "http://127.0.0.1:$G/health" "$gateway_pid"
