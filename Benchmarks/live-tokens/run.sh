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
shop_init
gateway_start gw '{sqlite: "gateway.sqlite"}' "" 0
echo "| live tokens before | operations/s | server CPU per operation (µs) |"
echo "|---|---|---|"
live=0
for i in $(seq "$chunks"); do
    load_measure handshake-and-request "$seconds" "chunk-$i" 1
    echo "| $live | $load_rate | $load_server_us |"
    # About one second of warm-up per chunk, at the chunk's rate.
    live=$((live + load_done + load_rate))
done
