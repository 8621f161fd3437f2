#!/usr/bin/env bash
# `make up`: builds the orchestrator, starts it on its embedded store with TLS
# (a throw-away CA and certificate made with openssl under .run/), creates a
# tenant and a join token, enrols the static agent against the local Podman,
# starts it, and prints the worker list and what to run next.
# `tests/up.sh down` stops both. Everything lives under .run/.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$PWD/.run"
PORT="${CROPS_PORT:-7443}"
URL="https://127.0.0.1:$PORT"
ORCH=target/debug/crops-orchestrator
AGENT=target/x86_64-unknown-linux-musl/agent/crops-agent

stop() {
    for p in agent orchestrator; do
        if [[ -f "$RUN/$p.pid" ]]; then
            kill "$(cat "$RUN/$p.pid")" 2>/dev/null && echo "stopped $p" || true
            rm -f "$RUN/$p.pid"
        fi
    done
}

if [[ "${1:-}" == down ]]; then
    stop
    exit 0
fi
stop
mkdir -p "$RUN/tls"
cargo build --workspace --bins

if [[ ! -f "$RUN/tls/server.pem" ]]; then
    (cd "$RUN/tls"
     openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
         -subj "/CN=Crops local CA" -keyout ca.key -out ca.pem 2>/dev/null
     openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
         -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
     printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >ext.cnf
     openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
         -extfile ext.cnf -out server.pem 2>/dev/null)
fi
[[ -f "$RUN/admin-token" ]] || echo "crops_adm_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$RUN/admin-token"
export CROPS_ADMIN_TOKEN="$(cat "$RUN/admin-token")" CROPS_URL="$URL"

"$ORCH" serve --listen "127.0.0.1:$PORT" --data "$RUN/data" \
    --tls-cert "$RUN/tls/server.pem" --tls-key "$RUN/tls/server.key" \
    >"$RUN/orchestrator.out" 2>"$RUN/orchestrator.log" &
echo $! >"$RUN/orchestrator.pid"
for _ in $(seq 100); do grep -q '^listening on' "$RUN/orchestrator.out" && break; sleep 0.1; done
grep -q '^listening on' "$RUN/orchestrator.out" || { cat "$RUN/orchestrator.log"; exit 1; }

if [[ ! -f "$RUN/worker.json" ]]; then
    tenant="$("$ORCH" tenant create --ca-file "$RUN/tls/ca.pem" --name local)"
    token="$("$ORCH" join-token create --ca-file "$RUN/tls/ca.pem" --tenant "$tenant")"
    "$AGENT" enroll --url "$URL" --token "$token" --config "$RUN/worker.json" --ca-file "$RUN/tls/ca.pem"
fi
"$AGENT" run --config "$RUN/worker.json" >"$RUN/agent.log" 2>&1 &
echo $! >"$RUN/agent.pid"
for _ in $(seq 100); do
    "$ORCH" worker list --ca-file "$RUN/tls/ca.pem" | grep -q online && break
    sleep 0.2
done
"$ORCH" worker list --ca-file "$RUN/tls/ca.pem"
cat <<MSG

Crops is up: orchestrator at $URL (state in .run/data), agent logging to .run/agent.log.
  export CROPS_URL=$URL CROPS_ADMIN_TOKEN=\$(cat .run/admin-token)
  $ORCH worker list --ca-file .run/tls/ca.pem
  curl --cacert .run/tls/ca.pem -H "Authorization: Bearer \$CROPS_ADMIN_TOKEN" $URL/v1/workers
Stop with: make down
MSG
