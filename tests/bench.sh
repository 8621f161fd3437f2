#!/usr/bin/env bash
# `make bench`: the measurements in BENCHMARKS.md. Prints a Markdown table.
#   * static agent size for both musl targets;
#   * agent RSS: in backoff with no orchestrator, connected over TLS and
#     idle after 30 s of heartbeats (the product's 10 s interval), and after
#     a round of commands (three Standard containers with an allow-list, so
#     three egress gates: create, start, exec, stop, remove), with the peak.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/lib.sh
RUN="$(mktemp -d)"
trap 'stop_pids "$RUN" agent orchestrator >/dev/null; rm -rf "$RUN"' EXIT
PORT="${CROPS_BENCH_PORT:-7543}"
URL="https://127.0.0.1:$PORT"
[[ -n "${CROPS_NO_BUILD:-}" ]] || cargo build --workspace --bins -q
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

echo "| measurement | value |"
echo "|---|---|"
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    f="target/$t/agent/crops-agent"
    echo "| agent size, $t | $(stat -c %s "$f") bytes ($(numfmt --to=iec-i --suffix=B "$(stat -c %s "$f")")) |"
done

make_tls "$RUN/tls"
export CROPS_ADMIN_TOKEN="crops_adm_bench_$$"
start_orchestrator "$RUN" "$PORT"
enrol_agent "$RUN" "$URL" >/dev/null 2>&1
kill "$(cat "$RUN/orchestrator.pid")"; wait "$(cat "$RUN/orchestrator.pid")" 2>/dev/null || true

"$AGENT" run --config "$RUN/worker.json" >"$RUN/agent.log" 2>&1 &
echo $! >"$RUN/agent.pid"
until grep -q 'retrying in' "$RUN/agent.log"; do sleep 0.1; done
echo "| agent RSS in backoff (no orchestrator) | $(rss_kib "$(cat "$RUN/agent.pid")") KiB |"

start_orchestrator "$RUN" "$PORT"
wait_online "$RUN" "$URL"
sleep 30 # measuring idle memory over three heartbeats, not synchronising
echo "| agent RSS connected over TLS, idle, after 30 s | $(rss_kib "$(cat "$RUN/agent.pid")") KiB |"
echo "| orchestrator RSS with one agent (dev build) | $(rss_kib "$(cat "$RUN/orchestrator.pid")") KiB |"

api() { curl -sS --fail-with-body --cacert "$RUN/tls/ca.pem" -H "Authorization: Bearer $CROPS_ADMIN_TOKEN" -H 'Content-Type: application/json' "$@"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
TENANT="$(field tenantId <"$RUN/worker.json")"
WORKER="$(field workerId <"$RUN/worker.json")"
IMAGE="${CROPS_TEST_IMAGE:-localhost/crops-test/busybox:latest}"
for i in 1 2 3; do
    id="$(api -X POST "$URL/v1/containers" -d '{"tenantId":"'"$TENANT"'","workerId":"'"$WORKER"'","name":"bench-rss-'"$$-$i"'","image":"'"$IMAGE"'","command":["sleep","600"],"allowedDomains":["example.com","*.example.org"]}' | field id)"
    api -X POST "$URL/v1/containers/$id/start" >/dev/null
    api -X POST "$URL/v1/containers/$id/exec" -d '{"command":["ls","/.crops/egress"]}' >/dev/null
    api -X POST "$URL/v1/containers/$id/stop" -d '{"timeoutSecs":1}' >/dev/null
    api -X DELETE "$URL/v1/containers/$id?force=true" >/dev/null
done
pid="$(cat "$RUN/agent.pid")"
echo "| agent RSS after a round of commands (3 x create with an allow-list, start, exec, stop, remove) | $(rss_kib "$pid") KiB (peak $(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status") KiB) |"
