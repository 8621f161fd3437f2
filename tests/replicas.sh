#!/usr/bin/env bash
# `make replicas`: three orchestrators on one PostgreSQL behind HAProxy, on
# this machine. Builds the orchestrator, starts a PostgreSQL server of its
# own (initdb in .run/replicas/pg, a Unix socket there, as the postgres user
# when root), three `serve --database ... --replica-id rN --advertise
# https://127.0.0.1:PORT` replicas sharing one admin token and one TLS
# certificate (its chain file carries the throw-away CA, so the replicas
# verify each other; every agent comes from HAProxy's address, so the
# per-source cap on unauthenticated connections is the whole cap),
# HAProxy in TCP mode in front (least connections, a TLS check of
# /readyz), then enrols the static agent through the balancer and starts it. `tests/replicas.sh down` stops it all. State under
# .run/replicas/; delete it to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/lib.sh
RUN="$PWD/.run/replicas"
BASE="${CROPS_PORT:-7443}"
URL="https://127.0.0.1:$BASE"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
as_pg() { if [[ $EUID == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

stop_all() {
    stop_pids "$RUN" agent haproxy r1 r2 r3
    if [[ -f "$RUN/pg/data/postmaster.pid" ]]; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$RUN/pg/data" -m fast -s && echo "stopped postgresql"
    fi
}
if [[ "${1:-}" == down ]]; then
    stop_all
    exit 0
fi
stop_all
mkdir -p "$RUN"
[[ -n "${CROPS_NO_BUILD:-}" ]] || cargo build --workspace --bins
make_tls "$RUN/tls"
cat "$RUN/tls/server.pem" "$RUN/tls/ca.pem" >"$RUN/tls/chain.pem"
[[ -f "$RUN/admin-token" ]] ||
    echo "crops_adm_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$RUN/admin-token"
export CROPS_ADMIN_TOKEN="$(cat "$RUN/admin-token")"

# PostgreSQL: a cluster of its own, listening on a Unix socket only.
if [[ ! -d "$RUN/pg/data" ]]; then
    mkdir -p "$RUN/pg"
    [[ $EUID == 0 ]] && chown postgres: "$RUN/pg"
    as_pg "$PG_BIN/initdb" -D "$RUN/pg/data" -A trust -U crops -E UTF8 --locale=C >/dev/null
    NEW_DB=1
fi
as_pg "$PG_BIN/pg_ctl" start -D "$RUN/pg/data" -l "$RUN/pg/log" -w -s \
    -o "-c listen_addresses='' -k $RUN/pg"
[[ -z "${NEW_DB:-}" ]] || "$PG_BIN/psql" -X -q -h "$RUN/pg" -U crops -d postgres -c "CREATE DATABASE crops"
DB="postgres://crops@localhost/crops?host=$RUN/pg"

# Three replicas on BASE+1..3, each its own local data dir and log.
for i in 1 2 3; do
    port=$((BASE + i))
    mkdir -p "$RUN/r$i"
    "$ORCH" serve --listen "127.0.0.1:$port" --data "$RUN/r$i/data" --database "$DB" \
        --replica-id "r$i" --advertise "https://127.0.0.1:$port" \
        --tls-cert "$RUN/tls/chain.pem" --tls-key "$RUN/tls/server.key" \
        --max-unauthenticated 256 --max-unauthenticated-per-source 256 \
        >"$RUN/r$i/out" 2>"$RUN/r$i.log" &
    echo $! >"$RUN/r$i.pid"
    for _ in $(seq 100); do
        grep -qs '^listening on' "$RUN/r$i/out" && break
        sleep 0.1
    done
    grep -q '^listening on' "$RUN/r$i/out" || { cat "$RUN/r$i.log" >&2; exit 1; }
done

cat >"$RUN/haproxy.cfg" <<CFG
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch
frontend crops
    bind 127.0.0.1:$BASE
    default_backend replicas
backend replicas
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check check-ssl verify none inter 500ms fall 2 rise 2
    server r1 127.0.0.1:$((BASE + 1))
    server r2 127.0.0.1:$((BASE + 2))
    server r3 127.0.0.1:$((BASE + 3))
CFG
haproxy -db -f "$RUN/haproxy.cfg" >"$RUN/haproxy.log" 2>&1 &
echo $! >"$RUN/haproxy.pid"
for _ in $(seq 100); do
    curl -sf --cacert "$RUN/tls/ca.pem" "$URL/readyz" >/dev/null && break
    sleep 0.1
done

[[ -f "$RUN/worker.json" ]] || enrol_agent "$RUN" "$URL"
"$AGENT" run --config "$RUN/worker.json" >"$RUN/agent.log" 2>&1 &
echo $! >"$RUN/agent.pid"
wait_online "$RUN" "$URL"
"$ORCH" worker list --url "$URL" --ca-file "$RUN/tls/ca.pem"
cat <<MSG

Crops is up on three replicas: HAProxy at $URL in front of r1, r2, r3
(https://127.0.0.1:$((BASE + 1))..$((BASE + 3)), logs .run/replicas/rN.log),
all on PostgreSQL ($DB, log .run/replicas/pg/log), and a local agent
connected through the balancer (.run/replicas/agent.log).
Look around:
  export CROPS_URL=$URL CROPS_ADMIN_TOKEN=\$(cat .run/replicas/admin-token)
  $ORCH worker list --ca-file .run/replicas/tls/ca.pem
  for p in $((BASE + 1)) $((BASE + 2)) $((BASE + 3)); do curl -s --cacert .run/replicas/tls/ca.pem https://127.0.0.1:\$p/metrics | grep '^crops_workers_connected'; done
Kill one (kill -9 \$(cat .run/replicas/r1.pid)): its agents reconnect through the balancer.
Stop with: make replicas-down
MSG
