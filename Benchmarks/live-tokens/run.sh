#!/usr/bin/env bash
# The server's CPU per handshake-and-first-request as its live tokens pile up (docs/PERFORMANCE.md,
# "Live tokens"): `ath gateway` on SQLite pinned to core 0, `ath bench proxy --operation
# handshake-and-request` pinned to core 1, run in chunks; each chunk leaves the server one more
# live (unexpired, verified, remembered) token and session per operation. Prints, per chunk, the
# live tokens before it, its rate and the server's CPU per operation from /proc.
#   Benchmarks/live-tokens/run.sh [chunks] [seconds per chunk]
#   ATH_SERVER_BIN: the server's binary (default: the release ath), to compare two builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
chunks="${1:-10}"
seconds="${2:-30}"
ath="$(pwd)/${ATH_BIN:-.build/release/ath}"
server="${ATH_SERVER_BIN:-$ath}"
[ -x "$ath" ] || { echo "build it first: swift build -c release --product ath"; exit 1; }
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
source Benchmarks/common.sh
U=$(port)
upstream_run
"$ath" keygen --out "$work/key.pem" > /dev/null
g=$(port)
cat > "$work/gateway.yaml" <<YAML
gateway: {public_url: "http://127.0.0.1:$g", listen: {host: "127.0.0.1", port: $g}, insecure_http: true}
server: {did: "did:ath:bench", key_file: "key.pem"}
store: {sqlite: "gateway.sqlite"}
handshake: {require_user_confirmation: false}
services: ["shop"]
service:
  shop:
    protocol: "ath"
    upstream: "http://127.0.0.1:$U"
    scopes: ["profile:read = Your profile"]
    routes: ["GET /userinfo profile:read"]
YAML
(cd "$work" && exec taskset -c 0 "$server" gateway --config "$work/gateway.yaml" > "$work/gateway.log" 2>&1) &
gw=$!; pids+=($gw); disown
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$g/health" > /dev/null && break; sleep 0.1; done
echo "| live tokens before | operations/s | server CPU per operation (µs) |"
echo "|---|---|---|"
live=0
for i in $(seq "$chunks"); do
    out="$work/chunk-$i"
    taskset -c 1 "$ath" bench proxy --operation handshake-and-request --url "http://127.0.0.1:$g" --path /shop/userinfo \
        --scope profile:read --seconds "$seconds" --concurrency 8 > "$out" 2>&1 &
    bench=$!
    for _ in $(seq 600); do grep -q measuring "$out" 2>/dev/null && break; sleep 0.05; done
    before=$(cpu "$gw")
    wait "$bench"
    after=$(cpu "$gw")
    line=$(grep "^requests:" "$out")
    done_ops=$(echo "$line" | awk '{print $2}')
    rate=$(echo "$line" | sed -E 's/.*= ([0-9]+)\/s.*/\1/')
    echo "| $live | $rate | $(( (after - before) * 1000000 / ticks / done_ops )) |"
    # About one second of warm-up per chunk, at the chunk's rate.
    live=$((live + done_ops + rate))
done
