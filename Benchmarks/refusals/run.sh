#!/usr/bin/env bash
# What a flood of refused requests costs the server against the traffic it displaces (issue 18):
# the server's CPU per refused request (no token, on a protected route) and per admitted one (token
# and proof, forwarded to the upstream), and how much the store grows per refusal
# (docs/PERFORMANCE.md, "Refused requests").
#
# The server is `ath gateway` as shipped on SQLite, pinned to core 0; the load (wrk for the refusals,
# `ath bench proxy` for the admitted requests) is another process pinned to core 1.
#
#   Benchmarks/refusals/run.sh [seconds]
#   needs: release ath (swift build -c release --product ath), nginx, wrk, sqlite3, taskset
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-10}"
source Benchmarks/common.sh
bench_init
shop_init
gateway_start gw '{sqlite: "refusals.sqlite"}' 'rate_limit: "100000000/hour"' 0
url="http://127.0.0.1:$gw_port/shop/userinfo"
store_bytes() { du -cb "$work"/refusals.sqlite* | tail -1 | cut -f1; }
audit_rows() { sqlite3 "$work/refusals.sqlite" "SELECT count(*) FROM audit"; }

# Refused: one wrk connection pool, no Authorization header (TOKEN_MISSING, 401).
taskset -c 1 wrk -t1 -c16 -d2s "$url" > /dev/null
sleep 1.5  # the warm-up's refusals written
s0=$(store_bytes); a0=$(audit_rows); before=$(cpu "$gw_pid")
out=$(taskset -c 1 wrk -t1 -c16 -d"${seconds}s" "$url")
after=$(cpu "$gw_pid")
sleep 1.5
s1=$(store_bytes); a1=$(audit_rows)
refused=$(echo "$out" | awk '/requests in/ {print $1}')
non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
[ "$refused" = "$non2xx" ] || { echo "not every request was refused: $refused requests, $non2xx refusals"; exit 1; }
rrate=$(echo "$out" | awk '/Requests\/sec/ {print int($2)}')
rcpu=$(( (after - before) * 1000000 / ticks / refused ))

# Admitted: token and proof on every request, forwarded upstream.
load_measure request "$seconds" admitted 1

echo "| request | requests/s | server CPU per request | store growth | audit records |"
echo "|---|---|---|---|---|"
echo "| refused (no token) | $rrate | $rcpu µs | $(( (s1 - s0) / 1000 )) kB over $refused refusals | $(( a1 - a0 )) |"
echo "| admitted (token and proof, forwarded) | $load_rate | $load_server_us µs | - | - |"
