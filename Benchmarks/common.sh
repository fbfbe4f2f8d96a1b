# Helpers the benchmark scripts share (sourced from the repository's root, not run). The caller
# either calls bench_init, or sets $work (a scratch directory) and the array pids (processes killed
# at its exit) itself; $U is the upstream's port.

# The release ath (ATH_BIN: another build), a scratch directory, and at exit: every process in
# pids killed, the private PostgreSQL in $pg_dir (if one was started) stopped, the scratch
# directory removed (KEEP_WORK=1 keeps it).
bench_init() {
    ath="$(pwd)/${ATH_BIN:-.build/release/ath}"
    [ -x "$ath" ] || { echo "build it first: swift build -c release --product ath"; exit 1; }
    work="$(mktemp -d)"
    pids=()
    pg_dir=""
    trap bench_cleanup EXIT
}
bench_cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -z "$pg_dir" ] || .ci/postgres-stop "$pg_dir"
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
# The private PostgreSQL (.ci/postgres-start) as a benchmark needs it: durable, each commit synced
# as the SQLite store's are (the tests run theirs with fsync off), with the server options given.
# Sets pg_url, pg_dir (stopped at exit) and pg_base (the URL without its database).
bench_postgres() {  # [server options]
    pg_url=$(ATH_POSTGRES_OPTIONS="-c fsync=on ${1:-}" .ci/postgres-start 2>"$work/pg-dir")
    pg_dir=$(cat "$work/pg-dir")
    pg_base="${pg_url%%/postgres*}"
}
# The private PostgreSQL's processes: its postmaster and the children it forked.
pg_pids() { local main; main=$(head -1 "$pg_dir/data/postmaster.pid"); echo "$main $(pgrep -P "$main" | tr '\n' ' ')"; }

# A free loopback port.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A process's CPU so far (user + system, in clock ticks of $ticks).
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks=$(getconf CLK_TCK)

# Debian's nginx in the foreground, one worker, with the upstream block `up` (port $U) and the
# server block given; its pid goes to ${name}_pid.
nginx_run() {  # name, server block
    mkdir -p "$work/$1/logs"
    cat > "$work/$1/nginx.conf" <<NGINX
worker_processes 1;
events { worker_connections 4096; }
http { access_log off; upstream up { server 127.0.0.1:$U; keepalive 64; } $2 }
NGINX
    /usr/sbin/nginx -p "$work/$1" -c "$work/$1/nginx.conf" -g "daemon off; master_process off; pid $work/$1/nginx.pid; error_log $work/$1/logs/error.log;" &
    pids+=($!)
    eval "${1}_pid=$!"
    disown
}

# The upstream both benchmarks forward to: nginx answering a small JSON body at any path.
upstream_run() {
    nginx_run upstream "server { listen 127.0.0.1:$U; location / { default_type application/json; return 200 '{\"login\":\"bench\",\"name\":\"Bench User\"}'; } }"
}

# `ath gateway` protecting the upstream as service "shop" (GET /shop/userinfo, scope profile:read),
# handshakes without the user's confirmation, with $work/key.pem (the caller makes it). Starts
# ATH_SERVER_BIN if set (to compare two builds under the same load generator), else $ath, from $work, pinned to core $4 if given, and waits until it answers; its config is
# $work/$1.yaml, its pid and port go to ${1}_pid and ${1}_port.
gateway_start() {  # name, store line (YAML), extra handshake settings (YAML, may be ""), [core]
    local port
    port=$(port)
    cat > "$work/$1.yaml" <<YAML
gateway: {public_url: "http://127.0.0.1:$port", listen: {host: "127.0.0.1", port: $port}, insecure_http: true}
server: {did: "did:ath:bench", key_file: "key.pem"}
store: $2
handshake: {require_user_confirmation: false${3:+, $3}}
services: ["shop"]
service:
  shop:
    protocol: "ath"
    upstream: "http://127.0.0.1:$U"
    scopes: ["profile:read = Your profile"]
    routes: ["GET /userinfo profile:read"]
YAML
    local pin=()
    [ -z "${4:-}" ] || pin=(taskset -c "$4")
    (cd "$work" && exec "${pin[@]}" "${ATH_SERVER_BIN:-$ath}" gateway --config "$work/$1.yaml" > "$work/$1.log" 2>&1) &
    local pid=$!
    pids+=($pid); disown
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 0.1; done
    eval "${1}_pid=$pid"
    eval "${1}_port=$port"
}

# The upstream (port $U) and the server key ($work/key.pem) that a `gateway_start` gateway uses.
shop_init() {
    U=$(port)
    upstream_run
    "$ath" keygen --out "$work/key.pem" > /dev/null
}

# `ath bench proxy --operation $1` for $2 seconds against the gateway gw ($gw_port, GET /shop/userinfo,
# 8 in flight), writing to $work/$3.bench, pinned to core $4; and, over its measured part, the CPU of the
# server ($gw_pid) and of the processes the function named $5 (optional, e.g. pg_pids) prints once the
# measured part began. Sets load_done and load_rate, and load_server_us and load_other_us per operation
# (load_other_us is "-" without $5); returns 1, with the generator's last line in load_error, when it
# reported no result.
load_measure() {
    local operation=$1 secs=$2 out="$work/$3.bench" core=$4 others=${5:-}
    taskset -c "$core" "$ath" bench proxy --operation "$operation" --url "http://127.0.0.1:$gw_port" --path /shop/userinfo \
        --scope profile:read --seconds "$secs" --concurrency 8 > "$out" 2>&1 &
    local bench=$! before after obefore=0 oafter=0 pids=() line
    await_measuring "$out"
    [ -z "$others" ] || pids=($("$others"))
    before=$(cpu "$gw_pid")
    for p in "${pids[@]}"; do obefore=$((obefore + $(cpu "$p" 2>/dev/null || echo 0))); done
    wait "$bench"
    after=$(cpu "$gw_pid")
    for p in "${pids[@]}"; do oafter=$((oafter + $(cpu "$p" 2>/dev/null || echo 0))); done
    line=$(grep "^requests:" "$out") || { load_error=$(tail -1 "$out"); return 1; }
    load_done=$(echo "$line" | awk '{print $2}')
    load_rate=$(echo "$line" | sed -E 's/.*= ([0-9]+)\/s.*/\1/')
    load_server_us=$(( (after - before) * 1000000 / ticks / load_done ))
    load_other_us="-"
    [ -z "$others" ] || load_other_us=$(( (oafter - obefore) * 1000000 / ticks / load_done ))
}

# Waits until `ath bench proxy` writing to $1 starts its measured part.
await_measuring() { for _ in $(seq 600); do grep -q measuring "$1" 2>/dev/null && break; sleep 0.05; done; }
