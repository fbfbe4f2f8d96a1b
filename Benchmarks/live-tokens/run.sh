#!/usr/bin/env bash
# The server's CPU per handshake-and-first-request as its live tokens pile up (docs/PERFORMANCE.md,
# "Live tokens"): `ath gateway` on SQLite pinned to core 0, `ath bench proxy --operation
# handshake-and-request` pinned to core 1, run in chunks; each chunk leaves the server one more
# live (unexpired, verified, remembered) token and session per operation. Prints, per chunk, the
# live tokens before it, its rate and the server's CPU per operation from /proc.
#   Benchmarks/live-tokens/run.sh [chunks] [seconds per chunk]
#   ATH_SERVER_BIN: the server's binary (default: the release ath), to compare two builds (common.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
chunks="${1:-10}"
seconds="${2:-30}"
source Benchmarks/common.sh
bench_init
U=$(port)
upstream_run
"$ath" keygen --out "$work/key.pem" > /dev/null
gateway_start gw '{sqlite: "gateway.sqlite"}' "" 0
echo "| live tokens before | operations/s | server CPU per operation (µs) |"
echo "|---|---|---|"
live=0
for i in $(seq "$chunks"); do
    out="$work/chunk-$i"
    taskset -c 1 "$ath" bench proxy --operation handshake-and-request --url "http://127.0.0.1:$gw_port" --path /shop/userinfo \
        --scope profile:read --seconds "$seconds" --concurrency 8 > "$out" 2>&1 &
    bench=$!
    await_measuring "$out"
    before=$(cpu "$gw_pid")
    wait "$bench"
    after=$(cpu "$gw_pid")
    line=$(grep "^requests:" "$out")
    done_ops=$(echo "$line" | awk '{print $2}')
    rate=$(echo "$line" | sed -E 's/.*= ([0-9]+)\/s.*/\1/')
    echo "| $live | $rate | $(( (after - before) * 1000000 / ticks / done_ops )) |"
    # About one second of warm-up per chunk, at the chunk's rate.
    live=$((live + done_ops + rate))
done
