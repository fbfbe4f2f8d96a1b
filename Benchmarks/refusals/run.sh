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

# wrk on core 1 against $2 (connections $1, further wrk arguments after), every answer a refusal:
# a 2 s warm-up whose refusals are written before the store is measured, then $seconds measured.
# Sets w_count, w_rate, w_cpu (the server's µs per request), w_store (bytes) and w_audit (records).
wrk_refused() {  # connections, url, [wrk arguments]
    local connections=$1 target=$2 out s0 a0 before after non2xx
    shift 2
    taskset -c 1 wrk -t1 -c"$connections" -d2s "$@" "$target" > /dev/null
    sleep 1.5
    s0=$(store_bytes); a0=$(audit_rows); before=$(cpu "$gw_pid")
    out=$(taskset -c 1 wrk -t1 -c"$connections" -d"${seconds}s" "$@" "$target")
    after=$(cpu "$gw_pid")
    sleep 1.5
    w_store=$(( $(store_bytes) - s0 )); w_audit=$(( $(audit_rows) - a0 ))
    w_count=$(echo "$out" | awk '/requests in/ {print $1}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    [ "$w_count" = "$non2xx" ] || { echo "not every request to $target was refused: $w_count requests, $non2xx refusals"; exit 1; }
    w_rate=$(echo "$out" | awk '/Requests\/sec/ {print int($2)}')
    w_cpu=$(( (after - before) * 1000000 / ticks / w_count ))
}

# Refused: one wrk connection pool, no Authorization header (TOKEN_MISSING, 401).
wrk_refused 16 "$url"
refused=$w_count rrate=$w_rate rcpu=$w_cpu rstore=$w_store raudit=$w_audit

# A refused step 1: a step-1-sized JSON body (about 600 bytes) parsed and refused for its timestamp,
# with no public-key work and no store: what one HTTP exchange with a JSON body costs the server.
cat > "$work/step1.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"capabilities":["ES256","EdDSA","TLS1.3"],"client_did":"did:key:zDnaeWgbpcUat3VPa1GsXeEoE4ohtpZRPzbNDf2kuy9P5R2xn",'
    .. '"client_pubkey":"-----BEGIN PUBLIC KEY-----\\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE' .. string.rep("A", 86) .. '==\\n-----END PUBLIC KEY-----\\n",'
    .. '"nonce":"' .. string.rep("n", 43) .. '","timestamp":1,"type":"handshake_request","versions":["0.1"]}'
LUA
wrk_refused 8 "http://127.0.0.1:$gw_port/ath/handshake" -s "$work/step1.lua"
s1rate=$w_rate s1cpu=$w_cpu

# Admitted: token and proof on every request, forwarded upstream.
load_measure request "$seconds" admitted 1

echo "| request | requests/s | server CPU per request | store growth | audit records |"
echo "|---|---|---|---|---|"
echo "| refused (no token) | $rrate | $rcpu µs | $(( rstore / 1000 )) kB over $refused refusals | $raudit |"
echo "| refused step 1 (stale timestamp, 600-byte body) | $s1rate | $s1cpu µs | - | - |"
echo "| admitted (token and proof, forwarded) | $load_rate | $load_server_us µs | - | - |"
