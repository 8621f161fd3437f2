#!/usr/bin/env bash
# `make bench`, orchestrator at scale (the issue 4 section of BENCHMARKS.md):
#   * API write throughput with durable commits (join tokens at 1, 16, 64
#     clients; enrolment at 64), over TLS keep-alive connections;
#   * a SIMULATED FLEET: CROPS_FLEET_AGENTS (default 10,000) real TLS
#     WebSocket agents from one separate process (the bench), each with its
#     own credential, registered and heartbeating every 10 s, held for
#     CROPS_FLEET_HOLD_SECS (default 60): orchestrator RSS and CPU.
# The sandbox's hard open-files limit is 20,000 per process, so the fleet
# (10,000 sockets) and the orchestrator (10,000 sockets) each get their own
# process, and the soft limit is raised to the hard one here (inherited by
# both). CROPS_NO_BUILD=1 reuses target/release/crops-orchestrator.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
need=$(( ${CROPS_FLEET_AGENTS:-10000} + 1000 ))
if (( $(ulimit -n) < need )); then
    echo "open-files limit $(ulimit -n) is below the $need this run needs" >&2
    exit 1
fi
[[ -n "${CROPS_NO_BUILD:-}" ]] || cargo build --release -p crops-orchestrator
export CROPS_ORCHESTRATOR_BIN="${CROPS_ORCHESTRATOR_BIN:-$PWD/target/release/crops-orchestrator}"
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -m), $(. /etc/os-release; echo "$PRETTY_NAME")"
cargo bench -p crops-e2e --bench scale
