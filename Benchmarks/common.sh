# Helpers the benchmark scripts share (sourced, not run). The caller sets $work (a scratch
# directory), $U (the upstream's port) and the array pids (processes killed at its exit).

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
