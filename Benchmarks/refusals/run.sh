#!/usr/bin/env bash
# What a flood of refused requests costs the server against the traffic it displaces (issue 18):
# the server's CPU per refused request (no token, on a protected route) and per admitted one (token
# and proof, forwarded to the upstream), per refused step 1 (a JSON body parsed and refused: one HTTP
# exchange's cost), and how much the store grows per refusal
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

# A refused step 1: a step-1-sized JSON body (about 600 bytes) parsed and refused for its timestamp,
# with no public-key work and no store: what one HTTP exchange with a JSON body costs the server.
cat > "$work/step1.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"capabilities":["ES256","EdDSA","TLS1.3"],"client_did":"did:key:zDnaeWgbpcUat3VPa1GsXeEoE4ohtpZRPzbNDf2kuy9P5R2xn",'
    .. '"client_pubkey":"-----BEGIN PUBLIC KEY-----\\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE' .. string.rep("A", 86) .. '==\\n-----END PUBLIC KEY-----\\n",'
    .. '"nonce":"' .. string.rep("n", 43) .. '","timestamp":1,"type":"handshake_request","versions":["0.1"]}'
LUA
step1="http://127.0.0.1:$gw_port/ath/handshake"
taskset -c 1 wrk -t1 -c8 -d2s -s "$work/step1.lua" "$step1" > /dev/null
before=$(cpu "$gw_pid")
out=$(taskset -c 1 wrk -t1 -c8 -d"${seconds}s" -s "$work/step1.lua" "$step1")
after=$(cpu "$gw_pid")
s1n=$(echo "$out" | awk '/requests in/ {print $1}')
[ "$s1n" = "$(echo "$out" | awk '/Non-2xx/ {print $5}')" ] || { echo "a step 1 was not refused"; exit 1; }
s1rate=$(echo "$out" | awk '/Requests\/sec/ {print int($2)}')
s1cpu=$(( (after - before) * 1000000 / ticks / s1n ))

# Admitted: token and proof on every request, forwarded upstream.
load_measure request "$seconds" admitted 1

echo "| request | requests/s | server CPU per request | store growth | audit records |"
echo "|---|---|---|---|---|"
echo "| refused (no token) | $rrate | $rcpu µs | $(( (s1 - s0) / 1000 )) kB over $refused refusals | $(( a1 - a0 )) |"
echo "| refused step 1 (stale timestamp, 600-byte body) | $s1rate | $s1cpu µs | - | - |"
echo "| admitted (token and proof, forwarded) | $load_rate | $load_server_us µs | - | - |"
