#!/usr/bin/env bash
# Runs a three-node credentialflow cluster on loopback, in the foreground.
#
#   cargo build --release -p credentialflow
#   deploy/local-cluster.sh            # Ctrl-C stops all three nodes
#
# Node N (N = 1..3) listens on
#   proxy  127.0.0.1:$((PROXY_BASE + N))   (default 8081-8083)
#   admin  127.0.0.1:$((ADMIN_BASE + N))   (default 9081-9083)
#   peer   127.0.0.1:$((PEER_BASE + N))    (default 7081-7083)
# and keeps its Raft state in $DATA_ROOT/nodeN; its output goes to $DATA_ROOT/nodeN.log.
# Running the script again on the same directory restarts the same cluster (the nodes
# rejoin with their existing state; nothing is re-bootstrapped).
#
# Environment:
#   CREDENTIALFLOW_BIN          binary (default: <repo>/target/release/credentialflow)
#   CREDENTIALFLOW_LOCAL_DIR    data root (default: <repo>/data/local-cluster)
#   CREDENTIALFLOW_ADMIN_TOKEN  admin token shared by all nodes; when unset, one is
#                               generated once into $DATA_ROOT/admin-token (mode 0600)
#   CREDENTIALFLOW_LOCAL_PROXY_BASE / _ADMIN_BASE / _PEER_BASE
#                               base ports (default 8080 / 9080 / 7080; node N uses base+N)
#   CREDENTIALFLOW_LOCAL_TIMEOUT  seconds to wait for the cluster to become ready (default 60)
#   CREDENTIALFLOW_LOCAL_TLS=1  HTTPS on the proxy and admin listeners and mutual TLS
#                               between peers, with a development CA and node certificates
#                               made once by `credentialflow certs init` in $DATA_ROOT/certs
#                               (curl them with --cacert $DATA_ROOT/certs/ca.pem)
#   CREDENTIALFLOW_LOG, CREDENTIALFLOW_LOG_FORMAT and the Raft tuning variables
#   (CREDENTIALFLOW_ELECTION_TIMEOUT, ...) are passed through to the nodes.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

BIN=${CREDENTIALFLOW_BIN:-$repo_root/target/release/credentialflow}
DATA_ROOT=${CREDENTIALFLOW_LOCAL_DIR:-$repo_root/data/local-cluster}
PROXY_BASE=${CREDENTIALFLOW_LOCAL_PROXY_BASE:-8080}
ADMIN_BASE=${CREDENTIALFLOW_LOCAL_ADMIN_BASE:-9080}
PEER_BASE=${CREDENTIALFLOW_LOCAL_PEER_BASE:-7080}
READY_TIMEOUT=${CREDENTIALFLOW_LOCAL_TIMEOUT:-60}
# Seconds each node gets to shut down after SIGTERM before it is killed.
STOP_TIMEOUT=30
HOST=127.0.0.1
NODES=(1 2 3)

log() { printf 'local-cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for value in "$PROXY_BASE" "$ADMIN_BASE" "$PEER_BASE" "$READY_TIMEOUT"; do
    [[ $value =~ ^[0-9]+$ ]] || die "not a number: $value"
done

if [[ ! -x $BIN ]]; then
    log "no credentialflow binary at $BIN"
    log "build it from the repository root with:"
    log "    cargo build --release -p credentialflow"
    log "or point CREDENTIALFLOW_BIN at an existing binary."
    exit 1
fi
command -v curl >/dev/null 2>&1 || die "curl is required"

mkdir -p "$DATA_ROOT"
DATA_ROOT=$(cd "$DATA_ROOT" && pwd)

# --- admin token -------------------------------------------------------------------------
token_file=$DATA_ROOT/admin-token
if [[ -n ${CREDENTIALFLOW_ADMIN_TOKEN:-} ]]; then
    TOKEN=$CREDENTIALFLOW_ADMIN_TOKEN
    token_origin="from CREDENTIALFLOW_ADMIN_TOKEN"
elif [[ -s $token_file ]]; then
    TOKEN=$(tr -d '[:space:]' <"$token_file")
    token_origin="from $token_file"
else
    # 24 random bytes as 48 hex digits: no whitespace, nothing to quote.
    TOKEN="cfadm_$(od -An -vtx1 -N24 /dev/urandom | tr -d ' \n')"
    (umask 077 && printf '%s\n' "$TOKEN" >"$token_file")
    chmod 600 "$token_file"
    token_origin="generated into $token_file"
fi
if (( ${#TOKEN} < 16 )) || [[ $TOKEN =~ [[:space:]] ]]; then
    die "the admin token must be at least 16 characters without whitespace"
fi
# Handed to the nodes through the environment, so it does not show up in `ps`.
export CREDENTIALFLOW_ADMIN_TOKEN=$TOKEN
# These would override or contradict the flags below.
unset CREDENTIALFLOW_CONFIG CREDENTIALFLOW_JOIN

initial_cluster=""
for n in "${NODES[@]}"; do
    initial_cluster+="${initial_cluster:+,}$n=$HOST:$((PEER_BASE + n))"
done

SCHEME=http
CURL_TLS=()
TLS_ARGS=()
if [[ ${CREDENTIALFLOW_LOCAL_TLS:-0} == 1 ]]; then
    certs=$DATA_ROOT/certs
    if [[ ! -s $certs/ca.pem ]]; then
        "$BIN" certs init --out "$certs" --nodes "${#NODES[@]}" --hosts "$HOST,localhost" >/dev/null \
            || die "cannot create certificates in $certs"
        log "development CA and node certificates written to $certs"
    fi
    SCHEME=https
    CURL_TLS=(--cacert "$certs/ca.pem")
fi
tls_args() {
    [[ $SCHEME == https ]] || return 0
    local n=$1 c=$DATA_ROOT/certs
    TLS_ARGS=(--tls-cert "$c/node-$n.pem" --tls-key "$c/node-$n-key.pem"
        --peer-ca "$c/ca.pem" --peer-cert "$c/node-$n.pem" --peer-key "$c/node-$n-key.pem")
}

admin_url() { printf '%s://%s:%d%s' "$SCHEME" "$HOST" "$((ADMIN_BASE + $1))" "$2"; }

# --- shutdown ----------------------------------------------------------------------------
PIDS=()
stop_nodes() {
    local status=$? pid deadline alive
    trap - EXIT
    trap '' INT TERM   # a second Ctrl-C must not abandon the nodes half-stopped
    (( ${#PIDS[@]} )) || exit "$status"
    log "stopping nodes (SIGTERM)..."
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$((SECONDS + STOP_TIMEOUT))
    while :; do
        alive=()
        for pid in "${PIDS[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi
        done
        (( ${#alive[@]} )) || break
        if (( SECONDS >= deadline )); then
            log "still running after ${STOP_TIMEOUT}s, killing: ${alive[*]}"
            kill -KILL "${alive[@]}" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    log "all nodes stopped; data and logs are in $DATA_ROOT"
    exit "$status"
}
trap stop_nodes EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- start -------------------------------------------------------------------------------
for n in "${NODES[@]}"; do
    if curl "${CURL_TLS[@]}" -fsS -o /dev/null --max-time 1 "$(admin_url "$n" /healthz)" 2>/dev/null; then
        die "something already answers on $(admin_url "$n" /healthz); is a cluster already running?"
    fi
done

for n in "${NODES[@]}"; do
    node_log=$DATA_ROOT/node$n.log
    printf '\n=== %s: starting node %s ===\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$n" >>"$node_log"
    tls_args "$n"
    # Log files get plain text: NO_COLOR turns off the ANSI colours of text logs.
    NO_COLOR=1 "$BIN" serve "${TLS_ARGS[@]}" \
        --id "$n" \
        --data-dir "$DATA_ROOT/node$n" \
        --proxy-addr "$HOST:$((PROXY_BASE + n))" \
        --admin-addr "$HOST:$((ADMIN_BASE + n))" \
        --peer-addr "$HOST:$((PEER_BASE + n))" \
        --initial-cluster "$initial_cluster" \
        >>"$node_log" 2>&1 </dev/null &
    PIDS+=("$!")
    log "node $n started (pid $!), log: $node_log"
done

# Exits with the node's log tail if node $1 (index into PIDS) is no longer running.
check_alive() {
    local n=$1 pid=${PIDS[$(( $1 - 1 ))]}
    if ! kill -0 "$pid" 2>/dev/null; then
        log "node $n (pid $pid) exited; last lines of $DATA_ROOT/node$n.log:"
        tail -n 20 "$DATA_ROOT/node$n.log" >&2 || true
        exit 1
    fi
}

log "waiting up to ${READY_TIMEOUT}s for all nodes to be ready..."
deadline=$((SECONDS + READY_TIMEOUT))
for n in "${NODES[@]}"; do
    until curl "${CURL_TLS[@]}" -fsS -o /dev/null --max-time 2 "$(admin_url "$n" /readyz)" 2>/dev/null; do
        for m in "${NODES[@]}"; do check_alive "$m"; done
        if (( SECONDS >= deadline )); then
            log "node $n is not ready after ${READY_TIMEOUT}s; /readyz says:"
            curl "${CURL_TLS[@]}" -sS --max-time 2 "$(admin_url "$n" /readyz)" >&2 || true
            echo >&2
            exit 1
        fi
        sleep 0.25
    done
done

leader=$(curl "${CURL_TLS[@]}" -fsS --max-time 2 -H "Authorization: Bearer $TOKEN" "$(admin_url 1 /v1/cluster)" \
    | sed -n 's/.*"leader_id":\([0-9][0-9]*\).*/\1/p' || true)

cat <<EOF

credentialflow local cluster is ready (leader: node ${leader:-unknown})

  node  proxy                   admin                   peer
EOF
for n in "${NODES[@]}"; do
    printf '  %-4s  %-22s  %-22s  %s\n' "$n" \
        "$SCHEME://$HOST:$((PROXY_BASE + n))" "$SCHEME://$HOST:$((ADMIN_BASE + n))" "$HOST:$((PEER_BASE + n))"
done
cat <<EOF

  data dir     $DATA_ROOT
  admin token  $TOKEN
               ($token_origin)

Try:
  curl ${CURL_TLS[*]} -H "Authorization: Bearer $TOKEN" $(admin_url 1 /v1/cluster)

Press Ctrl-C to stop the cluster.
EOF

# Stay in the foreground until interrupted; stop everything if any node dies.
while :; do
    for n in "${NODES[@]}"; do check_alive "$n"; done
    sleep 1
done
