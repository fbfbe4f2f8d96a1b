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

# Waits until `ath bench proxy` writing to $1 starts its measured part.
await_measuring() { for _ in $(seq 600); do grep -q measuring "$1" 2>/dev/null && break; sleep 0.05; done; }
