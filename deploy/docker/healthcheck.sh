#!/bin/bash
# Container health probe without curl: an HTTP/1.1 GET over bash's /dev/tcp to this node's
# admin listener. Installed in the image as /usr/local/bin/credentialflow-healthcheck.
#
#   credentialflow-healthcheck            # GET /healthz: the process is alive and serving
#   credentialflow-healthcheck /readyz    # member of a cluster with a known leader, caught up
#
# The port is taken from CREDENTIALFLOW_ADMIN_ADDR (default 9080); a wildcard bind address
# is probed on loopback. Exits 0 on HTTP 200, 1 otherwise.
set -eu

path=${1:-/healthz}
addr=${CREDENTIALFLOW_ADMIN_ADDR:-0.0.0.0:9080}
port=${addr##*:}
host=${addr%:*}
host=${host#[}
host=${host%]}
case $host in
    "" | 0.0.0.0 | "*") host=127.0.0.1 ;;
    ::) host=::1 ;;
esac

if ! exec 3<>"/dev/tcp/$host/$port"; then
    echo "cannot connect to $host:$port" >&2
    exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
status=""
IFS= read -r -t 5 status <&3 || true
exec 3<&-
case $status in
    "HTTP/1."?" 200 "*) exit 0 ;;
    *)
        echo "$path: ${status%$'\r'}" >&2
        exit 1
        ;;
esac
