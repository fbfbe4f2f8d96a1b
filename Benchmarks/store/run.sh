#!/usr/bin/env bash
# Protected requests (the 9-step route: access token and a fresh proof each) through `ath gateway`
# on SQLite, then on PostgreSQL with 1 and 2 instances (docs/PERFORMANCE.md, "Several instances").
# Each gateway, the database and the load generators run in their own processes; a server's CPU
# is user + system time from /proc over the measured seconds, divided by the requests; the
# database's work per request is its committed transactions (pg_stat_database) divided by them.
#   Benchmarks/store/run.sh [seconds] [concurrency per load generator]   needs: release ath, nginx, PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-10}"
concurrency="${2:-16}"
ath="${ATH_BIN:-.build/release/ath}"
[ -x "$ath" ] || { echo "build it first: swift build -c release --product ath"; exit 1; }
work="$(mktemp -d)"
pids=()
pg_dir=""
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -z "$pg_dir" ] || .ci/postgres-stop "$pg_dir"
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
source Benchmarks/common.sh
U=$(port)
upstream_run


pg_url=$(.ci/postgres-start 2>"$work/pg-dir")
pg_dir=$(cat "$work/pg-dir")
# The cluster's processes: its postmaster and the children it forked (backends, writers).
pg_pids() { local main; main=$(head -1 "$pg_dir/data/postmaster.pid"); echo "$main $(pgrep -P "$main" | tr '\n' ' ')"; }
commits() { psql "${pg_url%%\?*}" -tAc "SELECT xact_commit FROM pg_stat_database WHERE datname = '$1'"; }
$ath keygen --out "$work/key.pem" > /dev/null

gateway() {  # name, store line: starts a gateway; its pid and port go to ${name}_pid and ${name}_port
    local g
    g=$(port)
    cat > "$work/$1.yaml" <<EOF
gateway: {public_url: "http://127.0.0.1:$g", listen: {host: "127.0.0.1", port: $g}, insecure_http: true}
server: {did: "did:ath:bench", key_file: "key.pem"}
store: $2
handshake: {require_user_confirmation: false}
services: ["shop"]
service:
  shop:
    protocol: "ath"
    upstream: "http://127.0.0.1:$U"
    scopes: ["profile:read = Your profile"]
    routes: ["GET /userinfo profile:read"]
EOF
    $ath gateway --config "$work/$1.yaml" > "$work/$1.log" 2>&1 &
    pids+=($!); disown
    eval "${1}_pid=$!"
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$g/health" > /dev/null && break; sleep 0.1; done
    eval "${1}_port=$g"
}

# label, database name ("" for SQLite), then the gateways to load (one load generator each)
measure() {
    local label=$1 db=$2; shift 2
    local outs=() benches=() before=0 after=0 c0=0 c1=0
    for name in "$@"; do
        local port_var="${name}_port"
        local out="$work/$label-$name.bench"
        "$ath" bench proxy --url "http://127.0.0.1:${!port_var}" --path /shop/userinfo --scope profile:read \
            --seconds "$seconds" --concurrency "$concurrency" > "$out" 2>&1 &
        benches+=($!); outs+=("$out")
    done
    for out in "${outs[@]}"; do for _ in $(seq 200); do grep -q measuring "$out" 2>/dev/null && break; sleep 0.05; done; done
    local servers=() database=() dbefore=0 dafter=0
    for name in "$@"; do local v="${name}_pid"; servers+=("${!v}"); done
    [ -z "$db" ] || database=($(pg_pids))
    for p in "${servers[@]}"; do before=$((before + $(cpu "$p" 2>/dev/null || echo 0))); done
    for p in "${database[@]}"; do dbefore=$((dbefore + $(cpu "$p" 2>/dev/null || echo 0))); done
    [ -z "$db" ] || c0=$(commits "$db")
    for b in "${benches[@]}"; do wait "$b"; done
    for p in "${servers[@]}"; do after=$((after + $(cpu "$p" 2>/dev/null || echo 0))); done
    for p in "${database[@]}"; do dafter=$((dafter + $(cpu "$p" 2>/dev/null || echo 0))); done
    [ -z "$db" ] || c1=$(commits "$db")
    local requests=0 rate=0
    for out in "${outs[@]}"; do
        local line
        line=$(grep "^requests:" "$out") || { echo "| $label | failed: $(tail -1 "$out") |"; return; }
        requests=$((requests + $(echo "$line" | awk '{print $2}')))
        rate=$((rate + $(echo "$line" | sed -E 's/.*= ([0-9]+)\/s.*/\1/')))
    done
    local us=$(( (after - before) * 1000000 / ticks / requests ))
    local dus=$(( (dafter - dbefore) * 1000000 / ticks / requests ))
    local tx="-"
    [ -z "$db" ] || tx=$(python3 -c "print(f'{($c1 - $c0) / $requests:.2f}')")
    echo "| $label | $rate | $us | $dus | $tx |"
}

echo "| setup | requests/s (all load generators) | gateways' CPU per request (µs) | database's CPU per request (µs) | database transactions per request |"
echo "|---|---|---|---|---|"
gateway sqlite '{sqlite: "gateway.sqlite"}'
measure "SQLite, 1 instance" "" sqlite
kill -9 "$sqlite_pid"
psql "${pg_url%%\?*}" -qc "CREATE DATABASE bench"
gateway pg1 "{postgres: \"${pg_url%%/postgres*}/bench?sslmode=disable\"}"
measure "PostgreSQL, 1 instance" bench pg1
gateway pg2 "{postgres: \"${pg_url%%/postgres*}/bench?sslmode=disable\"}"
measure "PostgreSQL, 2 instances" bench pg1 pg2
