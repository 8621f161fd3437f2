#!/usr/bin/env bash
# `make up`: builds the orchestrator, starts it on its embedded store with TLS
# (a throw-away CA and certificate under .run/tls), creates a tenant and a join
# token, enrols the static agent against the local Podman, starts it, and
# prints the worker list and what to run next. `tests/up.sh down` stops both.
# Everything lives under .run/; delete it to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/lib.sh
RUN="$PWD/.run"
PORT="${CROPS_PORT:-7443}"
URL="https://127.0.0.1:$PORT"

if [[ "${1:-}" == down ]]; then
    stop_pids "$RUN" agent orchestrator
    exit 0
fi
stop_pids "$RUN" agent orchestrator
mkdir -p "$RUN"
[[ -n "${CROPS_NO_BUILD:-}" ]] || cargo build --workspace --bins
make_tls "$RUN/tls"
[[ -f "$RUN/admin-token" ]] ||
    echo "crops_adm_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$RUN/admin-token"
export CROPS_ADMIN_TOKEN="$(cat "$RUN/admin-token")"

start_orchestrator "$RUN" "$PORT" --agent-dir "${CARGO_TARGET_DIR:-$PWD/target}"
[[ -f "$RUN/worker.json" ]] || enrol_agent "$RUN" "$URL"
"$AGENT" run --config "$RUN/worker.json" >"$RUN/agent.log" 2>&1 &
echo $! >"$RUN/agent.pid"
wait_online "$RUN" "$URL"
"$ORCH" worker list --url "$URL" --ca-file "$RUN/tls/ca.pem"
cat <<MSG

Crops is up: the orchestrator at $URL (state in .run/data, log in
.run/orchestrator.log) and a local agent on this machine's Podman (.run/agent.log).
Open the dashboard at $URL/ui (the certificate is .run/tls/ca.pem's: trust it
or accept it once) and sign in with the admin token in .run/admin-token.
From a shell:
  export CROPS_URL=$URL CROPS_ADMIN_TOKEN=\$(cat .run/admin-token)
  $ORCH worker list --ca-file .run/tls/ca.pem
  curl --cacert .run/tls/ca.pem -H "Authorization: Bearer \$CROPS_ADMIN_TOKEN" $URL/v1/workers
Stop with: make down
MSG
