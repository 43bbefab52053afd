#!/usr/bin/env bash
# Counts the user-space instructions one proxied request costs credentialflow (all of its
# threads), with callgrind: a repeatable figure where a throughput run on a shared 2-core
# machine drifts by several percent between runs. For comparing builds of the proxy path,
# not for comparing with nginx (valgrind runs SHA-256 in software, and counts each step of
# a `rep stos` as an instruction).
#
#   tests/bench/proxy-instructions.sh [BINARY] [REQUESTS]
#
# BINARY defaults to target/release/credentialflow, REQUESTS to 5000. Needs valgrind,
# nginx, curl and python3 (Debian: valgrind nginx-light curl python3). The node runs
# one worker with API-key authentication in front of an nginx answering a fixed body, as in
# `cargo bench --bench proxy`; instrumentation is switched on only after the node is up and
# a warm-up has filled the upstream pool. With CALLGRIND_KEEP=<dir>, the profile is copied
# there for `callgrind_annotate`.
set -euo pipefail

binary=$(realpath "${1:-target/release/credentialflow}")
requests=${2:-5000}
token=proxy-instructions-admin-token
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # URL [bearer token]: polls until the URL answers 2xx, for up to 120 s
    for _ in $(seq 600); do
        if curl -sf -o /dev/null ${2:+-H "Authorization: Bearer $2"} "$1"; then return 0; fi
        sleep 0.2
    done
    echo "no answer from $1" >&2
    exit 1
}

upstream_port=$(free_port)
proxy_port=$(free_port)
admin_port=$(free_port)
peer_port=$(free_port)

mkdir -p "$work/upstream/logs" "$work/data"
cat > "$work/upstream/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/upstream/nginx.pid;
error_log $work/upstream/logs/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s;
  server { listen 127.0.0.1:$upstream_port; location / { return 200 "hello from upstream\n"; } } }
EOF
nginx -p "$work/upstream" -c "$work/upstream/nginx.conf" &
pids+=($!)
wait_for "http://127.0.0.1:$upstream_port/"

CREDENTIALFLOW_ADMIN_TOKEN=$token valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/callgrind.out" \
    "$binary" serve --data-dir "$work/data" --workers 1 \
    --proxy-addr "127.0.0.1:$proxy_port" --admin-addr "127.0.0.1:$admin_port" \
    --peer-addr "127.0.0.1:$peer_port" > "$work/node.log" 2>&1 &
node=$!
pids+=($node)
wait_for "http://127.0.0.1:$admin_port/readyz"

admin() { curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' "$@"; }
admin -X PUT "http://127.0.0.1:$admin_port/v1/routes/bench" \
    -d "{\"path_prefix\":\"/\",\"auth\":\"api_key\",\"upstreams\":[{\"url\":\"http://127.0.0.1:$upstream_port\"}]}" > /dev/null
key=$(admin -X POST "http://127.0.0.1:$admin_port/v1/keys" -d '{"name":"bench"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
wait_for "http://127.0.0.1:$proxy_port/bench" "$key"

# A client that sends exactly the requested count over 16 keep-alive connections and exits
# at once, so that instrumentation covers those requests and little else.
cat > "$work/load.py" <<'EOF'
import http.client, sys, threading
port, key, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
connections = 16
failures = []
def run(count):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(count):
        conn.request("GET", "/bench", headers={"Authorization": "Bearer " + key})
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            failures.append(answer.status)
threads = [threading.Thread(target=run, args=(total // connections + (i < total % connections),))
           for i in range(connections)]
for t in threads: t.start()
for t in threads: t.join()
if failures:
    sys.exit(f"{len(failures)} requests failed, the first with {failures[0]}")
EOF
load() { python3 "$work/load.py" "$proxy_port" "$key" "$1"; }

load 500
callgrind_control -i on "$node" > /dev/null 2>&1
load "$requests"
callgrind_control -i off "$node" > /dev/null 2>&1
callgrind_control -d "$node" > /dev/null 2>&1

instructions=$(cat "$work"/callgrind.out* | awk '/^totals:/ {sum += $2} END {print sum}')
if [[ -n "${CALLGRIND_KEEP:-}" ]]; then
    mkdir -p "$CALLGRIND_KEEP"
    cp "$work"/callgrind.out* "$CALLGRIND_KEEP"/
fi
echo "requests $requests, instructions $instructions, per request $((instructions / requests))"
