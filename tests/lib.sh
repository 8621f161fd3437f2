# Shell helpers shared by tests/up.sh and tests/bench.sh (sourced, not run).
# Each function says what it leaves behind.

ORCH="${ORCH:-target/debug/crops-orchestrator}"
AGENT="${AGENT:-target/x86_64-unknown-linux-musl/agent/crops-agent}"

# make_tls DIR: a throw-away CA (DIR/ca.pem) and a server certificate for
# 127.0.0.1 and localhost (DIR/server.pem, DIR/server.key), made with openssl.
make_tls() {
    local dir="$1"
    [[ -f "$dir/server.pem" ]] && return 0
    mkdir -p "$dir"
    (cd "$dir"
     openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
         -subj "/CN=Crops local CA" -keyout ca.key -out ca.pem 2>/dev/null
     openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
         -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
     printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >ext.cnf
     openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
         -extfile ext.cnf -out server.pem 2>/dev/null)
}

# start_orchestrator RUNDIR PORT [extra serve flags...]: serves with TLS from
# RUNDIR/tls, state in RUNDIR/data, pid in RUNDIR/orchestrator.pid; returns
# once it listens. Needs CROPS_ADMIN_TOKEN.
start_orchestrator() {
    local run="$1" port="$2"
    shift 2
    "$ORCH" serve --listen "127.0.0.1:$port" --data "$run/data" \
        --tls-cert "$run/tls/server.pem" --tls-key "$run/tls/server.key" "$@" \
        >"$run/orchestrator.out" 2>"$run/orchestrator.log" &
    echo $! >"$run/orchestrator.pid"
    for _ in $(seq 100); do
        grep -q '^listening on' "$run/orchestrator.out" && return 0
        sleep 0.1
    done
    cat "$run/orchestrator.log" >&2
    return 1
}

# enrol_agent RUNDIR URL: a tenant, a join token and RUNDIR/worker.json.
enrol_agent() {
    local run="$1" url="$2" tenant token
    tenant="$("$ORCH" tenant create --url "$url" --ca-file "$run/tls/ca.pem" --name local)"
    token="$("$ORCH" join-token create --url "$url" --ca-file "$run/tls/ca.pem" --tenant "$tenant")"
    "$AGENT" enroll --url "$url" --token "$token" --config "$run/worker.json" --ca-file "$run/tls/ca.pem"
}

# wait_online RUNDIR URL: until the worker list shows a worker online.
wait_online() {
    local run="$1" url="$2"
    for _ in $(seq 150); do
        "$ORCH" worker list --url "$url" --ca-file "$run/tls/ca.pem" | grep online | grep -qv never && return 0
        sleep 0.2
    done
    echo "no worker came online; agent log:" >&2
    tail -20 "$run/agent.log" >&2
    return 1
}

# stop_pids RUNDIR NAME...: kill what RUNDIR/NAME.pid names.
stop_pids() {
    local run="$1"
    shift
    for p in "$@"; do
        if [[ -f "$run/$p.pid" ]]; then
            kill "$(cat "$run/$p.pid")" 2>/dev/null && echo "stopped $p" || true
            rm -f "$run/$p.pid"
        fi
    done
}
