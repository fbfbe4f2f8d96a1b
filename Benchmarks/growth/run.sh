#!/usr/bin/env bash
# What a user feels as the store grows (issue 18): the server's CPU per full HTTP handshake and per
# protected request, and the store's size, with 0 to 1,000,000 stored grants, on SQLite and on
# PostgreSQL (docs/PERFORMANCE.md, "As the store grows").
#
# The server is `ath gateway` as shipped (release build, `require_user_confirmation: false`, so a
# handshake needs no user), in its own process pinned to core 0; the load generator (`ath bench
# proxy`) is another process pinned to core 1; PostgreSQL, when measured, shares core 0 with the
# server, so the server's figure is its own CPU (from /proc) and the database's is given beside it.
# Both stores sync every commit to disk, as shipped: SQLite with synchronous = FULL, PostgreSQL with
# fsync on (the tests' PostgreSQL runs without; runs before 2026-12-05's third round had it off too).
#
# Stored grants are made quickly rather than by handshakes: one real handshake gives a template (its
# handshake row with the whole transcript, its grant, session and token rows, its audit records),
# which SQL copies N times under new ids. The copies are as large as real grants and indexed alike;
# their documents still name the template's ids inside, which nothing in the measured path reads.
# Audit records are copied without a valid chain (`ath audit verify` fails on such a store).
#
#   Benchmarks/growth/run.sh [seconds] ["0 10000 100000 1000000"] [backends: "sqlite postgres"]
#   needs: release ath (swift build -c release --product ath), nginx, sqlite3, PostgreSQL, taskset
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-10}"
sizes="${2:-0 10000 100000 1000000}"
backends="${3:-sqlite postgres}"
source Benchmarks/common.sh
bench_init
shop_init
server_core=0
load_core=1
if [[ " $backends " == *" postgres "* ]]; then
    bench_postgres
fi
# The database on the server's core (backends forked later inherit it): the load generator keeps its own.
[ -z "$pg_dir" ] || for p in $(pg_pids); do taskset -acp "$server_core" "$p" > /dev/null; done
stop_gateway() { kill "$gw_pid" 2>/dev/null || true; while kill -0 "$gw_pid" 2>/dev/null; do sleep 0.1; done; }

# store line: the gateway (common.sh) on the server's core, as gw_pid and gw_port
start_gateway() { gateway_start gw "$1" 'rate_limit: "100000000/hour"' "$server_core"; }

# The template grant, then N copies of it, in SQL.
populate_sqlite() {  # file, N
    sqlite3 "$1" > /dev/null <<SQL
PRAGMA journal_mode = WAL;
.bail on
BEGIN;
CREATE TEMP TABLE n AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < $2) SELECT i FROM c;
CREATE TEMP TABLE t AS SELECT g.id AS gid, g.handshake_id AS hid, s.id AS sid, k.jti AS jti FROM grant_record g
    JOIN session s ON s.grant_id = g.id JOIN token k ON k.session_id = s.id LIMIT 1;
INSERT INTO handshake (id, state, client_did, user_did, request_id, deadline, revision, data)
    SELECT 'h-' || i, h.state, h.client_did, h.user_did, NULL, h.deadline, h.revision, h.data FROM n, t JOIN handshake h ON h.id = t.hid;
INSERT INTO grant_record (id, handshake_id, client_did, user_did, credential_id, data, created_at, expires_at)
    SELECT 'g-' || i, 'h-' || i, g.client_did, g.user_did, 'c-' || i, g.data, g.created_at, g.expires_at FROM n, t JOIN grant_record g ON g.id = t.gid;
INSERT INTO session (id, grant_id, sealed_proof_key, expires_at)
    SELECT 's-' || i, 'g-' || i, s.sealed_proof_key, s.expires_at FROM n, t JOIN session s ON s.id = t.sid;
INSERT INTO token (jti, grant_id, session_id, issued_at, expires_at)
    SELECT 'k-' || i, 'g-' || i, 's-' || i, k.issued_at, k.expires_at FROM n, t JOIN token k ON k.jti = t.jti;
INSERT INTO audit (at, event, actor, subject, outcome, detail, hash)
    SELECT a.at, a.event, a.actor, 'g-' || i, a.outcome, a.detail, a.hash FROM n, (SELECT * FROM audit ORDER BY seq LIMIT 4) a;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
}
populate_postgres() {  # database, N
    psql -q "$pg_base/$1" <<SQL
BEGIN;
CREATE TEMP TABLE t AS SELECT g.id AS gid, g.handshake_id AS hid, s.id AS sid, k.jti AS jti FROM grant_record g
    JOIN session s ON s.grant_id = g.id JOIN token k ON k.session_id = s.id LIMIT 1;
INSERT INTO handshake (id, state, client_did, user_did, request_id, deadline, revision, data)
    SELECT 'h-' || i, h.state, h.client_did, h.user_did, NULL, h.deadline, h.revision, h.data
    FROM generate_series(1, $2) i, t JOIN handshake h ON h.id = t.hid;
INSERT INTO grant_record (id, handshake_id, client_did, user_did, credential_id, data, created_at, expires_at)
    SELECT 'g-' || i, 'h-' || i, g.client_did, g.user_did, 'c-' || i, g.data, g.created_at, g.expires_at
    FROM generate_series(1, $2) i, t JOIN grant_record g ON g.id = t.gid;
INSERT INTO session (id, grant_id, sealed_proof_key, expires_at)
    SELECT 's-' || i, 'g-' || i, s.sealed_proof_key, s.expires_at FROM generate_series(1, $2) i, t JOIN session s ON s.id = t.sid;
INSERT INTO token (jti, grant_id, session_id, issued_at, expires_at)
    SELECT 'k-' || i, 'g-' || i, 's-' || i, k.issued_at, k.expires_at FROM generate_series(1, $2) i, t JOIN token k ON k.jti = t.jti;
INSERT INTO audit (seq, at, event, actor, subject, outcome, detail, hash)
    SELECT (SELECT max(seq) FROM audit) + row_number() OVER (), a.at, a.event, a.actor, 'g-' || i, a.outcome, a.detail, a.hash
    FROM generate_series(1, $2) i, (SELECT * FROM audit ORDER BY seq LIMIT 4) a;
COMMIT;
VACUUM ANALYZE;
SQL
}

# operation, backend: prints "rate server-µs database-µs" for $seconds of load
measure() {
    local others=""
    [ -z "$pg_dir" ] || [ "$2" != postgres ] || others=pg_pids
    load_measure "$1" "$seconds" "$1" "$load_core" $others || { echo "failed: $load_error"; return; }
    echo "$load_rate $load_server_us $load_other_us"
}

echo "| store | stored grants | handshakes/s | server CPU per handshake (µs) | database CPU per handshake (µs) | requests/s | server CPU per request (µs) | database CPU per request (µs) | store size (MB) |"
echo "|---|---|---|---|---|---|---|---|---|"
for backend in $backends; do
    for n in $sizes; do
        if [ "$backend" = sqlite ]; then
            rm -f "$work"/growth.sqlite*
            store='{sqlite: "growth.sqlite"}'
        else
            psql -q "$pg_base/postgres" -c "DROP DATABASE IF EXISTS growth" -c "CREATE DATABASE growth"
            store="{postgres: \"$pg_base/growth?sslmode=disable\"}"
        fi
        start_gateway "$store"
        "$ath" bench proxy --url "http://127.0.0.1:$gw_port" --path /shop/userinfo --scope profile:read --seconds 0.2 --concurrency 1 > /dev/null
        stop_gateway
        if [ "$n" -gt 0 ]; then
            if [ "$backend" = sqlite ]; then populate_sqlite "$work/growth.sqlite" "$n"; else populate_postgres growth "$n"; fi
        fi
        start_gateway "$store"
        read -r hrate hcpu hdb < <(measure handshake "$backend")
        read -r rrate rcpu rdb < <(measure request "$backend")
        if [ "$backend" = sqlite ]; then
            size=$(du -cb "$work"/growth.sqlite* | tail -1 | cut -f1)
        else
            size=$(psql -tA "$pg_base/growth" -c "SELECT pg_database_size('growth')")
        fi
        stop_gateway
        echo "| $backend | $n | $hrate | $hcpu | $hdb | $rrate | $rcpu | $rdb | $(( size / 1000000 )) |"
    done
done
echo
echo "The floor: each public-key operation alone (ath bench crypto, on the load generator's core)"
taskset -c "$load_core" "$ath" bench crypto 2>&1 | tail -20
