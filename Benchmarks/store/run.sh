#!/usr/bin/env bash
# Several instances on one PostgreSQL (docs/PERFORMANCE.md, "Several instances"): protected requests
# (the 9-step route: access token and a fresh proof each) and whole handshakes through `ath gateway`,
# on SQLite, then on a private PostgreSQL with 1, 2 and 3 instances, each with its own load generator;
# then the memory a live grant takes in the gateway and in the database.
#
# Every gateway, the database and the load generators run in their own processes. Per operation:
#   - a gateway's CPU: user + system time from /proc over the measured seconds;
#   - the database's CPU: the same for the postmaster and every process it forked;
#   - transactions: pg_stat_database.xact_commit;
#   - round trips: statements the database ran (pg_stat_statements' calls, BEGIN and COMMIT included;
#     postgres-nio sends each statement as one Parse/Bind/Execute/Sync exchange);
#   - bytes: TCP payload between the gateways and the database, both ways (ss's bytes_sent and
#     bytes_received of every connection to its port).
#
#   Benchmarks/store/run.sh [seconds] [concurrency per load generator] [grants held]
#   PARTS="throughput memory" (the default) selects what to measure.
#   needs: release ath (swift build -c release --product ath), nginx, PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-10}"
parts="${PARTS:-throughput memory}"
concurrency="${2:-16}"
held="${3:-2000}"
source Benchmarks/common.sh
bench_init
shop_init

bench_postgres "-c shared_preload_libraries=pg_stat_statements"
pg_port=$(cat "$pg_dir/port")
sql() { psql "$pg_base/$1" -tAc "$2"; }
# TCP payload bytes on every connection to the database, both ways, as the clients count them.
pg_bytes() {
    ss -tinH state established "( dport = :$pg_port )" \
        | grep -oE 'bytes_(sent|received):[0-9]+' | awk -F: '{s += $2} END {print s + 0}'
}

# name, store line: a gateway (common.sh) whose grants carry a rate limit, so that the shared rate
# counters are on the path.
gateway() { gateway_start "$1" "$2" 'rate_limit: "100000000/hour"'; }

# operation (request|handshake), label, database name ("" for SQLite), then the gateways to load
measure() {
    local operation=$1 label=$2 db=$3; shift 3
    local outs=() benches=() before=0 after=0 c0=0 c1=0 s0=0 s1=0 b0=0 b1=0
    for name in "$@"; do
        local port_var="${name}_port"
        local out="$work/$operation-$label-$name.bench"
        "$ath" bench proxy --operation "$operation" --url "http://127.0.0.1:${!port_var}" --path /shop/userinfo --scope profile:read \
            --seconds "$seconds" --concurrency "$concurrency" > "$out" 2>&1 &
        benches+=($!); outs+=("$out")
    done
    for out in "${outs[@]}"; do await_measuring "$out"; done
    local servers=() database=() dbefore=0 dafter=0
    for name in "$@"; do local v="${name}_pid"; servers+=("${!v}"); done
    [ -z "$db" ] || database=($(pg_pids))
    if [ -n "$db" ]; then
        sql "$db" "SELECT pg_stat_statements_reset()" > /dev/null
        c0=$(sql "$db" "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'")
        b0=$(pg_bytes)
    fi
    for p in "${servers[@]}"; do before=$((before + $(cpu "$p" 2>/dev/null || echo 0))); done
    for p in "${database[@]}"; do dbefore=$((dbefore + $(cpu "$p" 2>/dev/null || echo 0))); done
    for b in "${benches[@]}"; do wait "$b"; done
    for p in "${servers[@]}"; do after=$((after + $(cpu "$p" 2>/dev/null || echo 0))); done
    for p in "${database[@]}"; do dafter=$((dafter + $(cpu "$p" 2>/dev/null || echo 0))); done
    if [ -n "$db" ]; then
        b1=$(pg_bytes)
        c1=$(sql "$db" "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'")
        # The statements of the measured seconds, less the two this script ran meanwhile.
        s1=$(sql "$db" "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$db')")
    fi
    local done_ops=0 rate=0
    for out in "${outs[@]}"; do
        local line
        line=$(grep "^requests:" "$out") || { echo "| $operation | $label | failed: $(tail -1 "$out") |"; return; }
        done_ops=$((done_ops + $(echo "$line" | awk '{print $2}')))
        rate=$((rate + $(echo "$line" | sed -E 's/.*= ([0-9]+)\/s.*/\1/')))
    done
    local us=$(( (after - before) * 1000000 / ticks / done_ops ))
    local dus="-" tx="-" trips="-" bytes="-"
    if [ -n "$db" ]; then
        dus=$(( (dafter - dbefore) * 1000000 / ticks / done_ops ))
        tx=$(python3 -c "print(f'{($c1 - $c0) / $done_ops:.2f}')")
        trips=$(python3 -c "print(f'{($s1 - 2) / $done_ops:.2f}')")
        bytes=$(( (b1 - b0) / done_ops ))
    fi
    echo "| $operation | $label | $rate | $us | $dus | $tx | $trips | $bytes |"
}

if [[ " $parts " == *" throughput "* ]]; then
echo "| operation | setup | per second (all load generators) | gateways' CPU (µs) | database's CPU (µs) | transactions | round trips | bytes to and from the database |"
echo "|---|---|---|---|---|---|---|---|"
gateway sqlite '{sqlite: "gateway.sqlite"}'
for op in request handshake; do measure $op "SQLite, 1 instance" "" sqlite; done
kill -9 "$sqlite_pid"
sql postgres "CREATE DATABASE bench" > /dev/null
sql bench "CREATE EXTENSION pg_stat_statements" > /dev/null
store="{postgres: \"$pg_base/bench?sslmode=disable\"}"
gateway pg1 "$store"
for op in request handshake; do measure $op "PostgreSQL, 1 instance" bench pg1; done
gateway pg2 "$store"
for op in request handshake; do measure $op "PostgreSQL, 2 instances" bench pg1 pg2; done
gateway pg3 "$store"
for op in request handshake; do measure $op "PostgreSQL, 3 instances" bench pg1 pg2 pg3; done
kill -9 "$pg1_pid" "$pg2_pid" "$pg3_pid"
fi
[[ " $parts " == *" memory "* ]] || exit 0

# Memory per live grant: a fresh database and one gateway; `ath bench hold` makes $held grants
# (a handshake and one request each, so the gateway caches the session) and holds them. Before
# the first reading, handshakes whose grants are not used again for as long as the holding will
# take: the allocator then has the heap a handshake's transient work needs, and what grows
# after is the held grants' state, not the first handshakes' garbage.
sql postgres "CREATE DATABASE held" > /dev/null
gateway mem "{postgres: \"$pg_base/held?sslmode=disable\"}"
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
tables="'handshake','grant_record','session','token','audit','nonce','proof_nonce','rate_counter'"
db_bytes() { sql held "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c WHERE c.relname IN ($tables)"; }
"$ath" bench proxy --operation handshake --url "http://127.0.0.1:$mem_port" --path /shop/userinfo --scope profile:read \
    --seconds 10 --concurrency 8 > /dev/null
sleep 1
r0=$(rss "$mem_pid"); d0=$(db_bytes)
"$ath" bench hold --url "http://127.0.0.1:$mem_port" --path /shop/userinfo --scope profile:read --grants "$held" > "$work/hold.log" 2>&1 &
hold_pid=$!; pids+=($hold_pid); disown
for _ in $(seq 6000); do grep -q holding "$work/hold.log" 2>/dev/null && break; kill -0 "$hold_pid" 2>/dev/null || break; sleep 0.1; done
grep -q holding "$work/hold.log" || { echo "hold failed: $(tail -3 "$work/hold.log")"; exit 1; }
sql held "VACUUM ANALYZE" > /dev/null
r1=$(rss "$mem_pid"); d1=$(db_bytes)
rows=$(sql held "SELECT (SELECT count(*) FROM grant_record) || ' grants, ' || (SELECT count(*) FROM session) || ' sessions, ' || (SELECT count(*) FROM audit) || ' audit records'")
echo
echo "| held | gateway's resident memory per live grant | database bytes per live grant (tables and indexes) |"
echo "|---|---|---|"
echo "| $rows | $(( (r1 - r0) * 1024 / held )) B | $(( (d1 - d0) / held )) B |"
